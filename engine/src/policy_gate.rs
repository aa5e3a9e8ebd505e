//! The gate a policy set passes before it decides anything: every `.cedar` file under the
//! directory, strict validation against the schema, and the directory's own policy tests
//! (`tests/`, when it exists). A set that fails any of them is refused with its diagnostic,
//! and whoever asked keeps deciding with the last good set: a policy file truncated to
//! nothing validates, but its tests do not pass.

use std::path::Path;

use crate::error::{EngineError, Result};
use crate::policies::{PolicyBundle, POLICY_TESTS_DIR};
use crate::testfile;

/// Loads `dir` through the gate.
pub fn load_gated(dir: &Path) -> Result<PolicyBundle> {
    let bundle = PolicyBundle::load_dir(dir)?;
    run_policy_tests(dir)?;
    Ok(bundle)
}

/// Runs the tests under `dir/tests`, if there are any; an error names every failure.
pub fn run_policy_tests(dir: &Path) -> Result<()> {
    let tests = dir.join(POLICY_TESTS_DIR);
    if !tests.is_dir() {
        return Ok(());
    }
    let files = testfile::collect_test_files(std::slice::from_ref(&tests))?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let report = testfile::run_all(&files, workers);
    if report.failed == 0 {
        return Ok(());
    }
    Err(EngineError::Request(format!(
        "the policy tests in `{}` fail ({} failed, {} passed): {}",
        tests.display(),
        report.failed,
        report.passed,
        report.failures.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy of the default policies with their tests, to break in a test.
    fn policies_copy() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tmp");
        copy_tree(Path::new(tregov_policies::POLICIES_DIR), dir.path());
        dir
    }

    fn copy_tree(from: &Path, to: &Path) {
        for entry in std::fs::read_dir(from).expect("read") {
            let path = entry.expect("entry").path();
            let name = path.file_name().expect("name").to_owned();
            if path.is_dir() {
                if name == "src" {
                    continue;
                }
                std::fs::create_dir_all(to.join(&name)).expect("mkdir");
                copy_tree(&path, &to.join(&name));
            } else {
                std::fs::copy(&path, to.join(&name)).expect("copy");
            }
        }
    }

    #[test]
    fn the_default_policies_pass_their_own_gate() {
        let dir = policies_copy();
        let bundle = load_gated(dir.path()).expect("gate");
        assert!(bundle.meta.contains_key("data-study-readers-read"));
    }

    /// Regression: a policy file truncated to zero bytes left a set that validates, and the
    /// reload accepted it (every grant it had allowed would then be revoked).
    #[test]
    fn a_policy_file_truncated_to_nothing_is_refused_because_its_tests_fail() {
        let dir = policies_copy();
        std::fs::write(dir.path().join("data_access.cedar"), "").expect("truncate");
        let err = load_gated(dir.path()).expect_err("refused");
        assert!(err.to_string().contains("policy tests"), "{err}");
    }

    /// Regression: the directory read was not recursive while the watcher was, so a file
    /// moved into a subdirectory silently stopped deciding.
    #[test]
    fn a_policy_file_moved_into_a_subdirectory_still_decides() {
        let dir = policies_copy();
        std::fs::create_dir_all(dir.path().join("data")).expect("mkdir");
        std::fs::rename(
            dir.path().join("budget.cedar"),
            dir.path().join("data").join("budget.cedar"),
        )
        .expect("move");
        let bundle = PolicyBundle::load_dir(dir.path()).expect("load");
        assert!(bundle
            .meta
            .values()
            .any(|m| m.file.ends_with("data/budget.cedar")));
    }
}
