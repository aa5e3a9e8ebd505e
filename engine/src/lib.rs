//! tregov's pure core: the TRE entity store, Cedar decisions with explanations, and the
//! tamper-evident decision log. Nothing here talks to AWS.

pub mod access_facts;
pub mod anchor;
pub mod approval;
pub mod breakglass;
pub mod cache;
pub mod clock;
pub mod collect;
pub mod decide;
pub mod demo;
pub mod egress;
pub mod enforce;
pub mod entities;
pub mod error;
pub mod events;
pub mod exemptions;
pub mod explain;
mod fast;
pub mod governor;
pub mod graph;
pub mod labels;
pub mod log;
pub mod memberships;
pub mod metrics;
mod parsed;
pub mod plan;
pub mod policies;
pub mod policy_gate;
pub mod position;
pub mod reconcile;
mod rendered;
pub mod replay;
pub mod reviews;
pub mod safety;
pub mod shared;
pub mod store;
pub mod testfile;
pub mod workflow;
mod working_set;

pub use decide::{Decision, DecisionOutcome, Engine, PolicyError, RequestSpec};
pub use error::{EngineError, Result};
pub use policies::{PolicyBundle, PolicyMeta, PolicySource};
pub use store::{Store, StoreBatch};
