//! `plan`, `apply` and `daemon`: collectors, planner and enforcers wired together.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tregov_collectors::config::Config;
use tregov_enforcers::{apply_items, Enforcer, ItemResult};
use tregov_engine::events::ObservedChange;
use tregov_engine::plan::{plan_scoped, role_key, ActualState, Change, Plan, NOTIFICATION_KIND};
use tregov_engine::store::{Observed, Store};
use tregov_engine::{Engine, EngineError, PolicyBundle, Result};

use crate::collect::Collection;
use crate::output::{print_json, Format};

/// Where tregov keeps what it establishes itself (notifications sent).
const ENFORCER_PARTITION: &str = "enforcer";

/// The budget period now, as the planner counts notifications.
fn period_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!("{:04}-{:02}", now.year(), u8::from(now.month()))
}

fn open_engine(data_dir: &Path, bundle: PolicyBundle) -> Result<Engine> {
    let mut engine = Engine::open(data_dir, bundle)?;
    engine.refresh()?;
    Ok(engine)
}

/// Plans against the store as collected; logs the justifying decisions.
pub fn compute_plan(engine: &mut Engine, config: &Config, origin: &str) -> Result<Plan> {
    compute_plan_scoped(engine, config, origin, None)
}

/// `compute_plan` with data access limited to the roles in `scope` (see `plan_scoped`).
pub fn compute_plan_scoped(
    engine: &mut Engine,
    config: &Config,
    origin: &str,
    scope: Option<&BTreeSet<String>>,
) -> Result<Plan> {
    engine.refresh()?;
    let store = engine
        .store()
        .ok_or_else(|| EngineError::Request("planning needs the entity store".into()))?;
    let actual = ActualState::from_observed(&store.observed(None)?);
    let mut plan = plan_scoped(engine, &actual, &config.plan_settings(&period_now()), scope);
    plan.record(engine, origin)?;
    Ok(plan)
}

fn print_plan(output: Format, plan: &Plan) {
    if output == Format::Json {
        print_json(&json!(plan));
        return;
    }
    if plan.items.is_empty() {
        println!(
            "no changes: AWS matches what the policies allow ({} decision(s), policies {})",
            plan.decisions,
            &plan.policy_version[..12.min(plan.policy_version.len())]
        );
    } else {
        println!(
            "{} change(s) ({} decision(s), policies {}):",
            plan.items.len(),
            plan.decisions,
            &plan.policy_version[..12.min(plan.policy_version.len())]
        );
    }
    for item in &plan.items {
        let detail = match &item.change {
            Change::LfGrant { permissions, .. } => format!(": {}", permissions.join(", ")),
            Change::LfRevoke {
                permissions,
                permissions_with_grant_option,
                ..
            } => {
                let mut all = permissions.clone();
                all.extend(
                    permissions_with_grant_option
                        .iter()
                        .map(|p| format!("{p} (grantable)")),
                );
                format!(": {}", all.join(", "))
            }
            _ => String::new(),
        };
        println!(
            "  [{}] {:<18} {}{}",
            item.id,
            item.change.verb(),
            item.change.target(),
            detail
        );
        println!("      because {}", item.reason);
        for j in &item.decisions {
            let seq = j
                .log_seq
                .map(|s| format!(" (tregov why --replay {s})"))
                .unwrap_or_default();
            let reasons = if j.reasons.is_empty() {
                "no policy applies".to_string()
            } else {
                j.reasons.join(", ")
            };
            println!(
                "      {} {} {} {}: {}{}",
                j.decision, j.request.principal, j.request.action, j.request.resource, reasons, seq
            );
        }
    }
    for w in &plan.warnings {
        println!("  warning: {w}");
    }
}

pub fn plan_command(
    output: Format,
    config_path: &Path,
    data_dir: &Path,
    bundle: PolicyBundle,
) -> Result<ExitCode> {
    let config = Config::load(config_path)?;
    let mut engine = open_engine(data_dir, bundle)?;
    let plan = compute_plan(&mut engine, &config, "plan")?;
    print_plan(output, &plan);
    Ok(ExitCode::SUCCESS)
}

/// Logs what happened to each item, with the change and the decisions that justified it.
fn log_results(
    engine: &Engine,
    plan: &Plan,
    results: &[ItemResult],
    origin: &str,
    dry_run: bool,
) -> Result<()> {
    let Some(log) = engine.log() else {
        return Ok(());
    };
    let by_item: std::collections::HashMap<&str, &ItemResult> =
        results.iter().map(|r| (r.item.as_str(), r)).collect();
    let records: Vec<Map<String, Value>> = plan
        .items
        .iter()
        .map(|item| {
            let result = by_item.get(item.id.as_str()).copied();
            let mut m = Map::new();
            m.insert("kind".into(), json!("apply"));
            m.insert("origin".into(), json!(origin));
            m.insert("item".into(), json!(item.id));
            m.insert("enforcer".into(), json!(item.change.enforcer()));
            m.insert("change".into(), json!(item.change));
            m.insert("reason".into(), json!(item.reason));
            m.insert(
                "decisions".into(),
                json!(item
                    .decisions
                    .iter()
                    .filter_map(|d| d.log_seq)
                    .collect::<Vec<_>>()),
            );
            m.insert("policyVersion".into(), json!(plan.policy_version));
            let outcome = match (dry_run, result.and_then(|r| r.error.as_ref())) {
                (true, _) => "planned",
                (false, None) if result.is_some() => "applied",
                _ => "failed",
            };
            m.insert("result".into(), json!(outcome));
            if let Some(e) = result.and_then(|r| r.error.clone()) {
                m.insert("error".into(), json!(e));
            }
            m
        })
        .collect();
    log.append(records)?;
    Ok(())
}

/// Remembers notifications that went out, so the next plan does not send them again.
fn remember_notifications(store: &Store, plan: &Plan, results: &[ItemResult]) -> Result<()> {
    for item in &plan.items {
        if let Change::Notify {
            mark, topic_arn, ..
        } = &item.change
        {
            if results
                .iter()
                .any(|r| r.item == item.id && r.error.is_none())
            {
                store.put_observed(
                    ENFORCER_PARTITION,
                    &Observed {
                        kind: NOTIFICATION_KIND.into(),
                        key: mark.clone(),
                        body: json!({"topicArn": topic_arn, "item": item.id}),
                    },
                )?;
            }
        }
    }
    Ok(())
}

/// Applies a plan's items and records each result.
async fn enforce(
    engine: &Engine,
    enforcers: &[Box<dyn Enforcer>],
    plan: &Plan,
    origin: &str,
    metrics: Option<&Metrics>,
) -> Result<Vec<ItemResult>> {
    let results = apply_items(enforcers, &plan.items).await;
    for r in &results {
        match &r.error {
            None => tracing::info!(item = %r.item, enforcer = r.enforcer, "applied"),
            Some(e) => {
                tracing::warn!(item = %r.item, enforcer = r.enforcer, error = %e, "apply failed")
            }
        }
        if let Some(m) = metrics {
            m.count_apply(r.enforcer, r.error.is_none());
        }
    }
    log_results(engine, plan, &results, origin, false)?;
    if let Some(store) = engine.store() {
        remember_notifications(store, plan, &results)?;
    }
    Ok(results)
}

fn print_results(output: Format, plan: &Plan, results: &[ItemResult]) {
    let failed: Vec<&ItemResult> = results.iter().filter(|r| r.error.is_some()).collect();
    if output == Format::Json {
        print_json(&json!({"plan": plan, "results": results}));
        return;
    }
    println!(
        "applied {} of {} change(s)",
        results.len() - failed.len(),
        plan.items.len()
    );
    for r in failed {
        println!(
            "  failed [{}] {}: {}",
            r.item,
            r.enforcer,
            r.error.as_deref().unwrap_or_default()
        );
    }
}

pub fn apply_command(
    output: Format,
    config_path: &Path,
    data_dir: &Path,
    bundle: PolicyBundle,
    yes: bool,
) -> Result<ExitCode> {
    let config = Config::load(config_path)?;
    let problems = tregov_enforcers::validate(&config);
    if !problems.is_empty() {
        return Err(EngineError::Request(problems.join("; ")));
    }
    crate::collect::runtime()?.block_on(async {
        // Plans rest on the state of AWS now, not on the last collection.
        let collection = Collection::build(config.clone(), data_dir, &bundle).await?;
        let mut engine = open_engine(data_dir, bundle)?;
        let reports = collection.pass(false).await;
        for r in reports.iter().filter(|r| !r.errors.is_empty()) {
            tracing::warn!(collector = %r.collector, errors = ?r.errors, "collector errors before planning");
        }
        let plan = compute_plan(&mut engine, &config, "apply")?;
        if plan.items.is_empty() {
            print_plan(output, &plan);
            return Ok(ExitCode::SUCCESS);
        }
        if !yes {
            print_plan(Format::Text, &plan);
            if !std::io::stdin().is_terminal() {
                return Err(EngineError::Request(
                    "not applying without `--yes` (stdin is not a terminal to confirm on)".into(),
                ));
            }
            eprint!("apply these {} change(s)? [y/N] ", plan.items.len());
            let mut answer = String::new();
            let _ = std::io::stdin().read_line(&mut answer);
            if !matches!(answer.trim(), "y" | "Y" | "yes") {
                eprintln!("nothing applied");
                return Ok(ExitCode::SUCCESS);
            }
        }
        let enforcers = tregov_enforcers::build(collection.aws.clone(), config.clone());
        let results = enforce(&engine, &enforcers, &plan, "apply", None).await?;
        print_results(output, &plan, &results);
        Ok(if results.iter().all(|r| r.error.is_none()) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct Metrics {
    decisions: AtomicU64,
    plan_items: AtomicU64,
    reconciles: AtomicU64,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    /// Unix seconds of the last CloudTrail pass that succeeded.
    last_collect: AtomicU64,
    applies: Mutex<BTreeMap<(&'static str, bool), u64>>,
    started: Option<Instant>,
}

impl Metrics {
    fn count_apply(&self, enforcer: &'static str, ok: bool) {
        if let Ok(mut m) = self.applies.lock() {
            *m.entry((enforcer, ok)).or_default() += 1;
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, value: u64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            ));
        };
        counter(
            "tregov_decisions_total",
            "Cedar decisions taken while planning.",
            self.decisions.load(Ordering::Relaxed),
        );
        counter(
            "tregov_plan_items_total",
            "Plan items computed.",
            self.plan_items.load(Ordering::Relaxed),
        );
        counter(
            "tregov_reconciles_total",
            "Reconcile passes.",
            self.reconciles.load(Ordering::Relaxed),
        );
        counter(
            "tregov_policy_reloads_total",
            "Policy sets loaded after a change.",
            self.reloads.load(Ordering::Relaxed),
        );
        counter(
            "tregov_policy_reload_failures_total",
            "Policy changes rejected (the last good set kept deciding).",
            self.reload_failures.load(Ordering::Relaxed),
        );
        out.push_str("# HELP tregov_applies_total Plan items applied, by enforcer and result.\n# TYPE tregov_applies_total counter\n");
        if let Ok(m) = self.applies.lock() {
            for ((enforcer, ok), n) in m.iter() {
                let result = if *ok { "applied" } else { "failed" };
                out.push_str(&format!(
                    "tregov_applies_total{{enforcer=\"{enforcer}\",result=\"{result}\"}} {n}\n"
                ));
            }
        }
        let last = self.last_collect.load(Ordering::Relaxed);
        let now = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
        let lag = if last == 0 {
            self.started.map_or(0, |s| s.elapsed().as_secs())
        } else {
            now.saturating_sub(last)
        };
        out.push_str(&format!(
            "# HELP tregov_collector_lag_seconds Seconds since the trail was last read.\n# TYPE tregov_collector_lag_seconds gauge\ntregov_collector_lag_seconds {lag}\n"
        ));
        out
    }
}

/// Serves `/metrics` and `/healthz` on a loopback address until the process ends.
async fn serve_metrics(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            // Out of file descriptors, say: wait rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            // Only the request line matters; read until the headers end or the buffer fills.
            while len < buf.len() {
                match tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf[len..]))
                    .await
                {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => {
                        len += n;
                        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                }
            }
            let request = String::from_utf8_lossy(&buf[..len]);
            let path = request
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("");
            let (status, content_type, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
                "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
                _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}

pub struct DaemonOptions {
    pub dry_run: bool,
    /// Park plan items until `tregov approve ID` (or `tregov reject ID`).
    pub require_approval: bool,
    /// Directory to watch for policy changes (`None`: built-in policies, nothing to watch).
    pub policies_dir: Option<PathBuf>,
}

/// Why the daemon reconciles now.
enum Trigger {
    /// Every collector, then a full plan.
    Resync,
    /// A full plan over the store as it is (new policies, an approval).
    Replan,
    /// Governed changes in new trail log files.
    Trail(Vec<ObservedChange>),
}

/// The workspace roles a set of trail changes touched, when every change names its role(s);
/// `None` (plan everything) otherwise.
fn scope_of(changes: &[ObservedChange]) -> Option<BTreeSet<String>> {
    use tregov_collectors::cloudtrail_parse::observation as o;
    let mut roles = BTreeSet::new();
    for c in changes {
        let target = c.target.as_deref()?;
        match c.kind.as_str() {
            o::LAKEFORMATION_GRANT | o::LAKEFORMATION_REVOKE => {
                for principal in target.split(',') {
                    roles.insert(role_key(principal)?);
                }
            }
            o::IAM_ROLE_CHANGE => {
                roles.insert(format!("{}/{target}", c.account));
            }
            _ => return None,
        }
    }
    Some(roles)
}

/// Parks every item of `plan` and keeps only those an admin approved.
fn approved_only(store: &Store, mut plan: Plan) -> Result<Plan> {
    let planned: Vec<&str> = plan.items.iter().map(|i| i.id.as_str()).collect();
    store.expire_approvals_except(&planned)?;
    let mut keep = Vec::new();
    for item in plan.items {
        match store.park(&item.id, &json!(item))?.as_str() {
            "approved" => keep.push(item),
            "pending" => {
                tracing::info!(item = %item.id, change = item.change.verb(), target = %item.change.target(), "parked for approval (tregov approve ID)")
            }
            _ => {}
        }
    }
    plan.items = keep;
    Ok(plan)
}

/// `tregov approve | reject ID`.
pub fn decide_parked_command(
    data_dir: &Path,
    item: &str,
    approve: bool,
    reason: Option<&str>,
) -> Result<ExitCode> {
    let store = Store::open_existing(data_dir)?;
    let who = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let status = if approve { "approved" } else { "rejected" };
    if !store.decide_parked(item, status, &who, reason)? {
        return Err(EngineError::Request(format!(
            "no pending plan item `{item}` (see `tregov parked`)"
        )));
    }
    let log = tregov_engine::log::DecisionLog::open(data_dir)?;
    let mut m = Map::new();
    m.insert("kind".into(), json!("approval"));
    m.insert("item".into(), json!(item));
    m.insert("result".into(), json!(status));
    m.insert("by".into(), json!(who));
    if let Some(r) = reason {
        m.insert("reason".into(), json!(r));
    }
    log.append(vec![m])?;
    println!("{status}: plan item `{item}`");
    Ok(ExitCode::SUCCESS)
}

/// `tregov parked`: plan items waiting for (or decided by) an admin.
pub fn parked_command(output: Format, data_dir: &Path) -> Result<ExitCode> {
    let store = Store::open_existing(data_dir)?;
    for (item, status, body, by, note) in store.parked()? {
        if output == Format::Json {
            println!(
                "{}",
                json!({"item": item, "status": status, "planItem": body, "decidedBy": by, "note": note})
            );
        } else {
            println!(
                "[{item}] {status:<8} {} because {}{}{}",
                body["change"]["kind"].as_str().unwrap_or_default(),
                body["reason"].as_str().unwrap_or_default(),
                by.map(|b| format!(" (decided by {b})")).unwrap_or_default(),
                note.map(|n| format!(": {n}")).unwrap_or_default(),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Which collectors to re-run for a kind of governed change seen in the trail.
fn collectors_for(changes: &[ObservedChange]) -> (bool, bool, bool, bool) {
    use tregov_collectors::cloudtrail_parse::observation as o;
    let has = |k: &str| changes.iter().any(|c| c.kind == k);
    (
        has(o::LAKEFORMATION_GRANT) || has(o::LAKEFORMATION_REVOKE),
        has(o::IAM_ROLE_CHANGE),
        has(o::WORKSPACE_LIFECYCLE),
        has(o::BUDGET_CHANGE),
    )
}

/// Loads the policies directory if its content changed since the last attempt. A set that
/// fails to read, parse or validate is reported once and the last good set keeps deciding.
fn reload(
    engine: &mut Engine,
    dir: &Path,
    metrics: &Metrics,
    last_attempt: &mut Option<String>,
) -> bool {
    let loaded = tregov_engine::policies::read_policy_dir(dir).and_then(|(schema, sources)| {
        let version = tregov_engine::policies::version_of(Some(&schema), &sources);
        if last_attempt.as_deref() == Some(version.as_str()) || version == engine.bundle().version {
            *last_attempt = Some(version);
            return Ok(None);
        }
        *last_attempt = Some(version);
        PolicyBundle::from_sources(Some(schema), sources).map(Some)
    });
    match loaded {
        Ok(None) => false,
        Ok(Some(bundle)) => {
            let version = bundle.version.clone();
            match engine.set_policies(bundle) {
                Ok(()) => {
                    metrics.reloads.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(policy_version = %version, "policies reloaded");
                    true
                }
                Err(e) => {
                    // Not the files' fault (the log or store could not be written): try again
                    // on the next change or SIGHUP.
                    *last_attempt = None;
                    metrics.reload_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "policy reload failed; the last good policies keep deciding");
                    false
                }
            }
        }
        Err(e) => {
            metrics.reload_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                error = ?miette::Report::new(e),
                policy_version = %engine.bundle().version,
                "policy change rejected; the last good policies keep deciding"
            );
            false
        }
    }
}

pub fn daemon_command(
    config_path: &Path,
    data_dir: &Path,
    bundle: PolicyBundle,
    options: DaemonOptions,
) -> Result<ExitCode> {
    let config = Config::load(config_path)?;
    let problems = tregov_enforcers::validate(&config);
    if !problems.is_empty() && !options.dry_run {
        return Err(EngineError::Request(problems.join("; ")));
    }
    let listen: std::net::SocketAddr = config.daemon.metrics_listen.parse().map_err(|e| {
        EngineError::Request(format!(
            "`daemon.metrics_listen` `{}` is not an address: {e}",
            config.daemon.metrics_listen
        ))
    })?;
    if !listen.ip().is_loopback() {
        return Err(EngineError::Request(format!(
            "`daemon.metrics_listen` `{listen}` must be a loopback address"
        )));
    }
    let metrics = Arc::new(Metrics {
        started: Some(Instant::now()),
        ..Default::default()
    });

    crate::collect::runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| EngineError::Request(format!("cannot listen on `{listen}`: {e}")))?;
        let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tokio::spawn(serve_metrics(listener, metrics.clone()));
        tracing::info!(metrics = %bound, dry_run = options.dry_run, "daemon started");
        eprintln!("tregov daemon: serving /metrics and /healthz on http://{bound}");

        let collection = Collection::build(config.clone(), data_dir, &bundle).await?;
        let (api_stop, api_stopped) = tokio::sync::oneshot::channel::<()>();
        let api = crate::egress::spawn_in_daemon(&config, data_dir, bundle.clone(), &collection.aws, async {
            let _ = api_stopped.await;
        })
        .await?;
        let mut engine = open_engine(data_dir, bundle)?;
        let (events, entity_store) = (&collection.events, &collection.entity_store);
        let enforcers = tregov_enforcers::build(collection.aws.clone(), config.clone());

        // Policy changes arrive from a watcher thread; they are only hints to reload.
        let (policy_tx, mut policy_rx) = tokio::sync::mpsc::channel::<()>(16);
        let _watcher = match &options.policies_dir {
            Some(dir) => {
                use notify::Watcher;
                let tx = policy_tx.clone();
                let mut watcher = notify::recommended_watcher(
                    move |event: notify::Result<notify::Event>| {
                        let policy_file = event.is_ok_and(|e| {
                            !e.kind.is_access()
                                && e.paths.iter().any(|p| {
                                    p.extension().is_some_and(|x| x == "cedar" || x == "cedarschema")
                                })
                        });
                        if policy_file {
                            let _ = tx.try_send(());
                        }
                    },
                )
                .map_err(|e| EngineError::Request(format!("cannot watch policies: {e}")))?;
                watcher
                    .watch(dir, notify::RecursiveMode::Recursive)
                    .map_err(|e| {
                        EngineError::Request(format!("cannot watch `{}`: {e}", dir.display()))
                    })?;
                Some(watcher)
            }
            None => None,
        };
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| EngineError::Request(format!("cannot handle SIGHUP: {e}")))?;
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .map_err(|e| EngineError::Request(format!("cannot handle SIGTERM: {e}")))?;

        let mut poll = tokio::time::interval(Duration::from_secs(config.daemon.poll_seconds.max(1)));
        let mut resync =
            tokio::time::interval(Duration::from_secs(config.daemon.resync_seconds.max(1)));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut mark = events.last_file_id()?;
        let mut last_attempt: Option<String> = None;

        // Each branch runs to completion before the next signal is looked at: a SIGTERM lets
        // the reconcile in flight finish.
        let mut interrupt =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .map_err(|e| EngineError::Request(format!("cannot handle SIGINT: {e}")))?;
        loop {
            let mut trigger: Option<Trigger> = None;
            // The trail's changes are only marked seen once they are reconciled.
            let seen_before = mark;
            let mut detected: Option<Instant> = None;
            tokio::select! {
                _ = terminate.recv() => { tracing::info!("SIGTERM: stopping"); break; }
                _ = interrupt.recv() => { tracing::info!("interrupted: stopping"); break; }
                _ = hangup.recv() => {
                    if let Some(dir) = &options.policies_dir {
                        if reload(&mut engine, dir, &metrics, &mut last_attempt) { share_policies(api.as_deref(), &engine); trigger = Some(Trigger::Replan); }
                    }
                }
                Some(()) = policy_rx.recv() => {
                    // Editors write in several steps: let the burst settle before reading.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    while policy_rx.try_recv().is_ok() {}
                    if let Some(dir) = &options.policies_dir {
                        if reload(&mut engine, dir, &metrics, &mut last_attempt) { share_policies(api.as_deref(), &engine); trigger = Some(Trigger::Replan); }
                    }
                }
                _ = resync.tick() => { trigger = Some(Trigger::Resync); }
                _ = poll.tick() => {
                    if let Some(ct) = &collection.cloudtrail {
                        let poll_started = Instant::now();
                        match ct.run(&crate::collect::QuietProgress).await {
                            Ok(_) => {
                                let now = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
                                metrics.last_collect.store(now, Ordering::Relaxed);
                            }
                            Err(e) => tracing::warn!(error = %e, "cloudtrail poll failed"),
                        }
                        let (changes, next) = match events.observations_after(mark) {
                            Ok(found) => found,
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot read new trail changes");
                                (Vec::new(), mark)
                            }
                        };
                        mark = next;
                        if !changes.is_empty() {
                            tracing::info!(
                                kinds = ?changes.iter().map(|c| c.kind.as_str()).collect::<BTreeSet<_>>(),
                                "out-of-band changes in the trail"
                            );
                            trigger = Some(Trigger::Trail(changes));
                            detected = Some(poll_started);
                        }
                    }
                    if trigger.is_none() && options.require_approval && entity_store.has_approved().unwrap_or(false) {
                        trigger = Some(Trigger::Replan);
                    }
                }
            }
            let Some(trigger) = trigger else { continue };
            let scope = match &trigger {
                Trigger::Resync => {
                    let reports = collection.pass(true).await;
                    for r in reports.iter().filter(|r| !r.errors.is_empty()) {
                        tracing::warn!(collector = %r.collector, errors = ?r.errors, "collector errors");
                    }
                    mark = events.last_file_id().unwrap_or(mark).max(mark);
                    tracing::info!("resync done");
                    None
                }
                Trigger::Replan => None,
                Trigger::Trail(changes) => {
                    // Re-read only what the trail says changed, then reconcile just the roles
                    // it names (everything, when it does not say).
                    let (lf, iam, ws, budgets) = collectors_for(changes);
                    if !collection.targeted(lf, iam, ws, budgets).await {
                        // Look again at the next poll rather than miss the change.
                        mark = seen_before;
                    }
                    scope_of(changes)
                }
            };
            let started = Instant::now();
            let plan = match compute_plan_scoped(&mut engine, &config, "daemon", scope.as_ref()) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "planning failed; nothing applied");
                    mark = seen_before;
                    continue;
                }
            };
            metrics.reconciles.fetch_add(1, Ordering::Relaxed);
            metrics.decisions.fetch_add(plan.decisions, Ordering::Relaxed);
            metrics
                .plan_items
                .fetch_add(plan.items.len() as u64, Ordering::Relaxed);
            if plan.items.is_empty() {
                tracing::debug!("in sync");
                continue;
            }
            if options.dry_run {
                if let Err(e) = log_results(&engine, &plan, &[], "daemon", true) {
                    tracing::error!(error = %e, "cannot log the dry-run plan");
                }
                for item in &plan.items {
                    tracing::info!(item = %item.id, change = item.change.verb(), target = %item.change.target(), reason = %item.reason, "planned (dry run)");
                }
                continue;
            }
            let plan = if options.require_approval {
                match approved_only(entity_store, plan) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot park plan items; nothing applied");
                        continue;
                    }
                }
            } else {
                plan
            };
            if plan.items.is_empty() {
                continue;
            }
            let results = match enforce(&engine, &enforcers, &plan, "daemon", Some(&metrics)).await {
                Ok(results) => results,
                Err(e) => {
                    // The changes were made; the next pass finds AWS in sync and the log
                    // says why it could not record them.
                    tracing::error!(error = %e, "applied, but the results could not be recorded");
                    continue;
                }
            };
            if options.require_approval {
                for r in results.iter().filter(|r| r.error.is_none()) {
                    if let Err(e) = entity_store.decide_parked(&r.item, "applied", "daemon", None) {
                        tracing::error!(item = %r.item, error = %e, "cannot mark a parked item applied");
                    }
                }
            }
            // From the poll that found the log file to the last enforcement call: the
            // drift-revert latency, poll interval excluded.
            tracing::info!(
                items = plan.items.len(),
                failed = results.iter().filter(|r| r.error.is_some()).count(),
                plan_and_apply_ms = started.elapsed().as_millis() as u64,
                since_detection_ms = detected.map(|d| d.elapsed().as_millis() as u64),
                "reconciled"
            );
        }
        let _ = api_stop.send(());
        Ok(ExitCode::SUCCESS)
    })
}

/// Hands a reloaded policy set to the API, so egress and `is-authorized` decide with it too.
fn share_policies(api: Option<&tregov_api::Api>, engine: &Engine) {
    if let Some(api) = api {
        if let Err(e) = api.set_policies(engine.bundle().clone()) {
            tracing::error!(error = %e, "the API could not take the reloaded policies; it keeps the last good set");
        }
    }
}
