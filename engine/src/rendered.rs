//! Each entity's slice JSON, rendered once for as long as what it shows stays the same.
//!
//! A decision record carries the entities its decision read, each with its attributes and
//! its whole ancestor set (`EntityGraph::render_entity`), so `why --replay` can decide it
//! again from the record alone. Rendering an entity through Cedar's JSON is most of the cost
//! of deciding and logging, and its text changes only when the entity or one of its
//! ancestors is written or deleted: the text is kept until then. What a text rests on (the
//! entity and its ancestors when it was rendered) is noted with it, and a change to any of
//! those uids drops it, the same rule the decision cache follows for ancestors.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cedar_policy::EntityUid;

/// Texts kept at most, in bytes; past it every text is dropped and rendering starts over
/// (a bound on memory, not an eviction policy).
const MOST_BYTES: usize = 128 << 20;

/// Looked up for every entity of every logged slice: a fast hash, as in the decision cache.
use crate::fast::Fast;

#[derive(Default)]
pub(crate) struct RenderedEntities {
    texts: HashMap<EntityUid, Arc<str>, Fast>,
    /// For each uid, the texts that show it (an entity's own, its descendants').
    shown_by: HashMap<EntityUid, HashSet<EntityUid, Fast>, Fast>,
    bytes: usize,
}

impl RenderedEntities {
    /// The kept text of each of `uids`, `None` where there is none yet.
    pub(crate) fn known(&self, uids: &[EntityUid]) -> Vec<Option<Arc<str>>> {
        uids.iter()
            .map(|uid| self.texts.get(uid).cloned())
            .collect()
    }

    /// Keeps texts rendered over the graph as it is now: each with its uid and what it shows.
    pub(crate) fn keep(&mut self, rendered: Vec<(EntityUid, Arc<str>, Vec<EntityUid>)>) {
        for (uid, text, shows) in rendered {
            if self.bytes + text.len() > MOST_BYTES {
                tracing::debug!(
                    bytes = self.bytes,
                    "rendered entity texts over their cap: dropping them all"
                );
                self.clear();
            }
            self.bytes += text.len();
            if let Some(old) = self.texts.insert(uid.clone(), text) {
                self.bytes -= old.len();
            }
            for shown in shows {
                self.shown_by.entry(shown).or_default().insert(uid.clone());
            }
        }
    }

    /// Drops every text that shows one of `changed` (written or deleted uids).
    pub(crate) fn invalidate<'a>(&mut self, changed: impl IntoIterator<Item = &'a EntityUid>) {
        for uid in changed {
            for stale in self.shown_by.remove(uid).into_iter().flatten() {
                if let Some(text) = self.texts.remove(&stale) {
                    self.bytes -= text.len();
                }
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.texts.clear();
        self.shown_by.clear();
        self.bytes = 0;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.texts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entities::{parse_uid, EntityGraph};

    fn body(id: &str, parents: &[&str]) -> String {
        let parents: Vec<_> = parents
            .iter()
            .map(|p| serde_json::json!({"type": "G", "id": p}))
            .collect();
        serde_json::json!({"uid": {"type": "G", "id": id}, "attrs": {"n": id}, "parents": parents})
            .to_string()
    }

    fn rendered(kept: &mut RenderedEntities, graph: &EntityGraph, uid: &EntityUid) -> String {
        if let Some(Some(text)) = kept.known(std::slice::from_ref(uid)).pop() {
            return text.to_string();
        }
        let (text, shows) = graph.render_entity(uid).expect("rendered");
        kept.keep(vec![(uid.clone(), Arc::from(text.as_str()), shows)]);
        text
    }

    #[test]
    fn a_text_is_dropped_when_an_ancestor_two_levels_up_gains_a_parent() {
        let graph = EntityGraph::from_bodies(
            [body("a", &["b"]), body("b", &["c"]), body("c", &[])]
                .iter()
                .map(String::as_str),
            None,
        )
        .expect("graph");
        let a = parse_uid(r#"G::"a""#).expect("uid");
        let mut kept = RenderedEntities::default();
        let before = rendered(&mut kept, &graph, &a);
        assert_eq!(kept.len(), 1);
        // `b` (not `a`) is written: `a`'s ancestors now include `d`.
        let (graph, written) = graph
            .apply([body("b", &["c", "d"]).as_str()], &[])
            .expect("apply");
        kept.invalidate(&written);
        assert_eq!(kept.len(), 0);
        let after = rendered(&mut kept, &graph, &a);
        assert_ne!(before, after);
        assert_eq!(after, graph.render_entity(&a).expect("rendered").0);
        // A write that shows in no kept text keeps them all.
        let (_, written) = graph.apply([body("z", &[]).as_str()], &[]).expect("apply");
        kept.invalidate(&written);
        assert_eq!(kept.len(), 1);
    }
}
