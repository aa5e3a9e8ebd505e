//! What the collectors did: one run, and every collector's last run (`tregov status`).

use serde_json::{json, Value};
use tregov_engine::collect::RunReport;
use tregov_engine::events::{CollectorStatus, FileState, StoredEvent, Verification};

use crate::line;

pub fn run_text(report: &RunReport) -> String {
    let mut out = String::new();
    line!(
        out,
        "{}: {} file(s) read, {} item(s) written ({} event(s) read), {} error(s){}",
        report.collector,
        report.files,
        report.items,
        report.events_read,
        report.errors.len(),
        if report.complete { "" } else { ", incomplete" }
    );
    for e in &report.errors {
        line!(out, "  error: {e}");
    }
    if let Some(held) = &report.held {
        line!(out, "  held: {held}");
    }
    out
}

/// `tregov status --output json`.
pub fn status_json(statuses: &[CollectorStatus], events: u64, trail: &Verification) -> Value {
    json!({ "collectors": statuses, "events": events, "trail": trail })
}

pub fn status_text(statuses: &[CollectorStatus], events: u64, trail: &Verification) -> String {
    let mut out = String::new();
    line!(out, "events stored: {events}");
    out.push_str(&trail_text(trail));
    for s in statuses {
        line!(
            out,
            "{}: last run {}, {} item(s), {} error(s){}",
            s.collector,
            s.last_run.as_deref().unwrap_or("never"),
            s.items,
            s.errors.len(),
            if s.complete {
                ""
            } else {
                ", incomplete: its changes wait"
            }
        );
        for e in &s.errors {
            line!(out, "  error: {e}");
        }
        if let Some(held) = &s.held {
            line!(out, "  held: {held}");
        }
    }
    if statuses.is_empty() {
        line!(out, "no collector has run yet (`tregov collect --once`)");
    }
    out
}

/// Facts in doubt that tregov reported and does not act on as they claim: tag drift,
/// unregistered workspaces, roles outside their project, quarantined datasets, widening
/// label changes waiting for a data manager.
pub fn findings_text(findings: &[tregov_engine::store::Observed]) -> String {
    let mut out = String::new();
    if findings.is_empty() {
        return out;
    }
    line!(out, "findings: {}", findings.len());
    for f in findings {
        let message = f.body["message"].as_str().unwrap_or_default();
        line!(out, "  {}: {message}", f.kind);
    }
    out
}

/// Where the trail's integrity stands: each chain's verified-through time, the log files by
/// state, and every anomaly found.
pub fn trail_text(v: &Verification) -> String {
    let mut out = String::new();
    let f = &v.files;
    if v.chains.is_empty() && f.verified + f.altered + f.missing == 0 {
        if f.unverified > 0 {
            line!(
                out,
                "cloudtrail: no digest files read: no log file is verified"
            );
        }
        return out;
    }
    line!(
        out,
        "cloudtrail log files: {} verified, {} altered, {} missing, {} unverified",
        f.verified,
        f.altered,
        f.missing,
        f.unverified
    );
    for c in &v.chains {
        line!(
            out,
            "cloudtrail {} {} (trail {}): verified through {}, {} digest(s)",
            c.account,
            c.region,
            c.trail,
            c.verified_through.as_deref().unwrap_or("nothing yet"),
            c.digests
        );
        if let Some(problem) = &c.problem {
            line!(out, "  stopped at {problem}");
        }
    }
    for a in &v.anomalies {
        line!(
            out,
            "  {}: {} {} {}: {} (first seen {})",
            if a.kind == "account-mismatch" {
                "anomaly"
            } else {
                "TAMPERING"
            },
            a.kind,
            a.account,
            a.key,
            a.detail,
            a.first_seen
        );
    }
    out
}

/// One event for `tregov events list`; events from files not verified are marked.
pub fn event_line(e: &StoredEvent, state: FileState) -> String {
    let mark = match state {
        FileState::Verified => String::new(),
        other => format!(" [{other}]"),
    };
    format!(
        "{} {} {}:{} {} {}{mark}",
        e.event_time, e.account, e.event_source, e.event_name, e.principal, e.event_id
    )
}

/// One event for `tregov events list --output json`: the stored fields, whether its file is
/// verified, and how it compared.
pub fn event_json(e: &StoredEvent, state: FileState) -> Value {
    let mut v = json!(e);
    if let Some(o) = v.as_object_mut() {
        o.insert("verified".into(), json!(state == FileState::Verified));
        o.insert("verification".into(), json!(state));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> StoredEvent {
        StoredEvent {
            event_id: "e1".into(),
            event_time: "2026-11-20T10:00:00Z".into(),
            event_ts: None,
            event_source: "s3.amazonaws.com".into(),
            event_name: "GetObject".into(),
            principal: "p".into(),
            account: "111111111111".into(),
            region: "eu-west-2".into(),
            source_file: "f".into(),
            observation: None,
            target: None,
            record_index: 0,
            raw: None,
        }
    }

    #[test]
    fn an_event_from_a_file_not_verified_is_marked() {
        assert!(!event_line(&event(), FileState::Verified).contains('['));
        assert!(event_line(&event(), FileState::Altered).ends_with(" [altered]"));
        let v = event_json(&event(), FileState::Unverified);
        assert_eq!(v["verified"], json!(false));
        assert_eq!(v["verification"], json!("unverified"));
    }
}
