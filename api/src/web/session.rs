//! Signed-in sessions, held by the server. The browser holds only a random 256-bit id in an
//! HttpOnly, SameSite=Strict cookie (Secure over TLS); the server keeps a hash of it, so a
//! copy of the session table opens no session. A session ends when it is idle for the idle
//! timeout, at the absolute timeout after sign-in, or at sign-out. Each session has its own
//! CSRF token, which every form carries.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// The session cookie's name. `__Host-` (over TLS) pins it to this origin, path `/`.
pub(crate) fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-tregov-session"
    } else {
        "tregov-session"
    }
}

/// A signed-in person, as a page sees them.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub user: String,
    pub csrf: String,
}

struct Held {
    session: Session,
    signed_in: Instant,
    last_seen: Instant,
}

/// Why a cookie opens no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoSession {
    /// No cookie, or one the server never issued (or forgot at a restart).
    Missing,
    /// It was a session, ended by a timeout.
    Expired,
}

pub(crate) struct Sessions {
    held: Mutex<HashMap<[u8; 32], Held>>,
    idle: Duration,
    absolute: Duration,
    max: usize,
    random: SystemRandom,
}

impl Sessions {
    pub(crate) fn new(idle: Duration, absolute: Duration, max: usize) -> Self {
        Self {
            held: Mutex::new(HashMap::new()),
            idle,
            absolute,
            max,
            random: SystemRandom::new(),
        }
    }

    /// A fresh random token (256 bits, base64url), for session ids, CSRF tokens, OAuth
    /// `state`, `nonce` and PKCE verifiers.
    pub(crate) fn token(&self) -> Option<String> {
        let mut bytes = [0u8; 32];
        self.random.fill(&mut bytes).ok()?;
        Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Starts a session for `user`; returns the cookie value.
    pub(crate) fn start(&self, user: &str) -> Option<String> {
        let id = self.token()?;
        let csrf = self.token()?;
        let now = Instant::now();
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.len() >= self.max {
            self.forget_ended(&mut held, now);
        }
        if held.len() >= self.max {
            // The least recently used session makes room.
            if let Some(oldest) = held
                .iter()
                .min_by_key(|(_, h)| h.last_seen)
                .map(|(k, _)| *k)
            {
                held.remove(&oldest);
            }
        }
        held.insert(
            digest(&id),
            Held {
                session: Session {
                    user: user.to_string(),
                    csrf,
                },
                signed_in: now,
                last_seen: now,
            },
        );
        Some(id)
    }

    /// The session `cookie` opens, marked as used now.
    pub(crate) fn touch(&self, cookie: Option<&str>) -> Result<Session, NoSession> {
        let cookie = cookie.ok_or(NoSession::Missing)?;
        let key = digest(cookie);
        let now = Instant::now();
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let entry = held.get_mut(&key).ok_or(NoSession::Missing)?;
        if self.ended(entry, now) {
            held.remove(&key);
            return Err(NoSession::Expired);
        }
        entry.last_seen = now;
        Ok(entry.session.clone())
    }

    /// Ends the session `cookie` opens, if any.
    pub(crate) fn end(&self, cookie: Option<&str>) {
        if let Some(cookie) = cookie {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            held.remove(&digest(cookie));
        }
    }

    fn ended(&self, held: &Held, now: Instant) -> bool {
        now.duration_since(held.last_seen) >= self.idle
            || now.duration_since(held.signed_in) >= self.absolute
    }

    fn forget_ended(&self, held: &mut HashMap<[u8; 32], Held>, now: Instant) {
        held.retain(|_, h| !self.ended(h, now));
    }
}

fn digest(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    // Tokens are fixed-length; a length difference says nothing about the secret.
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

/// The value of cookie `name` in a `Cookie` header.
pub(crate) fn cookie<'h>(headers: &'h axum::http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(idle_ms: u64, absolute_ms: u64) -> Sessions {
        Sessions::new(
            Duration::from_millis(idle_ms),
            Duration::from_millis(absolute_ms),
            2,
        )
    }

    #[test]
    fn a_session_opens_with_its_cookie_only() {
        let s = sessions(60_000, 60_000);
        let id = s.start("carol").expect("random");
        assert_eq!(s.touch(Some(&id)).expect("open").user, "carol");
        assert_eq!(s.touch(Some("forged")).err(), Some(NoSession::Missing));
        assert_eq!(s.touch(None).err(), Some(NoSession::Missing));
        s.end(Some(&id));
        assert_eq!(s.touch(Some(&id)).err(), Some(NoSession::Missing));
    }

    #[test]
    fn an_idle_session_expires_and_says_so() {
        let s = sessions(20, 60_000);
        let id = s.start("carol").expect("random");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(s.touch(Some(&id)).err(), Some(NoSession::Expired));
    }

    #[test]
    fn a_busy_session_still_ends_at_the_absolute_timeout() {
        let s = sessions(60_000, 50);
        let id = s.start("carol").expect("random");
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(10));
            assert!(s.touch(Some(&id)).is_ok());
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(s.touch(Some(&id)).err(), Some(NoSession::Expired));
    }

    #[test]
    fn beyond_the_limit_the_least_recently_used_session_goes() {
        let s = sessions(60_000, 60_000);
        let first = s.start("a").expect("random");
        let second = s.start("b").expect("random");
        std::thread::sleep(Duration::from_millis(2));
        assert!(s.touch(Some(&first)).is_ok());
        let third = s.start("c").expect("random");
        assert!(s.touch(Some(&first)).is_ok());
        assert!(s.touch(Some(&second)).is_err());
        assert!(s.touch(Some(&third)).is_ok());
    }

    #[test]
    fn a_cookie_is_found_among_others() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            "cookie",
            "a=1; tregov-session=xyz; b=2".parse().expect("header"),
        );
        assert_eq!(cookie(&headers, "tregov-session"), Some("xyz"));
        assert_eq!(cookie(&headers, "missing"), None);
    }
}
