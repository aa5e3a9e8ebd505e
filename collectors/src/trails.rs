//! Whether each project account's trails are logging (`DescribeTrails`, `GetTrailStatus`),
//! as `Tre::Trail` entities policies can use: a TRE whose audit trail stopped is not one to
//! grant anything in.

use cedar_policy::Entity;
use serde_json::json;
use tregov_config::aws::Aws;
use tregov_config::{Config, ProjectConfig};
use tregov_engine::collect::{BoxFuture, CollectContext, Collector, Listing, RunReport, Source};
use tregov_engine::events::ObservationKind;

use crate::CollectError;

pub struct Trails {
    config: Config,
    aws: Aws,
}

impl Trails {
    pub fn new(config: &Config, aws: &Aws) -> Self {
        Self {
            config: config.clone(),
            aws: aws.clone(),
        }
    }

    async fn read(
        &self,
        ctx: &CollectContext<'_>,
        report: &mut RunReport,
    ) -> tregov_engine::Result<()> {
        let mut listing = Listing {
            complete: true,
            ..Default::default()
        };
        let read = |p| read_account(&self.aws, p, ctx.schema);
        for account in crate::per_project(&self.config, read).await {
            listing.entities.extend(account.entities);
            report.errors.extend(account.errors);
            listing.complete &= account.complete;
        }
        ctx.write(Source::Trails, listing, report)
    }
}

impl Collector for Trails {
    fn source(&self) -> Source {
        Source::Trails
    }

    fn answers(&self) -> &'static [ObservationKind] {
        &[ObservationKind::TrailChange]
    }

    fn run<'a>(&'a self, ctx: &'a CollectContext<'a>) -> BoxFuture<'a, RunReport> {
        Box::pin(async move {
            let mut report = RunReport::new(Source::Trails);
            if let Err(e) = self.read(ctx, &mut report).await {
                report.fail(e);
            }
            report
        })
    }
}

/// One account's trails, the problems met, and whether the listing completed.
struct AccountTrails {
    entities: Vec<Entity>,
    errors: Vec<String>,
    complete: bool,
}

async fn read_account(
    aws: &Aws,
    project: &ProjectConfig,
    schema: &cedar_policy::Schema,
) -> AccountTrails {
    let mut out = AccountTrails {
        entities: Vec::new(),
        errors: Vec::new(),
        complete: true,
    };
    let sdk = aws.for_role(project.role_arn.as_deref()).await;
    let client = aws_sdk_cloudtrail::Client::new(&sdk);
    let trails = match client
        .describe_trails()
        .include_shadow_trails(true)
        .send()
        .await
    {
        Ok(t) => t,
        Err(e) => {
            out.errors.push(
                CollectError::aws("cloudtrail:DescribeTrails", &project.account_id, e).to_string(),
            );
            out.complete = false;
            return out;
        }
    };
    for trail in trails.trail_list() {
        let (Some(name), Some(arn)) = (trail.name(), trail.trail_arn()) else {
            continue;
        };
        let logging = match client.get_trail_status().name(arn).send().await {
            Ok(s) => s.is_logging().unwrap_or(false),
            Err(e) => {
                // Unknown is reported as not logging: fail closed.
                out.errors
                    .push(CollectError::aws("cloudtrail:GetTrailStatus", arn, e).to_string());
                false
            }
        };
        let value = json!({
            "uid": {"type": "Tre::Trail", "id": format!("{}/{arn}", project.account_id)},
            "attrs": {
                "project": {"__entity": {"type": "Tre::Project", "id": project.id}},
                "name": name,
                "arn": arn,
                "homeRegion": trail.home_region().unwrap_or_default(),
                "isOrganizationTrail": trail.is_organization_trail().unwrap_or(false),
                "isMultiRegionTrail": trail.is_multi_region_trail().unwrap_or(false),
                "isLogging": logging,
            },
            "parents": []
        });
        match Entity::from_json_value(value, Some(schema)) {
            Ok(e) => out.entities.push(e),
            Err(e) => out.errors.push(format!("trail `{arn}`: {e}")),
        }
    }
    out
}
