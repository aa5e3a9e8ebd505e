//! The one shape every enforcer has: it applies the plan items addressed to it, idempotently
//! (applying an item whose change is already in place succeeds and changes nothing), and
//! reports each item on its own, one failure never stopping the others.

use serde::Serialize;

use crate::collect::BoxFuture;
use crate::plan::PlanItem;

/// What happened to one item.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ItemResult {
    pub item: String,
    pub enforcer: &'static str,
    /// `None` when applied.
    pub error: Option<String>,
}

impl ItemResult {
    pub fn ok(item: &PlanItem) -> Self {
        Self {
            item: item.id.clone(),
            enforcer: item.change.enforcer(),
            error: None,
        }
    }

    pub fn failed(item: &PlanItem, error: impl Into<String>) -> Self {
        Self {
            item: item.id.clone(),
            enforcer: item.change.enforcer(),
            error: Some(error.into()),
        }
    }
}

pub trait Enforcer: Send + Sync {
    /// The `Change::enforcer` name of the items it applies.
    fn name(&self) -> &'static str;
    /// Applies `items` (all addressed to this enforcer) and reports each one.
    fn apply<'a>(&'a self, items: &'a [&'a PlanItem]) -> BoxFuture<'a, Vec<ItemResult>>;
}

/// Applies every item with the enforcer named by its change; items no enforcer handles fail.
pub async fn apply_items(enforcers: &[Box<dyn Enforcer>], items: &[PlanItem]) -> Vec<ItemResult> {
    let mut results = Vec::new();
    for enforcer in enforcers {
        let mine: Vec<&PlanItem> = items
            .iter()
            .filter(|i| i.change.enforcer() == enforcer.name())
            .collect();
        if !mine.is_empty() {
            results.extend(enforcer.apply(&mine).await);
        }
    }
    let answered: std::collections::HashSet<&str> =
        results.iter().map(|r| r.item.as_str()).collect();
    let unanswered: Vec<ItemResult> = items
        .iter()
        .filter(|i| !answered.contains(i.id.as_str()))
        .map(|i| ItemResult::failed(i, "no enforcer applies this change"))
        .collect();
    results.extend(unanswered);
    results
}
