//! What the collectors did: one run, and every collector's last run (`tregov status`).

use tregov_engine::collect::RunReport;
use tregov_engine::events::{CollectorStatus, StoredEvent};

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

pub fn status_text(statuses: &[CollectorStatus], events: u64) -> String {
    let mut out = String::new();
    line!(out, "events stored: {events}");
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

pub fn event_line(e: &StoredEvent) -> String {
    format!(
        "{} {} {}:{} {} {}",
        e.event_time, e.account, e.event_source, e.event_name, e.principal, e.event_id
    )
}
