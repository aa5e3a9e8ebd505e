//! tregov's reconciler: collect what AWS holds, plan what the policies allow, pass the plan
//! through the blast-radius gate, apply what passes, and record every result. The daemon
//! drives it with `reconcile::run`; `tregov apply` calls its steps once, with a prompt
//! between planning and applying.
//!
//! Everything AWS-shaped comes in through the engine's own traits (`collect::Collector`,
//! `enforce::Enforcer`), so the governor is tested here without AWS.

mod apply;
mod pass;
mod reload;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::clock::Tick;
use crate::collect::{Collector, Progress, Quiet};
use crate::decide::Engine;
use crate::enforce::Enforcer;
use crate::error::{EngineError, Result};
use crate::events::EventStore;
use crate::metrics::Metrics;
use crate::plan::PlanSettings;
use crate::policies::PolicyBundle;
use crate::reconcile::{backoff, Action, Cause, Reconciler, Trigger};
use crate::safety::{Approval, Limits};

pub use apply::Applied;

/// What the governor does with a plan that passes the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Apply it.
    Enforce,
    /// Log it as planned; apply nothing.
    DryRun,
    /// Park every item until an admin approves it.
    RequireApproval,
}

/// How the governor is set up: the deployment facts, the limits, the cadence.
pub struct Settings {
    pub plan: PlanSettings,
    pub limits: Limits,
    pub mode: Mode,
    /// How often the trail is polled for new log files.
    pub poll: Duration,
    /// How often every collector is read again.
    pub resync: Duration,
    /// Recorded with every decision and result (`daemon`, `apply`).
    pub origin: &'static str,
    /// SNS topic told when a limit holds changes back.
    pub alert_topic: Option<String>,
    /// The policies directory to reload from, through the gate; `None`: fixed policies.
    pub policies_dir: Option<PathBuf>,
    /// What a reload does with a set that allows more than the running one.
    pub widening: crate::widening::WideningGate,
}

/// Called with each policy set the governor starts deciding with (the API takes it too).
pub type OnPolicies = Box<dyn Fn(&PolicyBundle) + Send>;

/// The collectors and enforcers for the accounts governed now.
pub type Components = (Vec<Box<dyn Collector>>, Vec<Box<dyn Enforcer>>);

/// Asked before each resync whether the governed accounts changed (projects discovered from
/// AWS Organizations): new components when they did, `None` to keep the current ones.
pub trait Rediscover: Send {
    fn rediscover(&mut self) -> crate::collect::BoxFuture<'_, Option<Components>>;
}

pub struct Governor {
    engine: Engine,
    events: Arc<EventStore>,
    collectors: Vec<Box<dyn Collector>>,
    enforcers: Vec<Box<dyn Enforcer>>,
    settings: Settings,
    metrics: Arc<Metrics>,
    progress: Box<dyn Progress + Send>,
    on_policies: Option<OnPolicies>,
    rediscover: Option<Box<dyn Rediscover>>,
    /// The last policy set version tried, good or bad: a bad one is reported once.
    policy_attempt: Option<String>,
    /// The newest trail log file whose changes have been reconciled.
    trail_mark: i64,
    next_resync: Instant,
    next_poll: Instant,
    failures: u32,
    /// The limits that are holding changes back now, so each alert goes out once.
    tripped: BTreeSet<String>,
    /// The governance clock the last plan was made at: when it moves, everything is
    /// planned again (access that rested on a date that passed ends).
    planned_at: Option<Tick>,
}

impl Governor {
    pub fn new(
        engine: Engine,
        events: Arc<EventStore>,
        collectors: Vec<Box<dyn Collector>>,
        enforcers: Vec<Box<dyn Enforcer>>,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        if engine.store().is_none() {
            return Err(EngineError::Request(
                "governing needs the entity store".into(),
            ));
        }
        metrics.set_resync_period(settings.resync);
        metrics.policies_loaded();
        let trail_mark = events.last_file_id()?;
        let now = Instant::now();
        Ok(Self {
            engine,
            events,
            collectors,
            enforcers,
            settings,
            metrics,
            progress: Box::new(Quiet),
            on_policies: None,
            rediscover: None,
            policy_attempt: None,
            trail_mark,
            next_resync: now,
            next_poll: now,
            failures: 0,
            tripped: BTreeSet::new(),
            planned_at: None,
        })
    }

    /// Progress output for long collector passes (a bar on a terminal).
    pub fn with_progress(mut self, progress: Box<dyn Progress + Send>) -> Self {
        self.progress = progress;
        self
    }

    pub fn on_policies(mut self, f: OnPolicies) -> Self {
        self.on_policies = Some(f);
        self
    }

    /// Re-reads which accounts are governed before every resync.
    pub fn with_rediscovery(mut self, rediscover: Box<dyn Rediscover>) -> Self {
        self.rediscover = Some(rediscover);
        self
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The event store the trail is read into (real-time events are stored there too).
    pub fn events(&self) -> &Arc<EventStore> {
        &self.events
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn approval(&self) -> Approval {
        match self.settings.mode {
            Mode::RequireApproval => Approval::Always,
            Mode::Enforce | Mode::DryRun => Approval::WhenLimitsTrip,
        }
    }

    /// When to look again: the next poll or resync, or the moment the governance clock
    /// moves, whichever is first.
    fn next_action(&self) -> Action {
        let now = Instant::now();
        let next = self.next_poll.min(self.next_resync);
        let wait = next.saturating_duration_since(now);
        let clock = self
            .planned_at
            .map(|tick| tick.until_next(std::time::SystemTime::now()));
        Action::requeue(clock.map_or(wait, |clock| clock.min(wait)))
    }

    /// Whether the governance clock has moved since the last plan.
    fn clock_moved(&self) -> bool {
        self.planned_at
            .is_some_and(|tick| self.engine.tick_at(std::time::SystemTime::now()).now != tick.now)
    }

    async fn handle(&mut self, trigger: Trigger) -> Result<()> {
        match trigger {
            Trigger::Resync => self.resync().await,
            Trigger::Replan(cause) => {
                if cause == Cause::Policies {
                    self.reload_policies().await;
                }
                self.converge(None, None).await
            }
            Trigger::Trail(changes) => self.on_trail(changes, None).await,
            Trigger::Queued(changes, arrived) => {
                // Timed from the event's arrival in the queue, not from this trigger.
                let waited = SystemTime::now()
                    .duration_since(arrived)
                    .unwrap_or_default();
                let detected = Instant::now().checked_sub(waited);
                let result = self.on_trail(changes, detected).await;
                let since = SystemTime::now()
                    .duration_since(arrived)
                    .unwrap_or_default();
                self.metrics.queued_event_handled(since);
                result
            }
            Trigger::Scheduled(_) if Instant::now() >= self.next_resync => self.resync().await,
            Trigger::Scheduled(_) if self.clock_moved() => {
                tracing::info!("the governance clock moved: a stored date passed");
                self.collect(crate::collect::Pass::Dated).await?;
                self.converge(None, None).await
            }
            Trigger::Scheduled(_) => self.poll().await,
        }
    }
}

impl Reconciler for Governor {
    type Error = EngineError;

    fn reconcile(
        &mut self,
        trigger: Trigger,
    ) -> crate::collect::BoxFuture<'_, std::result::Result<Action, EngineError>> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let kind = trigger.kind();
            let result = self.handle(trigger).await;
            self.metrics
                .reconciled(kind, result.is_ok(), started.elapsed());
            if let Ok(pending) = self.store().and_then(|s| s.pending_count()) {
                self.metrics.set_parked(pending);
            }
            for kind in crate::plan::kind::FINDINGS {
                if let Ok(found) = self.store().and_then(|s| s.observed(Some(kind))) {
                    self.metrics.set_finding(kind, found.len());
                }
            }
            result?;
            self.failures = 0;
            Ok(self.next_action())
        })
    }

    /// Retries with exponential backoff from the poll interval, never waiting longer than a
    /// resync period.
    fn error_policy(&mut self, error: &EngineError, trigger: &Trigger) -> Action {
        self.failures += 1;
        let wait = backoff(self.failures, self.settings.poll, self.settings.resync);
        tracing::error!(trigger = trigger.kind(), failures = self.failures, retry_in_s = wait.as_secs(), error = %error, "reconcile failed; nothing more applied this pass");
        Action::requeue(wait)
    }
}
