//! `tregov.toml`: where the TRE is, how to reach it, and the limits tregov keeps to.
//!
//! Every section is a type that validates itself (`Validate`), reporting each problem at its
//! key path (`projects[1].account_id`), which `Config::parse` turns into a diagnostic at the
//! key's real line. Unknown keys are errors: a misspelt key silently ignored is a control
//! silently off. Every key is documented here and in `examples/tregov.toml`.

pub mod api;
#[cfg(feature = "aws")]
pub mod aws;
pub mod backup;
pub mod breakglass;
pub mod budgets;
pub mod cloudtrail;
pub mod daemon;
pub mod datalake;
pub mod egress;
pub mod identity;
pub mod key_path;
pub mod log;
pub mod organizations;
pub mod policies;
pub mod projects;
pub mod safety;
pub mod validate;
pub mod web;
pub mod workspaces;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tregov_engine::error::{EngineError, Result, SourceProblem};

pub use api::{ApiConfig, AuthConfig};
pub use backup::BackupConfig;
pub use breakglass::BreakGlassConfig;
pub use budgets::BudgetThresholds;
pub use cloudtrail::{CloudTrailConfig, PublicKeyConfig};
pub use daemon::DaemonConfig;
pub use datalake::DataLakeConfig;
pub use egress::EgressConfig;
pub use identity::IdentityConfig;
pub use key_path::KeyPath;
pub use log::LogConfig;
pub use organizations::OrganizationsConfig;
pub use policies::PoliciesConfig;
pub use projects::ProjectConfig;
pub use safety::SafetyConfig;
use validate::{Problems, Validate};
pub use web::WebConfig;
pub use workspaces::WorkspacesConfig;

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
    /// The session name of every role tregov assumes, as CloudTrail records it (the
    /// `userIdentity` ARN's last part). Default `tregov`.
    #[serde(default)]
    pub role_session_name: Option<String>,
    /// The external id every role tregov assumes requires (its trust policy's
    /// `sts:ExternalId` condition, as a third-party operator's roles do).
    #[serde(default)]
    pub role_external_id: Option<String>,
    /// An HTTP(S) proxy for every AWS call. Default: `HTTPS_PROXY` / `HTTP_PROXY` /
    /// `ALL_PROXY`, with `NO_PROXY`'s exceptions, as curl and the AWS CLI read them.
    #[serde(default)]
    pub proxy_url: Option<String>,
    /// Attempts per AWS call, retries included (throttling and 5xx are retried with
    /// backoff). Default: the SDK's standard 3.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Seconds one attempt at an AWS call may take before it is abandoned and retried: a
    /// hung connection never holds a pass up. Default 300 (a server-side copy of a 5 GiB part
    /// takes minutes).
    #[serde(default)]
    pub attempt_timeout_seconds: Option<u64>,
    /// Seconds to connect to an AWS endpoint. Default 5.
    #[serde(default)]
    pub connect_timeout_seconds: Option<u64>,
    /// How many accounts, regions or files are worked on at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// One entry per TRE project (one AWS member account each).
    #[serde(default)]
    pub projects: Vec<ProjectConfig>,
    /// More projects: the accounts of an organizational unit, discovered on every resync.
    #[serde(default)]
    pub organizations: Option<OrganizationsConfig>,
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
    /// The auditors' break-glass role and its workflow's limits.
    #[serde(default)]
    pub breakglass: Option<BreakGlassConfig>,
    /// Where workspaces' owners come from; what tag drift does.
    #[serde(default)]
    pub workspaces: WorkspacesConfig,
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// How reloaded policies are taken in: a set that widens access waits for approval.
    #[serde(default)]
    pub policies: PoliciesConfig,
    /// Blast-radius limits; on by default.
    #[serde(default)]
    pub safety: SafetyConfig,
    /// The data egress workflow (`tregov egress`, the HTTP API).
    #[serde(default)]
    pub egress: Option<EgressConfig>,
    /// The HTTP API the daemon (or `tregov serve`) offers.
    #[serde(default)]
    pub api: Option<ApiConfig>,
    /// How API callers are authenticated: OIDC JWTs (as Amazon Cognito issues them).
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// The web app for reviewers, data managers and auditors (needs `[api]` and `[auth]`).
    #[serde(default)]
    pub web: Option<WebConfig>,
    /// How the decision log's head is signed and anchored outside the TRE.
    #[serde(default)]
    pub log: Option<LogConfig>,
}

fn default_concurrency() -> usize {
    8
}

impl Config {
    /// How long one attempt at an AWS call may take (`attempt_timeout_seconds`).
    pub fn attempt_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.attempt_timeout_seconds.unwrap_or(300))
    }

    /// How long connecting to an AWS endpoint may take (`connect_timeout_seconds`).
    pub fn connect_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.connect_timeout_seconds.unwrap_or(5))
    }

    /// Reads and checks a config file; every problem names the key and its line. Relative
    /// paths in it are taken from the file's directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        let mut config = Self::parse(&path.display().to_string(), &text)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        if let Some(identity) = &mut config.identity {
            relative_to(dir, &mut identity.entities);
        }
        if let Some(registry) = &mut config.workspaces.registry {
            relative_to(dir, registry);
        }
        if let Some(jwks) = config.auth.as_mut().and_then(|a| a.jwks_file.as_mut()) {
            relative_to(dir, jwks);
        }
        if let Some(secret) = config
            .web
            .as_mut()
            .and_then(|w| w.client_secret_file.as_mut())
        {
            relative_to(dir, secret);
        }
        if let Some(log) = &mut config.log {
            for path in [&mut log.signing_key, &mut log.verify_key]
                .into_iter()
                .flatten()
            {
                relative_to(dir, path);
            }
        }
        if let Some(api) = &mut config.api {
            for path in [&mut api.tls_cert, &mut api.tls_key].into_iter().flatten() {
                relative_to(dir, path);
            }
        }
        for key in config
            .cloudtrail
            .iter_mut()
            .flat_map(|c| c.public_keys.iter_mut())
        {
            if let Some(path) = &mut key.path {
                relative_to(dir, path);
            }
        }
        Ok(config)
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
        let problems = config.problems();
        if problems.is_empty() {
            return Ok(config);
        }
        let problems = problems
            .into_iter()
            .map(|p| {
                let span = p.path.locate(text).unwrap_or(0..0);
                SourceProblem::at(
                    name,
                    text,
                    span.start,
                    span.len(),
                    format!("`{}`: {}", p.path, p.message),
                    "this key",
                )
            })
            .collect();
        Err(EngineError::problems(
            format!("invalid configuration `{name}`"),
            problems,
        ))
    }

    /// Checks that need no AWS, each section its own, then those across sections.
    pub fn problems(&self) -> Vec<validate::Problem> {
        let root = KeyPath::root();
        let mut problems = Problems::default();
        problems.check(
            (1..=256).contains(&self.concurrency),
            root.key("concurrency"),
            || "must be between 1 and 256".into(),
        );
        for (key, url) in [
            ("endpoint_url", &self.endpoint_url),
            ("proxy_url", &self.proxy_url),
        ] {
            if let Some(url) = url {
                problems.check(
                    url.starts_with("http://") || url.starts_with("https://"),
                    root.key(key),
                    || format!("`{url}` is not an http(s) URL"),
                );
            }
        }
        if let Some(name) = &self.role_session_name {
            // STS: 2 to 64 characters of `[\w+=,.@-]`.
            let ok = (2..=64).contains(&name.len())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
            problems.check(ok, root.key("role_session_name"), || {
                format!("`{name}` is not an STS session name (2 to 64 of letters, digits and `_+=,.@-`)")
            });
        }
        if let Some(id) = &self.role_external_id {
            problems.check(
                (2..=1224).contains(&id.len()),
                root.key("role_external_id"),
                || "must be 2 to 1224 characters".into(),
            );
        }
        problems.check(
            self.attempt_timeout_seconds
                .is_none_or(|s| (1..=3600).contains(&s)),
            root.key("attempt_timeout_seconds"),
            || "must be 1..3600".into(),
        );
        problems.check(
            self.connect_timeout_seconds
                .is_none_or(|s| (1..=120).contains(&s)),
            root.key("connect_timeout_seconds"),
            || "must be 1..120".into(),
        );
        projects::validate_projects(&self.projects, &root.key("projects"), &mut problems);
        self.organizations
            .validate(&root.key("organizations"), &mut problems);
        self.cloudtrail
            .validate(&root.key("cloudtrail"), &mut problems);
        self.datalake.validate(&root.key("datalake"), &mut problems);
        self.identity.validate(&root.key("identity"), &mut problems);
        self.budgets.validate(&root.key("budgets"), &mut problems);
        self.backup.validate(&root.key("backup"), &mut problems);
        self.breakglass
            .validate(&root.key("breakglass"), &mut problems);
        self.workspaces
            .validate(&root.key("workspaces"), &mut problems);
        self.daemon.validate(&root.key("daemon"), &mut problems);
        self.policies.validate(&root.key("policies"), &mut problems);
        self.safety.validate(&root.key("safety"), &mut problems);
        self.egress.validate(&root.key("egress"), &mut problems);
        self.api.validate(&root.key("api"), &mut problems);
        self.auth.validate(&root.key("auth"), &mut problems);
        self.log.validate(&root.key("log"), &mut problems);
        self.web.validate(&root.key("web"), &mut problems);
        problems.check(
            self.web.is_none() || (self.api.is_some() && self.auth.is_some()),
            root.key("web"),
            || "the web app needs `[api]` and `[auth]`: it is served by the API and signs people in with the `[auth]` issuer".into(),
        );
        problems.check(
            self.api.is_none() || self.auth.is_some(),
            root.key("api"),
            || "`[api]` needs an `[auth]` section: the API never serves unauthenticated".into(),
        );
        problems.into_vec()
    }

    /// Whether each optional section is present, by name.
    pub fn sections(&self) -> [(&'static str, bool); 9] {
        [
            ("breakglass", self.breakglass.is_some()),
            ("cloudtrail", self.cloudtrail.is_some()),
            ("datalake", self.datalake.is_some()),
            ("identity", self.identity.is_some()),
            ("egress", self.egress.is_some()),
            ("api", self.api.is_some()),
            ("auth", self.auth.is_some()),
            ("log", self.log.is_some()),
            ("web", self.web.is_some()),
        ]
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
            protected_principals: self.protected_principals(),
            revert_tag_drift: self.workspaces.revert_tag_drift,
            // The governor reads the clock when it plans.
            now: None,
            expiry_topic: self
                .daemon
                .expiry_topic_arn
                .clone()
                .or_else(|| self.safety.alert_topic_arn.clone()),
            backup_plan: self.backup.plan_target(),
            breakglass_roles: self.breakglass_roles(),
            breakglass_topic: self.breakglass.as_ref().and_then(|b| {
                b.alert_topic_arn
                    .clone()
                    .or_else(|| self.safety.alert_topic_arn.clone())
            }),
        }
    }

    /// Per project id: the ARN of its break-glass role (`[breakglass] role_name` in the
    /// project's account); none without `[breakglass]`.
    pub fn breakglass_roles(&self) -> std::collections::BTreeMap<String, String> {
        let Some(breakglass) = &self.breakglass else {
            return Default::default();
        };
        self.projects
            .iter()
            .map(|p| {
                let arn = format!(
                    "arn:aws:iam::{}:role/{}",
                    p.account_id, breakglass.role_name
                );
                (p.id.clone(), arn)
            })
            .collect()
    }

    /// The principals tregov never plans to revoke: `[datalake] protected_principals`, and
    /// every role tregov itself assumes (revoking its own access would blind it).
    pub fn protected_principals(&self) -> std::collections::BTreeSet<String> {
        let own_roles = self
            .projects
            .iter()
            .filter_map(|p| p.role_arn.clone())
            .chain(self.datalake.as_ref().and_then(|d| d.role_arn.clone()))
            .chain(self.cloudtrail.as_ref().and_then(|c| c.role_arn.clone()))
            .chain(self.egress.as_ref().and_then(|e| e.role_arn.clone()));
        self.datalake
            .iter()
            .flat_map(|d| d.protected_principals.iter().cloned())
            .chain(own_roles)
            .collect()
    }

    /// Whether `account` is one tregov governs (a project's or the data lake's): the only
    /// accounts it ever acts in or grants to.
    pub fn is_configured_account(&self, account: &str) -> bool {
        self.projects.iter().any(|p| p.account_id == account)
            || self
                .datalake
                .as_ref()
                .is_some_and(|d| d.account_id == account)
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
}

fn relative_to(dir: &Path, path: &mut PathBuf) {
    if path.is_relative() {
        *path = dir.join(&*path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(text: &str) -> Vec<SourceProblem> {
        match Config::parse("tregov.toml", text) {
            Err(EngineError::Invalid(p)) => p.problems,
            other => panic!("expected problems, got {other:?}"),
        }
    }

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
        let problems = problems_of("[[projects]]\nid = \"p1\"\naccount_id = \"12345\"\n");
        assert_eq!(problems[0].line, 3);
        assert!(problems[0].message.contains("12-digit"));
    }

    /// Regression: a bad key in the second project was labelled with the line of the first
    /// key of that name in the file.
    #[test]
    fn a_bad_account_id_in_the_second_project_points_at_the_second_project() {
        let text = r#"
[[projects]]
id = "p1"
account_id = "111111111111"

[[projects]]
id = "p2"
account_id = "2222"
"#;
        let problems = problems_of(text);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, 8);
        assert!(
            problems[0].message.starts_with("`projects[1].account_id`"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn every_section_reports_its_own_key_path() {
        let text = r#"
[datalake]
account_id = "999999999999"
protected_principals = ["arn:aws:iam::999999999999:role/etl", "bogus"]
[safety]
max_revoke_fraction = 2.0
[api]
listen = "127.0.0.1:9465"
"#;
        let shown: Vec<(usize, String)> = problems_of(text)
            .into_iter()
            .map(|p| (p.line, p.message))
            .collect();
        let keys: Vec<&str> = shown
            .iter()
            .map(|(_, m)| m.split('`').nth(1).unwrap_or_default())
            .collect();
        assert_eq!(
            keys,
            vec![
                "datalake.protected_principals[1]",
                "safety.max_revoke_fraction",
                "api"
            ],
            "{shown:?}"
        );
        assert_eq!(shown[1].0, 6);
        assert_eq!(shown[2].0, 7, "a missing [auth] points at [api]");
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
        assert_eq!(c.safety.max_revokes, 50);
    }
}
