//! Break-glass as a workflow. An auditor requests emergency access into a project
//! (`requestBreakGlass`: a reason, a duration up to `[breakglass] max_seconds`); a member of
//! the approver role, never the requester, approves it (`approveBreakGlass`), which writes a
//! `Tre::BreakGlassGrant` ending that many seconds later; the holder or an approver may end
//! it early (`revokeBreakGlass`, recorded on the grant, never deleted). Every step is a
//! logged Cedar decision; requests and grants are entities in the store (partition
//! `breakglass`). The planner opens what the grants allow (see `plan::breakglass`).

use cedar_policy::EntityUid;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::clock::{datetime_text, datetime_value, json_datetime_ms, wall_ms};
use crate::decide::Engine;
use crate::entities::{uid_from_json, uid_from_parts, EntityGraph};
use crate::error::EngineError;
use crate::workflow::{decide_as, write_records, WorkflowError};

/// The store partition requests and grants are kept in.
pub const PARTITION: &str = "breakglass";
/// The origin of the workflow's decisions in the log.
const ORIGIN: &str = "breakglass";
pub const REQUEST: &str = "Tre::BreakGlassRequest";
pub const GRANT: &str = "Tre::BreakGlassGrant";

/// The deployment's limits on the workflow (`[breakglass]`).
#[derive(Debug, Clone)]
pub struct BreakGlassSettings {
    pub max_seconds: u64,
    /// The role whose members approve.
    pub approvers: String,
}

/// What an auditor asks for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    pub project: String,
    pub reason: String,
    pub seconds: u64,
}

/// One request as stored, with the grant that approved it, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Request {
    pub id: String,
    pub user: String,
    pub project: String,
    pub reason: String,
    pub seconds: u64,
    pub requested_at: String,
    pub approvers: String,
}

/// One grant as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    pub id: String,
    pub user: String,
    pub project: String,
    pub approved_by: String,
    pub reason: String,
    pub expires_at: String,
    #[serde(skip)]
    pub expires_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

impl Grant {
    /// Whether it still stands at `now` (what the policies then decide is another matter).
    pub fn stands_at(&self, now: i64) -> bool {
        self.revoked_by.is_none() && now < self.expires_ms
    }
}

/// Whether an `awsPrincipal` names one IAM user or role (or a session of one): what a
/// trust policy may admit. `*`, an account id or an account's root would admit everyone in
/// it.
pub fn is_admissible_principal(principal: &str) -> bool {
    let parts: Vec<&str> = principal.splitn(6, ':').collect();
    let [arn, partition, service, region, account, resource] = parts.as_slice() else {
        return false;
    };
    let named = |prefix: &str| {
        resource
            .strip_prefix(prefix)
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('*'))
    };
    *arn == "arn"
        && partition.starts_with("aws")
        && region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && match *service {
            "iam" => named("user/") || named("role/"),
            "sts" => named("assumed-role/"),
            _ => false,
        }
}

fn id_of(attrs: &Value, name: &str) -> Option<String> {
    uid_from_json(&attrs[name]).map(|u| u.id().unescaped().to_string())
}

fn request_from(uid: &EntityUid, attrs: &Value) -> Option<Request> {
    Some(Request {
        id: uid.id().unescaped().to_string(),
        user: id_of(attrs, "user")?,
        project: id_of(attrs, "project")?,
        reason: attrs["reason"].as_str()?.to_string(),
        seconds: attrs["seconds"].as_u64()?,
        requested_at: datetime_text(json_datetime_ms(&attrs["requestedAt"])?),
        approvers: id_of(attrs, "approvers")?,
    })
}

fn grant_from(uid: &EntityUid, attrs: &Value) -> Option<Grant> {
    let expires_ms = json_datetime_ms(&attrs["expiresAt"])?;
    Some(Grant {
        id: uid.id().unescaped().to_string(),
        user: id_of(attrs, "user")?,
        project: id_of(attrs, "project")?,
        approved_by: id_of(attrs, "approvedBy")?,
        reason: attrs["reason"].as_str()?.to_string(),
        expires_at: datetime_text(expires_ms),
        expires_ms,
        revoked_by: id_of(attrs, "revokedBy"),
        revoked_at: json_datetime_ms(&attrs["revokedAt"]).map(datetime_text),
    })
}

/// Every stored request, by id.
pub fn requests(graph: &EntityGraph) -> Vec<Request> {
    crate::access_facts::stored_of(graph, REQUEST)
        .iter()
        .filter_map(|(uid, attrs)| request_from(uid, attrs))
        .collect()
}

/// Every stored grant (ended ones too), by id, with its uid.
pub fn grants(graph: &EntityGraph) -> Vec<(EntityUid, Grant)> {
    crate::access_facts::stored_of(graph, GRANT)
        .iter()
        .filter_map(|(uid, attrs)| Some((uid.clone(), grant_from(uid, attrs)?)))
        .collect()
}

fn entity_ref(type_name: &str, id: &str) -> Value {
    json!({"__entity": {"type": type_name, "id": id}})
}

/// Records `caller`'s request for break-glass into `new.project`.
pub fn request(
    engine: &Engine,
    settings: &BreakGlassSettings,
    caller: &str,
    new: &NewRequest,
) -> Result<Request, WorkflowError> {
    if new.reason.trim().is_empty() {
        return Err(WorkflowError::Invalid(
            "a break-glass request needs a reason".into(),
        ));
    }
    if new.seconds == 0 || new.seconds > settings.max_seconds {
        return Err(WorkflowError::Invalid(format!(
            "`seconds`: {} is not between 1 and the configured maximum, {}",
            new.seconds, settings.max_seconds
        )));
    }
    let user = uid_from_parts("Tre::User", caller)?;
    let principal = engine
        .graph()
        .entity(&user)
        .and_then(|e| match e.attr("awsPrincipal") {
            Some(Ok(cedar_policy::EvalResult::String(p))) => Some(p),
            _ => None,
        });
    if !principal.as_deref().is_some_and(is_admissible_principal) {
        return Err(WorkflowError::Invalid(format!(
            "`{caller}` has no `awsPrincipal` naming an IAM user or role in the identity source: there is nothing to admit"
        )));
    }
    let project = uid_from_parts("Tre::Project", &new.project)?;
    let context = json!({"reason": new.reason, "seconds": new.seconds});
    let log_seq = decide_as(
        engine,
        caller,
        "requestBreakGlass",
        &project,
        context,
        ORIGIN,
        "requesting break-glass",
    )?;
    let now = wall_ms(std::time::SystemTime::now());
    let made = Request {
        id: format!("{}/{caller}/{now}", new.project),
        user: caller.to_string(),
        project: new.project.clone(),
        reason: new.reason.clone(),
        seconds: new.seconds,
        requested_at: datetime_text(now),
        approvers: settings.approvers.clone(),
    };
    let record = json!({
        "uid": {"type": REQUEST, "id": made.id},
        "attrs": {
            "user": entity_ref("Tre::User", caller),
            "project": entity_ref("Tre::Project", &new.project),
            "reason": new.reason,
            "seconds": new.seconds,
            "requestedAt": datetime_value(now),
            "approvers": entity_ref("Tre::Role", &settings.approvers),
        },
        "parents": [],
    });
    write_records(engine, PARTITION, vec![record])?;
    tracing::warn!(request = %made.id, by = caller, project = %new.project, seconds = new.seconds, ?log_seq, "break-glass requested");
    Ok(made)
}

/// Approves request `id` as `caller`: the grant it writes ends `seconds` from now (never
/// beyond the maximum configured now, which may have been lowered since it was asked).
pub fn approve(
    engine: &Engine,
    settings: &BreakGlassSettings,
    caller: &str,
    id: &str,
) -> Result<Grant, WorkflowError> {
    let graph = engine.graph();
    let found = requests(graph)
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| WorkflowError::NotFound(format!("break-glass request `{id}`")))?;
    if found.seconds > settings.max_seconds {
        return Err(WorkflowError::Invalid(format!(
            "break-glass request `{id}` asks for {} s, more than the configured maximum, {}: ask again",
            found.seconds, settings.max_seconds
        )));
    }
    let grant_uid = uid_from_parts(GRANT, id)?;
    if graph.entity(&grant_uid).is_some() {
        return Err(WorkflowError::Conflict(format!(
            "break-glass request `{id}` is approved already"
        )));
    }
    let request_uid = uid_from_parts(REQUEST, id)?;
    let log_seq = decide_as(
        engine,
        caller,
        "approveBreakGlass",
        &request_uid,
        json!({}),
        ORIGIN,
        "approving break-glass",
    )?;
    let now = wall_ms(std::time::SystemTime::now());
    let seconds = i64::try_from(found.seconds).unwrap_or(i64::MAX);
    let expires_ms = now.saturating_add(seconds.saturating_mul(1000));
    let record = json!({
        "uid": {"type": GRANT, "id": id},
        "attrs": {
            "user": entity_ref("Tre::User", &found.user),
            "project": entity_ref("Tre::Project", &found.project),
            "approvedBy": entity_ref("Tre::User", caller),
            "reason": found.reason,
            "expiresAt": datetime_value(expires_ms),
            "request": entity_ref(REQUEST, id),
        },
        "parents": [],
    });
    write_records(engine, PARTITION, vec![record])?;
    tracing::warn!(grant = %id, user = %found.user, project = %found.project, by = caller, until = %datetime_text(expires_ms), ?log_seq, "break-glass approved");
    Ok(Grant {
        id: id.to_string(),
        user: found.user,
        project: found.project,
        approved_by: caller.to_string(),
        reason: found.reason,
        expires_at: datetime_text(expires_ms),
        expires_ms,
        revoked_by: None,
        revoked_at: None,
    })
}

/// Ends grant `id` early as `caller`: recorded on the grant, which stays.
pub fn revoke(engine: &Engine, caller: &str, id: &str) -> Result<Grant, WorkflowError> {
    let (uid, mut grant) = grants(engine.graph())
        .into_iter()
        .find(|(_, g)| g.id == id)
        .ok_or_else(|| WorkflowError::NotFound(format!("break-glass grant `{id}`")))?;
    if grant.revoked_by.is_some() {
        return Err(WorkflowError::Conflict(format!(
            "break-glass grant `{id}` is revoked already"
        )));
    }
    let log_seq = decide_as(
        engine,
        caller,
        "revokeBreakGlass",
        &uid,
        json!({}),
        ORIGIN,
        "revoking break-glass",
    )?;
    let now = wall_ms(std::time::SystemTime::now());
    let mut record = json!({"uid": {"type": GRANT, "id": id}, "parents": []});
    let (text, _) = engine
        .graph()
        .render_entity(&uid)
        .ok_or_else(|| EngineError::Request(format!("break-glass grant `{id}` vanished")))?;
    let stored: Value =
        serde_json::from_str(&text).map_err(|e| EngineError::Request(e.to_string()))?;
    record["attrs"] = stored["attrs"].clone();
    record["attrs"]["revokedBy"] = entity_ref("Tre::User", caller);
    record["attrs"]["revokedAt"] = datetime_value(now);
    write_records(engine, PARTITION, vec![record])?;
    tracing::warn!(grant = %id, by = caller, ?log_seq, "break-glass revoked");
    grant.revoked_by = Some(caller.to_string());
    grant.revoked_at = Some(datetime_text(now));
    Ok(grant)
}

#[cfg(test)]
mod tests {
    use super::is_admissible_principal;

    #[test]
    fn only_one_named_user_or_role_is_admitted_never_an_account_or_everyone() {
        for ok in [
            "arn:aws:iam::111111111111:user/ivan",
            "arn:aws:iam::111111111111:role/auditors/ivan",
            "arn:aws:sts::111111111111:assumed-role/auditor/ivan",
        ] {
            assert!(is_admissible_principal(ok), "{ok}");
        }
        for bad in [
            "*",
            "111111111111",
            "arn:aws:iam::111111111111:root",
            "arn:aws:iam::111111111111:user/",
            "arn:aws:iam::111111111111:role/*",
            "arn:aws:s3:::bucket",
            "arn:aws:iam::1111:user/ivan",
        ] {
            assert!(!is_admissible_principal(bad), "{bad}");
        }
    }
}
