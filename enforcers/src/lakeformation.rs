//! Lake Formation grants and revokes, in batches of at most 20 entries per call (the API's
//! limit), all permissions for one principal and resource in one entry.

use std::sync::Arc;

use aws_sdk_lakeformation::types::{
    BatchPermissionsRequestEntry, ColumnWildcard, DataLakePrincipal, DataLocationResource,
    DatabaseResource, Permission, Resource, TableResource, TableWildcard, TableWithColumnsResource,
};
use futures::future::BoxFuture;
use serde_json::Value;
use tregov_engine::plan::{Change, PlanItem};

use crate::{describe, Accounts, Enforcer, ItemResult};

pub const BATCH_LIMIT: usize = 20;

/// Lake Formation's answer to revoking a permission the grantee does not hold
/// ("No permissions revoked. Grantee has no ... permission ...").
pub fn already_revoked(message: &str) -> bool {
    message.starts_with("No permissions revoked")
}

pub struct LakeFormation {
    accounts: Arc<Accounts>,
}

impl LakeFormation {
    pub fn new(accounts: Arc<Accounts>) -> Self {
        Self { accounts }
    }
}

/// The SDK resource for a resource in the collectors' canonical JSON.
pub fn resource_from_json(v: &Value) -> Result<Resource, String> {
    let s = |v: &Value| v.as_str().map(String::from);
    let built = if let Some(t) = v.get("table") {
        let mut b = TableResource::builder().set_database_name(s(&t["database"]));
        if t["wildcard"].as_bool() == Some(true) {
            b = b.table_wildcard(TableWildcard::builder().build());
        } else {
            b = b.set_name(s(&t["name"]));
        }
        Resource::builder().table(b.build().map_err(|e| e.to_string())?)
    } else if let Some(t) = v.get("tableWithColumns") {
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().filter_map(s).collect())
                .unwrap_or_default()
        };
        let columns = strings(&t["columns"]);
        let wildcard = t.get("columnWildcard").map(|w| {
            ColumnWildcard::builder()
                .set_excluded_column_names(Some(strings(&w["excluded"])))
                .build()
        });
        Resource::builder().table_with_columns(
            TableWithColumnsResource::builder()
                .set_database_name(s(&t["database"]))
                .set_name(s(&t["name"]))
                .set_column_names((!columns.is_empty()).then_some(columns))
                .set_column_wildcard(wildcard)
                .build()
                .map_err(|e| e.to_string())?,
        )
    } else if let Some(d) = v.get("database") {
        Resource::builder().database(
            DatabaseResource::builder()
                .set_name(s(&d["name"]))
                .build()
                .map_err(|e| e.to_string())?,
        )
    } else if let Some(l) = v.get("dataLocation") {
        Resource::builder().data_location(
            DataLocationResource::builder()
                .set_resource_arn(s(&l["resourceArn"]))
                .build()
                .map_err(|e| e.to_string())?,
        )
    } else {
        return Err(format!("cannot address Lake Formation resource `{v}`"));
    };
    Ok(built.build())
}

fn entry(item: &PlanItem) -> Result<BatchPermissionsRequestEntry, String> {
    let (principal, resource, permissions, grantable): (&str, &Value, &[String], &[String]) =
        match &item.change {
            Change::LfGrant {
                principal,
                resource,
                permissions,
            } => (principal, resource, permissions, &[]),
            Change::LfRevoke {
                principal,
                resource,
                permissions,
                permissions_with_grant_option,
            } => (
                principal,
                resource,
                permissions,
                permissions_with_grant_option,
            ),
            _ => return Err("not a Lake Formation change".into()),
        };
    let perms = |p: &[String]| p.iter().map(|x| Permission::from(x.as_str())).collect();
    BatchPermissionsRequestEntry::builder()
        .id(&item.id)
        .principal(
            DataLakePrincipal::builder()
                .data_lake_principal_identifier(principal)
                .build(),
        )
        .resource(resource_from_json(resource)?)
        .set_permissions(Some(perms(permissions)))
        .set_permissions_with_grant_option((!grantable.is_empty()).then(|| perms(grantable)))
        .build()
        .map_err(|e| e.to_string())
}

impl LakeFormation {
    /// Grants go only to principals of configured accounts: a grant to any other (an
    /// outside account, `IAM_ALLOWED_PRINCIPALS`) would take the data out of the TRE.
    /// Revoking an outsider's grant takes nothing out, so it is allowed.
    fn may_change(&self, item: &PlanItem) -> Result<(), String> {
        match &item.change {
            Change::LfGrant { principal, .. } if !self.accounts.is_configured_principal(principal) => {
                Err(format!(
                    "`{principal}` is not a principal of a configured account: refusing to grant to it"
                ))
            }
            _ => Ok(()),
        }
    }
}

impl Enforcer for LakeFormation {
    fn name(&self) -> &'static str {
        "lakeformation"
    }

    fn apply<'a>(&'a self, items: &'a [&'a PlanItem]) -> BoxFuture<'a, Vec<ItemResult>> {
        Box::pin(async move {
            let mut results = Vec::new();
            let Some(account) = self.accounts.datalake_account() else {
                return items
                    .iter()
                    .map(|i| ItemResult::failed(i, "no `[datalake]` account configured"))
                    .collect();
            };
            let sdk = match self.accounts.sdk(account).await {
                Ok(sdk) => sdk,
                Err(e) => return items.iter().map(|i| ItemResult::failed(i, &e)).collect(),
            };
            let client = aws_sdk_lakeformation::Client::new(&sdk);
            for grant in [true, false] {
                let mut batch: Vec<(&PlanItem, BatchPermissionsRequestEntry)> = Vec::new();
                for item in items {
                    let is_grant = matches!(item.change, Change::LfGrant { .. });
                    if is_grant != grant {
                        continue;
                    }
                    if let Err(e) = self.may_change(item) {
                        results.push(ItemResult::failed(item, e));
                        continue;
                    }
                    match entry(item) {
                        Ok(e) => batch.push((item, e)),
                        Err(e) => results.push(ItemResult::failed(item, e)),
                    }
                }
                for chunk in batch.chunks(BATCH_LIMIT) {
                    let entries: Vec<_> = chunk.iter().map(|(_, e)| e.clone()).collect();
                    let failures = if grant {
                        client
                            .batch_grant_permissions()
                            .set_entries(Some(entries))
                            .send()
                            .await
                            .map(|o| o.failures().to_vec())
                            .map_err(|e| describe("lakeformation:BatchGrantPermissions", &e))
                    } else {
                        client
                            .batch_revoke_permissions()
                            .set_entries(Some(entries))
                            .send()
                            .await
                            .map(|o| o.failures().to_vec())
                            .map_err(|e| describe("lakeformation:BatchRevokePermissions", &e))
                    };
                    // Failures are matched to entries by id; one that names no entry of this
                    // batch leaves every unmatched entry unconfirmed, so they count as failed.
                    let unmatched = match &failures {
                        Ok(list) => list.iter().any(|f| {
                            let id = f.request_entry().map(|r| r.id());
                            !chunk.iter().any(|(i, _)| Some(i.id.as_str()) == id)
                        }),
                        Err(_) => false,
                    };
                    for (item, _) in chunk {
                        let failure = match &failures {
                            Err(e) => Some(e.clone()),
                            Ok(list)
                                if unmatched
                                    && !list.iter().any(|f| {
                                        f.request_entry().map(|r| r.id()) == Some(item.id.as_str())
                                    }) =>
                            {
                                Some(
                                    "the batch reported a failure for an entry it did not name"
                                        .into(),
                                )
                            }
                            Ok(list) => list
                                .iter()
                                .find(|f| {
                                    f.request_entry().map(|r| r.id()) == Some(item.id.as_str())
                                })
                                .filter(|f| {
                                    // Revoking what is no longer held is the state wanted.
                                    let message = f
                                        .error()
                                        .and_then(|e| e.error_message())
                                        .unwrap_or_default();
                                    grant || !already_revoked(message)
                                })
                                .map(|f| {
                                    let (code, message) = f
                                        .error()
                                        .map(|e| {
                                            (
                                                e.error_code().unwrap_or_default(),
                                                e.error_message().unwrap_or_default(),
                                            )
                                        })
                                        .unwrap_or_default();
                                    format!("{code}: {message}")
                                }),
                        };
                        results.push(match failure {
                            None => ItemResult::ok(item),
                            Some(e) => ItemResult::failed(item, e),
                        });
                    }
                }
            }
            results
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_column_wildcard_grant_can_be_addressed() {
        let r = resource_from_json(&json!({"tableWithColumns": {"database": "db", "name": "t",
            "columns": [], "columnWildcard": {"excluded": ["ssn"]}}}))
        .expect("resource");
        let t = r.table_with_columns().expect("table with columns");
        assert_eq!(
            t.column_wildcard()
                .map(|w| w.excluded_column_names().to_vec()),
            Some(vec!["ssn".to_string()])
        );
        assert!(t.column_names().is_empty());
    }

    #[test]
    fn revoking_what_is_not_held_counts_as_done() {
        assert!(already_revoked(
            "No permissions revoked. Grantee has no SELECT permission and no grantable SELECT permission on resource"
        ));
        assert!(!already_revoked("Access denied"));
    }
}
