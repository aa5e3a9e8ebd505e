//! Deciding a parked change (a revocation a limit held back, every change under
//! `--require-approval`, a smaller listing): a Cedar decision like every other
//! (`approvePlanItem`, `rejectPlanItem` in `policies/approvals.cedar`), made for the
//! caller's authenticated identity and logged with it. The default policies let active IT
//! admins decide, never about a change to their own access.

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::decide::{Engine, RequestSpec};
use crate::entities::uid_from_parts;
use crate::plan::PlanItem;
use crate::workflow::{denied, WorkflowError};

/// A decided parked change.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decided {
    pub item: String,
    pub kind: String,
    /// `approved` or `rejected`.
    pub status: String,
    pub decided_by: String,
    /// The decision that allowed it, in the decision log.
    pub log_seq: Option<u64>,
}

/// `caller` approves (or rejects) the pending parked item `item`.
pub fn decide_parked(
    engine: &Engine,
    caller: &str,
    item: &str,
    approve: bool,
    reason: Option<&str>,
) -> Result<Decided, WorkflowError> {
    let store = engine
        .store()
        .ok_or_else(|| WorkflowError::Invalid("approvals need the entity store".into()))?;
    let (status, body) = store
        .parked_item(item)?
        .ok_or_else(|| WorkflowError::NotFound(format!("parked item `{item}`")))?;
    if status != "pending" {
        return Err(WorkflowError::Conflict(format!(
            "parked item `{item}` is {status}, not waiting for a decision"
        )));
    }
    let kind = body["change"]["kind"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let action = if approve {
        "approvePlanItem"
    } else {
        "rejectPlanItem"
    };
    let spec = RequestSpec {
        principal: uid_from_parts("Tre::User", caller)?.to_string(),
        action: uid_from_parts("Tre::Action", action)?.to_string(),
        resource: uid_from_parts("Tre::PlanItem", item)?.to_string(),
        context: json!({}),
    };
    let (_, outcome) = engine.decide_with(spec, &[item_entity(item, &body)], Some("approval"))?;
    if !outcome.allows() {
        let verb = if approve { "approve" } else { "reject" };
        return Err(denied(
            &format!("`{caller}` may not {verb} `{item}`"),
            outcome,
        ));
    }
    let decided = if approve { "approved" } else { "rejected" };
    if !store.decide_parked(item, decided, caller, reason)? {
        return Err(WorkflowError::Conflict(format!(
            "parked item `{item}` was decided by someone else meanwhile"
        )));
    }
    if let Some(log) = engine.log() {
        log.append(vec![approval_record(
            item,
            &kind,
            decided,
            caller,
            reason,
            outcome.log_seq,
        )])?;
    }
    Ok(Decided {
        item: item.to_string(),
        kind,
        status: decided.to_string(),
        decided_by: caller.to_string(),
        log_seq: outcome.log_seq,
    })
}

/// The parked item as Cedar sees it: its kind, what it changes, whose access it alters.
fn item_entity(item: &str, body: &Value) -> Value {
    let kind = body["change"]["kind"].as_str().unwrap_or_default();
    let target = serde_json::from_value::<PlanItem>(body.clone())
        .map(|p| p.change.target())
        .unwrap_or_else(|_| {
            let change = &body["change"];
            change["collector"]
                .as_str()
                .or_else(|| change["target"].as_str())
                .unwrap_or_default()
                .to_string()
        });
    let affects: Vec<Value> = body["affects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|u| json!({"__entity": {"type": "Tre::User", "id": u}}))
        .collect();
    json!({
        "uid": {"type": "Tre::PlanItem", "id": item},
        "attrs": {"kind": kind, "target": target, "affects": affects},
        "parents": [],
    })
}

fn approval_record(
    item: &str,
    kind: &str,
    result: &str,
    by: &str,
    reason: Option<&str>,
    decision: Option<u64>,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("kind".into(), json!("approval"));
    m.insert("item".into(), json!(item));
    m.insert("itemKind".into(), json!(kind));
    m.insert("result".into(), json!(result));
    m.insert("by".into(), json!(by));
    if let Some(r) = reason {
        m.insert("reason".into(), json!(r));
    }
    if let Some(seq) = decision {
        m.insert("decisionSeq".into(), json!(seq));
    }
    m
}
