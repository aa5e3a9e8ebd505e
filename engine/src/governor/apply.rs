//! Applying what passed the gate, and recording it: every result in the hash-chained log
//! with its change and the decisions behind it, notifications remembered so they go out
//! once, approvals marked used, and a tripped limit announced once.

use serde_json::{json, Map, Value};

use crate::enforce::{apply_items, ItemResult};
use crate::error::Result;
use crate::plan::{kind, Change, PlanItem, NOTIFICATION_KIND};
use crate::safety::Gated;
use crate::store::Observed;

use super::Governor;

/// Where tregov keeps what it establishes itself (notifications sent).
const ENFORCER_PARTITION: &str = "enforcer";

/// What applying a gated plan did.
#[derive(Debug, Default)]
pub struct Applied {
    pub results: Vec<ItemResult>,
}

impl Applied {
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| r.error.is_some()).count()
    }
}

impl Governor {
    /// Applies `gated.apply` through the enforcers and records each result.
    pub async fn enforce(&mut self, gated: &Gated) -> Result<Applied> {
        let results = apply_items(&self.enforcers, &gated.apply).await;
        for r in &results {
            match &r.error {
                None => tracing::info!(item = %r.item, enforcer = r.enforcer, "applied"),
                Some(e) => {
                    tracing::warn!(item = %r.item, enforcer = r.enforcer, error = %e, "apply failed")
                }
            }
            self.metrics.applied(r.enforcer, r.error.is_none());
        }
        self.log_results(&gated.apply, Some(&results))?;
        self.remember(&gated.apply, &results)?;
        let store = self.store()?;
        for r in results.iter().filter(|r| r.error.is_none()) {
            // Only an approved parked item changes: the approval is used up.
            store.decide_parked(&r.item, "applied", "tregov", None)?;
        }
        Ok(Applied { results })
    }

    /// Reads back what applied changes altered (Lake Formation, IAM, workspaces), so the
    /// next plan starts from AWS as they left it: a grant made now must be seen to be revoked
    /// when a date passes before the next resync. (A one-shot `apply` has no next plan.)
    /// Whether anything was read back.
    pub(super) async fn read_back(&mut self, gated: &Gated, applied: &Applied) -> Result<bool> {
        let succeeded: std::collections::HashSet<&str> = applied
            .results
            .iter()
            .filter(|r| r.error.is_none())
            .map(|r| r.item.as_str())
            .collect();
        let mut altered: Vec<crate::collect::Source> = gated
            .apply
            .iter()
            .filter(|i| succeeded.contains(i.id.as_str()))
            .filter_map(|i| i.change.read_back_by())
            .collect();
        altered.sort();
        altered.dedup();
        if altered.is_empty() {
            return Ok(false);
        }
        self.collect(crate::collect::Pass::Reading(&altered))
            .await?;
        Ok(true)
    }

    /// A dry run's plan, logged as planned; nothing applied.
    pub(super) fn record_dry_run(&self, gated: &Gated) -> Result<()> {
        for item in &gated.apply {
            tracing::info!(item = %item.id, change = item.change.verb(), target = %item.change.target(), reason = %item.reason, "planned (dry run)");
        }
        self.log_results(&gated.apply, None)
    }

    /// Logs what happened to each item (`None`: planned only), with the change and the
    /// decisions that justified it.
    fn log_results(&self, items: &[PlanItem], results: Option<&[ItemResult]>) -> Result<()> {
        let Some(log) = self.engine.log() else {
            return Ok(());
        };
        let by_item: std::collections::HashMap<&str, &ItemResult> = results
            .unwrap_or_default()
            .iter()
            .map(|r| (r.item.as_str(), r))
            .collect();
        let version = &self.engine.bundle().version;
        let records = items
            .iter()
            .map(|item| {
                let outcome = match (results, by_item.get(item.id.as_str())) {
                    (None, _) => ("planned", None),
                    (Some(_), Some(r)) if r.error.is_none() => ("applied", None),
                    (Some(_), found) => ("failed", found.and_then(|r| r.error.clone())),
                };
                self.result_record(item, version, outcome)
            })
            .collect();
        log.append(records)?;
        Ok(())
    }

    fn result_record(
        &self,
        item: &PlanItem,
        version: &str,
        (result, error): (&str, Option<String>),
    ) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("kind".into(), json!("apply"));
        m.insert("origin".into(), json!(self.settings.origin));
        m.insert("item".into(), json!(item.id));
        m.insert("enforcer".into(), json!(item.change.enforcer()));
        m.insert("change".into(), json!(item.change));
        m.insert("reason".into(), json!(item.reason));
        let seqs: Vec<u64> = item.decisions.iter().filter_map(|d| d.log_seq).collect();
        m.insert("decisions".into(), json!(seqs));
        m.insert("policyVersion".into(), json!(version));
        m.insert("result".into(), json!(result));
        if let Some(e) = error {
            m.insert("error".into(), json!(e));
        }
        m
    }

    /// Remembers what tregov itself established: notifications that went out (so the next
    /// plan does not send them again) and the Lake Formation grants it made (so revoking
    /// them counts against the fraction limit, unlike reverting drift).
    fn remember(&self, items: &[PlanItem], results: &[ItemResult]) -> Result<()> {
        let store = self.store()?;
        let applied: std::collections::HashSet<&str> = results
            .iter()
            .filter(|r| r.error.is_none())
            .map(|r| r.item.as_str())
            .collect();
        for item in items.iter().filter(|i| applied.contains(i.id.as_str())) {
            match &item.change {
                Change::Notify {
                    mark, topic_arn, ..
                } => store.put_observed(
                    ENFORCER_PARTITION,
                    &Observed {
                        kind: NOTIFICATION_KIND.into(),
                        key: mark.clone(),
                        body: json!({"topicArn": topic_arn, "item": item.id}),
                    },
                )?,
                Change::LfGrant {
                    principal,
                    resource,
                    ..
                } => store.put_observed(
                    ENFORCER_PARTITION,
                    &Observed {
                        kind: kind::TREGOV_GRANT.into(),
                        key: format!("{principal}|{resource}"),
                        body: json!({"principal": principal, "resource": resource}),
                    },
                )?,
                // A revoked grant is not forgotten: should anyone grant it again, revoking it
                // again is counted as taking back what tregov once allowed (the safer side).
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether a notification's mark says it went out already (before a restart, say).
    fn already_sent(&self, item: &PlanItem) -> Result<bool> {
        let Change::Notify { mark, .. } = &item.change else {
            return Ok(false);
        };
        let sent = self.store()?.observed(Some(NOTIFICATION_KIND))?;
        Ok(sent.iter().any(|o| &o.key == mark))
    }

    /// A limit that starts holding revocations back is announced once: a metric, an error
    /// in the log, a `safety` record in the decision log, and an SNS message when
    /// `[safety] alert_topic_arn` is set (added to what is applied now).
    pub(super) fn announce_trip(&mut self, gated: &mut Gated) -> Result<()> {
        let Some(trip) = &gated.trip else {
            self.tripped.retain(|k| !k.starts_with("revoke:"));
            return Ok(());
        };
        let mut parked: Vec<&str> = gated.parked.iter().map(|(i, _)| i.id.as_str()).collect();
        parked.sort_unstable();
        let digest = crate::log::sha256_hex(parked.join(",").as_bytes());
        let key = format!("revoke:{}:{}", trip.reason, &digest[..12]);
        if !self.tripped.insert(key.clone()) {
            return Ok(());
        }
        self.tripped
            .retain(|k| !k.starts_with("revoke:") || *k == key);
        let description = trip.describe(&self.settings.limits);
        // The record first: whoever reads the log line finds the record in place.
        if let Some(log) = self.engine.log() {
            let mut m = Map::new();
            m.insert("kind".into(), json!("safety"));
            m.insert("origin".into(), json!(self.settings.origin));
            m.insert("limit".into(), json!(trip.reason));
            m.insert("trip".into(), json!(trip));
            m.insert("message".into(), json!(description));
            m.insert("parked".into(), json!(parked));
            log.append(vec![m])?;
        }
        self.metrics.safety_trip(trip.reason);
        tracing::error!(reason = trip.reason, parked = parked.len(), "safety limit: {description}; the revocations wait for approval (tregov parked, tregov approve ID)");
        if let Some(topic) = &self.settings.alert_topic {
            let alert = alert_item(topic, &description, parked.len(), &digest);
            if !self.already_sent(&alert)? {
                gated.apply.push(alert);
            }
        }
        Ok(())
    }
}

/// The SNS message announcing a trip, sent once per distinct set of parked items.
fn alert_item(topic: &str, description: &str, parked: usize, digest: &str) -> PlanItem {
    let account = topic.split(':').nth(4).unwrap_or_default().to_string();
    let change = Change::Notify {
        account,
        topic_arn: topic.to_string(),
        subject: "tregov: revocations held back for approval".into(),
        message: format!(
            "{description}. {parked} revoking change(s) are parked: review them with `tregov parked` and approve with `tregov approve ID`."
        ),
        mark: format!("safety-trip/{}", &digest[..16]),
    };
    PlanItem::new(
        change,
        "a blast-radius limit held revocations back".into(),
        Vec::new(),
    )
}
