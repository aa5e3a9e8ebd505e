//! The decision log: its verification, a record on one line, and a replayed decision.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use tregov_engine::anchor::AnchorReport;
use tregov_engine::log::VerifyReport;
use tregov_engine::replay::Replay;

use crate::decision::{explanation_json, explanation_text};
use crate::line;

pub fn verify_text(report: &VerifyReport) -> String {
    let mut out = String::new();
    if let Some(bad) = &report.first_bad {
        line!(
            out,
            "log verification FAILED after {} good records",
            report.records
        );
        let place = if bad.segment.is_empty() {
            String::new()
        } else {
            format!(" ({} line {})", bad.segment, bad.line)
        };
        line!(out, "first bad record: {}{place}: {}", bad.seq, bad.problem);
        return out;
    }
    let head = report
        .head
        .as_ref()
        .map(|h| format!(", head {} {}", h.seq, h.hash))
        .unwrap_or_default();
    line!(
        out,
        "ok: {} records, hash chain intact{head}",
        report.records
    );
    if report.unanchored_tail > 0 {
        line!(
            out,
            "note: {} record(s) after HEAD (appended in the last moments by a running server, or a crash between append and HEAD update); they chain correctly",
            report.unanchored_tail
        );
    }
    out
}

/// The local log checked against its anchors: each problem, or the newest good anchor.
pub fn anchors_text(report: &AnchorReport) -> String {
    let mut out = String::new();
    if report.ok {
        match report.newest_good {
            Some(seq) => line!(
                out,
                "ok: {} anchor(s) verified; records 1..{seq} are as they were signed",
                report.anchors
            ),
            None => line!(
                out,
                "no anchors yet: only the hash chain vouches for the log"
            ),
        }
        return out;
    }
    line!(
        out,
        "anchor check FAILED: {} problem(s) in {} anchor(s)",
        report.problems.len(),
        report.anchors
    );
    for p in &report.problems {
        line!(out, "  {}: {}", p.anchor, p.problem);
    }
    out
}

/// A record on one line: sequence, time, kind, the request and its decision.
pub fn record_line(r: &Value) -> String {
    let field = |ptr: &str| r.pointer(ptr).and_then(Value::as_str).unwrap_or("");
    let reasons: BTreeSet<&str> = r
        .get("reasons")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    format!(
        "{:>6} {} {} {} {} {} -> {} {}",
        r.get("seq").and_then(Value::as_u64).unwrap_or(0),
        field("/time"),
        field("/kind"),
        field("/request/principal"),
        field("/request/action"),
        field("/request/resource"),
        field("/decision"),
        reasons.into_iter().collect::<Vec<_>>().join(",")
    )
}

pub fn replay_json(replay: &Replay) -> Value {
    let mut v = explanation_json(&replay.outcome, &replay.explanation, &replay.bundle);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("replayOf".into(), json!(replay.seq));
        obj.insert("reproduces".into(), json!(replay.reproduces()));
        obj.insert("differences".into(), json!(replay.differences));
        obj.insert("request".into(), json!(replay.spec));
        if let Some(c) = &replay.current {
            obj.insert(
                "currentPolicies".into(),
                json!({"policySetVersion": c.policy_version, "decision": c.decision.to_string(), "reasons": c.reasons}),
            );
        }
    }
    v
}

pub fn replay_text(replay: &Replay) -> String {
    let mut out = String::new();
    let spec = &replay.spec;
    line!(
        out,
        "replaying record {}: {} {} {}",
        replay.seq,
        spec.principal,
        spec.action,
        spec.resource
    );
    line!(
        out,
        "logged at {} under policy set {}",
        replay.time,
        replay.bundle.version
    );
    if replay.reproduces() {
        line!(out, "reproduces: yes ({} again)", replay.outcome.decision);
    } else {
        line!(out, "reproduces: NO");
        for d in &replay.differences {
            line!(out, "  {d}");
        }
    }
    line!(out);
    out.push_str(&explanation_text(&replay.outcome, &replay.explanation));
    if let Some(c) = &replay.current {
        line!(out);
        if c.policy_version == replay.outcome.policy_version {
            line!(out, "the current policy set is the same version");
        } else {
            let by = if c.reasons.is_empty() {
                String::new()
            } else {
                format!(" by {}", c.reasons.join(", "))
            };
            line!(
                out,
                "with the current policy set ({}): {}{by}",
                c.policy_version,
                c.decision
            );
        }
    }
    out
}
