//! The AWS Backup plan of workspaces, kept at the admins' settings: its rules set, its tag
//! selection created, any other selection deleted.

use std::sync::Arc;

use aws_sdk_backup::error::ProvideErrorMetadata;
use aws_sdk_backup::types::{
    BackupPlanInput, BackupRuleInput, BackupSelection, Condition, ConditionType, Lifecycle,
};
use futures::future::BoxFuture;
use serde_json::Value;
use tregov_engine::plan::{Change, PlanItem};

use crate::{describe, Accounts, Enforcer, ItemResult};

pub struct Backup {
    accounts: Arc<Accounts>,
}

impl Backup {
    pub fn new(accounts: Arc<Accounts>) -> Self {
        Self { accounts }
    }

    async fn apply_one(&self, item: &PlanItem) -> Result<(), String> {
        let account = match &item.change {
            Change::UpdateBackupPlan { account, .. }
            | Change::CreateBackupSelection { account, .. }
            | Change::DeleteBackupSelection { account, .. } => account,
            _ => return Err("not an AWS Backup change".into()),
        };
        let client = aws_sdk_backup::Client::new(&self.accounts.sdk(account).await?);
        // One token per attempt: a retry of this call is not applied twice, and the same
        // change planned again later is a new request.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        apply_change(&client, &item.change, &format!("tregov-{}-{now}", item.id)).await
    }
}

/// Applies one AWS Backup change with `backup`; a creation carries `request_token`.
pub async fn apply_change(
    backup: &aws_sdk_backup::Client,
    change: &Change,
    request_token: &str,
) -> Result<(), String> {
    match change {
        Change::UpdateBackupPlan {
            plan_id,
            plan_name,
            rules,
            ..
        } => {
            let rules = rules
                .iter()
                .map(rule_input)
                .collect::<Result<Vec<_>, _>>()?;
            let plan = BackupPlanInput::builder()
                .backup_plan_name(plan_name)
                .set_rules(Some(rules))
                .build()
                .map_err(|e| format!("backup plan `{plan_name}`: {e}"))?;
            backup
                .update_backup_plan()
                .backup_plan_id(plan_id)
                .backup_plan(plan)
                .send()
                .await
                .map_err(|e| describe("backup:UpdateBackupPlan", &e))?;
            Ok(())
        }
        Change::CreateBackupSelection {
            plan_id,
            selection_name,
            role_arn,
            tag_key,
            tag_value,
            ..
        } => {
            let tag = Condition::builder()
                .condition_type(ConditionType::Stringequals)
                .condition_key(tag_key)
                .condition_value(tag_value)
                .build()
                .map_err(|e| format!("selection `{selection_name}`: {e}"))?;
            let selection = BackupSelection::builder()
                .selection_name(selection_name)
                .iam_role_arn(role_arn)
                .list_of_tags(tag)
                .build()
                .map_err(|e| format!("selection `{selection_name}`: {e}"))?;
            backup
                .create_backup_selection()
                .backup_plan_id(plan_id)
                .backup_selection(selection)
                .creator_request_id(request_token)
                .send()
                .await
                .map_err(|e| describe("backup:CreateBackupSelection", &e))?;
            Ok(())
        }
        Change::DeleteBackupSelection {
            plan_id,
            selection_id,
            ..
        } => match backup
            .delete_backup_selection()
            .backup_plan_id(plan_id)
            .selection_id(selection_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Already gone is what was wanted.
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(()),
            Err(e) => Err(describe("backup:DeleteBackupSelection", &e)),
        },
        _ => Err("not an AWS Backup change".into()),
    }
}

/// A rule as the planner wrote it (AWS Backup's `BackupRuleInput` JSON).
fn rule_input(rule: &Value) -> Result<BackupRuleInput, String> {
    let text = |k: &str| rule[k].as_str().map(String::from);
    let long = |v: &Value| v.as_i64();
    let lifecycle = Lifecycle::builder()
        .set_delete_after_days(long(&rule["Lifecycle"]["DeleteAfterDays"]))
        .set_move_to_cold_storage_after_days(long(&rule["Lifecycle"]["MoveToColdStorageAfterDays"]))
        .build();
    BackupRuleInput::builder()
        .set_rule_name(text("RuleName"))
        .set_target_backup_vault_name(text("TargetBackupVaultName"))
        .set_schedule_expression(text("ScheduleExpression"))
        .set_start_window_minutes(long(&rule["StartWindowMinutes"]))
        .set_completion_window_minutes(long(&rule["CompletionWindowMinutes"]))
        .lifecycle(lifecycle)
        .build()
        .map_err(|e| format!("backup rule: {e}"))
}

impl Enforcer for Backup {
    fn name(&self) -> &'static str {
        "backup"
    }

    fn apply<'a>(&'a self, items: &'a [&'a PlanItem]) -> BoxFuture<'a, Vec<ItemResult>> {
        Box::pin(crate::each(items, |item| self.apply_one(item)))
    }
}

#[cfg(test)]
mod tests {
    //! moto has neither `UpdateBackupPlan` nor `CreateBackupSelection` (nor any selection
    //! call): these run against the SDK's replay client, each request checked against the
    //! one AWS documents and answered with the documented response.

    use aws_sdk_backup::config::{BehaviorVersion, Credentials, Region};
    use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient};
    use aws_smithy_types::body::SdkBody;
    use serde_json::json;

    use super::*;

    const ENDPOINT: &str = "https://backup.eu-west-2.amazonaws.com";

    fn client(events: Vec<ReplayEvent>) -> (aws_sdk_backup::Client, StaticReplayClient) {
        let replay = StaticReplayClient::new(events);
        let config = aws_sdk_backup::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-2"))
            .credentials_provider(Credentials::for_tests())
            .http_client(replay.clone())
            .build();
        (aws_sdk_backup::Client::from_conf(config), replay)
    }

    fn event(
        method: &str,
        path: &str,
        body: Option<Value>,
        status: u16,
        answer: Value,
    ) -> ReplayEvent {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{ENDPOINT}{path}"))
            .body(body.map_or_else(SdkBody::empty, |b| SdkBody::from(b.to_string())))
            .expect("request");
        let response = http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(SdkBody::from(answer.to_string()))
            .expect("response");
        ReplayEvent::new(request, response)
    }

    fn methods(replay: &StaticReplayClient) -> Vec<String> {
        replay
            .actual_requests()
            .map(|r| r.method().to_string())
            .collect()
    }

    #[tokio::test]
    async fn the_plan_is_set_to_exactly_the_admins_rule() {
        let rule = json!({
            "RuleName": "tregov-workspaces",
            "TargetBackupVaultName": "Default",
            "ScheduleExpression": "cron(0 5 ? * * *)",
            "StartWindowMinutes": 60,
            "CompletionWindowMinutes": 600,
            "Lifecycle": {"DeleteAfterDays": 180, "MoveToColdStorageAfterDays": 90},
        });
        let (backup, replay) = client(vec![event(
            "POST",
            "/backup/plans/plan-1",
            Some(json!({"BackupPlan": {"BackupPlanName": "tre-workspaces", "Rules": [rule]}})),
            200,
            json!({"BackupPlanArn": "arn:aws:backup:eu-west-2:111111111111:backup-plan:plan-1",
                "BackupPlanId": "plan-1", "CreationDate": 1.7965e9, "VersionId": "v2"}),
        )]);
        let change = Change::UpdateBackupPlan {
            account: "111111111111".into(),
            plan_id: "plan-1".into(),
            plan_name: "tre-workspaces".into(),
            rules: vec![rule],
        };
        apply_change(&backup, &change, "token-1")
            .await
            .expect("updated");
        replay.relaxed_requests_match();
        assert_eq!(methods(&replay), ["POST"]);
    }

    #[tokio::test]
    async fn the_selection_selects_by_the_backup_tag_as_the_configured_role() {
        let (backup, replay) = client(vec![event(
            "PUT",
            "/backup/plans/plan-1/selections",
            Some(json!({"BackupSelection": {
                "SelectionName": "tregov-workspaces",
                "IamRoleArn": "arn:aws:iam::111111111111:role/service-role/AWSBackupDefaultServiceRole",
                "ListOfTags": [{"ConditionType": "STRINGEQUALS", "ConditionKey": "tregov:backup", "ConditionValue": "enabled"}],
            }, "CreatorRequestId": "token-1"})),
            200,
            json!({"BackupPlanId": "plan-1", "CreationDate": 1.7965e9, "SelectionId": "sel-2"}),
        )]);
        let change = Change::CreateBackupSelection {
            account: "111111111111".into(),
            plan_id: "plan-1".into(),
            selection_name: "tregov-workspaces".into(),
            role_arn: "arn:aws:iam::111111111111:role/service-role/AWSBackupDefaultServiceRole"
                .into(),
            tag_key: "tregov:backup".into(),
            tag_value: "enabled".into(),
        };
        apply_change(&backup, &change, "token-1")
            .await
            .expect("created");
        replay.relaxed_requests_match();
        assert_eq!(methods(&replay), ["PUT"]);
    }

    #[tokio::test]
    async fn a_selection_deleted_already_is_what_was_wanted_and_another_failure_is_reported() {
        let delete = |id: &str| Change::DeleteBackupSelection {
            account: "111111111111".into(),
            plan_id: "plan-1".into(),
            selection_id: id.into(),
            selection_name: "everything".into(),
        };
        let gone = json!({"__type": "ResourceNotFoundException", "Code": "ResourceNotFoundException",
            "Message": "Failed reading Backup plan"});
        let denied = json!({"__type": "AccessDeniedException", "Code": "AccessDeniedException",
            "Message": "not authorized to perform backup:DeleteBackupSelection"});
        let (backup, replay) = client(vec![
            event(
                "DELETE",
                "/backup/plans/plan-1/selections/sel-1",
                None,
                200,
                json!({}),
            ),
            event(
                "DELETE",
                "/backup/plans/plan-1/selections/sel-1",
                None,
                404,
                gone,
            ),
            event(
                "DELETE",
                "/backup/plans/plan-1/selections/sel-9",
                None,
                403,
                denied,
            ),
        ]);
        apply_change(&backup, &delete("sel-1"), "t")
            .await
            .expect("deleted");
        apply_change(&backup, &delete("sel-1"), "t")
            .await
            .expect("already gone");
        let err = apply_change(&backup, &delete("sel-9"), "t")
            .await
            .expect_err("denied");
        assert!(err.contains("backup:DeleteBackupSelection"), "{err}");
        replay.relaxed_requests_match();
        assert_eq!(methods(&replay), ["DELETE", "DELETE", "DELETE"]);
    }
}
