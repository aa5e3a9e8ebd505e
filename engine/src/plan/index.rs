//! The entity graph indexed once per plan: datasets by access group, owner and Lake
//! Formation resource, the Open Data list, workspaces, budgets, and the governed roles with
//! their owners. Every phase reads this index instead of walking the graph again.

use std::collections::{BTreeMap, BTreeSet};

use cedar_policy::{Entity, EntityUid};

use crate::entities::EntityGraph;
use crate::graph::GraphEntity;
use serde_json::Value;

use super::actual::{principal_key, ActualState};
use super::attrs::{attr_string, attr_uid, type_is};
use super::lf_table_resource;

/// A governed dataset as planning needs it.
pub(super) struct Dataset {
    /// Its Lake Formation resource, in the collectors' JSON form.
    pub(super) resource: Value,
    /// Its S3 bucket; empty when its location is not an S3 URL (no S3 access is planned).
    pub(super) bucket: String,
    /// Its object prefix in the bucket, empty or ending in `/`.
    pub(super) prefix: String,
    /// Whether it may be written at all (`maxAccess` is `readwrite`).
    pub(super) max_write: bool,
    /// `resource` as the canonical JSON text the actual state keys grants by.
    pub(super) resource_key: String,
    /// Its admin, reader and writer groups, and the owner of a `my` dataset: whose
    /// candidates it is (what a remembered role plan is checked against, see `memo`).
    pub(super) groups: Vec<EntityUid>,
    pub(super) owner: Option<EntityUid>,
}

/// The planner's lookup tables hash uids and resource texts on every candidate of every
/// role.
pub(super) use crate::fast::{FastMap, FastSet};

/// The graph, indexed for planning.
pub(super) struct GraphIndex {
    pub(super) datasets: FastMap<EntityUid, Dataset>,
    /// Access group -> the datasets it is an admin, reader or writer group of.
    pub(super) by_group: FastMap<EntityUid, Vec<EntityUid>>,
    /// User -> the `my` datasets (their own studies) they own.
    pub(super) by_owner: FastMap<EntityUid, Vec<EntityUid>>,
    /// Canonical Lake Formation resource JSON -> dataset.
    pub(super) by_resource: FastMap<String, EntityUid>,
    /// The Open Data datasets, sorted.
    pub(super) open: Vec<EntityUid>,
    /// Sorted by uid.
    pub(super) workspaces: Vec<GraphEntity>,
    /// Sorted by uid.
    pub(super) budgets: Vec<GraphEntity>,
    /// Governed principals: every workspace role, and every role tagged as a workspace's,
    /// with the owners of its live workspaces (see `govern_roles`).
    pub(super) role_owners: BTreeMap<String, BTreeSet<EntityUid>>,
}

impl GraphIndex {
    /// Indexes the graph once: datasets by access group, owner and category; workspaces.
    /// Datasets that cannot be planned on are reported in `warnings`. The governed roles
    /// come after (`govern_roles`), once it is known which workspaces may operate.
    pub(super) fn build(graph: &EntityGraph, warnings: &mut Vec<String>) -> Self {
        let mut index = Self {
            datasets: FastMap::default(),
            by_group: FastMap::default(),
            by_owner: FastMap::default(),
            by_resource: FastMap::default(),
            open: Vec::new(),
            workspaces: Vec::new(),
            budgets: Vec::new(),
            role_owners: BTreeMap::new(),
        };
        for uid in graph.uids() {
            let kind = ["Tre::Dataset", "Tre::Workspace", "Tre::Budget"]
                .into_iter()
                .find(|t| type_is(uid, t));
            let (Some(kind), Some(e)) = (kind, kind.and_then(|_| graph.entity(uid))) else {
                continue;
            };
            match kind {
                "Tre::Dataset" => index.add_dataset(&e, uid.clone(), warnings),
                "Tre::Workspace" => index.workspaces.push(e),
                _ => index.budgets.push(e),
            }
        }
        index.workspaces.sort_by_key(|e| e.uid());
        index.budgets.sort_by_key(|e| e.uid());
        index.open.sort();
        index
    }

    /// The governed roles and their owners, counting no owner of a `retired` workspace (one
    /// that may no longer operate: its role keeps nothing on its behalf).
    pub(super) fn govern_roles(
        &mut self,
        actual: &ActualState,
        protected: &Protected,
        retired: &FastSet<EntityUid>,
        warnings: &mut Vec<String>,
    ) {
        self.role_owners = governed_roles(&self.workspaces, actual, protected, retired, warnings);
    }

    fn add_dataset(&mut self, e: &Entity, uid: EntityUid, warnings: &mut Vec<String>) {
        let (Some(database), Some(location)) =
            (attr_string(e, "database"), attr_string(e, "location"))
        else {
            return;
        };
        let table = attr_string(e, "table");
        let resource = lf_table_resource(&database, table.as_deref());
        let (bucket, prefix) = s3_location(&uid, &location, warnings);
        let groups: Vec<EntityUid> = ["admins", "readers", "writers"]
            .into_iter()
            .filter_map(|group| attr_uid(e, group))
            .collect();
        for g in &groups {
            self.by_group
                .entry(g.clone())
                .or_default()
                .push(uid.clone());
        }
        let mut owner = None;
        match attr_string(e, "category").as_deref() {
            Some("open") => self.open.push(uid.clone()),
            Some("my") => {
                owner = attr_uid(e, "owner");
                if let Some(owner) = &owner {
                    self.by_owner
                        .entry(owner.clone())
                        .or_default()
                        .push(uid.clone());
                }
            }
            _ => {}
        }
        let resource_key = resource.to_string();
        self.by_resource.insert(resource_key.clone(), uid.clone());
        self.datasets.insert(
            uid,
            Dataset {
                resource,
                bucket,
                prefix,
                max_write: attr_string(e, "maxAccess").as_deref() == Some("readwrite"),
                resource_key,
                groups,
                owner,
            },
        );
    }
}

/// A dataset's `s3://bucket/prefix` location as (bucket, prefix ending in `/`), or empty
/// strings, with a warning, when it is not an S3 URL.
fn s3_location(uid: &EntityUid, location: &str, warnings: &mut Vec<String>) -> (String, String) {
    match location.strip_prefix("s3://") {
        // A prefix without its trailing `/` would also match its siblings
        // (`cohort*` covers `cohort_pii/`).
        Some(rest) => match rest.split_once('/') {
            Some((b, p)) if p.is_empty() || p.ends_with('/') => (b.to_string(), p.to_string()),
            Some((b, p)) => (b.to_string(), format!("{p}/")),
            None => (rest.to_string(), String::new()),
        },
        None => {
            warnings.push(format!(
                "dataset `{uid}`: location `{location}` is not an s3:// URL; no S3 access planned"
            ));
            (String::new(), String::new())
        }
    }
}

/// Governed principals: every workspace role, and every role tagged as a workspace's, but
/// never a protected one (a workspace pointing at the lake admin role does not make it
/// governed).
fn governed_roles(
    workspaces: &[GraphEntity],
    actual: &ActualState,
    protected: &Protected,
    retired: &FastSet<EntityUid>,
    warnings: &mut Vec<String>,
) -> BTreeMap<String, BTreeSet<EntityUid>> {
    let mut role_owners: BTreeMap<String, BTreeSet<EntityUid>> = BTreeMap::new();
    for w in workspaces {
        let Some(role) = attr_string(w, "roleArn") else {
            continue;
        };
        let entry = role_owners.entry(role).or_default();
        let live = attr_string(w, "status").as_deref() != Some("terminated");
        if live && !retired.contains(&w.uid()) {
            if let Some(owner) = attr_uid(w, "owner") {
                entry.insert(owner);
            }
        }
    }
    for (arn, role) in &actual.roles {
        if role["tags"].get("tre:workspace").is_some() {
            role_owners.entry(arn.clone()).or_default();
        }
    }
    role_owners.retain(|role, _| {
        let keep = !protected.contains(role);
        if !keep {
            warnings.push(format!(
                "`{role}` is a protected principal (a data lake administrator, tregov's own role or one in `[datalake] protected_principals`) but a workspace names it: its grants are not planned"
            ));
        }
        keep
    });
    role_owners
}

/// The principals whose grants are never planned for revocation: those the settings name
/// and those the actual state names (data lake administrators, tregov's own principal).
pub(super) struct Protected(BTreeSet<String>);

impl Protected {
    pub(super) fn new(settings: &BTreeSet<String>, actual: &ActualState) -> Self {
        let mut keys: BTreeSet<String> = settings.iter().map(|p| principal_key(p)).collect();
        keys.extend(actual.protected.iter().cloned());
        Self(keys)
    }

    pub(super) fn contains(&self, principal: &str) -> bool {
        self.0.contains(&principal_key(principal))
    }
}
