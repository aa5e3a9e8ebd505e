//! Budget notifications. The caller remembers a sent notification (its `mark`) in the store,
//! so the planner does not ask for it again in the same period.

use std::sync::Arc;

use futures::future::BoxFuture;
use tregov_engine::plan::{Change, PlanItem};

use crate::{describe, Accounts, Enforcer, ItemResult};

pub struct Sns {
    accounts: Arc<Accounts>,
}

impl Sns {
    pub fn new(accounts: Arc<Accounts>) -> Self {
        Self { accounts }
    }
}

impl Sns {
    async fn publish(&self, item: &PlanItem) -> Result<(), String> {
        let Change::Notify {
            account,
            topic_arn,
            subject,
            message,
            ..
        } = &item.change
        else {
            return Err("not a notification".into());
        };
        aws_sdk_sns::Client::new(&self.accounts.sdk_for_alerts(account).await)
            .publish()
            .topic_arn(topic_arn)
            .subject(subject)
            .message(message)
            .send()
            .await
            .map_err(|e| describe("sns:Publish", &e))?;
        Ok(())
    }
}

impl Enforcer for Sns {
    fn name(&self) -> &'static str {
        "sns"
    }

    fn apply<'a>(&'a self, items: &'a [&'a PlanItem]) -> BoxFuture<'a, Vec<ItemResult>> {
        Box::pin(crate::each(items, |item| self.publish(item)))
    }
}
