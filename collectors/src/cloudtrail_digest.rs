//! CloudTrail digest files, as AWS documents them ("CloudTrail digest file structure" and
//! "Custom implementations of CloudTrail log file integrity validation"): pure, no I/O.
//!
//! Every hour CloudTrail writes, per account and region, a gzip JSON digest listing the log
//! files it delivered with the SHA-256 of each *uncompressed* file, and chains it to the
//! digest before (its key, the SHA-256 of its uncompressed content, its signature). The
//! digest is signed SHA256withRSA over
//! `digestEndTime \n digestS3Bucket/digestS3Object \n hex(sha256(uncompressed digest)) \n
//! previousDigestSignature` (the text `null` for the first of a chain), and the hex signature
//! is the object's `signature` metadata. This is what the AWS CLI's `validate-logs` checks.

use std::collections::BTreeMap;
use std::io::Read;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tregov_engine::events::{DigestRecord, EntrySummary, FileState};

/// Where a digest's key says it came from:
/// `.../<account>/CloudTrail-Digest/<region>/YYYY/MM/DD/<account>_CloudTrail-Digest_<region>_<trail>_<home-region>_<YYYYMMDDTHHMMSSZ>[_backfill].json.gz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestKey {
    pub account: String,
    pub region: String,
    pub trail: String,
    pub backfill: bool,
    /// The end time the name gives (RFC 3339), for a digest too damaged to say itself.
    pub end_time: String,
}

/// Reads a digest key; `None` for keys that are not digest files.
pub fn parse_digest_key(key: &str) -> Option<DigestKey> {
    let parts: Vec<&str> = key.split('/').collect();
    let i = parts.iter().position(|p| *p == "CloudTrail-Digest")?;
    let account = *parts.get(i.checked_sub(1)?)?;
    let region = *parts.get(i + 1)?;
    let name = parts.last()?.strip_suffix(".json.gz")?;
    let (name, backfill) = match name.strip_suffix("_backfill") {
        Some(n) => (n, true),
        None => (name, false),
    };
    let (rest, stamp) = name.rsplit_once('_')?;
    let stamp_ok = stamp.len() == 16 && stamp.ends_with('Z') && stamp.as_bytes()[8] == b'T';
    let trail_home = rest.strip_prefix(&format!("{account}_CloudTrail-Digest_{region}_"))?;
    // Trail names may hold underscores; region names never do.
    let (trail, _home) = trail_home.rsplit_once('_')?;
    let s = |r: std::ops::Range<usize>| stamp.get(r).unwrap_or_default();
    let end_time = format!(
        "{}-{}-{}T{}:{}:{}Z",
        s(0..4),
        s(4..6),
        s(6..8),
        s(9..11),
        s(11..13),
        s(13..15)
    );
    (stamp_ok && !trail.is_empty()).then(|| DigestKey {
        account: account.to_string(),
        region: region.to_string(),
        trail: trail.to_string(),
        backfill,
        end_time,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DigestJson {
    aws_account_id: Option<String>,
    digest_start_time: String,
    digest_end_time: String,
    digest_s3_bucket: String,
    digest_s3_object: String,
    digest_public_key_fingerprint: String,
    digest_signature_algorithm: Option<String>,
    previous_digest_s3_object: Option<String>,
    previous_digest_hash_value: Option<String>,
    previous_digest_signature: Option<String>,
    #[serde(default)]
    log_files: Vec<LogFileJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogFileJson {
    s3_bucket: String,
    s3_object: String,
    hash_value: String,
    hash_algorithm: Option<String>,
}

/// A log file a digest lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    pub bucket: String,
    pub key: String,
    /// SHA-256 (hex, lowercase) of the uncompressed log file.
    pub sha256: String,
}

/// A digest file, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub aws_account_id: Option<String>,
    pub start_time: String,
    pub end_time: String,
    pub s3_bucket: String,
    pub s3_object: String,
    pub fingerprint: String,
    pub algorithm: Option<String>,
    pub previous_key: Option<String>,
    pub previous_sha256: Option<String>,
    pub previous_signature: Option<String>,
    pub log_files: Vec<ListedFile>,
    /// SHA-256 (hex) of the uncompressed digest file: what the signature and the next
    /// digest's `previousDigestHashValue` cover.
    pub content_sha256: String,
}

/// Why a digest is not valid. Every kind but `UnknownKey` means the bucket holds something
/// CloudTrail did not write there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestProblem {
    #[error("not a digest file: {0}")]
    Unreadable(String),
    #[error("moved: it says it is `{claimed}`")]
    Moved { claimed: String },
    #[error("has no `signature` metadata")]
    Unsigned,
    #[error("signed with `{0}`, not SHA256withRSA")]
    Algorithm(String),
    #[error("no public key with fingerprint `{0}` is known")]
    UnknownKey(String),
    #[error("the signature does not verify against the key `{0}`")]
    BadSignature(String),
}

impl DigestProblem {
    /// The anomaly kind reported for it.
    pub fn kind(&self) -> &'static str {
        match self {
            DigestProblem::Unreadable(_) => "digest-unreadable",
            DigestProblem::Moved { .. } => "digest-moved",
            DigestProblem::Unsigned | DigestProblem::Algorithm(_) => "digest-unsigned",
            DigestProblem::UnknownKey(_) => "digest-unverifiable",
            DigestProblem::BadSignature(_) => "bad-signature",
        }
    }

    /// A key tregov does not know is no sign of tampering: the digest is retried later.
    pub fn is_tampering(&self) -> bool {
        !matches!(self, DigestProblem::UnknownKey(_))
    }
}

/// Decompresses and parses one digest file found at `bucket`/`key`.
pub fn parse_digest(bucket: &str, key: &str, gz: &[u8]) -> Result<Digest, DigestProblem> {
    if gz.len() < 2 || gz[0] != 0x1f || gz[1] != 0x8b {
        return Err(DigestProblem::Unreadable("not gzip".into()));
    }
    let mut content = Vec::with_capacity(gz.len() * 4);
    flate2::read::MultiGzDecoder::new(gz)
        .read_to_end(&mut content)
        .map_err(|e| DigestProblem::Unreadable(format!("cannot decompress: {e}")))?;
    let json: DigestJson =
        serde_json::from_slice(&content).map_err(|e| DigestProblem::Unreadable(e.to_string()))?;
    if json.digest_s3_bucket != bucket || json.digest_s3_object != key {
        return Err(DigestProblem::Moved {
            claimed: format!("{}/{}", json.digest_s3_bucket, json.digest_s3_object),
        });
    }
    let log_files = json
        .log_files
        .into_iter()
        // Only SHA-256 is documented; another algorithm's hash can never match and is kept
        // so that the file is reported rather than silently skipped.
        .map(|f| ListedFile {
            bucket: f.s3_bucket,
            key: f.s3_object,
            sha256: match f.hash_algorithm.as_deref() {
                None | Some("SHA-256") => f.hash_value.to_ascii_lowercase(),
                Some(other) => format!("{other}:{}", f.hash_value),
            },
        })
        .collect();
    Ok(Digest {
        aws_account_id: json.aws_account_id,
        start_time: json.digest_start_time,
        end_time: json.digest_end_time,
        s3_bucket: json.digest_s3_bucket,
        s3_object: json.digest_s3_object,
        fingerprint: json.digest_public_key_fingerprint,
        algorithm: json.digest_signature_algorithm,
        previous_key: json.previous_digest_s3_object,
        previous_sha256: json
            .previous_digest_hash_value
            .map(|h| h.to_ascii_lowercase()),
        previous_signature: json.previous_digest_signature,
        log_files,
        content_sha256: hex::encode(Sha256::digest(&content)),
    })
}

/// The string CloudTrail signs for a digest.
pub fn string_to_sign(d: &Digest) -> String {
    format!(
        "{}\n{}/{}\n{}\n{}",
        d.end_time,
        d.s3_bucket,
        d.s3_object,
        d.content_sha256,
        // The first digest of a chain has none; CloudTrail signs the text `null`.
        d.previous_signature.as_deref().unwrap_or("null")
    )
}

/// Digest-signing public keys by fingerprint: DER PKCS#1 `RSAPublicKey`s.
#[derive(Debug, Clone, Default)]
pub struct PublicKeys(BTreeMap<String, Vec<u8>>);

impl PublicKeys {
    pub fn insert(&mut self, fingerprint: &str, der: Vec<u8>) {
        self.0.insert(fingerprint.to_ascii_lowercase(), der);
    }

    pub fn contains(&self, fingerprint: &str) -> bool {
        self.0.contains_key(&fingerprint.to_ascii_lowercase())
    }

    /// Checks a digest's signature (hex, from its `signature` metadata) and algorithm.
    pub fn verify(
        &self,
        d: &Digest,
        signature_hex: Option<&str>,
        algorithm: Option<&str>,
    ) -> Result<(), DigestProblem> {
        let signature = signature_hex.ok_or(DigestProblem::Unsigned)?;
        if let Some(a) = algorithm.or(d.algorithm.as_deref()) {
            if a != "SHA256withRSA" {
                return Err(DigestProblem::Algorithm(a.to_string()));
            }
        }
        let der = self
            .0
            .get(&d.fingerprint.to_ascii_lowercase())
            .ok_or_else(|| DigestProblem::UnknownKey(d.fingerprint.clone()))?;
        let bad = || DigestProblem::BadSignature(d.fingerprint.clone());
        let signature = hex::decode(signature.trim()).map_err(|_| bad())?;
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            der.as_slice(),
        )
        .verify(string_to_sign(d).as_bytes(), &signature)
        .map_err(|_| bad())
    }
}

/// Where a chain of digests stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainVerdict {
    /// The `digestEndTime` of the last digest up to which everything verified.
    pub verified_through: Option<String>,
    /// What stopped it: the digest's key, whether that is tampering, and why.
    pub stopped: Option<ChainStop>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainStop {
    pub key: String,
    pub cause: StopCause,
    pub reason: String,
}

/// What stopped a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// The digest itself is not valid (reported when it was read).
    Digest,
    /// The digest does not link to the one before it: a digest was deleted or altered.
    Link,
    /// It lists altered or missing log files (reported when they were compared).
    Files,
    /// Files it lists were not compared yet: no sign of tampering.
    Pending,
}

impl ChainStop {
    pub fn tampering(&self) -> bool {
        self.cause != StopCause::Pending
    }
}

/// Walks one trail's digests oldest first. The chain stays verified while each digest is
/// validly signed, names the one before it (key, SHA-256, signature) and every file it lists
/// is verified. The oldest digest held is trusted as the anchor; a digest naming no previous
/// one starts a new chain (CloudTrail does that after logging was stopped).
pub fn walk_chain(digests: &[DigestRecord], files: &EntrySummary) -> ChainVerdict {
    let mut verdict = ChainVerdict {
        verified_through: None,
        stopped: None,
    };
    let by_key: BTreeMap<&str, &DigestRecord> =
        digests.iter().map(|d| (d.key.as_str(), d)).collect();
    for (i, d) in digests.iter().enumerate() {
        let stop = |cause: StopCause, reason: String| ChainStop {
            key: d.key.clone(),
            cause,
            reason,
        };
        if let Some(problem) = &d.problem {
            verdict.stopped = Some(stop(StopCause::Digest, format!("digest {problem}")));
            break;
        }
        if let Some(reason) = link_problem(d, i, digests, &by_key) {
            verdict.stopped = Some(stop(StopCause::Link, reason));
            break;
        }
        let states = files.get(&d.key);
        let count = |s: Option<FileState>| states.and_then(|m| m.get(&s)).copied().unwrap_or(0);
        let (altered, missing) = (
            count(Some(FileState::Altered)),
            count(Some(FileState::Missing)),
        );
        if altered + missing > 0 {
            let reason = format!("lists {altered} altered and {missing} missing log file(s)");
            verdict.stopped = Some(stop(StopCause::Files, reason));
            break;
        }
        if count(None) > 0 {
            let reason = format!("{} listed log file(s) not compared yet", count(None));
            verdict.stopped = Some(stop(StopCause::Pending, reason));
            break;
        }
        verdict.verified_through = Some(d.end_time.clone());
    }
    verdict
}

/// Why `d` (at `i`) does not link to the digest before it, if it does not.
fn link_problem(
    d: &DigestRecord,
    i: usize,
    digests: &[DigestRecord],
    by_key: &BTreeMap<&str, &DigestRecord>,
) -> Option<String> {
    let previous_key = d.previous_key.as_deref()?;
    let Some(previous) = by_key.get(previous_key) else {
        // The anchor's predecessor was never seen (it predates what tregov read).
        return (i > 0).then(|| format!("the previous digest `{previous_key}` is missing"));
    };
    if i > 0 && digests[i - 1].key != previous.key {
        return Some(format!(
            "names `{previous_key}` as previous, not `{}`",
            digests[i - 1].key
        ));
    }
    if d.previous_sha256.as_deref() != Some(previous.content_sha256.as_str()) {
        return Some(format!("the previous digest `{previous_key}` was altered"));
    }
    if d.previous_signature != previous.signature {
        return Some(format!(
            "the previous digest `{previous_key}` has another signature"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{
        digest_json, gzip_bytes, sign_digest, test_public_key, TEST_KEY_FINGERPRINT,
    };

    const KEY: &str = "AWSLogs/o-abc/111111111111/CloudTrail-Digest/eu-west-2/2026/11/20/111111111111_CloudTrail-Digest_eu-west-2_org_trail_us-east-1_20261120T010000Z.json.gz";

    fn keys() -> PublicKeys {
        let mut k = PublicKeys::default();
        k.insert(TEST_KEY_FINGERPRINT, test_public_key());
        k
    }

    fn sample(previous: Option<(&str, &str, &str)>) -> (Vec<u8>, Digest) {
        let files = [("b", "AWSLogs/x.json.gz", "AB".repeat(32))];
        let json = digest_json("b", KEY, "2026-11-20T01:00:00Z", previous, &files);
        let gz = gzip_bytes(json.as_bytes());
        let d = parse_digest("b", KEY, &gz).expect("parse");
        (gz, d)
    }

    #[test]
    fn a_digest_key_names_its_account_region_and_trail() {
        let k = parse_digest_key(KEY).expect("a digest key");
        assert_eq!(k.account, "111111111111");
        assert_eq!(k.region, "eu-west-2");
        assert_eq!(k.trail, "org_trail", "underscores in trail names are kept");
        assert!(!k.backfill);
        assert_eq!(k.end_time, "2026-11-20T01:00:00Z");
        let backfill = KEY.replace(".json.gz", "_backfill.json.gz");
        assert!(parse_digest_key(&backfill).expect("backfill").backfill);
        assert_eq!(
            parse_digest_key("AWSLogs/1/CloudTrail/eu-west-2/x.json.gz"),
            None
        );
    }

    #[test]
    fn the_string_to_sign_is_end_time_path_content_hash_and_previous_signature() {
        let (gz, d) = sample(None);
        let mut content = Vec::new();
        flate2::read::MultiGzDecoder::new(gz.as_slice())
            .read_to_end(&mut content)
            .expect("gunzip");
        // The hash is of the uncompressed content, not of the object's bytes.
        let expected = format!(
            "2026-11-20T01:00:00Z\nb/{KEY}\n{}\nnull",
            hex::encode(Sha256::digest(&content))
        );
        assert_eq!(string_to_sign(&d), expected);
        assert_eq!(
            d.log_files[0].sha256,
            "ab".repeat(32),
            "hashes compare lowercase"
        );
    }

    #[test]
    fn a_signature_verifies_only_for_the_digest_it_was_made_for() {
        let (_, d) = sample(None);
        let signature = sign_digest(&string_to_sign(&d));
        assert_eq!(
            keys().verify(&d, Some(&signature), Some("SHA256withRSA")),
            Ok(())
        );
        let (_, other) = sample(Some(("prev-key", "00", "ff")));
        assert!(matches!(
            keys().verify(&other, Some(&signature), None),
            Err(DigestProblem::BadSignature(_))
        ));
        assert_eq!(keys().verify(&d, None, None), Err(DigestProblem::Unsigned));
        let unknown = PublicKeys::default().verify(&d, Some(&signature), None);
        assert!(matches!(unknown, Err(DigestProblem::UnknownKey(_))));
        assert!(!unknown.expect_err("unknown").is_tampering());
    }

    #[test]
    fn a_digest_found_elsewhere_than_it_says_is_moved() {
        let (gz, _) = sample(None);
        let moved = parse_digest("b", "AWSLogs/elsewhere.json.gz", &gz);
        assert!(matches!(moved, Err(DigestProblem::Moved { .. })));
        assert!(matches!(
            parse_digest("b", KEY, b"{}"),
            Err(DigestProblem::Unreadable(_))
        ));
    }

    fn record(key: &str, end: &str, previous: Option<&DigestRecord>) -> DigestRecord {
        DigestRecord {
            key: key.into(),
            etag: "e".into(),
            account: "111111111111".into(),
            region: "eu-west-2".into(),
            trail: "org".into(),
            backfill: false,
            start_time: end.into(),
            end_time: end.into(),
            signature: Some(format!("sig-{key}")),
            content_sha256: format!("hash-{key}"),
            previous_key: previous.map(|p| p.key.clone()),
            previous_signature: previous.and_then(|p| p.signature.clone()),
            previous_sha256: previous.map(|p| p.content_sha256.clone()),
            problem: None,
        }
    }

    fn verified(keys: &[&str]) -> EntrySummary {
        keys.iter()
            .map(|k| {
                (
                    k.to_string(),
                    BTreeMap::from([(Some(FileState::Verified), 2)]),
                )
            })
            .collect()
    }

    #[test]
    fn an_unbroken_chain_is_verified_through_its_last_digest() {
        let a = record("a", "2026-11-20T01:00:00Z", None);
        let b = record("b", "2026-11-20T02:00:00Z", Some(&a));
        let c = record("c", "2026-11-20T03:00:00Z", Some(&b));
        let v = walk_chain(&[a, b, c], &verified(&["a", "b", "c"]));
        assert_eq!(v.verified_through.as_deref(), Some("2026-11-20T03:00:00Z"));
        assert_eq!(v.stopped, None);
    }

    #[test]
    fn a_deleted_digest_breaks_the_chain_as_tampering() {
        let a = record("a", "2026-11-20T01:00:00Z", None);
        let b = record("b", "2026-11-20T02:00:00Z", Some(&a));
        let c = record("c", "2026-11-20T03:00:00Z", Some(&b));
        let v = walk_chain(&[a, c], &verified(&["a", "c"]));
        assert_eq!(v.verified_through.as_deref(), Some("2026-11-20T01:00:00Z"));
        let stop = v.stopped.expect("stopped");
        assert_eq!(stop.key, "c");
        assert_eq!(stop.cause, StopCause::Link);
        assert!(
            stop.tampering() && stop.reason.contains("missing"),
            "{stop:?}"
        );
    }

    #[test]
    fn an_altered_previous_digest_or_file_stops_the_chain() {
        let a = record("a", "2026-11-20T01:00:00Z", None);
        let mut b = record("b", "2026-11-20T02:00:00Z", Some(&a));
        b.previous_sha256 = Some("other".into());
        let v = walk_chain(&[a.clone(), b], &verified(&["a", "b"]));
        assert!(v.stopped.expect("stopped").reason.contains("altered"));
        let mut files = verified(&["a"]);
        files.insert("a".into(), BTreeMap::from([(Some(FileState::Altered), 1)]));
        let v = walk_chain(&[a], &files);
        assert_eq!(v.verified_through, None);
        assert!(v.stopped.expect("stopped").tampering());
    }

    #[test]
    fn files_not_compared_yet_stop_the_chain_without_tampering() {
        let a = record("a", "2026-11-20T01:00:00Z", None);
        let files = EntrySummary::from([("a".to_string(), BTreeMap::from([(None, 1)]))]);
        let v = walk_chain(&[a], &files);
        assert_eq!(v.verified_through, None);
        assert!(!v.stopped.expect("stopped").tampering());
    }
}
