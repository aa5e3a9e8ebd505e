//! A plan that reuses the roles' parts of the last plan is the plan made afresh: over random
//! steps on the bench TRE's shape — entity changes of every kind, policy reloads, part of
//! the last plan applied to AWS, out-of-band changes to AWS (grants added and taken away,
//! tregov's marks on grants, quarantined datasets, roles tagged as a workspace's or given
//! another policy), scoped plans — the plan of an engine that keeps its memo equals, item
//! for item, the plan of an engine fed the same changes whose cache and memo are emptied
//! before every plan.
//!
//! CI runs a bounded count. A longer run:
//! `TREGOV_PLAN_STEPS=3000 TREGOV_PLAN_ENTITIES=3000 cargo test --release -p tregov-benches --test plan_exact -- --nocapture`
//! (`TREGOV_PLAN_SEED` repeats a run).

mod world;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use tregov_engine::plan::{kind, plan_scoped, role_key, ActualState, Change, Plan, PlanSettings};
use tregov_engine::store::Observed;
use tregov_engine::Engine;
use world::{bundle, env_number, World};

/// What AWS holds, as the collectors would report it: by (kind, key).
#[derive(Default)]
struct Aws {
    observed: BTreeMap<(String, String), Value>,
}

impl Aws {
    fn actual(&self) -> ActualState {
        let items: Vec<Observed> = self
            .observed
            .iter()
            .map(|((kind, key), body)| Observed {
                kind: kind.clone(),
                key: key.clone(),
                body: body.clone(),
            })
            .collect();
        ActualState::from_observed(&items)
    }

    fn grant(&mut self, principal: &str, resource: &Value, permissions: &[String], made: bool) {
        let key = format!("{principal}|{resource}");
        let body = self
            .observed
            .entry((kind::LF_PERMISSION.into(), key.clone()))
            .or_insert_with(|| {
                json!({"principal": principal, "resource": resource,
                    "permissions": [], "permissionsWithGrantOption": []})
            });
        let held = body["permissions"].as_array_mut().expect("permissions");
        for p in permissions {
            if !held.iter().any(|h| h == p) {
                held.push(json!(p));
            }
        }
        if made {
            self.observed.insert(
                (kind::TREGOV_GRANT.into(), key),
                json!({"principal": principal, "resource": resource}),
            );
        }
    }

    fn revoke(&mut self, principal: &str, resource: &Value, permissions: &[String]) {
        let key = (
            kind::LF_PERMISSION.to_string(),
            format!("{principal}|{resource}"),
        );
        let Some(body) = self.observed.get_mut(&key) else {
            return;
        };
        for list in ["permissions", "permissionsWithGrantOption"] {
            if let Some(held) = body[list].as_array_mut() {
                held.retain(|h| !permissions.iter().any(|p| h == p));
            }
        }
        if body["permissions"].as_array().is_some_and(Vec::is_empty) {
            self.observed.remove(&key);
        }
    }

    fn role(&mut self, arn: &str) -> &mut Value {
        self.observed
            .entry((kind::IAM_ROLE.into(), arn.to_string()))
            .or_insert_with(|| json!({"tags": {}, "inlinePolicies": {}}))
    }

    /// Does what `item` says, as an enforcer would.
    fn apply(&mut self, change: &Change) {
        match change {
            Change::LfGrant {
                principal,
                resource,
                permissions,
            } => self.grant(principal, resource, permissions, true),
            Change::LfRevoke {
                principal,
                resource,
                permissions,
                ..
            } => self.revoke(principal, resource, permissions),
            Change::PutRolePolicy {
                role_arn,
                policy_name,
                document,
                ..
            } => self.role(role_arn)["inlinePolicies"][policy_name] = document.clone(),
            Change::DeleteRolePolicy {
                role_arn,
                policy_name,
                ..
            } => {
                if let Some(p) = self.role(role_arn)["inlinePolicies"].as_object_mut() {
                    p.remove(policy_name);
                }
            }
            _ => {}
        }
    }
}

/// What the test draws its out-of-band changes from: every role and Lake Formation resource
/// the first plan named.
struct Pools {
    roles: Vec<String>,
    resources: Vec<Value>,
}

impl Pools {
    fn of(plan: &Plan) -> Self {
        let (mut roles, mut resources) = (BTreeSet::new(), BTreeSet::new());
        for item in &plan.items {
            if let Change::LfGrant {
                principal,
                resource,
                ..
            } = &item.change
            {
                roles.insert(principal.clone());
                resources.insert(resource.to_string());
            }
        }
        Self {
            roles: roles.into_iter().collect(),
            resources: resources
                .iter()
                .map(|r| serde_json::from_str(r).expect("resource"))
                .collect(),
        }
    }
}

/// One change to AWS made by someone other than tregov.
fn out_of_band(world: &mut World, aws: &mut Aws, pools: &Pools) {
    let rng = &mut world.rng;
    let role = pools.roles[rng.below(pools.roles.len())].clone();
    let resource = pools.resources[rng.below(pools.resources.len())].clone();
    match rng.below(7) {
        0 => {
            let perms = [
                ["SELECT"].as_slice(),
                &["SELECT", "DESCRIBE"],
                &["INSERT", "DROP"],
            ];
            let p: Vec<String> = perms[rng.below(3)].iter().map(|s| s.to_string()).collect();
            aws.grant(&role, &resource, &p, false);
        }
        1 => {
            // A grant taken away: one the role holds, when it holds any.
            let held: Vec<(String, String)> = aws
                .observed
                .keys()
                .filter(|(k, key)| k == kind::LF_PERMISSION && key.starts_with(&format!("{role}|")))
                .cloned()
                .collect();
            if !held.is_empty() {
                let key = held[rng.below(held.len())].clone();
                aws.observed.remove(&key);
            }
        }
        2 => {
            // tregov's mark on a grant lost or claimed.
            let key = (kind::TREGOV_GRANT.to_string(), format!("{role}|{resource}"));
            if aws.observed.remove(&key).is_none() {
                aws.observed
                    .insert(key, json!({"principal": role, "resource": resource}));
            }
        }
        3 => {
            let d = format!("ds-{}", rng.below(world.datasets));
            let key = (kind::DATASET_QUARANTINED.to_string(), d);
            if aws.observed.remove(&key).is_none() {
                aws.observed
                    .insert(key, json!({"message": "labels disagree"}));
            }
        }
        4 => {
            // A role nobody's workspace names, tagged as a workspace's: governed, no owners.
            let arn = format!("arn:aws:iam::100000000001:role/stray-{}", rng.below(5));
            aws.role(&arn)["tags"]["tre:workspace"] = json!("ws-stray");
        }
        5 => {
            aws.role(&role)["inlinePolicies"]["tregov-data-access"] =
                json!({"Version": "2012-10-17", "Statement": []});
        }
        _ => {
            aws.observed
                .remove(&(kind::IAM_ROLE.to_string(), role.clone()));
        }
    }
}

/// The plan, and the same plan made afresh by `fresh` (its cache and memo emptied first).
fn both_plans(
    engine: &Engine,
    fresh: &Engine,
    actual: &ActualState,
    settings: &PlanSettings,
    scope: Option<&BTreeSet<String>>,
) -> (Plan, Plan) {
    let planned = plan_scoped(engine, actual, settings, scope);
    fresh.clear_cache();
    (planned, plan_scoped(fresh, actual, settings, scope))
}

/// The first difference between two plans, short enough to read.
fn first_difference(a: &Plan, b: &Plan) -> String {
    if a.items.len() != b.items.len() {
        return format!("{} items against {} afresh", a.items.len(), b.items.len());
    }
    for (x, y) in a.items.iter().zip(&b.items) {
        if x != y {
            return format!("item {x:?}\nafresh {y:?}");
        }
    }
    format!(
        "decisions {} / {}, warnings {:?} / {:?}, governed {} / {}",
        a.decisions, b.decisions, a.warnings, b.warnings, a.governed_grants, b.governed_grants
    )
}

#[test]
fn a_plan_that_reuses_the_last_one_is_the_plan_made_afresh() {
    let steps = env_number("TREGOV_PLAN_STEPS", 150);
    let total = env_number("TREGOV_PLAN_ENTITIES", 1_000) as usize;
    let seed = env_number("TREGOV_PLAN_SEED", 20261203);
    eprintln!("plan differential: {steps} steps, about {total} entities, seed {seed}");

    let mut world = World::new(total, seed);
    let (dir, fresh_dir) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let mut extra = false;
    let mut engine = world.engine(dir.path(), extra);
    let mut fresh = world.engine(fresh_dir.path(), extra);
    // The governance clock the plans are made at (2026-12-06 and on, a day at a time).
    let day = |n: i64| 1_796_515_200_000 + n * 86_400_000;
    let mut settings = PlanSettings {
        backup_tag: ("tregov:backup".into(), "enabled".into()),
        period: "2026-12".into(),
        now: Some(day(0)),
        ..Default::default()
    };
    let mut aws = Aws::default();
    let mut last = plan_scoped(&engine, &aws.actual(), &settings, None);
    let pools = Pools::of(&last);
    // Start from a TRE that matches the policies, as the daemon mostly sees it.
    for item in &last.items {
        aws.apply(&item.change);
    }

    let mut tally = BTreeMap::<&str, u64>::new();
    for step in 0..steps {
        let mut scope = None;
        let what = match world.rng.below(100) {
            0..=44 => {
                for _ in 0..=world.rng.below(3) {
                    let batch = world.change();
                    if !(batch.upserts.is_empty() && batch.deletes.is_empty()) {
                        engine.apply(&batch).expect("apply");
                        fresh.apply(&batch).expect("apply");
                    }
                }
                "entity changes"
            }
            45..=59 => {
                for item in &last.items {
                    if world.rng.below(2) == 0 {
                        aws.apply(&item.change);
                    }
                }
                "part of the plan applied"
            }
            60..=79 => {
                out_of_band(&mut world, &mut aws, &pools);
                "out-of-band changes"
            }
            80..=84 => {
                extra = !extra;
                engine.set_policies(bundle(extra)).expect("reload");
                fresh.set_policies(bundle(extra)).expect("reload");
                "policy reloads"
            }
            93..=95 => {
                settings.now = Some(day(world.rng.below(3) as i64));
                "the clock moved"
            }
            85..=92 => {
                let role = &pools.roles[world.rng.below(pools.roles.len())];
                scope = Some(BTreeSet::from_iter(role_key(role)));
                "scoped plans"
            }
            _ => "nothing changed",
        };
        *tally.entry(what).or_default() += 1;
        let (planned, afresh) =
            both_plans(&engine, &fresh, &aws.actual(), &settings, scope.as_ref());
        assert!(
            planned == afresh,
            "step {step} ({what}, seed {seed}): {}",
            first_difference(&planned, &afresh)
        );
        if scope.is_none() {
            last = planned;
        }
        if (step + 1) % 250 == 0 {
            eprintln!("{} steps, all plans equal", step + 1);
        }
    }
    let reuse = engine.plan_reuse();
    eprintln!(
        "{tally:?}; roles reused {}, planned afresh {}",
        reuse.reused, reuse.planned
    );
    // The run means something only if parts were both kept and re-planned, and the fresh
    // engine never kept one.
    assert_eq!(fresh.plan_reuse().reused, 0);
    assert!(reuse.reused > reuse.planned, "{reuse:?}");
    assert!(reuse.planned > 0, "{reuse:?}");
}
