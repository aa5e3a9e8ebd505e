//! `[backup]`: the tag the admins' AWS Backup plan selects workspaces on, and (with
//! `plan_name`) the plan tregov keeps at each project's admin-only backup settings.

use serde::Deserialize;

use crate::key_path::KeyPath;
use crate::validate::{check_not_empty, Problems, Validate};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Default `tregov:backup`.
    #[serde(default = "default_backup_tag_key")]
    pub tag_key: String,
    /// Default `enabled`.
    #[serde(default = "default_backup_tag_value")]
    pub tag_value: String,
    /// The AWS Backup plan of workspaces in each project account. With it, tregov keeps the
    /// plan's rule at the project's `backupSettings` (frequency, retention, cold storage,
    /// windows) and its selection on the tag above, and reverts any other edit. Without it,
    /// tregov only tags.
    #[serde(default)]
    pub plan_name: Option<String>,
    /// The rule tregov keeps in the plan. Default `tregov-workspaces`.
    #[serde(default = "default_tregov_workspaces")]
    pub rule_name: String,
    /// The vault the rule backs up to. Default `Default`.
    #[serde(default = "default_vault_name")]
    pub vault_name: String,
    /// The plan's one tag selection. Default `tregov-workspaces`.
    #[serde(default = "default_tregov_workspaces")]
    pub selection_name: String,
    /// The role AWS Backup assumes for the selection, by name (with its path) in the
    /// project's account. Default `service-role/AWSBackupDefaultServiceRole`.
    #[serde(default = "default_selection_role")]
    pub selection_role: String,
    /// The hour (UTC) a daily backup starts. Default 5.
    #[serde(default = "default_daily_hour")]
    pub daily_hour_utc: u8,
}

fn default_backup_tag_key() -> String {
    "tregov:backup".into()
}
fn default_backup_tag_value() -> String {
    "enabled".into()
}
fn default_tregov_workspaces() -> String {
    "tregov-workspaces".into()
}
fn default_vault_name() -> String {
    "Default".into()
}
fn default_selection_role() -> String {
    "service-role/AWSBackupDefaultServiceRole".into()
}
fn default_daily_hour() -> u8 {
    5
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            tag_key: default_backup_tag_key(),
            tag_value: default_backup_tag_value(),
            plan_name: None,
            rule_name: default_tregov_workspaces(),
            vault_name: default_vault_name(),
            selection_name: default_tregov_workspaces(),
            selection_role: default_selection_role(),
            daily_hour_utc: default_daily_hour(),
        }
    }
}

impl BackupConfig {
    /// The plan tregov keeps, as the planner takes it; none without `plan_name`.
    pub fn plan_target(&self) -> Option<tregov_engine::plan::BackupPlanTarget> {
        Some(tregov_engine::plan::BackupPlanTarget {
            plan_name: self.plan_name.clone()?,
            rule_name: self.rule_name.clone(),
            vault_name: self.vault_name.clone(),
            selection_name: self.selection_name.clone(),
            selection_role: self.selection_role.clone(),
            daily_hour_utc: self.daily_hour_utc,
        })
    }
}

impl Validate for BackupConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        check_not_empty(&self.tag_key, at.key("tag_key"), problems);
        if let Some(name) = &self.plan_name {
            check_not_empty(name, at.key("plan_name"), problems);
        }
        for (key, value) in [
            ("rule_name", &self.rule_name),
            ("vault_name", &self.vault_name),
            ("selection_name", &self.selection_name),
            ("selection_role", &self.selection_role),
        ] {
            check_not_empty(value, at.key(key), problems);
        }
        problems.check(
            !self.selection_role.starts_with("arn:"),
            at.key("selection_role"),
            || "a role name with its path (`service-role/AWSBackupDefaultServiceRole`), not an ARN: it is a role of each project's account".into(),
        );
        // AWS Backup's own patterns: a name it refuses would fail every update.
        let named = |value: &str, extra: &[char], most: usize| {
            (1..=most).contains(&value.len())
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
        };
        problems.check(
            named(&self.rule_name, &['-', '_', '.'], 50),
            at.key("rule_name"),
            || {
                format!(
                    "`{}`: letters, digits, `-`, `_` and `.`, at most 50",
                    self.rule_name
                )
            },
        );
        problems.check(
            named(&self.vault_name, &['-', '_'], 50) && self.vault_name.len() >= 2,
            at.key("vault_name"),
            || {
                format!(
                    "`{}`: 2 to 50 letters, digits, `-` and `_`",
                    self.vault_name
                )
            },
        );
        problems.check(self.daily_hour_utc < 24, at.key("daily_hour_utc"), || {
            format!("{} is not an hour of the day (0-23)", self.daily_hour_utc)
        });
    }
}
