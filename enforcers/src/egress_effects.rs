//! Runs the S3 work egress transitions leave pending (stage, publish, unstage), once per
//! request at a time across every process on the data directory (a lease in the store),
//! acting only on what the store says is pending now: the caller's copy of a request may be
//! stale. A failure is counted and left pending for the next retry, until `max_attempts`
//! makes the request `FAILED`; a crash leaves it pending for the next start. Notifications
//! are sent from the store's outbox afterwards, so they never hold the files up.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tregov_engine::egress::notices;
use tregov_engine::egress::{Egress, EgressRequest, EgressSettings, Lease, Status};
use tregov_engine::shared::SharedEngine;
use tregov_engine::workflow::WorkflowError;

use crate::egress::EgressStore;

pub struct EffectRunner {
    engine: SharedEngine,
    settings: EgressSettings,
    store: EgressStore,
    /// Requests whose effect a task of this process is doing now.
    in_flight: Mutex<HashSet<String>>,
    /// This process, as the holder of requests' leases in the store.
    lease: Lease,
    /// Whether a task of this process is sending notifications now.
    delivering: AtomicBool,
    /// `TREGOV_FAILPOINT`: the process exits at this point (crash tests).
    failpoint: Option<String>,
}

impl EffectRunner {
    pub fn new(engine: SharedEngine, settings: EgressSettings, store: EgressStore) -> Self {
        Self {
            engine,
            settings,
            store,
            in_flight: Mutex::new(HashSet::new()),
            lease: Lease::this_process(),
            delivering: AtomicBool::new(false),
            failpoint: std::env::var("TREGOV_FAILPOINT")
                .ok()
                .filter(|f| !f.is_empty()),
        }
    }

    pub fn store(&self) -> &EgressStore {
        &self.store
    }

    /// Exits the process at `point` when the crash tests ask for it.
    pub fn hit(&self, point: &str) {
        if self.failpoint.as_deref() == Some(point) {
            eprintln!("tregov: failpoint `{point}` reached: exiting without cleanup");
            std::process::exit(86);
        }
    }

    /// Runs `f` over the egress workflow off the async threads (it fsyncs).
    async fn flow<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Egress<'_>) -> Result<T, WorkflowError> + Send + 'static,
    ) -> Result<T, WorkflowError> {
        let runner = self.clone();
        tokio::task::spawn_blocking(move || {
            let engine = runner.engine.read()?;
            let flow = Egress::new(&engine, &runner.settings)?;
            f(&flow)
        })
        .await
        .map_err(|e| WorkflowError::Engine(tregov_engine::EngineError::System(e.to_string())))?
    }

    /// Does the S3 work every request still has pending, then sends what the outbox holds.
    pub async fn resume_pending(self: &Arc<Self>) {
        match self.flow(|flow| Ok(flow.pending()?)).await {
            Ok(pending) => {
                for request in pending {
                    self.run(request).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read pending egress work"),
        }
        self.deliver_notices().await;
    }

    /// Does the request's pending effect, if no other task or process is, and returns the
    /// request as it is afterwards. Its notifications are sent in the background.
    pub async fn run(self: &Arc<Self>, request: EgressRequest) -> EgressRequest {
        if request.pending.is_none() || request.status == Status::Failed || !self.claim(&request.id)
        {
            return request;
        }
        let id = request.id.clone();
        let done = self.run_leased(&id).await;
        self.release(&id);
        let runner = self.clone();
        tokio::spawn(async move { runner.deliver_notices().await });
        done.unwrap_or(request)
    }

    async fn run_leased(self: &Arc<Self>, id: &str) -> Option<EgressRequest> {
        let (lease, key) = (self.lease.clone(), id.to_string());
        let leased = self
            .flow(move |flow| Ok(lease.acquire(flow.store(), &key, unix_now())?))
            .await;
        match leased {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(request = %id, "another process is doing this request's S3 work");
                return None;
            }
            Err(e) => {
                tracing::warn!(request = %id, error = %e, "cannot take the egress lease");
                return None;
            }
        }
        let done = self.run_claimed(id).await;
        let (lease, key) = (self.lease.clone(), id.to_string());
        if let Err(e) = self
            .flow(move |flow| Ok(lease.release(flow.store(), &key)?))
            .await
        {
            tracing::warn!(request = %id, error = %e, "cannot give the egress lease back; it lapses when this process stops");
        }
        done
    }

    async fn run_claimed(self: &Arc<Self>, id: &str) -> Option<EgressRequest> {
        let current = {
            let id = id.to_string();
            self.flow(move |flow| Ok(flow.get(&id)?)).await.ok()??
        };
        let Some(effect) = current.pending.filter(|_| current.status != Status::Failed) else {
            return Some(current);
        };
        let point = format!("egress-{}-copy", effect.as_str());
        let performed = self
            .store
            .perform(&current, effect, &|| self.hit(&point))
            .await;
        let id = id.to_string();
        match performed {
            Ok(detail) => {
                self.hit("egress-effect-done");
                self.flow(move |flow| {
                    flow.complete_effect(&id, effect, detail)?;
                    Ok(flow.get(&id)?)
                })
                .await
                .ok()
                .flatten()
            }
            Err(e) => {
                tracing::warn!(request = %id, effect = effect.as_str(), attempt = current.attempts + 1, error = %e, "egress S3 work failed; will retry");
                self.flow(move |flow| flow.effect_failed(&id, effect, &e))
                    .await
                    .ok()
            }
        }
    }

    /// Sends every notification that is due, one sender per process at a time (and one per
    /// notification across processes: each is claimed in the store).
    pub async fn deliver_notices(self: &Arc<Self>) {
        if self.delivering.swap(true, Ordering::AcqRel) {
            return;
        }
        loop {
            let next = self
                .flow(|flow| Ok(notices::claim_next(flow.store(), unix_now())?))
                .await;
            let notice = match next {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the notification outbox");
                    break;
                }
            };
            let sent = self.store.send(&notice).await;
            let id = notice.id;
            let recorded = match &sent {
                Ok(()) => {
                    self.flow(move |flow| Ok(notices::sent(flow.store(), id)?))
                        .await
                }
                Err(e) => {
                    tracing::warn!(request = %notice.request, audience = %notice.audience, error = %e, "a notification failed; it waits in the outbox");
                    let e = e.clone();
                    self.flow(move |flow| Ok(notices::failed(flow.store(), id, &e, unix_now())?))
                        .await
                }
            };
            if let Err(e) = recorded {
                tracing::warn!(error = %e, "cannot record a notification's outcome");
                break;
            }
        }
        self.delivering.store(false, Ordering::Release);
    }

    fn claim(&self, id: &str) -> bool {
        self.in_flight
            .lock()
            .is_ok_and(|mut busy| busy.insert(id.to_string()))
    }

    fn release(&self, id: &str) {
        if let Ok(mut busy) = self.in_flight.lock() {
            busy.remove(id);
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
