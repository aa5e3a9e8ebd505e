//! `[log]`: how the decision log's head is signed and where the signed heads are anchored.

use std::path::PathBuf;

use serde::Deserialize;

use crate::key_path::KeyPath;
use crate::validate::{check_not_empty, check_role_arn, Problems, Validate};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// An ed25519 PKCS#8 private key file (`tregov log keygen` writes one). Keep it where the
    /// data directory's writers cannot read it, or use `kms_key_id`.
    #[serde(default)]
    pub signing_key: Option<PathBuf>,
    /// The ed25519 public key (64 hex digits) that `log verify --anchors` checks with, for an
    /// auditor who holds no private key.
    #[serde(default)]
    pub verify_key: Option<PathBuf>,
    /// A KMS key (`ECC_NIST_P256`, `SIGN_VERIFY`) that signs heads with `ECDSA_SHA_256`; the
    /// private key never leaves KMS. Instead of `signing_key`.
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// The bucket signed heads are written to; Object Lock is used when the bucket has it.
    #[serde(default)]
    pub anchor_bucket: Option<String>,
    /// Key prefix of the anchors in `anchor_bucket`.
    #[serde(default = "default_anchor_prefix")]
    pub anchor_prefix: String,
    /// A role to assume for the bucket and KMS; default: the base credentials.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// Anchor after this many new records. Default 1000.
    #[serde(default = "default_anchor_records")]
    pub anchor_records: u64,
    /// Anchor new records at least this often, in seconds. Default 300.
    #[serde(default = "default_anchor_seconds")]
    pub anchor_seconds: u64,
    /// Object Lock mode for anchors in a bucket that has Object Lock: `governance` (default)
    /// or `compliance`.
    #[serde(default = "default_object_lock_mode")]
    pub object_lock_mode: String,
    /// Days each anchor is retained under Object Lock. Default 400.
    #[serde(default = "default_object_lock_days")]
    pub object_lock_days: u32,
}

fn default_anchor_prefix() -> String {
    "tregov/log-anchors/".into()
}
fn default_anchor_records() -> u64 {
    1000
}
fn default_anchor_seconds() -> u64 {
    300
}
fn default_object_lock_mode() -> String {
    "governance".into()
}
fn default_object_lock_days() -> u32 {
    400
}

impl LogConfig {
    pub fn anchor_every(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.anchor_seconds)
    }
}

impl Validate for LogConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        let keys = [
            self.signing_key.is_some(),
            self.verify_key.is_some(),
            self.kms_key_id.is_some(),
        ];
        problems.check(
            keys.iter().filter(|k| **k).count() <= 1,
            at.key("signing_key"),
            || "give one of `signing_key`, `verify_key` or `kms_key_id`".into(),
        );
        problems.check(
            self.anchor_bucket.is_none() || keys.iter().any(|k| *k),
            at.key("anchor_bucket"),
            || "anchors are signed: give `signing_key`, `verify_key` or `kms_key_id`".into(),
        );
        if let Some(bucket) = &self.anchor_bucket {
            check_not_empty(bucket, at.key("anchor_bucket"), problems);
        }
        if let Some(id) = &self.kms_key_id {
            check_not_empty(id, at.key("kms_key_id"), problems);
        }
        check_role_arn(self.role_arn.as_deref(), at.key("role_arn"), problems);
        problems.check(self.anchor_records >= 1, at.key("anchor_records"), || {
            "must be at least 1".into()
        });
        problems.check(
            (10..=86_400).contains(&self.anchor_seconds),
            at.key("anchor_seconds"),
            || "must be between 10 and 86400".into(),
        );
        problems.check(
            matches!(self.object_lock_mode.as_str(), "governance" | "compliance"),
            at.key("object_lock_mode"),
            || {
                format!(
                    "`{}` is not `governance` or `compliance`",
                    self.object_lock_mode
                )
            },
        );
        problems.check(
            (1..=36_500).contains(&self.object_lock_days),
            at.key("object_lock_days"),
            || "must be between 1 and 36500".into(),
        );
    }
}
