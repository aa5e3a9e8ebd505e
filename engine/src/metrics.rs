//! What the controller exposes on `/metrics` (Prometheus / OpenMetrics text, through the
//! `prometheus-client` crate), and what `/readyz` answers from.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::cache::CacheStats;
use crate::plan::PlanReuse;

type Labels1 = [(&'static str, String); 1];
type Labels2 = [(&'static str, String); 2];

/// Every metric tregov keeps, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconcile_seconds: Family<Labels1, Histogram>,
    queued_event_seconds: Histogram,
    reconciles: Family<Labels2, Counter>,
    decisions: Counter,
    plan_items: Counter,
    applies: Family<Labels2, Counter>,
    parked: Gauge,
    pending_dates: Gauge,
    break_glass_open: Gauge,
    findings: Family<Labels1, Gauge>,
    safety_trips: Family<Labels1, Counter>,
    reloads: Counter,
    reload_failures: Counter,
    lag: std::sync::Arc<CollectorLag>,
    cache: std::sync::Arc<CacheCounts>,
    readiness: Readiness,
}

#[derive(Debug)]
struct Readiness {
    policies_loaded: AtomicBool,
    last_success: Mutex<Option<Instant>>,
    resync: Mutex<Duration>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconcile_seconds = Family::<Labels1, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        registry.register(
            "tregov_reconcile_duration_seconds",
            "Time one reconcile took, by trigger",
            reconcile_seconds.clone(),
        );
        let queued_event_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 12));
        registry.register(
            "tregov_queued_event_reconcile_seconds",
            "From a real-time CloudTrail event's arrival in the queue to the end of the reconcile it caused (drift revert included)",
            queued_event_seconds.clone(),
        );
        let reconciles = Family::<Labels2, Counter>::default();
        registry.register(
            "tregov_reconciles",
            "Reconciles, by trigger and result",
            reconciles.clone(),
        );
        let decisions = Counter::default();
        registry.register(
            "tregov_decisions",
            "Cedar decisions taken while planning",
            decisions.clone(),
        );
        let plan_items = Counter::default();
        registry.register(
            "tregov_plan_items",
            "Plan items computed",
            plan_items.clone(),
        );
        let applies = Family::<Labels2, Counter>::default();
        registry.register(
            "tregov_applies",
            "Plan items applied, by enforcer and result",
            applies.clone(),
        );
        let parked = Gauge::default();
        registry.register(
            "tregov_parked_items",
            "Plan items waiting for an admin's approval",
            parked.clone(),
        );
        let pending_dates = Gauge::default();
        registry.register(
            "tregov_pending_dates",
            "Stored dates (expiries, training lapses, project ends) still ahead of the clock",
            pending_dates.clone(),
        );
        let break_glass_open = Gauge::default();
        registry.register(
            "tregov_break_glass_open",
            "Break-glass grants the last plan left open (admitted by a project's break-glass role): alert on any",
            break_glass_open.clone(),
        );
        let findings = Family::<Labels1, Gauge>::default();
        registry.register(
            "tregov_findings",
            "Facts in doubt tregov reports and does not act on as they claim (tag drift, unregistered workspaces, roles outside their project, quarantined datasets, widening label changes waiting), by kind",
            findings.clone(),
        );
        let safety_trips = Family::<Labels1, Counter>::default();
        registry.register(
            "tregov_safety_trips",
            "Times a blast-radius limit held changes back, by reason",
            safety_trips.clone(),
        );
        let reloads = Counter::default();
        registry.register(
            "tregov_policy_reloads",
            "Policy sets loaded after a change",
            reloads.clone(),
        );
        let reload_failures = Counter::default();
        registry.register(
            "tregov_policy_reload_failures",
            "Policy changes rejected (the last good set kept deciding)",
            reload_failures.clone(),
        );
        registry.register(
            "tregov_build",
            "The tregov build serving these metrics",
            Info::new([("version", env!("CARGO_PKG_VERSION").to_string())]),
        );
        let lag = std::sync::Arc::new(CollectorLag::default());
        registry.register_collector(Box::new(lag.clone()));
        let cache = std::sync::Arc::new(CacheCounts::default());
        registry.register_collector(Box::new(cache.clone()));
        Self {
            registry,
            reconcile_seconds,
            queued_event_seconds,
            reconciles,
            decisions,
            plan_items,
            applies,
            parked,
            pending_dates,
            break_glass_open,
            findings,
            safety_trips,
            reloads,
            reload_failures,
            lag,
            cache,
            readiness: Readiness {
                policies_loaded: AtomicBool::new(false),
                last_success: Mutex::new(None),
                resync: Mutex::new(Duration::from_secs(300)),
            },
        }
    }

    pub fn reconciled(&self, trigger: &str, ok: bool, took: Duration) {
        self.reconcile_seconds
            .get_or_create(&[("trigger", trigger.to_string())])
            .observe(took.as_secs_f64());
        let result = if ok { "ok" } else { "error" };
        self.reconciles
            .get_or_create(&[("trigger", trigger.to_string()), ("result", result.into())])
            .inc();
        if ok {
            if let Ok(mut last) = self.readiness.last_success.lock() {
                *last = Some(Instant::now());
            }
        }
    }

    /// A real-time event's changes reconciled, `since` its arrival in the queue.
    pub fn queued_event_handled(&self, since: Duration) {
        self.queued_event_seconds.observe(since.as_secs_f64());
    }

    pub fn planned(&self, decisions: u64, items: u64) {
        self.decisions.inc_by(decisions);
        self.plan_items.inc_by(items);
    }

    /// The decision cache's counts as the engine reports them now.
    pub fn set_decision_cache(&self, stats: CacheStats) {
        if let Ok(mut s) = self.cache.decisions.lock() {
            *s = stats;
        }
    }

    /// The planner's counts of roles kept from the last plan and planned afresh.
    pub fn set_plan_reuse(&self, reuse: PlanReuse) {
        if let Ok(mut s) = self.cache.plans.lock() {
            *s = reuse;
        }
    }

    pub fn applied(&self, enforcer: &str, ok: bool) {
        let result = if ok { "applied" } else { "failed" };
        self.applies
            .get_or_create(&[
                ("enforcer", enforcer.to_string()),
                ("result", result.into()),
            ])
            .inc();
    }

    pub fn set_pending_dates(&self, pending: usize) {
        self.pending_dates
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    pub fn set_break_glass_open(&self, open: u64) {
        self.break_glass_open
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    pub fn set_parked(&self, pending: u64) {
        self.parked.set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    pub fn set_finding(&self, kind: &str, count: usize) {
        self.findings
            .get_or_create(&[("kind", kind.to_string())])
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn safety_trip(&self, reason: &str) {
        self.safety_trips
            .get_or_create(&[("reason", reason.to_string())])
            .inc();
    }

    pub fn policies_loaded(&self) {
        self.readiness
            .policies_loaded
            .store(true, Ordering::Relaxed);
    }

    pub fn reloaded(&self, ok: bool) {
        if ok {
            self.reloads.inc();
        } else {
            self.reload_failures.inc();
        }
    }

    /// A collector's run finished; `whole` when it read everything and was written.
    pub fn collected(&self, collector: &str, whole: bool) {
        self.lag.seen(collector, whole);
    }

    pub fn set_resync_period(&self, resync: Duration) {
        if let Ok(mut r) = self.readiness.resync.lock() {
            *r = resync;
        }
    }

    /// Ready when the policies are loaded and a reconcile succeeded within two resync
    /// periods; otherwise why not.
    pub fn ready(&self) -> Result<(), String> {
        if !self.readiness.policies_loaded.load(Ordering::Relaxed) {
            return Err("no policies loaded yet".into());
        }
        let resync = self.readiness.resync.lock().map(|r| *r).unwrap_or_default();
        let last = self.readiness.last_success.lock().ok().and_then(|l| *l);
        match last {
            Some(at) if at.elapsed() <= resync * 2 => Ok(()),
            Some(at) => Err(format!(
                "the last successful reconcile was {} s ago (more than two resync periods)",
                at.elapsed().as_secs()
            )),
            None => Err("no reconcile has succeeded yet".into()),
        }
    }

    /// The metrics as OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Seconds since each collector last read everything, computed at scrape time (a gauge set
/// at the end of a pass would freeze while the daemon is stuck).
#[derive(Debug, Default)]
struct CollectorLag {
    last_whole: Mutex<BTreeMap<String, Option<Instant>>>,
    started: std::sync::OnceLock<Instant>,
}

impl CollectorLag {
    fn seen(&self, collector: &str, whole: bool) {
        self.started.get_or_init(Instant::now);
        if let Ok(mut m) = self.last_whole.lock() {
            let entry = m.entry(collector.to_string()).or_default();
            if whole {
                *entry = Some(Instant::now());
            }
        }
    }
}

impl Collector for CollectorLag {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(m) = self.last_whole.lock() else {
            return Ok(());
        };
        let started = self.started.get().copied().unwrap_or_else(Instant::now);
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "tregov_collector_lag_seconds",
            "Seconds since each collector last read everything it lists.",
            None,
            gauge.metric_type(),
        )?;
        for (collector, last) in m.iter() {
            let since = last.unwrap_or(started).elapsed().as_secs();
            let labels = [("collector", collector.as_str())];
            let metric = family.encode_family(&labels)?;
            ConstGauge::new(i64::try_from(since).unwrap_or(i64::MAX)).encode(metric)?;
        }
        Ok(())
    }
}

/// The engine's decision-cache and plan-reuse counts, which the engine keeps itself (they
/// are counted under its locks on every decision and plan); rendered as counters at scrape
/// time.
#[derive(Debug, Default)]
struct CacheCounts {
    decisions: Mutex<CacheStats>,
    plans: Mutex<PlanReuse>,
}

impl Collector for CacheCounts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (Ok(stats), Ok(plans)) = (
            self.decisions.lock().map(|s| *s),
            self.plans.lock().map(|s| *s),
        ) else {
            return Ok(());
        };
        let counters = [
            (
                "tregov_decision_cache_hits",
                "Decisions answered from the exact decision cache",
                stats.hits,
            ),
            (
                "tregov_decision_cache_misses",
                "Decisions Cedar evaluated (not in the cache)",
                stats.misses,
            ),
            (
                "tregov_decision_cache_invalidations",
                "Cached answers dropped because an entity they depend on changed",
                stats.invalidated,
            ),
            (
                "tregov_decision_cache_evictions",
                "Cached answers dropped to stay within the cache's capacity",
                stats.evicted,
            ),
            (
                "tregov_decision_cache_clears",
                "Whole-cache clears (a policy set swapped, a policy's literal entity changed)",
                stats.cleared,
            ),
            (
                "tregov_plan_roles_reused",
                "Roles whose part of the last plan was kept: nothing it rests on changed",
                plans.reused,
            ),
            (
                "tregov_plan_roles_planned",
                "Roles planned afresh",
                plans.planned,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let gauge = ConstGauge::new(i64::try_from(stats.entries).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "tregov_decision_cache_entries",
            "Answers in the decision cache",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_labelled_families_render_as_prometheus_reads_them() {
        let m = Metrics::new();
        m.reloaded(false);
        m.applied("lakeformation", true);
        m.applied("lakeformation", true);
        m.safety_trip("revoke_fraction");
        m.collected("datalake", true);
        let text = m.render();
        assert!(
            text.contains("tregov_policy_reload_failures_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "tregov_applies_total{enforcer=\"lakeformation\",result=\"applied\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("tregov_safety_trips_total{reason=\"revoke_fraction\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("tregov_collector_lag_seconds{collector=\"datalake\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("tregov_build_info{version="), "{text}");
        m.set_decision_cache(CacheStats {
            hits: 7,
            entries: 3,
            ..Default::default()
        });
        let text = m.render();
        assert!(
            text.contains("tregov_decision_cache_hits_total 7\n"),
            "{text}"
        );
        assert!(text.contains("tregov_decision_cache_entries 3\n"), "{text}");
        m.set_plan_reuse(PlanReuse {
            reused: 5,
            planned: 2,
        });
        let text = m.render();
        assert!(
            text.contains("tregov_plan_roles_reused_total 5\n"),
            "{text}"
        );
        assert!(
            text.contains("tregov_plan_roles_planned_total 2\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn not_ready_until_policies_load_and_a_reconcile_succeeds() {
        let m = Metrics::new();
        assert!(m.ready().is_err());
        m.policies_loaded();
        assert!(m.ready().is_err());
        m.reconciled("resync", true, Duration::from_millis(5));
        assert_eq!(m.ready(), Ok(()));
    }
}
