//! Who is calling: OIDC JWTs (as Amazon Cognito issues them), verified against the issuer's
//! JSON Web Key Set. The caller is the token's `sub`; nothing in a request body can change
//! that.
//!
//! Checked: the signature (asymmetric algorithms only, with the key the token's `kid` names),
//! `iss`, the audience (`aud`, or for Cognito access tokens, which carry none, `client_id`),
//! `exp` and `nbf` (with the configured leeway). Anything else is refused. A token seen before
//! is answered from that verification while its time window and the key set hold
//! (`verified`).

use std::path::PathBuf;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use tregov_config::AuthConfig;

use crate::verified::{Verified, VerifiedTokens};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token (`Authorization: Bearer <jwt>`)")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("signing keys unavailable: {0}")]
    Keys(String),
}

enum KeySource {
    File(PathBuf),
    Url(String),
}

struct Keys {
    set: JwkSet,
    fetched: Instant,
    /// Counts loads: a token verified under one generation is checked again under the next.
    generation: u64,
}

pub struct Authenticator {
    source: KeySource,
    issuer: String,
    audience: String,
    leeway: u64,
    /// Keys older than this are fetched again: a key the issuer removed (after a compromise,
    /// say) stops working within it.
    ttl: Duration,
    keys: RwLock<Option<Keys>>,
    /// When keys were last fetched or tried: a failing issuer is not asked again at once.
    last_try: std::sync::Mutex<Option<Instant>>,
    /// Tokens already verified under the keys held (see `verified`).
    verified: VerifiedTokens,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    aud: Option<Value>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    exp: Option<Value>,
    #[serde(default)]
    nbf: Option<Value>,
    /// An ID token's binding to the sign-in that asked for it.
    #[serde(default)]
    nonce: Option<String>,
}

/// Refetch an unknown `kid` at most this often: a key rotation is picked up at once, a flood
/// of forged `kid`s does not become a flood of fetches.
const REFETCH_AFTER: Duration = Duration::from_secs(60);

impl Authenticator {
    /// Loads the key set now: a configuration whose keys cannot be read is refused at startup
    /// (for a URL, the first fetch failing only delays serving: every call is refused until
    /// the keys arrive).
    pub async fn new(config: &AuthConfig) -> Result<Self, AuthError> {
        let source = match (&config.jwks_file, &config.jwks_url) {
            (Some(path), None) => KeySource::File(path.clone()),
            (None, Some(url)) => KeySource::Url(url.clone()),
            _ => {
                return Err(AuthError::Keys(
                    "`[auth]` needs exactly one of `jwks_file` and `jwks_url`".into(),
                ))
            }
        };
        let auth = Self {
            source,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway: config.leeway_seconds,
            ttl: Duration::from_secs(config.jwks_ttl_seconds),
            keys: RwLock::new(None),
            last_try: std::sync::Mutex::new(None),
            verified: VerifiedTokens::default(),
        };
        match auth.load().await {
            Ok(()) => {}
            Err(e) if matches!(auth.source, KeySource::Url(_)) => {
                tracing::warn!(error = %e, "cannot fetch the JWKS yet; calls are refused until it arrives");
            }
            Err(e) => return Err(e),
        }
        Ok(auth)
    }

    /// The `iss` every token must carry.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    async fn load(&self) -> Result<(), AuthError> {
        if let Ok(mut last) = self.last_try.lock() {
            *last = Some(Instant::now());
        }
        let text = match &self.source {
            KeySource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| AuthError::Keys(format!("cannot read `{}`: {e}", path.display())))?,
            KeySource::Url(url) => crate::client::get_text(url, crate::client::Bounds::JWKS)
                .await
                .map_err(|e| AuthError::Keys(format!("cannot fetch `{url}`: {e}")))?,
        };
        let set: JwkSet = serde_json::from_str(&text)
            .map_err(|e| AuthError::Keys(format!("not a JSON Web Key Set: {e}")))?;
        if let Ok(mut keys) = self.keys.write() {
            let generation = keys.as_ref().map_or(0, |k| k.generation + 1);
            *keys = Some(Keys {
                set,
                fetched: Instant::now(),
                generation,
            });
        }
        Ok(())
    }

    /// The key `kid` names, with the generation of the set it came from.
    fn find(&self, kid: Option<&str>) -> Option<(Jwk, u64)> {
        let keys = self.keys.read().ok()?;
        let keys = keys.as_ref()?;
        let jwk = match kid {
            Some(kid) => keys.set.find(kid).cloned(),
            // Without a `kid` only a single-key set is unambiguous.
            None if keys.set.keys.len() == 1 => keys.set.keys.first().cloned(),
            None => None,
        }?;
        Some((jwk, keys.generation))
    }

    /// Whether the keys may be fetched again now: not tried within `REFETCH_AFTER`, so a
    /// flood of unknown `kid`s or a failing issuer is not asked again at once.
    fn may_refetch(&self) -> bool {
        self.last_try
            .lock()
            .ok()
            .and_then(|t| *t)
            .is_none_or(|t| t.elapsed() >= REFETCH_AFTER.min(self.ttl))
    }

    fn generation(&self) -> Option<u64> {
        self.keys.read().ok()?.as_ref().map(|k| k.generation)
    }

    fn age(&self) -> Option<Duration> {
        self.keys
            .read()
            .ok()
            .and_then(|k| k.as_ref().map(|k| k.fetched.elapsed()))
    }

    /// Fetches the keys again when they are older than the TTL. A failed fetch keeps the
    /// keys there are (the issuer being down is no reason to refuse everyone), and says so.
    async fn refresh_if_old(&self) {
        let old = self.age().is_none_or(|age| age >= self.ttl);
        if old && self.may_refetch() {
            if let Err(e) = self.load().await {
                tracing::warn!(error = %e, "cannot refresh the JWKS; the keys held are used");
            }
        }
    }

    /// The caller's user id (`sub`), or why the token is refused.
    pub async fn verify(&self, authorization: Option<&str>) -> Result<String, AuthError> {
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        self.refresh_if_old().await;
        let now = unix_now();
        let leeway = i64::try_from(self.leeway).unwrap_or(i64::MAX);
        if let Some(sub) = self
            .generation()
            .and_then(|g| self.verified.lookup(token, g, now, leeway))
        {
            return Ok(sub);
        }
        let (claims, generation) = self.decode(token).await?;
        let audience_ok = match &claims.aud {
            Some(aud) => names_audience(aud, &self.audience),
            None => claims.client_id.as_deref() == Some(self.audience.as_str()),
        };
        if !audience_ok {
            return Err(AuthError::Invalid("wrong audience".into()));
        }
        self.keep(token, &claims, generation, now, leeway);
        Ok(claims.sub)
    }

    /// The subject of an ID token the web app's sign-in received from the issuer's token
    /// endpoint: signed by the issuer, for `client_id` (`aud`), carrying the `nonce` the
    /// sign-in sent (OpenID Connect Core 3.1.3.7).
    pub async fn verify_id_token(
        &self,
        token: &str,
        client_id: &str,
        nonce: &str,
    ) -> Result<String, AuthError> {
        self.refresh_if_old().await;
        let (claims, _) = self.decode(token).await?;
        if !claims
            .aud
            .as_ref()
            .is_some_and(|aud| names_audience(aud, client_id))
        {
            return Err(AuthError::Invalid(
                "the ID token is not for this client".into(),
            ));
        }
        if claims.nonce.as_deref() != Some(nonce) {
            return Err(AuthError::Invalid(
                "the ID token's nonce is not the sign-in's".into(),
            ));
        }
        Ok(claims.sub)
    }

    /// The claims of a token signed with a key of the issuer's set (asymmetric algorithms
    /// only), from the configured issuer, within its time window; with the key set's
    /// generation.
    async fn decode(&self, token: &str) -> Result<(Claims, u64), AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("unreadable header: {e}")))?;
        if !is_asymmetric(header.alg) {
            return Err(AuthError::Invalid(format!(
                "algorithm `{:?}` is not accepted",
                header.alg
            )));
        }
        let mut jwk = self.find(header.kid.as_deref());
        if jwk.is_none() && self.may_refetch() {
            // An unknown key: the issuer may have rotated since.
            self.load().await?;
            jwk = self.find(header.kid.as_deref());
        }
        let (jwk, generation) = jwk.ok_or_else(|| {
            AuthError::Invalid(format!(
                "no key `{}` in the issuer's key set",
                header.kid.as_deref().unwrap_or("(none)")
            ))
        })?;
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| AuthError::Keys(format!("unusable key: {e}")))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[self.issuer.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        // Checked by the callers: Cognito access tokens name the client in `client_id`.
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?
            .claims;
        if claims.sub.trim().is_empty() {
            return Err(AuthError::Invalid("empty `sub`".into()));
        }
        Ok((claims, generation))
    }

    /// Keeps a token just verified under key-set `generation`, when its time window is plain
    /// whole seconds (anything else is verified in full every time).
    fn keep(&self, token: &str, claims: &Claims, generation: u64, now: i64, leeway: i64) {
        let exp = claims.exp.as_ref().and_then(Value::as_i64);
        let nbf = match &claims.nbf {
            None => Some(None),
            Some(v) => v.as_i64().map(Some),
        };
        if let (Some(exp), Some(nbf)) = (exp, nbf) {
            let verified = Verified {
                sub: claims.sub.clone(),
                exp,
                nbf,
                generation,
            };
            self.verified.keep(token, verified, now, leeway);
        }
    }
}

/// Whether an `aud` claim (one string or a list) names `audience`.
fn names_audience(aud: &Value, audience: &str) -> bool {
    match aud {
        Value::String(a) => a == audience,
        Value::Array(list) => list.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

fn is_asymmetric(alg: Algorithm) -> bool {
    matches!(
        alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
            | Algorithm::ES256
            | Algorithm::ES384
            | Algorithm::EdDSA
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/jwt")
            .join(name)
    }

    fn authenticator() -> Authenticator {
        authenticator_over(fixture("jwks.json"), 3600)
    }

    fn authenticator_over(jwks_file: PathBuf, jwks_ttl_seconds: u64) -> Authenticator {
        let config = AuthConfig {
            jwks_file: Some(jwks_file),
            jwks_url: None,
            issuer: "iss".into(),
            audience: "aud".into(),
            leeway_seconds: 0,
            jwks_ttl_seconds,
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(Authenticator::new(&config))
            .expect("keys")
    }

    fn signed(claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
        header.kid = Some("tregov-test-1".into());
        let pem = std::fs::read(fixture("signing.pem")).expect("key");
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).expect("rsa key");
        jsonwebtoken::encode(&header, claims, &key).expect("token")
    }

    fn verify(auth: &Authenticator, token: &str) -> Result<String, AuthError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(auth.verify(Some(&format!("Bearer {token}"))))
    }

    fn now() -> i64 {
        unix_now()
    }

    #[test]
    fn a_token_not_valid_yet_is_refused_whether_nbf_is_a_number_or_a_string() {
        let auth = authenticator();
        let base = json!({"sub": "alice", "iss": "iss", "aud": "aud", "exp": now() + 600});
        assert_eq!(verify(&auth, &signed(&base)).expect("valid"), "alice");
        let mut later = base.clone();
        later["nbf"] = json!(now() + 3600);
        assert!(verify(&auth, &signed(&later)).is_err());
        // GHSA-h395-gr6q-cpjc: jsonwebtoken before 10.3 skipped the check for a string.
        later["nbf"] = json!((now() + 3600).to_string());
        assert!(verify(&auth, &signed(&later)).is_err());
    }

    #[test]
    fn a_token_seen_before_stops_working_once_its_key_leaves_the_issuers_set() {
        let dir = std::env::temp_dir().join(format!("tregov-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let jwks = dir.join("jwks.json");
        std::fs::copy(fixture("jwks.json"), &jwks).expect("copy");
        // A TTL of zero reloads the set on every call, as an hourly TTL does once an hour.
        let auth = authenticator_over(jwks.clone(), 0);
        let token =
            signed(&json!({"sub": "alice", "iss": "iss", "aud": "aud", "exp": now() + 600}));
        assert_eq!(verify(&auth, &token).expect("first"), "alice");
        assert_eq!(
            verify(&auth, &token).expect("again, from the kept answer"),
            "alice"
        );
        std::fs::write(&jwks, r#"{"keys": []}"#).expect("withdraw the key");
        let refused = verify(&auth, &token);
        std::fs::remove_dir_all(&dir).ok();
        assert!(
            refused.is_err(),
            "a withdrawn key's token was accepted: {refused:?}"
        );
    }

    #[test]
    fn a_token_kept_once_is_not_accepted_after_it_expires() {
        let auth = authenticator();
        let token =
            signed(&json!({"sub": "alice", "iss": "iss", "aud": "aud", "exp": now() + 600}));
        assert_eq!(verify(&auth, &token).expect("valid"), "alice");
        let generation = auth.generation().expect("keys");
        assert_eq!(
            auth.verified
                .lookup(&token, generation, now(), 0)
                .as_deref(),
            Some("alice")
        );
        assert_eq!(
            auth.verified.lookup(&token, generation, now() + 601, 0),
            None
        );
        let mut altered = token.clone();
        altered.push('x');
        assert!(
            verify(&auth, &altered).is_err(),
            "a token differing in one byte is checked in full"
        );
    }
}
