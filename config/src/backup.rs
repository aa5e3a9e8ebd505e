//! `[backup]`: the tag the admins' AWS Backup plan selects workspaces on.

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
}

fn default_backup_tag_key() -> String {
    "tregov:backup".into()
}
fn default_backup_tag_value() -> String {
    "enabled".into()
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            tag_key: default_backup_tag_key(),
            tag_value: default_backup_tag_value(),
        }
    }
}

impl Validate for BackupConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        check_not_empty(&self.tag_key, at.key("tag_key"), problems);
    }
}
