//! Authorization for other TRE apps, shaped like Amazon Verified Permissions:
//! `POST /v1/is-authorized` and `POST /v1/batch-is-authorized` (at most 30 requests), with
//! AVP's field names (principal, action, resource, `contextMap` or `cedarJson`; decision,
//! determining policies, errors). tregov decides over its own store: caller-supplied
//! `entities` are refused. A user asks only about themselves; an app registered as a service
//! (its token's `sub` in `[api] services`, e.g. a Cognito client-credentials client) asks
//! about anyone.
//!
//! The context is the caller's only where the schema leaves it so: the server puts in the
//! facts it marks `@serverProvided` (`facts`), and the answer lists, as `ignoredContext`,
//! what the caller gave there. An erroring policy makes the answer DENY (`asked`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tregov_engine::{Engine, RequestSpec};

use crate::facts::{ContextMarks, Settled};
use crate::guard::Caller;
use crate::{Api, ApiError, ApiResult};

pub(crate) fn routes(limits: &tregov_config::api::ApiLimits) -> axum::Router<Arc<Api>> {
    use axum::routing::post;
    axum::Router::new()
        .route("/v1/is-authorized", post(is_authorized))
        .route(
            "/v1/batch-is-authorized",
            post(batch_is_authorized).layer(axum::extract::DefaultBodyLimit::max(
                limits.max_batch_body_bytes,
            )),
        )
}

/// Who asks: the token's subject, and whether it is a registered service.
#[derive(Clone)]
pub(crate) struct Asker {
    pub(crate) sub: String,
    pub(crate) service: bool,
}

impl Api {
    pub(crate) fn asker(&self, sub: String) -> Asker {
        let service = self.services.contains(&sub);
        Asker { sub, service }
    }

    /// Users ask only about themselves; a registered service asks about anyone.
    fn may_ask(&self, asker: &Asker, principals: &[String]) -> ApiResult<()> {
        let me = avp_uid("Tre::User", &asker.sub);
        if asker.service || principals.iter().all(|p| *p == me) {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "`{}` may ask only about itself (`{me}`): only a service registered in `[api] services` asks about others",
                asker.sub
            ),
        ))
    }

    /// The server-provided context of the policies `engine` decides with.
    fn marks(&self, engine: &Engine) -> ApiResult<Arc<ContextMarks>> {
        let broken = |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e);
        let mut current = self.marks.lock().map_err(|e| broken(e.to_string()))?;
        if current.version() != engine.bundle().version {
            *current = Arc::new(
                ContextMarks::from_bundle(engine.bundle()).map_err(|e| broken(e.to_string()))?,
            );
        }
        Ok(current.clone())
    }
}

/// The governance clock now (see `tregov_engine::clock`): the server's own time as the
/// policies see it, the same `now` the planner asks at.
fn governance_now(engine: &Engine) -> String {
    tregov_engine::clock::datetime_text(engine.tick_at(std::time::SystemTime::now()).now)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AvpEntity {
    entity_type: String,
    entity_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AvpAction {
    action_type: String,
    action_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AvpContext {
    #[serde(default)]
    context_map: Option<Map<String, Value>>,
    #[serde(default)]
    cedar_json: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct AvpRequest {
    #[serde(default)]
    policy_store_id: Option<String>,
    principal: AvpEntity,
    action: AvpAction,
    resource: AvpEntity,
    #[serde(default)]
    context: Option<AvpContext>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AvpBatch {
    #[serde(default)]
    policy_store_id: Option<String>,
    requests: Vec<AvpBatchItem>,
}

#[derive(Deserialize, serde::Serialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct AvpBatchItem {
    pub(crate) principal: Value,
    pub(crate) action: Value,
    pub(crate) resource: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) context: Option<Value>,
}

/// AVP's typed attribute values as Cedar entities-JSON values.
fn avp_value(v: &Value) -> Result<Value, String> {
    let Some((kind, inner)) = v
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.iter().next())
    else {
        return Err(format!(
            "`{v}` is not an attribute value like {{\"string\": \"...\"}}"
        ));
    };
    Ok(match kind.as_str() {
        "string" | "long" | "boolean" => inner.clone(),
        "entityIdentifier" => {
            let e: AvpEntity = serde_json::from_value(inner.clone()).map_err(|e| e.to_string())?;
            json!({"__entity": {"type": e.entity_type, "id": e.entity_id}})
        }
        "set" => Value::Array(
            inner
                .as_array()
                .ok_or("`set` must be an array")?
                .iter()
                .map(avp_value)
                .collect::<Result<_, _>>()?,
        ),
        "record" => Value::Object(
            inner
                .as_object()
                .ok_or("`record` must be an object")?
                .iter()
                .map(|(k, v)| Ok((k.clone(), avp_value(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        "ipaddr" => json!({"__extn": {"fn": "ip", "arg": inner}}),
        "decimal" => json!({"__extn": {"fn": "decimal", "arg": inner}}),
        "datetime" => json!({"__extn": {"fn": "datetime", "arg": inner}}),
        "duration" => json!({"__extn": {"fn": "duration", "arg": inner}}),
        other => return Err(format!("unknown attribute value type `{other}`")),
    })
}

/// An entity named by type and id, as request text (`Tre::User::"alice"`).
pub(crate) fn avp_uid(entity_type: &str, id: &str) -> String {
    format!("{entity_type}::{}", Value::from(id))
}

pub(crate) fn avp_spec(request: &AvpRequest) -> Result<RequestSpec, String> {
    let _ = &request.policy_store_id;
    let context = match &request.context {
        None => Value::Object(Map::new()),
        Some(AvpContext {
            context_map: Some(map),
            cedar_json: None,
        }) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    Ok((
                        k.clone(),
                        avp_value(v).map_err(|e| format!("context `{k}`: {e}"))?,
                    ))
                })
                .collect::<Result<_, String>>()?,
        ),
        Some(AvpContext {
            context_map: None,
            cedar_json: Some(text),
        }) => serde_json::from_str(text).map_err(|e| format!("`cedarJson`: {e}"))?,
        Some(_) => {
            return Err("`context` takes exactly one of `contextMap` and `cedarJson`".into())
        }
    };
    Ok(RequestSpec {
        principal: avp_uid(&request.principal.entity_type, &request.principal.entity_id),
        action: avp_uid(&request.action.action_type, &request.action.action_id),
        resource: avp_uid(&request.resource.entity_type, &request.resource.entity_id),
        context,
    })
}

fn avp_answer(outcome: &tregov_engine::DecisionOutcome, ignored: &[String]) -> Value {
    let mut answer = json!({
        "decision": match outcome.decision {
            tregov_engine::Decision::Allow => "ALLOW",
            tregov_engine::Decision::Deny => "DENY",
        },
        "determiningPolicies": outcome.reasons.iter().map(|id| json!({"policyId": id})).collect::<Vec<_>>(),
        "errors": outcome.errors.iter().map(|e| json!({"errorDescription": format!("{}: {}", e.policy, e.message)})).collect::<Vec<_>>(),
        "logSeq": outcome.log_seq,
    });
    if let (false, Some(obj)) = (ignored.is_empty(), answer.as_object_mut()) {
        obj.insert("ignoredContext".into(), json!(ignored));
    }
    answer
}

/// The request with the server's facts in its context, read against the schema.
fn settle(
    api: &Api,
    engine: &Engine,
    asker: &Asker,
    spec: RequestSpec,
    now: &str,
) -> ApiResult<Result<(tregov_engine::decide::ParsedRequest, Vec<String>), String>> {
    let Settled { spec, ignored } = api.marks(engine)?.settle(engine, spec, asker.service, now);
    if !ignored.is_empty() {
        tracing::warn!(caller = %asker.sub, action = %spec.action, ignored = ?ignored, "ignored server-provided context a caller gave");
    }
    Ok(engine
        .parse(spec)
        .map(|request| (request, ignored))
        .map_err(|e| e.to_string()))
}

async fn is_authorized(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    Json(body): Json<AvpRequest>,
) -> ApiResult<Json<Value>> {
    let asker = api.asker(user);
    let spec = avp_spec(&body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    Ok(Json(answer_one(&api, asker, spec).await?))
}

/// One question, decided fail closed and logged: AVP's answer.
pub(crate) async fn answer_one(
    api: &Arc<Api>,
    asker: Asker,
    spec: RequestSpec,
) -> ApiResult<Value> {
    api.may_ask(&asker, std::slice::from_ref(&spec.principal))?;
    let caller = asker.sub.clone();
    let ((mut outcomes, ignored), seqs) = api
        .decide_logged(move |api, engine| {
            let now = governance_now(engine);
            let (request, ignored) = settle(api, engine, &asker, spec, &now)?
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
            let (outcomes, records) = crate::asked::decide_asked(engine, &[request], &asker.sub);
            Ok(((outcomes, ignored), records))
        })
        .await?;
    crate::asked::logged(&mut outcomes, seqs, &caller);
    let outcome = outcomes
        .first()
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no decision was made"))?;
    Ok(avp_answer(outcome, &ignored))
}

async fn batch_is_authorized(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    Json(body): Json<AvpBatch>,
) -> ApiResult<Json<Value>> {
    let asker = api.asker(user);
    let _ = &body.policy_store_id;
    let results = answer_batch(&api, asker, body.requests).await?;
    Ok(Json(json!({ "results": results })))
}

/// At most this many requests in one batch, as Verified Permissions allows.
pub(crate) const MAX_BATCH: usize = 30;

/// Up to 30 questions, decided fail closed and logged together: one AVP answer each, with
/// the request it answers.
pub(crate) async fn answer_batch(
    api: &Arc<Api>,
    asker: Asker,
    requests: Vec<AvpBatchItem>,
) -> ApiResult<Vec<Value>> {
    if requests.is_empty() || requests.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "`requests` takes 1 to {MAX_BATCH} requests, not {}",
                requests.len()
            ),
        ));
    }
    let principals: Vec<String> = requests.iter().map(batch_principal).collect();
    api.may_ask(&asker, &principals)?;
    let caller = asker.sub.clone();
    let ((mut outcomes, slots, requests), seqs) = api
        .decide_logged(move |api, engine| {
            let now = governance_now(engine);
            let mut parsed = Vec::new();
            let mut slots = Vec::new();
            for item in &requests {
                let spec = serde_json::to_value(item)
                    .and_then(serde_json::from_value::<AvpRequest>)
                    .map_err(|e| e.to_string())
                    .and_then(|r| avp_spec(&r));
                let settled = match spec {
                    Ok(spec) => settle(api, engine, &asker, spec, &now)?,
                    Err(e) => Err(e),
                };
                slots.push(settled.map(|(request, ignored)| {
                    parsed.push(request);
                    (parsed.len() - 1, ignored)
                }));
            }
            let (outcomes, records) = crate::asked::decide_asked(engine, &parsed, &asker.sub);
            Ok(((outcomes, slots, requests), records))
        })
        .await?;
    crate::asked::logged(&mut outcomes, seqs, &caller);
    Ok(requests
        .iter()
        .zip(slots)
        .map(|(item, slot)| {
            let outcome = slot.and_then(|(i, ignored)| {
                outcomes
                    .get(i)
                    .map(|o| (o, ignored))
                    .ok_or_else(|| "no decision was made".to_string())
            });
            let mut answer = match outcome {
                Ok((outcome, ignored)) => avp_answer(outcome, &ignored),
                // Fail closed: a request tregov cannot read is denied, and says why.
                Err(e) => json!({"decision": "DENY", "determiningPolicies": [], "errors": [{"errorDescription": e}]}),
            };
            if let Some(obj) = answer.as_object_mut() {
                obj.insert("request".into(), serde_json::to_value(item).unwrap_or(Value::Null));
            }
            answer
        })
        .collect())
}

/// The principal a batch item asks about, as request text (unreadable: one nobody is).
fn batch_principal(item: &AvpBatchItem) -> String {
    let field = |name| {
        item.principal
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    avp_uid(field("entityType"), field("entityId"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avp_attribute_values_become_cedar_json() {
        let v = avp_value(&json!({"record": {
            "who": {"entityIdentifier": {"entityType": "Tre::User", "entityId": "alice"}},
            "ip": {"ipaddr": "10.0.0.1"},
            "n": {"long": 3},
            "tags": {"set": [{"string": "a"}]}
        }}))
        .expect("converts");
        assert_eq!(
            v["who"],
            json!({"__entity": {"type": "Tre::User", "id": "alice"}})
        );
        assert_eq!(v["ip"], json!({"__extn": {"fn": "ip", "arg": "10.0.0.1"}}));
        assert_eq!(v["n"], 3);
        assert_eq!(v["tags"], json!(["a"]));
        assert!(avp_value(&json!({"float": 1.5})).is_err());
    }

    #[test]
    fn an_avp_request_names_entities_with_quoted_ids() {
        let request: AvpRequest = serde_json::from_value(json!({
            "policyStoreId": "ps-1",
            "principal": {"entityType": "Tre::User", "entityId": "al\"ice"},
            "action": {"actionType": "Tre::Action", "actionId": "read"},
            "resource": {"entityType": "Tre::Dataset", "entityId": "gwas"}
        }))
        .expect("parses");
        let spec = avp_spec(&request).expect("spec");
        assert_eq!(spec.principal, r#"Tre::User::"al\"ice""#);
        assert_eq!(spec.action, r#"Tre::Action::"read""#);
    }
}
