//! `[egress]`: where researchers' results wait, where reviewers inspect them, where approved
//! results go, and who reviews.

use serde::Deserialize;

use crate::key_path::KeyPath;
use crate::validate::{check_not_empty, check_role_arn, Problems, Validate};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// The egress-store bucket: each workspace's files under `<workspaceId>/`. Versioning must
    /// be on: requests pin object VersionIds.
    pub store_bucket: String,
    /// Where pinned versions are copied for reviewers to inspect, under
    /// `<workspaceId>/<requestId>/`.
    pub staging_bucket: String,
    /// Where approved files go, under `approved_egress/<workspaceId>/<requestId>/`. Never
    /// the staging bucket: reviewers can read that one, and approved results are not theirs.
    pub approved_bucket: String,
    /// KMS key for SSE-KMS on staged and approved copies. Default: the buckets' own encryption.
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// Account holding the buckets, when its role must be assumed (`role_arn`).
    #[serde(default)]
    pub role_arn: Option<String>,
    /// The ordered review steps, each a `Tre::Role` id. Default
    /// `["InformationGovernance", "ResearchIT"]`.
    #[serde(default = "default_egress_steps")]
    pub steps: Vec<String>,
    /// The `Tre::Role` whose members download approved files. Default `InformationGovernance`.
    #[serde(default = "default_download_role")]
    pub download_role: String,
    /// Downloads allowed per request. Default 1.
    #[serde(default = "default_download_limit")]
    pub download_limit: i64,
    /// Lifetime of a presigned download URL, in seconds: a URL is a bearer link, so short.
    /// Default 300.
    #[serde(default = "default_url_expiry")]
    pub url_expiry_seconds: u64,
    /// SNS topic told of each step (message attribute `audience`: the role or the requester).
    /// Notifications wait in an outbox and never hold up the files; on a FIFO topic
    /// (`.fifo`) each is sent with its own deduplication id, so none arrives twice.
    #[serde(default)]
    pub notify_topic_arn: Option<String>,
    /// Failed attempts at a request's S3 work (staging, publishing, cleaning up) before the
    /// request becomes `FAILED` and IT admins are alerted. Default 5.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Seconds between retries of S3 work and notifications that failed. Default 30.
    #[serde(default = "default_retry_seconds")]
    pub retry_seconds: u64,
    /// Files larger than this are copied in parts (`UploadPartCopy`): `CopyObject` stops at
    /// 5 GiB. Default 5 GiB; at least 5 MiB, S3's smallest part.
    #[serde(default = "default_multipart_copy_bytes")]
    pub multipart_copy_bytes: u64,
}

/// S3's smallest part of a multipart upload (but the last).
pub const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;
/// `CopyObject`'s largest source.
pub const MAX_COPY_OBJECT_BYTES: u64 = 5 * 1024 * 1024 * 1024;

fn default_egress_steps() -> Vec<String> {
    vec!["InformationGovernance".into(), "ResearchIT".into()]
}
fn default_download_role() -> String {
    "InformationGovernance".into()
}
fn default_download_limit() -> i64 {
    1
}
fn default_url_expiry() -> u64 {
    300
}
fn default_max_attempts() -> u32 {
    5
}
fn default_retry_seconds() -> u64 {
    30
}
fn default_multipart_copy_bytes() -> u64 {
    MAX_COPY_OBJECT_BYTES
}

impl EgressConfig {
    /// What the workflow in the engine needs of this section.
    pub fn settings(&self) -> tregov_engine::egress::EgressSettings {
        tregov_engine::egress::EgressSettings {
            steps: self.steps.clone(),
            download_role: self.download_role.clone(),
            download_limit: self.download_limit,
            max_attempts: self.max_attempts,
        }
    }

    pub fn retry_every(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.retry_seconds)
    }
}

impl Validate for EgressConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        check_not_empty(&self.store_bucket, at.key("store_bucket"), problems);
        check_not_empty(&self.staging_bucket, at.key("staging_bucket"), problems);
        check_not_empty(&self.approved_bucket, at.key("approved_bucket"), problems);
        problems.check(
            self.approved_bucket != self.staging_bucket,
            at.key("approved_bucket"),
            || {
                format!(
                    "`{}` is the staging bucket, which reviewers read: approved files need a bucket of their own",
                    self.approved_bucket
                )
            },
        );
        check_not_empty(&self.download_role, at.key("download_role"), problems);
        problems.check(
            !self.steps.is_empty() && self.steps.iter().all(|s| !s.trim().is_empty()),
            at.key("steps"),
            || "needs at least one non-empty role".into(),
        );
        problems.check(self.download_limit >= 1, at.key("download_limit"), || {
            format!("must be at least 1, not {}", self.download_limit)
        });
        problems.check(
            (60..=604_800).contains(&self.url_expiry_seconds),
            at.key("url_expiry_seconds"),
            || "must be 60..604800 (S3's presigning limit)".into(),
        );
        check_role_arn(self.role_arn.as_deref(), at.key("role_arn"), problems);
        problems.check(
            (1..=100).contains(&self.max_attempts),
            at.key("max_attempts"),
            || "must be 1..100".into(),
        );
        problems.check(
            (1..=3600).contains(&self.retry_seconds),
            at.key("retry_seconds"),
            || "must be 1..3600".into(),
        );
        problems.check(
            (MIN_PART_BYTES..=MAX_COPY_OBJECT_BYTES).contains(&self.multipart_copy_bytes),
            at.key("multipart_copy_bytes"),
            || format!("must be {MIN_PART_BYTES}..{MAX_COPY_OBJECT_BYTES} (5 MiB to 5 GiB)"),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;
    use tregov_engine::error::EngineError;

    #[test]
    fn approved_files_need_a_bucket_other_than_the_staging_one() {
        let text = "[egress]\nstore_bucket = \"s\"\nstaging_bucket = \"review\"\napproved_bucket = \"review\"\n";
        let Err(EngineError::Invalid(invalid)) = Config::parse("tregov.toml", text) else {
            panic!("expected problems");
        };
        assert!(
            invalid.problems[0]
                .message
                .starts_with("`egress.approved_bucket`"),
            "{invalid:?}"
        );
        assert_eq!(invalid.problems[0].line, 4);
        let ok = text.replace("approved_bucket = \"review\"", "approved_bucket = \"out\"");
        let config = Config::parse("tregov.toml", &ok).expect("valid");
        assert_eq!(config.egress.map(|e| e.url_expiry_seconds), Some(300));
    }
}
