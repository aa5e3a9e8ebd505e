//! Reloading the policies directory through the gate (every `.cedar` file under it, strict
//! validation, its own policy tests). A set that fails is reported once, and the last good
//! set keeps deciding.

use crate::policies::{read_policy_dir, version_of};
use crate::policy_gate::load_gated;

use super::Governor;

impl Governor {
    /// Loads the policies directory if its content changed since the last attempt; `true`
    /// when a new set now decides.
    pub fn reload_policies(&mut self) -> bool {
        let Some(dir) = self.settings.policies_dir.clone() else {
            return false;
        };
        let version = match read_policy_dir(&dir) {
            Ok((schema, sources)) => version_of(Some(&schema), &sources),
            Err(e) => return self.refuse(&e.one_line(), None),
        };
        if self.policy_attempt.as_deref() == Some(version.as_str())
            || version == self.engine.bundle().version
        {
            self.policy_attempt = Some(version);
            return false;
        }
        self.policy_attempt = Some(version.clone());
        let bundle = match load_gated(&dir) {
            Ok(b) => b,
            Err(e) => return self.refuse(&e.one_line(), Some(&version)),
        };
        if let Err(e) = self.engine.set_policies(bundle) {
            // Not the files' fault (the log or store could not be written): try again on
            // the next change or SIGHUP.
            self.policy_attempt = None;
            self.metrics.reloaded(false);
            tracing::error!(error = %e, "policy reload failed; the last good policies keep deciding");
            return false;
        }
        self.metrics.reloaded(true);
        tracing::info!(policy_version = %version, "policies reloaded");
        if let Some(share) = &self.on_policies {
            share(self.engine.bundle());
        }
        true
    }

    fn refuse(&self, diagnostic: &str, version: Option<&str>) -> bool {
        self.metrics.reloaded(false);
        tracing::error!(
            error = %diagnostic,
            refused_version = version.unwrap_or("unreadable"),
            policy_version = %self.engine.bundle().version,
            "policy change rejected; the last good policies keep deciding"
        );
        false
    }
}
