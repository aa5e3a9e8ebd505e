//! Exemptions: a data manager lets one user's access to one study through one named policy,
//! until a date. They are `Tre::Exemption` entities in the store (partition `exemptions`),
//! granted through a Cedar decision (`grantExemption`) and logged; a data access decision
//! is asked with the exemption the store holds for its user and study in its context
//! (`context.exemption`), which the policies that may be exempted from read. Past its date an
//! exemption is left out of the question, and the policies would not honour it anyway.

use cedar_policy::EntityUid;
use serde::Serialize;
use serde_json::{json, Value};

use crate::access_facts::ByAccess;
use crate::clock::{datetime_text, datetime_value, json_datetime_ms};
use crate::decide::Engine;
use crate::entities::EntityGraph;
use crate::entities::{uid_from_json, uid_from_parts};
use crate::workflow::{decide_as, write_records, WorkflowError};

/// The store partition exemptions are kept in.
pub const PARTITION: &str = "exemptions";
const TYPE: &str = "Tre::Exemption";

/// One exemption as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exemption {
    pub id: String,
    pub user: String,
    pub dataset: String,
    pub policy: String,
    pub reason: String,
    pub granted_by: String,
    pub expires: String,
    #[serde(skip)]
    pub expires_ms: i64,
}

impl Exemption {
    fn from_json(uid: &EntityUid, attrs: &Value) -> Option<Self> {
        let id_of =
            |name: &str| uid_from_json(&attrs[name]).map(|u| u.id().unescaped().to_string());
        let expires_ms = json_datetime_ms(&attrs["expires"])?;
        Some(Self {
            id: uid.id().unescaped().to_string(),
            user: id_of("user")?,
            dataset: id_of("dataset")?,
            policy: attrs["policy"].as_str()?.to_string(),
            reason: attrs["reason"].as_str().unwrap_or_default().to_string(),
            granted_by: id_of("grantedBy").unwrap_or_default(),
            expires: datetime_text(expires_ms),
            expires_ms,
        })
    }
}

/// The stored exemptions by (user, study), to find the one a data access question is asked
/// with.
#[derive(Debug, Clone, Default)]
pub struct ExemptionIndex(ByAccess<i64>);

impl ExemptionIndex {
    /// Every exemption `graph` holds.
    pub fn of(graph: &EntityGraph) -> Self {
        let mut index = ByAccess::default();
        for (uid, e) in stored_in(graph) {
            index.insert(&e.user, &e.dataset, uid, e.expires_ms);
        }
        Self(index)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The exemption a question about `user` and `dataset` at `now` is asked with: of those
    /// not yet ended, the one that lasts longest (ties: the first by uid).
    pub fn for_access(
        &self,
        user: &EntityUid,
        dataset: &EntityUid,
        now: i64,
    ) -> Option<&EntityUid> {
        self.0
            .get(user, dataset)
            .iter()
            .filter(|(_, expires)| *expires > now)
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
            .map(|(uid, _)| uid)
    }
}

/// Every stored exemption, by uid order.
pub fn stored(engine: &Engine) -> Vec<(EntityUid, Exemption)> {
    stored_in(engine.graph())
}

fn stored_in(graph: &EntityGraph) -> Vec<(EntityUid, Exemption)> {
    crate::access_facts::stored_of(graph, TYPE)
        .into_iter()
        .filter_map(|(uid, attrs)| {
            let exemption = Exemption::from_json(&uid, &attrs)?;
            Some((uid, exemption))
        })
        .collect()
}

/// What a data manager asks for.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewExemption {
    pub user: String,
    pub dataset: String,
    pub policy: String,
    /// When it ends: a Cedar `datetime` text (`2027-01-31`, `2027-01-31T12:00:00Z`).
    pub until: String,
    pub reason: String,
}

/// Grants an exemption as `caller`: the `grantExemption` decision (logged) must allow it;
/// the exemption is then written to the store, where the next plan reads it.
pub fn grant(
    engine: &Engine,
    caller: &str,
    new: &NewExemption,
) -> std::result::Result<Exemption, WorkflowError> {
    let expires = json!({"__extn": {"fn": "datetime", "arg": new.until}});
    let expires_ms = json_datetime_ms(&expires).ok_or_else(|| {
        WorkflowError::Invalid(format!("`until`: `{}` is not a Cedar datetime", new.until))
    })?;
    if new.reason.trim().is_empty() {
        return Err(WorkflowError::Invalid("an exemption needs a reason".into()));
    }
    if !engine
        .bundle()
        .set
        .policies()
        .any(|p| p.id().to_string() == new.policy)
    {
        return Err(WorkflowError::Invalid(format!(
            "no policy `{}`",
            new.policy
        )));
    }
    let user = uid_from_parts("Tre::User", &new.user)?;
    let dataset = uid_from_parts("Tre::Dataset", &new.dataset)?;
    let context = json!({"user": crate::entities::entity_json(&user), "policy": new.policy});
    let log_seq = decide_as(
        engine,
        caller,
        "grantExemption",
        &dataset,
        context,
        PARTITION,
        "granting this exemption",
    )?;
    let id = format!("{}/{}/{}/{expires_ms}", new.policy, new.dataset, new.user);
    let record = exemption_record(&id, &user, &dataset, new, caller, expires_ms);
    write_records(engine, PARTITION, vec![record])?;
    tracing::info!(exemption = %id, by = caller, ?log_seq, "exemption granted");
    Ok(Exemption {
        id,
        user: new.user.clone(),
        dataset: new.dataset.clone(),
        policy: new.policy.clone(),
        reason: new.reason.clone(),
        granted_by: caller.to_string(),
        expires: datetime_text(expires_ms),
        expires_ms,
    })
}

fn exemption_record(
    id: &str,
    user: &EntityUid,
    dataset: &EntityUid,
    new: &NewExemption,
    caller: &str,
    expires_ms: i64,
) -> Value {
    json!({
        "uid": {"type": TYPE, "id": id},
        "attrs": {
            "user": crate::entities::entity_json(user),
            "dataset": crate::entities::entity_json(dataset),
            "policy": new.policy,
            "reason": new.reason,
            "grantedBy": {"__entity": {"type": "Tre::User", "id": caller}},
            "expires": datetime_value(expires_ms),
        },
        "parents": [],
    })
}
