//! `[[projects]]`: one entry per TRE project, each its own AWS member account.

use serde::Deserialize;

use crate::key_path::KeyPath;
use crate::validate::{check_account_id, check_not_empty, check_role_arn, Problems, Validate};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// The project's id: the `Tre::Project` entity id.
    pub id: String,
    /// The project's AWS account id (12 digits).
    pub account_id: String,
    /// A role to assume in that account; default: the base credentials.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// The role Service Catalog provisions workspaces through (the SWB environment-management
    /// role): a budget breach puts a deny on `servicecatalog:ProvisionProduct` on it.
    #[serde(default)]
    pub environment_role_arn: Option<String>,
    /// SNS topic for the project's budget notifications.
    #[serde(default)]
    pub notify_topic_arn: Option<String>,
}

impl Validate for ProjectConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        check_not_empty(&self.id, at.key("id"), problems);
        check_account_id(&self.account_id, at.key("account_id"), problems);
        check_role_arn(self.role_arn.as_deref(), at.key("role_arn"), problems);
        check_role_arn(
            self.environment_role_arn.as_deref(),
            at.key("environment_role_arn"),
            problems,
        );
    }
}

/// Every project, and that no id or account is listed twice.
pub fn validate_projects(projects: &[ProjectConfig], at: &KeyPath, problems: &mut Problems) {
    let mut ids = std::collections::BTreeSet::new();
    for (i, p) in projects.iter().enumerate() {
        let here = at.index(i);
        p.validate(&here, problems);
        problems.check(ids.insert(p.id.as_str()), here.key("id"), || {
            format!("project `{}` is listed twice", p.id)
        });
    }
}
