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

pub mod anchor;
pub mod backup;
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

    /// The SDK configuration for acting in `account`. An account tregov is not configured
    /// for is refused: acting there with the base credentials would change whatever account
    /// those reach (tregov's own), for a principal nobody vouched for.
    pub async fn sdk(&self, account: &str) -> Result<SdkConfig, String> {
        if !self.config.is_configured_account(account) {
            return Err(format!(
                "account `{account}` is not configured in tregov.toml: refusing to act in it"
            ));
        }
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.get(account) {
            return Ok(c.clone());
        }
        let sdk = self
            .aws
            .for_role(self.config.role_for_account(account))
            .await;
        cache.insert(account.to_string(), sdk.clone());
        Ok(sdk)
    }

    /// The SDK configuration for publishing to a topic in `account`, which may be an
    /// operations account tregov governs nothing in: a notification grants and revokes
    /// nothing, so the base credentials may carry it where no role is configured.
    pub async fn sdk_for_alerts(&self, account: &str) -> SdkConfig {
        match self.sdk(account).await {
            Ok(sdk) => sdk,
            Err(_) => self.aws.for_role(None).await,
        }
    }

    /// Whether `principal` (an IAM ARN or an account id) belongs to a configured account.
    pub fn is_configured_principal(&self, principal: &str) -> bool {
        principal_account(principal).is_some_and(|a| self.config.is_configured_account(a))
    }

    pub fn datalake_account(&self) -> Option<&str> {
        self.config.datalake.as_ref().map(|d| d.account_id.as_str())
    }
}

/// The account an IAM ARN (`arn:aws:iam::ACCOUNT:role/x`) or a bare account id belongs to.
pub fn principal_account(principal: &str) -> Option<&str> {
    if principal.len() == 12 && principal.bytes().all(|b| b.is_ascii_digit()) {
        return Some(principal);
    }
    let mut parts = principal.splitn(6, ':');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("arn"), Some(_), Some("iam" | "sts"), Some(""), Some(account))
            if !account.is_empty() =>
        {
            Some(account)
        }
        _ => None,
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
        Box::new(backup::Backup::new(accounts.clone())),
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
