//! The AWS Backup plan of workspaces: admin-only settings (frequency, retention, cold
//! storage, windows: the project's `backupSettings`) converged in each project account. The
//! plan named `[backup] plan_name` holds exactly one rule made from them and exactly one
//! selection, on the backup tag, as the configured role; any other rule or selection is an
//! edit someone made, and goes. `keepBackupPlan` decides whether the settings are applied.

use cedar_policy::{Entity, EvalResult};
use serde_json::{json, Value};

use super::attrs::{attr_string, attr_uid};
use super::decider::{item, materialize, Decider};
use super::{BackupPlanTarget, Change, Inputs, PlanItem};

/// Plans every project's backup plan; nothing without `[backup] plan_name`.
pub(super) fn plan_backup_plans(inputs: &Inputs, decider: &mut Decider, items: &mut Vec<PlanItem>) {
    let Some(target) = &inputs.settings.backup_plan else {
        return;
    };
    let Ok(service) = crate::entities::uid_from_parts("Tre::Service", "tregov") else {
        return;
    };
    for (project_id, account) in &inputs.settings.project_accounts {
        let Ok(project) = crate::entities::uid_from_parts("Tre::Project", project_id) else {
            continue;
        };
        let Some(settings) = inputs
            .graph
            .entity(&project)
            .and_then(|p| attr_uid(&p, "backupSettings"))
        else {
            continue;
        };
        let plans: Vec<&Value> = inputs
            .actual
            .backup_plans
            .range(format!("{account}/")..)
            .take_while(|(key, _)| key.starts_with(&format!("{account}/")))
            .map(|(_, plan)| plan)
            .filter(|plan| plan["name"] == target.plan_name.as_str())
            .collect();
        let [plan] = plans.as_slice() else {
            decider.warnings.push(format!(
                "{} backup plans named `{}` in `{account}` ({project_id}): its settings are not applied",
                plans.len(),
                target.plan_name
            ));
            continue;
        };
        let verdict = decider.decide(&service, "keepBackupPlan", &settings);
        if !verdict.allows() {
            if !verdict.errored() {
                decider.warnings.push(format!(
                    "the backup settings of `{project_id}` are not applied: `keepBackupPlan` denied ({})",
                    verdict.reasons().join(", ")
                ));
            }
            continue;
        }
        let Some(settings) = inputs.graph.entity(&settings) else {
            continue;
        };
        let Some(rule) = wanted_rule(&settings, target) else {
            decider.warnings.push(format!(
                "the backup settings of `{project_id}` name no known frequency (`hourly` or `daily`)"
            ));
            continue;
        };
        let why = materialize([&verdict]);
        let plan_id = plan["id"].as_str().unwrap_or_default().to_string();
        let had: Vec<Value> = plan["rules"].as_array().cloned().unwrap_or_default();
        if had != [observed_form(&rule)] {
            items.push(item(
                Change::UpdateBackupPlan {
                    account: account.clone(),
                    plan_id: plan_id.clone(),
                    plan_name: target.plan_name.clone(),
                    rules: vec![rule],
                },
                "the backup plan differs from the admins' settings".into(),
                why.clone(),
            ));
        }
        let role_arn = format!("arn:aws:iam::{account}:role/{}", target.selection_role);
        items.extend(selection_changes(
            plan,
            target,
            account,
            &plan_id,
            &role_arn,
            &inputs.settings.backup_tag,
            &why,
        ));
    }
}

fn attr_long(e: &Entity, name: &str) -> Option<i64> {
    match e.attr(name)? {
        Ok(EvalResult::Long(n)) => Some(n),
        _ => None,
    }
}

/// The rule the settings ask for, as AWS Backup's `BackupRuleInput`.
fn wanted_rule(settings: &Entity, target: &BackupPlanTarget) -> Option<Value> {
    let schedule = match attr_string(settings, "frequency")?.as_str() {
        "hourly" => "cron(0 * ? * * *)".to_string(),
        "daily" => format!("cron(0 {} ? * * *)", target.daily_hour_utc),
        _ => return None,
    };
    let mut lifecycle = json!({"DeleteAfterDays": attr_long(settings, "retentionDays")?});
    let cold = attr_long(settings, "coldStorageAfterDays")?;
    if cold > 0 {
        lifecycle["MoveToColdStorageAfterDays"] = json!(cold);
    }
    Some(json!({
        "RuleName": target.rule_name,
        "TargetBackupVaultName": target.vault_name,
        "ScheduleExpression": schedule,
        "StartWindowMinutes": attr_long(settings, "startWindowMinutes")?,
        "CompletionWindowMinutes": attr_long(settings, "completionWindowMinutes")?,
        "Lifecycle": lifecycle,
    }))
}

/// A `BackupRuleInput` as the collector records an observed rule.
fn observed_form(rule: &Value) -> Value {
    json!({
        "name": rule["RuleName"],
        "vault": rule["TargetBackupVaultName"],
        "schedule": rule["ScheduleExpression"],
        "startWindowMinutes": rule["StartWindowMinutes"],
        "completionWindowMinutes": rule["CompletionWindowMinutes"],
        "deleteAfterDays": rule["Lifecycle"]["DeleteAfterDays"],
        "coldStorageAfterDays": rule["Lifecycle"]["MoveToColdStorageAfterDays"],
    })
}

/// Every selection but the one wanted goes; the wanted one is created when none is left
/// under its name (AWS cannot edit a selection: a wrong one goes first, and its
/// replacement comes on the next plan, after the read-back).
fn selection_changes(
    plan: &Value,
    target: &BackupPlanTarget,
    account: &str,
    plan_id: &str,
    role_arn: &str,
    (tag_key, tag_value): &(String, String),
    why: &[super::Justification],
) -> Vec<PlanItem> {
    let wanted = |s: &Value| {
        s["name"] == target.selection_name.as_str()
            && s["roleArn"] == role_arn
            && s["tags"] == json!([{"type": "STRINGEQUALS", "key": tag_key, "value": tag_value}])
            && s["resources"].as_array().is_none_or(Vec::is_empty)
            && s["notResources"].as_array().is_none_or(Vec::is_empty)
            && s["conditions"] != true
    };
    // Selections that could not be read: nothing is known to change.
    let Some(selections) = plan["selections"].as_array() else {
        return Vec::new();
    };
    let mut items = Vec::new();
    let mut kept = false;
    for s in selections {
        if wanted(s) && !kept {
            kept = true;
            continue;
        }
        items.push(item(
            Change::DeleteBackupSelection {
                account: account.to_string(),
                plan_id: plan_id.to_string(),
                selection_id: s["id"].as_str().unwrap_or_default().to_string(),
                selection_name: s["name"].as_str().unwrap_or_default().to_string(),
            },
            "the backup plan selects nothing but the backup tag".into(),
            why.to_vec(),
        ));
    }
    let name_taken = selections
        .iter()
        .any(|s| s["name"] == target.selection_name.as_str());
    if !kept && !name_taken {
        items.push(item(
            Change::CreateBackupSelection {
                account: account.to_string(),
                plan_id: plan_id.to_string(),
                selection_name: target.selection_name.clone(),
                role_arn: role_arn.to_string(),
                tag_key: tag_key.clone(),
                tag_value: tag_value.clone(),
            },
            "the backup plan selects workspaces by the backup tag".into(),
            why.to_vec(),
        ));
    }
    items
}
