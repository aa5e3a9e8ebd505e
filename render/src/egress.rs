//! Egress requests as the API answers them: one line per request, its files and its
//! history from the decision log, a download's URLs.

use serde_json::Value;

use crate::line;

/// A string field (or, for a `/`-path, a nested one), `-` when absent.
fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    let found = if field.starts_with('/') {
        v.pointer(field)
    } else {
        v.get(field)
    };
    found.and_then(Value::as_str).unwrap_or("-")
}

/// The elements of an array field (none when absent).
fn list<'a>(v: &'a Value, field: &str) -> impl Iterator<Item = &'a Value> {
    v.get(field).and_then(Value::as_array).into_iter().flatten()
}

fn summary(r: &Value) -> String {
    let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
    let pending = r
        .get("pending")
        .and_then(Value::as_str)
        .map(|p| format!(" (pending: {p})"))
        .unwrap_or_default();
    let step = match s("status").as_str() {
        "IN_REVIEW" => {
            let idx = r.get("currentStep").and_then(Value::as_u64).unwrap_or(1) as usize;
            let role = r
                .pointer(&format!("/steps/{}", idx.saturating_sub(1)))
                .and_then(Value::as_str)
                .unwrap_or("-");
            format!(" step {idx} ({role})")
        }
        _ => String::new(),
    };
    format!(
        "{}  v{}  {}{step}{pending}  workspace {}  requester {}  {} file(s)  downloads {}/{}",
        s("id"),
        r.get("version").and_then(Value::as_i64).unwrap_or(1),
        s("status"),
        s("workspace"),
        s("requester"),
        r.get("objects")
            .and_then(Value::as_array)
            .map_or(0, Vec::len),
        r.get("downloadCount").and_then(Value::as_i64).unwrap_or(0),
        r.get("downloadLimit").and_then(Value::as_i64).unwrap_or(0),
    )
}

/// What an API answer is, for showing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `{requests: [...]}`
    List,
    /// `{request, history}`
    Show,
    /// `{request, download, downloadsLeft, expiresInSeconds, files}`
    Download,
    /// One request.
    Request,
}

/// An egress API answer as text.
pub fn answer_text(kind: Answer, answer: &Value) -> String {
    let mut out = String::new();
    match kind {
        Answer::List => {
            let list = answer
                .get("requests")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if list.is_empty() {
                line!(out, "no egress requests");
            }
            for r in &list {
                line!(out, "{}", summary(r));
            }
        }
        Answer::Show => {
            let request = answer.get("request").cloned().unwrap_or(Value::Null);
            line!(out, "{}", summary(&request));
            for o in list(&request, "objects") {
                line!(
                    out,
                    "  file {}  version {}  {} bytes",
                    text(o, "key"),
                    text(o, "versionId"),
                    o.get("size").and_then(Value::as_i64).unwrap_or(0)
                );
            }
            line!(out, "history (decision log):");
            for h in list(answer, "history") {
                let seq = h.get("seq").and_then(Value::as_u64).unwrap_or(0);
                let time = text(h, "time");
                match h.get("kind").and_then(Value::as_str) {
                    Some("decision") => line!(
                        out,
                        "  #{seq} {time}  decision {} {} by {}: {} ({})",
                        text(h, "/request/action"),
                        text(h, "/request/resource"),
                        text(h, "/request/principal"),
                        text(h, "decision"),
                        h.get("reasons")
                            .and_then(Value::as_array)
                            .map(|r| r
                                .iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(", "))
                            .filter(|r| !r.is_empty())
                            .unwrap_or_else(|| "no policy permits it".into())
                    ),
                    _ => line!(
                        out,
                        "  #{seq} {time}  {} by {} -> {}{}",
                        text(h, "event"),
                        text(h, "actor"),
                        text(h, "status"),
                        h.get("reason")
                            .and_then(Value::as_str)
                            .map(|r| format!("  reason: {r}"))
                            .unwrap_or_default()
                    ),
                }
            }
        }
        Answer::Download => {
            line!(
                out,
                "download {} of request {} ({} left); URLs expire in {} s:",
                answer.get("download").and_then(Value::as_i64).unwrap_or(0),
                text(answer, "request"),
                answer
                    .get("downloadsLeft")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
                answer
                    .get("expiresInSeconds")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
            );
            for f in list(answer, "files") {
                line!(out, "  {}\n    {}", text(f, "key"), text(f, "url"));
            }
        }
        Answer::Request => line!(out, "{}", summary(answer)),
    }
    out
}
