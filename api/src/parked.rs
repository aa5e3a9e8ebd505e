//! Changes tregov held back for an admin (revocations a blast-radius limit parked, every
//! change under `--require-approval`, listings that shrank too far):
//! - `GET /v1/parked[?status=pending]` lists them;
//! - `POST /v1/parked/{id}/approve` and `/{id}/reject` `{reason?}` decide one, as the token's
//!   subject, through the Cedar decision `approvePlanItem` / `rejectPlanItem`. The daemon
//!   applies an approved change on its next pass.

use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tregov_engine::approval::{decide_parked, Decided};

use crate::guard::Caller;
use crate::{Api, ApiError, ApiResult};

pub(crate) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/parked", get(list))
        .route("/v1/parked/{id}/approve", post(approve))
        .route("/v1/parked/{id}/reject", post(reject))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    status: Option<String>,
}

async fn approve(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    UrlPath(id): UrlPath<String>,
    body: Option<Json<DecideBody>>,
) -> ApiResult<Json<Decided>> {
    decide(api, user, id, true, body).await
}

async fn reject(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    UrlPath(id): UrlPath<String>,
    body: Option<Json<DecideBody>>,
) -> ApiResult<Json<Decided>> {
    decide(api, user, id, false, body).await
}

async fn decide(
    api: Arc<Api>,
    user: String,
    id: String,
    approve: bool,
    body: Option<Json<DecideBody>>,
) -> ApiResult<Json<Decided>> {
    let reason = body.and_then(|Json(b)| b.reason);
    let decided = api
        .blocking(move |_, engine| {
            Ok(decide_parked(
                engine,
                &user,
                &id,
                approve,
                reason.as_deref(),
            )?)
        })
        .await?;
    tracing::info!(item = %decided.item, status = %decided.status, by = %decided.decided_by, "parked item decided");
    Ok(Json(decided))
}

/// Every parked change, for any authenticated caller: deciding is what policy guards.
async fn list(
    State(api): State<Arc<Api>>,
    Caller(_): Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let items = api
        .blocking(move |_, engine| {
            let store = engine.store().ok_or_else(|| {
                ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "no store")
            })?;
            Ok(store
                .parked()?
                .into_iter()
                .filter(|p| query.status.as_ref().is_none_or(|s| *s == p.status))
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(Json(json!({ "parked": items })))
}
