//! Workspaces: stopping EC2 instances and SageMaker notebooks, and the backup tag on them.

use std::sync::Arc;

use aws_sdk_ec2::error::ProvideErrorMetadata;
use futures::future::BoxFuture;
use tregov_engine::plan::{Change, PlanItem};

use crate::{describe, Accounts, Enforcer, ItemResult};

pub struct Compute {
    accounts: Arc<Accounts>,
}

impl Compute {
    pub fn new(accounts: Arc<Accounts>) -> Self {
        Self { accounts }
    }

    async fn stop(&self, item: &PlanItem) -> Result<(), String> {
        let Change::StopWorkspace {
            account,
            workspace_kind,
            instance_id,
            ..
        } = &item.change
        else {
            return Err("not a stop".into());
        };
        let sdk = self.accounts.sdk(account).await?;
        match workspace_kind.as_str() {
            "ec2" => {
                // Stopping a stopped instance succeeds, so this is idempotent as it is.
                aws_sdk_ec2::Client::new(&sdk)
                    .stop_instances()
                    .instance_ids(instance_id)
                    .send()
                    .await
                    .map_err(|e| describe("ec2:StopInstances", &e))?;
                Ok(())
            }
            "sagemaker" => {
                let sm = aws_sdk_sagemaker::Client::new(&sdk);
                match sm
                    .stop_notebook_instance()
                    .notebook_instance_name(instance_id)
                    .send()
                    .await
                {
                    Ok(_) => Ok(()),
                    // A notebook that is already stopping or stopped cannot be stopped again.
                    Err(e) if e.code() == Some("ValidationException") => {
                        let status = sm
                            .describe_notebook_instance()
                            .notebook_instance_name(instance_id)
                            .send()
                            .await
                            .ok()
                            .and_then(|d| {
                                d.notebook_instance_status().map(|s| s.as_str().to_string())
                            });
                        match status.as_deref() {
                            Some("Stopped" | "Stopping") => Ok(()),
                            _ => Err(describe("sagemaker:StopNotebookInstance", &e)),
                        }
                    }
                    Err(e) => Err(describe("sagemaker:StopNotebookInstance", &e)),
                }
            }
            other => Err(format!(
                "workspaces of kind `{other}` cannot be stopped by tregov"
            )),
        }
    }
}

impl Enforcer for Compute {
    fn name(&self) -> &'static str {
        "compute"
    }

    fn apply<'a>(&'a self, items: &'a [&'a PlanItem]) -> BoxFuture<'a, Vec<ItemResult>> {
        Box::pin(crate::each(items, |item| self.stop(item)))
    }
}

pub struct Tagging {
    accounts: Arc<Accounts>,
}

impl Tagging {
    pub fn new(accounts: Arc<Accounts>) -> Self {
        Self { accounts }
    }

    async fn tag(&self, item: &PlanItem) -> Result<(), String> {
        let Change::TagWorkspace {
            account,
            workspace_kind,
            resources,
            key,
            value,
            remove,
            ..
        } = &item.change
        else {
            return Err("not a tag change".into());
        };
        let sdk = self.accounts.sdk(account).await?;
        match workspace_kind.as_str() {
            "ec2" => {
                let ec2 = aws_sdk_ec2::Client::new(&sdk);
                let tag = aws_sdk_ec2::types::Tag::builder()
                    .key(key)
                    .value(value)
                    .build();
                if *remove {
                    let tag = aws_sdk_ec2::types::Tag::builder().key(key).build();
                    ec2.delete_tags()
                        .set_resources(Some(resources.clone()))
                        .tags(tag)
                        .send()
                        .await
                        .map_err(|e| describe("ec2:DeleteTags", &e))?;
                } else {
                    ec2.create_tags()
                        .set_resources(Some(resources.clone()))
                        .tags(tag)
                        .send()
                        .await
                        .map_err(|e| describe("ec2:CreateTags", &e))?;
                }
                Ok(())
            }
            "sagemaker" => {
                let sm = aws_sdk_sagemaker::Client::new(&sdk);
                for arn in resources {
                    if *remove {
                        sm.delete_tags()
                            .resource_arn(arn)
                            .tag_keys(key)
                            .send()
                            .await
                            .map_err(|e| describe("sagemaker:DeleteTags", &e))?;
                    } else {
                        let tag = aws_sdk_sagemaker::types::Tag::builder()
                            .key(key)
                            .value(value)
                            .build();
                        sm.add_tags()
                            .resource_arn(arn)
                            .tags(tag)
                            .send()
                            .await
                            .map_err(|e| describe("sagemaker:AddTags", &e))?;
                    }
                }
                Ok(())
            }
            other => Err(format!(
                "workspaces of kind `{other}` cannot be tagged by tregov"
            )),
        }
    }
}

impl Enforcer for Tagging {
    fn name(&self) -> &'static str {
        "tagging"
    }

    fn apply<'a>(&'a self, items: &'a [&'a PlanItem]) -> BoxFuture<'a, Vec<ItemResult>> {
        Box::pin(crate::each(items, |item| self.tag(item)))
    }
}
