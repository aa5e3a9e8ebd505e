//! Amazon Verified Permissions on the wire: the AWS JSON 1.0 protocol at `POST /`, so an app
//! using the official AWS SDK's Verified Permissions client, its endpoint URL pointed here,
//! gets tregov's answers (`X-Amz-Target: VerifiedPermissions.<operation>`):
//! - `IsAuthorizedWithToken`, `BatchIsAuthorizedWithToken`: the identity is the
//!   `identityToken` (or `accessToken`) in the body, verified as a bearer token is; its
//!   subject is the principal, `Tre::User::"<sub>"`;
//! - `IsAuthorized`, `BatchIsAuthorized`: only for apps registered as services
//!   (`[api] services`), which send their own bearer token in `Authorization` (the SDK's
//!   SigV4 signature is not a tregov identity: tregov holds no AWS credentials to check it).
//!
//! Answers are decided, fail closed and logged exactly as `/v1/is-authorized`'s. Errors are
//! AWS's: `ValidationException` (400: unreadable input, more than 30 requests, a batch mixing
//! principals and resources, caller-supplied `entities`), `AccessDeniedException` (403),
//! `ThrottlingException` (429), `InternalServerException` (500), and
//! `UnknownOperationException` for operations tregov does not serve.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::avp::{answer_batch, answer_one, avp_spec, AvpBatchItem, AvpRequest, MAX_BATCH};
use crate::{Api, ApiError};

const CONTENT_TYPE: &str = "application/x-amz-json-1.0";
const TARGET_PREFIX: &str = "VerifiedPermissions.";

pub(crate) fn routes(limits: &tregov_config::api::ApiLimits) -> axum::Router<Arc<Api>> {
    axum::Router::new().route(
        "/",
        axum::routing::post(dispatch).layer(axum::extract::DefaultBodyLimit::max(
            limits.max_batch_body_bytes,
        )),
    )
}

/// An AWS JSON 1.0 error.
#[derive(Debug)]
struct AwsError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl AwsError {
    fn validation(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "ValidationException",
            message: message.into(),
        }
    }

    fn denied(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            kind: "AccessDeniedException",
            message: message.into(),
        }
    }
}

impl From<ApiError> for AwsError {
    fn from(e: ApiError) -> Self {
        let message = e.message();
        let (status, kind) = match e.status() {
            StatusCode::BAD_REQUEST => (StatusCode::BAD_REQUEST, "ValidationException"),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                (StatusCode::FORBIDDEN, "AccessDeniedException")
            }
            StatusCode::TOO_MANY_REQUESTS => (StatusCode::TOO_MANY_REQUESTS, "ThrottlingException"),
            StatusCode::SERVICE_UNAVAILABLE => {
                (StatusCode::SERVICE_UNAVAILABLE, "InternalServerException")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerException"),
        };
        Self {
            status,
            kind,
            message,
        }
    }
}

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        let body = json!({ "__type": self.kind, "message": self.message }).to_string();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static(CONTENT_TYPE));
        headers.insert("x-amzn-errortype", HeaderValue::from_static(self.kind));
        response
    }
}

fn ok(body: Value) -> Response {
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static(CONTENT_TYPE));
    response
}

async fn dispatch(State(api): State<Arc<Api>>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let answered = match target.strip_prefix(TARGET_PREFIX) {
        Some("IsAuthorized") => is_authorized(&api, &headers, &body).await,
        Some("BatchIsAuthorized") => batch_is_authorized(&api, &headers, &body).await,
        Some("IsAuthorizedWithToken") => is_authorized_with_token(&api, &body).await,
        Some("BatchIsAuthorizedWithToken") => batch_with_token(&api, &body).await,
        _ => Err(AwsError {
            status: StatusCode::BAD_REQUEST,
            kind: "UnknownOperationException",
            message: format!("tregov does not serve `{target}`"),
        }),
    };
    answered.map_or_else(IntoResponse::into_response, ok)
}

/// The body as an object, without the fields tregov reads nowhere (`policyStoreId`: there is
/// one policy store, the policies tregov governs with). Caller-supplied entities are refused:
/// tregov decides over its own store, whose facts come from sources the governed cannot write.
fn read_body(body: &[u8]) -> Result<Map<String, Value>, AwsError> {
    let mut object: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|e| AwsError::validation(format!("the body is not a JSON object: {e}")))?;
    object.remove("policyStoreId");
    if object.contains_key("entities") {
        return Err(AwsError::validation(
            "`entities` is not accepted: tregov decides over its own entity store",
        ));
    }
    Ok(object)
}

/// The caller of a plain (token-less) operation: a registered service's bearer token.
async fn service(api: &Arc<Api>, headers: &HeaderMap) -> Result<crate::avp::Asker, AwsError> {
    let sub = api
        .caller(headers)
        .await
        .map_err(|e| AwsError::denied(e.message()))?;
    api.guard.admit(&sub).map_err(AwsError::from)?;
    let asker = api.asker(sub);
    if !asker.service {
        return Err(AwsError::denied(format!(
            "`{}` is not registered as a service (`[api] services`): use IsAuthorizedWithToken",
            asker.sub
        )));
    }
    Ok(asker)
}

/// The caller of a `*WithToken` operation: the token in the body, verified.
async fn token_holder(
    api: &Arc<Api>,
    object: &mut Map<String, Value>,
) -> Result<crate::avp::Asker, AwsError> {
    let identity = object.remove("identityToken");
    let access = object.remove("accessToken");
    let token = match (identity, access) {
        (Some(Value::String(t)), None) | (None, Some(Value::String(t))) => t,
        _ => {
            return Err(AwsError::validation(
                "give exactly one of `identityToken` and `accessToken`",
            ))
        }
    };
    let sub = api
        .auth
        .verify(Some(&format!("Bearer {token}")))
        .await
        .map_err(|e| AwsError::denied(ApiError::from(e).message()))?;
    api.guard.admit(&sub).map_err(AwsError::from)?;
    Ok(api.asker(sub))
}

fn principal_of(sub: &str) -> Value {
    json!({ "entityType": "Tre::User", "entityId": sub })
}

async fn is_authorized(
    api: &Arc<Api>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, AwsError> {
    let asker = service(api, headers).await?;
    let object = read_body(body)?;
    answer(api, asker, object).await
}

async fn is_authorized_with_token(api: &Arc<Api>, body: &[u8]) -> Result<Value, AwsError> {
    let mut object = read_body(body)?;
    let asker = token_holder(api, &mut object).await?;
    let principal = principal_of(&asker.sub);
    object.insert("principal".into(), principal.clone());
    let mut answered = answer(api, asker, object).await?;
    answered["principal"] = principal;
    Ok(answered)
}

async fn answer(
    api: &Arc<Api>,
    asker: crate::avp::Asker,
    object: Map<String, Value>,
) -> Result<Value, AwsError> {
    let request: AvpRequest = serde_json::from_value(Value::Object(object))
        .map_err(|e| AwsError::validation(e.to_string()))?;
    let spec = avp_spec(&request).map_err(AwsError::validation)?;
    Ok(answer_one(api, asker, spec).await?)
}

async fn batch_is_authorized(
    api: &Arc<Api>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, AwsError> {
    let asker = service(api, headers).await?;
    let items = batch_items(read_body(body)?, None)?;
    same_principal_or_resource(&items)?;
    let results = answer_batch(api, asker, items).await?;
    Ok(json!({ "results": results }))
}

async fn batch_with_token(api: &Arc<Api>, body: &[u8]) -> Result<Value, AwsError> {
    let mut object = read_body(body)?;
    let asker = token_holder(api, &mut object).await?;
    let principal = principal_of(&asker.sub);
    let items = batch_items(object, Some(&principal))?;
    let mut results = answer_batch(api, asker, items).await?;
    // Each result names the request as it was asked: without the principal, which the
    // token gave.
    for result in &mut results {
        if let Some(request) = result.get_mut("request").and_then(Value::as_object_mut) {
            request.remove("principal");
        }
    }
    Ok(json!({ "principal": principal, "results": results }))
}

/// The batch's requests (each given `principal` when the token names it).
fn batch_items(
    mut object: Map<String, Value>,
    principal: Option<&Value>,
) -> Result<Vec<AvpBatchItem>, AwsError> {
    let requests = object
        .remove("requests")
        .ok_or_else(|| AwsError::validation("`requests` is required"))?;
    if let Some(extra) = object.keys().next() {
        return Err(AwsError::validation(format!("unknown field `{extra}`")));
    }
    let mut requests: Vec<Map<String, Value>> = serde_json::from_value(requests)
        .map_err(|e| AwsError::validation(format!("`requests`: {e}")))?;
    if requests.is_empty() || requests.len() > MAX_BATCH {
        return Err(AwsError::validation(format!(
            "`requests` takes 1 to {MAX_BATCH} requests, not {}",
            requests.len()
        )));
    }
    if let Some(principal) = principal {
        for request in &mut requests {
            request.insert("principal".into(), principal.clone());
        }
    }
    requests
        .into_iter()
        .map(|r| {
            serde_json::from_value(Value::Object(r))
                .map_err(|e| AwsError::validation(format!("`requests`: {e}")))
        })
        .collect()
}

/// Verified Permissions' rule for a batch: every request has the same principal, or every
/// request has the same resource.
fn same_principal_or_resource(items: &[AvpBatchItem]) -> Result<(), AwsError> {
    let all_same =
        |field: fn(&AvpBatchItem) -> &Value| items.windows(2).all(|w| field(&w[0]) == field(&w[1]));
    if all_same(|i| &i.principal) || all_same(|i| &i.resource) {
        return Ok(());
    }
    Err(AwsError::validation(
        "the requests of a batch must all have the same principal or all the same resource",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(principal: &str, resource: &str) -> AvpBatchItem {
        AvpBatchItem {
            principal: json!({"entityType": "Tre::User", "entityId": principal}),
            action: json!({"actionType": "Tre::Action", "actionId": "read"}),
            resource: json!({"entityType": "Tre::Dataset", "entityId": resource}),
            context: None,
        }
    }

    #[test]
    fn a_batch_shares_its_principal_or_its_resource_never_neither() {
        assert!(same_principal_or_resource(&[item("a", "x"), item("a", "y")]).is_ok());
        assert!(same_principal_or_resource(&[item("a", "x"), item("b", "x")]).is_ok());
        let mixed = same_principal_or_resource(&[item("a", "x"), item("b", "y")]);
        assert!(mixed.is_err_and(|e| e.kind == "ValidationException"));
    }

    #[test]
    fn caller_supplied_entities_are_a_validation_exception() {
        let refused = read_body(br#"{"policyStoreId": "ps", "entities": {"entityList": []}}"#);
        assert!(refused.is_err_and(|e| e.message.contains("`entities` is not accepted")));
        let kept = read_body(br#"{"policyStoreId": "ps", "action": {}}"#).expect("reads");
        assert!(!kept.contains_key("policyStoreId"));
    }

    #[test]
    fn a_token_batch_gives_every_request_the_tokens_principal() {
        let object: Map<String, Value> = serde_json::from_value(json!({"requests": [
            {"action": {"actionType": "Tre::Action", "actionId": "read"},
             "resource": {"entityType": "Tre::Dataset", "entityId": "gwas"}}
        ]}))
        .expect("object");
        let principal = principal_of("alice");
        let items = batch_items(object, Some(&principal)).expect("items");
        assert_eq!(items[0].principal, principal);
    }
}
