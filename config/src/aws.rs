//! AWS clients: the standard credential and region chain, `endpoint_url` (or
//! `AWS_ENDPOINT_URL`), one rustls (ring) HTTPS stack, and per-account roles.

use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_types::region::Region;

use crate::Config;

/// The shared base configuration every client is built from.
#[derive(Clone, Debug)]
pub struct Aws {
    pub base: SdkConfig,
    /// An explicit endpoint is in use (an emulator): S3 needs path-style addressing then.
    pub custom_endpoint: bool,
    /// The session name and external id of every role assumed.
    session_name: String,
    external_id: Option<String>,
}

/// The command line's `--profile` and `--region`, which outrank the configuration file and
/// the environment; set once, before any client is built.
#[derive(Debug, Clone, Default)]
pub struct CommandLine {
    pub profile: Option<String>,
    pub region: Option<String>,
}

static COMMAND_LINE: std::sync::OnceLock<CommandLine> = std::sync::OnceLock::new();

/// Records the command line's AWS choices for every `Aws::load` of this process.
pub fn set_command_line(choices: CommandLine) {
    let _ = COMMAND_LINE.set(choices);
}

impl Aws {
    pub async fn load(config: &Config) -> Self {
        let cli = COMMAND_LINE.get().cloned().unwrap_or_default();
        let http = http_client(proxy(config));
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(config.connect_timeout())
            .operation_attempt_timeout(config.attempt_timeout())
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(timeouts);
        if let Some(profile) = &cli.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(region) = cli.region.as_ref().or(config.region.as_ref()) {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        if let Some(attempts) = config.max_attempts {
            loader = loader.retry_config(
                aws_config::retry::RetryConfig::standard().with_max_attempts(attempts),
            );
        }
        let base = loader.load().await;
        // `AWS_ENDPOINT_URL_<SERVICE>` and profiles' `endpoint_url` are the SDK's own; S3 at
        // an explicit endpoint (an emulator, most S3-compatible stores) needs path style.
        let custom_endpoint = base.endpoint_url().is_some()
            || ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"]
                .iter()
                .any(|v| std::env::var_os(v).is_some());
        Self {
            base,
            custom_endpoint,
            session_name: config
                .role_session_name
                .clone()
                .unwrap_or_else(|| "tregov".into()),
            external_id: config.role_external_id.clone(),
        }
    }

    /// Clients over a given base configuration (tests against an emulator), assuming roles
    /// as `tregov` by default.
    pub fn from_sdk_config(base: SdkConfig) -> Self {
        Self {
            custom_endpoint: base.endpoint_url().is_some(),
            base,
            session_name: "tregov".into(),
            external_id: None,
        }
    }

    /// The configuration for `role_arn` (assumed with STS, credentials refreshed as they
    /// expire), or the base configuration when there is no role.
    pub async fn for_role(&self, role_arn: Option<&str>) -> SdkConfig {
        let Some(arn) = role_arn else {
            return self.base.clone();
        };
        let mut provider = aws_config::sts::AssumeRoleProvider::builder(arn)
            .session_name(&self.session_name)
            .configure(&self.base);
        if let Some(id) = &self.external_id {
            provider = provider.external_id(id);
        }
        let provider = provider.build().await;
        self.base
            .to_builder()
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(provider),
            )
            .build()
    }

    pub fn s3(&self, config: &SdkConfig) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(self.custom_endpoint)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }
}

/// `NO_PROXY`'s exceptions, as curl reads them (either case).
fn no_proxy() -> Option<String> {
    std::env::var("NO_PROXY")
        .or_else(|_| std::env::var("no_proxy"))
        .ok()
        .filter(|rules| !rules.trim().is_empty())
}

/// The proxy AWS calls go through: `proxy_url`, else the environment's, else none.
fn proxy(config: &Config) -> Option<ProxyConfig> {
    if let Some(url) = &config.proxy_url {
        return match ProxyConfig::all(url.as_str()) {
            Ok(proxy) => Some(match no_proxy() {
                Some(rules) => proxy.no_proxy(rules),
                None => proxy,
            }),
            Err(error) => {
                tracing::error!(%error, url, "`proxy_url` refused; the environment's proxy settings apply");
                Some(ProxyConfig::from_env())
            }
        };
    }
    const VARIABLES: [&str; 6] = [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ];
    VARIABLES
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|url| !url.is_empty()))
        .then(ProxyConfig::from_env)
}

/// One rustls (ring) HTTPS stack; through `proxy` when there is one.
fn http_client(proxy: Option<ProxyConfig>) -> SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    let Some(proxy) = proxy else {
        return aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
    };
    // The client builder has no proxy setting of its own: each connector (one per set of
    // timeouts, cached by the client) is built with it.
    aws_smithy_http_client::Builder::new().build_with_connector_fn(move |settings, components| {
        let mut connector = aws_smithy_http_client::Connector::builder();
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .proxy_config(proxy.clone())
            .build()
    })
}

#[cfg(test)]
mod tests {
    use aws_credential_types::provider::ProvideCredentials;

    use super::*;

    /// The STS request `for_role` makes, with the configuration's session name and external
    /// id (STS itself is not needed: the request is captured before it leaves).
    #[tokio::test]
    async fn assumed_roles_carry_the_session_name_and_external_id() {
        let config = Config::parse(
            "tregov.toml",
            "region = \"eu-west-2\"\nrole_session_name = \"tregov-prod\"\nrole_external_id = \"tre-8d1f\"\n",
        )
        .expect("config");
        let mut aws = Aws::load(&config).await;
        let (capture, request) = aws_smithy_http_client::test_util::capture_request(None);
        aws.base = aws
            .base
            .to_builder()
            .http_client(capture)
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    aws_credential_types::Credentials::new("AKID", "secret", None, None, "test"),
                ),
            )
            .build();
        let assumed = aws
            .for_role(Some("arn:aws:iam::111111111111:role/tregov-project"))
            .await;
        let provider = assumed.credentials_provider().expect("a provider");
        // The captured call answers nothing an STS client can read: only the request matters.
        let _ = provider.provide_credentials().await;
        let sent = request.expect_request();
        let body = std::str::from_utf8(sent.body().bytes().expect("a body")).expect("utf-8");
        assert!(body.contains("Action=AssumeRole"), "{body}");
        assert!(body.contains("RoleSessionName=tregov-prod"), "{body}");
        assert!(body.contains("ExternalId=tre-8d1f"), "{body}");
    }
}
