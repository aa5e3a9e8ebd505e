//! Planning time for 1,000 researchers x 2,000 datasets x 20 projects:
//! `cargo bench -p tregov-benches --bench plan`.
//!
//! Two cases: a TRE where nothing is granted yet (every grant planned), and the steady state
//! the daemon sees, where AWS already matches (every candidate decided, nothing planned).
//! Medians of 5 runs.

use std::time::Instant;

// As in the `tregov` binary: planning allocates heavily on every core.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use serde_json::json;
use tregov_benches::{median, tre_entities_shaped, Shape};
use tregov_engine::entities::{parse_entities_file, EntityGraph};
use tregov_engine::plan::{plan, plan_scoped, ActualState, Change, PlanSettings};
use tregov_engine::store::Observed;
use tregov_engine::{Engine, PolicyBundle};

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
    let text = serde_json::to_string(&tre_entities_shaped(shape)).expect("json");
    let list = parse_entities_file("bench", &text, Some(&schema)).expect("entities");
    let graph = EntityGraph::from_entities(&list, Some(&schema)).expect("graph");
    let engine = Engine::in_memory(bundle, graph);
    let settings = PlanSettings {
        backup_tag: ("tregov:backup".into(), "enabled".into()),
        period: "2026-11".into(),
        ..Default::default()
    };

    let empty = ActualState::default();
    let mut cold_runs = Vec::new();
    let mut cold = None;
    for _ in 0..5 {
        let started = Instant::now();
        let p = plan(&engine, &empty, &settings);
        cold_runs.push(started.elapsed());
        cold = Some(p);
    }
    let cold = cold.expect("a plan");

    // What AWS holds once the cold plan is applied.
    let mut observed = Vec::new();
    for item in &cold.items {
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
    let converged = ActualState::from_observed(&observed);
    let mut warm_runs = Vec::new();
    let mut warm = None;
    for _ in 0..5 {
        let started = Instant::now();
        let p = plan(&engine, &converged, &settings);
        warm_runs.push(started.elapsed());
        warm = Some(p);
    }
    let warm = warm.expect("a plan");

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
    println!(
        "TRE: {} users (1,000 researchers), {} datasets, {} workspaces, 20 projects",
        shape.users, shape.datasets, shape.workspaces
    );
    println!(
        "nothing granted yet  median {:>10.2?}  {} items ({grants} grants), {} decisions",
        median(cold_runs),
        cold.items.len(),
        cold.decisions
    );
    println!(
        "steady state         median {:>10.2?}  {} items, {} decisions (target <= 3 s)",
        median(warm_runs),
        warm.items.len(),
        warm.decisions
    );
    println!(
        "one role (fast path) median {:>10.2?}  {} items, {} decisions",
        median(scoped_runs),
        scoped.items.len(),
        scoped.decisions
    );
}
