//! The tregov HTTP API, served by the daemon (or `tregov serve`) for an egress web app, for
//! admins deciding parked changes, and for other TRE apps that want tregov's decisions.
//!
//! Every route but `/healthz` and the web app's needs a bearer JWT (see `auth`; the web app
//! signs people in and keeps a session instead); the caller is the token's
//! `sub` as `Tre::User::"<sub>"`. Request bodies never carry identity: their types refuse
//! unknown fields, so a body naming a `reviewer` or `requester` is a 400, not a forgery.
//! Every permission is a Cedar decision in the engine; the routes only translate.
//!
//! - `egress`: the data egress workflow (`/v1/egress/requests...`);
//! - `parked`: changes held back for approval (`/v1/parked...`);
//! - `avp`: Amazon Verified Permissions-shaped `is-authorized` and `batch-is-authorized`,
//!   with the server's facts (`facts`) in the context and answers logged as their own kind
//!   (`asked`); `avp_wire`: the same answers in AVP's own wire protocol at `POST /`, for the
//!   AWS SDK's Verified Permissions client;
//! - `ops`: `/metrics`, `/healthz`, `/readyz` on the daemon's operator address;
//! - `web`: the web app under `/web/` (with `[web]`): OIDC sign-in, server-side sessions,
//!   pages over the same operations and decisions as the routes above.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tregov_config::aws::Aws;
use tregov_config::Config;
use tregov_enforcers::egress::EgressStore;
use tregov_enforcers::egress_effects::EffectRunner;
use tregov_engine::egress::EgressSettings;
use tregov_engine::log::LogRecord;
use tregov_engine::shared::SharedEngine;
use tregov_engine::workflow::WorkflowError;
use tregov_engine::{Engine, PolicyBundle};

mod asked;
pub mod auth;
mod avp;
mod avp_wire;
mod breakglass;
pub mod client;
mod committer;
mod egress;
mod exemptions;
mod facts;
mod guard;
mod links;
pub mod ops;
mod parked;
mod reviews;
mod transport;
mod verified;
mod web;

use auth::{AuthError, Authenticator};

/// An error answer: a status and a JSON body with at least `error`.
pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The error's JSON body.
    pub(crate) fn body(&self) -> &Value {
        &self.body
    }

    /// The error's message, as its body's `error` says it.
    pub(crate) fn message(&self) -> String {
        self.body["error"]
            .as_str()
            .map_or_else(|| self.body.to_string(), str::to_string)
    }

    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({"error": message.into()}),
        }
    }

    /// A failure inside the server: the caller gets an opaque id, the server's log the
    /// error under it. Store paths, SQL and AWS messages are nobody else's business.
    fn internal(error: &dyn std::fmt::Display) -> Self {
        let id = error_id();
        tracing::error!(error_id = %id, error = %error, "request failed");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: json!({"error": "internal error", "errorId": id}),
        }
    }
}

/// A fresh id for one failure: the time and a counter, so ids never repeat in a process.
fn error_id() -> String {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("err-{nanos:x}-{n}")
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

impl From<WorkflowError> for ApiError {
    fn from(e: WorkflowError) -> Self {
        match e {
            WorkflowError::NotFound(what) => {
                ApiError::new(StatusCode::NOT_FOUND, format!("no {what}"))
            }
            WorkflowError::Denied { message, outcome } => ApiError {
                status: StatusCode::FORBIDDEN,
                body: json!({
                    "error": format!("denied by policy: {message}"),
                    "decision": "Deny",
                    "reasons": outcome.reasons,
                    "errors": outcome.errors,
                    "logSeq": outcome.log_seq,
                }),
            },
            WorkflowError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            WorkflowError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, m),
            WorkflowError::Engine(e) => ApiError::internal(&e),
        }
    }
}

impl From<tregov_engine::EngineError> for ApiError {
    fn from(e: tregov_engine::EngineError) -> Self {
        ApiError::from(WorkflowError::Engine(e))
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Everything the routes share.
pub struct Api {
    engine: SharedEngine,
    /// Appends decision records for requests that await them (see `committer`).
    committer: committer::Committer,
    settings: EgressSettings,
    /// The egress S3 work; `None` without `[egress]`.
    effects: Option<Arc<EffectRunner>>,
    auth: Authenticator,
    /// Token subjects of the apps registered as services (`[api] services`).
    services: HashSet<String>,
    /// The server-provided context of the policy version last asked about.
    marks: Mutex<Arc<facts::ContextMarks>>,
    limits: tregov_config::api::ApiLimits,
    guard: guard::Guard,
    transport: transport::Transport,
    /// The break-glass workflow's limits; `None` without `[breakglass]`.
    breakglass: Option<tregov_engine::breakglass::BreakGlassSettings>,
    /// The web app; `None` without `[web]`.
    web: Option<web::Web>,
    /// The store's directory (the trail's events and the log, for the web app's record).
    data_dir: std::path::PathBuf,
}

/// Where a decision stands: made already, or to be made on a blocking thread.
enum Step<T, F> {
    Decided(ApiResult<T>),
    Later(F),
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
        let marks = facts::ContextMarks::from_bundle(&bundle).map_err(|e| e.to_string())?;
        let api_config = config
            .api
            .clone()
            .ok_or("the API needs an `[api]` section: where to listen")?;
        let services = api_config.services.iter().cloned().collect();
        let transport = transport::Transport::new(&api_config)?;
        let mut engine = Engine::open(data_dir, bundle).map_err(|e| e.to_string())?;
        engine.refresh().map_err(|e| e.to_string())?;
        let settings = config
            .egress
            .as_ref()
            .map(|e| e.settings())
            .unwrap_or_default();
        // Workflow records a crash left between a transition's commit and its log append.
        if engine.store().is_some() {
            let flushed = tregov_engine::egress::Egress::new(&engine, &settings)
                .and_then(|flow| flow.flush_log())
                .map_err(|e| e.to_string())?;
            if flushed > 0 {
                tracing::warn!(records = flushed, "logged workflow records left by a crash");
            }
        }
        let engine = SharedEngine::new(engine);
        let effects = match &config.egress {
            Some(eg) => Some(Arc::new(EffectRunner::new(
                engine.clone(),
                settings.clone(),
                EgressStore::build(aws, eg).await,
            ))),
            None => None,
        };
        let web = match &config.web {
            Some(w) => Some(web::Web::build(
                w,
                &auth_config.issuer,
                transport.scheme() == "https",
                config.plan_settings(""),
            )?),
            None => None,
        };
        let committer = committer::Committer::start(engine.clone())
            .map_err(|e| format!("cannot start the decision log writer: {e}"))?;
        Ok(Arc::new(Self {
            engine,
            committer,
            settings,
            effects,
            auth,
            services,
            marks: Mutex::new(Arc::new(marks)),
            guard: guard::Guard::new(&api_config.limits),
            limits: api_config.limits,
            transport,
            breakglass: config.breakglass.as_ref().map(|b| b.settings()),
            web,
            data_dir: data_dir.to_path_buf(),
        }))
    }

    /// Swaps in a reloaded policy set (the daemon calls this after a good reload). A schema
    /// whose `@serverProvided` marks cannot be read is refused: the last good set stays.
    pub fn set_policies(&self, bundle: PolicyBundle) -> Result<(), String> {
        let marks = facts::ContextMarks::from_bundle(&bundle).map_err(|e| e.to_string())?;
        self.engine
            .set_policies(bundle)
            .map_err(|e| e.to_string())?;
        if let Ok(mut current) = self.marks.lock() {
            *current = Arc::new(marks);
        }
        Ok(())
    }

    pub fn router(self: &Arc<Self>) -> Router {
        let web = match self.web.is_some() {
            true => web::routes(),
            false => Router::new(),
        };
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .merge(web)
            .merge(egress::routes())
            .merge(parked::routes())
            .merge(exemptions::routes())
            .merge(breakglass::routes())
            .merge(reviews::routes())
            .merge(links::routes())
            .merge(avp::routes(&self.limits))
            .merge(avp_wire::routes(&self.limits))
            .layer(axum::extract::DefaultBodyLimit::max(
                self.limits.max_body_bytes,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                guard::bounded,
            ))
            .with_state(self.clone())
    }

    /// `http` or `https`, as the API is served.
    pub fn scheme(&self) -> &'static str {
        self.transport.scheme()
    }

    /// Serves until `shutdown` resolves, finishing S3 work left by an earlier run first and
    /// retrying any that fails, every `retry` interval.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        retry: Duration,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), String> {
        let resume = self.effects.clone().map(|effects| {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(retry);
                loop {
                    tick.tick().await;
                    effects.resume_pending().await;
                }
            })
        });
        let served = self
            .transport
            .serve(listener, self.router(), shutdown)
            .await
            .map_err(|e| format!("API server failed: {e}"));
        if let Some(resume) = resume {
            resume.abort();
        }
        served
    }

    /// Runs engine work off the async threads (it fsyncs), over the engine as the store is
    /// now.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Api, &Engine) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        let api = self.clone();
        tokio::task::spawn_blocking(move || {
            let engine = api.engine.read()?;
            f(&api, &engine)
        })
        .await
        .map_err(|e| ApiError::internal(&e))?
    }

    /// Decides with `decide` and awaits the durability of the records it returns. It decides
    /// on the async worker when the engine is current and free (a decision takes
    /// microseconds), on a blocking thread otherwise (bringing the engine up to date can
    /// take longer); either way no thread waits for the fsync.
    async fn decide_logged<T: Send + 'static>(
        self: &Arc<Self>,
        decide: impl FnOnce(&Api, &Engine) -> ApiResult<(T, Vec<LogRecord>)> + Send + 'static,
    ) -> ApiResult<(T, Vec<u64>)> {
        let step = match self.engine.try_read_current() {
            Some(engine) => Step::Decided(decide(self, &engine)),
            None => Step::Later(decide),
        };
        let (value, records) = match step {
            Step::Decided(done) => done?,
            Step::Later(decide) => self.blocking(decide).await?,
        };
        let seqs = self
            .committer
            .append(records)
            .await
            .map_err(|e| ApiError::internal(&e))?;
        Ok((value, seqs))
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
}
