//! Typed errors. Every error that comes from user input names the file and, where there is
//! one, the position; the diagnostics render with miette.

use miette::{Diagnostic, NamedSource, SourceSpan};
use thiserror::Error;

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// One problem found in a user-supplied file, with the span it points at.
#[derive(Debug, Error, Diagnostic)]
#[error("{file}:{line}:{column}: {message}")]
pub struct SourceProblem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    #[source_code]
    pub src: NamedSource<String>,
    #[label("{label}")]
    pub span: Option<SourceSpan>,
    pub label: String,
    #[help]
    pub help: Option<String>,
}

impl SourceProblem {
    /// A problem at byte `offset..offset+len` of `text`, the contents of `file`.
    pub fn at(
        file: &str,
        text: &str,
        offset: usize,
        len: usize,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> Self {
        let pos = crate::position::line_col(text, offset);
        Self {
            file: file.to_string(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
            src: NamedSource::new(file, text.to_string()),
            span: Some(SourceSpan::new(offset.min(text.len()).into(), len)),
            label: label.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// Several problems found in the same input, reported together.
#[derive(Debug, Error, Diagnostic)]
#[error("{summary}")]
pub struct Problems {
    pub summary: String,
    #[related]
    pub problems: Vec<SourceProblem>,
}

#[derive(Debug, Error, Diagnostic)]
pub enum EngineError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Invalid(#[from] Problems),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Problem(#[from] Box<SourceProblem>),

    #[error("cannot read `{path}`: {source}")]
    #[diagnostic(code(tregov::io))]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid request: {0}")]
    #[diagnostic(code(tregov::request))]
    Request(String),

    #[error("entity store at `{path}`: {message}")]
    #[diagnostic(code(tregov::store))]
    Store { path: String, message: String },

    #[error("decision log at `{path}`: {message}")]
    #[diagnostic(code(tregov::log))]
    Log { path: String, message: String },

    /// The machine failed tregov (cannot bind, cannot start the runtime, cannot watch): not
    /// the caller's input.
    #[error("{0}")]
    #[diagnostic(code(tregov::system))]
    System(String),
}

impl EngineError {
    /// Whether the error is the caller's input being wrong (exit code 3) rather than the
    /// machine failing.
    pub fn is_invalid_input(&self) -> bool {
        match self {
            EngineError::Invalid(_) | EngineError::Problem(_) | EngineError::Request(_) => true,
            // A file the user named that is not there (or not text) is their input too.
            EngineError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidData
            ),
            _ => false,
        }
    }

    /// The error on one line, every problem of a set included: for log fields, where a
    /// rendered diagnostic would spread over many lines.
    pub fn one_line(&self) -> String {
        match self {
            EngineError::Invalid(p) => {
                let each: Vec<String> = p.problems.iter().map(ToString::to_string).collect();
                format!("{}: {}", p.summary, each.join("; "))
            }
            other => other.to_string(),
        }
    }

    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    pub fn problems(summary: impl Into<String>, problems: Vec<SourceProblem>) -> Self {
        EngineError::Invalid(Problems {
            summary: summary.into(),
            problems,
        })
    }
}

impl From<SourceProblem> for EngineError {
    fn from(p: SourceProblem) -> Self {
        EngineError::Problem(Box::new(p))
    }
}
