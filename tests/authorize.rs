//! `/v1/is-authorized` and `/v1/batch-is-authorized` through the real `tregov serve`: the
//! server's facts in the context, fail-closed answers, and their own kind in the log.

use std::path::PathBuf;

use serde_json::{json, Value};
use tregov_api::client::ApiClient;
use tregov_tests::governed::log_records;
use tregov_tests::jwt::{auth_section, token};
use tregov_tests::served::Served;
use tregov_tests::{copy_policies, Tre};

/// A forbid on the `flaky` workspace type that always errors (a Long overflow, which strict
/// validation cannot see), beside the default permit that lets researchers launch it.
const ERRORING_FORBID: &str = r#"@id("test-erroring-forbid")
forbid (principal, action == Tre::Action::"createWorkspace", resource)
when { resource == Tre::WorkspaceType::"flaky" && 9223372036854775807 + 1 > 0 };

@id("test-attested")
permit (principal, action == Tre::Action::"attest", resource)
when { context has attested && context.attested };
"#;

/// An action whose context holds a fact only a registered service gives.
const ATTEST_ACTION: &str = r#"
  action attest appliesTo {
    principal: [User],
    resource: [Project],
    context: { @serverProvided("service") attested?: Bool },
  };
}
"#;

fn uid(t: &str, id: &str) -> Value {
    json!({"__entity": {"type": t, "id": id}})
}

fn grant(id: &str, user: &str, expires: &str) -> Value {
    json!({"uid": {"type": "Tre::BreakGlassGrant", "id": id}, "attrs": {
        "user": uid("Tre::User", user),
        "project": uid("Tre::Project", "proj-genomics"),
        "approvedBy": uid("Tre::User", "erin"),
        "reason": "incident",
        "expiresAt": {"__extn": {"fn": "datetime", "arg": expires}},
        "request": uid("Tre::BreakGlassRequest", &format!("r-{id}"))
    }, "parents": []})
}

/// The request a grant approves: `user`'s, approved by a member of erin's role.
fn request(grant: &str, user: &str) -> Value {
    json!({"uid": {"type": "Tre::BreakGlassRequest", "id": format!("r-{grant}")}, "attrs": {
        "user": uid("Tre::User", user),
        "project": uid("Tre::Project", "proj-genomics"),
        "reason": "incident",
        "seconds": 3600,
        "requestedAt": {"__extn": {"fn": "datetime", "arg": "2000-01-01T00:00:00Z"}},
        "approvers": uid("Tre::Role", "Researcher")
    }, "parents": []})
}

/// alice (researcher), ivan (auditor, grant expired in 2000), olga (auditor, grant until
/// 2999), mallory (auditor, no grant), erin (who approved the grants).
fn people() -> Value {
    let user = |id: &str, role: &str| {
        json!({"uid": {"type": "Tre::User", "id": id}, "attrs": {"status": "active"}, "parents": [
            {"type": "Tre::Role", "id": role}, {"type": "Tre::Project", "id": "proj-genomics"}]})
    };
    let workspace_type = |id: &str| {
        json!({"uid": {"type": "Tre::WorkspaceType", "id": id}, "attrs": {"approved": true,
            "allowRoles": [uid("Tre::Role", "Researcher")], "denyRoles": [], "backupAllowed": false}, "parents": []})
    };
    json!([
        {"uid": {"type": "Tre::Role", "id": "Researcher"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Tre::Role", "id": "Auditor"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Tre::Project", "id": "proj-genomics"}, "attrs": {"accountId": "123456789012"}, "parents": []},
        workspace_type("ec2-linux"),
        workspace_type("flaky"),
        user("alice", "Researcher"),
        user("erin", "Researcher"),
        user("ivan", "Auditor"),
        user("olga", "Auditor"),
        user("mallory", "Auditor"),
        grant("bg-ivan", "ivan", "2000-01-01T00:00:00Z"),
        grant("bg-olga", "olga", "2999-01-01T00:00:00Z"),
        request("bg-ivan", "ivan"),
        request("bg-olga", "olga"),
    ])
}

struct Bed {
    tre: Tre,
    config: PathBuf,
    policies: PathBuf,
}

impl Bed {
    /// A store with `people()`, the default policies plus the test ones, and `[api]` with
    /// `tre-portal` registered as a service.
    fn new() -> Self {
        let tre = Tre::new();
        tre.import_entities(&people());
        let policies = copy_policies(tre.dir.path());
        std::fs::write(policies.join("test.cedar"), ERRORING_FORBID).expect("policy");
        let schema = policies.join("tre.cedarschema");
        let text = std::fs::read_to_string(&schema).expect("schema");
        let end = text.rfind('}').expect("namespace end");
        std::fs::write(&schema, format!("{}{ATTEST_ACTION}", &text[..end])).expect("schema");
        let config = tre.dir.path().join("tregov.toml");
        std::fs::write(
            &config,
            format!(
                "[api]\nlisten = \"127.0.0.1:0\"\nservices = [\"tre-portal\"]\n{}",
                auth_section()
            ),
        )
        .expect("config");
        Self {
            tre,
            config,
            policies,
        }
    }

    fn policies(&self) -> &str {
        self.policies.to_str().expect("utf-8")
    }

    fn serve(&self) -> Served {
        Served::start(self.tre.command(
            None,
            &self.config,
            &["--policies", self.policies(), "serve"],
        ))
    }

    /// The decision log's record `seq`.
    fn record(&self, seq: &Value) -> Value {
        let seq = seq.as_u64().expect("logged");
        log_records(&self.tre)
            .into_iter()
            .find(|r| r["seq"].as_u64() == Some(seq))
            .expect("the record")
    }
}

/// What the tests ask a served API.
trait Ask {
    fn ask(&self, caller: &str, path: &str, body: Value) -> (u16, Value);
    fn is_authorized(&self, caller: &str, body: Value) -> Value;
}

impl Ask for Served {
    fn ask(&self, caller: &str, path: &str, body: Value) -> (u16, Value) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(ApiClient::new(&self.base, &token(caller)).call("POST", path, Some(&body)))
            .expect("the API answers")
    }

    fn is_authorized(&self, caller: &str, body: Value) -> Value {
        let (status, answer) = self.ask(caller, "/v1/is-authorized", body);
        assert_eq!(status, 200, "{answer}");
        answer
    }
}

fn launch(principal: &str, workspace_type: &str) -> Value {
    json!({
        "principal": {"entityType": "Tre::User", "entityId": principal},
        "action": {"actionType": "Tre::Action", "actionId": "createWorkspace"},
        "resource": {"entityType": "Tre::WorkspaceType", "entityId": workspace_type},
        "context": {"contextMap": {"project": {"entityIdentifier": {"entityType": "Tre::Project", "entityId": "proj-genomics"}}}}
    })
}

fn break_glass(principal: &str, context: Value) -> Value {
    json!({
        "principal": {"entityType": "Tre::User", "entityId": principal},
        "action": {"actionType": "Tre::Action", "actionId": "breakGlass"},
        "resource": {"entityType": "Tre::Project", "entityId": "proj-genomics"},
        "context": {"cedarJson": context.to_string()}
    })
}

fn at(time: &str) -> Value {
    json!({"__extn": {"fn": "datetime", "arg": time}})
}

#[test]
fn an_erroring_forbid_makes_is_authorized_and_batch_answer_deny() {
    let bed = Bed::new();
    let server = bed.serve();
    let answer = server.is_authorized("alice", launch("alice", "flaky"));
    assert_eq!(answer["decision"], "DENY", "{answer}");
    assert_eq!(answer["determiningPolicies"], json!([]), "{answer}");
    let errors = answer["errors"].to_string();
    assert!(errors.contains("test-erroring-forbid"), "{answer}");
    // The same type without the error is launched as before.
    let fine = server.is_authorized("alice", launch("alice", "ec2-linux"));
    assert_eq!(fine["decision"], "ALLOW", "{fine}");

    let (status, batch) = server.ask(
        "alice",
        "/v1/batch-is-authorized",
        json!({"requests": [launch("alice", "flaky"), launch("alice", "ec2-linux")]}),
    );
    assert_eq!(status, 200, "{batch}");
    let decisions: Vec<&str> = batch["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["decision"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(decisions, ["DENY", "ALLOW"], "{batch}");

    // The log holds the answer given, as an is-authorized decision, and replays it.
    let record = bed.record(&answer["logSeq"]);
    assert_eq!(record["kind"], "is-authorized", "{record}");
    assert_eq!(record["caller"], "alice");
    assert_eq!(record["decision"], "Deny");
    assert!(record["errors"]
        .to_string()
        .contains("test-erroring-forbid"));
    let seq = answer["logSeq"].to_string();
    let (code, replayed) = bed
        .tre
        .json(&["why", "--policies", bed.policies(), "--replay", &seq]);
    assert_eq!(code, 0, "{replayed}");
    assert_eq!(replayed["reproduces"], true, "{replayed}");
}

#[test]
fn a_user_supplied_now_is_ignored_and_the_servers_clock_decides() {
    let bed = Bed::new();
    let server = bed.serve();
    // ivan's grant expired in 2000: claiming it is 1999 does not bring it back.
    let answer = server.is_authorized(
        "ivan",
        break_glass("ivan", json!({"now": at("1999-06-01T00:00:00Z")})),
    );
    assert_eq!(answer["decision"], "DENY", "{answer}");
    assert_eq!(answer["ignoredContext"], json!(["now"]), "{answer}");
    assert_eq!(
        answer["determiningPolicies"],
        json!([{"policyId": "breakglass-expired-grant"}])
    );
    // olga's runs to 2999: claiming it is 3000 does not end it.
    let answer = server.is_authorized(
        "olga",
        break_glass("olga", json!({"now": at("3000-06-01T00:00:00Z")})),
    );
    assert_eq!(answer["decision"], "ALLOW", "{answer}");
    let record = bed.record(&answer["logSeq"]);
    let logged_now = record
        .pointer("/request/context/now/__extn/arg")
        .and_then(Value::as_str)
        .unwrap_or_default();
    assert!(logged_now.starts_with("20"), "the server's time: {record}");
}

#[test]
fn a_made_up_break_glass_grant_neither_opens_anything_nor_is_logged_as_an_allow() {
    let bed = Bed::new();
    let server = bed.serve();
    // mallory holds no grant; she names olga's, and a grant nobody issued.
    for forged in ["bg-olga", "bg-mallory-made-up"] {
        let answer = server.is_authorized(
            "mallory",
            break_glass(
                "mallory",
                json!({"grant": uid("Tre::BreakGlassGrant", forged)}),
            ),
        );
        assert_eq!(answer["decision"], "DENY", "{answer}");
        assert_eq!(answer["ignoredContext"], json!(["grant"]), "{answer}");
        let record = bed.record(&answer["logSeq"]);
        assert_eq!(record["decision"], "Deny", "{record}");
        assert_eq!(
            record.pointer("/request/context/grant"),
            None,
            "the store holds no grant for mallory: {record}"
        );
    }
    // A registered service cannot hand her one either.
    let answer = server.is_authorized(
        "tre-portal",
        break_glass(
            "mallory",
            json!({"grant": uid("Tre::BreakGlassGrant", "bg-olga")}),
        ),
    );
    assert_eq!(answer["decision"], "DENY", "{answer}");
}

#[test]
fn only_a_registered_service_passes_context_the_schema_keeps_for_services() {
    let bed = Bed::new();
    let server = bed.serve();
    let attest = json!({
        "principal": {"entityType": "Tre::User", "entityId": "alice"},
        "action": {"actionType": "Tre::Action", "actionId": "attest"},
        "resource": {"entityType": "Tre::Project", "entityId": "proj-genomics"},
        "context": {"contextMap": {"attested": {"boolean": true}}}
    });
    let answer = server.is_authorized("alice", attest.clone());
    assert_eq!(answer["decision"], "DENY", "{answer}");
    assert_eq!(answer["ignoredContext"], json!(["attested"]), "{answer}");
    let answer = server.is_authorized("tre-portal", attest.clone());
    assert_eq!(answer["decision"], "ALLOW", "{answer}");
    assert_eq!(answer.get("ignoredContext"), None, "{answer}");
    // A caller that is not registered asks about nobody else.
    let (status, answer) = server.ask("erin", "/v1/is-authorized", attest);
    assert_eq!(status, 403, "{answer}");
}
