//! Finding and starting the SMT solver SymCC talks to: cvc5 1.3.1, speaking SMT-LIB over
//! pipes. `scripts/install-cvc5` installs one (PyPI's cvc5 wheel behind a small SMT-LIB
//! front-end); any other cvc5 1.3.1 executable works as well.

use std::path::PathBuf;

use cedar_policy_symcc::solver::LocalSolver;
use tokio::process::Command;

use crate::AnalysisError;

/// How long one query may run before the solver gives up (`unknown`), in milliseconds.
const QUERY_LIMIT_MS: u64 = 60_000;

/// The solver executable to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SolverCommand {
    pub program: PathBuf,
}

impl SolverCommand {
    /// The configured path if given, else `CVC5` from the environment (SymCC's own
    /// convention), else `cvc5` on the `PATH`.
    pub fn discover(configured: Option<PathBuf>) -> Self {
        let program = configured
            .or_else(|| std::env::var_os("CVC5").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("cvc5"));
        Self { program }
    }

    /// A fresh solver process; an error names the program and how to install one.
    pub fn start(&self) -> Result<LocalSolver, AnalysisError> {
        let mut command = Command::new(&self.program);
        command
            .args(["--lang", "smt"])
            .arg(format!("--tlimit-per={QUERY_LIMIT_MS}"))
            .kill_on_drop(true);
        LocalSolver::from_command(&mut command).map_err(|e| AnalysisError::NoSolver {
            program: self.program.display().to_string(),
            message: e.to_string(),
        })
    }
}
