//! The data lake: Glue databases and tables (the studies), Lake Formation registered
//! locations, LF-Tags and every Lake Formation permission.
//!
//! A Glue table is a TRE dataset when it names a project (`tre:project`). Its labels
//! (`tre:project`, `tre:classification`, `tre:category`, `tre:maxAccess`, `tre:owner`) come
//! from the Lake Formation LF-Tags on the table (or its database), which only data managers
//! may assign; a label without an LF-Tag falls back to the table's Glue parameter of that
//! name, as a bootstrap, with the safe reading where both are missing (`internal`,
//! `readonly`, `organization`). Either way a change that widens access waits for a data
//! manager (`engine::labels`). A dataset whose location is outside every registered location,
//! or overlaps another dataset's, is quarantined. Permissions are listed unfiltered and kept
//! as observed state for the planner to compare with what the policies allow, with the data
//! lake administrators and tregov's own principal, whose grants it never revokes.

use std::collections::{BTreeMap, BTreeSet};

use cedar_policy::Entity;
use serde_json::{json, Value};
use tregov_config::aws::Aws;
use tregov_config::{Config, DataLakeConfig};
use tregov_engine::collect::{BoxFuture, CollectContext, Collector, Listing, RunReport, Source};
use tregov_engine::events::ObservationKind;
use tregov_engine::labels::{self, LabelSource, Labels};
use tregov_engine::plan::kind;
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
        let locations = clients.locations().await;
        let lf_tags = clients.lf_tags().await;
        // Which labels any resource can carry as LF-Tags: with none of the TRE's defined in
        // the catalog, no table carries one and there is nothing to ask per table. When the
        // LF-Tags cannot be listed, every table is asked (`None`).
        let label_tags: Option<BTreeSet<String>> = lf_tags.as_ref().ok().map(|tags| {
            tags.iter()
                .map(|t| t.key.to_ascii_lowercase())
                .filter(|k| k.starts_with("tre:"))
                .collect()
        });
        // Without the registered locations no location can be judged outside them (taking
        // a failed listing for "none registered" would quarantine every study).
        let registered: Option<Vec<String>> = locations.as_ref().ok().map(|observed| {
            observed
                .iter()
                .filter_map(|o| registered_prefix(&o.key))
                .collect()
        });
        let catalog = match self
            .read_catalog(
                &clients,
                ctx,
                registered.as_deref(),
                label_tags.as_ref(),
                report,
            )
            .await
        {
            Ok(c) => c,
            Err(e) => {
                // The store of accepted labels failed: keep what the store holds.
                report.fail(e);
                return listing_incomplete();
            }
        };
        listing.entities = catalog.entities;
        listing.observed = catalog.observed;
        listing.complete = catalog.complete;
        for part in [
            locations,
            lf_tags,
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
    /// labelled with a configured project) as entities, with the labels `engine::labels`
    /// settled and the locations checked against `registered`.
    async fn read_catalog(
        &self,
        clients: &Clients,
        ctx: &CollectContext<'_>,
        registered: Option<&[String]>,
        label_tags: Option<&BTreeSet<String>>,
        report: &mut RunReport,
    ) -> tregov_engine::Result<Catalog> {
        let mut catalog = Catalog {
            complete: true,
            ..Default::default()
        };
        let databases = match clients.databases().await {
            Ok(d) => d,
            Err(e) => {
                report.fail(e);
                catalog.complete = false;
                return Ok(catalog);
            }
        };
        let mut proposals = Vec::new();
        for db in &databases {
            let tables = match clients.tables(db).await {
                Ok(t) => t,
                Err(e) => {
                    report.fail(e);
                    catalog.complete = false;
                    continue;
                }
            };
            let tags = match label_tags {
                Some(keys) if keys.is_empty() => {
                    tables.iter().map(|_| Ok(BTreeMap::new())).collect()
                }
                _ => {
                    clients
                        .table_lf_tags(db, &tables, self.config.concurrency)
                        .await
                }
            };
            for (table, lf_tags) in tables.iter().zip(tags) {
                let lf_tags = match lf_tags {
                    Ok(t) => t,
                    Err(e) => {
                        // Without its LF-Tags a table's labels are unknown: leave it out
                        // (the listing is incomplete, so the store keeps what it knew).
                        report.fail(e);
                        catalog.complete = false;
                        continue;
                    }
                };
                let params = table.parameters().cloned().unwrap_or_default();
                let location = table
                    .storage_descriptor()
                    .and_then(|s| s.location())
                    .unwrap_or_default()
                    .to_string();
                catalog.observed.push(Observed {
                    kind: "glue-table".into(),
                    key: format!("{db}/{}", table.name()),
                    body: json!({"database": db, "table": table.name(), "location": location,
                        "parameters": params, "lfTags": lf_tags}),
                });
                if let Some(p) = proposal(db, table.name(), &location, &params, &lf_tags) {
                    proposals.push(p);
                }
            }
        }
        self.settle(proposals, ctx, registered, report, &mut catalog)?;
        Ok(catalog)
    }

    /// Settles each proposal's labels, quarantines datasets whose locations are in doubt,
    /// and makes the entities.
    fn settle(
        &self,
        proposals: Vec<Proposal>,
        ctx: &CollectContext<'_>,
        registered: Option<&[String]>,
        report: &mut RunReport,
        catalog: &mut Catalog,
    ) -> tregov_engine::Result<()> {
        let projects: BTreeSet<&str> = self.config.projects.iter().map(|p| p.id.as_str()).collect();
        let bootstrap = !labels::any_accepted(ctx.store)?;
        let mut settled = Vec::new();
        for p in proposals {
            if !projects.contains(p.labels.project.as_str()) {
                report.errors.push(format!(
                    "glue table `{}`: `tre:project` `{}` is not a configured project",
                    p.id, p.labels.project
                ));
                continue;
            }
            let outcome = labels::settle(ctx.store, &p.id, &p.labels, p.source, bootstrap)?;
            if let Some((item, fields)) = &outcome.pending {
                catalog.observed.push(pending_finding(&p, item, fields));
            }
            if let Some(effective) = outcome.effective {
                settled.push((p, effective));
            }
        }
        let doubts = location_doubts(&settled, registered);
        let mut values = Vec::new();
        for (p, labels) in &settled {
            if let Some(why) = doubts.get(p.id.as_str()) {
                tracing::warn!(dataset = %p.id, location = %labels.location, reason = %why, "dataset quarantined");
                catalog.observed.push(Observed {
                    kind: kind::DATASET_QUARANTINED.into(),
                    key: p.id.clone(),
                    body: json!({"dataset": p.id, "location": labels.location,
                        "message": format!("dataset `{}` is quarantined: {why}", p.id)}),
                });
            }
            values.push((format!("glue table `{}`", p.id), dataset_entity(p, labels)));
        }
        catalog.entities = crate::entities_from_json(values, ctx.schema, report);
        Ok(())
    }
}

fn listing_incomplete() -> Listing {
    Listing {
        complete: false,
        ..Default::default()
    }
}

/// A table's proposed labels, before they are settled.
struct Proposal {
    id: String,
    database: String,
    table: String,
    labels: Labels,
    source: LabelSource,
}

/// The labels a table proposes: each from its LF-Tag, else its Glue parameter, else the
/// safe reading. `None` for a table that names no project.
fn proposal(
    db: &str,
    table: &str,
    location: &str,
    params: &std::collections::HashMap<String, String>,
    lf_tags: &BTreeMap<String, String>,
) -> Option<Proposal> {
    let mut from_glue = false;
    let mut label = |name: &str| -> Option<String> {
        // LF-Tag keys are case-insensitive (Lake Formation stores them in lower case).
        if let Some(v) = lf_tags.get(&name.to_ascii_lowercase()) {
            return Some(v.clone());
        }
        let v = params.get(name).cloned();
        from_glue |= v.is_some();
        v
    };
    let project = label("tre:project")?;
    let labels = Labels {
        project,
        classification: label("tre:classification").unwrap_or_else(|| "internal".into()),
        category: label("tre:category").unwrap_or_else(|| "organization".into()),
        max_access: label("tre:maxAccess").unwrap_or_else(|| "readonly".into()),
        owner: label("tre:owner"),
        location: location.to_string(),
    };
    Some(Proposal {
        id: format!("{db}/{table}"),
        database: db.to_string(),
        table: table.to_string(),
        labels,
        source: if from_glue {
            LabelSource::Glue
        } else {
            LabelSource::LfTags
        },
    })
}

fn pending_finding(p: &Proposal, item: &str, fields: &[&str]) -> Observed {
    let fields: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
    Observed {
        kind: kind::DATASET_LABELS_PENDING.into(),
        key: p.id.clone(),
        body: json!({"dataset": p.id, "item": item, "proposed": p.labels,
            "message": format!(
                "dataset `{}`: a change of {} would widen access and waits for a data manager (`tregov approve {item}`)",
                p.id, fields.join(", "))}),
    }
}

/// `arn:aws:s3:::bucket/prefix` (a registered location) as `s3://bucket/prefix/`.
fn registered_prefix(arn: &str) -> Option<String> {
    let path = arn.strip_prefix("arn:aws:s3:::")?;
    Some(directory(&format!("s3://{path}")))
}

/// A location as a directory, so `s3://b/a/` never counts as inside `s3://b/ab/`.
fn directory(location: &str) -> String {
    if location.ends_with('/') {
        location.to_string()
    } else {
        format!("{location}/")
    }
}

/// Why each dataset's location is in doubt: outside every registered location (when they
/// are known), or overlapping another dataset's (one inside the other, or the same).
fn location_doubts<'p>(
    settled: &'p [(Proposal, Labels)],
    registered: Option<&[String]>,
) -> BTreeMap<&'p str, String> {
    let mut doubts = BTreeMap::new();
    let mut by_location: Vec<(String, &str)> = settled
        .iter()
        .map(|(p, l)| (directory(&l.location), p.id.as_str()))
        .collect();
    for (location, id) in by_location.iter().filter(|_| registered.is_some()) {
        let inside = registered
            .into_iter()
            .flatten()
            .any(|r| location.starts_with(r.as_str()));
        if !location.starts_with("s3://") || !inside {
            doubts.insert(
                *id,
                format!(
                    "its location `{location}` is not inside a Lake Formation registered location"
                ),
            );
        }
    }
    // Sorted, a location is followed directly by every location inside it.
    by_location.sort();
    for (i, (outer, outer_id)) in by_location.iter().enumerate() {
        for (inner, inner_id) in by_location[i + 1..]
            .iter()
            .take_while(|(l, _)| l.starts_with(outer.as_str()))
        {
            for (id, other) in [(*outer_id, *inner_id), (*inner_id, *outer_id)] {
                doubts.entry(id).or_insert_with(|| {
                    format!("its location overlaps dataset `{other}`'s (`{outer}` holds `{inner}`)")
                });
            }
        }
    }
    doubts
}

#[derive(Default)]
struct Catalog {
    entities: Vec<Entity>,
    observed: Vec<Observed>,
    complete: bool,
}

/// A TRE dataset as an entity, with its settled labels.
fn dataset_entity(p: &Proposal, labels: &Labels) -> Value {
    let id = &p.id;
    let group = |name: &str| json!({"__entity": {"type": "Tre::AccessGroup", "id": format!("{id}#{name}")}});
    let mut attrs = json!({
        "database": p.database,
        "table": p.table,
        "location": labels.location,
        "classification": labels.classification,
        "project": {"__entity": {"type": "Tre::Project", "id": labels.project}},
        "maxAccess": labels.max_access,
        "category": labels.category,
        "admins": group("admins"),
        "readers": group("readers"),
        "writers": group("writers"),
    });
    if let Some(owner) = &labels.owner {
        attrs["owner"] = json!({"__entity": {"type": "Tre::User", "id": owner}});
    }
    json!({
        "uid": {"type": "Tre::Dataset", "id": id},
        "attrs": attrs,
        "parents": [{"type": "Tre::Project", "id": labels.project}]
    })
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

    /// Each table's LF-Tags (the database's, overridden by the table's own), keys in lower
    /// case, the first value of each; at most `concurrency` calls at once.
    async fn table_lf_tags(
        &self,
        db: &str,
        tables: &[aws_sdk_glue::types::Table],
        concurrency: usize,
    ) -> Vec<Result<BTreeMap<String, String>, CollectError>> {
        use futures::stream::{self, StreamExt};
        // Made before the first await, so the run's boxed future holds no closure (which
        // would make it not `Send` for every lifetime).
        let calls: Vec<_> = tables
            .iter()
            .map(|t| self.lf_tags_of(db, t.name()))
            .collect();
        stream::iter(calls)
            .buffered(concurrency.max(1))
            .collect()
            .await
    }

    async fn lf_tags_of(
        &self,
        db: &str,
        table: &str,
    ) -> Result<BTreeMap<String, String>, CollectError> {
        use aws_sdk_lakeformation::types::{Resource, TableResource};
        let resource = TableResource::builder()
            .database_name(db)
            .name(table)
            .build()
            .map_err(|e| CollectError::Io(e.to_string()))?;
        let out = self
            .lf
            .get_resource_lf_tags()
            .resource(Resource::builder().table(resource).build())
            .send()
            .await
            .map_err(|e| {
                CollectError::aws(
                    "lakeformation:GetResourceLFTags",
                    &format!("{db}/{table}"),
                    e,
                )
            })?;
        let mut tags = BTreeMap::new();
        for pair in out
            .lf_tag_on_database()
            .iter()
            .chain(out.lf_tags_on_table())
        {
            if let Some(value) = pair.tag_values().first() {
                tags.insert(pair.tag_key().to_ascii_lowercase(), value.clone());
            }
        }
        Ok(tags)
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
