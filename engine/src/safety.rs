//! Blast-radius limits: no single input (an empty identity export, a listing that lost its
//! permission, a truncated policy file) may make tregov revoke at scale without a human
//! approving it. `gate` splits a plan into what is applied now, what waits for a whole
//! collector pass (deferred) and what waits for an admin (parked).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;

use crate::collect::Source;
use crate::error::Result;
use crate::plan::{Change, Plan, PlanItem, Revokes};
use crate::store::{ParkedKind, Store};

/// The limits in force (`[safety]` in `tregov.toml`).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// A plan revoking more than this fraction of the grants tregov governs parks every
    /// revocation.
    pub max_revoke_fraction: f64,
    /// ... as does one revoking more than this many items.
    pub max_revokes: u64,
    /// A complete listing that shrank by more than this fraction since the last good one is
    /// held back.
    pub max_shrink_fraction: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_revoke_fraction: 0.10,
            max_revokes: 50,
            max_shrink_fraction: 0.50,
        }
    }
}

/// Which limit a plan's revocations exceeded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trip {
    /// `revoke_fraction` or `revoke_count`: the metric label.
    pub reason: &'static str,
    /// Items that take access away.
    pub revoking_items: u64,
    /// Lake Formation grants revoked, of `governed` grants.
    pub revoked_grants: u64,
    pub governed: u64,
}

impl Trip {
    pub fn describe(&self, limits: &Limits) -> String {
        let pct = |f: f64| f * 100.0;
        match self.reason {
            "revoke_count" => format!(
                "{} revoking change(s) is more than `safety.max_revokes` ({})",
                self.revoking_items, limits.max_revokes
            ),
            _ => format!(
                "revoking {} of {} governed grant(s) ({:.0} %) is more than `safety.max_revoke_fraction` ({:.0} %)",
                self.revoked_grants,
                self.governed,
                pct(fraction(self.revoked_grants, self.governed)),
                pct(limits.max_revoke_fraction)
            ),
        }
    }
}

/// `part` of `whole`; all of nothing is everything.
fn fraction(part: u64, whole: u64) -> f64 {
    match (part, whole) {
        (0, _) => 0.0,
        (_, 0) => 1.0,
        (p, w) => p as f64 / w as f64,
    }
}

/// Whether `items` revoke more than the limits allow: more revoking items than
/// `max_revokes`, or more of the `governed` grants tregov made than `max_revoke_fraction`.
/// Reverting grants nothing explains (drift) counts only against the first: in a small TRE
/// one out-of-band grant is a large fraction, and leaving it in place is the worse harm.
pub fn revocation_trip(items: &[&PlanItem], governed: u64, limits: &Limits) -> Option<Trip> {
    let revoking: Vec<&&PlanItem> = items.iter().filter(|i| i.is_revoking()).collect();
    let revoked_grants = revoking
        .iter()
        .filter(|i| matches!(i.change, Change::LfRevoke { .. }) && i.revokes == Revokes::Granted)
        .count() as u64;
    let trip = |reason| Trip {
        reason,
        revoking_items: revoking.len() as u64,
        revoked_grants,
        governed,
    };
    if revoking.len() as u64 > limits.max_revokes {
        return Some(trip("revoke_count"));
    }
    (fraction(revoked_grants, governed) > limits.max_revoke_fraction)
        .then(|| trip("revoke_fraction"))
}

/// Who must approve what before it is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    /// Only what a tripped limit holds back.
    WhenLimitsTrip,
    /// Every item (`daemon --require-approval`).
    Always,
}

/// A plan, split by what happens to each item in this pass.
#[derive(Debug, Default)]
pub struct Gated {
    pub apply: Vec<PlanItem>,
    /// Items resting on a degraded collector, with why.
    pub deferred: Vec<(PlanItem, String)>,
    /// Items waiting for an admin's approval (`tregov approve ID`), with why.
    pub parked: Vec<(PlanItem, String)>,
    /// The limit the plan's revocations exceeded, if one did.
    pub trip: Option<Trip>,
}

/// Splits `plan`: items resting on a `degraded` collector wait for a whole pass; if the
/// revocations left exceed `limits`, none of them is applied but those an admin approved
/// (the rest are parked); with `Approval::Always` every item needs an approval. `full` says
/// the plan covers everything, so parked items it no longer has can lapse.
pub fn gate(
    plan: Plan,
    degraded: &BTreeMap<Source, String>,
    limits: &Limits,
    approval: Approval,
    full: bool,
    store: &Store,
) -> Result<Gated> {
    if full {
        let planned: Vec<&str> = plan.items.iter().map(|i| i.id.as_str()).collect();
        store.expire_unplanned(&planned)?;
    }
    let mut gated = Gated::default();
    let mut ready = Vec::new();
    for item in plan.items {
        match deferral(&item.change, degraded) {
            Some(why) => gated.deferred.push((item, why)),
            None => ready.push(item),
        }
    }
    let refs: Vec<&PlanItem> = ready.iter().collect();
    gated.trip = revocation_trip(&refs, plan.governed_grants, limits);
    let trip_reason = gated.trip.as_ref().map(|t| t.describe(limits));
    for item in ready {
        let why = match (&trip_reason, approval) {
            (_, Approval::Always) => {
                "every change waits for approval (`--require-approval`)".to_string()
            }
            _ if item.needs_approval.is_some() => item.needs_approval.clone().unwrap_or_default(),
            (Some(reason), _) if item.is_revoking() => reason.clone(),
            _ => {
                gated.apply.push(item);
                continue;
            }
        };
        match store
            .park(&item.id, ParkedKind::PlanItem, &json!(item))?
            .as_str()
        {
            "approved" => gated.apply.push(item),
            "pending" => gated.parked.push((item, why)),
            // Rejected: it stays out until an admin approves it.
            _ => {}
        }
    }
    Ok(gated)
}

/// Why a change must wait, if a collector it rests on is degraded.
fn deferral(change: &Change, degraded: &BTreeMap<Source, String>) -> Option<String> {
    let waiting: Vec<String> = change
        .depends_on()
        .iter()
        .filter_map(|s| degraded.get(s).map(|why| format!("`{s}` {why}")))
        .collect();
    (!waiting.is_empty()).then(|| {
        format!(
            "it rests on facts not read whole this pass: {}",
            waiting.join("; ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn item(id: String, change: Change, revokes: Revokes) -> PlanItem {
        PlanItem {
            revokes,
            ..PlanItem::new(change, "test".into(), vec![])
        }
        .with_id(id)
    }

    fn revoke(n: usize) -> PlanItem {
        let change = Change::LfRevoke {
            principal: format!("arn:aws:iam::111111111111:role/r{n}"),
            resource: Value::Null,
            permissions: vec!["SELECT".into()],
            permissions_with_grant_option: vec![],
        };
        item(format!("r{n}"), change, Revokes::Granted)
    }

    fn grant(n: usize) -> PlanItem {
        let change = Change::LfGrant {
            principal: format!("arn:aws:iam::111111111111:role/g{n}"),
            resource: Value::Null,
            permissions: vec!["SELECT".into()],
        };
        item(format!("g{n}"), change, Revokes::Nothing)
    }

    fn plan(items: Vec<PlanItem>, governed: u64) -> Plan {
        Plan {
            policy_version: "v".into(),
            items,
            warnings: vec![],
            decisions: 0,
            governed_grants: governed,
            break_glass_open: 0,
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("store");
        (dir, store)
    }

    /// The gate with the default limits over a full plan, nothing degraded unless said.
    fn gated(
        store: &Store,
        items: Vec<PlanItem>,
        governed: u64,
        degraded: &[(Source, &str)],
    ) -> Gated {
        let degraded = degraded
            .iter()
            .map(|(s, why)| (*s, why.to_string()))
            .collect();
        gate(
            plan(items, governed),
            &degraded,
            &Limits::default(),
            Approval::WhenLimitsTrip,
            true,
            store,
        )
        .expect("gate")
    }

    fn ids(items: &[PlanItem]) -> Vec<&str> {
        items.iter().map(|i| i.id.as_str()).collect()
    }

    #[test]
    fn revoking_more_than_the_fraction_parks_every_revocation_and_lets_grants_through() {
        let (_dir, store) = store();
        let gated = gated(&store, vec![revoke(1), revoke(2), grant(1)], 10, &[]);
        assert_eq!(
            gated.trip.as_ref().map(|t| t.reason),
            Some("revoke_fraction")
        );
        assert_eq!(ids(&gated.apply), vec!["g1"]);
        assert_eq!(gated.parked.len(), 2);
        assert!(
            gated.parked[0].1.contains("2 of 10"),
            "{}",
            gated.parked[0].1
        );
    }

    #[test]
    fn revoking_within_the_limits_applies_everything() {
        let (_dir, store) = store();
        let gated = gated(&store, vec![revoke(1), grant(1)], 10, &[]);
        assert_eq!(gated.trip, None);
        assert_eq!(gated.apply.len(), 2);
    }

    #[test]
    fn more_revoking_items_than_the_count_trips_whatever_the_fraction() {
        let limits = Limits {
            max_revoke_fraction: 1.0,
            max_revokes: 3,
            ..Limits::default()
        };
        let items: Vec<PlanItem> = (0..4).map(revoke).collect();
        let refs: Vec<&PlanItem> = items.iter().collect();
        let trip = revocation_trip(&refs, 1000, &limits).expect("trip");
        assert_eq!(trip.reason, "revoke_count");
    }

    #[test]
    fn reverting_drift_counts_against_the_item_limit_only() {
        let drift = |n| PlanItem {
            revokes: Revokes::Unexplained,
            ..revoke(n)
        };
        let one = [drift(1)];
        let refs: Vec<&PlanItem> = one.iter().collect();
        assert_eq!(revocation_trip(&refs, 1, &Limits::default()), None);
        let many: Vec<PlanItem> = (0..51).map(drift).collect();
        let refs: Vec<&PlanItem> = many.iter().collect();
        let trip = revocation_trip(&refs, 1000, &Limits::default()).expect("trip");
        assert_eq!(trip.reason, "revoke_count");
    }

    #[test]
    fn an_approved_revocation_is_applied_even_while_the_limit_holds_the_rest() {
        let (_dir, store) = store();
        let run = || gated(&store, vec![revoke(1), revoke(2)], 4, &[]);
        assert_eq!(run().parked.len(), 2);
        assert!(store
            .decide_parked("r1", "approved", "ian", None)
            .expect("decide"));
        let second = run();
        assert_eq!(ids(&second.apply), vec!["r1"]);
        assert_eq!(second.parked.len(), 1);
    }

    #[test]
    fn changes_resting_on_a_degraded_collector_wait_and_others_do_not() {
        let (_dir, store) = store();
        let notify = item(
            "n1".into(),
            Change::Notify {
                account: "1".into(),
                topic_arn: "t".into(),
                subject: "s".into(),
                message: "m".into(),
                mark: "k".into(),
            },
            Revokes::Nothing,
        );
        let degraded = [(Source::DataLake, "failed: denied")];
        let gated = gated(&store, vec![grant(1), notify], 10, &degraded);
        assert_eq!(gated.deferred.len(), 1);
        assert!(gated.deferred[0].1.contains("`datalake` failed: denied"));
        assert_eq!(
            ids(&gated.apply),
            vec!["n1"],
            "the notification rests on budgets only"
        );
    }

    #[test]
    fn a_parked_item_a_full_plan_no_longer_has_lapses() {
        let (_dir, store) = store();
        assert_eq!(gated(&store, vec![revoke(1)], 1, &[]).parked.len(), 1);
        gated(&store, vec![], 1, &[]);
        let (status, _) = store.parked_item("r1").expect("read").expect("item");
        assert_eq!(status, "expired");
    }
}
