//! The decisions other apps ask for: answered fail closed and logged as their own kind.
//!
//! Cedar skips a policy that errors, so its Allow may be one an erroring `forbid` would have
//! stopped; egress and the planner deny then, and so does `is-authorized`. The log records
//! the answer given (a Deny, with the errors), under kind `is-authorized` with the caller, so
//! an egress request's history, which shows only its workflow's own decisions, never lists
//! what another app asked about it, and `why --replay` judges the record by the same rule.

use serde_json::Value;
use tregov_engine::decide::{ParsedRequest, IS_AUTHORIZED_KIND};
use tregov_engine::log::LogRecord;
use tregov_engine::{DecisionOutcome, Engine};

/// Where these decisions come from, in the log's `origin`.
const ORIGIN: &str = "api";

/// Decides `requests` for `caller`, fail closed, with each answer's log record (none without
/// a log). The answers may be given only once `logged` has their records' sequence numbers.
pub(crate) fn decide_asked(
    engine: &Engine,
    requests: &[ParsedRequest],
    caller: &str,
) -> (Vec<DecisionOutcome>, Vec<LogRecord>) {
    let outcomes: Vec<DecisionOutcome> = requests
        .iter()
        .map(|r| engine.decide(r).fail_closed())
        .collect();
    if engine.log().is_none() {
        return (outcomes, Vec::new());
    }
    let records = requests
        .iter()
        .zip(&outcomes)
        .map(|(request, outcome)| {
            let mut record = engine.decision_record(request, outcome, ORIGIN);
            record.insert("kind", Value::from(IS_AUTHORIZED_KIND));
            record.insert("caller", Value::from(caller));
            record
        })
        .collect();
    (outcomes, records)
}

/// Gives each answer the sequence number of its durable record.
pub(crate) fn logged(outcomes: &mut [DecisionOutcome], seqs: Vec<u64>, caller: &str) {
    for (outcome, seq) in outcomes.iter_mut().zip(seqs) {
        outcome.log_seq = Some(seq);
    }
    for outcome in outcomes.iter().filter(|o| !o.errors.is_empty()) {
        tracing::warn!(caller, log_seq = ?outcome.log_seq, errors = outcome.errors.len(), "an erroring policy denied an is-authorized ask");
    }
}
