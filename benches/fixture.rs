//! A synthetic TRE of a given size, shaped like a real one: 20 projects, users in roles,
//! projects and study permission lists, datasets with their permission groups, workspaces,
//! egress requests and budgets. Deterministic, so runs compare.

use serde_json::{json, Value};

/// A tiny deterministic generator (64-bit LCG); benchmarks need repeatable, not random.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

pub const PROJECTS: usize = 20;
const CLASSIFICATIONS: &[&str] = &["public", "internal", "confidential", "restricted"];
const ROLES: &[&str] = &[
    "ITAdmin",
    "DataManager",
    "Researcher",
    "InformationGovernance",
    "ResearchIT",
    "EgressManager",
    "Auditor",
];

fn uid(t: &str, id: &str) -> Value {
    json!({"type": format!("Tre::{t}"), "id": id})
}

fn r(t: &str, id: &str) -> Value {
    json!({"__entity": {"type": format!("Tre::{t}"), "id": id}})
}

/// The sizes of each kind of entity in a TRE of about `total` entities.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub users: usize,
    pub datasets: usize,
    pub workspaces: usize,
    pub egress: usize,
}

impl Shape {
    pub fn for_total(total: usize) -> Self {
        // users 35%, datasets 7% (+3 permission groups each: 28%), workspaces 20%, egress 10%
        Self {
            users: total * 35 / 100,
            datasets: total * 7 / 100,
            workspaces: total * 20 / 100,
            egress: total * 10 / 100,
        }
    }
}

/// The entities of a synthetic TRE, as an entities-JSON array.
pub fn tre_entities(total: usize) -> (Shape, Vec<Value>) {
    let shape = Shape::for_total(total);
    (shape, tre_entities_shaped(shape))
}

/// The entities of a synthetic TRE of exactly `shape`.
pub fn tre_entities_shaped(shape: Shape) -> Vec<Value> {
    let total = shape.users + shape.datasets * 4 + shape.workspaces + shape.egress;
    let mut rng = Lcg::new(42);
    let mut out = Vec::with_capacity(total + 64);
    for role in ROLES {
        out.push(json!({"uid": uid("Role", role), "attrs": {}, "parents": []}));
    }
    out.push(json!({"uid": uid("Service", "tregov"), "attrs": {}, "parents": []}));
    for s in 1..=2 {
        let role = if s == 1 {
            "InformationGovernance"
        } else {
            "ResearchIT"
        };
        out.push(json!({"uid": uid("EgressStep", &s.to_string()), "attrs": {"index": s, "role": r("Role", role)}, "parents": []}));
    }
    for p in 0..PROJECTS {
        let pid = format!("proj-{p:02}");
        out.push(json!({"uid": uid("Project", &pid), "attrs": {"accountId": format!("{:012}", 100000000000u64 + p as u64)}, "parents": []}));
        out.push(json!({"uid": uid("Budget", &pid), "attrs": {
            "project": r("Project", &pid), "limitCents": 1_000_000, "actualCents": (rng.below(120) * 10_000) as i64,
            "forecastCents": (rng.below(150) * 10_000) as i64, "timeWindow": "MONTHLY",
            "notifyActualPercent": 80, "notifyForecastPercent": 90, "denyNewWorkspacesPercent": 99, "stopWorkspacesPercent": 100
        }, "parents": []}));
    }
    for t in 0..4 {
        out.push(
            json!({"uid": uid("WorkspaceType", &format!("type-{t}")), "attrs": {
            "approved": t != 3, "allowRoles": [r("Role", "Researcher"), r("Role", "ITAdmin")],
            "denyRoles": if t == 2 { vec![r("Role", "InformationGovernance")] } else { vec![] },
            "backupAllowed": t < 2
        }, "parents": []}),
        );
    }
    for d in 0..shape.datasets {
        let did = format!("ds-{d}");
        let p = d % PROJECTS;
        for g in ["admins", "readers", "writers"] {
            out.push(json!({"uid": uid("AccessGroup", &format!("{did}#{g}")), "attrs": {}, "parents": []}));
        }
        let category = match d % 10 {
            0 => "open",
            1 => "my",
            _ => "organization",
        };
        let mut attrs = json!({
            "database": format!("db_{p:02}"), "table": format!("t_{d}"),
            "location": format!("s3://tre-datalake/db_{p:02}/t_{d}/"),
            "classification": CLASSIFICATIONS[d % 4],
            "project": r("Project", &format!("proj-{p:02}")),
            "maxAccess": if d % 3 == 0 { "readonly" } else { "readwrite" },
            "category": category,
            "admins": r("AccessGroup", &format!("{did}#admins")),
            "readers": r("AccessGroup", &format!("{did}#readers")),
            "writers": r("AccessGroup", &format!("{did}#writers")),
        });
        if category == "my" {
            attrs["owner"] = r("User", &format!("user-{}", d % shape.users.max(1)));
        }
        out.push(json!({"uid": uid("Dataset", &did), "attrs": attrs, "parents": [uid("Project", &format!("proj-{p:02}"))]}));
    }
    for u in 0..shape.users {
        let mut parents = vec![uid(
            "Role",
            ROLES[if u % 10 < 7 { 2 } else { u % ROLES.len() }],
        )];
        let home = u % PROJECTS;
        parents.push(uid("Project", &format!("proj-{home:02}")));
        if u % 4 == 0 {
            parents.push(uid(
                "Project",
                &format!("proj-{:02}", (home + 1) % PROJECTS),
            ));
        }
        // Each user is on a few permission lists of datasets of their own project.
        for _ in 0..3 {
            let d = (rng.below(shape.datasets.max(1) / PROJECTS + 1) * PROJECTS + home)
                .min(shape.datasets.saturating_sub(1));
            let g = ["readers", "readers", "writers", "admins"][rng.below(4)];
            parents.push(uid("AccessGroup", &format!("ds-{d}#{g}")));
        }
        let status = if u % 50 == 0 { "inactive" } else { "active" };
        out.push(json!({"uid": uid("User", &format!("user-{u}")), "attrs": {"status": status}, "parents": parents}));
    }
    for w in 0..shape.workspaces {
        let owner = w % shape.users.max(1);
        let p = owner % PROJECTS;
        out.push(json!({"uid": uid("Workspace", &format!("ws-{w}")), "attrs": {
            "owner": r("User", &format!("user-{owner}")), "project": r("Project", &format!("proj-{p:02}")),
            "workspaceType": r("WorkspaceType", &format!("type-{}", w % 4)), "kind": if w % 3 == 0 { "sagemaker" } else { "ec2" },
            "status": "running", "backupOptIn": w % 2 == 0,
            "roleArn": format!("arn:aws:iam::{:012}:role/ws-{w}", 100000000000u64 + p as u64),
            "instanceId": format!("i-{w:017x}")
        }, "parents": [uid("Project", &format!("proj-{p:02}"))]}));
    }
    for e in 0..shape.egress {
        let w = e % shape.workspaces.max(1);
        let owner = w % shape.users.max(1);
        let p = owner % PROJECTS;
        out.push(json!({"uid": uid("EgressRequest", &format!("egr-{e}")), "attrs": {
            "requester": r("User", &format!("user-{owner}")), "workspace": r("Workspace", &format!("ws-{w}")),
            "project": r("Project", &format!("proj-{p:02}")), "status": "IN_REVIEW", "currentStep": r("EgressStep", "1"),
            "approvals": [], "approvers": [], "downloadRole": r("Role", "EgressManager"),
            "reviewRoles": [r("Role", "InformationGovernance"), r("Role", "ResearchIT")],
            "downloadCount": 0, "downloadLimit": 1, "version": 1
        }, "parents": []}));
    }
    out
}

/// A realistic mix of requests against a TRE of `shape`: data access (60%), workspace
/// connects (25%), egress reviews (10%) and budget responses (5%).
pub fn requests(shape: Shape, n: usize) -> Vec<(String, String, String)> {
    let mut rng = Lcg::new(7);
    (0..n)
        .map(|_| {
            let user = format!("Tre::User::\"user-{}\"", rng.below(shape.users));
            match rng.below(20) {
                0..=11 => (
                    user,
                    ["Tre::Action::\"read\"", "Tre::Action::\"write\""][rng.below(2)].to_string(),
                    format!("Tre::Dataset::\"ds-{}\"", rng.below(shape.datasets)),
                ),
                12..=16 => (
                    user,
                    "Tre::Action::\"connectWorkspace\"".into(),
                    format!("Tre::Workspace::\"ws-{}\"", rng.below(shape.workspaces)),
                ),
                17..=18 => (
                    user,
                    "Tre::Action::\"reviewEgress\"".into(),
                    format!("Tre::EgressRequest::\"egr-{}\"", rng.below(shape.egress)),
                ),
                _ => (
                    "Tre::Service::\"tregov\"".into(),
                    "Tre::Action::\"budgetNotify\"".into(),
                    format!("Tre::Budget::\"proj-{:02}\"", rng.below(PROJECTS)),
                ),
            }
        })
        .collect()
}

/// The median of timed runs.
pub fn median(mut runs: Vec<std::time::Duration>) -> std::time::Duration {
    runs.sort();
    runs.get(runs.len() / 2).copied().unwrap_or_default()
}

/// Resident set size of this process, in bytes (Linux), for memory-per-entity figures.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Cedar's own entities for everything in `engine`'s store, built as Cedar builds them:
/// what the benches time Cedar's authorizer over, and what exactness tests compare with.
pub fn cedar_store_entities(engine: &tregov_engine::Engine) -> cedar_policy::Entities {
    let bodies = engine.store().expect("store").all_bodies().expect("bodies");
    tregov_engine::entities::cedar_entities(
        bodies.iter().map(String::as_str),
        engine.bundle().schema.as_ref(),
    )
    .expect("entities")
}
