//! The log's append lock: one writer at a time, in this process (a mutex) and across
//! processes (an advisory lock on `LOCK`). The file stays open between writes, so taking the
//! lock costs a lock call, not an open and a close.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::error::{EngineError, Result};

pub(super) struct AppendLock {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

/// Held while the log is written or read whole; released when dropped.
pub(super) struct Locked<'a> {
    file: MutexGuard<'a, Option<File>>,
}

impl AppendLock {
    pub(super) fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("LOCK"),
            file: Mutex::default(),
        }
    }

    pub(super) fn lock(&self) -> Result<Locked<'_>> {
        // A panic while holding the lock left no state here: the file is only ever locked.
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if file.is_none() {
            let opened = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&self.path)
                .map_err(|e| EngineError::io(&self.path, e))?;
            *file = Some(opened);
        }
        if let Some(f) = file.as_ref() {
            f.lock().map_err(|e| EngineError::io(&self.path, e))?;
        }
        Ok(Locked { file })
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Some(f) = self.file.as_ref() {
            // Closing the file would release it too; an unlock that fails leaves it to that.
            if f.unlock().is_err() {
                *self.file = None;
            }
        }
    }
}
