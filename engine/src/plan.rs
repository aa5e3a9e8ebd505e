//! Planning: from the entities, the Cedar decisions and the actual state the collectors
//! recorded, the changes that bring AWS to what the policies allow. Pure: no AWS, no clock,
//! no log writes (`Plan::record` logs the decisions that justify the items, separately).
//!
//! Candidates come from the entity graph: a workspace role is only checked against the
//! datasets its owner's access groups, ownership or Open Data reach, plus whatever it holds
//! now (so anything unexplained is decided, and revoked).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use cedar_policy::{Entity, EntityTypeName, EntityUid, EvalResult};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::decide::{Decision, Engine, RequestSpec};
use crate::error::Result;
use crate::store::Observed;

/// The inline policy on a workspace role that gives it the S3 side of its data access.
pub const DATA_ACCESS_POLICY: &str = "tregov-data-access";
/// The inline policy on a project's environment-management role that stops new workspaces.
pub const BUDGET_DENY_POLICY: &str = "tregov-budget-deny";
/// The observed kind under which enforcers remember notifications already sent.
pub const NOTIFICATION_KIND: &str = "notification";

pub const READ_PERMISSIONS: [&str; 2] = ["DESCRIBE", "SELECT"];
pub const WRITE_PERMISSIONS: [&str; 3] = ["ALTER", "DELETE", "INSERT"];

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
    /// The budget period notifications are counted in (e.g. `2026-11`), chosen by the caller
    /// so planning stays free of the clock.
    pub period: String,
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
    TagBackup {
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
            Change::StopWorkspace { workspace, .. } | Change::TagBackup { workspace, .. } => {
                format!("workspace {workspace}")
            }
            Change::Notify { topic_arn, .. } => topic_arn.clone(),
        }
    }

    /// The enforcer that applies it.
    pub fn enforcer(&self) -> &'static str {
        match self {
            Change::LfGrant { .. } | Change::LfRevoke { .. } => "lakeformation",
            Change::PutRolePolicy { .. } | Change::DeleteRolePolicy { .. } => "iam",
            Change::StopWorkspace { .. } => "compute",
            Change::TagBackup { .. } => "tagging",
            Change::Notify { .. } => "sns",
        }
    }

    pub fn verb(&self) -> &'static str {
        match self {
            Change::LfGrant { .. } => "grant",
            Change::LfRevoke { .. } => "revoke",
            Change::PutRolePolicy { .. } => "put-role-policy",
            Change::DeleteRolePolicy { .. } => "delete-role-policy",
            Change::StopWorkspace { .. } => "stop",
            Change::TagBackup { remove: false, .. } => "tag",
            Change::TagBackup { remove: true, .. } => "untag",
            Change::Notify { .. } => "notify",
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

/// What the collectors saw, indexed for planning.
#[derive(Debug, Default)]
pub struct ActualState {
    /// (principal, canonical resource JSON) -> (permissions, grantable permissions).
    lf: BTreeMap<(String, String), (BTreeSet<String>, BTreeSet<String>)>,
    /// Role ARN -> the role as observed.
    roles: BTreeMap<String, Value>,
    /// `account/instance-id` -> instance.
    ec2: BTreeMap<String, Value>,
    /// `account/notebook-name` -> notebook.
    notebooks: BTreeMap<String, Value>,
    marks: BTreeSet<String>,
}

impl ActualState {
    pub fn from_observed(items: &[Observed]) -> Self {
        let mut s = Self::default();
        for o in items {
            match o.kind.as_str() {
                "lf-permission" => {
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
                    let entry = s.lf.entry((principal, resource)).or_default();
                    entry.0.extend(set("permissions"));
                    entry.1.extend(set("permissionsWithGrantOption"));
                }
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
}

impl ActualState {
    /// What `principal` holds, by resource, without scanning everyone else's grants.
    fn held_by<'a>(
        &'a self,
        principal: &'a str,
    ) -> impl Iterator<Item = &'a (String, String)> + 'a {
        self.held_by_with(principal).map(|(k, _)| k)
    }

    #[allow(clippy::type_complexity)]
    fn held_by_with<'a>(
        &'a self,
        principal: &'a str,
    ) -> impl Iterator<
        Item = (
            &'a (String, String),
            &'a (BTreeSet<String>, BTreeSet<String>),
        ),
    > + 'a {
        self.lf
            .range((principal.to_string(), String::new())..)
            .take_while(move |((p, _), _)| p == principal)
    }
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

fn attr_string(e: &Entity, name: &str) -> Option<String> {
    match e.attr(name)? {
        Ok(EvalResult::String(s)) => Some(s),
        _ => None,
    }
}

fn attr_bool(e: &Entity, name: &str) -> bool {
    matches!(e.attr(name), Some(Ok(EvalResult::Bool(true))))
}

fn attr_uid(e: &Entity, name: &str) -> Option<EntityUid> {
    match e.attr(name)? {
        Ok(EvalResult::EntityUid(u)) => Some(u),
        _ => None,
    }
}

fn type_is(uid: &EntityUid, name: &str) -> bool {
    uid.type_name().to_string() == name
}

struct Dataset {
    resource: Value,
    bucket: String,
    prefix: String,
    max_write: bool,
}

/// A budget and one of its response decisions.
type BudgetDecision = (EntityUid, Arc<Verdict>);

/// Per resource: the permissions wanted, the decisions behind them, the dataset.
type Wanted<'a> = (BTreeSet<String>, &'a [Arc<Verdict>], &'a EntityUid);

struct Decider<'a> {
    engine: &'a Engine,
    /// Action uids, parsed once: Cedar parses a type name with its full grammar, which cost
    /// more per decision than a quarter of the evaluation itself.
    actions: HashMap<&'static str, Option<EntityUid>>,
    /// Request shapes (action, principal type, resource type) checked against the schema.
    checked: Vec<(
        &'static str,
        EntityTypeName,
        EntityTypeName,
        std::result::Result<(), String>,
    )>,
    count: u64,
    warnings: Vec<String>,
}

fn action_uid(action: &str) -> Option<EntityUid> {
    crate::entities::uid_from_parts("Tre::Action", action).ok()
}

impl<'a> Decider<'a> {
    fn new(engine: &'a Engine) -> Self {
        Self {
            engine,
            actions: HashMap::new(),
            checked: Vec::new(),
            count: 0,
            warnings: Vec::new(),
        }
    }

    /// A schema-checked request built from uids directly: planning asks hundreds of
    /// thousands of these, and parsing each from text would double the cost.
    fn action(&mut self, action: &'static str) -> Option<EntityUid> {
        self.actions
            .entry(action)
            .or_insert_with(|| action_uid(action))
            .clone()
    }

    fn request(
        &mut self,
        principal: &EntityUid,
        action_name: &'static str,
        resource: &EntityUid,
    ) -> std::result::Result<cedar_policy::Request, String> {
        let action = self
            .action(action_name)
            .ok_or_else(|| format!("bad action `{action_name}`"))?;
        // The schema check of a request depends only on the action, the two entity types and
        // the (always empty) context: it is made once per combination, and its answer, pass
        // or fail, stands for every request of that shape. (The uids themselves are those of
        // stored entities, which the store validated against the schema when they came in.)
        let shape = self.checked.iter().find(|(a, p, r, _)| {
            *a == action_name && p == principal.type_name() && r == resource.type_name()
        });
        let schema = match shape {
            Some((_, _, _, Ok(()))) => None,
            Some((_, _, _, Err(e))) => return Err(e.clone()),
            None => self.engine.bundle().schema.as_ref(),
        };
        let request = cedar_policy::Request::new(
            principal.clone(),
            action,
            resource.clone(),
            cedar_policy::Context::empty(),
            schema,
        )
        .map_err(|e| crate::decide::error_chain(&e));
        if schema.is_some() {
            self.checked.push((
                action_name,
                principal.type_name().clone(),
                resource.type_name().clone(),
                request.as_ref().map(|_| ()).map_err(Clone::clone),
            ));
        }
        request
    }

    fn decide(
        &mut self,
        principal: &EntityUid,
        action: &'static str,
        resource: &EntityUid,
    ) -> Arc<Verdict> {
        let (decision, reasons, errors) = match self.request(principal, action, resource) {
            Ok(request) => {
                self.count += 1;
                let action_uid = self.action(action);
                let outcome = self.engine.decide_request(&request, action_uid.as_ref());
                let errors: Vec<String> = outcome
                    .errors
                    .into_iter()
                    .map(|e| format!("{}: {}", e.policy, e.message))
                    .collect();
                if !errors.is_empty() {
                    self.warnings.push(format!(
                        "`{action}` for `{principal}` on `{resource}` had policy errors; treated as unknown: {}",
                        errors.join("; ")
                    ));
                }
                (outcome.decision, outcome.reasons, errors)
            }
            // A request the schema rejects is denied: never allow what cannot be asked.
            Err(e) => {
                self.warnings.push(format!(
                    "cannot ask `{action}` for `{principal}` on `{resource}`: {e}"
                ));
                (
                    Decision::Deny,
                    Vec::new(),
                    vec![format!("the request could not be asked: {e}")],
                )
            }
        };
        Arc::new(Verdict {
            principal: principal.clone(),
            action,
            resource: resource.clone(),
            decision,
            reasons,
            errors,
        })
    }
}

/// A decision as the planner keeps it: cheap to make (no text is built), turned into a
/// `Justification` only for the few that justify an item.
struct Verdict {
    principal: EntityUid,
    action: &'static str,
    resource: EntityUid,
    decision: Decision,
    reasons: Vec<String>,
    errors: Vec<String>,
}

impl Verdict {
    fn allows(&self) -> bool {
        self.decision == Decision::Allow && self.errors.is_empty()
    }

    fn denies(&self) -> bool {
        self.decision == Decision::Deny && self.errors.is_empty()
    }

    fn justification(&self) -> Justification {
        Justification {
            request: RequestSpec {
                principal: self.principal.to_string(),
                action: format!("Tre::Action::\"{}\"", self.action),
                resource: self.resource.to_string(),
                context: json!({}),
            },
            decision: self.decision,
            reasons: self.reasons.clone(),
            errors: self.errors.clone(),
            log_seq: None,
        }
    }
}

/// Decisions are shared while planning (most never justify an item) and copied only into
/// the items that need them.
fn materialize<'a>(why: impl IntoIterator<Item = &'a Arc<Verdict>>) -> Vec<Justification> {
    why.into_iter().map(|v| v.justification()).collect()
}

fn item(change: Change, reason: String, decisions: Vec<Justification>) -> PlanItem {
    let canonical = serde_json::to_vec(&change).unwrap_or_default();
    let id = crate::log::sha256_hex(&canonical)[..12].to_string();
    PlanItem {
        id,
        change,
        reason,
        decisions,
    }
}

/// Computes the plan. Deterministic: the same store, policies and settings give the same
/// items in the same order, and nothing already in the desired state is planned.
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
    let entities = engine.graph().entities();
    let mut decider = Decider::new(engine);
    let mut items = Vec::new();

    // Index the graph once: datasets by access group, owner and category; workspaces.
    let mut datasets: BTreeMap<EntityUid, Dataset> = BTreeMap::new();
    let mut by_group: HashMap<EntityUid, Vec<EntityUid>> = HashMap::new();
    let mut by_owner: HashMap<EntityUid, Vec<EntityUid>> = HashMap::new();
    let mut by_resource: HashMap<String, EntityUid> = HashMap::new();
    let mut open: Vec<EntityUid> = Vec::new();
    let mut workspaces: Vec<&Entity> = Vec::new();
    let mut budgets: Vec<&Entity> = Vec::new();
    for e in entities.iter() {
        let uid = e.uid();
        if type_is(&uid, "Tre::Dataset") {
            let (Some(database), Some(location)) =
                (attr_string(e, "database"), attr_string(e, "location"))
            else {
                continue;
            };
            let table = attr_string(e, "table");
            let resource = lf_table_resource(&database, table.as_deref());
            let (bucket, prefix) = match location.strip_prefix("s3://") {
                // A prefix without its trailing `/` would also match its siblings
                // (`cohort*` covers `cohort_pii/`).
                Some(rest) => match rest.split_once('/') {
                    Some((b, p)) if p.is_empty() || p.ends_with('/') => {
                        (b.to_string(), p.to_string())
                    }
                    Some((b, p)) => (b.to_string(), format!("{p}/")),
                    None => (rest.to_string(), String::new()),
                },
                None => {
                    decider.warnings.push(format!(
                        "dataset `{uid}`: location `{location}` is not an s3:// URL; no S3 access planned"
                    ));
                    (String::new(), String::new())
                }
            };
            for group in ["admins", "readers", "writers"] {
                if let Some(g) = attr_uid(e, group) {
                    by_group.entry(g).or_default().push(uid.clone());
                }
            }
            match attr_string(e, "category").as_deref() {
                Some("open") => open.push(uid.clone()),
                Some("my") => {
                    if let Some(owner) = attr_uid(e, "owner") {
                        by_owner.entry(owner).or_default().push(uid.clone());
                    }
                }
                _ => {}
            }
            by_resource.insert(resource.to_string(), uid.clone());
            datasets.insert(
                uid.clone(),
                Dataset {
                    resource,
                    bucket,
                    prefix,
                    max_write: attr_string(e, "maxAccess").as_deref() == Some("readwrite"),
                },
            );
        } else if type_is(&uid, "Tre::Workspace") {
            workspaces.push(e);
        } else if type_is(&uid, "Tre::Budget") {
            budgets.push(e);
        }
    }
    workspaces.sort_by_key(|e| e.uid());
    budgets.sort_by_key(|e| e.uid());
    open.sort();
    let open_set: BTreeSet<&EntityUid> = open.iter().collect();

    // Governed principals: every workspace role, and every role tagged as a workspace's.
    let mut role_owners: BTreeMap<String, BTreeSet<EntityUid>> = BTreeMap::new();
    for w in &workspaces {
        let Some(role) = attr_string(w, "roleArn") else {
            continue;
        };
        let entry = role_owners.entry(role).or_default();
        if attr_string(w, "status").as_deref() != Some("terminated") {
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

    // Data access, one role at a time; the roles are shared out over the cores.
    let plan_roles = |roles: &[(&String, &BTreeSet<EntityUid>)],
                      decider: &mut Decider|
     -> Vec<PlanItem> {
        let mut items = Vec::new();
        for &(role, owners) in roles {
            // dataset -> (read justification, write justification if written)
            let mut desired: BTreeMap<EntityUid, (bool, Vec<Arc<Verdict>>)> = BTreeMap::new();
            for owner in owners {
                // Open Data is every user's candidate; the rest come from the owner's groups,
                // their own studies, and what the role holds now (that is how stale grants are
                // revoked). Open Data is walked as is rather than copied into each owner's set.
                let mut others: BTreeSet<&EntityUid> = BTreeSet::new();
                if let Some(groups) = entities.ancestors(owner) {
                    for g in groups {
                        if let Some(ds) = by_group.get(g) {
                            others.extend(ds.iter());
                        }
                    }
                }
                if let Some(ds) = by_owner.get(owner) {
                    others.extend(ds.iter());
                }
                for (_, resource) in actual.held_by(role) {
                    if let Some(d) = by_resource.get(resource) {
                        others.insert(d);
                    }
                }
                others.retain(|d| !open_set.contains(d));
                for d in open.iter().chain(others) {
                    let d = d.clone();
                    let read = decider.decide(owner, "read", &d);
                    // An errored decision grants nothing (and so revokes what is held).
                    if !read.allows() {
                        continue;
                    }
                    // A read-only dataset is never written whatever the policies say, so its
                    // write decision could not change the plan.
                    let writable = datasets.get(&d).is_some_and(|x| x.max_write);
                    let write = writable.then(|| decider.decide(owner, "write", &d));
                    let entry = desired.entry(d).or_insert((false, Vec::new()));
                    entry.1.push(read);
                    if let Some(write) = write.filter(|w| w.allows()) {
                        entry.0 = true;
                        entry.1.push(write);
                    }
                }
            }

            // Lake Formation: grants missing, and everything held that is not desired.
            let mut wanted: BTreeMap<String, Wanted> = BTreeMap::new();
            for (d, (write, why)) in &desired {
                let Some(ds) = datasets.get(d) else { continue };
                let mut perms: BTreeSet<String> =
                    READ_PERMISSIONS.iter().map(|p| p.to_string()).collect();
                if *write {
                    perms.extend(WRITE_PERMISSIONS.iter().map(|p| p.to_string()));
                }
                wanted.insert(ds.resource.to_string(), (perms, why, d));
            }
            for (resource_key, (perms, why, d)) in &wanted {
                let held = actual
                    .lf
                    .get(&(role.clone(), resource_key.clone()))
                    .map(|h| &h.0);
                let missing: Vec<String> = perms
                    .iter()
                    .filter(|p| !held.is_some_and(|h| h.contains(*p)))
                    .cloned()
                    .collect();
                if !missing.is_empty() {
                    let resource = serde_json::from_str(resource_key).unwrap_or(Value::Null);
                    items.push(item(
                        Change::LfGrant {
                            principal: role.clone(),
                            resource,
                            permissions: missing.clone(),
                        },
                        format!("policies allow `{}` on dataset `{d}`", missing.join(", ")),
                        materialize(why.iter()),
                    ));
                }
            }
            for ((_, resource_key), (held, grantable)) in actual.held_by_with(role) {
                let allowed = wanted.get(resource_key).map(|w| &w.0);
                let extra: Vec<String> = held
                    .iter()
                    .filter(|p| !allowed.is_some_and(|a| a.contains(*p)))
                    .cloned()
                    .collect();
                // Workspace roles never pass grants on.
                let extra_grantable: Vec<String> = grantable.iter().cloned().collect();
                if extra.is_empty() && extra_grantable.is_empty() {
                    continue;
                }
                let dataset = by_resource.get(resource_key);
                let mut why = Vec::new();
                let reason = match dataset {
                    Some(d) => {
                        for owner in owners {
                            why.push(decider.decide(owner, "read", d).justification());
                            why.push(decider.decide(owner, "write", d).justification());
                        }
                        if owners.is_empty() {
                            format!("no live workspace uses the role; `{}` on dataset `{d}` is not justified", extra.join(", "))
                        } else {
                            format!(
                                "no policy allows `{}` on dataset `{d}` for the workspace owner",
                                extra.join(", ")
                            )
                        }
                    }
                    None => {
                        "the resource is not a governed dataset; no policy can allow it".to_string()
                    }
                };
                let resource = serde_json::from_str(resource_key).unwrap_or(Value::Null);
                items.push(item(
                    Change::LfRevoke {
                        principal: role.clone(),
                        resource,
                        permissions: extra,
                        permissions_with_grant_option: extra_grantable,
                    },
                    reason,
                    why,
                ));
            }

            // S3 side: the role's inline policy mirrors the Lake Formation grants.
            let Some((account, _)) = role_parts(role) else {
                decider.warnings.push(format!(
                    "`{role}` is not an IAM role ARN; no role policy planned"
                ));
                continue;
            };
            let mut allowed = Vec::new();
            let mut why = Vec::new();
            for (d, (write, j)) in &desired {
                let Some(ds) = datasets.get(d) else { continue };
                if ds.bucket.is_empty() {
                    continue;
                }
                why.extend(j.iter());
                allowed.push((ds, *write));
            }
            let statements = s3_statements(&allowed);
            let current = actual
                .roles
                .get(role)
                .and_then(|r| r["inlinePolicies"].get(DATA_ACCESS_POLICY));
            if statements.is_empty() {
                if current.is_some() {
                    items.push(item(
                        Change::DeleteRolePolicy {
                            account: account.to_string(),
                            role_arn: role.clone(),
                            policy_name: DATA_ACCESS_POLICY.into(),
                        },
                        "no policy allows the role any dataset".into(),
                        Vec::new(),
                    ));
                }
            } else {
                let document = json!({"Version": "2012-10-17", "Statement": statements});
                let size = document.to_string().len();
                if size > IAM_INLINE_POLICY_LIMIT {
                    decider.warnings.push(format!(
                        "`{role}`: the S3 policy for {} dataset(s) is {size} characters, over IAM's {IAM_INLINE_POLICY_LIMIT}-character inline limit; putting it will fail",
                        allowed.len()
                    ));
                }
                if current != Some(&document) {
                    items.push(item(
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
                    ));
                }
            }
        }
        items
    };
    let roles: Vec<(&String, &BTreeSet<EntityUid>)> = role_owners
        .iter()
        .filter(|(role, _)| scope.is_none_or(|s| role_key(role).is_some_and(|k| s.contains(&k))))
        .collect();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let chunk = roles.len().div_ceil(workers).max(32);
    let parts: Vec<(Vec<PlanItem>, u64, Vec<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = roles
            .chunks(chunk.max(1))
            .map(|part| {
                let plan_roles = &plan_roles;
                s.spawn(move || {
                    let mut worker = Decider::new(engine);
                    let items = plan_roles(part, &mut worker);
                    (items, worker.count, worker.warnings)
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
    });
    for (part, count, warnings) in parts {
        items.extend(part);
        decider.count += count;
        decider.warnings.extend(warnings);
    }

    // Budgets.
    let service: Option<EntityUid> = crate::entities::uid_from_parts("Tre::Service", "tregov").ok();
    // Per project: its account and each budget's deny-new-workspaces decision.
    let mut deny_by_project: BTreeMap<String, (String, Vec<BudgetDecision>)> = BTreeMap::new();
    for b in &budgets {
        let Some(service) = &service else { break };
        let uid = b.uid();
        let Some(project) = attr_uid(b, "project") else {
            continue;
        };
        let project_id = project.id().unescaped().to_string();
        let account = settings
            .project_accounts
            .get(&project_id)
            .cloned()
            .unwrap_or_default();

        let notify = decider.decide(service, "budgetNotify", &uid);
        if notify.allows() {
            let mark = format!("budget-notify/{}/{}", uid.id().unescaped(), settings.period);
            if !actual.marks.contains(&mark) {
                match settings.notify_topics.get(&project_id) {
                    Some(topic) => items.push(item(
                        Change::Notify {
                            account: account.clone(),
                            topic_arn: topic.clone(),
                            subject: format!("TRE budget alert: project {project_id}"),
                            message: format!(
                                "Spend on project {project_id} has reached a notification threshold ({}).",
                                notify.reasons.join(", ")
                            ),
                            mark,
                        },
                        format!("budget `{uid}` reached a notification threshold"),
                        vec![notify.justification()],
                    )),
                    None => decider.warnings.push(format!(
                        "budget `{uid}` calls for a notification but project `{project_id}` has no `notify_topic`"
                    )),
                }
            }
        }

        // A project's budgets are weighed together below: one over its threshold is enough.
        let deny = decider.decide(service, "budgetDenyNewWorkspaces", &uid);
        deny_by_project
            .entry(project_id.clone())
            .or_insert_with(|| (account.clone(), Vec::new()))
            .1
            .push((uid.clone(), deny));

        let stop = decider.decide(service, "budgetStopWorkspaces", &uid);
        if stop.allows() {
            for w in &workspaces {
                if attr_uid(w, "project").as_ref() != Some(&project) {
                    continue;
                }
                let status = attr_string(w, "status").unwrap_or_default();
                if !matches!(status.as_str(), "running" | "pending" | "inservice") {
                    continue;
                }
                let (Some(kind), Some(instance_id)) =
                    (attr_string(w, "kind"), attr_string(w, "instanceId"))
                else {
                    continue;
                };
                items.push(item(
                    Change::StopWorkspace {
                        account: account.clone(),
                        workspace: w.uid().id().unescaped().to_string(),
                        workspace_kind: kind,
                        instance_id,
                    },
                    format!("budget `{uid}` reached the threshold for stopping workspaces"),
                    vec![stop.justification()],
                ));
            }
        }
    }

    for (project_id, (account, decisions)) in &deny_by_project {
        let breached: Vec<&(EntityUid, Arc<Verdict>)> =
            decisions.iter().filter(|(_, d)| d.allows()).collect();
        // Lifted only when every budget of the project is known to be back under.
        let all_under = decisions.iter().all(|(_, d)| d.denies());
        let Some(env_role) = settings.environment_roles.get(project_id) else {
            if let Some((uid, _)) = breached.first() {
                decider.warnings.push(format!(
                    "budget `{uid}` calls for denying new workspaces but project `{project_id}` has no `environment_role_arn`"
                ));
            }
            continue;
        };
        let present = actual
            .roles
            .get(env_role)
            .is_some_and(|r| r["inlinePolicies"].get(BUDGET_DENY_POLICY).is_some());
        let env_account = role_parts(env_role)
            .map(|(a, _)| a.to_string())
            .unwrap_or_else(|| account.clone());
        if !breached.is_empty() && !present {
            let names: Vec<String> = breached.iter().map(|(u, _)| format!("`{u}`")).collect();
            items.push(item(
                Change::PutRolePolicy {
                    account: env_account,
                    role_arn: env_role.clone(),
                    policy_name: BUDGET_DENY_POLICY.into(),
                    document: budget_deny_document(),
                },
                format!(
                    "budget {} reached the threshold for denying new workspaces",
                    names.join(", ")
                ),
                materialize(breached.iter().map(|(_, d)| d)),
            ));
        } else if all_under && present {
            items.push(item(
                Change::DeleteRolePolicy {
                    account: env_account,
                    role_arn: env_role.clone(),
                    policy_name: BUDGET_DENY_POLICY.into(),
                },
                format!(
                    "every budget of project `{project_id}` is back under the threshold for denying new workspaces"
                ),
                materialize(decisions.iter().map(|(_, d)| d)),
            ));
        }
    }

    // Backups: the tag the admins' backup plan selects on follows opt-in and policy.
    let (tag_key, tag_value) = &settings.backup_tag;
    if !tag_key.is_empty() {
        for w in &workspaces {
            let uid = w.uid();
            let Some(project) = attr_uid(w, "project") else {
                continue;
            };
            let account = settings
                .project_accounts
                .get(project.id().unescaped())
                .cloned()
                .unwrap_or_default();
            let (Some(kind), Some(instance_id)) =
                (attr_string(w, "kind"), attr_string(w, "instanceId"))
            else {
                continue;
            };
            let status = attr_string(w, "status").unwrap_or_default();
            if status == "terminated" || status == "deleted" {
                continue;
            }
            let (resources, tags) = match kind.as_str() {
                "ec2" => match actual.ec2.get(&format!("{account}/{instance_id}")) {
                    Some(i) => {
                        let mut r = vec![instance_id.clone()];
                        r.extend(
                            i["volumes"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|v| v.as_str().map(String::from)),
                        );
                        (r, i["tags"].clone())
                    }
                    None => continue,
                },
                "sagemaker" => match actual.notebooks.get(&format!("{account}/{instance_id}")) {
                    Some(n) => (
                        vec![n["arn"].as_str().unwrap_or_default().to_string()],
                        n["tags"].clone(),
                    ),
                    None => continue,
                },
                _ => continue,
            };
            let tagged = tags.get(tag_key).and_then(Value::as_str) == Some(tag_value.as_str());
            let owner = attr_uid(w, "owner");
            let decision = owner
                .as_ref()
                .map(|o| decider.decide(o, "enableBackup", &uid));
            if decision.as_ref().is_some_and(|d| !d.errors.is_empty()) {
                // Unknown: leave the backups as they are.
                continue;
            }
            let want = attr_bool(w, "backupOptIn") && decision.as_ref().is_some_and(|d| d.allows());
            if want == tagged {
                continue;
            }
            let why = materialize(decision.iter());
            items.push(item(
                Change::TagBackup {
                    account,
                    workspace: uid.id().unescaped().to_string(),
                    workspace_kind: kind,
                    resources,
                    key: tag_key.clone(),
                    value: tag_value.clone(),
                    remove: !want,
                },
                if want {
                    "the owner opted in and the policies allow backups".into()
                } else {
                    "backups are no longer opted in or allowed".into()
                },
                why,
            ));
        }
    }

    items.sort_by(|a, b| {
        (a.change.enforcer(), a.change.target(), &a.id).cmp(&(
            b.change.enforcer(),
            b.change.target(),
            &b.id,
        ))
    });
    items.dedup_by(|a, b| a.id == b.id);
    Plan {
        policy_version: engine.bundle().version.clone(),
        items,
        warnings: decider.warnings,
        decisions: decider.count,
    }
}

/// IAM's limit on a role's inline policies, in characters (whitespace not counted).
const IAM_INLINE_POLICY_LIMIT: usize = 10_240;

/// The S3 statements for the datasets a role may use: one read statement and one write
/// statement naming every object prefix, and one list statement per bucket with its
/// prefixes as `s3:prefix` conditions. Grouped, each further dataset costs two short strings
/// rather than three statements, which keeps roles with many studies under IAM's size limit.
fn s3_statements(allowed: &[(&Dataset, bool)]) -> Vec<Value> {
    let objects = |ds: &Dataset| format!("arn:aws:s3:::{}/{}*", ds.bucket, ds.prefix);
    let read: BTreeSet<String> = allowed.iter().map(|(ds, _)| objects(ds)).collect();
    let write: BTreeSet<String> = allowed
        .iter()
        .filter(|(_, w)| *w)
        .map(|(ds, _)| objects(ds))
        .collect();
    let mut by_bucket: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (ds, _) in allowed {
        by_bucket
            .entry(ds.bucket.as_str())
            .or_default()
            .insert(format!("{}*", ds.prefix));
    }
    let mut out = Vec::new();
    if !read.is_empty() {
        out.push(json!({"Sid": "TregovRead", "Effect": "Allow",
            "Action": ["s3:GetObject*"], "Resource": read}));
    }
    if !write.is_empty() {
        out.push(json!({"Sid": "TregovWrite", "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:DeleteObject"], "Resource": write}));
    }
    for (bucket, prefixes) in by_bucket {
        // Sids must be alphanumeric: the bucket name's letters and a digest keep them unique.
        let readable: String = bucket
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(40)
            .collect();
        let sid = format!(
            "TregovList{readable}{}",
            &crate::log::sha256_hex(bucket.as_bytes())[..8]
        );
        out.push(json!({"Sid": sid, "Effect": "Allow",
            "Action": ["s3:ListBucket"], "Resource": [format!("arn:aws:s3:::{bucket}")],
            "Condition": {"StringLike": {"s3:prefix": prefixes}}}));
    }
    out
}

fn budget_deny_document() -> Value {
    json!({"Version": "2012-10-17", "Statement": [{
        "Sid": "TregovBudgetDenyNewWorkspaces",
        "Effect": "Deny",
        "Action": ["servicecatalog:ProvisionProduct"],
        "Resource": ["*"]
    }]})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entities::{parse_entities_file, EntityGraph};
    use crate::PolicyBundle;

    fn dataset(bucket: &str, prefix: &str) -> Dataset {
        Dataset {
            resource: Value::Null,
            bucket: bucket.into(),
            prefix: prefix.into(),
            max_write: true,
        }
    }

    #[test]
    fn s3_access_is_grouped_so_a_role_with_many_studies_stays_under_the_iam_limit() {
        let studies: Vec<Dataset> = (0..150)
            .map(|i| {
                dataset(
                    if i % 2 == 0 { "tre-open" } else { "tre-lake" },
                    &format!("db{i}/t/"),
                )
            })
            .collect();
        let allowed: Vec<(&Dataset, bool)> =
            studies.iter().map(|d| (d, d.prefix == "db1/t/")).collect();
        let statements = s3_statements(&allowed);
        // Read, write, and a list statement per bucket.
        assert_eq!(statements.len(), 4);
        assert_eq!(
            statements[0]["Resource"].as_array().map(Vec::len),
            Some(150)
        );
        assert_eq!(
            statements[1]["Resource"],
            json!(["arn:aws:s3:::tre-lake/db1/t/*"])
        );
        assert!(statements[2..]
            .iter()
            .all(|s| s["Condition"]["StringLike"]["s3:prefix"]
                .as_array()
                .is_some_and(|p| p.len() == 75)));
        let document = json!({"Version": "2012-10-17", "Statement": statements});
        assert!(
            document.to_string().len() <= IAM_INLINE_POLICY_LIMIT,
            "{}",
            document.to_string().len()
        );
    }

    const ALICE_ROLE: &str = "arn:aws:iam::111111111111:role/swb-ws-alice-ec2";
    const BOB_ROLE: &str = "arn:aws:iam::111111111111:role/swb-ws-bob-notebook";
    const ENV_ROLE: &str = "arn:aws:iam::111111111111:role/swb-env-mgmt";

    /// The sample TRE, with `edit` applied to its entities JSON first.
    fn engine_with(edit: impl FnOnce(&mut Vec<Value>)) -> Engine {
        let bundle = PolicyBundle::embedded().expect("policies");
        let schema = bundle.schema.clone().expect("schema");
        let mut json: Vec<Value> =
            serde_json::from_str(tregov_policies::SAMPLE_TRE_ENTITIES).expect("sample");
        edit(&mut json);
        let text = serde_json::to_string(&json).expect("json");
        let list = parse_entities_file("sample", &text, Some(&schema)).expect("entities");
        let graph = EntityGraph::from_entities(&list, Some(&schema)).expect("graph");
        Engine::in_memory(bundle, graph)
    }

    fn entity<'a>(json: &'a mut [Value], kind: &str, id: &str) -> &'a mut Value {
        json.iter_mut()
            .find(|e| e["uid"]["type"] == kind && e["uid"]["id"] == id)
            .expect("entity in sample")
    }

    fn settings() -> PlanSettings {
        PlanSettings {
            datalake_account: "999999999999".into(),
            project_accounts: [
                ("proj-genomics".to_string(), "111111111111".to_string()),
                ("proj-cardio".to_string(), "222222222222".to_string()),
            ]
            .into(),
            environment_roles: [("proj-genomics".to_string(), ENV_ROLE.to_string())].into(),
            notify_topics: [(
                "proj-genomics".to_string(),
                "arn:aws:sns:eu-west-2:111111111111:budget".to_string(),
            )]
            .into(),
            backup_tag: ("tregov:backup".into(), "enabled".into()),
            period: "2026-11".into(),
        }
    }

    fn observed_instances() -> Vec<Observed> {
        vec![
            Observed {
                kind: "ec2-instance".into(),
                key: "111111111111/i-0a1b2c3d4e5f60001".into(),
                body: json!({"instanceId": "i-0a1b2c3d4e5f60001", "state": "running",
                    "tags": {"backup": "true"}, "volumes": ["vol-1"]}),
            },
            Observed {
                kind: "iam-role".into(),
                key: ENV_ROLE.into(),
                body: json!({"name": "swb-env-mgmt", "tags": {}, "inlinePolicies": {}}),
            },
        ]
    }

    /// The observed state once every item of `plan` took effect: what the collectors would
    /// report after a successful apply.
    fn observed_after(plan: &Plan, mut observed: Vec<Observed>) -> Vec<Observed> {
        for item in &plan.items {
            match &item.change {
                Change::LfGrant {
                    principal,
                    resource,
                    permissions,
                } => {
                    let key = format!("{principal}|{resource}");
                    match observed.iter_mut().find(|o| o.key == key) {
                        Some(o) => {
                            let mut all: BTreeSet<String> =
                                serde_json::from_value(o.body["permissions"].clone())
                                    .expect("perms");
                            all.extend(permissions.iter().cloned());
                            o.body["permissions"] = json!(all);
                        }
                        None => observed.push(Observed {
                            kind: "lf-permission".into(),
                            key,
                            body: json!({"principal": principal, "resource": resource,
                                "permissions": permissions, "permissionsWithGrantOption": []}),
                        }),
                    }
                }
                Change::LfRevoke {
                    principal,
                    resource,
                    permissions,
                    ..
                } => {
                    let key = format!("{principal}|{resource}");
                    if let Some(o) = observed.iter_mut().find(|o| o.key == key) {
                        let all: BTreeSet<String> =
                            serde_json::from_value(o.body["permissions"].clone()).expect("p");
                        let left: Vec<&String> =
                            all.iter().filter(|p| !permissions.contains(p)).collect();
                        o.body["permissions"] = json!(left);
                        o.body["permissionsWithGrantOption"] = json!([]);
                    }
                    observed.retain(|o| {
                        o.kind != "lf-permission"
                            || o.body["permissions"]
                                .as_array()
                                .is_some_and(|a| !a.is_empty())
                    });
                }
                Change::PutRolePolicy {
                    role_arn,
                    policy_name,
                    document,
                    ..
                } => {
                    if !observed.iter().any(|o| &o.key == role_arn) {
                        observed.push(Observed {
                            kind: "iam-role".into(),
                            key: role_arn.clone(),
                            body: json!({"tags": {}, "inlinePolicies": {}}),
                        });
                    }
                    let o = observed
                        .iter_mut()
                        .find(|o| &o.key == role_arn)
                        .expect("role");
                    o.body["inlinePolicies"][policy_name] = document.clone();
                }
                Change::DeleteRolePolicy {
                    role_arn,
                    policy_name,
                    ..
                } => {
                    if let Some(o) = observed.iter_mut().find(|o| &o.key == role_arn) {
                        if let Some(m) = o.body["inlinePolicies"].as_object_mut() {
                            m.remove(policy_name);
                        }
                    }
                }
                Change::TagBackup {
                    resources,
                    key,
                    value,
                    remove,
                    ..
                } => {
                    for o in observed.iter_mut() {
                        if o.body["instanceId"]
                            .as_str()
                            .is_some_and(|i| resources.iter().any(|r| r == i))
                        {
                            if *remove {
                                o.body["tags"].as_object_mut().expect("tags").remove(key);
                            } else {
                                o.body["tags"][key] = json!(value);
                            }
                        }
                    }
                }
                Change::Notify { mark, .. } => observed.push(Observed {
                    kind: NOTIFICATION_KIND.into(),
                    key: mark.clone(),
                    body: json!({}),
                }),
                Change::StopWorkspace { .. } => {}
            }
        }
        observed
    }

    fn grants_of(plan: &Plan, role: &str) -> Vec<(String, Vec<String>)> {
        plan.items
            .iter()
            .filter_map(|i| match &i.change {
                Change::LfGrant {
                    principal,
                    resource,
                    permissions,
                } if principal == role => Some((resource_label(resource), permissions.clone())),
                _ => None,
            })
            .collect()
    }

    fn all_permissions() -> Vec<String> {
        ["ALTER", "DELETE", "DESCRIBE", "INSERT", "SELECT"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn workspace_roles_get_exactly_what_the_policies_allow_their_owners() {
        let engine = engine_with(|_| {});
        let plan = plan(&engine, &ActualState::default(), &settings());
        let alice = grants_of(&plan, ALICE_ROLE);
        assert_eq!(
            alice,
            vec![
                (
                    "table genomics.alice_scratch".to_string(),
                    all_permissions()
                ),
                ("table genomics.gwas_2024".to_string(), all_permissions()),
                (
                    "table open.census_2021".to_string(),
                    vec!["DESCRIBE".into(), "SELECT".into()]
                ),
            ],
            "gwas-2024 (writer), alice-scratch (her own study), census (open data)"
        );
        // Bob reads gwas-2024 and ukb-cardio (reader lists) and Open Data; never writes.
        let bob = grants_of(&plan, BOB_ROLE);
        assert!(
            bob.iter()
                .all(|(_, p)| p == &vec!["DESCRIBE".to_string(), "SELECT".to_string()]),
            "{bob:?}"
        );
        // Every grant rests on an allowing decision.
        for item in &plan.items {
            if let Change::LfGrant { .. } = item.change {
                assert!(item.decisions.iter().any(|j| j.decision == Decision::Allow));
            }
        }
    }

    #[test]
    fn a_plan_applied_leaves_nothing_to_plan() {
        let engine = engine_with(|_| {});
        let first = plan(
            &engine,
            &ActualState::from_observed(&observed_instances()),
            &settings(),
        );
        assert!(!first.is_empty());
        let after = observed_after(&first, observed_instances());
        let second = plan(&engine, &ActualState::from_observed(&after), &settings());
        assert_eq!(second.items, vec![], "second plan must be empty");
    }

    #[test]
    fn plans_are_deterministic() {
        let engine = engine_with(|_| {});
        let actual = ActualState::from_observed(&observed_instances());
        assert_eq!(
            plan(&engine, &actual, &settings()),
            plan(&engine, &actual, &settings())
        );
    }

    #[test]
    fn an_unexplained_grant_is_revoked_with_the_decision_that_denies_it() {
        let engine = engine_with(|_| {});
        let resource = lf_table_resource("cardio", Some("ukb_cardio"));
        let observed = vec![Observed {
            kind: "lf-permission".into(),
            key: format!("{ALICE_ROLE}|{resource}"),
            body: json!({"principal": ALICE_ROLE, "resource": resource,
                "permissions": ["SELECT"], "permissionsWithGrantOption": ["SELECT"]}),
        }];
        let plan = plan(&engine, &ActualState::from_observed(&observed), &settings());
        let revoke = plan
            .items
            .iter()
            .find(|i| matches!(&i.change, Change::LfRevoke { principal, .. } if principal == ALICE_ROLE))
            .expect("revoke planned");
        match &revoke.change {
            Change::LfRevoke {
                permissions,
                permissions_with_grant_option,
                ..
            } => {
                assert_eq!(permissions, &vec!["SELECT".to_string()]);
                assert_eq!(permissions_with_grant_option, &vec!["SELECT".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        assert!(revoke.decisions.iter().any(|j| j.decision == Decision::Deny
            && j.request.resource == "Tre::Dataset::\"ukb-cardio\""));
    }

    #[test]
    fn a_grant_on_something_that_is_not_a_dataset_is_revoked() {
        let engine = engine_with(|_| {});
        let resource = json!({"database": {"name": "finance"}});
        let observed = vec![Observed {
            kind: "lf-permission".into(),
            key: format!("{BOB_ROLE}|{resource}"),
            body: json!({"principal": BOB_ROLE, "resource": resource,
                "permissions": ["DESCRIBE"], "permissionsWithGrantOption": []}),
        }];
        let plan = plan(&engine, &ActualState::from_observed(&observed), &settings());
        assert!(plan.items.iter().any(|i| matches!(&i.change,
            Change::LfRevoke { principal, resource: r, .. } if principal == BOB_ROLE && r == &resource)));
    }

    #[test]
    fn an_owner_who_becomes_inactive_loses_every_grant_and_the_role_policy() {
        let before = engine_with(|_| {});
        let granted = observed_after(
            &plan(&before, &ActualState::default(), &settings()),
            Vec::new(),
        );
        let engine = engine_with(|json| {
            entity(json, "Tre::User", "alice")["attrs"]["status"] = json!("inactive");
        });
        let plan = plan(&engine, &ActualState::from_observed(&granted), &settings());
        let for_alice: Vec<&str> = plan
            .items
            .iter()
            .filter(|i| i.change.target().starts_with(ALICE_ROLE))
            .map(|i| i.change.verb())
            .collect();
        assert_eq!(
            for_alice,
            vec!["delete-role-policy", "revoke", "revoke", "revoke"]
        );
    }

    #[test]
    fn a_budget_breach_denies_and_stops_and_raising_the_budget_lifts_the_deny() {
        let breached = engine_with(|json| {
            entity(json, "Tre::Budget", "proj-genomics")["attrs"]["actualCents"] = json!(1_000_000);
        });
        let plan1 = plan(
            &breached,
            &ActualState::from_observed(&observed_instances()),
            &settings(),
        );
        let verbs: Vec<(&str, String)> = plan1
            .items
            .iter()
            .filter(|i| {
                !matches!(i.change.enforcer(), "lakeformation" | "tagging")
                    && !i.change.target().contains("tregov-data-access")
            })
            .map(|i| (i.change.verb(), i.change.target()))
            .collect();
        assert!(
            verbs.contains(&(
                "put-role-policy",
                format!("{ENV_ROLE} policy {BUDGET_DENY_POLICY}")
            )),
            "{verbs:?}"
        );
        assert!(
            verbs.contains(&("stop", "workspace ws-alice-ec2".into())),
            "{verbs:?}"
        );
        assert!(
            verbs.contains(&("stop", "workspace ws-bob-notebook".into())),
            "{verbs:?}"
        );
        assert!(
            verbs.contains(&("notify", "arn:aws:sns:eu-west-2:111111111111:budget".into())),
            "{verbs:?}"
        );

        let after = observed_after(&plan1, observed_instances());
        let raised = engine_with(|json| {
            entity(json, "Tre::Budget", "proj-genomics")["attrs"]["actualCents"] = json!(1_000_000);
            entity(json, "Tre::Budget", "proj-genomics")["attrs"]["limitCents"] = json!(2_000_000);
        });
        let plan2 = plan(&raised, &ActualState::from_observed(&after), &settings());
        let budget: Vec<&str> = plan2
            .items
            .iter()
            .filter(|i| {
                i.change.target().contains(BUDGET_DENY_POLICY) || i.change.verb() == "notify"
            })
            .map(|i| i.change.verb())
            .collect();
        assert_eq!(
            budget,
            vec!["delete-role-policy"],
            "the deny is lifted; the notification is not repeated"
        );
    }

    #[test]
    fn backup_tags_follow_opt_in_and_policy() {
        let engine = engine_with(|_| {});
        let plan1 = plan(
            &engine,
            &ActualState::from_observed(&observed_instances()),
            &settings(),
        );
        let tag = plan1
            .items
            .iter()
            .find(|i| i.change.verb() == "tag")
            .expect("alice opted in on an approved type");
        match &tag.change {
            Change::TagBackup { resources, .. } => {
                assert_eq!(
                    resources,
                    &vec!["i-0a1b2c3d4e5f60001".to_string(), "vol-1".to_string()]
                );
            }
            other => panic!("{other:?}"),
        }
        let tagged = observed_after(&plan1, observed_instances());
        let opted_out = engine_with(|json| {
            entity(json, "Tre::Workspace", "ws-alice-ec2")["attrs"]["backupOptIn"] = json!(false);
        });
        let plan2 = plan(
            &opted_out,
            &ActualState::from_observed(&tagged),
            &settings(),
        );
        assert!(plan2.items.iter().any(|i| i.change.verb() == "untag"));
    }

    #[test]
    fn a_forbid_that_fails_to_evaluate_grants_nothing() {
        // Cedar skips an erroring forbid, so the permits win: Allow, with an error.
        let mut sources = crate::policies::embedded_sources();
        sources.push(crate::PolicySource {
            name: "broken.cedar".into(),
            text: "@id(\"overflowing-forbid\")\nforbid (principal, action == Tre::Action::\"read\", resource)\nwhen { 9223372036854775807 + 1 > 0 };\n".into(),
        });
        let bundle = PolicyBundle::from_sources(Some(crate::policies::embedded_schema()), sources)
            .expect("policies");
        let sample = engine_with(|_| {});
        let engine = Engine::in_memory(bundle, sample.graph().clone());
        let plan = plan(&engine, &ActualState::default(), &settings());
        assert_eq!(grants_of(&plan, ALICE_ROLE), vec![], "{:#?}", plan.items);
        assert!(
            plan.warnings
                .iter()
                .any(|w| w.contains("overflowing-forbid")),
            "{:?}",
            plan.warnings
        );
    }

    #[test]
    fn one_budget_over_its_threshold_keeps_the_deny_whatever_the_project_s_other_budgets_say() {
        let engine = engine_with(|json| {
            entity(json, "Tre::Budget", "proj-genomics")["attrs"]["actualCents"] = json!(1_000_000);
            let mut second = entity(json, "Tre::Budget", "proj-genomics").clone();
            second["uid"]["id"] = json!("proj-genomics/compute");
            second["attrs"]["actualCents"] = json!(0);
            json.push(second);
        });
        for observed in [observed_instances(), {
            let mut o = observed_instances();
            o[1].body["inlinePolicies"][BUDGET_DENY_POLICY] = budget_deny_document();
            o
        }] {
            let present = observed[1].body["inlinePolicies"]
                .get(BUDGET_DENY_POLICY)
                .is_some();
            let plan = plan(&engine, &ActualState::from_observed(&observed), &settings());
            let deny: Vec<&str> = plan
                .items
                .iter()
                .filter(|i| i.change.target().contains(BUDGET_DENY_POLICY))
                .map(|i| i.change.verb())
                .collect();
            let expected: Vec<&str> = if present {
                vec![]
            } else {
                vec!["put-role-policy"]
            };
            assert_eq!(deny, expected);
        }
    }

    #[test]
    fn role_arns_split_into_account_and_name() {
        assert_eq!(
            role_parts("arn:aws:iam::111111111111:role/a/b/swb-ws"),
            Some(("111111111111", "swb-ws"))
        );
        assert_eq!(role_parts("arn:aws:s3:::bucket"), None);
    }
}
