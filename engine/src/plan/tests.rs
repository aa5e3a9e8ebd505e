//! Plans of the sample TRE, end to end: what is granted, revoked, denied, stopped and
//! tagged, and that an applied plan leaves nothing to plan.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::budgets::budget_deny_document;
use super::*;
use crate::decide::{Decision, Engine};
use crate::entities::{parse_entities_file, EntityGraph};
use crate::store::Observed;
use crate::PolicyBundle;

const ALICE_ROLE: &str = "arn:aws:iam::111111111111:role/swb-ws-alice-ec2";
const BOB_ROLE: &str = "arn:aws:iam::111111111111:role/swb-ws-bob-notebook";
const ENV_ROLE: &str = "arn:aws:iam::111111111111:role/swb-env-mgmt";

/// The sample TRE, with `edit` applied to its entities JSON first.
fn engine_with(edit: impl FnOnce(&mut Vec<Value>)) -> Engine {
    let bundle = PolicyBundle::embedded().expect("policies");
    let schema = bundle.schema.clone().expect("schema");
    let mut json: Vec<Value> =
        serde_json::from_str(tregov_policies::SAMPLE_TRE_ENTITIES).expect("sample");
    edit(&mut json);
    let text = serde_json::to_string(&json).expect("json");
    let list = parse_entities_file("sample", &text, Some(&schema)).expect("entities");
    let graph = EntityGraph::from_entities(&list, Some(&schema)).expect("graph");
    Engine::in_memory(bundle, graph)
}

fn entity<'a>(json: &'a mut [Value], kind: &str, id: &str) -> &'a mut Value {
    json.iter_mut()
        .find(|e| e["uid"]["type"] == kind && e["uid"]["id"] == id)
        .expect("entity in sample")
}

fn settings() -> PlanSettings {
    PlanSettings {
        datalake_account: "999999999999".into(),
        project_accounts: [
            ("proj-genomics".to_string(), "111111111111".to_string()),
            ("proj-cardio".to_string(), "222222222222".to_string()),
        ]
        .into(),
        environment_roles: [("proj-genomics".to_string(), ENV_ROLE.to_string())].into(),
        notify_topics: [(
            "proj-genomics".to_string(),
            "arn:aws:sns:eu-west-2:111111111111:budget".to_string(),
        )]
        .into(),
        backup_tag: ("tregov:backup".into(), "enabled".into()),
        period: "2026-11".into(),
        protected_principals: [ETL_ROLE.to_string()].into(),
        revert_tag_drift: false,
        now: Some(NOW),
        expiry_topic: Some(EXPIRY_TOPIC.into()),
        backup_plan: None,
        breakglass_roles: Default::default(),
        breakglass_topic: None,
    }
}

/// 2026-12-06T10:00:00Z: the governance clock the tests plan at.
const NOW: i64 = 1_796_551_200_000;

const EXPIRY_TOPIC: &str = "arn:aws:sns:eu-west-2:999999999999:tre-expiry";

const ETL_ROLE: &str = "arn:aws:iam::999999999999:role/tre-etl";

fn observed_instances() -> Vec<Observed> {
    vec![
        Observed {
            kind: "ec2-instance".into(),
            key: "111111111111/i-0a1b2c3d4e5f60001".into(),
            body: json!({"instanceId": "i-0a1b2c3d4e5f60001", "state": "running",
                "tags": {"backup": "true"}, "volumes": ["vol-1"]}),
        },
        Observed {
            kind: "iam-role".into(),
            key: ENV_ROLE.into(),
            body: json!({"name": "swb-env-mgmt", "tags": {}, "inlinePolicies": {}}),
        },
    ]
}

/// The observed state once every item of `plan` took effect: what the collectors would
/// report after a successful apply.
fn observed_after(plan: &Plan, mut observed: Vec<Observed>) -> Vec<Observed> {
    for item in &plan.items {
        match &item.change {
            Change::LfGrant {
                principal,
                resource,
                permissions,
            } => grant_observed(&mut observed, principal, resource, permissions),
            Change::LfRevoke {
                principal,
                resource,
                permissions,
                ..
            } => revoke_observed(&mut observed, principal, resource, permissions),
            Change::PutRolePolicy {
                role_arn,
                policy_name,
                document,
                ..
            } => {
                if !observed.iter().any(|o| &o.key == role_arn) {
                    observed.push(Observed {
                        kind: "iam-role".into(),
                        key: role_arn.clone(),
                        body: json!({"tags": {}, "inlinePolicies": {}}),
                    });
                }
                let o = observed
                    .iter_mut()
                    .find(|o| &o.key == role_arn)
                    .expect("role");
                o.body["inlinePolicies"][policy_name] = document.clone();
            }
            Change::DeleteRolePolicy {
                role_arn,
                policy_name,
                ..
            } => {
                if let Some(o) = observed.iter_mut().find(|o| &o.key == role_arn) {
                    if let Some(m) = o.body["inlinePolicies"].as_object_mut() {
                        m.remove(policy_name);
                    }
                }
            }
            Change::TagWorkspace {
                resources,
                key,
                value,
                remove,
                ..
            } => {
                for o in observed.iter_mut() {
                    if o.body["instanceId"]
                        .as_str()
                        .is_some_and(|i| resources.iter().any(|r| r == i))
                    {
                        if *remove {
                            o.body["tags"].as_object_mut().expect("tags").remove(key);
                        } else {
                            o.body["tags"][key] = json!(value);
                        }
                    }
                }
            }
            Change::Notify { mark, .. } => observed.push(Observed {
                kind: NOTIFICATION_KIND.into(),
                key: mark.clone(),
                body: json!({}),
            }),
            Change::UpdateTrustPolicy {
                role_arn, document, ..
            } => {
                let o = observed
                    .iter_mut()
                    .find(|o| &o.key == role_arn)
                    .expect("role");
                o.body["trustPolicy"] = document.clone();
            }
            Change::UpdateBackupPlan { rules, .. } => {
                let o = observed
                    .iter_mut()
                    .find(|o| o.kind == "backup-plan")
                    .expect("plan");
                o.body["rules"] = json!(rules
                    .iter()
                    .map(|r| json!({"name": r["RuleName"], "vault": r["TargetBackupVaultName"],
                        "schedule": r["ScheduleExpression"], "startWindowMinutes": r["StartWindowMinutes"],
                        "completionWindowMinutes": r["CompletionWindowMinutes"],
                        "deleteAfterDays": r["Lifecycle"]["DeleteAfterDays"],
                        "coldStorageAfterDays": r["Lifecycle"]["MoveToColdStorageAfterDays"]}))
                    .collect::<Vec<_>>());
            }
            Change::CreateBackupSelection {
                selection_name,
                role_arn,
                tag_key,
                tag_value,
                ..
            } => {
                let o = observed
                    .iter_mut()
                    .find(|o| o.kind == "backup-plan")
                    .expect("plan");
                let list = o.body["selections"].as_array_mut().expect("selections");
                list.push(
                    json!({"id": "sel-new", "name": selection_name, "roleArn": role_arn,
                    "tags": [{"type": "STRINGEQUALS", "key": tag_key, "value": tag_value}],
                    "resources": [], "notResources": [], "conditions": false}),
                );
            }
            Change::DeleteBackupSelection { selection_id, .. } => {
                for o in observed.iter_mut().filter(|o| o.kind == "backup-plan") {
                    if let Some(list) = o.body["selections"].as_array_mut() {
                        list.retain(|s| s["id"] != selection_id.as_str());
                    }
                }
            }
            Change::StopWorkspace { .. } => {}
        }
    }
    observed
}

/// A grant as the collectors would see it once applied.
fn grant_observed(
    observed: &mut Vec<Observed>,
    principal: &str,
    resource: &Value,
    permissions: &[String],
) {
    let key = format!("{principal}|{resource}");
    match observed.iter_mut().find(|o| o.key == key) {
        Some(o) => {
            let mut all: BTreeSet<String> =
                serde_json::from_value(o.body["permissions"].clone()).expect("perms");
            all.extend(permissions.iter().cloned());
            o.body["permissions"] = json!(all);
        }
        None => observed.push(Observed {
            kind: "lf-permission".into(),
            key,
            body: json!({"principal": principal, "resource": resource,
                "permissions": permissions, "permissionsWithGrantOption": []}),
        }),
    }
}

/// A revoke as the collectors would see it once applied: emptied grants disappear.
fn revoke_observed(
    observed: &mut Vec<Observed>,
    principal: &str,
    resource: &Value,
    permissions: &[String],
) {
    let key = format!("{principal}|{resource}");
    if let Some(o) = observed.iter_mut().find(|o| o.key == key) {
        let all: BTreeSet<String> =
            serde_json::from_value(o.body["permissions"].clone()).expect("p");
        let left: Vec<&String> = all.iter().filter(|p| !permissions.contains(p)).collect();
        o.body["permissions"] = json!(left);
        o.body["permissionsWithGrantOption"] = json!([]);
    }
    observed.retain(|o| {
        o.kind != "lf-permission"
            || o.body["permissions"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
    });
}

fn grants_of(plan: &Plan, role: &str) -> Vec<(String, Vec<String>)> {
    plan.items
        .iter()
        .filter_map(|i| match &i.change {
            Change::LfGrant {
                principal,
                resource,
                permissions,
            } if principal == role => Some((resource_label(resource), permissions.clone())),
            _ => None,
        })
        .collect()
}

fn writer_permissions() -> Vec<String> {
    ["DELETE", "DESCRIBE", "INSERT", "SELECT"]
        .map(String::from)
        .to_vec()
}

#[test]
fn workspace_roles_get_exactly_what_the_policies_allow_their_owners() {
    let engine = engine_with(|_| {});
    let plan = plan(&engine, &ActualState::default(), &settings());
    let alice = grants_of(&plan, ALICE_ROLE);
    assert_eq!(
        alice,
        vec![
            (
                "table genomics.alice_scratch".to_string(),
                writer_permissions()
            ),
            ("table genomics.gwas_2024".to_string(), writer_permissions()),
            (
                "table open.census_2021".to_string(),
                vec!["DESCRIBE".into(), "SELECT".into()]
            ),
        ],
        "gwas-2024 (writer), alice-scratch (her own study), census (open data)"
    );
    // Bob reads gwas-2024 and ukb-cardio (reader lists) and Open Data; never writes.
    let bob = grants_of(&plan, BOB_ROLE);
    assert!(
        bob.iter()
            .all(|(_, p)| p == &vec!["DESCRIBE".to_string(), "SELECT".to_string()]),
        "{bob:?}"
    );
    // Every grant rests on an allowing decision.
    for item in &plan.items {
        if let Change::LfGrant { .. } = item.change {
            assert!(item.decisions.iter().any(|j| j.decision == Decision::Allow));
        }
    }
}

#[test]
fn a_plan_applied_leaves_nothing_to_plan() {
    let engine = engine_with(|_| {});
    let first = plan(
        &engine,
        &ActualState::from_observed(&observed_instances()),
        &settings(),
    );
    assert!(!first.is_empty());
    let after = observed_after(&first, observed_instances());
    let second = plan(&engine, &ActualState::from_observed(&after), &settings());
    assert_eq!(second.items, vec![], "second plan must be empty");
}

#[test]
fn plans_are_deterministic() {
    let engine = engine_with(|_| {});
    let actual = ActualState::from_observed(&observed_instances());
    assert_eq!(
        plan(&engine, &actual, &settings()),
        plan(&engine, &actual, &settings())
    );
}

#[test]
fn an_unexplained_grant_is_revoked_with_the_decision_that_denies_it() {
    let engine = engine_with(|_| {});
    let resource = lf_table_resource("cardio", Some("ukb_cardio"));
    let observed = vec![Observed {
        kind: "lf-permission".into(),
        key: format!("{ALICE_ROLE}|{resource}"),
        body: json!({"principal": ALICE_ROLE, "resource": resource,
            "permissions": ["SELECT"], "permissionsWithGrantOption": ["SELECT"]}),
    }];
    let plan = plan(&engine, &ActualState::from_observed(&observed), &settings());
    let revoke = plan
        .items
        .iter()
        .find(
            |i| matches!(&i.change, Change::LfRevoke { principal, .. } if principal == ALICE_ROLE),
        )
        .expect("revoke planned");
    match &revoke.change {
        Change::LfRevoke {
            permissions,
            permissions_with_grant_option,
            ..
        } => {
            assert_eq!(permissions, &vec!["SELECT".to_string()]);
            assert_eq!(permissions_with_grant_option, &vec!["SELECT".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    assert!(revoke
        .decisions
        .iter()
        .any(|j| j.decision == Decision::Deny
            && j.request.resource == "Tre::Dataset::\"ukb-cardio\""));
}

#[test]
fn a_grant_on_something_that_is_not_a_dataset_is_revoked() {
    let engine = engine_with(|_| {});
    let resource = json!({"database": {"name": "finance"}});
    let observed = vec![Observed {
        kind: "lf-permission".into(),
        key: format!("{BOB_ROLE}|{resource}"),
        body: json!({"principal": BOB_ROLE, "resource": resource,
            "permissions": ["DESCRIBE"], "permissionsWithGrantOption": []}),
    }];
    let plan = plan(&engine, &ActualState::from_observed(&observed), &settings());
    assert!(plan.items.iter().any(|i| matches!(&i.change,
        Change::LfRevoke { principal, resource: r, .. } if principal == BOB_ROLE && r == &resource)));
}

#[test]
fn an_owner_who_becomes_inactive_loses_every_grant_and_the_role_policy() {
    let before = engine_with(|_| {});
    let granted = observed_after(
        &plan(&before, &ActualState::default(), &settings()),
        Vec::new(),
    );
    let engine = engine_with(|json| {
        entity(json, "Tre::User", "alice")["attrs"]["status"] = json!("inactive");
    });
    let plan = plan(&engine, &ActualState::from_observed(&granted), &settings());
    let for_alice: Vec<&PlanItem> = plan
        .items
        .iter()
        .filter(|i| i.change.target().starts_with(ALICE_ROLE))
        .collect();
    let verbs: Vec<&str> = for_alice.iter().map(|i| i.change.verb()).collect();
    assert_eq!(
        verbs,
        vec!["delete-role-policy", "revoke", "revoke", "revoke"]
    );
    // Each takes access away, and names whose: what the safety gate and approvals read.
    for item in for_alice {
        assert!(item.is_revoking(), "{item:#?}");
        assert_eq!(item.affects, vec!["alice".to_string()], "{item:#?}");
    }
    assert!(plan.governed_grants >= 3, "{}", plan.governed_grants);
}

#[test]
fn a_budget_breach_denies_and_stops_and_raising_the_budget_lifts_the_deny() {
    let breached = engine_with(|json| {
        entity(json, "Tre::Budget", "proj-genomics")["attrs"]["actualCents"] = json!(1_000_000);
    });
    let plan1 = plan(
        &breached,
        &ActualState::from_observed(&observed_instances()),
        &settings(),
    );
    let verbs: Vec<(&str, String)> = plan1
        .items
        .iter()
        .filter(|i| {
            !matches!(i.change.enforcer(), "lakeformation" | "tagging")
                && !i.change.target().contains("tregov-data-access")
        })
        .map(|i| (i.change.verb(), i.change.target()))
        .collect();
    assert!(
        verbs.contains(&(
            "put-role-policy",
            format!("{ENV_ROLE} policy {BUDGET_DENY_POLICY}")
        )),
        "{verbs:?}"
    );
    assert!(
        verbs.contains(&("stop", "workspace ws-alice-ec2".into())),
        "{verbs:?}"
    );
    assert!(
        verbs.contains(&("stop", "workspace ws-bob-notebook".into())),
        "{verbs:?}"
    );
    assert!(
        verbs.contains(&("notify", "arn:aws:sns:eu-west-2:111111111111:budget".into())),
        "{verbs:?}"
    );

    let after = observed_after(&plan1, observed_instances());
    let raised = engine_with(|json| {
        entity(json, "Tre::Budget", "proj-genomics")["attrs"]["actualCents"] = json!(1_000_000);
        entity(json, "Tre::Budget", "proj-genomics")["attrs"]["limitCents"] = json!(2_000_000);
    });
    let plan2 = plan(&raised, &ActualState::from_observed(&after), &settings());
    let budget: Vec<&str> = plan2
        .items
        .iter()
        .filter(|i| i.change.target().contains(BUDGET_DENY_POLICY) || i.change.verb() == "notify")
        .map(|i| i.change.verb())
        .collect();
    assert_eq!(
        budget,
        vec!["delete-role-policy"],
        "the deny is lifted; the notification is not repeated"
    );
}

#[test]
fn backup_tags_follow_opt_in_and_policy() {
    let engine = engine_with(|_| {});
    let plan1 = plan(
        &engine,
        &ActualState::from_observed(&observed_instances()),
        &settings(),
    );
    let tag = plan1
        .items
        .iter()
        .find(|i| i.change.verb() == "tag")
        .expect("alice opted in on an approved type");
    match &tag.change {
        Change::TagWorkspace { resources, .. } => {
            assert_eq!(
                resources,
                &vec!["i-0a1b2c3d4e5f60001".to_string(), "vol-1".to_string()]
            );
        }
        other => panic!("{other:?}"),
    }
    let tagged = observed_after(&plan1, observed_instances());
    let opted_out = engine_with(|json| {
        entity(json, "Tre::Workspace", "ws-alice-ec2")["attrs"]["backupOptIn"] = json!(false);
    });
    let plan2 = plan(
        &opted_out,
        &ActualState::from_observed(&tagged),
        &settings(),
    );
    assert!(plan2.items.iter().any(|i| i.change.verb() == "untag"));
}

#[test]
fn a_forbid_that_fails_to_evaluate_grants_nothing() {
    // Cedar skips an erroring forbid, so the permits win: Allow, with an error.
    let mut sources = crate::policies::embedded_sources();
    sources.push(crate::PolicySource {
        name: "broken.cedar".into(),
        text: "@id(\"overflowing-forbid\")\nforbid (principal, action == Tre::Action::\"read\", resource)\nwhen { 9223372036854775807 + 1 > 0 };\n".into(),
    });
    let bundle = PolicyBundle::from_sources(Some(crate::policies::embedded_schema()), sources)
        .expect("policies");
    let sample = engine_with(|_| {});
    let engine = Engine::in_memory(bundle, sample.graph().clone());
    let plan = plan(&engine, &ActualState::default(), &settings());
    assert_eq!(grants_of(&plan, ALICE_ROLE), vec![], "{:#?}", plan.items);
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("overflowing-forbid")),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn one_budget_over_its_threshold_keeps_the_deny_whatever_the_project_s_other_budgets_say() {
    let engine = engine_with(|json| {
        entity(json, "Tre::Budget", "proj-genomics")["attrs"]["actualCents"] = json!(1_000_000);
        let mut second = entity(json, "Tre::Budget", "proj-genomics").clone();
        second["uid"]["id"] = json!("proj-genomics/compute");
        second["attrs"]["actualCents"] = json!(0);
        json.push(second);
    });
    for observed in [observed_instances(), {
        let mut o = observed_instances();
        o[1].body["inlinePolicies"][BUDGET_DENY_POLICY] = budget_deny_document();
        o
    }] {
        let present = observed[1].body["inlinePolicies"]
            .get(BUDGET_DENY_POLICY)
            .is_some();
        let plan = plan(&engine, &ActualState::from_observed(&observed), &settings());
        let deny: Vec<&str> = plan
            .items
            .iter()
            .filter(|i| i.change.target().contains(BUDGET_DENY_POLICY))
            .map(|i| i.change.verb())
            .collect();
        let expected: Vec<&str> = if present {
            vec![]
        } else {
            vec!["put-role-policy"]
        };
        assert_eq!(deny, expected);
    }
}

#[test]
fn role_arns_split_into_account_and_name() {
    assert_eq!(
        role_parts("arn:aws:iam::111111111111:role/a/b/swb-ws"),
        Some(("111111111111", "swb-ws"))
    );
    assert_eq!(role_parts("arn:aws:s3:::bucket"), None);
}

fn lf_grant_observed(principal: &str, resource: &Value) -> Observed {
    Observed {
        kind: "lf-permission".into(),
        key: format!("{principal}|{resource}"),
        body: json!({"principal": principal, "resource": resource,
            "permissions": ["DESCRIBE", "SELECT"], "permissionsWithGrantOption": []}),
    }
}

fn revoked_principals(plan: &Plan) -> Vec<&str> {
    plan.items
        .iter()
        .filter_map(|i| match &i.change {
            Change::LfRevoke { principal, .. } => Some(principal.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn protected_principals_are_never_planned_for_revocation_but_other_unknown_principals_are() {
    let engine = engine_with(|_| {});
    let gwas = lf_table_resource("genomics", Some("gwas_2024"));
    let admin = "arn:aws:iam::999999999999:role/TREDataLakeAdminRole";
    let tregov = "arn:aws:sts::999999999999:assumed-role/tregov/session";
    let stranger = "arn:aws:iam::111111111111:role/not-a-workspace";
    let observed = vec![
        lf_grant_observed(admin, &gwas),
        lf_grant_observed(ETL_ROLE, &gwas),
        lf_grant_observed("arn:aws:iam::999999999999:role/tregov", &gwas),
        lf_grant_observed(stranger, &gwas),
        Observed {
            kind: "lf-admin".into(),
            key: admin.into(),
            body: json!({"principal": admin}),
        },
        Observed {
            kind: "tregov-principal".into(),
            key: tregov.into(),
            body: json!({"arn": tregov}),
        },
    ];
    let plan = plan(&engine, &ActualState::from_observed(&observed), &settings());
    assert_eq!(
        revoked_principals(&plan),
        vec![stranger],
        "{:#?}",
        plan.items
    );
    let revoke = plan
        .items
        .iter()
        .find(|i| i.change.verb() == "revoke")
        .expect("revoke");
    assert_eq!(revoke.revokes, Revokes::Unexplained);
    assert!(
        revoke.reason.contains("not a workspace role"),
        "{}",
        revoke.reason
    );
    assert_eq!(
        plan.governed_grants, 1,
        "only the stranger's grant is governed"
    );
}

#[test]
fn a_workspace_that_names_a_protected_role_does_not_make_it_governed() {
    let engine = engine_with(|json| {
        entity(json, "Tre::Workspace", "ws-alice-ec2")["attrs"]["roleArn"] = json!(ETL_ROLE);
    });
    let cardio = lf_table_resource("cardio", Some("ukb_cardio"));
    let observed = vec![lf_grant_observed(ETL_ROLE, &cardio)];
    let plan = plan(&engine, &ActualState::from_observed(&observed), &settings());
    assert!(grants_of(&plan, ETL_ROLE).is_empty());
    assert!(revoked_principals(&plan).is_empty());
    assert!(plan
        .warnings
        .iter()
        .any(|w| w.contains("protected principal")));
}

#[test]
fn writers_are_never_granted_alter_or_drop() {
    let engine = engine_with(|_| {});
    let plan = plan(&engine, &ActualState::default(), &settings());
    let granted: BTreeSet<&str> = plan
        .items
        .iter()
        .filter_map(|i| match &i.change {
            Change::LfGrant { permissions, .. } => Some(permissions),
            _ => None,
        })
        .flatten()
        .map(String::as_str)
        .collect();
    assert!(granted.contains("INSERT"), "{granted:?}");
    assert!(
        !granted.contains("ALTER") && !granted.contains("DROP"),
        "{granted:?}"
    );
}

fn quarantined(dataset: &str) -> Observed {
    Observed {
        kind: kind::DATASET_QUARANTINED.into(),
        key: dataset.into(),
        body: json!({"dataset": dataset, "message": "its location overlaps another's"}),
    }
}

#[test]
fn a_quarantined_dataset_is_granted_nothing_and_its_grants_wait_for_approval() {
    let engine = engine_with(|_| {});
    let gwas = lf_table_resource("genomics", Some("gwas_2024"));
    let mut observed = observed_instances();
    observed.push(lf_grant_observed(ALICE_ROLE, &gwas));
    observed.push(quarantined("gwas-2024"));
    let plan = plan(&engine, &ActualState::from_observed(&observed), &settings());
    let on_gwas = |i: &&PlanItem| match &i.change {
        Change::LfGrant { resource, .. } | Change::LfRevoke { resource, .. } => resource == &gwas,
        _ => false,
    };
    let items: Vec<&PlanItem> = plan.items.iter().filter(on_gwas).collect();
    assert_eq!(
        items.len(),
        1,
        "alice's revoke, and no grant to bob: {items:?}"
    );
    for item in items {
        assert!(matches!(item.change, Change::LfRevoke { .. }), "{item:?}");
        assert!(
            item.needs_approval
                .as_deref()
                .is_some_and(|why| why.contains("`gwas-2024` is quarantined")),
            "{item:?}"
        );
    }
}

#[test]
fn a_drifted_workspace_tag_is_set_back_only_when_configured() {
    let engine = engine_with(|_| {});
    let mut observed = observed_instances();
    observed.push(Observed {
        kind: kind::WORKSPACE_TAG_DRIFT.into(),
        key: "111111111111/i-alice/tre:owner".into(),
        body: json!({"account": "111111111111", "kind": "ec2", "instance": "i-alice",
            "resource": "i-alice", "workspace": "ws-alice-ec2", "tag": "tre:owner",
            "expected": "alice", "found": "bob", "message": "drift"}),
    });
    let actual = ActualState::from_observed(&observed);
    let reverts = |plan: &Plan| -> Vec<(String, String)> {
        plan.items
            .iter()
            .filter_map(|i| match &i.change {
                Change::TagWorkspace { key, value, .. } if key == "tre:owner" => {
                    Some((key.clone(), value.clone()))
                }
                _ => None,
            })
            .collect()
    };
    assert!(reverts(&plan(&engine, &actual, &settings())).is_empty());
    let revert = PlanSettings {
        revert_tag_drift: true,
        ..settings()
    };
    assert_eq!(
        reverts(&plan(&engine, &actual, &revert)),
        vec![("tre:owner".to_string(), "alice".to_string())]
    );
}

#[test]
fn a_plan_over_an_emptied_cache_counts_its_questions_as_misses_and_keeps_their_answers() {
    let engine = engine_with(|_| {});
    engine.clear_cache();
    let before = engine.cache_stats();
    let first = plan(&engine, &ActualState::default(), &settings());
    let after = engine.cache_stats();
    assert!(first.decisions > 0);
    assert_eq!(after.misses - before.misses, first.decisions);
    assert_eq!(after.entries, first.decisions, "every answer was kept");
    // The same questions again (parts planned afresh) are the cache's answers.
    engine.plan_memo().retain_roles(&Default::default());
    let second = plan(&engine, &ActualState::default(), &settings());
    let last = engine.cache_stats();
    assert_eq!(last.misses, after.misses);
    assert_eq!(last.hits - after.hits, second.decisions);
    assert_eq!(second.items, first.items);
}

const HOUR: i64 = 3_600_000;

/// The sample TRE with `gwas-2024` under an agreement that expires at `expires`.
fn engine_with_agreement(expires: i64) -> Engine {
    engine_with(|json| {
        json.push(json!({"uid": {"type": "Tre::Agreement", "id": "dua-gwas"},
            "attrs": {"reference": "DUA-17", "expires": crate::clock::datetime_value(expires)}, "parents": []}));
        entity(json, "Tre::Dataset", "gwas-2024")["attrs"]["agreement"] =
            json!({"__entity": {"type": "Tre::Agreement", "id": "dua-gwas"}});
    })
}

fn at(now: i64) -> PlanSettings {
    PlanSettings {
        now: Some(now),
        ..settings()
    }
}

#[test]
fn access_under_an_agreement_ends_when_the_clock_passes_its_expiry() {
    let expires = NOW + HOUR;
    let engine = engine_with_agreement(expires);
    let actual = ActualState::default();
    let before = plan(&engine, &actual, &at(engine.tick_at(wall(NOW)).now));
    assert!(grants_of(&before, ALICE_ROLE)
        .iter()
        .any(|(r, _)| r.contains("gwas")));
    let tick = engine.tick_at(wall(expires + 1));
    assert_eq!(
        tick.now, expires,
        "the clock stands at the expiry once it passed"
    );
    let after = plan(&engine, &actual, &at(tick.now));
    assert!(!grants_of(&after, ALICE_ROLE)
        .iter()
        .any(|(r, _)| r.contains("gwas")));
    // Without the clock the agreement holds access back: never granted for want of a date.
    let unclocked = plan(
        &engine,
        &actual,
        &PlanSettings {
            now: None,
            ..settings()
        },
    );
    assert!(!grants_of(&unclocked, ALICE_ROLE)
        .iter()
        .any(|(r, _)| r.contains("gwas")));
}

#[test]
fn the_clock_stands_still_between_dates_so_the_next_plan_reuses_every_answer() {
    let engine = engine_with_agreement(NOW + HOUR);
    let actual = ActualState::default();
    plan(&engine, &actual, &at(engine.tick_at(wall(NOW)).now));
    let misses = engine.cache_stats().misses;
    let later = engine.tick_at(wall(NOW + HOUR / 2));
    assert_eq!(later, engine.tick_at(wall(NOW)));
    plan(&engine, &actual, &at(later.now));
    assert_eq!(engine.cache_stats().misses, misses, "nothing asked again");
}

#[test]
fn a_project_that_ended_stops_its_workspaces_and_its_roles_keep_nothing() {
    let engine = engine_with(|json| {
        entity(json, "Tre::Project", "proj-genomics")["attrs"]["endsAt"] =
            crate::clock::datetime_value(NOW - HOUR);
    });
    let p = plan(
        &engine,
        &ActualState::from_observed(&observed_instances()),
        &at(NOW),
    );
    let stop = p
        .items
        .iter()
        .find(|i| matches!(&i.change, Change::StopWorkspace { workspace, .. } if workspace == "ws-alice-ec2"))
        .expect("alice's workspace is stopped");
    assert_eq!(
        stop.decisions[0].reasons,
        vec!["workspaces-stop-when-their-project-ends".to_string()]
    );
    assert!(
        grants_of(&p, ALICE_ROLE).is_empty(),
        "{:?}",
        grants_of(&p, ALICE_ROLE)
    );
}

#[test]
fn a_warning_goes_out_once_before_a_stored_date_passes() {
    let expires = NOW + HOUR;
    let mut engine = engine_with_agreement(expires);
    engine.set_expiry_warning(std::time::Duration::from_secs(2 * 3600));
    let warned = |p: &Plan| {
        p.items
            .iter()
            .filter_map(|i| match &i.change {
                Change::Notify {
                    topic_arn, mark, ..
                } if topic_arn == EXPIRY_TOPIC => Some(mark.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let p = plan(
        &engine,
        &ActualState::default(),
        &at(engine.tick_at(wall(NOW)).now),
    );
    let marks = warned(&p);
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert!(marks[0].contains("dua-gwas"));
    let sent = ActualState::from_observed(&[Observed {
        kind: NOTIFICATION_KIND.into(),
        key: marks[0].clone(),
        body: json!({}),
    }]);
    assert!(
        warned(&plan(&engine, &sent, &at(NOW))).is_empty(),
        "sent once"
    );
}

fn wall(ms: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64)
}

#[test]
fn the_access_report_names_the_membership_whose_end_ends_a_users_access() {
    let ends = NOW + HOUR;
    let engine = engine_with(|json| {
        entity(json, "Tre::User", "alice")["tags"] = json!({
            "Tre::AccessGroup::\"gwas-2024#writers\"": crate::clock::datetime_value(ends)
        });
    });
    let settings = at(engine.tick_at(wall(NOW)).now);
    let dataset = crate::entities::uid_from_parts("Tre::Dataset", "gwas-2024").expect("uid");
    let report = super::access_report(
        &engine,
        &ActualState::default(),
        &settings,
        &super::Scope::Dataset(dataset),
    );
    let alice: Vec<&super::Reach> = report
        .rows
        .iter()
        .filter(|r| r.holder_kind == "user" && r.holder == "alice")
        .collect();
    assert_eq!(
        alice.iter().map(|r| r.action).collect::<Vec<_>>(),
        ["read", "write"]
    );
    for row in alice {
        let end = row.ends.as_ref().expect("the membership's end ends it");
        assert_eq!(end.at_ms, ends);
        assert_eq!(
            end.because,
            ["membership of Tre::AccessGroup::\"gwas-2024#writers\" ends"]
        );
    }
    let roles: Vec<&super::Reach> = report
        .rows
        .iter()
        .filter(|r| r.holder_kind == "role")
        .collect();
    assert!(
        roles
            .iter()
            .any(|r| r.owners == ["alice"] && r.action == "write"),
        "alice's workspace role holds what she may do: {roles:?}"
    );
}

#[test]
fn an_exemption_lets_one_denied_access_through_until_its_end_then_not() {
    let ends = NOW + HOUR;
    let engine = engine_with(|json| {
        // bob is no longer a researcher: `data-grantees-are-researchers-or-admins` denies him
        // gwas-2024, except as a data manager exempted him until `ends`.
        entity(json, "Tre::User", "bob")["parents"]
            .as_array_mut()
            .expect("parents")
            .retain(|p| p["id"] != "Researcher");
        json.push(json!({
            "uid": {"type": "Tre::Exemption", "id": "grantees/gwas-2024/bob"},
            "attrs": {
                "user": {"__entity": {"type": "Tre::User", "id": "bob"}},
                "dataset": {"__entity": {"type": "Tre::Dataset", "id": "gwas-2024"}},
                "policy": "data-grantees-are-researchers-or-admins",
                "reason": "visiting statistician, agreed by the data controller",
                "grantedBy": {"__entity": {"type": "Tre::User", "id": "frank"}},
                "expires": crate::clock::datetime_value(ends),
            },
            "parents": [],
        }));
    });
    let actual = ActualState::default();
    let gwas = |p: &Plan| {
        grants_of(p, BOB_ROLE)
            .iter()
            .any(|(r, _)| r.contains("gwas"))
    };
    let tick = engine.tick_at(wall(NOW));
    assert_eq!(tick.next, ends, "the clock moves when the exemption ends");
    let during = plan(&engine, &actual, &at(tick.now));
    assert!(
        gwas(&during),
        "exempted: {:?}",
        grants_of(&during, BOB_ROLE)
    );
    let grant = during
        .items
        .iter()
        .find(|i| i.change.target().contains("bob") && i.change.target().contains("gwas"))
        .expect("the grant");
    assert!(
        grant.decisions[0].request.context["exemption"]["__entity"]["id"]
            == "grantees/gwas-2024/bob",
        "the decision names the exemption it was asked with: {:?}",
        grant.decisions[0].request
    );
    let after = plan(&engine, &actual, &at(engine.tick_at(wall(ends)).now));
    assert!(!gwas(&after), "ended with its date");
    // Once granted, the end of the exemption revokes it.
    let held = ActualState::from_observed(&observed_after(&during, observed_instances()));
    let granted = plan(&engine, &held, &at(tick.now));
    assert!(
        !granted.items.iter().any(|i| i.is_revoking()),
        "{:?}",
        granted.items
    );
    let ended = plan(&engine, &held, &at(engine.tick_at(wall(ends)).now));
    assert!(
        ended
            .items
            .iter()
            .any(|i| i.is_revoking() && i.change.target().contains("gwas")),
        "the grant is revoked when the exemption ends: {:?}",
        ended.items
    );
}

const BREAK_GLASS_ROLE: &str = "arn:aws:iam::111111111111:role/TREBreakGlass";
const ALERT_TOPIC: &str = "arn:aws:sns:eu-west-2:999999999999:tre-alerts";
const IVAN_PRINCIPAL: &str = "arn:aws:iam::333333333333:role/auditor-ivan";

/// The sample TRE with ivan's grant (approved by erin) ending at `expires`, ivan's AWS
/// principal known when `principal`.
fn engine_with_break_glass(expires: i64, principal: bool) -> Engine {
    engine_with(|json| {
        entity(json, "Tre::BreakGlassGrant", "bg-2026-11-26-ivan")["attrs"]["expiresAt"] =
            crate::clock::datetime_value(expires);
        if principal {
            entity(json, "Tre::User", "ivan")["attrs"]["awsPrincipal"] = json!(IVAN_PRINCIPAL);
        }
    })
}

fn break_glass_settings(now: i64) -> PlanSettings {
    PlanSettings {
        breakglass_roles: [("proj-genomics".to_string(), BREAK_GLASS_ROLE.to_string())].into(),
        breakglass_topic: Some(ALERT_TOPIC.into()),
        ..at(now)
    }
}

/// The break-glass role with the statement the admins wrote.
fn break_glass_role() -> Vec<Observed> {
    vec![Observed {
        kind: "iam-role".into(),
        key: BREAK_GLASS_ROLE.into(),
        body: json!({"name": "TREBreakGlass", "tags": {}, "inlinePolicies": {},
            "trustPolicy": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::111111111111:root"}, "Action": "sts:AssumeRole",
                "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}}}]}}),
    }]
}

fn trust_statements(plan: &Plan) -> Option<Vec<Value>> {
    plan.items.iter().find_map(|i| match &i.change {
        Change::UpdateTrustPolicy { document, .. } => document["Statement"].as_array().cloned(),
        _ => None,
    })
}

fn alerts(plan: &Plan) -> Vec<String> {
    plan.items
        .iter()
        .filter_map(|i| match &i.change {
            Change::Notify {
                topic_arn, mark, ..
            } if topic_arn == ALERT_TOPIC => Some(mark.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn an_allowed_break_glass_grant_opens_the_trust_policy_until_its_end_and_is_alerted_both_ways() {
    let expires = NOW + HOUR;
    let engine = engine_with_break_glass(expires, true);
    let observe = |observed: &[Observed], now: i64| {
        plan(
            &engine,
            &ActualState::from_observed(observed),
            &break_glass_settings(now),
        )
    };
    let observed = break_glass_role();
    let opening = observe(&observed, NOW);
    let statements = trust_statements(&opening).expect("the trust policy changes");
    assert_eq!(
        statements.len(),
        2,
        "the admins' statement stays: {statements:#?}"
    );
    assert_eq!(
        statements[0],
        break_glass_role()[0].body["trustPolicy"]["Statement"][0]
    );
    assert_eq!(statements[1]["Principal"]["AWS"], IVAN_PRINCIPAL);
    assert_eq!(
        statements[1]["Condition"]["DateLessThan"]["aws:CurrentTime"],
        crate::clock::datetime_text(expires),
        "AWS itself stops honouring it at the end"
    );
    let item = opening
        .items
        .iter()
        .find(|i| i.change.verb() == "update-trust-policy")
        .expect("item");
    assert_eq!(
        item.decisions[0].reasons,
        vec!["breakglass-auditor-with-unexpired-grant"]
    );
    assert_eq!(item.affects, vec!["ivan"]);
    assert!(alerts(&opening).is_empty(), "announced once IAM shows it");
    assert_eq!(opening.break_glass_open, 0);

    // Read back from IAM: announced, counted, then nothing more until the end.
    let admitted = observed_after(&opening, observed);
    let opened = observe(&admitted, NOW);
    assert!(trust_statements(&opened).is_none());
    assert_eq!(
        alerts(&opened),
        vec!["breakglass/bg-2026-11-26-ivan/opened"]
    );
    assert_eq!(opened.break_glass_open, 1);
    let announced = observed_after(&opened, admitted);
    let steady = observe(&announced, NOW);
    assert!(steady.items.is_empty(), "{steady:#?}");

    // At the end the statement goes and the admins' stays; the closing is announced once
    // IAM no longer shows it.
    let after = engine.tick_at(wall(expires)).now;
    let closing = observe(&announced, after);
    let statements = trust_statements(&closing).expect("the trust policy changes back");
    assert_eq!(
        statements,
        break_glass_role()[0].body["trustPolicy"]["Statement"]
            .as_array()
            .cloned()
            .expect("list")
    );
    let item = closing
        .items
        .iter()
        .find(|i| i.change.verb() == "update-trust-policy")
        .expect("item");
    assert_eq!(item.decisions[0].reasons, vec!["breakglass-expired-grant"]);
    let closed = observe(&observed_after(&closing, announced), after);
    assert_eq!(
        alerts(&closed),
        vec!["breakglass/bg-2026-11-26-ivan/closed"]
    );
    assert_eq!(closed.break_glass_open, 0);
}

#[test]
fn a_statement_with_tregovs_prefix_that_no_grant_explains_goes_even_with_no_grants() {
    let engine = engine_with(|json| {
        json.retain(|e| e["uid"]["type"] != "Tre::BreakGlassGrant");
    });
    let mut observed = break_glass_role();
    let list = observed[0].body["trustPolicy"]["Statement"]
        .as_array_mut()
        .expect("list");
    list.push(json!({"Sid": "TregovBreakGlass0000000000000000", "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::333333333333:user/mallory"}, "Action": "sts:AssumeRole"}));
    let p = plan(
        &engine,
        &ActualState::from_observed(&observed),
        &break_glass_settings(NOW),
    );
    assert_eq!(
        trust_statements(&p).expect("the stray statement goes"),
        break_glass_role()[0].body["trustPolicy"]["Statement"]
            .as_array()
            .cloned()
            .expect("list")
    );
}

#[test]
fn a_closed_grant_never_opens_again() {
    let engine = engine_with_break_glass(NOW + HOUR, true);
    let mut observed = break_glass_role();
    observed.push(Observed {
        kind: NOTIFICATION_KIND.into(),
        key: "breakglass/bg-2026-11-26-ivan/closed".into(),
        body: json!({}),
    });
    let p = plan(
        &engine,
        &ActualState::from_observed(&observed),
        &break_glass_settings(NOW),
    );
    assert!(trust_statements(&p).is_none(), "{p:#?}");
}

#[test]
fn a_grant_whose_auditor_has_no_aws_principal_opens_nothing_and_says_so() {
    let engine = engine_with_break_glass(NOW + HOUR, false);
    let p = plan(
        &engine,
        &ActualState::from_observed(&break_glass_role()),
        &break_glass_settings(NOW),
    );
    assert!(trust_statements(&p).is_none());
    assert!(alerts(&p).is_empty());
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("has no `awsPrincipal`")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn a_self_approved_grant_opens_nothing() {
    let engine = engine_with(|json| {
        let grant = entity(json, "Tre::BreakGlassGrant", "bg-2026-11-26-ivan");
        grant["attrs"]["expiresAt"] = crate::clock::datetime_value(NOW + HOUR);
        grant["attrs"]["approvedBy"] = json!({"__entity": {"type": "Tre::User", "id": "ivan"}});
        entity(json, "Tre::User", "ivan")["attrs"]["awsPrincipal"] = json!(IVAN_PRINCIPAL);
    });
    let p = plan(
        &engine,
        &ActualState::from_observed(&break_glass_role()),
        &break_glass_settings(NOW),
    );
    assert!(trust_statements(&p).is_none(), "{p:#?}");
    assert_eq!(p.break_glass_open, 0);
}

fn backup_plan_settings() -> PlanSettings {
    PlanSettings {
        backup_plan: Some(BackupPlanTarget {
            plan_name: "tre-workspaces".into(),
            rule_name: "tregov-workspaces".into(),
            vault_name: "Default".into(),
            selection_name: "tregov-workspaces".into(),
            selection_role: "service-role/AWSBackupDefaultServiceRole".into(),
            daily_hour_utc: 5,
        }),
        ..settings()
    }
}

/// proj-genomics's plan with retention cut to 7 days and a selection of everything.
fn edited_backup_plan() -> Vec<Observed> {
    vec![Observed {
        kind: "backup-plan".into(),
        key: "111111111111/plan-1".into(),
        body: json!({"project": "proj-genomics", "id": "plan-1", "name": "tre-workspaces",
            "rules": [{"name": "tregov-workspaces", "vault": "Default", "schedule": "cron(0 5 ? * * *)",
                "startWindowMinutes": 60, "completionWindowMinutes": 600,
                "deleteAfterDays": 7, "coldStorageAfterDays": null}],
            "selections": [{"id": "sel-1", "name": "everything",
                "roleArn": "arn:aws:iam::111111111111:role/service-role/AWSBackupDefaultServiceRole",
                "tags": [], "resources": ["*"], "notResources": [], "conditions": false}]}),
    }]
}

fn backup_changes(plan: &Plan) -> Vec<&Change> {
    plan.items
        .iter()
        .map(|i| &i.change)
        .filter(|c| c.enforcer() == "backup")
        .collect()
}

#[test]
fn a_backup_plan_edited_out_of_band_is_put_back_to_the_admins_settings_and_selects_only_the_tag() {
    let engine = engine_with(|_| {});
    let observed = edited_backup_plan();
    let p = plan(
        &engine,
        &ActualState::from_observed(&observed),
        &backup_plan_settings(),
    );
    let changes = backup_changes(&p);
    let Some(Change::UpdateBackupPlan { plan_id, rules, .. }) =
        changes.iter().find(|c| c.verb() == "update-backup-plan")
    else {
        panic!("no plan update: {p:#?}");
    };
    assert_eq!(plan_id, "plan-1");
    assert_eq!(
        rules,
        &[
            json!({"RuleName": "tregov-workspaces", "TargetBackupVaultName": "Default",
            "ScheduleExpression": "cron(0 5 ? * * *)", "StartWindowMinutes": 60,
            "CompletionWindowMinutes": 600,
            "Lifecycle": {"DeleteAfterDays": 180, "MoveToColdStorageAfterDays": 90}})
        ]
    );
    let verbs: Vec<&str> = changes.iter().map(|c| c.verb()).collect();
    assert_eq!(
        verbs,
        [
            "update-backup-plan",
            "delete-backup-selection",
            "create-backup-selection"
        ],
        "the selection of everything goes, the tag selection comes"
    );
    let item = p
        .items
        .iter()
        .find(|i| i.change.enforcer() == "backup")
        .expect("item");
    assert_eq!(
        item.decisions[0].reasons,
        vec!["backup-plan-follows-the-admins-settings"]
    );

    let applied = observed_after(&p, observed);
    let again = plan(
        &engine,
        &ActualState::from_observed(&applied),
        &backup_plan_settings(),
    );
    assert!(backup_changes(&again).is_empty(), "{again:#?}");
}

#[test]
fn settings_that_would_throw_backups_away_are_never_applied() {
    let engine = engine_with(|json| {
        entity(json, "Tre::BackupSettings", "proj-genomics")["attrs"]["retentionDays"] = json!(1);
    });
    let p = plan(
        &engine,
        &ActualState::from_observed(&edited_backup_plan()),
        &backup_plan_settings(),
    );
    assert!(backup_changes(&p).is_empty(), "{p:#?}");
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("backup-plan-keeps-a-week")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn without_a_plan_name_only_the_tags_are_planned() {
    let engine = engine_with(|_| {});
    let p = plan(
        &engine,
        &ActualState::from_observed(&edited_backup_plan()),
        &settings(),
    );
    assert!(backup_changes(&p).is_empty());
}
