//! `[api]` and `[auth]`: where the HTTP API listens, and which tokens it accepts.

use std::path::PathBuf;

use serde::Deserialize;

use crate::key_path::KeyPath;
use crate::validate::{check_not_empty, Problems, Validate};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to serve on, e.g. `127.0.0.1:9465`. Put TLS in front of anything else.
    pub listen: String,
}

impl Validate for ApiConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        problems.check(
            self.listen.parse::<std::net::SocketAddr>().is_ok(),
            at.key("listen"),
            || format!("`{}` is not an address like `127.0.0.1:9465`", self.listen),
        );
    }
}

/// Exactly one of `jwks_file` and `jwks_url`.
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

impl Validate for AuthConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        problems.check(
            self.jwks_file.is_some() != self.jwks_url.is_some(),
            at.clone(),
            || "`[auth]` needs exactly one of `jwks_file` and `jwks_url`".into(),
        );
        if let Some(url) = &self.jwks_url {
            problems.check(
                url.starts_with("https://") || url.starts_with("http://127."),
                at.key("jwks_url"),
                || format!("`{url}` must be https (or a loopback http URL)"),
            );
        }
        check_not_empty(&self.issuer, at.key("issuer"), problems);
        check_not_empty(&self.audience, at.key("audience"), problems);
    }
}
