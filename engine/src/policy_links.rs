//! Template links kept as data: `Tre::PolicyLink` entities in the store (partition
//! `policy-links`), created and removed through the API and CLI by whoever `linkTemplate` /
//! `unlinkTemplate` allows (by default a study's admins and its project's data managers).
//! The engine links them into the policies it decides with (`linked`), as one more links
//! source named `store:policy-links.json`, so a link is named by its id in reasons, and the
//! decision log's copy of the set, and so every replay, holds it.

use std::collections::BTreeMap;

use cedar_policy::EntityUid;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::decide::Engine;
use crate::entities::{uid_from_parts, EntityGraph};
use crate::error::Result;
use crate::links::TemplateLink;
use crate::policies::{PolicyBundle, PolicyKind, PolicySource};
use crate::workflow::{decide_as, write_records, WorkflowError};

/// The store partition links are kept in.
pub const PARTITION: &str = "policy-links";
/// The name of the links source the store's links join the policies as.
pub const SOURCE: &str = "store:policy-links.json";
const TYPE: &str = "Tre::PolicyLink";

/// Whether `uid` is a stored link: writing or deleting one changes the policies.
pub fn is_link_uid(uid: &EntityUid) -> bool {
    crate::entities::is_type(uid, TYPE)
}

/// One stored link, with who made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredLink {
    #[serde(flatten)]
    pub link: TemplateLink,
    pub created_by: String,
}

/// Every link the store holds, by link id.
pub fn stored(graph: &EntityGraph) -> Vec<StoredLink> {
    crate::access_facts::stored_of(graph, TYPE)
        .into_iter()
        .filter_map(|(uid, attrs)| {
            let mut args = BTreeMap::new();
            args.insert(
                "?resource".to_string(),
                attrs["resource"].as_str()?.to_string(),
            );
            if let Some(p) = attrs["principal"].as_str() {
                args.insert("?principal".to_string(), p.to_string());
            }
            Some(StoredLink {
                link: TemplateLink {
                    template_id: attrs["template"].as_str()?.to_string(),
                    link_id: uid.id().unescaped().to_string(),
                    args,
                },
                created_by: crate::entities::uid_from_json(&attrs["createdBy"])
                    .map(|u| u.id().unescaped().to_string())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// `base` with the store's links linked in (`base` itself when there are none, so a set
/// without stored links keeps its version). A link that cannot be linked (its template is
/// gone from `base`) is an error naming it: the caller keeps the set it had.
pub fn linked(base: &PolicyBundle, graph: &EntityGraph) -> Result<PolicyBundle> {
    let links: Vec<TemplateLink> = stored(graph).into_iter().map(|s| s.link).collect();
    with_links(base, &links)
}

fn with_links(base: &PolicyBundle, links: &[TemplateLink]) -> Result<PolicyBundle> {
    let mut sources: Vec<PolicySource> = base
        .sources
        .iter()
        .filter(|s| s.name != SOURCE)
        .cloned()
        .collect();
    if links.is_empty() && sources.len() == base.sources.len() {
        return Ok(base.clone());
    }
    if !links.is_empty() {
        sources.push(PolicySource {
            name: SOURCE.into(),
            text: serde_json::to_string_pretty(links).unwrap_or_default(),
        });
    }
    PolicyBundle::from_sources(base.schema_source.clone(), sources)
}

/// What a study's admin asks for: `template` linked to `dataset` and, when the template has
/// a `?principal` slot, to `user`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewLink {
    pub template: String,
    pub dataset: String,
    #[serde(default)]
    pub user: Option<String>,
}

/// Links a template as `caller`: the `linkTemplate` decision (logged) must allow it, and the
/// policies with the link must load (the template exists, its slots are the ones given, the
/// linked policy validates); the link is then written to the store.
pub fn create(
    engine: &Engine,
    caller: &str,
    new: &NewLink,
) -> std::result::Result<StoredLink, WorkflowError> {
    let dataset = uid_from_parts("Tre::Dataset", &new.dataset)?;
    let user = new
        .user
        .as_deref()
        .map(|u| uid_from_parts("Tre::User", u))
        .transpose()?;
    let template = engine.bundle().meta(&new.template);
    if template.is_none_or(|m| m.kind != PolicyKind::Template) {
        return Err(WorkflowError::Invalid(format!(
            "no template `{}` in the policies",
            new.template
        )));
    }
    let link_id = match &user {
        Some(u) => format!("{}/{}/{}", new.template, new.dataset, u.id().unescaped()),
        None => format!("{}/{}", new.template, new.dataset),
    };
    if engine.bundle().meta(&link_id).is_some() {
        return Err(WorkflowError::Conflict(format!(
            "link `{link_id}` exists already"
        )));
    }
    let mut args = BTreeMap::from([("?resource".to_string(), dataset.to_string())]);
    if let Some(u) = &user {
        args.insert("?principal".to_string(), u.to_string());
    }
    let link = TemplateLink {
        template_id: new.template.clone(),
        link_id: link_id.clone(),
        args,
    };
    let mut links: Vec<TemplateLink> = stored(engine.graph()).into_iter().map(|s| s.link).collect();
    links.push(link.clone());
    with_links(engine.base_bundle(), &links).map_err(|e| WorkflowError::Invalid(e.one_line()))?;
    let mut context = json!({ "template": new.template });
    if let Some(u) = &user {
        context["user"] = crate::entities::entity_json(u);
    }
    let log_seq = decide_as(
        engine,
        caller,
        "linkTemplate",
        &dataset,
        context,
        PARTITION,
        "linking this template",
    )?;
    write_records(engine, PARTITION, vec![record(&link, caller)])?;
    tracing::info!(link = %link_id, by = caller, ?log_seq, "template linked");
    Ok(StoredLink {
        link,
        created_by: caller.to_string(),
    })
}

/// Removes a stored link as `caller`, through the `unlinkTemplate` decision (logged).
pub fn remove(
    engine: &Engine,
    caller: &str,
    link_id: &str,
) -> std::result::Result<(), WorkflowError> {
    let found = stored(engine.graph())
        .into_iter()
        .find(|s| s.link.link_id == link_id)
        .ok_or_else(|| WorkflowError::NotFound(format!("link `{link_id}`")))?;
    let resource = found
        .link
        .args
        .get("?resource")
        .cloned()
        .unwrap_or_default();
    let dataset = crate::entities::parse_uid(&resource)?;
    let context = json!({ "template": found.link.template_id });
    decide_as(
        engine,
        caller,
        "unlinkTemplate",
        &dataset,
        context,
        PARTITION,
        "removing this link",
    )?;
    let store = engine
        .store()
        .ok_or_else(|| WorkflowError::Invalid("links need the entity store".into()))?;
    let schema = engine
        .bundle()
        .schema
        .clone()
        .ok_or_else(|| WorkflowError::Invalid("links need a schema".into()))?;
    store.apply(
        &crate::store::StoreBatch {
            deletes: vec![uid_from_parts(TYPE, link_id)?],
            partition: PARTITION.into(),
            ..Default::default()
        },
        &schema,
    )?;
    tracing::info!(link = %link_id, by = caller, "template link removed");
    Ok(())
}

fn record(link: &TemplateLink, caller: &str) -> Value {
    let mut attrs = json!({
        "template": link.template_id,
        "resource": link.args.get("?resource").cloned().unwrap_or_default(),
        "createdBy": {"__entity": {"type": "Tre::User", "id": caller}},
    });
    if let Some(p) = link.args.get("?principal") {
        attrs["principal"] = json!(p);
    }
    json!({ "uid": {"type": TYPE, "id": link.link_id}, "attrs": attrs, "parents": [] })
}
