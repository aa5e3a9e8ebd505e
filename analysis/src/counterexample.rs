//! A counterexample from the solver, made concrete: the request and entities it synthesised,
//! and what each policy set decides about them, asked of Cedar's own authorizer so the
//! example is checked rather than believed.

use cedar_policy::{Authorizer, Decision, PolicySet};
use cedar_policy_symcc::Env;
use serde::Serialize;
use serde_json::{json, Value};

/// A request (and the entities it is asked over) on which two policy sets, or a policy set
/// and a property, disagree.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counterexample {
    pub principal: String,
    pub action: String,
    pub resource: String,
    pub context: Value,
    /// Cedar's entities JSON.
    pub entities: Value,
}

/// What one policy set decides about a counterexample, and which policies made it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decided {
    pub decision: String,
    pub reasons: Vec<String>,
    pub errors: Vec<String>,
}

impl Counterexample {
    pub fn from_env(env: &Env) -> Self {
        let request = &env.request;
        let name = |uid: Option<&cedar_policy::EntityUid>| uid.map(ToString::to_string);
        Self {
            principal: name(request.principal()).unwrap_or_default(),
            action: name(request.action()).unwrap_or_default(),
            resource: name(request.resource()).unwrap_or_default(),
            context: request
                .context()
                .and_then(|c| c.to_json_value().ok())
                .unwrap_or_else(|| json!({})),
            entities: env.entities.to_json_value().unwrap_or_else(|_| json!([])),
        }
    }

    /// `set`'s decision on this counterexample (`env` is where it came from).
    pub fn decided_by(env: &Env, set: &PolicySet) -> Decided {
        let response = Authorizer::new().is_authorized(&env.request, set, &env.entities);
        Decided {
            decision: match response.decision() {
                Decision::Allow => "allow".into(),
                Decision::Deny => "deny".into(),
            },
            reasons: response
                .diagnostics()
                .reason()
                .map(ToString::to_string)
                .collect(),
            errors: response
                .diagnostics()
                .errors()
                .map(ToString::to_string)
                .collect(),
        }
    }

    /// The request, then each entity it is asked over (actions left out: the schema gives
    /// them), one line each: uid, attributes, parents.
    pub fn describe(&self) -> String {
        let mut lines = vec![format!(
            "principal: {}, action: {}, resource: {}",
            self.principal, self.action, self.resource
        )];
        if self.context.as_object().is_some_and(|c| !c.is_empty()) {
            lines.push(format!("context: {}", self.context));
        }
        // The principal and the resource first, then the rest by uid.
        let mut entities: Vec<(u8, String, &Value)> = self
            .entities
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let uid = uid_text(&e["uid"]);
                let rank = match uid {
                    ref u if *u == self.principal => 0,
                    ref u if *u == self.resource => 1,
                    _ => 2,
                };
                (rank, uid, e)
            })
            .filter(|(_, uid, _)| !uid.contains("Action::\""))
            .collect();
        entities.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        if !entities.is_empty() {
            lines.push("entities:".into());
        }
        for (_, uid, entity) in entities {
            let mut line = format!("  {uid}");
            if entity["attrs"].as_object().is_some_and(|a| !a.is_empty()) {
                line.push_str(&format!(" {}", entity["attrs"]));
            }
            let parents: Vec<String> = entity["parents"]
                .as_array()
                .into_iter()
                .flatten()
                .map(uid_text)
                .collect();
            if !parents.is_empty() {
                line.push_str(&format!(" in [{}]", parents.join(", ")));
            }
            lines.push(line);
        }
        lines.join("\n")
    }
}

/// `{"type": "T", "id": "i"}` (or `{"__entity": ...}`) as Cedar writes a uid.
fn uid_text(v: &Value) -> String {
    let v = v.get("__entity").unwrap_or(v);
    format!(
        "{}::{}",
        v["type"].as_str().unwrap_or("?"),
        Value::from(v["id"].as_str().unwrap_or(""))
    )
}
