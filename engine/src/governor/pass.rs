//! One pass of the governor: which collectors to read for a trigger, and the plan that
//! follows over what they wrote.

use std::collections::{BTreeMap, BTreeSet};

use tokio::time::Instant;

use crate::collect::{run_pass, CollectContext, Pass, RunReport, Source};
use crate::error::{EngineError, Result};
use crate::events::{ObservationKind, ObservedChange};
use crate::plan::{plan_scoped, role_key, ActualState, Plan};
use crate::safety::{gate, Gated};
use crate::store::{ParkedKind, Store};

use super::{Governor, Mode};

impl Governor {
    pub(super) fn store(&self) -> Result<&Store> {
        self.engine
            .store()
            .ok_or_else(|| EngineError::Request("governing needs the entity store".into()))
    }

    /// Every collector, then everything planned.
    pub(super) async fn resync(&mut self) -> Result<()> {
        self.reload_policies().await;
        let now = Instant::now();
        self.next_resync = now + self.settings.resync;
        self.next_poll = now + self.settings.poll;
        if let Some(rediscover) = self.rediscover.as_mut() {
            if let Some((collectors, enforcers)) = rediscover.rediscover().await {
                self.collectors = collectors;
                self.enforcers = enforcers;
            }
        }
        self.collect(Pass::Full).await?;
        self.trail_mark = self.events.last_file_id()?.max(self.trail_mark);
        tracing::info!("resync done");
        self.converge(None, None).await
    }

    /// Reads new trail log files; reconciles what they show changed, what an admin approved
    /// since the last pass, or entities written since (an exemption granted).
    pub(super) async fn poll(&mut self) -> Result<()> {
        let detected = Instant::now();
        self.next_poll = detected + self.settings.poll;
        self.collect(Pass::Trail).await?;
        let (changes, _) = self.events.observations_after(self.trail_mark)?;
        if !changes.is_empty() {
            return self.on_trail(changes, Some(detected)).await;
        }
        let approved = self.store()?.approved_kinds()?;
        if approved.contains(&ParkedKind::AcceptPolicies) && self.reload_policies().await {
            // A policy set held back for approval was approved: it decides from now on.
            return self.converge(None, Some(detected)).await;
        }
        if approved.contains(&ParkedKind::AcceptListing)
            || approved.contains(&ParkedKind::AcceptLabels)
        {
            // A smaller listing or wider labels were accepted: the collector must read again
            // to take them.
            return self.resync().await;
        }
        if approved.contains(&ParkedKind::PlanItem) || !self.engine.is_current()? {
            // An approval, or entities written between passes (an exemption granted through
            // the API): plan again.
            return self.converge(None, Some(detected)).await;
        }
        Ok(())
    }

    /// Re-reads the collectors that answer what the trail says changed, then plans the roles
    /// it names (everything, when it does not name them all). The changes count as seen only
    /// when those collectors read everything: otherwise the next poll looks again.
    pub(super) async fn on_trail(
        &mut self,
        changes: Vec<ObservedChange>,
        detected: Option<Instant>,
    ) -> Result<()> {
        let kinds: BTreeSet<ObservationKind> = changes.iter().map(|c| c.kind).collect();
        tracing::info!(kinds = ?kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(), "out-of-band changes in the trail");
        let kinds: Vec<ObservationKind> = kinds.into_iter().collect();
        let reports = self.collect(Pass::Answering(&kinds)).await?;
        let mark = self.events.last_file_id()?;
        self.converge(scope_of(&changes).as_ref(), detected).await?;
        if reports.iter().all(|r| !r.degraded()) {
            self.trail_mark = mark.max(self.trail_mark);
        }
        Ok(())
    }

    /// Runs the collectors `pass` includes and records what each did.
    pub async fn collect(&mut self, pass: Pass<'_>) -> Result<Vec<RunReport>> {
        let schema = self
            .engine
            .bundle()
            .schema
            .clone()
            .ok_or_else(|| EngineError::Request("collecting needs a schema".into()))?;
        let ctx = CollectContext {
            store: self.store()?,
            events: &self.events,
            schema: &schema,
            limits: &self.settings.limits,
            progress: &*self.progress,
            incremental: matches!(pass, Pass::Trail),
        };
        let reports = run_pass(&self.collectors, pass, &ctx).await;
        self.observe(&reports);
        Ok(reports)
    }

    /// Metrics and one alert per new hold or failure.
    fn observe(&mut self, reports: &[RunReport]) {
        for r in reports {
            self.metrics.collected(&r.collector, !r.degraded());
            let (reason, key) = match (&r.held, r.complete) {
                (Some(_), _) => ("listing_shrank", format!("listing_shrank:{}", r.collector)),
                (None, false) => (
                    "collector_failed",
                    format!("collector_failed:{}", r.collector),
                ),
                (None, true) => {
                    self.tripped
                        .remove(&format!("listing_shrank:{}", r.collector));
                    self.tripped
                        .remove(&format!("collector_failed:{}", r.collector));
                    continue;
                }
            };
            if self.tripped.insert(key) {
                self.metrics.safety_trip(reason);
            }
        }
    }

    /// The configured collectors whose last run left the store without a whole, current view,
    /// each with why.
    pub fn degraded(&self) -> Result<BTreeMap<Source, String>> {
        let configured: BTreeSet<Source> = self.collectors.iter().map(|c| c.source()).collect();
        let mut out = BTreeMap::new();
        for status in self.events.statuses()? {
            let Some(source) = Source::parse(&status.collector) else {
                continue;
            };
            if !configured.contains(&source) {
                continue;
            }
            if let Some(held) = status.held {
                out.insert(source, format!("was held back: {held}"));
            } else if !status.complete {
                let first = status.errors.first().cloned().unwrap_or_default();
                out.insert(source, format!("could not read everything: {first}"));
            }
        }
        Ok(out)
    }

    /// Plans against the store as collected (data access only for the roles in `scope`, if
    /// given) and logs the decisions that justify its items.
    pub fn plan(&mut self, scope: Option<&BTreeSet<String>>) -> Result<Plan> {
        self.engine.refresh()?;
        let actual = ActualState::from_observed(&self.store()?.observed(None)?);
        let mut settings = self.settings.plan.clone();
        settings.period = period_now();
        let wall = std::time::SystemTime::now();
        let tick = self.engine.tick_at(wall);
        settings.now = Some(tick.now);
        self.planned_at = Some(tick);
        self.metrics
            .set_pending_dates(self.engine.pending_dates(wall));
        let mut plan = plan_scoped(&self.engine, &actual, &settings, scope);
        plan.record(&self.engine, self.settings.origin)?;
        self.metrics
            .planned(plan.decisions, plan.items.len() as u64);
        self.metrics.set_break_glass_open(plan.break_glass_open);
        self.metrics.set_decision_cache(self.engine.cache_stats());
        self.metrics.set_plan_reuse(self.engine.plan_reuse());
        Ok(plan)
    }

    /// The plan through the blast-radius gate; a new trip is announced.
    pub fn gate(&mut self, plan: Plan, full: bool) -> Result<Gated> {
        let degraded = self.degraded()?;
        let mut gated = gate(
            plan,
            &degraded,
            &self.settings.limits,
            self.approval(),
            full,
            self.store()?,
        )?;
        for (item, why) in &gated.deferred {
            tracing::warn!(item = %item.id, change = item.change.verb(), target = %item.change.target(), why = %why, "deferred");
        }
        for (item, why) in &gated.parked {
            tracing::info!(item = %item.id, change = item.change.verb(), target = %item.change.target(), why = %why, "parked for approval (tregov approve ID)");
        }
        self.announce_trip(&mut gated)?;
        Ok(gated)
    }

    /// Plan, gate, apply: one reconcile's worth of change. What applied changes left is read
    /// back and planned once more, for what follows from them as AWS now shows it (an alert
    /// that break-glass opened, a backup selection replacing the one deleted); one more
    /// round at most, so a change that never takes cannot spin.
    pub(super) async fn converge(
        &mut self,
        scope: Option<&BTreeSet<String>>,
        detected: Option<Instant>,
    ) -> Result<()> {
        if self.converge_round(scope, detected).await? {
            self.converge_round(scope, None).await?;
        }
        Ok(())
    }

    /// One round of `converge`; whether it applied anything (and read it back).
    async fn converge_round(
        &mut self,
        scope: Option<&BTreeSet<String>>,
        detected: Option<Instant>,
    ) -> Result<bool> {
        let started = Instant::now();
        let plan = self.plan(scope)?;
        if plan.items.is_empty() {
            tracing::debug!("in sync");
            return Ok(false);
        }
        let gated = self.gate(plan, scope.is_none())?;
        if self.settings.mode == Mode::DryRun {
            self.record_dry_run(&gated)?;
            return Ok(false);
        }
        if gated.apply.is_empty() {
            return Ok(false);
        }
        let applied = self.enforce(&gated).await?;
        // From the poll that found the log file to the last enforcement call: the
        // drift-revert latency, poll interval excluded.
        tracing::info!(
            items = gated.apply.len(),
            failed = applied.failed(),
            parked = gated.parked.len(),
            deferred = gated.deferred.len(),
            plan_and_apply_ms = started.elapsed().as_millis() as u64,
            since_detection_ms = detected.map(|d| d.elapsed().as_millis() as u64),
            "reconciled"
        );
        self.read_back(&gated, &applied).await
    }
}

/// The budget period now, as the planner counts notifications.
fn period_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!("{:04}-{:02}", now.year(), u8::from(now.month()))
}

/// The roles a set of trail changes touched, when every change names its role(s); `None`
/// (plan everything) otherwise.
pub fn scope_of(changes: &[ObservedChange]) -> Option<BTreeSet<String>> {
    let mut roles = BTreeSet::new();
    for c in changes {
        let target = c.target.as_deref()?;
        match c.kind {
            ObservationKind::LakeformationGrant | ObservationKind::LakeformationRevoke => {
                for principal in target.split(',') {
                    roles.insert(role_key(principal)?);
                }
            }
            ObservationKind::IamRoleChange => {
                roles.insert(format!("{}/{target}", c.account));
            }
            _ => return None,
        }
    }
    Some(roles)
}
