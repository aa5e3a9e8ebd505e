//! The `[[projects]]` of the configuration as `Tre::Project` entities: what every dataset,
//! workspace and budget belongs to. A project another source already describes (the identity
//! file, with its backup settings) is left to that source.

use serde_json::json;
use tregov_config::{Config, ProjectConfig};
use tregov_engine::collect::{BoxFuture, CollectContext, Collector, Listing, RunReport, Source};
use tregov_engine::events::ObservationKind;

pub struct Projects {
    projects: Vec<ProjectConfig>,
}

impl Projects {
    pub fn new(config: &Config) -> Self {
        Self {
            projects: config.projects.clone(),
        }
    }

    fn read(&self, ctx: &CollectContext<'_>, report: &mut RunReport) -> tregov_engine::Result<()> {
        let mut values = Vec::new();
        let mut described_elsewhere = 0;
        for p in &self.projects {
            let uid = tregov_engine::entities::uid_from_parts("Tre::Project", &p.id)?;
            let owner = ctx.store.partition_of(&uid)?;
            if owner.is_some_and(|owner| owner != Source::Projects.name()) {
                described_elsewhere += 1;
                continue;
            }
            values.push((
                format!("project `{}`", p.id),
                json!({
                    "uid": {"type": "Tre::Project", "id": p.id},
                    "attrs": {"accountId": p.account_id},
                    "parents": []
                }),
            ));
        }
        let entities = crate::entities_from_json(values, ctx.schema, report);
        let listing = Listing {
            entities,
            complete: true,
            described_elsewhere,
            ..Default::default()
        };
        ctx.write(Source::Projects, listing, report)
    }
}

impl Collector for Projects {
    fn source(&self) -> Source {
        Source::Projects
    }

    fn answers(&self) -> &'static [ObservationKind] {
        &[]
    }

    fn run<'a>(&'a self, ctx: &'a CollectContext<'a>) -> BoxFuture<'a, RunReport> {
        Box::pin(async move {
            let mut report = RunReport::new(Source::Projects);
            if let Err(e) = self.read(ctx, &mut report) {
                report.fail(e);
            }
            report
        })
    }
}
