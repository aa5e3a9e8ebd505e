//! The decision cache is exact: over random steps on the bench TRE's shape (attribute
//! changes, parent edges added and removed, nested groups, deletions, creation of uids that
//! were missing, policy reloads), every answer `Engine::decide` gives, cached or not, equals
//! a fresh Cedar evaluation (decision, reasons, errors), and the slice its log record carries,
//! made of kept entity texts, equals the slice rendered afresh.
//!
//! CI runs a bounded count. The full run:
//! `TREGOV_CACHE_STEPS=100000 TREGOV_CACHE_ENTITIES=10000 cargo test --release -p tregov-benches --test cache_exact -- --nocapture`
//! (`TREGOV_CACHE_SEED` repeats a run).

mod world;

use serde_json::json;
use tregov_benches::PROJECTS;
use tregov_engine::decide::ParsedRequest;
use tregov_engine::{Engine, RequestSpec};
use world::{bundle, env_number, uid, World};

/// Requests over existing and missing users, datasets and workspaces.
fn requests(engine: &Engine, world: &mut World, n: usize) -> Vec<ParsedRequest> {
    (0..n)
        .map(|_| {
            let user = world.user_id();
            let mut context = json!({});
            let (action, resource) = match world.rng.below(10) {
                0..=5 => (
                    ["read", "write", "administer"][world.rng.below(3)],
                    format!(
                        "Tre::Dataset::\"ds-{}\"",
                        world.rng.below(world.datasets + 3)
                    ),
                ),
                // The context names an entity: it is one of the decision's seeds.
                6 => {
                    let project = format!("proj-{:02}", world.rng.below(PROJECTS));
                    context = json!({"project": {"__entity": uid("Project", &project)}});
                    (
                        "createWorkspace",
                        format!("Tre::WorkspaceType::\"type-{}\"", world.rng.below(4)),
                    )
                }
                _ => (
                    "connectWorkspace",
                    format!("Tre::Workspace::\"ws-{}\"", world.rng.below(world.users)),
                ),
            };
            engine
                .parse(RequestSpec {
                    principal: format!("Tre::User::\"{user}\""),
                    action: format!("Tre::Action::\"{action}\""),
                    resource,
                    context,
                })
                .expect("request")
        })
        .collect()
}

#[test]
fn every_cached_answer_is_the_answer_cedar_gives_afresh() {
    let steps = env_number("TREGOV_CACHE_STEPS", 4_000);
    let total = env_number("TREGOV_CACHE_ENTITIES", 1_000) as usize;
    let seed = env_number("TREGOV_CACHE_SEED", 20261202);
    eprintln!("cache differential: {steps} steps, about {total} entities, seed {seed}");

    let mut world = World::new(total, seed);
    let dir = tempfile::tempdir().expect("tmp");
    let mut extra = false;
    let mut engine = world.engine(dir.path(), extra);
    // A pool small enough that requests repeat between changes, so answers are reused.
    let pool = requests(&engine, &mut world, 400);

    let (mut decided, mut changes, mut reloads) = (0u64, 0u64, 0u64);
    for step in 0..steps {
        match world.rng.below(1000) {
            0..=749 => {
                let request = &pool[world.rng.below(pool.len())];
                let answer = engine.decide(request);
                let fresh = engine.decide_uncached(request);
                assert_eq!(
                    (answer.decision, &answer.reasons, &answer.errors),
                    (fresh.decision, &fresh.reasons, &fresh.errors),
                    "step {step} (seed {seed}): {:?}",
                    request.spec
                );
                // The slice the log records, made of kept entity texts, is the one
                // rendered afresh.
                let logged = engine
                    .decision_record(request, &answer, "differential")
                    .to_map();
                let afresh = engine.graph().render_slice(&engine.slice_of(request));
                assert_eq!(
                    logged["slice"],
                    serde_json::Value::Array(afresh),
                    "step {step} (seed {seed}): slice of {:?}",
                    request.spec
                );
                decided += 1;
            }
            750..=997 => {
                let batch = world.change();
                if !(batch.upserts.is_empty() && batch.deletes.is_empty()) {
                    engine.apply(&batch).expect("apply");
                    changes += 1;
                }
            }
            _ => {
                extra = !extra;
                engine.set_policies(bundle(extra)).expect("reload");
                reloads += 1;
            }
        }
    }
    let stats = engine.cache_stats();
    eprintln!(
        "{decided} decisions ({} cache hits, {} misses), {changes} changes, {reloads} reloads; {} answers invalidated, {} clears",
        stats.hits, stats.misses, stats.invalidated, stats.cleared
    );
    // The run means something only if the cache both answered and was invalidated.
    assert!(stats.hits > decided / 10, "{stats:?}");
    assert!(stats.invalidated > 0, "{stats:?}");
}
