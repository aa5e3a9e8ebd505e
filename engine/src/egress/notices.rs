//! Notifications of egress transitions, on their way out.
//!
//! A notification is written in the transition's own transaction and sent afterwards by
//! whoever claims it, so a deleted topic, throttling or an oversized message never holds up
//! the files, and a crash never loses one. A failed send is tried again with backoff; after
//! `MAX_SENDS` it is kept as `dead` (listed, and counted in the metrics) rather than retried
//! for ever.

use rusqlite::{params, Connection, OptionalExtension};

use super::{Effect, EgressRequest, Status};
use crate::error::{EngineError, Result};
use crate::store::Store;

pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS egress_notices (
    id INTEGER PRIMARY KEY,
    request TEXT NOT NULL,
    -- A role id or a user id: the `audience` message attribute subscriptions filter on.
    audience TEXT NOT NULL,
    subject TEXT NOT NULL,
    message TEXT NOT NULL,
    sends INTEGER NOT NULL DEFAULT 0,
    -- Unix seconds: not sent before this, and not by another sender while it is claimed.
    not_before INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    state TEXT NOT NULL DEFAULT 'pending'
);
CREATE INDEX IF NOT EXISTS egress_notices_due ON egress_notices(state, not_before);";

/// Sends before a notification is given up on (with backoff, about a day).
pub const MAX_SENDS: i64 = 20;
/// How long a sender holds a claimed notification before another may take it.
const CLAIM_SECONDS: i64 = 300;
/// SNS subjects stop at 100 characters.
const MAX_SUBJECT_CHARS: usize = 100;
/// Far below SNS's 256 KB message limit, whatever the request carries.
const MAX_MESSAGE_CHARS: usize = 16 * 1024;

/// One notification to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The outbox row (0 until stored).
    pub id: i64,
    pub request: String,
    pub audience: String,
    pub subject: String,
    pub message: String,
}

impl Notice {
    fn new(request: &EgressRequest, audience: &str, subject: String, message: String) -> Self {
        Self {
            id: 0,
            request: request.id.clone(),
            audience: audience.to_string(),
            subject: cut(&subject, MAX_SUBJECT_CHARS),
            message: cut(&message, MAX_MESSAGE_CHARS),
        }
    }

    /// What finishing `effect` tells whom.
    pub fn after(request: &EgressRequest, effect: Effect) -> Vec<Notice> {
        let (id, ws, files) = (&request.id, &request.workspace, request.objects.len());
        match effect {
            Effect::Stage | Effect::NotifyStep => request
                .current_role()
                .map(|role| {
                    Notice::new(
                        request,
                        role,
                        format!("egress request {id} awaits review"),
                        format!(
                            "Egress request {id} (workspace {ws}, {files} file(s)) awaits review at step {} ({role}).",
                            request.current_step
                        ),
                    )
                })
                .into_iter()
                .collect(),
            Effect::Publish => vec![Notice::new(
                request,
                &request.requester,
                format!("egress request {id} approved"),
                format!("Your egress request {id} for workspace {ws} was approved at every step; {files} file(s) are ready."),
            )],
            Effect::Unstage => {
                let (subject, message) = match request.status {
                    Status::Withdrawn => (
                        format!("egress request {id} withdrawn"),
                        format!("Egress request {id} for workspace {ws} was withdrawn; its staged copies are removed."),
                    ),
                    Status::Closed => (
                        format!("egress request {id} closed"),
                        format!("Egress request {id} for workspace {ws} was closed by an IT admin after its S3 work failed; you may submit again."),
                    ),
                    _ => {
                        let reason = request.reviews.last().and_then(|r| r.reason.as_deref()).unwrap_or_default();
                        (
                            format!("egress request {id} rejected"),
                            format!("Your egress request {id} for workspace {ws} was rejected: {reason}. You may resubmit."),
                        )
                    }
                };
                vec![Notice::new(request, &request.requester, subject, message)]
            }
        }
    }

    /// The alert to IT admins that `effect` failed for good.
    pub fn failed(request: &EgressRequest, effect: Effect) -> Notice {
        Notice::new(
            request,
            "ITAdmin",
            format!("egress request {} FAILED", request.id),
            format!(
                "The {} work of egress request {} (workspace {}) failed {} times; last error: {}. Retry or close it: `tregov egress retry {}` or `tregov egress close {}`.",
                effect.as_str(),
                request.id,
                request.workspace,
                request.attempts,
                request.last_error.as_deref().unwrap_or("unknown"),
                request.id,
                request.id
            ),
        )
    }
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// Puts `notice` in the outbox inside the transition's transaction `tx`.
pub(crate) fn put(tx: &Connection, notice: &Notice) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO egress_notices (request, audience, subject, message) VALUES (?1, ?2, ?3, ?4)",
        params![
            notice.request,
            notice.audience,
            notice.subject,
            notice.message
        ],
    )
    .map(|_| ())
}

fn store_err(store: &Store) -> impl Fn(rusqlite::Error) -> EngineError + '_ {
    move |e| EngineError::Store {
        path: store.path().display().to_string(),
        message: e.to_string(),
    }
}

/// Claims the next notification due at `now` (unix seconds), if any: no other sender takes
/// it for `CLAIM_SECONDS`, and a sender that crashes leaves it to be sent again after that.
pub fn claim_next(store: &Store, now: i64) -> Result<Option<Notice>> {
    store
        .with_conn_mut(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let next = tx
                .query_row(
                    "SELECT id, request, audience, subject, message FROM egress_notices
                     WHERE state = 'pending' AND not_before <= ?1 ORDER BY id LIMIT 1",
                    params![now],
                    |r| {
                        Ok(Notice {
                            id: r.get(0)?,
                            request: r.get(1)?,
                            audience: r.get(2)?,
                            subject: r.get(3)?,
                            message: r.get(4)?,
                        })
                    },
                )
                .optional()?;
            if let Some(n) = &next {
                tx.execute(
                    "UPDATE egress_notices SET not_before = ?2 WHERE id = ?1",
                    params![n.id, now + CLAIM_SECONDS],
                )?;
            }
            tx.commit()?;
            Ok(next)
        })
        .map_err(store_err(store))
}

/// The notification was sent: it leaves the outbox.
pub fn sent(store: &Store, id: i64) -> Result<()> {
    store
        .with_conn_mut(|c| c.execute("DELETE FROM egress_notices WHERE id = ?1", params![id]))
        .map(|_| ())
        .map_err(store_err(store))
}

/// A send failed at `now`: tried again after a backoff (30 s doubling, at most an hour), or
/// kept as `dead` after `MAX_SENDS`.
pub fn failed(store: &Store, id: i64, error: &str, now: i64) -> Result<()> {
    let error = cut(error, 1000);
    store
        .with_conn_mut(|c| {
            c.execute(
                "UPDATE egress_notices SET
                   sends = sends + 1,
                   last_error = ?2,
                   not_before = ?3 + min(3600, 30 * (1 << min(sends, 7))),
                   state = CASE WHEN sends + 1 >= ?4 THEN 'dead' ELSE 'pending' END
                 WHERE id = ?1",
                params![id, error, now, MAX_SENDS],
            )
        })
        .map(|_| ())
        .map_err(store_err(store))
}

/// Notifications given up on, oldest first: `(request, audience, subject, last error)`.
pub fn dead(store: &Store) -> Result<Vec<(String, String, String, String)>> {
    store
        .with_conn(|c| {
            c.prepare(
                "SELECT request, audience, subject, coalesce(last_error, '') FROM egress_notices
                 WHERE state = 'dead' ORDER BY id",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect()
        })
        .map_err(store_err(store))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        (dir, store)
    }

    fn notice(request: &str) -> Notice {
        Notice {
            id: 0,
            request: request.into(),
            audience: "ITAdmin".into(),
            subject: "s".into(),
            message: "m".into(),
        }
    }

    #[test]
    fn a_claimed_notice_is_not_claimed_again_until_its_claim_lapses() {
        let (_dir, store) = store();
        store
            .with_conn_mut(|c| put(c, &notice("eg-1")))
            .expect("put");
        let first = claim_next(&store, 1000).expect("claim").expect("due");
        assert!(claim_next(&store, 1001).expect("claim").is_none());
        let again = claim_next(&store, 1000 + CLAIM_SECONDS).expect("claim");
        assert_eq!(
            again.map(|n| n.id),
            Some(first.id),
            "a crashed sender's notice is sent again"
        );
        sent(&store, first.id).expect("sent");
        assert!(claim_next(&store, 99_999).expect("claim").is_none());
    }

    #[test]
    fn a_notice_that_keeps_failing_backs_off_and_is_kept_as_dead() {
        let (_dir, store) = store();
        store
            .with_conn_mut(|c| put(c, &notice("eg-2")))
            .expect("put");
        let mut now = 0;
        for _ in 0..MAX_SENDS {
            let n = claim_next(&store, now).expect("claim").expect("due");
            failed(&store, n.id, "topic does not exist", now).expect("failed");
            assert!(
                claim_next(&store, now + 29).expect("claim").is_none(),
                "backs off"
            );
            now += 3600;
        }
        assert!(claim_next(&store, now * 2).expect("claim").is_none());
        let dead = dead(&store).expect("dead");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].3, "topic does not exist");
    }

    #[test]
    fn subjects_and_messages_are_cut_to_what_sns_takes() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "ab…");
        assert!(cut(&"x".repeat(300_000), MAX_MESSAGE_CHARS).len() < 256 * 1024);
    }
}
