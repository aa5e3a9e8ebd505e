//! `config check`, `collect`, `events`, `status`: wiring the collectors to the command line.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use serde_json::json;
use tregov_config::aws::Aws;
use tregov_config::Config;
use tregov_engine::collect::{run_pass, CollectContext, Pass, Progress};
use tregov_engine::events::{EventFilter, EventStore};
use tregov_engine::store::Store;
use tregov_engine::{EngineError, PolicyBundle, Result};

use tregov_render::collect::{event_json, event_line, run_text, status_json, status_text};

use crate::args::{EventFilterArgs, EventsCommand};
use crate::output::{print_json, Format};

pub fn config_check(output: Format, path: &Path) -> Result<ExitCode> {
    let config = Config::load(path)?;
    let sections = config.sections();
    if output == Format::Json {
        let mut answer = json!({
            "valid": true,
            "projects": config.projects.iter().map(|p| &p.id).collect::<Vec<_>>(),
        });
        for (name, present) in sections {
            answer[name] = json!(present);
        }
        print_json(&answer);
    } else {
        let present = sections.iter().filter(|(_, p)| *p);
        let extra: String = present.map(|(s, _)| format!(", {s}")).collect();
        let n = config.projects.len();
        println!("ok: `{}` is valid ({n} project(s){extra})", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress bar on a terminal; otherwise a log line every tenth of the way.
pub(crate) struct CliProgress {
    bar: Option<indicatif::ProgressBar>,
    total: std::sync::atomic::AtomicU64,
    done: std::sync::atomic::AtomicU64,
}

impl CliProgress {
    pub(crate) fn new() -> Self {
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
        .map_err(|e| EngineError::System(format!("cannot start the async runtime: {e}")))
}

pub fn collect(
    output: Format,
    config_path: &Path,
    data_dir: &Path,
    bundle: &PolicyBundle,
    once: bool,
    interval: u64,
    trail: bool,
) -> Result<ExitCode> {
    let config = Config::load(config_path)?;
    if config.cloudtrail.is_none()
        && config.identity.is_none()
        && config.projects.is_empty()
        && config.organizations.is_none()
    {
        return Err(EngineError::Request(format!(
            "`{}` configures nothing to collect (no [cloudtrail], [identity] or [[projects]])",
            config_path.display()
        )));
    }
    let schema = bundle
        .schema
        .clone()
        .ok_or_else(|| EngineError::Request("collecting needs a schema".into()))?;
    runtime()?.block_on(async {
        let aws = Aws::load(&config).await;
        let (config, _) = crate::organization::with_organization(config.clone(), &aws).await?;
        let collectors = tregov_collectors::build(&config, &aws).await;
        let events = Arc::new(EventStore::open(data_dir)?);
        let store = Store::open(data_dir)?;
        let limits = config.safety.limits();
        let progress = CliProgress::new();
        let ctx = CollectContext {
            store: &store,
            events: &events,
            schema: &schema,
            limits: &limits,
            progress: &progress,
            incremental: trail,
        };
        let pass = if trail { Pass::Trail } else { Pass::Full };
        loop {
            let reports = run_pass(&collectors, pass, &ctx).await;
            if output == Format::Json {
                let by_name: serde_json::Map<String, serde_json::Value> = reports
                    .iter()
                    .map(|r| (r.collector.clone(), json!(r)))
                    .collect();
                print_json(&serde_json::Value::Object(by_name));
            } else {
                reports.iter().for_each(|r| print!("{}", run_text(r)));
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
        governed_only: false,
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
            for (e, state) in store.list_checked(&filter(&args), limit)? {
                match output {
                    Format::Json => println!("{}", event_json(&e, state)),
                    Format::Text => println!("{}", event_line(&e, state)),
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
    let trail = store.verification()?;
    let findings = match Store::open_existing(data_dir) {
        Ok(entities) => tregov_engine::plan::kind::FINDINGS
            .iter()
            .map(|kind| entities.observed(Some(kind)))
            .collect::<Result<Vec<_>>>()?
            .concat(),
        Err(_) => Vec::new(),
    };
    match output {
        Format::Json => {
            let mut shown = status_json(&statuses, events, &trail);
            shown["findings"] = json!(findings);
            print_json(&shown)
        }
        Format::Text => print!(
            "{}{}",
            status_text(&statuses, events, &trail),
            tregov_render::collect::findings_text(&findings)
        ),
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
