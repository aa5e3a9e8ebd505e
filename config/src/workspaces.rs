//! `[workspaces]`: where a workspace's owner comes from, and what tregov does when someone
//! changes the `tre:` tags it reads.

use std::path::PathBuf;

use serde::Deserialize;

use crate::key_path::KeyPath;
use crate::validate::{Problems, Validate};

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WorkspacesConfig {
    /// The workspace registry: which instance or notebook is which workspace, of whom, as
    /// Service Workbench records it when it provisions one (its environments table, exported
    /// by the TRE admins). Tags on the instance are never trusted for this: anyone allowed
    /// to tag an instance could name someone else its owner. Without a registry no workspace
    /// is governed. Relative paths are relative to the config file.
    #[serde(default)]
    pub registry: Option<PathBuf>,
    /// Set the `tre:` tags tregov reads back to what the registry says when someone changes
    /// them (they are reported either way, and never obeyed).
    #[serde(default)]
    pub revert_tag_drift: bool,
}

impl Validate for WorkspacesConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        if let Some(registry) = &self.registry {
            problems.check(!registry.as_os_str().is_empty(), at.key("registry"), || {
                "is empty".into()
            });
        }
    }
}
