//! Oversight against the AWS emulator: the access report is the access Lake Formation holds
//! after an apply; an exemption a data manager grants through the API lets one denied access
//! through until its end, then not; a review campaign's revoke attestation ends the grant;
//! break-glass opens the project's break-glass role to an auditor once another person
//! approves, and closes it at the end or on revoke, alerted and logged both ways.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tregov_tests::governed::{
    create_topic, identity, lf_permissions, lf_permissions_of, log_records,
    revoked_within_two_seconds_of, role, runtime, seed, tregov, wait_until, why_replayed,
    write_config, write_identity, writer_permissions, Daemon, ACCOUNT,
};
use tregov_tests::jwt::{auth_section, token};
use tregov_tests::moto::Moto;
use tregov_tests::{stderr, stdout, Tre};

fn report(tre: &Tre, moto: &Moto, cfg: &std::path::Path, args: &[&str]) -> Value {
    let mut all = vec!["access"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    let out = tregov(tre, moto, cfg, &all);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("a JSON report")
}

/// The report's role rows for `role` as Lake Formation lists grants: per `db.table`, the
/// permissions a read (`DESCRIBE`, `SELECT`) or a write (and `DELETE`, `INSERT`) holds.
fn as_grants(report: &Value, role: &str) -> Vec<(String, Vec<String>)> {
    let mut by_table: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in report["rows"].as_array().into_iter().flatten() {
        if row["holder_kind"] != "role" || row["holder"] != role {
            continue;
        }
        let table = row["dataset"]
            .as_str()
            .unwrap_or_default()
            .replace('/', ".");
        let perms = by_table.entry(table).or_default();
        perms.extend(["DESCRIBE", "SELECT"].map(String::from));
        if row["action"] == "write" {
            perms.extend(["DELETE", "INSERT"].map(String::from));
        }
        perms.sort();
        perms.dedup();
    }
    by_table.into_iter().collect()
}

#[test]
fn access_who_and_access_of_agree_with_lake_formation_after_apply_and_name_what_ends_it() {
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    // alice's training lapses in 30 days: her access ends then, and the report says so.
    let lapses = SystemTime::now() + Duration::from_secs(30 * 86_400);
    let lapses = tregov_engine::clock::wall_ms(lapses);
    let mut people = identity(true);
    for entity in people.as_array_mut().into_iter().flatten() {
        if entity["uid"]["id"] == "alice" {
            entity["attrs"]["trainingExpires"] = tregov_engine::clock::datetime_value(lapses);
        }
    }
    write_identity(&tre, &people);
    let cfg = write_config(&tre, 5, "");
    let out = tregov(&tre, &moto, &cfg, &["apply", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let held = lf_permissions_of(&moto, &role());
    assert_eq!(
        held,
        vec![("genomics.gwas_2024".to_string(), writer_permissions())]
    );

    let of_alice = report(&tre, &moto, &cfg, &["of", "alice"]);
    assert_eq!(as_grants(&of_alice, &role()), held, "{of_alice:#}");
    let who = report(&tre, &moto, &cfg, &["who", "genomics/gwas_2024"]);
    assert_eq!(as_grants(&who, &role()), held, "{who:#}");
    let roles: Vec<&Value> = who["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["holder_kind"] == "role")
        .collect();
    assert!(
        roles
            .iter()
            .all(|r| r["holder"] == role().as_str() && r["owners"] == json!(["alice"])),
        "only alice's workspace role holds it: {roles:#?}"
    );
    let write = who["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["holder_kind"] == "user" && r["holder"] == "alice" && r["action"] == "write")
        .expect("alice may write");
    assert_eq!(write["policies"], json!(["data-study-writers-write"]));
    assert_eq!(
        write["ends"]["at"],
        tregov_engine::clock::datetime_value(lapses)["__extn"]["arg"]
    );
    assert_eq!(write["ends"]["because"], json!(["data-training-current"]));

    // CSV: a header and one row per access.
    let csv = tregov(
        &tre,
        &moto,
        &cfg,
        &["access", "who", "genomics/gwas_2024", "--format", "csv"],
    );
    let text = stdout(&csv);
    assert!(
        text.starts_with("holder_kind,holder,owners,dataset,action,policies,ends_at,ended_by\n")
    );
    assert_eq!(
        text.lines().count(),
        1 + who["rows"].as_array().map_or(0, Vec::len)
    );
}

/// `tregov.toml` with the API on loopback (tokens from the test issuer) and revocations not
/// limited by fraction.
fn config_with_api(tre: &Tre) -> std::path::PathBuf {
    let extra = format!(
        "[api]\nlisten = \"127.0.0.1:0\"\n{}[safety]\nmax_revoke_fraction = 1.0\n",
        auth_section()
    );
    write_config(tre, 1, &extra)
}

/// `tregov why` alice may do `action` on the study.
fn why_alice(tre: &Tre, moto: &Moto, cfg: &std::path::Path, action: &str) -> std::process::Output {
    let action = format!(r#"Tre::Action::"{action}""#);
    let args = [
        "why",
        "--principal",
        r#"Tre::User::"alice""#,
        "--action",
        &action,
        "--resource",
        r#"Tre::Dataset::"genomics/gwas_2024""#,
    ];
    tregov(tre, moto, cfg, &args)
}

/// The test TRE's people with alice no longer a researcher (so `data-grantees-are-researchers-
/// or-admins` denies her the study she is listed on) and dora, the project's data manager.
fn alice_not_a_researcher_and_dora_managing_data() -> Value {
    let mut people = identity(true);
    let list = people.as_array_mut().expect("entities");
    for entity in list.iter_mut() {
        if entity["uid"]["id"] == "alice" {
            if let Some(parents) = entity["parents"].as_array_mut() {
                parents.retain(|p| p["id"] != "Researcher");
            }
        }
    }
    list.push(
        json!({"uid": {"type": "Tre::Role", "id": "DataManager"}, "attrs": {}, "parents": []}),
    );
    list.push(json!({"uid": {"type": "Tre::User", "id": "dora"}, "attrs": {"status": "active"},
        "parents": [{"type": "Tre::Role", "id": "DataManager"}, {"type": "Tre::Project", "id": "proj-genomics"}]}));
    people
}

#[test]
fn an_exemption_granted_by_a_data_manager_lets_one_denied_access_through_until_its_end_then_not() {
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    write_identity(&tre, &alice_not_a_researcher_and_dora_managing_data());
    let cfg = config_with_api(&tre);
    let out = tregov(&tre, &moto, &cfg, &["apply", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(lf_permissions(&moto).is_empty(), "denied: nothing granted");
    let daemon = Daemon::start(&tre, &moto, &cfg, &[], &[]);
    let api = daemon.api_url(Duration::from_secs(60));
    daemon.wait_for("resync done", Duration::from_secs(60));

    let until = SystemTime::now() + Duration::from_secs(40);
    let until_text = tregov_engine::clock::datetime_text(tregov_engine::clock::wall_ms(until));
    let grant = |who: &str, user: &str| {
        let args = [
            "exemptions",
            "grant",
            "--user",
            user,
            "--dataset",
            "genomics/gwas_2024",
            "--policy",
            "data-grantees-are-researchers-or-admins",
            "--until",
            &until_text,
            "--reason",
            "visiting statistician, agreed by the controller",
            "--api",
            &api,
            "--token",
            &token(who),
        ];
        tregov(&tre, &moto, &cfg, &args)
    };
    // Nobody exempts themselves, and only the project's data managers exempt anyone.
    let own = grant("dora", "dora");
    assert_eq!(own.status.code(), Some(2), "{}", stderr(&own));
    assert!(
        stderr(&own).contains("exemptions-never-for-oneself"),
        "{}",
        stderr(&own)
    );
    let by_alice = grant("alice", "alice");
    assert_eq!(by_alice.status.code(), Some(2), "{}", stderr(&by_alice));

    let granted = grant("dora", "alice");
    assert!(granted.status.success(), "{}", stderr(&granted));
    let deadline = SystemTime::now() + Duration::from_secs(20);
    while lf_permissions(&moto).is_empty() {
        assert!(
            SystemTime::now() < deadline,
            "the exemption was not acted on"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        lf_permissions(&moto),
        vec![("genomics.gwas_2024".to_string(), writer_permissions())]
    );
    // `why` names the exemption the access was asked with.
    let why = why_alice(&tre, &moto, &cfg, "write");
    assert!(why.status.success(), "{}", stdout(&why));
    assert!(
        stdout(&why).contains("asked with exemption `data-grantees-are-researchers-or-admins/genomics/gwas_2024/alice/"),
        "{}",
        stdout(&why)
    );
    let listed = tregov(&tre, &moto, &cfg, &["exemptions"]);
    assert!(
        stdout(&listed).contains("`alice` on `genomics/gwas_2024`"),
        "{}",
        stdout(&listed)
    );
    assert!(SystemTime::now() < until, "granted too late to see it end");
    revoked_within_two_seconds_of(&moto, until);
    drop(daemon);

    // Once ended, `why` shows the policy denying it again.
    let why = why_alice(&tre, &moto, &cfg, "write");
    assert!(
        stdout(&why).contains("data-grantees-are-researchers-or-admins"),
        "{}",
        stdout(&why)
    );
}

#[test]
fn a_review_campaign_with_one_revoke_attestation_ends_that_grant_and_the_report_names_the_reviewer()
{
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    let mut people = identity(true);
    let list = people.as_array_mut().expect("entities");
    list.push(json!({"uid": {"type": "Tre::Role", "id": "InformationGovernance"}, "attrs": {}, "parents": []}));
    list.push(
        json!({"uid": {"type": "Tre::User", "id": "gail"}, "attrs": {"status": "active"},
        "parents": [{"type": "Tre::Role", "id": "InformationGovernance"}]}),
    );
    write_identity(&tre, &people);
    let cfg = config_with_api(&tre);
    let out = tregov(&tre, &moto, &cfg, &["apply", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        lf_permissions(&moto),
        vec![("genomics.gwas_2024".to_string(), writer_permissions())]
    );
    let daemon = Daemon::start(&tre, &moto, &cfg, &[], &[]);
    let api = daemon.api_url(Duration::from_secs(60));
    daemon.wait_for("resync done", Duration::from_secs(60));
    let as_user = |who: &str| {
        vec![
            "--api".to_string(),
            api.clone(),
            "--token".to_string(),
            token(who),
        ]
    };
    let run = |who: &str, args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(as_user(who));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        tregov(&tre, &moto, &cfg, &all)
    };

    // An IT admin starts a campaign over the study; Information Governance reviews.
    let due = tregov_engine::clock::datetime_text(tregov_engine::clock::wall_ms(
        SystemTime::now() + Duration::from_secs(86_400),
    ));
    let started = run(
        "ian",
        &[
            "--output",
            "json",
            "review",
            "start",
            "--scope",
            "dataset:genomics/gwas_2024",
            "--reviewers",
            "InformationGovernance",
            "--due",
            &due,
        ],
    );
    assert!(started.status.success(), "{}", stderr(&started));
    let started: Value = serde_json::from_str(&stdout(&started)).expect("json");
    let campaign = started["id"].as_str().expect("campaign id").to_string();
    let items = started["items"].as_array().expect("items");
    assert_eq!(
        items.len(),
        1,
        "alice's access is the one access: {started:#}"
    );
    assert_eq!(items[0]["actions"], json!(["read", "write"]));
    let item = items[0]["id"].as_str().expect("item id").to_string();

    // alice does not review her own access (nor is she a reviewer); gail revokes it.
    let own = run("alice", &["review", "attest", &item, "keep"]);
    assert_eq!(own.status.code(), Some(2), "{}", stderr(&own));
    let revoked = run("gail", &["review", "attest", &item, "revoke"]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let deadline = SystemTime::now() + Duration::from_secs(20);
    while !lf_permissions(&moto).is_empty() {
        assert!(
            SystemTime::now() < deadline,
            "the revoke attestation was not acted on"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(daemon);

    let report = tregov(
        &tre,
        &moto,
        &cfg,
        &["--output", "json", "review", "report", &campaign],
    );
    assert!(report.status.success(), "{}", stderr(&report));
    let report: Value = serde_json::from_str(&stdout(&report)).expect("json");
    let attested = report["attestations"].as_array().expect("attestations");
    assert_eq!(attested.len(), 1, "{report:#}");
    assert_eq!(attested[0]["reviewer"], "gail");
    assert_eq!(attested[0]["verdict"], "revoke");
    assert!(
        attested[0]["time"]
            .as_str()
            .is_some_and(|t| t.starts_with("20")),
        "{report:#}"
    );
    assert_eq!(report["items"][0]["verdict"], "revoke");
    // `why` names the policy that ended it.
    let why = why_alice(&tre, &moto, &cfg, "read");
    assert!(
        stdout(&why).contains("data-revoked-by-review"),
        "{}",
        stdout(&why)
    );
}

const BREAK_GLASS_ROLE: &str = "TREBreakGlass";
/// What the admins wrote in the break-glass role's trust policy: tregov keeps it.
const ADMINS_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole","Condition":{"Bool":{"aws:MultiFactorAuthPresent":"true"}}}]}"#;

fn ivan_principal() -> String {
    format!("arn:aws:iam::{ACCOUNT}:user/ivan")
}

/// The break-glass role's trust policy statements, read back from the emulator's IAM.
fn trust_statements(moto: &Moto) -> Vec<Value> {
    runtime().block_on(async {
        let iam = aws_sdk_iam::Client::new(&moto.sdk_config().await);
        let role = iam
            .get_role()
            .role_name(BREAK_GLASS_ROLE)
            .send()
            .await
            .expect("role");
        let text = role
            .role()
            .and_then(|r| r.assume_role_policy_document())
            .map(tregov_collectors::iam::percent_decode)
            .unwrap_or_default();
        let doc: Value = serde_json::from_str(&text).expect("a trust policy");
        doc["Statement"].as_array().cloned().unwrap_or_default()
    })
}

fn admits_ivan(moto: &Moto) -> bool {
    trust_statements(moto)
        .iter()
        .any(|s| s["Principal"]["AWS"] == ivan_principal().as_str())
}

fn wait_for_trust(moto: &Moto, admitted: bool, within: Duration) {
    let deadline = SystemTime::now() + within;
    while admits_ivan(moto) != admitted {
        assert!(
            SystemTime::now() < deadline,
            "ivan is {}admitted after {within:?}: {:#?}",
            if admitted { "not " } else { "still " },
            trust_statements(moto)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn break_glass_approved_by_another_opens_the_projects_role_to_the_auditor_until_its_end_or_revoke_alerted_both_ways(
) {
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    let topic = create_topic(&moto, "tre-alerts");
    runtime().block_on(async {
        let iam = aws_sdk_iam::Client::new(&moto.sdk_config().await);
        iam.create_role()
            .role_name(BREAK_GLASS_ROLE)
            .assume_role_policy_document(ADMINS_TRUST)
            .send()
            .await
            .expect("break-glass role");
        iam.create_user()
            .user_name("ivan")
            .send()
            .await
            .expect("ivan");
    });
    let mut people = identity(true);
    let list = people.as_array_mut().expect("entities");
    list.push(json!({"uid": {"type": "Tre::Role", "id": "Auditor"}, "attrs": {}, "parents": []}));
    list.push(json!({"uid": {"type": "Tre::User", "id": "ivan"},
        "attrs": {"status": "active", "awsPrincipal": ivan_principal()},
        "parents": [{"type": "Tre::Role", "id": "Auditor"}, {"type": "Tre::Role", "id": "ITAdmin"}]}));
    write_identity(&tre, &people);
    let extra = format!(
        "[api]\nlisten = \"127.0.0.1:0\"\n{}[breakglass]\nrole_name = \"{BREAK_GLASS_ROLE}\"\nmax_seconds = 3600\nalert_topic_arn = \"{topic}\"\n",
        auth_section()
    );
    let cfg = write_config(&tre, 1, &extra);
    let daemon = Daemon::start(&tre, &moto, &cfg, &[], &[]);
    let api = daemon.api_url(Duration::from_secs(60));
    daemon.wait_for("resync done", Duration::from_secs(60));
    let run = |who: &str, args: &[&str]| {
        let mut all: Vec<String> = ["--output", "json", "breakglass"]
            .iter()
            .chain(args)
            .map(|a| a.to_string())
            .collect();
        all.extend([
            "--api".to_string(),
            api.clone(),
            "--token".to_string(),
            token(who),
        ]);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        tregov(&tre, &moto, &cfg, &all)
    };
    let request = |seconds: &str| {
        let out = run(
            "ivan",
            &[
                "request",
                "proj-genomics",
                "--reason",
                "incident INC-4412",
                "--for",
                seconds,
            ],
        );
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
        let made: Value = serde_json::from_str(&stdout(&out)).expect("json");
        made["id"].as_str().expect("request id").to_string()
    };

    // Longer than the configured maximum: refused before any decision.
    let too_long = run(
        "ivan",
        &["request", "proj-genomics", "--reason", "x", "--for", "2h"],
    );
    assert_eq!(too_long.status.code(), Some(3), "{}", stdout(&too_long));
    // ivan is in the approver role too, and still cannot approve himself.
    let id = request("25s");
    let own = run("ivan", &["approve", &id]);
    assert_eq!(own.status.code(), Some(2), "{}", stdout(&own));
    assert!(
        stdout(&own).contains("breakglass-never-self-approved"),
        "{}",
        stdout(&own)
    );
    assert!(!admits_ivan(&moto));

    let approved = run("ian", &["approve", &id]);
    assert!(approved.status.success(), "{}", stdout(&approved));
    let grant: Value = serde_json::from_str(&stdout(&approved)).expect("json");
    let ends = grant["expires_at"].as_str().expect("end").to_string();
    wait_for_trust(&moto, true, Duration::from_secs(20));
    let statements = trust_statements(&moto);
    assert_eq!(
        statements.len(),
        2,
        "the admins' statement stays: {statements:#?}"
    );
    assert_eq!(
        statements[1]["Condition"]["DateLessThan"]["aws:CurrentTime"], ends,
        "AWS itself stops honouring it at the end"
    );
    wait_until("the open grant counted", Duration::from_secs(10), || {
        daemon.metrics().contains("tregov_break_glass_open 1")
    });

    // At its end it closes within two seconds.
    let end =
        tregov_engine::clock::json_datetime_ms(&json!({"__extn": {"fn": "datetime", "arg": ends}}))
            .expect("a datetime");
    let end = SystemTime::UNIX_EPOCH + Duration::from_millis(end as u64);
    assert!(SystemTime::now() < end, "opened too late to see it close");
    while SystemTime::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for_trust(&moto, false, Duration::from_secs(2));
    assert_eq!(trust_statements(&moto).len(), 1);

    // A second grant, ended early by the holder.
    let again = request("30m");
    let approved = run("ian", &["approve", &again]);
    assert!(approved.status.success(), "{}", stdout(&approved));
    wait_for_trust(&moto, true, Duration::from_secs(20));
    let revoked = run("ivan", &["revoke", &again]);
    assert!(revoked.status.success(), "{}", stdout(&revoked));
    wait_for_trust(&moto, false, Duration::from_secs(20));

    // Each opening and closing went to the alert topic once, once IAM showed it, and is in
    // the log with the decision that made it.
    let alerted = || {
        let mut marks: Vec<String> = log_records(&tre)
            .iter()
            .filter(|r| r["kind"] == "apply" && r["change"]["kind"] == "notify")
            .filter(|r| r["change"]["topicArn"] == topic.as_str() && r["result"] == "applied")
            .filter_map(|r| r["change"]["mark"].as_str().map(String::from))
            .collect();
        marks.sort();
        marks
    };
    wait_until("four alerts", Duration::from_secs(20), || {
        alerted().len() >= 4
    });
    drop(daemon);
    let records = log_records(&tre);
    let alerted = alerted();
    let mut expected: Vec<String> = [&id, &id, &again, &again]
        .iter()
        .zip(["closed", "opened", "closed", "opened"])
        .map(|(grant, what)| format!("breakglass/{grant}/{what}"))
        .collect();
    expected.sort();
    assert_eq!(alerted, expected);
    let why = why_replayed(&tre, &records, "update-trust-policy");
    assert!(
        why.contains("breakglass-auditor-with-unexpired-grant"),
        "{why}"
    );
    let listed = stdout(&tre.run_with(Some(&moto), &cfg, &["breakglass"]));
    assert!(listed.contains("revoked by ivan"), "{listed}");
    assert!(listed.contains("approved by ian, ended"), "{listed}");
}
