//! Server-side facts: the context attributes the schema marks `@serverProvided("<source>")`
//! are filled by the server, whatever the caller sent there.
//!
//! The marks live in the schema itself, as Cedar annotations on the context's attribute
//! declarations: Cedar tooling keeps them (the JSON form of the schema carries them as
//! `annotations`), so whoever edits the schema sees which facts a caller cannot choose, and
//! no attribute name is repeated here. Sources:
//!
//! - `clock`: the governance clock's `now` (a `datetime`, see `tregov_engine::clock`). A caller's value is ignored.
//! - `store`: an entity of the attribute's type from the entity store whose attributes marked
//!   `@matches("principal")` and `@matches("resource")` (at least one) are the request's
//!   principal and resource: a break-glass grant for that user and project. The context
//!   attribute must be optional: the store may hold none. A caller's value is ignored.
//! - `service`: a fact only an app registered as a service (`[api] services`) gives; dropped
//!   from anyone else's call.
//!
//! Ignoring (rather than refusing) keeps one rule for every caller: the decision is about
//! the world as the server knows it. The answer names what was ignored.

use std::collections::HashMap;

use cedar_policy::{EntityUid, SchemaFragment};
use serde_json::{json, Map, Value};
use tregov_engine::access_facts::AccessFacts;
use tregov_engine::entities::{entity_json, parse_uid, uid_from_parts};
use tregov_engine::{Engine, PolicyBundle, RequestSpec};

/// The annotation marking a context attribute as server-provided.
const MARK: &str = "serverProvided";
/// The annotation marking which attributes of a stored fact must be the request's principal
/// or resource.
const MATCHES: &str = "matches";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Clock,
    Store(StoredFact),
    Service,
}

/// Which stored entities a `store` fact is chosen from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredFact {
    /// Qualified, e.g. `Tre::BreakGlassGrant`.
    entity_type: String,
    /// Attributes that must be the request's principal, and its resource.
    principal: Vec<String>,
    resource: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Mark {
    attribute: String,
    source: Source,
}

#[derive(Debug, thiserror::Error)]
pub enum MarkError {
    #[error("cannot read the schema's `@{MARK}` marks: {0}")]
    Schema(String),
    #[error("action `{action}`, context `{attribute}`: unknown `@{MARK}` source `{named}` (one of `clock`, `store`, `service`)")]
    UnknownSource {
        action: String,
        attribute: String,
        named: String,
    },
    #[error("action `{action}`, context `{attribute}`: `@{MARK}(\"{named}\")` needs {needs}")]
    Shape {
        action: String,
        attribute: String,
        named: &'static str,
        needs: &'static str,
    },
}

/// The server-provided context attributes of every action, read from one policy version's
/// schema.
#[derive(Debug, Default)]
pub(crate) struct ContextMarks {
    version: String,
    actions: HashMap<EntityUid, Vec<Mark>>,
}

/// A request with its server-provided facts in place, and what the caller gave that was
/// ignored.
pub(crate) struct Settled {
    pub spec: RequestSpec,
    pub ignored: Vec<String>,
}

impl ContextMarks {
    /// The marks of `bundle`'s schema (none without a schema).
    pub fn from_bundle(bundle: &PolicyBundle) -> Result<Self, MarkError> {
        let mut marks = Self {
            version: bundle.version.clone(),
            actions: HashMap::new(),
        };
        let Some(source) = &bundle.schema_source else {
            return Ok(marks);
        };
        let fragment = if source.name.ends_with(".json") {
            SchemaFragment::from_json_str(&source.text).map_err(|e| e.to_string())
        } else {
            SchemaFragment::from_cedarschema_str(&source.text)
                .map(|(f, _)| f)
                .map_err(|e| e.to_string())
        };
        let json = fragment
            .and_then(|f| f.to_json_value().map_err(|e| e.to_string()))
            .map_err(MarkError::Schema)?;
        for (namespace, body) in json.as_object().into_iter().flatten() {
            marks.read_namespace(namespace, body)?;
        }
        Ok(marks)
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    fn read_namespace(&mut self, namespace: &str, body: &Value) -> Result<(), MarkError> {
        let actions = body.get("actions").and_then(Value::as_object);
        for (name, action) in actions.into_iter().flatten() {
            let Some(context) = action.pointer("/appliesTo/context") else {
                continue;
            };
            let Some(attributes) = record_attributes(namespace, body, context) else {
                continue;
            };
            let action_type = qualified(namespace, "Action");
            let uid =
                uid_from_parts(&action_type, name).map_err(|e| MarkError::Schema(e.to_string()))?;
            let mut marked = Vec::new();
            for (attribute, declared) in attributes {
                if let Some(mark) = read_mark(&uid, namespace, body, attribute, declared)? {
                    marked.push(mark);
                }
            }
            if !marked.is_empty() {
                self.actions.insert(uid, marked);
            }
        }
        Ok(())
    }

    /// Puts the server's facts into `spec`'s context: the clock's time, the store's entity,
    /// and a service's own facts only when `service`.
    pub fn settle(
        &self,
        engine: &Engine,
        mut spec: RequestSpec,
        service: bool,
        now: &str,
    ) -> Settled {
        let mut ignored = Vec::new();
        let marks = parse_uid(&spec.action)
            .ok()
            .and_then(|action| self.actions.get(&action));
        let (Some(marks), Some(context)) = (marks, spec.context.as_object_mut()) else {
            return Settled { spec, ignored };
        };
        let mut stored = Vec::new();
        for mark in marks {
            // What the server itself puts there now, and whether the caller's value counts.
            let (server, believed) = match &mark.source {
                Source::Clock => (Some(datetime(now)), false),
                Source::Service => (None, service),
                Source::Store(fact) => {
                    stored.push((mark, fact));
                    (None, false)
                }
            };
            match context.remove(&mark.attribute) {
                Some(given) if believed => {
                    context.insert(mark.attribute.clone(), given);
                }
                Some(_) => ignored.push(mark.attribute.clone()),
                None => {}
            }
            if let Some(value) = server {
                context.insert(mark.attribute.clone(), value);
            }
        }
        for (mark, fact) in stored {
            if let Some(uid) = choose_stored(engine, &spec, &mark.attribute, fact, now) {
                if let Some(context) = spec.context.as_object_mut() {
                    context.insert(mark.attribute.clone(), entity_json(&uid));
                }
            }
        }
        Settled { spec, ignored }
    }
}

/// The stored entity matching the request. A fact about one user's access to one study (an
/// exemption, a review item) is the one the planner asks with, so the API and AWS agree (a
/// revoked review item counts even when another campaign's kept it). Of several other facts,
/// the first (by uid) the policies allow the request with, else the first: Cedar has no
/// "some grant such that", so each candidate is decided in turn, unlogged; the decision that
/// is logged is made with the one chosen.
fn choose_stored(
    engine: &Engine,
    spec: &RequestSpec,
    attribute: &str,
    fact: &StoredFact,
    now: &str,
) -> Option<EntityUid> {
    let principal = parse_uid(&spec.principal).ok()?;
    let resource = parse_uid(&spec.resource).ok()?;
    if AccessFacts::is_access_fact(&fact.entity_type) {
        let now = tregov_engine::clock::json_datetime_ms(&datetime(now)).unwrap_or(i64::MIN);
        return engine
            .access_facts()
            .chosen(&fact.entity_type, &principal, &resource, now)
            .cloned();
    }
    let is = |entity: &cedar_policy::Entity, attrs: &[String], uid: &EntityUid| {
        attrs.iter().all(|a| {
            matches!(entity.attr(a), Some(Ok(cedar_policy::EvalResult::EntityUid(u))) if u == *uid)
        })
    };
    let graph = engine.graph();
    let mut candidates: Vec<EntityUid> = graph
        .uids()
        .filter(|uid| uid.type_name().to_string() == fact.entity_type)
        .filter(|uid| {
            graph.entity(uid).is_some_and(|e| {
                is(&e, &fact.principal, &principal) && is(&e, &fact.resource, &resource)
            })
        })
        .cloned()
        .collect();
    candidates.sort_by_key(|u| u.to_string());
    let allows = |uid: &EntityUid| {
        let mut trial = spec.clone();
        if let Some(context) = trial.context.as_object_mut() {
            context.insert(attribute.to_string(), entity_json(uid));
        }
        engine
            .parse(trial)
            .is_ok_and(|r| engine.decide(&r).allows())
    };
    candidates
        .iter()
        .find(|u| allows(u))
        .or(candidates.first())
        .cloned()
}

/// The attribute declarations of a context type: an inline record, or a common type that is
/// one.
fn record_attributes<'a>(
    namespace: &str,
    body: &'a Value,
    context: &'a Value,
) -> Option<&'a Map<String, Value>> {
    let record = match context.get("type").and_then(Value::as_str)? {
        "Record" => context,
        other => {
            let name = context.get("name").and_then(Value::as_str).unwrap_or(other);
            let local = name.strip_prefix(&format!("{namespace}::")).unwrap_or(name);
            body.pointer(&format!("/commonTypes/{local}"))?
        }
    };
    record.get("attributes")?.as_object()
}

fn read_mark(
    action: &EntityUid,
    namespace: &str,
    body: &Value,
    attribute: &str,
    declared: &Value,
) -> Result<Option<Mark>, MarkError> {
    let Some(source) = declared
        .pointer(&format!("/annotations/{MARK}"))
        .and_then(Value::as_str)
    else {
        return Ok(None);
    };
    let shape = |named, needs| MarkError::Shape {
        action: action.to_string(),
        attribute: attribute.to_string(),
        named,
        needs,
    };
    let type_name = declared
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let source = match source {
        "clock" if type_name.trim_start_matches("__cedar::") == "datetime" => Source::Clock,
        "clock" => return Err(shape("clock", "a `datetime` attribute")),
        "service" => Source::Service,
        "store" => {
            let local = type_name
                .strip_prefix(&format!("{namespace}::"))
                .unwrap_or(type_name);
            let entity = body.pointer(&format!("/entityTypes/{local}"));
            let optional = declared.get("required").and_then(Value::as_bool) == Some(false);
            let (Some(entity), true) = (entity, optional) else {
                return Err(shape(
                    "store",
                    "an optional entity attribute (`name?: Type`): the store may hold none",
                ));
            };
            let fact = stored_fact(qualified(namespace, local), entity);
            if fact.principal.is_empty() && fact.resource.is_empty() {
                return Err(shape("store", "an entity type with attributes marked `@matches(\"principal\")` or `@matches(\"resource\")`"));
            }
            Source::Store(fact)
        }
        other => {
            return Err(MarkError::UnknownSource {
                action: action.to_string(),
                attribute: attribute.to_string(),
                named: other.to_string(),
            })
        }
    };
    Ok(Some(Mark {
        attribute: attribute.to_string(),
        source,
    }))
}

/// The attributes of an entity type's declaration marked `@matches("principal")` or
/// `@matches("resource")`.
fn stored_fact(entity_type: String, declaration: &Value) -> StoredFact {
    let mut fact = StoredFact {
        entity_type,
        principal: Vec::new(),
        resource: Vec::new(),
    };
    let attributes = declaration
        .pointer("/shape/attributes")
        .and_then(Value::as_object);
    for (name, declared) in attributes.into_iter().flatten() {
        match declared
            .pointer(&format!("/annotations/{MATCHES}"))
            .and_then(Value::as_str)
        {
            Some("principal") => fact.principal.push(name.clone()),
            Some("resource") => fact.resource.push(name.clone()),
            _ => {}
        }
    }
    fact
}

fn qualified(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}::{name}")
    }
}

fn datetime(text: &str) -> Value {
    json!({"__extn": {"fn": "datetime", "arg": text}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use tregov_engine::entities::{parse_entities_file, EntityGraph};
    use tregov_engine::{Decision, PolicySource};

    fn source(name: &str, text: &str) -> PolicySource {
        PolicySource {
            name: name.into(),
            text: text.into(),
        }
    }

    /// The default policies over an auditor (ivan) with two grants for `p`: one he approved
    /// himself (void), one erin approved; both expire at the start of 2030.
    fn break_glass_engine() -> Engine {
        let bundle = PolicyBundle::embedded().expect("default policies");
        let grant = |id: &str, approver: &str| {
            json!({"uid": {"type": "Tre::BreakGlassGrant", "id": id}, "attrs": {
                "user": {"__entity": {"type": "Tre::User", "id": "ivan"}},
                "project": {"__entity": {"type": "Tre::Project", "id": "p"}},
                "approvedBy": {"__entity": {"type": "Tre::User", "id": approver}},
                "reason": "incident",
                "expiresAt": {"__extn": {"fn": "datetime", "arg": "2030-01-01T00:00:00Z"}},
                "request": {"__entity": {"type": "Tre::BreakGlassRequest", "id": "r"}}
            }, "parents": []})
        };
        // Both grants approve ivan's request, whose approvers are the IT admins.
        let entities = json!([
            {"uid": {"type": "Tre::Role", "id": "Auditor"}, "attrs": {}, "parents": []},
            {"uid": {"type": "Tre::Role", "id": "ITAdmin"}, "attrs": {}, "parents": []},
            {"uid": {"type": "Tre::User", "id": "ivan"}, "attrs": {"status": "active"},
             "parents": [{"type": "Tre::Role", "id": "Auditor"}, {"type": "Tre::Role", "id": "ITAdmin"}]},
            {"uid": {"type": "Tre::User", "id": "erin"}, "attrs": {"status": "active"}, "parents": [{"type": "Tre::Role", "id": "ITAdmin"}]},
            {"uid": {"type": "Tre::Project", "id": "p"}, "attrs": {"accountId": "111111111111"}, "parents": []},
            {"uid": {"type": "Tre::BreakGlassRequest", "id": "r"}, "attrs": {
                "user": {"__entity": {"type": "Tre::User", "id": "ivan"}},
                "project": {"__entity": {"type": "Tre::Project", "id": "p"}},
                "reason": "incident", "seconds": 3600,
                "requestedAt": {"__extn": {"fn": "datetime", "arg": "2029-05-31T00:00:00Z"}},
                "approvers": {"__entity": {"type": "Tre::Role", "id": "ITAdmin"}}
            }, "parents": []},
            grant("a-self", "ivan"),
            grant("b-erin", "erin"),
        ]);
        let list = parse_entities_file("t.json", &entities.to_string(), bundle.schema.as_ref())
            .expect("entities");
        let graph = EntityGraph::from_entities(&list, bundle.schema.as_ref()).expect("graph");
        Engine::in_memory(bundle, graph)
    }

    #[test]
    fn a_revoked_review_item_is_the_one_the_api_asks_with_as_the_planner_does() {
        let bundle = PolicyBundle::embedded().expect("default policies");
        let entity = |t: &str, id: &str| json!({"__entity": {"type": t, "id": id}});
        let campaign = |id: &str| {
            json!({"uid": {"type": "Tre::ReviewCampaign", "id": id}, "attrs": {
            "scope": "dataset:gwas", "reviewers": entity("Tre::Role", "InformationGovernance"),
            "due": datetime("2030-01-01T00:00:00Z"), "defaultVerdict": "keep",
            "startedBy": entity("Tre::User", "ian")}, "parents": []})
        };
        let item = |campaign: &str, verdict: &str| {
            json!({"uid": {"type": "Tre::ReviewItem", "id": format!("{campaign}/alice")}, "attrs": {
            "campaign": entity("Tre::ReviewCampaign", campaign), "user": entity("Tre::User", "alice"),
            "dataset": entity("Tre::Dataset", "gwas"), "actions": ["read"], "verdict": verdict}, "parents": []})
        };
        let entities = json!([
            {"uid": {"type": "Tre::Project", "id": "p"}, "attrs": {"accountId": "111111111111"}, "parents": []},
            {"uid": {"type": "Tre::Dataset", "id": "gwas"}, "attrs": {
                "database": "g", "location": "s3://b/g/", "classification": "internal",
                "project": entity("Tre::Project", "p"), "maxAccess": "readonly", "category": "organization",
                "admins": entity("Tre::AccessGroup", "a"), "readers": entity("Tre::AccessGroup", "r"),
                "writers": entity("Tre::AccessGroup", "w")}, "parents": []},
            {"uid": {"type": "Tre::Role", "id": "Researcher"}, "attrs": {}, "parents": []},
            {"uid": {"type": "Tre::AccessGroup", "id": "r"}, "attrs": {}, "parents": []},
            // On the readers' list: the kept item would allow her, the revoked one does not.
            {"uid": {"type": "Tre::User", "id": "alice"}, "attrs": {"status": "active"},
             "parents": [{"type": "Tre::Role", "id": "Researcher"}, {"type": "Tre::AccessGroup", "id": "r"}]},
            campaign("dataset:gwas/100"),
            campaign("dataset:gwas/200"),
            // The older campaign revoked; the newer one kept.
            item("dataset:gwas/200", "keep"),
            item("dataset:gwas/100", "revoke"),
        ]);
        let list = parse_entities_file("t.json", &entities.to_string(), bundle.schema.as_ref())
            .expect("entities");
        let graph = EntityGraph::from_entities(&list, bundle.schema.as_ref()).expect("graph");
        let engine = Engine::in_memory(bundle, graph);
        let marks = ContextMarks::from_bundle(engine.bundle()).expect("marks");
        let spec = RequestSpec {
            principal: r#"Tre::User::"alice""#.into(),
            action: r#"Tre::Action::"read""#.into(),
            resource: r#"Tre::Dataset::"gwas""#.into(),
            context: json!({}),
        };
        let settled = marks.settle(&engine, spec, false, "2026-12-06T00:00:00Z");
        assert_eq!(
            settled.spec.context["review"]["__entity"]["id"], "dataset:gwas/100/alice",
            "{}",
            settled.spec.context
        );
    }

    fn break_glass(context: Value) -> RequestSpec {
        RequestSpec {
            principal: r#"Tre::User::"ivan""#.into(),
            action: r#"Tre::Action::"breakGlass""#.into(),
            resource: r#"Tre::Project::"p""#.into(),
            context,
        }
    }

    fn decide(engine: &Engine, spec: RequestSpec) -> Decision {
        engine.decide(&engine.parse(spec).expect("parses")).decision
    }

    #[test]
    fn the_default_schema_marks_the_break_glass_grant_the_access_facts_and_the_clock_of_timed_actions(
    ) {
        let marks =
            ContextMarks::from_bundle(&PolicyBundle::embedded().expect("default")).expect("marks");
        let action = parse_uid(r#"Tre::Action::"breakGlass""#).expect("uid");
        let mark = |attribute: &str, source| Mark {
            attribute: attribute.into(),
            source,
        };
        assert_eq!(
            marks.actions.get(&action).cloned().unwrap_or_default(),
            [
                mark(
                    "grant",
                    Source::Store(StoredFact {
                        entity_type: "Tre::BreakGlassGrant".into(),
                        principal: vec!["user".into()],
                        resource: vec!["project".into()],
                    })
                ),
                mark("now", Source::Clock)
            ]
        );
        let access_fact = |attribute: &str, entity_type: &str| {
            mark(
                attribute,
                Source::Store(StoredFact {
                    entity_type: entity_type.into(),
                    principal: vec!["user".into()],
                    resource: vec!["dataset".into()],
                }),
            )
        };
        for data in ["read", "write", "administer"] {
            let action = parse_uid(&format!(r#"Tre::Action::"{data}""#)).expect("uid");
            assert_eq!(
                marks.actions.get(&action).cloned().unwrap_or_default(),
                [
                    access_fact("exemption", "Tre::Exemption"),
                    mark("now", Source::Clock),
                    access_fact("review", "Tre::ReviewItem"),
                ],
                "{data}"
            );
        }
        let timed = [
            "operateWorkspace",
            "submitEgress",
            "reviewEgress",
            "downloadEgress",
            "withdrawEgress",
            "viewEgress",
            "retryEgress",
            "closeEgress",
            "grantExemption",
            "startReview",
            "attestReview",
            "requestBreakGlass",
            "approveBreakGlass",
            "revokeBreakGlass",
            "linkTemplate",
            "unlinkTemplate",
        ];
        for timed in timed {
            let action = parse_uid(&format!(r#"Tre::Action::"{timed}""#)).expect("uid");
            assert_eq!(
                marks.actions.get(&action).cloned().unwrap_or_default(),
                [mark("now", Source::Clock)],
                "{timed}"
            );
        }
        assert_eq!(
            marks.actions.len(),
            1 + 3 + timed.len(),
            "no other action has server-provided context"
        );
    }

    #[test]
    fn the_servers_clock_and_the_stores_grant_replace_what_a_caller_gives() {
        let engine = break_glass_engine();
        let marks = ContextMarks::from_bundle(engine.bundle()).expect("marks");
        let forged = break_glass(json!({
            "grant": {"__entity": {"type": "Tre::BreakGlassGrant", "id": "made-up"}},
            "now": datetime("2029-06-01T00:00:00Z"),
        }));
        // After expiry by the server's clock: the caller's earlier `now` does not count.
        let settled = marks.settle(&engine, forged.clone(), false, "2030-06-01T00:00:00Z");
        assert_eq!(settled.ignored, ["grant", "now"]);
        assert_eq!(
            settled.spec.context["now"],
            datetime("2030-06-01T00:00:00Z")
        );
        assert_eq!(decide(&engine, settled.spec), Decision::Deny);
        // Before expiry, the grant that opens it is the store's, not the made-up one, and a
        // service's call is no different.
        let settled = marks.settle(&engine, forged, true, "2029-06-01T00:00:00Z");
        assert_eq!(settled.spec.context["grant"]["__entity"]["id"], "b-erin");
        assert_eq!(decide(&engine, settled.spec), Decision::Allow);
    }

    #[test]
    fn without_a_stored_grant_the_context_has_none() {
        let engine = break_glass_engine();
        let marks = ContextMarks::from_bundle(engine.bundle()).expect("marks");
        let mut spec = break_glass(json!({}));
        spec.principal = r#"Tre::User::"erin""#.into();
        let settled = marks.settle(&engine, spec, false, "2029-06-01T00:00:00Z");
        assert!(settled.ignored.is_empty());
        assert_eq!(settled.spec.context.get("grant"), None);
        assert_eq!(decide(&engine, settled.spec), Decision::Deny);
    }

    const ATTEST: &str = r#"namespace Tre {
  entity User;
  entity Project;
  action attest appliesTo {
    principal: [User],
    resource: [Project],
    context: { @serverProvided("service") attested?: Bool, note?: String },
  };
}"#;

    fn attest_engine(schema: &str) -> Result<Engine, MarkError> {
        let bundle = PolicyBundle::from_sources(
            Some(source("t.cedarschema", schema)),
            vec![source(
                "t.cedar",
                "@id(\"attested\")\npermit (principal, action == Tre::Action::\"attest\", resource)\nwhen { context has attested && context.attested };\n",
            )],
        )
        .expect("bundle");
        ContextMarks::from_bundle(&bundle)?;
        let graph = EntityGraph::from_entities(&[], bundle.schema.as_ref()).expect("graph");
        Ok(Engine::in_memory(bundle, graph))
    }

    #[test]
    fn only_a_registered_service_gives_a_service_fact() {
        let engine = attest_engine(ATTEST).expect("marks");
        let marks = ContextMarks::from_bundle(engine.bundle()).expect("marks");
        let spec = RequestSpec {
            principal: r#"Tre::User::"u""#.into(),
            action: r#"Tre::Action::"attest""#.into(),
            resource: r#"Tre::Project::"p""#.into(),
            context: json!({"attested": true, "note": "mine"}),
        };
        let user = marks.settle(&engine, spec.clone(), false, "2030-01-01T00:00:00Z");
        assert_eq!(user.ignored, ["attested"]);
        assert_eq!(
            user.spec.context,
            json!({"note": "mine"}),
            "unmarked context is the caller's"
        );
        assert_eq!(decide(&engine, user.spec), Decision::Deny);
        let service = marks.settle(&engine, spec, true, "2030-01-01T00:00:00Z");
        assert!(service.ignored.is_empty());
        assert_eq!(decide(&engine, service.spec), Decision::Allow);
    }

    #[test]
    fn a_mark_the_server_cannot_honour_is_refused_with_the_action_and_attribute_named() {
        let unknown = ATTEST.replace("\"service\"", "\"oracle\"");
        let err = attest_engine(&unknown)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("unknown `@serverProvided` source `oracle`"),
            "{err}"
        );
        assert!(
            err.contains(r#"Tre::Action::"attest""#) && err.contains("`attested`"),
            "{err}"
        );
        let clock = ATTEST.replace("\"service\"", "\"clock\"");
        let err = attest_engine(&clock)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("a `datetime` attribute"), "{err}");
        let store = ATTEST.replace("\"service\"", "\"store\"");
        let err = attest_engine(&store)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("an optional entity attribute"), "{err}");
    }
}
