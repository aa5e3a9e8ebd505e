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

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};

use cedar_policy::EntityUid;

use crate::decide::{Decision, PolicyError};
use crate::entities::EntityGraph;

use crate::fast::{Fast, FastMap, FastSet};

/// Answers kept when nothing bounds the cache otherwise (the plan bench's shape asks
/// 478,569 questions per plan); also the most uids it numbers before it starts over.
pub const DEFAULT_CAPACITY: usize = 1_000_000;

/// What a decision is asked: its uids and its context as JSON text, hashed once when the
/// key is made. The cache finds an answer by that hash in one lookup, and checks it against
/// the key's parts: a hash shared by two keys is a miss, never another key's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionKey {
    principal: EntityUid,
    action: EntityUid,
    resource: EntityUid,
    /// The context as its JSON text, `None` when it is `{}`. Two texts of the same value are
    /// two keys: a miss, never a wrong answer.
    context: Context,
    hash: u64,
}

/// A key's context text. The empty one, which the planner asks hundreds of thousands of
/// questions with, is no shared allocation: its reference count would pass between the
/// planner's threads on every question.
type Context = Option<Arc<str>>;

const EMPTY_CONTEXT: &str = "{}";

fn context_text(context: &Context) -> &str {
    context.as_deref().unwrap_or(EMPTY_CONTEXT)
}

/// One hasher for every key of the process, so equal keys hash alike wherever made.
static KEY_HASHER: LazyLock<Fast> = LazyLock::new(Fast::default);

impl DecisionKey {
    pub fn new(
        principal: EntityUid,
        action: EntityUid,
        resource: EntityUid,
        context: Arc<str>,
    ) -> Self {
        let context = (*context != *EMPTY_CONTEXT).then_some(context);
        Self::with_context(principal, action, resource, context)
    }

    fn with_context(
        principal: EntityUid,
        action: EntityUid,
        resource: EntityUid,
        context: Context,
    ) -> Self {
        let hash = KEY_HASHER.hash_one((&principal, &action, &resource, context_text(&context)));
        Self {
            principal,
            action,
            resource,
            context,
            hash,
        }
    }

    /// A key with an empty context, as the planner asks.
    pub fn empty_context(principal: EntityUid, action: EntityUid, resource: EntityUid) -> Self {
        Self::with_context(principal, action, resource, None)
    }

    pub fn principal(&self) -> &EntityUid {
        &self.principal
    }

    pub fn action(&self) -> &EntityUid {
        &self.action
    }

    pub fn resource(&self) -> &EntityUid {
        &self.resource
    }

    pub fn context(&self) -> &str {
        context_text(&self.context)
    }

    /// The principal, action and resource, for a caller done asking.
    pub fn into_uids(self) -> (EntityUid, EntityUid, EntityUid) {
        (self.principal, self.action, self.resource)
    }

    /// The principal and resource, and the context text unless it is `{}`.
    pub fn into_parts(self) -> (EntityUid, EntityUid, Option<Arc<str>>) {
        (self.principal, self.resource, self.context)
    }
}

impl std::hash::Hash for DecisionKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// What Cedar answered, without what depends on where it is recorded. Answers are shared:
/// most of a plan's half a million questions get one of a few answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Answer {
    pub decision: Decision,
    pub reasons: Vec<String>,
    pub errors: Vec<PolicyError>,
}

/// A decision's slice as logged (each entity's JSON text), kept with its answer: the slice
/// and its texts are a function of the entities the answer depends on (the slice, and the
/// ancestors every text lists), so they stay right exactly as long as the answer does.
type SliceTexts = Arc<[Arc<str>]>;

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

/// Uids the cache has seen, each numbered: keys and seeds hold the numbers, since a uid
/// takes over a hundred bytes and a plan's half a million answers name three each. What the
/// cache knows of a seed is kept by its number too.
#[derive(Default)]
struct Names {
    numbers: FastMap<EntityUid, u32>,
    uids: Vec<EntityUid>,
    seeds: Vec<Seed>,
}

/// What the cache knows of one uid asked about (a principal, a resource or an entity a
/// context names).
#[derive(Default)]
struct Seed {
    /// The answers asked about it, as (slot, low bits of the answer's id). An answer
    /// removed for another reason stays listed until the list is compacted: checking the
    /// slot still holds that answer is cheaper than a set kept exact on every insert (a
    /// plan adds half a million). A stale pair can at worst drop an answer that shares
    /// the slot and the id's low bits: a later miss, never a wrong answer.
    answers: Vec<(u32, u32)>,
    /// How many of `answers` are still held.
    live: u32,
    /// Its dependencies (itself included); `None` until worked out.
    deps: Option<Arc<[EntityUid]>>,
}

impl Seed {
    fn add(&mut self, slot: u32, id: u64, slots: &[Option<Entry>]) {
        // Listed pairs past twice the live ones (and a few) are mostly stale: keep the
        // live ones, so the list stays within a constant of what it holds.
        if self.answers.len() >= 2 * self.live as usize + 8 {
            self.answers.retain(|&(s, low)| holds(slots, s, low));
        }
        self.answers.push((slot, id as u32));
        self.live += 1;
    }
}

/// Whether `slot` holds the answer whose id's low bits are `low`.
fn holds(slots: &[Option<Entry>], slot: u32, low: u32) -> bool {
    slots[slot as usize]
        .as_ref()
        .is_some_and(|e| e.id as u32 == low)
}

impl Names {
    fn number(&mut self, uid: &EntityUid) -> u32 {
        if let Some(&n) = self.numbers.get(uid) {
            return n;
        }
        let n = self.uids.len() as u32;
        self.numbers.insert(uid.clone(), n);
        self.uids.push(uid.clone());
        self.seeds.push(Seed::default());
        n
    }

    fn uid(&self, n: u32) -> &EntityUid {
        &self.uids[n as usize]
    }

    fn seed(&mut self, n: u32) -> &mut Seed {
        &mut self.seeds[n as usize]
    }

    fn len(&self) -> usize {
        self.uids.len()
    }

    fn clear(&mut self) {
        self.numbers.clear();
        self.uids.clear();
        self.seeds.clear();
    }
}

/// A `DecisionKey` with its uids numbered.
struct Key {
    principal: u32,
    action: u32,
    resource: u32,
    context: Context,
}

/// A remembered answer, the question it answers and where its entry is, and the slice texts
/// once it is logged.
struct Kept {
    id: u64,
    slot: u32,
    key: Key,
    answer: Arc<Answer>,
    slice: OnceLock<SliceTexts>,
}

/// What an answer was asked about, for dropping it: where its key is, and its seeds (the
/// key's principal and resource, and the entities its context names).
struct Entry {
    id: u64,
    /// The key's hash: where the answer is in the index.
    hash: u64,
    principal: u32,
    resource: u32,
    context_seeds: Box<[u32]>,
}

impl Entry {
    fn seeds(&self) -> impl Iterator<Item = u32> + '_ {
        [self.principal, self.resource]
            .into_iter()
            .chain(self.context_seeds.iter().copied())
    }
}

/// Uids numbered at most however small the capacity (see `most_names`).
const MOST_NAMES_FLOOR: usize = 4096;

/// Distinct answers at most before the unused ones are swept.
const ANSWERS_SWEPT_PAST: usize = 4096;

pub struct DecisionCache {
    capacity: usize,
    next_id: u64,
    names: Names,
    /// A key's hash → its answer: a hit is this lookup and a check of the key's parts.
    index: FastMap<u64, Kept>,
    /// The remembered answers' entries by slot; a slot is reused once its entry is gone.
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    live: usize,
    /// Slots and ids in insertion order, for eviction; entries already gone are skipped.
    order: VecDeque<(u32, u64)>,
    /// The distinct answers, each held once.
    answers: FastSet<Arc<Answer>>,
    answers_swept_past: usize,
    /// Seeds with answers whose dependencies may not be worked out yet.
    unresolved: Vec<u32>,
    /// Uid → the seeds that depend on it.
    dependents: FastMap<EntityUid, FastSet<u32>>,
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
            names: Names::default(),
            index: FastMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            order: VecDeque::new(),
            answers: FastSet::default(),
            answers_swept_past: ANSWERS_SWEPT_PAST,
            unresolved: Vec::new(),
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
            entries: self.live as u64,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            ..self.stats
        }
    }

    /// Uids numbered at most: a plan's answers name a few thousand, a daemon's callers may
    /// name any number.
    fn most_names(&self) -> usize {
        self.capacity.saturating_mul(2).max(MOST_NAMES_FLOOR)
    }

    /// The answer remembered for `key`: the one under its hash, if it was asked as `key`.
    fn kept(&self, key: &DecisionKey) -> Option<&Kept> {
        self.index
            .get(&key.hash)
            .filter(|kept| self.asked_as(kept, key))
    }

    /// Whether `kept` answers `key` (and not another key under the same hash).
    fn asked_as(&self, kept: &Kept, key: &DecisionKey) -> bool {
        let k = &kept.key;
        self.names.uid(k.resource) == &key.resource
            && self.names.uid(k.principal) == &key.principal
            && self.names.uid(k.action) == &key.action
            && k.context == key.context
    }

    /// The remembered answer to `key`, counted as a hit or a miss.
    pub fn get(&self, key: &DecisionKey) -> Option<Arc<Answer>> {
        let found = self.kept(key).map(|k| k.answer.clone());
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Counts a question answered without looking here first.
    pub fn count_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// The slice texts kept with the answer to `key`: `None` when no answer is remembered,
    /// else the answer's id and its texts if they were kept already.
    pub fn kept_slice(&self, key: &DecisionKey) -> Option<(u64, Option<SliceTexts>)> {
        self.kept(key).map(|k| (k.id, k.slice.get().cloned()))
    }

    /// Keeps `texts` with the answer to `key`, if it is still the answer `id` (one given
    /// over the graph the texts were rendered from).
    pub fn keep_slice(&self, key: &DecisionKey, id: u64, texts: SliceTexts) {
        if let Some(kept) = self.kept(key).filter(|k| k.id == id) {
            let _ = kept.slice.set(texts);
        }
    }

    /// Remembers `answer` to `key`, asked about its principal, its resource and the
    /// `context_entities` its context names; returns the answer as shared.
    pub fn insert(
        &mut self,
        key: &DecisionKey,
        context_entities: &[EntityUid],
        answer: Arc<Answer>,
    ) -> Arc<Answer> {
        // Uids asked about but never stored (a caller's typo, a probe) would otherwise grow
        // the names and what is known of them without bound.
        if self.names.len() + 3 + context_entities.len() > self.most_names() {
            self.clear();
            return answer;
        }
        if let Some(kept) = self.index.get(&key.hash) {
            if self.asked_as(kept, key) {
                return kept.answer.clone();
            }
            // Another question under the same hash gives way: one answer per hash.
            let (slot, id) = (kept.slot, kept.id);
            if self.remove_entry(slot, id) {
                self.stats.evicted += 1;
            }
        }
        let hash = key.hash;
        let key = Key {
            principal: self.names.number(&key.principal),
            action: self.names.number(&key.action),
            resource: self.names.number(&key.resource),
            context: key.context.clone(),
        };
        let mut context_seeds: Vec<u32> = Vec::new();
        for uid in context_entities {
            let n = self.names.number(uid);
            if n != key.principal && n != key.resource && !context_seeds.contains(&n) {
                context_seeds.push(n);
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let entry = Entry {
            id,
            hash,
            principal: key.principal,
            resource: key.resource,
            context_seeds: context_seeds.into_boxed_slice(),
        };
        let slot = self.slot_for(entry);
        let answer = self.shared(answer);
        self.index.insert(
            hash,
            Kept {
                id,
                slot,
                key,
                answer: answer.clone(),
                slice: OnceLock::new(),
            },
        );
        self.order.push_back((slot, id));
        self.evict_past_capacity();
        answer
    }

    /// Places `entry` in a slot and notes it under its seeds.
    fn slot_for(&mut self, entry: Entry) -> u32 {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        for n in entry.seeds() {
            let seed = &mut self.names.seeds[n as usize];
            if seed.deps.is_none() && seed.live == 0 {
                self.unresolved.push(n);
            }
            seed.add(slot, entry.id, &self.slots);
        }
        self.slots[slot as usize] = Some(entry);
        self.live += 1;
        slot
    }

    /// The one shared copy of `answer`.
    fn shared(&mut self, answer: Arc<Answer>) -> Arc<Answer> {
        if let Some(held) = self.answers.get(&answer) {
            return held.clone();
        }
        if self.answers.len() >= self.answers_swept_past {
            self.answers.retain(|a| Arc::strong_count(a) > 1);
            self.answers_swept_past = (2 * self.answers.len()).max(ANSWERS_SWEPT_PAST);
        }
        self.answers.insert(answer.clone());
        answer
    }

    fn evict_past_capacity(&mut self) {
        while self.live > self.capacity {
            match self.order.pop_front() {
                Some((slot, id)) => {
                    if self.remove_entry(slot, id) {
                        self.stats.evicted += 1;
                    }
                }
                None => break,
            }
        }
        // Invalidation leaves slots behind in `order`; keep it within twice the live count.
        if self.order.len() > 2 * self.live + 1024 {
            let slots = &self.slots;
            self.order
                .retain(|&(slot, id)| slots[slot as usize].as_ref().is_some_and(|e| e.id == id));
        }
    }

    /// Works out what every answer depends on, over `graph`: the graph they were given over.
    fn resolve(&mut self, graph: &EntityGraph, literals: &[EntityUid]) {
        if self.global.is_none() && self.live > 0 {
            let mut global = FastSet::default();
            for l in literals {
                global.extend(graph.dependencies(l));
            }
            self.global = Some(global);
        }
        for seed in std::mem::take(&mut self.unresolved) {
            self.remember_dependencies(seed, graph);
        }
    }

    fn remember_dependencies(&mut self, n: u32, graph: &EntityGraph) {
        if self.names.seed(n).deps.is_some() {
            return;
        }
        let deps: Arc<[EntityUid]> = graph.dependencies(self.names.uid(n)).into();
        for d in deps.iter() {
            self.dependents.entry(d.clone()).or_default().insert(n);
        }
        self.names.seed(n).deps = Some(deps);
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
                self.forget_seed(seed);
            }
        }
    }

    fn forget_seed(&mut self, n: u32) {
        if let Some(deps) = self.names.seed(n).deps.take() {
            for d in deps.iter() {
                if let Some(set) = self.dependents.get_mut(d) {
                    set.remove(&n);
                    if set.is_empty() {
                        self.dependents.remove(d);
                    }
                }
            }
        }
        for (slot, low) in std::mem::take(&mut self.names.seed(n).answers) {
            if holds(&self.slots, slot, low) && self.remove_slot(slot) {
                self.stats.invalidated += 1;
            }
        }
    }

    /// Removes the answer `id` if `slot` still holds it.
    fn remove_entry(&mut self, slot: u32, id: u64) -> bool {
        let holds = self.slots[slot as usize]
            .as_ref()
            .is_some_and(|e| e.id == id);
        holds && self.remove_slot(slot)
    }

    /// Removes one answer and its place under its seeds; false if the slot was empty.
    fn remove_slot(&mut self, slot: u32) -> bool {
        let Some(entry) = self.slots[slot as usize].take() else {
            return false;
        };
        self.free.push(slot);
        self.live -= 1;
        // The index holds this entry's answer unless a question under the same hash took
        // its place.
        if let std::collections::hash_map::Entry::Occupied(kept) = self.index.entry(entry.hash) {
            if kept.get().id == entry.id {
                kept.remove();
            }
        }
        let principal = self.names.uid(entry.principal).clone();
        self.touch(&principal);
        for n in entry.seeds() {
            let seed = self.names.seed(n);
            seed.live = seed.live.saturating_sub(1);
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
        self.index
            .values()
            .map(|kept| {
                let k = &kept.key;
                DecisionKey::with_context(
                    self.names.uid(k.principal).clone(),
                    self.names.uid(k.action).clone(),
                    self.names.uid(k.resource).clone(),
                    k.context.clone(),
                )
            })
            .collect()
    }

    /// Forgets everything (the counts stay). The tables keep their room: a policy reload
    /// clears the cache and the next plan asks as many questions again, and fresh memory
    /// costs more than the questions' own answers do.
    pub fn clear(&mut self) {
        // `next_id` goes on from where it was: an id from before the clear names no new
        // answer (see `keep_slice`).
        self.names.clear();
        self.index.clear();
        self.slots.clear();
        self.free.clear();
        self.live = 0;
        self.order.clear();
        self.answers.clear();
        self.answers_swept_past = ANSWERS_SWEPT_PAST;
        self.unresolved.clear();
        self.dependents.clear();
        self.global = None;
        self.touched = Touched::everything();
        self.stats.cleared += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(principal: &str, resource: &str) -> DecisionKey {
        let uid = |t: &str, id: &str| crate::entities::uid_from_parts(t, id).expect("uid");
        DecisionKey::empty_context(
            uid("Tre::User", principal),
            uid("Tre::Action", "read"),
            uid("Tre::Dataset", resource),
        )
    }

    fn allow(reason: &str) -> Arc<Answer> {
        Arc::new(Answer {
            decision: Decision::Allow,
            reasons: vec![reason.to_string()],
            errors: Vec::new(),
        })
    }

    #[test]
    fn past_its_capacity_the_oldest_answers_go_first() {
        let mut cache = DecisionCache::new(2);
        for d in ["d1", "d2", "d3"] {
            cache.insert(&key("u", d), &[], allow("p"));
        }
        assert!(cache.get(&key("u", "d1")).is_none(), "the oldest went");
        assert!(cache.get(&key("u", "d2")).is_some());
        assert!(cache.get(&key("u", "d3")).is_some());
        assert_eq!(cache.stats().evicted, 1);
        assert_eq!(cache.stats().entries, 2);
    }

    #[test]
    fn an_evicted_answers_slot_serves_the_next_one_and_not_the_old_key() {
        let mut cache = DecisionCache::new(1);
        cache.insert(&key("u", "d1"), &[], allow("first"));
        cache.insert(&key("u", "d2"), &[], allow("second"));
        cache.insert(&key("u", "d3"), &[], allow("third"));
        assert!(cache.get(&key("u", "d1")).is_none());
        assert!(cache.get(&key("u", "d2")).is_none());
        assert_eq!(
            cache.get(&key("u", "d3")).map(|a| a.reasons.clone()),
            Some(vec!["third".to_string()])
        );
        assert_eq!(cache.slots.len(), 2, "freed slots are reused");
    }

    #[test]
    fn two_questions_under_one_hash_never_get_each_others_answer() {
        let mut cache = DecisionCache::new(10);
        let collide = |k: DecisionKey| DecisionKey { hash: 7, ..k };
        let (first, second) = (collide(key("u", "d1")), collide(key("v", "d2")));
        cache.insert(&first, &[], allow("first"));
        assert!(cache.get(&second).is_none(), "a shared hash is a miss");
        cache.insert(&second, &[], allow("second"));
        assert!(cache.get(&first).is_none(), "the older question gave way");
        assert_eq!(
            cache.get(&second).map(|a| a.reasons.clone()),
            Some(vec!["second".to_string()])
        );
        assert_eq!(cache.stats().entries, 1);
    }

    #[test]
    fn equal_answers_to_different_questions_are_held_once() {
        let mut cache = DecisionCache::new(10);
        let a = cache.insert(&key("u", "d1"), &[], allow("p"));
        let b = cache.insert(&key("v", "d2"), &[], allow("p"));
        let c = cache.insert(&key("v", "d3"), &[], allow("q"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[test]
    fn slice_texts_are_kept_only_for_the_answer_they_were_rendered_for() {
        let mut cache = DecisionCache::new(10);
        let k = key("u", "d1");
        cache.insert(&k, &[], allow("p"));
        let (old_id, texts) = cache.kept_slice(&k).expect("remembered");
        assert!(texts.is_none());
        // The answer is dropped and asked again before the texts come back.
        cache.clear();
        cache.insert(&k, &[], allow("p"));
        let texts: SliceTexts = vec![Arc::from("{}")].into();
        cache.keep_slice(&k, old_id, texts.clone());
        assert_eq!(cache.kept_slice(&k).map(|(_, t)| t.is_some()), Some(false));
        let (id, _) = cache.kept_slice(&k).expect("remembered");
        cache.keep_slice(&k, id, texts);
        assert_eq!(cache.kept_slice(&k).map(|(_, t)| t.is_some()), Some(true));
    }

    #[test]
    fn a_seeds_list_of_answers_stays_within_a_constant_of_what_it_holds() {
        let mut cache = DecisionCache::new(4);
        for i in 0..1000 {
            cache.insert(&key("u", &format!("d{i}")), &[], allow("p"));
        }
        let u = cache.names.number(key("u", "d").principal());
        let seed = cache.names.seed(u);
        assert_eq!(seed.live, 4);
        assert!(
            seed.answers.len() <= 2 * 4 + 8 + 1,
            "{}",
            seed.answers.len()
        );
    }

    #[test]
    fn forgetting_a_seed_spares_the_answer_that_took_over_its_evicted_answers_slot() {
        let mut cache = DecisionCache::new(1);
        cache.insert(&key("u", "d1"), &[], allow("p"));
        cache.insert(&key("v", "d2"), &[], allow("p"));
        cache.insert(&key("w", "d3"), &[], allow("p"));
        assert_eq!(cache.slots.len(), 2, "`w` took `u`'s freed slot");
        let u = cache.names.number(key("u", "d").principal());
        cache.forget_seed(u);
        assert!(cache.get(&key("w", "d3")).is_some());
        assert_eq!(cache.stats().invalidated, 0);
    }

    #[test]
    fn uids_past_the_bound_start_the_cache_over() {
        let mut cache = DecisionCache::new(1);
        for i in 0..(MOST_NAMES_FLOOR + 10) {
            cache.insert(&key(&format!("u{i}"), "d"), &[], allow("p"));
        }
        assert!(cache.names.len() <= MOST_NAMES_FLOOR);
        assert!(cache.stats().cleared >= 1);
    }
}
