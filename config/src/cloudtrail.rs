//! `[cloudtrail]`: the organization trail's bucket and how its keys are laid out.

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
}

fn default_lookback_days() -> u32 {
    1
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
    }
}
