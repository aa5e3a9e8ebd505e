//! Plans and gated plans: each change with the decisions behind it, and what the safety
//! gate holds back.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use tregov_engine::collect::Source;
use tregov_engine::plan::{Change, Plan, PlanItem};
use tregov_engine::safety::{revocation_trip, Gated, Limits};
use tregov_engine::store::ParkedItem;

use crate::{line, short_version};

/// A plan as JSON, with what the safety gate would hold back if it were applied now.
pub fn plan_json(plan: &Plan, degraded: &BTreeMap<Source, String>, limits: &Limits) -> Value {
    let trip = trip_of(plan, limits);
    json!({
        "policyVersion": plan.policy_version,
        "items": plan.items,
        "warnings": plan.warnings,
        "decisions": plan.decisions,
        "governedGrants": plan.governed_grants,
        "degraded": degraded,
        "trip": trip.as_ref().map(|t| json!({"limit": t.reason, "message": t.describe(limits)})),
    })
}

fn trip_of(plan: &Plan, limits: &Limits) -> Option<tregov_engine::safety::Trip> {
    let items: Vec<&PlanItem> = plan.items.iter().collect();
    revocation_trip(&items, plan.governed_grants, limits)
}

/// A plan as text, with what the safety gate would hold back if it were applied now.
pub fn plan_text(plan: &Plan, degraded: &BTreeMap<Source, String>, limits: &Limits) -> String {
    let mut out = String::new();
    let version = short_version(&plan.policy_version);
    if plan.items.is_empty() {
        line!(
            out,
            "no changes: AWS matches what the policies allow ({} decision(s), policies {version})",
            plan.decisions
        );
    } else {
        line!(
            out,
            "{} change(s) ({} decision(s), policies {version}):",
            plan.items.len(),
            plan.decisions
        );
    }
    for item in &plan.items {
        item_text(&mut out, item);
    }
    for w in &plan.warnings {
        line!(out, "  warning: {w}");
    }
    for (source, why) in degraded {
        line!(out, "  held: changes resting on `{source}` wait: it {why}");
    }
    if let Some(t) = trip_of(plan, limits) {
        line!(
            out,
            "  safety: {}; applying would park the revocations for approval",
            t.describe(limits)
        );
    }
    out
}

fn item_text(out: &mut String, item: &PlanItem) {
    let detail = match &item.change {
        Change::LfGrant { permissions, .. } => format!(": {}", permissions.join(", ")),
        Change::LfRevoke {
            permissions,
            permissions_with_grant_option,
            ..
        } => {
            let mut all = permissions.clone();
            all.extend(
                permissions_with_grant_option
                    .iter()
                    .map(|p| format!("{p} (grantable)")),
            );
            format!(": {}", all.join(", "))
        }
        _ => String::new(),
    };
    line!(
        out,
        "  [{}] {:<18} {}{detail}",
        item.id,
        item.change.verb(),
        item.change.target()
    );
    line!(out, "      because {}", item.reason);
    for j in &item.decisions {
        let seq = j
            .log_seq
            .map(|s| format!(" (tregov why --replay {s})"))
            .unwrap_or_default();
        let reasons = if j.reasons.is_empty() {
            "no policy applies".to_string()
        } else {
            j.reasons.join(", ")
        };
        line!(
            out,
            "      {} {} {} {}: {reasons}{seq}",
            j.decision,
            j.request.principal,
            j.request.action,
            j.request.resource
        );
    }
}

/// What will be applied, parked and deferred, item by item.
pub fn gated_text(gated: &Gated) -> String {
    let mut out = String::new();
    line!(out, "{} change(s) to apply:", gated.apply.len());
    for item in &gated.apply {
        item_text(&mut out, item);
    }
    held_text(&mut out, gated);
    out
}

/// Only what is held back: after an apply, what was applied is in the results.
pub fn held_back_text(gated: &Gated, limits: &Limits) -> String {
    let mut out = String::new();
    if let Some(t) = &gated.trip {
        line!(out, "safety: {}", t.describe(limits));
    }
    held_text(&mut out, gated);
    out
}

fn held_text(out: &mut String, gated: &Gated) {
    for (item, why) in &gated.parked {
        line!(
            out,
            "  parked [{}] {} {}: {why} (tregov approve {})",
            item.id,
            item.change.verb(),
            item.change.target(),
            item.id
        );
    }
    for (item, why) in &gated.deferred {
        line!(
            out,
            "  deferred [{}] {} {}: {why}",
            item.id,
            item.change.verb(),
            item.change.target()
        );
    }
}

pub fn gated_json(gated: &Gated) -> Value {
    let held = |list: &[(PlanItem, String)]| {
        list.iter()
            .map(|(item, why)| json!({"item": item, "why": why}))
            .collect::<Vec<_>>()
    };
    json!({
        "apply": gated.apply,
        "parked": held(&gated.parked),
        "deferred": held(&gated.deferred),
        "trip": gated.trip,
    })
}

/// A parked change on one line: its id, status, kind, why, and who decided it.
pub fn parked_line(p: &ParkedItem) -> String {
    format!(
        "[{}] {:<8} {} because {}{}{}",
        p.item,
        p.status,
        p.body["change"]["kind"].as_str().unwrap_or_default(),
        p.body["reason"].as_str().unwrap_or_default(),
        p.decided_by
            .as_ref()
            .map(|b| format!(" (decided by {b})"))
            .unwrap_or_default(),
        p.note
            .as_ref()
            .map(|n| format!(": {n}"))
            .unwrap_or_default(),
    )
}
