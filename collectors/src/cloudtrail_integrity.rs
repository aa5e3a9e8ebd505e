//! Checking the trail against its digest files, after each CloudTrail pass: new digests are
//! read and their signatures checked, every log file a valid digest lists is compared with
//! it, and each chain's verified-through time is worked out (rules in `cloudtrail_digest`).
//!
//! Nothing here fails a pass: a digest that cannot be read or verified leaves its files
//! unverified and is reported, and tampering is reported (a warning, the run's errors, an
//! anomaly `tregov status` shows) but never holds anything back. Events are always stored;
//! `tregov events` marks those from files not verified.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_cloudtrail::primitives::{DateTime, DateTimeFormat};
use tregov_config::CloudTrailConfig;
use tregov_engine::collect::RunReport;
use tregov_engine::events::{
    ChainStatus, DigestEntry, DigestRecord, EventStore, FileCheck, FileState,
};

use crate::cloudtrail_digest::{
    parse_digest, parse_digest_key, walk_chain, Digest, DigestKey, DigestProblem, PublicKeys,
    StopCause,
};
use crate::CollectError;

/// One listing of a log-file prefix: what it held from `after` on, if it completed.
pub struct Listed {
    pub prefix: String,
    pub after: Option<String>,
    pub keys: BTreeSet<String>,
    pub complete: bool,
}

/// A digest file fetched, not yet verified.
struct Fetched {
    key: String,
    etag: String,
    name: DigestKey,
    parsed: Result<Digest, DigestProblem>,
    signature: Option<String>,
    algorithm: Option<String>,
}

pub struct Integrity {
    s3: aws_sdk_s3::Client,
    cloudtrail: aws_sdk_cloudtrail::config::Builder,
    bucket: String,
    configured: PublicKeys,
}

impl Integrity {
    /// The configured public keys are read here; one that cannot be read is reported and
    /// left out (digests it signed then stay unverified).
    pub fn new(
        config: &CloudTrailConfig,
        s3: aws_sdk_s3::Client,
        cloudtrail: aws_sdk_cloudtrail::config::Builder,
    ) -> Self {
        let mut configured = PublicKeys::default();
        for key in &config.public_keys {
            match key.der() {
                Ok(der) => configured.insert(&key.fingerprint, der),
                Err(error) => tracing::warn!(
                    fingerprint = %key.fingerprint, %error, "cloudtrail public key left out"
                ),
            }
        }
        Self {
            s3,
            cloudtrail,
            bucket: config.bucket.clone(),
            configured,
        }
    }

    /// Reads new digests under `digest_prefixes` (each with where listing resumes), checks
    /// the files they list and every chain.
    pub async fn check(
        &self,
        store: &EventStore,
        digest_prefixes: &[(String, Option<String>)],
        listed: &[Listed],
        report: &mut RunReport,
    ) -> Result<(), CollectError> {
        let fetched = self.fetch_digests(store, digest_prefixes, report).await?;
        let keys = self.keys_for(&fetched, report).await;
        for f in fetched {
            self.store_digest(store, &keys, f, report)?;
        }
        let gone = gone_from_listings(store, listed)?;
        self.check_files(store, &gone, report).await?;
        self.check_chains(store, report)
    }

    /// Fetches the digest files not read yet (or changed since).
    async fn fetch_digests(
        &self,
        store: &EventStore,
        prefixes: &[(String, Option<String>)],
        report: &mut RunReport,
    ) -> Result<Vec<Fetched>, CollectError> {
        let mut out = Vec::new();
        for (prefix, after) in prefixes {
            let keys = match self.list(prefix, after.as_deref()).await {
                Ok(keys) => keys,
                Err(e) => {
                    report.errors.push(e.to_string());
                    continue;
                }
            };
            let mut last = None;
            for (key, etag) in keys {
                let Some(name) = parse_digest_key(&key) else {
                    continue;
                };
                if store.digest_etag(&key)?.as_deref() == Some(etag.as_str()) {
                    continue;
                }
                match self.fetch(&key, etag, name).await {
                    Ok(f) => out.push(f),
                    Err(e) => {
                        report.errors.push(e.to_string());
                        continue;
                    }
                }
                last = Some(key);
            }
            if let Some(key) = last {
                store.advance_checkpoint(prefix, &key)?;
            }
        }
        Ok(out)
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
    ) -> Result<Vec<(String, String)>, CollectError> {
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_start_after(after.map(String::from))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| CollectError::aws("s3:ListObjectsV2", prefix, e))?;
            out.extend(page.contents().iter().filter_map(|o| {
                Some((
                    o.key()?.to_string(),
                    o.e_tag().unwrap_or_default().to_string(),
                ))
            }));
        }
        Ok(out)
    }

    async fn fetch(
        &self,
        key: &str,
        etag: String,
        name: DigestKey,
    ) -> Result<Fetched, CollectError> {
        let obj = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| CollectError::aws("s3:GetObject", key, e))?;
        let meta = obj.metadata().cloned().unwrap_or_default();
        let body = obj
            .body
            .collect()
            .await
            .map_err(|e| CollectError::Io(format!("s3://{}/{key}: {e}", self.bucket)))?
            .into_bytes();
        Ok(Fetched {
            key: key.to_string(),
            etag,
            name,
            parsed: parse_digest(&self.bucket, key, &body),
            signature: meta.get("signature").cloned(),
            algorithm: meta.get("signature-algorithm").cloned(),
        })
    }

    /// The configured keys, plus those `ListPublicKeys` returns in each region whose digests
    /// name a fingerprint not configured. moto (5.2.5) does not implement `ListPublicKeys`:
    /// against it the call fails, is reported, and only configured keys verify.
    async fn keys_for(&self, fetched: &[Fetched], report: &mut RunReport) -> PublicKeys {
        let mut keys = self.configured.clone();
        let mut wanted: BTreeMap<&str, &str> = BTreeMap::new();
        for f in fetched {
            if let Ok(d) = &f.parsed {
                if !keys.contains(&d.fingerprint) {
                    let start = wanted
                        .entry(f.name.region.as_str())
                        .or_insert(&d.start_time);
                    *start = (*start).min(d.start_time.as_str());
                }
            }
        }
        for (region, start) in wanted {
            if let Err(e) = self.list_public_keys(region, start, &mut keys).await {
                tracing::warn!(region, error = %e, "cannot list CloudTrail public keys");
                report.errors.push(e.to_string());
            }
        }
        keys
    }

    async fn list_public_keys(
        &self,
        region: &str,
        start: &str,
        keys: &mut PublicKeys,
    ) -> Result<(), CollectError> {
        let conf = self
            .cloudtrail
            .clone()
            .region(aws_sdk_cloudtrail::config::Region::new(region.to_string()))
            .build();
        let client = aws_sdk_cloudtrail::Client::from_conf(conf);
        let start = DateTime::from_str(start, DateTimeFormat::DateTime).ok();
        let mut token = None;
        loop {
            let page = client
                .list_public_keys()
                .set_start_time(start)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| CollectError::aws("cloudtrail:ListPublicKeys", region, e))?;
            for k in page.public_key_list() {
                if let (Some(fp), Some(der)) = (k.fingerprint(), k.value()) {
                    keys.insert(fp, der.as_ref().to_vec());
                }
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(()),
            }
        }
    }

    /// Verifies one fetched digest and stores it. A digest signed with a key tregov cannot
    /// find is not stored, so the next pass tries again.
    fn store_digest(
        &self,
        store: &EventStore,
        keys: &PublicKeys,
        f: Fetched,
        report: &mut RunReport,
    ) -> Result<(), CollectError> {
        let (account, region) = (f.name.account.as_str(), f.name.region.as_str());
        let verdict = f
            .parsed
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|d| keys.verify(d, f.signature.as_deref(), f.algorithm.as_deref()));
        if let Err(problem @ DigestProblem::UnknownKey(_)) = &verdict {
            tracing::warn!(key = %f.key, account, region, %problem, "cloudtrail digest unverifiable");
            report
                .errors
                .push(format!("s3://{}/{}: {problem}", self.bucket, f.key));
            return Ok(());
        }
        let problem = verdict.err();
        if let Some(p) = &problem {
            self.report(
                store,
                report,
                p.kind(),
                &f.key,
                account,
                region,
                &p.to_string(),
            )?;
        }
        if let Ok(d) = &f.parsed {
            if let Some(claimed) = d.aws_account_id.as_deref().filter(|a| *a != account) {
                let detail = format!("the digest claims account `{claimed}`");
                self.report(
                    store,
                    report,
                    "account-mismatch",
                    &f.key,
                    account,
                    region,
                    &detail,
                )?;
            }
        }
        let (record, entries) = self.record(&f, problem.map(|p| p.to_string()));
        store.store_digest(&record, &entries)?;
        Ok(())
    }

    /// What is stored of a digest: a damaged one keeps the times its name gives.
    fn record(&self, f: &Fetched, problem: Option<String>) -> (DigestRecord, Vec<DigestEntry>) {
        let d = f.parsed.as_ref().ok();
        let entries = match (d, &problem) {
            (Some(d), None) => d
                .log_files
                .iter()
                // Files in another bucket are not this trail's to check.
                .filter(|l| l.bucket == self.bucket)
                .map(|l| DigestEntry {
                    log_key: l.key.clone(),
                    sha256: l.sha256.clone(),
                })
                .collect(),
            _ => Vec::new(),
        };
        let record = DigestRecord {
            key: f.key.clone(),
            etag: f.etag.clone(),
            account: f.name.account.clone(),
            region: f.name.region.clone(),
            trail: f.name.trail.clone(),
            backfill: f.name.backfill,
            start_time: d.map_or_else(|| f.name.end_time.clone(), |d| d.start_time.clone()),
            end_time: d.map_or_else(|| f.name.end_time.clone(), |d| d.end_time.clone()),
            signature: f.signature.clone(),
            content_sha256: d.map(|d| d.content_sha256.clone()).unwrap_or_default(),
            previous_key: d.and_then(|d| d.previous_key.clone()),
            previous_signature: d.and_then(|d| d.previous_signature.clone()),
            previous_sha256: d.and_then(|d| d.previous_sha256.clone()),
            problem,
        };
        (record, entries)
    }

    /// Compares every listed log file that needs it with its digest.
    async fn check_files(
        &self,
        store: &EventStore,
        gone: &BTreeSet<String>,
        report: &mut RunReport,
    ) -> Result<(), CollectError> {
        let also: Vec<String> = gone.iter().cloned().collect();
        let mut checks = Vec::new();
        for e in store.entries_to_check(&also)? {
            let actual = if gone.contains(&e.log_key) {
                None
            } else if let Some(h) = e.stored_sha256.clone().filter(|_| {
                // A file found missing is only found again when it is seen again.
                e.last_state != Some(FileState::Missing)
            }) {
                Some(h)
            } else {
                match self.fetch_sha256(&e.log_key).await {
                    Ok(found) => found,
                    Err(error) => {
                        // Left unchecked: it stays unverified and is tried again.
                        report.errors.push(error.to_string());
                        continue;
                    }
                }
            };
            let state = match &actual {
                None => FileState::Missing,
                Some(h) if *h == e.expected => FileState::Verified,
                Some(_) => FileState::Altered,
            };
            if state != FileState::Verified && e.last_state != Some(state) {
                let (account, region) = crate::cloudtrail_parse::account_region_of_key(&e.log_key);
                let detail = match state {
                    FileState::Missing => {
                        format!("listed in `{}` but not in the bucket", e.digest_key)
                    }
                    _ => format!("its SHA-256 differs from the one `{}` lists", e.digest_key),
                };
                let (account, region) = (account.unwrap_or_default(), region.unwrap_or_default());
                self.report(
                    store,
                    report,
                    state.as_str(),
                    &e.log_key,
                    &account,
                    &region,
                    &detail,
                )?;
            }
            checks.push(FileCheck {
                key: e.log_key,
                digest_key: e.digest_key,
                state,
                actual_sha256: actual,
            });
        }
        store.set_file_checks(&checks)?;
        Ok(())
    }

    /// The SHA-256 of a log file's uncompressed content as the bucket holds it now; `None`
    /// when it is not there. A file that is not gzip is hashed as it is (it cannot match).
    async fn fetch_sha256(&self, key: &str) -> Result<Option<String>, CollectError> {
        use sha2::Digest as _;
        use std::io::Read;
        let obj = match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(obj) => obj,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(CollectError::aws("s3:GetObject", key, e)),
        };
        let bytes = obj
            .body
            .collect()
            .await
            .map_err(|e| CollectError::Io(format!("s3://{}/{key}: {e}", self.bucket)))?
            .into_bytes();
        let mut content = Vec::new();
        if flate2::read::MultiGzDecoder::new(bytes.as_ref())
            .read_to_end(&mut content)
            .is_err()
        {
            content = bytes.to_vec();
        }
        Ok(Some(hex::encode(sha2::Sha256::digest(&content))))
    }

    /// Works out every chain's verified-through time; a broken link is tampering.
    fn check_chains(&self, store: &EventStore, report: &mut RunReport) -> Result<(), CollectError> {
        for (account, region, trail) in store.digest_chains()? {
            let (digests, files) = store.chain_digests(&account, &region, &trail)?;
            let verdict = walk_chain(&digests, &files);
            if let Some(stop) = verdict
                .stopped
                .as_ref()
                .filter(|s| s.cause == StopCause::Link)
            {
                self.report(
                    store,
                    report,
                    "broken-chain",
                    &stop.key,
                    &account,
                    &region,
                    &stop.reason,
                )?;
            }
            store.set_chain_status(&ChainStatus {
                account,
                region,
                trail,
                verified_through: verdict.verified_through,
                digests: digests.len() as u64,
                problem: verdict.stopped.map(|s| format!("{}: {}", s.key, s.reason)),
                checked_at: tregov_engine::log::now_rfc3339(),
            })?;
        }
        Ok(())
    }

    /// Records an anomaly; a new one is warned about and joins the run's errors.
    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        store: &EventStore,
        report: &mut RunReport,
        kind: &str,
        key: &str,
        account: &str,
        region: &str,
        detail: &str,
    ) -> Result<(), CollectError> {
        if store.record_anomaly(kind, key, account, region, detail)? {
            tracing::warn!(kind, key, account, region, detail, bucket = %self.bucket, "cloudtrail anomaly");
            report
                .errors
                .push(format!("{kind}: s3://{}/{key}: {detail}", self.bucket));
        }
        Ok(())
    }
}

/// Log files the store holds that a complete listing covering them no longer showed.
fn gone_from_listings(
    store: &EventStore,
    listed: &[Listed],
) -> Result<BTreeSet<String>, CollectError> {
    let mut gone = BTreeSet::new();
    for l in listed.iter().filter(|l| l.complete) {
        for key in store.log_keys_under(&l.prefix, l.after.as_deref())? {
            if !l.keys.contains(&key) {
                gone.insert(key);
            }
        }
    }
    Ok(gone)
}
