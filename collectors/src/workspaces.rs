//! Workspaces (EC2 instances and SageMaker notebooks) and AWS Backup vaults and plans of each
//! project account, projects read concurrently (at most `concurrency` at once).
//!
//! An instance or notebook is a TRE workspace when it carries the tags `tre:workspace` (its
//! id), `tre:owner` (a user id) and `tre:workspace-type`; `backup=true` is the owner's opt-in
//! (as in TREEHOOSE) and `tre:role-arn` names the role an EC2 workspace runs as (a notebook's
//! role is read from SageMaker). Everything is also kept as observed state, volumes included,
//! for the backup tags the planner sets.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use tregov_config::aws::Aws;
use tregov_config::{Config, ProjectConfig};
use tregov_engine::collect::{BoxFuture, CollectContext, Collector, Listing, RunReport, Source};
use tregov_engine::events::ObservationKind;
use tregov_engine::store::Observed;

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
    aws: Aws,
}

impl Workspaces {
    pub fn new(config: &Config, aws: &Aws) -> Self {
        Self {
            config: config.clone(),
            aws: aws.clone(),
        }
    }
}

impl Collector for Workspaces {
    fn source(&self) -> Source {
        Source::Workspaces
    }

    fn answers(&self) -> &'static [ObservationKind] {
        &[ObservationKind::WorkspaceLifecycle]
    }

    fn run<'a>(&'a self, ctx: &'a CollectContext<'a>) -> BoxFuture<'a, RunReport> {
        Box::pin(async move {
            let states: Vec<AccountState> =
                crate::per_project(&self.config, |p| read_account(&self.aws, p)).await;
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

fn workspace_entity(
    project: &ProjectConfig,
    tags: &BTreeMap<String, String>,
    kind: &str,
    status: &str,
    instance_id: &str,
    role_arn: Option<&str>,
) -> Option<Value> {
    let id = tags.get("tre:workspace")?;
    let owner = tags.get("tre:owner")?;
    let wtype = tags.get("tre:workspace-type")?;
    let mut attrs = json!({
        "owner": {"__entity": {"type": "Tre::User", "id": owner}},
        "project": {"__entity": {"type": "Tre::Project", "id": project.id}},
        "workspaceType": {"__entity": {"type": "Tre::WorkspaceType", "id": wtype}},
        "kind": kind,
        "status": status,
        "backupOptIn": tags.get("backup").is_some_and(|v| v.eq_ignore_ascii_case("true")),
        "instanceId": instance_id,
    });
    if let Some(role) = role_arn.or(tags.get("tre:role-arn").map(String::as_str)) {
        attrs["roleArn"] = json!(role);
    }
    Some(json!({
        "uid": {"type": "Tre::Workspace", "id": id},
        "attrs": attrs,
        "parents": [{"type": "Tre::Project", "id": project.id}]
    }))
}

async fn read_account(aws: &Aws, project: &ProjectConfig) -> AccountState {
    let mut state = AccountState::default();
    let sdk = aws.for_role(project.role_arn.as_deref()).await;

    let ec2 = aws_sdk_ec2::Client::new(&sdk);
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
            state.observed.push(Observed {
                kind: "ec2-instance".into(),
                key: format!("{}/{id}", project.account_id),
                body: json!({"project": project.id, "instanceId": id, "state": status,
                    "tags": tags, "volumes": volumes}),
            });
            if let Some(w) = workspace_entity(project, &tags, "ec2", &status, id, None) {
                state.workspaces.push(w);
            }
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
                kind: "sagemaker-notebook".into(),
                key: format!("{}/{name}", project.account_id),
                body: json!({"project": project.id, "name": name, "arn": arn, "status": status,
                    "tags": tags, "roleArn": role}),
            });
            if let Some(w) =
                workspace_entity(project, &tags, "sagemaker", &status, name, role.as_deref())
            {
                state.workspaces.push(w);
            }
        }
    }

    let backup = aws_sdk_backup::Client::new(&sdk);
    match backup.list_backup_vaults().send().await {
        Ok(out) => {
            for v in out.backup_vault_list() {
                let name = v.backup_vault_name().unwrap_or_default();
                state.observed.push(Observed {
                    kind: "backup-vault".into(),
                    key: format!("{}/{name}", project.account_id),
                    body: json!({"project": project.id, "name": name, "arn": v.backup_vault_arn(),
                        "encryptionKeyArn": v.encryption_key_arn()}),
                });
            }
        }
        Err(e) => state
            .errors
            .push(CollectError::aws("backup:ListBackupVaults", &project.account_id, e).to_string()),
    }
    match backup.list_backup_plans().send().await {
        Ok(out) => {
            for p in out.backup_plans_list() {
                let Some(id) = p.backup_plan_id() else {
                    continue;
                };
                let rules = match backup.get_backup_plan().backup_plan_id(id).send().await {
                    Ok(plan) => plan
                        .backup_plan()
                        .map(|bp| {
                            bp.rules()
                                .iter()
                                .map(|r| {
                                    json!({
                                        "name": r.rule_name(),
                                        "vault": r.target_backup_vault_name(),
                                        "schedule": r.schedule_expression(),
                                        "startWindowMinutes": r.start_window_minutes(),
                                        "completionWindowMinutes": r.completion_window_minutes(),
                                        "deleteAfterDays": r.lifecycle().and_then(|l| l.delete_after_days()),
                                        "coldStorageAfterDays": r.lifecycle().and_then(|l| l.move_to_cold_storage_after_days()),
                                    })
                                })
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default(),
                    Err(e) => {
                        state.errors.push(CollectError::aws("backup:GetBackupPlan", id, e).to_string());
                        Vec::new()
                    }
                };
                state.observed.push(Observed {
                    kind: "backup-plan".into(),
                    key: format!("{}/{id}", project.account_id),
                    body: json!({"project": project.id, "id": id, "name": p.backup_plan_name(), "rules": rules}),
                });
            }
        }
        Err(e) => state
            .errors
            .push(CollectError::aws("backup:ListBackupPlans", &project.account_id, e).to_string()),
    }
    state
}
