//! Whether a new policy set allows anything the running one does not. The governor asks this
//! of every reload: a set that widens access waits for an IT admin's approval (a parked
//! `accept-policies` item, decided as plan items are) unless the deployment allows widening.
//! The answer comes from outside the engine (`tregov-analysis` proves it with Cedar's
//! symbolic compiler), so the engine stays free of the solver.

use std::sync::Arc;

use serde::Serialize;

use crate::collect::BoxFuture;
use crate::error::Result;
use crate::policies::PolicyBundle;

/// A request signature for which the new set allows more, with a request that shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Widening {
    pub principal_type: String,
    pub action: String,
    pub resource_type: String,
    /// A request (and its entities) the new set allows and the running one denies.
    pub example: String,
}

pub trait WideningCheck: Send + Sync {
    /// Every signature for which `proposed` allows a request `running` denies; an error
    /// when that cannot be known (the caller then treats the set as widening).
    fn widenings<'a>(
        &'a self,
        running: &'a PolicyBundle,
        proposed: &'a PolicyBundle,
    ) -> BoxFuture<'a, Result<Vec<Widening>>>;
}

/// What a reload does with a set that may widen access.
#[derive(Clone, Default)]
pub enum WideningGate {
    /// Adopt it (`[policies] allow_widening = true`, or no checker wired).
    #[default]
    Allow,
    /// Park it for an IT admin when the check finds a widening or cannot tell.
    Park(Arc<dyn WideningCheck>),
}

/// The parked item that holds back policy set `version`.
pub fn parked_item_id(version: &str) -> String {
    format!("{PARKED_PREFIX}{version}")
}

pub const PARKED_PREFIX: &str = "accept-policies:";
