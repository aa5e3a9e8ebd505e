//! The parsed entities decisions have needed so far, held as one Cedar entity store that
//! decisions read directly.
//!
//! Every entity here is exactly the graph's current one, with its whole (closed) ancestor
//! set as its parents, so the store is closed as it stands. A decision whose slice is all
//! here gets the answer it would get over the whole store: Cedar reads only the entities a
//! request reaches through attributes (the slice), and the others here are unreachable from
//! it. A decision whose slice is not all here adds what is missing first. Past a bound the
//! set starts over empty, so memory stays bounded while the working set of a TRE (the users
//! and datasets in use) stays parsed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cedar_policy_core::ast;
use cedar_policy_core::entities::{Entities as CoreEntities, NoEntitiesSchema, TCComputation};
use cedar_policy_core::extensions::Extensions;
use ref_cast::RefCast;

use crate::error::{EngineError, Result};

use crate::fast::Fast;

/// Entities held at most (a parsed entity costs 1–3 KiB): past it the set starts over.
pub(crate) const MOST_HELD: usize = 131_072;

#[derive(Default, Clone)]
pub(crate) struct WorkingSet {
    entities: CoreEntities,
    /// The same entities by graph slot.
    held: HashMap<u32, Arc<ast::Entity>, Fast>,
    /// Seeds whose whole slice is held: a decision over only these needs no slice walked.
    /// Entities are only ever added to a set, so a seed stays covered for as long as the set
    /// lives (a new graph version, or a set that starts over, starts with none).
    covered: HashSet<u32, Fast>,
}

impl WorkingSet {
    pub(crate) fn holds(&self, slot: u32) -> bool {
        self.held.contains_key(&slot)
    }

    pub(crate) fn get(&self, slot: u32) -> Option<&Arc<ast::Entity>> {
        self.held.get(&slot)
    }

    pub(crate) fn covers(&self, seed: u32) -> bool {
        self.covered.contains(&seed)
    }

    /// Notes `seeds` as covered, if every one of `slots` (the stored slice of the seeds) is
    /// held.
    pub(crate) fn cover(&mut self, seeds: &[u32], slots: &[u32]) {
        if slots.iter().all(|&s| self.holds(s)) {
            self.covered.extend(seeds.iter().copied());
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    /// The set as the entities Cedar's authorizer reads.
    pub(crate) fn entities(&self) -> &cedar_policy::Entities {
        cedar_policy::Entities::ref_cast(&self.entities)
    }

    /// Adds entities not held yet. The caller has checked they are missing.
    pub(crate) fn add(&mut self, fresh: Vec<(u32, Arc<ast::Entity>)>) -> Result<()> {
        let arcs: Vec<Arc<ast::Entity>> = fresh.iter().map(|(_, e)| e.clone()).collect();
        let entities = std::mem::take(&mut self.entities)
            .add_entities(
                arcs,
                None::<&NoEntitiesSchema>,
                // Each entity carries its closed ancestor set: there is nothing to compute.
                TCComputation::AssumeAlreadyComputed,
                Extensions::all_available(),
            )
            .map_err(|e| EngineError::Request(format!("cannot hold the decision's entities: {e}")));
        match entities {
            Ok(entities) => {
                self.entities = entities;
                self.held.extend(fresh);
                Ok(())
            }
            Err(e) => {
                // `take` left the store empty: forget what it held and covered too, so they
                // agree.
                self.clear();
                Err(e)
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }

    /// The set without the entities of `stale` slots (written, deleted, or with changed
    /// ancestors), for the next version of the graph.
    pub(crate) fn without(&self, stale: &[u32]) -> Self {
        let mut kept = self.held.clone();
        for slot in stale {
            kept.remove(slot);
        }
        let mut next = Self::default();
        if next.add(kept.into_iter().collect()).is_err() {
            // Entities that were held together cannot clash; start empty if they somehow do.
            next.clear();
        }
        next
    }
}
