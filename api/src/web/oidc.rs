//! Signing in with the TRE's OpenID Provider: the authorization code flow with PKCE (RFC
//! 7636, S256), `state` bound to the browser by a short-lived cookie, and `nonce` bound to the
//! ID token. The provider's endpoints come from its discovery document, whose `issuer` must be
//! the `[auth]` issuer; the ID token is verified with the `[auth]` key set, for this client.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tregov_config::WebConfig;

use crate::auth::Authenticator;
use crate::client::{form_urlencoded, get_text, post_form, Bounds};

/// How long a browser has between leaving for the provider and coming back.
const SIGN_IN_WINDOW: Duration = Duration::from_secs(600);
/// Sign-ins under way at once; beyond it the oldest is forgotten.
const MAX_PENDING: usize = 10_000;

/// The cookie that binds a sign-in's `state` to the browser that started it. SameSite=Lax:
/// the provider's redirect back is a cross-site navigation, which Strict cookies miss.
pub(crate) const STATE_COOKIE: &str = "tregov-signin";

#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
}

/// A sign-in that left for the provider.
struct Pending {
    verifier: String,
    nonce: String,
    next: String,
    started: Instant,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SignInError {
    #[error("the sign-in service is unavailable: {0}")]
    Provider(String),
    #[error("this sign-in was not started here, or took too long; sign in again")]
    UnknownState,
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    #[error("the identity provider's token was not accepted: {0}")]
    Token(String),
}

pub(crate) struct SignIn {
    client_id: String,
    client_secret: Option<String>,
    redirect_uri: String,
    scopes: String,
    reauthenticate: bool,
    discovery_url: String,
    discovered: tokio::sync::Mutex<Option<Discovery>>,
    pending: Mutex<HashMap<String, Pending>>,
}

/// Where a sign-in goes next: the provider's authorization URL, and the `state` to bind to
/// the browser.
pub(crate) struct Departure {
    pub url: String,
    pub state: String,
}

impl SignIn {
    pub(crate) fn new(config: &WebConfig, issuer: &str) -> Result<Self, String> {
        let client_secret = match &config.client_secret_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        Ok(Self {
            client_id: config.client_id.clone(),
            client_secret,
            redirect_uri: config.redirect_uri(),
            scopes: config.scopes.clone(),
            reauthenticate: config.reauthenticate,
            discovery_url: config.discovery_url.clone().unwrap_or_else(|| {
                format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                )
            }),
            discovered: tokio::sync::Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// The provider's endpoints, fetched once (again after a failure).
    async fn discovery(&self, issuer: &str) -> Result<Discovery, SignInError> {
        let mut held = self.discovered.lock().await;
        if let Some(d) = held.as_ref() {
            return Ok(d.clone());
        }
        let text = get_text(&self.discovery_url, Bounds::JWKS)
            .await
            .map_err(|e| SignInError::Provider(format!("`{}`: {e}", self.discovery_url)))?;
        let found: Discovery = serde_json::from_str(&text).map_err(|e| {
            SignInError::Provider(format!(
                "`{}` is not a discovery document: {e}",
                self.discovery_url
            ))
        })?;
        if found.issuer != issuer {
            return Err(SignInError::Provider(format!(
                "the discovery document names issuer `{}`, not the configured `{issuer}`",
                found.issuer
            )));
        }
        *held = Some(found.clone());
        Ok(found)
    }

    /// Starts a sign-in that returns to `next` afterwards.
    pub(crate) async fn depart(
        &self,
        issuer: &str,
        random: impl Fn() -> Option<String>,
        next: &str,
    ) -> Result<Departure, SignInError> {
        let discovery = self.discovery(issuer).await?;
        let none = || SignInError::Provider("no randomness".into());
        let (state, nonce, verifier) = (
            random().ok_or_else(none)?,
            random().ok_or_else(none)?,
            random().ok_or_else(none)?,
        );
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(verifier.as_bytes()));
        let mut fields = vec![
            ("response_type", "code"),
            ("client_id", self.client_id.as_str()),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("scope", self.scopes.as_str()),
            ("state", state.as_str()),
            ("nonce", nonce.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        if self.reauthenticate {
            fields.push(("prompt", "login"));
        }
        let query = form_urlencoded(&fields);
        let separator = if discovery.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        let url = format!("{}{separator}{query}", discovery.authorization_endpoint);
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, p| p.started.elapsed() < SIGN_IN_WINDOW);
        if pending.len() >= MAX_PENDING {
            if let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(k, _)| k.clone())
            {
                pending.remove(&oldest);
            }
        }
        pending.insert(
            state.clone(),
            Pending {
                verifier,
                nonce,
                next: next.to_string(),
                started: Instant::now(),
            },
        );
        Ok(Departure { url, state })
    }

    /// Finishes the sign-in `state` names with `code`: the user (the ID token's `sub`) and
    /// where they were going.
    pub(crate) async fn arrive(
        &self,
        auth: &Authenticator,
        state: &str,
        code: &str,
    ) -> Result<(String, String), SignInError> {
        let pending = {
            let mut held = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            held.remove(state)
        }
        .filter(|p| p.started.elapsed() < SIGN_IN_WINDOW)
        .ok_or(SignInError::UnknownState)?;
        let discovery = self.discovery(auth.issuer()).await?;
        let mut fields = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("code_verifier", pending.verifier.as_str()),
        ];
        let basic = match &self.client_secret {
            Some(secret) => Some((self.client_id.as_str(), secret.as_str())),
            None => {
                fields.push(("client_id", self.client_id.as_str()));
                None
            }
        };
        let (status, answer) = post_form(&discovery.token_endpoint, &fields, basic, Bounds::JWKS)
            .await
            .map_err(SignInError::Provider)?;
        if !(200..300).contains(&status) {
            let error = answer["error"].as_str().unwrap_or("unknown error");
            let description = answer["error_description"].as_str().unwrap_or_default();
            return Err(SignInError::Refused(
                format!("{error} {description}").trim().to_string(),
            ));
        }
        let id_token = answer["id_token"]
            .as_str()
            .ok_or_else(|| SignInError::Token("the answer has no `id_token`".into()))?;
        let user = auth
            .verify_id_token(id_token, &self.client_id, &pending.nonce)
            .await
            .map_err(|e| SignInError::Token(e.to_string()))?;
        Ok((user, pending.next))
    }
}
