//! The durable entity store: SQLite (bundled) in WAL mode under the data directory.
//!
//! Writes are transactional batches; readers in other connections or processes keep reading
//! the last committed state while a batch is written; `synchronous=FULL` means a committed
//! batch survives `kill -9` and power loss. Every entity is validated against the schema
//! before it is written, and a batch with any invalid entity writes nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cedar_policy::{Entities, Entity, EntityUid, Schema};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::error::{EngineError, Result};

const STORE_FILE: &str = "store.sqlite3";

/// The partition of entities imported by hand (`tregov entities import`).
pub const MANUAL_PARTITION: &str = "manual";

/// One atomic change to the store.
#[derive(Debug, Default, Clone)]
pub struct StoreBatch {
    /// Entities to insert or overwrite.
    pub upserts: Vec<Entity>,
    /// Entities to remove.
    pub deletes: Vec<EntityUid>,
    /// The collector (or `manual`) that owns the upserted entities.
    pub partition: String,
    /// When set, every entity of `partition` that this batch does not upsert is deleted: a
    /// full listing replaces the partition atomically.
    pub replace_partition: bool,
}

/// What a batch changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BatchOutcome {
    pub revision: u64,
    pub inserted: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub deleted: usize,
}

/// A piece of actual state a collector observed in AWS (a Lake Formation permission, an IAM
/// role with its policies, a backup plan): what the planner compares with the desired state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Observed {
    pub kind: String,
    pub key: String,
    pub body: serde_json::Value,
}

/// Changes since a revision, for updating an in-memory graph incrementally.
#[derive(Debug, Clone, Default)]
pub struct ChangeSet {
    pub revision: u64,
    pub upserts: Vec<String>,
    pub deletes: Vec<EntityUid>,
}

mod beacon;

pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Tells readers, without a transaction, that the entities have not changed.
    beacon: beacon::Beacon,
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(|e| EngineError::io(data_dir, e))?;
        let path = data_dir.join(STORE_FILE);
        let conn = Connection::open(&path).map_err(|e| store_err(&path, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| store_err(&path, e))?;
        // The same file as the event store: whichever opens it first fixes the page size, so
        // both ask for the event store's 16 KiB (see `events::EventStore::open`).
        conn.execute_batch(
            "PRAGMA page_size = 16384;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS entities (
                 uid TEXT PRIMARY KEY,
                 etype TEXT NOT NULL,
                 body TEXT NOT NULL,
                 partition TEXT NOT NULL,
                 revision INTEGER NOT NULL
             );
             CREATE INDEX IF NOT EXISTS entities_partition ON entities(partition);
             CREATE INDEX IF NOT EXISTS entities_revision ON entities(revision);
             CREATE TABLE IF NOT EXISTS deletions (
                 uid TEXT NOT NULL,
                 revision INTEGER NOT NULL
             );
             CREATE INDEX IF NOT EXISTS deletions_revision ON deletions(revision);
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS observed (
                 kind TEXT NOT NULL,
                 key TEXT NOT NULL,
                 body TEXT NOT NULL,
                 partition TEXT NOT NULL,
                 observed_at TEXT NOT NULL,
                 PRIMARY KEY (kind, key)
             );
             CREATE INDEX IF NOT EXISTS observed_partition ON observed(partition);
             CREATE TABLE IF NOT EXISTS parked (
                 item TEXT PRIMARY KEY,
                 body TEXT NOT NULL,
                 status TEXT NOT NULL,
                 parked_at TEXT NOT NULL,
                 decided_by TEXT,
                 decided_at TEXT,
                 note TEXT
             );
             CREATE INDEX IF NOT EXISTS parked_status ON parked(status);",
        )
        .map_err(|e| store_err(&path, e))?;
        conn.execute_batch(crate::egress::SCHEMA)
            .and_then(|()| conn.execute_batch(crate::egress::OUTBOX_SCHEMA))
            .and_then(|()| conn.execute_batch(crate::egress::NOTICES_SCHEMA))
            .and_then(|()| conn.execute_batch(crate::egress::LEASE_SCHEMA))
            .and_then(|()| conn.execute_batch(crate::egress::HISTORY_SCHEMA))
            .map_err(|e| store_err(&path, e))?;
        add_parked_kind(&conn).map_err(|e| store_err(&path, e))?;
        Ok(Self {
            path,
            conn: Mutex::new(conn),
            beacon: beacon::Beacon::open(data_dir)?,
        })
    }

    /// Opens an existing store read-only; fails if there is none.
    pub fn open_existing(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(STORE_FILE);
        if !path.exists() {
            return Err(EngineError::Store {
                path: path.display().to_string(),
                message: "no entity store here (import entities or run `tregov demo` first)".into(),
            });
        }
        Self::open(data_dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>> {
        self.conn.lock().map_err(|_| EngineError::Store {
            path: self.path.display().to_string(),
            message: "store connection poisoned by an earlier panic".into(),
        })
    }

    /// Runs `f` on the store's connection (for tables other modules own).
    pub fn with_conn<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        // A panic mid-transaction rolled the transaction back as it unwound: the connection
        // itself is sound.
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn)
    }

    /// `with_conn` for transactions.
    pub fn with_conn_mut<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }

    /// A separate read-only connection: reads there see the last committed state and never
    /// wait for a writer.
    pub fn reader(&self) -> Result<Connection> {
        Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| store_err(&self.path, e))
    }

    pub fn revision(&self) -> Result<u64> {
        let conn = self.conn()?;
        read_revision(&conn).map_err(|e| store_err(&self.path, e))
    }

    /// Whether the entities are still at `revision`: the beacon's word when it has one,
    /// else the store's.
    pub fn still_at(&self, revision: u64) -> Result<bool> {
        Ok(self.beacon.settled_at(revision) || self.revision()? == revision)
    }

    /// Validates and writes a batch in one transaction.
    pub fn apply(&self, batch: &StoreBatch, schema: &Schema) -> Result<BatchOutcome> {
        // Validation happens before the transaction: a bad entity writes nothing.
        Entities::from_entities(batch.upserts.iter().cloned(), Some(schema))
            .map_err(|e| EngineError::Request(format!("entities do not match the schema: {e}")))?;
        let mut rows = Vec::with_capacity(batch.upserts.len());
        for e in &batch.upserts {
            let uid = e.uid();
            if uid.type_name().basename() == "Action" {
                return Err(EngineError::Request(format!(
                    "action entity `{uid}` cannot be stored: actions come from the schema"
                )));
            }
            let body = canonical_body(e)?;
            rows.push((uid.to_string(), uid.type_name().to_string(), body));
        }
        let partition = if batch.partition.is_empty() {
            MANUAL_PARTITION
        } else {
            batch.partition.as_str()
        };
        let mut conn = self.conn()?;
        let writing = self.beacon.begin_write()?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| store_err(&self.path, e))?;
        let outcome = (|| -> rusqlite::Result<BatchOutcome> {
            let revision = read_revision(&tx)? as i64 + 1;
            let mut out = BatchOutcome {
                revision: revision as u64,
                ..Default::default()
            };
            {
                let mut get = tx.prepare_cached("SELECT body FROM entities WHERE uid = ?1")?;
                let mut put = tx.prepare_cached(
                    "INSERT INTO entities (uid, etype, body, partition, revision)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(uid) DO UPDATE SET body = excluded.body,
                       etype = excluded.etype, partition = excluded.partition,
                       revision = excluded.revision",
                )?;
                for (uid, etype, body) in &rows {
                    let old: Option<String> =
                        get.query_row(params![uid], |r| r.get(0)).optional()?;
                    match old {
                        Some(ref b) if b == body => out.unchanged += 1,
                        Some(_) => {
                            put.execute(params![uid, etype, body, partition, revision])?;
                            out.updated += 1;
                        }
                        None => {
                            put.execute(params![uid, etype, body, partition, revision])?;
                            out.inserted += 1;
                        }
                    }
                }
            }
            let mut to_delete: BTreeSet<String> =
                batch.deletes.iter().map(|u| u.to_string()).collect();
            if batch.replace_partition {
                let keep: BTreeSet<&str> = rows.iter().map(|(u, _, _)| u.as_str()).collect();
                let mut stmt = tx.prepare("SELECT uid FROM entities WHERE partition = ?1")?;
                let existing = stmt.query_map(params![partition], |r| r.get::<_, String>(0))?;
                for uid in existing {
                    let uid = uid?;
                    if !keep.contains(uid.as_str()) {
                        to_delete.insert(uid);
                    }
                }
            }
            {
                let mut del = tx.prepare_cached("DELETE FROM entities WHERE uid = ?1")?;
                let mut tomb =
                    tx.prepare_cached("INSERT INTO deletions (uid, revision) VALUES (?1, ?2)")?;
                for uid in &to_delete {
                    if del.execute(params![uid])? > 0 {
                        tomb.execute(params![uid, revision])?;
                        out.deleted += 1;
                    }
                }
            }
            if out.inserted + out.updated + out.deleted > 0 {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('revision', ?1)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    params![revision.to_string()],
                )?;
            } else {
                out.revision = (revision - 1) as u64;
            }
            Ok(out)
        })()
        .map_err(|e| store_err(&self.path, e))?;
        tx.commit().map_err(|e| store_err(&self.path, e))?;
        // The batch is in: a beacon left unsettled only sends readers to the store.
        if let Err(e) = writing.settle(outcome.revision) {
            tracing::warn!(error = %e, "cannot mark the store's revision beacon settled");
        }
        Ok(outcome)
    }

    /// Replaces everything observed in `partition` with `items`, atomically.
    pub fn replace_observed(&self, partition: &str, items: &[Observed]) -> Result<BatchOutcome> {
        let mut conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| store_err(&self.path, e))?;
        let now = crate::log::now_rfc3339();
        let outcome = (|| -> rusqlite::Result<BatchOutcome> {
            let mut out = BatchOutcome::default();
            let mut keep = BTreeSet::new();
            {
                let mut get =
                    tx.prepare_cached("SELECT body FROM observed WHERE kind = ?1 AND key = ?2")?;
                let mut put = tx.prepare_cached(
                    "INSERT INTO observed (kind, key, body, partition, observed_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(kind, key) DO UPDATE SET body = excluded.body,
                       partition = excluded.partition, observed_at = excluded.observed_at",
                )?;
                for item in items {
                    let body = item.body.to_string();
                    keep.insert((item.kind.clone(), item.key.clone()));
                    let old: Option<String> = get
                        .query_row(params![item.kind, item.key], |r| r.get(0))
                        .optional()?;
                    match old {
                        Some(b) if b == body => out.unchanged += 1,
                        Some(_) => {
                            put.execute(params![item.kind, item.key, body, partition, now])?;
                            out.updated += 1;
                        }
                        None => {
                            put.execute(params![item.kind, item.key, body, partition, now])?;
                            out.inserted += 1;
                        }
                    }
                }
            }
            let existing: Vec<(String, String)> = {
                let mut stmt = tx.prepare("SELECT kind, key FROM observed WHERE partition = ?1")?;
                let rows = stmt.query_map(params![partition], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            for (kind, key) in existing {
                if !keep.contains(&(kind.clone(), key.clone())) {
                    tx.execute(
                        "DELETE FROM observed WHERE kind = ?1 AND key = ?2",
                        params![kind, key],
                    )?;
                    out.deleted += 1;
                }
            }
            Ok(out)
        })()
        .map_err(|e| store_err(&self.path, e))?;
        tx.commit().map_err(|e| store_err(&self.path, e))?;
        Ok(outcome)
    }

    /// Records one observed item in `partition`, leaving the rest of the partition alone (for
    /// facts tregov itself establishes, such as a notification sent).
    pub fn put_observed(&self, partition: &str, item: &Observed) -> Result<()> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO observed (kind, key, body, partition, observed_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(kind, key) DO UPDATE SET body = excluded.body,
               partition = excluded.partition, observed_at = excluded.observed_at",
            params![
                item.kind,
                item.key,
                item.body.to_string(),
                partition,
                crate::log::now_rfc3339()
            ],
        )
        .map_err(|e| store_err(&self.path, e))?;
        Ok(())
    }

    /// Writes a collector's observed state: a complete listing replaces the partition, an
    /// incomplete one only adds and updates.
    pub fn write_observed(
        &self,
        partition: &str,
        items: &[Observed],
        complete: bool,
    ) -> Result<()> {
        if complete {
            return self.replace_observed(partition, items).map(|_| ());
        }
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(|e| store_err(&self.path, e))?;
        {
            let mut put = tx
                .prepare_cached(
                    "INSERT INTO observed (kind, key, body, partition, observed_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(kind, key) DO UPDATE SET body = excluded.body,
                       partition = excluded.partition, observed_at = excluded.observed_at",
                )
                .map_err(|e| store_err(&self.path, e))?;
            let now = crate::log::now_rfc3339();
            for item in items {
                put.execute(params![
                    item.kind,
                    item.key,
                    item.body.to_string(),
                    partition,
                    now
                ])
                .map_err(|e| store_err(&self.path, e))?;
            }
        }
        tx.commit().map_err(|e| store_err(&self.path, e))
    }

    /// The size of `partition`'s last good (complete, accepted) listing.
    pub fn listing_baseline(&self, partition: &str) -> Result<Option<u64>> {
        let conn = self.conn()?;
        conn.query_row(
            "SELECT value FROM meta WHERE key = ?1",
            params![format!("listing-size/{partition}")],
            |r| r.get::<_, String>(0),
        )
        .optional()
        .map(|v| v.and_then(|v| v.parse().ok()))
        .map_err(|e| store_err(&self.path, e))
    }

    pub fn set_listing_baseline(&self, partition: &str, size: u64) -> Result<()> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![format!("listing-size/{partition}"), size.to_string()],
        )
        .map_err(|e| store_err(&self.path, e))?;
        Ok(())
    }

    /// Pending parked items whose id starts with `prefix` lapse (`expired`): what they waited
    /// for is no longer needed.
    pub fn expire_pending(&self, prefix: &str) -> Result<()> {
        let conn = self.conn()?;
        conn.execute(
            "UPDATE parked SET status = 'expired', decided_at = ?2
             WHERE status = 'pending' AND substr(item, 1, length(?1)) = ?1",
            params![prefix, crate::log::now_rfc3339()],
        )
        .map_err(|e| store_err(&self.path, e))?;
        Ok(())
    }

    /// Like `expire_pending`, but `keep` stays: a newer proposal replaces an older one.
    pub fn expire_pending_except(&self, prefix: &str, keep: &str) -> Result<()> {
        let conn = self.conn()?;
        conn.execute(
            "UPDATE parked SET status = 'expired', decided_at = ?3
             WHERE status = 'pending' AND substr(item, 1, length(?1)) = ?1 AND item != ?2",
            params![prefix, keep, crate::log::now_rfc3339()],
        )
        .map_err(|e| store_err(&self.path, e))?;
        Ok(())
    }

    /// Parks a plan item for approval and returns its status: `pending`, `approved` or
    /// `rejected`. An item applied (or expired) before and planned again is the same change
    /// needed again, so it waits for a new approval; a rejection stands until an admin
    /// approves.
    pub fn park(&self, item: &str, kind: ParkedKind, body: &serde_json::Value) -> Result<String> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO parked (item, body, status, parked_at, kind)
             VALUES (?1, ?2, 'pending', ?3, ?4)
             ON CONFLICT(item) DO UPDATE SET status = 'pending', body = excluded.body,
               parked_at = excluded.parked_at, decided_by = NULL, decided_at = NULL, note = NULL
             WHERE parked.status IN ('applied', 'expired')",
            params![
                item,
                body.to_string(),
                crate::log::now_rfc3339(),
                kind.as_str()
            ],
        )
        .map_err(|e| store_err(&self.path, e))?;
        conn.query_row(
            "SELECT status FROM parked WHERE item = ?1",
            params![item],
            |r| r.get(0),
        )
        .map_err(|e| store_err(&self.path, e))
    }

    /// Decides a parked item (`approved` or `rejected`); `false` if no pending item has that
    /// id. Applied items are marked `applied`.
    pub fn decide_parked(
        &self,
        item: &str,
        status: &str,
        by: &str,
        note: Option<&str>,
    ) -> Result<bool> {
        let conn = self.conn()?;
        let from = if status == "applied" {
            "approved"
        } else {
            "pending"
        };
        let n = conn
            .execute(
                "UPDATE parked SET status = ?2, decided_by = COALESCE(?3, decided_by),
                   decided_at = ?4, note = COALESCE(?5, note)
                 WHERE item = ?1 AND status = ?6",
                params![
                    item,
                    status,
                    (status != "applied").then_some(by),
                    crate::log::now_rfc3339(),
                    note,
                    from
                ],
            )
            .map_err(|e| store_err(&self.path, e))?;
        Ok(n == 1)
    }

    /// The kinds of parked item an admin approved that have not been acted on yet (checked
    /// at every daemon poll, so one indexed question rather than the whole list).
    pub fn approved_kinds(&self) -> Result<BTreeSet<ParkedKind>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare("SELECT DISTINCT kind FROM parked WHERE status = 'approved'")
            .map_err(|e| store_err(&self.path, e))?;
        let kinds = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| store_err(&self.path, e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| store_err(&self.path, e))?;
        Ok(kinds.iter().filter_map(|k| ParkedKind::parse(k)).collect())
    }

    /// How many parked items wait for a decision.
    pub fn pending_count(&self) -> Result<u64> {
        let conn = self.conn()?;
        conn.query_row(
            "SELECT COUNT(*) FROM parked WHERE status = 'pending'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n.max(0) as u64)
        .map_err(|e| store_err(&self.path, e))
    }

    /// Parked plan items a full plan no longer has lapse (`expired`), approved or not: the
    /// world changed since, and an approval given for it must not apply to what comes next.
    pub fn expire_unplanned(&self, planned: &[&str]) -> Result<()> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(
                "SELECT item FROM parked
                 WHERE status IN ('pending', 'approved') AND kind = 'plan-item'",
            )
            .map_err(|e| store_err(&self.path, e))?;
        let waiting = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| store_err(&self.path, e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| store_err(&self.path, e))?;
        drop(stmt);
        let planned: std::collections::HashSet<&str> = planned.iter().copied().collect();
        for item in waiting.iter().filter(|a| !planned.contains(a.as_str())) {
            conn.execute(
                "UPDATE parked SET status = 'expired', decided_at = ?2 WHERE item = ?1",
                params![item, crate::log::now_rfc3339()],
            )
            .map_err(|e| store_err(&self.path, e))?;
        }
        Ok(())
    }

    /// One parked item: (status, body), if there is one.
    pub fn parked_item(&self, item: &str) -> Result<Option<(String, serde_json::Value)>> {
        let conn = self.conn()?;
        conn.query_row(
            "SELECT status, body FROM parked WHERE item = ?1",
            params![item],
            |r| {
                let body: String = r.get(1)?;
                Ok((
                    r.get(0)?,
                    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
                ))
            },
        )
        .optional()
        .map_err(|e| store_err(&self.path, e))
    }

    /// Parked items, oldest first.
    pub fn parked(&self) -> Result<Vec<ParkedItem>> {
        let conn = self.conn()?;
        let map = |e| store_err(&self.path, e);
        let mut stmt = conn
            .prepare(
                "SELECT item, status, body, decided_by, note, kind FROM parked
                 ORDER BY parked_at, item",
            )
            .map_err(map)?;
        let rows = stmt
            .query_map([], |r| {
                let body: String = r.get(2)?;
                let kind: String = r.get(5)?;
                Ok(ParkedItem {
                    item: r.get(0)?,
                    status: r.get(1)?,
                    body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
                    decided_by: r.get(3)?,
                    note: r.get(4)?,
                    kind: ParkedKind::parse(&kind).unwrap_or(ParkedKind::PlanItem),
                })
            })
            .map_err(map)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map)
    }

    /// Observed state, of one kind or all, in key order.
    pub fn observed(&self, kind: Option<&str>) -> Result<Vec<Observed>> {
        let conn = self.conn()?;
        let map = |e| store_err(&self.path, e);
        let mut stmt = conn
            .prepare(
                "SELECT kind, key, body FROM observed WHERE ?1 IS NULL OR kind = ?1
                 ORDER BY kind, key",
            )
            .map_err(map)?;
        let rows = stmt
            .query_map(params![kind], |r| {
                let body: String = r.get(2)?;
                Ok(Observed {
                    kind: r.get(0)?,
                    key: r.get(1)?,
                    body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
                })
            })
            .map_err(map)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map)
    }

    /// The observed item of `kind` with `key`, if there is one.
    pub fn observed_item(&self, kind: &str, key: &str) -> Result<Option<Observed>> {
        let conn = self.conn()?;
        conn.query_row(
            "SELECT body FROM observed WHERE kind = ?1 AND key = ?2",
            params![kind, key],
            |r| r.get::<_, String>(0),
        )
        .optional()
        .map(|body| {
            body.map(|b| Observed {
                kind: kind.to_string(),
                key: key.to_string(),
                body: serde_json::from_str(&b).unwrap_or(serde_json::Value::Null),
            })
        })
        .map_err(|e| store_err(&self.path, e))
    }

    /// Whether any item of `kind` is observed.
    pub fn has_observed(&self, kind: &str) -> Result<bool> {
        let conn = self.conn()?;
        conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM observed WHERE kind = ?1)",
            params![kind],
            |r| r.get(0),
        )
        .map_err(|e| store_err(&self.path, e))
    }

    /// Writes a collector's listing of `partition`, atomically. A complete listing replaces
    /// the partition; an incomplete one (some account could not be read) only adds and
    /// updates, so what could not be seen this time is not taken for gone.
    pub fn write_listing(
        &self,
        partition: &str,
        entities: Vec<Entity>,
        complete: bool,
        schema: &Schema,
    ) -> Result<BatchOutcome> {
        self.apply(
            &StoreBatch {
                upserts: entities,
                deletes: Vec::new(),
                partition: partition.into(),
                replace_partition: complete,
            },
            schema,
        )
    }

    /// Every stored entity body, in uid order.
    pub fn all_bodies(&self) -> Result<Vec<String>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare("SELECT body FROM entities ORDER BY uid")
            .map_err(|e| store_err(&self.path, e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| store_err(&self.path, e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| store_err(&self.path, e))
    }

    /// The revision and every body, read in one transaction so they agree.
    pub fn snapshot(&self) -> Result<(u64, Vec<String>)> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(|e| store_err(&self.path, e))?;
        let revision = read_revision(&tx).map_err(|e| store_err(&self.path, e))?;
        let bodies = {
            let mut stmt = tx
                .prepare("SELECT body FROM entities ORDER BY uid")
                .map_err(|e| store_err(&self.path, e))?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(|e| store_err(&self.path, e))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| store_err(&self.path, e))?
        };
        Ok((revision, bodies))
    }

    pub fn get(&self, uid: &EntityUid) -> Result<Option<String>> {
        let conn = self.conn()?;
        conn.query_row(
            "SELECT body FROM entities WHERE uid = ?1",
            params![uid.to_string()],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| store_err(&self.path, e))
    }

    /// Which partition (collector) owns an entity, if it is stored.
    pub fn partition_of(&self, uid: &EntityUid) -> Result<Option<String>> {
        let conn = self.conn()?;
        conn.query_row(
            "SELECT partition FROM entities WHERE uid = ?1",
            params![uid.to_string()],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| store_err(&self.path, e))
    }

    pub fn count(&self) -> Result<u64> {
        let conn = self.conn()?;
        conn.query_row("SELECT COUNT(*) FROM entities", [], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
            .map_err(|e| store_err(&self.path, e))
    }

    /// What changed after `since`: upserted bodies and deleted uids (a uid deleted and then
    /// re-inserted shows up as an upsert only).
    pub fn changes_since(&self, since: u64) -> Result<ChangeSet> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(|e| store_err(&self.path, e))?;
        let map = |e| store_err(&self.path, e);
        let revision = read_revision(&tx).map_err(map)?;
        let upserts: Vec<(String, String)> = {
            let mut stmt = tx
                .prepare("SELECT uid, body FROM entities WHERE revision > ?1")
                .map_err(map)?;
            let rows = stmt
                .query_map(params![since as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(map)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map)?
        };
        let live: BTreeSet<&str> = upserts.iter().map(|(u, _)| u.as_str()).collect();
        let deleted: Vec<String> = {
            let mut stmt = tx
                .prepare("SELECT DISTINCT uid FROM deletions WHERE revision > ?1")
                .map_err(map)?;
            let rows = stmt
                .query_map(params![since as i64], |r| r.get(0))
                .map_err(map)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map)?
        };
        let mut deletes = Vec::new();
        for uid in deleted {
            if live.contains(uid.as_str()) {
                continue;
            }
            let exists: bool = tx
                .query_row(
                    "SELECT 1 FROM entities WHERE uid = ?1",
                    params![uid],
                    |_| Ok(true),
                )
                .optional()
                .map_err(map)?
                .unwrap_or(false);
            if !exists {
                deletes.push(crate::entities::parse_uid(&uid)?);
            }
        }
        Ok(ChangeSet {
            revision,
            upserts: upserts.into_iter().map(|(_, b)| b).collect(),
            deletes,
        })
    }
}

/// An entity's JSON with its parents sorted, so that the same entity always has the same
/// body (Cedar keeps parents in a hash set) and re-importing it is a no-op.
pub fn canonical_body(e: &Entity) -> Result<String> {
    let uid = e.uid();
    let mut json = e
        .to_json_value()
        .map_err(|err| EngineError::Request(format!("entity `{uid}`: {err}")))?;
    if let Some(serde_json::Value::Array(parents)) = json.get_mut("parents") {
        parents.sort_by_key(|p| p.to_string());
    }
    serde_json::to_string(&json)
        .map_err(|err| EngineError::Request(format!("entity `{uid}`: {err}")))
}

/// A change held back for an admin's decision.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParkedItem {
    pub item: String,
    pub kind: ParkedKind,
    /// `pending`, `approved`, `rejected`, `applied` or `expired`.
    pub status: String,
    /// The plan item (or listing) as it was parked.
    #[serde(rename = "planItem")]
    pub body: serde_json::Value,
    pub decided_by: Option<String>,
    pub note: Option<String>,
}

/// What a parked item is: a plan item to apply once approved, or a smaller collector
/// listing to accept as the new baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParkedKind {
    PlanItem,
    AcceptListing,
    /// A dataset label change that widens access, for a data manager to accept.
    AcceptLabels,
    /// A policy set that allows more than the running one, for an IT admin to accept.
    AcceptPolicies,
}

impl ParkedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ParkedKind::PlanItem => "plan-item",
            ParkedKind::AcceptListing => "accept-listing",
            ParkedKind::AcceptLabels => "accept-labels",
            ParkedKind::AcceptPolicies => "accept-policies",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            ParkedKind::PlanItem,
            ParkedKind::AcceptListing,
            ParkedKind::AcceptLabels,
            ParkedKind::AcceptPolicies,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// Stores made before parked items had kinds: every row was a plan item.
fn add_parked_kind(conn: &Connection) -> rusqlite::Result<()> {
    let has_kind: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('parked') WHERE name = 'kind')",
        [],
        |r| r.get(0),
    )?;
    if !has_kind {
        conn.execute_batch(
            "ALTER TABLE parked ADD COLUMN kind TEXT NOT NULL DEFAULT 'plan-item';",
        )?;
    }
    Ok(())
}

fn read_revision(conn: &Connection) -> rusqlite::Result<u64> {
    // Cached: every API request asks, so the statement is compiled once per connection.
    let v: Option<String> = conn
        .prepare_cached("SELECT value FROM meta WHERE key = 'revision'")?
        .query_row([], |r| r.get(0))
        .optional()?;
    Ok(v.and_then(|s| s.parse().ok()).unwrap_or(0))
}

fn store_err(path: &Path, e: rusqlite::Error) -> EngineError {
    EngineError::Store {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::from_cedarschema_str(tregov_policies::SCHEMA)
            .expect("schema")
            .0
    }

    fn user(id: &str, status: &str) -> Entity {
        Entity::from_json_value(
            serde_json::json!({"uid": {"type": "Tre::User", "id": id}, "attrs": {"status": status}, "parents": []}),
            Some(&schema()),
        )
        .expect("entity")
    }

    fn batch(entities: Vec<Entity>) -> StoreBatch {
        StoreBatch {
            upserts: entities,
            partition: "test".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_write_through_another_store_is_seen_without_asking_the_store_twice() {
        let dir = tempfile::tempdir().expect("tmp");
        let (reader, writer) = (
            Store::open(dir.path()).expect("store"),
            Store::open(dir.path()).expect("store"),
        );
        let schema = crate::policies::PolicyBundle::embedded()
            .expect("policies")
            .schema
            .expect("schema");
        let role = cedar_policy::Entity::from_json_value(
            serde_json::json!({"uid": {"type": "Tre::Role", "id": "Researcher"}, "attrs": {}, "parents": []}),
            Some(&schema),
        )
        .expect("entity");
        assert!(reader.still_at(0).expect("check"));
        let batch = StoreBatch {
            upserts: vec![role],
            ..Default::default()
        };
        let written = writer.apply(&batch, &schema).expect("apply");
        assert_eq!(written.revision, 1);
        assert!(!reader.still_at(0).expect("check"));
        assert!(reader.still_at(1).expect("check"));
        // Nothing changed: still settled at the same revision.
        writer.apply(&batch, &schema).expect("apply");
        assert!(reader.still_at(1).expect("check"));
    }

    #[test]
    fn a_batch_is_written_whole_and_bumps_the_revision_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("store");
        let out = store
            .apply(
                &batch(vec![user("a", "active"), user("b", "active")]),
                &schema(),
            )
            .expect("apply");
        assert_eq!(out.inserted, 2);
        assert_eq!(store.revision().expect("rev"), 1);
        assert_eq!(store.count().expect("count"), 2);
    }

    #[test]
    fn rewriting_identical_entities_changes_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("store");
        store
            .apply(&batch(vec![user("a", "active")]), &schema())
            .expect("apply");
        let again = store
            .apply(&batch(vec![user("a", "active")]), &schema())
            .expect("apply");
        assert_eq!(again.unchanged, 1);
        assert_eq!(again.revision, 1);
    }

    #[test]
    fn replacing_a_partition_deletes_what_the_new_listing_lacks() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("store");
        store
            .apply(
                &batch(vec![user("a", "active"), user("b", "active")]),
                &schema(),
            )
            .expect("apply");
        let mut replace = batch(vec![user("b", "inactive")]);
        replace.replace_partition = true;
        let out = store.apply(&replace, &schema()).expect("apply");
        assert_eq!((out.updated, out.deleted), (1, 1));
        let changes = store.changes_since(1).expect("changes");
        assert_eq!(changes.deletes.len(), 1);
        assert_eq!(changes.deletes[0].to_string(), r#"Tre::User::"a""#);
        assert_eq!(changes.upserts.len(), 1);
    }

    #[test]
    fn an_entity_that_violates_the_schema_writes_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("store");
        let no_attrs = Entity::from_json_value(
            serde_json::json!({"uid": {"type": "Tre::User", "id": "x"}, "attrs": {}, "parents": []}),
            None,
        )
        .expect("entity");
        let err = store
            .apply(&batch(vec![user("a", "active"), no_attrs]), &schema())
            .expect_err("invalid");
        assert!(err.is_invalid_input());
        assert_eq!(store.count().expect("count"), 0);
        assert_eq!(store.revision().expect("rev"), 0);
    }

    #[test]
    fn a_reader_keeps_its_snapshot_while_a_writer_commits() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("store");
        store
            .apply(&batch(vec![user("a", "active")]), &schema())
            .expect("apply");
        let reader = store.reader().expect("reader");
        reader.execute_batch("BEGIN").expect("begin");
        let before: i64 = reader
            .query_row("SELECT COUNT(*) FROM entities", [], |r| r.get(0))
            .expect("count");
        // The writer is not blocked by the open read transaction...
        store
            .apply(&batch(vec![user("b", "active")]), &schema())
            .expect("apply");
        // ...and the reader still sees its snapshot until it ends.
        let during: i64 = reader
            .query_row("SELECT COUNT(*) FROM entities", [], |r| r.get(0))
            .expect("count");
        reader.execute_batch("COMMIT").expect("commit");
        let after: i64 = reader
            .query_row("SELECT COUNT(*) FROM entities", [], |r| r.get(0))
            .expect("count");
        assert_eq!((before, during, after), (1, 1, 2));
    }
}
