//! The entity graph decisions run on, held compactly.
//!
//! Cedar's own `Entities` for a whole store cost about 3.5 KiB of heap per entity and
//! seconds to build at 100k entities (each attribute map, each closed ancestor set, each uid
//! allocated apart). A decision reads only its slice: its seeds and what their attributes
//! reach. So the graph keeps, per entity, its attributes as the store's own JSON text, its
//! closed ancestor set and the uids its attributes name, as slot numbers; and it builds
//! Cedar's `Entities` per decision from the slice, each entity with its whole ancestor set as
//! its parents, which is exactly what the decision log records and `why --replay` proves
//! decides as the full store does. Entities parsed for a slice are kept (a bounded number)
//! until the entity or one of its ancestors changes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, RwLock};

use cedar_policy::{Entities, Entity, EntityTypeName, EntityUid, Schema};
use cedar_policy_core::ast;
use cedar_policy_core::entities::{EntityJsonParser, NoEntitiesSchema, TCComputation};
use cedar_policy_core::extensions::Extensions;
use ref_cast::RefCast;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::{EngineError, Result};
use crate::working_set::{WorkingSet, MOST_HELD};

use crate::fast::Fast;

/// The entities decisions run on: every stored entity plus the schema's actions, with the
/// transitive closure of `in` computed once.
pub struct EntityGraph {
    slots: Vec<Slot>,
    index: HashMap<EntityUid, u32, Fast>,
    /// Slots that hold an entity (the rest are uids only named as a parent or a value).
    stored: usize,
    /// The entities decisions have needed, parsed (see `working_set`).
    working: RwLock<WorkingSet>,
    /// Each seed's slice, as walked over this version of the graph (see `seed_slice`).
    slices: RwLock<HashMap<u32, Arc<[u32]>, Fast>>,
}

/// Seeds whose slices are kept at most; past it they are walked afresh.
const MOST_SLICES: usize = 262_144;

/// One uid the graph knows: an entity, or a uid an entity names that is not stored.
#[derive(Clone)]
struct Slot {
    uid: EntityUid,
    /// The entity's attributes (and tags, when it has any) as stored; `None` when the uid
    /// is only named.
    body: Option<Arc<Body>>,
    parents: Arc<[u32]>,
    /// Every ancestor: the closure of `parents`.
    ancestors: Arc<[u32]>,
    /// The uids its attributes and tags name, inside sets and records too.
    refs: Arc<[u32]>,
}

struct Body {
    attrs: Box<str>,
    tags: Option<Box<str>>,
}

impl Body {
    fn texts(&self) -> Vec<&str> {
        std::iter::once(&*self.attrs)
            .chain(self.tags.as_deref())
            .collect()
    }
}

/// An entity's JSON as the store, the Cedar CLI and Cedar's own `to_json_value` write it.
#[derive(Deserialize)]
struct EntityJson<'a> {
    #[serde(borrow)]
    uid: UidJson<'a>,
    #[serde(borrow, default)]
    attrs: Option<&'a RawValue>,
    #[serde(borrow, default)]
    parents: Vec<UidJson<'a>>,
    #[serde(borrow, default)]
    tags: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct UidJson<'a> {
    #[serde(rename = "type", borrow)]
    type_name: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
}

impl Clone for EntityGraph {
    fn clone(&self) -> Self {
        Self {
            slots: self.slots.clone(),
            index: self.index.clone(),
            stored: self.stored,
            working: RwLock::new(self.working_read().clone()),
            slices: RwLock::new(self.slices_read().clone()),
        }
    }
}

impl EntityGraph {
    /// Builds the graph from stored entity bodies (canonical JSON, explicit `__entity` and
    /// `__extn` escapes, so no schema is needed to read them back).
    pub fn from_bodies<'a>(
        bodies: impl IntoIterator<Item = &'a str>,
        schema: Option<&Schema>,
    ) -> Result<Self> {
        let mut graph = Self::empty();
        let mut types = TypeNames::default();
        for body in bodies {
            graph.put(body, &mut types)?;
        }
        for action in crate::entities::action_entities(schema)? {
            graph.put(&entity_text(&action)?, &mut types)?;
        }
        let everything: Vec<u32> = (0..graph.slots.len() as u32).collect();
        graph.close(&everything);
        Ok(graph)
    }

    /// Builds the graph from parsed entities (an entities file given on the command line).
    pub fn from_entities(list: &[Entity], schema: Option<&Schema>) -> Result<Self> {
        let bodies = list.iter().map(entity_text).collect::<Result<Vec<_>>>()?;
        Self::from_bodies(bodies.iter().map(String::as_str), schema)
    }

    fn empty() -> Self {
        Self {
            slots: Vec::new(),
            index: HashMap::default(),
            stored: 0,
            working: RwLock::default(),
            slices: RwLock::default(),
        }
    }

    /// A new graph with `upserts` written over and `deletes` removed, and the uids written.
    pub fn apply<'a>(
        &self,
        upserts: impl IntoIterator<Item = &'a str>,
        deletes: &[EntityUid],
    ) -> Result<(Self, Vec<EntityUid>)> {
        let mut next = Self {
            slots: self.slots.clone(),
            index: self.index.clone(),
            stored: self.stored,
            working: RwLock::default(),
            slices: RwLock::default(),
        };
        let mut types = TypeNames::default();
        let mut changed = Vec::new();
        for uid in deletes {
            if let Some(&slot) = next.index.get(uid) {
                next.forget(slot);
                changed.push(slot);
            }
        }
        let mut written = Vec::new();
        for body in upserts {
            let slot = next.put(body, &mut types)?;
            written.push(next.slots[slot as usize].uid.clone());
            changed.push(slot);
        }
        let reclosed = next.reclose(&changed);
        next.working = RwLock::new(self.working_read().without(&reclosed));
        // A slice follows attributes only: it changes when one of its own uids is written,
        // deleted or created, not when an ancestor is.
        let touched: HashSet<u32, Fast> = changed.iter().copied().collect();
        let mut slices = self.slices_read().clone();
        slices.retain(|_, part| !part.iter().any(|s| touched.contains(s)));
        next.slices = RwLock::new(slices);
        Ok((next, written))
    }

    /// Stores one entity's JSON over whatever its slot held, its ancestors not yet closed.
    fn put(&mut self, text: &str, types: &mut TypeNames) -> Result<u32> {
        let json: EntityJson = serde_json::from_str(text)
            .map_err(|e| EngineError::Request(format!("stored entity is invalid: {e}")))?;
        let uid = types.uid(&json.uid)?;
        let parents = json
            .parents
            .iter()
            .map(|p| Ok(self.slot_of(types.uid(p)?)))
            .collect::<Result<Vec<u32>>>()?;
        let mut refs = Vec::new();
        for raw in json.attrs.iter().chain(json.tags.iter()) {
            // Most entities name no other entity: skip parsing their attributes.
            if raw.get().contains("\"__entity\"") {
                let value: Value = serde_json::from_str(raw.get())
                    .map_err(|e| EngineError::Request(format!("stored entity is invalid: {e}")))?;
                entity_refs(&value, &mut |t, id| {
                    if let Ok(uid) = types.uid_of(t, id) {
                        refs.push(uid);
                    }
                });
            }
        }
        let refs: Vec<u32> = refs.into_iter().map(|u| self.slot_of(u)).collect();
        let slot = self.slot_of(uid);
        let entry = &mut self.slots[slot as usize];
        if entry.body.is_none() {
            self.stored += 1;
        }
        entry.body = Some(Arc::new(Body {
            attrs: json.attrs.map_or("{}", RawValue::get).into(),
            tags: json.tags.map(|t| t.get().into()),
        }));
        entry.parents = parents.into();
        entry.refs = refs.into();
        Ok(slot)
    }

    /// Turns a stored entity back into a uid that is only named.
    fn forget(&mut self, slot: u32) {
        let entry = &mut self.slots[slot as usize];
        if entry.body.take().is_some() {
            self.stored -= 1;
        }
        entry.parents = Arc::from([]);
        entry.refs = Arc::from([]);
    }

    fn slot_of(&mut self, uid: EntityUid) -> u32 {
        if let Some(&slot) = self.index.get(&uid) {
            return slot;
        }
        let slot = self.slots.len() as u32;
        self.index.insert(uid.clone(), slot);
        self.slots.push(Slot {
            uid,
            body: None,
            parents: Arc::from([]),
            ancestors: Arc::from([]),
            refs: Arc::from([]),
        });
        slot
    }

    /// Recloses what `changed` slots can have changed: their own ancestors and those of
    /// every descendant. Returns the slots whose ancestors were recomputed.
    fn reclose(&mut self, changed: &[u32]) -> Vec<u32> {
        let changed_set: HashSet<u32, Fast> = changed.iter().copied().collect();
        let mut affected: Vec<u32> = changed.to_vec();
        affected.extend(
            (0..self.slots.len() as u32)
                .filter(|s| !changed_set.contains(s))
                .filter(|&s| {
                    self.slots[s as usize]
                        .ancestors
                        .iter()
                        .any(|a| changed_set.contains(a))
                }),
        );
        self.close(&affected);
        affected
    }

    /// Computes the ancestors of `slots` from the parents of everything (a walk per slot, so
    /// cycles and stale closures elsewhere cannot mislead it).
    fn close(&mut self, slots: &[u32]) {
        let mut seen: HashSet<u32, Fast> = HashSet::default();
        let mut queue = VecDeque::new();
        for &slot in slots {
            seen.clear();
            queue.extend(self.slots[slot as usize].parents.iter().copied());
            let mut ancestors = Vec::new();
            while let Some(next) = queue.pop_front() {
                if seen.insert(next) {
                    ancestors.push(next);
                    queue.extend(self.slots[next as usize].parents.iter().copied());
                }
            }
            self.slots[slot as usize].ancestors = ancestors.into();
        }
    }

    /// How many entities the graph holds (stored ones and the schema's actions).
    pub fn len(&self) -> usize {
        self.stored
    }

    pub fn is_empty(&self) -> bool {
        self.stored == 0
    }

    /// Whether `uid` is an entity of the graph (not only a uid some entity names).
    pub fn contains(&self, uid: &EntityUid) -> bool {
        self.stored_slot(uid).is_some()
    }

    fn stored_slot(&self, uid: &EntityUid) -> Option<u32> {
        let slot = *self.index.get(uid)?;
        self.slots[slot as usize].body.as_ref().map(|_| slot)
    }

    /// The uids of every entity, in no particular order.
    pub fn uids(&self) -> impl Iterator<Item = &EntityUid> {
        self.slots
            .iter()
            .filter(|s| s.body.is_some())
            .map(|s| &s.uid)
    }

    /// Each stored entity with its attributes' and tags' JSON texts, as stored.
    pub(crate) fn stored_bodies(&self) -> impl Iterator<Item = (&EntityUid, Vec<&str>)> {
        self.slots
            .iter()
            .filter_map(|s| s.body.as_ref().map(|b| (&s.uid, b.texts())))
    }

    /// The attributes' and tags' JSON texts of `uid`, as stored (none for a uid the graph
    /// does not hold).
    pub(crate) fn body_texts(&self, uid: &EntityUid) -> Vec<&str> {
        self.stored_slot(uid)
            .and_then(|slot| self.slots[slot as usize].body.as_ref())
            .map(|b| b.texts())
            .unwrap_or_default()
    }

    /// Every ancestor of `uid` (none for a uid the graph does not hold).
    pub fn ancestors(&self, uid: &EntityUid) -> impl Iterator<Item = &EntityUid> {
        let ancestors = self
            .stored_slot(uid)
            .map(|s| self.slots[s as usize].ancestors.clone())
            .unwrap_or_else(|| Arc::from([]));
        (0..ancestors.len()).map(move |i| &self.slots[ancestors[i] as usize].uid)
    }

    /// The entity `uid` as Cedar holds it, with its whole ancestor set as its parents.
    pub fn entity(&self, uid: &EntityUid) -> Option<GraphEntity> {
        let slot = self.stored_slot(uid)?;
        let held = self.with_held(&[slot], |working| working.get(slot).cloned());
        held.ok().flatten().map(GraphEntity)
    }

    /// Cedar's authorizer (or anything else) run by `decide` over entities that hold the
    /// slice of `seeds`: the decision is the one over the whole store.
    pub fn decide_over<'a, R>(
        &self,
        seeds: impl IntoIterator<Item = &'a EntityUid> + Clone,
        decide: impl FnOnce(&Entities) -> R,
    ) -> Result<R> {
        // Seeds the graph does not know reach nothing: only the known ones need holding.
        // Once the working set covers them (nearly always), nothing is collected.
        {
            let working = self.working_read();
            let covered = seeds
                .clone()
                .into_iter()
                .all(|u| self.index.get(u).is_none_or(|&s| working.covers(s)));
            if covered {
                return Ok(decide(working.entities()));
            }
        }
        let seeds: Vec<&EntityUid> = seeds.into_iter().collect();
        let known: Vec<u32> = seeds
            .iter()
            .filter_map(|u| self.index.get(*u).copied())
            .collect();
        let slots = self.stored_slice(seeds);
        let decided = self.with_held(&slots, |working| decide(working.entities()))?;
        self.working
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .cover(&known, &slots);
        Ok(decided)
    }

    /// Cedar's entities for the slice of `seeds` alone (see `slice`).
    pub fn entities_for<'a>(
        &self,
        seeds: impl IntoIterator<Item = &'a EntityUid>,
    ) -> Result<Entities> {
        let slots = self.stored_slice(seeds);
        let parsed = self.with_held(&slots, |working| {
            slots
                .iter()
                .filter_map(|&s| working.get(s).cloned())
                .collect::<Vec<_>>()
        })?;
        let entities = cedar_policy_core::entities::Entities::new()
            .add_entities(
                parsed,
                None::<&NoEntitiesSchema>,
                TCComputation::AssumeAlreadyComputed,
                Extensions::all_available(),
            )
            .map_err(|e| {
                EngineError::Request(format!("cannot build the decision's entities: {e}"))
            })?;
        Ok(Entities::from(entities))
    }

    fn stored_slice<'a>(&self, seeds: impl IntoIterator<Item = &'a EntityUid>) -> Vec<u32> {
        let (mut slots, _) = self.slice_slots(seeds);
        slots.retain(|&s| self.slots[s as usize].body.is_some());
        slots
    }

    /// Runs `f` over the working set once it holds every one of `slots`, parsing those it
    /// lacks (outside the lock when it can: readers share the graph).
    fn with_held<R>(&self, slots: &[u32], f: impl FnOnce(&WorkingSet) -> R) -> Result<R> {
        let lacking: Vec<u32> = {
            let working = self.working_read();
            let lacking: Vec<u32> = slots
                .iter()
                .copied()
                .filter(|&s| !working.holds(s))
                .collect();
            if lacking.is_empty() {
                return Ok(f(&working));
            }
            lacking
        };
        let mut parsed: HashMap<u32, Arc<ast::Entity>, Fast> = HashMap::default();
        for &slot in &lacking {
            parsed.insert(slot, Arc::new(self.entity_of_slot(slot)?));
        }
        let mut working = self.working.write().unwrap_or_else(|p| p.into_inner());
        if working.len() + slots.len() > MOST_HELD {
            tracing::debug!(
                held = working.len(),
                "working set over its bound: starting over"
            );
            working.clear();
        }
        let mut fresh = Vec::new();
        for &slot in slots {
            if working.holds(slot) || fresh.iter().any(|(s, _)| *s == slot) {
                continue;
            }
            let entity = match parsed.remove(&slot) {
                Some(entity) => entity,
                None => Arc::new(self.entity_of_slot(slot)?),
            };
            fresh.push((slot, entity));
        }
        working.add(fresh)?;
        Ok(f(&working))
    }

    /// The entity in `slot` parsed by Cedar, its ancestors given as parents. Only its
    /// attributes go through Cedar's JSON parser; the ancestors are known uids already.
    fn entity_of_slot(&self, slot: u32) -> Result<ast::Entity> {
        let text = self.render_text(slot, false).unwrap_or_default();
        let parser = EntityJsonParser::new(
            None::<&NoEntitiesSchema>,
            Extensions::all_available(),
            TCComputation::AssumeAlreadyComputed,
        );
        let mut entity = parser
            .single_from_json_str(&text)
            .map_err(|e| EngineError::Request(format!("stored entity is invalid: {e}")))?;
        for &a in self.slots[slot as usize].ancestors.iter() {
            let uid: &ast::EntityUID = self.slots[a as usize].uid.as_ref();
            entity.add_parent(uid.clone());
        }
        Ok(entity)
    }

    fn working_read(&self) -> std::sync::RwLockReadGuard<'_, WorkingSet> {
        // It is changed only by `add` and `clear`, which leave it whole even when they fail.
        self.working.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Every entity a decision over `seeds` can read: the seeds and everything reachable from
    /// them through attributes. Ancestors need not be followed: Cedar reads an ancestor only
    /// through `in`, which the descendant's own (closed) ancestor set answers.
    pub fn slice<'a>(&self, seeds: impl IntoIterator<Item = &'a EntityUid>) -> Vec<EntityUid> {
        let (slots, unknown) = self.slice_slots(seeds);
        unknown
            .into_iter()
            .cloned()
            .chain(slots.iter().map(|&s| self.slots[s as usize].uid.clone()))
            .collect()
    }

    /// The slots of the slice of `seeds`, stored or only named, and the seeds the graph
    /// does not know at all.
    fn slice_slots<'a>(
        &self,
        seeds: impl IntoIterator<Item = &'a EntityUid>,
    ) -> (Vec<u32>, Vec<&'a EntityUid>) {
        let mut seen: HashSet<u32, Fast> = HashSet::default();
        let mut unknown: Vec<&EntityUid> = Vec::new();
        let mut out = Vec::new();
        for uid in seeds {
            match self.index.get(uid) {
                Some(&seed) => {
                    let part = self.seed_slice(seed);
                    out.extend(part.iter().copied().filter(|&s| seen.insert(s)));
                }
                None if !unknown.contains(&uid) => unknown.push(uid),
                None => {}
            }
        }
        (out, unknown)
    }

    /// The slice of one seed, walked once per version of the graph: a decision's seeds are
    /// mostly the same few thousand users and datasets, and the walk is a chain of cache
    /// misses over the slots.
    fn seed_slice(&self, seed: u32) -> Arc<[u32]> {
        if let Some(part) = self.slices_read().get(&seed) {
            return part.clone();
        }
        let mut seen: HashSet<u32, Fast> = HashSet::default();
        let mut queue: VecDeque<u32> = VecDeque::from([seed]);
        seen.insert(seed);
        let mut part = Vec::new();
        while let Some(slot) = queue.pop_front() {
            for &next in self.slots[slot as usize].refs.iter() {
                if seen.insert(next) {
                    queue.push_back(next);
                }
            }
            part.push(slot);
        }
        let part: Arc<[u32]> = part.into();
        let mut slices = self.slices.write().unwrap_or_else(|p| p.into_inner());
        if slices.len() >= MOST_SLICES {
            slices.clear();
        }
        slices.insert(seed, part.clone());
        part
    }

    fn slices_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u32, Arc<[u32]>, Fast>> {
        // Entries are whole or absent: a panic elsewhere cannot leave one torn.
        self.slices.read().unwrap_or_else(|p| p.into_inner())
    }

    /// What a decision asked about `seed` depends on: its slice, missing uids included, and
    /// the ancestors of everything in it (see `cache`).
    pub fn dependencies(&self, seed: &EntityUid) -> Vec<EntityUid> {
        let slice = self.slice(std::iter::once(seed));
        let mut seen: HashSet<&EntityUid> = slice.iter().collect();
        let mut out = slice.clone();
        for uid in &slice {
            for a in self.ancestors(uid) {
                if seen.insert(a) {
                    out.push(a.clone());
                }
            }
        }
        out
    }

    /// The slice as entities JSON, each entity with its whole ancestor set as parents so the
    /// slice decides alone exactly as the full store did. Missing entities are left out (a
    /// decision on the slice then misses them exactly as the live one did).
    pub fn render_slice(&self, uids: &[EntityUid]) -> Vec<Value> {
        uids.iter()
            .filter_map(|uid| self.render_slot(self.stored_slot(uid)?))
            .filter_map(|text| serde_json::from_str(&text).ok())
            .collect()
    }

    /// One entity of a slice as JSON text, and the uids the text shows (the entity and its
    /// ancestors): it stays right until one of those is written or deleted.
    pub fn render_entity(&self, uid: &EntityUid) -> Option<(String, Vec<EntityUid>)> {
        let slot = self.stored_slot(uid)?;
        let text = self.render_slot(slot)?;
        let mut shows = vec![uid.clone()];
        shows.extend(self.ancestors(uid).cloned());
        Some((text, shows))
    }

    /// `{"uid":…,"attrs":…,"parents":[every ancestor, sorted],"tags":…}`, as Cedar writes an
    /// entity, with the ancestors in the order their own JSON text sorts.
    fn render_slot(&self, slot: u32) -> Option<String> {
        self.render_text(slot, true)
    }

    /// The entity's JSON with its ancestors as parents, or with none.
    fn render_text(&self, slot: u32, with_ancestors: bool) -> Option<String> {
        let entry = &self.slots[slot as usize];
        let body = entry.body.as_ref()?;
        let mut parents: Vec<String> = match with_ancestors {
            true => entry
                .ancestors
                .iter()
                .map(|&a| uid_json(&self.slots[a as usize].uid))
                .collect(),
            false => Vec::new(),
        };
        parents.sort();
        let mut text = String::with_capacity(64 + body.attrs.len() + 48 * parents.len());
        text.push_str("{\"uid\":");
        text.push_str(&uid_json(&entry.uid));
        text.push_str(",\"attrs\":");
        text.push_str(&body.attrs);
        text.push_str(",\"parents\":[");
        text.push_str(&parents.join(","));
        text.push(']');
        if let Some(tags) = &body.tags {
            text.push_str(",\"tags\":");
            text.push_str(tags);
        }
        text.push('}');
        Some(text)
    }
}

/// An entity of the graph as Cedar parsed it, shared with the graph's working set.
#[derive(Clone)]
pub struct GraphEntity(Arc<ast::Entity>);

impl std::ops::Deref for GraphEntity {
    type Target = Entity;

    fn deref(&self) -> &Entity {
        Entity::ref_cast(&self.0)
    }
}

/// `{"type":"Tre::User","id":"alice"}`.
fn uid_json(uid: &EntityUid) -> String {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    format!(
        "{{\"type\":{},\"id\":{}}}",
        quote(&uid.type_name().to_string()),
        quote(uid.id().unescaped())
    )
}

fn entity_text(e: &Entity) -> Result<String> {
    e.to_json_string()
        .map_err(|err| EngineError::Request(format!("entity `{}`: {err}", e.uid())))
}

/// Calls `f` with the type and id of every `{"__entity": {...}}` in an attribute value.
fn entity_refs(v: &Value, f: &mut impl FnMut(&str, &str)) {
    match v {
        Value::Object(map) => {
            if let Some(inner) = map.get("__entity") {
                if let (Some(t), Some(id)) = (
                    inner.get("type").and_then(Value::as_str),
                    inner.get("id").and_then(Value::as_str),
                ) {
                    f(t, id);
                }
                return;
            }
            if map.contains_key("__extn") {
                return;
            }
            map.values().for_each(|v| entity_refs(v, f));
        }
        Value::Array(items) => items.iter().for_each(|v| entity_refs(v, f)),
        _ => {}
    }
}

/// Entity type names, parsed once each: Cedar parses one with its full grammar.
#[derive(Default)]
struct TypeNames(HashMap<String, EntityTypeName, Fast>);

impl TypeNames {
    fn uid(&mut self, json: &UidJson) -> Result<EntityUid> {
        self.uid_of(&json.type_name, &json.id)
    }

    fn uid_of(&mut self, type_name: &str, id: &str) -> Result<EntityUid> {
        let ty = match self.0.get(type_name) {
            Some(ty) => ty.clone(),
            None => {
                let ty: EntityTypeName = type_name.parse().map_err(|e| {
                    EngineError::Request(format!("invalid entity type `{type_name}`: {e}"))
                })?;
                self.0.insert(type_name.to_string(), ty.clone());
                ty
            }
        };
        Ok(EntityUid::from_type_name_and_id(
            ty,
            cedar_policy::EntityId::new(id),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entities::{cedar_entities, parse_uid};

    fn body(id: &str, parents: &[&str]) -> String {
        let parents: Vec<Value> = parents
            .iter()
            .map(|p| serde_json::json!({"type": "Tre::AccessGroup", "id": p}))
            .collect();
        serde_json::json!({"uid": {"type": "Tre::AccessGroup", "id": id}, "attrs": {}, "parents": parents})
            .to_string()
    }

    fn group(id: &str) -> EntityUid {
        parse_uid(&format!("Tre::AccessGroup::\"{id}\"")).expect("uid")
    }

    fn ancestors(graph: &EntityGraph, id: &str) -> Vec<String> {
        let mut out: Vec<String> = graph.ancestors(&group(id)).map(|u| u.to_string()).collect();
        out.sort();
        out
    }

    fn cedar_ancestors(entities: &Entities, id: &str) -> Vec<String> {
        let mut out: Vec<String> = entities
            .ancestors(&group(id))
            .into_iter()
            .flatten()
            .map(|u| u.to_string())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_group_given_a_new_parent_passes_it_to_members_of_its_members() {
        let member = body("member", &["mid"]);
        let mid = body("mid", &["late"]);
        let late = body("late", &[]);
        let graph = EntityGraph::from_bodies([member.as_str(), mid.as_str(), late.as_str()], None)
            .expect("graph");
        let late_now = body("late", &["top"]);
        let (graph, written) = graph.apply([late_now.as_str()], &[]).expect("apply");
        assert_eq!(written, vec![group("late")]);
        let fresh = cedar_entities([member.as_str(), mid.as_str(), late_now.as_str()], None)
            .expect("cedar");
        assert_eq!(
            ancestors(&graph, "member"),
            cedar_ancestors(&fresh, "member")
        );
        assert_eq!(
            ancestors(&graph, "member"),
            ["late", "mid", "top"].map(|g| group(g).to_string())
        );
    }

    /// Regression: the graph used to follow the store through Cedar's own
    /// `Entities::remove_entities`, which also takes the removed uid out of its members'
    /// parents, while a fresh build from the same bodies (a restart) keeps it there: deleting
    /// a group changed `member in group` from true to false until the process restarted.
    #[test]
    fn a_deleted_parent_stays_in_its_members_ancestors_as_after_a_restart() {
        let member = body("member", &["mid"]);
        let mid = body("mid", &["top"]);
        let graph = EntityGraph::from_bodies([member.as_str(), mid.as_str()], None).expect("graph");
        let (graph, _) = graph.apply([], &[group("mid")]).expect("apply");
        let fresh = cedar_entities([member.as_str()], None).expect("cedar");
        assert_eq!(
            ancestors(&graph, "member"),
            cedar_ancestors(&fresh, "member")
        );
        assert_eq!(ancestors(&graph, "member"), vec![group("mid").to_string()]);
        assert!(!graph.contains(&group("mid")));
        assert!(graph.render_entity(&group("mid")).is_none());
    }

    #[test]
    fn a_slice_holds_what_attributes_name_and_misses_what_is_not_stored() {
        let user = r#"{"uid":{"type":"Tre::User","id":"u"},"attrs":{"manager":{"__entity":{"type":"Tre::User","id":"m"}},"tags":[{"__entity":{"type":"Tre::User","id":"ghost"}}]},"parents":[]}"#;
        let manager = r#"{"uid":{"type":"Tre::User","id":"m"},"attrs":{},"parents":[]}"#;
        let graph = EntityGraph::from_bodies([user, manager], None).expect("graph");
        let u = parse_uid(r#"Tre::User::"u""#).expect("uid");
        let slice: Vec<String> = graph.slice([&u]).iter().map(|x| x.to_string()).collect();
        assert_eq!(
            slice,
            [
                r#"Tre::User::"u""#,
                r#"Tre::User::"m""#,
                r#"Tre::User::"ghost""#
            ]
        );
        let entities = graph.entities_for([&u]).expect("entities");
        assert_eq!(entities.len(), 2);
        let fresh = cedar_entities([user, manager], None).expect("cedar");
        assert_eq!(
            entities.get(&u).map(|e| e.to_json_value().ok()),
            fresh.get(&u).map(|e| e.to_json_value().ok())
        );
    }

    #[test]
    fn a_covered_seed_is_walked_again_once_its_working_set_starts_over() {
        let user = r#"{"uid":{"type":"Tre::User","id":"u"},"attrs":{"manager":{"__entity":{"type":"Tre::User","id":"m"}}},"parents":[]}"#;
        let manager = r#"{"uid":{"type":"Tre::User","id":"m"},"attrs":{},"parents":[]}"#;
        let graph = EntityGraph::from_bodies([user, manager], None).expect("graph");
        let u = parse_uid(r#"Tre::User::"u""#).expect("uid");
        let m = parse_uid(r#"Tre::User::"m""#).expect("uid");
        let held = |graph: &EntityGraph| {
            graph
                .decide_over([&u], |entities| {
                    (entities.get(&u).is_some(), entities.get(&m).is_some())
                })
                .expect("decide")
        };
        assert_eq!(held(&graph), (true, true));
        assert!(graph.working_read().covers(graph.index[&u]));
        // Past its bound the set starts over: the seed is no longer covered, and the next
        // decision holds its whole slice again rather than reading an empty set.
        graph.working.write().expect("lock").clear();
        assert!(!graph.working_read().covers(graph.index[&u]));
        assert_eq!(held(&graph), (true, true));
        // A new version of the graph starts with nothing covered either.
        let (next, _) = graph.apply([manager], &[]).expect("apply");
        assert!(!next.working_read().covers(next.index[&u]));
        assert_eq!(held(&next), (true, true));
    }
}
