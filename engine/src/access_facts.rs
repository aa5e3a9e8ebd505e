//! The stored facts a data access question is asked with: the exemption (`context.exemption`)
//! and the review item (`context.review`) the store holds for its user and study. The
//! planner, `why` and the API put the store's there, never a caller's; the policies that read
//! them decide what they mean.

use std::collections::HashMap;

use cedar_policy::EntityUid;
use serde_json::{Map, Value};

use crate::clock::datetime_value;
use crate::entities::{uid_from_json, uid_from_parts, EntityGraph};
use crate::exemptions::ExemptionIndex;
use crate::reviews::ReviewIndex;

/// The entity types that are facts about one user's access to one study (attributes `user`
/// and `dataset`).
const ACCESS_FACT_TYPES: [&str; 2] = ["Tre::Exemption", "Tre::ReviewItem"];

#[derive(Debug, Clone, Default)]
pub struct AccessFacts {
    exemptions: ExemptionIndex,
    reviews: ReviewIndex,
}

impl AccessFacts {
    /// The access facts `graph` holds. The engine keeps them (`Engine::access_facts`),
    /// made again only when one is written or deleted.
    pub fn of(graph: &EntityGraph) -> Self {
        Self {
            exemptions: ExemptionIndex::of(graph),
            reviews: ReviewIndex::of(graph),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.exemptions.is_empty() && self.reviews.is_empty()
    }

    /// The facts for `user`'s access to `dataset` at `now`: the context attributes naming
    /// them, and their uids. `None` when the store holds none.
    pub fn for_access(
        &self,
        user: &EntityUid,
        dataset: &EntityUid,
        now: i64,
    ) -> Option<(Map<String, Value>, Vec<EntityUid>)> {
        let found = [
            (
                "exemption",
                self.chosen("Tre::Exemption", user, dataset, now),
            ),
            ("review", self.chosen("Tre::ReviewItem", user, dataset, now)),
        ];
        let mut context = Map::new();
        let mut uids = Vec::new();
        for (name, uid) in found {
            if let Some(uid) = uid {
                context.insert(name.into(), crate::entities::entity_json(uid));
                uids.push(uid.clone());
            }
        }
        (!uids.is_empty()).then_some((context, uids))
    }

    /// The fact of `entity_type` for `user`'s access to `dataset` at `now`, as the planner
    /// asks with it; `None` when the type is no access fact or the store holds none.
    pub fn chosen(
        &self,
        entity_type: &str,
        user: &EntityUid,
        dataset: &EntityUid,
        now: i64,
    ) -> Option<&EntityUid> {
        match entity_type {
            "Tre::Exemption" => self.exemptions.for_access(user, dataset, now),
            "Tre::ReviewItem" => self.reviews.for_access(user, dataset),
            _ => None,
        }
    }

    /// Whether `entity_type` is a fact about one user's access to one study, which
    /// `chosen` picks as the planner does.
    pub fn is_access_fact(entity_type: &str) -> bool {
        ACCESS_FACT_TYPES.contains(&entity_type)
    }

    /// Whether `uid` is an access fact's.
    pub fn is_access_fact_uid(uid: &EntityUid) -> bool {
        ACCESS_FACT_TYPES
            .iter()
            .any(|t| crate::entities::is_type(uid, t))
    }

    /// The full context of a data access question at `now` with the facts for its access.
    pub fn context_at(
        &self,
        user: &EntityUid,
        dataset: &EntityUid,
        now: i64,
    ) -> Option<(Value, Vec<EntityUid>)> {
        let (mut context, uids) = self.for_access(user, dataset, now)?;
        context.insert("now".into(), datetime_value(now));
        Some((Value::Object(context), uids))
    }
}

/// Facts of one kind by the access they are about, (user, study), each with its uid.
#[derive(Debug, Clone)]
pub(crate) struct ByAccess<T>(HashMap<(EntityUid, EntityUid), Vec<(EntityUid, T)>>);

impl<T> Default for ByAccess<T> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<T> ByAccess<T> {
    /// Files `fact` under the user and study ids it names; a fact naming ids that are no uids
    /// is about no access.
    pub(crate) fn insert(&mut self, user: &str, dataset: &str, uid: EntityUid, fact: T) {
        if let (Ok(user), Ok(dataset)) = (
            uid_from_parts("Tre::User", user),
            uid_from_parts("Tre::Dataset", dataset),
        ) {
            self.0.entry((user, dataset)).or_default().push((uid, fact));
        }
    }

    pub(crate) fn get(&self, user: &EntityUid, dataset: &EntityUid) -> &[(EntityUid, T)] {
        self.0
            .get(&(user.clone(), dataset.clone()))
            .map_or(&[], Vec::as_slice)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The stored entities of one type with their attributes, by uid order.
pub(crate) fn stored_of(graph: &EntityGraph, type_name: &str) -> Vec<(EntityUid, Value)> {
    let mut list: Vec<(EntityUid, Value)> = graph
        .uids()
        .filter(|uid| crate::entities::is_type(uid, type_name))
        .filter_map(|uid| {
            let (text, _) = graph.render_entity(uid)?;
            let mut json: Value = serde_json::from_str(&text).ok()?;
            Some((uid.clone(), json["attrs"].take()))
        })
        .collect();
    list.sort_by(|a, b| a.0.cmp(&b.0));
    list
}

/// The users and studies of the access facts among `uids` in `graph`: what a fact written
/// or deleted changes the questions of.
pub(crate) fn accesses_of<'a>(
    graph: &EntityGraph,
    uids: impl IntoIterator<Item = &'a EntityUid>,
) -> Vec<EntityUid> {
    let mut out = Vec::new();
    for uid in uids {
        if !AccessFacts::is_access_fact_uid(uid) {
            continue;
        }
        let Some(json) = graph
            .render_entity(uid)
            .and_then(|(text, _)| serde_json::from_str::<Value>(&text).ok())
        else {
            continue;
        };
        out.extend(
            ["user", "dataset"]
                .iter()
                .filter_map(|a| uid_from_json(&json["attrs"][a])),
        );
    }
    out
}
