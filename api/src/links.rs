//! Template links kept as data (see `tregov_engine::policy_links`):
//! - `GET /v1/policy-links` lists the stored ones, for any authenticated caller;
//! - `POST /v1/policy-links` `{template, dataset, user?}` links a template as the token's
//!   subject, through the Cedar decision `linkTemplate` (logged);
//! - `DELETE /v1/policy-links/{id}` removes one, through `unlinkTemplate`.
//!
//! Every reader of the API's engine brings it up to date with the store first, so the next
//! question is decided with the new link; the daemon's next pass plans with it.

use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{json, Value};
use tregov_engine::policy_links::{create, remove, stored, NewLink, StoredLink};

use crate::guard::Caller;
use crate::{Api, ApiResult};

pub(crate) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/policy-links", get(list).post(link))
        .route("/v1/policy-links/{*id}", delete(unlink))
}

async fn link(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    Json(new): Json<NewLink>,
) -> ApiResult<Json<StoredLink>> {
    let linked = api
        .blocking(move |_, engine| Ok(create(engine, &user, &new)?))
        .await?;
    Ok(Json(linked))
}

async fn unlink(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    let removed = id.clone();
    api.blocking(move |_, engine| Ok(remove(engine, &user, &id)?))
        .await?;
    Ok(Json(json!({ "removed": removed })))
}

async fn list(State(api): State<Arc<Api>>, Caller(_): Caller) -> ApiResult<Json<Value>> {
    let links = api
        .blocking(move |_, engine| Ok(stored(engine.graph())))
        .await?;
    Ok(Json(json!({ "links": links })))
}
