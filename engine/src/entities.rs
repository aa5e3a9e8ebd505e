//! Entities: parsing user files with positions, and the in-memory graph decisions run on.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{Entities, Entity, EntityUid, Schema};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::{EngineError, Result, SourceProblem};

/// Calls `f` for every entity reference in `json`: any object of the form
/// `{"type": "...", "id": "..."}` (the inside of `__entity`, or a policy scope's entity).
pub fn collect_entity_refs(json: &Value, f: &mut impl FnMut(EntityUid)) {
    match json {
        Value::Object(map) => {
            if map.len() == 2 {
                if let (Some(Value::String(t)), Some(Value::String(id))) =
                    (map.get("type"), map.get("id"))
                {
                    if let Ok(uid) = uid_from_parts(t, id) {
                        f(uid);
                    }
                    return;
                }
            }
            for v in map.values() {
                collect_entity_refs(v, f);
            }
        }
        Value::Array(items) => {
            for v in items {
                collect_entity_refs(v, f);
            }
        }
        _ => {}
    }
}

/// Whether `uid` is of the type `name` (`Tre::User`), without writing its type out: stores
/// are scanned by type on every plan.
pub fn is_type(uid: &EntityUid, name: &str) -> bool {
    let (namespace, base) = name.rsplit_once("::").unwrap_or(("", name));
    let ty = uid.type_name();
    ty.basename() == base && ty.namespace() == namespace
}

/// `Tre::User` + `alice` → `Tre::User::"alice"`.
pub fn uid_from_parts(type_name: &str, id: &str) -> Result<EntityUid> {
    let ty = cedar_policy::EntityTypeName::from_str(type_name)
        .map_err(|e| EngineError::Request(format!("invalid entity type `{type_name}`: {e}")))?;
    Ok(EntityUid::from_type_name_and_id(
        ty,
        cedar_policy::EntityId::new(id),
    ))
}

/// Parses a Cedar UID written as `Tre::User::"alice"` (the CLI form) or as JSON
/// `{"type":"Tre::User","id":"alice"}` / `{"__entity":{...}}`.
pub fn parse_uid(text: &str) -> Result<EntityUid> {
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        let v: Value = serde_json::from_str(trimmed)
            .map_err(|e| EngineError::Request(format!("invalid entity uid `{text}`: {e}")))?;
        return uid_from_json(&v).ok_or_else(|| {
            EngineError::Request(format!(
                "invalid entity uid `{text}`: expected {{\"type\":..., \"id\":...}}"
            ))
        });
    }
    EntityUid::from_str(trimmed).map_err(|e| {
        EngineError::Request(format!(
            "invalid entity uid `{text}`: {e} (write it as Tre::User::\"alice\")"
        ))
    })
}

/// A uid as Cedar's JSON entity reference, `{"__entity": {"type", "id"}}`: how a context or
/// an attribute names an entity.
pub fn entity_json(uid: &EntityUid) -> Value {
    serde_json::json!({"__entity": {"type": uid.type_name().to_string(), "id": uid.id().unescaped()}})
}

/// A UID from its JSON forms, `{"type","id"}` or `{"__entity":{"type","id"}}`.
pub fn uid_from_json(v: &Value) -> Option<EntityUid> {
    let inner = v.get("__entity").unwrap_or(v);
    let t = inner.get("type")?.as_str()?;
    let id = inner.get("id")?.as_str()?;
    uid_from_parts(t, id).ok()
}

/// Parses an entities-JSON file, validating every entity against the schema, and reports
/// every bad entity with its position in the file.
pub fn parse_entities_file(name: &str, text: &str, schema: Option<&Schema>) -> Result<Vec<Entity>> {
    let raws: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| {
        let offset = offset_of_line_col(text, e.line(), e.column());
        EngineError::from(SourceProblem::at(
            name,
            text,
            offset,
            0,
            format!("not an entities JSON array: {e}"),
            "here",
        ))
    })?;
    let mut problems = Vec::new();
    let mut entities = Vec::with_capacity(raws.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for raw in raws {
        let offset = (raw.get().as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
        let len = raw.get().len().min(60);
        match Entity::from_json_str(raw.get(), schema) {
            Ok(entity) => {
                let uid = entity.uid();
                if uid.type_name().basename() == "Action" {
                    problems.push(SourceProblem::at(
                        name,
                        text,
                        offset,
                        len,
                        format!(
                            "action entity `{uid}` cannot be stored: actions come from the schema"
                        ),
                        "this entity",
                    ));
                    continue;
                }
                if let Some(first) = seen.insert(uid.to_string(), offset) {
                    let at = crate::position::line_col(text, first);
                    problems.push(SourceProblem::at(
                        name,
                        text,
                        offset,
                        len,
                        format!("duplicate entity `{uid}` (first at line {})", at.line),
                        "second definition",
                    ));
                    continue;
                }
                entities.push(entity);
            }
            Err(e) => {
                let mut message = e.to_string();
                if let Some(src) = std::error::Error::source(&e) {
                    message = format!("{message}: {src}");
                }
                problems.push(SourceProblem::at(
                    name,
                    text,
                    offset,
                    len,
                    format!("invalid entity: {message}"),
                    "this entity",
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(entities)
    } else {
        Err(EngineError::problems(
            format!("{} invalid entit(ies) in `{name}`", problems.len()),
            problems,
        ))
    }
}

/// The byte offset of a 1-based line and column (as serde_json reports them) in `text`.
pub fn offset_of_line_col(text: &str, line: usize, column: usize) -> usize {
    let mut offset = 0usize;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return offset + column.saturating_sub(1).min(l.len());
        }
        offset += l.len();
    }
    text.len()
}

pub use crate::graph::EntityGraph;

/// Cedar's own entities for every stored body plus the schema's actions, built the way
/// Cedar builds them: what decisions over the compact graph are checked against, and what
/// benchmarks compare with.
pub fn cedar_entities<'a>(
    bodies: impl IntoIterator<Item = &'a str>,
    schema: Option<&Schema>,
) -> Result<Entities> {
    let mut list = Vec::new();
    for body in bodies {
        list.push(entity_from_body(body)?);
    }
    list.extend(action_entities(schema)?);
    Entities::from_entities(list, None)
        .map_err(|e| EngineError::Request(format!("cannot build entity graph: {e}")))
}

/// The schema's action entities (with their action-group parents).
pub fn action_entities(schema: Option<&Schema>) -> Result<Vec<Entity>> {
    let Some(schema) = schema else {
        return Ok(Vec::new());
    };
    Ok(schema
        .action_entities()
        .map_err(|e| EngineError::Request(format!("schema actions: {e}")))?
        .iter()
        .cloned()
        .collect())
}

fn entity_from_body(body: &str) -> Result<Entity> {
    Entity::from_json_str(body, None)
        .map_err(|e| EngineError::Request(format!("stored entity is invalid: {e}")))
}

/// Builds Cedar entities for a slice read back from the log (or a test), adding the
/// schema's actions.
pub fn entities_from_slice(slice: &[Value], schema: Option<&Schema>) -> Result<Entities> {
    let mut list = Vec::with_capacity(slice.len());
    for v in slice {
        let e = Entity::from_json_value(v.clone(), None)
            .map_err(|e| EngineError::Request(format!("invalid entity in slice: {e}")))?;
        list.push(e);
    }
    let action_uids: HashSet<String> = list
        .iter()
        .filter(|e| e.uid().type_name().basename() == "Action")
        .map(|e| e.uid().to_string())
        .collect();
    list.extend(
        action_entities(schema)?
            .into_iter()
            .filter(|a| !action_uids.contains(&a.uid().to_string())),
    );
    Entities::from_entities(list, None)
        .map_err(|e| EngineError::Request(format!("invalid slice: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_matches_only_with_its_namespace_and_whole_name() {
        let uid = uid_from_parts("Tre::User", "alice").expect("uid");
        assert!(is_type(&uid, "Tre::User"));
        assert!(!is_type(&uid, "Tre::UserGroup"));
        assert!(!is_type(&uid, "Other::User"));
        assert!(!is_type(&uid, "User"));
        let bare = uid_from_parts("User", "alice").expect("uid");
        assert!(is_type(&bare, "User"));
        let nested = uid_from_parts("A::B::User", "x").expect("uid");
        assert!(is_type(&nested, "A::B::User"));
    }
}
