//! Appending the API's decision records: one writer thread takes every record queued while
//! it was writing and appends them as one batch with one fsync, and each request awaits its
//! own sequence numbers. A request never holds a thread while its record is written, so a
//! fsync is shared by however many requests arrived during the last one, and no request is
//! answered before its record is durable. `HEAD` trails the records while requests keep
//! coming and is brought up to them once the writer has been idle for `HEAD_LAG`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, RecvTimeoutError};

use tokio::sync::oneshot;
use tregov_engine::log::{LogRecord, HEAD_LAG};
use tregov_engine::shared::SharedEngine;

/// Requests whose records go into one append at most: a bound on one write's size.
const MOST_JOBS: usize = 4096;

type Written = Result<Vec<u64>, String>;

struct Job {
    records: Vec<LogRecord>,
    done: oneshot::Sender<Written>,
}

pub(crate) struct Committer {
    jobs: mpsc::Sender<Job>,
}

impl Committer {
    /// Starts the writer over `engine`'s decision log. It stops when the committer is
    /// dropped.
    pub(crate) fn start(engine: SharedEngine) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("tregov-log-writer".into())
            .spawn(move || write_until_closed(&engine, &queue))?;
        Ok(Self { jobs })
    }

    /// Appends `records` and returns their sequence numbers once they are durable.
    pub(crate) async fn append(&self, records: Vec<LogRecord>) -> Written {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let (done, written) = oneshot::channel();
        self.jobs
            .send(Job { records, done })
            .map_err(|_| "the log writer has stopped".to_string())?;
        written
            .await
            .map_err(|_| "the log writer stopped before answering".to_string())?
    }
}

fn write_until_closed(engine: &SharedEngine, queue: &mpsc::Receiver<Job>) {
    loop {
        let first = match queue.recv_timeout(HEAD_LAG) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                catch_up_head(engine);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                catch_up_head(engine);
                break;
            }
        };
        let mut jobs = vec![first];
        jobs.extend(queue.try_iter().take(MOST_JOBS - 1));
        let sizes: Vec<usize> = jobs.iter().map(|j| j.records.len()).collect();
        let (records, answers): (Vec<Vec<LogRecord>>, Vec<_>) =
            jobs.into_iter().map(|j| (j.records, j.done)).unzip();
        // A panic in one write must not stop the writer: every later request would fail.
        let written = catch_unwind(AssertUnwindSafe(|| append(engine, records)))
            .unwrap_or_else(|_| Err("the log writer panicked".into()));
        tracing::trace!(
            requests = sizes.len(),
            "appended a batch of decision records"
        );
        match written {
            Ok(seqs) => {
                let mut seqs = seqs.into_iter();
                for (n, done) in sizes.into_iter().zip(answers) {
                    // A request that gave up waiting is not there to answer.
                    let _ = done.send(Ok(seqs.by_ref().take(n).collect()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot append decision records");
                for done in answers {
                    let _ = done.send(Err(e.clone()));
                }
            }
        }
    }
}

fn append(engine: &SharedEngine, records: Vec<Vec<LogRecord>>) -> Written {
    let engine = engine.read().map_err(|e| e.to_string())?;
    match engine.log() {
        Some(log) => log
            .append_trailing_head(records.into_iter().flatten().collect())
            .map_err(|e| e.to_string()),
        None => Ok(Vec::new()),
    }
}

fn catch_up_head(engine: &SharedEngine) {
    let caught_up = match engine.read() {
        Ok(engine) => engine.log().map_or(Ok(()), |log| log.catch_up_head()),
        Err(e) => Err(e),
    };
    if let Err(e) = caught_up {
        tracing::warn!(error = %e, "cannot bring HEAD up to the log's last record");
    }
}
