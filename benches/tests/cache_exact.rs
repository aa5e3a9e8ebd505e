//! The decision cache is exact: over random steps on the bench TRE's shape (attribute
//! changes, parent edges added and removed, nested groups, deletions, creation of uids that
//! were missing, policy reloads), every answer `Engine::decide` gives, cached or not, equals
//! a fresh Cedar evaluation (decision, reasons, errors) over the decision's slice and over
//! Cedar's own entities for the whole store, and the slice its log record carries,
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

/// Cedar's own entities for the whole store: the oracle the compact graph's slices are
/// checked against. Rebuilding them at every change would make the full run take hours, so
/// they follow the store's change feed through Cedar's own updates, and are rebuilt afresh
/// every `FRESH_EVERY` changes and whenever they disagree with the engine: Cedar's
/// incremental updates differ from a fresh build once an entity is removed (see
/// `graph::tests::a_deleted_parent_stays_in_its_members_ancestors_as_after_a_restart`), so only a
/// fresh build is taken as the truth.
struct Whole {
    entities: cedar_policy::Entities,
    revision: u64,
    updates: u32,
    authorizer: cedar_policy::Authorizer,
}

const FRESH_EVERY: u32 = 50;

impl Whole {
    fn of(engine: &Engine) -> Self {
        Self {
            entities: tregov_benches::cedar_store_entities(engine),
            revision: engine.store().expect("store").revision().expect("revision"),
            updates: 0,
            authorizer: cedar_policy::Authorizer::new(),
        }
    }

    /// Cedar's answer over the whole store, from a fresh build whenever the kept one
    /// disagrees with `answer`.
    fn decide(
        &mut self,
        engine: &Engine,
        request: &ParsedRequest,
        answer: &tregov_engine::DecisionOutcome,
    ) -> tregov_engine::DecisionOutcome {
        self.catch_up(engine);
        let whole = self.ask(engine, request);
        let same = (whole.decision, &whole.reasons, &whole.errors)
            == (answer.decision, &answer.reasons, &answer.errors);
        if same || self.updates == 0 {
            return whole;
        }
        *self = Self::of(engine);
        self.ask(engine, request)
    }

    fn catch_up(&mut self, engine: &Engine) {
        let changes = engine
            .store()
            .expect("store")
            .changes_since(self.revision)
            .expect("changes");
        if changes.revision == self.revision {
            return;
        }
        if self.updates + 1 >= FRESH_EVERY {
            *self = Self::of(engine);
            return;
        }
        for b in &changes.upserts {
            if b.contains("\"user-101\"") || b.contains("\"nest-0\"") {}
        }
        for d in &changes.deletes {
            let d = d.to_string();
            if d.contains("user-101") || d.contains("nest-0") {}
        }
        let upserts = changes
            .upserts
            .iter()
            .map(|b| cedar_policy::Entity::from_json_str(b, None).expect("stored body"));
        self.entities = std::mem::replace(&mut self.entities, cedar_policy::Entities::empty())
            .remove_entities(changes.deletes.iter().cloned())
            .expect("remove")
            .upsert_entities(upserts, None)
            .expect("upsert");
        self.revision = changes.revision;
        self.updates += 1;
    }

    fn ask(&self, engine: &Engine, request: &ParsedRequest) -> tregov_engine::DecisionOutcome {
        let response = self.authorizer.is_authorized(
            &request.request,
            engine.bundle().policies_for(request.action()),
            &self.entities,
        );
        tregov_engine::decide::outcome_from_response(&response, engine.bundle())
    }
}

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
    let mut oracle = Whole::of(&engine);

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
                // And both are what Cedar decides over the whole store, not only the slice.
                let whole = oracle.decide(&engine, request, &answer);
                assert_eq!(
                    (answer.decision, &answer.reasons, &answer.errors),
                    (whole.decision, &whole.reasons, &whole.errors),
                    "step {step} (seed {seed}): over the whole store: {:?}",
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
                oracle = Whole::of(&engine);
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
