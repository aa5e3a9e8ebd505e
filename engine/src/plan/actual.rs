//! The actual state: what the collectors observed in AWS, indexed for the lookups planning
//! makes (a role's grants, its inline policies, instances, notifications already sent).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::store::Observed;

use super::NOTIFICATION_KIND;

/// A principal's Lake Formation permissions on one resource: (permissions, grantable).
pub(super) type Held = (BTreeSet<String>, BTreeSet<String>);

/// The observed kinds planning reads, as the collectors write them.
pub mod kind {
    pub const LF_PERMISSION: &str = "lf-permission";
    /// A data lake administrator (from the data lake settings).
    pub const LF_ADMIN: &str = "lf-admin";
    /// The principal tregov itself acts as (`sts:GetCallerIdentity`).
    pub const OWN_PRINCIPAL: &str = "tregov-principal";
    pub const IAM_ROLE: &str = "iam-role";
    pub const EC2_INSTANCE: &str = "ec2-instance";
    pub const SAGEMAKER_NOTEBOOK: &str = "sagemaker-notebook";
    /// An AWS Backup plan with its rules (and, for the plan tregov keeps, its selections).
    pub const BACKUP_PLAN: &str = "backup-plan";
    /// A Lake Formation grant tregov itself made (recorded when it applies one).
    pub const TREGOV_GRANT: &str = "tregov-grant";
    /// Findings: facts in doubt that tregov reports (in `status` and metrics) and never
    /// acts on as they claim. Each body carries a `message`.
    /// A `tre:` tag on a registered workspace that disagrees with the registry.
    pub const WORKSPACE_TAG_DRIFT: &str = "workspace-tag-drift";
    /// An instance or notebook with `tre:` tags that the registry does not list.
    pub const WORKSPACE_UNREGISTERED: &str = "workspace-unregistered";
    /// A workspace running as a role outside its project's account.
    pub const WORKSPACE_ROLE_REJECTED: &str = "workspace-role-rejected";
    /// A dataset whose location is outside every registered location or overlaps another's.
    pub const DATASET_QUARANTINED: &str = "dataset-quarantined";
    /// A dataset label change that widens access, waiting for a data manager.
    pub const DATASET_LABELS_PENDING: &str = "dataset-labels-pending";
    pub const FINDINGS: [&str; 5] = [
        WORKSPACE_TAG_DRIFT,
        WORKSPACE_UNREGISTERED,
        WORKSPACE_ROLE_REJECTED,
        DATASET_QUARANTINED,
        DATASET_LABELS_PENDING,
    ];
}

/// What the collectors saw, indexed for planning.
#[derive(Debug, Default)]
pub struct ActualState {
    /// Principals never planned for revocation that AWS itself names (the data lake
    /// administrators, tregov's own principal), as `principal_key`s.
    pub(super) protected: BTreeSet<String>,
    /// Principal -> the canonical resource JSON of each grant tregov made it.
    pub(super) made: BTreeMap<String, BTreeSet<String>>,
    /// (principal, canonical resource JSON) -> (permissions, grantable permissions).
    pub(super) lf: BTreeMap<(String, String), Held>,
    /// Role ARN -> the role as observed.
    pub(super) roles: BTreeMap<String, Value>,
    /// `account/instance-id` -> instance.
    pub(super) ec2: BTreeMap<String, Value>,
    /// `account/notebook-name` -> notebook.
    pub(super) notebooks: BTreeMap<String, Value>,
    /// `account/plan-id` -> backup plan.
    pub(super) backup_plans: BTreeMap<String, Value>,
    pub(super) marks: BTreeSet<String>,
    /// Dataset id -> why it is quarantined (its location is outside every registered
    /// location or overlaps another dataset's).
    pub(super) quarantined: BTreeMap<String, String>,
    /// `tre:` tags on registered workspaces that disagree with the registry.
    pub(super) tag_drift: Vec<Value>,
}

impl ActualState {
    pub fn from_observed(items: &[Observed]) -> Self {
        let mut s = Self::default();
        for o in items {
            match o.kind.as_str() {
                kind::LF_PERMISSION => s.add_lf_permission(o),
                kind::LF_ADMIN | kind::OWN_PRINCIPAL => {
                    s.protected.insert(principal_key(&o.key));
                }
                kind::TREGOV_GRANT => {
                    let principal = o.body["principal"].as_str().unwrap_or_default();
                    s.made
                        .entry(principal.to_string())
                        .or_default()
                        .insert(o.body["resource"].to_string());
                }
                kind::IAM_ROLE => {
                    s.roles.insert(o.key.clone(), o.body.clone());
                }
                kind::EC2_INSTANCE => {
                    s.ec2.insert(o.key.clone(), o.body.clone());
                }
                kind::SAGEMAKER_NOTEBOOK => {
                    s.notebooks.insert(o.key.clone(), o.body.clone());
                }
                kind::BACKUP_PLAN => {
                    s.backup_plans.insert(o.key.clone(), o.body.clone());
                }
                NOTIFICATION_KIND => {
                    s.marks.insert(o.key.clone());
                }
                kind::DATASET_QUARANTINED => {
                    let why = o.body["message"].as_str().unwrap_or_default();
                    s.quarantined.insert(o.key.clone(), why.to_string());
                }
                kind::WORKSPACE_TAG_DRIFT => s.tag_drift.push(o.body.clone()),
                _ => {}
            }
        }
        s
    }

    /// Merges one observed grant into what its principal holds on its resource.
    fn add_lf_permission(&mut self, o: &Observed) {
        let principal = o.body["principal"].as_str().unwrap_or_default().to_string();
        let resource = o.body["resource"].to_string();
        let set = |k: &str| -> BTreeSet<String> {
            o.body[k]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let entry = self.lf.entry((principal, resource)).or_default();
        entry.0.extend(set("permissions"));
        entry.1.extend(set("permissionsWithGrantOption"));
    }

    /// What revoking `principal`'s grant on `resource` takes away: a grant tregov made, or
    /// one nothing explains.
    pub(super) fn revokes(&self, principal: &str, resource: &str) -> super::Revokes {
        if self.made_by_tregov(principal, resource) {
            super::Revokes::Granted
        } else {
            super::Revokes::Unexplained
        }
    }

    pub(super) fn made_by_tregov(&self, principal: &str, resource: &str) -> bool {
        self.made
            .get(principal)
            .is_some_and(|r| r.contains(resource))
    }

    /// The role `arn` names, as observed, whatever its path.
    pub(super) fn role(&self, arn: &str) -> Option<&Value> {
        if let Some(role) = self.roles.get(arn) {
            return Some(role);
        }
        let key = super::role_key(arn)?;
        self.roles
            .iter()
            .find(|(observed, _)| super::role_key(observed).as_deref() == Some(key.as_str()))
            .map(|(_, role)| role)
    }

    /// What `principal` holds, by resource, without scanning everyone else's grants.
    pub(super) fn held_by<'a>(
        &'a self,
        principal: &'a str,
    ) -> impl Iterator<Item = &'a (String, String)> + 'a {
        self.held_by_with(principal).map(|(k, _)| k)
    }

    pub(super) fn held_by_with<'a>(
        &'a self,
        principal: &'a str,
    ) -> impl Iterator<Item = (&'a (String, String), &'a Held)> + 'a {
        self.lf
            .range((principal.to_string(), String::new())..)
            .take_while(move |((p, _), _)| p == principal)
    }
}

/// A principal as protection compares it: a role by account and name whatever its path, and
/// an assumed-role session as the role it assumed; anything else as written.
pub fn principal_key(principal: &str) -> String {
    if let Some(key) = super::role_key(principal) {
        return key;
    }
    // arn:aws:sts::<account>:assumed-role/<role>/<session>
    let mut parts = principal.splitn(6, ':');
    let (service, account, rest) = (parts.nth(2), parts.nth(1), parts.next());
    if let (Some("sts"), Some(account), Some(rest)) = (service, account, rest) {
        if let Some(role) = rest
            .strip_prefix("assumed-role/")
            .and_then(|r| r.split('/').next())
        {
            return format!("{account}/{role}");
        }
    }
    principal.to_string()
}

#[cfg(test)]
mod tests {
    use super::principal_key;

    #[test]
    fn a_role_is_the_same_principal_whatever_its_path_or_session() {
        let key = "111111111111/etl";
        assert_eq!(principal_key("arn:aws:iam::111111111111:role/etl"), key);
        assert_eq!(principal_key("arn:aws:iam::111111111111:role/svc/etl"), key);
        assert_eq!(
            principal_key("arn:aws:sts::111111111111:assumed-role/etl/tregov"),
            key
        );
        assert_eq!(
            principal_key("IAM_ALLOWED_PRINCIPALS"),
            "IAM_ALLOWED_PRINCIPALS"
        );
    }
}
