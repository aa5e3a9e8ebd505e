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
use tregov_engine::events::{EventStore, FileBatch};

use tregov_config::aws::Aws;
use tregov_config::{CloudTrailConfig, Config};
use tregov_engine::collect::{BoxFuture, CollectContext, Collector, Progress, RunReport, Source};
use tregov_engine::events::ObservationKind;

use crate::cloudtrail_integrity::{Integrity, Listed};
use crate::cloudtrail_parse::{read_log_file, AccountClaim};
use crate::CollectError;

pub struct CloudTrail {
    config: CloudTrailConfig,
    accounts: Vec<String>,
    s3: aws_sdk_s3::Client,
    concurrency: usize,
    integrity: Integrity,
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
            match self.read(ctx.events, ctx.progress).await {
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
        Some(Self {
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
        let mut prefixes = Vec::new();
        for account in &self.accounts {
            match self.region_prefixes(account).await {
                Ok(p) => prefixes.extend(p),
                Err(e) => report.fail(e),
            }
        }
        // List every prefix, then read the files not read yet.
        let mut todo: Vec<(String, String, String)> = Vec::new();
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
                    todo.push((prefix.clone(), key.to_string(), etag.to_string()));
                }
            }
            listed.push(seen);
        }
        progress.start(todo.len() as u64);
        // Files are fetched and parsed concurrently; one writer commits whatever has arrived
        // (up to `WRITE_BATCH_EVENTS` events, each file with its read mark) in one transaction.
        let (parsed_tx, parsed_rx) = std::sync::mpsc::sync_channel::<ParsedFile>(64);
        let writer = {
            let store = store.clone();
            std::thread::Builder::new()
                .name("tregov-trail-writer".into())
                .spawn(move || write_batches(&store, &parsed_rx))
                .map_err(|e| CollectError::Io(format!("cannot start the writer: {e}")))?
        };
        let results: Vec<Result<FileResult, CollectError>> = stream::iter(todo)
            .map(|(prefix, key, etag)| {
                let tx = parsed_tx.clone();
                async move { self.read_file(prefix, key, etag, tx).await }
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
        let mut last: std::collections::BTreeMap<String, String> = Default::default();
        for (prefix, key) in done {
            last.insert(prefix, key);
        }
        for (prefix, key) in last {
            store.advance_checkpoint(&prefix, &key)?;
        }
        for prefix in &prefixes {
            for (key, error) in store.file_errors()? {
                if key.starts_with(prefix.as_str())
                    && !report.errors.iter().any(|e| e.contains(&key))
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

    async fn read_file(
        &self,
        prefix: String,
        key: String,
        etag: String,
        writer: std::sync::mpsc::SyncSender<ParsedFile>,
    ) -> Result<FileResult, CollectError> {
        let obj = self
            .s3
            .get_object()
            .bucket(&self.config.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| CollectError::aws("s3:GetObject", &key, e))?;
        let bytes = obj
            .body
            .collect()
            .await
            .map_err(|e| CollectError::Io(format!("s3://{}/{key}: {e}", self.config.bucket)))?
            .into_bytes()
            .to_vec();
        let egress = self.config.egress_bucket.clone();
        tokio::task::spawn_blocking(move || -> Result<FileResult, CollectError> {
            let (parsed, error) = match read_log_file(&key, &bytes, egress.as_deref()) {
                Ok(parsed) => (parsed, None),
                Err(reason) => {
                    tracing::warn!(key = %key, error = %reason, "skipping unreadable CloudTrail file");
                    (Default::default(), Some(reason))
                }
            };
            let events = parsed.events;
            let result = FileResult {
                prefix,
                key: key.clone(),
                events: events.len() as u64,
                error: error.clone(),
            };
            writer
                .send(ParsedFile {
                    key,
                    etag,
                    // An unreadable file is recorded with why, not kept.
                    body: if error.is_none() { bytes } else { Vec::new() },
                    events,
                    sha256: error.is_none().then_some(parsed.sha256),
                    claims: parsed.claims,
                    error,
                })
                .map_err(|_| CollectError::Io("the event writer stopped".into()))?;
            Ok(result)
        })
        .await
        .map_err(|e| CollectError::Io(format!("worker failed: {e}")))?
    }
}

/// How many events the writer commits at most in one transaction.
const WRITE_BATCH_EVENTS: usize = 10_000;

/// A file read and parsed, on its way to the writer.
struct ParsedFile {
    key: String,
    etag: String,
    body: Vec<u8>,
    events: Vec<tregov_engine::events::StoredEvent>,
    sha256: Option<String>,
    claims: Vec<AccountClaim>,
    error: Option<String>,
}

/// The writer: commits whatever has arrived, each file with its read mark, until every
/// reader is done. Returns how many events were new.
fn write_batches(
    store: &EventStore,
    parsed: &std::sync::mpsc::Receiver<ParsedFile>,
) -> Result<u64, CollectError> {
    let mut new = 0;
    while let Ok(first) = parsed.recv() {
        let mut count = first.events.len();
        let mut pending = vec![first];
        while count < WRITE_BATCH_EVENTS {
            match parsed.try_recv() {
                Ok(next) => {
                    count += next.events.len();
                    pending.push(next);
                }
                Err(_) => break,
            }
        }
        let batch: Vec<FileBatch> = pending
            .iter()
            .map(|p| FileBatch {
                key: &p.key,
                etag: &p.etag,
                body: &p.body,
                events: &p.events,
                error: p.error.as_deref(),
                sha256: p.sha256.as_deref(),
            })
            .collect();
        new += store.ingest_files(&batch)?;
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
