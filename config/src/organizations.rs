//! `[organizations]`: projects discovered from the accounts of an AWS Organizations
//! organizational unit, as c7n-org discovers accounts, beside (or instead of) `[[projects]]`.

use serde::Deserialize;

use crate::key_path::KeyPath;
use crate::validate::{check_role_arn, Problems, Validate};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationsConfig {
    /// The organizational unit (`ou-...`) or root (`r-...`) whose accounts are projects.
    pub parent_id: String,
    /// Child OUs' accounts too. Default true.
    #[serde(default = "yes")]
    pub recursive: bool,
    /// A role in the management account (or a delegated administrator's) that may list the
    /// organization; default: the base credentials.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// The account tag naming its project: only the management account can tag accounts, so
    /// an account's own administrators cannot move it into another project. An account
    /// without it is reported and not governed.
    #[serde(default = "default_project_tag")]
    pub project_tag: String,
    /// The role tregov assumes in each discovered account: `arn:aws:iam::<account>:role/<name>`
    /// (the `deploy/` project template's role). Default: the base credentials.
    #[serde(default)]
    pub project_role_name: Option<String>,
}

fn yes() -> bool {
    true
}

fn default_project_tag() -> String {
    "tre:project".into()
}

impl Validate for OrganizationsConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        let id = &self.parent_id;
        problems.check(
            id.starts_with("ou-") || id.starts_with("r-"),
            at.key("parent_id"),
            || format!("`{id}` is neither an organizational unit (`ou-...`) nor a root (`r-...`)"),
        );
        check_role_arn(self.role_arn.as_deref(), at.key("role_arn"), problems);
        problems.check(!self.project_tag.is_empty(), at.key("project_tag"), || {
            "must not be empty".into()
        });
        if let Some(name) = &self.project_role_name {
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c));
            problems.check(ok, at.key("project_role_name"), || {
                format!("`{name}` is not an IAM role name")
            });
        }
    }
}
