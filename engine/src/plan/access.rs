//! Access reviews: who may reach a dataset, and what a user may reach, with the policies that
//! allow it and the moment that will end it.
//!
//! A user's rows are the planner's own questions (`read`, `write`, `administer`, asked at the
//! plan's clock through the same decider and cache); a workspace role's rows are the access
//! the planner grants it (`data_access::role_access`), so after an apply the role rows are
//! what Lake Formation holds. When access ends is asked of Cedar too: the same question at
//! each later moment a date in its slice passes (with the memberships ended by then left
//! out), the first that is not allowed.

use std::collections::BTreeSet;

use cedar_policy::EntityUid;
use serde::Serialize;
use serde_json::{json, Value};

use super::data_access::role_access;
use super::decider::Decider;
use super::index::{GraphIndex, Protected};
use super::{ActualState, Inputs, PlanSettings};
use crate::clock::{datetime_text, datetime_value};
use crate::decide::{Engine, RequestSpec};

/// The data actions an access review covers.
pub const DATA_ACTIONS: [&str; 3] = ["read", "write", "administer"];

/// What a report covers.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Every user and workspace role that may reach this dataset.
    Dataset(EntityUid),
    /// Everything this user may reach, directly and through their workspaces' roles.
    User(EntityUid),
}

/// One access: a holder may do `action` on `dataset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reach {
    /// `user` or `role`.
    pub holder_kind: &'static str,
    /// The user's id, or the role's ARN.
    pub holder: String,
    /// For a role: the users whose workspaces it runs (whose decisions it holds).
    pub owners: Vec<String>,
    pub dataset: String,
    pub action: &'static str,
    /// The policies that allow it.
    pub policies: Vec<String>,
    /// When it ends, if a date in view ends it.
    pub ends: Option<Ending>,
}

/// The moment an access ends and what ends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ending {
    pub at: String,
    #[serde(skip)]
    pub at_ms: i64,
    /// The policies that deny it then, and the memberships ended by then.
    pub because: Vec<String>,
}

/// An access report at one moment of the governance clock.
#[derive(Debug, Clone, Serialize)]
pub struct AccessReport {
    pub at: String,
    pub rows: Vec<Reach>,
    pub warnings: Vec<String>,
}

/// The access report for `scope` now: at the governance clock of the wall clock, against
/// the actual state the collectors recorded (what `tregov access` and the web app show).
pub fn access_report_now(
    engine: &Engine,
    mut settings: PlanSettings,
    scope: &Scope,
) -> crate::error::Result<AccessReport> {
    settings.now = Some(engine.tick_at(std::time::SystemTime::now()).now);
    let actual = match engine.store() {
        Some(store) => ActualState::from_observed(&store.observed(None)?),
        None => ActualState::default(),
    };
    Ok(access_report(engine, &actual, &settings, scope))
}

/// The access report for `scope`, at `settings.now` (the governance clock; without it every
/// dated policy holds access back, as in a plan).
pub fn access_report(
    engine: &Engine,
    actual: &ActualState,
    settings: &PlanSettings,
    scope: &Scope,
) -> AccessReport {
    let graph = engine.graph();
    let now = settings.now.unwrap_or(0);
    let mut decider = Decider::new(engine, settings.now);
    let protected = Protected::new(&settings.protected_principals, actual);
    let (index, _) = super::governed_index(graph, actual, &protected, &mut decider);
    let inputs = Inputs {
        graph,
        index: &index,
        actual,
        settings,
        protected: &protected,
    };
    let mut rows = user_rows(engine, &index, &mut decider, scope, now);
    rows.extend(role_rows(engine, &inputs, &mut decider, scope, now));
    decider.remember();
    AccessReport {
        at: datetime_text(now),
        rows,
        warnings: std::mem::take(&mut decider.warnings),
    }
}

fn user_rows(
    engine: &Engine,
    index: &GraphIndex,
    decider: &mut Decider,
    scope: &Scope,
    now: i64,
) -> Vec<Reach> {
    let (users, datasets): (Vec<EntityUid>, Vec<EntityUid>) = match scope {
        Scope::Dataset(d) => (
            engine
                .graph()
                .uids()
                .filter(|u| crate::entities::is_type(u, "Tre::User"))
                .cloned()
                .collect(),
            vec![d.clone()],
        ),
        Scope::User(u) => (vec![u.clone()], index.datasets.keys().cloned().collect()),
    };
    let mut rows = Vec::new();
    for user in &users {
        for dataset in &datasets {
            for action in DATA_ACTIONS {
                let verdict = decider.decide(user, action, dataset);
                if !verdict.allows() {
                    continue;
                }
                rows.push(Reach {
                    holder_kind: "user",
                    holder: user.id().unescaped().to_string(),
                    owners: Vec::new(),
                    dataset: dataset.id().unescaped().to_string(),
                    action,
                    policies: verdict.reasons().to_vec(),
                    ends: ending(engine, user, action, dataset, now),
                });
            }
        }
    }
    rows.sort_by(|a, b| (&a.dataset, &a.holder, a.action).cmp(&(&b.dataset, &b.holder, b.action)));
    rows
}

/// The roles' rows: the planner's access for each governed role in scope.
fn role_rows(
    engine: &Engine,
    inputs: &Inputs,
    decider: &mut Decider,
    scope: &Scope,
    now: i64,
) -> Vec<Reach> {
    let memo = engine.plan_memo();
    let mut rows = Vec::new();
    for (arn, owners) in &inputs.index.role_owners {
        if let Scope::User(user) = scope {
            if !owners.contains(user) {
                continue;
            }
        }
        for (dataset, write, why) in role_access(inputs, &memo, decider, arn, owners) {
            if matches!(scope, Scope::Dataset(d) if *d != dataset) {
                continue;
            }
            for action in ["read", "write"] {
                if action == "write" && !write {
                    continue;
                }
                let allowing: Vec<_> = why
                    .iter()
                    .filter(|v| v.action() == action && v.allows())
                    .collect();
                let policies: BTreeSet<String> =
                    allowing.iter().flat_map(|v| v.reasons().to_vec()).collect();
                // The role keeps it until the last of its owners loses it.
                let endings: Vec<Option<Ending>> = allowing
                    .iter()
                    .map(|v| ending(engine, v.principal(), action, &dataset, now))
                    .collect();
                let ends = match endings.iter().any(Option::is_none) {
                    true => None,
                    false => endings.into_iter().flatten().max_by_key(|e| e.at_ms),
                };
                rows.push(Reach {
                    holder_kind: "role",
                    holder: arn.clone(),
                    owners: owners
                        .iter()
                        .map(|o| o.id().unescaped().to_string())
                        .collect(),
                    dataset: dataset.id().unescaped().to_string(),
                    action,
                    policies: policies.into_iter().collect(),
                    ends,
                });
            }
        }
    }
    rows.sort_by(|a, b| (&a.dataset, &a.holder, a.action).cmp(&(&b.dataset, &b.holder, b.action)));
    rows
}

/// The first moment after `now` at which Cedar no longer allows `user` to do `action` on
/// `dataset`: the same question asked at each later moment a date of its slice passes.
fn ending(
    engine: &Engine,
    user: &EntityUid,
    action: &'static str,
    dataset: &EntityUid,
    now: i64,
) -> Option<Ending> {
    let slice = engine.graph().slice([user, dataset]);
    for at in engine.moments_for(slice.iter(), now) {
        let spec = RequestSpec {
            principal: user.to_string(),
            action: format!("Tre::Action::\"{action}\""),
            resource: dataset.to_string(),
            context: json!({"now": datetime_value(at)}),
        };
        let (user_then, ended) = as_of(engine, user, at);
        let Ok((_, outcome)) = engine.decide_with(spec, &user_then, None) else {
            continue;
        };
        if !outcome.allows() {
            let mut because = outcome.reasons.clone();
            because.extend(ended.into_iter().map(|m| format!("membership of {m} ends")));
            return Some(Ending {
                at: datetime_text(at),
                at_ms: at,
                because,
            });
        }
    }
    None
}

/// `user` as the identity source will describe it at `at`, when a membership of theirs has
/// ended by then (otherwise nothing: the store's entity stands), and the memberships ended.
fn as_of(engine: &Engine, user: &EntityUid, at: i64) -> (Vec<Value>, Vec<String>) {
    let Some(mut json) = engine
        .graph()
        .render_entity(user)
        .and_then(|(text, _)| serde_json::from_str::<Value>(&text).ok())
    else {
        return (Vec::new(), Vec::new());
    };
    let ended: Vec<String> = crate::memberships::ending(&json)
        .into_iter()
        .filter(|(_, ends)| *ends <= at)
        .map(|(parent, _)| parent)
        .collect();
    if ended.is_empty() {
        return (Vec::new(), Vec::new());
    }
    if let Some(parents) = json.get_mut("parents").and_then(Value::as_array_mut) {
        parents.retain(|p| {
            crate::entities::uid_from_json(p).is_none_or(|uid| !ended.contains(&uid.to_string()))
        });
    }
    (vec![json], ended)
}
