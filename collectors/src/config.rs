//! `tregov.toml`: where the TRE is and how to reach it.
//!
//! Every key is documented here and in `examples/tregov.toml`. Unknown keys are errors that
//! name the key and its line: a misspelt key silently ignored is a control silently off.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tregov_engine::error::{EngineError, Result, SourceProblem};

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// AWS region for API calls. Default: the standard region chain (`AWS_REGION`, profile).
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint for every AWS API call (an emulator, a VPC endpoint). `AWS_ENDPOINT_URL`
    /// also works, as in every AWS SDK.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Attempts per AWS call, retries included (throttling and 5xx are retried with
    /// backoff). Default: the SDK's standard 3.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// How many accounts, regions or files are worked on at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// One entry per TRE project (one AWS member account each).
    #[serde(default)]
    pub projects: Vec<ProjectConfig>,
    #[serde(default)]
    pub cloudtrail: Option<CloudTrailConfig>,
    #[serde(default)]
    pub datalake: Option<DataLakeConfig>,
    #[serde(default)]
    pub identity: Option<IdentityConfig>,
    #[serde(default)]
    pub budgets: Option<BudgetThresholds>,
    #[serde(default)]
    pub backup: BackupConfig,
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// The data egress workflow (`tregov egress`, the HTTP API).
    #[serde(default)]
    pub egress: Option<EgressConfig>,
    /// The HTTP API the daemon (or `tregov serve`) offers.
    #[serde(default)]
    pub api: Option<ApiConfig>,
    /// How API callers are authenticated: OIDC JWTs (as Amazon Cognito issues them).
    #[serde(default)]
    pub auth: Option<AuthConfig>,
}

/// Data egress: where researchers' results wait, where reviewers inspect them, where approved
/// results go, and who reviews.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// The egress-store bucket: each workspace's files under `<workspaceId>/`. Versioning must
    /// be on: requests pin object VersionIds.
    pub store_bucket: String,
    /// Where pinned versions are copied for reviewers to inspect, under
    /// `<workspaceId>/<requestId>/`.
    pub staging_bucket: String,
    /// Where approved files go, under `approved_egress/<workspaceId>/<requestId>/`.
    /// Default: the staging bucket.
    #[serde(default)]
    pub approved_bucket: Option<String>,
    /// KMS key for SSE-KMS on staged and approved copies. Default: the buckets' own encryption.
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// Account holding the buckets, when its role must be assumed (`role_arn`).
    #[serde(default)]
    pub role_arn: Option<String>,
    /// The ordered review steps, each a `Tre::Role` id. Default
    /// `["InformationGovernance", "ResearchIT"]`.
    #[serde(default = "default_egress_steps")]
    pub steps: Vec<String>,
    /// The `Tre::Role` whose members download approved files. Default `InformationGovernance`.
    #[serde(default = "default_download_role")]
    pub download_role: String,
    /// Downloads allowed per request. Default 1.
    #[serde(default = "default_download_limit")]
    pub download_limit: i64,
    /// Lifetime of a presigned download URL, in seconds. Default 3600.
    #[serde(default = "default_url_expiry")]
    pub url_expiry_seconds: u64,
    /// SNS topic told of each step (message attribute `audience`: the role or the requester).
    #[serde(default)]
    pub notify_topic_arn: Option<String>,
}

fn default_egress_steps() -> Vec<String> {
    vec!["InformationGovernance".into(), "ResearchIT".into()]
}
fn default_download_role() -> String {
    "InformationGovernance".into()
}
fn default_download_limit() -> i64 {
    1
}
fn default_url_expiry() -> u64 {
    3600
}

/// `[api]`: where the HTTP API listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to serve on, e.g. `127.0.0.1:9465`. Put TLS in front of anything else.
    pub listen: String,
}

/// `[auth]`: which tokens the API accepts. Exactly one of `jwks_file` and `jwks_url`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// A JSON Web Key Set file (relative to the configuration file).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Where the issuer publishes its keys, e.g.
    /// `https://cognito-idp.<region>.amazonaws.com/<pool>/.well-known/jwks.json`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` (or, for Cognito access tokens, `client_id`) every token must carry.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds. Default 30.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
}

fn default_leeway() -> u64 {
    30
}

/// How workspace backups are switched on: the tag the admins' AWS Backup plan selects on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Default `tregov:backup`.
    #[serde(default = "default_backup_tag_key")]
    pub tag_key: String,
    /// Default `enabled`.
    #[serde(default = "default_backup_tag_value")]
    pub tag_value: String,
}

fn default_backup_tag_key() -> String {
    "tregov:backup".into()
}
fn default_backup_tag_value() -> String {
    "enabled".into()
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            tag_key: default_backup_tag_key(),
            tag_value: default_backup_tag_value(),
        }
    }
}

/// `tregov daemon`: how often it looks again, and where it serves `/metrics` and `/healthz`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Seconds between polls of the trail bucket for new log files (the fast path). Default 5.
    #[serde(default = "default_poll_seconds")]
    pub poll_seconds: u64,
    /// Seconds between full resyncs of every collector. Default 300.
    #[serde(default = "default_resync_seconds")]
    pub resync_seconds: u64,
    /// Loopback address for `/metrics` and `/healthz`. Default `127.0.0.1:9464`.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: String,
}

fn default_poll_seconds() -> u64 {
    5
}
fn default_resync_seconds() -> u64 {
    300
}
fn default_metrics_listen() -> String {
    "127.0.0.1:9464".into()
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            poll_seconds: default_poll_seconds(),
            resync_seconds: default_resync_seconds(),
            metrics_listen: default_metrics_listen(),
        }
    }
}

/// The spend, in whole percent of a budget's limit, at which each response starts (the
/// TREEHOOSE defaults: notify at 80 % actual or 90 % forecast, deny new workspaces at 99 %).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetThresholds {
    #[serde(default = "pct80")]
    pub notify_actual_percent: i64,
    #[serde(default = "pct90")]
    pub notify_forecast_percent: i64,
    #[serde(default = "pct99")]
    pub deny_new_workspaces_percent: i64,
    #[serde(default = "pct100")]
    pub stop_workspaces_percent: i64,
}

fn pct80() -> i64 {
    80
}
fn pct90() -> i64 {
    90
}
fn pct99() -> i64 {
    99
}
fn pct100() -> i64 {
    100
}

impl Default for BudgetThresholds {
    fn default() -> Self {
        Self {
            notify_actual_percent: pct80(),
            notify_forecast_percent: pct90(),
            deny_new_workspaces_percent: pct99(),
            stop_workspaces_percent: pct100(),
        }
    }
}

fn default_concurrency() -> usize {
    8
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// The project's id: the `Tre::Project` entity id.
    pub id: String,
    /// The project's AWS account id (12 digits).
    pub account_id: String,
    /// A role to assume in that account; default: the base credentials.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// The role Service Catalog provisions workspaces through (the SWB environment-management
    /// role): a budget breach puts a deny on `servicecatalog:ProvisionProduct` on it.
    #[serde(default)]
    pub environment_role_arn: Option<String>,
    /// SNS topic for the project's budget notifications.
    #[serde(default)]
    pub notify_topic_arn: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudTrailConfig {
    /// The bucket the organization trail delivers to (usually in the Log Archive account).
    pub bucket: String,
    /// Key prefix before `AWSLogs/`, if the trail has one.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The AWS Organizations id (`o-...`) of an organization trail: its keys are
    /// `AWSLogs/<org-id>/<account>/...`.
    #[serde(default)]
    pub organization_id: Option<String>,
    /// A role to assume to read the bucket; default: the base credentials.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// Only these regions; default: every region found under each account.
    #[serde(default)]
    pub regions: Option<Vec<String>>,
    /// Days before the last fully read day that are listed again, for late deliveries.
    #[serde(default = "default_lookback_days")]
    pub lookback_days: u32,
    /// The egress-store bucket: S3 writes to it become `egress-store-write` observations.
    #[serde(default)]
    pub egress_bucket: Option<String>,
}

fn default_lookback_days() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataLakeConfig {
    /// The account whose Glue catalog and Lake Formation hold the datasets.
    pub account_id: String,
    #[serde(default)]
    pub role_arn: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// A Cedar entities file of people, roles and project memberships (relative paths are
    /// relative to the config file).
    pub entities: PathBuf,
}

impl Config {
    /// Reads and checks a config file; every problem names the key and its line.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        let mut config = Self::parse(&path.display().to_string(), &text)?;
        if let Some(identity) = &mut config.identity {
            if identity.entities.is_relative() {
                if let Some(dir) = path.parent() {
                    identity.entities = dir.join(&identity.entities);
                }
            }
        }
        if let Some(jwks) = config.auth.as_mut().and_then(|a| a.jwks_file.as_mut()) {
            if jwks.is_relative() {
                if let Some(dir) = path.parent() {
                    *jwks = dir.join(&*jwks);
                }
            }
        }
        Ok(config)
    }

    /// The deployment facts the planner needs; `period` is the budget period now (`YYYY-MM`).
    pub fn plan_settings(&self, period: &str) -> tregov_engine::plan::PlanSettings {
        let per_project = |f: fn(&ProjectConfig) -> Option<&String>| {
            self.projects
                .iter()
                .filter_map(|p| f(p).map(|v| (p.id.clone(), v.clone())))
                .collect()
        };
        tregov_engine::plan::PlanSettings {
            datalake_account: self
                .datalake
                .as_ref()
                .map(|d| d.account_id.clone())
                .unwrap_or_default(),
            project_accounts: per_project(|p| Some(&p.account_id)),
            environment_roles: per_project(|p| p.environment_role_arn.as_ref()),
            notify_topics: per_project(|p| p.notify_topic_arn.as_ref()),
            backup_tag: (self.backup.tag_key.clone(), self.backup.tag_value.clone()),
            period: period.to_string(),
        }
    }

    /// The role to assume for calls in `account`: the project's or the data lake's.
    pub fn role_for_account(&self, account: &str) -> Option<&str> {
        self.projects
            .iter()
            .find(|p| p.account_id == account)
            .and_then(|p| p.role_arn.as_deref())
            .or_else(|| {
                self.datalake
                    .as_ref()
                    .filter(|d| d.account_id == account)
                    .and_then(|d| d.role_arn.as_deref())
            })
    }

    pub fn parse(name: &str, text: &str) -> Result<Self> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (offset, len) = e.span().map_or((0, 0), |s| (s.start, s.end - s.start));
            EngineError::from(SourceProblem::at(
                name,
                text,
                offset,
                len,
                format!("invalid configuration: {}", e.message().trim()),
                "here",
            ))
        })?;
        let problems = config.validate();
        if problems.is_empty() {
            return Ok(config);
        }
        let problems = problems
            .into_iter()
            .map(|(key, message)| {
                let offset = find_key(text, &key).unwrap_or(0);
                SourceProblem::at(name, text, offset, key.len().min(40), message, "this key")
            })
            .collect();
        Err(EngineError::problems(
            format!("invalid configuration `{name}`"),
            problems,
        ))
    }

    /// Checks that need no AWS: account ids, ARNs, duplicates. Returns (key, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.concurrency == 0 || self.concurrency > 256 {
            out.push((
                "concurrency".into(),
                "`concurrency` must be between 1 and 256".into(),
            ));
        }
        if let Some(url) = &self.endpoint_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                out.push((
                    "endpoint_url".into(),
                    format!("`endpoint_url` `{url}` is not an http(s) URL"),
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.projects {
            if !is_account_id(&p.account_id) {
                out.push((
                    "account_id".into(),
                    format!(
                        "project `{}`: `account_id` `{}` is not a 12-digit AWS account id",
                        p.id, p.account_id
                    ),
                ));
            }
            if !seen.insert(p.id.clone()) {
                out.push(("id".into(), format!("project `{}` is listed twice", p.id)));
            }
            if let Some(arn) = &p.role_arn {
                if !is_role_arn(arn) {
                    out.push((
                        "role_arn".into(),
                        format!(
                            "project `{}`: `role_arn` `{arn}` is not an IAM role ARN",
                            p.id
                        ),
                    ));
                }
            }
        }
        if let Some(ct) = &self.cloudtrail {
            if ct.bucket.trim().is_empty() {
                out.push(("bucket".into(), "`cloudtrail.bucket` is empty".into()));
            }
            if let Some(org) = &ct.organization_id {
                if !org.starts_with("o-") {
                    out.push((
                        "organization_id".into(),
                        format!(
                            "`organization_id` `{org}` is not an AWS Organizations id (`o-...`)"
                        ),
                    ));
                }
            }
            if let Some(arn) = &ct.role_arn {
                if !is_role_arn(arn) {
                    out.push((
                        "role_arn".into(),
                        format!("`cloudtrail.role_arn` `{arn}` is not an IAM role ARN"),
                    ));
                }
            }
        }
        if let Some(b) = &self.budgets {
            for (key, v) in [
                ("notify_actual_percent", b.notify_actual_percent),
                ("notify_forecast_percent", b.notify_forecast_percent),
                ("deny_new_workspaces_percent", b.deny_new_workspaces_percent),
                ("stop_workspaces_percent", b.stop_workspaces_percent),
            ] {
                if !(1..=1000).contains(&v) {
                    out.push((
                        key.into(),
                        format!("`budgets.{key}` must be 1..1000 (percent), not {v}"),
                    ));
                }
            }
        }
        if let Some(eg) = &self.egress {
            for (key, v) in [
                ("store_bucket", &eg.store_bucket),
                ("staging_bucket", &eg.staging_bucket),
                ("download_role", &eg.download_role),
            ] {
                if v.trim().is_empty() {
                    out.push((key.into(), format!("`egress.{key}` is empty")));
                }
            }
            if eg.steps.is_empty() || eg.steps.iter().any(|s| s.trim().is_empty()) {
                out.push((
                    "steps".into(),
                    "`egress.steps` needs at least one non-empty role".into(),
                ));
            }
            if eg.download_limit < 1 {
                out.push((
                    "download_limit".into(),
                    format!(
                        "`egress.download_limit` must be at least 1, not {}",
                        eg.download_limit
                    ),
                ));
            }
            if !(60..=604_800).contains(&eg.url_expiry_seconds) {
                out.push((
                    "url_expiry_seconds".into(),
                    "`egress.url_expiry_seconds` must be 60..604800 (S3's presigning limit)".into(),
                ));
            }
            if let Some(arn) = &eg.role_arn {
                if !is_role_arn(arn) {
                    out.push((
                        "role_arn".into(),
                        format!("`egress.role_arn` `{arn}` is not an IAM role ARN"),
                    ));
                }
            }
        }
        if let Some(api) = &self.api {
            if api.listen.parse::<std::net::SocketAddr>().is_err() {
                out.push((
                    "listen".into(),
                    format!(
                        "`api.listen` `{}` is not an address like `127.0.0.1:9465`",
                        api.listen
                    ),
                ));
            }
            if self.auth.is_none() {
                out.push((
                    "listen".into(),
                    "`[api]` needs an `[auth]` section: the API never serves unauthenticated"
                        .into(),
                ));
            }
        }
        if let Some(auth) = &self.auth {
            if auth.jwks_file.is_some() == auth.jwks_url.is_some() {
                out.push((
                    "issuer".into(),
                    "`[auth]` needs exactly one of `jwks_file` and `jwks_url`".into(),
                ));
            }
            if let Some(url) = &auth.jwks_url {
                if !(url.starts_with("https://") || url.starts_with("http://127.")) {
                    out.push((
                        "jwks_url".into(),
                        format!("`auth.jwks_url` `{url}` must be https (or a loopback http URL)"),
                    ));
                }
            }
            if auth.issuer.trim().is_empty() {
                out.push(("issuer".into(), "`auth.issuer` is empty".into()));
            }
            if auth.audience.trim().is_empty() {
                out.push(("audience".into(), "`auth.audience` is empty".into()));
            }
        }
        if let Some(dl) = &self.datalake {
            if !is_account_id(&dl.account_id) {
                out.push((
                    "account_id".into(),
                    format!(
                        "`datalake.account_id` `{}` is not a 12-digit AWS account id",
                        dl.account_id
                    ),
                ));
            }
        }
        out
    }
}

fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_role_arn(s: &str) -> bool {
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[2] == "iam"
        && is_account_id(parts[4])
        && parts[5].starts_with("role/")
}

/// The offset of `key = ` in the text, for pointing at a key that failed validation.
fn find_key(text: &str, key: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                return Some(offset + (line.len() - trimmed.len()));
            }
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let text = "region = \"us-east-1\"\n[cloudtrail]\nbuckit = \"x\"\n";
        let err = Config::parse("tregov.toml", text).expect_err("unknown key");
        let shown = format!("{err}");
        assert!(shown.contains("tregov.toml:3:"), "{shown}");
        assert!(shown.contains("buckit"), "{shown}");
    }

    #[test]
    fn a_bad_account_id_is_named_with_its_line() {
        let text = "[[projects]]\nid = \"p1\"\naccount_id = \"12345\"\n";
        let err = Config::parse("tregov.toml", text).expect_err("bad account");
        let EngineError::Invalid(problems) = err else {
            panic!("expected problems");
        };
        assert_eq!(problems.problems[0].line, 3);
        assert!(problems.problems[0].message.contains("12-digit"));
    }

    #[test]
    fn a_complete_config_parses() {
        let text = r#"
region = "us-east-1"
endpoint_url = "http://127.0.0.1:5000"
[[projects]]
id = "proj-genomics"
account_id = "111111111111"
role_arn = "arn:aws:iam::111111111111:role/tregov-reader"
[cloudtrail]
bucket = "org-trail"
organization_id = "o-abc123"
[datalake]
account_id = "999999999999"
[identity]
entities = "identity.entities.json"
"#;
        let c = Config::parse("t.toml", text).expect("valid");
        assert_eq!(c.projects.len(), 1);
        assert_eq!(c.concurrency, 8);
        assert_eq!(c.cloudtrail.map(|c| c.lookback_days), Some(1));
    }
}
