//! The `[identity]` entities file: people, roles and project memberships, as the identity
//! provider or SWB exports them. Each pass re-reads it and replaces the `identity` partition,
//! so edits to the file (and removals from it) reach the store.

use cedar_policy::Schema;
use tregov_engine::entities::parse_entities_file;
use tregov_engine::store::{BatchOutcome, Store};

use crate::config::Config;
use crate::{CollectError, RunReport};

pub const PARTITION: &str = "identity";

pub fn collect_identity(
    config: &Config,
    store: &Store,
    schema: &Schema,
) -> Result<Option<(RunReport, BatchOutcome)>, CollectError> {
    let Some(identity) = &config.identity else {
        return Ok(None);
    };
    let path = &identity.entities;
    let text = std::fs::read_to_string(path)
        .map_err(|e| CollectError::Io(format!("cannot read `{}`: {e}", path.display())))?;
    // A bad file changes nothing: the last good identities stay in force.
    let entities = parse_entities_file(&path.display().to_string(), &text, Some(schema))?;
    let mut report = RunReport::new("identity");
    report.items = entities.len() as u64;
    report.files = 1;
    let outcome = store.write_listing(PARTITION, entities, true, schema)?;
    Ok(Some((report, outcome)))
}
