//! Planning time for 1,000 researchers x 2,000 datasets x 20 projects:
//! `cargo bench -p tregov-benches --bench plan`.
//!
//! Cases: a TRE where nothing is granted yet (every grant planned); the steady state the
//! daemon sees, where AWS already matches, planned cold (the decision cache emptied first),
//! again with nothing changed, and after 1% of users changed; and Cedar's own evaluation of
//! the same decisions, on as many threads as the planner uses. Medians of 5 runs.

use std::time::Instant;

// As in the `tregov` binary: planning allocates heavily on every core.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use cedar_policy::{Authorizer, Context, Entity, Request};
use serde_json::json;
use tregov_benches::{median, tre_entities_shaped, Shape};
use tregov_engine::cache::DecisionKey;
use tregov_engine::plan::{plan, plan_scoped, ActualState, Change, PlanSettings};
use tregov_engine::store::Observed;
use tregov_engine::{Engine, PolicyBundle, StoreBatch};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // 70% of users are researchers in the fixture: 1,430 users give 1,000 researchers.
    let shape = Shape {
        users: 1430,
        datasets: 2000,
        workspaces: 1430,
        egress: 0,
    };
    let bundle = PolicyBundle::embedded().expect("policies");
    let schema = bundle.schema.clone().expect("schema");
    let values = tre_entities_shaped(shape);
    let dir = tempfile::tempdir().expect("tmp");
    let mut engine = Engine::open(dir.path(), bundle).expect("engine");
    engine
        .apply(&StoreBatch {
            upserts: values
                .iter()
                .map(|v| Entity::from_json_value(v.clone(), Some(&schema)).expect("entity"))
                .collect(),
            partition: "bench".into(),
            ..Default::default()
        })
        .expect("import");
    let settings = PlanSettings {
        backup_tag: ("tregov:backup".into(), "enabled".into()),
        period: "2026-11".into(),
        // As the daemon plans: every data-access question carries the governance clock.
        now: Some(engine.tick_at(std::time::SystemTime::now()).now),
        ..Default::default()
    };

    let empty = ActualState::default();
    let mut cold_runs = Vec::new();
    let mut cold = None;
    for _ in 0..5 {
        engine.clear_cache();
        let started = Instant::now();
        let p = plan(&engine, &empty, &settings);
        cold_runs.push(started.elapsed());
        cold = Some(p);
    }
    let cold = cold.expect("a plan");
    let converged = converged(&cold);

    // Cedar alone on exactly the questions the steady-state plan asks, each run right after
    // a plan's, so a slow spell of the machine falls on both alike: the ratio is the median
    // of the pairs' ratios.
    engine.clear_cache();
    plan(&engine, &converged, &settings);
    let asked = engine.cached_keys();
    let (mut steady_cold_runs, mut cedar_runs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        engine.clear_cache();
        let started = Instant::now();
        std::hint::black_box(plan(&engine, &converged, &settings));
        let planned = started.elapsed();
        let cedar = cedar_alone(&engine, &asked);
        ratios.push(planned.as_secs_f64() / cedar.as_secs_f64());
        steady_cold_runs.push(planned);
        cedar_runs.push(cedar);
    }
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];

    let mut warm_runs = Vec::new();
    let mut warm = None;
    for _ in 0..5 {
        let started = Instant::now();
        let p = plan(&engine, &converged, &settings);
        warm_runs.push(started.elapsed());
        warm = Some(p);
    }
    let warm = warm.expect("a plan");

    // 1% of users change (a status and a group membership each), through the store and its
    // change feed, then the plan runs again.
    let mut changed_runs = Vec::new();
    let mut changed_misses = Vec::new();
    for run in 0..5 {
        engine
            .apply(&one_percent_of_users(&values, &schema, run))
            .expect("change");
        let misses = engine.cache_stats().misses;
        let started = Instant::now();
        std::hint::black_box(plan(&engine, &converged, &settings));
        changed_runs.push(started.elapsed());
        changed_misses.push(engine.cache_stats().misses - misses);
    }

    // The daemon's fast path: the trail named one role that an out-of-band grant touched.
    let one_role: std::collections::BTreeSet<String> =
        [format!("{:012}/ws-7", 100000000000u64 + 7)].into();
    let mut scoped_runs = Vec::new();
    let mut scoped = None;
    for _ in 0..5 {
        let started = Instant::now();
        let p = plan_scoped(&engine, &converged, &settings, Some(&one_role));
        scoped_runs.push(started.elapsed());
        scoped = Some(p);
    }
    let scoped = scoped.expect("a plan");
    let grants = cold
        .items
        .iter()
        .filter(|i| matches!(i.change, Change::LfGrant { .. }))
        .count();
    let cedar = median(cedar_runs);
    let per_decision = cedar.as_secs_f64() / asked.len().max(1) as f64;
    let misses = changed_misses.iter().copied().max().unwrap_or(0);
    let (steady_cold, warm_median, changed) = (
        median(steady_cold_runs),
        median(warm_runs),
        median(changed_runs),
    );
    println!(
        "TRE: {} users (1,000 researchers), {} datasets, {} workspaces, 20 projects",
        shape.users, shape.datasets, shape.workspaces
    );
    println!(
        "nothing granted yet (cold)  median {:>10.2?}  {} items ({grants} grants), {} decisions",
        median(cold_runs),
        cold.items.len(),
        cold.decisions
    );
    println!(
        "steady state, cold cache    median {:>10.2?}  {} decisions; {ratio:.2}x Cedar alone (median of paired runs {}; target <= 1.2x)",
        steady_cold,
        asked.len(),
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "Cedar alone, same decisions median {:>10.2?}  ({:.2} us a decision)",
        cedar,
        per_decision * 1e6
    );
    println!(
        "nothing changed             median {:>10.2?}  {} items, {} decisions; cold/unchanged {:.1}x (target >= 10x)",
        warm_median,
        warm.items.len(),
        warm.decisions,
        steady_cold.as_secs_f64() / warm_median.as_secs_f64()
    );
    println!(
        "1% of users changed         median {:>10.2?}  up to {misses} decisions re-asked; target <= {:.2?} (2x unchanged + Cedar's cost of those)",
        changed,
        warm_median * 2 + std::time::Duration::from_secs_f64(per_decision * misses as f64)
    );
    println!(
        "one role (fast path)        median {:>10.2?}  {} items, {} decisions",
        median(scoped_runs),
        scoped.items.len(),
        scoped.decisions
    );
}

/// What AWS holds once `plan` is applied.
fn converged(plan: &tregov_engine::plan::Plan) -> ActualState {
    let mut observed = Vec::new();
    for item in &plan.items {
        match &item.change {
            Change::LfGrant {
                principal,
                resource,
                permissions,
            } => observed.push(Observed {
                kind: "lf-permission".into(),
                key: format!("{principal}|{resource}"),
                body: json!({"principal": principal, "resource": resource,
                    "permissions": permissions, "permissionsWithGrantOption": []}),
            }),
            Change::PutRolePolicy {
                role_arn,
                policy_name,
                document,
                ..
            } => observed.push(Observed {
                kind: "iam-role".into(),
                key: role_arn.clone(),
                body: json!({"tags": {}, "inlinePolicies": {policy_name.clone(): document}}),
            }),
            _ => {}
        }
    }
    ActualState::from_observed(&observed)
}

/// Every 100th user, its status flipped and its first permission list dropped on odd runs
/// (restored on even ones).
fn one_percent_of_users(
    values: &[serde_json::Value],
    schema: &cedar_policy::Schema,
    run: usize,
) -> StoreBatch {
    let users = values
        .iter()
        .filter(|v| v["uid"]["type"] == "Tre::User")
        .step_by(100);
    let upserts = users
        .map(|v| {
            let mut v = v.clone();
            if run.is_multiple_of(2) {
                v["attrs"]["status"] = json!("inactive");
                if let Some(parents) = v["parents"].as_array_mut() {
                    parents.retain(|p| p["type"] != "Tre::AccessGroup");
                }
            }
            Entity::from_json_value(v, Some(schema)).expect("entity")
        })
        .collect();
    StoreBatch {
        upserts,
        partition: "bench".into(),
        ..Default::default()
    }
}

/// Cedar's authorizer on `asked`, shared over as many threads as the planner uses.
fn cedar_alone(engine: &Engine, asked: &[DecisionKey]) -> std::time::Duration {
    let requests: Vec<(Request, &DecisionKey)> = asked
        .iter()
        .map(|k| {
            let r = Request::new(
                k.principal().clone(),
                k.action().clone(),
                k.resource().clone(),
                Context::from_json_str(k.context(), None).expect("context"),
                None,
            )
            .expect("request");
            (r, k)
        })
        .collect();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let chunk = requests.len().div_ceil(workers).max(1);
    let authorizer = Authorizer::new();
    let whole = tregov_benches::cedar_store_entities(engine);
    let started = Instant::now();
    std::thread::scope(|s| {
        for part in requests.chunks(chunk) {
            let authorizer = &authorizer;
            let whole = &whole;
            s.spawn(move || {
                for (r, k) in part {
                    std::hint::black_box(authorizer.is_authorized(
                        r,
                        engine.bundle().policies_for(k.action()),
                        whole,
                    ));
                }
            });
        }
    });
    started.elapsed()
}
