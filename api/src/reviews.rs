//! Access review campaigns:
//! - `POST /v1/reviews` `{scope, reviewers, due, defaultVerdict?}` starts one as the token's
//!   subject (`startReview`);
//! - `POST /v1/reviews/attest` `{item, verdict}` attests one item keep or revoke
//!   (`attestReview`, logged with the verdict);
//! - `GET /v1/reviews/report?campaign=ID` its items and who attested what, when, from the log.
//!
//! Ids hold `/` (a study's id does), so they travel in bodies and queries, not paths.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tregov_engine::reviews::{attest, report, start, Item, NewCampaign, Started};

use crate::guard::Caller;
use crate::{Api, ApiResult};

pub(crate) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/reviews", post(create))
        .route("/v1/reviews/attest", post(attest_item))
        .route("/v1/reviews/report", get(report_of))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Attest {
    item: String,
    verdict: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    campaign: String,
}

async fn create(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    Json(new): Json<NewCampaign>,
) -> ApiResult<Json<Started>> {
    let started = api
        .blocking(move |_, engine| Ok(start(engine, &user, &new)?))
        .await?;
    Ok(Json(started))
}

async fn attest_item(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    Json(body): Json<Attest>,
) -> ApiResult<Json<Item>> {
    let item = api
        .blocking(move |_, engine| Ok(attest(engine, &user, &body.item, &body.verdict)?))
        .await?;
    Ok(Json(item))
}

async fn report_of(
    State(api): State<Arc<Api>>,
    Caller(_): Caller,
    Query(query): Query<ReportQuery>,
) -> ApiResult<Json<Value>> {
    let (items, attestations) = api
        .blocking(move |_, engine| Ok(report(engine, &query.campaign)?))
        .await?;
    Ok(Json(json!({"items": items, "attestations": attestations})))
}
