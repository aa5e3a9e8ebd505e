//! The tamper-evident decision log.
//!
//! Append-only JSON-lines segments under `<data-dir>/log/`. Each record carries its sequence
//! number, the SHA-256 of the previous record (`prev`) and its own SHA-256 (`hash`, over the
//! record without that field), so a changed byte, a deleted record or two swapped records
//! break the chain at a place `verify` names. `HEAD` records the last sequence and hash, so
//! records cut from the end are caught too; `tregov log head` prints it so auditors can keep
//! it elsewhere, as CloudTrail digest files are kept.
//!
//! Policy sets are stored content-addressed under `log/policies/<version>.json`, so any
//! logged decision can be re-evaluated with the exact policies that made it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::ops::ControlFlow;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{EngineError, Result};
use crate::policies::{version_of, PolicySource};

mod commit;
mod lock;

const SEGMENT_PREFIX: &str = "segment-";
const SEGMENT_SUFFIX: &str = ".jsonl";
const MAX_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// `,"hash":"` + 64 hex digits + `"}`
const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;
/// How long `HEAD` may trail the records of `append_trailing_head` while appends keep
/// coming; a writer that goes quiet catches it up (`catch_up_head`).
pub const HEAD_LAG: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

/// A policy version as stored content-addressed in the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredPolicySet {
    pub version: String,
    pub schema: Option<PolicySource>,
    pub sources: Vec<PolicySource>,
}

pub struct DecisionLog {
    dir: PathBuf,
    commits: commit::GroupCommit,
    append_lock: lock::AppendLock,
    /// Where this process's last write left the log, so the next need not read it back.
    written: std::sync::Mutex<Option<WrittenTail>>,
}

/// The last segment as a write leaves it: the segment, still open, its length and last
/// record, and the last record `HEAD` names.
struct WrittenTail {
    segment: PathBuf,
    /// The segment's inode: a file put in its place is another file.
    inode: u64,
    /// Open for appending; `None` until the first write to it.
    file: Option<File>,
    len: u64,
    head: Head,
    /// The sequence number `HEAD` was last written with, and when; `None` if not by us.
    head_written: Option<(u64, Instant)>,
}

impl WrittenTail {
    fn head_behind(&self) -> bool {
        self.head_written.map(|(seq, _)| seq) != Some(self.head.seq)
    }
}

/// When a write brings `HEAD` up to its last record.
#[derive(Clone, Copy, PartialEq)]
enum HeadWhen {
    Always,
    /// Once `HEAD_LAG` has passed since it was last written.
    Due,
}

/// One record to append: its fields, and the entity slice of a decision as texts rendered
/// once per entity (`Engine::decision_record`), written into the line as they are.
#[derive(Debug, Clone, Default)]
pub struct LogRecord {
    fields: Map<String, Value>,
    slice: Option<Arc<[Arc<str>]>>,
}

impl LogRecord {
    /// `fields` with `slice`, each element the JSON text of one entity.
    pub fn with_slice(mut fields: Map<String, Value>, slice: impl Into<Arc<[Arc<str>]>>) -> Self {
        fields.remove("slice");
        Self {
            fields,
            slice: Some(slice.into()),
        }
    }

    /// Sets a field; setting `slice` replaces the rendered one.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        if key == "slice" {
            self.slice = None;
        }
        self.fields.insert(key, value);
    }

    /// The record as one JSON object (the slice parsed back), as it will read in the log.
    pub fn to_map(&self) -> Map<String, Value> {
        let mut m = self.fields.clone();
        if let Some(slice) = &self.slice {
            let parsed = slice
                .iter()
                .map(|t| serde_json::from_str(t).unwrap_or(Value::Null))
                .collect();
            m.insert("slice".into(), Value::Array(parsed));
        }
        m
    }
}

impl From<Map<String, Value>> for LogRecord {
    fn from(fields: Map<String, Value>) -> Self {
        Self {
            fields,
            slice: None,
        }
    }
}

impl Drop for DecisionLog {
    fn drop(&mut self) {
        if let Err(e) = self.catch_up_head() {
            tracing::warn!(error = %e, "cannot bring HEAD up to the log's last record");
        }
    }
}

/// The first thing wrong with the log, if anything.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub records: u64,
    pub head: Option<Head>,
    pub first_bad: Option<BadRecord>,
    /// Records written after the last `HEAD` update: a crash between the two writes, or a
    /// server's appends of the last moments (`HEAD_LAG`).
    pub unanchored_tail: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BadRecord {
    /// The sequence number the bad record should have had.
    pub seq: u64,
    pub segment: String,
    pub line: u64,
    pub problem: String,
}

impl DecisionLog {
    pub fn open(data_dir: &Path) -> Result<Self> {
        let dir = data_dir.join("log");
        std::fs::create_dir_all(dir.join("policies")).map_err(|e| EngineError::io(&dir, e))?;
        Ok(Self {
            append_lock: lock::AppendLock::new(&dir),
            dir,
            commits: commit::GroupCommit::default(),
            written: std::sync::Mutex::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn err(&self, message: impl Into<String>) -> EngineError {
        EngineError::Log {
            path: self.dir.display().to_string(),
            message: message.into(),
        }
    }

    /// Stores a policy set under its version, once.
    pub fn store_policies(
        &self,
        schema: Option<&PolicySource>,
        sources: &[PolicySource],
    ) -> Result<String> {
        let version = version_of(schema, sources);
        let path = self.dir.join("policies").join(format!("{version}.json"));
        if path.exists() {
            return Ok(version);
        }
        let stored = StoredPolicySet {
            version: version.clone(),
            schema: schema.cloned(),
            sources: sources.to_vec(),
        };
        let body = serde_json::to_vec_pretty(&stored).map_err(|e| self.err(e.to_string()))?;
        write_atomically(&path, &body)?;
        Ok(version)
    }

    /// Loads a stored policy set and checks it still hashes to its version.
    /// The policy set recorded last (the one that decided most recently, as a set is
    /// recorded when it starts deciding), if any.
    pub fn latest_policies(&self) -> Result<Option<StoredPolicySet>> {
        let dir = self.dir.join("policies");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(None);
        };
        let newest = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let modified = e.metadata().ok()?.modified().ok()?;
                let name = e.file_name().to_str()?.strip_suffix(".json")?.to_string();
                Some((modified, name))
            })
            .max();
        newest
            .map(|(_, version)| self.load_policies(&version))
            .transpose()
    }

    /// The one recorded policy-set version that starts with `prefix` (versions are shown
    /// shortened to 12 characters).
    pub fn resolve_policy_version(&self, prefix: &str) -> Result<String> {
        let dir = self.dir.join("policies");
        let entries = std::fs::read_dir(&dir).map_err(|e| EngineError::io(&dir, e))?;
        let matching: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".json")
                    .map(String::from)
            })
            .filter(|v| !prefix.is_empty() && v.starts_with(prefix))
            .collect();
        match matching.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(self.err(format!(
                "no recorded policy-set version starts with `{prefix}`"
            ))),
            _ => Err(self.err(format!(
                "{} recorded policy-set versions start with `{prefix}`: give more of it",
                matching.len()
            ))),
        }
    }

    pub fn load_policies(&self, version: &str) -> Result<StoredPolicySet> {
        if version.len() != 64 || !version.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(self.err(format!("`{version}` is not a policy-set version")));
        }
        let path = self.dir.join("policies").join(format!("{version}.json"));
        let bytes = std::fs::read(&path).map_err(|e| EngineError::io(&path, e))?;
        let stored: StoredPolicySet = serde_json::from_slice(&bytes)
            .map_err(|e| self.err(format!("policy version `{version}` is corrupt: {e}")))?;
        let actual = version_of(stored.schema.as_ref(), &stored.sources);
        if actual != version {
            return Err(self.err(format!(
                "policy version `{version}` was altered: its content hashes to `{actual}`"
            )));
        }
        Ok(stored)
    }

    fn lock(&self) -> Result<lock::Locked<'_>> {
        self.append_lock.lock()
    }

    fn segments(&self) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| EngineError::io(&self.dir, e))? {
            let entry = entry.map_err(|e| EngineError::io(&self.dir, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with(SEGMENT_PREFIX) && name.ends_with(SEGMENT_SUFFIX) {
                out.push(entry.path());
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn head(&self) -> Result<Option<Head>> {
        let path = self.dir.join("HEAD");
        match std::fs::read(&path) {
            Ok(bytes) if bytes.is_empty() => {
                tracing::warn!(path = %path.display(), "HEAD is empty (a crash before it reached the disk); the log is read without it");
                Ok(None)
            }
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| self.err(format!("HEAD is corrupt: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(EngineError::io(&path, e)),
        }
    }

    /// The last complete record of the log, after cutting a torn final line left by a crash
    /// mid-write (such a record was never acknowledged to anyone). A last segment left empty
    /// (a crash or a full disk just as it was created, or nothing in it but a torn record) is
    /// removed, and the tail is the previous segment's: it held nothing anyone was told of.
    fn recover_tail(&self, segments: &mut Vec<PathBuf>) -> Result<Option<Head>> {
        while let Some(last) = segments.last() {
            if let Some(head) = self.recover_segment_tail(last)? {
                return Ok(Some(head));
            }
            if segments.len() == 1 {
                // The first segment: an empty log, kept as it is.
                return Ok(None);
            }
            tracing::warn!(segment = %last.display(), "removing an empty last segment left by a crash");
            std::fs::remove_file(last).map_err(|e| EngineError::io(last, e))?;
            sync_dir(&self.dir)?;
            segments.pop();
        }
        Ok(None)
    }

    /// The last complete record of the segment `last`, after cutting a torn final line;
    /// `None` when nothing complete is left in it.
    fn recover_segment_tail(&self, last: &Path) -> Result<Option<Head>> {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(last)
            .map_err(|e| EngineError::io(last, e))?;
        let len = f.metadata().map_err(|e| EngineError::io(last, e))?.len();
        if len == 0 {
            return Ok(None);
        }
        let mut window = 64 * 1024u64;
        loop {
            let start = len.saturating_sub(window);
            f.seek(SeekFrom::Start(start))
                .map_err(|e| EngineError::io(last, e))?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)
                .map_err(|e| EngineError::io(last, e))?;
            let complete_end = match buf.iter().rposition(|&b| b == b'\n') {
                Some(i) => i,
                None if start > 0 => {
                    window *= 4;
                    continue;
                }
                None => {
                    tracing::warn!(segment = %last.display(), "cutting a torn record left by a crash");
                    f.set_len(0).map_err(|e| EngineError::io(last, e))?;
                    return Ok(None);
                }
            };
            if complete_end + 1 != buf.len() {
                tracing::warn!(segment = %last.display(), "cutting a torn record left by a crash");
                f.set_len(start + complete_end as u64 + 1)
                    .map_err(|e| EngineError::io(last, e))?;
                f.sync_all().map_err(|e| EngineError::io(last, e))?;
            }
            let body = &buf[..complete_end];
            let line_start = match body.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if start > 0 => {
                    window *= 4;
                    continue;
                }
                None => 0,
            };
            let line = &body[line_start..];
            let record: Value = serde_json::from_slice(line).map_err(|e| {
                self.err(format!(
                    "last record is not JSON ({e}): run `tregov log verify`"
                ))
            })?;
            let seq = record.get("seq").and_then(Value::as_u64).unwrap_or(0);
            return Ok(Some(Head {
                seq,
                hash: sha256_hex(line),
            }));
        }
    }

    /// Appends records (each a JSON object of fields) as one atomic, durable step and returns
    /// their sequence numbers. Records are only acknowledged once on disk; callers appending
    /// at the same time share the write and its fsync (`commit`).
    pub fn append<R: Into<LogRecord>>(&self, records: Vec<R>) -> Result<Vec<u64>> {
        self.append_with(records, HeadWhen::Always)
    }

    /// Appends as `append` does, but lets `HEAD` trail the records by up to `HEAD_LAG` while
    /// appends keep coming: replacing `HEAD` costs the file system as much again as the
    /// records' own sync. For a writer that appends often and calls `catch_up_head` when it
    /// goes quiet (the API's). `HEAD` trailing is what a crash between the two writes leaves
    /// anyway: `verify` reports the records after it, which chain as every other.
    pub fn append_trailing_head<R: Into<LogRecord>>(&self, records: Vec<R>) -> Result<Vec<u64>> {
        self.append_with(records, HeadWhen::Due)
    }

    fn append_with<R: Into<LogRecord>>(&self, records: Vec<R>, head: HeadWhen) -> Result<Vec<u64>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let records = records.into_iter().map(Into::into).collect();
        self.commits.append(
            records,
            |batches| self.write_batches(batches, head),
            |m| self.err(m),
        )
    }

    /// Writes `HEAD` if this process's last append left it behind.
    pub fn catch_up_head(&self) -> Result<()> {
        let behind = |w: &Option<WrittenTail>| w.as_ref().is_some_and(WrittenTail::head_behind);
        if !behind(&self.written.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(());
        }
        let _lock = self.lock()?;
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        // Another process's append since ours moved the log on: its write brought `HEAD`.
        let Some(mut tail) = written.take().and_then(|w| self.unchanged_since(w)) else {
            return Ok(());
        };
        if tail.head_behind() {
            self.write_head_of(&mut tail)?;
        }
        *written = Some(tail);
        Ok(())
    }

    /// Writes every batch in one append, returning each batch's sequence numbers.
    fn write_batches(&self, batches: Vec<Vec<LogRecord>>, head: HeadWhen) -> Result<Vec<Vec<u64>>> {
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        let mut seqs = self.write(batches.into_iter().flatten(), head)?.into_iter();
        Ok(sizes
            .into_iter()
            .map(|n| seqs.by_ref().take(n).collect())
            .collect())
    }

    fn write(&self, records: impl Iterator<Item = LogRecord>, head: HeadWhen) -> Result<Vec<u64>> {
        let _lock = self.lock()?;
        // Taken, not copied: a write that fails leaves nothing known, and the next one reads
        // the log back (cutting whatever the failure tore).
        let written = self
            .written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut tail = match written.and_then(|w| self.unchanged_since(w)) {
            Some(w) => w,
            None => self.read_tail()?,
        };
        if tail.len >= MAX_SEGMENT_BYTES {
            tail.segment = self.segment_path(tail.head.seq + 1);
            tail.file = None;
            tail.len = 0;
        }
        let (buf, last) = self.seal_records(records, &tail.head)?;
        let file = match tail.file.take() {
            Some(f) => f,
            None => self.open_segment(&tail.segment, &mut tail.inode)?,
        };
        (&file)
            .write_all(&buf)
            .map_err(|e| EngineError::io(&tail.segment, e))?;
        file.sync_data()
            .map_err(|e| EngineError::io(&tail.segment, e))?;
        if tail.len == 0 {
            // A new segment's name is durable only once the directory is.
            sync_dir(&self.dir)?;
        }
        let seqs = (tail.head.seq + 1..=last.seq).collect();
        tail.file = Some(file);
        tail.len += buf.len() as u64;
        tail.head = last;
        let due = match (head, tail.head_written) {
            (HeadWhen::Due, Some((_, at))) => at.elapsed() >= HEAD_LAG,
            _ => true,
        };
        if due {
            self.write_head_of(&mut tail)?;
        }
        *self.written.lock().unwrap_or_else(|p| p.into_inner()) = Some(tail);
        Ok(seqs)
    }

    /// Brings `HEAD` up to `tail`'s last record and notes when.
    fn write_head_of(&self, tail: &mut WrittenTail) -> Result<()> {
        self.write_head(&tail.head)?;
        tail.head_written = Some((tail.head.seq, Instant::now()));
        Ok(())
    }

    /// The records as the lines that follow `after`, and the head they leave.
    fn seal_records(
        &self,
        records: impl Iterator<Item = LogRecord>,
        after: &Head,
    ) -> Result<(Vec<u8>, Head)> {
        let (mut seq, mut prev) = (after.seq, after.hash.clone());
        let mut buf = Vec::new();
        let now = now_rfc3339();
        for LogRecord { fields, slice } in records {
            seq += 1;
            let mut record = Map::new();
            record.insert("seq".into(), Value::from(seq));
            record.insert("time".into(), Value::from(now.clone()));
            record.insert("prev".into(), Value::from(prev));
            for (k, v) in fields {
                if !matches!(k.as_str(), "seq" | "time" | "prev" | "hash") {
                    record.insert(k, v);
                }
            }
            prev = seal_into(&mut buf, &record, slice.as_deref()).map_err(|e| self.err(e))?;
            buf.push(b'\n');
        }
        Ok((buf, Head { seq, hash: prev }))
    }

    fn open_segment(&self, segment: &Path, inode: &mut u64) -> Result<File> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment)
            .map_err(|e| EngineError::io(segment, e))?;
        *inode = f.metadata().map_err(|e| EngineError::io(segment, e))?.ino();
        Ok(f)
    }

    fn segment_path(&self, first_seq: u64) -> PathBuf {
        self.dir
            .join(format!("{SEGMENT_PREFIX}{first_seq:08}{SEGMENT_SUFFIX}"))
    }

    /// The tail as the log on disk has it: its last segment (none yet: the first one's
    /// name), and its last record checked against `HEAD`.
    fn read_tail(&self) -> Result<WrittenTail> {
        let mut segments = self.segments()?;
        let head = self.checked_tail(&mut segments)?;
        let (segment, inode, len) = match segments.pop() {
            Some(s) => {
                let meta = std::fs::metadata(&s).map_err(|e| EngineError::io(&s, e))?;
                (s, meta.ino(), meta.len())
            }
            None => (self.segment_path(head.seq + 1), 0, 0),
        };
        Ok(WrittenTail {
            segment,
            inode,
            file: None,
            len,
            head,
            head_written: None,
        })
    }

    /// What this process's last write left, if the log still ends there: the same file, of
    /// the same length, and no segment after it (another process's append, a cut, a file
    /// put in its place or a new segment each change one of these).
    fn unchanged_since(&self, w: WrittenTail) -> Option<WrittenTail> {
        let meta = std::fs::metadata(&w.segment).ok()?;
        let next = self.segment_path(w.head.seq + 1);
        let unchanged = meta.ino() == w.inode
            && meta.len() == w.len
            && matches!(std::fs::symlink_metadata(&next), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
        unchanged.then_some(w)
    }

    /// The log's last record read back from disk (a torn one cut), checked against `HEAD`.
    fn checked_tail(&self, segments: &mut Vec<PathBuf>) -> Result<Head> {
        let tail = self.recover_tail(segments)?;
        match (tail, self.head()?) {
            (Some(t), Some(h)) if t.seq < h.seq => Err(self.err(format!(
                "the log ends at record {} but HEAD records {}: records were removed; refusing to append (run `tregov log verify`)",
                t.seq, h.seq
            ))),
            (Some(t), _) => Ok(t),
            (None, Some(h)) if h.seq > 0 => Err(self.err(format!(
                "the log is empty but HEAD records {}: refusing to append",
                h.seq
            ))),
            _ => Ok(Head {
                seq: 0,
                hash: GENESIS.to_string(),
            }),
        }
    }

    /// Replaces `HEAD`, without syncing it: the records are already durable, and `HEAD` only
    /// trails them. A crash can lose the rename (`HEAD` is then behind the log, which `verify`
    /// reports as an unanchored tail and the next append accepts) or, on a file system that
    /// does not order a renamed file's data before the rename, leave `HEAD` empty, which
    /// `head` reads as no `HEAD` at all. Either way `HEAD` never claims a record the log
    /// lacks. Syncing it would cost a second journal commit on every append.
    fn write_head(&self, head: &Head) -> Result<()> {
        let body = serde_json::to_vec(head).map_err(|e| self.err(e.to_string()))?;
        replace_file(&self.dir.join("HEAD"), &body, Content::Unsynced)
    }

    /// Reads every record in order (without checking the chain: see `verify`).
    pub fn records(&self) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for seg in self.segments()? {
            let f = File::open(&seg).map_err(|e| EngineError::io(&seg, e))?;
            for line in BufReader::new(f).lines() {
                let line = line.map_err(|e| EngineError::io(&seg, e))?;
                if line.is_empty() {
                    continue;
                }
                let v: Value = serde_json::from_str(&line)
                    .map_err(|e| self.err(format!("{}: not JSON: {e}", seg.display())))?;
                out.push(v);
            }
        }
        Ok(out)
    }

    /// The records after sequence number `seq`, in order.
    pub fn records_after(&self, seq: u64) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        self.scan_from(seq + 1, |n, line| {
            if n > seq {
                out.push(self.parse_record(n, line)?);
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    /// The record with sequence number `seq`.
    pub fn record(&self, seq: u64) -> Result<Value> {
        let mut found = None;
        self.scan_from(seq, |n, line| {
            if n != seq {
                return Ok(ControlFlow::Continue(()));
            }
            found = Some(self.parse_record(n, line)?);
            Ok(ControlFlow::Break(()))
        })?;
        found.ok_or_else(|| {
            EngineError::Request(format!("no record with sequence `{seq}` in the log"))
        })
    }

    /// The hash of each record in `seqs` that the log holds (what `prev` and `HEAD` state of
    /// it), read in one pass; a sequence the log does not reach is absent.
    pub fn hashes_of(&self, seqs: &BTreeSet<u64>) -> Result<BTreeMap<u64, String>> {
        let mut out = BTreeMap::new();
        self.scan_only(seqs, |n, line| {
            out.insert(n, sha256_hex(line.as_bytes()));
            Ok(())
        })?;
        Ok(out)
    }

    /// The records in `seqs` that the log holds, in order, read in one pass from the segment
    /// holding the first.
    pub fn records_at(&self, seqs: &BTreeSet<u64>) -> Result<Vec<Value>> {
        let mut out = Vec::with_capacity(seqs.len());
        self.scan_only(seqs, |n, line| {
            out.push(self.parse_record(n, line)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `visit` with each record in `seqs`, in one pass from the first to the last.
    fn scan_only(
        &self,
        seqs: &BTreeSet<u64>,
        mut visit: impl FnMut(u64, &str) -> Result<()>,
    ) -> Result<()> {
        let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else {
            return Ok(());
        };
        self.scan_from(first, |n, line| {
            if seqs.contains(&n) {
                visit(n, line)?;
            }
            Ok(if n >= last {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })
    }

    fn parse_record(&self, seq: u64, line: &str) -> Result<Value> {
        serde_json::from_str(line).map_err(|e| self.err(format!("record {seq} is not JSON: {e}")))
    }

    /// Calls `visit` with each complete record line and its sequence number, from the segment
    /// that can hold record `from` on (a segment is named by its first record's sequence).
    /// Lines that do not start as a record does are skipped: `verify` is what reports them.
    fn scan_from(
        &self,
        from: u64,
        mut visit: impl FnMut(u64, &str) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        let segments = self.segments()?;
        let first_of = |p: &PathBuf| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix(SEGMENT_PREFIX))
                .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let start = segments
            .iter()
            .rposition(|p| first_of(p) <= from)
            .unwrap_or(0);
        for seg in &segments[start..] {
            let f = File::open(seg).map_err(|e| EngineError::io(seg, e))?;
            for line in BufReader::new(f).lines() {
                let line = line.map_err(|e| EngineError::io(seg, e))?;
                let Some(n) = line
                    .strip_prefix("{\"seq\":")
                    .and_then(|rest| rest.split(',').next())
                    .and_then(|n| n.parse::<u64>().ok())
                else {
                    continue;
                };
                if visit(n, &line)?.is_break() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Checks every record's own hash, the chain of `prev` hashes, the sequence numbers, the
    /// head, and that every policy version the records name is stored intact.
    pub fn verify(&self) -> Result<VerifyReport> {
        // Under the append lock, so a record being written is never mistaken for a torn one.
        let _lock = self.lock()?;
        let head = self.head()?;
        let mut expected_seq = 1u64;
        let mut prev = GENESIS.to_string();
        let mut hash_at_head: Option<String> = None;
        let mut checked_versions = std::collections::BTreeSet::new();
        let bad = |seq: u64, seg: &Path, line: u64, problem: String| BadRecord {
            seq,
            segment: seg
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
            line,
            problem,
        };
        let report = |first_bad: Option<BadRecord>, records: u64, tail: u64| VerifyReport {
            ok: first_bad.is_none(),
            records,
            head: head.clone(),
            first_bad,
            unanchored_tail: tail,
        };
        for seg in self.segments()? {
            let bytes = std::fs::read(&seg).map_err(|e| EngineError::io(&seg, e))?;
            let mut line_no = 0u64;
            let mut rest: &[u8] = &bytes;
            while !rest.is_empty() {
                line_no += 1;
                let (line, next, complete) = match rest.iter().position(|&b| b == b'\n') {
                    Some(i) => (&rest[..i], &rest[i + 1..], true),
                    None => (rest, &rest[rest.len()..], false),
                };
                rest = next;
                if !complete {
                    return Ok(report(
                        Some(bad(
                            expected_seq,
                            &seg,
                            line_no,
                            "torn final record (no newline): a crash mid-write or a cut file"
                                .into(),
                        )),
                        expected_seq - 1,
                        0,
                    ));
                }
                let text = match std::str::from_utf8(line) {
                    Ok(t) => t,
                    Err(_) => {
                        return Ok(report(
                            Some(bad(
                                expected_seq,
                                &seg,
                                line_no,
                                "record is not UTF-8: altered".into(),
                            )),
                            expected_seq - 1,
                            0,
                        ))
                    }
                };
                let record: Value = match serde_json::from_str(text) {
                    Ok(v) => v,
                    Err(e) => {
                        return Ok(report(
                            Some(bad(
                                expected_seq,
                                &seg,
                                line_no,
                                format!("record is not valid JSON ({e}): altered"),
                            )),
                            expected_seq - 1,
                            0,
                        ))
                    }
                };
                let line_hash = match check_seal(text) {
                    Ok(hash) => hash,
                    Err(problem) => {
                        return Ok(report(
                            Some(bad(expected_seq, &seg, line_no, problem)),
                            expected_seq - 1,
                            0,
                        ))
                    }
                };
                let seq = record.get("seq").and_then(Value::as_u64).unwrap_or(0);
                if seq != expected_seq {
                    let later = format!("\n{{\"seq\":{expected_seq},");
                    let found_later = rest.starts_with(&later.as_bytes()[1..])
                        || rest.windows(later.len()).any(|w| w == later.as_bytes());
                    let problem = if seq > expected_seq && found_later {
                        format!("expected record {expected_seq} but found record {seq}; record {expected_seq} comes later: records out of order (swapped or moved)")
                    } else if seq > expected_seq {
                        format!("expected record {expected_seq} but found record {seq}: record(s) {expected_seq}..{} deleted", seq - 1)
                    } else {
                        format!("expected record {expected_seq} but found record {seq}: records out of order (swapped or replayed)")
                    };
                    return Ok(report(
                        Some(bad(expected_seq, &seg, line_no, problem)),
                        expected_seq - 1,
                        0,
                    ));
                }
                let record_prev = record.get("prev").and_then(Value::as_str).unwrap_or("");
                if record_prev != prev {
                    return Ok(report(
                        Some(bad(seq, &seg, line_no, format!("`prev` is {record_prev} but the previous record hashes to {prev}: the chain is broken here"))),
                        expected_seq - 1,
                        0,
                    ));
                }
                if let Some(version) = record.get("policyVersion").and_then(Value::as_str) {
                    if checked_versions.insert(version.to_string()) {
                        if let Err(e) = self.load_policies(version) {
                            return Ok(report(
                                Some(bad(
                                    seq,
                                    &seg,
                                    line_no,
                                    format!("its policy version cannot be loaded: {e}"),
                                )),
                                expected_seq - 1,
                                0,
                            ));
                        }
                    }
                }
                prev = line_hash;
                if head.as_ref().is_some_and(|h| h.seq == seq) {
                    hash_at_head = Some(prev.clone());
                }
                expected_seq += 1;
            }
        }
        let records = expected_seq - 1;
        if let Some(h) = &head {
            if records < h.seq {
                return Ok(report(
                    Some(BadRecord {
                        seq: records + 1,
                        segment: String::new(),
                        line: 0,
                        problem: format!("the log ends at record {records} but HEAD records {}: records were removed from the end", h.seq),
                    }),
                    records,
                    0,
                ));
            }
            if h.seq > 0 && hash_at_head.as_deref() != Some(h.hash.as_str()) {
                return Ok(report(
                    Some(BadRecord {
                        seq: h.seq,
                        segment: String::new(),
                        line: 0,
                        problem: format!(
                            "record {} does not hash to HEAD's {}: records were replaced",
                            h.seq, h.hash
                        ),
                    }),
                    records,
                    0,
                ));
            }
        }
        let tail = records - head.as_ref().map_or(0, |h| h.seq);
        Ok(report(None, records, tail))
    }
}

/// Appends the record's line to `out`: its JSON with `slice` (entity texts rendered before,
/// when given) and its own hash last. Returns the line's hash, the next record's `prev`.
///
/// Both hashes come from one pass over the line (`OpenLine`).
fn seal_into(
    out: &mut Vec<u8>,
    record: &Map<String, Value>,
    slice: Option<&[Arc<str>]>,
) -> std::result::Result<String, String> {
    let start = out.len();
    serde_json::to_writer(&mut *out, record).map_err(|e| e.to_string())?;
    if out.pop() != Some(b'}') {
        out.truncate(start);
        return Err("record is not a JSON object".into());
    }
    if let Some(slice) = slice {
        if out.len() - start > 1 {
            out.push(b',');
        }
        out.extend_from_slice(b"\"slice\":[");
        for (i, entity) in slice.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(entity.as_bytes());
        }
        out.push(b']');
    }
    let open = OpenLine::new(&out[start..]);
    let suffix = format!(",\"hash\":\"{}\"}}", open.own_hash());
    out.extend_from_slice(suffix.as_bytes());
    Ok(open.line_hash(suffix.as_bytes()))
}

/// A line's bytes before its `hash` field, absorbed once: its own hash is theirs closed with
/// `}`, and the whole line's hash (the next record's `prev`) is theirs followed by the field.
struct OpenLine(Sha256);

impl OpenLine {
    fn new(open: &[u8]) -> Self {
        Self(Sha256::new().chain_update(open))
    }

    fn own_hash(&self) -> String {
        hex::encode(self.0.clone().chain_update(b"}").finalize())
    }

    fn line_hash(self, hash_field: &[u8]) -> String {
        hex::encode(self.0.chain_update(hash_field).finalize())
    }
}

/// Checks a line's own `hash` field against its content, and returns the line's hash (what
/// the next record's `prev` states), from one pass over it as `seal_into` makes them.
fn check_seal(line: &str) -> std::result::Result<String, String> {
    if line.len() < HASH_SUFFIX_LEN + 2 {
        return Err("record too short to carry its hash: altered".into());
    }
    let split = line.len() - HASH_SUFFIX_LEN;
    let (open, suffix) = line.split_at(split);
    let stated = suffix
        .strip_prefix(",\"hash\":\"")
        .and_then(|s| s.strip_suffix("\"}"))
        .ok_or_else(|| "record does not end with its hash: altered".to_string())?;
    let content = OpenLine::new(open.as_bytes());
    let actual = content.own_hash();
    if actual != stated {
        return Err(format!(
            "record content hashes to {actual} but states {stated}: this record was altered"
        ));
    }
    Ok(content.line_hash(suffix.as_bytes()))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn write_atomically(path: &Path, body: &[u8]) -> Result<()> {
    replace_file(path, body, Content::Synced)?;
    // The rename itself is durable only once the directory is.
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Whether a replaced file's content is on disk before it is renamed into place.
#[derive(Clone, Copy, PartialEq)]
enum Content {
    Synced,
    Unsynced,
}

/// Replaces `path` with `body` by renaming a temporary file over it: a crash leaves the old
/// content or the new, never a mix, when the content was synced first (the rename is durable
/// once the directory is).
fn replace_file(path: &Path, body: &[u8], content: Content) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp).map_err(|e| EngineError::io(&tmp, e))?;
        f.write_all(body).map_err(|e| EngineError::io(&tmp, e))?;
        if content == Content::Synced {
            f.sync_all().map_err(|e| EngineError::io(&tmp, e))?;
        }
    }
    std::fs::rename(&tmp, path).map_err(|e| EngineError::io(path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| EngineError::io(dir, e))
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("kind".into(), Value::from("test"));
        m.insert("n".into(), Value::from(n));
        m
    }

    #[test]
    fn a_sealed_record_checks_and_a_changed_one_does_not() {
        let mut m = record(1);
        m.insert("seq".into(), Value::from(1));
        let mut line = Vec::new();
        let hash = seal_into(&mut line, &m, None).expect("seal");
        assert_eq!(hash, sha256_hex(&line), "the hash returned is the line's");
        let line = String::from_utf8(line).expect("utf-8");
        assert_eq!(check_seal(&line).as_deref(), Ok(hash.as_str()));
        let tampered = line.replacen("\"n\":1", "\"n\":2", 1);
        assert!(check_seal(&tampered).is_err());
    }

    #[test]
    fn callers_appending_at_once_each_get_their_own_records_numbered_in_one_chain() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = DecisionLog::open(dir.path()).expect("log");
        let (threads, appends) = (8u64, 25u64);
        let numbered: Vec<Vec<(u64, Vec<u64>)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let log = &log;
                    scope.spawn(move || {
                        (0..appends)
                            .map(|a| {
                                let n = t * 1000 + a;
                                let batch = (0..=(a % 3)).map(|_| record(n)).collect();
                                (n, log.append(batch).expect("append"))
                            })
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let mut all: Vec<u64> = Vec::new();
        for (n, seqs) in numbered.into_iter().flatten() {
            // A batch's records are consecutive and hold what its caller wrote.
            assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
            for seq in &seqs {
                assert_eq!(log.record(*seq).expect("record")["n"], n);
            }
            all.extend(seqs);
        }
        all.sort_unstable();
        let total = all.len() as u64;
        assert_eq!(all, (1..=total).collect::<Vec<_>>());
        let report = log.verify().expect("verify");
        assert!(report.ok, "{report:?}");
        assert_eq!(report.records, total);
    }

    #[test]
    fn a_log_written_by_two_processes_in_turn_stays_one_chain() {
        // Each remembers where its own last write left the log: the other's appends in
        // between must be read back, not written over.
        let dir = tempfile::tempdir().expect("tmp");
        let (one, two) = (
            DecisionLog::open(dir.path()).expect("log"),
            DecisionLog::open(dir.path()).expect("log"),
        );
        let mut seqs = Vec::new();
        for n in 0..6u64 {
            let log = if n % 3 == 0 { &two } else { &one };
            seqs.extend(log.append(vec![record(n), record(n)]).expect("append"));
        }
        assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
        let report = one.verify().expect("verify");
        assert!(report.ok, "{report:?}");
        assert_eq!(report.records, 12);
        assert_eq!(report.unanchored_tail, 0);
    }

    #[test]
    fn a_trailing_head_is_brought_up_to_the_last_record_when_the_writer_goes_quiet() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = DecisionLog::open(dir.path()).expect("log");
        log.append_trailing_head(vec![record(1)]).expect("append");
        log.append_trailing_head(vec![record(2)]).expect("append");
        assert_eq!(log.head().expect("head").map(|h| h.seq), Some(1));
        assert_eq!(log.verify().expect("verify").unanchored_tail, 1);
        log.catch_up_head().expect("catch up");
        let report = log.verify().expect("verify");
        assert_eq!(report.head.map(|h| h.seq), Some(2));
        assert_eq!(report.unanchored_tail, 0);
    }

    #[test]
    fn a_trailing_head_caught_up_after_another_process_appended_does_not_go_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let (server, cli) = (
            DecisionLog::open(dir.path()).expect("log"),
            DecisionLog::open(dir.path()).expect("log"),
        );
        server
            .append_trailing_head(vec![record(1)])
            .expect("append");
        server
            .append_trailing_head(vec![record(2)])
            .expect("append");
        cli.append(vec![record(3)]).expect("append");
        server.catch_up_head().expect("catch up");
        let report = server.verify().expect("verify");
        assert!(report.ok, "{report:?}");
        assert_eq!(report.head.map(|h| h.seq), Some(3));
        assert_eq!(report.unanchored_tail, 0);
    }

    #[test]
    fn a_log_dropped_with_head_trailing_leaves_head_at_its_last_record() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = DecisionLog::open(dir.path()).expect("log");
        log.append_trailing_head(vec![record(1)]).expect("append");
        log.append_trailing_head(vec![record(2), record(3)])
            .expect("append");
        drop(log);
        let reopened = DecisionLog::open(dir.path()).expect("log");
        assert_eq!(reopened.head().expect("head").map(|h| h.seq), Some(3));
    }

    #[test]
    fn a_segment_put_in_place_of_the_open_one_is_appended_to_not_the_old_file() {
        // The writer keeps its segment open between appends: a copy renamed over it (same
        // length, another file) must get the next record, or the record would be lost.
        let dir = tempfile::tempdir().expect("tmp");
        let log = DecisionLog::open(dir.path()).expect("log");
        log.append(vec![record(1)]).expect("append");
        let segment = log.segments().expect("segments").remove(0);
        let copy = segment.with_extension("copy");
        std::fs::copy(&segment, &copy).expect("copy");
        std::fs::rename(&copy, &segment).expect("rename");
        log.append(vec![record(2)]).expect("append");
        let report = log.verify().expect("verify");
        assert!(report.ok, "{report:?}");
        assert_eq!(report.records, 2);
    }

    #[test]
    fn a_slice_of_rendered_texts_reads_back_as_the_entities_it_was_rendered_from() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = DecisionLog::open(dir.path()).expect("log");
        let entity = serde_json::json!({"uid": {"type": "Tre::User", "id": "rita"},
            "attrs": {"status": "active"}, "parents": []});
        let record = LogRecord::with_slice(record(1), vec![Arc::from(entity.to_string())]);
        let expected = record.to_map();
        let seq = log.append(vec![record]).expect("append")[0];
        let read = log.record(seq).expect("record");
        assert_eq!(read["slice"], serde_json::json!([entity]));
        assert_eq!(read["slice"], expected["slice"]);
        assert!(log.verify().expect("verify").ok);
    }

    #[test]
    fn appends_chain_and_verify_from_genesis_to_head() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = DecisionLog::open(dir.path()).expect("log");
        assert_eq!(
            log.append(vec![record(1), record(2)]).expect("append"),
            vec![1, 2]
        );
        assert_eq!(log.append(vec![record(3)]).expect("append"), vec![3]);
        let report = log.verify().expect("verify");
        assert!(report.ok, "{report:?}");
        assert_eq!(report.records, 3);
        assert_eq!(report.head.map(|h| h.seq), Some(3));
        let first = log.record(1).expect("record");
        assert_eq!(first["prev"], GENESIS);
    }

    #[test]
    fn a_torn_final_line_left_by_a_crash_is_cut_before_the_next_append() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = DecisionLog::open(dir.path()).expect("log");
        log.append(vec![record(1)]).expect("append");
        let seg = log.segments().expect("segments").remove(0);
        let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
        f.write_all(b"{\"seq\":2,\"time\":\"partial")
            .expect("write");
        drop(f);
        assert!(!log.verify().expect("verify").ok);
        assert_eq!(log.append(vec![record(2)]).expect("append"), vec![2]);
        assert!(log.verify().expect("verify").ok);
    }

    /// Regression: a crash (or a full disk) just as a new segment was created left it empty,
    /// and every append after failed with "the log is empty but HEAD records N".
    #[test]
    fn an_empty_or_torn_new_segment_left_at_rotation_is_recovered() {
        for left in [&b""[..], b"{\"seq\":3,\"ti"] {
            let dir = tempfile::tempdir().expect("tmp");
            let log = DecisionLog::open(dir.path()).expect("log");
            log.append(vec![record(1), record(2)]).expect("append");
            let rotated = log
                .dir()
                .join(format!("{SEGMENT_PREFIX}{:08}{SEGMENT_SUFFIX}", 3));
            std::fs::write(&rotated, left).expect("new segment");
            assert_eq!(log.append(vec![record(3)]).expect("append"), vec![3]);
            let report = log.verify().expect("verify");
            assert!(report.ok, "{report:?}");
            assert_eq!(report.records, 3);
        }
    }

    /// `HEAD` is replaced without a sync: a crash on a file system that does not order a
    /// renamed file's data before the rename can leave it empty.
    #[test]
    fn an_empty_head_left_by_a_crash_is_read_as_none_and_the_next_append_restores_it() {
        let dir = tempfile::tempdir().expect("tmp");
        DecisionLog::open(dir.path())
            .expect("log")
            .append(vec![record(1), record(2)])
            .expect("append");
        std::fs::write(dir.path().join("log").join("HEAD"), b"").expect("empty HEAD");
        let log = DecisionLog::open(dir.path()).expect("reopened");
        assert_eq!(log.head().expect("head"), None);
        assert_eq!(log.append(vec![record(3)]).expect("append"), vec![3]);
        let report = log.verify().expect("verify");
        assert!(report.ok, "{report:?}");
        assert_eq!(report.head.map(|h| h.seq), Some(3));
    }

    #[test]
    fn a_stored_policy_set_that_was_altered_does_not_load() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = DecisionLog::open(dir.path()).expect("log");
        let src = PolicySource {
            name: "a.cedar".into(),
            text: "permit(principal, action, resource);".into(),
        };
        let version = log
            .store_policies(None, std::slice::from_ref(&src))
            .expect("store");
        assert!(log.load_policies(&version).is_ok());
        let path = log.dir().join("policies").join(format!("{version}.json"));
        let text = std::fs::read_to_string(&path)
            .expect("read")
            .replace("permit", "forbid");
        std::fs::write(&path, text).expect("write");
        assert!(log.load_policies(&version).is_err());
    }
}
