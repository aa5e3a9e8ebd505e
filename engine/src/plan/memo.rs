//! Data access remembered role by role, so a plan in which little changed re-plans only the
//! roles whose inputs changed; the rest of their part of the plan is reused as it was.
//!
//! A role's part (its Lake Formation grants and revokes, its S3 policy, its decision count
//! and warnings) is a pure function of: its owners; the entities it read (the owners, their
//! ancestors, its candidate datasets) and the dataset index entries that could make a new
//! candidate (a dataset naming one of those groups or owners, or a resource it holds, or
//! any Open Data); the answers Cedar gave about its owners; what AWS holds for it; the
//! quarantine list and the policy set. The decision cache notes every uid written and the
//! principal of every answer it drops (`cache::Touched`); a remembered part is dropped when
//! a noted uid touches what it read, and used only while its owners and actual state are
//! exactly what they were. A swapped policy set, a cleared cache or a changed quarantine
//! list drops every part.
//!
//! What a part read is kept as 64-bit hashes: a collision can only re-plan a role that did
//! not need it, never keep a part whose inputs changed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;

use cedar_policy::EntityUid;
use serde_json::Value;

use crate::cache::Touched;

use super::actual::{ActualState, Held};
use super::index::GraphIndex;
use super::{PlanItem, DATA_ACCESS_POLICY};

use crate::fast::Fast;

/// Parts with more items than this are not kept: a role with that much to change is about
/// to be changed, and its next plan sees a different actual state anyway.
const MOST_ITEMS_KEPT: usize = 32;

/// The remembered parts, and what the last plan's graph index and actual state said of
/// every role at once.
#[derive(Default)]
pub(crate) struct PlanMemo {
    policy_version: String,
    open: BTreeSet<EntityUid>,
    quarantined: BTreeMap<String, String>,
    roles: HashMap<String, RoleMemo>,
    hasher: foldhash::fast::FixedState,
    stats: PlanReuse,
}

/// Roles planned since the engine started: how many kept their remembered part and how
/// many were planned afresh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanReuse {
    pub reused: u64,
    pub planned: u64,
}

/// One role's part of a plan, and what it rests on.
pub(super) struct RoleMemo {
    owners: BTreeSet<EntityUid>,
    read: HashSet<u64, Fast>,
    actual: RoleActual,
    part: RolePart,
}

/// What planning one role produced.
#[derive(Clone, Default)]
pub(super) struct RolePart {
    pub(super) items: Vec<PlanItem>,
    pub(super) decisions: u64,
    pub(super) warnings: Vec<String>,
}

/// What AWS holds for a role: its grants (with whether tregov made each) and its
/// data-access policy.
#[derive(PartialEq)]
struct RoleActual {
    held: Vec<(String, Held, bool)>,
    policy: Option<Value>,
}

impl RoleActual {
    fn of(actual: &ActualState, arn: &str) -> Self {
        Self {
            held: actual
                .held_by_with(arn)
                .map(|((_, r), held)| (r.clone(), held.clone(), actual.made_by_tregov(arn, r)))
                .collect(),
            policy: data_access_policy(actual, arn).cloned(),
        }
    }

    /// Whether `actual` holds exactly this for `arn`, compared without copying it.
    fn matches(&self, actual: &ActualState, arn: &str) -> bool {
        let mut now = actual.held_by_with(arn);
        let same_grants = self.held.iter().all(|(r, held, made)| {
            now.next().is_some_and(|((_, r2), held2)| {
                r == r2 && held == held2 && *made == actual.made_by_tregov(arn, r)
            })
        });
        same_grants
            && now.next().is_none()
            && data_access_policy(actual, arn) == self.policy.as_ref()
    }
}

fn data_access_policy<'a>(actual: &'a ActualState, arn: &str) -> Option<&'a Value> {
    actual
        .roles
        .get(arn)
        .and_then(|r| r["inlinePolicies"].get(DATA_ACCESS_POLICY))
}

/// What one role's plan read, noted while it is planned.
pub(super) struct Reads<'m> {
    hasher: &'m foldhash::fast::FixedState,
    read: HashSet<u64, Fast>,
}

impl Reads<'_> {
    pub(super) fn uid(&mut self, uid: &EntityUid) {
        self.read.insert(self.hasher.hash_one(uid));
    }

    fn resource(&mut self, resource_key: &str) {
        self.read
            .insert(self.hasher.hash_one(("resource", resource_key)));
    }
}

impl PlanMemo {
    /// Drops every part that what changed since the last plan could have changed, given
    /// the graph index and actual state this plan is made over.
    pub(super) fn catch_up(
        &mut self,
        touched: Touched,
        policy_version: &str,
        index: &GraphIndex,
        actual: &ActualState,
    ) {
        let open_changed = || {
            touched
                .uids
                .iter()
                .any(|u| self.open.contains(u) || index.open.binary_search(u).is_ok())
        };
        if touched.everything
            || policy_version != self.policy_version
            || actual.quarantined != self.quarantined
            || open_changed()
        {
            self.roles.clear();
            self.policy_version = policy_version.to_string();
            self.quarantined = actual.quarantined.clone();
        } else if !touched.uids.is_empty() {
            let mut hits: Vec<u64> = Vec::new();
            for uid in &touched.uids {
                hits.push(self.hasher.hash_one(uid));
                // A dataset can become a candidate of roles that never read it: those whose
                // owners are in its groups or own it, or that hold its resource.
                if let Some(d) = index.datasets.get(uid) {
                    hits.extend(
                        d.groups
                            .iter()
                            .chain(&d.owner)
                            .map(|u| self.hasher.hash_one(u)),
                    );
                    hits.push(self.hasher.hash_one(("resource", d.resource_key.as_str())));
                }
            }
            self.roles
                .retain(|_, m| !hits.iter().any(|h| m.read.contains(h)));
        }
        self.open = index.open.iter().cloned().collect();
    }

    /// The remembered part of `arn`, if its owners and actual state are as they were.
    pub(super) fn reusable(
        &self,
        arn: &str,
        owners: &BTreeSet<EntityUid>,
        actual: &ActualState,
    ) -> Option<&RolePart> {
        let m = self.roles.get(arn)?;
        (m.owners == *owners && m.actual.matches(actual, arn)).then_some(&m.part)
    }

    pub(super) fn reads(&self) -> Reads<'_> {
        Reads {
            hasher: &self.hasher,
            read: HashSet::default(),
        }
    }

    /// A role's part, to remember once planned; `None` when it is not worth keeping.
    pub(super) fn remember(
        reads: Reads,
        arn: &str,
        owners: &BTreeSet<EntityUid>,
        actual: &ActualState,
        part: &RolePart,
    ) -> Option<RoleMemo> {
        if part.items.len() > MOST_ITEMS_KEPT {
            return None;
        }
        let mut reads = reads;
        let actual = RoleActual::of(actual, arn);
        for (resource_key, _, _) in &actual.held {
            reads.resource(resource_key);
        }
        Some(RoleMemo {
            owners: owners.clone(),
            read: reads.read,
            actual,
            part: part.clone(),
        })
    }

    pub(super) fn count(&mut self, reused: u64, planned: u64) {
        self.stats.reused += reused;
        self.stats.planned += planned;
    }

    pub(crate) fn stats(&self) -> PlanReuse {
        self.stats
    }

    pub(super) fn keep(&mut self, arn: String, memo: RoleMemo) {
        self.roles.insert(arn, memo);
    }

    /// Forgets the roles no longer governed (after a plan of every role).
    pub(super) fn retain_roles(&mut self, governed: &BTreeMap<String, BTreeSet<EntityUid>>) {
        self.roles.retain(|arn, _| governed.contains_key(arn));
    }
}
