//! Runs the S3 work egress transitions leave pending (stage, publish, unstage), once per
//! request at a time in this process, acting only on what the store says is pending now:
//! the caller's copy of a request may be stale. A failure leaves the effect pending for the
//! next retry; a crash leaves it pending for the next start.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tregov_engine::egress::{Egress, EgressRequest, EgressSettings};
use tregov_engine::shared::SharedEngine;
use tregov_engine::workflow::WorkflowError;

use crate::egress::EgressStore;

pub struct EffectRunner {
    engine: SharedEngine,
    settings: EgressSettings,
    store: EgressStore,
    /// Requests whose effect a task of this process is doing now.
    in_flight: Mutex<HashSet<String>>,
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

    /// Does the S3 work every request still has pending.
    pub async fn resume_pending(self: &Arc<Self>) {
        match self.flow(|flow| Ok(flow.pending()?)).await {
            Ok(pending) => {
                for request in pending {
                    self.run(request).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read pending egress work"),
        }
    }

    /// Does the request's pending effect, if no other task of this process is, and returns
    /// the request as it is afterwards.
    pub async fn run(self: &Arc<Self>, request: EgressRequest) -> EgressRequest {
        if request.pending.is_none() || !self.claim(&request.id) {
            return request;
        }
        let id = request.id.clone();
        let done = self.run_claimed(&id).await;
        self.release(&id);
        done.unwrap_or(request)
    }

    async fn run_claimed(self: &Arc<Self>, id: &str) -> Option<EgressRequest> {
        let current = {
            let id = id.to_string();
            self.flow(move |flow| Ok(flow.get(&id)?)).await.ok()??
        };
        let Some(effect) = current.pending else {
            return Some(current);
        };
        let point = format!("egress-{}-copy", effect.as_str());
        match self
            .store
            .perform(&current, effect, &|| self.hit(&point))
            .await
        {
            Ok(detail) => {
                self.hit("egress-effect-done");
                let id = id.to_string();
                self.flow(move |flow| {
                    flow.complete_effect(&id, effect, detail)?;
                    Ok(flow.get(&id)?)
                })
                .await
                .ok()
                .flatten()
            }
            Err(e) => {
                tracing::warn!(request = %id, effect = effect.as_str(), error = %e, "egress S3 work failed; will retry");
                Some(current)
            }
        }
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
