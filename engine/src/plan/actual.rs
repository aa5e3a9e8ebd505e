//! The actual state: what the collectors observed in AWS, indexed for the lookups planning
//! makes (a role's grants, its inline policies, instances, notifications already sent).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::store::Observed;

use super::NOTIFICATION_KIND;

/// A principal's Lake Formation permissions on one resource: (permissions, grantable).
pub(super) type Held = (BTreeSet<String>, BTreeSet<String>);

/// What the collectors saw, indexed for planning.
#[derive(Debug, Default)]
pub struct ActualState {
    /// (principal, canonical resource JSON) -> (permissions, grantable permissions).
    pub(super) lf: BTreeMap<(String, String), Held>,
    /// Role ARN -> the role as observed.
    pub(super) roles: BTreeMap<String, Value>,
    /// `account/instance-id` -> instance.
    pub(super) ec2: BTreeMap<String, Value>,
    /// `account/notebook-name` -> notebook.
    pub(super) notebooks: BTreeMap<String, Value>,
    pub(super) marks: BTreeSet<String>,
}

impl ActualState {
    pub fn from_observed(items: &[Observed]) -> Self {
        let mut s = Self::default();
        for o in items {
            match o.kind.as_str() {
                "lf-permission" => s.add_lf_permission(o),
                "iam-role" => {
                    s.roles.insert(o.key.clone(), o.body.clone());
                }
                "ec2-instance" => {
                    s.ec2.insert(o.key.clone(), o.body.clone());
                }
                "sagemaker-notebook" => {
                    s.notebooks.insert(o.key.clone(), o.body.clone());
                }
                NOTIFICATION_KIND => {
                    s.marks.insert(o.key.clone());
                }
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
