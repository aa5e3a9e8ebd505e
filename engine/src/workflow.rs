//! Why a workflow transition (an egress step, an approval) did not happen: the same few
//! answers for every workflow, so the API maps them to one set of HTTP statuses.

use crate::decide::DecisionOutcome;
use crate::error::EngineError;

/// Why a transition did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("no {0}")]
    NotFound(String),
    /// The policies said no; the decision is in the log.
    #[error("denied by policy: {message}")]
    Denied {
        message: String,
        outcome: Box<DecisionOutcome>,
    },
    /// The request is not in a state where this makes sense.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

pub(crate) fn denied(what: &str, outcome: DecisionOutcome) -> WorkflowError {
    let why = if outcome.reasons.is_empty() {
        "no policy permits it".to_string()
    } else {
        format!("determined by {}", outcome.reasons.join(", "))
    };
    let errors = if outcome.errors.is_empty() {
        String::new()
    } else {
        format!(
            "; policy errors: {}",
            outcome
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.policy, e.message))
                .collect::<Vec<_>>()
                .join("; ")
        )
    };
    WorkflowError::Denied {
        message: format!("{what} ({why}{errors})"),
        outcome: Box::new(outcome),
    }
}

/// Writes workflow records (exemptions, review items, break-glass requests and grants) to
/// their store partition, each checked against the schema: the next plan reads them.
pub(crate) fn write_records(
    engine: &crate::decide::Engine,
    partition: &str,
    records: Vec<serde_json::Value>,
) -> crate::error::Result<()> {
    let schema = engine
        .bundle()
        .schema
        .clone()
        .ok_or_else(|| EngineError::Request(format!("`{partition}` records need a schema")))?;
    let upserts = records
        .into_iter()
        .map(|json| {
            let id = json["uid"]["id"].as_str().unwrap_or("?").to_string();
            cedar_policy::Entity::from_json_value(json, Some(&schema))
                .map_err(|e| EngineError::Request(format!("`{id}`: {e}")))
        })
        .collect::<crate::error::Result<Vec<_>>>()?;
    let store = engine.store().ok_or_else(|| {
        EngineError::Request(format!("`{partition}` records need the entity store"))
    })?;
    store.apply(
        &crate::store::StoreBatch {
            upserts,
            partition: partition.into(),
            ..Default::default()
        },
        &schema,
    )?;
    Ok(())
}

/// Asks `action` as user `caller` on `resource` at the governance clock, logged under
/// `origin`; refused (naming `what` and the deciding policies) unless allowed. The log
/// sequence of the decision when it allows.
pub(crate) fn decide_as(
    engine: &crate::decide::Engine,
    caller: &str,
    action: &str,
    resource: &cedar_policy::EntityUid,
    context: serde_json::Value,
    origin: &str,
    what: &str,
) -> Result<Option<u64>, WorkflowError> {
    let spec = engine.at_the_clock(crate::decide::RequestSpec {
        principal: crate::entities::uid_from_parts("Tre::User", caller)?.to_string(),
        action: crate::entities::uid_from_parts("Tre::Action", action)?.to_string(),
        resource: resource.to_string(),
        context,
    });
    let (_, outcome) = engine.decide_with(spec, &[], Some(origin))?;
    if !outcome.allows() {
        return Err(denied(what, outcome));
    }
    Ok(outcome.log_seq)
}
