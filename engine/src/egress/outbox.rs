//! Workflow events on their way to the decision log.
//!
//! An egress transition and its log record must agree after a crash: a record of a
//! transition that never committed is a false record, and a committed transition with no
//! record is a lost one. So the record is written in the transition's own SQLite transaction
//! (here) and appended to the log only after the commit. `flush` appends whatever is waiting
//! — right after each transition, and on start — and skips a record a crash left appended
//! but not yet taken out, which it finds by the record's `eventUid`.

use std::collections::HashSet;

use rusqlite::{params, Connection, TransactionBehavior};
use serde_json::{Map, Value};

use crate::error::{EngineError, Result};
use crate::log::DecisionLog;
use crate::store::Store;

pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS egress_log_outbox (
    id INTEGER PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE,
    -- The log's last sequence when the record was written: it can only be appended after.
    after_seq INTEGER NOT NULL,
    record TEXT NOT NULL
);";

/// Puts `record` in the outbox, inside the transition's transaction `tx`, under `uid`.
pub(crate) fn put(
    tx: &Connection,
    log: &DecisionLog,
    uid: &str,
    mut record: Map<String, Value>,
) -> Result<()> {
    record.insert("eventUid".into(), Value::from(uid));
    let after = log.head()?.map_or(0, |h| h.seq);
    let text = Value::Object(record).to_string();
    tx.execute(
        "INSERT INTO egress_log_outbox (uid, after_seq, record) VALUES (?1, ?2, ?3)",
        params![uid, after as i64, text],
    )
    .map(|_| ())
    .map_err(|e| EngineError::Request(format!("cannot keep the workflow record: {e}")))
}

/// Appends every waiting record to the log, in the order the transitions committed, and
/// takes them out. Returns how many were appended.
pub(crate) fn flush(store: &Store, log: &DecisionLog) -> Result<usize> {
    let store_err = |e: rusqlite::Error| EngineError::Store {
        path: store.path().display().to_string(),
        message: e.to_string(),
    };
    // Most calls find nothing: ask without taking the write lock.
    let waiting: bool = store
        .with_conn(|c| {
            c.query_row("SELECT EXISTS(SELECT 1 FROM egress_log_outbox)", [], |r| {
                r.get(0)
            })
        })
        .map_err(store_err)?;
    if !waiting {
        return Ok(0);
    }
    let mut outcome = Ok(0);
    store
        .with_conn_mut(|conn| {
            // The write lock, held across the append: two processes on one data directory
            // never append the same record twice.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let rows: Vec<(i64, String, i64, String)> = tx
                .prepare("SELECT id, uid, after_seq, record FROM egress_log_outbox ORDER BY id")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<rusqlite::Result<_>>()?;
            outcome = append_missing(log, &rows);
            if outcome.is_ok() {
                if let Some(last) = rows.last() {
                    tx.execute(
                        "DELETE FROM egress_log_outbox WHERE id <= ?1",
                        params![last.0],
                    )?;
                }
                tx.commit()?;
            }
            Ok(())
        })
        .map_err(store_err)?;
    outcome
}

fn append_missing(log: &DecisionLog, rows: &[(i64, String, i64, String)]) -> Result<usize> {
    let Some(earliest) = rows.iter().map(|r| r.2.max(0) as u64).min() else {
        return Ok(0);
    };
    let head = log.head()?.map_or(0, |h| h.seq);
    // Only a record appended after the earliest row was written can be one of them.
    let logged: HashSet<String> = if head > earliest {
        log.records_after(earliest)?
            .iter()
            .filter_map(|r| r.get("eventUid").and_then(Value::as_str).map(String::from))
            .collect()
    } else {
        HashSet::new()
    };
    let mut todo = Vec::new();
    for (_, uid, _, text) in rows {
        if logged.contains(uid) {
            continue;
        }
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(record)) => todo.push(record),
            _ => {
                return Err(EngineError::Request(format!(
                    "the waiting workflow record `{uid}` is not a JSON object"
                )))
            }
        }
    }
    let appended = todo.len();
    log.append(todo)?;
    Ok(appended)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("kind".into(), Value::from("egress"));
        m.insert("n".into(), Value::from(n));
        m
    }

    fn waiting(store: &Store) -> i64 {
        store
            .with_conn(|c| c.query_row("SELECT COUNT(*) FROM egress_log_outbox", [], |r| r.get(0)))
            .expect("count")
    }

    fn logged_uids(log: &DecisionLog) -> Vec<String> {
        log.records()
            .expect("records")
            .iter()
            .filter_map(|r| r["eventUid"].as_str().map(String::from))
            .collect()
    }

    #[test]
    fn a_committed_record_reaches_the_log_once_and_leaves_the_outbox() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("store");
        let log = DecisionLog::open(dir.path()).expect("log");
        store
            .with_conn(|c| Ok(put(c, &log, "eg-1:submitted:1", record(1))))
            .expect("sql")
            .expect("put");
        assert_eq!(flush(&store, &log).expect("flush"), 1);
        assert_eq!(flush(&store, &log).expect("again"), 0);
        assert_eq!(logged_uids(&log), vec!["eg-1:submitted:1"]);
        assert_eq!(waiting(&store), 0);
    }

    /// A crash after the append and before the outbox row was taken out: the next flush
    /// finds the record in the log and does not append it again.
    #[test]
    fn a_record_appended_before_a_crash_is_not_appended_twice() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("store");
        let log = DecisionLog::open(dir.path()).expect("log");
        log.append(vec![record(0)]).expect("earlier record");
        for (uid, n) in [("eg-1:submitted:1", 1), ("eg-1:approved:2", 2)] {
            store
                .with_conn(|c| Ok(put(c, &log, uid, record(n))))
                .expect("sql")
                .expect("put");
        }
        let mut first = record(1);
        first.insert("eventUid".into(), Value::from("eg-1:submitted:1"));
        log.append(vec![first]).expect("appended before the crash");
        assert_eq!(flush(&store, &log).expect("flush"), 1, "only the second");
        assert_eq!(
            logged_uids(&log),
            vec!["eg-1:submitted:1", "eg-1:approved:2"]
        );
        assert!(log.verify().expect("verify").ok);
    }

    #[test]
    fn a_transaction_rolled_back_leaves_nothing_to_log() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("store");
        let log = DecisionLog::open(dir.path()).expect("log");
        store
            .with_conn_mut(|c| {
                let tx = c.transaction()?;
                put(&tx, &log, "eg-1:submitted:1", record(1)).expect("put");
                tx.rollback()
            })
            .expect("rolled back");
        assert_eq!(flush(&store, &log).expect("flush"), 0);
        assert!(logged_uids(&log).is_empty());
    }
}
