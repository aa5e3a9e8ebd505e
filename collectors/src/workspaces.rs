//! Workspaces (EC2 instances and SageMaker notebooks) and AWS Backup vaults and plans of each
//! project account, projects read concurrently (at most `concurrency` at once).
//!
//! An instance or notebook is a TRE workspace when the workspace registry (`[workspaces]
//! registry`, see `registry`) lists it: its id, owner, project and type come from there. The
//! role it runs as comes from AWS itself, the EC2 instance profile (`GetInstanceProfile`) or
//! the notebook's `RoleArn`, and must be a role of the project's account. The `tre:` tags are
//! only compared with those facts: a tag that disagrees is drift, reported and never obeyed.
//! `backup=true` is the owner's opt-in (as in TREEHOOSE). Everything is also kept as observed
//! state, volumes included, for the backup tags the planner sets.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};
use tregov_config::aws::Aws;
use tregov_config::{Config, ProjectConfig};
use tregov_engine::collect::{BoxFuture, CollectContext, Collector, Listing, RunReport, Source};
use tregov_engine::events::ObservationKind;
use tregov_engine::plan::kind;
use tregov_engine::store::Observed;

use crate::registry::{tag_drift, Registered, Registry, WorkspaceKind};
use crate::CollectError;

/// What one project account holds.
#[derive(Default)]
struct AccountState {
    workspaces: Vec<Value>,
    observed: Vec<Observed>,
    errors: Vec<String>,
}

pub struct Workspaces {
    config: Config,
    registry: Option<PathBuf>,
    aws: Aws,
}

impl Workspaces {
    pub fn new(config: &Config, aws: &Aws) -> Self {
        Self {
            config: config.clone(),
            registry: config.workspaces.registry.clone(),
            aws: aws.clone(),
        }
    }

    /// The registry; none configured is an empty one (nothing is a workspace).
    fn registry(&self) -> Result<Registry, CollectError> {
        let Some(path) = &self.registry else {
            return Ok(Registry::default());
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| tregov_engine::EngineError::io(path, e))?;
        Ok(Registry::parse(&path.display().to_string(), &text)?)
    }
}

impl Collector for Workspaces {
    fn source(&self) -> Source {
        Source::Workspaces
    }

    fn answers(&self) -> &'static [ObservationKind] {
        &[
            ObservationKind::WorkspaceLifecycle,
            ObservationKind::BackupPlanChange,
        ]
    }

    fn run<'a>(&'a self, ctx: &'a CollectContext<'a>) -> BoxFuture<'a, RunReport> {
        Box::pin(async move {
            let registry = match self.registry() {
                Ok(r) => r,
                // A bad registry changes nothing: the last good workspaces stay.
                Err(e) => return RunReport::failed(Source::Workspaces, e),
            };
            let registry = &registry;
            let kept_plan = self.config.backup.plan_name.as_deref();
            let states: Vec<AccountState> = crate::per_project(&self.config, |p| {
                read_account(&self.aws, p, registry, kept_plan)
            })
            .await;
            let mut report = RunReport::new(Source::Workspaces);
            let mut values = Vec::new();
            let mut listing = Listing::default();
            for state in states {
                report.errors.extend(state.errors);
                listing.observed.extend(state.observed);
                for value in state.workspaces {
                    let id = value["uid"]["id"].as_str().unwrap_or_default().to_string();
                    values.push((format!("workspace `{id}`"), value));
                }
            }
            listing.complete = report.errors.is_empty();
            listing.entities = crate::entities_from_json(values, ctx.schema, &mut report);
            if let Err(e) = ctx.write(Source::Workspaces, listing, &mut report) {
                report.fail(e);
            }
            report
        })
    }
}

fn tags_map<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> BTreeMap<String, String> {
    pairs.map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// One instance or notebook as AWS reports it.
struct Seen<'a> {
    project: &'a ProjectConfig,
    kind: WorkspaceKind,
    /// The instance id or notebook name.
    instance: &'a str,
    /// Where its tags are set: the instance id or the notebook's ARN.
    tag_resource: &'a str,
    status: &'a str,
    tags: &'a BTreeMap<String, String>,
    /// The role it runs as, from the instance profile or the notebook.
    role_arn: Option<&'a str>,
}

impl Seen<'_> {
    fn kind_name(&self) -> &'static str {
        match self.kind {
            WorkspaceKind::Ec2 => "ec2",
            WorkspaceKind::Sagemaker => "sagemaker",
        }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.project.account_id, self.instance)
    }

    fn finding(&self, kind: &str, key: String, message: String, extra: Value) -> Observed {
        tracing::warn!(
            finding = kind,
            project = %self.project.id,
            instance = self.instance,
            message = %message,
            "workspace finding"
        );
        let mut body = json!({"project": self.project.id, "account": self.project.account_id,
            "kind": self.kind_name(), "instance": self.instance,
            "resource": self.tag_resource, "message": message});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        Observed {
            kind: kind.into(),
            key,
            body,
        }
    }
}

/// The workspace entity for what AWS shows and the registry says, and the findings about it
/// (drift, an unregistered workspace, a role outside the project's account).
fn workspace(seen: &Seen<'_>, registry: &Registry, state: &mut AccountState) {
    let Some(entry) = registry.get(&seen.project.id, seen.kind, seen.instance) else {
        if seen.tags.keys().any(|k| k.starts_with("tre:")) {
            state.observed.push(seen.finding(
                kind::WORKSPACE_UNREGISTERED,
                seen.key(),
                format!(
                    "{} `{}` carries `tre:` tags but is not in the workspace registry: not governed",
                    seen.kind_name(),
                    seen.instance
                ),
                json!({}),
            ));
        }
        return;
    };
    let role = seen.role_arn.filter(|role| {
        let account = tregov_engine::plan::role_parts(role).map(|(a, _)| a);
        let ours = account == Some(seen.project.account_id.as_str());
        if !ours {
            state.observed.push(seen.finding(
                kind::WORKSPACE_ROLE_REJECTED,
                seen.key(),
                format!(
                    "workspace `{}` runs as `{role}`, not a role of project `{}`'s account `{}`: nothing is granted to it",
                    entry.id, seen.project.id, seen.project.account_id
                ),
                json!({"workspace": entry.id, "roleArn": role}),
            ));
        }
        ours
    });
    for drift in tag_drift(entry, role, seen.tags) {
        let found = drift
            .found
            .as_deref()
            .map_or("missing".to_string(), |f| format!("`{f}`"));
        state.observed.push(seen.finding(
            kind::WORKSPACE_TAG_DRIFT,
            format!("{}/{}", seen.key(), drift.tag),
            format!(
                "workspace `{}`: tag `{}` is {found}, the registry says `{}`: not obeyed",
                entry.id, drift.tag, drift.expected
            ),
            json!({"workspace": entry.id, "tag": drift.tag, "expected": drift.expected,
                "found": drift.found}),
        ));
    }
    state.workspaces.push(workspace_entity(seen, entry, role));
}

fn workspace_entity(seen: &Seen<'_>, entry: &Registered, role_arn: Option<&str>) -> Value {
    let mut attrs = json!({
        "owner": {"__entity": {"type": "Tre::User", "id": entry.owner}},
        "project": {"__entity": {"type": "Tre::Project", "id": seen.project.id}},
        "workspaceType": {"__entity": {"type": "Tre::WorkspaceType", "id": entry.workspace_type}},
        "kind": seen.kind_name(),
        "status": seen.status,
        "backupOptIn": seen.tags.get("backup").is_some_and(|v| v.eq_ignore_ascii_case("true")),
        "instanceId": seen.instance,
    });
    if let Some(role) = role_arn {
        attrs["roleArn"] = json!(role);
    }
    json!({
        "uid": {"type": "Tre::Workspace", "id": entry.id},
        "attrs": attrs,
        "parents": [{"type": "Tre::Project", "id": seen.project.id}]
    })
}

/// The role an instance profile holds, read from IAM (a profile holds at most one role).
async fn profile_role(
    iam: &aws_sdk_iam::Client,
    profile_arn: &str,
    cache: &mut BTreeMap<String, Option<String>>,
    errors: &mut Vec<String>,
) -> Option<String> {
    if let Some(role) = cache.get(profile_arn) {
        return role.clone();
    }
    let name = profile_arn.rsplit('/').next().unwrap_or_default();
    let role = match iam
        .get_instance_profile()
        .instance_profile_name(name)
        .send()
        .await
    {
        Ok(out) => out
            .instance_profile()
            .and_then(|p| p.roles().first())
            .map(|r| r.arn().to_string()),
        Err(e) => {
            errors.push(CollectError::aws("iam:GetInstanceProfile", profile_arn, e).to_string());
            None
        }
    };
    cache.insert(profile_arn.to_string(), role.clone());
    role
}

async fn read_account(
    aws: &Aws,
    project: &ProjectConfig,
    registry: &Registry,
    kept_plan: Option<&str>,
) -> AccountState {
    let mut state = AccountState::default();
    let sdk = aws.for_role(project.role_arn.as_deref()).await;

    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let iam = aws_sdk_iam::Client::new(&sdk);
    let mut profiles = BTreeMap::new();
    let mut pages = ec2.describe_instances().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                state.errors.push(
                    CollectError::aws("ec2:DescribeInstances", &project.account_id, e).to_string(),
                );
                break;
            }
        };
        for instance in page.reservations().iter().flat_map(|r| r.instances()) {
            let id = instance.instance_id().unwrap_or_default();
            let tags = tags_map(
                instance
                    .tags()
                    .iter()
                    .map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())),
            );
            let status = instance
                .state()
                .and_then(|s| s.name())
                .map(|n| n.as_str().to_string())
                .unwrap_or_default();
            let volumes: Vec<&str> = instance
                .block_device_mappings()
                .iter()
                .filter_map(|m| m.ebs().and_then(|e| e.volume_id()))
                .collect();
            let role = match instance.iam_instance_profile().and_then(|p| p.arn()) {
                Some(profile) => {
                    profile_role(&iam, profile, &mut profiles, &mut state.errors).await
                }
                None => None,
            };
            state.observed.push(Observed {
                kind: kind::EC2_INSTANCE.into(),
                key: format!("{}/{id}", project.account_id),
                body: json!({"project": project.id, "instanceId": id, "state": status,
                    "tags": tags, "volumes": volumes, "roleArn": role}),
            });
            let seen = Seen {
                project,
                kind: WorkspaceKind::Ec2,
                instance: id,
                tag_resource: id,
                status: &status,
                tags: &tags,
                role_arn: role.as_deref(),
            };
            workspace(&seen, registry, &mut state);
        }
    }

    let sm = aws_sdk_sagemaker::Client::new(&sdk);
    let mut pages = sm.list_notebook_instances().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                state.errors.push(
                    CollectError::aws("sagemaker:ListNotebookInstances", &project.account_id, e)
                        .to_string(),
                );
                break;
            }
        };
        for nb in page.notebook_instances() {
            let name = nb.notebook_instance_name().unwrap_or_default();
            let arn = nb.notebook_instance_arn().unwrap_or_default();
            let status = nb
                .notebook_instance_status()
                .map(|s| s.as_str().to_lowercase())
                .unwrap_or_default();
            let tags = match sm.list_tags().resource_arn(arn).send().await {
                Ok(t) => tags_map(
                    t.tags()
                        .iter()
                        .map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())),
                ),
                Err(e) => {
                    state
                        .errors
                        .push(CollectError::aws("sagemaker:ListTags", arn, e).to_string());
                    continue;
                }
            };
            let role = match sm
                .describe_notebook_instance()
                .notebook_instance_name(name)
                .send()
                .await
            {
                Ok(d) => d.role_arn().map(String::from),
                Err(e) => {
                    state.errors.push(
                        CollectError::aws("sagemaker:DescribeNotebookInstance", name, e)
                            .to_string(),
                    );
                    None
                }
            };
            state.observed.push(Observed {
                kind: kind::SAGEMAKER_NOTEBOOK.into(),
                key: format!("{}/{name}", project.account_id),
                body: json!({"project": project.id, "name": name, "arn": arn, "status": status,
                    "tags": tags, "roleArn": role}),
            });
            let seen = Seen {
                project,
                kind: WorkspaceKind::Sagemaker,
                instance: name,
                tag_resource: arn,
                status: &status,
                tags: &tags,
                role_arn: role.as_deref(),
            };
            workspace(&seen, registry, &mut state);
        }
    }

    let backup = aws_sdk_backup::Client::new(&sdk);
    let seen = crate::backup::read_backup(&backup, project, kept_plan).await;
    state.observed.extend(seen.observed);
    state.errors.extend(seen.errors);
    state
}
