//! `[cloudtrail]`: the organization trail's bucket and how its keys are laid out.

use std::path::PathBuf;

use serde::Deserialize;

use crate::key_path::KeyPath;
use crate::validate::{check_not_empty, check_role_arn, Problems, Validate};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudTrailConfig {
    /// The bucket the organization trail delivers to (usually in the Log Archive account).
    pub bucket: String,
    /// Key prefix before `AWSLogs/`, if the trail has one.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The AWS Organizations id (`o-...`) of an organization trail: its keys are
    /// `AWSLogs/<org-id>/<account>/...`.
    #[serde(default)]
    pub organization_id: Option<String>,
    /// A role to assume to read the bucket; default: the base credentials.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// Only these regions; default: every region found under each account.
    #[serde(default)]
    pub regions: Option<Vec<String>>,
    /// Days before the last fully read day that are listed again, for late deliveries.
    #[serde(default = "default_lookback_days")]
    pub lookback_days: u32,
    /// The egress-store bucket: S3 writes to it become `egress-store-write` observations.
    #[serde(default)]
    pub egress_bucket: Option<String>,
    /// Public keys that digest files may be signed with, beside those CloudTrail's
    /// `ListPublicKeys` returns (for emulators that lack it, or a bucket checked offline).
    #[serde(default)]
    pub public_keys: Vec<PublicKeyConfig>,
    /// An SQS queue that an EventBridge rule fills with the governed accounts' CloudTrail
    /// management events ("AWS API Call via CloudTrail"): the daemon long-polls it and
    /// reconciles each change within seconds, instead of when the log file lands minutes
    /// later (`deploy/` has the rule and queue).
    #[serde(default)]
    pub events_queue_url: Option<String>,
    /// An SQS queue that S3 event notifications (or CloudTrail's SNS notifications) for new
    /// log files fill: polls read the files it announces instead of listing the bucket. A
    /// resync still lists, so a lost notification delays a file, never loses it.
    #[serde(default)]
    pub files_queue_url: Option<String>,
    /// A log object larger than this is recorded as an error with its key and not read.
    /// Default 256 MiB; at most `MAX_STORED_FILE_BYTES`, the largest value the store holds.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// A log object inflating beyond this is cut off there and recorded as an error, its
    /// records before the cut kept. Default 2 GiB.
    #[serde(default = "default_max_inflated_bytes")]
    pub max_inflated_bytes: u64,
}

/// SQLite's default limit on one value: a log file is stored as delivered, in one.
pub const MAX_STORED_FILE_BYTES: u64 = 1_000_000_000;

/// One digest-signing public key: a DER PKCS#1 `RSAPublicKey`, as `ListPublicKeys` returns.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyConfig {
    /// The key's fingerprint as digest files name it (`digestPublicKeyFingerprint`).
    pub fingerprint: String,
    /// A file holding the DER key (relative paths are relative to the config file).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The DER key in base64, as `aws cloudtrail list-public-keys` prints `Value`.
    #[serde(default)]
    pub value: Option<String>,
}

/// Why a configured public key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PublicKeyError {
    #[error("cannot read the public key `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the public key `{fingerprint}` is not base64: {source}")]
    Base64 {
        fingerprint: String,
        source: base64::DecodeError,
    },
    #[error("the public key `{fingerprint}` has neither `path` nor `value`")]
    Empty { fingerprint: String },
}

impl PublicKeyConfig {
    /// The key's DER bytes, read from its file or decoded from its `value`.
    pub fn der(&self) -> Result<Vec<u8>, PublicKeyError> {
        use base64::Engine as _;
        match (&self.path, &self.value) {
            (Some(path), _) => std::fs::read(path).map_err(|source| PublicKeyError::Read {
                path: path.display().to_string(),
                source,
            }),
            (None, Some(value)) => base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .map_err(|source| PublicKeyError::Base64 {
                    fingerprint: self.fingerprint.clone(),
                    source,
                }),
            (None, None) => Err(PublicKeyError::Empty {
                fingerprint: self.fingerprint.clone(),
            }),
        }
    }
}

fn default_lookback_days() -> u32 {
    1
}

fn default_max_file_bytes() -> u64 {
    256 * 1024 * 1024
}

fn default_max_inflated_bytes() -> u64 {
    2 * 1024 * 1024 * 1024
}

impl Validate for CloudTrailConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        check_not_empty(&self.bucket, at.key("bucket"), problems);
        if let Some(org) = &self.organization_id {
            problems.check(org.starts_with("o-"), at.key("organization_id"), || {
                format!("`{org}` is not an AWS Organizations id (`o-...`)")
            });
        }
        check_role_arn(self.role_arn.as_deref(), at.key("role_arn"), problems);
        for (key, url) in [
            ("events_queue_url", &self.events_queue_url),
            ("files_queue_url", &self.files_queue_url),
        ] {
            if let Some(url) = url {
                problems.check(
                    url.starts_with("https://") || url.starts_with("http://"),
                    at.key(key),
                    || format!("`{url}` is not an SQS queue URL (`https://sqs...`)"),
                );
            }
        }
        if let (Some(events), Some(files)) = (&self.events_queue_url, &self.files_queue_url) {
            problems.check(events != files, at.key("files_queue_url"), || {
                format!("`{files}` is also `events_queue_url`: events and file notifications need a queue each")
            });
        }
        for (i, key) in self.public_keys.iter().enumerate() {
            key.validate(&at.key("public_keys").index(i), problems);
        }
        let max = self.max_file_bytes;
        problems.check(
            (1..=MAX_STORED_FILE_BYTES).contains(&max),
            at.key("max_file_bytes"),
            || format!("`{max}` is not between 1 and {MAX_STORED_FILE_BYTES}"),
        );
        problems.check(
            self.max_inflated_bytes > 0,
            at.key("max_inflated_bytes"),
            || "must be more than 0".into(),
        );
    }
}

impl Validate for PublicKeyConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        let fp = &self.fingerprint;
        problems.check(
            !fp.is_empty() && fp.bytes().all(|b| b.is_ascii_hexdigit()),
            at.key("fingerprint"),
            || format!("`{fp}` is not a hex fingerprint"),
        );
        problems.check(
            self.path.is_some() != self.value.is_some(),
            at.clone(),
            || "needs exactly one of `path` (a DER file) and `value` (base64 DER)".into(),
        );
        if let Some(value) = &self.value {
            use base64::Engine as _;
            let ok = base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .is_ok();
            problems.check(ok, at.key("value"), || "is not base64".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    #[test]
    fn a_public_key_with_both_a_path_and_a_value_is_named_with_its_line() {
        let text = "[cloudtrail]\nbucket = \"b\"\n[[cloudtrail.public_keys]]\nfingerprint = \"ab12\"\npath = \"k.der\"\nvalue = \"AAAA\"\n";
        let err = Config::parse("tregov.toml", text).expect_err("both");
        let shown = format!("{err:?}");
        assert!(shown.contains("cloudtrail.public_keys[0]"), "{shown}");
        assert!(shown.contains("exactly one"), "{shown}");
    }

    #[test]
    fn a_fingerprint_that_is_not_hex_is_named() {
        let text = "[cloudtrail]\nbucket = \"b\"\n[[cloudtrail.public_keys]]\nfingerprint = \"xyz\"\nvalue = \"AAAA\"\n";
        let err = Config::parse("tregov.toml", text).expect_err("not hex");
        let shown = format!("{err:?}");
        assert!(
            shown.contains("cloudtrail.public_keys[0].fingerprint"),
            "{shown}"
        );
    }
}
