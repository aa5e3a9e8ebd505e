//! `tregov policy diff` and `tregov policy check`: exact analysis by Cedar's symbolic compiler
//! and the cvc5 solver (`tregov-analysis`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;
use tregov_analysis::{properties, SolverCommand};
use tregov_engine::log::DecisionLog;
use tregov_engine::policies::{PolicySource, POLICY_PROPERTIES_DIR};
use tregov_engine::{PolicyBundle, Result};
use tregov_render::analysis as show;

use crate::args::{PolicyCommand, SolverArgs};
use crate::output::{print_json, Format};

/// Exit code when a diff widens or a property fails: the CI gate's "no".
const FINDING: u8 = 2;

pub fn policy_command(
    out: Format,
    data_dir: &Path,
    current: Result<PolicyBundle>,
    current_dir: Option<PathBuf>,
    cmd: PolicyCommand,
) -> Result<ExitCode> {
    match cmd {
        PolicyCommand::Diff {
            from,
            from_version,
            to,
            solver,
        } => {
            let old = match (from, from_version) {
                (Some(dir), _) => PolicyBundle::load_dir(&dir)?,
                (None, Some(version)) => from_log(data_dir, &version)?,
                (None, None) => current?,
            };
            let new = PolicyBundle::load_dir(&to)?;
            diff(out, &old, &new, &solver)
        }
        PolicyCommand::Check { properties, solver } => {
            let bundle = current?;
            let sources = property_sources(properties, current_dir.as_deref())?;
            check(out, &bundle, sources, &solver)
        }
    }
}

fn from_log(data_dir: &Path, version: &str) -> Result<PolicyBundle> {
    let log = DecisionLog::open(data_dir)?;
    let version = log.resolve_policy_version(version)?;
    let stored = log.load_policies(&version)?;
    PolicyBundle::from_sources(stored.schema, stored.sources)
}

fn diff(out: Format, old: &PolicyBundle, new: &PolicyBundle, s: &SolverArgs) -> Result<ExitCode> {
    let solver = SolverCommand::discover(s.solver.clone());
    // The solver is a child process the runtime drives: it starts inside it.
    let diff = crate::collect::runtime()?
        .block_on(async { tregov_analysis::diff(old, new, solver.start()?).await })?;
    match out {
        Format::Json => print_json(&json!(diff)),
        Format::Text => print!("{}", show::diff_text(&diff)),
    }
    Ok(if diff.widens() {
        ExitCode::from(FINDING)
    } else {
        ExitCode::SUCCESS
    })
}

/// `--properties DIR`, else `properties/` beside the policies in effect, else the built-in
/// properties of the built-in policies.
fn property_sources(
    explicit: Option<PathBuf>,
    policies_dir: Option<&Path>,
) -> Result<Vec<PolicySource>> {
    let dir = explicit.or_else(|| policies_dir.map(|d| d.join(POLICY_PROPERTIES_DIR)));
    match dir {
        Some(dir) => Ok(properties::read_properties(&dir)?),
        None => Ok(tregov_policies::DEFAULT_PROPERTIES
            .iter()
            .map(|(name, text)| PolicySource {
                name: format!("properties/{name}"),
                text: (*text).to_string(),
            })
            .collect()),
    }
}

fn check(
    out: Format,
    bundle: &PolicyBundle,
    sources: Vec<PolicySource>,
    s: &SolverArgs,
) -> Result<ExitCode> {
    let solver = SolverCommand::discover(s.solver.clone());
    let results = crate::collect::runtime()?
        .block_on(async { tregov_analysis::check(bundle, sources, solver.start()?).await })?;
    match out {
        Format::Json => print_json(&json!({
            "policySetVersion": bundle.version,
            "properties": results,
        })),
        Format::Text => print!("{}", show::check_text(&results)),
    }
    Ok(if results.iter().all(|r| r.holds) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FINDING)
    })
}
