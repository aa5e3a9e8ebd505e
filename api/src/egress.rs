//! The data egress workflow's routes (all JSON):
//! - `POST /v1/egress/requests` `{workspace, files?, note?}` submits (201);
//! - `GET /v1/egress/requests[?status=&workspace=]` lists what the caller may see;
//! - `GET /v1/egress/requests/{id}` and `/{id}/history` (the audit trail from the log);
//! - `POST /v1/egress/requests/{id}/reviews` `{decision: "approve"|"reject", reason?}`;
//! - `POST /v1/egress/requests/{id}/downloads` takes one download and returns presigned URLs;
//! - `POST /v1/egress/requests/{id}/withdraw` `{reason?}` takes back a request in review
//!   (or one that `FAILED`);
//! - `POST /v1/egress/requests/{id}/retry` and `/close` `{reason?}`: an IT admin's answer to
//!   a request whose S3 work failed `max_attempts` times.
//!
//! Seeing a request is a Cedar decision (`viewEgress`) like every transition: a request the
//! caller may not see does not exist for them (404).

use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tregov_enforcers::egress::{Download, PinnedCheck};
use tregov_enforcers::egress_effects::EffectRunner;
use tregov_engine::egress::{Egress, EgressRequest, Resolution, Status, Submission};
use tregov_engine::workflow::WorkflowError;
use tregov_engine::Engine;

use crate::guard::Caller;
use crate::{Api, ApiError, ApiResult};

pub(crate) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/egress/requests", post(submit).get(list))
        .route("/v1/egress/requests/{id}", get(show))
        .route("/v1/egress/requests/{id}/history", get(history))
        .route("/v1/egress/requests/{id}/reviews", post(review))
        .route("/v1/egress/requests/{id}/downloads", post(download))
        .route("/v1/egress/requests/{id}/withdraw", post(withdraw))
        .route("/v1/egress/requests/{id}/retry", post(retry))
        .route("/v1/egress/requests/{id}/close", post(close))
}

impl Api {
    pub(crate) fn effects(&self) -> ApiResult<&Arc<EffectRunner>> {
        self.effects.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "egress is not configured (no `[egress]` section)",
            )
        })
    }

    /// Runs `f` over the egress workflow, off the async threads.
    async fn flow<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Egress<'_>) -> Result<T, WorkflowError> + Send + 'static,
    ) -> ApiResult<T> {
        self.blocking(move |api, engine: &Engine| {
            let flow = Egress::new(engine, &api.settings)?;
            Ok(f(&flow)?)
        })
        .await
    }
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
    Caller(user): Caller,
    Json(body): Json<SubmitBody>,
) -> ApiResult<(StatusCode, Json<EgressRequest>)> {
    let request = api
        .egress_submit(user, body.workspace, body.files, body.note)
        .await?;
    Ok((StatusCode::CREATED, Json(request)))
}

/// The egress operations, as the JSON routes and the web app both call them.
impl Api {
    /// Pins the workspace's files (or `files` of them) and submits them for review.
    pub(crate) async fn egress_submit(
        self: &Arc<Self>,
        user: String,
        workspace: String,
        files: Option<Vec<String>>,
        note: Option<String>,
    ) -> ApiResult<EgressRequest> {
        let effects = self.effects()?.clone();
        self.flow({
            let (user, workspace) = (user.clone(), workspace.clone());
            move |flow| flow.may_submit(&user, &workspace)
        })
        .await?;
        let objects = effects
            .store()
            .pin(&workspace, files.as_deref())
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e))?;
        let request = self
            .flow(move |flow| {
                flow.submit(
                    &user,
                    Submission {
                        workspace,
                        objects,
                        note,
                    },
                )
            })
            .await?;
        effects.hit("egress-submitted");
        Ok(effects.run(request).await)
    }

    /// The requests `user` may see, of `status` and `workspace` when given.
    pub(crate) async fn egress_list(
        self: &Arc<Self>,
        user: String,
        status: Option<Status>,
        workspace: Option<String>,
    ) -> ApiResult<Vec<EgressRequest>> {
        self.flow(move |flow| {
            let all = flow.list(status, workspace.as_deref())?;
            Ok(flow.visible(&user, all)?)
        })
        .await
    }

    /// The request, if the caller may see it (one they may not see does not exist for them).
    pub(crate) async fn egress_visible(
        self: &Arc<Self>,
        user: String,
        id: String,
    ) -> ApiResult<EgressRequest> {
        self.flow(move |flow| {
            flow.get_visible(&user, &id)?
                .ok_or_else(|| WorkflowError::NotFound(format!("egress request `{id}`")))
        })
        .await
    }

    /// The request's history from the decision log (for a caller who may see it).
    pub(crate) async fn egress_history(
        self: &Arc<Self>,
        user: String,
        id: String,
    ) -> ApiResult<(EgressRequest, Vec<Value>)> {
        let request = self.egress_visible(user, id.clone()).await?;
        let history = self.flow(move |flow| Ok(flow.history(&id)?)).await?;
        Ok((request, history))
    }

    /// Approves or rejects the request's current step as `user`.
    pub(crate) async fn egress_review(
        self: &Arc<Self>,
        user: String,
        id: String,
        approve: bool,
        reason: Option<String>,
    ) -> ApiResult<EgressRequest> {
        // A request the caller may not see does not exist for them; one still being staged
        // is staged first, so the reviewer sees the files.
        let effects = self.effects()?.clone();
        let current = self.egress_visible(user.clone(), id.clone()).await?;
        let current = if current.pending.is_some() {
            effects.run(current).await
        } else {
            current
        };
        let last_step = current.current_step as usize >= current.steps.len();
        if approve && current.status == Status::InReview && last_step {
            // What the reviewers approved must still be there to publish.
            match effects.store().check_pinned(&current).await {
                Ok(()) => {}
                Err(PinnedCheck::Gone(e)) => return Err(ApiError::new(StatusCode::CONFLICT, e)),
                Err(PinnedCheck::Unavailable(e)) => {
                    tracing::warn!(request = %current.id, error = %e, "cannot confirm the pinned versions");
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the egress store did not answer whether the pinned files are still there; try again",
                    ));
                }
            }
        }
        let request = self
            .flow(move |flow| flow.review(&user, &id, approve, reason))
            .await?;
        effects.hit("egress-reviewed");
        Ok(effects.run(request).await)
    }

    /// Takes back a request in review (or one that failed) as `user`.
    pub(crate) async fn egress_withdraw(
        self: &Arc<Self>,
        user: String,
        id: String,
        reason: Option<String>,
    ) -> ApiResult<EgressRequest> {
        let effects = self.effects()?.clone();
        self.egress_visible(user.clone(), id.clone()).await?;
        let request = self
            .flow(move |flow| flow.withdraw(&user, &id, reason))
            .await?;
        Ok(effects.run(request).await)
    }

    /// Counts one download by `user` and makes its presigned URLs.
    pub(crate) async fn egress_download(
        self: &Arc<Self>,
        user: String,
        id: String,
    ) -> ApiResult<(EgressRequest, Vec<Download>)> {
        let effects = self.effects()?.clone();
        let store = effects.store();
        let current = self.egress_visible(user.clone(), id.clone()).await?;
        if current.pending.is_some() {
            effects.run(current).await;
        }
        let request = self
            .flow(move |flow| flow.take_download(&user, &id))
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
        Ok((request, downloads))
    }
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
    Caller(user): Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let status = match &query.status {
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("unknown status `{s}` (IN_REVIEW, APPROVED, REJECTED or WITHDRAWN)"),
            )
        })?),
        None => None,
    };
    let requests = api.egress_list(user, status, query.workspace).await?;
    Ok(Json(json!({ "requests": requests })))
}

async fn show(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<EgressRequest>> {
    Ok(Json(api.egress_visible(user, id).await?))
}

async fn history(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    let (request, history) = api.egress_history(user, id).await?;
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
    Caller(user): Caller,
    UrlPath(id): UrlPath<String>,
    Json(body): Json<ReviewBody>,
) -> ApiResult<Json<EgressRequest>> {
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
    Ok(Json(
        api.egress_review(user, id, approve, body.reason).await?,
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    #[serde(default)]
    reason: Option<String>,
}

async fn withdraw(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    UrlPath(id): UrlPath<String>,
    body: Option<Json<ReasonBody>>,
) -> ApiResult<Json<EgressRequest>> {
    let reason = body.and_then(|Json(b)| b.reason);
    Ok(Json(api.egress_withdraw(user, id, reason).await?))
}

async fn retry(
    state: State<Arc<Api>>,
    caller: Caller,
    id: UrlPath<String>,
    body: Option<Json<ReasonBody>>,
) -> ApiResult<Json<EgressRequest>> {
    resolve(state, caller, id, body, Resolution::Retry).await
}

async fn close(
    state: State<Arc<Api>>,
    caller: Caller,
    id: UrlPath<String>,
    body: Option<Json<ReasonBody>>,
) -> ApiResult<Json<EgressRequest>> {
    resolve(state, caller, id, body, Resolution::Close).await
}

async fn resolve(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    UrlPath(id): UrlPath<String>,
    body: Option<Json<ReasonBody>>,
    resolution: Resolution,
) -> ApiResult<Json<EgressRequest>> {
    let effects = api.effects()?.clone();
    api.egress_visible(user.clone(), id.clone()).await?;
    let reason = body.and_then(|Json(b)| b.reason);
    let request = api
        .flow(move |flow| flow.resolve_failed(&user, &id, resolution, reason))
        .await?;
    Ok(Json(effects.run(request).await))
}

async fn download(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    let (request, downloads) = api.egress_download(user, id).await?;
    let store = api.effects()?.store();
    Ok(Json(json!({
        "request": request.id,
        "download": request.download_count,
        "downloadsLeft": request.download_limit - request.download_count,
        "expiresInSeconds": store.config().url_expiry_seconds,
        "files": downloads,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

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
