//! Inline role policies: the S3 side of data access on workspace roles, and the budget deny
//! on environment-management roles; the trust policy of projects' break-glass roles.

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
                let name = role_in(role_arn, account)?;
                let iam = aws_sdk_iam::Client::new(&self.accounts.sdk(account).await?);
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
                let name = role_in(role_arn, account)?;
                let iam = aws_sdk_iam::Client::new(&self.accounts.sdk(account).await?);
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
            Change::UpdateTrustPolicy {
                account,
                role_arn,
                document,
            } => {
                let name = role_in(role_arn, account)?;
                let iam = aws_sdk_iam::Client::new(&self.accounts.sdk(account).await?);
                iam.update_assume_role_policy()
                    .role_name(name)
                    .policy_document(document.to_string())
                    .send()
                    .await
                    .map_err(|e| describe("iam:UpdateAssumeRolePolicy", &e))?;
                Ok(())
            }
            _ => Err("not an IAM change".into()),
        }
    }
}

/// The name of `role_arn`, which must be a role of `account`: a role of another account
/// named here would be written in this one, under that name.
fn role_in<'a>(role_arn: &'a str, account: &str) -> Result<&'a str, String> {
    match role_parts(role_arn) {
        Some((role_account, name)) if role_account == account => Ok(name),
        Some((role_account, _)) => Err(format!(
            "`{role_arn}` is a role of account `{role_account}`, not of `{account}`: refusing to write it"
        )),
        None => Err(format!("`{role_arn}` is not a role")),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_of_another_account_is_never_written_under_its_name_here() {
        let err = role_in("arn:aws:iam::999999999999:role/x", "111111111111").expect_err("refused");
        assert!(err.contains("`999999999999`"), "{err}");
        assert_eq!(
            role_in("arn:aws:iam::111111111111:role/x", "111111111111"),
            Ok("x")
        );
    }
}
