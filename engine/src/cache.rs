//! The exact decision cache. A Cedar decision is a pure function of the policy set, the
//! request and the entities the request can reach, so an answer is reused for exactly as long
//! as none of those change: the policy set is swapped only with the cache cleared, and every
//! answer records the entities it depends on, through the seeds it was asked about.
//!
//! A decision's dependencies are the union, over its seeds (principal, resource and the
//! entities its context names), of each seed's slice (what its attributes reach) and the
//! ancestors of every entity in it: Cedar reads an entity's attributes, tags and closed
//! ancestor set, and a closed ancestor set changes only when the entity or one of its
//! ancestors is written. Uids in a slice that do not exist are dependencies too: creating one
//! can change the answer. The policies' literal entities are every decision's seeds, so a
//! change to what they reach clears everything. Action entities come from the schema, which
//! changes only with the policy set.
//!
//! The store's change feed names the uids written or deleted; `invalidate` drops exactly the
//! seeds whose dependencies include one, and the answers asked about those seeds.
//!
//! Working out a seed's dependencies waits for the next change: `insert` only notes the
//! seed, and `invalidate` resolves every noted seed over the graph the answers were given
//! over (the engine calls it before that graph is replaced). A miss then costs Cedar and a
//! few map inserts, and a seed asked about a thousand times is resolved once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use cedar_policy::EntityUid;

use crate::decide::{Decision, PolicyError};
use crate::entities::EntityGraph;

type Fast = foldhash::fast::RandomState;
type FastMap<K, V> = HashMap<K, V, Fast>;
type FastSet<K> = HashSet<K, Fast>;

/// Answers kept when nothing bounds the cache otherwise: about 150 MiB at the plan bench's
/// shape, which asks 478,569 questions per plan.
pub const DEFAULT_CAPACITY: usize = 1_000_000;

/// What a decision is asked: its uids and its context as JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DecisionKey {
    pub principal: EntityUid,
    pub action: EntityUid,
    pub resource: EntityUid,
    /// The context as its JSON text; `{}` when empty. Two texts of the same value are two
    /// keys: a miss, never a wrong answer.
    pub context: Arc<str>,
}

/// The planner asks hundreds of thousands of questions with an empty context: one text.
static EMPTY_CONTEXT: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("{}"));

impl DecisionKey {
    /// A key with an empty context, as the planner asks.
    pub fn empty_context(principal: EntityUid, action: EntityUid, resource: EntityUid) -> Self {
        Self {
            principal,
            action,
            resource,
            context: EMPTY_CONTEXT.clone(),
        }
    }
}

/// What Cedar answered, without what depends on where it is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub decision: Decision,
    pub reasons: Vec<String>,
    pub errors: Vec<PolicyError>,
    /// The texts of the entities the decision could read, rendered the first time it is
    /// logged.
    pub(crate) slice: KeptSlice,
}

/// A decision's slice as logged (each entity's JSON text), kept with its answer: the slice
/// and its texts are a function of the entities the answer depends on (the slice, and the
/// ancestors every text lists), so they stay right exactly as long as the answer does. Not
/// part of what Cedar answered, so answers compare equal whether or not it is known yet.
#[derive(Debug, Default)]
pub(crate) struct KeptSlice(std::sync::OnceLock<Arc<[Arc<str>]>>);

impl KeptSlice {
    pub(crate) fn get_or_init(&self, texts: impl FnOnce() -> Vec<Arc<str>>) -> Arc<[Arc<str>]> {
        self.0.get_or_init(|| texts().into()).clone()
    }
}

impl Clone for KeptSlice {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for KeptSlice {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for KeptSlice {}

/// What changed since the planner last looked (see `plan::memo`): every uid written or
/// deleted and the principal of every answer dropped, or, once the cache was cleared or
/// replaced, everything.
#[derive(Debug, Default)]
pub struct Touched {
    pub everything: bool,
    pub uids: FastSet<EntityUid>,
}

impl Touched {
    fn everything() -> Self {
        Self {
            everything: true,
            uids: FastSet::default(),
        }
    }
}

/// Counts since the engine started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Answers dropped because an entity they depend on changed.
    pub invalidated: u64,
    /// Answers dropped to stay within capacity.
    pub evicted: u64,
    /// Whole-cache clears (a policy set swapped, a literal entity's dependency changed).
    pub cleared: u64,
    pub entries: u64,
}

struct Entry {
    key: DecisionKey,
    seeds: Box<[EntityUid]>,
}

pub struct DecisionCache {
    capacity: usize,
    next_id: u64,
    /// Key → its answer: a hit is this one lookup.
    index: FastMap<DecisionKey, Arc<Answer>>,
    entries: FastMap<u64, Entry>,
    /// Ids in insertion order, for eviction; ids already gone are skipped.
    order: VecDeque<u64>,
    /// Seed → the answers asked about it.
    by_seed: FastMap<EntityUid, FastSet<u64>>,
    /// Seed → its dependencies (itself included).
    deps: FastMap<EntityUid, Arc<[EntityUid]>>,
    /// Seeds with answers whose dependencies are not worked out yet.
    unresolved: FastSet<EntityUid>,
    /// Uid → the seeds that depend on it.
    dependents: FastMap<EntityUid, FastSet<EntityUid>>,
    /// What the policies' literal entities depend on; `None` until a change needs it.
    global: Option<FastSet<EntityUid>>,
    stats: CacheStats,
    touched: Touched,
    /// Hits and misses are counted under a shared lock, by concurrent readers.
    hits: AtomicU64,
    misses: AtomicU64,
}

impl DecisionCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            next_id: 0,
            index: FastMap::default(),
            entries: FastMap::default(),
            order: VecDeque::new(),
            by_seed: FastMap::default(),
            deps: FastMap::default(),
            unresolved: FastSet::default(),
            dependents: FastMap::default(),
            global: None,
            stats: CacheStats::default(),
            // A new cache knows nothing of what a remembered plan rests on.
            touched: Touched::everything(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.entries.len() as u64,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            ..self.stats
        }
    }

    /// The remembered answer to `key`, not counted (for what is done after a decision).
    pub fn peek(&self, key: &DecisionKey) -> Option<Arc<Answer>> {
        self.index.get(key).cloned()
    }

    /// The remembered answer to `key`, counted as a hit or a miss.
    pub fn get(&self, key: &DecisionKey) -> Option<Arc<Answer>> {
        let found = self.index.get(key).cloned();
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Remembers `answer` to `key`, asked about `seeds` (the principal, the resource and the
    /// context's entities).
    pub fn insert(&mut self, key: DecisionKey, seeds: Vec<EntityUid>, answer: Arc<Answer>) {
        if self.index.contains_key(&key) {
            return;
        }
        // Seeds asked about but never stored (a caller's typo, a probe) would otherwise grow
        // the dependency memo without bound.
        if self.deps.len() + self.unresolved.len() >= self.capacity {
            self.clear();
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        for seed in &seeds {
            if !self.deps.contains_key(seed) {
                self.unresolved.insert(seed.clone());
            }
            self.by_seed.entry(seed.clone()).or_default().insert(id);
        }
        self.index.insert(key.clone(), answer);
        self.entries.insert(
            id,
            Entry {
                key,
                seeds: seeds.into_boxed_slice(),
            },
        );
        self.order.push_back(id);
        while self.entries.len() > self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    if self.remove_entry(old) {
                        self.stats.evicted += 1;
                    }
                }
                None => break,
            }
        }
        // Invalidation leaves ids behind in `order`; keep it within twice the live count.
        if self.order.len() > 2 * self.entries.len() + 1024 {
            let live = &self.entries;
            self.order.retain(|id| live.contains_key(id));
        }
    }

    /// Works out what every answer depends on, over `graph`: the graph they were given over.
    fn resolve(&mut self, graph: &EntityGraph, literals: &[EntityUid]) {
        if self.global.is_none() && !self.entries.is_empty() {
            let mut global = FastSet::default();
            for l in literals {
                global.extend(graph.dependencies(l));
            }
            self.global = Some(global);
        }
        for seed in std::mem::take(&mut self.unresolved) {
            self.remember_dependencies(&seed, graph);
        }
    }

    fn remember_dependencies(&mut self, seed: &EntityUid, graph: &EntityGraph) {
        if self.deps.contains_key(seed) {
            return;
        }
        let deps: Arc<[EntityUid]> = graph.dependencies(seed).into();
        for d in deps.iter() {
            self.dependents
                .entry(d.clone())
                .or_default()
                .insert(seed.clone());
        }
        self.deps.insert(seed.clone(), deps);
    }

    /// Drops every answer that depends on one of `changed` (uids written or deleted) and
    /// was given over `graph` with the policies' `literals`; call it before `graph` is
    /// replaced by the one with the changes.
    pub fn invalidate<'a>(
        &mut self,
        changed: impl IntoIterator<Item = &'a EntityUid>,
        graph: &EntityGraph,
        literals: &[EntityUid],
    ) {
        self.resolve(graph, literals);
        for uid in changed {
            self.touch(uid);
            if self.global.as_ref().is_some_and(|g| g.contains(uid)) {
                self.clear();
                return;
            }
            let Some(seeds) = self.dependents.remove(uid) else {
                continue;
            };
            for seed in seeds {
                self.forget_seed(&seed);
            }
        }
    }

    fn forget_seed(&mut self, seed: &EntityUid) {
        if let Some(deps) = self.deps.remove(seed) {
            for d in deps.iter() {
                if let Some(set) = self.dependents.get_mut(d) {
                    set.remove(seed);
                    if set.is_empty() {
                        self.dependents.remove(d);
                    }
                }
            }
        }
        for id in self.by_seed.remove(seed).unwrap_or_default() {
            if self.remove_entry(id) {
                self.stats.invalidated += 1;
            }
        }
    }

    /// Removes one answer and its place under its seeds; false if it was already gone.
    fn remove_entry(&mut self, id: u64) -> bool {
        let Some(entry) = self.entries.remove(&id) else {
            return false;
        };
        self.index.remove(&entry.key);
        self.touch(&entry.key.principal);
        for seed in entry.seeds.iter() {
            if let Some(set) = self.by_seed.get_mut(seed) {
                set.remove(&id);
                if set.is_empty() {
                    self.by_seed.remove(seed);
                }
            }
        }
        true
    }

    /// Notes `uid` for the planner; past the capacity, everything is noted instead (a
    /// daemon nobody plans with must not grow this without bound).
    fn touch(&mut self, uid: &EntityUid) {
        if self.touched.everything {
            return;
        }
        if self.touched.uids.len() >= self.capacity {
            self.touched = Touched::everything();
            return;
        }
        self.touched.uids.insert(uid.clone());
    }

    /// What changed since the last call (or since the cache was made).
    pub fn take_touched(&mut self) -> Touched {
        std::mem::take(&mut self.touched)
    }

    /// Every question with a remembered answer.
    pub fn keys(&self) -> Vec<DecisionKey> {
        self.index.keys().cloned().collect()
    }

    /// Forgets everything (the counts stay).
    pub fn clear(&mut self) {
        let stats = self.stats();
        *self = Self::new(self.capacity);
        self.stats = stats;
        self.stats.cleared += 1;
        self.hits = AtomicU64::new(stats.hits);
        self.misses = AtomicU64::new(stats.misses);
    }
}
