//! Why a workflow transition (an egress step, an approval) did not happen: the same few
//! answers for every workflow, so the API maps them to one set of HTTP statuses.

use crate::decide::DecisionOutcome;
use crate::error::EngineError;

/// Why a transition did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("no egress request `{0}`")]
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
