//! Collectors: read AWS and identity state into the tregov store.
//!
//! Every collector has the same shape: its part of `tregov.toml` (a config struct), a pure
//! `validate` (in `Config::validate`), and `build`, which makes the AWS clients; `run` does a
//! full pass and records what it did for `tregov status`.

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "aws")]
pub mod budgets;
#[cfg(feature = "aws")]
pub mod cloudtrail;
pub mod cloudtrail_parse;
pub mod config;
#[cfg(feature = "aws")]
pub mod datalake;
#[cfg(feature = "aws")]
pub mod iam;
pub mod identity;
pub mod projects;
#[cfg(feature = "testkit")]
pub mod testkit;
#[cfg(feature = "aws")]
pub mod trails;
#[cfg(feature = "aws")]
pub mod workspaces;

use serde::Serialize;

/// Runs `read` for every configured project, at most `concurrency` at once.
#[cfg(feature = "aws")]
pub async fn per_project<'a, T, F, Fut>(config: &'a config::Config, read: F) -> Vec<T>
where
    F: Fn(&'a config::ProjectConfig) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    use futures::stream::{self, StreamExt};
    stream::iter(config.projects.iter())
        .map(read)
        .buffer_unordered(config.concurrency.max(1))
        .collect()
        .await
}

/// Every page of a call paginated by `next_token`: `call(token)` returns a page and the token
/// of the next one.
#[cfg(feature = "aws")]
pub async fn all_pages<T, E, F, Fut>(mut call: F) -> Result<Vec<T>, E>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(T, Option<String>), E>>,
{
    let mut pages = Vec::new();
    let mut token = None;
    loop {
        let (page, next) = call(token.take()).await?;
        pages.push(page);
        match next {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(pages),
        }
    }
}

/// What one collector run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub collector: String,
    /// Items written (for CloudTrail: new events).
    pub items: u64,
    /// Files (or pages) read.
    pub files: u64,
    /// Events read, new or not.
    pub events_read: u64,
    pub errors: Vec<String>,
}

impl RunReport {
    pub fn new(collector: &str) -> Self {
        Self {
            collector: collector.to_string(),
            items: 0,
            files: 0,
            events_read: 0,
            errors: Vec::new(),
        }
    }
}

/// Progress of a long pass, for a progress bar or log lines.
pub trait Progress: Sync {
    fn start(&self, total: u64);
    fn advance(&self);
    fn finish(&self);
}

/// No progress output.
pub struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: u64) {}
    fn advance(&self) {}
    fn finish(&self) {}
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum CollectError {
    #[error("{call} on `{target}` failed: {message}")]
    #[diagnostic(code(tregov::aws))]
    Aws {
        call: &'static str,
        target: String,
        message: String,
    },
    #[error("{0}")]
    #[diagnostic(code(tregov::collect::io))]
    Io(String),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Engine(#[from] tregov_engine::EngineError),
}

impl CollectError {
    pub fn aws<E: std::error::Error>(call: &'static str, target: &str, e: E) -> Self {
        CollectError::Aws {
            call,
            target: target.to_string(),
            message: tregov_engine::decide::error_chain(&e),
        }
    }
}
