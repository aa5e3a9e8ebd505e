//! The one shape every collector has: a source of facts that, run with a context, writes what
//! it read into the store and reports what it did. A full pass and a targeted pass are loops
//! over collectors; what a collector writes goes through `CollectContext::write`, where the
//! shrink limit holds back a listing that lost most of what it listed last time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use cedar_policy::{Entity, Schema};
use serde::Serialize;
use serde_json::json;

use crate::error::Result;
use crate::events::{EventStore, ObservationKind};
use crate::safety::Limits;
use crate::store::{Observed, ParkedKind, Store};

/// A boxed future that can cross threads: what trait methods doing I/O return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a fact came from: one collector each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The `[[projects]]` of the configuration.
    Projects,
    /// The identity file: people, roles, memberships.
    Identity,
    /// Each project account's trails and whether they log.
    Trails,
    /// Glue tables (the datasets) and every Lake Formation permission.
    DataLake,
    /// Each project account's IAM roles and their policies.
    Iam,
    Budgets,
    /// EC2 and SageMaker workspaces, and backup vaults and plans.
    Workspaces,
    /// New CloudTrail log files.
    CloudTrail,
}

impl Source {
    /// The collector's name in `status`, metrics and logs; also its store partition.
    pub fn name(self) -> &'static str {
        match self {
            Source::Projects => "config-projects",
            Source::Identity => "identity",
            Source::Trails => "cloudtrail-trails",
            Source::DataLake => "datalake",
            Source::Iam => "iam",
            Source::Budgets => "budgets",
            Source::Workspaces => "workspaces",
            Source::CloudTrail => "cloudtrail",
        }
    }
}

impl Source {
    pub const ALL: [Source; 8] = [
        Source::Projects,
        Source::Identity,
        Source::Trails,
        Source::DataLake,
        Source::Iam,
        Source::Budgets,
        Source::Workspaces,
        Source::CloudTrail,
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What one collector run did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RunReport {
    pub collector: String,
    /// Items written (for CloudTrail: new events).
    pub items: u64,
    /// Files (or pages) read.
    pub files: u64,
    /// Events read, new or not.
    pub events_read: u64,
    pub errors: Vec<String>,
    /// Everything the collector lists was read (no account, page or call failed).
    pub complete: bool,
    /// Why the listing was held back instead of replacing what the store holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// The trail's bucket was listed (a poll with `files_queue_url` reads the queue instead).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub listed: bool,
    /// Notification messages read from `files_queue_url`.
    #[serde(skip_serializing_if = "is_zero")]
    pub notifications: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl RunReport {
    pub fn new(source: Source) -> Self {
        Self {
            collector: source.name().to_string(),
            items: 0,
            files: 0,
            events_read: 0,
            errors: Vec::new(),
            complete: true,
            held: None,
            listed: false,
            notifications: 0,
        }
    }

    /// A run that could not start or finish: what the store holds stays as it was.
    pub fn failed(source: Source, error: impl std::fmt::Display) -> Self {
        let mut report = Self::new(source);
        report.fail(error);
        report
    }

    /// Records a failure that left the listing incomplete.
    pub fn fail(&mut self, error: impl std::fmt::Display) {
        self.errors.push(error.to_string());
        self.complete = false;
    }

    /// Whether the store lacks a current, whole view from this collector: changes resting on
    /// its facts wait for a pass where it is whole again.
    pub fn degraded(&self) -> bool {
        !self.complete || self.held.is_some()
    }
}

/// Progress of a long pass, for a progress bar or log lines.
pub trait Progress: Sync {
    fn start(&self, total: u64);
    fn advance(&self);
    fn finish(&self);
}

/// No progress output.
pub struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: u64) {}
    fn advance(&self) {}
    fn finish(&self) {}
}

/// What a collector reads with and writes to.
pub struct CollectContext<'a> {
    pub store: &'a Store,
    /// Shared: the CloudTrail collector's writer thread holds it too.
    pub events: &'a Arc<EventStore>,
    pub schema: &'a Schema,
    pub limits: &'a Limits,
    pub progress: &'a dyn Progress,
    /// A poll between full passes: a collector with a notification queue reads only what
    /// it announced.
    pub incremental: bool,
}

/// A source of facts for the store.
pub trait Collector: Send + Sync {
    fn source(&self) -> Source;
    /// The trail observations after which this collector should read again.
    fn answers(&self) -> &'static [ObservationKind];
    /// Whether what it writes depends on the time of reading (memberships that end), so it
    /// reads again when the governance clock moves.
    fn dated(&self) -> bool {
        false
    }
    /// One full read; failures are in the report, never a panic or a half-written store.
    fn run<'a>(&'a self, ctx: &'a CollectContext<'a>) -> BoxFuture<'a, RunReport>;
}

/// Everything one collector read in a run, written as one unit.
#[derive(Default)]
pub struct Listing {
    pub entities: Vec<Entity>,
    pub observed: Vec<Observed>,
    /// Every account, page and call succeeded: the listing is the whole truth and may replace
    /// what the store holds. An incomplete one only adds and updates.
    pub complete: bool,
    /// Items the source lists but leaves to another source that describes them (a configured
    /// project the identity file describes): still listed, so not a shrink.
    pub described_elsewhere: u64,
}

impl Listing {
    fn size(&self) -> u64 {
        (self.entities.len() + self.observed.len()) as u64 + self.described_elsewhere
    }
}

impl CollectContext<'_> {
    /// Writes `source`'s listing. An incomplete listing only adds and updates, so what could
    /// not be seen is not taken for gone; a complete one that shrank by more than
    /// `max_shrink_fraction` since the last good one is held (the store keeps the last good
    /// listing) until an admin approves it as the new baseline (`tregov approve`).
    pub fn write(&self, source: Source, listing: Listing, report: &mut RunReport) -> Result<()> {
        let partition = source.name();
        report.items = (listing.entities.len() + listing.observed.len()) as u64;
        if !listing.complete {
            report.complete = false;
            self.store
                .write_listing(partition, listing.entities, false, self.schema)?;
            return self
                .store
                .write_observed(partition, &listing.observed, false);
        }
        if let Some(reason) = self.hold(source, listing.size())? {
            tracing::error!(collector = partition, reason = %reason, "listing held back");
            report.held = Some(reason);
            return Ok(());
        }
        let size = listing.size();
        self.store
            .write_listing(partition, listing.entities, true, self.schema)?;
        self.store
            .write_observed(partition, &listing.observed, true)?;
        self.store.set_listing_baseline(partition, size)
    }

    /// Why a complete listing of `size` items must not replace the last good one, if it must
    /// not.
    fn hold(&self, source: Source, size: u64) -> Result<Option<String>> {
        let partition = source.name();
        let Some(baseline) = self.store.listing_baseline(partition)? else {
            return Ok(None);
        };
        let shrink = shrink_fraction(baseline, size);
        let item = acceptance_item(source, size);
        if shrink <= self.limits.max_shrink_fraction {
            self.store.expire_pending(&acceptance_prefix(source))?;
            return Ok(None);
        }
        let reason = format!(
            "the listing shrank from {baseline} to {size} item(s) ({:.0} %), more than `safety.max_shrink_fraction` ({:.0} %): the last good listing stays; `tregov approve {item}` accepts the new one",
            shrink * 100.0,
            self.limits.max_shrink_fraction * 100.0
        );
        let body = json!({
            "id": item,
            "change": {"kind": "accept-listing", "collector": partition,
                "previous": baseline, "now": size},
            "reason": reason,
            "affects": [],
        });
        match self
            .store
            .park(&item, ParkedKind::AcceptListing, &body)?
            .as_str()
        {
            "approved" => {
                self.store.decide_parked(&item, "applied", "tregov", None)?;
                tracing::warn!(
                    collector = partition,
                    previous = baseline,
                    now = size,
                    "smaller listing accepted by approval"
                );
                Ok(None)
            }
            _ => Ok(Some(reason)),
        }
    }
}

/// How much smaller `size` is than `baseline`, as a fraction of it.
pub fn shrink_fraction(baseline: u64, size: u64) -> f64 {
    if baseline == 0 || size >= baseline {
        return 0.0;
    }
    (baseline - size) as f64 / baseline as f64
}

fn acceptance_prefix(source: Source) -> String {
    format!("accept-{}-", source.name())
}

/// The parked item that accepts a smaller listing of `source`: readable, and the same for the
/// same listing size, so a held listing seen again is the same item.
fn acceptance_item(source: Source, size: u64) -> String {
    format!("{}{size}", acceptance_prefix(source))
}

/// Which collectors a pass runs.
#[derive(Debug, Clone, Copy)]
pub enum Pass<'k> {
    /// Every collector, in order.
    Full,
    /// The trail's own collector: what the daemon polls.
    Trail,
    /// The collectors that answer any of these trail observations.
    Answering(&'k [ObservationKind]),
    /// The collectors whose facts change as the governance clock moves.
    Dated,
    /// The collectors of these sources (to read back what was just applied).
    Reading(&'k [Source]),
}

impl Pass<'_> {
    fn includes(&self, collector: &dyn Collector) -> bool {
        match self {
            Pass::Full => true,
            Pass::Trail => collector.source() == Source::CloudTrail,
            Pass::Answering(kinds) => collector.answers().iter().any(|k| kinds.contains(k)),
            Pass::Dated => collector.dated(),
            Pass::Reading(sources) => sources.contains(&collector.source()),
        }
    }
}

/// Runs the collectors `pass` includes, in order, and records each run.
pub async fn run_pass(
    collectors: &[Box<dyn Collector>],
    pass: Pass<'_>,
    ctx: &CollectContext<'_>,
) -> Vec<RunReport> {
    let included = collectors
        .iter()
        .map(AsRef::as_ref)
        .filter(|c| pass.includes(*c));
    run_each(included, ctx).await
}

/// Runs every collector once, in order, and records each run.
pub async fn full_pass(
    collectors: &[Box<dyn Collector>],
    ctx: &CollectContext<'_>,
) -> Vec<RunReport> {
    run_pass(collectors, Pass::Full, ctx).await
}

async fn run_each<'c>(
    collectors: impl Iterator<Item = &'c dyn Collector>,
    ctx: &CollectContext<'_>,
) -> Vec<RunReport> {
    let mut reports = Vec::new();
    for collector in collectors {
        let report = collector.run(ctx).await;
        if report.degraded() {
            tracing::warn!(collector = %report.collector, errors = ?report.errors, held = ?report.held, "collector degraded");
        }
        if let Err(e) = ctx.events.record_run(&report) {
            tracing::error!(error = %e, collector = %report.collector, "cannot record the run");
        }
        reports.push(report);
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinking_is_measured_against_the_last_good_listing() {
        assert_eq!(shrink_fraction(10, 1), 0.9);
        assert_eq!(shrink_fraction(10, 10), 0.0);
        assert_eq!(shrink_fraction(10, 20), 0.0);
        assert_eq!(shrink_fraction(0, 0), 0.0);
        assert_eq!(shrink_fraction(4, 0), 1.0);
    }
}
