//! The data lake: Glue databases and tables (the studies), Lake Formation registered
//! locations, LF-Tags and every Lake Formation permission.
//!
//! A Glue table is a TRE dataset when its parameters carry `tre:project`; `tre:classification`,
//! `tre:maxAccess`, `tre:category` and `tre:owner` fill the rest, with the safe reading where
//! one is missing (`internal`, `readonly`, `organization`). Permissions are listed unfiltered
//! and kept as observed state for the planner to compare with what the policies allow, with
//! the data lake administrators and tregov's own principal, whose grants it never revokes.

use std::collections::BTreeSet;

use cedar_policy::{Entity, Schema};
use serde_json::{json, Value};
use tregov_config::aws::Aws;
use tregov_config::{Config, DataLakeConfig};
use tregov_engine::collect::{BoxFuture, CollectContext, Collector, Listing, RunReport, Source};
use tregov_engine::events::ObservationKind;
use tregov_engine::store::Observed;

use crate::CollectError;

/// Observed kinds the planner reads protected principals from.
pub const ADMIN_KIND: &str = "lf-admin";
pub const OWN_PRINCIPAL_KIND: &str = "tregov-principal";

pub struct DataLake {
    config: Config,
    datalake: DataLakeConfig,
    aws: Aws,
}

impl DataLake {
    pub fn new(config: &Config, datalake: &DataLakeConfig, aws: &Aws) -> Self {
        Self {
            config: config.clone(),
            datalake: datalake.clone(),
            aws: aws.clone(),
        }
    }

    async fn read(&self, ctx: &CollectContext<'_>, report: &mut RunReport) -> Listing {
        let sdk = self.aws.for_role(self.datalake.role_arn.as_deref()).await;
        let clients = Clients {
            glue: aws_sdk_glue::Client::new(&sdk),
            lf: aws_sdk_lakeformation::Client::new(&sdk),
            sts: aws_sdk_sts::Client::new(&sdk),
            account: self.datalake.account_id.clone(),
        };
        let mut listing = Listing {
            complete: true,
            ..Default::default()
        };
        let catalog = self.read_catalog(&clients, ctx.schema, report).await;
        listing.entities = catalog.entities;
        listing.observed = catalog.observed;
        listing.complete = catalog.complete;
        for part in [
            clients.locations().await,
            clients.lf_tags().await,
            clients.permissions().await,
            clients.admins().await,
            clients.own_principal().await,
        ] {
            match part {
                Ok(observed) => listing.observed.extend(observed),
                Err(e) => {
                    report.fail(e);
                    listing.complete = false;
                }
            }
        }
        listing
    }

    /// Studies from the Glue catalog: every table as observed, and the TRE's datasets (tables
    /// whose parameters carry `tre:project`) as entities.
    async fn read_catalog(
        &self,
        clients: &Clients,
        schema: &Schema,
        report: &mut RunReport,
    ) -> Catalog {
        let projects: BTreeSet<&str> = self.config.projects.iter().map(|p| p.id.as_str()).collect();
        let mut catalog = Catalog {
            complete: true,
            ..Default::default()
        };
        let databases = match clients.databases().await {
            Ok(d) => d,
            Err(e) => {
                report.fail(e);
                catalog.complete = false;
                return catalog;
            }
        };
        let mut values = Vec::new();
        for db in &databases {
            let tables = match clients.tables(db).await {
                Ok(t) => t,
                Err(e) => {
                    report.fail(e);
                    catalog.complete = false;
                    continue;
                }
            };
            for table in tables {
                let params = table.parameters().cloned().unwrap_or_default();
                let location = table
                    .storage_descriptor()
                    .and_then(|s| s.location())
                    .unwrap_or_default()
                    .to_string();
                catalog.observed.push(Observed {
                    kind: "glue-table".into(),
                    key: format!("{db}/{}", table.name()),
                    body: json!({"database": db, "table": table.name(), "location": location, "parameters": params}),
                });
                if let Some(value) =
                    dataset_entity(db, table.name(), &location, &params, &projects, report)
                {
                    values.push((format!("glue table `{db}/{}`", table.name()), value));
                }
            }
        }
        catalog.entities = crate::entities_from_json(values, schema, report);
        catalog
    }
}

#[derive(Default)]
struct Catalog {
    entities: Vec<Entity>,
    observed: Vec<Observed>,
    complete: bool,
}

/// A TRE dataset as an entity, from a Glue table's parameters: `tre:classification`,
/// `tre:maxAccess`, `tre:category` and `tre:owner`, with the safe reading where one is missing
/// (`internal`, `readonly`, `organization`). `None` for a table that is not the TRE's.
fn dataset_entity(
    db: &str,
    table: &str,
    location: &str,
    params: &std::collections::HashMap<String, String>,
    projects: &BTreeSet<&str>,
    report: &mut RunReport,
) -> Option<Value> {
    let project = params.get("tre:project")?;
    if !projects.contains(project.as_str()) {
        report.errors.push(format!(
            "glue table `{db}/{table}`: `tre:project` `{project}` is not a configured project"
        ));
        return None;
    }
    let id = format!("{db}/{table}");
    let group = |name: &str| json!({"__entity": {"type": "Tre::AccessGroup", "id": format!("{id}#{name}")}});
    let mut attrs = json!({
        "database": db,
        "table": table,
        "location": location,
        "classification": params.get("tre:classification").map_or("internal", String::as_str),
        "project": {"__entity": {"type": "Tre::Project", "id": project}},
        "maxAccess": params.get("tre:maxAccess").map_or("readonly", String::as_str),
        "category": params.get("tre:category").map_or("organization", String::as_str),
        "admins": group("admins"),
        "readers": group("readers"),
        "writers": group("writers"),
    });
    if let Some(owner) = params.get("tre:owner") {
        attrs["owner"] = json!({"__entity": {"type": "Tre::User", "id": owner}});
    }
    Some(json!({
        "uid": {"type": "Tre::Dataset", "id": id},
        "attrs": attrs,
        "parents": [{"type": "Tre::Project", "id": project}]
    }))
}

impl Collector for DataLake {
    fn source(&self) -> Source {
        Source::DataLake
    }

    fn answers(&self) -> &'static [ObservationKind] {
        &[
            ObservationKind::LakeformationGrant,
            ObservationKind::LakeformationRevoke,
        ]
    }

    fn run<'a>(&'a self, ctx: &'a CollectContext<'a>) -> BoxFuture<'a, RunReport> {
        Box::pin(async move {
            let mut report = RunReport::new(Source::DataLake);
            let listing = self.read(ctx, &mut report).await;
            if let Err(e) = ctx.write(Source::DataLake, listing, &mut report) {
                report.fail(e);
            }
            report
        })
    }
}

/// The data lake account's clients, and each listing they make.
struct Clients {
    glue: aws_sdk_glue::Client,
    lf: aws_sdk_lakeformation::Client,
    sts: aws_sdk_sts::Client,
    account: String,
}

impl Clients {
    async fn databases(&self) -> Result<Vec<String>, CollectError> {
        let mut out = Vec::new();
        let mut pages = self.glue.get_databases().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| CollectError::aws("glue:GetDatabases", &self.account, e))?;
            out.extend(page.database_list().iter().map(|d| d.name().to_string()));
        }
        Ok(out)
    }

    async fn tables(&self, db: &str) -> Result<Vec<aws_sdk_glue::types::Table>, CollectError> {
        let mut out = Vec::new();
        let mut pages = self
            .glue
            .get_tables()
            .database_name(db)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| CollectError::aws("glue:GetTables", db, e))?;
            out.extend(page.table_list().iter().cloned());
        }
        Ok(out)
    }

    /// Registered locations.
    async fn locations(&self) -> Result<Vec<Observed>, CollectError> {
        let call = |token| async {
            let out = self
                .lf
                .list_resources()
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| CollectError::aws("lakeformation:ListResources", &self.account, e))?;
            let next = out.next_token().map(String::from);
            Ok::<_, CollectError>((out, next))
        };
        let mut observed = Vec::new();
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
        Ok(observed)
    }

    async fn lf_tags(&self) -> Result<Vec<Observed>, CollectError> {
        let call = |token| async {
            let out = self
                .lf
                .list_lf_tags()
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| CollectError::aws("lakeformation:ListLFTags", &self.account, e))?;
            let next = out.next_token().map(String::from);
            Ok::<_, CollectError>((out, next))
        };
        let mut observed = Vec::new();
        for out in crate::all_pages(call).await? {
            for t in out.lf_tags() {
                observed.push(Observed {
                    kind: "lf-tag".into(),
                    key: t.tag_key().to_string(),
                    body: json!({"key": t.tag_key(), "values": t.tag_values()}),
                });
            }
        }
        Ok(observed)
    }

    /// Every permission, unfiltered (filtering by principal alone is not allowed).
    async fn permissions(&self) -> Result<Vec<Observed>, CollectError> {
        let call = |token| async {
            let out = self
                .lf
                .list_permissions()
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| {
                    CollectError::aws("lakeformation:ListPermissions", &self.account, e)
                })?;
            let next = out.next_token().map(String::from);
            Ok::<_, CollectError>((out, next))
        };
        let mut observed = Vec::new();
        for out in crate::all_pages(call).await? {
            observed.extend(
                out.principal_resource_permissions()
                    .iter()
                    .map(permission_observed),
            );
        }
        Ok(observed)
    }

    /// The data lake administrators: tregov never plans to revoke their grants.
    async fn admins(&self) -> Result<Vec<Observed>, CollectError> {
        let out = self.lf.get_data_lake_settings().send().await.map_err(|e| {
            CollectError::aws("lakeformation:GetDataLakeSettings", &self.account, e)
        })?;
        let settings = out.data_lake_settings();
        let admins = settings
            .map(|s| s.data_lake_admins().iter().chain(s.read_only_admins()))
            .into_iter()
            .flatten()
            .filter_map(|p| p.data_lake_principal_identifier());
        Ok(admins
            .map(|principal| Observed {
                kind: ADMIN_KIND.into(),
                key: principal.to_string(),
                body: json!({"principal": principal}),
            })
            .collect())
    }

    /// The principal tregov itself acts as here, so it never revokes its own access.
    async fn own_principal(&self) -> Result<Vec<Observed>, CollectError> {
        let me = self
            .sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| CollectError::aws("sts:GetCallerIdentity", &self.account, e))?;
        Ok(me
            .arn()
            .map(|arn| Observed {
                kind: OWN_PRINCIPAL_KIND.into(),
                key: arn.to_string(),
                body: json!({"arn": arn}),
            })
            .into_iter()
            .collect())
    }
}

fn permission_observed(p: &aws_sdk_lakeformation::types::PrincipalResourcePermissions) -> Observed {
    let principal = p
        .principal()
        .and_then(|p| p.data_lake_principal_identifier())
        .unwrap_or_default()
        .to_string();
    let resource = p.resource().map(resource_json).unwrap_or(Value::Null);
    let sorted = |perms: &[aws_sdk_lakeformation::types::Permission]| {
        let mut v: Vec<String> = perms.iter().map(|x| x.as_str().to_string()).collect();
        v.sort();
        v
    };
    Observed {
        kind: "lf-permission".into(),
        key: format!("{principal}|{resource}"),
        body: json!({"principal": principal, "resource": resource,
            "permissions": sorted(p.permissions()),
            "permissionsWithGrantOption": sorted(p.permissions_with_grant_option())}),
    }
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
