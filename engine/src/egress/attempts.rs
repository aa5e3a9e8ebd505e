//! S3 work that keeps failing: counted, and after `max_attempts` the request is `FAILED`
//! with an alert, so it never wedges. An IT admin then retries it or closes it (Cedar's
//! `retryEgress` / `closeEgress`), and its requester may withdraw it.

use serde_json::json;

use super::notices::{self, Notice};
use super::{read, write, Effect, Egress, EgressRequest, Status};
use crate::workflow::WorkflowError;

/// The longest failure message kept on a request: enough to act on, never a message body.
const MAX_ERROR_CHARS: usize = 1000;

/// What an IT admin does with a `FAILED` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Try the failed S3 work again from the start of its attempts.
    Retry,
    /// End the request; its staged copies are removed (a failed cleanup is abandoned).
    Close,
}

impl Resolution {
    fn action(self) -> &'static str {
        match self {
            Resolution::Retry => "retryEgress",
            Resolution::Close => "closeEgress",
        }
    }
}

impl Egress<'_> {
    /// Records one failed attempt at `effect`; at `max_attempts` the request becomes
    /// `FAILED` and IT admins are told. A no-op when the effect is no longer pending.
    pub fn effect_failed(
        &self,
        id: &str,
        effect: Effect,
        error: &str,
    ) -> Result<EgressRequest, WorkflowError> {
        let error: String = error.chars().take(MAX_ERROR_CHARS).collect();
        self.transaction(|tx| {
            let Some(mut request) = read(tx, id)? else {
                return Ok(Err(WorkflowError::NotFound(format!("egress request `{id}`"))));
            };
            if request.pending != Some(effect) || request.status == Status::Failed {
                return Ok(Ok(request));
            }
            request.attempts += 1;
            request.last_error = Some(error.clone());
            request.updated_at = crate::log::now_rfc3339();
            if request.attempts >= self.settings.max_attempts {
                request.failed_from = Some(request.status);
                request.status = Status::Failed;
                self.log_event(
                    tx,
                    &request,
                    "failed",
                    "tregov",
                    None,
                    json!({"effect": effect.as_str(), "attempts": request.attempts, "error": error}),
                )?;
                notices::put(tx, &Notice::failed(&request, effect))?;
                tracing::error!(request = %id, effect = effect.as_str(), attempts = request.attempts, error = %error, "egress S3 work failed for good; the request is FAILED until an IT admin retries or closes it");
            }
            write(tx, &request)?;
            Ok(Ok(request))
        })
    }

    /// An IT admin's retry or close of a `FAILED` request, decided by Cedar and logged.
    pub fn resolve_failed(
        &self,
        caller: &str,
        id: &str,
        resolution: Resolution,
        reason: Option<String>,
    ) -> Result<EgressRequest, WorkflowError> {
        super::check_text("reason", reason.as_deref())?;
        self.transaction(|tx| {
            let Some(mut request) = read(tx, id)? else {
                return Ok(Err(WorkflowError::NotFound(format!(
                    "egress request `{id}`"
                ))));
            };
            let status = request.status.as_str();
            let action = resolution.action();
            let outcome = match self.permitted(caller, action, &request, status, || {
                format!("`{caller}` may not {action} request `{id}` ({status})")
            }) {
                Ok(o) => o,
                Err(e) => return Ok(Err(e)),
            };
            let failed = request.pending;
            let event = match resolution {
                Resolution::Retry => {
                    request.status = request.failed_from.unwrap_or(Status::InReview);
                    "retried"
                }
                Resolution::Close => {
                    request.status = Status::Closed;
                    // The staged copies go; a cleanup that itself failed is given up on,
                    // on the record, rather than tried for ever.
                    request.pending = (failed != Some(Effect::Unstage)).then_some(Effect::Unstage);
                    "closed"
                }
            };
            request.failed_from = None;
            request.attempts = 0;
            request.last_error = None;
            request.updated_at = crate::log::now_rfc3339();
            self.log_event(
                tx,
                &request,
                event,
                caller,
                outcome.log_seq,
                json!({"reason": reason, "failedEffect": failed.map(Effect::as_str)}),
            )?;
            write(tx, &request)?;
            Ok(Ok(request))
        })
    }
}
