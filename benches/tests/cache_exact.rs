//! The decision cache is exact: over random steps on the bench TRE's shape (attribute
//! changes, parent edges added and removed, nested groups, deletions, creation of uids that
//! were missing, policy reloads), every answer `Engine::decide` gives, cached or not, equals
//! a fresh Cedar evaluation (decision, reasons, errors).
//!
//! CI runs a bounded count. The full run:
//! `TREGOV_CACHE_STEPS=100000 TREGOV_CACHE_ENTITIES=10000 cargo test --release -p tregov-benches --test cache_exact -- --nocapture`
//! (`TREGOV_CACHE_SEED` repeats a run).

use std::collections::BTreeMap;

use cedar_policy::{Entity, Schema};
use serde_json::{json, Value};
use tregov_benches::{tre_entities, Lcg, PROJECTS};
use tregov_engine::decide::ParsedRequest;
use tregov_engine::policies::{embedded_sources, PolicySource};
use tregov_engine::{Engine, PolicyBundle, RequestSpec, StoreBatch};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The default schema with groups that nest (a group in groups and projects), so ancestors
/// are indirect: a user's closed ancestor set then changes when a group's parents do.
fn nested_schema() -> PolicySource {
    let text = tregov_policies::SCHEMA.replace(
        "entity AccessGroup;",
        "entity AccessGroup in [AccessGroup, Project];",
    );
    assert!(
        text.contains("entity AccessGroup in"),
        "schema changed shape"
    );
    PolicySource {
        name: "tre.cedarschema".into(),
        text,
    }
}

/// The default policies, or those plus two that read a literal entity and a nested group.
fn bundle(extra: bool) -> PolicyBundle {
    let mut sources = embedded_sources();
    if extra {
        sources.push(PolicySource {
            name: "extra.cedar".into(),
            text: r#"
@id("diff-frozen-project")
forbid (principal, action == Tre::Action::"read", resource is Tre::Dataset)
when { Tre::Project::"proj-03".accountId == "frozen" };

@id("diff-nested-readers")
permit (principal, action == Tre::Action::"read", resource is Tre::Dataset)
when { principal in Tre::AccessGroup::"nest-0" && resource.classification == "internal" };
"#
            .into(),
        });
    }
    PolicyBundle::from_sources(Some(nested_schema()), sources).expect("policies")
}

fn uid(t: &str, id: &str) -> Value {
    json!({"type": format!("Tre::{t}"), "id": id})
}

fn key(v: &Value) -> String {
    format!(
        "{}::{}",
        v["type"].as_str().unwrap_or(""),
        v["id"].as_str().unwrap_or("")
    )
}

/// The TRE as the test believes it is, and what it can do to it.
struct World {
    rng: Lcg,
    schema: Schema,
    entities: BTreeMap<String, Value>,
    /// Entities deleted or never created, with the body they would have.
    absent: BTreeMap<String, Value>,
    users: usize,
    datasets: usize,
}

impl World {
    /// An existing entity of type `kind` (`Tre::Workspace`, not `Tre::WorkspaceType`).
    fn pick(&mut self, kind: &str) -> Option<String> {
        let prefix = format!("{kind}::");
        let keys: Vec<&String> = self
            .entities
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .collect();
        if keys.is_empty() {
            return None;
        }
        let i = self.rng.below(keys.len());
        Some(keys[i].clone())
    }

    fn user_id(&mut self) -> String {
        // A few users that have never existed: deciding about them, then creating them.
        let n = self.users + 5;
        format!("user-{}", self.rng.below(n))
    }

    fn group_uid(&mut self) -> Value {
        match self.rng.below(6) {
            0 => uid("AccessGroup", &format!("nest-{}", self.rng.below(4))),
            _ => {
                let d = self.rng.below(self.datasets + 3);
                let g = ["readers", "writers", "admins"][self.rng.below(3)];
                uid("AccessGroup", &format!("ds-{d}#{g}"))
            }
        }
    }

    /// One change, as the store batch that makes it.
    fn change(&mut self) -> StoreBatch {
        let mut batch = StoreBatch {
            partition: "bench".into(),
            ..Default::default()
        };
        let roll = self.rng.below(100);
        let touched = match roll {
            0..=29 => self.change_attribute(),
            30..=59 => self.change_parents(),
            60..=74 => self.delete(&mut batch),
            75..=89 => self.create(),
            _ => self.nest_group(),
        };
        if let Some(k) = touched {
            let body = self.entities[&k].clone();
            batch.upserts.push(
                Entity::from_json_value(body.clone(), Some(&self.schema))
                    .unwrap_or_else(|e| panic!("test wrote an invalid entity {body}: {e}")),
            );
        }
        batch
    }

    fn change_attribute(&mut self) -> Option<String> {
        let kind = [
            "Tre::User",
            "Tre::Dataset",
            "Tre::Workspace",
            "Tre::Project",
        ][self.rng.below(4)];
        let k = self.pick(kind)?;
        let pick = self.rng.below(4);
        let new_user = self.user_id();
        let v = self.entities.get_mut(&k)?;
        let attrs = &mut v["attrs"];
        match kind {
            "Tre::User" => {
                attrs["status"] = json!(["active", "inactive", "pending", "active"][pick]);
            }
            "Tre::Dataset" => match pick {
                0 => {
                    attrs["classification"] = json!(
                        ["public", "internal", "confidential", "restricted"][new_user.len() % 4]
                    )
                }
                1 => {
                    attrs["maxAccess"] = json!(if attrs["maxAccess"] == "readonly" {
                        "readwrite"
                    } else {
                        "readonly"
                    })
                }
                2 => attrs["category"] = json!(["open", "my", "organization"][new_user.len() % 3]),
                _ => attrs["owner"] = json!({"__entity": uid("User", &new_user)}),
            },
            "Tre::Workspace" => attrs["owner"] = json!({"__entity": uid("User", &new_user)}),
            _ => {
                attrs["accountId"] = json!(if pick == 0 { "frozen" } else { "100000000003" });
            }
        }
        Some(k)
    }

    fn change_parents(&mut self) -> Option<String> {
        let k = self.pick("Tre::User")?;
        let group = self.group_uid();
        let role = uid(
            "Role",
            ["Researcher", "ITAdmin", "DataManager", "Auditor"][self.rng.below(4)],
        );
        let project = uid("Project", &format!("proj-{:02}", self.rng.below(PROJECTS)));
        let target = [group, role, project][self.rng.below(3)].clone();
        let v = self.entities.get_mut(&k)?;
        let parents = v["parents"].as_array_mut()?;
        match parents.iter().position(|p| *p == target) {
            Some(i) => {
                parents.remove(i);
            }
            None => parents.push(target),
        }
        Some(k)
    }

    /// A group gains or loses a parent group or project: every member's ancestors change.
    fn nest_group(&mut self) -> Option<String> {
        let child = self.group_uid();
        let parent = if self.rng.below(2) == 0 {
            uid("AccessGroup", &format!("nest-{}", self.rng.below(4)))
        } else {
            uid("Project", &format!("proj-{:02}", self.rng.below(PROJECTS)))
        };
        // Groups nest only upwards (`nest-1` in `nest-3`, never back): Cedar refuses cycles.
        let rank = |v: &Value| {
            v["id"]
                .as_str()
                .and_then(|id| id.strip_prefix("nest-"))
                .and_then(|n| n.parse::<u32>().ok())
        };
        if let (Some(c), Some(p)) = (rank(&child), rank(&parent)) {
            if c >= p {
                return None;
            }
        }
        let k = key(&child);
        let v = self.entities.get_mut(&k)?;
        let parents = v["parents"].as_array_mut()?;
        match parents.iter().position(|p| *p == parent) {
            Some(i) => {
                parents.remove(i);
            }
            None => parents.push(parent),
        }
        Some(k)
    }

    fn delete(&mut self, batch: &mut StoreBatch) -> Option<String> {
        let kind = [
            "Tre::User",
            "Tre::Dataset",
            "Tre::AccessGroup",
            "Tre::Workspace",
        ][self.rng.below(4)];
        let k = self.pick(kind)?;
        let body = self.entities.remove(&k)?;
        let uid = tregov_engine::entities::uid_from_json(&body["uid"])?;
        batch.deletes.push(uid);
        self.absent.insert(k, body);
        None
    }

    fn create(&mut self) -> Option<String> {
        let n = self.absent.len();
        if n == 0 {
            return None;
        }
        let i = self.rng.below(n);
        let k = self.absent.keys().nth(i)?.clone();
        let body = self.absent.remove(&k)?;
        self.entities.insert(k.clone(), body);
        Some(k)
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

    let (shape, values) = tre_entities(total);
    let schema = bundle(false).schema.clone().expect("schema");
    let mut entities: BTreeMap<String, Value> =
        values.into_iter().map(|v| (key(&v["uid"]), v)).collect();
    for n in 0..4 {
        let v =
            json!({"uid": uid("AccessGroup", &format!("nest-{n}")), "attrs": {}, "parents": []});
        entities.insert(key(&v["uid"]), v);
    }
    let mut absent = BTreeMap::new();
    for u in shape.users..shape.users + 5 {
        let v = json!({"uid": uid("User", &format!("user-{u}")), "attrs": {"status": "active"},
            "parents": [uid("Role", "Researcher"), uid("AccessGroup", "nest-0")]});
        absent.insert(key(&v["uid"]), v);
    }
    let mut world = World {
        rng: Lcg::new(seed),
        schema: schema.clone(),
        entities,
        absent,
        users: shape.users,
        datasets: shape.datasets,
    };

    let dir = tempfile::tempdir().expect("tmp");
    let mut extra = false;
    let mut engine = Engine::open(dir.path(), bundle(extra)).expect("engine");
    let upserts = world
        .entities
        .values()
        .map(|v| Entity::from_json_value(v.clone(), Some(&schema)).expect("fixture entity"))
        .collect();
    engine
        .apply(&StoreBatch {
            upserts,
            partition: "bench".into(),
            ..Default::default()
        })
        .expect("import");
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
