//! Quarantined datasets: a dataset whose location lies outside every Lake Formation
//! registered location, or overlaps another dataset's, gets no grant (see `data_access`),
//! and its existing grants are revoked only once an admin approves: the facts that would
//! justify the revocation are the ones in doubt.

use super::{Change, Inputs, PlanItem};

/// Marks every revocation on a quarantined dataset as needing approval.
pub(super) fn hold_revocations(inputs: &Inputs, items: &mut [PlanItem]) {
    if inputs.actual.quarantined.is_empty() {
        return;
    }
    for item in items.iter_mut() {
        let Change::LfRevoke { resource, .. } = &item.change else {
            continue;
        };
        let Some(dataset) = inputs.index.by_resource.get(&resource.to_string()) else {
            continue;
        };
        if let Some(why) = inputs.actual.quarantined.get(dataset.id().unescaped()) {
            item.needs_approval = Some(format!(
                "dataset `{}` is quarantined: {why}",
                dataset.id().unescaped()
            ));
        }
    }
}
