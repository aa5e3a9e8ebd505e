//! AWS Backup in a project account: its vaults and plans (each plan's rules), and the
//! selections of the plan tregov keeps (`[backup] plan_name`), as observed state. Read with
//! the workspaces, whose backups they are.

use serde_json::{json, Value};
use tregov_config::ProjectConfig;
use tregov_engine::store::Observed;

use crate::CollectError;

/// What was seen, and what could not be read.
#[derive(Debug, Default)]
pub struct Seen {
    pub observed: Vec<Observed>,
    pub errors: Vec<String>,
}

/// The vaults and plans of `project`'s account; the selections of the plan named
/// `kept_plan` too.
pub async fn read_backup(
    backup: &aws_sdk_backup::Client,
    project: &ProjectConfig,
    kept_plan: Option<&str>,
) -> Seen {
    let mut seen = Seen::default();
    match backup.list_backup_vaults().send().await {
        Ok(out) => {
            for v in out.backup_vault_list() {
                let name = v.backup_vault_name().unwrap_or_default();
                seen.observed.push(Observed {
                    kind: "backup-vault".into(),
                    key: format!("{}/{name}", project.account_id),
                    body: json!({"project": project.id, "name": name, "arn": v.backup_vault_arn(),
                        "encryptionKeyArn": v.encryption_key_arn()}),
                });
            }
        }
        Err(e) => seen
            .errors
            .push(CollectError::aws("backup:ListBackupVaults", &project.account_id, e).to_string()),
    }
    let mut plans = Vec::new();
    let mut pages = backup.list_backup_plans().into_paginator().send();
    while let Some(page) = pages.next().await {
        match page {
            Ok(out) => plans.extend(out.backup_plans_list().iter().cloned()),
            Err(e) => {
                seen.errors.push(
                    CollectError::aws("backup:ListBackupPlans", &project.account_id, e).to_string(),
                );
                return seen;
            }
        }
    }
    for p in plans {
        let Some(id) = p.backup_plan_id() else {
            continue;
        };
        let rules = match plan_rules(backup, id).await {
            Ok(rules) => rules,
            Err(e) => {
                seen.errors.push(e.to_string());
                continue;
            }
        };
        let mut body =
            json!({"project": project.id, "id": id, "name": p.backup_plan_name(), "rules": rules});
        if p.backup_plan_name().is_some() && p.backup_plan_name() == kept_plan {
            // Unread selections are left out, not empty: nothing is planned about them.
            match selections(backup, id).await {
                Ok(list) => body["selections"] = Value::Array(list),
                Err(e) => seen.errors.push(e.to_string()),
            }
        }
        seen.observed.push(Observed {
            kind: "backup-plan".into(),
            key: format!("{}/{id}", project.account_id),
            body,
        });
    }
    seen
}

/// A plan's rules in the form the planner compares.
async fn plan_rules(backup: &aws_sdk_backup::Client, id: &str) -> Result<Vec<Value>, CollectError> {
    let plan = backup
        .get_backup_plan()
        .backup_plan_id(id)
        .send()
        .await
        .map_err(|e| CollectError::aws("backup:GetBackupPlan", id, e))?;
    Ok(plan
        .backup_plan()
        .map(|bp| bp.rules().iter().map(rule_json).collect())
        .unwrap_or_default())
}

fn rule_json(r: &aws_sdk_backup::types::BackupRule) -> Value {
    json!({
        "name": r.rule_name(),
        "vault": r.target_backup_vault_name(),
        "schedule": r.schedule_expression(),
        "startWindowMinutes": r.start_window_minutes(),
        "completionWindowMinutes": r.completion_window_minutes(),
        "deleteAfterDays": r.lifecycle().and_then(|l| l.delete_after_days()),
        "coldStorageAfterDays": r.lifecycle().and_then(|l| l.move_to_cold_storage_after_days()),
    })
}

/// Every selection of a plan: what it selects by tag and by resource, and as which role.
async fn selections(
    backup: &aws_sdk_backup::Client,
    plan: &str,
) -> Result<Vec<Value>, CollectError> {
    let mut out = Vec::new();
    let mut pages = backup
        .list_backup_selections()
        .backup_plan_id(plan)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| CollectError::aws("backup:ListBackupSelections", plan, e))?;
        for s in page.backup_selections_list() {
            let Some(id) = s.selection_id() else {
                continue;
            };
            let got = backup
                .get_backup_selection()
                .backup_plan_id(plan)
                .selection_id(id)
                .send()
                .await
                .map_err(|e| CollectError::aws("backup:GetBackupSelection", id, e))?;
            let Some(selection) = got.backup_selection() else {
                continue;
            };
            let tags: Vec<Value> = selection
                .list_of_tags()
                .iter()
                .map(|t| json!({"type": t.condition_type().as_str(), "key": t.condition_key(), "value": t.condition_value()}))
                .collect();
            out.push(json!({
                "id": id,
                "name": selection.selection_name(),
                "roleArn": selection.iam_role_arn(),
                "tags": tags,
                "resources": selection.resources(),
                "notResources": selection.not_resources(),
                // Any condition beyond the tags widens or narrows what is selected.
                "conditions": selection.conditions().is_some_and(|c| {
                    !(c.string_equals().is_empty()
                        && c.string_not_equals().is_empty()
                        && c.string_like().is_empty()
                        && c.string_not_like().is_empty())
                }),
            }));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    //! moto has no selection calls (`ListBackupSelections`, `GetBackupSelection`): the
    //! listing runs against the SDK's replay client, answered in the shapes AWS documents.

    use aws_sdk_backup::config::{BehaviorVersion, Credentials, Region};
    use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient};
    use aws_smithy_types::body::SdkBody;

    use super::*;

    fn event(path: &str, answer: Value) -> ReplayEvent {
        let request = http::Request::builder()
            .uri(format!("https://backup.eu-west-2.amazonaws.com{path}"))
            .body(SdkBody::empty())
            .expect("request");
        let response = http::Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(SdkBody::from(answer.to_string()))
            .expect("response");
        ReplayEvent::new(request, response)
    }

    fn project() -> ProjectConfig {
        serde_json::from_value(json!({"id": "proj-genomics", "account_id": "111111111111"}))
            .expect("project")
    }

    #[tokio::test]
    async fn the_kept_plans_selections_are_read_with_what_they_select_and_other_plans_are_not() {
        let rule = json!({"RuleName": "tregov-workspaces", "TargetBackupVaultName": "Default",
            "ScheduleExpression": "cron(0 5 ? * * *)", "StartWindowMinutes": 60,
            "CompletionWindowMinutes": 600, "Lifecycle": {"DeleteAfterDays": 30}});
        let replay = StaticReplayClient::new(vec![
            event(
                "/backup-vaults",
                json!({"BackupVaultList": [{"BackupVaultName": "Default",
                "BackupVaultArn": "arn:aws:backup:eu-west-2:111111111111:backup-vault:Default"}]}),
            ),
            event(
                "/backup/plans",
                json!({"BackupPlansList": [
                {"BackupPlanId": "plan-1", "BackupPlanName": "tre-workspaces"},
                {"BackupPlanId": "plan-2", "BackupPlanName": "someone-elses"}]}),
            ),
            event(
                "/backup/plans/plan-1",
                json!({"BackupPlanId": "plan-1",
                "BackupPlan": {"BackupPlanName": "tre-workspaces", "Rules": [rule]}}),
            ),
            event(
                "/backup/plans/plan-1/selections",
                json!({"BackupSelectionsList": [
                {"SelectionId": "sel-1", "SelectionName": "everything", "BackupPlanId": "plan-1"}]}),
            ),
            event(
                "/backup/plans/plan-1/selections/sel-1",
                json!({"BackupPlanId": "plan-1",
                "SelectionId": "sel-1", "BackupSelection": {"SelectionName": "everything",
                "IamRoleArn": "arn:aws:iam::111111111111:role/service-role/AWSBackupDefaultServiceRole",
                "Resources": ["*"], "ListOfTags": []}}),
            ),
            event(
                "/backup/plans/plan-2",
                json!({"BackupPlanId": "plan-2",
                "BackupPlan": {"BackupPlanName": "someone-elses", "Rules": []}}),
            ),
        ]);
        let config = aws_sdk_backup::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-2"))
            .credentials_provider(Credentials::for_tests())
            .http_client(replay.clone())
            .build();
        let backup = aws_sdk_backup::Client::from_conf(config);
        let seen = read_backup(&backup, &project(), Some("tre-workspaces")).await;
        assert!(seen.errors.is_empty(), "{:?}", seen.errors);
        replay.relaxed_requests_match();
        let plans: Vec<&Observed> = seen
            .observed
            .iter()
            .filter(|o| o.kind == "backup-plan")
            .collect();
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].body["rules"][0]["deleteAfterDays"], 30);
        assert_eq!(
            plans[0].body["selections"],
            json!([{"id": "sel-1", "name": "everything",
                "roleArn": "arn:aws:iam::111111111111:role/service-role/AWSBackupDefaultServiceRole",
                "tags": [], "resources": ["*"], "notResources": [], "conditions": false}])
        );
        assert!(
            plans[1].body.get("selections").is_none(),
            "only the kept plan's"
        );
    }
}
