//! Enforcers: each applies one kind of plan item to AWS, idempotently (applying an item whose
//! change is already in place succeeds and changes nothing), one item's failure never stopping
//! the others. Throttling and 5xx responses are retried with backoff by the SDK's standard
//! retry strategy (`max_attempts` in `tregov.toml`).
//!
//! Every enforcer has the same shape: built from the configuration (`build`, after the pure
//! `validate`), then asked to `apply` the items addressed to it.

use std::collections::HashMap;

use aws_config::SdkConfig;
use futures::future::BoxFuture;
use serde::Serialize;
use tokio::sync::Mutex;
use tregov_collectors::aws::Aws;
use tregov_collectors::config::Config;
use tregov_engine::plan::PlanItem;

pub mod compute;
pub mod egress;
pub mod iam;
pub mod lakeformation;
pub mod sns;

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

/// Applies items one at a time, each reported on its own: one failure stops nothing.
pub async fn each<'a, F, Fut>(items: &'a [&'a PlanItem], apply_one: F) -> Vec<ItemResult>
where
    F: Fn(&'a PlanItem) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        out.push(match apply_one(item).await {
            Ok(()) => ItemResult::ok(item),
            Err(e) => ItemResult::failed(item, e),
        });
    }
    out
}

/// SDK configurations per account, with the configured role assumed, made once each.
pub struct Accounts {
    aws: Aws,
    config: Config,
    cache: Mutex<HashMap<String, SdkConfig>>,
}

impl Accounts {
    pub fn new(aws: Aws, config: Config) -> Self {
        Self {
            aws,
            config,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub async fn sdk(&self, account: &str) -> SdkConfig {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.get(account) {
            return c.clone();
        }
        let sdk = self
            .aws
            .for_role(self.config.role_for_account(account))
            .await;
        cache.insert(account.to_string(), sdk.clone());
        sdk
    }

    pub fn datalake_account(&self) -> Option<&str> {
        self.config.datalake.as_ref().map(|d| d.account_id.as_str())
    }
}

/// Problems that make enforcement impossible, found without calling AWS.
pub fn validate(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if config.datalake.is_none() {
        out.push("no `[datalake]` section: Lake Formation grants cannot be enforced".into());
    }
    out
}

/// Every enforcer, built from the configuration.
pub fn build(aws: Aws, config: Config) -> Vec<Box<dyn Enforcer>> {
    let accounts = std::sync::Arc::new(Accounts::new(aws, config));
    vec![
        Box::new(lakeformation::LakeFormation::new(accounts.clone())),
        Box::new(iam::Iam::new(accounts.clone())),
        Box::new(compute::Compute::new(accounts.clone())),
        Box::new(compute::Tagging::new(accounts.clone())),
        Box::new(sns::Sns::new(accounts)),
    ]
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
    let answered: std::collections::HashSet<String> =
        results.iter().map(|r| r.item.clone()).collect();
    for item in items.iter().filter(|i| !answered.contains(&i.id)) {
        results.push(ItemResult::failed(item, "no enforcer applies this change"));
    }
    results
}

/// An SDK error as text: the call, the service's code and message, and the cause chain.
pub fn describe<E>(call: &str, e: &E) -> String
where
    E: std::error::Error,
{
    format!("{call}: {}", tregov_engine::decide::error_chain(e))
}
