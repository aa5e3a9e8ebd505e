//! Which log records belong to which egress request: an index in the store, caught up from
//! the log incrementally, so a request's history reads only its own records rather than the
//! whole log. The records themselves are always read from the log (the index holds only their
//! sequence numbers), so what a history shows is what the hash chain vouches for.

use std::collections::BTreeSet;

use rusqlite::params;
use serde_json::Value;

use crate::error::{EngineError, Result};
use crate::log::DecisionLog;
use crate::store::Store;

pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS egress_history (
    request TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (request, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS egress_history_indexed (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    through INTEGER NOT NULL
);";

/// The request a record belongs to: a workflow event of it, or one of the workflow's own
/// decisions about it (`origin` is the workflow's: not what other apps asked about it).
fn request_of(record: &Value, origin: &str) -> Option<String> {
    let kind = record.get("kind").and_then(Value::as_str);
    if kind == Some("egress") {
        return record
            .get("request")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    if kind == Some("decision") && record.get("origin").and_then(Value::as_str) == Some(origin) {
        return record
            .pointer("/request/resource")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("Tre::EgressRequest::\""))
            .and_then(|r| r.strip_suffix('"'))
            .map(str::to_string);
    }
    None
}

fn store_err(store: &Store, e: rusqlite::Error) -> EngineError {
    EngineError::Store {
        path: store.path().display().to_string(),
        message: e.to_string(),
    }
}

/// Indexes the records appended since the last catch-up.
fn catch_up(store: &Store, log: &DecisionLog, origin: &str) -> Result<()> {
    let through: i64 = store
        .with_conn(|c| {
            c.query_row(
                "SELECT coalesce(max(through), 0) FROM egress_history_indexed",
                [],
                |r| r.get(0),
            )
        })
        .map_err(|e| store_err(store, e))?;
    let head = log.head()?.map_or(0, |h| h.seq);
    if u64::try_from(through).unwrap_or(0) >= head {
        return Ok(());
    }
    let records = log.records_after(u64::try_from(through).unwrap_or(0))?;
    let mut last = through;
    let mut rows = Vec::new();
    for r in &records {
        let seq = r.get("seq").and_then(Value::as_i64).unwrap_or(0);
        last = last.max(seq);
        if let Some(request) = request_of(r, origin) {
            rows.push((request, seq));
        }
    }
    store
        .with_conn_mut(|c| {
            let tx = c.transaction()?;
            for (request, seq) in &rows {
                tx.execute(
                    "INSERT OR IGNORE INTO egress_history (request, seq) VALUES (?1, ?2)",
                    params![request, seq],
                )?;
            }
            tx.execute(
                "INSERT INTO egress_history_indexed (one, through) VALUES (1, ?1)
                 ON CONFLICT(one) DO UPDATE SET through = max(through, excluded.through)",
                params![last],
            )?;
            tx.commit()
        })
        .map_err(|e| store_err(store, e))
}

/// The records of `request`, in log order.
pub(crate) fn of(
    store: &Store,
    log: &DecisionLog,
    origin: &str,
    request: &str,
) -> Result<Vec<Value>> {
    catch_up(store, log, origin)?;
    let seqs: BTreeSet<u64> = store
        .with_conn(|c| {
            c.prepare("SELECT seq FROM egress_history WHERE request = ?1 ORDER BY seq")?
                .query_map(params![request], |r| r.get::<_, i64>(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()
        })
        .map_err(|e| store_err(store, e))?
        .into_iter()
        .filter_map(|s| u64::try_from(s).ok())
        .collect();
    log.records_at(&seqs)
}
