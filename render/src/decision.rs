//! Decisions and their explanations: which policies made them, and what would have to
//! change.

use serde_json::{json, Value};
use tregov_engine::decide::DecisionOutcome;
use tregov_engine::explain::{Explanation, PolicyExplanation};
use tregov_engine::{Decision, PolicyBundle};

use crate::{line, short_path};

/// The JSON every decision command prints: `decision`, `reasons`, `errors`, and extras.
pub fn decision_json(outcome: &DecisionOutcome, bundle: &PolicyBundle) -> Value {
    json!({
        "decision": outcome.decision.to_string(),
        "reasons": outcome.reasons,
        "errors": outcome.errors,
        "policySetVersion": outcome.policy_version,
        "determining": outcome.determining(bundle),
        "logSeq": outcome.log_seq,
    })
}

pub fn decision_text(outcome: &DecisionOutcome, bundle: &PolicyBundle) -> String {
    let mut out = String::new();
    line!(out, "decision: {}", outcome.decision);
    for m in outcome.determining(bundle) {
        line!(
            out,
            "  {} `{}` ({}:{})",
            if m.effect == "forbid" {
                "forbidden by"
            } else {
                "permitted by"
            },
            m.id,
            short_path(&m.file),
            m.line
        );
    }
    if outcome.decision == tregov_engine::Decision::Deny && outcome.reasons.is_empty() {
        line!(out, "  no permit applied");
    }
    for e in &outcome.errors {
        line!(out, "  error in `{}`: {}", e.policy, e.message);
    }
    line!(out, "policy set: {}", &outcome.policy_version);
    if let Some(seq) = outcome.log_seq {
        line!(out, "logged as record {seq}");
    }
    out
}

pub fn explanation_json(
    outcome: &DecisionOutcome,
    expl: &Explanation,
    bundle: &PolicyBundle,
) -> Value {
    let mut v = decision_json(outcome, bundle);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("summary".into(), json!(expl.summary));
        obj.insert("permits".into(), json!(expl.permits));
        obj.insert("forbids".into(), json!(expl.forbids));
    }
    v
}

pub fn explanation_text(outcome: &DecisionOutcome, expl: &Explanation) -> String {
    let mut out = String::new();
    line!(out, "decision: {}", outcome.decision);
    line!(out, "{}", expl.summary);
    for e in &outcome.errors {
        line!(out, "  error in `{}`: {}", e.policy, e.message);
    }
    let section = |out: &mut String, title: &str, list: &[PolicyExplanation]| {
        if list.is_empty() {
            return;
        }
        line!(out);
        line!(out, "{title}:");
        for p in list {
            let status = if p.applied {
                "applied"
            } else if p.error.is_some() {
                "errored"
            } else {
                "did not apply"
            };
            let link = p
                .template
                .as_ref()
                .map(|t| format!(", a link of template `{t}`"))
                .unwrap_or_default();
            line!(
                out,
                "  {} `{}` ({}:{}{link}) {status}",
                if p.applied { "●" } else { "○" },
                p.id,
                short_path(&p.file),
                p.line
            );
            if let Some(d) = &p.description {
                line!(out, "      {d}");
            }
            for c in &p.failed_conditions {
                line!(out, "      - {}", c.needed);
                for o in &c.operands {
                    line!(out, "          {} = {}", o.expression, o.value);
                }
            }
        }
    };
    section(&mut out, "permits in scope", &expl.permits);
    section(&mut out, "forbids in scope", &expl.forbids);
    line!(out);
    line!(out, "policy set: {}", outcome.policy_version);
    if let Some(seq) = outcome.log_seq {
        line!(out, "logged as record {seq}");
    }
    out
}

/// A decision in a few indented lines, for the demo: the policies that applied, and the
/// conditions of the permits that did not.
pub fn indented_explanation_text(outcome: &DecisionOutcome, expl: &Explanation) -> String {
    let mut out = String::new();
    line!(out, "   → {}  {}", outcome.decision, expl.summary);
    let shown = expl
        .permits
        .iter()
        .chain(expl.forbids.iter())
        .filter(|p| p.applied || !p.failed_conditions.is_empty());
    for p in shown {
        if p.applied {
            line!(
                out,
                "     ● {} `{}` ({}:{})",
                p.effect,
                p.id,
                short_path(&p.file),
                p.line
            );
        } else if p.effect == "permit" && outcome.decision == Decision::Deny {
            line!(out, "     ○ permit `{}` did not apply:", p.id);
            for c in &p.failed_conditions {
                let values = c
                    .operands
                    .iter()
                    .map(|o| format!("{} = {}", o.expression, o.value))
                    .collect::<Vec<_>>()
                    .join(", ");
                line!(
                    out,
                    "         {}{}",
                    c.needed,
                    if values.is_empty() {
                        String::new()
                    } else {
                        format!(" ({values})")
                    }
                );
            }
        }
    }
    if let Some(seq) = outcome.log_seq {
        line!(out, "     logged as record {seq}");
    }
    out
}
