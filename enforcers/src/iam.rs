//! Inline role policies: the S3 side of data access on workspace roles, and the budget deny
//! on environment-management roles.

use std::sync::Arc;

use aws_sdk_iam::error::ProvideErrorMetadata;
use futures::future::BoxFuture;
use tregov_engine::plan::{role_parts, Change, PlanItem};

use crate::{describe, Accounts, Enforcer, ItemResult};

pub struct Iam {
    accounts: Arc<Accounts>,
}

impl Iam {
    pub fn new(accounts: Arc<Accounts>) -> Self {
        Self { accounts }
    }

    async fn apply_one(&self, item: &PlanItem) -> Result<(), String> {
        match &item.change {
            Change::PutRolePolicy {
                account,
                role_arn,
                policy_name,
                document,
            } => {
                let (_, name) =
                    role_parts(role_arn).ok_or_else(|| format!("`{role_arn}` is not a role"))?;
                let iam = aws_sdk_iam::Client::new(&self.accounts.sdk(account).await);
                iam.put_role_policy()
                    .role_name(name)
                    .policy_name(policy_name)
                    .policy_document(document.to_string())
                    .send()
                    .await
                    .map_err(|e| describe("iam:PutRolePolicy", &e))?;
                Ok(())
            }
            Change::DeleteRolePolicy {
                account,
                role_arn,
                policy_name,
            } => {
                let (_, name) =
                    role_parts(role_arn).ok_or_else(|| format!("`{role_arn}` is not a role"))?;
                let iam = aws_sdk_iam::Client::new(&self.accounts.sdk(account).await);
                match iam
                    .delete_role_policy()
                    .role_name(name)
                    .policy_name(policy_name)
                    .send()
                    .await
                {
                    Ok(_) => Ok(()),
                    // Already gone is what was wanted.
                    Err(e) if e.code() == Some("NoSuchEntity") => Ok(()),
                    Err(e) => Err(describe("iam:DeleteRolePolicy", &e)),
                }
            }
            _ => Err("not an IAM change".into()),
        }
    }
}

impl Enforcer for Iam {
    fn name(&self) -> &'static str {
        "iam"
    }

    fn apply<'a>(&'a self, items: &'a [&'a PlanItem]) -> BoxFuture<'a, Vec<ItemResult>> {
        Box::pin(crate::each(items, |item| self.apply_one(item)))
    }
}
