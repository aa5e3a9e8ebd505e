//! `[web]`: the web app for reviewers, data managers and auditors, served by the API on the
//! same origin. People sign in with the TRE's OpenID Provider (the `[auth]` issuer, e.g.
//! Cognito's hosted UI) by the authorization code flow with PKCE; the session lives in a
//! cookie that names a server-side session, never in the browser.

use std::path::PathBuf;

use serde::Deserialize;

use crate::key_path::KeyPath;
use crate::validate::{check_not_empty, Problems, Validate};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// The app client id registered with the provider (the ID token's `aud`).
    pub client_id: String,
    /// A file holding the client secret, for a confidential client (Cognito app clients with
    /// a secret); relative to the configuration file. Default: a public client (PKCE only).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// The app's public address as people reach it, e.g. `https://tregov.tre.example.org`:
    /// the provider sends people back to `<public_url>/web/callback`, which must be
    /// registered with it.
    pub public_url: String,
    /// The provider's discovery document. Default:
    /// `<[auth] issuer>/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery_url: Option<String>,
    /// Scopes asked for. Default `openid`.
    #[serde(default = "default_scopes")]
    pub scopes: String,
    /// Ask the provider to authenticate the person again at every sign-in (`prompt=login`),
    /// so on a shared machine the provider's own session never signs the next person in as
    /// the last. Default true.
    #[serde(default = "default_true")]
    pub reauthenticate: bool,
    /// A session unused this long ends. Default 900 (15 minutes).
    #[serde(default = "default_idle")]
    pub idle_timeout_seconds: u64,
    /// A session ends this long after sign-in, however busy. Default 28800 (8 hours).
    #[serde(default = "default_absolute")]
    pub absolute_timeout_seconds: u64,
    /// Sessions held at once; the least recently used goes first beyond it. Default 10000.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Bytes of a staged text or CSV file shown as a preview. Default 65536.
    #[serde(default = "default_preview_bytes")]
    pub preview_bytes: usize,
    /// Rows on one page of a list. Default 25.
    #[serde(default = "default_page_size")]
    pub page_size: usize,
}

fn default_true() -> bool {
    true
}
fn default_scopes() -> String {
    "openid".into()
}
fn default_idle() -> u64 {
    900
}
fn default_absolute() -> u64 {
    28_800
}
fn default_max_sessions() -> usize {
    10_000
}
fn default_preview_bytes() -> usize {
    64 * 1024
}
fn default_page_size() -> usize {
    25
}

impl WebConfig {
    /// Where the provider sends people back after sign-in.
    pub fn redirect_uri(&self) -> String {
        format!("{}/web/callback", self.public_url.trim_end_matches('/'))
    }
}

impl Validate for WebConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        check_not_empty(&self.client_id, at.key("client_id"), problems);
        problems.check(
            crate::api::is_trusted_key_url(&self.public_url),
            at.key("public_url"),
            || {
                format!(
                    "`{}` must be https (or http to a loopback host): session cookies and \
                     authorization codes would cross the network in clear text",
                    self.public_url
                )
            },
        );
        if let Some(url) = &self.discovery_url {
            problems.check(
                crate::api::is_trusted_key_url(url),
                at.key("discovery_url"),
                || format!("`{url}` must be https (or http to a loopback host)"),
            );
        }
        problems.check(
            self.scopes.split_whitespace().any(|s| s == "openid"),
            at.key("scopes"),
            || "must include `openid`: sign-in needs an ID token".into(),
        );
        problems.check(
            self.idle_timeout_seconds > 0,
            at.key("idle_timeout_seconds"),
            || "must be more than 0".into(),
        );
        problems.check(
            self.absolute_timeout_seconds >= self.idle_timeout_seconds,
            at.key("absolute_timeout_seconds"),
            || "must be at least `idle_timeout_seconds`".into(),
        );
        for (key, value) in [
            ("max_sessions", self.max_sessions),
            ("preview_bytes", self.preview_bytes),
            ("page_size", self.page_size),
        ] {
            problems.check(value > 0, at.key(key), || "must be more than 0".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    const BASE: &str = "[api]\nlisten = \"127.0.0.1:0\"\n[auth]\njwks_file = \"k.json\"\nissuer = \"i\"\naudience = \"a\"\n";

    #[test]
    fn a_web_section_over_plain_http_off_loopback_is_refused_naming_the_key() {
        let text =
            format!("{BASE}[web]\nclient_id = \"c\"\npublic_url = \"http://tregov.example.org\"\n");
        let error = Config::parse("t.toml", &text)
            .expect_err("refused")
            .to_string();
        assert!(error.contains("invalid configuration"), "{error}");
        let problems = Config::parse("t.toml", &text)
            .err()
            .map(|e| format!("{e:?}"))
            .unwrap_or_default();
        assert!(problems.contains("web.public_url"), "{problems}");
    }

    #[test]
    fn the_web_app_needs_the_api_and_its_auth() {
        let text = "[web]\nclient_id = \"c\"\npublic_url = \"http://127.0.0.1:9465\"\n";
        let problems = format!("{:?}", Config::parse("t.toml", text).expect_err("refused"));
        assert!(
            problems.contains("needs `[api]` and `[auth]`"),
            "{problems}"
        );
    }

    #[test]
    fn a_loopback_web_section_with_defaults_is_accepted() {
        let text =
            format!("{BASE}[web]\nclient_id = \"c\"\npublic_url = \"http://127.0.0.1:9465/\"\n");
        let config = Config::parse("t.toml", &text).expect("valid");
        let web = config.web.expect("web");
        assert_eq!(web.redirect_uri(), "http://127.0.0.1:9465/web/callback");
        assert_eq!((web.idle_timeout_seconds, web.page_size), (900, 25));
    }
}
