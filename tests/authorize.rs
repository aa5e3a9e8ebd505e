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

/// Verified Permissions through the official AWS SDKs, their endpoint pointed at tregov: the
/// same answers as `/v1/is-authorized`, in AVP's own protocol.
mod verified_permissions {
    use std::collections::HashMap;

    use avp::config::interceptors::BeforeTransmitInterceptorContextMut;
    use avp::config::{ConfigBag, Intercept, RuntimeComponents};
    use avp::error::BoxError;
    use avp::types::{
        ActionIdentifier, AttributeValue, BatchIsAuthorizedInputItem,
        BatchIsAuthorizedWithTokenInputItem, ContextDefinition, EntityIdentifier,
    };
    use aws_sdk_verifiedpermissions as avp;

    use super::*;

    /// A registered service's own bearer token, sent after the SDK signs (tregov reads no
    /// SigV4 signature: it holds no AWS credentials to check one).
    #[derive(Debug)]
    struct ServiceToken(String);

    impl Intercept for ServiceToken {
        fn name(&self) -> &'static str {
            "ServiceToken"
        }

        fn modify_before_transmit(
            &self,
            context: &mut BeforeTransmitInterceptorContextMut<'_>,
            _: &RuntimeComponents,
            _: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            context
                .request_mut()
                .headers_mut()
                .insert("authorization", format!("Bearer {}", self.0));
            Ok(())
        }
    }

    fn client(server: &Served, service_token: Option<String>) -> avp::Client {
        // Plain HTTP on loopback, as every other AWS client of the tests.
        let http = aws_smithy_http_client::Builder::new().build_http();
        let mut config = avp::Config::builder()
            .http_client(http)
            .behavior_version(avp::config::BehaviorVersion::latest())
            .region(avp::config::Region::new("us-east-1"))
            .endpoint_url(&server.base)
            .credentials_provider(avp::config::Credentials::new(
                "AKIDEXAMPLE",
                "secret",
                None,
                None,
                "tests",
            ));
        if let Some(token) = service_token {
            config = config.interceptor(ServiceToken(token));
        }
        avp::Client::from_conf(config.build())
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    fn launch_action() -> ActionIdentifier {
        ActionIdentifier::builder()
            .action_type("Tre::Action")
            .action_id("createWorkspace")
            .build()
            .expect("action")
    }

    fn entity(t: &str, id: &str) -> EntityIdentifier {
        EntityIdentifier::builder()
            .entity_type(t)
            .entity_id(id)
            .build()
            .expect("entity")
    }

    fn in_genomics() -> ContextDefinition {
        ContextDefinition::ContextMap(HashMap::from([(
            "project".to_string(),
            AttributeValue::EntityIdentifier(entity("Tre::Project", "proj-genomics")),
        )]))
    }

    fn decision_text(d: &avp::types::Decision) -> &'static str {
        match d {
            avp::types::Decision::Allow => "ALLOW",
            _ => "DENY",
        }
    }

    #[test]
    fn the_rust_sdk_asks_with_a_token_and_in_batches_and_gets_the_v1_answers() {
        let bed = Bed::new();
        let server = bed.serve();
        let rt = runtime();
        let as_alice = client(&server, None);
        for workspace_type in ["ec2-linux", "flaky"] {
            let answer = rt
                .block_on(
                    as_alice
                        .is_authorized_with_token()
                        .policy_store_id("tregov")
                        .identity_token(token("alice"))
                        .action(launch_action())
                        .resource(entity("Tre::WorkspaceType", workspace_type))
                        .context(in_genomics())
                        .send(),
                )
                .expect("IsAuthorizedWithToken answers");
            let v1 = server.is_authorized("alice", launch("alice", workspace_type));
            assert_eq!(decision_text(answer.decision()), v1["decision"], "{v1}");
            let ids: Vec<&str> = answer
                .determining_policies()
                .iter()
                .map(|p| p.policy_id())
                .collect();
            let v1_ids: Vec<&str> = v1["determiningPolicies"]
                .as_array()
                .expect("policies")
                .iter()
                .filter_map(|p| p["policyId"].as_str())
                .collect();
            assert_eq!(ids, v1_ids);
            assert_eq!(answer.principal().map(|p| p.entity_id()), Some("alice"));
        }

        let batch = rt
            .block_on(
                as_alice
                    .batch_is_authorized_with_token()
                    .policy_store_id("tregov")
                    .identity_token(token("alice"))
                    .requests(
                        BatchIsAuthorizedWithTokenInputItem::builder()
                            .action(launch_action())
                            .resource(entity("Tre::WorkspaceType", "flaky"))
                            .context(in_genomics())
                            .build(),
                    )
                    .requests(
                        BatchIsAuthorizedWithTokenInputItem::builder()
                            .action(launch_action())
                            .resource(entity("Tre::WorkspaceType", "ec2-linux"))
                            .context(in_genomics())
                            .build(),
                    )
                    .send(),
            )
            .expect("BatchIsAuthorizedWithToken answers");
        let decisions: Vec<&str> = batch
            .results()
            .iter()
            .map(|r| decision_text(r.decision()))
            .collect();
        assert_eq!(decisions, ["DENY", "ALLOW"]);

        // Plain BatchIsAuthorized: a registered service asks about two people at once.
        let portal = client(&server, Some(token("tre-portal")));
        let item = |who: &str| {
            BatchIsAuthorizedInputItem::builder()
                .principal(entity("Tre::User", who))
                .action(launch_action())
                .resource(entity("Tre::WorkspaceType", "ec2-linux"))
                .context(in_genomics())
                .build()
        };
        let batch = rt
            .block_on(
                portal
                    .batch_is_authorized()
                    .policy_store_id("tregov")
                    .requests(item("alice"))
                    .requests(item("mallory"))
                    .send(),
            )
            .expect("BatchIsAuthorized answers a service");
        let decisions: Vec<&str> = batch
            .results()
            .iter()
            .map(|r| decision_text(r.decision()))
            .collect();
        let v1: Vec<String> = ["alice", "mallory"]
            .iter()
            .map(|who| {
                server.is_authorized(who, launch(who, "ec2-linux"))["decision"]
                    .as_str()
                    .unwrap_or("-")
                    .to_string()
            })
            .collect();
        assert_eq!(decisions, v1);
    }

    #[test]
    fn the_sdk_sees_avps_own_errors_for_what_tregov_refuses() {
        let bed = Bed::new();
        let server = bed.serve();
        let rt = runtime();
        // A user's token is no service's: plain IsAuthorized is refused.
        let as_alice = client(&server, Some(token("alice")));
        let refused = rt
            .block_on(
                as_alice
                    .is_authorized()
                    .policy_store_id("tregov")
                    .principal(entity("Tre::User", "alice"))
                    .action(launch_action())
                    .resource(entity("Tre::WorkspaceType", "ec2-linux"))
                    .send(),
            )
            .expect_err("refused");
        assert!(
            refused
                .as_service_error()
                .is_some_and(|e| e.is_access_denied_exception()),
            "{refused:?}"
        );
        // A batch mixing principals and resources breaks AVP's rule.
        let portal = client(&server, Some(token("tre-portal")));
        let item = |who: &str, what: &str| {
            BatchIsAuthorizedInputItem::builder()
                .principal(entity("Tre::User", who))
                .action(launch_action())
                .resource(entity("Tre::WorkspaceType", what))
                .build()
        };
        let mixed = rt
            .block_on(
                portal
                    .batch_is_authorized()
                    .policy_store_id("tregov")
                    .requests(item("alice", "ec2-linux"))
                    .requests(item("mallory", "flaky"))
                    .send(),
            )
            .expect_err("refused");
        assert!(
            mixed
                .as_service_error()
                .is_some_and(|e| e.is_validation_exception()),
            "{mixed:?}"
        );
        // More than 30 requests.
        let mut many = portal.batch_is_authorized().policy_store_id("tregov");
        for _ in 0..31 {
            many = many.requests(item("alice", "ec2-linux"));
        }
        let too_many = rt.block_on(many.send()).expect_err("refused");
        assert!(
            too_many
                .as_service_error()
                .is_some_and(|e| e.is_validation_exception()),
            "{too_many:?}"
        );
        // A forged token is no identity.
        let forged = rt
            .block_on(
                client(&server, None)
                    .is_authorized_with_token()
                    .policy_store_id("tregov")
                    .identity_token("not.a.token")
                    .action(launch_action())
                    .resource(entity("Tre::WorkspaceType", "ec2-linux"))
                    .send(),
            )
            .expect_err("refused");
        assert!(
            forged
                .as_service_error()
                .is_some_and(|e| e.is_access_denied_exception()),
            "{forged:?}"
        );
    }

    #[test]
    fn boto3_asks_with_a_token_and_as_a_service_and_gets_the_v1_answers() {
        let bed = Bed::new();
        let server = bed.serve();
        let python = tregov_tests::moto::moto_server_bin()
            .parent()
            .expect("venv bin")
            .join("python");
        let script = tregov_tests::workspace_root().join("tests/fixtures/avp/boto3_client.py");
        let out = std::process::Command::new(python)
            .arg(script)
            .env("TREGOV_URL", &server.base)
            .env("ALICE_TOKEN", token("alice"))
            .env("SERVICE_TOKEN", token("tre-portal"))
            .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
            .env("AWS_SECRET_ACCESS_KEY", "secret")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .output()
            .expect("python runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answers: Value = serde_json::from_str(&text).expect("json");
        let v1 = |who: &str, what: &str| {
            server.is_authorized(who, launch(who, what))["decision"].clone()
        };
        assert_eq!(
            answers["withToken"],
            json!([v1("alice", "ec2-linux"), v1("alice", "flaky")])
        );
        assert_eq!(
            answers["batch"],
            json!([v1("alice", "ec2-linux"), v1("mallory", "ec2-linux")])
        );
        assert_eq!(answers["userAsService"], "AccessDeniedException");
    }
}
