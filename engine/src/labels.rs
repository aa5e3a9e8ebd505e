//! Dataset labels (owning project, classification, category, maximum access, owner and
//! location): what access to a study is decided from, so a change that widens access takes
//! effect only once a data manager accepts it, and one that narrows it takes effect at once.
//!
//! tregov remembers the labels it last accepted for each dataset (observed kind
//! `dataset-labels`, in its own partition). Each listing proposes labels (from Lake Formation
//! LF-Tags, which only data managers may assign, or Glue parameters as a bootstrap); `settle`
//! compares them with the accepted ones field by field: narrowing fields are taken, widening
//! ones wait in a parked `accept-labels` item (`tregov approve`, a Cedar decision for data
//! managers in `policies/approvals.cedar`), the accepted values deciding meanwhile.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::Result;
use crate::store::{Observed, ParkedKind, Store};

/// The observed kind and partition of the labels tregov accepted.
pub const ACCEPTED_KIND: &str = "dataset-labels";
pub const PARTITION: &str = "labels";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Labels {
    pub project: String,
    pub classification: String,
    pub category: String,
    pub max_access: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub location: String,
}

/// Where a dataset's proposed labels came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelSource {
    /// Every label from LF-Tags a data manager assigned.
    LfTags,
    /// Some from Glue table parameters, which anyone able to alter the table can write.
    Glue,
}

/// How open each value of a label is: higher is wider. A value not listed is taken as the
/// widest, so an unknown value never slips through as a narrowing.
fn openness(field: &str, value: &str) -> u8 {
    let order: &[&str] = match field {
        "classification" => &["restricted", "confidential", "internal", "public"],
        "category" => &["my", "organization", "open"],
        "maxAccess" => &["readonly", "readwrite"],
        _ => &[],
    };
    order
        .iter()
        .position(|v| *v == value)
        .map_or(u8::MAX, |p| p as u8)
}

impl Labels {
    /// The fields of `proposed` that would widen access over `self`: a more open
    /// classification, category or maximum access, or any change of project, owner or
    /// location (each moves the study to other people or other data).
    pub fn widened_by(&self, proposed: &Labels) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (field, now, then) in [
            (
                "classification",
                &self.classification,
                &proposed.classification,
            ),
            ("category", &self.category, &proposed.category),
            ("maxAccess", &self.max_access, &proposed.max_access),
        ] {
            if now != then && openness(field, then) > openness(field, now) {
                out.push(field);
            }
        }
        if self.project != proposed.project {
            out.push("project");
        }
        if self.owner != proposed.owner {
            out.push("owner");
        }
        if self.location != proposed.location {
            out.push("location");
        }
        out
    }

    /// `self` with every narrowing change of `proposed` taken and every widening one left.
    pub fn narrowed_by(&self, proposed: &Labels) -> Labels {
        let widened = self.widened_by(proposed);
        let pick = |field: &str, now: &String, then: &String| {
            if widened.contains(&field) {
                now.clone()
            } else {
                then.clone()
            }
        };
        Labels {
            project: self.project.clone(),
            classification: pick(
                "classification",
                &self.classification,
                &proposed.classification,
            ),
            category: pick("category", &self.category, &proposed.category),
            max_access: pick("maxAccess", &self.max_access, &proposed.max_access),
            owner: self.owner.clone(),
            location: self.location.clone(),
        }
    }
}

/// What a dataset is governed by after `settle`.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    /// The labels that decide now; `None` for a new dataset whose labels wait for a data
    /// manager (nothing is granted on it meanwhile).
    pub effective: Option<Labels>,
    /// The parked item waiting for a data manager, and the fields it would widen.
    pub pending: Option<(String, Vec<&'static str>)>,
}

/// Settles `dataset`'s `proposed` labels against the accepted ones. A dataset seen for the
/// first time takes its labels when they all come from LF-Tags, or on tregov's first
/// reading of the data lake (`bootstrap`); otherwise they wait like any widening.
pub fn settle(
    store: &Store,
    dataset: &str,
    proposed: &Labels,
    source: LabelSource,
    bootstrap: bool,
) -> Result<Settled> {
    let accepted = accepted(store, dataset)?;
    let first_sight = accepted.is_none();
    let (effective, widened) = match &accepted {
        None if bootstrap || source == LabelSource::LfTags => (proposed.clone(), Vec::new()),
        None => {
            let fields = vec![
                "project",
                "classification",
                "category",
                "maxAccess",
                "location",
            ];
            return wait(store, dataset, None, proposed, fields);
        }
        Some(a) => (a.narrowed_by(proposed), a.widened_by(proposed)),
    };
    if first_sight || accepted.as_ref() != Some(&effective) {
        accept(store, dataset, &effective)?;
    }
    if widened.is_empty() {
        store.expire_pending(&item_prefix(dataset))?;
        return Ok(Settled {
            effective: Some(effective),
            pending: None,
        });
    }
    wait(store, dataset, Some(effective), proposed, widened)
}

/// Parks the widening for a data manager, or takes it if one approved it already.
fn wait(
    store: &Store,
    dataset: &str,
    effective: Option<Labels>,
    proposed: &Labels,
    widened: Vec<&'static str>,
) -> Result<Settled> {
    let item = item_id(dataset, proposed);
    let reason = format!(
        "dataset `{dataset}`: a change of {} would widen access; it takes effect once a data manager approves `{item}`",
        widened.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ")
    );
    let body = json!({
        "id": item,
        "change": {"kind": "accept-labels", "dataset": dataset, "from": effective,
            "to": proposed, "widens": widened},
        "reason": reason,
        "affects": [],
    });
    store.expire_pending_except(&item_prefix(dataset), &item)?;
    match store.park(&item, ParkedKind::AcceptLabels, &body)?.as_str() {
        "approved" => {
            accept(store, dataset, proposed)?;
            store.decide_parked(&item, "applied", "tregov", None)?;
            tracing::warn!(dataset, item = %item, "widening label change accepted by approval");
            Ok(Settled {
                effective: Some(proposed.clone()),
                pending: None,
            })
        }
        _ => {
            tracing::warn!(dataset, item = %item, widens = ?widened, "widening label change waits for a data manager");
            Ok(Settled {
                effective,
                pending: Some((item, widened)),
            })
        }
    }
}

fn accepted(store: &Store, dataset: &str) -> Result<Option<Labels>> {
    Ok(store
        .observed_item(ACCEPTED_KIND, dataset)?
        .and_then(|o| serde_json::from_value(o.body).ok()))
}

fn accept(store: &Store, dataset: &str, labels: &Labels) -> Result<()> {
    store.put_observed(
        PARTITION,
        &Observed {
            kind: ACCEPTED_KIND.into(),
            key: dataset.to_string(),
            body: json!(labels),
        },
    )
}

/// Whether tregov has accepted labels for any dataset yet.
pub fn any_accepted(store: &Store) -> Result<bool> {
    store.has_observed(ACCEPTED_KIND)
}

fn item_prefix(dataset: &str) -> String {
    format!(
        "accept-labels-{}-",
        &crate::log::sha256_hex(dataset.as_bytes())[..8]
    )
}

/// The same proposal is always the same item, so a proposal seen again is not parked twice.
fn item_id(dataset: &str, proposed: &Labels) -> String {
    let canonical = serde_json::to_vec(proposed).unwrap_or_default();
    format!(
        "{}{}",
        item_prefix(dataset),
        &crate::log::sha256_hex(&canonical)[..8]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(category: &str, classification: &str, location: &str) -> Labels {
        Labels {
            project: "p1".into(),
            classification: classification.into(),
            category: category.into(),
            max_access: "readonly".into(),
            owner: None,
            location: location.into(),
        }
    }

    #[test]
    fn opening_a_study_widens_and_closing_it_narrows() {
        let org = labels("organization", "internal", "s3://b/a/");
        let open = labels("open", "internal", "s3://b/a/");
        assert_eq!(org.widened_by(&open), vec!["category"]);
        assert!(open.widened_by(&org).is_empty());
        assert_eq!(open.narrowed_by(&org), org);
    }

    #[test]
    fn lowering_the_classification_or_moving_the_location_widens() {
        let restricted = labels("organization", "restricted", "s3://b/a/");
        let moved = labels("organization", "public", "s3://b/other/");
        assert_eq!(
            restricted.widened_by(&moved),
            vec!["classification", "location"]
        );
        assert_eq!(restricted.narrowed_by(&moved), restricted);
    }

    #[test]
    fn an_unknown_value_is_never_taken_as_narrowing() {
        let org = labels("organization", "internal", "s3://b/a/");
        let odd = labels("everyone", "internal", "s3://b/a/");
        assert_eq!(org.widened_by(&odd), vec!["category"]);
    }

    #[test]
    fn a_widening_waits_until_approved_and_a_narrowing_is_taken_at_once() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let org = labels("organization", "internal", "s3://b/a/");
        let first = settle(&store, "db/t", &org, LabelSource::Glue, true).expect("settle");
        assert_eq!(first.effective.as_ref(), Some(&org));

        let open = labels("open", "internal", "s3://b/a/");
        let waiting = settle(&store, "db/t", &open, LabelSource::Glue, false).expect("settle");
        assert_eq!(
            waiting.effective.as_ref(),
            Some(&org),
            "the accepted labels decide"
        );
        let (item, fields) = waiting.pending.expect("parked");
        assert_eq!(fields, vec!["category"]);

        store
            .decide_parked(&item, "approved", "dana", None)
            .expect("approve");
        let taken = settle(&store, "db/t", &open, LabelSource::Glue, false).expect("settle");
        assert_eq!(taken.effective.as_ref(), Some(&open));
        assert!(taken.pending.is_none());

        let restricted = labels("open", "restricted", "s3://b/a/");
        let narrowed =
            settle(&store, "db/t", &restricted, LabelSource::Glue, false).expect("settle");
        assert_eq!(narrowed.effective.as_ref(), Some(&restricted));
    }

    #[test]
    fn a_new_dataset_from_glue_parameters_waits_after_the_first_reading() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let open = labels("open", "public", "s3://b/new/");
        let settled = settle(&store, "db/new", &open, LabelSource::Glue, false).expect("settle");
        assert!(settled.effective.is_none());
        assert!(settled.pending.is_some());
        let tagged = settle(&store, "db/lf", &open, LabelSource::LfTags, false).expect("settle");
        assert_eq!(tagged.effective.as_ref(), Some(&open));
    }
}
