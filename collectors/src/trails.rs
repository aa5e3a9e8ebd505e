//! Whether each project account's trails are logging (`DescribeTrails`, `GetTrailStatus`),
//! as `Tre::Trail` entities policies can use: a TRE whose audit trail stopped is not one to
//! grant anything in.

use cedar_policy::{Entity, Schema};
use serde_json::json;
use tregov_engine::store::{BatchOutcome, Store};

use crate::aws::Aws;
use crate::config::{Config, ProjectConfig};
use crate::{CollectError, RunReport};

pub const PARTITION: &str = "cloudtrail-trails";

/// Reads every project account's trails and replaces the `Tre::Trail` entities with them.
pub async fn collect_trails(
    config: &Config,
    aws: &Aws,
    store: &Store,
    schema: &Schema,
) -> Result<(RunReport, BatchOutcome), CollectError> {
    let mut report = RunReport::new("trails");
    let mut entities = Vec::new();
    let mut failed_accounts = false;
    for (found, errors, ok) in crate::per_project(config, |p| read_account(aws, p, schema)).await {
        entities.extend(found);
        report.errors.extend(errors);
        failed_accounts |= !ok;
    }
    report.items = entities.len() as u64;
    let outcome = store.write_listing(PARTITION, entities, !failed_accounts, schema)?;
    Ok((report, outcome))
}

/// One account's trails, the problems met, and whether the listing completed.
async fn read_account(
    aws: &Aws,
    project: &ProjectConfig,
    schema: &Schema,
) -> (Vec<Entity>, Vec<String>, bool) {
    let mut entities = Vec::new();
    let mut errors = Vec::new();
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
            errors.push(
                CollectError::aws("cloudtrail:DescribeTrails", &project.account_id, e).to_string(),
            );
            return (entities, errors, false);
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
                errors.push(CollectError::aws("cloudtrail:GetTrailStatus", arn, e).to_string());
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
            Ok(e) => entities.push(e),
            Err(e) => errors.push(format!("trail `{arn}`: {e}")),
        }
    }
    (entities, errors, true)
}
