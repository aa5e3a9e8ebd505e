//! Lifetimes: what ends at a date. A workspace the policies no longer let operate
//! (`operateWorkspace`, denied once its project has ended) is stopped, and its role keeps
//! nothing on its owner's behalf; and before a stored date passes, a warning goes out once.

use std::sync::Arc;

use cedar_policy::EntityUid;

use super::attrs::{attr_string, attr_uid};
use super::decider::{item, Decider, Verdict};
use super::index::{FastSet, GraphIndex};
use super::{Change, Inputs, PlanItem};

/// The workspaces the policies say may no longer operate, with the decision that says so.
/// Only a deny with every policy evaluated retires one: an error keeps it as it is.
pub(super) fn retired_workspaces(
    index: &GraphIndex,
    decider: &mut Decider,
) -> Vec<(EntityUid, Arc<Verdict>)> {
    let Ok(service) = crate::entities::uid_from_parts("Tre::Service", "tregov") else {
        return Vec::new();
    };
    index
        .workspaces
        .iter()
        .filter(|w| attr_string(w, "status").as_deref() != Some("terminated"))
        .filter_map(|w| {
            let verdict = decider.decide(&service, "operateWorkspace", &w.uid());
            verdict.denies().then(|| (w.uid(), verdict))
        })
        .collect()
}

/// The set of retired workspaces, for counting owners.
pub(super) fn retired_set(retired: &[(EntityUid, Arc<Verdict>)]) -> FastSet<EntityUid> {
    retired.iter().map(|(uid, _)| uid.clone()).collect()
}

/// Stops every running retired workspace.
pub(super) fn plan_stops(
    inputs: &Inputs,
    retired: &[(EntityUid, Arc<Verdict>)],
    items: &mut Vec<PlanItem>,
) {
    for (uid, verdict) in retired {
        let Some(w) = inputs.graph.entity(uid) else {
            continue;
        };
        let Some(change) = stop_change(&w, inputs.settings) else {
            continue;
        };
        items.push(item(
            change,
            format!(
                "workspace `{}` may no longer operate ({})",
                uid.id().unescaped(),
                verdict.reasons().join(", ")
            ),
            vec![verdict.justification()],
        ));
    }
}

/// Stopping a workspace that is running, when it names what to stop.
pub(super) fn stop_change(
    w: &cedar_policy::Entity,
    settings: &super::PlanSettings,
) -> Option<Change> {
    let status = attr_string(w, "status").unwrap_or_default();
    if !matches!(status.as_str(), "running" | "pending" | "inservice") {
        return None;
    }
    Some(Change::StopWorkspace {
        account: settings.account_of(&attr_uid(w, "project")?),
        workspace: w.uid().id().unescaped().to_string(),
        workspace_kind: attr_string(w, "kind")?,
        instance_id: attr_string(w, "instanceId")?,
    })
}

/// One warning per stored date within the warning window ahead of the plan's `now`, sent
/// once (remembered under its mark).
pub(super) fn plan_expiry_warnings(
    inputs: &Inputs,
    dated: &[(EntityUid, i64)],
    warnings: &mut Vec<String>,
    items: &mut Vec<PlanItem>,
) {
    // A break-glass grant's end is announced when it closes (see `breakglass`).
    let dated: Vec<&(EntityUid, i64)> = dated
        .iter()
        .filter(|(uid, _)| !crate::entities::is_type(uid, crate::breakglass::GRANT))
        .collect();
    if dated.is_empty() {
        return;
    }
    let Some(topic) = &inputs.settings.expiry_topic else {
        warnings.push(format!(
            "{} stored date(s) pass within the warning window but no `expiry_topic` is set: no warning goes out",
            dated.len()
        ));
        return;
    };
    let account = topic.split(':').nth(4).unwrap_or_default().to_string();
    for (uid, at) in dated {
        let mark = format!("expiry-warning/{uid}/{at}");
        if inputs.actual.marks.contains(&mark) {
            continue;
        }
        let when = crate::clock::datetime_text(*at);
        items.push(item(
            Change::Notify {
                account: account.clone(),
                topic_arn: topic.clone(),
                subject: format!("TRE: a date of {uid} passes at {when}"),
                message: format!(
                    "{uid} holds a date, {when}, that is now within the warning window. \
                     Access, workspaces or exemptions that rest on it end then unless it is extended."
                ),
                mark,
            },
            format!("`{uid}` holds a date ({when}) within the warning window"),
            Vec::new(),
        ));
    }
}
