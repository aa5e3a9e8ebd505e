//! `plan`, `apply`, `daemon` and `parked`: the governor (in the engine) wired to the
//! collectors, the enforcers, the terminal, signals, the policy watcher and the listeners.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tregov_config::aws::Aws;
use tregov_config::Config;
use tregov_engine::collect::Pass;
use tregov_engine::events::EventStore;
use tregov_engine::governor::{Governor, Mode, Settings};
use tregov_engine::metrics::Metrics;
use tregov_engine::reconcile::{self, Cause, Trigger};
use tregov_engine::safety::Gated;
use tregov_engine::store::Store;
use tregov_engine::widening::WideningGate;
use tregov_engine::{Engine, EngineError, PolicyBundle, Result};

use tregov_render::plan as show;

use crate::output::{print_json, Format};

/// What a command asks of the governor beyond the configuration.
pub struct GovernOptions {
    pub mode: Mode,
    pub origin: &'static str,
    /// The policies directory to reload (`None`: the built-in policies).
    pub policies_dir: Option<PathBuf>,
}

fn settings(config: &Config, options: GovernOptions) -> Settings {
    Settings {
        plan: config.plan_settings(""),
        limits: config.safety.limits(),
        mode: options.mode,
        poll: config.daemon.poll(),
        resync: config.daemon.resync(),
        origin: options.origin,
        alert_topic: config.safety.alert_topic_arn.clone(),
        policies_dir: options.policies_dir,
        widening: widening_gate(config),
    }
}

/// A reloaded set that widens access waits for approval, unless the admins allow widening.
fn widening_gate(config: &Config) -> WideningGate {
    if config.policies.allow_widening {
        return WideningGate::Allow;
    }
    WideningGate::Park(Arc::new(tregov_analysis::SolverWidening {
        solver: tregov_analysis::SolverCommand::discover(config.policies.solver.clone()),
    }))
}

/// The governor over `data_dir` with every configured collector and enforcer.
async fn governor(
    config: &Config,
    data_dir: &Path,
    bundle: PolicyBundle,
    aws: &Aws,
    options: GovernOptions,
    metrics: Arc<Metrics>,
) -> Result<Governor> {
    let events = Arc::new(EventStore::open(data_dir)?);
    let collectors = tregov_collectors::build(config, aws).await;
    let enforcers = tregov_enforcers::build(aws.clone(), config.clone());
    let mut engine = Engine::open(data_dir, bundle)?;
    engine.refresh()?;
    engine.set_expiry_warning(config.daemon.expiry_warning());
    let settings = settings(config, options);
    Governor::new(engine, events, collectors, enforcers, settings, metrics)
}

/// Refuses enforcement that cannot work (no data lake to grant in).
fn check_enforceable(config: &Config) -> Result<()> {
    let problems = tregov_enforcers::validate(config);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(EngineError::Request(problems.join("; ")))
    }
}

pub fn plan_command(
    output: Format,
    config_path: &Path,
    data_dir: &Path,
    bundle: PolicyBundle,
    detailed_exitcode: bool,
) -> Result<ExitCode> {
    let config = Config::load(config_path)?;
    // Read before the engine opens: opening records the proposed set as the newest.
    let running = tregov_engine::log::DecisionLog::open(data_dir)
        .and_then(|log| log.latest_policies())
        .ok()
        .flatten();
    crate::collect::runtime()?.block_on(async {
        let aws = Aws::load(&config).await;
        let (config, _) = crate::organization::with_organization(config.clone(), &aws).await?;
        let options = GovernOptions {
            mode: Mode::DryRun,
            origin: "plan",
            policies_dir: None,
        };
        let proposed = bundle.clone();
        let mut governor =
            governor(&config, data_dir, bundle, &aws, options, Arc::default()).await?;
        let plan = governor.plan(None)?;
        let diff = match running.filter(|r| r.version != proposed.version) {
            Some(running) => policy_diff(&config, running, &proposed).await,
            None => None,
        };
        print_plan(output, &governor, &plan, diff.as_ref())?;
        Ok(match detailed_exitcode && !plan.items.is_empty() {
            true => ExitCode::from(2),
            false => ExitCode::SUCCESS,
        })
    })
}

/// Beside the concrete changes, what the proposed set allows in any state, against the set
/// that decided last: a proof from the solver (its failure is reported, not fatal).
async fn policy_diff(
    config: &Config,
    running: tregov_engine::log::StoredPolicySet,
    proposed: &PolicyBundle,
) -> Option<tregov_analysis::PolicyDiff> {
    let diff = async {
        let old = PolicyBundle::from_sources(running.schema, running.sources)?;
        let solver =
            tregov_analysis::SolverCommand::discover(config.policies.solver.clone()).start()?;
        Ok::<_, EngineError>(tregov_analysis::diff(&old, proposed, solver).await?)
    };
    diff.await
        .map_err(|e| eprintln!("the exact policy diff is unavailable: {e}"))
        .ok()
}

pub fn apply_command(
    output: Format,
    config_path: &Path,
    data_dir: &Path,
    bundle: PolicyBundle,
    yes: bool,
) -> Result<ExitCode> {
    let config = Config::load(config_path)?;
    check_enforceable(&config)?;
    crate::collect::runtime()?.block_on(async {
        let aws = Aws::load(&config).await;
        let (config, _) = crate::organization::with_organization(config.clone(), &aws).await?;
        let options = GovernOptions {
            mode: Mode::Enforce,
            origin: "apply",
            policies_dir: None,
        };
        let mut governor = governor(&config, data_dir, bundle, &aws, options, Arc::default())
            .await?
            .with_progress(Box::new(crate::collect::CliProgress::new()));
        // Plans rest on the state of AWS now, not on the last collection.
        governor.collect(Pass::Full).await?;
        let plan = governor.plan(None)?;
        if plan.items.is_empty() {
            print_plan(output, &governor, &plan, None)?;
            return Ok(ExitCode::SUCCESS);
        }
        let planned = plan.clone();
        let gated = governor.gate(plan, true)?;
        if !yes && !confirmed(&gated)? {
            eprintln!("nothing applied");
            return Ok(ExitCode::SUCCESS);
        }
        let applied = governor.enforce(&gated).await?;
        if output == Format::Json {
            print_json(
                &json!({"plan": planned, "gated": show::gated_json(&gated), "results": applied.results}),
            );
        } else {
            print!("{}", show::held_back_text(&gated, &governor.settings().limits));
            println!(
                "applied {} of {} change(s)",
                applied.results.len() - applied.failed(),
                gated.apply.len()
            );
            for r in applied.results.iter().filter(|r| r.error.is_some()) {
                let error = r.error.as_deref().unwrap_or_default();
                println!("  failed [{}] {}: {error}", r.item, r.enforcer);
            }
        }
        Ok(if applied.failed() == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

/// The plan, and after it the exact policy diff when there is one.
fn print_plan(
    output: Format,
    governor: &Governor,
    plan: &tregov_engine::plan::Plan,
    diff: Option<&tregov_analysis::PolicyDiff>,
) -> Result<()> {
    let (degraded, limits) = (governor.degraded()?, &governor.settings().limits);
    match output {
        Format::Json => {
            let mut v = show::plan_json(plan, &degraded, limits);
            if let Some(d) = diff {
                v["policyDiff"] = json!(d);
            }
            print_json(&v)
        }
        Format::Text => {
            print!("{}", show::plan_text(plan, &degraded, limits));
            if let Some(d) = diff {
                println!("\nthe exact policy diff against the set that decided last:");
                print!("{}", tregov_render::analysis::diff_text(d));
            }
        }
    }
    Ok(())
}

/// Asks on the terminal; refuses when there is none to ask on.
fn confirmed(gated: &Gated) -> Result<bool> {
    print!("{}", show::gated_text(gated));
    if !std::io::stdin().is_terminal() {
        return Err(EngineError::Request(
            "not applying without `--yes` (stdin is not a terminal to confirm on)".into(),
        ));
    }
    eprint!("apply these {} change(s)? [y/N] ", gated.apply.len());
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

pub fn daemon_command(
    config_path: &Path,
    data_dir: &Path,
    bundle: PolicyBundle,
    options: GovernOptions,
) -> Result<ExitCode> {
    let config = Config::load(config_path)?;
    if options.mode != Mode::DryRun {
        check_enforceable(&config)?;
    }
    let watched = options.policies_dir.clone();
    crate::collect::runtime()?.block_on(async {
        let metrics = Arc::new(Metrics::new());
        let bound = crate::egress::serve_ops(&config.daemon.metrics_listen, metrics.clone()).await?;
        tracing::info!(metrics = %bound, mode = ?options.mode, "daemon started");
        eprintln!("tregov daemon: serving /metrics, /healthz and /readyz on http://{bound}");
        let aws = Aws::load(&config).await;
        let configured = config.clone();
        let (config, discovered) = crate::organization::with_organization(config.clone(), &aws).await?;
        tokio::spawn(crate::anchor::run_anchorer(
            config.clone(),
            aws.clone(),
            data_dir.to_path_buf(),
        ));
        let (api_stop, api_stopped) = tokio::sync::oneshot::channel::<()>();
        let stopped = async {
            let _ = api_stopped.await;
        };
        let api = crate::egress::start_api(&config, data_dir, bundle.clone(), &aws, stopped)
            .await?
            .map(|(api, _)| api);
        let mut governor = governor(&config, data_dir, bundle, &aws, options, metrics).await?;
        if config.organizations.is_some() {
            governor = governor.with_rediscovery(Box::new(crate::organization::OrganizationProjects {
                config: configured,
                aws: aws.clone(),
                last: discovered,
            }));
        }
        if let Some(api) = api {
            governor = governor.on_policies(Box::new(move |bundle| {
                if let Err(e) = api.set_policies(bundle.clone()) {
                    tracing::error!(error = %e, "the API could not take the reloaded policies; it keeps the last good set");
                }
            }));
        }
        let (triggers, received) = mpsc::channel::<Trigger>(64);
        let _ = triggers.send(Trigger::Resync).await;
        if let Some(queue) = tregov_collectors::events_queue::EventsQueue::build(&config, &aws).await {
            let queued = triggers.clone();
            tokio::spawn(queue.run(governor.events().clone(), move |changes, arrived| {
                // A full channel drops only the nudge: the events are stored, and the next
                // poll finds their changes in the store.
                let _ = queued.try_send(Trigger::Queued(changes, arrived));
            }));
        }
        let _watcher = watched
            .map(|dir| watch_policies(&dir, triggers.clone()))
            .transpose()?;
        tokio::spawn(forward_hangups(triggers.clone()));
        crate::systemd::notify("READY=1");
        reconcile::run(&mut governor, received, shutdown_signal()).await;
        crate::systemd::notify("STOPPING=1");
        let _ = api_stop.send(());
        Ok(ExitCode::SUCCESS)
    })
}

/// SIGTERM or SIGINT: the reconcile (or request) in flight finishes first.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot handle SIGTERM or SIGINT; stop the daemon with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("interrupted: stopping"),
    }
}

/// SIGHUP reloads the policies.
async fn forward_hangups(triggers: mpsc::Sender<Trigger>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot handle SIGHUP; policy changes are still watched");
        return;
    };
    while hangup.recv().await.is_some() {
        if triggers
            .send(Trigger::Replan(Cause::Policies))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Watches `dir` (every subdirectory: what is loaded) and asks for a reload once a burst of
/// edits has settled: editors write in several steps, and half a file must not be read.
fn watch_policies(
    dir: &Path,
    triggers: mpsc::Sender<Trigger>,
) -> Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let (hint, mut hints) = mpsc::channel::<()>(16);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let policy_file = event.is_ok_and(|e| {
            !e.kind.is_access()
                && e.paths.iter().any(|p| {
                    p.extension()
                        .is_some_and(|x| x == "cedar" || x == "cedarschema" || x == "json")
                })
        });
        if policy_file {
            let _ = hint.try_send(());
        }
    })
    .map_err(|e| EngineError::System(format!("cannot watch policies: {e}")))?;
    watcher
        .watch(dir, notify::RecursiveMode::Recursive)
        .map_err(|e| EngineError::System(format!("cannot watch `{}`: {e}", dir.display())))?;
    tokio::spawn(async move {
        while hints.recv().await.is_some() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            while hints.try_recv().is_ok() {}
            if triggers
                .send(Trigger::Replan(Cause::Policies))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    Ok(watcher)
}

/// `tregov parked`: changes waiting for (or decided by) an admin.
pub fn parked_command(output: Format, data_dir: &Path) -> Result<ExitCode> {
    let store = Store::open_existing(data_dir)?;
    for parked in store.parked()? {
        match output {
            Format::Json => println!("{}", json!(parked)),
            Format::Text => println!("{}", show::parked_line(&parked)),
        }
    }
    Ok(ExitCode::SUCCESS)
}
