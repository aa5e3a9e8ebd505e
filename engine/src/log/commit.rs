//! Group commit: callers appending at the same time share one write and one fsync.
//!
//! The first caller to find no write under way leads: it takes every batch queued so far
//! (its own among them), writes them as one append and hands each caller its sequence
//! numbers, or the error, before it returns. Callers that queued meanwhile wait for their
//! answer; when the leader is done one of them leads the next write. No caller returns
//! before its records are durable, and no caller is answered with another's error unless
//! the write they shared failed.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, MutexGuard};

use super::LogRecord;
use crate::error::Result;

/// Sequence numbers per batch, or why the write that held the batch failed.
type Answer = std::result::Result<Vec<u64>, String>;

#[derive(Default)]
pub(super) struct GroupCommit {
    state: Mutex<State>,
    answered: Condvar,
}

#[derive(Default)]
struct State {
    queue: Vec<(u64, Vec<LogRecord>)>,
    next_ticket: u64,
    leading: bool,
    answers: HashMap<u64, Answer>,
}

impl GroupCommit {
    /// Appends `records` through `write`, which is given every batch queued and returns the
    /// sequence numbers of each, in order. The leader's own error comes back as it was; the
    /// callers it wrote for get its message.
    pub(super) fn append(
        &self,
        records: Vec<LogRecord>,
        write: impl Fn(Vec<Vec<LogRecord>>) -> Result<Vec<Vec<u64>>>,
        failed: impl Fn(String) -> crate::error::EngineError,
    ) -> Result<Vec<u64>> {
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push((ticket, records));
        while state.leading {
            state = self.answered.wait(state).unwrap_or_else(|p| p.into_inner());
            if let Some(answer) = state.answers.remove(&ticket) {
                return answer.map_err(failed);
            }
        }
        state.leading = true;
        let (tickets, batches): (Vec<u64>, Vec<Vec<LogRecord>>) =
            std::mem::take(&mut state.queue).into_iter().unzip();
        drop(state);

        // A panic in the write must not leave the others waiting for a leader that is gone.
        let written = catch_unwind(AssertUnwindSafe(|| write(batches)))
            .unwrap_or_else(|_| Err(failed("the log writer panicked".into())));
        let mut state = self.lock();
        let own = match written {
            Ok(seqs) => {
                let mut own = Vec::new();
                for (t, s) in tickets.into_iter().zip(seqs) {
                    if t == ticket {
                        own = s;
                    } else {
                        state.answers.insert(t, Ok(s));
                    }
                }
                Ok(own)
            }
            Err(e) => {
                let message = e.to_string();
                for t in tickets.into_iter().filter(|t| *t != ticket) {
                    state.answers.insert(t, Err(message.clone()));
                }
                Err(e)
            }
        };
        state.leading = false;
        self.answered.notify_all();
        own
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent between every statement that touches it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
