//! The governor's widening check, proved by the solver: the signatures for which a reloaded
//! set allows a request the running set denies.

use tregov_engine::collect::BoxFuture;
use tregov_engine::widening::{Widening, WideningCheck};
use tregov_engine::PolicyBundle;

use crate::SolverCommand;

pub struct SolverWidening {
    pub solver: SolverCommand,
}

impl WideningCheck for SolverWidening {
    fn widenings<'a>(
        &'a self,
        running: &'a PolicyBundle,
        proposed: &'a PolicyBundle,
    ) -> BoxFuture<'a, tregov_engine::Result<Vec<Widening>>> {
        Box::pin(async move {
            let solver = self.solver.start()?;
            let diff = crate::diff(running, proposed, solver).await?;
            Ok(diff
                .signatures
                .into_iter()
                .filter(|s| s.verdict.widens())
                .map(|s| Widening {
                    principal_type: s.principal_type,
                    action: s.action,
                    resource_type: s.resource_type,
                    example: s.widened.map(|e| e.text).unwrap_or_default(),
                })
                .collect())
        })
    }
}
