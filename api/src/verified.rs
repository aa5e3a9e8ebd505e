//! Tokens already verified, so a caller that sends the same token again is not put through
//! the signature check again.
//!
//! What a verification decides from the token alone — its signature under a key of the set
//! held, its issuer, audience and subject — cannot change while the token's exact text and
//! the key set stay the same; only time can make it wrong, through `exp` and `nbf`. So an
//! entry is the token's full text (never a hash of it: no other token can match), the caller
//! it names, its time window and the generation of the key set it was checked against. A
//! lookup answers only inside that window and under the same generation: every load of the
//! key set starts a new one, so a key withdrawn from the issuer's set stops every token it
//! signed at the next refresh, as it does without the cache. Memory is bounded by a count.

use std::collections::HashMap;
use std::sync::RwLock;

/// How many tokens are held at most; past it, expired ones go first, then all of them.
const CAPACITY: usize = 16_384;

/// What a verified token established.
#[derive(Clone, Debug)]
pub(crate) struct Verified {
    pub sub: String,
    /// `exp` and `nbf` in seconds since the epoch (`nbf` absent when the token has none).
    pub exp: i64,
    pub nbf: Option<i64>,
    /// The key set's generation the signature was checked under.
    pub generation: u64,
}

#[derive(Default)]
pub(crate) struct VerifiedTokens {
    held: RwLock<HashMap<Box<str>, Verified>>,
}

impl VerifiedTokens {
    /// The caller `token` names, if it was verified under key-set `generation` and is valid
    /// at `now` (seconds since the epoch) with `leeway` seconds either way, as the full check
    /// would judge it.
    pub(crate) fn lookup(
        &self,
        token: &str,
        generation: u64,
        now: i64,
        leeway: i64,
    ) -> Option<String> {
        let held = self.held.read().ok()?;
        let v = held.get(token)?;
        let in_window = now - leeway <= v.exp && v.nbf.is_none_or(|nbf| nbf <= now + leeway);
        (v.generation == generation && in_window).then(|| v.sub.clone())
    }

    pub(crate) fn keep(&self, token: &str, verified: Verified, now: i64, leeway: i64) {
        let Ok(mut held) = self.held.write() else {
            return;
        };
        if held.len() >= CAPACITY {
            held.retain(|_, v| now - leeway <= v.exp && v.generation == verified.generation);
            if held.len() >= CAPACITY {
                held.clear();
            }
        }
        held.insert(token.into(), verified);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.held.read().map(|h| h.len()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice(exp: i64, nbf: Option<i64>, generation: u64) -> Verified {
        Verified {
            sub: "alice".into(),
            exp,
            nbf,
            generation,
        }
    }

    #[test]
    fn a_kept_token_answers_only_inside_its_window_and_under_its_key_generation() {
        let tokens = VerifiedTokens::default();
        tokens.keep("t", alice(1_000, Some(500), 3), 600, 0);
        assert_eq!(tokens.lookup("t", 3, 600, 0).as_deref(), Some("alice"));
        assert_eq!(tokens.lookup("t", 3, 1_000, 0).as_deref(), Some("alice"));
        assert_eq!(tokens.lookup("t", 3, 1_001, 0), None, "expired");
        assert_eq!(tokens.lookup("t", 3, 499, 0), None, "not valid yet");
        assert_eq!(
            tokens.lookup("t", 3, 1_010, 10).as_deref(),
            Some("alice"),
            "leeway"
        );
        assert_eq!(
            tokens.lookup("t", 4, 600, 0),
            None,
            "the key set was reloaded"
        );
        assert_eq!(tokens.lookup("u", 3, 600, 0), None, "another token");
        assert_eq!(
            tokens.lookup("t2", 3, 600, 0),
            None,
            "a token that only starts alike"
        );
    }

    #[test]
    fn a_full_cache_drops_expired_tokens_first_and_never_grows_past_its_capacity() {
        let tokens = VerifiedTokens::default();
        for i in 0..CAPACITY {
            let exp = if i % 2 == 0 { 100 } else { 10_000 };
            tokens.keep(&format!("t{i}"), alice(exp, None, 1), 50, 0);
        }
        tokens.keep("fresh", alice(10_000, None, 1), 200, 0);
        assert_eq!(tokens.len(), CAPACITY / 2 + 1);
        assert_eq!(tokens.lookup("t1", 1, 200, 0).as_deref(), Some("alice"));
        for i in 0..CAPACITY {
            tokens.keep(&format!("n{i}"), alice(10_000, None, 1), 200, 0);
        }
        assert!(tokens.len() <= CAPACITY);
    }
}
