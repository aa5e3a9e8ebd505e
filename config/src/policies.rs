//! `[policies]`: how a policy change is taken in while the daemon runs.

use std::path::PathBuf;

use serde::Deserialize;

use crate::key_path::KeyPath;
use crate::validate::{Problems, Validate};

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PoliciesConfig {
    /// Adopt a reloaded policy set that allows more than the running one without an IT
    /// admin's approval. Default false: such a set is parked (`tregov parked`) and the
    /// running set keeps deciding until `tregov approve` (a Cedar decision).
    #[serde(default)]
    pub allow_widening: bool,
    /// The cvc5 1.3.1 executable that proves whether a set widens access. Default: `CVC5`
    /// from the environment, else `cvc5` on the `PATH` (`scripts/install-cvc5` installs one).
    #[serde(default)]
    pub solver: Option<PathBuf>,
}

impl Validate for PoliciesConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        if let Some(solver) = &self.solver {
            problems.check(!solver.as_os_str().is_empty(), at.key("solver"), || {
                "must name an executable".into()
            });
        }
    }
}
