//! `why`: which policies made a decision, and for every policy whose scope matched the
//! request, which `when`/`unless` condition held it back — what would have to change.
//!
//! Nothing here evaluates Cedar by hand. Each policy is taken apart in its JSON form (the
//! scope alone; each condition; each conjunct of a `when`, each disjunct of an `unless`) and
//! every piece is put back together as a policy of its own and evaluated by Cedar's
//! authorizer against the same request and entities. Values of the two sides of a failed
//! comparison come from Cedar's expression evaluator.

use std::str::FromStr;

use cedar_policy::{
    eval_expression, Authorizer, Entities, Expression, Policy, PolicyId, PolicySet, Request,
};
use serde::Serialize;
use serde_json::{json, Value};

use crate::decide::{Decision, DecisionOutcome};
use crate::policies::PolicyBundle;

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// One sentence: allowed by …, forbidden by …, or no permit applied.
    pub summary: String,
    /// Permits whose scope matched the request, fired or not.
    pub permits: Vec<PolicyExplanation>,
    /// Forbids whose scope matched the request, fired or not.
    pub forbids: Vec<PolicyExplanation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyExplanation {
    pub id: String,
    pub effect: String,
    pub file: String,
    pub line: usize,
    /// For a template-linked policy: the template whose conditions it is (its `file` and
    /// `line` are the template's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The policy applied (its scope matched and every condition held).
    pub applied: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Conditions that did not hold; empty when the policy applied.
    pub failed_conditions: Vec<ConditionCheck>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConditionCheck {
    /// `when` or `unless`.
    pub kind: String,
    /// The condition (one conjunct of a `when`, one disjunct of an `unless`) in Cedar syntax.
    pub condition: String,
    /// What it evaluated to, when it evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The values of both sides, for comparisons.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub operands: Vec<Operand>,
    /// What would have to change, in words.
    pub needed: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Operand {
    pub expression: String,
    pub value: String,
}

/// Explains `outcome`, the decision Cedar made for `request` over `entities`.
pub fn explain(
    outcome: &DecisionOutcome,
    request: &Request,
    entities: &Entities,
    bundle: &PolicyBundle,
) -> Explanation {
    let authorizer = Authorizer::new();
    let mut permits = Vec::new();
    let mut forbids = Vec::new();
    let mut ids: Vec<&PolicyId> = bundle.set.policies().map(|p| p.id()).collect();
    ids.sort_by_key(|id| id.to_string());
    for id in ids {
        let Some(policy) = bundle.set.policy(id) else {
            continue;
        };
        let Ok(est) = policy.to_json() else {
            continue;
        };
        let Some(scope_matched) = piece_applies(&authorizer, request, entities, id, &est, vec![])
        else {
            continue;
        };
        if !scope_matched.applies {
            continue;
        }
        let id_text = id.to_string();
        // A permit overridden by a forbid still applied: its scope and conditions held.
        let conditions = est
            .get("conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let applied = outcome.reasons.contains(&id_text)
            || piece_applies(&authorizer, request, entities, id, &est, conditions)
                .is_some_and(|r| r.applies);
        let error = outcome
            .errors
            .iter()
            .find(|e| e.policy == id_text)
            .map(|e| e.message.clone());
        let failed_conditions = if applied {
            Vec::new()
        } else {
            failed_conditions(&authorizer, request, entities, id, &est)
        };
        let meta = bundle.meta(&id_text);
        let expl = PolicyExplanation {
            id: id.to_string(),
            effect: meta.map(|m| m.effect.clone()).unwrap_or_default(),
            file: meta.map(|m| m.file.clone()).unwrap_or_default(),
            line: meta.map_or(0, |m| m.line),
            template: meta.and_then(|m| m.template.clone()),
            description: meta.and_then(|m| m.annotations.get("description").cloned()),
            applied,
            error,
            failed_conditions,
        };
        match policy.effect() {
            cedar_policy::Effect::Permit => permits.push(expl),
            cedar_policy::Effect::Forbid => forbids.push(expl),
        }
    }
    let summary = summarize(outcome, &permits, &forbids);
    Explanation {
        summary,
        permits,
        forbids,
    }
}

fn summarize(
    outcome: &DecisionOutcome,
    permits: &[PolicyExplanation],
    forbids: &[PolicyExplanation],
) -> String {
    let list = |v: Vec<&str>| {
        v.iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match outcome.decision {
        Decision::Allow => format!(
            "allowed: permitted by {}; no forbid applied{}",
            list(outcome.reasons.iter().map(String::as_str).collect()),
            if forbids.is_empty() {
                String::new()
            } else {
                format!(
                    " ({} forbid(s) in scope, none of whose conditions held)",
                    forbids.len()
                )
            }
        ),
        Decision::Deny => {
            let forbidders: Vec<&str> = forbids
                .iter()
                .filter(|f| f.applied)
                .map(|f| f.id.as_str())
                .collect();
            if !forbidders.is_empty() {
                format!("denied: forbidden by {}", list(forbidders))
            } else {
                let errs = if outcome.errors.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} policy error(s): an erroring policy is skipped, never allows)",
                        outcome.errors.len()
                    )
                };
                if permits.is_empty() {
                    format!("denied: no permit applied; no permit's scope matches this principal, action and resource{errs}")
                } else {
                    format!(
                        "denied: no permit applied; {} permit(s) matched the request's scope but a condition was false{errs}",
                        permits.len()
                    )
                }
            }
        }
    }
}

struct PieceResult {
    applies: bool,
    error: Option<String>,
}

/// Evaluates the policy `est` with its conditions replaced by `conditions`, alone.
fn piece_applies(
    authorizer: &Authorizer,
    request: &Request,
    entities: &Entities,
    id: &PolicyId,
    est: &Value,
    conditions: Vec<Value>,
) -> Option<PieceResult> {
    let mut piece = est.clone();
    let obj = piece.as_object_mut()?;
    obj.insert("conditions".into(), Value::Array(conditions));
    let policy = Policy::from_json(Some(id.clone()), piece).ok()?;
    let set = PolicySet::from_policies([policy]).ok()?;
    let response = authorizer.is_authorized(request, &set, entities);
    let applies = response.diagnostics().reason().any(|r| r == id);
    let error = response.diagnostics().errors().next().map(|e| match e {
        cedar_policy::AuthorizationError::PolicyEvaluationError(pe) => pe.inner().to_string(),
    });
    Some(PieceResult { applies, error })
}

fn failed_conditions(
    authorizer: &Authorizer,
    request: &Request,
    entities: &Entities,
    id: &PolicyId,
    est: &Value,
) -> Vec<ConditionCheck> {
    let mut out = Vec::new();
    let conditions = est
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for cond in conditions {
        let kind = cond.get("kind").and_then(Value::as_str).unwrap_or("when");
        let Some(body) = cond.get("body") else {
            continue;
        };
        // A `when` holds if every conjunct is true; an `unless` holds if every disjunct is false.
        let splitter = if kind == "unless" { "||" } else { "&&" };
        let mut parts = Vec::new();
        split(body, splitter, &mut parts);
        let mut earlier_failed = false;
        for part in parts {
            let single = json!({"kind": kind, "body": part});
            let Some(result) = piece_applies(authorizer, request, entities, id, est, vec![single])
            else {
                continue;
            };
            if result.applies {
                continue;
            }
            // Cedar short-circuits: a part after a failed one (typically guarded by `has`) is
            // never evaluated, so its error is not part of why the policy did not apply.
            if result.error.is_some() && earlier_failed {
                continue;
            }
            earlier_failed = true;
            let text = render(part).unwrap_or_else(|| part.to_string());
            let value = match (&result.error, kind) {
                (Some(_), _) => None,
                (None, "unless") => Some(true),
                (None, _) => Some(false),
            };
            let needed = match (&result.error, kind) {
                (Some(e), _) => format!("`{text}` must evaluate without error ({e})"),
                (None, "unless") => format!("`{text}` would have to be false"),
                (None, _) => format!("`{text}` would have to be true"),
            };
            out.push(ConditionCheck {
                kind: kind.to_string(),
                condition: text,
                value,
                error: result.error,
                operands: operands(part, request, entities),
                needed,
            });
        }
    }
    out
}

fn split<'a>(expr: &'a Value, op: &str, out: &mut Vec<&'a Value>) {
    if let Some(inner) = expr.get(op) {
        if let (Some(l), Some(r)) = (inner.get("left"), inner.get("right")) {
            split(l, op, out);
            split(r, op, out);
            return;
        }
    }
    out.push(expr);
}

const COMPARISONS: &[&str] = &[
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "in",
    "contains",
    "containsAll",
    "containsAny",
];

/// The values of both sides of a comparison, as Cedar evaluates them.
fn operands(expr: &Value, request: &Request, entities: &Entities) -> Vec<Operand> {
    // `!(a == b)` explains through `a == b`.
    let expr = expr.get("!").and_then(|n| n.get("arg")).unwrap_or(expr);
    let Some(obj) = expr.as_object() else {
        return Vec::new();
    };
    let Some((op, inner)) = obj.iter().next() else {
        return Vec::new();
    };
    if obj.len() != 1 || !COMPARISONS.contains(&op.as_str()) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for side in ["left", "right"] {
        let Some(sub) = inner.get(side) else {
            continue;
        };
        let Some(text) = render(sub) else {
            continue;
        };
        // Literals explain themselves.
        if sub.get("Value").is_some() {
            continue;
        }
        let value = match Expression::from_str(&text) {
            Ok(e) => match eval_expression(request, entities, &e) {
                Ok(v) => v.to_string(),
                Err(err) => format!("error: {err}"),
            },
            Err(_) => continue,
        };
        out.push(Operand {
            expression: text,
            value,
        });
    }
    out
}

/// Renders an expression in Cedar syntax, by letting Cedar print a policy made of it.
fn render(expr: &Value) -> Option<String> {
    let est = json!({
        "effect": "permit",
        "principal": {"op": "All"},
        "action": {"op": "All"},
        "resource": {"op": "All"},
        "conditions": [{"kind": "when", "body": expr}],
    });
    let text = Policy::from_json(None, est).ok()?.to_string();
    let start = text.find("when {")? + "when {".len();
    let end = text.rfind('}')?;
    Some(text.get(start..end)?.trim().to_string())
}
