//! Grants on governed datasets to principals tregov does not govern: no decision can explain
//! them (the principal is no workspace role, so no policy was asked about it), so each is
//! revoked, unless the principal is protected (a data lake administrator, an ETL or crawler
//! role in `[datalake] protected_principals`, tregov's own role). Without this, a role that
//! is not a workspace role could be granted a study out of band and keep it.

use std::collections::BTreeSet;

use serde_json::Value;

use super::decider::item;
use super::{role_key, Change, Inputs, PlanItem};

/// Revokes of every grant on a governed dataset held by a principal that is neither governed
/// nor protected; with a `scope`, only those of principals in it.
pub(super) fn plan_foreign_grants(
    inputs: &Inputs,
    scope: Option<&BTreeSet<String>>,
) -> Vec<PlanItem> {
    let index = inputs.index;
    let mut items = Vec::new();
    for ((principal, resource_key), (held, grantable)) in &inputs.actual.lf {
        let Some(dataset) = index.by_resource.get(resource_key) else {
            continue;
        };
        if index.role_owners.contains_key(principal) || inputs.protected.contains(principal) {
            continue;
        }
        if let Some(scope) = scope {
            if !role_key(principal).is_some_and(|k| scope.contains(&k)) {
                continue;
            }
        }
        if held.is_empty() && grantable.is_empty() {
            continue;
        }
        let permissions: Vec<String> = held.iter().cloned().collect();
        let resource = serde_json::from_str(resource_key).unwrap_or(Value::Null);
        let reason = format!(
            "`{principal}` is not a workspace role tregov governs nor a protected principal: nothing explains its `{}` on dataset `{dataset}`",
            permissions.join(", ")
        );
        items.push(
            item(
                Change::LfRevoke {
                    principal: principal.clone(),
                    resource,
                    permissions,
                    permissions_with_grant_option: grantable.iter().cloned().collect(),
                },
                reason,
                Vec::new(),
            )
            .revoking(inputs.actual.revokes(principal, resource_key)),
        );
    }
    items
}

/// How many Lake Formation grants tregov governs: those of governed roles on anything, and
/// those of anyone not protected on a governed dataset. Counted over the whole TRE, scoped
/// plan or not, so a limit means the same on the fast path.
pub(super) fn governed_grants(inputs: &Inputs) -> u64 {
    let index = inputs.index;
    inputs
        .actual
        .lf
        .iter()
        .filter(|((principal, resource), (held, _))| {
            !held.is_empty()
                && !inputs.protected.contains(principal)
                && (index.role_owners.contains_key(principal)
                    || index.by_resource.contains_key(resource))
        })
        .count() as u64
}
