//! One engine shared by the threads of a server: each reader sees the store as it is now
//! (the engine is brought up to date with the store's change feed first), and a reloaded
//! policy set reaches every reader at once.

use std::sync::{Arc, RwLock, RwLockReadGuard};

use crate::decide::Engine;
use crate::error::{EngineError, Result};
use crate::policies::PolicyBundle;

#[derive(Clone)]
pub struct SharedEngine(Arc<RwLock<Engine>>);

impl SharedEngine {
    pub fn new(engine: Engine) -> Self {
        Self(Arc::new(RwLock::new(engine)))
    }

    /// The engine, brought up to date with the store first. Readers share the engine: only
    /// a change in the store since the last refresh takes the write lock, once.
    pub fn read(&self) -> Result<RwLockReadGuard<'_, Engine>> {
        {
            let engine = self.0.read().map_err(poisoned)?;
            if engine.is_current()? {
                return Ok(engine);
            }
        }
        self.0.write().map_err(poisoned)?.refresh()?;
        self.0.read().map_err(poisoned)
    }

    /// The engine, if it is current and no writer holds it, without waiting: what a caller
    /// on an async worker takes before it falls back to `read` on a blocking thread.
    pub fn try_read_current(&self) -> Option<RwLockReadGuard<'_, Engine>> {
        let engine = self.0.try_read().ok()?;
        matches!(engine.is_current(), Ok(true)).then_some(engine)
    }

    pub fn set_policies(&self, bundle: PolicyBundle) -> Result<()> {
        self.0.write().map_err(poisoned)?.set_policies(bundle)
    }
}

fn poisoned<E>(_: E) -> EngineError {
    EngineError::System("the engine lock was poisoned by an earlier panic".into())
}
