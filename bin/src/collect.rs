//! `config check`, `collect`, `events`, `status`: wiring the collectors to the command line.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use serde_json::json;
use tregov_collectors::aws::Aws;
use tregov_collectors::cloudtrail::CloudTrailCollector;
use tregov_collectors::config::Config;
use tregov_collectors::{Progress, RunReport};
use tregov_engine::events::{EventFilter, EventStore};
use tregov_engine::{EngineError, Result};

use crate::cli::{EventFilterArgs, EventsCommand};
use crate::output::{print_json, Format};

pub fn config_check(output: &Format, path: &Path) -> Result<ExitCode> {
    let config = Config::load(path)?;
    if *output == Format::Json {
        print_json(&json!({
            "valid": true,
            "projects": config.projects.iter().map(|p| &p.id).collect::<Vec<_>>(),
            "cloudtrail": config.cloudtrail.is_some(),
            "datalake": config.datalake.is_some(),
            "identity": config.identity.is_some(),
        }));
    } else {
        println!(
            "ok: `{}` is valid ({} project(s){}{}{})",
            path.display(),
            config.projects.len(),
            if config.cloudtrail.is_some() {
                ", cloudtrail"
            } else {
                ""
            },
            if config.datalake.is_some() {
                ", datalake"
            } else {
                ""
            },
            if config.identity.is_some() {
                ", identity"
            } else {
                ""
            },
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

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| EngineError::Request(format!("cannot start the async runtime: {e}")))
}

fn print_report(output: Format, report: &RunReport) {
    if output == Format::Json {
        print_json(&json!(report));
        return;
    }
    println!(
        "{}: {} file(s) read, {} new event(s) ({} read), {} error(s)",
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

pub fn collect(
    output: Format,
    config_path: &Path,
    data_dir: &Path,
    once: bool,
    interval: u64,
) -> Result<ExitCode> {
    let config = Config::load(config_path)?;
    let store = Arc::new(EventStore::open(data_dir)?);
    runtime()?.block_on(async {
        let aws = Aws::load(&config).await;
        let Some(cloudtrail) = CloudTrailCollector::build(&config, &aws, store.clone()).await
        else {
            return Err(EngineError::Request(format!(
                "`{}` has no [cloudtrail] section: nothing to collect",
                config_path.display()
            )));
        };
        loop {
            let progress = CliProgress::new();
            match cloudtrail.run(&progress).await {
                Ok(report) => print_report(output, &report),
                Err(e) => {
                    if once {
                        return Err(EngineError::Request(e.to_string()));
                    }
                    tracing::error!(error = %e, "collection pass failed; trying again next pass");
                }
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
