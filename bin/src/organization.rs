//! Wiring for `[organizations]`: the configuration's projects plus the organization's, at
//! start and again before every resync of the daemon.

use tregov_collectors::organizations::{discover, with_projects};
use tregov_config::aws::Aws;
use tregov_config::{Config, ProjectConfig};
use tregov_engine::collect::{shrink_fraction, BoxFuture};
use tregov_engine::governor::{Components, Rediscover};
use tregov_engine::{EngineError, Result};

/// `config` with the organization's projects, and those projects; as it is without
/// `[organizations]`. A listing that fails is an error: nothing is planned over fewer
/// accounts than are governed.
pub async fn with_organization(config: Config, aws: &Aws) -> Result<(Config, Vec<ProjectConfig>)> {
    let Some(org) = &config.organizations else {
        return Ok((config, Vec::new()));
    };
    let found = discover(org, aws).await.map_err(|e| {
        EngineError::Request(format!("cannot list the organization's projects: {e}"))
    })?;
    report(&found.projects, &found.untagged);
    Ok((with_projects(&config, &found.projects), found.projects))
}

fn report(projects: &[ProjectConfig], untagged: &[String]) {
    tracing::info!(
        projects = projects.len(),
        accounts = ?projects.iter().map(|p| &p.account_id).collect::<Vec<_>>(),
        "projects discovered from the organization"
    );
    if !untagged.is_empty() {
        tracing::warn!(accounts = ?untagged, "accounts under the organizational unit without the project tag are not governed");
    }
}

/// The daemon's rediscovery: new components when the organization's projects changed.
pub struct OrganizationProjects {
    pub config: Config,
    pub aws: Aws,
    /// The projects the components were last built for.
    pub last: Vec<ProjectConfig>,
}

impl Rediscover for OrganizationProjects {
    fn rediscover(&mut self) -> BoxFuture<'_, Option<Components>> {
        Box::pin(async move {
            let org = self.config.organizations.as_ref()?;
            let found = match discover(org, &self.aws).await {
                Ok(found) => found,
                Err(error) => {
                    tracing::error!(%error, "the organization could not be listed; the last good projects stay");
                    return None;
                }
            };
            if found.projects == self.last {
                return None;
            }
            let (before, now) = (self.last.len() as u64, found.projects.len() as u64);
            let limit = self.config.safety.max_shrink_fraction;
            if shrink_fraction(before, now) > limit {
                tracing::error!(before, now, limit, "the organization's projects shrank more than `safety.max_shrink_fraction`: the last good projects stay");
                return None;
            }
            report(&found.projects, &found.untagged);
            self.last = found.projects;
            let config = with_projects(&self.config, &self.last);
            let collectors = tregov_collectors::build(&config, &self.aws).await;
            let enforcers = tregov_enforcers::build(self.aws.clone(), config);
            Some((collectors, enforcers))
        })
    }
}
