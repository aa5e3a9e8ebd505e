//! The random TRE the differential tests change step by step, on the bench TRE's shape:
//! attribute changes, parent edges added and removed, nested groups, deletions, creation of
//! uids that were missing. Each change is the store batch that makes it.

use std::collections::BTreeMap;
use std::path::Path;

use cedar_policy::{Entity, Schema};
use serde_json::{json, Value};
use tregov_benches::{tre_entities, Lcg, PROJECTS};
use tregov_engine::policies::{embedded_sources, PolicySource};
use tregov_engine::{Engine, PolicyBundle, StoreBatch};

pub fn env_number(name: &str, default: u64) -> u64 {
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
pub fn bundle(extra: bool) -> PolicyBundle {
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

pub fn uid(t: &str, id: &str) -> Value {
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
pub struct World {
    pub rng: Lcg,
    schema: Schema,
    pub entities: BTreeMap<String, Value>,
    /// Entities deleted or never created, with the body they would have.
    absent: BTreeMap<String, Value>,
    pub users: usize,
    pub datasets: usize,
}

impl World {
    /// About `total` entities, four nestable groups, and five users that do not exist yet.
    pub fn new(total: usize, seed: u64) -> Self {
        let (shape, values) = tre_entities(total);
        let schema = bundle(false).schema.clone().expect("schema");
        let mut entities: BTreeMap<String, Value> =
            values.into_iter().map(|v| (key(&v["uid"]), v)).collect();
        for n in 0..4 {
            let v = json!({"uid": uid("AccessGroup", &format!("nest-{n}")), "attrs": {}, "parents": []});
            entities.insert(key(&v["uid"]), v);
        }
        let mut absent = BTreeMap::new();
        for u in shape.users..shape.users + 5 {
            let v = json!({"uid": uid("User", &format!("user-{u}")), "attrs": {"status": "active"},
                "parents": [uid("Role", "Researcher"), uid("AccessGroup", "nest-0")]});
            absent.insert(key(&v["uid"]), v);
        }
        Self {
            rng: Lcg::new(seed),
            schema,
            entities,
            absent,
            users: shape.users,
            datasets: shape.datasets,
        }
    }

    /// An engine over a store in `dir` holding the world as it is now.
    pub fn engine(&self, dir: &Path, extra_policies: bool) -> Engine {
        let mut engine = Engine::open(dir, bundle(extra_policies)).expect("engine");
        let upserts = self
            .entities
            .values()
            .map(|v| {
                Entity::from_json_value(v.clone(), Some(&self.schema)).expect("fixture entity")
            })
            .collect();
        engine
            .apply(&StoreBatch {
                upserts,
                partition: "bench".into(),
                ..Default::default()
            })
            .expect("import");
        engine
    }

    /// An existing entity of type `kind` (`Tre::Workspace`, not `Tre::WorkspaceType`).
    pub fn pick(&mut self, kind: &str) -> Option<String> {
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

    pub fn user_id(&mut self) -> String {
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
    pub fn change(&mut self) -> StoreBatch {
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
            "Tre::Workspace" => match pick {
                0 => {
                    attrs["status"] =
                        json!(["running", "stopped", "terminated"][new_user.len() % 3])
                }
                // Two workspaces then share a role: its owners are both workspaces' owners.
                1 => {
                    let other = new_user.trim_start_matches("user-");
                    attrs["roleArn"] = json!(format!("arn:aws:iam::100000000000:role/ws-{other}"));
                }
                _ => attrs["owner"] = json!({"__entity": uid("User", &new_user)}),
            },
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
