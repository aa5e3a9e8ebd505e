//! The tregov HTTP API, served by the daemon (or `tregov serve`) for an egress web app and
//! for other TRE apps that want tregov's decisions.
//!
//! Every route but `/healthz` needs a bearer JWT (see `auth`); the caller is the token's
//! `sub` as `Tre::User::"<sub>"`. Request bodies never carry identity: their types refuse
//! unknown fields, so a body naming a `reviewer` or `requester` is a 400, not a forgery.
//!
//! Egress routes (all JSON):
//! - `POST /v1/egress/requests` `{workspace, files?, note?}` submits (201);
//! - `GET /v1/egress/requests[?status=&workspace=]` lists what the caller may see;
//! - `GET /v1/egress/requests/{id}` and `/{id}/history` (the audit trail from the log);
//! - `POST /v1/egress/requests/{id}/reviews` `{decision: "approve"|"reject", reason?}`;
//! - `POST /v1/egress/requests/{id}/downloads` takes one download and returns presigned URLs;
//! - `POST /v1/egress/requests/{id}/withdraw` `{reason?}` takes back a request in review.
//!
//! Authorization for other apps, shaped like Amazon Verified Permissions:
//! `POST /v1/is-authorized` and `POST /v1/batch-is-authorized` (at most 30 requests).

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tregov_collectors::aws::Aws;
use tregov_collectors::config::Config;
use tregov_enforcers::egress::EgressStore;
use tregov_engine::egress::{
    Egress, EgressError, EgressRequest, EgressSettings, Status, Submission,
};
use tregov_engine::{Engine, PolicyBundle, RequestSpec};

pub mod auth;
pub mod client;

use auth::{AuthError, Authenticator};

/// An error answer: a status and a JSON body with at least `error`.
pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({"error": message.into()}),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                "www-authenticate",
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        // Where the keys come from is the server's business, not the caller's.
        let message = match e {
            AuthError::Keys(_) => "cannot verify tokens right now".to_string(),
            other => other.to_string(),
        };
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }
}

impl From<EgressError> for ApiError {
    fn from(e: EgressError) -> Self {
        match e {
            EgressError::NotFound(what) => {
                ApiError::new(StatusCode::NOT_FOUND, format!("no {what}"))
            }
            EgressError::Denied { message, outcome } => ApiError {
                status: StatusCode::FORBIDDEN,
                body: json!({
                    "error": format!("denied by policy: {message}"),
                    "decision": "Deny",
                    "reasons": outcome.reasons,
                    "errors": outcome.errors,
                    "logSeq": outcome.log_seq,
                }),
            },
            EgressError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            EgressError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, m),
            EgressError::Engine(e) => {
                tracing::error!(error = %e, "egress failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

impl From<tregov_engine::EngineError> for ApiError {
    fn from(e: tregov_engine::EngineError) -> Self {
        ApiError::from(EgressError::Engine(e))
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Everything the routes share.
pub struct Api {
    engine: RwLock<Engine>,
    settings: EgressSettings,
    store: Option<EgressStore>,
    auth: Authenticator,
    /// Requests whose S3 effect a task of this process is doing now.
    in_flight: Mutex<HashSet<String>>,
    /// `TREGOV_FAILPOINT`: the process exits at this point (crash tests).
    failpoint: Option<String>,
}

impl Api {
    /// Builds the API over the store in `data_dir`. Needs `[auth]`; the egress routes also
    /// need `[egress]` (without it they answer 503).
    pub async fn build(
        config: &Config,
        data_dir: &Path,
        bundle: PolicyBundle,
        aws: &Aws,
    ) -> Result<Arc<Self>, String> {
        let auth_config = config
            .auth
            .as_ref()
            .ok_or("the API needs an `[auth]` section: it never serves unauthenticated")?;
        let auth = Authenticator::new(auth_config)
            .await
            .map_err(|e| e.to_string())?;
        let mut engine = Engine::open(data_dir, bundle).map_err(|e| e.to_string())?;
        engine.refresh().map_err(|e| e.to_string())?;
        let (settings, store) = match &config.egress {
            Some(eg) => (
                EgressSettings {
                    steps: eg.steps.clone(),
                    download_role: eg.download_role.clone(),
                    download_limit: eg.download_limit,
                },
                Some(EgressStore::build(aws, eg).await),
            ),
            None => (EgressSettings::default(), None),
        };
        Ok(Arc::new(Self {
            engine: RwLock::new(engine),
            settings,
            store,
            auth,
            in_flight: Mutex::new(HashSet::new()),
            failpoint: std::env::var("TREGOV_FAILPOINT")
                .ok()
                .filter(|f| !f.is_empty()),
        }))
    }

    /// Swaps in a reloaded policy set (the daemon calls this after a good reload).
    pub fn set_policies(&self, bundle: PolicyBundle) -> Result<(), String> {
        let mut engine = self
            .engine
            .write()
            .map_err(|_| "engine lock poisoned".to_string())?;
        engine.set_policies(bundle).map_err(|e| e.to_string())
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/v1/egress/requests", post(submit).get(list))
            .route("/v1/egress/requests/{id}", get(show))
            .route("/v1/egress/requests/{id}/history", get(history))
            .route("/v1/egress/requests/{id}/reviews", post(review))
            .route("/v1/egress/requests/{id}/downloads", post(download))
            .route("/v1/egress/requests/{id}/withdraw", post(withdraw))
            .route("/v1/is-authorized", post(is_authorized))
            .route("/v1/batch-is-authorized", post(batch_is_authorized))
            .with_state(self.clone())
    }

    /// Serves until `shutdown` resolves, finishing S3 work left by an earlier run first and
    /// retrying any that fails, every `retry` interval.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        retry: Duration,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), String> {
        let worker = self.clone();
        let resume = tokio::spawn(async move {
            let mut tick = tokio::time::interval(retry);
            loop {
                tick.tick().await;
                worker.resume_pending().await;
            }
        });
        let served = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| format!("API server failed: {e}"));
        resume.abort();
        served
    }

    /// Does the S3 work every request still has pending.
    pub async fn resume_pending(self: &Arc<Self>) {
        let pending = match self
            .blocking(|api| api.with_egress(|flow| Ok(flow.pending()?)))
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e.body, "cannot read pending egress work");
                return;
            }
        };
        for request in pending {
            self.run_effect(request).await;
        }
    }

    /// Users ask only about themselves; a registered app (`Tre::Service::"<sub>"` in the
    /// store, e.g. a Cognito app client using client credentials) asks about anyone.
    async fn may_ask(self: &Arc<Self>, caller: &str, principals: &[String]) -> ApiResult<()> {
        let me = avp_uid("Tre::User", caller);
        if principals.iter().all(|p| *p == me) {
            return Ok(());
        }
        let caller = caller.to_string();
        self.blocking(move |api| {
            let engine = api.engine()?;
            let service = tregov_engine::entities::uid_from_parts("Tre::Service", &caller)?;
            if engine.graph().entities().get(&service).is_some() {
                Ok(())
            } else {
                Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("`{caller}` may ask only about itself (`{me}`): only a registered `Tre::Service` asks about others"),
                ))
            }
        })
        .await
    }

    fn hit(&self, point: &str) {
        if self.failpoint.as_deref() == Some(point) {
            eprintln!("tregov: failpoint `{point}` reached: exiting without cleanup");
            std::process::exit(86);
        }
    }

    /// The engine, brought up to date with the store first.
    fn engine(&self) -> ApiResult<RwLockReadGuard<'_, Engine>> {
        fn poisoned<E>(_: E) -> ApiError {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "engine lock poisoned")
        }
        self.engine.write().map_err(poisoned)?.refresh()?;
        self.engine.read().map_err(poisoned)
    }

    fn with_egress<T>(
        &self,
        f: impl FnOnce(&Egress<'_>) -> Result<T, EgressError>,
    ) -> ApiResult<T> {
        let engine = self.engine()?;
        let flow = Egress::new(&engine, &self.settings)?;
        Ok(f(&flow)?)
    }

    /// Runs store and decision work off the async threads (it fsyncs).
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Api) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        let api = self.clone();
        tokio::task::spawn_blocking(move || f(&api))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    }

    fn egress_store(&self) -> ApiResult<&EgressStore> {
        self.store.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "egress is not configured (no `[egress]` section)",
            )
        })
    }

    async fn caller(&self, headers: &HeaderMap) -> ApiResult<String> {
        let header = headers.get("authorization").and_then(|h| h.to_str().ok());
        match self.auth.verify(header).await {
            Ok(sub) => Ok(sub),
            Err(e) => {
                tracing::warn!(error = %e, "refused a call");
                Err(e.into())
            }
        }
    }

    /// Does the request's pending S3 effect, if no other task of this process is, and returns
    /// the request as it is afterwards. A failure leaves the effect pending for the retry loop.
    async fn run_effect(self: &Arc<Self>, request: EgressRequest) -> EgressRequest {
        if request.pending.is_none() {
            return request;
        }
        let Ok(store) = self.egress_store() else {
            return request;
        };
        {
            let Ok(mut busy) = self.in_flight.lock() else {
                return request;
            };
            if !busy.insert(request.id.clone()) {
                return request;
            }
        }
        // The caller's copy may be stale (the retry loop lists requests, then works through
        // them): act only on what the store says is pending now.
        let id = request.id.clone();
        let current = self
            .blocking({
                let id = id.clone();
                move |api| api.with_egress(|flow| Ok(flow.get(&id)?))
            })
            .await;
        let (request, effect) = match current {
            Ok(Some(r)) => match r.pending {
                Some(effect) => (r, effect),
                None => {
                    self.release(&id);
                    return r;
                }
            },
            _ => {
                self.release(&id);
                return request;
            }
        };
        let point = format!("egress-{}-copy", effect.as_str());
        let result = store.perform(&request, effect, &|| self.hit(&point)).await;
        let outcome = match result {
            Ok(detail) => {
                self.hit("egress-effect-done");
                let id = id.clone();
                self.blocking(move |api| {
                    api.with_egress(|flow| {
                        flow.complete_effect(&id, effect, detail)?;
                        Ok(flow.get(&id)?)
                    })
                })
                .await
            }
            Err(e) => {
                tracing::warn!(request = %id, effect = effect.as_str(), error = %e, "egress S3 work failed; will retry");
                Ok(Some(request.clone()))
            }
        };
        self.release(&id);
        match outcome {
            Ok(Some(r)) => r,
            _ => request,
        }
    }
}

impl Api {
    fn release(&self, id: &str) {
        if let Ok(mut busy) = self.in_flight.lock() {
            busy.remove(id);
        }
    }
}

/// Whether `user` may see `request`: its requester or submitter, a member of one of its
/// review or download roles, an IT admin or an auditor.
fn can_see(engine: &Engine, user: &str, request: &EgressRequest) -> bool {
    let Ok(uid) = tregov_engine::entities::uid_from_parts("Tre::User", user) else {
        return false;
    };
    if !is_active(engine, &uid) {
        return false;
    }
    if request.requester == user || request.submitted_by == user {
        return true;
    }
    let Some(ancestors) = engine.graph().entities().ancestors(&uid) else {
        return false;
    };
    let roles: HashSet<String> = ancestors
        .filter(|a| a.type_name().to_string() == "Tre::Role")
        .map(|a| a.id().unescaped().to_string())
        .collect();
    roles.contains("ITAdmin")
        || roles.contains("Auditor")
        || roles.contains(&request.download_role)
        || request.steps.iter().any(|s| roles.contains(s))
}

fn is_active(engine: &Engine, uid: &cedar_policy::EntityUid) -> bool {
    engine
        .graph()
        .entities()
        .get(uid)
        .and_then(|e| e.attr("status"))
        .and_then(|v| v.ok())
        .is_some_and(|v| v.to_string() == "\"active\"")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    workspace: String,
    /// Keys (relative to the workspace's prefix, or full) to send; default: every file.
    #[serde(default)]
    files: Option<Vec<String>>,
    #[serde(default)]
    note: Option<String>,
}

async fn submit(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Json(body): Json<SubmitBody>,
) -> ApiResult<(StatusCode, Json<EgressRequest>)> {
    let user = api.caller(&headers).await?;
    let store = api.egress_store()?;
    api.blocking({
        let (user, workspace) = (user.clone(), body.workspace.clone());
        move |api| api.with_egress(|flow| flow.may_submit(&user, &workspace))
    })
    .await?;
    let objects = store
        .pin(&body.workspace, body.files.as_deref())
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e))?;
    let request = api
        .blocking(move |api| {
            api.with_egress(|flow| {
                flow.submit(
                    &user,
                    Submission {
                        workspace: body.workspace,
                        objects,
                        note: body.note,
                    },
                )
            })
        })
        .await?;
    api.hit("egress-submitted");
    let request = api.run_effect(request).await;
    Ok((StatusCode::CREATED, Json(request)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    workspace: Option<String>,
}

async fn list(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let user = api.caller(&headers).await?;
    let status = match &query.status {
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("unknown status `{s}` (IN_REVIEW, APPROVED, REJECTED or WITHDRAWN)"),
            )
        })?),
        None => None,
    };
    let requests = api
        .blocking(move |api| {
            api.with_egress(|flow| {
                Ok(flow
                    .list(status, query.workspace.as_deref())?
                    .into_iter()
                    .filter(|r| can_see(flow.engine(), &user, r))
                    .collect::<Vec<_>>())
            })
        })
        .await?;
    Ok(Json(json!({ "requests": requests })))
}

/// The request, if the caller may see it (a request they may not see does not exist for them).
async fn visible(api: &Arc<Api>, user: String, id: String) -> ApiResult<EgressRequest> {
    api.blocking(move |api| {
        let found = api
            .with_egress(|flow| Ok(flow.get(&id)?.filter(|r| can_see(flow.engine(), &user, r))))?;
        found.ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, format!("no egress request `{id}`"))
        })
    })
    .await
}

async fn show(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<EgressRequest>> {
    let user = api.caller(&headers).await?;
    Ok(Json(visible(&api, user, id).await?))
}

async fn history(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    let user = api.caller(&headers).await?;
    let request = visible(&api, user, id.clone()).await?;
    let history = api
        .blocking(move |api| api.with_egress(|flow| Ok(flow.history(&id)?)))
        .await?;
    Ok(Json(json!({ "request": request, "history": history })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewBody {
    /// `approve` or `reject`.
    decision: String,
    #[serde(default)]
    reason: Option<String>,
}

async fn review(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    Json(body): Json<ReviewBody>,
) -> ApiResult<Json<EgressRequest>> {
    let user = api.caller(&headers).await?;
    let approve = match body.decision.to_ascii_lowercase().as_str() {
        "approve" => true,
        "reject" => false,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("`decision` must be `approve` or `reject`, not `{other}`"),
            ))
        }
    };
    // A request the caller may not see does not exist for them; one still being staged is
    // staged first, so the reviewer sees the files.
    let current = visible(&api, user.clone(), id.clone()).await?;
    if current.pending.is_some() {
        api.run_effect(current).await;
    }
    let request = api
        .blocking(move |api| api.with_egress(|flow| flow.review(&user, &id, approve, body.reason)))
        .await?;
    api.hit("egress-reviewed");
    Ok(Json(api.run_effect(request).await))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WithdrawBody {
    #[serde(default)]
    reason: Option<String>,
}

async fn withdraw(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Option<Json<WithdrawBody>>,
) -> ApiResult<Json<EgressRequest>> {
    let user = api.caller(&headers).await?;
    visible(&api, user.clone(), id.clone()).await?;
    let reason = body.and_then(|Json(b)| b.reason);
    let request = api
        .blocking(move |api| api.with_egress(|flow| flow.withdraw(&user, &id, reason)))
        .await?;
    Ok(Json(api.run_effect(request).await))
}

async fn download(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    let user = api.caller(&headers).await?;
    let store = api.egress_store()?;
    let current = visible(&api, user.clone(), id.clone()).await?;
    if current.pending.is_some() {
        api.run_effect(current).await;
    }
    let request = api
        .blocking(move |api| api.with_egress(|flow| flow.take_download(&user, &id)))
        .await?;
    // The download is counted: the URLs are handed out only now.
    let downloads = store.presign(&request).await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "download {} of request `{}` was counted but its URLs could not be made: {e}",
                request.download_count, request.id
            ),
        )
    })?;
    Ok(Json(json!({
        "request": request.id,
        "download": request.download_count,
        "downloadsLeft": request.download_limit - request.download_count,
        "expiresInSeconds": store.config().url_expiry_seconds,
        "files": downloads,
    })))
}

// ---- Amazon Verified Permissions-shaped authorization ----

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
struct AvpRequest {
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
struct AvpBatchItem {
    principal: Value,
    action: Value,
    resource: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    context: Option<Value>,
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
fn avp_uid(entity_type: &str, id: &str) -> String {
    format!("{entity_type}::{}", Value::from(id))
}

fn avp_spec(request: &AvpRequest) -> Result<RequestSpec, String> {
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

fn avp_answer(outcome: &tregov_engine::DecisionOutcome) -> Value {
    json!({
        "decision": match outcome.decision {
            tregov_engine::Decision::Allow => "ALLOW",
            tregov_engine::Decision::Deny => "DENY",
        },
        "determiningPolicies": outcome.reasons.iter().map(|id| json!({"policyId": id})).collect::<Vec<_>>(),
        "errors": outcome.errors.iter().map(|e| json!({"errorDescription": format!("{}: {}", e.policy, e.message)})).collect::<Vec<_>>(),
        "logSeq": outcome.log_seq,
    })
}

async fn is_authorized(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Json(body): Json<AvpRequest>,
) -> ApiResult<Json<Value>> {
    let user = api.caller(&headers).await?;
    let spec = avp_spec(&body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    api.may_ask(&user, std::slice::from_ref(&spec.principal))
        .await?;
    let outcome = api
        .blocking(move |api| {
            let engine = api.engine()?;
            let request = engine
                .parse(spec)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
            Ok(engine.decide_logged(&request, &format!("api:{user}"))?)
        })
        .await?;
    Ok(Json(avp_answer(&outcome)))
}

async fn batch_is_authorized(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Json(body): Json<AvpBatch>,
) -> ApiResult<Json<Value>> {
    let user = api.caller(&headers).await?;
    let _ = &body.policy_store_id;
    if body.requests.is_empty() || body.requests.len() > 30 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "`requests` takes 1 to 30 requests, not {}",
                body.requests.len()
            ),
        ));
    }
    let principals: Vec<String> = body
        .requests
        .iter()
        .map(|r| {
            let field = |name| {
                r.principal
                    .get(name)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            };
            avp_uid(field("entityType"), field("entityId"))
        })
        .collect();
    api.may_ask(&user, &principals).await?;
    let results = api
        .blocking(move |api| {
            let engine = api.engine()?;
            let mut parsed = Vec::new();
            let mut slots = Vec::new();
            for item in &body.requests {
                let spec = serde_json::to_value(item)
                    .and_then(serde_json::from_value::<AvpRequest>)
                    .map_err(|e| e.to_string())
                    .and_then(|r| avp_spec(&r))
                    .and_then(|s| engine.parse(s).map_err(|e| e.to_string()));
                match spec {
                    Ok(p) => {
                        slots.push(Ok(parsed.len()));
                        parsed.push(p);
                    }
                    Err(e) => slots.push(Err(e)),
                }
            }
            let outcomes = engine.decide_batch_logged(&parsed, &format!("api:{user}"))?;
            Ok(body
                .requests
                .iter()
                .zip(slots)
                .map(|(item, slot)| {
                    let mut answer = match slot {
                        Ok(i) => avp_answer(&outcomes[i]),
                        // Fail closed: a request tregov cannot read is denied, and says why.
                        Err(e) => json!({"decision": "DENY", "determiningPolicies": [], "errors": [{"errorDescription": e}]}),
                    };
                    if let Some(obj) = answer.as_object_mut() {
                        obj.insert("request".into(), serde_json::to_value(item).unwrap_or(Value::Null));
                    }
                    answer
                })
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(Json(json!({ "results": results })))
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

    #[test]
    fn a_body_that_names_an_identity_is_refused() {
        let forged = serde_json::from_value::<ReviewBody>(
            json!({"decision": "approve", "reviewer": "carol"}),
        );
        assert!(forged.is_err());
        let forged =
            serde_json::from_value::<SubmitBody>(json!({"workspace": "ws", "requester": "alice"}));
        assert!(forged.is_err());
    }
}
