//! Projects from AWS Organizations: the active accounts under `[organizations] parent_id`
//! (its child OUs too, when `recursive`), each a project named by its `project_tag`.
//!
//! Only the management account (or a delegated administrator) can tag accounts, so the tag
//! is an authoritative fact; an account without it is reported and not governed. A listing
//! that fails, or shrank further than `safety.max_shrink_fraction`, keeps the last good set
//! (see `Discovery`).

use std::collections::BTreeSet;

use tregov_config::aws::Aws;
use tregov_config::{Config, OrganizationsConfig, ProjectConfig};

use crate::{all_pages, CollectError};

/// What one listing found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    pub projects: Vec<ProjectConfig>,
    /// Active accounts under the parent without the project tag.
    pub untagged: Vec<String>,
}

/// Lists the organization: every active account under the parent, its project from its tag.
pub async fn discover(org: &OrganizationsConfig, aws: &Aws) -> Result<Discovered, CollectError> {
    let client = aws_sdk_organizations::Client::new(&aws.for_role(org.role_arn.as_deref()).await);
    let mut parents = vec![org.parent_id.clone()];
    let mut seen_parents = BTreeSet::new();
    let mut found = Discovered::default();
    while let Some(parent) = parents.pop() {
        if !seen_parents.insert(parent.clone()) {
            continue;
        }
        for account in accounts_under(&client, &parent).await? {
            match project_of(&client, org, &account).await? {
                Some(project) => found.projects.push(project),
                None => found.untagged.push(account),
            }
        }
        if org.recursive {
            parents.extend(children_of(&client, &parent).await?);
        }
    }
    found
        .projects
        .sort_by(|a, b| a.account_id.cmp(&b.account_id));
    found.untagged.sort();
    Ok(found)
}

async fn accounts_under(
    client: &aws_sdk_organizations::Client,
    parent: &str,
) -> Result<Vec<String>, CollectError> {
    let pages = all_pages(|token| async move {
        let page = client
            .list_accounts_for_parent()
            .parent_id(parent)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| CollectError::aws("organizations:ListAccountsForParent", parent, e))?;
        let next = page.next_token().map(String::from);
        Ok::<_, CollectError>((page, next))
    })
    .await?;
    Ok(pages
        .iter()
        .flat_map(|p| p.accounts())
        .filter(|a| {
            a.status()
                .is_none_or(|s| *s == aws_sdk_organizations::types::AccountStatus::Active)
        })
        .filter_map(|a| a.id().map(String::from))
        .collect())
}

async fn children_of(
    client: &aws_sdk_organizations::Client,
    parent: &str,
) -> Result<Vec<String>, CollectError> {
    let pages = all_pages(|token| async move {
        let page = client
            .list_organizational_units_for_parent()
            .parent_id(parent)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| {
                CollectError::aws("organizations:ListOrganizationalUnitsForParent", parent, e)
            })?;
        let next = page.next_token().map(String::from);
        Ok::<_, CollectError>((page, next))
    })
    .await?;
    Ok(pages
        .iter()
        .flat_map(|p| p.organizational_units())
        .filter_map(|ou| ou.id().map(String::from))
        .collect())
}

/// The account as a project, when it carries the project tag.
async fn project_of(
    client: &aws_sdk_organizations::Client,
    org: &OrganizationsConfig,
    account: &str,
) -> Result<Option<ProjectConfig>, CollectError> {
    let tags = client
        .list_tags_for_resource()
        .resource_id(account)
        .send()
        .await
        .map_err(|e| CollectError::aws("organizations:ListTagsForResource", account, e))?;
    let id = tags
        .tags()
        .iter()
        .find(|t| t.key() == org.project_tag)
        .map(|t| t.value().to_string())
        .filter(|v| !v.is_empty());
    Ok(id.map(|id| ProjectConfig {
        id,
        account_id: account.to_string(),
        role_arn: org
            .project_role_name
            .as_ref()
            .map(|name| format!("arn:aws:iam::{account}:role/{name}")),
        environment_role_arn: None,
        notify_topic_arn: None,
    }))
}

/// `config` with `discovered` added; an explicit `[[projects]]` entry for the same account
/// or id wins (it may name more: an environment role, a topic).
pub fn with_projects(config: &Config, discovered: &[ProjectConfig]) -> Config {
    let mut merged = config.clone();
    for project in discovered {
        let listed = merged
            .projects
            .iter()
            .any(|p| p.account_id == project.account_id || p.id == project.id);
        if !listed {
            merged.projects.push(project.clone());
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(id: &str, account: &str) -> ProjectConfig {
        ProjectConfig {
            id: id.into(),
            account_id: account.into(),
            role_arn: None,
            environment_role_arn: Some("arn:aws:iam::1:role/env".into()),
            notify_topic_arn: None,
        }
    }

    #[test]
    fn an_explicit_project_wins_over_the_same_account_discovered() {
        let mut config = Config::parse("t.toml", "").expect("config");
        config.projects.push(project("genomics", "111111111111"));
        let mut found = project("renamed", "111111111111");
        found.environment_role_arn = None;
        let merged = with_projects(&config, &[found, project("cardio", "222222222222")]);
        let ids: Vec<&str> = merged.projects.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["genomics", "cardio"]);
    }
}
