//! `[safety]`: the limits that stop one bad input (an empty export, a listing that lost its
//! permission, a truncated policy file) from revoking access at scale without a human.

use serde::Deserialize;

use crate::key_path::KeyPath;
use crate::validate::{check_fraction, Problems, Validate};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyConfig {
    /// A reconcile that would revoke more than this fraction of the grants tregov governs
    /// applies none of its revocations: they wait for approval. Default 0.1 (10 %).
    #[serde(default = "default_max_revoke_fraction")]
    pub max_revoke_fraction: f64,
    /// ... or more than this many items. Default 50.
    #[serde(default = "default_max_revokes")]
    pub max_revokes: u64,
    /// A collector's complete listing that shrank by more than this fraction since its last
    /// good listing does not replace what the store holds. Default 0.5 (50 %).
    #[serde(default = "default_max_shrink_fraction")]
    pub max_shrink_fraction: f64,
    /// SNS topic told when a limit holds revocations back (also a metric and a log line).
    #[serde(default)]
    pub alert_topic_arn: Option<String>,
}

fn default_max_revoke_fraction() -> f64 {
    0.10
}
fn default_max_revokes() -> u64 {
    50
}
fn default_max_shrink_fraction() -> f64 {
    0.50
}

impl Default for SafetyConfig {
    fn default() -> Self {
        Self {
            max_revoke_fraction: default_max_revoke_fraction(),
            max_revokes: default_max_revokes(),
            max_shrink_fraction: default_max_shrink_fraction(),
            alert_topic_arn: None,
        }
    }
}

impl SafetyConfig {
    pub fn limits(&self) -> tregov_engine::safety::Limits {
        tregov_engine::safety::Limits {
            max_revoke_fraction: self.max_revoke_fraction,
            max_revokes: self.max_revokes,
            max_shrink_fraction: self.max_shrink_fraction,
        }
    }
}

impl Validate for SafetyConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        check_fraction(
            self.max_revoke_fraction,
            at.key("max_revoke_fraction"),
            problems,
        );
        check_fraction(
            self.max_shrink_fraction,
            at.key("max_shrink_fraction"),
            problems,
        );
        if let Some(arn) = &self.alert_topic_arn {
            problems.check(
                arn.starts_with("arn:aws:sns:"),
                at.key("alert_topic_arn"),
                || format!("`{arn}` is not an SNS topic ARN"),
            );
        }
    }
}
