//! The controller loop, shaped like kube-runtime's: a `Reconciler` is asked to bring the world
//! to what the policies allow whenever something may have changed, and answers with the
//! `Action` that says when to look again. Reconciling is level-triggered: the trigger says
//! why to look, never what to believe; the reconciler re-reads current state every time.
//!
//! The loop is generic and knows nothing of AWS: triggers arrive on a channel (a timer, a
//! file watcher, a signal, a queue), a requeue becomes a `Scheduled` trigger at its instant,
//! and errors go through the reconciler's `error_policy`. Time is tokio's, so tests drive it
//! with a paused clock.

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::collect::BoxFuture;
use crate::events::ObservedChange;

/// Why the reconciler is asked to look now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Re-read every collector, then plan everything.
    Resync,
    /// Plan everything over the store as it is.
    Replan(Cause),
    /// Governed changes the trail recorded: re-read the collectors that answer their kinds
    /// and plan what they name.
    Trail(Vec<ObservedChange>),
    /// Governed changes a real-time event queue delivered, and when the earliest of them
    /// arrived in the queue: handled as `Trail`, timed from that arrival.
    Queued(Vec<ObservedChange>, std::time::SystemTime),
    /// The instant an earlier `Action` asked to be woken at.
    Scheduled(Instant),
}

/// What changed, for a replan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    /// The policy files changed (or SIGHUP): reload them, then plan.
    Policies,
    /// The configuration changed.
    Config,
    /// An admin decided a parked item.
    Approval,
}

impl Trigger {
    /// Two triggers that arrived before either was handled, as one: a resync covers
    /// everything, a replan covers trail changes (it plans every role), and trail changes
    /// add up.
    pub fn merge(self, other: Trigger) -> Trigger {
        use Trigger::*;
        match (self, other) {
            (Resync, _) | (_, Resync) => Resync,
            (Replan(a), Replan(b)) => Replan(a.min(b)),
            (Replan(c), _) | (_, Replan(c)) => Replan(c),
            (Trail(a), Trail(b)) => Trail(union(a, b)),
            (Queued(a, t), Queued(b, u)) => Queued(union(a, b), t.min(u)),
            (Queued(a, t), Trail(b)) | (Trail(b), Queued(a, t)) => Queued(union(a, b), t),
            (Trail(a), Scheduled(_)) | (Scheduled(_), Trail(a)) => Trail(a),
            (Queued(a, t), Scheduled(_)) | (Scheduled(_), Queued(a, t)) => Queued(a, t),
            (Scheduled(a), Scheduled(b)) => Scheduled(a.min(b)),
        }
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Resync => "resync",
            Trigger::Replan(_) => "replan",
            Trigger::Trail(_) => "trail",
            Trigger::Queued(..) => "events",
            Trigger::Scheduled(_) => "scheduled",
        }
    }
}

/// Two sets of trail changes as one, each change once.
fn union(mut a: Vec<ObservedChange>, b: Vec<ObservedChange>) -> Vec<ObservedChange> {
    a.extend(b);
    a.sort();
    a.dedup();
    a
}

/// When to reconcile again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Look again after this long, whatever else happens.
    Requeue(Duration),
    /// Look again only when a trigger arrives.
    AwaitChange,
}

impl Action {
    pub fn requeue(after: Duration) -> Self {
        Action::Requeue(after)
    }

    pub fn await_change() -> Self {
        Action::AwaitChange
    }
}

pub trait Reconciler: Send {
    type Error: std::fmt::Display + Send;

    /// Brings the world to what the policies allow, as far as one pass can.
    fn reconcile(&mut self, trigger: Trigger) -> BoxFuture<'_, Result<Action, Self::Error>>;

    /// What to do after `reconcile` failed with `error`: usually to look again after a
    /// backoff.
    fn error_policy(&mut self, error: &Self::Error, trigger: &Trigger) -> Action;
}

/// Drives `reconciler` until `shutdown` resolves. A reconcile in flight always finishes:
/// shutdown is only looked at between reconciles. Triggers that queued up while one ran are
/// merged into the next.
pub async fn run<R: Reconciler>(
    reconciler: &mut R,
    mut triggers: mpsc::Receiver<Trigger>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut next: Option<Instant> = None;
    let mut open = true;
    loop {
        let wake = next;
        let trigger = tokio::select! {
            biased;
            _ = &mut shutdown => return,
            received = triggers.recv(), if open => match received {
                Some(t) => drain(t, &mut triggers),
                None => {
                    open = false;
                    continue;
                }
            },
            _ = sleep_until(wake), if wake.is_some() => Trigger::Scheduled(wake.unwrap_or_else(Instant::now)),
        };
        let action = match reconciler.reconcile(trigger.clone()).await {
            Ok(action) => action,
            Err(error) => {
                tracing::warn!(trigger = trigger.kind(), %error, "reconcile failed");
                reconciler.error_policy(&error, &trigger)
            }
        };
        next = match action {
            Action::Requeue(after) => Some(Instant::now() + after),
            Action::AwaitChange => None,
        };
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// `first` merged with every trigger already waiting.
fn drain(first: Trigger, triggers: &mut mpsc::Receiver<Trigger>) -> Trigger {
    let mut trigger = first;
    while let Ok(more) = triggers.try_recv() {
        trigger = trigger.merge(more);
    }
    trigger
}

/// Exponential backoff for `error_policy`: `base` doubled per consecutive failure, at most
/// `cap`.
pub fn backoff(failures: u32, base: Duration, cap: Duration) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    base.saturating_mul(factor).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::ObservationKind;

    /// Records what it was asked and when (in whole seconds of the paused clock), answering
    /// from a script.
    struct Scripted {
        start: Instant,
        seen: Vec<(u64, Trigger)>,
        answers: Vec<Result<Action, String>>,
        failures: u32,
    }

    impl Scripted {
        fn new(answers: Vec<Result<Action, String>>) -> Self {
            Self {
                start: Instant::now(),
                seen: Vec::new(),
                answers,
                failures: 0,
            }
        }

        fn times(&self) -> Vec<u64> {
            self.seen.iter().map(|(t, _)| *t).collect()
        }
    }

    impl Reconciler for Scripted {
        type Error = String;

        fn reconcile(&mut self, trigger: Trigger) -> BoxFuture<'_, Result<Action, String>> {
            Box::pin(async move {
                self.seen.push((self.start.elapsed().as_secs(), trigger));
                let answer = if self.answers.is_empty() {
                    Ok(Action::AwaitChange)
                } else {
                    self.answers.remove(0)
                };
                // Reconciling takes a second of (paused) time.
                tokio::time::sleep(Duration::from_secs(1)).await;
                if answer.is_ok() {
                    self.failures = 0;
                }
                answer
            })
        }

        fn error_policy(&mut self, _: &String, _: &Trigger) -> Action {
            self.failures += 1;
            Action::requeue(backoff(
                self.failures,
                Duration::from_secs(2),
                Duration::from_secs(60),
            ))
        }
    }

    fn every(n: u64) -> Result<Action, String> {
        Ok(Action::requeue(Duration::from_secs(n)))
    }

    /// Runs the loop for `secs` of paused time, starting with `first`.
    async fn drive(reconciler: &mut Scripted, first: Trigger, secs: u64) -> mpsc::Sender<Trigger> {
        let (tx, rx) = mpsc::channel(8);
        tx.send(first).await.expect("send");
        let stop = tokio::time::sleep(Duration::from_secs(secs));
        run(reconciler, rx, stop).await;
        tx
    }

    #[tokio::test(start_paused = true)]
    async fn a_requeue_comes_back_as_a_scheduled_trigger_after_its_duration() {
        let mut r = Scripted::new(vec![every(10), every(10), every(10), every(10)]);
        drive(&mut r, Trigger::Resync, 35).await;
        // Each reconcile takes 1 s; the requeue counts from its end.
        assert_eq!(r.times(), vec![0, 11, 22, 33]);
        assert_eq!(r.seen[0].1, Trigger::Resync);
        assert!(matches!(r.seen[1].1, Trigger::Scheduled(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_through_the_error_policy_and_success_resets_it() {
        let err = || Err("aws is down".to_string());
        let mut r = Scripted::new(vec![err(), err(), err(), every(5), err()]);
        drive(&mut r, Trigger::Resync, 30).await;
        // Fails at 0 (+1 s, back off 2), 3 (back off 4), 8 (back off 8), succeeds at 17
        // (requeue 5), fails at 23 (back off 2 again).
        assert_eq!(r.times(), vec![0, 3, 8, 17, 23, 26]);
    }

    #[tokio::test(start_paused = true)]
    async fn await_change_sleeps_until_a_trigger_arrives() {
        let mut r = Scripted::new(vec![Ok(Action::AwaitChange)]);
        let (tx, rx) = mpsc::channel(8);
        tx.send(Trigger::Resync).await.expect("send");
        let later = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(40)).await;
            let _ = later.send(Trigger::Replan(Cause::Policies)).await;
        });
        run(&mut r, rx, tokio::time::sleep(Duration::from_secs(100))).await;
        assert_eq!(r.times(), vec![0, 40]);
        assert_eq!(r.seen[1].1, Trigger::Replan(Cause::Policies));
    }

    #[tokio::test(start_paused = true)]
    async fn triggers_that_queue_during_a_reconcile_are_merged_into_one() {
        let mut r = Scripted::new(vec![Ok(Action::AwaitChange)]);
        let (tx, rx) = mpsc::channel(8);
        let change = |target: &str| ObservedChange {
            kind: ObservationKind::LakeformationGrant,
            account: "111111111111".into(),
            target: Some(target.into()),
        };
        tx.send(Trigger::Trail(vec![change("a")]))
            .await
            .expect("send");
        let more = tx.clone();
        tokio::spawn(async move {
            // While the first reconcile runs (it takes 1 s).
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = more.send(Trigger::Trail(vec![change("b")])).await;
            let _ = more.send(Trigger::Trail(vec![change("a")])).await;
        });
        run(&mut r, rx, tokio::time::sleep(Duration::from_secs(10))).await;
        assert_eq!(r.seen.len(), 2, "{:?}", r.seen);
        assert_eq!(r.seen[1].1, Trigger::Trail(vec![change("a"), change("b")]));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_lets_the_reconcile_in_flight_finish() {
        let mut r = Scripted::new(vec![every(1); 10]);
        let (tx, rx) = mpsc::channel(8);
        tx.send(Trigger::Resync).await.expect("send");
        // Shutdown is asked for half-way through the first reconcile.
        run(&mut r, rx, tokio::time::sleep(Duration::from_millis(500))).await;
        assert_eq!(r.times(), vec![0]);
    }

    #[test]
    fn a_resync_covers_a_replan_which_covers_trail_changes() {
        let trail = Trigger::Trail(vec![]);
        assert_eq!(trail.clone().merge(Trigger::Resync), Trigger::Resync);
        assert_eq!(
            trail.merge(Trigger::Replan(Cause::Approval)),
            Trigger::Replan(Cause::Approval)
        );
        assert_eq!(
            Trigger::Replan(Cause::Approval).merge(Trigger::Replan(Cause::Policies)),
            Trigger::Replan(Cause::Policies),
            "a policy change (which reloads) is never lost in a merge"
        );
    }

    #[test]
    fn queued_changes_merge_with_trail_changes_and_keep_the_earliest_arrival() {
        let (early, late) = (
            std::time::UNIX_EPOCH + Duration::from_secs(10),
            std::time::UNIX_EPOCH + Duration::from_secs(20),
        );
        let change = |target: &str| ObservedChange {
            kind: crate::events::ObservationKind::LakeformationGrant,
            account: "111111111111".into(),
            target: Some(target.into()),
        };
        let merged = Trigger::Queued(vec![change("a")], late)
            .merge(Trigger::Trail(vec![change("b")]))
            .merge(Trigger::Queued(vec![change("a")], early));
        assert_eq!(
            merged,
            Trigger::Queued(vec![change("a"), change("b")], early)
        );
        assert_eq!(merged.merge(Trigger::Resync), Trigger::Resync);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let s = Duration::from_secs;
        assert_eq!(backoff(1, s(2), s(60)), s(2));
        assert_eq!(backoff(3, s(2), s(60)), s(8));
        assert_eq!(backoff(30, s(2), s(60)), s(60));
    }
}
