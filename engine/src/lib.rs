//! tregov's pure core: the TRE entity store, Cedar decisions with explanations, and the
//! tamper-evident decision log. Nothing here talks to AWS.

pub mod decide;
pub mod egress;
pub mod entities;
pub mod error;
pub mod events;
pub mod explain;
pub mod log;
pub mod plan;
pub mod policies;
pub mod position;
pub mod store;
pub mod testfile;

pub use decide::{Decision, DecisionOutcome, Engine, PolicyError, RequestSpec};
pub use error::{EngineError, Result};
pub use policies::{PolicyBundle, PolicyMeta, PolicySource};
pub use store::{Store, StoreBatch};
