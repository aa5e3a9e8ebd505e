//! Planning: from the entities, the Cedar decisions and the actual state the collectors
//! recorded, the changes that bring AWS to what the policies allow. Pure: no AWS, no clock,
//! no log writes (`Plan::record` logs the decisions that justify the items, separately).
//!
//! Candidates come from the entity graph: a workspace role is only checked against the
//! datasets its owner's access groups, ownership or Open Data reach, plus whatever it holds
//! now (so anything unexplained is decided, and revoked).
//!
//! This module holds the public types and the entry points; each phase of a plan lives in
//! its own submodule: the graph indexed once (`index`), data access per role
//! (`data_access`, with the S3 statements in `s3`), budget responses (`budgets`) and backup
//! tags (`backup`).

mod access;
mod actual;
mod attrs;
mod backup;
mod backup_plan;
mod breakglass;
mod budgets;
mod data_access;
mod decider;
mod foreign;
mod index;
mod lifetimes;
mod memo;
mod quarantine;
mod s3;
mod tags;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::entities::EntityGraph;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::collect::Source;
use crate::decide::{Decision, Engine, RequestSpec};
use crate::error::Result;

pub use access::{
    access_report, access_report_now, AccessReport, Ending, Reach, Scope, DATA_ACTIONS,
};
pub use actual::{kind, ActualState};
pub(crate) use memo::PlanMemo;
pub use memo::PlanReuse;

use decider::Decider;
use index::{GraphIndex, Protected};

/// The inline policy on a workspace role that gives it the S3 side of its data access.
pub const DATA_ACCESS_POLICY: &str = "tregov-data-access";
/// The inline policy on a project's environment-management role that stops new workspaces.
pub const BUDGET_DENY_POLICY: &str = "tregov-budget-deny";
/// The observed kind under which enforcers remember notifications already sent.
pub const NOTIFICATION_KIND: &str = "notification";

pub const READ_PERMISSIONS: [&str; 2] = ["DESCRIBE", "SELECT"];
/// Writing is adding and removing rows. Never `ALTER` (it would let a writer rewrite the
/// table's parameters and location, the facts access is decided from) nor `DROP`.
pub const WRITE_PERMISSIONS: [&str; 2] = ["DELETE", "INSERT"];

/// Inputs that are not entities: deployment facts from the configuration.
#[derive(Debug, Clone, Default)]
pub struct PlanSettings {
    /// The account whose Lake Formation holds the datasets.
    pub datalake_account: String,
    /// Per project id: the account id.
    pub project_accounts: BTreeMap<String, String>,
    /// Per project id: the role Service Catalog provisions workspaces through.
    pub environment_roles: BTreeMap<String, String>,
    /// Per project id: the SNS topic for budget notifications.
    pub notify_topics: BTreeMap<String, String>,
    /// The tag the admins' AWS Backup plan selects resources on.
    pub backup_tag: (String, String),
    /// The AWS Backup plan kept at each project's backup settings (`[backup] plan_name`);
    /// none: only the tags are planned.
    pub backup_plan: Option<BackupPlanTarget>,
    /// The budget period notifications are counted in (e.g. `2026-11`), chosen by the caller
    /// so planning stays free of the clock.
    pub period: String,
    /// Principals whose grants are never planned for revocation, whatever the policies say:
    /// `[datalake] protected_principals` and the roles tregov itself assumes. (The data lake
    /// administrators and the principal tregov runs as come from the actual state.)
    pub protected_principals: BTreeSet<String>,
    /// Set the `tre:` tags someone changed on a workspace back to the registry's values.
    pub revert_tag_drift: bool,
    /// The governance clock (milliseconds since the epoch) the plan is made at, chosen by
    /// the caller (`Engine::tick_at`) so planning stays free of the clock. Without it no
    /// request carries `now`, and every date the policies compare holds access back.
    pub now: Option<i64>,
    /// The SNS topic warned before a stored date passes (`[daemon] expiry_topic`).
    pub expiry_topic: Option<String>,
    /// Per project id: the break-glass role whose trust policy admits the auditors holding
    /// an open grant (`[breakglass] role_name`). Empty: no trust policy is written.
    pub breakglass_roles: BTreeMap<String, String>,
    /// The SNS topic told when break-glass opens and closes.
    pub breakglass_topic: Option<String>,
}

/// The AWS Backup plan tregov keeps in each project account, and what it keeps there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupPlanTarget {
    pub plan_name: String,
    pub rule_name: String,
    pub vault_name: String,
    pub selection_name: String,
    /// The role AWS Backup assumes, by name with its path, in the project's account.
    pub selection_role: String,
    pub daily_hour_utc: u8,
}

impl PlanSettings {
    /// The account of a project (empty when the settings do not name one).
    pub(crate) fn account_of(&self, project: &cedar_policy::EntityUid) -> String {
        self.project_accounts
            .get(project.id().unescaped())
            .cloned()
            .unwrap_or_default()
    }
}

/// One change to AWS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Change {
    /// Lake Formation grant of all these permissions to one principal on one resource.
    #[serde(rename_all = "camelCase")]
    LfGrant {
        principal: String,
        resource: Value,
        permissions: Vec<String>,
    },
    #[serde(rename_all = "camelCase")]
    LfRevoke {
        principal: String,
        resource: Value,
        permissions: Vec<String>,
        permissions_with_grant_option: Vec<String>,
    },
    #[serde(rename_all = "camelCase")]
    PutRolePolicy {
        account: String,
        role_arn: String,
        policy_name: String,
        document: Value,
    },
    #[serde(rename_all = "camelCase")]
    DeleteRolePolicy {
        account: String,
        role_arn: String,
        policy_name: String,
    },
    /// Replaces the trust policy of a role (a project's break-glass role).
    #[serde(rename_all = "camelCase")]
    UpdateTrustPolicy {
        account: String,
        role_arn: String,
        document: Value,
    },
    /// Sets the AWS Backup plan's rules to exactly `rules` (AWS Backup's `BackupRuleInput`
    /// JSON).
    #[serde(rename_all = "camelCase")]
    UpdateBackupPlan {
        account: String,
        plan_id: String,
        plan_name: String,
        rules: Vec<Value>,
    },
    /// Adds the plan's tag selection.
    #[serde(rename_all = "camelCase")]
    CreateBackupSelection {
        account: String,
        plan_id: String,
        selection_name: String,
        role_arn: String,
        tag_key: String,
        tag_value: String,
    },
    #[serde(rename_all = "camelCase")]
    DeleteBackupSelection {
        account: String,
        plan_id: String,
        selection_id: String,
        selection_name: String,
    },
    #[serde(rename_all = "camelCase")]
    StopWorkspace {
        account: String,
        workspace: String,
        /// `ec2` or `sagemaker`.
        workspace_kind: String,
        instance_id: String,
    },
    /// Sets (or, with `remove`, removes) the backup tag on a workspace's resources.
    #[serde(rename_all = "camelCase")]
    TagWorkspace {
        account: String,
        workspace: String,
        workspace_kind: String,
        /// EC2 instance and volume ids, or the notebook's ARN.
        resources: Vec<String>,
        key: String,
        value: String,
        remove: bool,
    },
    #[serde(rename_all = "camelCase")]
    Notify {
        account: String,
        topic_arn: String,
        subject: String,
        message: String,
        /// Remembered once sent, so the same notification is not sent twice in a period.
        mark: String,
    },
}

impl Change {
    /// The resource the change is about, for filtering and explanations.
    pub fn target(&self) -> String {
        match self {
            Change::LfGrant {
                principal,
                resource,
                ..
            }
            | Change::LfRevoke {
                principal,
                resource,
                ..
            } => format!("{principal} on {}", resource_label(resource)),
            Change::PutRolePolicy {
                role_arn,
                policy_name,
                ..
            }
            | Change::DeleteRolePolicy {
                role_arn,
                policy_name,
                ..
            } => format!("{role_arn} policy {policy_name}"),
            Change::UpdateTrustPolicy { role_arn, .. } => format!("{role_arn} trust policy"),
            Change::StopWorkspace { workspace, .. } | Change::TagWorkspace { workspace, .. } => {
                format!("workspace {workspace}")
            }
            Change::Notify { topic_arn, .. } => topic_arn.clone(),
            Change::UpdateBackupPlan {
                account, plan_name, ..
            } => format!("backup plan {plan_name} of {account}"),
            Change::CreateBackupSelection {
                account,
                plan_id,
                selection_name,
                ..
            }
            | Change::DeleteBackupSelection {
                account,
                plan_id,
                selection_name,
                ..
            } => format!("backup selection {selection_name} of plan {plan_id} of {account}"),
        }
    }

    /// The enforcer that applies it.
    pub fn enforcer(&self) -> &'static str {
        match self {
            Change::LfGrant { .. } | Change::LfRevoke { .. } => "lakeformation",
            Change::PutRolePolicy { .. }
            | Change::DeleteRolePolicy { .. }
            | Change::UpdateTrustPolicy { .. } => "iam",
            Change::StopWorkspace { .. } => "compute",
            Change::TagWorkspace { .. } => "tagging",
            Change::Notify { .. } => "sns",
            Change::UpdateBackupPlan { .. }
            | Change::CreateBackupSelection { .. }
            | Change::DeleteBackupSelection { .. } => "backup",
        }
    }

    /// The collector that reads back what the change alters: after it is applied, that
    /// collector reads again, so the next plan starts from AWS as the change left it.
    pub fn read_back_by(&self) -> Option<Source> {
        match self {
            Change::LfGrant { .. } | Change::LfRevoke { .. } => Some(Source::DataLake),
            Change::PutRolePolicy { .. }
            | Change::DeleteRolePolicy { .. }
            | Change::UpdateTrustPolicy { .. } => Some(Source::Iam),
            Change::StopWorkspace { .. }
            | Change::TagWorkspace { .. }
            | Change::UpdateBackupPlan { .. }
            | Change::CreateBackupSelection { .. }
            | Change::DeleteBackupSelection { .. } => Some(Source::Workspaces),
            Change::Notify { .. } => None,
        }
    }

    /// The collectors whose facts the change rests on: while any of them is degraded (failed,
    /// incomplete, or held back by the shrink limit), the change waits for a whole pass.
    pub fn depends_on(&self) -> &'static [Source] {
        use Source::*;
        const ACCESS: &[Source] = &[Projects, Identity, Trails, DataLake, Iam, Workspaces];
        const BUDGET_DENY: &[Source] = &[Projects, Budgets, Iam];
        match self {
            Change::PutRolePolicy { policy_name, .. }
            | Change::DeleteRolePolicy { policy_name, .. }
                if policy_name == BUDGET_DENY_POLICY =>
            {
                BUDGET_DENY
            }
            Change::LfGrant { .. }
            | Change::LfRevoke { .. }
            | Change::PutRolePolicy { .. }
            | Change::DeleteRolePolicy { .. } => ACCESS,
            Change::UpdateTrustPolicy { .. } => &[Projects, Identity, Iam],
            Change::StopWorkspace { .. } => &[Projects, Budgets, Workspaces],
            Change::TagWorkspace { .. } => &[Projects, Identity, Workspaces],
            // A break-glass alert reports what IAM was read to hold.
            Change::Notify { mark, .. } if mark.starts_with(breakglass::MARK_PREFIX) => &[Iam],
            Change::Notify { .. } => &[Projects, Budgets],
            Change::UpdateBackupPlan { .. }
            | Change::CreateBackupSelection { .. }
            | Change::DeleteBackupSelection { .. } => &[Projects, Identity, Workspaces],
        }
    }

    pub fn verb(&self) -> &'static str {
        match self {
            Change::LfGrant { .. } => "grant",
            Change::LfRevoke { .. } => "revoke",
            Change::PutRolePolicy { .. } => "put-role-policy",
            Change::DeleteRolePolicy { .. } => "delete-role-policy",
            Change::UpdateTrustPolicy { .. } => "update-trust-policy",
            Change::StopWorkspace { .. } => "stop",
            Change::TagWorkspace { remove: false, .. } => "tag",
            Change::TagWorkspace { remove: true, .. } => "untag",
            Change::Notify { .. } => "notify",
            Change::UpdateBackupPlan { .. } => "update-backup-plan",
            Change::CreateBackupSelection { .. } => "create-backup-selection",
            Change::DeleteBackupSelection { .. } => "delete-backup-selection",
        }
    }
}

/// A decision a plan item rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Justification {
    pub request: RequestSpec,
    pub decision: Decision,
    pub reasons: Vec<String>,
    /// Policies that failed to evaluate (or why the request could not be asked). A decision
    /// with errors never causes a change but the closed one: it grants nothing.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub errors: Vec<String>,
    /// Where the decision was logged, once `Plan::record` has logged it.
    #[serde(rename = "logSeq", skip_serializing_if = "Option::is_none", default)]
    pub log_seq: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanItem {
    /// Stable: the same change always has the same id.
    pub id: String,
    pub change: Change,
    pub reason: String,
    pub decisions: Vec<Justification>,
    /// Whether the change takes access away (a revoke, a narrower or deleted data-access
    /// policy), and whose: what the blast-radius limits count.
    #[serde(default, skip_serializing_if = "Revokes::is_nothing")]
    pub revokes: Revokes,
    /// The users whose access the change alters (the owners of the role's workspaces):
    /// none of them may approve it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affects: Vec<String>,
    /// Why the change waits for an admin's approval whatever the limits say (a revocation on
    /// a quarantined dataset): the facts behind it are in doubt, so a human looks first.
    #[serde(
        default,
        rename = "needsApproval",
        skip_serializing_if = "Option::is_none"
    )]
    pub needs_approval: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    #[serde(rename = "policyVersion")]
    pub policy_version: String,
    pub items: Vec<PlanItem>,
    /// What could not be planned and why (missing settings, malformed observations).
    pub warnings: Vec<String>,
    /// How many Cedar decisions the plan took.
    pub decisions: u64,
    /// How many Lake Formation grants tregov governs now (held by governed roles, or by
    /// anyone not protected on a governed dataset): what revocations of grants tregov made
    /// are a fraction of.
    #[serde(rename = "governedGrants", default)]
    pub governed_grants: u64,
    /// How many break-glass grants the plan leaves open (admitted by a trust policy).
    #[serde(rename = "breakGlassOpen", default)]
    pub break_glass_open: u64,
}

/// What access a change takes away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Revokes {
    #[default]
    Nothing,
    /// Access tregov itself granted (or its own data-access policy): losing it at scale is
    /// the harm the fraction limit bounds.
    Granted,
    /// Access nothing explains (an out-of-band grant, one from before tregov): reverting it
    /// is drift correction, bounded only by the count limit.
    Unexplained,
}

impl Revokes {
    pub fn is_nothing(&self) -> bool {
        *self == Revokes::Nothing
    }
}

impl PlanItem {
    /// The same item under another id (tests that name their items).
    #[cfg(test)]
    pub(crate) fn with_id(mut self, id: String) -> Self {
        self.id = id;
        self
    }

    /// Whether applying it takes access away.
    pub fn is_revoking(&self) -> bool {
        !self.revokes.is_nothing()
    }

    /// A plan item, its id derived from the change alone: the same change always has the
    /// same id, whatever the reason or decisions behind it.
    pub fn new(change: Change, reason: String, decisions: Vec<Justification>) -> Self {
        let canonical = serde_json::to_vec(&change).unwrap_or_default();
        let id = crate::log::sha256_hex(&canonical)[..12].to_string();
        Self {
            id,
            change,
            reason,
            decisions,
            revokes: Revokes::Nothing,
            affects: Vec::new(),
            needs_approval: None,
        }
    }
}

impl Justification {
    /// Allowed, with every policy evaluated: the only answer that grants or triggers.
    pub fn allows(&self) -> bool {
        self.decision == Decision::Allow && self.errors.is_empty()
    }

    /// Denied, with every policy evaluated: the only answer that lifts a protective response.
    pub fn denies(&self) -> bool {
        self.decision == Decision::Deny && self.errors.is_empty()
    }
}

impl Plan {
    /// Logs every justifying decision (once per distinct request) and stamps the items with
    /// the log sequence numbers, so `tregov why` can explain any change later.
    pub fn record(&mut self, engine: &Engine, origin: &str) -> Result<()> {
        let mut unique: Vec<RequestSpec> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for item in &self.items {
            for j in &item.decisions {
                let key = request_key(&j.request);
                if let std::collections::hash_map::Entry::Vacant(slot) = index.entry(key) {
                    slot.insert(unique.len());
                    unique.push(j.request.clone());
                }
            }
        }
        if unique.is_empty() {
            return Ok(());
        }
        let parsed = unique
            .into_iter()
            .map(|spec| engine.parse(spec))
            .collect::<Result<Vec<_>>>()?;
        let outcomes = engine.decide_batch_logged(&parsed, origin)?;
        for item in &mut self.items {
            for j in &mut item.decisions {
                if let Some(&i) = index.get(&request_key(&j.request)) {
                    j.log_seq = outcomes.get(i).and_then(|o| o.log_seq);
                }
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

fn request_key(spec: &RequestSpec) -> String {
    format!(
        "{}|{}|{}|{}",
        spec.principal, spec.action, spec.resource, spec.context
    )
}

/// The canonical Lake Formation resource of a dataset, in the collectors' JSON form.
pub fn lf_table_resource(database: &str, table: Option<&str>) -> Value {
    match table {
        Some(t) => json!({"table": {"database": database, "name": t, "wildcard": false}}),
        None => json!({"table": {"database": database, "name": null, "wildcard": true}}),
    }
}

fn resource_label(resource: &Value) -> String {
    if let Some(t) = resource.get("table") {
        let db = t["database"].as_str().unwrap_or("?");
        return match t["name"].as_str() {
            Some(n) => format!("table {db}.{n}"),
            None => format!("all tables of {db}"),
        };
    }
    if let Some(d) = resource.get("database") {
        return format!("database {}", d["name"].as_str().unwrap_or("?"));
    }
    resource.to_string()
}

/// `arn:aws:iam::<account>:role/<path/><name>` -> (account, name).
pub fn role_parts(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.splitn(6, ':');
    let (_, _, service, _, account, rest) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if service != "iam" || !rest.starts_with("role/") {
        return None;
    }
    Some((account, rest.rsplit('/').next()?))
}

/// `<account>/<role name>` of a role ARN: the same role whatever its path.
pub fn role_key(arn: &str) -> Option<String> {
    role_parts(arn).map(|(account, name)| format!("{account}/{name}"))
}

/// Computes the plan. Deterministic: the same store, policies and settings give the same
/// items in the same order, and nothing already in the desired state is planned. Roles
/// whose inputs have not changed since the engine's last plan keep their part of it, and
/// the plan is the same as one made afresh.
pub fn plan(engine: &Engine, actual: &ActualState, settings: &PlanSettings) -> Plan {
    plan_scoped(engine, actual, settings, None)
}

/// Like `plan`, with data access planned only for the workspace roles in `scope`
/// (`<account>/<role name>`, see `role_key`):
/// the daemon's fast path, when the trail names the roles an out-of-band change touched.
/// Budgets and backups, which are cheap, are always planned in full.
pub fn plan_scoped(
    engine: &Engine,
    actual: &ActualState,
    settings: &PlanSettings,
    scope: Option<&BTreeSet<String>>,
) -> Plan {
    let graph = engine.graph();
    if let Some(now) = settings.now {
        engine.plan_at(now);
    }
    // One plan at a time catches the memo up and plans over it.
    let mut memo = engine.plan_memo();
    let touched = engine.take_touched();
    let mut decider = Decider::new(engine, settings.now).asking_afresh(touched.everything);
    let protected = Protected::new(&settings.protected_principals, actual);
    let (index, retired) = governed_index(graph, actual, &protected, &mut decider);
    memo.catch_up(touched, &engine.bundle().version, &index, actual);
    let inputs = Inputs {
        graph,
        index: &index,
        actual,
        settings,
        protected: &protected,
    };
    let mut items = data_access::plan_data_access(&inputs, scope, &mut memo, &mut decider);
    drop(memo);
    items.extend(foreign::plan_foreign_grants(&inputs, scope));
    lifetimes::plan_stops(&inputs, &retired, &mut items);
    if let Some(now) = settings.now {
        let dated = engine.dates_within(now, now.saturating_add(engine.expiry_warning_ms()));
        lifetimes::plan_expiry_warnings(&inputs, &dated, &mut decider.warnings, &mut items);
    }
    budgets::plan_budgets(&inputs, &mut decider, &mut items);
    backup::plan_backups(&inputs, &mut decider, &mut items);
    backup_plan::plan_backup_plans(&inputs, &mut decider, &mut items);
    let break_glass_open = breakglass::plan_break_glass(&inputs, &mut decider, &mut items);
    tags::plan_tag_reverts(&inputs, &mut items);
    quarantine::hold_revocations(&inputs, &mut items);
    sort_and_dedup(&mut items);
    decider.remember();
    Plan {
        policy_version: engine.bundle().version.clone(),
        items,
        warnings: std::mem::take(&mut decider.warnings),
        decisions: decider.count,
        governed_grants: foreign::governed_grants(&inputs),
        break_glass_open,
    }
}

/// The graph indexed, with the workspaces that may no longer operate (decided) and the
/// governed roles counting none of their owners.
fn governed_index(
    graph: &EntityGraph,
    actual: &ActualState,
    protected: &Protected,
    decider: &mut Decider,
) -> (
    GraphIndex,
    Vec<(cedar_policy::EntityUid, std::sync::Arc<decider::Verdict>)>,
) {
    let mut index = GraphIndex::build(graph, &mut decider.warnings);
    let retired = lifetimes::retired_workspaces(&index, decider);
    index.govern_roles(
        actual,
        protected,
        &lifetimes::retired_set(&retired),
        &mut decider.warnings,
    );
    (index, retired)
}

/// What every phase reads: the graph and its index, the actual state, the settings.
struct Inputs<'a> {
    graph: &'a EntityGraph,
    index: &'a GraphIndex,
    actual: &'a ActualState,
    settings: &'a PlanSettings,
    protected: &'a Protected,
}

/// A plan's items in order: by enforcer, then target, then id. The sort is stable, so of
/// two items for the same change the one planned first is kept.
fn sort_and_dedup(items: &mut Vec<PlanItem>) {
    // A target is text made on demand: made once per item, not twice per comparison.
    items.sort_by_cached_key(|i| (i.change.enforcer(), i.change.target(), i.id.clone()));
    items.dedup_by(|a, b| a.id == b.id);
}
