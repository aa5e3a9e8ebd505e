//! Memberships that end. Cedar's parent edges carry no dates, so a membership with an end is
//! written where the identity source writes the edge: the member's tag named after the
//! parent's uid (`"Tre::AccessGroup::\"gwas-readers\""`) holds the `datetime` it ends. The
//! edge stands until then and is left out from that instant on; the tag stays, so reports
//! and the governance clock still see the date (the clock moves at it, and the daemon then
//! reads the identity source again).

use cedar_policy::{Entity, Schema};
use serde_json::Value;

use crate::clock::json_datetime_ms;
use crate::error::{EngineError, Result};

/// The memberships of one entity that end, as `(parent uid text, end in ms)`: the tags that
/// name one of its parents and hold a datetime.
pub fn ending(entity_json: &Value) -> Vec<(String, i64)> {
    let Some(tags) = entity_json.get("tags").and_then(Value::as_object) else {
        return Vec::new();
    };
    let parents: Vec<String> = entity_json
        .get("parents")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(parent_text).collect())
        .unwrap_or_default();
    tags.iter()
        .filter(|(key, _)| parents.iter().any(|p| p == *key))
        .filter_map(|(key, value)| Some((key.clone(), json_datetime_ms(value)?)))
        .collect()
}

/// The entities as they stand at `now_ms`: each membership that ended at or before it is
/// left out of its member's parents. Entities without ending memberships pass unchanged.
pub fn as_of(entities: Vec<Entity>, now_ms: i64, schema: Option<&Schema>) -> Result<Vec<Entity>> {
    entities
        .into_iter()
        .map(|entity| {
            if entity.tags().next().is_none() {
                return Ok(entity);
            }
            let mut json = entity
                .to_json_value()
                .map_err(|e| EngineError::Request(format!("entity `{}`: {e}", entity.uid())))?;
            let ended: Vec<String> = ending(&json)
                .into_iter()
                .filter(|(_, ends)| *ends <= now_ms)
                .map(|(parent, _)| parent)
                .collect();
            if ended.is_empty() {
                return Ok(entity);
            }
            if let Some(parents) = json.get_mut("parents").and_then(Value::as_array_mut) {
                parents.retain(|p| parent_text(p).is_none_or(|text| !ended.contains(&text)));
            }
            Entity::from_json_value(json, schema)
                .map_err(|e| EngineError::Request(format!("entity `{}`: {e}", entity.uid())))
        })
        .collect()
}

/// A parent's uid as Cedar prints it, `Tre::AccessGroup::"gwas-readers"`.
fn parent_text(parent: &Value) -> Option<String> {
    crate::entities::uid_from_json(parent).map(|uid| uid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::datetime_text;

    fn schema() -> Schema {
        let (schema, _) = Schema::from_cedarschema_str(
            "namespace Tre { entity AccessGroup; entity Role; \
             entity User in [AccessGroup, Role] tags datetime; }",
        )
        .expect("schema");
        schema
    }

    fn alice(readers_end: i64) -> Entity {
        let json = serde_json::json!({
            "uid": {"type": "Tre::User", "id": "alice"},
            "attrs": {},
            "parents": [
                {"type": "Tre::AccessGroup", "id": "gwas-readers"},
                {"type": "Tre::Role", "id": "Researcher"}
            ],
            "tags": {
                "Tre::AccessGroup::\"gwas-readers\"": {"__extn": {"fn": "datetime", "arg": datetime_text(readers_end)}},
                "Tre::AccessGroup::\"elsewhere\"": {"__extn": {"fn": "datetime", "arg": datetime_text(0)}}
            }
        });
        Entity::from_json_value(json, Some(&schema())).expect("alice")
    }

    fn parents(entity: &Entity) -> Vec<String> {
        let json = entity.to_json_value().expect("json");
        let mut list: Vec<String> = json["parents"]
            .as_array()
            .expect("parents")
            .iter()
            .filter_map(parent_text)
            .collect();
        list.sort();
        list
    }

    #[test]
    fn a_membership_stands_until_its_end_and_is_left_out_from_then_on() {
        let ends = 1_800_000_000_000;
        let schema = schema();
        let before = as_of(vec![alice(ends)], ends - 1, Some(&schema)).expect("before");
        assert_eq!(
            parents(&before[0]),
            [
                "Tre::AccessGroup::\"gwas-readers\"",
                "Tre::Role::\"Researcher\""
            ]
        );
        let at = as_of(vec![alice(ends)], ends, Some(&schema)).expect("at");
        assert_eq!(parents(&at[0]), ["Tre::Role::\"Researcher\""]);
        assert!(
            at[0].tag("Tre::AccessGroup::\"gwas-readers\"").is_some(),
            "the date stays"
        );
    }

    #[test]
    fn a_tag_naming_no_parent_ends_nothing() {
        let json = alice(1_800_000_000_000).to_json_value().expect("json");
        let ending = ending(&json);
        assert_eq!(
            ending.len(),
            1,
            "only the tag that names a parent: {ending:?}"
        );
        assert_eq!(ending[0].0, "Tre::AccessGroup::\"gwas-readers\"");
    }
}
