//! Exemptions from a named policy, until a date:
//! - `GET /v1/exemptions` lists the stored ones, for any authenticated caller;
//! - `POST /v1/exemptions` `{user, dataset, policy, until, reason}` grants one as the token's
//!   subject, through the Cedar decision `grantExemption` (logged). The daemon's next plan
//!   asks that user's questions about that study with it.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tregov_engine::exemptions::{grant, stored, Exemption, NewExemption};

use crate::guard::Caller;
use crate::{Api, ApiResult};

pub(crate) fn routes() -> Router<Arc<Api>> {
    Router::new().route("/v1/exemptions", get(list).post(create))
}

async fn create(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    Json(new): Json<NewExemption>,
) -> ApiResult<Json<Exemption>> {
    let granted = api
        .blocking(move |_, engine| Ok(grant(engine, &user, &new)?))
        .await?;
    Ok(Json(granted))
}

async fn list(State(api): State<Arc<Api>>, Caller(_): Caller) -> ApiResult<Json<Value>> {
    let list = api
        .blocking(move |_, engine| {
            Ok(stored(engine)
                .into_iter()
                .map(|(_, e)| e)
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(Json(json!({ "exemptions": list })))
}
