//! The CloudTrail collector: new log files under the trail's bucket, for every project
//! account and region, into the event store.
//!
//! Listing starts `lookback_days` before the day of the last file read under each
//! account/region prefix, and files already read with the same ETag are skipped, so a
//! restart neither re-reads nor skips a file and late deliveries are still found. Each file
//! is stored in one transaction with the mark that it was read.
//!
//! After the log files, the digest files are checked (`cloudtrail_integrity`): a pass never
//! fails or waits on what they show, it reports it.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::stream::{self, StreamExt};
use std::io::{Seek, SeekFrom, Write};

use tempfile::SpooledTempFile;
use tregov_engine::events::{EventStore, FileBatch, FileBody, FileEnd};

use tregov_config::aws::Aws;
use tregov_config::{CloudTrailConfig, Config};
use tregov_engine::collect::{BoxFuture, CollectContext, Collector, Progress, RunReport, Source};
use tregov_engine::events::ObservationKind;

use crate::cloudtrail_integrity::{Integrity, Listed};
use crate::cloudtrail_parse::AccountClaim;
use crate::cloudtrail_stream::{stream_log_file, StreamedLog};
use crate::files_queue::FilesQueue;
use crate::CollectError;

pub struct CloudTrail {
    config: CloudTrailConfig,
    accounts: Vec<String>,
    s3: aws_sdk_s3::Client,
    concurrency: usize,
    integrity: Integrity,
    /// Where new log files are announced, when polls read that instead of listing.
    files: Option<FilesQueue>,
}

impl Collector for CloudTrail {
    fn source(&self) -> Source {
        Source::CloudTrail
    }

    /// The trail is what the others answer to.
    fn answers(&self) -> &'static [ObservationKind] {
        &[]
    }

    fn run<'a>(&'a self, ctx: &'a CollectContext<'a>) -> BoxFuture<'a, RunReport> {
        Box::pin(async move {
            let read = match (&self.files, ctx.incremental) {
                (Some(files), true) => self.read_announced(files, ctx.events, ctx.progress).await,
                _ => self.read(ctx.events, ctx.progress).await,
            };
            match read {
                Ok(report) => report,
                Err(e) => RunReport::failed(Source::CloudTrail, e),
            }
        })
    }
}

impl CloudTrail {
    pub async fn build(config: &Config, aws: &Aws) -> Option<Self> {
        let ct = config.cloudtrail.clone()?;
        let sdk = aws.for_role(ct.role_arn.as_deref()).await;
        let integrity = Integrity::new(
            &ct,
            aws.s3(&sdk),
            aws_sdk_cloudtrail::config::Builder::from(&sdk),
        );
        let files = ct
            .files_queue_url
            .clone()
            .map(|url| FilesQueue::new(aws_sdk_sqs::Client::new(&sdk), url));
        Some(Self {
            files,
            integrity,
            s3: aws.s3(&sdk),
            accounts: config
                .projects
                .iter()
                .map(|p| p.account_id.clone())
                .collect(),
            config: ct,
            concurrency: config.concurrency,
        })
    }

    /// `[prefix/]AWSLogs/[org-id/]<account>/CloudTrail/`
    fn account_prefix(&self, account: &str) -> String {
        self.account_prefix_of(account, "CloudTrail/")
    }

    /// `[prefix/]AWSLogs/[org-id/]<account>/<what>`
    fn account_prefix_of(&self, account: &str, what: &str) -> String {
        let mut p = String::new();
        if let Some(prefix) = self.config.prefix.as_deref().filter(|p| !p.is_empty()) {
            p.push_str(prefix.trim_end_matches('/'));
            p.push('/');
        }
        p.push_str("AWSLogs/");
        if let Some(org) = &self.config.organization_id {
            p.push_str(org);
            p.push('/');
        }
        p.push_str(account);
        p.push('/');
        p.push_str(what);
        p
    }

    async fn region_prefixes(&self, account: &str) -> Result<Vec<String>, CollectError> {
        self.region_prefixes_under(self.account_prefix(account))
            .await
    }

    async fn region_prefixes_under(&self, base: String) -> Result<Vec<String>, CollectError> {
        if let Some(regions) = &self.config.regions {
            return Ok(regions.iter().map(|r| format!("{base}{r}/")).collect());
        }
        let mut out = Vec::new();
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.config.bucket)
            .prefix(&base)
            .delimiter("/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| CollectError::aws("s3:ListObjectsV2", &base, e))?;
            out.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().map(String::from)),
            );
        }
        Ok(out)
    }

    /// Where listing resumes: `lookback_days` before the day of the checkpoint.
    fn start_after(&self, prefix: &str, checkpoint: Option<&str>) -> Option<String> {
        let rest = checkpoint?.strip_prefix(prefix)?;
        let mut parts = rest.splitn(4, '/');
        let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
        let date = time::Date::from_calendar_date(
            y.parse().ok()?,
            time::Month::try_from(m.parse::<u8>().ok()?).ok()?,
            d.parse().ok()?,
        )
        .ok()?;
        let back = date.checked_sub(time::Duration::days(i64::from(self.config.lookback_days)))?;
        Some(format!(
            "{prefix}{:04}/{:02}/{:02}/",
            back.year(),
            u8::from(back.month()),
            back.day()
        ))
    }

    /// Reads every log file not read yet into `store`.
    pub async fn read(
        &self,
        store: &Arc<EventStore>,
        progress: &dyn Progress,
    ) -> Result<RunReport, CollectError> {
        let mut report = RunReport::new(Source::CloudTrail);
        report.listed = true;
        let mut prefixes = Vec::new();
        for account in &self.accounts {
            match self.region_prefixes(account).await {
                Ok(p) => prefixes.extend(p),
                Err(e) => report.fail(e),
            }
        }
        // List every prefix, then read the files not read yet.
        let mut todo: Vec<Todo> = Vec::new();
        let mut listed: Vec<Listed> = Vec::new();
        for prefix in &prefixes {
            let checkpoint = store.checkpoint(prefix)?;
            let after = self.start_after(prefix, checkpoint.as_deref());
            let req = self
                .s3
                .list_objects_v2()
                .bucket(&self.config.bucket)
                .prefix(prefix)
                .set_start_after(after.clone());
            let mut seen = Listed {
                prefix: prefix.clone(),
                after,
                keys: BTreeSet::new(),
                complete: true,
            };
            let mut pages = req.into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = match page {
                    Ok(p) => p,
                    Err(e) => {
                        report.fail(CollectError::aws("s3:ListObjectsV2", prefix, e));
                        seen.complete = false;
                        break;
                    }
                };
                for obj in page.contents() {
                    let (Some(key), etag) = (obj.key(), obj.e_tag().unwrap_or_default()) else {
                        continue;
                    };
                    seen.keys.insert(key.to_string());
                    if store.file_etag(key)?.as_deref() == Some(etag) {
                        continue;
                    }
                    todo.push(Todo {
                        prefix: prefix.clone(),
                        key: key.to_string(),
                        etag: etag.to_string(),
                        size: obj.size().and_then(|s| u64::try_from(s).ok()),
                    });
                }
            }
            listed.push(seen);
        }
        self.read_files(todo, store, progress, &mut report).await?;
        // Files that failed on an earlier pass stay listed until they are read whole.
        let file_errors = store.file_errors()?;
        for prefix in &prefixes {
            for (key, error) in &file_errors {
                if key.starts_with(prefix.as_str())
                    && !report.errors.iter().any(|e| e.contains(key.as_str()))
                {
                    report
                        .errors
                        .push(format!("s3://{}/{key}: {error}", self.config.bucket));
                }
            }
        }
        let digests = self.digest_prefixes(store, &mut report).await?;
        self.integrity
            .check(store, &digests, &listed, &mut report)
            .await?;
        Ok(report)
    }

    /// Reads the log files a notification queue announced, without listing the bucket; a
    /// message goes once every file it names is stored. Digests are checked on a full pass.
    async fn read_announced(
        &self,
        files: &FilesQueue,
        store: &Arc<EventStore>,
        progress: &dyn Progress,
    ) -> Result<RunReport, CollectError> {
        let mut report = RunReport::new(Source::CloudTrail);
        let announcements = files.drain().await?;
        report.notifications = announcements.len() as u64;
        let mut todo: Vec<Todo> = Vec::new();
        let mut wanted: BTreeSet<String> = BTreeSet::new();
        for object in announcements.iter().flat_map(|a| &a.objects) {
            let Some(prefix) = self.governed_prefix(&object.bucket, &object.key) else {
                continue;
            };
            if !wanted.insert(object.key.clone()) {
                continue;
            }
            let etag = match &object.etag {
                Some(etag) => etag.clone(),
                None => self.etag_of(&object.key).await?,
            };
            if store.file_etag(&object.key)?.as_deref() == Some(etag.as_str()) {
                continue;
            }
            todo.push(Todo {
                prefix,
                key: object.key.clone(),
                etag,
                size: object.size,
            });
        }
        let unread: BTreeSet<String> = todo.iter().map(|t| t.key.clone()).collect();
        let done = self.read_files(todo, store, progress, &mut report).await?;
        let stored = |key: &String| !unread.contains(key) || done.iter().any(|(_, k)| k == key);
        let handles: Vec<&str> = announcements
            .iter()
            .filter(|a| a.objects.iter().all(|o| stored(&o.key)))
            .filter_map(|a| a.receipt_handle.as_deref())
            .collect();
        if let Err(e) = files.delete(&handles).await {
            report.errors.push(e.to_string());
        }
        Ok(report)
    }

    /// The account/region listing prefix a log file's key belongs to, if it is a governed
    /// account's log file in the trail's bucket (digests and other accounts are not).
    fn governed_prefix(&self, bucket: &str, key: &str) -> Option<String> {
        if bucket != self.config.bucket {
            return None;
        }
        self.accounts.iter().find_map(|account| {
            let base = self.account_prefix(account);
            let region = key.strip_prefix(&base)?.split('/').next()?;
            let wanted = self
                .config
                .regions
                .as_ref()
                .is_none_or(|regions| regions.iter().any(|r| r == region));
            (wanted && !region.is_empty()).then(|| format!("{base}{region}/"))
        })
    }

    /// An announced object's ETag, when its notification did not carry one.
    async fn etag_of(&self, key: &str) -> Result<String, CollectError> {
        let head = self
            .s3
            .head_object()
            .bucket(&self.config.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| CollectError::aws("s3:GetObject", key, e))?;
        Ok(head.e_tag().unwrap_or_default().to_string())
    }

    /// Reads `todo` into the store; the files read (stored whole, or with their damage
    /// recorded) by listing prefix and key. Each prefix's checkpoint moves to its last.
    async fn read_files(
        &self,
        todo: Vec<Todo>,
        store: &Arc<EventStore>,
        progress: &dyn Progress,
        report: &mut RunReport,
    ) -> Result<BTreeSet<(String, String)>, CollectError> {
        progress.start(todo.len() as u64);
        // Files are fetched and parsed concurrently; one writer commits whatever has arrived
        // (up to `WRITE_BATCH_EVENTS` events, each file with its read mark) in one transaction.
        let (parsed_tx, parsed_rx) = std::sync::mpsc::sync_channel::<Piece>(16);
        let writer = {
            let store = store.clone();
            std::thread::Builder::new()
                .name("tregov-trail-writer".into())
                .spawn(move || write_batches(&store, &parsed_rx))
                .map_err(|e| CollectError::Io(format!("cannot start the writer: {e}")))?
        };
        let results: Vec<Result<FileResult, CollectError>> = stream::iter(todo)
            .map(|file| {
                let tx = parsed_tx.clone();
                async move { self.read_file(file, tx).await }
            })
            .buffer_unordered(self.concurrency.max(1))
            .inspect(|_| progress.advance())
            .collect()
            .await;
        drop(parsed_tx);
        progress.finish();
        let written = writer
            .join()
            .map_err(|_| CollectError::Io("the event writer panicked".into()))??;
        report.items += written;
        let mut done: BTreeSet<(String, String)> = BTreeSet::new();
        for r in results {
            match r {
                Ok(f) => {
                    report.files += 1;
                    report.events_read += f.events;
                    if let Some(e) = f.error {
                        report
                            .errors
                            .push(format!("s3://{}/{}: {e}", self.config.bucket, f.key));
                    }
                    done.insert((f.prefix, f.key));
                }
                Err(e) => report.fail(e),
            }
        }
        // The checkpoint moves to the last key read under each prefix.
        let mut last: std::collections::BTreeMap<&str, &str> = Default::default();
        for (prefix, key) in &done {
            last.insert(prefix, key);
        }
        for (prefix, key) in last {
            store.advance_checkpoint(prefix, key)?;
        }
        Ok(done)
    }

    /// Every account's digest prefixes, each with where listing resumes.
    async fn digest_prefixes(
        &self,
        store: &EventStore,
        report: &mut RunReport,
    ) -> Result<Vec<(String, Option<String>)>, CollectError> {
        let mut out = Vec::new();
        for account in &self.accounts {
            let base = self.account_prefix_of(account, "CloudTrail-Digest/");
            match self.region_prefixes_under(base).await {
                Ok(prefixes) => {
                    for p in prefixes {
                        let after = self.start_after(&p, store.checkpoint(&p)?.as_deref());
                        out.push((p, after));
                    }
                }
                // Digests unreadable leave files unverified; the pass itself is whole.
                Err(e) => report.errors.push(e.to_string()),
            }
        }
        Ok(out)
    }

    /// Reads one log file: fetched into a spool (memory up to a megabyte, then a temporary
    /// file) within `max_file_bytes`, then parsed as a stream, its events handed to the
    /// writer as they come. A file over a bound or damaged is recorded with why, and its
    /// records before the damage are kept.
    async fn read_file(
        &self,
        file: Todo,
        writer: std::sync::mpsc::SyncSender<Piece>,
    ) -> Result<FileResult, CollectError> {
        let max = self.config.max_file_bytes;
        let fetched = match file.size {
            Some(size) if size > max => Err(over_max_file_bytes(size, max)),
            _ => self.fetch(&file.key, max).await?,
        };
        let egress = self.config.egress_bucket.clone();
        let max_inflated = self.config.max_inflated_bytes;
        tokio::task::spawn_blocking(move || -> Result<FileResult, CollectError> {
            let (read, body) = match fetched {
                Ok((len, spool)) => parse_spooled(
                    &file.key,
                    len,
                    spool,
                    egress.as_deref(),
                    max_inflated,
                    &writer,
                )?,
                Err(too_big) => (
                    StreamedLog {
                        damage: Some(too_big),
                        ..Default::default()
                    },
                    None,
                ),
            };
            if let Some(damage) = &read.damage {
                tracing::warn!(key = %file.key, records_kept = read.records, error = %damage,
                    "cloudtrail file is not whole");
            }
            let result = FileResult {
                prefix: file.prefix,
                key: file.key.clone(),
                events: read.records,
                error: read.damage.clone(),
            };
            writer
                .send(Piece {
                    key: file.key,
                    events: Vec::new(),
                    claims: Vec::new(),
                    end: Some(Ended {
                        etag: file.etag,
                        body,
                        records: read.records,
                        sha256: read.sha256,
                        error: read.damage,
                    }),
                })
                .map_err(|_| CollectError::Io("the event writer stopped".into()))?;
            Ok(result)
        })
        .await
        .map_err(|e| CollectError::Io(format!("worker failed: {e}")))?
    }

    /// Fetches `key` into a spool, or says why not when it is over `max` bytes (an object
    /// may have grown since it was listed).
    async fn fetch(
        &self,
        key: &str,
        max: u64,
    ) -> Result<Result<(u64, SpooledTempFile), String>, CollectError> {
        let mut obj = self
            .s3
            .get_object()
            .bucket(&self.config.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| CollectError::aws("s3:GetObject", key, e))?;
        let mut spool = SpooledTempFile::new(SPOOL_IN_MEMORY);
        let mut len = 0u64;
        let where_ = || format!("s3://{}/{key}", self.config.bucket);
        while let Some(chunk) = obj
            .body
            .try_next()
            .await
            .map_err(|e| CollectError::Io(format!("{}: {e}", where_())))?
        {
            len += chunk.len() as u64;
            if len > max {
                return Ok(Err(over_max_file_bytes(len, max)));
            }
            spool
                .write_all(&chunk)
                .map_err(|e| CollectError::Io(format!("{}: cannot spool: {e}", where_())))?;
        }
        Ok(Ok((len, spool)))
    }
}

/// Fetched objects stay in memory up to this, beyond it in a temporary file.
const SPOOL_IN_MEMORY: usize = 1024 * 1024;

fn over_max_file_bytes(size: u64, max: u64) -> String {
    format!("the object is {size} bytes or more, over `max_file_bytes` ({max} bytes): not read")
}

/// Parses a spooled file, sending its events to the writer as they come; returns what the
/// read gave and the body to keep (none when no record could be read from it).
fn parse_spooled(
    key: &str,
    len: u64,
    mut spool: SpooledTempFile,
    egress: Option<&str>,
    max_inflated: u64,
    writer: &std::sync::mpsc::SyncSender<Piece>,
) -> Result<(StreamedLog, Option<(u64, SpooledTempFile)>), CollectError> {
    let rewind = |spool: &mut SpooledTempFile| {
        spool
            .seek(SeekFrom::Start(0))
            .map(|_| ())
            .map_err(|e| CollectError::Io(format!("{key}: cannot rewind the spool: {e}")))
    };
    rewind(&mut spool)?;
    let read = stream_log_file(
        key,
        std::io::BufReader::new(&mut spool),
        egress,
        max_inflated,
        &mut |events, claims| {
            writer
                .send(Piece {
                    key: key.to_string(),
                    events,
                    claims,
                    end: None,
                })
                .map_err(|_| "the event writer stopped".to_string())
        },
    );
    rewind(&mut spool)?;
    let body = (read.records > 0).then_some((len, spool));
    Ok((read, body))
}

/// A log file listed and not read yet.
struct Todo {
    prefix: String,
    key: String,
    etag: String,
    size: Option<u64>,
}

/// How many events the writer commits at most in one transaction.
const WRITE_BATCH_EVENTS: usize = 10_000;

/// Part of a file on its way to the writer: a batch of its events, and once it has been
/// read to its end, how that went.
struct Piece {
    key: String,
    events: Vec<tregov_engine::events::StoredEvent>,
    claims: Vec<AccountClaim>,
    end: Option<Ended>,
}

struct Ended {
    etag: String,
    /// The file as delivered, and its length.
    body: Option<(u64, SpooledTempFile)>,
    records: u64,
    sha256: Option<String>,
    error: Option<String>,
}

/// The writer: commits whatever has arrived, each file's end with its read mark, until every
/// reader is done. Returns how many events were new.
fn write_batches(
    store: &EventStore,
    pieces: &std::sync::mpsc::Receiver<Piece>,
) -> Result<u64, CollectError> {
    let mut new = 0;
    while let Ok(first) = pieces.recv() {
        let mut count = first.events.len();
        let mut pending = vec![first];
        while count < WRITE_BATCH_EVENTS {
            match pieces.try_recv() {
                Ok(next) => {
                    count += next.events.len();
                    pending.push(next);
                }
                Err(_) => break,
            }
        }
        let mut batch: Vec<FileBatch> = pending
            .iter_mut()
            .map(|p| FileBatch {
                key: &p.key,
                events: &p.events,
                end: p.end.as_mut().map(|end| FileEnd {
                    etag: &end.etag,
                    body: match &mut end.body {
                        Some((len, spool)) => FileBody::Stream {
                            len: *len,
                            read: spool,
                        },
                        None => FileBody::Absent,
                    },
                    records: end.records,
                    error: end.error.as_deref(),
                    sha256: end.sha256.as_deref(),
                }),
            })
            .collect();
        new += store.ingest_files(&mut batch)?;
        drop(batch);
        for p in &pending {
            record_claims(store, &p.key, &p.claims)?;
        }
    }
    Ok(new)
}

/// Records whose `recipientAccountId` is not their key path's account: anomalies.
fn record_claims(
    store: &EventStore,
    key: &str,
    claims: &[AccountClaim],
) -> Result<(), CollectError> {
    let (_, region) = crate::cloudtrail_parse::account_region_of_key(key);
    let region = region.unwrap_or_default();
    for c in claims {
        let detail = format!(
            "record `{}` claims account `{}`, its key path is `{}`'s",
            c.event_id, c.claimed, c.account
        );
        let at = format!("{key}#{}", c.event_id);
        if store.record_anomaly("account-mismatch", &at, &c.account, &region, &detail)? {
            tracing::warn!(key, event_id = %c.event_id, claimed = %c.claimed,
                account = %c.account, "cloudtrail record claims another account");
        }
    }
    Ok(())
}

struct FileResult {
    prefix: String,
    key: String,
    events: u64,
    error: Option<String>,
}
