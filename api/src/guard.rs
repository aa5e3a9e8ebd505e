//! What stands between a caller and the engine: who they are (checked from the request's
//! head, before any body is read), how often they may ask, and how much the server takes on
//! at once and for how long.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;
use tregov_config::api::ApiLimits;

use crate::{Api, ApiError};

/// The authenticated caller, a token's `sub`. As an extractor it runs before the body is
/// read, so an unauthenticated caller is a 401 whatever it sent, and is never parsed.
pub(crate) struct Caller(pub String);

impl FromRequestParts<Arc<Api>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        let sub = api.caller(&parts.headers).await?;
        api.guard.admit(&sub)?;
        Ok(Caller(sub))
    }
}

/// The server-wide bounds, built from `[api.limits]`.
pub(crate) struct Guard {
    in_flight: Arc<Semaphore>,
    /// Slots per bearer token, so one caller's flood leaves the rest of `in_flight` to
    /// everyone else. Keyed by a hash of the `Authorization` header: admission comes before
    /// the token is verified, and a forged token only shares the slots of its own copies.
    per_token: Mutex<HashMap<u64, Arc<Semaphore>>>,
    per_token_max: usize,
    queue: Duration,
    request: Duration,
    rates: RateLimits,
    hasher: std::collections::hash_map::RandomState,
}

impl Guard {
    /// Counts one request of `sub` against its rate; too many is a 429.
    pub(crate) fn admit(&self, sub: &str) -> Result<(), ApiError> {
        self.rates.take(sub)
    }

    pub(crate) fn new(limits: &ApiLimits) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            per_token: Mutex::new(HashMap::new()),
            per_token_max: (limits.max_in_flight / 4).max(1),
            queue: Duration::from_secs(limits.queue_seconds),
            request: Duration::from_secs(limits.request_seconds),
            rates: RateLimits::new(limits.per_caller_per_second, limits.per_caller_burst),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The slots of the token in `headers`, or of the web app's session cookie (one shared
    /// set for requests with neither).
    fn token_slots(&self, headers: &axum::http::HeaderMap) -> Arc<Semaphore> {
        use std::hash::BuildHasher;
        let key = headers
            .get("authorization")
            .or_else(|| headers.get("cookie"))
            .map_or(0, |v| self.hasher.hash_one(v.as_bytes()));
        let mut slots = self.per_token.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() >= MAX_TRACKED_CALLERS && !slots.contains_key(&key) {
            // Forget tokens with nothing in flight.
            slots.retain(|_, s| Arc::strong_count(s) > 1);
        }
        slots
            .entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_token_max)))
            .clone()
    }
}

/// Middleware: at most `max_in_flight` requests at once, and a quarter of those for any one
/// token (a request waits `queue_seconds` for both, then is told to come back), each cut off
/// after `request_seconds`, body included.
pub(crate) async fn bounded(State(api): State<Arc<Api>>, request: Request, next: Next) -> Response {
    let guard = &api.guard;
    let deadline = tokio::time::Instant::now() + guard.queue;
    let token_slots = guard.token_slots(request.headers());
    let own = match tokio::time::timeout_at(deadline, token_slots.acquire_owned()).await {
        Ok(Ok(permit)) => permit,
        _ => return busy("this caller is at its limit of requests in flight"),
    };
    let permit =
        match tokio::time::timeout_at(deadline, guard.in_flight.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => return busy("the server is at its limit of requests in flight"),
        };
    let answer = tokio::time::timeout(guard.request, next.run(request)).await;
    drop(permit);
    drop(own);
    match answer {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the request took longer than {} seconds",
                guard.request.as_secs()
            ),
        )
        .into_response(),
    }
}

fn busy(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).into_response();
    response
        .headers_mut()
        .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    response
}

/// A token bucket per caller: `per_second` sustained, `burst` at once.
pub(crate) struct RateLimits {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Callers tracked before idle ones are forgotten: a flood of distinct (valid) subjects
/// does not grow the map without bound.
const MAX_TRACKED_CALLERS: usize = 10_000;

impl RateLimits {
    fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second),
            burst: f64::from(burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `caller`'s bucket, or says when to come back.
    fn take(&self, caller: &str) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED_CALLERS && !buckets.contains_key(caller) {
            let full_after = Duration::from_secs_f64(self.burst / self.per_second);
            buckets.retain(|_, b| now.duration_since(b.at) < full_after);
        }
        let bucket = buckets.entry(caller.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            let wait = ((1.0 - bucket.tokens) / self.per_second).ceil().max(1.0);
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("`{caller}` is over its rate limit; retry in {wait} seconds"),
            ));
        }
        bucket.tokens -= 1.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_gets_its_burst_then_waits_while_others_are_served() {
        let rates = RateLimits::new(1, 3);
        for _ in 0..3 {
            assert!(rates.take("flooder").is_ok());
        }
        assert!(rates.take("flooder").is_err());
        assert!(rates.take("someone-else").is_ok());
    }
}
