//! Data access, one governed role at a time: the datasets its owners may use, the Lake
//! Formation grants and revokes that make its permissions match, and its S3 inline policy.
//! The roles are shared out over the cores, each worker with its own `Decider`; a role whose
//! inputs have not changed since the last plan keeps its part of it (see `memo`).

use std::collections::BTreeSet;
use std::sync::Arc;

use cedar_policy::EntityUid;

use crate::entities::EntityGraph;
use serde_json::{json, Value};

use super::actual::ActualState;
use super::decider::{item, materialize, Decider, Verdict};
use super::index::{Dataset, FastMap, GraphIndex};
use super::memo::{PlanMemo, Reads, RoleMemo, RolePart};
use super::s3::{json_len, narrows, s3_statements, IAM_INLINE_POLICY_LIMIT};
use super::{
    role_key, role_parts, Change, Inputs, Justification, PlanItem, Revokes, DATA_ACCESS_POLICY,
    READ_PERMISSIONS,
};

/// A governed role and the owners of its live workspaces.
#[derive(Clone, Copy)]
struct Role<'r> {
    arn: &'r String,
    owners: &'r BTreeSet<EntityUid>,
}

/// Per dataset the role's owners may read, sorted by dataset, each once: the access.
type Desired<'a> = Vec<(&'a EntityUid, Access<'a>)>;

/// What a role's owners may do with one dataset, and the decisions that say so.
struct Access<'a> {
    /// The dataset as indexed (`None` for a uid the index does not hold).
    dataset: Option<&'a Dataset>,
    write: bool,
    why: Vec<Arc<Verdict>>,
}

/// Per resource: the permissions wanted, the decisions behind them, the dataset (its uid
/// and as indexed).
struct Wanted<'d> {
    /// Sorted, as a grant lists them.
    perms: &'static [&'static str],
    why: &'d [Arc<Verdict>],
    dataset: &'d EntityUid,
    indexed: &'d Dataset,
}

/// What one worker planned: its items, how many decisions it took, its warnings, and the
/// parts of the roles it planned afresh, to remember.
#[derive(Default)]
struct WorkerOutput {
    items: Vec<PlanItem>,
    decisions: u64,
    warnings: Vec<String>,
    remembered: Vec<(String, RoleMemo)>,
    /// Roles whose remembered part was kept, and roles planned afresh.
    reused: u64,
    planned: u64,
}

/// Plans data access for every governed role in `scope` (all of them without one), adding
/// the workers' decision counts and warnings to `decider`'s. `memo` has caught up with
/// what changed since the last plan.
pub(super) fn plan_data_access(
    inputs: &Inputs,
    scope: Option<&BTreeSet<String>>,
    memo: &mut PlanMemo,
    decider: &mut Decider,
) -> Vec<PlanItem> {
    let roles: Vec<Role> = inputs
        .index
        .role_owners
        .iter()
        .filter(|(role, _)| scope.is_none_or(|s| role_key(role).is_some_and(|k| s.contains(&k))))
        .map(|(arn, owners)| Role { arn, owners })
        .collect();
    let planner = RolePlanner::new(inputs, memo);
    let parts = fan_out(decider, &planner, &roles);
    let mut items = Vec::new();
    for part in parts {
        items.extend(part.items);
        decider.count += part.decisions;
        decider.warnings.extend(part.warnings);
        memo.count(part.reused, part.planned);
        for (arn, remembered) in part.remembered {
            memo.keep(arn, remembered);
        }
    }
    if scope.is_none() {
        memo.retain_roles(&inputs.index.role_owners);
    }
    items
}

/// What a governed role's owners may do, per dataset, as the planner grants it: whether they
/// may write (reading is implied) and the decisions that say so. The access report reads
/// this, so it says what the planner makes AWS hold.
pub(super) fn role_access(
    inputs: &Inputs,
    memo: &PlanMemo,
    decider: &mut Decider,
    arn: &String,
    owners: &BTreeSet<EntityUid>,
) -> Vec<(EntityUid, bool, Vec<Arc<Verdict>>)> {
    let planner = RolePlanner::new(inputs, memo);
    let mut reads = memo.reads();
    planner
        .desired_access(Role { arn, owners }, &mut reads, decider)
        .into_iter()
        .filter(|(_, access)| access.dataset.is_some())
        .map(|(d, access)| (d.clone(), access.write, access.why))
        .collect()
}

/// Data access, one role at a time; the roles are shared out over the cores. The parts come
/// back in the roles' order, so the plan does not depend on the number of cores.
fn fan_out(decider: &Decider, planner: &RolePlanner, roles: &[Role]) -> Vec<WorkerOutput> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let chunk = roles.len().div_ceil(workers).max(32);
    std::thread::scope(|s| {
        let handles: Vec<_> = roles
            .chunks(chunk.max(1))
            .map(|part| {
                s.spawn(move || {
                    let mut worker = decider.worker();
                    let mut out = planner.plan_roles(part, &mut worker);
                    worker.remember();
                    out.decisions = worker.count;
                    out.warnings = std::mem::take(&mut worker.warnings);
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// What a grant for writing holds: the read and the write permissions, sorted as a grant
/// lists them (`tests::read_write_permissions_are_the_reads_and_writes_sorted`).
const READ_WRITE_PERMISSIONS: [&str; 4] = ["DELETE", "DESCRIBE", "INSERT", "SELECT"];

/// What every worker shares: read only, so the workers need no locks.
struct RolePlanner<'a> {
    graph: &'a EntityGraph,
    index: &'a GraphIndex,
    actual: &'a ActualState,
    /// Open Data, to keep it out of each owner's other candidates.
    open_set: super::index::FastSet<&'a EntityUid>,
    /// The roles' parts of the last plan, caught up with what changed since.
    memo: &'a PlanMemo,
}

impl<'a> RolePlanner<'a> {
    fn new(inputs: &Inputs<'a>, memo: &'a PlanMemo) -> Self {
        Self {
            graph: inputs.graph,
            index: inputs.index,
            actual: inputs.actual,
            open_set: inputs.index.open.iter().collect(),
            memo,
        }
    }

    /// The items for `roles` and the parts planned afresh to remember; the decisions and
    /// warnings are `decider`'s.
    fn plan_roles(&self, roles: &[Role], decider: &mut Decider) -> WorkerOutput {
        let mut out = WorkerOutput::default();
        for &role in roles {
            let part = match self.memo.reusable(role.arn, role.owners, self.actual) {
                Some(kept) => {
                    out.reused += 1;
                    kept.clone()
                }
                None => {
                    let mut reads = self.memo.reads();
                    let part = self.plan_role(role, &mut reads, decider);
                    out.remembered.extend(
                        PlanMemo::remember(reads, role.arn, role.owners, self.actual, &part)
                            .map(|m| (role.arn.clone(), m)),
                    );
                    out.planned += 1;
                    part
                }
            };
            out.items.extend(part.items);
            decider.count += part.decisions;
            decider.warnings.extend(part.warnings);
        }
        out
    }

    /// One role's part of the plan, noting in `reads` the entities it read. The decisions
    /// and warnings it adds to `decider` are taken back out into the part.
    fn plan_role(&self, role: Role, reads: &mut Reads, decider: &mut Decider) -> RolePart {
        let (counted, warned) = (decider.count, decider.warnings.len());
        let mut items = Vec::new();
        let desired = self.desired_access(role, reads, decider);
        self.lf_changes_for_role(role, &desired, decider, &mut items);
        items.extend(
            self.role_policy_change(role.arn, &desired, decider)
                .map(|i| i.affecting(role.owners)),
        );
        let decisions = decider.count - counted;
        decider.count = counted;
        RolePart {
            items,
            decisions,
            warnings: decider.warnings.split_off(warned),
        }
    }

    /// Per dataset: whether the role's owners may write it (reading is implied), and the
    /// decisions that justify it. Datasets no owner may read are left out.
    fn desired_access(&self, role: Role, reads: &mut Reads, decider: &mut Decider) -> Desired<'a> {
        let mut desired: Desired<'a> = Vec::new();
        for owner in role.owners {
            // Open Data is every user's candidate; the rest come from the owner's groups,
            // their own studies, and what the role holds now (that is how stale grants are
            // revoked). Open Data is walked as is rather than copied into each owner's set.
            let others = self.candidate_datasets(role.arn, owner, reads);
            for d in self.index.open.iter().chain(others) {
                // A quarantined dataset's facts are in doubt: nothing is granted on it.
                if self.actual.quarantined.contains_key(d.id().unescaped()) {
                    continue;
                }
                let read = decider.decide(owner, "read", d);
                // An errored decision grants nothing (and so revokes what is held).
                if !read.allows() {
                    continue;
                }
                // A read-only dataset is never written whatever the policies say, so its
                // write decision could not change the plan.
                let dataset = self.index.datasets.get(d);
                let writable = dataset.is_some_and(|x| x.max_write);
                let write = writable.then(|| decider.decide(owner, "write", d));
                let mut access = Access {
                    dataset,
                    write: false,
                    why: vec![read],
                };
                if let Some(write) = write.filter(|w| w.allows()) {
                    access.write = true;
                    access.why.push(write);
                }
                desired.push((d, access));
            }
        }
        // Each owner's candidates come as two sorted runs (Open Data, the rest), which a
        // stable sort merges in one pass; owners sharing a dataset share its entry, their
        // decisions in owner order.
        desired.sort_by(|a, b| a.0.cmp(b.0));
        desired.dedup_by(|later, kept| {
            if later.0 != kept.0 {
                return false;
            }
            kept.1.write |= later.1.write;
            kept.1.why.append(&mut later.1.why);
            true
        });
        desired
    }

    /// The candidates for `owner` on `role` other than Open Data: the datasets of the
    /// owner's access groups, their own studies, and the datasets the role holds now.
    fn candidate_datasets(
        &self,
        role: &str,
        owner: &EntityUid,
        reads: &mut Reads,
    ) -> Vec<&'a EntityUid> {
        let index = self.index;
        let mut others: Vec<&EntityUid> = Vec::new();
        reads.uid(owner);
        for g in self.graph.ancestors(owner) {
            reads.uid(g);
            if let Some(ds) = index.by_group.get(g) {
                others.extend(ds.iter());
            }
        }
        if let Some(ds) = index.by_owner.get(owner) {
            others.extend(ds.iter());
        }
        for (_, resource) in self.actual.held_by(role) {
            if let Some(d) = index.by_resource.get(resource) {
                others.push(d);
            }
        }
        // Sorted, as the plan reads them in uid order whatever the groups' order.
        others.sort_unstable();
        others.dedup();
        others.retain(|d| !self.open_set.contains(d));
        for d in &others {
            reads.uid(d);
        }
        others
    }

    /// Lake Formation: grants missing, and everything held that is not desired.
    fn lf_changes_for_role(
        &self,
        role: Role,
        desired: &Desired<'a>,
        decider: &mut Decider,
        items: &mut Vec<PlanItem>,
    ) {
        let wanted = self.wanted_permissions(desired);
        self.lf_grants(role, &wanted, items);
        self.lf_revokes(role, &wanted, decider, items);
    }

    /// Per canonical resource JSON: the permissions the desired access calls for.
    fn wanted_permissions<'d>(&self, desired: &'d Desired<'a>) -> FastMap<&'a str, Wanted<'d>> {
        // Keyed by hash: resource texts share long prefixes, which ordered keys compare
        // again and again; the items made from them are sorted with the plan's.
        let mut wanted: FastMap<&'a str, Wanted> = FastMap::default();
        for (d, access) in desired {
            let Some(ds) = access.dataset else {
                continue;
            };
            let perms: &[&str] = if access.write {
                &READ_WRITE_PERMISSIONS
            } else {
                &READ_PERMISSIONS
            };
            let why = access.why.as_slice();
            wanted.insert(
                ds.resource_key.as_str(),
                Wanted {
                    perms,
                    why,
                    dataset: d,
                    indexed: ds,
                },
            );
        }
        wanted
    }

    /// Grants of the wanted permissions the role does not hold yet.
    fn lf_grants(&self, role: Role, wanted: &FastMap<&str, Wanted>, items: &mut Vec<PlanItem>) {
        // What the role holds, by resource: one walk of its grants rather than a lookup in
        // every grant of the account per wanted resource.
        let holds: FastMap<&str, &BTreeSet<String>> = self
            .actual
            .held_by_with(role.arn)
            .map(|((_, resource_key), held)| (resource_key.as_str(), &held.0))
            .collect();
        for (resource_key, w) in wanted {
            let held = holds.get(resource_key);
            let missing: Vec<String> = w
                .perms
                .iter()
                .filter(|p| !held.is_some_and(|h| h.contains(**p)))
                .map(|p| p.to_string())
                .collect();
            if !missing.is_empty() {
                let resource = w.indexed.resource.clone();
                items.push(
                    item(
                        Change::LfGrant {
                            principal: role.arn.clone(),
                            resource,
                            permissions: missing.clone(),
                        },
                        format!(
                            "policies allow `{}` on dataset `{}`",
                            missing.join(", "),
                            w.dataset
                        ),
                        materialize(w.why.iter()),
                    )
                    .affecting(role.owners),
                );
            }
        }
    }

    /// Revokes of everything the role holds that is not wanted, grant options included.
    fn lf_revokes(
        &self,
        role: Role,
        wanted: &FastMap<&str, Wanted>,
        decider: &mut Decider,
        items: &mut Vec<PlanItem>,
    ) {
        for ((_, resource_key), (held, grantable)) in self.actual.held_by_with(role.arn) {
            let allowed = wanted.get(resource_key.as_str()).map(|w| w.perms);
            let extra: Vec<String> = held
                .iter()
                .filter(|p| !allowed.is_some_and(|a| a.contains(&p.as_str())))
                .cloned()
                .collect();
            // Workspace roles never pass grants on.
            let extra_grantable: Vec<String> = grantable.iter().cloned().collect();
            if extra.is_empty() && extra_grantable.is_empty() {
                continue;
            }
            let (reason, why) = self.revoke_reason(role, resource_key, &extra, decider);
            let resource = serde_json::from_str(resource_key).unwrap_or(Value::Null);
            items.push(
                item(
                    Change::LfRevoke {
                        principal: role.arn.clone(),
                        resource,
                        permissions: extra,
                        permissions_with_grant_option: extra_grantable,
                    },
                    reason,
                    why,
                )
                .revoking(self.actual.revokes(role.arn, resource_key))
                .affecting(role.owners),
            );
        }
    }

    /// Why `extra` is revoked on a resource, and the decisions that deny it.
    fn revoke_reason(
        &self,
        role: Role,
        resource_key: &str,
        extra: &[String],
        decider: &mut Decider,
    ) -> (String, Vec<Justification>) {
        let Some(d) = self.index.by_resource.get(resource_key) else {
            return (
                "the resource is not a governed dataset; no policy can allow it".to_string(),
                Vec::new(),
            );
        };
        let mut why = Vec::new();
        for owner in role.owners {
            why.push(decider.decide(owner, "read", d).justification());
            why.push(decider.decide(owner, "write", d).justification());
        }
        let reason = if role.owners.is_empty() {
            format!(
                "no live workspace uses the role; `{}` on dataset `{d}` is not justified",
                extra.join(", ")
            )
        } else {
            format!(
                "no policy allows `{}` on dataset `{d}` for the workspace owner",
                extra.join(", ")
            )
        };
        (reason, why)
    }

    /// S3 side: the role's inline policy mirrors the Lake Formation grants.
    fn role_policy_change(
        &self,
        role: &String,
        desired: &Desired<'a>,
        decider: &mut Decider,
    ) -> Option<PlanItem> {
        let Some((account, _)) = role_parts(role) else {
            decider.warnings.push(format!(
                "`{role}` is not an IAM role ARN; no role policy planned"
            ));
            return None;
        };
        let (allowed, why) = self.s3_datasets(desired);
        let statements = s3_statements(&allowed);
        let current = self
            .actual
            .roles
            .get(role)
            .and_then(|r| r["inlinePolicies"].get(DATA_ACCESS_POLICY));
        if statements.is_empty() {
            return current.is_some().then(|| {
                item(
                    Change::DeleteRolePolicy {
                        account: account.to_string(),
                        role_arn: role.clone(),
                        policy_name: DATA_ACCESS_POLICY.into(),
                    },
                    "no policy allows the role any dataset".into(),
                    Vec::new(),
                )
                .revoking(Revokes::Granted)
            });
        }
        let document = json!({"Version": "2012-10-17", "Statement": statements});
        let size = json_len(&document);
        if size > IAM_INLINE_POLICY_LIMIT {
            decider.warnings.push(format!(
                "`{role}`: the S3 policy for {} dataset(s) is {size} characters, over IAM's {IAM_INLINE_POLICY_LIMIT}-character inline limit; putting it will fail",
                allowed.len()
            ));
        }
        if current == Some(&document) {
            return None;
        }
        // The policy is tregov's own: narrowing it takes away access tregov granted.
        let narrower = match current.is_some_and(|c| narrows(c, &document)) {
            true => Revokes::Granted,
            false => Revokes::Nothing,
        };
        Some(
            item(
                Change::PutRolePolicy {
                    account: account.to_string(),
                    role_arn: role.clone(),
                    policy_name: DATA_ACCESS_POLICY.into(),
                    document,
                },
                format!(
                    "S3 access to the {} dataset(s) the policies allow",
                    desired.len()
                ),
                materialize(why),
            )
            .revoking(narrower),
        )
    }

    /// The desired datasets that live in S3, each with whether it is written, and the
    /// decisions behind them all.
    fn s3_datasets<'d>(
        &self,
        desired: &'d Desired<'a>,
    ) -> (Vec<(&'a Dataset, bool)>, Vec<&'d Arc<Verdict>>) {
        let mut allowed = Vec::new();
        let mut why = Vec::new();
        for (_, access) in desired {
            let Some(ds) = access.dataset else {
                continue;
            };
            if ds.bucket.is_empty() {
                continue;
            }
            why.extend(access.why.iter());
            allowed.push((ds, access.write));
        }
        (allowed, why)
    }
}

#[cfg(test)]
mod tests {
    use super::super::WRITE_PERMISSIONS;
    use super::*;

    #[test]
    fn read_write_permissions_are_the_reads_and_writes_sorted() {
        let mut both: Vec<&str> = READ_PERMISSIONS
            .into_iter()
            .chain(WRITE_PERMISSIONS)
            .collect();
        both.sort_unstable();
        assert_eq!(both, READ_WRITE_PERMISSIONS);
        assert!(READ_PERMISSIONS.is_sorted());
    }
}
