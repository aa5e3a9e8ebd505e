//! `[api]` and `[auth]`: where the HTTP API listens, and which tokens it accepts.

use std::path::PathBuf;

use serde::Deserialize;

use crate::key_path::KeyPath;
use crate::validate::{check_not_empty, Problems, Validate};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to serve on, e.g. `127.0.0.1:9465`. Anything but loopback needs `tls_cert`
    /// and `tls_key`, or `allow_plaintext = true` where TLS ends in front of tregov.
    pub listen: String,
    /// The token subjects (`sub`; for a Cognito client-credentials client, its client id) of
    /// the apps registered as services: only they ask `is-authorized` about other principals
    /// and give context the schema marks `@serverProvided("service")`. Default: none.
    #[serde(default)]
    pub services: Vec<String>,
    /// A PEM certificate chain and its private key (relative to the configuration file): the
    /// API serves HTTPS itself, and reloads both on SIGHUP.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (a TLS proxy in front). Default false.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Bounds on what callers can make the API do.
    #[serde(default)]
    pub limits: ApiLimits,
}

/// `[api.limits]`: how long, how many, how large. Each has a default fit for a TRE's apps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiLimits {
    /// Seconds a connection may take to send a request's headers, and may stay idle between
    /// requests. Default 10.
    pub header_read_seconds: u64,
    /// Seconds one request may take, its body included. Default 30.
    pub request_seconds: u64,
    /// Open connections at once; more wait to be accepted. Default 1024.
    pub max_connections: usize,
    /// Requests handled at once; more are answered 503 after `queue_seconds`. Default 64.
    pub max_in_flight: usize,
    /// Seconds a request waits for a free slot before it is answered 503. Default 2.
    pub queue_seconds: u64,
    /// Requests per second one caller (token subject) may make, sustained. Default 50.
    pub per_caller_per_second: u32,
    /// Requests one caller may make in a burst. Default 200.
    pub per_caller_burst: u32,
    /// Bytes of a request body, for routes that take one: `is-authorized` and egress
    /// requests. Default 64 KiB.
    pub max_body_bytes: usize,
    /// Bytes of a `batch-is-authorized` body. Default 1 MiB.
    pub max_batch_body_bytes: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            header_read_seconds: 10,
            request_seconds: 30,
            max_connections: 1024,
            max_in_flight: 64,
            queue_seconds: 2,
            per_caller_per_second: 50,
            per_caller_burst: 200,
            max_body_bytes: 64 * 1024,
            max_batch_body_bytes: 1024 * 1024,
        }
    }
}

impl ApiConfig {
    /// `https` when the API serves TLS itself, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// Whether `listen` is a loopback address.
pub fn is_loopback(listen: &str) -> bool {
    listen
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback())
}

/// Whether `url` may carry keys: https, or http to a loopback host (checked on the parsed
/// host, so `http://127.0.0.1@elsewhere/` is elsewhere).
pub fn is_trusted_key_url(url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    match (parsed.scheme(), parsed.host()) {
        ("https", Some(_)) => true,
        ("http", Some(url::Host::Ipv4(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Ipv6(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Domain(d))) => d.eq_ignore_ascii_case("localhost"),
        _ => false,
    }
}

impl Validate for ApiConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        problems.check(
            self.listen.parse::<std::net::SocketAddr>().is_ok(),
            at.key("listen"),
            || format!("`{}` is not an address like `127.0.0.1:9465`", self.listen),
        );
        problems.check(
            self.tls_cert.is_some() == self.tls_key.is_some(),
            at.clone(),
            || "`tls_cert` and `tls_key` go together".into(),
        );
        let plaintext_ok = is_loopback(&self.listen) || self.allow_plaintext;
        problems.check(
            self.tls_cert.is_some() || plaintext_ok,
            at.key("listen"),
            || {
                format!(
                    "`{}` is not a loopback address: bearer tokens and download links would cross \
                     the network in clear text; set `tls_cert` and `tls_key`, or \
                     `allow_plaintext = true` when TLS ends in front of tregov",
                    self.listen
                )
            },
        );
        let l = &self.limits;
        for (key, value) in [
            ("header_read_seconds", l.header_read_seconds as usize),
            ("request_seconds", l.request_seconds as usize),
            ("max_connections", l.max_connections),
            ("max_in_flight", l.max_in_flight),
            ("per_caller_per_second", l.per_caller_per_second as usize),
            ("per_caller_burst", l.per_caller_burst as usize),
            ("max_body_bytes", l.max_body_bytes),
            ("max_batch_body_bytes", l.max_batch_body_bytes),
        ] {
            problems.check(value > 0, at.key("limits").key(key), || {
                "must be more than 0".into()
            });
        }
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
    /// Keys are fetched (or read) again once this old, as well as on an unknown `kid`: a key
    /// the issuer removed stops working within it. Default 3600.
    #[serde(default = "default_jwks_ttl")]
    pub jwks_ttl_seconds: u64,
}

fn default_jwks_ttl() -> u64 {
    3600
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
            problems.check(is_trusted_key_url(url), at.key("jwks_url"), || {
                format!("`{url}` must be https (or http to a loopback host)")
            });
        }
        problems.check(
            self.jwks_ttl_seconds > 0,
            at.key("jwks_ttl_seconds"),
            || "must be more than 0".into(),
        );
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
    fn a_key_url_is_judged_by_its_parsed_host_not_its_prefix() {
        use super::is_trusted_key_url;
        assert!(is_trusted_key_url(
            "https://cognito-idp.eu-west-2.amazonaws.com/p/.well-known/jwks.json"
        ));
        assert!(is_trusted_key_url("http://127.0.0.1:8080/jwks.json"));
        assert!(is_trusted_key_url("http://[::1]:8080/jwks.json"));
        assert!(!is_trusted_key_url(
            "http://127.0.0.1@evil.example/jwks.json"
        ));
        assert!(!is_trusted_key_url(
            "http://127.0.0.1.evil.example/jwks.json"
        ));
        assert!(!is_trusted_key_url("http://10.0.0.1/jwks.json"));
        assert!(!is_trusted_key_url("ftp://127.0.0.1/jwks.json"));
    }

    #[test]
    fn a_non_loopback_listen_without_tls_is_refused_unless_plaintext_is_allowed() {
        let refused = format!("[api]\nlisten = \"0.0.0.0:9465\"\n{AUTH}");
        let Err(EngineError::Invalid(invalid)) = Config::parse("tregov.toml", &refused) else {
            panic!("expected problems");
        };
        assert!(
            invalid.problems[0].message.contains("clear text"),
            "{invalid:?}"
        );
        assert_eq!(invalid.problems[0].line, 2);
        let allowed = format!("[api]\nlisten = \"0.0.0.0:9465\"\nallow_plaintext = true\n{AUTH}");
        assert!(Config::parse("tregov.toml", &allowed).is_ok());
        let tls = format!(
            "[api]\nlisten = \"0.0.0.0:9465\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n{AUTH}"
        );
        assert!(Config::parse("tregov.toml", &tls).is_ok());
    }

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
