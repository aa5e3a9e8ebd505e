//! The break-glass workflow, as the token's subject:
//! - `GET /v1/breakglass`: every request and grant (ended ones too);
//! - `POST /v1/breakglass` `{project, reason, seconds}`: an auditor's request
//!   (`requestBreakGlass`);
//! - `POST /v1/breakglass/approve` `{request}`: approving one (`approveBreakGlass`), which
//!   writes the grant the daemon then opens;
//! - `POST /v1/breakglass/revoke` `{grant}`: ending one early (`revokeBreakGlass`).
//!
//! Ids hold `/`, so they travel in bodies. Without `[breakglass]` the routes answer 503.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tregov_engine::breakglass::{
    approve, grants, request, requests, revoke, Grant, NewRequest, Request,
};

use crate::guard::Caller;
use crate::{Api, ApiError, ApiResult};

pub(crate) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/breakglass", get(list).post(create))
        .route("/v1/breakglass/approve", post(approve_request))
        .route("/v1/breakglass/revoke", post(revoke_grant))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Approve {
    request: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Revoke {
    grant: String,
}

async fn create(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    Json(new): Json<NewRequest>,
) -> ApiResult<Json<Request>> {
    let settings = configured(&api)?;
    let made = api
        .blocking(move |_, engine| Ok(request(engine, &settings, &user, &new)?))
        .await?;
    Ok(Json(made))
}

/// The workflow's limits; without `[breakglass]`, nothing can be asked or approved.
pub(crate) fn configured(api: &Api) -> ApiResult<tregov_engine::breakglass::BreakGlassSettings> {
    api.breakglass.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "break-glass is not configured (`[breakglass]`)",
        )
    })
}

async fn approve_request(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    Json(body): Json<Approve>,
) -> ApiResult<Json<Grant>> {
    let settings = configured(&api)?;
    let grant = api
        .blocking(move |_, engine| Ok(approve(engine, &settings, &user, &body.request)?))
        .await?;
    Ok(Json(grant))
}

async fn revoke_grant(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    Json(body): Json<Revoke>,
) -> ApiResult<Json<Grant>> {
    let grant = api
        .blocking(move |_, engine| Ok(revoke(engine, &user, &body.grant)?))
        .await?;
    Ok(Json(grant))
}

async fn list(State(api): State<Arc<Api>>, Caller(_): Caller) -> ApiResult<Json<Value>> {
    let listed = api
        .blocking(move |_, engine| {
            let graph = engine.graph();
            let grants: Vec<Grant> = grants(graph).into_iter().map(|(_, g)| g).collect();
            Ok(json!({"requests": requests(graph), "grants": grants}))
        })
        .await?;
    Ok(Json(listed))
}
