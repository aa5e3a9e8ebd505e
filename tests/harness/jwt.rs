//! Tokens as the TRE's identity provider would sign them, with the test-only keys in
//! `tests/fixtures/jwt/` (they protect nothing: never configure them outside tests).

use std::path::PathBuf;

use serde_json::json;

use crate::workspace_root;

/// What every test token carries and every test `[auth]` section expects.
pub const ISSUER: &str = "https://cognito-idp.eu-west-2.amazonaws.com/eu-west-2_tregovtest";
pub const AUDIENCE: &str = "tregov-egress-app";

pub fn fixture(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures/jwt").join(name)
}

/// `[auth]` accepting the test tokens.
pub fn auth_section() -> String {
    format!(
        "[auth]\njwks_file = \"{}\"\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n",
        fixture("jwks.json").display()
    )
}

/// A token signed with `key`, for `sub`, valid for `exp` seconds from now.
pub fn token_with(key: &str, sub: &str, audience: &str, exp: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("tregov-test-1".into());
    let pem = std::fs::read(fixture(key)).expect("key");
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).expect("rsa key");
    jsonwebtoken::encode(
        &header,
        &json!({"sub": sub, "iss": ISSUER, "aud": audience, "iat": now, "exp": now + exp, "token_use": "id"}),
        &key,
    )
    .expect("token")
}

/// A valid token for `sub`.
pub fn token(sub: &str) -> String {
    token_with("signing.pem", sub, AUDIENCE, 600)
}
