//! What is known about the trail's integrity, beside the events it vouches for: the digest
//! files read, the log files each lists with its SHA-256, how each listed log file compared,
//! every digest chain's verified-through time, and the anomalies found (tampering, records
//! claiming another account).
//!
//! The collector decides; this module only keeps what it decided, so `tregov status` and
//! `tregov events` can show it without AWS.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::{err, EventStore};
use crate::error::Result;

pub(super) const TABLES: &str = "
    CREATE TABLE IF NOT EXISTS digests (
        key TEXT PRIMARY KEY,
        etag TEXT NOT NULL,
        account TEXT NOT NULL,
        region TEXT NOT NULL,
        trail TEXT NOT NULL,
        backfill INTEGER NOT NULL,
        start_time TEXT NOT NULL,
        end_time TEXT NOT NULL,
        signature TEXT,
        content_sha256 TEXT NOT NULL,
        previous_key TEXT,
        previous_signature TEXT,
        previous_sha256 TEXT,
        problem TEXT,
        read_at TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS digest_entries (
        log_key TEXT NOT NULL,
        digest_key TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        PRIMARY KEY (log_key, digest_key)
    );
    CREATE INDEX IF NOT EXISTS digest_entries_digest ON digest_entries(digest_key);
    CREATE TABLE IF NOT EXISTS log_file_checks (
        key TEXT PRIMARY KEY,
        digest_key TEXT NOT NULL,
        state TEXT NOT NULL,
        actual_sha256 TEXT,
        checked_at TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS trail_chains (
        account TEXT NOT NULL,
        region TEXT NOT NULL,
        trail TEXT NOT NULL,
        verified_through TEXT,
        digests INTEGER NOT NULL,
        problem TEXT,
        checked_at TEXT NOT NULL,
        PRIMARY KEY (account, region, trail)
    );
    CREATE TABLE IF NOT EXISTS trail_anomalies (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        account TEXT NOT NULL,
        region TEXT NOT NULL,
        detail TEXT NOT NULL,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        PRIMARY KEY (kind, key)
    );";

/// The SHA-256 (of the uncompressed content) that `log_files` gained after its first layout.
pub(super) fn add_file_hash_column(conn: &Connection) -> rusqlite::Result<()> {
    let has: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('log_files') WHERE name = 'sha256'",
        [],
        |r| r.get(0),
    )?;
    if !has {
        conn.execute_batch("ALTER TABLE log_files ADD COLUMN sha256 TEXT;")?;
    }
    Ok(())
}

/// How a log file compares with the digest that lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileState {
    /// Listed in a validly signed digest, with the same SHA-256.
    Verified,
    /// Listed in a validly signed digest with another SHA-256: changed after delivery.
    Altered,
    /// Listed in a validly signed digest but no longer in the bucket.
    Missing,
    /// Not (yet) listed in any validly signed digest.
    Unverified,
    /// Not whole when it was read (cut short, over a bound): the records before the damage
    /// are kept, and this marks them.
    Damaged,
}

impl FileState {
    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Verified => "verified",
            FileState::Altered => "altered",
            FileState::Missing => "missing",
            FileState::Unverified => "unverified",
            FileState::Damaged => "damaged",
        }
    }

    /// A stored state; anything else (or nothing) is unverified.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("verified") => FileState::Verified,
            Some("altered") => FileState::Altered,
            Some("missing") => FileState::Missing,
            Some("damaged") => FileState::Damaged,
            _ => FileState::Unverified,
        }
    }
}

impl std::fmt::Display for FileState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One digest file as read, valid or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestRecord {
    pub key: String,
    pub etag: String,
    pub account: String,
    pub region: String,
    pub trail: String,
    /// A backfill digest (`..._backfill.json.gz`) lists late files and is outside the chain.
    pub backfill: bool,
    pub start_time: String,
    pub end_time: String,
    /// The signature (hex) from the object's `signature` metadata.
    pub signature: Option<String>,
    /// SHA-256 (hex) of the uncompressed digest file.
    pub content_sha256: String,
    pub previous_key: Option<String>,
    pub previous_signature: Option<String>,
    pub previous_sha256: Option<String>,
    /// Why the digest is not valid; `None` when its signature checked out.
    pub problem: Option<String>,
}

/// A log file a valid digest lists, with the SHA-256 it had when delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestEntry {
    pub log_key: String,
    pub sha256: String,
}

/// A listed log file to compare, with what the store holds of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryToCheck {
    pub log_key: String,
    pub digest_key: String,
    pub expected: String,
    /// Whether the collector has read the file.
    pub stored: bool,
    /// SHA-256 of the uncompressed file as last read, when it could be read.
    pub stored_sha256: Option<String>,
    /// Why the file as last read could not be read, if it could not.
    pub stored_error: Option<String>,
    /// The state found last time, if it was compared before.
    pub last_state: Option<FileState>,
}

/// The outcome of comparing one listed log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCheck {
    pub key: String,
    pub digest_key: String,
    pub state: FileState,
    pub actual_sha256: Option<String>,
}

/// Where one trail's chain of digests stands, per account and region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainStatus {
    pub account: String,
    pub region: String,
    pub trail: String,
    /// The `digestEndTime` up to which every digest is validly signed, linked to the one
    /// before, and every file it lists is verified.
    pub verified_through: Option<String>,
    pub digests: u64,
    /// What stops the chain from being verified further, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub checked_at: String,
}

/// Something wrong with the trail: tampering, or a record claiming another account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrailAnomaly {
    /// `altered`, `missing`, `bad-signature`, `broken-chain`, `account-mismatch`, ...
    pub kind: String,
    /// The S3 key it is about (and, for a record, `#<eventID>`).
    pub key: String,
    pub account: String,
    pub region: String,
    pub detail: String,
    pub first_seen: String,
    pub last_seen: String,
}

/// How many log files stand in each state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FileCounts {
    pub verified: u64,
    pub altered: u64,
    pub missing: u64,
    pub unverified: u64,
}

/// Everything `tregov status` shows about the trail's integrity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub chains: Vec<ChainStatus>,
    pub files: FileCounts,
    pub anomalies: Vec<TrailAnomaly>,
}

/// Per digest, how many of its files stand in each state (`None`: not compared yet).
pub type EntrySummary = BTreeMap<String, BTreeMap<Option<FileState>, u64>>;

impl EventStore {
    /// The ETag a digest file had when it was last read, if it was.
    pub fn digest_etag(&self, key: &str) -> Result<Option<String>> {
        let conn = self.conn()?;
        conn.query_row(
            "SELECT etag FROM digests WHERE key = ?1",
            params![key],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| err(&self.path, e))
    }

    /// Stores a digest and the files it lists (replacing what an earlier read stored).
    pub fn store_digest(&self, d: &DigestRecord, entries: &[DigestEntry]) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(|e| err(&self.path, e))?;
        (|| -> rusqlite::Result<()> {
            tx.execute(
                "INSERT OR REPLACE INTO digests (key, etag, account, region, trail, backfill,
                   start_time, end_time, signature, content_sha256, previous_key,
                   previous_signature, previous_sha256, problem, read_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                params![
                    d.key,
                    d.etag,
                    d.account,
                    d.region,
                    d.trail,
                    d.backfill,
                    d.start_time,
                    d.end_time,
                    d.signature,
                    d.content_sha256,
                    d.previous_key,
                    d.previous_signature,
                    d.previous_sha256,
                    d.problem,
                    crate::log::now_rfc3339(),
                ],
            )?;
            tx.execute(
                "DELETE FROM digest_entries WHERE digest_key = ?1",
                params![d.key],
            )?;
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO digest_entries (log_key, digest_key, sha256)
                 VALUES (?1, ?2, ?3)",
            )?;
            for e in entries {
                put.execute(params![e.log_key, d.key, e.sha256])?;
            }
            Ok(())
        })()
        .map_err(|e| err(&self.path, e))?;
        tx.commit().map_err(|e| err(&self.path, e))
    }

    /// Every trail chain the store holds digests of: (account, region, trail).
    pub fn digest_chains(&self) -> Result<Vec<(String, String, String)>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare("SELECT DISTINCT account, region, trail FROM digests ORDER BY 1, 2, 3")
            .map_err(|e| err(&self.path, e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| err(&self.path, e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| err(&self.path, e))
    }

    /// One chain's digests (backfills left out), oldest first, with how their files stand.
    pub fn chain_digests(
        &self,
        account: &str,
        region: &str,
        trail: &str,
    ) -> Result<(Vec<DigestRecord>, EntrySummary)> {
        let conn = self.conn()?;
        let digests = (|| -> rusqlite::Result<Vec<DigestRecord>> {
            let mut stmt = conn.prepare(
                "SELECT key, etag, account, region, trail, backfill, start_time, end_time,
                        signature, content_sha256, previous_key, previous_signature,
                        previous_sha256, problem
                 FROM digests WHERE account = ?1 AND region = ?2 AND trail = ?3 AND NOT backfill
                 ORDER BY end_time, key",
            )?;
            let rows = stmt.query_map(params![account, region, trail], digest_row)?;
            rows.collect()
        })()
        .map_err(|e| err(&self.path, e))?;
        let summary = (|| -> rusqlite::Result<EntrySummary> {
            let mut stmt = conn.prepare(
                "SELECT e.digest_key, c.state, COUNT(*) FROM digest_entries e
                 JOIN digests d ON d.key = e.digest_key
                 LEFT JOIN log_file_checks c ON c.key = e.log_key
                 WHERE d.account = ?1 AND d.region = ?2 AND d.trail = ?3
                 GROUP BY 1, 2",
            )?;
            let mut out = EntrySummary::new();
            let rows = stmt.query_map(params![account, region, trail], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (digest, state, n) = row?;
                let state = state.map(|s| FileState::parse(Some(&s)));
                *out.entry(digest).or_default().entry(state).or_default() += n.max(0) as u64;
            }
            Ok(out)
        })()
        .map_err(|e| err(&self.path, e))?;
        Ok((digests, summary))
    }

    /// The listed log files to compare now: never compared, not verified last time, read
    /// again since (their stored hash changed), or among `also` (e.g. gone from a listing).
    pub fn entries_to_check(&self, also: &[String]) -> Result<Vec<EntryToCheck>> {
        let conn = self.conn()?;
        let also = serde_json::to_string(also).unwrap_or_else(|_| "[]".into());
        let mut stmt = conn
            .prepare(
                "SELECT e.log_key, e.digest_key, e.sha256, f.key IS NOT NULL, f.sha256, f.error,
                        c.state
                 FROM digest_entries e
                 JOIN digests d ON d.key = e.digest_key AND d.problem IS NULL
                 LEFT JOIN log_files f ON f.key = e.log_key
                 LEFT JOIN log_file_checks c ON c.key = e.log_key
                 WHERE c.key IS NULL OR c.state != 'verified'
                    OR (f.sha256 IS NOT NULL AND f.sha256 IS NOT c.actual_sha256)
                    OR e.log_key IN (SELECT value FROM json_each(?1))
                 ORDER BY e.log_key",
            )
            .map_err(|e| err(&self.path, e))?;
        let rows = stmt
            .query_map(params![also], |r| {
                Ok(EntryToCheck {
                    log_key: r.get(0)?,
                    digest_key: r.get(1)?,
                    expected: r.get(2)?,
                    stored: r.get(3)?,
                    stored_sha256: r.get(4)?,
                    stored_error: r.get(5)?,
                    last_state: r
                        .get::<_, Option<String>>(6)?
                        .map(|s| FileState::parse(Some(&s))),
                })
            })
            .map_err(|e| err(&self.path, e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| err(&self.path, e))
    }

    /// Records how listed log files compared.
    pub fn set_file_checks(&self, checks: &[FileCheck]) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(|e| err(&self.path, e))?;
        (|| -> rusqlite::Result<()> {
            let now = crate::log::now_rfc3339();
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO log_file_checks (key, digest_key, state, actual_sha256,
                   checked_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for c in checks {
                put.execute(params![
                    c.key,
                    c.digest_key,
                    c.state.as_str(),
                    c.actual_sha256,
                    now
                ])?;
            }
            Ok(())
        })()
        .map_err(|e| err(&self.path, e))?;
        tx.commit().map_err(|e| err(&self.path, e))
    }

    /// The log files read under `prefix` after `after`, in key order.
    pub fn log_keys_under(&self, prefix: &str, after: Option<&str>) -> Result<Vec<String>> {
        let conn = self.conn()?;
        // Keys under a prefix sort between the prefix and the prefix followed by U+FFFF.
        let upper = format!("{prefix}\u{ffff}");
        let lower = after.unwrap_or(prefix);
        let mut stmt = conn
            .prepare("SELECT key FROM log_files WHERE key > ?1 AND key < ?2 ORDER BY key")
            .map_err(|e| err(&self.path, e))?;
        let rows = stmt
            .query_map(params![lower, upper], |r| r.get(0))
            .map_err(|e| err(&self.path, e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| err(&self.path, e))
    }

    /// Records an anomaly; returns whether it is new (not seen before under its kind and key).
    pub fn record_anomaly(
        &self,
        kind: &str,
        key: &str,
        account: &str,
        region: &str,
        detail: &str,
    ) -> Result<bool> {
        let conn = self.conn()?;
        let now = crate::log::now_rfc3339();
        let before: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM trail_anomalies WHERE kind = ?1 AND key = ?2",
                params![kind, key],
                |r| r.get(0),
            )
            .map_err(|e| err(&self.path, e))?;
        conn.execute(
            "INSERT INTO trail_anomalies (kind, key, account, region, detail, first_seen,
               last_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
             ON CONFLICT(kind, key) DO UPDATE SET detail = excluded.detail,
               last_seen = excluded.last_seen",
            params![kind, key, account, region, detail, now],
        )
        .map_err(|e| err(&self.path, e))?;
        Ok(before == 0)
    }

    /// Records where a chain stands.
    pub fn set_chain_status(&self, status: &ChainStatus) -> Result<()> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT OR REPLACE INTO trail_chains (account, region, trail, verified_through,
               digests, problem, checked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                status.account,
                status.region,
                status.trail,
                status.verified_through,
                status.digests as i64,
                status.problem,
                status.checked_at,
            ],
        )
        .map_err(|e| err(&self.path, e))?;
        Ok(())
    }

    /// The trail's integrity as last checked, for `tregov status`.
    pub fn verification(&self) -> Result<Verification> {
        let conn = self.conn()?;
        read_verification(&conn).map_err(|e| err(&self.path, e))
    }
}

fn digest_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DigestRecord> {
    Ok(DigestRecord {
        key: r.get(0)?,
        etag: r.get(1)?,
        account: r.get(2)?,
        region: r.get(3)?,
        trail: r.get(4)?,
        backfill: r.get(5)?,
        start_time: r.get(6)?,
        end_time: r.get(7)?,
        signature: r.get(8)?,
        content_sha256: r.get(9)?,
        previous_key: r.get(10)?,
        previous_signature: r.get(11)?,
        previous_sha256: r.get(12)?,
        problem: r.get(13)?,
    })
}

fn read_verification(conn: &Connection) -> rusqlite::Result<Verification> {
    let chains = {
        let mut stmt = conn.prepare(
            "SELECT account, region, trail, verified_through, digests, problem, checked_at
             FROM trail_chains ORDER BY account, region, trail",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ChainStatus {
                account: r.get(0)?,
                region: r.get(1)?,
                trail: r.get(2)?,
                verified_through: r.get(3)?,
                digests: r.get::<_, i64>(4)?.max(0) as u64,
                problem: r.get(5)?,
                checked_at: r.get(6)?,
            })
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let anomalies = {
        let mut stmt = conn.prepare(
            "SELECT kind, key, account, region, detail, first_seen, last_seen
             FROM trail_anomalies ORDER BY first_seen, kind, key",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(TrailAnomaly {
                kind: r.get(0)?,
                key: r.get(1)?,
                account: r.get(2)?,
                region: r.get(3)?,
                detail: r.get(4)?,
                first_seen: r.get(5)?,
                last_seen: r.get(6)?,
            })
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let mut files = FileCounts::default();
    let mut stmt = conn.prepare(
        "SELECT c.state, COUNT(*) FROM log_files f
         LEFT JOIN log_file_checks c ON c.key = f.key GROUP BY 1",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (state, n) = row?;
        let n = n.max(0) as u64;
        match FileState::parse(state.as_deref()) {
            FileState::Verified => files.verified += n,
            FileState::Altered => files.altered += n,
            FileState::Missing => files.missing += n,
            FileState::Unverified | FileState::Damaged => files.unverified += n,
        }
    }
    // Listed files that were never read (deleted before tregov saw them) count as missing.
    files.missing += conn
        .query_row(
            "SELECT COUNT(*) FROM log_file_checks c
         WHERE c.state = 'missing' AND NOT EXISTS (SELECT 1 FROM log_files f WHERE f.key = c.key)",
            [],
            |r| r.get::<_, i64>(0),
        )?
        .max(0) as u64;
    Ok(Verification {
        chains,
        files,
        anomalies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(key: &str, end: &str) -> DigestRecord {
        DigestRecord {
            key: key.into(),
            etag: "e".into(),
            account: "111111111111".into(),
            region: "eu-west-2".into(),
            trail: "org".into(),
            backfill: false,
            start_time: end.into(),
            end_time: end.into(),
            signature: Some("ab".into()),
            content_sha256: "cd".into(),
            previous_key: None,
            previous_signature: None,
            previous_sha256: None,
            problem: None,
        }
    }

    #[test]
    fn a_listed_file_is_checked_until_verified_and_again_when_read_again() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = EventStore::open(dir.path()).expect("store");
        let entry = DigestEntry {
            log_key: "AWSLogs/1/CloudTrail/r/f1".into(),
            sha256: "aa".into(),
        };
        store
            .store_digest(&digest("d1", "2026-11-20T01:00:00Z"), &[entry])
            .expect("digest");
        let todo = store.entries_to_check(&[]).expect("todo");
        assert_eq!(todo.len(), 1);
        assert!(!todo[0].stored);
        store
            .set_file_checks(&[FileCheck {
                key: todo[0].log_key.clone(),
                digest_key: "d1".into(),
                state: FileState::Verified,
                actual_sha256: Some("aa".into()),
            }])
            .expect("check");
        assert!(store.entries_to_check(&[]).expect("todo").is_empty());
        let again = store
            .entries_to_check(&["AWSLogs/1/CloudTrail/r/f1".into()])
            .expect("todo");
        assert_eq!(again.len(), 1, "asked for by key");
        assert_eq!(again[0].last_state, Some(FileState::Verified));
    }

    #[test]
    fn an_anomaly_is_new_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = EventStore::open(dir.path()).expect("store");
        let once = || {
            store
                .record_anomaly("altered", "k", "111111111111", "eu-west-2", "hash differs")
                .expect("record")
        };
        assert!(once());
        assert!(!once());
        let v = store.verification().expect("verification");
        assert_eq!(v.anomalies.len(), 1);
        assert_eq!(v.anomalies[0].kind, "altered");
    }
}
