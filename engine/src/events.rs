//! CloudTrail events and collector bookkeeping, in the same SQLite database as the entities.
//!
//! Each log file is ingested in one transaction together with the record that it was read,
//! so a crash mid-file leaves neither half a file nor a file marked read that was not; events
//! are keyed by `eventID`, so a file read twice adds nothing.
//!
//! Layout, chosen by measurement (`cargo bench -p tregov-benches --bench ingest`): rows are
//! appended in insertion order and found through one unique index on a 64-bit hash of the
//! `eventID` (collisions probe to the next key), inserted in key order per batch. A time
//! index cost a quarter of ingest time, so `--since` filters scan; an `eventID` text key and
//! a table clustered on the hash were both slower.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::collect::RunReport;
use crate::error::{EngineError, Result};

mod integrity;
pub use integrity::{
    ChainStatus, DigestEntry, DigestRecord, EntrySummary, EntryToCheck, FileCheck, FileCounts,
    FileState, TrailAnomaly, Verification,
};

/// One event as stored: the fields tregov queries, plus the record as delivered.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StoredEvent {
    #[serde(rename = "eventID")]
    pub event_id: String,
    #[serde(rename = "eventTime")]
    pub event_time: String,
    /// `event_time` as seconds since the epoch, when it is a valid RFC 3339 time (see
    /// `timestamp`); computed by whoever builds the event, off the store's writer thread.
    #[serde(skip)]
    pub event_ts: Option<i64>,
    #[serde(rename = "eventSource")]
    pub event_source: String,
    #[serde(rename = "eventName")]
    pub event_name: String,
    pub principal: String,
    pub account: String,
    pub region: String,
    #[serde(rename = "sourceFile")]
    pub source_file: String,
    /// The governance-relevant kind of change, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observation: Option<ObservationKind>,
    /// What the change was made to (role name, instance id, LF resource, S3 key...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The record's position in its file (which is kept as delivered).
    #[serde(rename = "recordIndex")]
    pub record_index: u64,
    /// The record exactly as delivered (JSON text), kept inline for observations; every
    /// other record is read back from its stored file (`EventStore::file_body`).
    #[serde(skip)]
    pub raw: Option<String>,
}

/// A kind of governed change the trail can show, recognised from an event's source and name.
/// Stored as its kebab-case name; the collectors that re-read after each kind say so
/// themselves (`collect::Collector::answers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObservationKind {
    IamRoleChange,
    LakeformationGrant,
    LakeformationRevoke,
    WorkspaceLifecycle,
    EgressStoreWrite,
    BudgetChange,
    TrailChange,
    /// An edit of an AWS Backup plan or its selections.
    BackupPlanChange,
}

impl ObservationKind {
    pub const ALL: [ObservationKind; 8] = [
        ObservationKind::IamRoleChange,
        ObservationKind::LakeformationGrant,
        ObservationKind::LakeformationRevoke,
        ObservationKind::WorkspaceLifecycle,
        ObservationKind::EgressStoreWrite,
        ObservationKind::BudgetChange,
        ObservationKind::TrailChange,
        ObservationKind::BackupPlanChange,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ObservationKind::IamRoleChange => "iam-role-change",
            ObservationKind::LakeformationGrant => "lakeformation-grant",
            ObservationKind::LakeformationRevoke => "lakeformation-revoke",
            ObservationKind::WorkspaceLifecycle => "workspace-lifecycle",
            ObservationKind::EgressStoreWrite => "egress-store-write",
            ObservationKind::BudgetChange => "budget-change",
            ObservationKind::TrailChange => "trail-change",
            ObservationKind::BackupPlanChange => "backup-plan-change",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for ObservationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A governed change recorded in the trail.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObservedChange {
    pub kind: ObservationKind,
    pub account: String,
    /// What it changed, when the record said (role name, principal ARNs, instance ids...).
    pub target: Option<String>,
}

/// A log file as the collector saw it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileOutcome {
    pub key: String,
    pub etag: String,
    pub events: u64,
    pub new_events: u64,
    /// Why the file could not be read, if it could not.
    pub error: Option<String>,
}

/// A log file as delivered (gzip), kept so every record can be read back exactly.
pub enum FileBody<'a> {
    /// Not kept: an unreadable file, or a test's.
    Absent,
    Bytes(&'a [u8]),
    /// Copied from `read` into the store a megabyte at a time, so a large file is never held
    /// in memory; `len` is exactly how many bytes `read` gives.
    Stream {
        len: u64,
        read: &'a mut (dyn std::io::Read + Send),
    },
}

/// One file's part of a batch written by `EventStore::ingest_files`: some or all of its
/// events, and, once it has been read to its end, the mark that it was.
pub struct FileBatch<'a> {
    pub key: &'a str,
    pub events: &'a [StoredEvent],
    /// `None` while the file is still being read: its events so far are stored and the file
    /// is not marked read, so a crash before its end reads it again (adding nothing twice).
    pub end: Option<FileEnd<'a>>,
}

/// How reading a file ended.
pub struct FileEnd<'a> {
    pub etag: &'a str,
    pub body: FileBody<'a>,
    /// Records in the whole file (its earlier batches included).
    pub records: u64,
    /// Why the file is not whole or not readable; its events before the damage are kept.
    pub error: Option<&'a str>,
    /// SHA-256 (hex) of the uncompressed file, which digest files vouch for.
    pub sha256: Option<&'a str>,
}

/// The row of a file still being read: created as unread (no ETag, so the next listing
/// reads it again) unless an earlier version's row is there, which stays as it is until the
/// new version is read to its end.
fn file_being_read(tx: &Connection, key: &str, now: &str) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "INSERT INTO log_files (key, etag, events, error, read_at) VALUES (?1, '', 0, ?2, ?3)
         ON CONFLICT(key) DO NOTHING",
    )?
    .execute(params![key, "still being read", now])?;
    tx.prepare_cached("SELECT id FROM log_files WHERE key = ?1")?
        .query_row(params![key], |r| r.get(0))
}

/// Marks a file read, with its body. A file already in the store (read in batches, or an
/// earlier version) moves to a new id, so `observations_after` sees its events as new.
fn file_read(
    tx: &Connection,
    key: &str,
    end: &mut FileEnd<'_>,
    now: &str,
) -> rusqlite::Result<i64> {
    let earlier: Option<i64> = tx
        .prepare_cached("SELECT id FROM log_files WHERE key = ?1")?
        .query_row(params![key], |r| r.get(0))
        .optional()?;
    if let Some(old) = earlier {
        // Rare (a file over `CHUNK_EVENTS` records, or one whose ETag changed): the scan of
        // `events` this costs is not worth an index every insert would pay for.
        let id: i64 = tx.query_row("SELECT MAX(id) + 1 FROM log_files", [], |r| r.get(0))?;
        tx.execute(
            "UPDATE log_files SET id = ?1 WHERE id = ?2",
            params![id, old],
        )?;
        tx.execute(
            "UPDATE events SET file_id = ?1 WHERE file_id = ?2",
            params![id, old],
        )?;
    }
    let mut mark = tx.prepare_cached(
        "INSERT INTO log_files (key, etag, events, error, read_at, body, sha256)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(key) DO UPDATE SET etag = excluded.etag, events = excluded.events,
           error = excluded.error, read_at = excluded.read_at, body = excluded.body,
           sha256 = excluded.sha256
         RETURNING id",
    )?;
    let mut row = |body: &dyn rusqlite::ToSql| -> rusqlite::Result<i64> {
        mark.query_row(
            params![
                key,
                end.etag,
                end.records as i64,
                end.error,
                now,
                body,
                end.sha256
            ],
            |r| r.get(0),
        )
    };
    match &mut end.body {
        FileBody::Absent => row(&Option::<&[u8]>::None),
        FileBody::Bytes(bytes) => row(bytes),
        FileBody::Stream { len, read } => {
            let id = row(&rusqlite::blob::ZeroBlob(*len))?;
            let mut blob = tx.blob_open(rusqlite::MAIN_DB, "log_files", "body", id, false)?;
            std::io::copy(read, &mut blob)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            Ok(id)
        }
    }
}

/// What a collector did on its last run.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CollectorStatus {
    pub collector: String,
    pub last_run: Option<String>,
    pub items: u64,
    pub errors: Vec<String>,
    /// Whether the last run read everything it lists (no account or page failed).
    pub complete: bool,
    /// Why the last listing was held back rather than replacing what the store holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// When a run last completed and was written whole.
    pub last_complete: Option<String>,
}

pub struct EventStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    checkpointer: Option<Checkpointer>,
    /// `event_key`, except in tests that force collisions.
    key_of: fn(&str) -> i64,
}

/// Copies committed WAL pages into the database file on its own thread and connection, so
/// the writer never waits for that copy and its fsync (which took a third of ingest time when
/// SQLite did it inside commits).
struct Checkpointer {
    nudge: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Option<Self> {
        let conn = match Connection::open(path) {
            Ok(conn) => conn,
            Err(error) => {
                // The writer's own automatic checkpoint still bounds the WAL.
                tracing::warn!(path = %path.display(), %error, "background checkpoints disabled");
                return None;
            }
        };
        let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
        let (nudge, nudged) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("tregov-checkpoint".into())
            .spawn(move || {
                use std::sync::mpsc::RecvTimeoutError;
                loop {
                    let last = match nudged.recv_timeout(std::time::Duration::from_secs(2)) {
                        Ok(()) => false,
                        Err(RecvTimeoutError::Timeout) => false,
                        Err(RecvTimeoutError::Disconnected) => true,
                    };
                    if let Err(error) =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::debug!(%error, "background checkpoint skipped");
                    }
                    if last {
                        break;
                    }
                }
            })
            .ok()?;
        Some(Self {
            nudge: Some(nudge),
            thread: Some(thread),
        })
    }

    fn nudge(&self) {
        if let Some(nudge) = &self.nudge {
            // A full channel means a checkpoint is already due.
            let _ = nudge.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.nudge.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const STORE_FILE: &str = "store.sqlite3";

impl EventStore {
    pub fn open(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(|e| EngineError::io(data_dir, e))?;
        let path = data_dir.join(STORE_FILE);
        let conn = Connection::open(&path).map_err(|e| err(&path, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(|e| err(&path, e))?;
        let earlier_layout = events_table_lacks_key(&conn).map_err(|e| err(&path, e))?;
        if earlier_layout {
            // Stores written before events were keyed by hash: set the rows aside, create the
            // current layout, and move them over below.
            conn.execute_batch("ALTER TABLE events RENAME TO events_v1;")
                .map_err(|e| err(&path, e))?;
        }
        // Events and read marks are re-derivable from the trail's bucket and are committed
        // together, so NORMAL suffices: a commit survives a killed process, and a power loss
        // can only lose marks together with their events, which are then read again.
        conn.execute_batch(
            // 16 KiB pages (new stores only; an existing store keeps its size): a quarter of
            // the B-tree pages and WAL frames per event, and a file body in one or two pages
            // instead of seven. Storing took 0.29-0.34 s per 100k events instead of 0.40.
            "PRAGMA page_size = 16384;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA cache_size = -65536;
             PRAGMA wal_autocheckpoint = 20000;
             PRAGMA journal_size_limit = 67108864;
             CREATE TABLE IF NOT EXISTS events (
                 key INTEGER NOT NULL,
                 event_id TEXT NOT NULL,
                 event_ts INTEGER,
                 event_time TEXT NOT NULL,
                 event_source TEXT NOT NULL,
                 event_name TEXT NOT NULL,
                 principal TEXT NOT NULL,
                 account TEXT NOT NULL,
                 region TEXT NOT NULL,
                 file_id INTEGER NOT NULL,
                 record_index INTEGER NOT NULL,
                 observation TEXT,
                 target TEXT,
                 raw TEXT
             );
             CREATE UNIQUE INDEX IF NOT EXISTS events_key ON events(key);
             CREATE INDEX IF NOT EXISTS events_observation ON events(observation)
                 WHERE observation IS NOT NULL;
             CREATE TABLE IF NOT EXISTS log_files (
                 id INTEGER PRIMARY KEY,
                 key TEXT NOT NULL UNIQUE,
                 etag TEXT NOT NULL,
                 events INTEGER NOT NULL,
                 error TEXT,
                 read_at TEXT NOT NULL,
                 body BLOB
             );
             CREATE TABLE IF NOT EXISTS checkpoints (
                 prefix TEXT PRIMARY KEY,
                 last_key TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS collector_runs (
                 collector TEXT PRIMARY KEY,
                 last_run TEXT NOT NULL,
                 items INTEGER NOT NULL,
                 errors TEXT NOT NULL
             );",
        )
        .map_err(|e| err(&path, e))?;
        add_run_columns(&conn).map_err(|e| err(&path, e))?;
        conn.execute_batch(integrity::TABLES)
            .map_err(|e| err(&path, e))?;
        integrity::add_file_hash_column(&conn).map_err(|e| err(&path, e))?;
        if earlier_layout {
            migrate_v1(&conn).map_err(|e| err(&path, e))?;
            tracing::info!(path = %path.display(), "events moved to the hash-keyed layout");
        }
        let checkpointer = Checkpointer::start(&path);
        Ok(Self {
            path,
            conn: Mutex::new(conn),
            checkpointer,
            key_of: event_key,
        })
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>> {
        self.conn.lock().map_err(|_| EngineError::Store {
            path: self.path.display().to_string(),
            message: "event store connection poisoned by an earlier panic".into(),
        })
    }

    /// The ETag a log file had when it was last read, if it was.
    pub fn file_etag(&self, key: &str) -> Result<Option<String>> {
        let conn = self.conn()?;
        conn.query_row(
            "SELECT etag FROM log_files WHERE key = ?1",
            params![key],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| err(&self.path, e))
    }

    /// Stores a file's events and marks the file read, atomically. Returns how many events
    /// were new.
    pub fn ingest_file(
        &self,
        key: &str,
        etag: &str,
        events: &[StoredEvent],
        error: Option<&str>,
    ) -> Result<u64> {
        self.ingest_files(&mut [FileBatch {
            key,
            events,
            end: Some(FileEnd {
                etag,
                body: FileBody::Absent,
                records: events.len() as u64,
                error,
                sha256: None,
            }),
        }])
    }

    /// Stores several files' events with their read marks in one transaction: a batch
    /// touches each index page once instead of once per file. Returns how many events were
    /// new.
    pub fn ingest_files(&self, files: &mut [FileBatch<'_>]) -> Result<u64> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(|e| err(&self.path, e))?;
        let new = (|| -> rusqlite::Result<u64> {
            let mut new = 0u64;
            let mut put = tx.prepare_cached(
                "INSERT OR IGNORE INTO events (key, event_id, event_ts, event_time, event_source,
                   event_name, principal, account, region, file_id, record_index, observation,
                   target, raw)
                 VALUES (?14, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?;
            let mut holder = tx.prepare_cached("SELECT event_id FROM events WHERE key = ?1")?;
            let now = crate::log::now_rfc3339();
            // The files' rows first: events refer to them by id rather than repeating the key.
            // A file can come twice (a batch of its events, then its end), and its end may
            // move its row: every event takes its file's id as it is once all rows are in.
            let mut ids: std::collections::HashMap<&str, i64> = Default::default();
            for f in files.iter_mut() {
                let id = match &mut f.end {
                    None => file_being_read(&tx, f.key, &now)?,
                    Some(end) => file_read(&tx, f.key, end, &now)?,
                };
                ids.insert(f.key, id);
            }
            let mut pending: Vec<(i64, i64, &StoredEvent)> = Vec::new();
            for f in files.iter() {
                let file_id = ids.get(f.key).copied().unwrap_or_default();
                pending.extend(
                    f.events
                        .iter()
                        .map(|e| ((self.key_of)(&e.event_id), file_id, e)),
                );
            }
            // Event ids are random, so inserting them in key order walks the id index once
            // from left to right instead of touching a random page for each event.
            pending.sort_unstable_by_key(|p| p.0);
            for (mut key, file_id, e) in pending {
                // Open addressing: a different event at this key (a 64-bit collision) moves
                // this one to the next free key; the same event is a duplicate.
                loop {
                    let added = put.execute(params![
                        e.event_id,
                        e.event_ts,
                        e.event_time,
                        e.event_source,
                        e.event_name,
                        e.principal,
                        e.account,
                        e.region,
                        file_id,
                        e.record_index as i64,
                        e.observation.map(ObservationKind::as_str),
                        e.target,
                        e.raw,
                        key
                    ])?;
                    if added == 1 {
                        new += 1;
                        break;
                    }
                    let there: String = holder.query_row(params![key], |r| r.get(0))?;
                    if there == e.event_id {
                        break;
                    }
                    key = key.wrapping_add(1);
                }
            }
            Ok(new)
        })()
        .map_err(|e| err(&self.path, e))?;
        tx.commit().map_err(|e| err(&self.path, e))?;
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.nudge();
        }
        Ok(new)
    }

    /// The newest log file's row id: a mark to ask `observations_after` from.
    pub fn last_file_id(&self) -> Result<i64> {
        let conn = self.conn()?;
        conn.query_row("SELECT COALESCE(MAX(id), 0) FROM log_files", [], |r| {
            r.get(0)
        })
        .map_err(|e| err(&self.path, e))
    }

    /// The governed changes seen in files read after `file_id` (kind, account, target), with
    /// the newest file id (the mark for the next call).
    pub fn observations_after(&self, file_id: i64) -> Result<(Vec<ObservedChange>, i64)> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(
                "SELECT DISTINCT observation, account, target FROM events
                 WHERE observation IS NOT NULL AND file_id > ?1
                 ORDER BY observation, account, target",
            )
            .map_err(|e| err(&self.path, e))?;
        let rows = stmt
            .query_map(params![file_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })
            .map_err(|e| err(&self.path, e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| err(&self.path, e))?;
        // A kind this version does not know (written by a newer one) governs nothing here.
        let changes = rows
            .into_iter()
            .filter_map(|(kind, account, target)| {
                Some(ObservedChange {
                    kind: ObservationKind::parse(&kind)?,
                    account,
                    target,
                })
            })
            .collect();
        drop(stmt);
        drop(conn);
        Ok((changes, self.last_file_id()?.max(file_id)))
    }

    /// A stored log file as delivered (gzip), if it was kept.
    pub fn file_body(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let conn = self.conn()?;
        conn.query_row(
            "SELECT body FROM log_files WHERE key = ?1",
            params![key],
            |r| r.get::<_, Option<Vec<u8>>>(0),
        )
        .optional()
        .map(Option::flatten)
        .map_err(|e| err(&self.path, e))
    }

    /// The last key read under a listing prefix.
    pub fn checkpoint(&self, prefix: &str) -> Result<Option<String>> {
        let conn = self.conn()?;
        conn.query_row(
            "SELECT last_key FROM checkpoints WHERE prefix = ?1",
            params![prefix],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| err(&self.path, e))
    }

    /// Moves a prefix's checkpoint forward (never back).
    pub fn advance_checkpoint(&self, prefix: &str, key: &str) -> Result<()> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO checkpoints (prefix, last_key) VALUES (?1, ?2)
             ON CONFLICT(prefix) DO UPDATE SET last_key = excluded.last_key
             WHERE excluded.last_key > checkpoints.last_key",
            params![prefix, key],
        )
        .map_err(|e| err(&self.path, e))?;
        Ok(())
    }

    /// Files that could not be read, with why.
    pub fn file_errors(&self) -> Result<Vec<(String, String)>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare("SELECT key, error FROM log_files WHERE error IS NOT NULL ORDER BY key")
            .map_err(|e| err(&self.path, e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| err(&self.path, e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| err(&self.path, e))
    }

    pub fn count(&self, filter: &EventFilter) -> Result<u64> {
        let (clause, args) = filter.sql();
        let conn = self.conn()?;
        conn.query_row(
            &format!("SELECT COUNT(*) FROM events{clause}"),
            rusqlite::params_from_iter(args.iter()),
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n.max(0) as u64)
        .map_err(|e| err(&self.path, e))
    }

    pub fn list(&self, filter: &EventFilter, limit: Option<u64>) -> Result<Vec<StoredEvent>> {
        Ok(self
            .list_checked(filter, limit)?
            .into_iter()
            .map(|(e, _)| e)
            .collect())
    }

    /// `list`, each event with how its file compared with the trail's digests (or that the
    /// file was damaged).
    pub fn list_checked(
        &self,
        filter: &EventFilter,
        limit: Option<u64>,
    ) -> Result<Vec<(StoredEvent, FileState)>> {
        let (clause, args) = filter.sql();
        let conn = self.conn()?;
        let limit = limit.map(|l| format!(" LIMIT {l}")).unwrap_or_default();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT event_id, event_time, event_source, event_name, principal, account,
                        region, (SELECT key FROM log_files WHERE id = file_id), record_index,
                        observation, target, raw, event_ts,
                        (SELECT CASE WHEN f.error IS NULL THEN c.state ELSE 'damaged' END
                         FROM log_files f LEFT JOIN log_file_checks c ON c.key = f.key
                         WHERE f.id = file_id)
                 FROM events{clause} ORDER BY event_ts, event_time, event_id{limit}"
            ))
            .map_err(|e| err(&self.path, e))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                let state = FileState::parse(r.get::<_, Option<String>>(13)?.as_deref());
                let event = StoredEvent {
                    event_id: r.get(0)?,
                    event_time: r.get(1)?,
                    event_ts: r.get(12)?,
                    event_source: r.get(2)?,
                    event_name: r.get(3)?,
                    principal: r.get(4)?,
                    account: r.get(5)?,
                    region: r.get(6)?,
                    source_file: r.get(7)?,
                    record_index: r.get::<_, i64>(8)?.max(0) as u64,
                    observation: r
                        .get::<_, Option<String>>(9)?
                        .as_deref()
                        .and_then(ObservationKind::parse),
                    target: r.get(10)?,
                    raw: r.get(11)?,
                };
                Ok((event, state))
            })
            .map_err(|e| err(&self.path, e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| err(&self.path, e))
    }

    /// Records what a collector's run did, for `tregov status` and the lag metric.
    pub fn record_run(&self, report: &RunReport) -> Result<()> {
        let conn = self.conn()?;
        let now = crate::log::now_rfc3339();
        conn.execute(
            "INSERT INTO collector_runs (collector, last_run, items, errors, complete, held,
               last_complete)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, CASE WHEN ?7 THEN ?2 END)
             ON CONFLICT(collector) DO UPDATE SET last_run = excluded.last_run,
               items = excluded.items, errors = excluded.errors, complete = excluded.complete,
               held = excluded.held,
               last_complete = COALESCE(excluded.last_complete, collector_runs.last_complete)",
            params![
                report.collector,
                now,
                report.items as i64,
                serde_json::to_string(&report.errors).unwrap_or_else(|_| "[]".into()),
                report.complete,
                report.held,
                !report.degraded(),
            ],
        )
        .map_err(|e| err(&self.path, e))?;
        Ok(())
    }

    pub fn statuses(&self) -> Result<Vec<CollectorStatus>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(
                "SELECT collector, last_run, items, errors, complete, held, last_complete
                 FROM collector_runs ORDER BY collector",
            )
            .map_err(|e| err(&self.path, e))?;
        let rows = stmt
            .query_map([], |r| {
                let errors: String = r.get(3)?;
                Ok(CollectorStatus {
                    collector: r.get(0)?,
                    last_run: r.get(1)?,
                    items: r.get::<_, i64>(2)?.max(0) as u64,
                    errors: serde_json::from_str(&errors).unwrap_or_default(),
                    complete: r.get(4)?,
                    held: r.get(5)?,
                    last_complete: r.get(6)?,
                })
            })
            .map_err(|e| err(&self.path, e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| err(&self.path, e))
    }
}

/// Which events to count or list.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Events at or after this time (RFC 3339). Events whose own time is not a valid
    /// timestamp never match a time filter.
    pub since: Option<String>,
    /// Events whose principal contains this text.
    pub principal: Option<String>,
    /// Events with exactly this name.
    pub name: Option<String>,
    /// Events with this account.
    pub account: Option<String>,
    /// Only events that made a governed change (what the daemon reverts or answers).
    pub governed_only: bool,
}

impl EventFilter {
    fn sql(&self) -> (String, Vec<String>) {
        let mut parts = Vec::new();
        let mut args = Vec::new();
        if let Some(s) = &self.since {
            // An unparsable `since` matches nothing rather than everything.
            args.push(timestamp(s).unwrap_or(i64::MAX).to_string());
            parts.push(format!("event_ts >= CAST(?{} AS INTEGER)", args.len()));
        }
        if let Some(p) = &self.principal {
            args.push(format!("%{p}%"));
            parts.push(format!("principal LIKE ?{}", args.len()));
        }
        if let Some(n) = &self.name {
            args.push(n.clone());
            parts.push(format!("event_name = ?{}", args.len()));
        }
        if let Some(a) = &self.account {
            args.push(a.clone());
            parts.push(format!("account = ?{}", args.len()));
        }
        if self.governed_only {
            parts.push("observation IS NOT NULL".to_string());
        }
        if parts.is_empty() {
            (String::new(), args)
        } else {
            (format!(" WHERE {}", parts.join(" AND ")), args)
        }
    }
}

/// Whether `events` exists in its first layout (keyed by the `eventID` text).
/// The columns `collector_runs` gained after its first layout (stores of that layout keep
/// their rows; the new columns start unknown).
fn add_run_columns(conn: &Connection) -> rusqlite::Result<()> {
    let columns: Vec<String> = {
        let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('collector_runs')")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for (name, ddl) in [
        ("complete", "complete INTEGER NOT NULL DEFAULT 1"),
        ("held", "held TEXT"),
        ("last_complete", "last_complete TEXT"),
    ] {
        if !columns.iter().any(|c| c == name) {
            conn.execute_batch(&format!("ALTER TABLE collector_runs ADD COLUMN {ddl};"))?;
        }
    }
    Ok(())
}

fn events_table_lacks_key(conn: &Connection) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('events')")?;
    let columns = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(!columns.is_empty() && !columns.iter().any(|c| c == "key"))
}

/// Moves every event of the first layout into the current one, in one transaction.
fn migrate_v1(conn: &Connection) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    let ids: Vec<String> = {
        let mut stmt = tx.prepare("SELECT event_id FROM events_v1")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    {
        let mut copy = tx.prepare(
            "INSERT OR IGNORE INTO events (key, event_id, event_ts, event_time, event_source,
               event_name, principal, account, region, file_id, record_index, observation,
               target, raw)
             SELECT ?2, event_id, event_ts, event_time, event_source, event_name, principal,
               account, region, file_id, record_index, observation, target, raw
             FROM events_v1 WHERE event_id = ?1",
        )?;
        let mut holder = tx.prepare("SELECT event_id FROM events WHERE key = ?1")?;
        for id in &ids {
            let mut key = event_key(id);
            while copy.execute(params![id, key])? == 0 {
                let there: String = holder.query_row(params![key], |r| r.get(0))?;
                if &there == id {
                    break;
                }
                key = key.wrapping_add(1);
            }
        }
    }
    // The old table took its indexes with it when renamed; the names are free again now.
    tx.execute_batch(
        "DROP TABLE events_v1;
         CREATE INDEX IF NOT EXISTS events_observation ON events(observation)
             WHERE observation IS NOT NULL;",
    )?;
    tx.commit()
}

/// The stored key of an event id: FNV-1a, 64 bits. Stable across versions (it is on disk);
/// collisions are resolved by probing in `ingest_files`.
fn event_key(event_id: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in event_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// Seconds since the epoch of an RFC 3339 time; `None` for anything else.
pub fn timestamp(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

fn err(path: &Path, e: rusqlite::Error) -> EngineError {
    EngineError::Store {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, time: &str, index: u64) -> StoredEvent {
        StoredEvent {
            event_id: id.into(),
            event_time: time.into(),
            event_ts: timestamp(time),
            event_source: "s3.amazonaws.com".into(),
            event_name: "GetObject".into(),
            principal: "arn:aws:sts::111111111111:assumed-role/r/alice".into(),
            account: "111111111111".into(),
            region: "eu-west-2".into(),
            source_file: String::new(),
            observation: None,
            target: None,
            record_index: index,
            raw: None,
        }
    }

    #[test]
    fn an_event_delivered_in_two_files_is_stored_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = EventStore::open(dir.path()).expect("store");
        let a = [
            event("e1", "2026-11-20T10:00:00Z", 0),
            event("e2", "2026-11-20T11:00:00Z", 1),
        ];
        let b = [
            event("e2", "2026-11-20T11:00:00Z", 0),
            event("e3", "2026-11-21T09:00:00Z", 1),
        ];
        assert_eq!(store.ingest_file("f1", "x", &a, None).expect("f1"), 2);
        assert_eq!(store.ingest_file("f2", "y", &b, None).expect("f2"), 1);
        assert_eq!(store.ingest_file("f2", "y", &b, None).expect("again"), 0);
        assert_eq!(store.count(&EventFilter::default()).expect("count"), 3);
        let listed = store.list(&EventFilter::default(), None).expect("list");
        assert_eq!(listed[2].source_file, "f2");
        assert_eq!(listed[2].record_index, 1);
    }

    #[test]
    fn events_whose_keys_collide_are_all_kept_and_still_stored_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut store = EventStore::open(dir.path()).expect("store");
        // Every id hashes to the same key: each new event probes past the others.
        store.key_of = |_| 42;
        let first = [
            event("a", "2026-11-20T10:00:00Z", 0),
            event("b", "2026-11-20T11:00:00Z", 1),
            event("a", "2026-11-20T10:00:00Z", 2),
        ];
        let second = [
            event("c", "2026-11-20T12:00:00Z", 0),
            event("b", "2026-11-20T11:00:00Z", 1),
        ];
        assert_eq!(store.ingest_file("f1", "x", &first, None).expect("f1"), 2);
        assert_eq!(store.ingest_file("f2", "y", &second, None).expect("f2"), 1);
        let ids: Vec<String> = store
            .list(&EventFilter::default(), None)
            .expect("list")
            .into_iter()
            .map(|e| e.event_id)
            .collect();
        assert_eq!(ids, vec!["a", "b", "c"]);
    }

    #[test]
    fn a_store_of_the_first_layout_keeps_its_events() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let conn = Connection::open(dir.path().join(STORE_FILE)).expect("db");
            conn.execute_batch(
                "CREATE TABLE events (event_id TEXT PRIMARY KEY, event_ts INTEGER,
                   event_time TEXT NOT NULL, event_source TEXT NOT NULL, event_name TEXT NOT NULL,
                   principal TEXT NOT NULL, account TEXT NOT NULL, region TEXT NOT NULL,
                   file_id INTEGER NOT NULL, record_index INTEGER NOT NULL, observation TEXT,
                   target TEXT, raw TEXT);
                 CREATE INDEX events_ts ON events(event_ts);
                 INSERT INTO events VALUES ('old-1', 0, '1970-01-01T00:00:00Z', 's', 'n', 'p',
                   '111111111111', 'eu-west-2', 1, 0, NULL, NULL, NULL);",
            )
            .expect("first layout");
        }
        let store = EventStore::open(dir.path()).expect("store");
        assert_eq!(store.count(&EventFilter::default()).expect("count"), 1);
        let again = [event("old-1", "1970-01-01T00:00:00Z", 0)];
        assert_eq!(
            store.ingest_file("f", "x", &again, None).expect("ingest"),
            0
        );
        let conn = Connection::open(dir.path().join(STORE_FILE)).expect("db");
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'")
            .expect("query")
            .query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<rusqlite::Result<_>>()
            .expect("names");
        assert!(
            indexes.contains(&"events_observation".to_string()),
            "{indexes:?}"
        );
        assert!(indexes.contains(&"events_key".to_string()), "{indexes:?}");
    }

    #[test]
    fn event_keys_are_stable_across_versions() {
        // Stored on disk: a change here would double every event already collected.
        assert_eq!(event_key(""), 0xcbf2_9ce4_8422_2325_u64 as i64);
        assert_eq!(event_key("a"), 0xaf63_dc4c_8601_ec8c_u64 as i64);
    }

    #[test]
    fn time_filters_compare_instants_and_skip_events_with_odd_times() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = EventStore::open(dir.path()).expect("store");
        let events = [
            event("a", "2026-11-20T23:30:00-02:00", 0), // 2026-11-21T01:30Z
            event("b", "2026-11-20T12:00:00Z", 1),
            event("c", "1700000000", 2),
        ];
        store.ingest_file("f", "x", &events, None).expect("ingest");
        let since = |s: &str| {
            store
                .count(&EventFilter {
                    since: Some(s.into()),
                    ..Default::default()
                })
                .expect("count")
        };
        assert_eq!(since("2026-11-21T00:00:00Z"), 1);
        assert_eq!(since("2026-11-01T00:00:00Z"), 2);
        assert_eq!(since("not a time"), 0);
    }
}
