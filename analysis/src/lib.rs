//! Exact analysis of tregov's Cedar policies with Cedar's symbolic compiler (SymCC): what a
//! policy change allows that the running set does not (`diff`), and the properties a set
//! must keep (`properties`). Every "no" comes with a concrete request and entities, checked
//! against Cedar's own authorizer.

pub mod counterexample;
pub mod diff;
pub mod properties;
pub mod solver;
pub mod widening;

use tregov_engine::EngineError;

pub use diff::{diff, PolicyDiff, SignatureDiff, Verdict};
pub use properties::{check, read_properties, PropertyResult, PROPERTIES_DIR};
pub use solver::SolverCommand;
pub use widening::SolverWidening;

#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error("cannot start the SMT solver `{program}`: {message}; install cvc5 1.3.1 (`scripts/install-cvc5` prints its path) and set `CVC5` or `[policies] solver`")]
    NoSolver { program: String, message: String },

    #[error("the SMT solver failed: {0}")]
    Solver(Box<cedar_policy_symcc::err::Error>),

    #[error("the {which} policies for `{action}` cannot be compiled for the solver: {message}")]
    Compile {
        which: &'static str,
        action: String,
        message: String,
    },

    #[error("policy analysis needs a schema")]
    NoSchema,

    #[error("properties: {message}")]
    Properties { message: String },

    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<cedar_policy_symcc::err::Error> for AnalysisError {
    fn from(e: cedar_policy_symcc::err::Error) -> Self {
        AnalysisError::Solver(Box::new(e))
    }
}

impl From<AnalysisError> for EngineError {
    fn from(e: AnalysisError) -> Self {
        match e {
            AnalysisError::Engine(inner) => inner,
            AnalysisError::Compile { .. }
            | AnalysisError::NoSchema
            | AnalysisError::Properties { .. } => EngineError::Request(e.to_string()),
            AnalysisError::NoSolver { .. } | AnalysisError::Solver(_) => {
                EngineError::System(e.to_string())
            }
        }
    }
}
