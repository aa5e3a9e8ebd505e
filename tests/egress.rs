//! Data egress against the AWS emulator, through the real `tregov serve` API and the
//! `tregov egress` CLI, with tokens signed like an OIDC provider's.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tregov_api::client::ApiClient;
use tregov_tests::jwt::{fixture, token, token_with, AUDIENCE, ISSUER};
use tregov_tests::moto::Moto;
use tregov_tests::served::Served;
use tregov_tests::{env_number, stderr, stdout, Tre};

const STORE: &str = "tre-egress-store";
const STAGING: &str = "tre-egress-staging";
const APPROVED: &str = "tre-egress-approved";
const WORKSPACE: &str = "ws-alice";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime")
}

fn role(id: &str) -> Value {
    json!({"uid": {"type": "Tre::Role", "id": id}, "attrs": {}, "parents": []})
}

fn user(id: &str, roles: &[&str]) -> Value {
    let mut parents: Vec<Value> = roles
        .iter()
        .map(|r| json!({"type": "Tre::Role", "id": r}))
        .collect();
    parents.push(json!({"type": "Tre::Project", "id": "proj-genomics"}));
    json!({"uid": {"type": "Tre::User", "id": id}, "attrs": {"status": "active"}, "parents": parents})
}

fn workspace(id: &str, owner: &str) -> Value {
    json!({"uid": {"type": "Tre::Workspace", "id": id}, "attrs": {
        "owner": {"__entity": {"type": "Tre::User", "id": owner}},
        "project": {"__entity": {"type": "Tre::Project", "id": "proj-genomics"}},
        "workspaceType": {"__entity": {"type": "Tre::WorkspaceType", "id": "ec2-linux"}},
        "kind": "ec2", "status": "running", "backupOptIn": false
    }, "parents": [{"type": "Tre::Project", "id": "proj-genomics"}]})
}

/// alice (researcher, owner of ws-alice), carol (IG), dave (RIT), rita (IG and RIT), rachel
/// (a researcher who is also IG, owning ws-rachel), gina (IG: downloads).
fn people() -> Value {
    json!([
        role("Researcher"), role("InformationGovernance"), role("ResearchIT"), role("ITAdmin"),
        {"uid": {"type": "Tre::Project", "id": "proj-genomics"}, "attrs": {"accountId": "123456789012"}, "parents": []},
        {"uid": {"type": "Tre::WorkspaceType", "id": "ec2-linux"}, "attrs": {"approved": true,
          "allowRoles": [{"__entity": {"type": "Tre::Role", "id": "Researcher"}}], "denyRoles": [], "backupAllowed": true}, "parents": []},
        user("alice", &["Researcher"]),
        user("carol", &["InformationGovernance"]),
        user("dave", &["ResearchIT"]),
        user("rita", &["InformationGovernance", "ResearchIT"]),
        user("rachel", &["Researcher", "InformationGovernance"]),
        user("gina", &["InformationGovernance"]),
        user("erin", &["ITAdmin"]),
        workspace(WORKSPACE, "alice"),
        workspace("ws-rachel", "rachel"),
    ])
}

struct Bed {
    moto: Moto,
    tre: Tre,
    config: PathBuf,
}

#[derive(Default)]
struct Options {
    download_limit: i64,
    /// SSE-KMS on staged and approved copies, with a key made in the emulator.
    kms: bool,
    /// Subscribe this HTTP endpoint to the egress topic.
    notify_url: Option<String>,
    /// `[auth] jwks_url` instead of the fixture file.
    jwks_url: Option<String>,
    /// Lines for the top of `tregov.toml` (the AWS client's settings); default
    /// `max_attempts = 2`.
    aws: Option<String>,
    /// More `[egress]` lines.
    egress: String,
}

/// A KMS key in the emulator, made with the emulator's own boto3.
fn kms_key(moto: &Moto) -> String {
    moto.python(
        "import boto3; print(boto3.client('kms', region_name='us-east-1').create_key(Description='tre-egress')['KeyMetadata']['Arn'])",
    )
}

impl Bed {
    fn new(download_limit: i64) -> Self {
        Self::with(Options {
            download_limit,
            ..Default::default()
        })
    }

    /// The emulator with versioned buckets (so a doubled copy would show as a second
    /// version), an SNS topic, and a store holding the people and workspaces.
    fn with(options: Options) -> Self {
        let download_limit = options.download_limit;
        let moto = Moto::start();
        runtime().block_on(async {
            moto.versioned_buckets(&[STORE, STAGING, APPROVED]).await;
            let sns = aws_sdk_sns::Client::new(&moto.sdk_config().await);
            let topic = sns
                .create_topic()
                .name("tre-egress")
                .send()
                .await
                .expect("topic");
            if let Some(url) = &options.notify_url {
                sns.subscribe()
                    .topic_arn(topic.topic_arn().unwrap_or_default())
                    .protocol("http")
                    .endpoint(url)
                    .send()
                    .await
                    .expect("subscribe");
            }
        });
        let kms = if options.kms {
            format!("kms_key_id = \"{}\"\n", kms_key(&moto))
        } else {
            String::new()
        };
        let keys = match &options.jwks_url {
            Some(url) => format!("jwks_url = \"{url}\""),
            None => format!("jwks_file = \"{}\"", fixture("jwks.json").display()),
        };
        let tre = Tre::new();
        tre.import_entities(&people());
        let config = tre.dir.path().join("tregov.toml");
        let aws = options.aws.as_deref().unwrap_or("max_attempts = 2");
        let egress = &options.egress;
        std::fs::write(
            &config,
            format!(
                r#"{aws}
[egress]
store_bucket = "{STORE}"
staging_bucket = "{STAGING}"
approved_bucket = "{APPROVED}"
download_limit = {download_limit}
notify_topic_arn = "arn:aws:sns:us-east-1:123456789012:tre-egress"
retry_seconds = 1
{egress}
{kms}[api]
listen = "127.0.0.1:0"
services = ["tre-portal"]
[auth]
{keys}
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
[daemon]
poll_seconds = 1
"#
            ),
        )
        .expect("config");
        Self { moto, tre, config }
    }

    fn put(&self, key: &str, body: &str) {
        runtime().block_on(self.moto.put_object(STORE, key, body));
    }

    /// Every version of every object in `bucket`: (key, body of that version).
    fn versions(&self, bucket: &str) -> Vec<(String, String)> {
        runtime().block_on(async {
            let s3 = self.moto.s3().await;
            let list = s3
                .list_object_versions()
                .bucket(bucket)
                .send()
                .await
                .expect("versions");
            let mut out = Vec::new();
            for v in list.versions() {
                let key = v.key().unwrap_or_default().to_string();
                let body = s3
                    .get_object()
                    .bucket(bucket)
                    .key(&key)
                    .version_id(v.version_id().unwrap_or_default())
                    .send()
                    .await
                    .expect("get")
                    .body
                    .collect()
                    .await
                    .expect("body")
                    .into_bytes();
                out.push((key, String::from_utf8_lossy(&body).to_string()));
            }
            out.sort();
            out
        })
    }

    /// Live (not deleted) objects in `bucket`.
    fn live(&self, bucket: &str) -> Vec<String> {
        runtime().block_on(async {
            let list = self
                .moto
                .s3()
                .await
                .list_objects_v2()
                .bucket(bucket)
                .send()
                .await
                .expect("list");
            let mut keys: Vec<String> = list
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string))
                .collect();
            keys.sort();
            keys
        })
    }

    /// `tregov serve` (with a failpoint, if given), once it listens.
    fn serve(&self, failpoint: Option<&str>) -> Server {
        let mut cmd = self.tre.command(Some(&self.moto), &self.config, &["serve"]);
        if let Some(f) = failpoint {
            cmd.env("TREGOV_FAILPOINT", f);
        }
        Server(Served::start(cmd))
    }

    /// `tregov serve` reaching AWS through `endpoint` (a fault proxy).
    fn serve_through(&self, endpoint: &str) -> Server {
        let mut cmd = self.tre.command(Some(&self.moto), &self.config, &["serve"]);
        cmd.env("AWS_ENDPOINT_URL", endpoint);
        Server(Served::start(cmd))
    }

    fn egress(&self, server: &Server, user: &str, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--output", "json", "egress", "--api", &server.0.base];
        all.extend_from_slice(args);
        self.tre
            .command(None, &self.config, &all)
            .env("TREGOV_TOKEN", token(user))
            .output()
            .expect("tregov egress runs")
    }
}

struct Server(Served);

impl Server {
    fn client(&self, user: &str) -> ApiClient {
        ApiClient::new(&self.0.base, &token(user))
    }

    fn call(&self, user: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        runtime()
            .block_on(self.client(user).call(method, path, body.as_ref()))
            .expect("the API answers")
    }

    /// Waits until the request has no S3 work pending; returns it.
    fn settled(&self, id: &str) -> Value {
        settled_within(self, id, Duration::from_secs(30))
    }

    /// Waits for the process to exit (a failpoint) and returns its exit code.
    fn exited(mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.0.child.try_wait() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the server did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn submit(server: &Server, user: &str, workspace: &str) -> (u16, Value) {
    server.call(
        user,
        "POST",
        "/v1/egress/requests",
        Some(json!({"workspace": workspace})),
    )
}

fn review(
    server: &Server,
    user: &str,
    id: &str,
    decision: &str,
    reason: Option<&str>,
) -> (u16, Value) {
    server.call(
        user,
        "POST",
        &format!("/v1/egress/requests/{id}/reviews"),
        Some(json!({"decision": decision, "reason": reason})),
    )
}

fn id_of(r: &Value) -> String {
    r["id"].as_str().expect("request id").to_string()
}

fn fetch(url: &str) -> String {
    runtime()
        .block_on(tregov_api::client::get_text(
            url,
            tregov_api::client::Bounds::API,
        ))
        .expect("presigned GET")
}

#[test]
fn a_two_step_approval_releases_the_versions_reviewed_and_downloads_within_the_limit() {
    let bed = Bed::new(1);
    bed.put("ws-alice/results/table1.csv", "counts,v1");
    bed.put("ws-alice/summary.txt", "summary v1");
    let server = bed.serve(None);

    // Submitted through the CLI, as alice.
    let out = bed.egress(
        &server,
        "alice",
        &[
            "submit",
            "--workspace",
            WORKSPACE,
            "--note",
            "paper figures",
        ],
    );
    assert!(
        out.status.success(),
        "submit: {} {}",
        stdout(&out),
        stderr(&out)
    );
    let submitted: Value = serde_json::from_slice(&out.stdout).expect("json");
    let id = id_of(&submitted);
    assert_eq!(submitted["status"], "IN_REVIEW");
    assert_eq!(submitted["requester"], "alice");
    assert_eq!(submitted["objects"].as_array().map(Vec::len), Some(2));

    // alice edits a file after submitting: the reviewed version is what leaves.
    bed.put("ws-alice/results/table1.csv", "counts,v2 EDITED");
    let staged = bed.versions(STAGING);
    assert_eq!(
        staged,
        [
            (
                format!("{WORKSPACE}/{id}/results/table1.csv"),
                "counts,v1".to_string()
            ),
            (
                format!("{WORKSPACE}/{id}/summary.txt"),
                "summary v1".to_string()
            ),
        ]
    );

    // Research IT cannot review before Information Governance.
    let (status, answer) = review(&server, "dave", &id, "approve", None);
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = review(&server, "carol", &id, "approve", None);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["currentStep"], 2);
    let out = bed.egress(&server, "dave", &["review", &id, "--approve"]);
    assert!(out.status.success(), "RIT review: {}", stderr(&out));
    let approved = server.settled(&id);
    assert_eq!(approved["status"], "APPROVED");
    assert_eq!(
        bed.versions(APPROVED),
        [
            (
                format!("approved_egress/{WORKSPACE}/{id}/results/table1.csv"),
                "counts,v1".to_string()
            ),
            (
                format!("approved_egress/{WORKSPACE}/{id}/summary.txt"),
                "summary v1".to_string()
            ),
        ]
    );
    assert!(
        bed.versions(STAGING).is_empty(),
        "staged copies outlived approval: {:?}",
        bed.versions(STAGING)
    );

    // Only the download role downloads, and only once (the default limit).
    let out = bed.egress(&server, "alice", &["download", &id]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "alice downloaded: {}",
        stdout(&out)
    );
    let out = bed.egress(&server, "gina", &["download", &id]);
    assert!(out.status.success(), "download: {}", stderr(&out));
    let download: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(download["downloadsLeft"], 0);
    let files = download["files"].as_array().expect("files");
    assert_eq!(files.len(), 2);
    let table = files
        .iter()
        .find(|f| f["key"].as_str().is_some_and(|k| k.ends_with("table1.csv")))
        .expect("table1");
    assert_eq!(fetch(table["url"].as_str().expect("url")), "counts,v1");
    let out = bed.egress(&server, "gina", &["download", &id]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a second download: {}",
        stdout(&out)
    );
    let refused: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        refused["answer"]["reasons"],
        json!(["egress-download-limit"])
    );

    // The whole story is in the log, and the log verifies.
    let out = bed.tre.run_with(
        None,
        &bed.config,
        &[
            "egress",
            "--api",
            &server.0.base,
            "--token",
            &token("carol"),
            "show",
            &id,
        ],
    );
    assert!(out.status.success(), "show: {}", stderr(&out));
    let text = stdout(&out);
    for event in [
        "submitted by alice",
        "stage by tregov",
        "approved-step by carol",
        "approved by dave",
        "publish by tregov",
        "download by gina",
    ] {
        assert!(text.contains(event), "history lacks `{event}`:\n{text}");
    }
    assert!(
        text.contains("egress-download-limit"),
        "the refused download is in the history:\n{text}"
    );
    let out = bed.tre.run(&["log", "verify"]);
    assert!(out.status.success(), "log verify: {}", stderr(&out));
}

#[test]
fn a_rejection_at_either_step_removes_the_staged_copies_and_the_owner_resubmits() {
    let bed = Bed::new(1);
    bed.put("ws-alice/out.csv", "v1");
    let server = bed.serve(None);

    let (status, first) = submit(&server, "alice", WORKSPACE);
    assert_eq!(status, 201, "{first}");
    let first_id = id_of(&first);
    let (status, _) = submit(&server, "alice", WORKSPACE);
    assert_eq!(status, 409, "a second request while one is in review");
    let (status, answer) = review(&server, "carol", &first_id, "reject", None);
    assert_eq!(status, 400, "a rejection without a reason: {answer}");
    let (status, answer) = review(
        &server,
        "carol",
        &first_id,
        "reject",
        Some("row-level data"),
    );
    assert_eq!(status, 200, "{answer}");
    let rejected = server.settled(&first_id);
    assert_eq!(rejected["status"], "REJECTED");
    assert!(
        bed.live(STAGING).is_empty(),
        "staged copies left: {:?}",
        bed.live(STAGING)
    );

    bed.put("ws-alice/out.csv", "v2 aggregated");
    let (status, second) = submit(&server, "alice", WORKSPACE);
    assert_eq!(status, 201, "{second}");
    assert_eq!(second["version"], 2);
    let second_id = id_of(&second);
    assert_eq!(review(&server, "carol", &second_id, "approve", None).0, 200);
    let (status, answer) = review(
        &server,
        "dave",
        &second_id,
        "reject",
        Some("needs a disclosure check"),
    );
    assert_eq!(status, 200, "{answer}");
    server.settled(&second_id);
    assert!(
        bed.live(STAGING).is_empty(),
        "staged copies left: {:?}",
        bed.live(STAGING)
    );
    assert!(
        bed.live(APPROVED).is_empty(),
        "a rejected request published files"
    );

    let (status, third) = submit(&server, "alice", WORKSPACE);
    assert_eq!(status, 201, "{third}");
    assert_eq!(third["version"], 3);
    // Taken back by alice through the CLI: staged copies gone, the workspace free again.
    let third_id = id_of(&third);
    let out = bed.egress(
        &server,
        "alice",
        &["withdraw", &third_id, "--reason", "wrong file"],
    );
    assert!(out.status.success(), "withdraw: {}", stderr(&out));
    assert_eq!(server.settled(&third_id)["status"], "WITHDRAWN");
    assert!(
        bed.versions(STAGING).is_empty(),
        "staged copies left: {:?}",
        bed.versions(STAGING)
    );
    assert_eq!(submit(&server, "alice", WORKSPACE).0, 201);
    let (_, history) = server.call(
        "carol",
        "GET",
        &format!("/v1/egress/requests/{second_id}/history"),
        None,
    );
    let reasons: Vec<&str> = history["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["reason"].as_str())
        .collect();
    assert_eq!(reasons, ["needs a disclosure check"]);
}

#[test]
fn requesters_never_review_their_own_request_and_nobody_approves_two_steps() {
    let bed = Bed::new(1);
    bed.put("ws-rachel/r.csv", "rachel's");
    bed.put("ws-alice/a.csv", "alice's");
    let server = bed.serve(None);

    // rachel holds the IG role, but not for her own request.
    let (status, mine) = submit(&server, "rachel", "ws-rachel");
    assert_eq!(status, 201, "{mine}");
    let (status, answer) = review(&server, "rachel", &id_of(&mine), "approve", None);
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["reasons"], json!(["egress-requester-never-reviews"]));

    // Nobody submits for someone else's workspace, and the body cannot name the requester.
    let (status, answer) = submit(&server, "rachel", WORKSPACE);
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = server.call(
        "rachel",
        "POST",
        "/v1/egress/requests",
        Some(json!({"workspace": WORKSPACE, "requester": "alice"})),
    );
    assert!(
        (400..500).contains(&status) && status != 403,
        "a forged requester: {status} {answer}"
    );

    // rita holds both review roles: one step only.
    let (_, theirs) = submit(&server, "alice", WORKSPACE);
    let id = id_of(&theirs);
    assert_eq!(review(&server, "rita", &id, "approve", None).0, 200);
    let (status, answer) = review(&server, "rita", &id, "approve", None);
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["reasons"], json!(["egress-one-person-one-step"]));
    // The denial replays from the log alone: the request as it was is in the logged slice.
    let seq = answer["logSeq"].as_u64().expect("logged").to_string();
    let out = bed.tre.run(&["why", "--replay", &seq]);
    assert!(
        stdout(&out).contains("reproduces: yes"),
        "replay: {} {}",
        stdout(&out),
        stderr(&out)
    );
    // A reviewer named in the body is refused, not believed.
    let (status, answer) = server.call(
        "alice",
        "POST",
        &format!("/v1/egress/requests/{id}/reviews"),
        Some(json!({"decision": "approve", "reviewer": "dave"})),
    );
    assert!(
        (400..500).contains(&status) && status != 200,
        "a forged reviewer: {status} {answer}"
    );
    assert_eq!(review(&server, "dave", &id, "approve", None).0, 200);
    assert_eq!(server.settled(&id)["status"], "APPROVED");
}

#[test]
fn a_hundred_concurrent_downloads_with_a_limit_of_three_yield_exactly_three_urls() {
    let bed = Bed::new(3);
    bed.put("ws-alice/x.csv", "x");
    let server = bed.serve(None);
    let (_, r) = submit(&server, "alice", WORKSPACE);
    let id = id_of(&r);
    assert_eq!(review(&server, "carol", &id, "approve", None).0, 200);
    assert_eq!(review(&server, "dave", &id, "approve", None).0, 200);
    server.settled(&id);

    let path = format!("/v1/egress/requests/{id}/downloads");
    let statuses: Vec<u16> = runtime().block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let client = server.client("gina");
            let path = path.clone();
            tasks.push(tokio::spawn(async move {
                client.call("POST", &path, None).await.map(|(s, _)| s)
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("task").expect("the API answers"));
        }
        out
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 403).count(),
        97,
        "{statuses:?}"
    );
    assert_eq!(server.settled(&id)["downloadCount"], 3);
}

#[test]
fn tokens_expired_wrongly_signed_or_for_another_audience_get_401() {
    let bed = Bed::new(1);
    let server = bed.serve(None);
    let call = |token: &str| {
        runtime()
            .block_on(ApiClient::new(&server.0.base, token).call(
                "GET",
                "/v1/egress/requests",
                None,
            ))
            .expect("the API answers")
            .0
    };
    assert_eq!(call(&token("carol")), 200);
    assert_eq!(
        call(&token_with("signing.pem", "carol", AUDIENCE, -300)),
        401,
        "expired"
    );
    assert_eq!(
        call(&token_with("other.pem", "carol", AUDIENCE, 600)),
        401,
        "wrong key"
    );
    assert_eq!(
        call(&token_with("signing.pem", "carol", "another-app", 600)),
        401,
        "wrong audience"
    );
    assert_eq!(call("not-a-jwt"), 401, "garbage");
    // alg=none with a valid-looking payload.
    let unsigned = {
        let good = token("carol");
        let payload = good.split('.').nth(1).expect("payload").to_string();
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.")
    };
    assert_eq!(call(&unsigned), 401, "alg none");
    let (status, _) = runtime()
        .block_on(ApiClient::new(&server.0.base, "").call("GET", "/v1/egress/requests", None))
        .expect("answers");
    assert_eq!(status, 401, "no token");
    let out = bed.egress(&server, "carol", &["list"]);
    assert!(out.status.success(), "list: {}", stderr(&out));
    let out = bed
        .tre
        .command(
            None,
            &bed.config,
            &["egress", "--api", &server.0.base, "list"],
        )
        .env(
            "TREGOV_TOKEN",
            token_with("other.pem", "carol", AUDIENCE, 600),
        )
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(2),
        "a forged token through the CLI: {}",
        stderr(&out)
    );
}

#[test]
fn the_verified_permissions_shaped_endpoint_answers_with_the_determining_policies() {
    let bed = Bed::new(1);
    let server = bed.serve(None);
    let ask = |principal: &str, action: &str| {
        json!({
            "policyStoreId": "tregov",
            "principal": {"entityType": "Tre::User", "entityId": principal},
            "action": {"actionType": "Tre::Action", "actionId": action},
            "resource": {"entityType": "Tre::WorkspaceType", "entityId": "ec2-linux"},
            "context": {"contextMap": {"project": {"entityIdentifier": {"entityType": "Tre::Project", "entityId": "proj-genomics"}}}}
        })
    };
    // A user asks only about themselves; the registered portal app asks about anyone.
    let (status, answer) = server.call(
        "carol",
        "POST",
        "/v1/is-authorized",
        Some(ask("alice", "createWorkspace")),
    );
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = server.call(
        "alice",
        "POST",
        "/v1/is-authorized",
        Some(ask("alice", "createWorkspace")),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["decision"], "ALLOW", "{answer}");
    let (status, answer) = server.call(
        "tre-portal",
        "POST",
        "/v1/is-authorized",
        Some(ask("alice", "createWorkspace")),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["decision"], "ALLOW", "{answer}");
    assert!(!answer["determiningPolicies"]
        .as_array()
        .expect("policies")
        .is_empty());
    // Batch items are AVP's: the store id is given once, for the batch.
    let item = |p: &str| {
        let mut v = ask(p, "createWorkspace");
        v.as_object_mut().map(|o| o.remove("policyStoreId"));
        v
    };
    let (status, answer) = server.call(
        "tre-portal",
        "POST",
        "/v1/batch-is-authorized",
        Some(json!({"policyStoreId": "tregov", "requests": [
            item("alice"),
            item("carol"),
            {"principal": {"entityType": "Tre::Nope", "entityId": "x"}, "action": {"actionType": "Tre::Action", "actionId": "read"}, "resource": {"entityType": "Tre::Dataset", "entityId": "d"}}
        ]})),
    );
    assert_eq!(status, 200, "{answer}");
    let decisions: Vec<&str> = answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["decision"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(decisions, ["ALLOW", "DENY", "DENY"]);
    assert!(!answer["results"][2]["errors"]
        .as_array()
        .expect("errors")
        .is_empty());
    // Entities supplied by the caller would let it forge roles: refused.
    let mut forged = ask("alice", "createWorkspace");
    forged["entities"] = json!({"entityList": []});
    let (status, _) = server.call("tre-portal", "POST", "/v1/is-authorized", Some(forged));
    assert!((400..500).contains(&status));
}

#[test]
fn what_other_apps_ask_about_an_egress_request_stays_out_of_its_history() {
    let bed = Bed::new(1);
    bed.put("ws-alice/a.csv", "a");
    let server = bed.serve(None);
    let (status, submitted) = submit(&server, "alice", WORKSPACE);
    assert_eq!(status, 201, "{submitted}");
    let id = id_of(&submitted);
    let ask = |principal: &str, action: &str| {
        json!({
            "principal": {"entityType": "Tre::User", "entityId": principal},
            "action": {"actionType": "Tre::Action", "actionId": action},
            "resource": {"entityType": "Tre::EgressRequest", "entityId": id},
        })
    };
    let mut asked = Vec::new();
    for (caller, principal, action) in [
        ("alice", "alice", "viewEgress"),
        ("alice", "alice", "downloadEgress"),
        ("tre-portal", "carol", "reviewEgress"),
    ] {
        let (status, answer) = server.call(
            caller,
            "POST",
            "/v1/is-authorized",
            Some(ask(principal, action)),
        );
        assert_eq!(status, 200, "{answer}");
        asked.push(answer["logSeq"].as_u64().expect("logged"));
    }
    let (status, history) = server.call(
        "alice",
        "GET",
        &format!("/v1/egress/requests/{id}/history"),
        None,
    );
    assert_eq!(status, 200, "{history}");
    let history = history["history"].as_array().expect("history");
    assert!(!history.is_empty(), "the submission is there");
    for entry in history {
        assert_ne!(entry["kind"], "is-authorized", "{entry}");
        assert!(
            !asked.contains(&entry["seq"].as_u64().unwrap_or(0)),
            "an is-authorized ask in the history: {entry}"
        );
    }
}

/// Kills the server at each step of the workflow in turn and restarts it: the request
/// completes once, every file staged and published exactly once.
#[test]
fn a_server_killed_after_each_workflow_step_completes_the_request_once_on_restart() {
    let bed = Bed::new(1);
    bed.put("ws-alice/a.csv", "a");
    bed.put("ws-alice/b.csv", "b");

    let crashed = |server: Server| {
        assert_eq!(server.exited(), Some(86), "the failpoint was not reached");
    };
    // Dies after the request is stored, before any copy.
    let server = bed.serve(Some("egress-submitted"));
    let (status, r) = runtime()
        .block_on(server.client("alice").call(
            "POST",
            "/v1/egress/requests",
            Some(&json!({"workspace": WORKSPACE})),
        ))
        .unwrap_or((0, Value::Null));
    assert_ne!(status, 201, "answered despite the crash: {r}");
    crashed(server);
    // On restart the pending staging resumes; dies after its first copy.
    crashed(bed.serve(Some("egress-stage-copy")));
    // Resumes again: the first copy is recognised, the second made; dies before recording it.
    crashed(bed.serve(Some("egress-effect-done")));
    let server = bed.serve(Some("egress-reviewed"));
    let (_, list) = server.call("carol", "GET", "/v1/egress/requests", None);
    let id = id_of(&list["requests"][0]);
    server.settled(&id);
    let _ = runtime().block_on(server.client("carol").call(
        "POST",
        &format!("/v1/egress/requests/{id}/reviews"),
        Some(&json!({"decision": "approve"})),
    ));
    crashed(server);
    let server = bed.serve(Some("egress-publish-copy"));
    server.settled(&id);
    let _ = runtime().block_on(server.client("dave").call(
        "POST",
        &format!("/v1/egress/requests/{id}/reviews"),
        Some(&json!({"decision": "approve"})),
    ));
    crashed(server);
    let server = bed.serve(None);
    let done = server.settled(&id);
    assert_eq!(done["status"], "APPROVED");
    assert_eq!(done["reviews"].as_array().map(Vec::len), Some(2), "{done}");

    // Exactly one version of each copy: nothing doubled, nothing lost; and the reviewers'
    // copies gone once the files were published.
    assert!(
        bed.versions(STAGING).is_empty(),
        "{:?}",
        bed.versions(STAGING)
    );
    assert_eq!(
        bed.versions(APPROVED),
        [
            (
                format!("approved_egress/{WORKSPACE}/{id}/a.csv"),
                "a".to_string()
            ),
            (
                format!("approved_egress/{WORKSPACE}/{id}/b.csv"),
                "b".to_string()
            ),
        ]
    );
    let (_, history) = server.call(
        "carol",
        "GET",
        &format!("/v1/egress/requests/{id}/history"),
        None,
    );
    let events: Vec<&str> = history["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["event"].as_str())
        .collect();
    assert_eq!(events, APPROVED_EVENTS);
    let out = bed.tre.run(&["log", "verify"]);
    assert!(out.status.success(), "log verify: {}", stderr(&out));
}

#[test]
fn copies_are_kms_encrypted_each_step_is_notified_and_keys_come_from_the_jwks_url() {
    let jwks = std::fs::read_to_string(fixture("jwks.json")).expect("jwks");
    let endpoint = tregov_tests::http::Recorder::start(jwks);
    let bed = Bed::with(Options {
        download_limit: 1,
        kms: true,
        notify_url: Some(endpoint.url("/sns")),
        jwks_url: Some(endpoint.url("/.well-known/jwks.json")),
        ..Default::default()
    });
    bed.put("ws-alice/f.csv", "f");
    let server = bed.serve(None);
    assert!(endpoint.gets() >= 1, "the keys were fetched from the URL");
    let (status, r) = submit(&server, "alice", WORKSPACE);
    assert_eq!(status, 201, "{r}");
    let id = id_of(&r);
    let is_kms_encrypted = |bucket: &str, key: String| {
        runtime().block_on(async {
            let head = bed
                .moto
                .s3()
                .await
                .head_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .expect("head");
            assert_eq!(
                head.server_side_encryption(),
                Some(&aws_sdk_s3::types::ServerSideEncryption::AwsKms),
                "{bucket}/{key} is not SSE-KMS"
            );
        })
    };
    // The staged copy lives until publication: checked while it is there.
    server.settled(&id);
    is_kms_encrypted(STAGING, format!("{WORKSPACE}/{id}/f.csv"));
    assert_eq!(review(&server, "carol", &id, "approve", None).0, 200);
    assert_eq!(review(&server, "dave", &id, "approve", None).0, 200);
    server.settled(&id);
    is_kms_encrypted(APPROVED, format!("approved_egress/{WORKSPACE}/{id}/f.csv"));

    // Step 1's reviewers, step 2's, then the requester: each told once. (moto's HTTP
    // deliveries leave out the `audience` attribute, so the text says who.)
    let deadline = Instant::now() + Duration::from_secs(10);
    let messages = loop {
        let messages: Vec<String> = endpoint
            .posts()
            .iter()
            .filter_map(|p| serde_json::from_str::<Value>(p).ok())
            .filter(|m| m["Type"] == "Notification")
            .filter_map(|m| m["Message"].as_str().map(str::to_string))
            .collect();
        if messages.len() >= 3 || Instant::now() > deadline {
            break messages;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(
        messages[0].contains("step 1 (InformationGovernance)"),
        "{messages:?}"
    );
    assert!(messages[1].contains("step 2 (ResearchIT)"), "{messages:?}");
    assert!(
        messages[2].contains("was approved at every step"),
        "{messages:?}"
    );
}

/// Calls until the answer is not a 5xx (a fault reached the API's own AWS calls); returns it.
fn until_answered(
    server: &Server,
    user: &str,
    method: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, r) = server.call(user, method, path, Some(body.clone()));
        if status < 500 {
            return (status, r);
        }
        assert!(
            Instant::now() < deadline,
            "{method} {path} never answered: {status} {r}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits (longer than `settled`) until the request has no S3 work pending.
fn settled_within(server: &Server, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, r) = server.call("carol", "GET", &format!("/v1/egress/requests/{id}"), None);
        assert_eq!(status, 200, "{r}");
        if r.get("pending").is_none_or(Value::is_null) {
            return r;
        }
        assert!(Instant::now() < deadline, "request {id} never settled: {r}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The workflow events of `id`'s history, in order.
fn events_of(server: &Server, id: &str) -> Vec<String> {
    let (_, history) = server.call(
        "carol",
        "GET",
        &format!("/v1/egress/requests/{id}/history"),
        None,
    );
    history["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["event"].as_str().map(str::to_string))
        .collect()
}

const APPROVED_EVENTS: [&str; 6] = [
    "submitted",
    "stage",
    "approved-step",
    "notify-step",
    "approved",
    "publish",
];

#[test]
fn a_full_approval_converges_through_30_percent_faults_with_nothing_doubled() {
    let bed = Bed::with(Options {
        download_limit: 1,
        aws: Some(
            "max_attempts = 3\nattempt_timeout_seconds = 2\nconnect_timeout_seconds = 2".into(),
        ),
        egress: "max_attempts = 100".into(),
        ..Default::default()
    });
    for name in ["a", "b", "c", "d", "e"] {
        bed.put(&format!("ws-alice/{name}.csv"), name);
    }
    let proxy = tregov_tests::faults::FaultProxy::start(
        &bed.moto.endpoint(),
        0.3,
        5,
        Duration::from_secs(4),
    );
    let server = bed.serve_through(&proxy.endpoint());

    let (status, r) = until_answered(
        &server,
        "alice",
        "POST",
        "/v1/egress/requests",
        json!({"workspace": WORKSPACE}),
    );
    assert_eq!(status, 201, "{r}");
    let id = id_of(&r);
    settled_within(&server, &id, Duration::from_secs(120));
    let reviews = format!("/v1/egress/requests/{id}/reviews");
    let (status, r) = until_answered(
        &server,
        "carol",
        "POST",
        &reviews,
        json!({"decision": "approve"}),
    );
    assert_eq!(status, 200, "{r}");
    settled_within(&server, &id, Duration::from_secs(120));
    let (status, r) = until_answered(
        &server,
        "dave",
        "POST",
        &reviews,
        json!({"decision": "approve"}),
    );
    assert_eq!(status, 200, "{r}");
    let done = settled_within(&server, &id, Duration::from_secs(120));
    assert_eq!(done["status"], "APPROVED", "{done}");
    eprintln!(
        "{} calls, {} faults: {:?}",
        proxy.counts.calls(),
        proxy.counts.faults(),
        proxy.counts
    );
    assert!(proxy.counts.faults() > 0, "no faults were injected");

    // One version of each approved copy, the reviewers' copies gone, each event once.
    let approved = bed.versions(APPROVED);
    assert_eq!(approved.len(), 5, "{approved:?}");
    assert!(bed.live(STAGING).is_empty(), "{:?}", bed.live(STAGING));
    assert_eq!(events_of(&server, &id), APPROVED_EVENTS);
    let out = bed.tre.run(&["log", "verify"]);
    assert!(out.status.success(), "log verify: {}", stderr(&out));
}

#[test]
fn a_deleted_topic_a_long_reason_and_a_version_gone_before_approval_never_wedge_a_request() {
    let bed = Bed::with(Options {
        download_limit: 1,
        egress: "max_attempts = 2".into(),
        ..Default::default()
    });
    bed.put("ws-alice/a.csv", "a");
    // The topic is gone: notifications fail, the files move regardless.
    runtime().block_on(async {
        aws_sdk_sns::Client::new(&bed.moto.sdk_config().await)
            .delete_topic()
            .topic_arn("arn:aws:sns:us-east-1:123456789012:tre-egress")
            .send()
            .await
            .expect("delete topic");
    });
    let server = bed.serve(None);
    let (status, r) = submit(&server, "alice", WORKSPACE);
    assert_eq!(status, 201, "{r}");
    let id = id_of(&r);
    assert_eq!(server.settled(&id)["status"], "IN_REVIEW");
    // The longest reason a reviewer may write is taken; the rejection notice is cut to fit SNS.
    let reason = "x".repeat(4000);
    let (status, r) = review(&server, "carol", &id, "reject", Some(&reason));
    assert_eq!(status, 200, "{r}");
    assert_eq!(server.settled(&id)["status"], "REJECTED");
    let (status, r) = review(&server, "carol", &id, "reject", Some(&"x".repeat(4001)));
    assert_eq!(status, 400, "over the cap: {r}");

    // Resubmitted; a pinned version removed before the last approval stops that approval.
    let (status, r) = submit(&server, "alice", WORKSPACE);
    assert_eq!(status, 201, "{r}");
    let id = id_of(&r);
    server.settled(&id);
    assert_eq!(review(&server, "carol", &id, "approve", None).0, 200);
    server.settled(&id);
    let version = r["objects"][0]["versionId"]
        .as_str()
        .expect("version")
        .to_string();
    runtime().block_on(async {
        bed.moto
            .s3()
            .await
            .delete_object()
            .bucket(STORE)
            .key("ws-alice/a.csv")
            .version_id(&version)
            .send()
            .await
            .expect("delete version");
    });
    let (status, r) = review(&server, "dave", &id, "approve", None);
    assert_eq!(status, 409, "{r}");
    assert!(r.to_string().contains("no longer in"), "{r}");
    let (status, r) = server.call(
        "alice",
        "POST",
        &format!("/v1/egress/requests/{id}/withdraw"),
        Some(json!({})),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(server.settled(&id)["status"], "WITHDRAWN");

    // The staging bucket gone: staging fails `max_attempts` times and the request is FAILED,
    // with IT admins alerted. An IT admin closes it; the cleanup, which cannot run either,
    // fails in turn and is given up on when closed again; the workspace may submit again.
    runtime().block_on(async {
        bed.moto
            .s3()
            .await
            .delete_bucket()
            .bucket(STAGING)
            .send()
            .await
            .expect("delete staging");
    });
    bed.put("ws-alice/a.csv", "a2");
    let (status, r) = submit(&server, "alice", WORKSPACE);
    assert_eq!(status, 201, "{r}");
    let id = id_of(&r);
    let failed = status_within(&server, &id, "FAILED", Duration::from_secs(30));
    assert!(
        failed["lastError"].to_string().contains("NoSuchBucket"),
        "{failed}"
    );
    assert_eq!(failed["failedFrom"], "IN_REVIEW", "{failed}");
    let close = format!("/v1/egress/requests/{id}/close");
    assert_eq!(server.call("carol", "POST", &close, Some(json!({}))).0, 403);
    let (status, r) = server.call(
        "erin",
        "POST",
        &close,
        Some(json!({"reason": "staging bucket deleted"})),
    );
    assert_eq!(status, 200, "{r}");
    let failed = status_within(&server, &id, "FAILED", Duration::from_secs(30));
    assert_eq!(failed["failedFrom"], "CLOSED", "{failed}");
    let (status, r) = server.call("erin", "POST", &close, Some(json!({})));
    assert_eq!(status, 200, "{r}");
    let closed = server.settled(&id);
    assert_eq!(closed["status"], "CLOSED", "{closed}");
    let (status, r) = submit(&server, "alice", WORKSPACE);
    assert_eq!(status, 201, "the workspace is free again: {r}");
    let events = events_of(&server, &id);
    assert_eq!(
        events,
        ["submitted", "failed", "closed", "failed", "closed"],
        "{events:?}"
    );
}

/// Waits until the request's status is `want`; returns it.
fn status_within(server: &Server, id: &str, want: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (_, r) = server.call("carol", "GET", &format!("/v1/egress/requests/{id}"), None);
        if r["status"] == want {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "request {id} never became {want}: {r}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Takes this trial's request (the workspace's one not in `earlier`) one step further at a
/// time until it is approved and published, as the people involved would: submit, approve at
/// step 1, approve at step 2. Stops at the first call that gets no answer (a killed server).
fn drive(base: &str, earlier: &[String]) -> Result<String, String> {
    let rt = runtime();
    let call = |user: &str, method: &str, path: &str, body: Option<Value>| {
        rt.block_on(ApiClient::new(base, &token(user)).call(method, path, body.as_ref()))
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        let (_, list) = call(
            "carol",
            "GET",
            &format!("/v1/egress/requests?workspace={WORKSPACE}"),
            None,
        )?;
        let current = list["requests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| !earlier.iter().any(|e| r["id"] == e.as_str()))
            .cloned();
        let Some(r) = current else {
            call(
                "alice",
                "POST",
                "/v1/egress/requests",
                Some(json!({"workspace": WORKSPACE})),
            )?;
            continue;
        };
        let id = id_of(&r);
        let reviews = format!("/v1/egress/requests/{id}/reviews");
        let approve = Some(json!({"decision": "approve"}));
        match (
            r["status"].as_str(),
            r["currentStep"].as_u64(),
            r.get("pending").is_some_and(|p| !p.is_null()),
        ) {
            (Some("APPROVED"), _, false) => return Ok(id),
            (_, _, true) => std::thread::sleep(Duration::from_millis(100)),
            (Some("IN_REVIEW"), Some(1), false) => {
                call("carol", "POST", &reviews, approve)?;
            }
            (Some("IN_REVIEW"), Some(2), false) => {
                call("dave", "POST", &reviews, approve)?;
            }
            _ => {
                return Err(format!(
                    "request {id} is in no state the trial expects: {r}"
                ))
            }
        }
    }
    Err("the request was not approved within 90 s".into())
}

/// Crash trials: `tregov serve` killed (SIGKILL) at a random moment of the workflow, then
/// restarted; every request is published exactly once. `TREGOV_CRASH_TRIALS` sets how many
/// (CI runs 2; `scripts/crash-trials` runs 50), `TREGOV_CRASH_SEED` replays a run.
#[test]
fn the_egress_workflow_killed_at_random_moments_publishes_each_request_once() {
    let trials = env_number("TREGOV_CRASH_TRIALS", 2);
    let seed = env_number("TREGOV_CRASH_SEED", 3);
    let bed = Bed::new(1);
    for n in 0..6 {
        bed.put(&format!("ws-alice/f{n}.csv"), &format!("file {n}"));
    }
    let mut rng = tregov_tests::cloudtrail::Lcg(seed);
    let mut done: Vec<String> = Vec::new();
    for trial in 0..trials {
        let mut server = bed.serve(None);
        let (base, earlier) = (server.0.base.clone(), done.clone());
        let driver = std::thread::spawn(move || drive(&base, &earlier));
        let kill_after = rng.below(2500);
        std::thread::sleep(Duration::from_millis(kill_after));
        let _ = server.0.child.kill();
        let _ = server.0.child.wait();
        let _ = driver.join();

        let server = bed.serve(None);
        let id = drive(&server.0.base, &done).unwrap_or_else(|e| {
            panic!("trial {trial} (seed {seed}, killed after {kill_after} ms): {e}")
        });
        let events = events_of(&server, &id);
        assert_eq!(
            events, APPROVED_EVENTS,
            "trial {trial} (seed {seed}, killed after {kill_after} ms)"
        );
        let prefix = format!("approved_egress/{WORKSPACE}/{id}/");
        let copies: Vec<String> = bed
            .versions(APPROVED)
            .into_iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            copies.len(),
            6,
            "one version of each file (trial {trial}, seed {seed}): {copies:?}"
        );
        assert!(
            bed.live(STAGING).is_empty(),
            "trial {trial}: {:?}",
            bed.live(STAGING)
        );
        eprintln!("trial {trial}: killed after {kill_after} ms; {id} published once");
        done.push(id);
    }
    let out = bed.tre.run(&["log", "verify"]);
    assert!(out.status.success(), "log verify: {}", stdout(&out));
}
