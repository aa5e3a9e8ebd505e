//! `[identity]`: the entities file of people, roles and memberships.

use std::path::PathBuf;

use serde::Deserialize;

use crate::key_path::KeyPath;
use crate::validate::{Problems, Validate};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// A Cedar entities file of people, roles and project memberships (relative paths are
    /// relative to the config file).
    pub entities: PathBuf,
}

impl Validate for IdentityConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        problems.check(
            !self.entities.as_os_str().is_empty(),
            at.key("entities"),
            || "is empty".into(),
        );
    }
}
