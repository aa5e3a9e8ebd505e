//! Replaying a logged decision: the same request, re-decided by Cedar with the policy set
//! and the entity slice the log kept for it, to prove the record says what was decided, and
//! what today's policies would say instead.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::decide::{
    outcome_from_response, DecisionOutcome, ParsedRequest, RequestSpec, IS_AUTHORIZED_KIND,
};
use crate::entities::entities_from_slice;
use crate::error::{EngineError, Result};
use crate::explain::{explain, Explanation};
use crate::log::DecisionLog;
use crate::policies::PolicyBundle;

/// A logged decision decided again.
pub struct Replay {
    pub seq: u64,
    pub spec: RequestSpec,
    /// When it was logged.
    pub time: String,
    /// The policy set it was made with, as stored in the log.
    pub bundle: PolicyBundle,
    pub outcome: DecisionOutcome,
    pub explanation: Explanation,
    /// How the replay differs from the record; empty when it reproduces.
    pub differences: Vec<String>,
    /// What `current` policies decide over the same slice, if they can read it.
    pub current: Option<DecisionOutcome>,
}

impl Replay {
    pub fn reproduces(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Re-decides the decision logged as `seq`, and with `current` too, if given.
pub fn replay(log: &DecisionLog, seq: u64, current: Option<&PolicyBundle>) -> Result<Replay> {
    let record = log.record(seq)?;
    let fails_closed = match record.get("kind").and_then(Value::as_str) {
        Some("decision") => false,
        Some(IS_AUTHORIZED_KIND) => true,
        _ => {
            return Err(EngineError::Request(format!(
                "record {seq} is not a decision"
            )))
        }
    };
    let version = record
        .get("policyVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| EngineError::Request(format!("record {seq} has no policy version")))?;
    let stored = log.load_policies(version)?;
    let bundle = PolicyBundle::from_sources(stored.schema.clone(), stored.sources.clone())?;
    let spec: RequestSpec = serde_json::from_value(
        record.get("request").cloned().unwrap_or(Value::Null),
    )
    .map_err(|e| EngineError::Request(format!("record {seq} has no readable request: {e}")))?;
    let slice: Vec<Value> = record
        .get("slice")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let entities = entities_from_slice(&slice, bundle.schema.as_ref())?;
    let request = ParsedRequest::parse(spec.clone(), &bundle)?;
    let mut outcome = decide(&request, &bundle, &entities);
    if fails_closed {
        outcome = outcome.fail_closed();
    }
    outcome.log_seq = Some(seq);
    let differences = differences(&record, &outcome);
    let explanation = explain(&outcome, &request.request, &entities, &bundle);
    let current = current.and_then(|current| {
        let req = ParsedRequest::parse(spec.clone(), current).ok()?;
        let ents = entities_from_slice(&slice, current.schema.as_ref()).ok()?;
        let outcome = decide(&req, current, &ents);
        Some(if fails_closed {
            outcome.fail_closed()
        } else {
            outcome
        })
    });
    Ok(Replay {
        seq,
        spec,
        time: record
            .get("time")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string(),
        bundle,
        outcome,
        explanation,
        differences,
        current,
    })
}

fn decide(
    request: &ParsedRequest,
    bundle: &PolicyBundle,
    entities: &cedar_policy::Entities,
) -> DecisionOutcome {
    let response =
        cedar_policy::Authorizer::new().is_authorized(&request.request, &bundle.set, entities);
    outcome_from_response(&response, bundle)
}

/// Where the replayed outcome differs from the logged one: decision, reasons, erroring
/// policies.
fn differences(record: &Value, outcome: &DecisionOutcome) -> Vec<String> {
    let strings = |v: Option<&Value>, field: Option<&str>| -> BTreeSet<String> {
        v.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| match field {
                Some(f) => e.get(f).and_then(Value::as_str),
                None => e.as_str(),
            })
            .map(String::from)
            .collect()
    };
    let mut out = Vec::new();
    let logged = record.get("decision").and_then(Value::as_str).unwrap_or("");
    if logged != outcome.decision.to_string() {
        out.push(format!(
            "decision was {logged}, replays as {}",
            outcome.decision
        ));
    }
    let logged_reasons = strings(record.get("reasons"), None);
    let reasons: BTreeSet<String> = outcome.reasons.iter().cloned().collect();
    if logged_reasons != reasons {
        out.push(format!(
            "reasons were {logged_reasons:?}, replay gives {reasons:?}"
        ));
    }
    let logged_errors = strings(record.get("errors"), Some("policy"));
    let errors: BTreeSet<String> = outcome.errors.iter().map(|e| e.policy.clone()).collect();
    if logged_errors != errors {
        out.push(format!(
            "errors were {logged_errors:?}, replay gives {errors:?}"
        ));
    }
    out
}
