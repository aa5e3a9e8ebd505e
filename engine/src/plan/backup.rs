//! Backups: the tag the admins' backup plan selects on follows each workspace's opt-in and
//! the policies, on the resources the collectors saw for it.

use cedar_policy::Entity;
use serde_json::Value;

use super::actual::ActualState;
use super::attrs::{attr_bool, attr_string, attr_uid};
use super::decider::{item, materialize, Decider};
use super::{Change, Inputs, PlanItem};

/// Plans the backup tag of every live workspace; nothing when no tag is configured.
pub(super) fn plan_backups(inputs: &Inputs, decider: &mut Decider, items: &mut Vec<PlanItem>) {
    // Backups: the tag the admins' backup plan selects on follows opt-in and policy.
    if inputs.settings.backup_tag.0.is_empty() {
        return;
    }
    for w in &inputs.index.workspaces {
        items.extend(backup_change(w, inputs, decider));
    }
}

/// The tag or untag a workspace needs, if any.
fn backup_change(w: &Entity, inputs: &Inputs, decider: &mut Decider) -> Option<PlanItem> {
    let Inputs {
        actual, settings, ..
    } = inputs;
    let (tag_key, tag_value) = &settings.backup_tag;
    let uid = w.uid();
    let account = settings.account_of(&attr_uid(w, "project")?);
    let (Some(kind), Some(instance_id)) = (attr_string(w, "kind"), attr_string(w, "instanceId"))
    else {
        return None;
    };
    let status = attr_string(w, "status").unwrap_or_default();
    if status == "terminated" || status == "deleted" {
        return None;
    }
    let (resources, tags) = observed_resources(actual, &account, &kind, &instance_id)?;
    let tagged = tags.get(tag_key).and_then(Value::as_str) == Some(tag_value.as_str());
    let owner = attr_uid(w, "owner");
    let decision = owner
        .as_ref()
        .map(|o| decider.decide(o, "enableBackup", &uid));
    if decision.as_ref().is_some_and(|d| d.errored()) {
        // Unknown: leave the backups as they are.
        return None;
    }
    let want = attr_bool(w, "backupOptIn") && decision.as_ref().is_some_and(|d| d.allows());
    if want == tagged {
        return None;
    }
    let why = materialize(decision.iter());
    Some(item(
        Change::TagWorkspace {
            account,
            workspace: uid.id().unescaped().to_string(),
            workspace_kind: kind,
            resources,
            key: tag_key.clone(),
            value: tag_value.clone(),
            remove: !want,
        },
        if want {
            "the owner opted in and the policies allow backups".into()
        } else {
            "backups are no longer opted in or allowed".into()
        },
        why,
    ))
}

/// The resources a workspace's backup tag goes on (an EC2 instance and its volumes, or a
/// notebook) and their current tags; none when the collectors did not see the workspace.
fn observed_resources(
    actual: &ActualState,
    account: &str,
    kind: &str,
    instance_id: &str,
) -> Option<(Vec<String>, Value)> {
    match kind {
        "ec2" => {
            let i = actual.ec2.get(&format!("{account}/{instance_id}"))?;
            let mut r = vec![instance_id.to_string()];
            r.extend(
                i["volumes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(String::from)),
            );
            Some((r, i["tags"].clone()))
        }
        "sagemaker" => {
            let n = actual.notebooks.get(&format!("{account}/{instance_id}"))?;
            Some((
                vec![n["arn"].as_str().unwrap_or_default().to_string()],
                n["tags"].clone(),
            ))
        }
        _ => None,
    }
}
