//! `[breakglass]`: the auditors' emergency access into project accounts. An approved grant
//! admits the auditor's AWS principal into the trust policy of the project's break-glass
//! role until the grant ends; without this section no trust policy is ever written.

use serde::Deserialize;

use crate::key_path::KeyPath;
use crate::validate::{check_not_empty, Problems, Validate};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassConfig {
    /// The name of the break-glass role in every project account (e.g. `TREBreakGlass`).
    pub role_name: String,
    /// The longest a grant may last, in seconds. Default 14400 (4 hours).
    #[serde(default = "default_max_seconds")]
    pub max_seconds: u64,
    /// The role whose members approve requests. Default `ITAdmin`.
    #[serde(default = "default_approvers")]
    pub approvers: String,
    /// The SNS topic told when break-glass opens and closes (every IT admin subscribes).
    /// Default: `[safety] alert_topic_arn`.
    #[serde(default)]
    pub alert_topic_arn: Option<String>,
}

fn default_max_seconds() -> u64 {
    4 * 3600
}
fn default_approvers() -> String {
    "ITAdmin".into()
}

impl BreakGlassConfig {
    /// The workflow's limits, as the engine takes them.
    pub fn settings(&self) -> tregov_engine::breakglass::BreakGlassSettings {
        tregov_engine::breakglass::BreakGlassSettings {
            max_seconds: self.max_seconds,
            approvers: self.approvers.clone(),
        }
    }
}

impl Validate for BreakGlassConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        check_not_empty(&self.role_name, at.key("role_name"), problems);
        check_not_empty(&self.approvers, at.key("approvers"), problems);
        problems.check(
            !self.role_name.contains(['/', ':']),
            at.key("role_name"),
            || format!("`{}` is a role name, not a path or ARN", self.role_name),
        );
        problems.check(self.max_seconds >= 60, at.key("max_seconds"), || {
            "must be at least 60".into()
        });
        if let Some(arn) = &self.alert_topic_arn {
            problems.check(
                arn.starts_with("arn:aws:sns:"),
                at.key("alert_topic_arn"),
                || format!("`{arn}` is not an SNS topic ARN"),
            );
        }
    }
}
