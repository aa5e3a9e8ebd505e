//! Collectors: read AWS and identity state into the tregov store.
//!
//! Every collector implements the engine's `collect::Collector`: built from its part of
//! `tregov.toml` by `build` (the configuration was validated already), it says which trail
//! observations it answers, and `run` does a full read and writes it through
//! `CollectContext::write`, which guards the store against listings that shrank too far.

#[cfg(feature = "aws")]
pub mod backup;
#[cfg(feature = "aws")]
pub mod budgets;
#[cfg(feature = "aws")]
pub mod cloudtrail;
pub mod cloudtrail_digest;
#[cfg(feature = "aws")]
pub mod cloudtrail_integrity;
pub mod cloudtrail_parse;
pub mod cloudtrail_stream;
#[cfg(feature = "aws")]
pub mod datalake;
#[cfg(feature = "aws")]
pub mod events_queue;
#[cfg(feature = "aws")]
pub mod files_queue;
#[cfg(feature = "aws")]
pub mod iam;
pub mod identity;
#[cfg(feature = "aws")]
pub mod organizations;
pub mod projects;
#[cfg(feature = "aws")]
mod queue;
pub mod registry;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
#[cfg(feature = "aws")]
pub mod trails;
#[cfg(feature = "aws")]
pub mod workspaces;

#[cfg(feature = "aws")]
pub use build::build;

#[cfg(feature = "aws")]
mod build {
    use tregov_config::aws::Aws;
    use tregov_config::Config;
    use tregov_engine::collect::Collector;

    /// Every collector the configuration calls for, in the order a full pass runs them:
    /// what others refer to (projects, people) first, the trail last.
    pub async fn build(config: &Config, aws: &Aws) -> Vec<Box<dyn Collector>> {
        let mut out: Vec<Box<dyn Collector>> = Vec::new();
        let has_projects = !config.projects.is_empty();
        if has_projects {
            out.push(Box::new(crate::projects::Projects::new(config)));
        }
        if let Some(identity) = &config.identity {
            out.push(Box::new(crate::identity::Identity::new(identity)));
        }
        if has_projects {
            out.push(Box::new(crate::trails::Trails::new(config, aws)));
        }
        if let Some(dl) = &config.datalake {
            out.push(Box::new(crate::datalake::DataLake::new(config, dl, aws)));
        }
        if has_projects {
            out.push(Box::new(crate::iam::Iam::new(config, aws)));
            out.push(Box::new(crate::budgets::Budgets::new(config, aws)));
            out.push(Box::new(crate::workspaces::Workspaces::new(config, aws)));
        }
        if let Some(ct) = crate::cloudtrail::CloudTrail::build(config, aws).await {
            out.push(Box::new(ct));
        }
        out
    }
}

/// Runs `read` for every configured project, at most `concurrency` at once.
#[cfg(feature = "aws")]
pub async fn per_project<'a, T, F, Fut>(config: &'a tregov_config::Config, read: F) -> Vec<T>
where
    F: Fn(&'a tregov_config::ProjectConfig) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    use futures::stream::{self, StreamExt};
    // The futures are made before the first await, so the boxed future of a collector's run
    // holds no closure (which would make it not `Send` for every lifetime).
    let reads: Vec<Fut> = config.projects.iter().map(read).collect();
    stream::iter(reads)
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

/// Entities JSON to entities, each checked against the schema; a bad one is reported and
/// left out. One malformed item does not make the listing incomplete: if it did, one bad
/// table would hold back every change resting on the collector.
pub fn entities_from_json(
    values: Vec<(String, serde_json::Value)>,
    schema: &cedar_policy::Schema,
    report: &mut tregov_engine::collect::RunReport,
) -> Vec<cedar_policy::Entity> {
    let mut out = Vec::with_capacity(values.len());
    for (what, value) in values {
        match cedar_policy::Entity::from_json_value(value, Some(schema)) {
            Ok(e) => out.push(e),
            Err(e) => report.errors.push(format!("{what}: {e}")),
        }
    }
    out
}
