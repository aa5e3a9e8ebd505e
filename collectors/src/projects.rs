//! The `[[projects]]` of the configuration as `Tre::Project` entities: what every dataset,
//! workspace and budget belongs to. A project another source already describes (the identity
//! file, with its backup settings) is left to that source.

use cedar_policy::{Entity, Schema};
use serde_json::json;
use tregov_engine::store::{BatchOutcome, Store};

use crate::config::Config;
use crate::CollectError;

pub const PARTITION: &str = "config-projects";

pub fn collect_projects(
    config: &Config,
    store: &Store,
    schema: &Schema,
) -> Result<BatchOutcome, CollectError> {
    let mut entities = Vec::new();
    for p in &config.projects {
        let uid = tregov_engine::entities::uid_from_parts("Tre::Project", &p.id)?;
        if store
            .partition_of(&uid)?
            .is_some_and(|owner| owner != PARTITION)
        {
            continue;
        }
        let value = json!({
            "uid": {"type": "Tre::Project", "id": p.id},
            "attrs": {"accountId": p.account_id},
            "parents": []
        });
        entities.push(
            Entity::from_json_value(value, Some(schema))
                .map_err(|e| CollectError::Io(format!("project `{}`: {e}", p.id)))?,
        );
    }
    Ok(store.write_listing(PARTITION, entities, true, schema)?)
}
