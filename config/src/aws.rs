//! AWS clients: the standard credential and region chain, `endpoint_url` (or
//! `AWS_ENDPOINT_URL`), one rustls (ring) HTTPS stack, and per-account roles.

use aws_config::{BehaviorVersion, SdkConfig};
use aws_types::region::Region;

use crate::Config;

/// The shared base configuration every client is built from.
#[derive(Clone, Debug)]
pub struct Aws {
    pub base: SdkConfig,
    /// An explicit endpoint is in use (an emulator): S3 needs path-style addressing then.
    pub custom_endpoint: bool,
}

impl Aws {
    pub async fn load(config: &Config) -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(config.connect_timeout())
            .operation_attempt_timeout(config.attempt_timeout())
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(timeouts);
        if let Some(region) = &config.region {
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
        let custom_endpoint =
            config.endpoint_url.is_some() || std::env::var_os("AWS_ENDPOINT_URL").is_some();
        Self {
            base,
            custom_endpoint,
        }
    }

    /// The configuration for `role_arn` (assumed with STS, credentials refreshed as they
    /// expire), or the base configuration when there is no role.
    pub async fn for_role(&self, role_arn: Option<&str>) -> SdkConfig {
        let Some(arn) = role_arn else {
            return self.base.clone();
        };
        let provider = aws_config::sts::AssumeRoleProvider::builder(arn)
            .session_name("tregov")
            .configure(&self.base)
            .build()
            .await;
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
