//! `config check`, `collect`, `events`, `status`: wiring the collectors to the command line.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use serde_json::json;
use tregov_collectors::aws::Aws;
use tregov_collectors::budgets::collect_budgets;
use tregov_collectors::cloudtrail::CloudTrailCollector;
use tregov_collectors::config::Config;
use tregov_collectors::datalake::collect_datalake;
use tregov_collectors::iam::collect_iam;
use tregov_collectors::identity::collect_identity;
use tregov_collectors::projects::collect_projects;
use tregov_collectors::trails::collect_trails;
use tregov_collectors::workspaces::collect_workspaces;
use tregov_collectors::{CollectError, Progress, RunReport};
use tregov_engine::events::{EventFilter, EventStore};
use tregov_engine::store::Store;
use tregov_engine::{EngineError, PolicyBundle, Result};

use crate::cli::{EventFilterArgs, EventsCommand};
use crate::output::{print_json, Format};

pub fn config_check(output: &Format, path: &Path) -> Result<ExitCode> {
    let config = Config::load(path)?;
    let sections: Vec<&str> = [
        ("cloudtrail", config.cloudtrail.is_some()),
        ("datalake", config.datalake.is_some()),
        ("identity", config.identity.is_some()),
        ("egress", config.egress.is_some()),
        ("api", config.api.is_some()),
        ("auth", config.auth.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect();
    if *output == Format::Json {
        let mut answer = json!({
            "valid": true,
            "projects": config.projects.iter().map(|p| &p.id).collect::<Vec<_>>(),
        });
        for name in [
            "cloudtrail",
            "datalake",
            "identity",
            "egress",
            "api",
            "auth",
        ] {
            answer[name] = json!(sections.contains(&name));
        }
        print_json(&answer);
    } else {
        let extra: String = sections.iter().map(|s| format!(", {s}")).collect();
        println!(
            "ok: `{}` is valid ({} project(s){extra})",
            path.display(),
            config.projects.len(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress bar on a terminal; otherwise a log line every tenth of the way.
struct CliProgress {
    bar: Option<indicatif::ProgressBar>,
    total: std::sync::atomic::AtomicU64,
    done: std::sync::atomic::AtomicU64,
}

impl CliProgress {
    fn new() -> Self {
        Self {
            bar: std::io::stderr()
                .is_terminal()
                .then(indicatif::ProgressBar::hidden),
            total: 0.into(),
            done: 0.into(),
        }
    }
}

impl Progress for CliProgress {
    fn start(&self, total: u64) {
        self.total
            .store(total, std::sync::atomic::Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} cloudtrail [{bar:40}] {pos}/{len} files {per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
        } else {
            tracing::info!(files = total, "reading new CloudTrail log files");
        }
    }

    fn advance(&self) {
        let done = self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        match &self.bar {
            Some(bar) => bar.inc(1),
            None => {
                let total = self.total.load(std::sync::atomic::Ordering::Relaxed).max(1);
                if done * 10 / total != (done - 1) * 10 / total {
                    eprintln!("cloudtrail: {done}/{total} files read");
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| EngineError::Request(format!("cannot start the async runtime: {e}")))
}

fn print_report(report: &RunReport) {
    println!(
        "{}: {} file(s) read, {} item(s) written ({} event(s) read), {} error(s)",
        report.collector,
        report.files,
        report.items,
        report.events_read,
        report.errors.len()
    );
    for e in &report.errors {
        println!("  error: {e}");
    }
}

/// Progress of a daemon pass: nothing on the terminal, the counts go to the log.
pub(crate) struct QuietProgress;

impl Progress for QuietProgress {
    fn start(&self, total: u64) {
        if total > 0 {
            tracing::debug!(files = total, "reading new CloudTrail log files");
        }
    }
    fn advance(&self) {}
    fn finish(&self) {}
}

/// The collectors with what they read from and write to, built once per process.
pub(crate) struct Collection {
    pub config: Config,
    pub aws: Aws,
    pub cloudtrail: Option<CloudTrailCollector>,
    pub entity_store: Store,
    pub events: Arc<EventStore>,
    pub schema: cedar_policy::Schema,
}

impl Collection {
    pub(crate) async fn build(
        config: Config,
        data_dir: &Path,
        bundle: &PolicyBundle,
    ) -> Result<Self> {
        let schema = bundle
            .schema
            .clone()
            .ok_or_else(|| EngineError::Request("collecting needs a schema".into()))?;
        let events = Arc::new(EventStore::open(data_dir)?);
        let entity_store = Store::open(data_dir)?;
        let aws = Aws::load(&config).await;
        let cloudtrail = CloudTrailCollector::build(&config, &aws, events.clone()).await;
        Ok(Self {
            config,
            aws,
            cloudtrail,
            entity_store,
            events,
            schema,
        })
    }

    /// Re-reads only the collectors a change in the trail concerns; `false` if any could not
    /// be read completely.
    pub(crate) async fn targeted(
        &self,
        datalake: bool,
        iam: bool,
        workspaces: bool,
        budgets: bool,
    ) -> bool {
        let Self {
            config,
            aws,
            entity_store,
            schema,
            ..
        } = self;
        let mut all_read = true;
        let mut report =
            |name: &str, r: std::result::Result<Option<RunReport>, CollectError>| match r {
                Ok(Some(r)) if !r.errors.is_empty() => {
                    all_read = false;
                    tracing::warn!(collector = %r.collector, errors = ?r.errors, "collector errors")
                }
                Ok(_) => {}
                Err(e) => {
                    all_read = false;
                    tracing::warn!(collector = name, error = %e, "collector failed")
                }
            };
        if datalake {
            report(
                "datalake",
                collect_datalake(config, aws, entity_store, schema).await,
            );
        }
        if iam {
            report("iam", collect_iam(config, aws, entity_store).await);
        }
        if workspaces {
            report(
                "workspaces",
                collect_workspaces(config, aws, entity_store, schema).await,
            );
        }
        if budgets {
            report(
                "budgets",
                collect_budgets(config, aws, entity_store, schema).await,
            );
        }
        all_read
    }

    /// One pass of every configured collector; the reports keyed by collector.
    pub(crate) async fn pass(&self, quiet: bool) -> Vec<RunReport> {
        let Self {
            config,
            aws,
            cloudtrail,
            entity_store,
            events,
            schema,
        } = self;
        let cloudtrail = cloudtrail.as_ref();
        let mut reports = Vec::new();
        let mut record = |r: RunReport| {
            if let Err(e) = events.record_run(&r.collector, r.items, &r.errors) {
                tracing::error!(error = %e, collector = %r.collector, "cannot record the run");
            }
            reports.push(r);
        };
        if !config.projects.is_empty() {
            if let Err(e) = collect_projects(config, entity_store, schema) {
                let mut r = RunReport::new("projects");
                r.errors.push(e.to_string());
                record(r);
            }
        }
        match collect_identity(config, entity_store, schema) {
            Ok(Some((report, _))) => record(report),
            Ok(None) => {}
            Err(e) => {
                let mut r = RunReport::new("identity");
                r.errors.push(e.to_string());
                record(r);
            }
        }
        if !config.projects.is_empty() {
            match collect_trails(config, aws, entity_store, schema).await {
                Ok((report, _)) => record(report),
                Err(e) => {
                    let mut r = RunReport::new("trails");
                    r.errors.push(e.to_string());
                    record(r);
                }
            }
        }
        let failed = |name: &str, e: CollectError| {
            let mut r = RunReport::new(name);
            r.errors.push(e.to_string());
            r
        };
        match collect_datalake(config, aws, entity_store, schema).await {
            Ok(Some(r)) => record(r),
            Ok(None) => {}
            Err(e) => record(failed("datalake", e)),
        }
        match collect_iam(config, aws, entity_store).await {
            Ok(Some(r)) => record(r),
            Ok(None) => {}
            Err(e) => record(failed("iam", e)),
        }
        match collect_budgets(config, aws, entity_store, schema).await {
            Ok(Some(r)) => record(r),
            Ok(None) => {}
            Err(e) => record(failed("budgets", e)),
        }
        match collect_workspaces(config, aws, entity_store, schema).await {
            Ok(Some(r)) => record(r),
            Ok(None) => {}
            Err(e) => record(failed("workspaces", e)),
        }
        if let Some(ct) = cloudtrail {
            let cli_progress = CliProgress::new();
            let progress: &dyn Progress = if quiet { &QuietProgress } else { &cli_progress };
            match ct.run(progress).await {
                // The CloudTrail collector records its own run.
                Ok(report) => reports.push(report),
                Err(e) => {
                    let mut r = RunReport::new("cloudtrail");
                    r.errors.push(e.to_string());
                    record(r);
                }
            }
        }
        reports
    }
}

pub fn collect(
    output: Format,
    config_path: &Path,
    data_dir: &Path,
    bundle: &PolicyBundle,
    once: bool,
    interval: u64,
) -> Result<ExitCode> {
    let config = Config::load(config_path)?;
    if config.cloudtrail.is_none() && config.identity.is_none() && config.projects.is_empty() {
        return Err(EngineError::Request(format!(
            "`{}` configures nothing to collect (no [cloudtrail], [identity] or [[projects]])",
            config_path.display()
        )));
    }
    runtime()?.block_on(async {
        let collection = Collection::build(config, data_dir, bundle).await?;
        loop {
            let reports = collection.pass(false).await;
            if output == Format::Json {
                let by_name: serde_json::Map<String, serde_json::Value> = reports
                    .iter()
                    .map(|r| (r.collector.clone(), json!(r)))
                    .collect();
                print_json(&serde_json::Value::Object(by_name));
            } else {
                reports.iter().for_each(print_report);
            }
            if once {
                return Ok(ExitCode::SUCCESS);
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(interval)) => {}
                _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            }
        }
    })
}

fn filter(args: &EventFilterArgs) -> EventFilter {
    EventFilter {
        since: args.since.clone(),
        principal: args.principal.clone(),
        name: args.name.clone(),
        account: args.account.clone(),
    }
}

pub fn events(output: Format, data_dir: &Path, cmd: EventsCommand) -> Result<ExitCode> {
    let store = EventStore::open(data_dir)?;
    match cmd {
        EventsCommand::Count(args) => {
            let n = store.count(&filter(&args))?;
            if output == Format::Json {
                print_json(&json!({ "count": n }));
            } else {
                println!("{n}");
            }
        }
        EventsCommand::List {
            filter: args,
            limit,
        } => {
            for e in store.list(&filter(&args), limit)? {
                if output == Format::Json {
                    println!("{}", serde_json::to_string(&e).unwrap_or_default());
                } else {
                    println!(
                        "{} {} {}:{} {} {}",
                        e.event_time,
                        e.account,
                        e.event_source,
                        e.event_name,
                        e.principal,
                        e.event_id
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn status(output: Format, data_dir: &Path) -> Result<ExitCode> {
    let store = EventStore::open(data_dir)?;
    let statuses = store.statuses()?;
    let events = store.count(&EventFilter::default())?;
    if output == Format::Json {
        print_json(&json!({ "collectors": statuses, "events": events }));
    } else {
        println!("events stored: {events}");
        for s in &statuses {
            println!(
                "{}: last run {}, {} item(s), {} error(s)",
                s.collector,
                s.last_run.as_deref().unwrap_or("never"),
                s.items,
                s.errors.len()
            );
            for e in &s.errors {
                println!("  error: {e}");
            }
        }
        if statuses.is_empty() {
            println!("no collector has run yet (`tregov collect --once`)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn observed(output: Format, data_dir: &Path, kind: Option<&str>) -> Result<ExitCode> {
    let store = Store::open_existing(data_dir)?;
    for item in store.observed(kind)? {
        if output == Format::Json {
            println!("{}", json!(item));
        } else {
            println!("{} {} {}", item.kind, item.key, item.body);
        }
    }
    Ok(ExitCode::SUCCESS)
}
