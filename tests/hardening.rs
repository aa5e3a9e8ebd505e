//! The API under hostile callers, through the real `tregov serve`: authentication before
//! the body, slow and flooding clients, body caps, keys the issuer removed, and HTTPS.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tregov_api::client::ApiClient;
use tregov_tests::jwt::{fixture, token, AUDIENCE, ISSUER};
use tregov_tests::served::Served;
use tregov_tests::{stderr, stdout, workspace_root, Tre};

fn people() -> Value {
    let user = |id: &str| {
        json!({"uid": {"type": "Tre::User", "id": id}, "attrs": {"status": "active"}, "parents": [
            {"type": "Tre::Role", "id": "Researcher"}, {"type": "Tre::Project", "id": "proj-genomics"}]})
    };
    json!([
        {"uid": {"type": "Tre::Role", "id": "Researcher"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Tre::Project", "id": "proj-genomics"}, "attrs": {"accountId": "123456789012"}, "parents": []},
        {"uid": {"type": "Tre::WorkspaceType", "id": "ec2-linux"}, "attrs": {"approved": true,
            "allowRoles": [{"__entity": {"type": "Tre::Role", "id": "Researcher"}}], "denyRoles": [],
            "backupAllowed": false}, "parents": []},
        user("alice"),
        user("flooder"),
    ])
}

fn launch(principal: &str) -> Value {
    json!({
        "principal": {"entityType": "Tre::User", "entityId": principal},
        "action": {"actionType": "Tre::Action", "actionId": "createWorkspace"},
        "resource": {"entityType": "Tre::WorkspaceType", "entityId": "ec2-linux"},
        "context": {"contextMap": {"project": {"entityIdentifier": {"entityType": "Tre::Project", "entityId": "proj-genomics"}}}}
    })
}

/// A store with `people()`, a copy of the test JWKS (so a test may change it) and `[api]`
/// with `api_extra` in it.
struct Bed {
    tre: Tre,
    config: PathBuf,
    jwks: PathBuf,
}

impl Bed {
    fn new(api_extra: &str, auth_extra: &str) -> Self {
        let tre = Tre::new();
        tre.import_entities(&people());
        let jwks = tre.dir.path().join("jwks.json");
        std::fs::copy(fixture("jwks.json"), &jwks).expect("jwks");
        let config = tre.dir.path().join("tregov.toml");
        std::fs::write(
            &config,
            format!(
                "[api]\nlisten = \"127.0.0.1:0\"\n{api_extra}\n[auth]\njwks_file = \"{}\"\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n{auth_extra}",
                jwks.display()
            ),
        )
        .expect("config");
        Self { tre, config, jwks }
    }

    fn serve(&self) -> Served {
        self.serve_with(&[])
    }

    fn serve_with(&self, env: &[(&str, &Path)]) -> Served {
        let mut command = self.tre.command(None, &self.config, &["serve"]);
        for (k, v) in env {
            command.env(k, v);
        }
        Served::start(command)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime")
}

fn call(base: &str, caller_token: &str, path: &str, body: &Value) -> (u16, Value) {
    runtime()
        .block_on(ApiClient::new(base, caller_token).call("POST", path, Some(body)))
        .expect("the API answers")
}

/// alice asks whether she may launch a workspace.
fn alice_launches(served: &Served) -> (u16, Value) {
    call(
        &served.base,
        &token("alice"),
        "/v1/is-authorized",
        &launch("alice"),
    )
}

/// Sends `request` as it is on a fresh connection and returns the status of the answer.
fn raw_status(addr: &str, request: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request).expect("send");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_bad_token_with_a_malformed_body_is_refused_as_unauthenticated_not_as_a_bad_body() {
    let bed = Bed::new("", "");
    let served = bed.serve();
    let body = "{\"principal\": ";
    let request = format!(
        "POST /v1/is-authorized HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer not-a-token\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(raw_status(served.addr(), request.as_bytes()), 401);
}

#[test]
fn a_body_over_its_routes_cap_is_refused_before_it_is_parsed() {
    let bed = Bed::new("[api.limits]\nmax_body_bytes = 1024\n", "");
    let served = bed.serve();
    let mut big = launch("alice");
    big["context"]["contextMap"]["padding"] = json!({"string": "x".repeat(4096)});
    let (status, _) = call(&served.base, &token("alice"), "/v1/is-authorized", &big);
    assert_eq!(status, 413);
    let (status, answer) = alice_launches(&served);
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn a_slowloris_client_is_cut_off_while_other_callers_are_served() {
    let bed = Bed::new("[api.limits]\nheader_read_seconds = 1\n", "");
    let served = bed.serve();
    let mut slow = TcpStream::connect(served.addr()).expect("connect");
    slow.write_all(b"POST /v1/is-authorized HTTP/1.1\r\nHost: x\r\n")
        .expect("a first line");
    let started = Instant::now();
    let (status, answer) = alice_launches(&served);
    assert_eq!(status, 200, "{answer}");
    assert!(started.elapsed() < Duration::from_secs(1), "served at once");
    // One header byte a while, as a slowloris sends them: the server closes the connection.
    slow.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut closed = false;
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(400));
        if slow.write_all(b"X").is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        slow.set_nonblocking(true).expect("nonblocking");
        let read = slow.read(&mut buf);
        slow.set_nonblocking(false).expect("blocking");
        if matches!(read, Ok(0)) || matches!(read, Ok(n) if n > 0) {
            closed = true;
            break;
        }
    }
    assert!(closed, "the slow connection is closed within a few seconds");
}

#[test]
fn a_thousand_concurrent_requests_from_one_caller_do_not_stall_another() {
    let bed = Bed::new("", "");
    let served = bed.serve();
    let rt = runtime();
    let flood_token = token("flooder");
    let (flood, alice) = rt.block_on(async {
        let mut flood = tokio::task::JoinSet::new();
        for _ in 0..1000 {
            let (base, token) = (served.base.clone(), flood_token.clone());
            flood.spawn(async move {
                ApiClient::new(&base, &token)
                    .call("POST", "/v1/is-authorized", Some(&launch("flooder")))
                    .await
                    .map(|(status, _)| status)
                    .unwrap_or(0)
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        let alice = ApiClient::new(&served.base, &token("alice"))
            .call("POST", "/v1/is-authorized", Some(&launch("alice")))
            .await
            .expect("alice is answered");
        let waited = started.elapsed();
        let mut statuses = Vec::new();
        while let Some(status) = flood.join_next().await {
            statuses.push(status.unwrap_or(0));
        }
        (statuses, (alice.0, waited))
    });
    assert_eq!(alice.0, 200);
    assert!(
        alice.1 < Duration::from_secs(3),
        "alice waited {:?}",
        alice.1
    );
    let limited = flood.iter().filter(|s| **s == 429).count();
    let served_ok = flood.iter().filter(|s| **s == 200).count();
    assert!(limited > 0, "the flood is rate limited: {flood:?}");
    assert!(served_ok > 0, "and not refused outright");
    assert!(
        flood.iter().all(|s| [200, 429, 503].contains(s)),
        "every flood request is answered: {flood:?}"
    );
}

#[test]
fn a_key_removed_from_the_key_set_stops_working_within_the_ttl() {
    let bed = Bed::new("", "jwks_ttl_seconds = 1\n");
    let served = bed.serve();
    let (status, answer) = alice_launches(&served);
    assert_eq!(status, 200, "{answer}");
    std::fs::write(&bed.jwks, r#"{"keys":[]}"#).expect("the issuer drops the key");
    std::thread::sleep(Duration::from_millis(2500));
    let (status, answer) = alice_launches(&served);
    assert_eq!(status, 401, "{answer}");
}

fn tls_fixture(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures/tls").join(name)
}

#[test]
fn the_api_serves_https_and_reloads_its_certificate_on_sighup() {
    let dir = tempfile::tempdir().expect("tmp");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let install = |name: &str| {
        std::fs::copy(tls_fixture(&format!("TEST-ONLY-{name}.pem")), &cert).expect("cert");
        std::fs::copy(tls_fixture(&format!("TEST-ONLY-{name}.key.pem")), &key).expect("key");
    };
    install("server");
    let bed = Bed::new(
        &format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        "",
    );
    let ca = tls_fixture("TEST-ONLY-ca.pem");
    let mut served = bed.serve_with(&[("SSL_CERT_FILE", &ca)]);
    assert!(served.base.starts_with("https://"), "{}", served.base);
    // What `tregov egress list` printed, both streams.
    let list = |base: &str| {
        let out = bed
            .tre
            .command(
                None,
                &bed.config,
                &["egress", "list", "--api", base, "--token", &token("alice")],
            )
            .env("SSL_CERT_FILE", &ca)
            .output()
            .expect("runs");
        format!("{}{}", stdout(&out), stderr(&out))
    };
    // no egress requests: a 503 over HTTPS is still an answer over HTTPS.
    let first = list(&served.base);
    assert!(first.contains("no egress requests"), "{}", first);
    let plain = served.base.replacen("https://", "http://", 1);
    assert!(!list(&plain).contains("no egress requests"));

    // A certificate for another host, swapped in: after SIGHUP clients of 127.0.0.1 refuse it.
    install("elsewhere");
    let pid = served.child.id().to_string();
    let hangup = || {
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill");
        assert!(sent.success());
        std::thread::sleep(Duration::from_millis(500));
    };
    hangup();
    let refused = list(&served.base);
    assert!(!refused.contains("no egress requests"), "{}", refused);
    // Garbage on the next SIGHUP: the pair in use stays, and so does the server.
    std::fs::write(&cert, "not a certificate").expect("garbage");
    hangup();
    assert!(matches!(served.child.try_wait(), Ok(None)), "still serving");
    // The right pair again: accepted again.
    install("server");
    hangup();
    let again = list(&served.base);
    assert!(again.contains("no egress requests"), "{}", again);
}

#[test]
fn a_listen_address_off_loopback_without_tls_is_refused_at_start() {
    let bed = Bed::new("", "");
    let text = std::fs::read_to_string(&bed.config)
        .expect("config")
        .replace("127.0.0.1:0", "0.0.0.0:0");
    std::fs::write(&bed.config, text).expect("config");
    let out = bed.tre.run_with(None, &bed.config, &["serve"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("clear text"), "{}", stderr(&out));
}
