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
    /// The token subjects (`sub`; for a Cognito client-credentials client, its client id) of
    /// the apps registered as services: only they ask `is-authorized` about other principals
    /// and give context the schema marks `@serverProvided("service")`. Default: none.
    #[serde(default)]
    pub services: Vec<String>,
}

impl Validate for ApiConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        problems.check(
            self.listen.parse::<std::net::SocketAddr>().is_ok(),
            at.key("listen"),
            || format!("`{}` is not an address like `127.0.0.1:9465`", self.listen),
        );
        for (i, service) in self.services.iter().enumerate() {
            let at = at.key("services").index(i);
            check_not_empty(service, at.clone(), problems);
            problems.check(!self.services[..i].contains(service), at, || {
                format!("`{service}` is listed twice")
            });
        }
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

#[cfg(test)]
mod tests {
    use crate::Config;
    use tregov_engine::error::EngineError;

    const AUTH: &str = "[auth]\njwks_file = \"k.json\"\nissuer = \"i\"\naudience = \"a\"\n";

    #[test]
    fn services_are_token_subjects_listed_under_api() {
        let text =
            format!("[api]\nlisten = \"127.0.0.1:9465\"\nservices = [\"tre-portal\"]\n{AUTH}");
        let config = Config::parse("tregov.toml", &text).expect("valid");
        assert_eq!(
            config.api.map(|a| a.services),
            Some(vec!["tre-portal".to_string()])
        );
    }

    #[test]
    fn an_empty_or_repeated_service_is_named_with_its_key_path_and_line() {
        let text = format!(
            "[api]\nlisten = \"127.0.0.1:9465\"\nservices = [\n  \"tre-portal\",\n  \" \",\n  \"tre-portal\",\n]\n{AUTH}"
        );
        let Err(EngineError::Invalid(invalid)) = Config::parse("tregov.toml", &text) else {
            panic!("expected problems");
        };
        let shown: Vec<(usize, &str)> = invalid
            .problems
            .iter()
            .map(|p| (p.line, p.message.as_str()))
            .collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(shown[0].1.starts_with("`api.services[1]`"), "{shown:?}");
        assert_eq!(shown[0].0, 5);
        assert!(shown[1].1.starts_with("`api.services[2]`"), "{shown:?}");
        assert!(shown[1].1.contains("listed twice"), "{shown:?}");
        assert_eq!(shown[1].0, 6);
    }
}
