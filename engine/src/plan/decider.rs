//! Deciding while planning: the `Decider` asks Cedar with requests built from uids (one per
//! worker thread, with its own caches and counts), keeps each answer as a cheap shared
//! `Verdict`, and turns the few that justify a change into `Justification`s on a `PlanItem`.

use std::sync::Arc;

use cedar_policy::{EntityTypeName, EntityUid};
use serde_json::json;

use crate::access_facts::AccessFacts;
use crate::cache::{Answer, DecisionKey};
use crate::decide::{Decision, Engine, PolicyError, RecentAnswers, RequestSpec};

use super::{Change, Justification, PlanItem, Revokes};

pub(super) struct Decider<'a> {
    engine: &'a Engine,
    /// Action uids, parsed once: Cedar parses a type name with its full grammar, which cost
    /// more per decision than a quarter of the evaluation itself. The planner asks a handful
    /// of actions: a short list beats hashing the name on every decision.
    actions: Vec<(&'static str, Option<EntityUid>)>,
    /// Request shapes (action, principal type, resource type) checked against the schema,
    /// with whether the action's context takes the clock.
    checked: Vec<(
        &'static str,
        EntityTypeName,
        EntityTypeName,
        std::result::Result<bool, String>,
    )>,
    /// The governance clock the plan is made at, as context text and as Cedar's context:
    /// given to every action whose context declares `now`. Each worker has its own copy, so
    /// no reference count passes between threads on every question.
    now: Option<(Arc<str>, cedar_policy::Context)>,
    /// The clock in milliseconds, to tell which exemptions still stand.
    now_ms: Option<i64>,
    /// The stored access facts (exemptions, review items): a data access question whose
    /// user and study have any is asked with them in its context.
    facts: Arc<AccessFacts>,
    recent: RecentAnswers,
    /// The cache was emptied since the last plan (a policy reload, a start), so it holds
    /// none of this plan's questions: they are asked without looking.
    fresh: bool,
    /// Answers not yet kept in the cache (see `remember`), each with the stored facts in
    /// its context (an exemption, a grant) whose change must forget it.
    unremembered: Vec<(DecisionKey, Arc<Answer>, Vec<EntityUid>)>,
    pub(super) count: u64,
    pub(super) warnings: Vec<String>,
}

/// Answers kept in the cache together at most (about a role's worth).
const REMEMBERED_TOGETHER: usize = 512;

/// Answers still unremembered when a worker stops are kept, not lost.
impl Drop for Decider<'_> {
    fn drop(&mut self) {
        self.remember();
    }
}

fn action_uid(action: &str) -> Option<EntityUid> {
    crate::entities::uid_from_parts("Tre::Action", action).ok()
}

impl<'a> Decider<'a> {
    pub(super) fn new(engine: &'a Engine, now_ms: Option<i64>) -> Self {
        let now = now_ms.and_then(|ms| {
            let value = json!({"now": crate::clock::datetime_value(ms)});
            let context = cedar_policy::Context::from_json_value(value.clone(), None).ok()?;
            Some((Arc::from(value.to_string()), context))
        });
        let mut decider = Self::bare(engine);
        decider.now = now;
        decider.now_ms = now_ms;
        decider.facts = engine.access_facts();
        decider
    }

    /// A decider without a clock or access facts (a worker takes its plan's).
    fn bare(engine: &'a Engine) -> Self {
        Self {
            engine,
            actions: Vec::new(),
            checked: Vec::new(),
            now: None,
            now_ms: None,
            facts: Arc::default(),
            recent: RecentAnswers::default(),
            fresh: false,
            unremembered: Vec::new(),
            count: 0,
            warnings: Vec::new(),
        }
    }

    /// A decider for a plan over a cache emptied since the last plan (see `fresh`).
    pub(super) fn asking_afresh(mut self, fresh: bool) -> Self {
        self.fresh = fresh;
        self
    }

    /// A decider for a worker thread of the same plan.
    pub(super) fn worker(&self) -> Self {
        let mut worker = Self::bare(self.engine).asking_afresh(self.fresh);
        worker.facts = self.facts.clone();
        worker.now_ms = self.now_ms;
        worker.now = self
            .now
            .as_ref()
            .map(|(text, context)| (Arc::from(&**text), context.clone()));
        worker
    }

    /// Keeps the answers asked since the last call in the cache, together.
    pub(super) fn remember(&mut self) {
        if !self.unremembered.is_empty() {
            self.engine
                .remember_answers(self.unremembered.drain(..), self.fresh);
        }
    }

    /// A schema-checked request built from uids directly: planning asks hundreds of
    /// thousands of these, and parsing each from text would double the cost.
    fn action(&mut self, action: &'static str) -> Option<EntityUid> {
        if let Some((_, uid)) = self.actions.iter().find(|(name, _)| *name == action) {
            return uid.clone();
        }
        let uid = action_uid(action);
        self.actions.push((action, uid.clone()));
        uid
    }

    /// Whether requests of this shape are asked with the clock: checked against the schema
    /// once per (action, principal type, resource type), first with the clock, and the
    /// answer, pass or fail, stands for every request of that shape. (The uids themselves are
    /// those of stored entities, which the store validated when they came in.)
    fn timed(
        &mut self,
        principal: &EntityUid,
        action_name: &'static str,
        action: &EntityUid,
        resource: &EntityUid,
    ) -> std::result::Result<bool, String> {
        let shape = self.checked.iter().find(|(a, p, r, _)| {
            *a == action_name && p == principal.type_name() && r == resource.type_name()
        });
        if let Some((_, _, _, checked)) = shape {
            return checked.clone();
        }
        let schema = self.engine.bundle().schema.as_ref();
        let ask = |context: cedar_policy::Context| {
            cedar_policy::Request::new(
                principal.clone(),
                action.clone(),
                resource.clone(),
                context,
                schema,
            )
            .map(|_| ())
            .map_err(|e| crate::decide::error_chain(&e))
        };
        let with_clock = self.now.as_ref().map(|(_, context)| ask(context.clone()));
        let checked = match with_clock {
            Some(Ok(())) => Ok(true),
            _ => ask(cedar_policy::Context::empty()).map(|()| false),
        };
        self.checked.push((
            action_name,
            principal.type_name().clone(),
            resource.type_name().clone(),
            checked.clone(),
        ));
        checked
    }

    /// The request of a key whose shape was checked (see `timed`).
    fn request(&self, key: &DecisionKey) -> std::result::Result<cedar_policy::Request, String> {
        let context = match (key.context(), &self.now) {
            ("{}", _) | (_, None) => cedar_policy::Context::empty(),
            (text, Some((now, context))) if text == &**now => context.clone(),
            // Asked with access facts: its own context.
            (text, Some(_)) => serde_json::from_str(text)
                .map_err(|e| e.to_string())
                .and_then(|v| {
                    cedar_policy::Context::from_json_value(v, None)
                        .map_err(|e| crate::decide::error_chain(&e))
                })?,
        };
        // Checked once per shape already; built without the schema.
        cedar_policy::Request::new(
            key.principal().clone(),
            key.action().clone(),
            key.resource().clone(),
            context,
            None,
        )
        .map_err(|e| crate::decide::error_chain(&e))
    }

    /// The cache's answer when nothing it depends on changed since the last plan, else
    /// Cedar's; the request is built (and schema-checked) only for Cedar.
    fn answer(
        &mut self,
        key: &DecisionKey,
        context_entities: &[EntityUid],
    ) -> std::result::Result<Arc<Answer>, String> {
        if !self.fresh {
            if let Some(answer) = self.engine.cached_answer(key) {
                return Ok(answer);
            }
        }
        let request = self.request(key)?;
        let answer = self
            .engine
            .ask_recalling(key, &request, context_entities, &mut self.recent);
        self.unremembered
            .push((key.clone(), answer.clone(), context_entities.to_vec()));
        if self.unremembered.len() >= REMEMBERED_TOGETHER {
            self.remember();
        }
        Ok(answer)
    }

    pub(super) fn decide(
        &mut self,
        principal: &EntityUid,
        action: &'static str,
        resource: &EntityUid,
    ) -> Arc<Verdict> {
        self.decide_given(principal, action, resource, None)
    }

    /// Like `decide`, asked with one stored fact in its context under `attribute` (a
    /// break-glass grant): the question the API asks with the fact it chose from the store.
    pub(super) fn decide_with_fact(
        &mut self,
        principal: &EntityUid,
        action: &'static str,
        resource: &EntityUid,
        attribute: &str,
        fact: &EntityUid,
    ) -> Arc<Verdict> {
        self.decide_given(principal, action, resource, Some((attribute, fact)))
    }

    fn decide_given(
        &mut self,
        principal: &EntityUid,
        action: &'static str,
        resource: &EntityUid,
        fact: Option<(&str, &EntityUid)>,
    ) -> Arc<Verdict> {
        let Some(a) = self.action(action) else {
            return self.unasked(
                principal,
                action,
                resource,
                format!("bad action `{action}`"),
            );
        };
        let timed = match self.timed(principal, action, &a, resource) {
            Ok(timed) => timed,
            Err(e) => return self.unasked(principal, action, resource, e),
        };
        let facts = match (timed, fact) {
            (true, Some((attribute, uid))) => self.fact_context(attribute, uid),
            (true, None) => self.access_facts(action, principal, resource),
            (false, _) => None,
        };
        let key = match (&self.now, timed, &facts) {
            (Some(_), true, Some((_, text))) => {
                DecisionKey::new(principal.clone(), a, resource.clone(), text.clone())
            }
            (Some((text, _)), true, None) => {
                DecisionKey::new(principal.clone(), a, resource.clone(), text.clone())
            }
            _ => DecisionKey::empty_context(principal.clone(), a, resource.clone()),
        };
        let context_entities: &[EntityUid] = match &facts {
            Some((uids, _)) => uids,
            None => &[],
        };
        let answer = match self.answer(&key, context_entities) {
            Ok(answer) => answer,
            Err(e) => return self.unasked(principal, action, resource, e),
        };
        self.count += 1;
        if !answer.errors.is_empty() {
            self.warnings.push(format!(
                "`{action}` for `{principal}` on `{resource}` had policy errors; treated as unknown: {}",
                error_texts(&answer).join("; ")
            ));
        }
        // The verdict keeps the key's own uids: no more copies per decision.
        let (principal, resource, context) = key.into_parts();
        Arc::new(Verdict {
            principal,
            action,
            resource,
            context,
            answer,
        })
    }

    /// The access facts a data access question is asked with, and the context text with
    /// them.
    fn access_facts(
        &self,
        action: &'static str,
        principal: &EntityUid,
        resource: &EntityUid,
    ) -> Option<(Vec<EntityUid>, Arc<str>)> {
        if self.facts.is_empty() || !crate::plan::DATA_ACTIONS.contains(&action) {
            return None;
        }
        let (context, uids) = self.facts.context_at(principal, resource, self.now_ms?)?;
        Some((uids, Arc::from(context.to_string())))
    }

    /// The clock's context with `fact` under `attribute`, and the fact as the one entity the
    /// answer depends on beyond the request's.
    fn fact_context(
        &self,
        attribute: &str,
        fact: &EntityUid,
    ) -> Option<(Vec<EntityUid>, Arc<str>)> {
        let mut context = json!({"now": crate::clock::datetime_value(self.now_ms?)});
        context[attribute] = crate::entities::entity_json(fact);
        Some((vec![fact.clone()], Arc::from(context.to_string())))
    }

    /// A request the schema rejects is denied: never allow what cannot be asked.
    fn unasked(
        &mut self,
        principal: &EntityUid,
        action: &'static str,
        resource: &EntityUid,
        e: String,
    ) -> Arc<Verdict> {
        self.warnings.push(format!(
            "cannot ask `{action}` for `{principal}` on `{resource}`: {e}"
        ));
        Arc::new(Verdict {
            principal: principal.clone(),
            action,
            resource: resource.clone(),
            context: None,
            answer: Arc::new(Answer {
                decision: Decision::Deny,
                reasons: Vec::new(),
                errors: vec![PolicyError {
                    policy: String::new(),
                    message: format!("the request could not be asked: {e}"),
                }],
            }),
        })
    }
}

/// An answer's errors as the plan shows them: `policy: message`.
fn error_texts(answer: &Answer) -> Vec<String> {
    answer
        .errors
        .iter()
        .map(|e| match e.policy.as_str() {
            "" => e.message.clone(),
            policy => format!("{policy}: {}", e.message),
        })
        .collect()
}

/// A decision as the planner keeps it: cheap to make (no text is built, the answer is the
/// cache's own), turned into a `Justification` only for the few that justify an item.
pub(super) struct Verdict {
    principal: EntityUid,
    action: &'static str,
    resource: EntityUid,
    /// The context text it was asked with, unless `{}`.
    context: Option<Arc<str>>,
    answer: Arc<Answer>,
}

impl Verdict {
    pub(super) fn allows(&self) -> bool {
        self.answer.decision == Decision::Allow && self.answer.errors.is_empty()
    }

    pub(super) fn denies(&self) -> bool {
        self.answer.decision == Decision::Deny && self.answer.errors.is_empty()
    }

    /// Unknown: the policies errored or the request could not be asked.
    pub(super) fn errored(&self) -> bool {
        !self.answer.errors.is_empty()
    }

    pub(super) fn action(&self) -> &'static str {
        self.action
    }

    pub(super) fn principal(&self) -> &EntityUid {
        &self.principal
    }

    pub(super) fn reasons(&self) -> &[String] {
        &self.answer.reasons
    }

    pub(super) fn justification(&self) -> Justification {
        Justification {
            request: RequestSpec {
                principal: self.principal.to_string(),
                action: format!("Tre::Action::\"{}\"", self.action),
                resource: self.resource.to_string(),
                context: self
                    .context
                    .as_deref()
                    .and_then(|text| serde_json::from_str(text).ok())
                    .unwrap_or_else(|| json!({})),
            },
            decision: self.answer.decision,
            reasons: self.answer.reasons.clone(),
            errors: error_texts(&self.answer),
            log_seq: None,
        }
    }
}

/// Decisions are shared while planning (most never justify an item) and copied only into
/// the items that need them.
pub(super) fn materialize<'a>(
    why: impl IntoIterator<Item = &'a Arc<Verdict>>,
) -> Vec<Justification> {
    why.into_iter().map(|v| v.justification()).collect()
}

/// A plan item (see `PlanItem::new`).
pub(super) fn item(change: Change, reason: String, decisions: Vec<Justification>) -> PlanItem {
    PlanItem::new(change, reason, decisions)
}

impl PlanItem {
    /// Marks the item as one that takes access away.
    pub(super) fn revoking(mut self, revokes: Revokes) -> Self {
        self.revokes = revokes;
        self
    }

    /// Names the users whose access the item alters.
    pub(super) fn affecting<'u>(mut self, users: impl IntoIterator<Item = &'u EntityUid>) -> Self {
        self.affects = users
            .into_iter()
            .map(|u| u.id().unescaped().to_string())
            .collect();
        self
    }
}
