//! The data lake: Glue databases and tables (the studies), Lake Formation registered
//! locations, LF-Tags and every Lake Formation permission.
//!
//! A Glue table is a TRE dataset when its parameters carry `tre:project`; `tre:classification`,
//! `tre:maxAccess`, `tre:category` and `tre:owner` fill the rest, with the safe reading where
//! one is missing (`internal`, `readonly`, `organization`). Permissions are listed unfiltered
//! and kept as observed state for the planner to compare with what the policies allow.

use std::collections::BTreeMap;

use cedar_policy::{Entity, Schema};
use serde_json::{json, Value};
use tregov_engine::store::{Observed, Store};

use crate::aws::Aws;
use crate::config::Config;
use crate::{CollectError, RunReport};

pub const PARTITION: &str = "datalake";

pub async fn collect_datalake(
    config: &Config,
    aws: &Aws,
    store: &Store,
    schema: &Schema,
) -> Result<Option<RunReport>, CollectError> {
    let Some(dl) = &config.datalake else {
        return Ok(None);
    };
    let sdk = aws.for_role(dl.role_arn.as_deref()).await;
    let glue = aws_sdk_glue::Client::new(&sdk);
    let lf = aws_sdk_lakeformation::Client::new(&sdk);
    let mut report = RunReport::new("datalake");
    let projects: BTreeMap<&str, &str> = config
        .projects
        .iter()
        .map(|p| (p.id.as_str(), p.account_id.as_str()))
        .collect();

    // Studies from the Glue catalog.
    let mut entities = Vec::new();
    let mut observed = Vec::new();
    let mut databases = Vec::new();
    let mut pages = glue.get_databases().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| CollectError::aws("glue:GetDatabases", &dl.account_id, e))?;
        databases.extend(page.database_list().iter().map(|d| d.name().to_string()));
    }
    for db in &databases {
        let mut pages = glue.get_tables().database_name(db).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| CollectError::aws("glue:GetTables", db, e))?;
            for table in page.table_list() {
                let params = table.parameters().cloned().unwrap_or_default();
                let location = table
                    .storage_descriptor()
                    .and_then(|s| s.location())
                    .unwrap_or_default()
                    .to_string();
                observed.push(Observed {
                    kind: "glue-table".into(),
                    key: format!("{db}/{}", table.name()),
                    body: json!({"database": db, "table": table.name(), "location": location, "parameters": params}),
                });
                let Some(project) = params.get("tre:project") else {
                    continue;
                };
                if !projects.contains_key(project.as_str()) {
                    report.errors.push(format!(
                        "glue table `{db}/{}`: `tre:project` `{project}` is not a configured project",
                        table.name()
                    ));
                    continue;
                }
                let id = format!("{db}/{}", table.name());
                let mut attrs = json!({
                    "database": db,
                    "table": table.name(),
                    "location": location,
                    "classification": params.get("tre:classification").map_or("internal", String::as_str),
                    "project": {"__entity": {"type": "Tre::Project", "id": project}},
                    "maxAccess": params.get("tre:maxAccess").map_or("readonly", String::as_str),
                    "category": params.get("tre:category").map_or("organization", String::as_str),
                    "admins": {"__entity": {"type": "Tre::AccessGroup", "id": format!("{id}#admins")}},
                    "readers": {"__entity": {"type": "Tre::AccessGroup", "id": format!("{id}#readers")}},
                    "writers": {"__entity": {"type": "Tre::AccessGroup", "id": format!("{id}#writers")}},
                });
                if let Some(owner) = params.get("tre:owner") {
                    attrs["owner"] = json!({"__entity": {"type": "Tre::User", "id": owner}});
                }
                let value = json!({
                    "uid": {"type": "Tre::Dataset", "id": id},
                    "attrs": attrs,
                    "parents": [{"type": "Tre::Project", "id": project}]
                });
                match Entity::from_json_value(value, Some(schema)) {
                    Ok(e) => entities.push(e),
                    Err(e) => report.errors.push(format!("glue table `{id}`: {e}")),
                }
            }
        }
    }

    // Registered locations.
    let call = |token| async {
        let out = lf
            .list_resources()
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| CollectError::aws("lakeformation:ListResources", &dl.account_id, e))?;
        let next = out.next_token().map(String::from);
        Ok::<_, CollectError>((out, next))
    };
    for out in crate::all_pages(call).await? {
        for r in out.resource_info_list() {
            if let Some(arn) = r.resource_arn() {
                observed.push(Observed {
                    kind: "lf-location".into(),
                    key: arn.to_string(),
                    body: json!({"resourceArn": arn, "roleArn": r.role_arn()}),
                });
            }
        }
    }

    // LF-Tags.
    let call = |token| async {
        let out = lf
            .list_lf_tags()
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| CollectError::aws("lakeformation:ListLFTags", &dl.account_id, e))?;
        let next = out.next_token().map(String::from);
        Ok::<_, CollectError>((out, next))
    };
    for out in crate::all_pages(call).await? {
        for t in out.lf_tags() {
            observed.push(Observed {
                kind: "lf-tag".into(),
                key: t.tag_key().to_string(),
                body: json!({"key": t.tag_key(), "values": t.tag_values()}),
            });
        }
    }

    // Every permission, unfiltered (filtering by principal alone is not allowed).
    let call = |token| async {
        let out = lf
            .list_permissions()
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| CollectError::aws("lakeformation:ListPermissions", &dl.account_id, e))?;
        let next = out.next_token().map(String::from);
        Ok::<_, CollectError>((out, next))
    };
    for out in crate::all_pages(call).await? {
        for p in out.principal_resource_permissions() {
            let principal = p
                .principal()
                .and_then(|p| p.data_lake_principal_identifier())
                .unwrap_or_default()
                .to_string();
            let resource = p.resource().map(resource_json).unwrap_or(Value::Null);
            let mut permissions: Vec<String> = p
                .permissions()
                .iter()
                .map(|x| x.as_str().to_string())
                .collect();
            permissions.sort();
            let mut grantable: Vec<String> = p
                .permissions_with_grant_option()
                .iter()
                .map(|x| x.as_str().to_string())
                .collect();
            grantable.sort();
            observed.push(Observed {
                kind: "lf-permission".into(),
                key: format!("{principal}|{resource}"),
                body: json!({"principal": principal, "resource": resource,
                    "permissions": permissions, "permissionsWithGrantOption": grantable}),
            });
        }
    }
    report.items = entities.len() as u64 + observed.len() as u64;
    store.write_listing(PARTITION, entities, true, schema)?;
    store.replace_observed(PARTITION, &observed)?;
    Ok(Some(report))
}

/// A Lake Formation resource as canonical JSON (the same resource always prints the same).
pub fn resource_json(r: &aws_sdk_lakeformation::types::Resource) -> Value {
    if let Some(t) = r.table_with_columns() {
        let mut cols: Vec<&str> = t.column_names().iter().map(String::as_str).collect();
        cols.sort_unstable();
        let mut out = json!({"tableWithColumns": {"database": t.database_name(), "name": t.name(), "columns": cols}});
        // Lake Formation reports a table-wide SELECT as all columns but these: without the
        // wildcard the grant could not be addressed (and so not revoked).
        if let Some(w) = t.column_wildcard() {
            let mut excluded: Vec<&str> = w
                .excluded_column_names()
                .iter()
                .map(String::as_str)
                .collect();
            excluded.sort_unstable();
            out["tableWithColumns"]["columnWildcard"] = json!({"excluded": excluded});
        }
        return out;
    }
    if let Some(t) = r.table() {
        return json!({"table": {"database": t.database_name(), "name": t.name(),
            "wildcard": t.table_wildcard().is_some()}});
    }
    if let Some(d) = r.database() {
        return json!({"database": {"name": d.name()}});
    }
    if let Some(l) = r.data_location() {
        return json!({"dataLocation": {"resourceArn": l.resource_arn()}});
    }
    if let Some(p) = r.lf_tag_policy() {
        return json!({"lfTagPolicy": {"resourceType": p.resource_type().as_str(),
            "expression": p.expression().iter().map(|t| json!({"key": t.tag_key(), "values": t.tag_values()})).collect::<Vec<_>>()}});
    }
    if r.catalog().is_some() {
        return json!({"catalog": {}});
    }
    json!({"unknown": format!("{r:?}")})
}
