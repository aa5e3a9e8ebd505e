//! Enforcers: each applies one kind of plan item to AWS, idempotently (applying an item whose
//! change is already in place succeeds and changes nothing), one item's failure never stopping
//! the others. Throttling and 5xx responses are retried with backoff by the SDK's standard
//! retry strategy (`max_attempts` in `tregov.toml`).
//!
//! Every enforcer implements the engine's `enforce::Enforcer`: built from the configuration
//! (`build`, after the pure `validate`), then asked to `apply` the items addressed to it.

use std::collections::HashMap;

use aws_config::SdkConfig;
use tokio::sync::Mutex;
use tregov_config::aws::Aws;
use tregov_config::Config;
pub use tregov_engine::enforce::{apply_items, Enforcer, ItemResult};
use tregov_engine::plan::PlanItem;

pub mod compute;
pub mod egress;
pub mod egress_effects;
pub mod iam;
pub mod lakeformation;
pub mod sns;

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

/// An SDK error as text: the call, the service's code and message, and the cause chain.
pub fn describe<E>(call: &str, e: &E) -> String
where
    E: std::error::Error,
{
    format!("{call}: {}", tregov_engine::decide::error_chain(e))
}
