//! The governor over collectors and enforcers that stand in for AWS: a shared table of Lake
//! Formation grants the fake data lake lists and the fake enforcer changes. What is tested
//! is the governor's own logic (gate, parking, holding, recording), not AWS.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::collect::{BoxFuture, CollectContext, Collector, Listing, RunReport, Source};
use crate::decide::Engine;
use crate::enforce::{Enforcer, ItemResult};
use crate::entities::parse_entities_file;
use crate::events::{EventStore, ObservationKind};
use crate::metrics::Metrics;
use crate::plan::{Change, PlanItem, PlanSettings};
use crate::reconcile::{Reconciler, Trigger};
use crate::safety::Limits;
use crate::store::Observed;
use crate::PolicyBundle;

use super::{Governor, Mode, Settings};

/// Lake Formation as the fakes see it: (principal, resource JSON) -> permissions.
type Grants = Arc<Mutex<BTreeMap<(String, String), Vec<String>>>>;

struct People(Arc<Mutex<Vec<Value>>>);

impl Collector for People {
    fn source(&self) -> Source {
        Source::Identity
    }
    fn answers(&self) -> &'static [ObservationKind] {
        &[]
    }
    fn run<'a>(&'a self, ctx: &'a CollectContext<'a>) -> BoxFuture<'a, RunReport> {
        Box::pin(async move {
            let mut report = RunReport::new(Source::Identity);
            let text = Value::Array(self.0.lock().expect("people").clone()).to_string();
            let entities = parse_entities_file("people", &text, Some(ctx.schema)).expect("valid");
            let listing = Listing {
                entities,
                complete: true,
                ..Default::default()
            };
            ctx.write(Source::Identity, listing, &mut report)
                .expect("write");
            report
        })
    }
}

struct Lake(Grants);

impl Collector for Lake {
    fn source(&self) -> Source {
        Source::DataLake
    }
    fn answers(&self) -> &'static [ObservationKind] {
        &[ObservationKind::LakeformationGrant]
    }
    fn run<'a>(&'a self, ctx: &'a CollectContext<'a>) -> BoxFuture<'a, RunReport> {
        Box::pin(async move {
            let mut report = RunReport::new(Source::DataLake);
            let observed = self
                .0
                .lock()
                .expect("grants")
                .iter()
                .map(|((principal, resource), perms)| Observed {
                    kind: "lf-permission".into(),
                    key: format!("{principal}|{resource}"),
                    body: json!({"principal": principal, "resource": serde_json::from_str::<Value>(resource).expect("json"),
                        "permissions": perms, "permissionsWithGrantOption": []}),
                })
                .collect();
            let listing = Listing {
                observed,
                complete: true,
                ..Default::default()
            };
            ctx.write(Source::DataLake, listing, &mut report)
                .expect("write");
            report
        })
    }
}

/// Applies Lake Formation items to the shared grants; every other item succeeds untouched.
struct Enforce(Grants, &'static str);

impl Enforcer for Enforce {
    fn name(&self) -> &'static str {
        self.1
    }
    fn apply<'a>(&'a self, items: &'a [&'a PlanItem]) -> BoxFuture<'a, Vec<ItemResult>> {
        Box::pin(async move {
            let mut grants = self.0.lock().expect("grants");
            for item in items {
                match &item.change {
                    Change::LfGrant {
                        principal,
                        resource,
                        permissions,
                    } => {
                        let held = grants
                            .entry((principal.clone(), resource.to_string()))
                            .or_default();
                        held.extend(permissions.iter().cloned());
                        held.sort();
                        held.dedup();
                    }
                    Change::LfRevoke {
                        principal,
                        resource,
                        permissions,
                        ..
                    } => {
                        let key = (principal.clone(), resource.to_string());
                        if let Some(held) = grants.get_mut(&key) {
                            held.retain(|p| !permissions.contains(p));
                            if held.is_empty() {
                                grants.remove(&key);
                            }
                        }
                    }
                    _ => {}
                }
            }
            items.iter().map(|i| ItemResult::ok(i)).collect()
        })
    }
}

struct Bed {
    _dir: tempfile::TempDir,
    people: Arc<Mutex<Vec<Value>>>,
    grants: Grants,
    governor: Governor,
}

const ALICE_ROLE: &str = "arn:aws:iam::111111111111:role/swb-ws-alice-ec2";

fn bed() -> Bed {
    let dir = tempfile::tempdir().expect("tmp");
    // The sample TRE, its people from the identity collector and the rest already stored.
    let sample: Vec<Value> =
        serde_json::from_str(tregov_policies::SAMPLE_TRE_ENTITIES).expect("sample");
    let (people, rest): (Vec<Value>, Vec<Value>) = sample
        .into_iter()
        .partition(|e| e["uid"]["type"] == "Tre::User");
    let people = Arc::new(Mutex::new(people));
    let grants: Grants = Arc::default();
    let mut engine =
        Engine::open(dir.path(), PolicyBundle::embedded().expect("policies")).expect("engine");
    let schema = engine.bundle().schema.clone().expect("schema");
    let rest = parse_entities_file("rest", &Value::Array(rest).to_string(), Some(&schema))
        .expect("entities");
    engine
        .apply(&crate::store::StoreBatch {
            upserts: rest,
            partition: "manual".into(),
            ..Default::default()
        })
        .expect("import");
    let events = Arc::new(EventStore::open(dir.path()).expect("events"));
    let collectors: Vec<Box<dyn Collector>> = vec![
        Box::new(People(people.clone())),
        Box::new(Lake(grants.clone())),
    ];
    let enforcers: Vec<Box<dyn Enforcer>> = ["lakeformation", "iam", "compute", "tagging", "sns"]
        .into_iter()
        .map(|name| Box::new(Enforce(grants.clone(), name)) as Box<dyn Enforcer>)
        .collect();
    let settings = Settings {
        plan: PlanSettings {
            backup_tag: ("tregov:backup".into(), "enabled".into()),
            ..Default::default()
        },
        limits: Limits::default(),
        mode: Mode::Enforce,
        poll: Duration::from_secs(1),
        resync: Duration::from_secs(60),
        origin: "test",
        alert_topic: None,
        policies_dir: None,
        widening: Default::default(),
    };
    let governor = Governor::new(
        engine,
        events,
        collectors,
        enforcers,
        settings,
        Arc::new(Metrics::new()),
    )
    .expect("governor");
    Bed {
        _dir: dir,
        people,
        grants,
        governor,
    }
}

impl Bed {
    async fn reconcile(&mut self, trigger: Trigger) {
        self.governor.reconcile(trigger).await.expect("reconcile");
    }

    fn held_by(&self, principal: &str) -> usize {
        self.grants
            .lock()
            .expect("grants")
            .keys()
            .filter(|(p, _)| p == principal)
            .count()
    }

    fn pending(&self) -> Vec<String> {
        let store = self.governor.engine().store().expect("store");
        store
            .parked()
            .expect("parked")
            .into_iter()
            .filter(|p| p.status == "pending")
            .map(|p| p.item)
            .collect()
    }
}

#[tokio::test]
async fn an_emptied_identity_is_held_and_once_accepted_its_mass_revocation_is_parked() {
    let mut bed = bed();
    bed.reconcile(Trigger::Resync).await;
    let granted = bed.held_by(ALICE_ROLE);
    assert!(granted >= 3, "alice's studies and Open Data: {granted}");

    bed.people.lock().expect("people").clear();
    bed.reconcile(Trigger::Resync).await;
    assert_eq!(
        bed.held_by(ALICE_ROLE),
        granted,
        "the empty export is held back"
    );
    let size =
        serde_json::from_str::<Vec<Value>>(tregov_policies::SAMPLE_TRE_ENTITIES).map(|v| v.len());
    assert!(
        bed.pending().contains(&"accept-identity-0".to_string()),
        "{:?} {size:?}",
        bed.pending()
    );

    // An admin accepts it: the next poll reads the identities again and takes the empty
    // listing, and every revocation that follows waits for approval in turn.
    let store = bed.governor.engine().store().expect("store");
    assert!(store
        .decide_parked("accept-identity-0", "approved", "erin", None)
        .expect("decide"));
    bed.reconcile(Trigger::Scheduled(tokio::time::Instant::now()))
        .await;
    assert_eq!(
        bed.held_by(ALICE_ROLE),
        granted,
        "the revocations are parked"
    );
    assert!(bed.pending().len() >= granted, "{:?}", bed.pending());
}

#[tokio::test]
async fn an_out_of_band_grant_is_reverted_whatever_its_fraction_of_the_tre() {
    let mut bed = bed();
    bed.reconcile(Trigger::Resync).await;
    let resource =
        json!({"table": {"database": "finance", "name": "payroll", "wildcard": false}}).to_string();
    bed.grants.lock().expect("grants").insert(
        (ALICE_ROLE.to_string(), resource.clone()),
        vec!["SELECT".into()],
    );
    bed.reconcile(Trigger::Resync).await;
    assert!(
        !bed.grants
            .lock()
            .expect("grants")
            .contains_key(&(ALICE_ROLE.to_string(), resource)),
        "drift reverted"
    );
    assert!(bed.pending().is_empty(), "{:?}", bed.pending());
}
