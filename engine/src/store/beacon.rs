//! The store's revision beacon: a 16-byte file beside the store that says, without a
//! database transaction, whether the entities may have changed since a revision.
//!
//! Every API decision asks whether its graph is still the store's; asking SQLite costs a
//! read transaction and its file locks (about a tenth of a decision's time through the API,
//! measured), while reading the beacon is one `pread`. The beacon only ever answers "nothing
//! changed since `revision`" or "ask the store":
//!
//! - a writer holds the beacon's lock across its whole write, marks it *writing* before the
//!   transaction and *settled at revision R* after the commit, so writers in any process are
//!   ordered and a settled mark is never older than a finished commit;
//! - a writer that dies between the two leaves *writing*, which sends every reader to the
//!   store until the next write settles it;
//! - a torn read (a write under way) is either a mark that sends the reader to the store, or
//!   the previous settled mark, read while the write it precedes has not been acknowledged
//!   to anyone: either way no reader is told "unchanged" about a change anyone was told of.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};

const FILE: &str = "store.revision";
const WRITING: u64 = 0;
const SETTLED: u64 = 1;

pub(super) struct Beacon {
    path: PathBuf,
    file: File,
}

/// Held by a writer from before its transaction to after its commit.
pub(super) struct Writing<'a> {
    beacon: &'a Beacon,
}

impl Beacon {
    pub(super) fn open(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| EngineError::io(&path, e))?;
        Ok(Self { path, file })
    }

    /// Whether the store is known, without asking it, to be still at `revision`; `false`
    /// means only "ask the store".
    pub(super) fn settled_at(&self, revision: u64) -> bool {
        let mut mark = [0u8; 16];
        match self.file.read_at(&mut mark, 0) {
            Ok(16) => decode(&mark) == (SETTLED, revision),
            _ => false,
        }
    }

    /// Locks the beacon and marks a write under way.
    pub(super) fn begin_write(&self) -> Result<Writing<'_>> {
        self.file
            .lock()
            .map_err(|e| EngineError::io(&self.path, e))?;
        let writing = Writing { beacon: self };
        self.mark(WRITING, 0)?;
        Ok(writing)
    }

    fn mark(&self, state: u64, revision: u64) -> Result<()> {
        self.file
            .write_all_at(&encode(state, revision), 0)
            .map_err(|e| EngineError::io(&self.path, e))
    }
}

impl Writing<'_> {
    /// Marks the store settled at `revision` (the write committed, or wrote nothing and the
    /// store is still there).
    pub(super) fn settle(self, revision: u64) -> Result<()> {
        self.beacon.mark(SETTLED, revision)
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        // Unsettled (a failed write) the mark stays `writing`: readers ask the store.
        let _ = self.beacon.file.unlock();
    }
}

fn encode(state: u64, revision: u64) -> [u8; 16] {
    let mut mark = [0u8; 16];
    mark[..8].copy_from_slice(&state.to_le_bytes());
    mark[8..].copy_from_slice(&revision.to_le_bytes());
    mark
}

fn decode(mark: &[u8; 16]) -> (u64, u64) {
    let mut state = [0u8; 8];
    let mut revision = [0u8; 8];
    state.copy_from_slice(&mark[..8]);
    revision.copy_from_slice(&mark[8..]);
    (u64::from_le_bytes(state), u64::from_le_bytes(revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_beacon_sends_readers_to_the_store() {
        let dir = tempfile::tempdir().expect("tmp");
        let beacon = Beacon::open(dir.path()).expect("beacon");
        assert!(!beacon.settled_at(0));
    }

    #[test]
    fn a_write_that_never_settles_sends_readers_to_the_store_until_the_next_one_does() {
        let dir = tempfile::tempdir().expect("tmp");
        let beacon = Beacon::open(dir.path()).expect("beacon");
        beacon
            .begin_write()
            .expect("write")
            .settle(3)
            .expect("settle");
        assert!(beacon.settled_at(3));
        drop(beacon.begin_write().expect("write"));
        assert!(!beacon.settled_at(3));
        let other = Beacon::open(dir.path()).expect("beacon");
        other
            .begin_write()
            .expect("write")
            .settle(4)
            .expect("settle");
        assert!(beacon.settled_at(4));
        assert!(!beacon.settled_at(3));
    }
}
