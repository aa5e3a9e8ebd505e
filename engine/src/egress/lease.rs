//! One effect runner per request at a time, across every process on a data directory (the
//! daemon's API and a `tregov serve` beside it): a lease in the store. A lease whose holder
//! is no longer running is taken over at once, so a crash never holds a request up; one held
//! longer than `MAX_HOLD_SECONDS` is taken over too (a hung holder). The work itself is
//! idempotent, so a takeover at worst repeats a copy; the lease keeps two runners from doing
//! one request's work side by side.

use rusqlite::{params, OptionalExtension};

use crate::error::{EngineError, Result};
use crate::store::Store;

pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS egress_leases (
    request TEXT PRIMARY KEY,
    -- `<pid>:<start time>`: a pid alone could be reused by another process.
    holder TEXT NOT NULL,
    expires INTEGER NOT NULL
);";

const MAX_HOLD_SECONDS: i64 = 3600;

/// This process as a lease holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    holder: String,
}

impl Lease {
    pub fn this_process() -> Self {
        let pid = std::process::id();
        Self {
            holder: format!("{pid}:{}", start_time(pid).unwrap_or_default()),
        }
    }

    #[cfg(test)]
    fn of(holder: &str) -> Self {
        Self {
            holder: holder.into(),
        }
    }

    /// Takes the lease on `request` at `now` (unix seconds) unless a live holder has it.
    pub fn acquire(&self, store: &Store, request: &str, now: i64) -> Result<bool> {
        store
            .with_conn_mut(|conn| {
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let held: Option<(String, i64)> = tx
                    .query_row(
                        "SELECT holder, expires FROM egress_leases WHERE request = ?1",
                        params![request],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                let free = match &held {
                    None => true,
                    Some((holder, expires)) => {
                        *holder == self.holder || *expires <= now || !is_running(holder)
                    }
                };
                if free {
                    if let Some((holder, _)) = held.filter(|(h, _)| *h != self.holder) {
                        tracing::warn!(request, holder = %holder, "taking over an egress lease whose holder stopped");
                    }
                    tx.execute(
                        "INSERT INTO egress_leases (request, holder, expires) VALUES (?1, ?2, ?3)
                         ON CONFLICT(request) DO UPDATE SET holder = excluded.holder, expires = excluded.expires",
                        params![request, self.holder, now + MAX_HOLD_SECONDS],
                    )?;
                }
                tx.commit()?;
                Ok(free)
            })
            .map_err(|e| store_err(store, e))
    }

    /// Gives the lease on `request` back, if this process holds it.
    pub fn release(&self, store: &Store, request: &str) -> Result<()> {
        store
            .with_conn_mut(|c| {
                c.execute(
                    "DELETE FROM egress_leases WHERE request = ?1 AND holder = ?2",
                    params![request, self.holder],
                )
            })
            .map(|_| ())
            .map_err(|e| store_err(store, e))
    }
}

fn store_err(store: &Store, e: rusqlite::Error) -> EngineError {
    EngineError::Store {
        path: store.path().display().to_string(),
        message: e.to_string(),
    }
}

/// The process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the holder `<pid>:<start>` is still running. Where `/proc` cannot tell, it is
/// taken to be (the lease then lapses only at its expiry).
fn is_running(holder: &str) -> bool {
    let Some((pid, start)) = holder.split_once(':') else {
        return true;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return true;
    };
    if !std::path::Path::new("/proc/self/stat").exists() {
        return true;
    }
    match start_time(pid) {
        None => false,
        Some(now) => start.is_empty() || now.to_string() == start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_holder_keeps_the_lease_until_it_releases_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let me = Lease::this_process();
        // A second live process: this test's parent shares no pid with us, so use our own
        // pid under another start time only for the dead case below.
        assert!(me.acquire(&store, "eg-1", 100).expect("acquire"));
        assert!(
            me.acquire(&store, "eg-1", 101).expect("re-acquire"),
            "the holder again"
        );
        let parent = Lease::of(&format!("{}:", std::os::unix::process::parent_id()));
        assert!(
            !parent.acquire(&store, "eg-1", 102).expect("acquire"),
            "held by a live process"
        );
        me.release(&store, "eg-1").expect("release");
        assert!(parent.acquire(&store, "eg-1", 103).expect("acquire"));
    }

    #[test]
    fn a_lease_whose_holder_stopped_or_that_lapsed_is_taken_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let pid = std::process::id();
        let gone = Lease::of(&format!("{pid}:1"));
        assert!(gone.acquire(&store, "eg-2", 100).expect("acquire"));
        let me = Lease::this_process();
        assert!(
            me.acquire(&store, "eg-2", 101).expect("acquire"),
            "a pid reused by another start"
        );
        let parent = Lease::of(&format!("{}:", std::os::unix::process::parent_id()));
        assert!(!parent.acquire(&store, "eg-2", 102).expect("acquire"));
        assert!(
            parent
                .acquire(&store, "eg-2", 101 + MAX_HOLD_SECONDS)
                .expect("acquire"),
            "lapsed"
        );
    }
}
