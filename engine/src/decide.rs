//! Decisions: Cedar's own authorizer over the ready entity graph, with the determining and
//! erroring policies named, and every decision over the store written to the decision log.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use cedar_policy::{Authorizer, Context, Entities, EntityUid, Request, Response};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::access_facts::AccessFacts;
use crate::cache::{Answer, CacheStats, DecisionCache, DecisionKey, Touched};
use crate::clock::{Instants, Tick};
use crate::entities::{parse_uid, EntityGraph};
use crate::error::{EngineError, Result};
use crate::log::{DecisionLog, LogRecord};
use crate::parsed::{Parsed, ParsedRequests};
use crate::plan::PlanMemo;
use crate::policies::{PolicyBundle, PolicyMeta};
use crate::rendered::RenderedEntities;
use crate::store::{BatchOutcome, Store, StoreBatch};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub enum Decision {
    Allow,
    Deny,
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Decision::Allow => "Allow",
            Decision::Deny => "Deny",
        })
    }
}

/// A request as the user wrote it: UIDs in Cedar syntax and a context JSON object.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct RequestSpec {
    pub principal: String,
    pub action: String,
    pub resource: String,
    #[serde(default = "empty_context")]
    pub context: Value,
}

impl RequestSpec {
    /// A request as a command line gives it: uids as text, and a context that is a JSON
    /// object or `@FILE` naming one (absent: empty).
    pub fn from_text(
        principal: String,
        action: String,
        resource: String,
        context: Option<&str>,
    ) -> Result<Self> {
        let context = match context {
            None => empty_context(),
            Some(text) => {
                let (name, body) = match text.strip_prefix('@') {
                    Some(file) => (
                        file.to_string(),
                        std::fs::read_to_string(file).map_err(|e| EngineError::io(file, e))?,
                    ),
                    None => ("--context".to_string(), text.to_string()),
                };
                serde_json::from_str(&body).map_err(|e| {
                    EngineError::Request(format!(
                        "`{name}` is not JSON: {e} (line {}, column {})",
                        e.line(),
                        e.column()
                    ))
                })?
            }
        };
        Ok(Self {
            principal,
            action,
            resource,
            context,
        })
    }
}

fn empty_context() -> Value {
    Value::Object(Map::new())
}

/// A request checked against the schema and ready for Cedar.
#[derive(Debug, Clone)]
pub struct ParsedRequest {
    pub spec: RequestSpec,
    /// The principal, action, resource and context text: what the decision cache knows the
    /// request by, built once so a cached answer costs one lookup.
    pub key: DecisionKey,
    pub request: Request,
    /// Entities the context names (they are part of the decision's slice).
    pub context_entities: Vec<EntityUid>,
}

impl ParsedRequest {
    pub fn parse(spec: RequestSpec, bundle: &PolicyBundle) -> Result<Self> {
        let context_text = spec.context.to_string();
        let parsed = Self::parse_text(&spec, context_text, bundle)?;
        Ok(Self::from_parsed(spec, parsed))
    }

    /// Parses `spec` once per policy set: an exact repeat is the memo's answer.
    fn parse_remembered(
        spec: RequestSpec,
        bundle: &PolicyBundle,
        memo: &Mutex<ParsedRequests>,
    ) -> Result<Self> {
        let context_text = spec.context.to_string();
        let text = crate::parsed::request_text(&spec, &context_text);
        let lock = || memo.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(parsed) = lock().get(&text) {
            return Ok(Self::from_parsed(spec, parsed));
        }
        let parsed = Self::parse_text(&spec, context_text, bundle)?;
        lock().keep(text, parsed.clone());
        Ok(Self::from_parsed(spec, parsed))
    }

    fn parse_text(
        spec: &RequestSpec,
        context_text: String,
        bundle: &PolicyBundle,
    ) -> Result<Parsed> {
        let principal = parse_uid(&spec.principal)?;
        let action = parse_uid(&spec.action)?;
        let resource = parse_uid(&spec.resource)?;
        if !spec.context.is_object() {
            return Err(EngineError::Request(
                "`context` must be a JSON object".into(),
            ));
        }
        let schema = bundle.schema.as_ref();
        let context = Context::from_json_value(spec.context.clone(), schema.map(|s| (s, &action)))
            .map_err(|e| EngineError::Request(format!("invalid context: {}", error_chain(&e))))?;
        let request = Request::new(
            principal.clone(),
            action.clone(),
            resource.clone(),
            context,
            schema,
        )
        .map_err(|e| EngineError::Request(error_chain(&e)))?;
        let mut context_entities = Vec::new();
        crate::entities::collect_entity_refs(&spec.context, &mut |u| context_entities.push(u));
        let key = DecisionKey::new(principal, action, resource, Arc::from(context_text));
        Ok(Parsed {
            key,
            request,
            context_entities,
        })
    }

    fn from_parsed(spec: RequestSpec, parsed: Parsed) -> Self {
        let Parsed {
            key,
            request,
            context_entities,
        } = parsed;
        Self {
            spec,
            key,
            request,
            context_entities,
        }
    }

    pub fn principal(&self) -> &EntityUid {
        self.key.principal()
    }

    pub fn action(&self) -> &EntityUid {
        self.key.action()
    }

    pub fn resource(&self) -> &EntityUid {
        self.key.resource()
    }
}

/// An erroring policy and what went wrong while evaluating it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq, Hash)]
pub struct PolicyError {
    pub policy: String,
    pub message: String,
}

/// A decision with its diagnostics.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionOutcome {
    pub decision: Decision,
    /// Ids of the determining policies.
    pub reasons: Vec<String>,
    pub errors: Vec<PolicyError>,
    #[serde(rename = "policyVersion")]
    pub policy_version: String,
    /// Sequence number in the decision log, for decisions over the store.
    #[serde(rename = "logSeq", skip_serializing_if = "Option::is_none")]
    pub log_seq: Option<u64>,
}

impl DecisionOutcome {
    /// Allowed with every policy evaluated: Cedar skips a policy that errors, so an Allow
    /// with errors may be an Allow a failing `forbid` would have stopped.
    pub fn allows(&self) -> bool {
        self.decision == Decision::Allow && self.errors.is_empty()
    }

    /// The outcome for a caller that must fail closed: an Allow despite an erroring policy
    /// becomes a Deny that no policy determined (the erroring policy may be a `forbid` that
    /// would have matched), its errors kept as the reason.
    pub fn fail_closed(mut self) -> Self {
        if self.decision == Decision::Allow && !self.errors.is_empty() {
            self.decision = Decision::Deny;
            self.reasons.clear();
        }
        self
    }

    /// Where each determining policy lives (file, line, annotations).
    pub fn determining<'a>(&self, bundle: &'a PolicyBundle) -> Vec<&'a PolicyMeta> {
        self.reasons
            .iter()
            .filter_map(|id| bundle.meta(id))
            .collect()
    }
}

/// The log kind of decisions other apps ask for (`/v1/is-authorized`): their own kind, so no
/// workflow's history takes them for its own decisions, and answered fail closed (see
/// `DecisionOutcome::fail_closed`), which `why --replay` repeats.
pub const IS_AUTHORIZED_KIND: &str = "is-authorized";

/// Policies, the entity graph, and (over the store) the store and decision log.
pub struct Engine {
    /// The policies as given (a directory, the built-in set).
    base: Arc<PolicyBundle>,
    /// What decides: `base` with the store's template links (see `policy_links`).
    bundle: Arc<PolicyBundle>,
    graph: Arc<EntityGraph>,
    graph_revision: u64,
    store: Option<Store>,
    log: Option<DecisionLog>,
    authorizer: Authorizer,
    /// Answers whose inputs have not changed since Cedar gave them (see `cache`).
    cache: RwLock<DecisionCache>,
    /// The roles' parts of the last plan (see `plan::memo`).
    plan_memo: Mutex<PlanMemo>,
    /// Each entity's text in a logged slice, while it stays right (see `rendered`).
    rendered: Mutex<RenderedEntities>,
    /// Requests parsed under the running policy set (see `parsed`).
    parsed: Mutex<ParsedRequests>,
    /// When the governance clock moves (see `clock`), and how long before a date its warning
    /// goes out.
    instants: Instants,
    warning_ms: i64,
    /// The stored exemptions and review items by the access they are about (see
    /// `access_facts`): made again only when one is written or deleted, not per question.
    access_facts: Arc<AccessFacts>,
    /// The `now` the last plan was made at: a plan at another one starts afresh.
    planned_at: AtomicI64,
}

impl Engine {
    /// An engine over entities given directly (no store, no log).
    pub fn in_memory(bundle: PolicyBundle, graph: EntityGraph) -> Self {
        let instants = Instants::new(&graph, &bundle.set, 0);
        let access_facts = Arc::new(AccessFacts::of(&graph));
        let bundle = Arc::new(bundle);
        Self {
            base: bundle.clone(),
            bundle,
            graph: Arc::new(graph),
            graph_revision: 0,
            store: None,
            log: None,
            authorizer: Authorizer::new(),
            cache: RwLock::new(DecisionCache::new(crate::cache::DEFAULT_CAPACITY)),
            plan_memo: Mutex::default(),
            rendered: Mutex::default(),
            parsed: Mutex::default(),
            instants,
            access_facts,
            warning_ms: 0,
            planned_at: AtomicI64::new(i64::MIN),
        }
    }

    /// An engine over an entities file (no store, no log), as the Cedar CLI decides.
    pub fn over_file(bundle: PolicyBundle, entities: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(entities).map_err(|e| EngineError::io(entities, e))?;
        let name = entities.display().to_string();
        let list = crate::entities::parse_entities_file(&name, &text, bundle.schema.as_ref())?;
        let graph = EntityGraph::from_entities(&list, bundle.schema.as_ref())?;
        Ok(Self::in_memory(bundle, graph))
    }

    /// An engine over the store in `data_dir` (created if missing); its decisions are
    /// logged.
    pub fn open(data_dir: &Path, bundle: PolicyBundle) -> Result<Self> {
        Self::with_store(Store::open(data_dir)?, data_dir, bundle)
    }

    /// An engine over an existing store: deciding over a store that is not there is an
    /// error, not a wall of denies.
    pub fn open_existing(data_dir: &Path, bundle: PolicyBundle) -> Result<Self> {
        Self::with_store(Store::open_existing(data_dir)?, data_dir, bundle)
    }

    fn with_store(store: Store, data_dir: &Path, base: PolicyBundle) -> Result<Self> {
        let log = DecisionLog::open(data_dir)?;
        let (revision, bodies) = store.snapshot()?;
        let graph =
            EntityGraph::from_bodies(bodies.iter().map(String::as_str), base.schema.as_ref())?;
        let bundle = crate::policy_links::linked(&base, &graph)?;
        log.store_policies(bundle.schema_source.as_ref(), &bundle.sources)?;
        let instants = Instants::new(&graph, &bundle.set, 0);
        let access_facts = Arc::new(AccessFacts::of(&graph));
        Ok(Self {
            base: Arc::new(base),
            bundle: Arc::new(bundle),
            graph: Arc::new(graph),
            graph_revision: revision,
            store: Some(store),
            log: Some(log),
            authorizer: Authorizer::new(),
            cache: RwLock::new(DecisionCache::new(crate::cache::DEFAULT_CAPACITY)),
            plan_memo: Mutex::default(),
            rendered: Mutex::default(),
            parsed: Mutex::default(),
            instants,
            access_facts,
            warning_ms: 0,
            planned_at: AtomicI64::new(i64::MIN),
        })
    }

    /// The policies that decide: the base set with the store's template links.
    pub fn bundle(&self) -> &PolicyBundle {
        &self.bundle
    }

    /// The policies as given, without the store's links: what a reload replaces.
    pub fn base_bundle(&self) -> &PolicyBundle {
        &self.base
    }

    pub fn graph(&self) -> &EntityGraph {
        &self.graph
    }

    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    pub fn log(&self) -> Option<&DecisionLog> {
        self.log.as_ref()
    }

    /// Swaps in a new policy set. The caller has already loaded and validated it; a set that
    /// failed either never reaches here, so the last good set keeps deciding.
    /// Decides with `base` (and the store's template links) from now on; a stored link the
    /// new set cannot take (its template is gone) refuses the set.
    pub fn set_policies(&mut self, base: PolicyBundle) -> Result<()> {
        let bundle = crate::policy_links::linked(&base, &self.graph)?;
        self.adopt(bundle)?;
        self.base = Arc::new(base);
        Ok(())
    }

    /// The store's links changed: link them into the base set again. A link that cannot be
    /// linked leaves the set as it was, and says so.
    fn relink(&mut self) {
        match crate::policy_links::linked(&self.base, &self.graph) {
            Ok(bundle) if bundle.version != self.bundle.version => {
                let version = bundle.version.clone();
                match self.adopt(bundle) {
                    Ok(()) => tracing::info!(policy_version = %version, "template links changed"),
                    Err(e) => tracing::error!(error = %e, "cannot take the changed template links"),
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e.one_line(), "a stored template link does not link; the policies stay as they were")
            }
        }
    }

    fn adopt(&mut self, bundle: PolicyBundle) -> Result<()> {
        if let Some(log) = &self.log {
            log.store_policies(bundle.schema_source.as_ref(), &bundle.sources)?;
        }
        // Actions come from the schema, so the graph is rebuilt when the schema changes.
        if bundle.schema_source != self.bundle.schema_source {
            if let Some(store) = &self.store {
                let (revision, bodies) = store.snapshot()?;
                self.graph = Arc::new(EntityGraph::from_bodies(
                    bodies.iter().map(String::as_str),
                    bundle.schema.as_ref(),
                )?);
                self.graph_revision = revision;
                self.rendered_mut().clear();
            }
        }
        self.bundle = Arc::new(bundle);
        self.instants = Instants::new(&self.graph, &self.bundle.set, self.warning_ms);
        self.access_facts = Arc::new(AccessFacts::of(&self.graph));
        self.cache_mut().clear();
        // The schema a parse was checked against may be gone.
        self.parsed = Mutex::default();
        Ok(())
    }

    /// Bounds the decision cache to `entries` answers (it starts empty).
    pub fn set_cache_capacity(&mut self, entries: usize) {
        *self.cache_mut() = DecisionCache::new(entries);
    }

    /// Forgets every remembered answer (benchmarks measure misses this way).
    pub fn clear_cache(&self) {
        self.cache().clear();
    }

    /// Every question the cache holds an answer to.
    pub fn cached_keys(&self) -> Vec<DecisionKey> {
        self.cache_read().keys()
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.cache_read().stats()
    }

    // A panic while the cache was written may have left it half-updated: start it afresh.
    fn cache(&self) -> RwLockWriteGuard<'_, DecisionCache> {
        self.cache.write().unwrap_or_else(|poisoned| {
            self.cache.clear_poison();
            let mut cache = poisoned.into_inner();
            cache.clear();
            cache
        })
    }

    /// Lookups share the cache: planner threads and API callers read it at once.
    fn cache_read(&self) -> RwLockReadGuard<'_, DecisionCache> {
        loop {
            match self.cache.read() {
                Ok(cache) => return cache,
                Err(poisoned) => {
                    drop(poisoned);
                    drop(self.cache());
                }
            }
        }
    }

    /// What changed since the planner last asked (see `cache::Touched`).
    pub(crate) fn take_touched(&self) -> Touched {
        self.cache().take_touched()
    }

    /// How many roles plans kept from the last plan, and how many they planned afresh.
    pub fn plan_reuse(&self) -> crate::plan::PlanReuse {
        self.plan_memo().stats()
    }

    /// The planner's memo; a panic mid-plan may have left it half-updated, so it starts
    /// afresh (every role re-planned).
    pub(crate) fn plan_memo(&self) -> MutexGuard<'_, PlanMemo> {
        self.plan_memo.lock().unwrap_or_else(|poisoned| {
            self.plan_memo.clear_poison();
            let mut memo = poisoned.into_inner();
            *memo = PlanMemo::default();
            memo
        })
    }

    fn cache_mut(&mut self) -> &mut DecisionCache {
        if self.cache.is_poisoned() {
            drop(self.cache());
        }
        self.cache.get_mut().unwrap_or_else(|p| p.into_inner())
    }

    /// Validates and writes a batch, then brings the graph up to date.
    pub fn apply(&mut self, batch: &StoreBatch) -> Result<BatchOutcome> {
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| EngineError::Request("this engine has no entity store".into()))?;
        let schema = self.bundle.schema.as_ref().ok_or_else(|| {
            EngineError::Request("entities cannot be stored without a schema".into())
        })?;
        let outcome = store.apply(batch, schema)?;
        self.refresh()?;
        Ok(outcome)
    }

    /// Applies whatever changed in the store since the graph was built (by this process or
    /// another), without rebuilding the graph.
    /// Whether the engine holds the store as it is now (no change since the last refresh).
    pub fn is_current(&self) -> Result<bool> {
        match &self.store {
            Some(store) => store.still_at(self.graph_revision),
            None => Ok(true),
        }
    }

    pub fn refresh(&mut self) -> Result<u64> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let changes = store.changes_since(self.graph_revision)?;
        if changes.revision == self.graph_revision {
            return Ok(0);
        }
        let n = changes.upserts.len() + changes.deletes.len();
        let (graph, written) = self
            .graph
            .apply(changes.upserts.iter().map(String::as_str), &changes.deletes)?;
        // The cache resolves what its answers depend on over the graph they were given over.
        let old = std::mem::replace(&mut self.graph, Arc::new(graph));
        let bundle = self.bundle.clone();
        // An access fact (an exemption, a review item) written or deleted changes what its
        // user's questions about its study are asked with: both count as changed, so no remembered plan of theirs is reused.
        let mut exempted =
            crate::access_facts::accesses_of(&old, written.iter().chain(&changes.deletes));
        exempted.extend(crate::access_facts::accesses_of(&self.graph, &written));
        self.cache_mut().invalidate(
            written.iter().chain(&changes.deletes).chain(&exempted),
            &old,
            &bundle.literal_entities,
        );
        self.rendered_mut()
            .invalidate(written.iter().chain(&changes.deletes));
        for uid in written.iter().chain(&changes.deletes) {
            self.instants.set_entity(uid, &self.graph.body_texts(uid));
        }
        if written
            .iter()
            .chain(&changes.deletes)
            .any(AccessFacts::is_access_fact_uid)
        {
            self.access_facts = Arc::new(AccessFacts::of(&self.graph));
        }
        self.graph_revision = changes.revision;
        if written
            .iter()
            .chain(&changes.deletes)
            .any(crate::policy_links::is_link_uid)
        {
            self.relink();
        }
        Ok(n as u64)
    }

    /// How long before a stored date its expiry warning goes out: the clock moves then too.
    pub fn set_expiry_warning(&mut self, window: std::time::Duration) {
        self.warning_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        self.instants
            .set_policies(&self.bundle.set, self.warning_ms);
    }

    pub fn expiry_warning_ms(&self) -> i64 {
        self.warning_ms
    }

    /// The governance clock at `wall` (see `clock`).
    pub fn tick_at(&self, wall: std::time::SystemTime) -> Tick {
        self.instants.tick_at(crate::clock::wall_ms(wall))
    }

    /// `spec` as the server asks it: when its context does not say `now` and its action's
    /// context takes one, the governance clock's (as the planner and the API put it there).
    pub fn at_the_clock(&self, spec: RequestSpec) -> RequestSpec {
        let Some(context) = spec.context.as_object() else {
            return spec;
        };
        if context.contains_key("now") {
            return spec;
        }
        let mut timed = spec.clone();
        let tick = self.tick_at(std::time::SystemTime::now());
        if let Some(context) = timed.context.as_object_mut() {
            context.insert("now".into(), tick.now_value());
        }
        if self.parse(timed.clone()).is_err() {
            return spec;
        }
        self.with_access_facts(timed, tick.now)
    }

    /// `spec` with the access facts the store holds for its principal and resource at `now`
    /// (see `access_facts`), when its action's context takes them and the caller named none.
    fn with_access_facts(&self, spec: RequestSpec, now: i64) -> RequestSpec {
        let (Ok(principal), Ok(resource)) = (
            crate::entities::parse_uid(&spec.principal),
            crate::entities::parse_uid(&spec.resource),
        ) else {
            return spec;
        };
        let Some((found, _)) = self.access_facts.for_access(&principal, &resource, now) else {
            return spec;
        };
        let mut asked = spec.clone();
        if let Some(context) = asked.context.as_object_mut() {
            for (name, value) in found {
                context.entry(name).or_insert(value);
            }
        }
        match self.parse(asked.clone()) {
            Ok(_) => asked,
            Err(_) => spec,
        }
    }

    /// The stored dates in `(after, until]`, with the entity holding each.
    pub fn dates_within(&self, after: i64, until: i64) -> Vec<(EntityUid, i64)> {
        self.instants.dates_within(after, until)
    }

    /// The stored exemptions and review items, by access.
    pub fn access_facts(&self) -> Arc<AccessFacts> {
        self.access_facts.clone()
    }

    /// The moments after `after` at which a decision over these entities could change.
    pub fn moments_for<'u>(
        &self,
        uids: impl IntoIterator<Item = &'u EntityUid>,
        after: i64,
    ) -> Vec<i64> {
        self.instants.moments_for(uids, after)
    }

    /// How many stored dates are still ahead of `wall`.
    pub fn pending_dates(&self, wall: std::time::SystemTime) -> usize {
        self.instants.pending_after(crate::clock::wall_ms(wall))
    }

    /// Notes that a plan is made at `now`: when the clock has moved since the last plan,
    /// every cached answer was asked at another `now`, so the cache (and with it the plan
    /// memo) starts afresh rather than hold answers no question will ask again.
    pub fn plan_at(&self, now: i64) {
        if self.planned_at.swap(now, Ordering::Relaxed) != now {
            self.cache().clear();
        }
    }

    pub fn parse(&self, spec: RequestSpec) -> Result<ParsedRequest> {
        ParsedRequest::parse_remembered(spec, &self.bundle, &self.parsed)
    }

    /// Decides without logging: the hot path, and what `decide_logged` builds on. The answer
    /// is the cache's when nothing it depends on has changed since Cedar gave it.
    pub fn decide(&self, request: &ParsedRequest) -> DecisionOutcome {
        self.cached(&request.key).unwrap_or_else(|| {
            self.evaluate(&request.key, &request.context_entities, &request.request)
        })
    }

    /// Cedar's own answer, neither read from nor kept in the cache (to check the cache, and
    /// to measure Cedar).
    pub fn decide_uncached(&self, request: &ParsedRequest) -> DecisionOutcome {
        self.outcome(&self.ask_cedar(
            &request.request,
            &request.key,
            &request.context_entities,
            None,
        ))
    }

    /// Cedar's entities for a decision on `request`: its slice of the store.
    pub fn entities_of(&self, request: &ParsedRequest) -> Result<Entities> {
        self.graph.entities_for(self.seeds(request))
    }

    /// Cedar's authorizer over entities holding the request's slice of the store, with the
    /// policies in scope for its action. A slice that cannot be parsed is a Deny with the
    /// reason as its error.
    fn ask_cedar(
        &self,
        request: &Request,
        key: &DecisionKey,
        context_entities: &[EntityUid],
        recent: Option<&mut RecentAnswers>,
    ) -> Arc<Answer> {
        let seeds = [key.principal(), key.action(), key.resource()]
            .into_iter()
            .chain(context_entities)
            .chain(&self.bundle.literal_entities);
        let policies = self.bundle.policies_for(key.action());
        let asked = self.graph.decide_over(seeds, |entities| {
            self.authorizer.is_authorized(request, policies, entities)
        });
        match (asked, recent) {
            (Ok(response), Some(recent)) => recent.answer(&response),
            (Ok(response), None) => Arc::new(answer_from_response(&response)),
            (Err(e), _) => {
                tracing::error!(error = %e, principal = %key.principal(), resource = %key.resource(), "cannot hold a decision's entities: denied");
                Arc::new(Answer {
                    decision: Decision::Deny,
                    reasons: Vec::new(),
                    errors: vec![PolicyError {
                        policy: String::new(),
                        message: e.to_string(),
                    }],
                })
            }
        }
    }

    /// The remembered answer to `key`, if nothing it depends on has changed since.
    pub fn cached(&self, key: &DecisionKey) -> Option<DecisionOutcome> {
        self.cached_answer(key).map(|a| self.outcome(&a))
    }

    /// The same, shared as the cache holds it (the planner copies nothing on a hit).
    pub fn cached_answer(&self, key: &DecisionKey) -> Option<Arc<Answer>> {
        self.cache_read().get(key)
    }

    /// Cedar's answer to `request` (asked as `key`; `context_entities` are the entities its
    /// context names), remembered for the next time it is asked.
    pub fn evaluate(
        &self,
        key: &DecisionKey,
        context_entities: &[EntityUid],
        request: &Request,
    ) -> DecisionOutcome {
        let answer = self.evaluate_answer(key, context_entities, request);
        self.outcome(&answer)
    }

    pub fn evaluate_answer(
        &self,
        key: &DecisionKey,
        context_entities: &[EntityUid],
        request: &Request,
    ) -> Arc<Answer> {
        let answer = self.ask_cedar(request, key, context_entities, None);
        self.cache().insert(key, context_entities, answer)
    }

    /// Cedar's answer to `request` (asked as `key`, with no context entities) for a caller
    /// asking many questions in a row, the planner: an answer like one of its `recent`
    /// ones is that one, not a new copy. Neither read from nor kept in the cache: the
    /// caller keeps its answers with `remember_answers`.
    pub fn ask_recalling(
        &self,
        key: &DecisionKey,
        request: &Request,
        context_entities: &[EntityUid],
        recent: &mut RecentAnswers,
    ) -> Arc<Answer> {
        self.ask_cedar(request, key, context_entities, Some(recent))
    }

    /// Keeps answers from `ask_recalling` in the cache, under one lock: a planner's worker
    /// would otherwise take the lock, which every worker shares, once per question.
    /// `unlooked` says they were asked without looking in the cache first (it was emptied
    /// since the caller last planned); they count as the misses they are.
    pub fn remember_answers(
        &self,
        answers: impl IntoIterator<Item = (DecisionKey, Arc<Answer>, Vec<EntityUid>)>,
        unlooked: bool,
    ) {
        let mut cache = self.cache();
        for (key, answer, context_entities) in answers {
            cache.insert(&key, &context_entities, answer);
            if unlooked {
                cache.count_miss();
            }
        }
    }

    fn outcome(&self, answer: &Answer) -> DecisionOutcome {
        DecisionOutcome {
            decision: answer.decision,
            reasons: answer.reasons.clone(),
            errors: answer.errors.clone(),
            policy_version: self.bundle.version.clone(),
            log_seq: None,
        }
    }

    /// Evaluates and records the decision, its reasons and errors, the policy version and the
    /// slice of entities it read, in the decision log. A decision that cannot be logged is
    /// not returned.
    pub fn decide_logged(&self, request: &ParsedRequest, origin: &str) -> Result<DecisionOutcome> {
        let mut outcome = self.decide(request);
        if let Some(log) = &self.log {
            let record = self.decision_record(request, &outcome, origin);
            let seqs = log.append(vec![record])?;
            outcome.log_seq = seqs.first().copied();
        }
        Ok(outcome)
    }

    /// Decides a batch and logs every decision in one durable append.
    pub fn decide_batch_logged(
        &self,
        requests: &[ParsedRequest],
        origin: &str,
    ) -> Result<Vec<DecisionOutcome>> {
        let mut outcomes: Vec<DecisionOutcome> = requests.iter().map(|r| self.decide(r)).collect();
        if let Some(log) = &self.log {
            let records = requests
                .iter()
                .zip(&outcomes)
                .map(|(r, o)| self.decision_record(r, o, origin))
                .collect();
            let seqs = log.append(records)?;
            for (o, s) in outcomes.iter_mut().zip(seqs) {
                o.log_seq = Some(s);
            }
        }
        Ok(outcomes)
    }

    /// Decides over the store plus `extra` entities (entities JSON) that exist only for this
    /// decision, such as an egress request as it would be after the transition asked for,
    /// and logs the decision with the slice it read (the extra entities included), so
    /// `why --replay` re-decides it exactly. `extra` wins over a stored entity of the same uid.
    /// With `origin` `None` nothing is logged (a pre-check that a logged decision follows).
    pub fn decide_with(
        &self,
        spec: RequestSpec,
        extra: &[Value],
        origin: Option<&str>,
    ) -> Result<(ParsedRequest, DecisionOutcome)> {
        let (request, mut outcome, slice) = self.decide_over(spec, extra)?;
        if let (Some(log), Some(origin)) = (&self.log, origin) {
            let mut record = self.decision_fields(&request, &outcome, origin);
            record.insert("slice".into(), Value::Array(slice));
            let seqs = log.append(vec![record])?;
            outcome.log_seq = seqs.first().copied();
        }
        Ok((request, outcome))
    }

    /// `decide_with` for several requests, logged in one durable append.
    pub fn decide_many_with(
        &self,
        asks: Vec<(RequestSpec, Vec<Value>)>,
        origin: &str,
    ) -> Result<Vec<DecisionOutcome>> {
        let mut outcomes = Vec::with_capacity(asks.len());
        let mut records = Vec::with_capacity(asks.len());
        for (spec, extra) in asks {
            let (request, outcome, slice) = self.decide_over(spec, &extra)?;
            let mut record = self.decision_fields(&request, &outcome, origin);
            record.insert("slice".into(), Value::Array(slice));
            records.push(record);
            outcomes.push(outcome);
        }
        if let Some(log) = &self.log {
            for (o, seq) in outcomes.iter_mut().zip(log.append(records)?) {
                o.log_seq = Some(seq);
            }
        }
        Ok(outcomes)
    }

    /// The decision over the store plus `extra`, with the slice it read.
    fn decide_over(
        &self,
        spec: RequestSpec,
        extra: &[Value],
    ) -> Result<(ParsedRequest, DecisionOutcome, Vec<Value>)> {
        let request = self.parse(spec)?;
        let mut extra_uids = std::collections::HashSet::new();
        let mut seeds: Vec<EntityUid> = self.seeds(&request).cloned().collect();
        for e in extra {
            if let Some(uid) = e.get("uid").and_then(crate::entities::uid_from_json) {
                extra_uids.insert(uid);
            }
            for key in ["attrs", "parents"] {
                if let Some(v) = e.get(key) {
                    crate::entities::collect_entity_refs(v, &mut |u| seeds.push(u));
                }
            }
        }
        let uids: Vec<EntityUid> = self
            .graph
            .slice(seeds.iter())
            .into_iter()
            .filter(|u| !extra_uids.contains(u))
            .collect();
        let mut slice = self.graph.render_slice(&uids);
        slice.extend(extra.iter().cloned());
        let entities = crate::entities::entities_from_slice(&slice, self.bundle.schema.as_ref())?;
        let response = self.authorizer.is_authorized(
            &request.request,
            self.bundle.policies_for(request.action()),
            &entities,
        );
        let outcome = outcome_from_response(&response, &self.bundle);
        Ok((request, outcome, slice))
    }

    /// The log record of a decision (without sequence, time and hashes), its slice made of
    /// the entities' kept texts.
    pub fn decision_record(
        &self,
        request: &ParsedRequest,
        outcome: &DecisionOutcome,
        origin: &str,
    ) -> LogRecord {
        // The slice kept with the cached answer, when the answer is still there.
        let remembered = self.cache_read().kept_slice(&request.key);
        let render = || -> Arc<[Arc<str>]> { self.rendered_slice(&self.slice_of(request)).into() };
        let slice = match remembered {
            Some((_, Some(texts))) => texts,
            Some((id, None)) => {
                let texts = render();
                self.cache_read()
                    .keep_slice(&request.key, id, texts.clone());
                texts
            }
            None => render(),
        };
        LogRecord::with_slice(self.decision_fields(request, outcome, origin), slice)
    }

    /// Every entity a decision on `request` can read (see `EntityGraph::slice`).
    pub fn slice_of(&self, request: &ParsedRequest) -> Vec<EntityUid> {
        self.graph.slice(self.seeds(request))
    }

    /// What a decision's slice grows from: its principal, action and resource, the entities
    /// its context names and those the policies name literally.
    fn seeds<'a>(&'a self, request: &'a ParsedRequest) -> impl Iterator<Item = &'a EntityUid> {
        [request.principal(), request.action(), request.resource()]
            .into_iter()
            .chain(request.context_entities.iter())
            .chain(self.bundle.literal_entities.iter())
    }

    /// A decision record's fields but its slice.
    fn decision_fields(
        &self,
        request: &ParsedRequest,
        outcome: &DecisionOutcome,
        origin: &str,
    ) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("kind".into(), Value::from("decision"));
        m.insert("origin".into(), Value::from(origin));
        m.insert(
            "request".into(),
            serde_json::to_value(&request.spec).unwrap_or(Value::Null),
        );
        m.insert("decision".into(), Value::from(outcome.decision.to_string()));
        m.insert("reasons".into(), Value::from(outcome.reasons.clone()));
        m.insert(
            "errors".into(),
            serde_json::to_value(&outcome.errors).unwrap_or(Value::Null),
        );
        m.insert(
            "policyVersion".into(),
            Value::from(outcome.policy_version.clone()),
        );
        m
    }

    /// The texts of the entities of `uids` that exist, rendering those not kept yet (outside
    /// the lock: readers share the engine).
    fn rendered_slice(&self, uids: &[EntityUid]) -> Vec<Arc<str>> {
        let known = self.rendered().known(uids);
        let mut fresh = Vec::new();
        let slice = uids
            .iter()
            .zip(known)
            .filter_map(|(uid, kept)| {
                kept.or_else(|| {
                    let (text, shows) = self.graph.render_entity(uid)?;
                    let text: Arc<str> = Arc::from(text);
                    fresh.push((uid.clone(), text.clone(), shows));
                    Some(text)
                })
            })
            .collect();
        if !fresh.is_empty() {
            self.rendered().keep(fresh);
        }
        slice
    }

    fn rendered(&self) -> MutexGuard<'_, RenderedEntities> {
        // A panic mid-update may have kept a text without what it shows: start over.
        self.rendered.lock().unwrap_or_else(|poisoned| {
            let mut rendered = poisoned.into_inner();
            rendered.clear();
            self.rendered.clear_poison();
            rendered
        })
    }

    fn rendered_mut(&mut self) -> &mut RenderedEntities {
        self.rendered.get_mut().unwrap_or_else(|p| p.into_inner())
    }
}

/// Names the determining and erroring policies of a Cedar response.
pub fn outcome_from_response(response: &Response, bundle: &PolicyBundle) -> DecisionOutcome {
    let Answer {
        decision,
        reasons,
        errors,
    } = answer_from_response(response);
    DecisionOutcome {
        decision,
        reasons,
        errors,
        policy_version: bundle.version.clone(),
        log_seq: None,
    }
}

/// Cedar's answer: the decision, the determining policies and the erroring ones, each sorted.
pub fn answer_from_response(response: &Response) -> Answer {
    let decision = decision_of(response);
    let mut reasons: Vec<String> = response
        .diagnostics()
        .reason()
        .map(|id| AsRef::<str>::as_ref(id).to_owned())
        .collect();
    reasons.sort();
    let mut errors: Vec<PolicyError> = response
        .diagnostics()
        .errors()
        .map(|e| match e {
            cedar_policy::AuthorizationError::PolicyEvaluationError(pe) => PolicyError {
                policy: AsRef::<str>::as_ref(pe.policy_id()).to_owned(),
                message: pe.inner().to_string(),
            },
        })
        .collect();
    errors.sort_by(|a, b| a.policy.cmp(&b.policy));
    Answer {
        decision,
        reasons,
        errors,
    }
}

/// The answers a caller asking many questions in a row got last: most of a plan's half a
/// million questions get one of a few answers, so a response is matched against these
/// before any text is copied out of it. Only error-free answers are kept (errors carry
/// messages that differ from question to question).
#[derive(Default)]
pub struct RecentAnswers(Vec<Arc<Answer>>);

/// Answers kept at most: past this, new ones are built and not kept.
const RECENT_ANSWERS: usize = 32;

impl RecentAnswers {
    pub fn answer(&mut self, response: &Response) -> Arc<Answer> {
        let diagnostics = response.diagnostics();
        if diagnostics.errors().next().is_none() {
            let decision = decision_of(response);
            let count = diagnostics.reason().count();
            // Both sides are sets (Cedar's reasons, an answer's sorted and distinct ones):
            // as many, each found, is equal.
            let same = |a: &&Arc<Answer>| {
                a.decision == decision
                    && a.errors.is_empty()
                    && a.reasons.len() == count
                    && diagnostics.reason().all(|id| {
                        a.reasons
                            .binary_search_by(|r| r.as_str().cmp(id.as_ref()))
                            .is_ok()
                    })
            };
            if let Some(known) = self.0.iter().find(same) {
                return known.clone();
            }
        }
        let answer = Arc::new(answer_from_response(response));
        if answer.errors.is_empty() && self.0.len() < RECENT_ANSWERS {
            self.0.push(answer.clone());
        }
        answer
    }
}

fn decision_of(response: &Response) -> Decision {
    match response.decision() {
        cedar_policy::Decision::Allow => Decision::Allow,
        cedar_policy::Decision::Deny => Decision::Deny,
    }
}

/// An error with its causes, as one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn spec(p: &str, a: &str, r: &str) -> RequestSpec {
        RequestSpec {
            principal: p.into(),
            action: a.into(),
            resource: r.into(),
            context: serde_json::json!({}),
        }
    }

    #[test]
    fn recent_answers_share_an_equal_answer_and_never_one_with_errors() {
        let policies: cedar_policy::PolicySet = r#"
            permit(principal, action == Action::"read", resource);
            forbid(principal, action == Action::"write", resource)
                when { principal.missing == 1 };
        "#
        .parse()
        .expect("policies");
        let respond = |principal: &str, action: &str| {
            let uid = |text: &str| text.parse::<EntityUid>().expect("uid");
            let request = Request::new(
                uid(principal),
                uid(action),
                uid(r#"Dataset::"d""#),
                cedar_policy::Context::empty(),
                None,
            )
            .expect("request");
            cedar_policy::Authorizer::new().is_authorized(
                &request,
                &policies,
                &cedar_policy::Entities::empty(),
            )
        };
        let mut recent = RecentAnswers::default();
        let (a_reads, b_reads) = (
            recent.answer(&respond(r#"User::"a""#, r#"Action::"read""#)),
            recent.answer(&respond(r#"User::"b""#, r#"Action::"read""#)),
        );
        assert!(Arc::ptr_eq(&a_reads, &b_reads));
        assert_eq!(a_reads.reasons, ["policy0"]);
        let a_writes = recent.answer(&respond(r#"User::"a""#, r#"Action::"write""#));
        let b_writes = recent.answer(&respond(r#"User::"b""#, r#"Action::"write""#));
        assert!(!Arc::ptr_eq(&a_writes, &b_writes));
        assert!(
            b_writes.errors[0].message.contains("User::\"b\""),
            "{b_writes:?}"
        );
        assert_eq!(
            *b_writes,
            answer_from_response(&respond(r#"User::"b""#, r#"Action::"write""#))
        );
    }

    /// An engine over the sample TRE, with its store and log in `dir`.
    pub(crate) fn sample_engine(dir: &Path) -> Engine {
        let bundle = PolicyBundle::embedded().expect("policies");
        let schema = bundle.schema.clone().expect("schema");
        let list = crate::entities::parse_entities_file(
            "sample",
            tregov_policies::SAMPLE_TRE_ENTITIES,
            Some(&schema),
        )
        .expect("sample");
        let mut engine = Engine::open(dir, bundle).expect("engine");
        engine
            .apply(&StoreBatch {
                upserts: list,
                partition: "sample".into(),
                ..Default::default()
            })
            .expect("import");
        engine
    }

    #[test]
    fn a_change_written_by_another_process_reaches_the_graph_without_a_rebuild() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut engine = sample_engine(dir.path());
        let req = engine
            .parse(spec(
                r#"Tre::User::"alice""#,
                r#"Tre::Action::"read""#,
                r#"Tre::Dataset::"gwas-2024""#,
            ))
            .expect("request");
        assert_eq!(engine.decide(&req).decision, Decision::Allow);
        // Another writer deactivates alice.
        let other = Store::open(dir.path()).expect("store");
        let schema = engine.bundle().schema.clone().expect("schema");
        let alice = cedar_policy::Entity::from_json_value(
            serde_json::json!({"uid": {"type": "Tre::User", "id": "alice"}, "attrs": {"status": "inactive"}, "parents": [
                {"type": "Tre::Role", "id": "Researcher"},
                {"type": "Tre::Project", "id": "proj-genomics"},
                {"type": "Tre::AccessGroup", "id": "gwas-2024#writers"}
            ]}),
            Some(&schema),
        )
        .expect("entity");
        other
            .apply(
                &StoreBatch {
                    upserts: vec![alice],
                    partition: "sample".into(),
                    ..Default::default()
                },
                &schema,
            )
            .expect("apply");
        assert_eq!(engine.refresh().expect("refresh"), 1);
        let outcome = engine.decide(&req);
        assert_eq!(outcome.decision, Decision::Deny);
        assert_eq!(
            outcome.reasons,
            vec!["data-inactive-users-denied".to_string()]
        );
    }

    #[test]
    fn a_remembered_answer_about_a_missing_user_ends_when_the_user_is_created() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut engine = sample_engine(dir.path());
        let req = engine
            .parse(spec(
                r#"Tre::User::"zed""#,
                r#"Tre::Action::"read""#,
                r#"Tre::Dataset::"gwas-2024""#,
            ))
            .expect("request");
        assert_eq!(engine.decide(&req).decision, Decision::Deny);
        assert_eq!(engine.decide(&req).decision, Decision::Deny);
        assert_eq!(engine.cache_stats().hits, 1);
        let schema = engine.bundle().schema.clone().expect("schema");
        let zed = cedar_policy::Entity::from_json_value(
            serde_json::json!({"uid": {"type": "Tre::User", "id": "zed"}, "attrs": {"status": "active"}, "parents": [
                {"type": "Tre::Role", "id": "Researcher"},
                {"type": "Tre::Project", "id": "proj-genomics"},
                {"type": "Tre::AccessGroup", "id": "gwas-2024#writers"}
            ]}),
            Some(&schema),
        )
        .expect("entity");
        engine
            .apply(&StoreBatch {
                upserts: vec![zed],
                partition: "sample".into(),
                ..Default::default()
            })
            .expect("apply");
        let outcome = engine.decide(&req);
        assert_eq!(outcome.decision, Decision::Allow);
        assert_eq!(engine.decide_uncached(&req).reasons, outcome.reasons);
        assert_eq!(engine.cache_stats().invalidated, 1);
    }

    #[test]
    fn the_logged_slice_alone_reproduces_the_decision() {
        let dir = tempfile::tempdir().expect("tmp");
        let engine = sample_engine(dir.path());
        let req = engine
            .parse(spec(
                r#"Tre::User::"rita""#,
                r#"Tre::Action::"reviewEgress""#,
                r#"Tre::EgressRequest::"egr-0001""#,
            ))
            .expect("request");
        let outcome = engine.decide_logged(&req, "test").expect("decide");
        let record = engine
            .log()
            .expect("log")
            .record(outcome.log_seq.expect("seq"))
            .expect("record");
        let slice = record["slice"].as_array().cloned().unwrap_or_default();
        // The slice holds what the decision can read: far less than the whole store.
        assert!(slice.len() < engine.graph().len() / 2, "{}", slice.len());
        let entities =
            crate::entities::entities_from_slice(&slice, engine.bundle().schema.as_ref())
                .expect("slice");
        let again = outcome_from_response(
            &Authorizer::new().is_authorized(&req.request, &engine.bundle().set, &entities),
            engine.bundle(),
        );
        assert_eq!(again.decision, outcome.decision);
        assert_eq!(again.reasons, outcome.reasons);
    }

    #[test]
    fn a_repeated_request_is_parsed_once_and_reads_as_a_fresh_parse() {
        let dir = tempfile::tempdir().expect("tmp");
        let engine = sample_engine(dir.path());
        let ask = || {
            spec(
                r#"Tre::User::"alice""#,
                r#"Tre::Action::"read""#,
                r#"Tre::Dataset::"gwas-2024""#,
            )
        };
        let first = engine.parse(ask()).expect("request");
        let again = engine.parse(ask()).expect("request");
        let fresh = ParsedRequest::parse(ask(), engine.bundle()).expect("request");
        assert_eq!(again.key, fresh.key);
        assert_eq!(again.request.to_string(), fresh.request.to_string());
        assert_eq!(again.context_entities, fresh.context_entities);
        assert_eq!(first.key, again.key);
        assert_eq!(engine.parsed.lock().expect("memo").len(), 1);
    }

    #[test]
    fn a_request_parsed_under_the_old_schema_is_checked_again_after_a_reload() {
        // Regression: a remembered parse must not outlive the schema it was checked against.
        let dir = tempfile::tempdir().expect("tmp");
        let mut engine = sample_engine(dir.path());
        let read = || {
            spec(
                r#"Tre::User::"alice""#,
                r#"Tre::Action::"read""#,
                r#"Tre::Dataset::"gwas-2024""#,
            )
        };
        engine
            .parse(read())
            .expect("valid under the shipped schema");
        let mut schema = crate::policies::embedded_schema();
        let empty = "resource: [Dataset],\n    context: {\n";
        assert!(
            schema.text.contains(empty),
            "the shipped schema changed shape"
        );
        schema.text = schema.text.replace(
            empty,
            "resource: [Dataset],\n    context: {\n      reason: String,\n",
        );
        let bundle = PolicyBundle::from_sources(Some(schema), crate::policies::embedded_sources())
            .expect("policies");
        engine.set_policies(bundle).expect("reload");
        let err = engine.parse(read()).expect_err("`reason` is now required");
        assert!(err.is_invalid_input(), "{err}");
    }

    #[test]
    fn a_request_asked_without_now_is_asked_at_the_clock_where_its_action_takes_one() {
        let dir = tempfile::tempdir().expect("tmp");
        let engine = sample_engine(dir.path());
        let read = engine.at_the_clock(spec(
            r#"Tre::User::"alice""#,
            r#"Tre::Action::"read""#,
            r#"Tre::Dataset::"gwas-2024""#,
        ));
        assert_eq!(
            read.context["now"],
            engine.tick_at(std::time::SystemTime::now()).now_value()
        );
        let connect = engine.at_the_clock(spec(
            r#"Tre::User::"alice""#,
            r#"Tre::Action::"connectWorkspace""#,
            r#"Tre::Workspace::"ws-alice-ec2""#,
        ));
        assert_eq!(
            connect.context,
            serde_json::json!({}),
            "its context takes no clock"
        );
    }

    #[test]
    fn a_request_the_schema_does_not_allow_is_invalid_input_not_a_deny() {
        let dir = tempfile::tempdir().expect("tmp");
        let engine = sample_engine(dir.path());
        let err = engine
            .parse(spec(
                r#"Tre::Dataset::"gwas-2024""#,
                r#"Tre::Action::"read""#,
                r#"Tre::Dataset::"gwas-2024""#,
            ))
            .expect_err("invalid");
        assert!(err.is_invalid_input());
    }
}
