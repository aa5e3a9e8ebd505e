//! Access review campaigns. Starting one (`startReview`, a Cedar decision) records a
//! `Tre::ReviewCampaign` and one `Tre::ReviewItem` per user's access to a study in its scope,
//! as the access report finds them at the clock. Reviewers attest each item keep or revoke
//! (`attestReview`, logged with the verdict in its context); a data access question is asked
//! with its item (`context.review`), and `data-revoked-by-review` ends an access revoked, or
//! left open past the due date of a campaign whose default is revoke. The report of who
//! attested what, when, is read from the decision log.

use std::collections::BTreeMap;

use cedar_policy::EntityUid;
use serde::Serialize;
use serde_json::{json, Value};

use crate::access_facts::ByAccess;
use crate::clock::{datetime_text, datetime_value, json_datetime_ms};
use crate::decide::Engine;
use crate::entities::EntityGraph;
use crate::entities::{uid_from_json, uid_from_parts};
use crate::error::{EngineError, Result};
use crate::plan::{access_report, ActualState, PlanSettings, Scope};
use crate::workflow::{decide_as, write_records, WorkflowError};

/// The store partition campaigns and their items are kept in.
pub const PARTITION: &str = "reviews";
/// The origin of the decisions of reviews in the log.
const ORIGIN: &str = "review";
const ITEM: &str = "Tre::ReviewItem";
const CAMPAIGN: &str = "Tre::ReviewCampaign";

/// The review items by (user, study): the one a data access question is asked with.
#[derive(Debug, Clone, Default)]
pub struct ReviewIndex(ByAccess<Item>);

impl ReviewIndex {
    pub fn of(graph: &EntityGraph) -> Self {
        let mut index = ByAccess::default();
        for (uid, item) in items(graph) {
            let (user, dataset) = (item.user.clone(), item.dataset.clone());
            index.insert(&user, &dataset, uid, item);
        }
        Self(index)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The item a question about `user` and `dataset` is asked with: a revoked one first (a
    /// revocation stands whatever a later campaign says), else the latest campaign's.
    pub fn for_access(&self, user: &EntityUid, dataset: &EntityUid) -> Option<&EntityUid> {
        self.0
            .get(user, dataset)
            .iter()
            .max_by_key(|(uid, item)| (item.verdict == "revoke", started_ms(&item.campaign), uid))
            .map(|(uid, _)| uid)
    }
}

/// When a campaign started: its id ends in the clock's milliseconds (`<scope>/<ms>`).
fn started_ms(campaign: &str) -> i64 {
    campaign
        .rsplit_once('/')
        .and_then(|(_, ms)| ms.parse().ok())
        .unwrap_or(i64::MIN)
}

/// One access under review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    pub id: String,
    pub campaign: String,
    pub user: String,
    pub dataset: String,
    pub actions: Vec<String>,
    pub verdict: String,
    pub attested_by: Option<String>,
}

fn items(graph: &EntityGraph) -> Vec<(EntityUid, Item)> {
    crate::access_facts::stored_of(graph, ITEM)
        .into_iter()
        .filter_map(|(uid, attrs)| {
            let id_of =
                |name: &str| uid_from_json(&attrs[name]).map(|u| u.id().unescaped().to_string());
            let item = Item {
                id: uid.id().unescaped().to_string(),
                campaign: id_of("campaign")?,
                user: id_of("user")?,
                dataset: id_of("dataset")?,
                actions: attrs["actions"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
                verdict: attrs["verdict"].as_str()?.to_string(),
                attested_by: id_of("attestedBy"),
            };
            Some((uid, item))
        })
        .collect()
}

/// A campaign as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Campaign {
    pub id: String,
    pub scope: String,
    /// The role whose members attest.
    pub reviewers: String,
    /// The due date (RFC 3339).
    pub due: String,
    pub default_verdict: String,
}

/// Every campaign in the store, oldest first.
pub fn campaigns(graph: &EntityGraph) -> Vec<Campaign> {
    let mut out: Vec<Campaign> = crate::access_facts::stored_of(graph, CAMPAIGN)
        .into_iter()
        .filter_map(|(uid, attrs)| {
            Some(Campaign {
                id: uid.id().unescaped().to_string(),
                scope: attrs["scope"].as_str()?.to_string(),
                reviewers: uid_from_json(&attrs["reviewers"])?
                    .id()
                    .unescaped()
                    .to_string(),
                due: datetime_text(json_datetime_ms(&attrs["due"])?),
                default_verdict: attrs["defaultVerdict"].as_str()?.to_string(),
            })
        })
        .collect();
    out.sort_by_key(|c| (started_ms(&c.id), c.id.clone()));
    out
}

/// Every item of every campaign.
pub fn all_items(graph: &EntityGraph) -> Vec<Item> {
    items(graph).into_iter().map(|(_, i)| i).collect()
}

/// What starting a campaign asks for.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewCampaign {
    /// `project:<id>` or `dataset:<id>`.
    pub scope: String,
    /// The role whose members attest (`InformationGovernance`, say).
    pub reviewers: String,
    /// The due date: a Cedar `datetime` text.
    pub due: String,
    /// What an item still open at the due date becomes: `keep` (default) or `revoke`.
    #[serde(default)]
    pub default_verdict: Option<String>,
}

/// A campaign as started: its id and items.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    pub id: String,
    pub due: String,
    pub default_verdict: String,
    pub items: Vec<Item>,
}

/// Starts a campaign as `caller`: the `startReview` decision (logged) must allow it; one item
/// per user's access to each study in scope, at the clock.
pub fn start(
    engine: &Engine,
    caller: &str,
    new: &NewCampaign,
) -> std::result::Result<Started, WorkflowError> {
    let due_ms = json_datetime_ms(&json!({"__extn": {"fn": "datetime", "arg": new.due}}))
        .ok_or_else(|| {
            WorkflowError::Invalid(format!("`due`: `{}` is not a Cedar datetime", new.due))
        })?;
    let default_verdict = new.default_verdict.clone().unwrap_or_else(|| "keep".into());
    if !matches!(default_verdict.as_str(), "keep" | "revoke") {
        return Err(WorkflowError::Invalid(
            "`defaultVerdict`: `keep` or `revoke`".into(),
        ));
    }
    let (scope_uid, datasets) = scope(engine, &new.scope)?;
    let context = json!({"reviewers": {"__entity": {"type": "Tre::Role", "id": new.reviewers}}});
    decide_as(
        engine,
        caller,
        "startReview",
        &scope_uid,
        context,
        ORIGIN,
        "starting this review",
    )?;
    let wall = std::time::SystemTime::now();
    let now = engine.tick_at(wall).now;
    // Named by the wall clock, not the governance clock, which stands still for hours: two
    // campaigns over one scope are two campaigns.
    let id = format!("{}/{}", new.scope, crate::clock::wall_ms(wall));
    let mut accesses: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let settings = PlanSettings {
        now: Some(now),
        ..Default::default()
    };
    for dataset in &datasets {
        let report = access_report(
            engine,
            &ActualState::default(),
            &settings,
            &Scope::Dataset(dataset.clone()),
        );
        for row in report.rows.into_iter().filter(|r| r.holder_kind == "user") {
            accesses
                .entry((row.holder, row.dataset))
                .or_default()
                .push(row.action.to_string());
        }
    }
    let campaign = json!({
        "uid": {"type": CAMPAIGN, "id": id},
        "attrs": {
            "scope": new.scope, "reviewers": {"__entity": {"type": "Tre::Role", "id": new.reviewers}},
            "due": datetime_value(due_ms), "defaultVerdict": default_verdict,
            "startedBy": {"__entity": {"type": "Tre::User", "id": caller}},
        },
        "parents": [],
    });
    let mut upserts = vec![campaign];
    let mut items = Vec::new();
    for ((user, dataset), actions) in accesses {
        let item = Item {
            id: format!("{id}/{user}/{dataset}"),
            campaign: id.clone(),
            user,
            dataset,
            actions,
            verdict: "open".into(),
            attested_by: None,
        };
        upserts.push(item_json(&item));
        items.push(item);
    }
    write_records(engine, PARTITION, upserts)?;
    tracing::info!(campaign = %id, items = items.len(), by = caller, "access review started");
    Ok(Started {
        id,
        due: datetime_text(due_ms),
        default_verdict,
        items,
    })
}

/// Attests one item as `caller`: the `attestReview` decision (logged, with the verdict in its
/// context) must allow it; the item then carries the verdict.
pub fn attest(
    engine: &Engine,
    caller: &str,
    item_id: &str,
    verdict: &str,
) -> std::result::Result<Item, WorkflowError> {
    let uid = uid_from_parts(ITEM, item_id)?;
    let mut item = items(engine.graph())
        .into_iter()
        .find(|(u, _)| *u == uid)
        .map(|(_, i)| i)
        .ok_or_else(|| WorkflowError::NotFound(format!("review item `{item_id}`")))?;
    let context = json!({"verdict": verdict});
    decide_as(
        engine,
        caller,
        "attestReview",
        &uid,
        context,
        ORIGIN,
        "attesting this item",
    )?;
    item.verdict = verdict.to_string();
    item.attested_by = Some(caller.to_string());
    write_records(engine, PARTITION, vec![item_json(&item)])?;
    tracing::info!(item = %item.id, verdict, by = caller, "access review attested");
    Ok(item)
}

/// One attestation as the log records it.
#[derive(Debug, Clone, Serialize)]
pub struct Attestation {
    pub item: String,
    pub reviewer: String,
    pub verdict: String,
    pub time: String,
    pub log_seq: u64,
}

/// The campaign's items and who attested what, when, from the decision log (allowed
/// `attestReview` decisions on its items; a later one supersedes an earlier).
pub fn report(engine: &Engine, campaign: &str) -> Result<(Vec<Item>, Vec<Attestation>)> {
    let items: Vec<Item> = items(engine.graph())
        .into_iter()
        .map(|(_, i)| i)
        .filter(|i| i.campaign == campaign)
        .collect();
    let log = engine
        .log()
        .ok_or_else(|| EngineError::Request("reports need the decision log".into()))?;
    let prefix = format!("Tre::ReviewItem::\"{campaign}/");
    let attested = log
        .records()?
        .into_iter()
        .filter(|r| r["kind"] == "decision" && r["origin"] == ORIGIN)
        .filter(|r| {
            r["decision"]
                .as_str()
                .is_some_and(|d| d.eq_ignore_ascii_case("allow"))
        })
        .filter(|r| r["request"]["action"] == r#"Tre::Action::"attestReview""#)
        .filter(|r| {
            r["request"]["resource"]
                .as_str()
                .is_some_and(|s| s.starts_with(&prefix))
        })
        .map(|r| Attestation {
            item: crate::entities::parse_uid(r["request"]["resource"].as_str().unwrap_or_default())
                .map(|u| u.id().unescaped().to_string())
                .unwrap_or_default(),
            reviewer: crate::entities::parse_uid(
                r["request"]["principal"].as_str().unwrap_or_default(),
            )
            .map(|u| u.id().unescaped().to_string())
            .unwrap_or_default(),
            verdict: r["request"]["context"]["verdict"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            time: r["time"].as_str().unwrap_or_default().to_string(),
            log_seq: r["seq"].as_u64().unwrap_or_default(),
        })
        .collect();
    Ok((items, attested))
}

fn item_json(item: &Item) -> Value {
    let mut attrs = json!({
        "campaign": {"__entity": {"type": CAMPAIGN, "id": item.campaign}},
        "user": {"__entity": {"type": "Tre::User", "id": item.user}},
        "dataset": {"__entity": {"type": "Tre::Dataset", "id": item.dataset}},
        "actions": item.actions,
        "verdict": item.verdict,
    });
    if let Some(by) = &item.attested_by {
        attrs["attestedBy"] = json!({"__entity": {"type": "Tre::User", "id": by}});
    }
    json!({"uid": {"type": ITEM, "id": item.id}, "attrs": attrs, "parents": []})
}

/// The scope's entity (what `startReview` is decided on) and its studies.
fn scope(
    engine: &Engine,
    scope: &str,
) -> std::result::Result<(EntityUid, Vec<EntityUid>), WorkflowError> {
    let graph = engine.graph();
    match scope.split_once(':') {
        Some(("dataset", id)) => {
            let uid = uid_from_parts("Tre::Dataset", id)?;
            if !graph.contains(&uid) {
                return Err(WorkflowError::NotFound(format!("dataset `{id}`")));
            }
            Ok((uid.clone(), vec![uid]))
        }
        Some(("project", id)) => {
            let uid = uid_from_parts("Tre::Project", id)?;
            let datasets = graph
                .uids()
                .filter(|d| crate::entities::is_type(d, "Tre::Dataset"))
                .filter(|d| graph.ancestors(d).any(|a| *a == uid))
                .cloned()
                .collect();
            Ok((uid, datasets))
        }
        _ => Err(WorkflowError::Invalid(format!(
            "`scope`: `{scope}` is neither `project:<id>` nor `dataset:<id>`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(campaign: &str, verdict: &str) -> Item {
        Item {
            id: format!("{campaign}/alice/gwas"),
            campaign: campaign.into(),
            user: "alice".into(),
            dataset: "gwas".into(),
            actions: vec!["read".into()],
            verdict: verdict.into(),
            attested_by: None,
        }
    }

    fn chosen(items: Vec<Item>) -> String {
        let mut index = ByAccess::default();
        for i in items {
            let uid = uid_from_parts(ITEM, &i.id).expect("uid");
            index.insert("alice", "gwas", uid, i);
        }
        let index = ReviewIndex(index);
        let user = uid_from_parts("Tre::User", "alice").expect("uid");
        let dataset = uid_from_parts("Tre::Dataset", "gwas").expect("uid");
        index
            .for_access(&user, &dataset)
            .map(|u| u.id().unescaped().to_string())
            .unwrap_or_default()
    }

    #[test]
    fn a_revocation_stands_whatever_a_later_campaign_says_and_otherwise_the_latest_campaign_counts()
    {
        // `project:p/900` started before `dataset:gwas/1000`, though it sorts after it as text.
        assert_eq!(
            chosen(vec![
                item("project:p/900", "keep"),
                item("dataset:gwas/1000", "open")
            ]),
            "dataset:gwas/1000/alice/gwas"
        );
        assert_eq!(
            chosen(vec![
                item("project:p/900", "revoke"),
                item("dataset:gwas/1000", "keep")
            ]),
            "project:p/900/alice/gwas"
        );
    }
}
