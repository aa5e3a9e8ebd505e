//! Template-linked policies: a template with its `?principal` and/or `?resource` slots
//! filled, in the Cedar CLI's `--template-linked` format (a JSON array of
//! `{"template_id", "link_id", "args": {"?principal": "Tre::User::\"alice\""}}`).
//!
//! A links file is one more source of a policy set (its name ends in `.json`), so a set's
//! version, the decision log's copy of it and a replay all include its links.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use cedar_policy::{EntityUid, PolicyId, PolicySet, SlotId};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result, SourceProblem};
use crate::policies::{PolicyKind, PolicyMeta, PolicySource};

/// One template-linked policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateLink {
    pub template_id: String,
    pub link_id: String,
    /// Slot (`?principal`, `?resource`) to entity uid, in Cedar syntax.
    pub args: BTreeMap<String, String>,
}

/// Whether a source of a policy set is a links file rather than Cedar text: a `.json` file,
/// or any file holding a JSON array (the Cedar CLI's examples name theirs `linked`); Cedar
/// text never starts with `[`.
pub fn is_links_source(source: &PolicySource) -> bool {
    source.name.ends_with(".json") || source.text.trim_start().starts_with('[')
}

/// Reads a links file; an empty file holds no links (as the Cedar CLI reads one).
pub fn parse_links(source: &PolicySource) -> Result<Vec<TemplateLink>> {
    if source.text.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(&source.text).map_err(|e| {
        let offset = crate::entities::offset_of_line_col(&source.text, e.line(), e.column());
        EngineError::from(SourceProblem::at(
            &source.name,
            &source.text,
            offset,
            0,
            format!("not a template-linked file: {e}"),
            "here",
        ))
    })
}

/// Links every link of `sources` into `set`, recording each in `meta` under its link id
/// (where its template is, so reasons and `why` point at the template's text).
pub fn link_all(
    set: &mut PolicySet,
    meta: &mut BTreeMap<String, PolicyMeta>,
    sources: &[PolicySource],
) -> Result<()> {
    let mut problems = Vec::new();
    for source in sources.iter().filter(|s| is_links_source(s)) {
        for link in parse_links(source)? {
            let at = |message: String| {
                let offset = source
                    .text
                    .find(&format!("\"{}\"", link.link_id))
                    .unwrap_or(0);
                SourceProblem::at(&source.name, &source.text, offset, 0, message, "this link")
            };
            let template = match meta.get(&link.template_id) {
                Some(m) if m.kind == PolicyKind::Template => m.clone(),
                _ => {
                    problems.push(at(format!(
                        "link `{}`: no template `{}` in the policies",
                        link.link_id, link.template_id
                    )));
                    continue;
                }
            };
            if meta.contains_key(&link.link_id) {
                problems.push(at(format!(
                    "link `{}`: the id is already a policy, template or link",
                    link.link_id
                )));
                continue;
            }
            let linked = slot_values(&link.args).and_then(|values| {
                set.link(
                    PolicyId::new(&link.template_id),
                    PolicyId::new(&link.link_id),
                    values,
                )
                .map_err(|e| e.to_string())
            });
            if let Err(e) = linked {
                problems.push(at(format!("link `{}`: {e}", link.link_id)));
                continue;
            }
            meta.insert(
                link.link_id.clone(),
                PolicyMeta {
                    id: link.link_id.clone(),
                    kind: PolicyKind::Link,
                    template: Some(link.template_id.clone()),
                    ..template
                },
            );
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(EngineError::problems(
            format!("{} problem(s) in the template links", problems.len()),
            problems,
        ))
    }
}

fn slot_values(
    args: &BTreeMap<String, String>,
) -> std::result::Result<HashMap<SlotId, EntityUid>, String> {
    args.iter()
        .map(|(slot, uid)| {
            let slot_id = match slot.as_str() {
                "?principal" => SlotId::principal(),
                "?resource" => SlotId::resource(),
                other => {
                    return Err(format!(
                        "`{other}` is not a slot: use `?principal` or `?resource`"
                    ))
                }
            };
            let uid = EntityUid::from_str(uid)
                .map_err(|e| format!("`{uid}` is not an entity uid: {e}"))?;
            Ok((slot_id, uid))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use cedar_policy::{Authorizer, Context, Entities, Request};

    use super::*;
    use crate::policies::{Naming, PolicyBundle};

    const SCHEMA: &str =
        "entity User; entity Doc; action view appliesTo { principal: [User], resource: [Doc] };";

    fn source(name: &str, text: &str) -> PolicySource {
        PolicySource {
            name: name.into(),
            text: text.into(),
        }
    }

    fn bundle(sources: Vec<PolicySource>, naming: Naming) -> Result<PolicyBundle> {
        PolicyBundle::from_sources_named(Some(source("s.cedarschema", SCHEMA)), sources, naming)
    }

    const POLICIES: &str = r#"
permit (principal == User::"root", action, resource);
@id("viewers")
permit (principal == ?principal, action == Action::"view", resource == ?resource);
forbid (principal, action, resource) when { principal == User::"banned" };
"#;

    #[test]
    fn plain_cedar_is_named_as_the_cedar_cli_names_it() {
        let b = bundle(vec![source("p.cedar", POLICIES)], Naming::CedarCli).expect("loads");
        let ids: Vec<&str> = b.meta.keys().map(String::as_str).collect();
        assert_eq!(ids, ["policy0", "policy2", "viewers"]);
        assert_eq!(b.meta["viewers"].kind, PolicyKind::Template);
    }

    #[test]
    fn the_governed_policies_need_an_id_on_templates_too() {
        let unnamed = "permit (principal == ?principal, action, resource);";
        let err = bundle(
            vec![source("p.cedar", unnamed)],
            Naming::RequireIdAnnotation,
        )
        .expect_err("refused");
        assert!(format!("{err:?}").contains("no `@id`"), "{err:?}");
    }

    #[test]
    fn a_link_decides_under_its_link_id_and_points_at_its_template() {
        let links = r#"[{"template_id": "viewers", "link_id": "bob-views-a",
            "args": {"?principal": "User::\"bob\"", "?resource": "Doc::\"a\""}}]"#;
        let b = bundle(
            vec![source("p.cedar", POLICIES), source("links.json", links)],
            Naming::CedarCli,
        )
        .expect("loads");
        let meta = &b.meta["bob-views-a"];
        assert_eq!(meta.kind, PolicyKind::Link);
        assert_eq!(meta.template.as_deref(), Some("viewers"));
        assert_eq!(meta.line, b.meta["viewers"].line);
        let request = Request::new(
            EntityUid::from_str(r#"User::"bob""#).expect("uid"),
            EntityUid::from_str(r#"Action::"view""#).expect("uid"),
            EntityUid::from_str(r#"Doc::"a""#).expect("uid"),
            Context::empty(),
            None,
        )
        .expect("request");
        let action = request.action().expect("action").clone();
        let answer =
            Authorizer::new().is_authorized(&request, b.policies_for(&action), &Entities::empty());
        let reasons: Vec<String> = answer
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        assert_eq!(reasons, ["bob-views-a"]);
    }

    #[test]
    fn a_link_to_what_is_not_a_template_is_an_error_naming_the_links_file() {
        let links = r#"[{"template_id": "policy0", "link_id": "x", "args": {}}]"#;
        let err = bundle(
            vec![source("p.cedar", POLICIES), source("my-links.json", links)],
            Naming::CedarCli,
        )
        .expect_err("refused");
        let text = format!("{err:?}");
        assert!(
            text.contains("no template `policy0`") && text.contains("my-links.json"),
            "{text}"
        );
    }
}
