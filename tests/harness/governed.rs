//! A small TRE governed end to end against the emulator: alice's EC2 workspace and role,
//! studies in Glue, the organization trail's bucket, an identity file, a `tregov.toml`, and
//! `tregov daemon` with its log lines as they come. Shared by the governance and safety
//! tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_lakeformation::types::{DataLakePrincipal, Permission, Resource, TableResource};
use serde_json::{json, Value};
use tregov_collectors::testkit::{gzip_records, key};

use crate::moto::Moto;
use crate::{stdout, Tre};

/// moto's default account: what un-assumed test credentials act in.
pub const ACCOUNT: &str = "123456789012";
pub const BUCKET: &str = "tre-org-trail";
pub const ORG: &str = "o-tre";

/// alice's workspace role.
pub fn role() -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/swb-ws-alice")
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn tregov(tre: &Tre, moto: &Moto, config: &Path, args: &[&str]) -> Output {
    tre.run_with(Some(moto), config, args)
}

/// alice: an active researcher, on the read-write list of `genomics/gwas_2024` when
/// `writer`; ian: an active IT admin.
pub fn identity(writer: bool) -> Value {
    let mut parents = vec![
        json!({"type": "Tre::Role", "id": "Researcher"}),
        json!({"type": "Tre::Project", "id": "proj-genomics"}),
    ];
    if writer {
        parents.push(json!({"type": "Tre::AccessGroup", "id": "genomics/gwas_2024#writers"}));
    }
    json!([
        {"uid": {"type": "Tre::Role", "id": "Researcher"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Tre::Role", "id": "ITAdmin"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Tre::User", "id": "alice"}, "attrs": {"status": "active"}, "parents": parents},
        {"uid": {"type": "Tre::User", "id": "ian"}, "attrs": {"status": "active"},
         "parents": [{"type": "Tre::Role", "id": "ITAdmin"}]},
        {"uid": {"type": "Tre::WorkspaceType", "id": "ec2-linux-approved"},
         "attrs": {"approved": true, "allowRoles": [{"__entity": {"type": "Tre::Role", "id": "Researcher"}}],
                   "denyRoles": [], "backupAllowed": true}, "parents": []}
    ])
}

/// Adds `lines` to the `[cloudtrail]` section of the configuration at `cfg`.
pub fn with_cloudtrail_keys(cfg: &Path, lines: &str) {
    let text = std::fs::read_to_string(cfg).expect("config");
    let text = text.replacen("[cloudtrail]\n", &format!("[cloudtrail]\n{lines}\n"), 1);
    std::fs::write(cfg, text).expect("config");
}

/// Writes the identity file the configuration names.
pub fn write_identity(tre: &Tre, identity: &Value) {
    std::fs::write(tre.dir.path().join("identity.json"), identity.to_string()).expect("identity");
}

/// `tregov.toml` for the TRE: the trail polled every `poll_seconds`, and `extra` appended
/// (a `[safety]` or `[api]` section, say).
pub fn write_config(tre: &Tre, poll_seconds: u64, extra: &str) -> PathBuf {
    let identity_path = tre.dir.path().join("identity.json");
    if !identity_path.exists() {
        write_identity(tre, &identity(true));
    }
    let path = tre.dir.path().join("tregov.toml");
    std::fs::write(
        &path,
        format!(
            r#"max_attempts = 2
[[projects]]
id = "proj-genomics"
account_id = "{ACCOUNT}"
[datalake]
account_id = "{ACCOUNT}"
[identity]
entities = "{}"
[workspaces]
registry = "workspaces.json"
[cloudtrail]
bucket = "{BUCKET}"
organization_id = "{ORG}"
[daemon]
poll_seconds = {poll_seconds}
resync_seconds = 3600
metrics_listen = "127.0.0.1:0"
{extra}"#,
            identity_path.display()
        ),
    )
    .expect("config");
    path
}

pub fn table(db: &str, name: &str) -> Resource {
    Resource::builder()
        .table(
            TableResource::builder()
                .database_name(db)
                .name(name)
                .build()
                .expect("table resource"),
        )
        .build()
}

/// A read-write study of proj-genomics: a Glue table with the TRE's parameters.
pub async fn create_study(glue: &aws_sdk_glue::Client, db: &str, name: &str) {
    let _ = glue
        .create_database()
        .database_input(
            aws_sdk_glue::types::DatabaseInput::builder()
                .name(db)
                .build()
                .expect("db"),
        )
        .send()
        .await;
    glue.create_table()
        .database_name(db)
        .table_input(
            aws_sdk_glue::types::TableInput::builder()
                .name(name)
                .storage_descriptor(
                    aws_sdk_glue::types::StorageDescriptor::builder()
                        .location(format!("s3://tre-datalake/{db}/{name}/"))
                        .build(),
                )
                .parameters("tre:project", "proj-genomics")
                .parameters("tre:classification", "internal")
                .parameters("tre:maxAccess", "readwrite")
                .build()
                .expect("table"),
        )
        .send()
        .await
        .expect("table");
}

/// Two studies of proj-genomics in Glue under the registered data lake location, alice's
/// workspace role and EC2 workspace (running as the role through its instance profile, and
/// in the workspace registry), and the organization trail's bucket.
pub fn seed(moto: &Moto, tre: &Tre) {
    let instance = runtime().block_on(async {
        let sdk = moto.sdk_config().await;
        let glue = aws_sdk_glue::Client::new(&sdk);
        for (db, name) in [("genomics", "gwas_2024"), ("cardio", "ukb")] {
            create_study(&glue, db, name).await;
        }
        aws_sdk_lakeformation::Client::new(&sdk)
            .register_resource()
            .resource_arn("arn:aws:s3:::tre-datalake")
            .use_service_linked_role(true)
            .send()
            .await
            .expect("registered location");
        moto.create_role("swb-ws-alice", &[("tre:workspace", "ws-alice-ec2")])
            .await;
        let instance = moto
            .run_instance_as_role(
                "swb-ws-alice",
                &[
                    ("tre:workspace", "ws-alice-ec2"),
                    ("tre:owner", "alice"),
                    ("tre:workspace-type", "ec2-linux-approved"),
                    ("backup", "true"),
                    ("tre:role-arn", &role()),
                ],
            )
            .await;
        moto.s3()
            .await
            .create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .expect("bucket");
        instance
    });
    write_registry(tre, &[registered("ws-alice-ec2", "alice", &instance)]);
}

/// A workspace registry entry: an EC2 workspace of proj-genomics.
pub fn registered(id: &str, owner: &str, instance: &str) -> Value {
    json!({"id": id, "project": "proj-genomics", "owner": owner,
        "workspaceType": "ec2-linux-approved", "kind": "ec2", "instance": instance})
}

/// Writes the workspace registry the configuration names.
pub fn write_registry(tre: &Tre, entries: &[Value]) {
    std::fs::write(
        tre.dir.path().join("workspaces.json"),
        json!({ "workspaces": entries }).to_string(),
    )
    .expect("registry");
}

/// `n` more studies alice writes to, so an apply has many items to be killed among.
pub fn seed_studies(moto: &Moto, tre: &Tre, n: usize) {
    runtime().block_on(async {
        let glue = aws_sdk_glue::Client::new(&moto.sdk_config().await);
        for i in 0..n {
            create_study(&glue, "genomics", &format!("study_{i:02}")).await;
        }
    });
    let mut identity = identity(true);
    let alice = identity
        .as_array_mut()
        .and_then(|a| a.iter_mut().find(|e| e["uid"]["id"] == "alice"))
        .expect("alice");
    let parents = alice["parents"].as_array_mut().expect("parents");
    for i in 0..n {
        parents.push(
            json!({"type": "Tre::AccessGroup", "id": format!("genomics/study_{i:02}#writers")}),
        );
    }
    write_identity(tre, &identity);
}

/// Revokes everything `principal` holds in Lake Formation, outside tregov: the next apply
/// has every grant to make again.
pub fn revoke_all(moto: &Moto, principal: &str) {
    runtime().block_on(async {
        let lf = aws_sdk_lakeformation::Client::new(&moto.sdk_config().await);
        let out = lf.list_permissions().send().await.expect("list");
        for p in out.principal_resource_permissions() {
            let who = p
                .principal()
                .and_then(|p| p.data_lake_principal_identifier());
            let (Some(resource), true) = (p.resource(), who == Some(principal)) else {
                continue;
            };
            lf.revoke_permissions()
                .principal(
                    DataLakePrincipal::builder()
                        .data_lake_principal_identifier(principal)
                        .build(),
                )
                .resource(resource.clone())
                .set_permissions(Some(p.permissions().to_vec()))
                .send()
                .await
                .expect("revoke");
        }
    });
}

/// How many times each plan item was logged as applied: more than once is a doubled effect.
pub fn applied_counts(tre: &Tre) -> std::collections::BTreeMap<String, u32> {
    let mut applied = std::collections::BTreeMap::new();
    for r in log_records(tre) {
        if r["kind"] == "apply" && r["result"] == "applied" {
            *applied
                .entry(r["item"].as_str().unwrap_or_default().to_string())
                .or_default() += 1;
        }
    }
    applied
}

/// `principal`'s Lake Formation permissions, per table.
pub fn lf_permissions_of(moto: &Moto, principal: &str) -> Vec<(String, Vec<String>)> {
    runtime().block_on(async {
        let lf = aws_sdk_lakeformation::Client::new(&moto.sdk_config().await);
        let out = lf.list_permissions().send().await.expect("list");
        let mut v: Vec<(String, Vec<String>)> = out
            .principal_resource_permissions()
            .iter()
            .filter(|p| {
                p.principal()
                    .and_then(|p| p.data_lake_principal_identifier())
                    == Some(principal)
            })
            .map(|p| {
                let t = p.resource().and_then(|r| r.table());
                let name = t
                    .map(|t| format!("{}.{}", t.database_name(), t.name().unwrap_or("*")))
                    .unwrap_or_default();
                let mut perms: Vec<String> = p
                    .permissions()
                    .iter()
                    .map(|x| x.as_str().to_string())
                    .collect();
                perms.sort();
                (name, perms)
            })
            .filter(|(_, p)| !p.is_empty())
            .collect();
        v.sort();
        v
    })
}

/// alice's workspace role's Lake Formation permissions, per table.
pub fn lf_permissions(moto: &Moto) -> Vec<(String, Vec<String>)> {
    lf_permissions_of(moto, &role())
}

/// Polls Lake Formation until the grant is gone, which must be after `moment` and within
/// 2 s of it.
pub fn revoked_within_two_seconds_of(moto: &Moto, moment: std::time::SystemTime) {
    let deadline = moment + Duration::from_secs(20);
    let revoked_at = loop {
        if lf_permissions(moto).is_empty() {
            break std::time::SystemTime::now();
        }
        assert!(
            std::time::SystemTime::now() < deadline,
            "still granted 20 s after the moment"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let late = revoked_at
        .duration_since(moment)
        .expect("never revoked before the moment");
    eprintln!("revoked {} ms after the moment", late.as_millis());
    assert!(
        late < Duration::from_secs(2),
        "revoked {late:?} after the moment"
    );
}

pub fn writer_permissions() -> Vec<String> {
    ["DELETE", "DESCRIBE", "INSERT", "SELECT"]
        .map(String::from)
        .to_vec()
}

/// Grants `principal` SELECT on `db.name` as an admin would, outside tregov.
pub fn grant_select(moto: &Moto, principal: &str, db: &str, name: &str) {
    runtime().block_on(async {
        aws_sdk_lakeformation::Client::new(&moto.sdk_config().await)
            .grant_permissions()
            .principal(
                DataLakePrincipal::builder()
                    .data_lake_principal_identifier(principal)
                    .build(),
            )
            .resource(table(db, name))
            .permissions(Permission::Select)
            .send()
            .await
            .expect("grant");
    });
}

/// Someone grants alice's workspace role a table no policy allows; the trail records it.
pub fn out_of_band_grant(moto: &Moto, n: u64) {
    grant_select(moto, &role(), "cardio", "ukb");
    put_log_file(moto, n, &[grant_record(n)]);
}

/// The trail delivers its `n`th log file of today, holding `records`.
pub fn put_log_file(moto: &Moto, n: u64, records: &[Value]) {
    let now = time_now();
    let key = key(Some(ORG), ACCOUNT, "us-east-1", &now[..10], n);
    runtime().block_on(async {
        moto.s3()
            .await
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(gzip_records(records).into())
            .send()
            .await
            .expect("log file");
    });
}

/// The CloudTrail record of a Lake Formation grant made outside tregov (`drift-<n>`).
pub fn grant_record(n: u64) -> Value {
    let now = time_now();
    json!({
        "eventVersion": "1.08",
        "eventID": format!("drift-{n}"),
        "eventTime": now,
        "eventSource": "lakeformation.amazonaws.com",
        "eventName": "GrantPermissions",
        "awsRegion": "us-east-1",
        "recipientAccountId": ACCOUNT,
        "userIdentity": {"type": "AssumedRole", "arn": format!("arn:aws:sts::{ACCOUNT}:assumed-role/Admin/mallory"), "accountId": ACCOUNT},
        "requestParameters": {"principal": {"dataLakePrincipalIdentifier": role()},
            "resource": {"table": {"databaseName": "cardio", "name": "ukb"}},
            "permissions": ["SELECT"]}
    })
}

fn time_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A plain HTTP/1.1 GET; the whole response, status line and headers included.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
}

/// `tregov daemon` against the emulator, killed when dropped; its log lines as they come.
pub struct Daemon {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    pub metrics_addr: String,
}

impl Daemon {
    pub fn start(tre: &Tre, moto: &Moto, cfg: &Path, global: &[&str], args: &[&str]) -> Self {
        Self::start_with_env(tre, moto, cfg, global, args, &[])
    }

    /// `start`, with more environment variables.
    pub fn start_with_env(
        tre: &Tre,
        moto: &Moto,
        cfg: &Path,
        global: &[&str],
        args: &[&str],
        env: &[(&str, &Path)],
    ) -> Self {
        let mut child = tre
            .command(Some(moto), cfg, global)
            .envs(env.iter().copied())
            .args(["-v", "daemon"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("daemon starts");
        let stderr_pipe = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines().map_while(|l| l.ok()) {
                let _ = tx.send(line);
            }
        });
        let mut daemon = Self {
            child,
            lines,
            metrics_addr: String::new(),
        };
        let started = daemon.wait_for("serving /metrics", Duration::from_secs(60));
        daemon.metrics_addr = started
            .last()
            .and_then(|l| l.split("http://").nth(1))
            .expect("metrics address")
            .trim()
            .to_string();
        daemon
    }

    /// The lines logged up to the first containing `needle`.
    pub fn wait_for(&self, needle: &str, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                let hit = line.contains(needle);
                seen.push(line);
                if hit {
                    return seen;
                }
            }
        }
        panic!(
            "`{needle}` not logged within {within:?}:\n{}",
            seen.join("\n")
        );
    }

    /// The URL of the API the daemon serves (`[api]`), once it says so.
    pub fn api_url(&self, within: Duration) -> String {
        let lines = self.wait_for("serving the API on", within);
        let line = lines.last().cloned().unwrap_or_default();
        line.split("serving the API on ")
            .nth(1)
            .expect("api address")
            .trim()
            .to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's `/metrics`.
    pub fn metrics(&self) -> String {
        http_get(&self.metrics_addr, "/metrics")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The decision log's records, parsed.
pub fn log_records(tre: &Tre) -> Vec<Value> {
    let shown = tre.run(&["--output", "json", "log", "show"]);
    assert!(shown.status.success(), "{}", crate::stderr(&shown));
    crate::stdout(&shown)
        .lines()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect()
}

/// The `tregov parked` rows as (item, status, change kind).
pub fn parked(tre: &Tre, moto: &Moto, cfg: &std::path::Path) -> Vec<(String, String, String)> {
    let out = tregov(tre, moto, cfg, &["--output", "json", "parked"]);
    assert!(out.status.success(), "{}", crate::stderr(&out));
    crate::stdout(&out)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("row");
            (
                v["item"].as_str().unwrap_or_default().to_string(),
                v["status"].as_str().unwrap_or_default().to_string(),
                v["planItem"]["change"]["kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

/// Waits for `ready`, polling; fails the test naming `what` if it never is.
pub fn wait_until(what: &str, within: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what} within {within:?}");
}

/// The state and tags of the TRE's one instance.
pub fn instance_state_and_tags(
    moto: &Moto,
) -> (String, std::collections::BTreeMap<String, String>) {
    runtime().block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&moto.sdk_config().await);
        let out = ec2.describe_instances().send().await.expect("describe");
        let i = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .next()
            .expect("the instance");
        (
            i.state()
                .and_then(|s| s.name())
                .map(|n| n.as_str().to_string())
                .unwrap_or_default(),
            i.tags()
                .iter()
                .map(|t| {
                    (
                        t.key().unwrap_or_default().to_string(),
                        t.value().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
        )
    })
}

/// Creates an SNS topic in the emulator; its ARN.
pub fn create_topic(moto: &Moto, name: &str) -> String {
    runtime().block_on(async {
        aws_sdk_sns::Client::new(&moto.sdk_config().await)
            .create_topic()
            .name(name)
            .send()
            .await
            .expect("topic")
            .topic_arn()
            .unwrap_or_default()
            .to_string()
    })
}

/// `why --replay` of the first decision behind the logged apply of a `change_kind` change.
pub fn why_replayed(tre: &Tre, records: &[Value], change_kind: &str) -> String {
    let applied = records
        .iter()
        .find(|r| r["kind"] == "apply" && r["change"]["kind"] == change_kind)
        .unwrap_or_else(|| panic!("no `{change_kind}` is logged"));
    let seq = applied["decisions"][0].as_u64().expect("decision seq");
    stdout(&tre.run(&["why", "--replay", &seq.to_string()]))
}

/// The test identity file with the project described there too, `project` its attributes
/// beyond the account, and `more` entities added.
pub fn identity_with_project(project: Value, more: &[Value]) -> Value {
    let mut entities = identity(true).as_array().cloned().unwrap_or_default();
    let mut attrs = json!({"accountId": ACCOUNT});
    for (k, v) in project.as_object().into_iter().flatten() {
        attrs[k] = v.clone();
    }
    entities.push(json!({"uid": {"type": "Tre::Project", "id": "proj-genomics"}, "attrs": attrs, "parents": []}));
    entities.extend(more.iter().cloned());
    Value::Array(entities)
}
