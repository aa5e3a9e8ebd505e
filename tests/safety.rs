//! Blast-radius limits against the emulator: no single bad input (an empty identity export,
//! a listing that lost most of what it listed, a truncated or moved policy file) makes
//! tregov revoke at scale without an admin approving it; protected principals are never
//! planned for revocation; approving goes through the API as a Cedar decision.

use std::time::Duration;

use serde_json::{json, Value};
use tregov_tests::governed::{
    create_study, grant_select, identity, lf_permissions, lf_permissions_of, log_records, parked,
    role, runtime, seed, tregov, wait_until, write_config, write_identity, writer_permissions,
    Daemon, ACCOUNT,
};
use tregov_tests::jwt::{auth_section, token};
use tregov_tests::moto::Moto;
use tregov_tests::{stderr, stdout, Tre};

fn api_section() -> String {
    format!("[api]\nlisten = \"127.0.0.1:0\"\n{}", auth_section())
}

/// A governed TRE where alice's role holds what tregov granted her: all of gwas_2024.
fn granted(moto: &Moto, extra: &str) -> (Tre, std::path::PathBuf) {
    let tre = Tre::new();
    seed(moto, &tre);
    let cfg = write_config(&tre, 1, extra);
    let out = tregov(&tre, moto, &cfg, &["apply", "--yes"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(
        lf_permissions(moto),
        vec![("genomics.gwas_2024".to_string(), writer_permissions())]
    );
    (tre, cfg)
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(out), stderr(out)))
}

#[test]
fn an_identity_export_replaced_by_an_empty_list_revokes_nothing_until_an_admin_accepts_it() {
    let moto = Moto::start();
    let (tre, cfg) = granted(&moto, &api_section());
    write_identity(&tre, &json!([]));

    // `apply --yes`: the empty listing is held back; the store keeps the last good people.
    let apply = tregov(&tre, &moto, &cfg, &["apply", "--yes"]);
    assert!(apply.status.success(), "{}", stderr(&apply));
    assert_eq!(
        lf_permissions(&moto),
        vec![("genomics.gwas_2024".to_string(), writer_permissions())],
        "{}",
        stdout(&apply)
    );
    let status = tregov(&tre, &moto, &cfg, &["status"]);
    assert!(
        stdout(&status).contains("held: the listing shrank from 5 to 0 item(s) (100 %)"),
        "{}",
        stdout(&status)
    );
    assert!(
        parked(&tre, &moto, &cfg).contains(&(
            "accept-identity-0".into(),
            "pending".into(),
            "accept-listing".into()
        )),
        "{:?}",
        parked(&tre, &moto, &cfg)
    );

    // The daemon holds it back too, and says so in its log and metrics.
    let daemon = Daemon::start(&tre, &moto, &cfg, &[], &[]);
    let api = daemon.api_url(Duration::from_secs(60));
    daemon.wait_for("listing held back", Duration::from_secs(60));
    daemon.wait_for("resync done", Duration::from_secs(60));
    let metrics = daemon.metrics();
    assert!(
        metrics.contains("tregov_safety_trips_total{reason=\"listing_shrank\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tregov_collector_lag_seconds{collector=\"identity\"}"),
        "{metrics}"
    );
    assert_eq!(lf_permissions(&moto).len(), 1, "nothing revoked");

    // An IT admin (still in the store: the last good identities stay) accepts the empty
    // export: now every grant tregov made would go, and the revocations wait in turn.
    let accept = tregov(
        &tre,
        &moto,
        &cfg,
        &[
            "approve",
            "accept-identity-0",
            "--api",
            &api,
            "--token",
            &token("ian"),
        ],
    );
    assert!(accept.status.success(), "{}", stderr(&accept));
    let parked_lines = daemon.wait_for("safety limit", Duration::from_secs(30));
    assert!(
        parked_lines
            .iter()
            .any(|l| l.contains("reason=\"revoke_fraction\"")),
        "{}",
        parked_lines.join("\n")
    );
    assert_eq!(lf_permissions(&moto).len(), 1, "still nothing revoked");
    // The gauge is set when the reconcile ends, just after the trip is logged.
    wait_until(
        "the revoke and the role policy's removal wait",
        Duration::from_secs(30),
        || daemon.metrics().contains("tregov_parked_items 2"),
    );
    let metrics = daemon.metrics();
    assert!(
        metrics.contains("tregov_safety_trips_total{reason=\"revoke_fraction\"} 1"),
        "{metrics}"
    );
}

#[test]
fn revocations_over_the_fraction_are_parked_until_an_it_admin_approves_them_through_the_api() {
    let moto = Moto::start();
    let alerts = tregov_tests::http::Recorder::start(String::new());
    let topic = runtime().block_on(async {
        let sns = aws_sdk_sns::Client::new(&moto.sdk_config().await);
        let topic = sns
            .create_topic()
            .name("tre-safety")
            .send()
            .await
            .expect("topic");
        let arn = topic.topic_arn().unwrap_or_default().to_string();
        sns.subscribe()
            .topic_arn(&arn)
            .protocol("http")
            .endpoint(alerts.url("/alerts"))
            .send()
            .await
            .expect("subscribe");
        arn
    });
    let extra = format!("{}[safety]\nalert_topic_arn = \"{topic}\"\n", api_section());
    let (tre, cfg) = granted(&moto, &extra);

    // alice leaves the study's read-write list: all the access tregov granted goes.
    write_identity(&tre, &identity(false));
    let daemon = Daemon::start(&tre, &moto, &cfg, &[], &[]);
    let api = daemon.api_url(Duration::from_secs(60));
    daemon.wait_for("safety limit", Duration::from_secs(60));
    assert_eq!(lf_permissions(&moto).len(), 1, "nothing revoked yet");
    let waiting: Vec<String> = parked(&tre, &moto, &cfg)
        .into_iter()
        .filter(|(_, status, _)| status == "pending")
        .map(|(id, _, kind)| format!("{id} {kind}"))
        .collect();
    assert_eq!(waiting.len(), 2, "{waiting:?}");
    let records = log_records(&tre);
    let safety = records
        .iter()
        .find(|r| r["kind"] == "safety")
        .expect("the trip is in the decision log");
    assert_eq!(safety["limit"], "revoke_fraction");
    wait_until("the alert reaches SNS", Duration::from_secs(30), || {
        alerts
            .posts()
            .iter()
            .any(|p| p.contains("revocations held back"))
    });

    // The person whose access would change may not approve it; an IT admin may.
    let ids: Vec<&str> = waiting
        .iter()
        .map(|w| w.split(' ').next().unwrap_or_default())
        .collect();
    let as_alice = tregov(
        &tre,
        &moto,
        &cfg,
        &[
            &["approve"][..],
            &ids[..],
            &["--api", &api, "--token", &token("alice")][..],
        ]
        .concat(),
    );
    assert_eq!(as_alice.status.code(), Some(2), "{}", stderr(&as_alice));
    assert!(
        stderr(&as_alice).contains("HTTP 403") && stderr(&as_alice).contains("approval-"),
        "{}",
        stderr(&as_alice)
    );
    let as_ian = tregov(
        &tre,
        &moto,
        &cfg,
        &[
            &["approve"][..],
            &ids[..],
            &["--api", &api, "--token", &token("ian")][..],
        ]
        .concat(),
    );
    assert!(as_ian.status.success(), "{}", stderr(&as_ian));
    wait_until(
        "the approved revocations are applied",
        Duration::from_secs(30),
        || lf_permissions(&moto).is_empty(),
    );
    drop(daemon);

    let records = log_records(&tre);
    let approvals: Vec<&Value> = records.iter().filter(|r| r["kind"] == "approval").collect();
    assert_eq!(approvals.len(), 2, "{approvals:?}");
    assert!(approvals
        .iter()
        .all(|a| a["by"] == "ian" && a["result"] == "approved"));
    let refused = records
        .iter()
        .filter(|r| {
            r["kind"] == "decision"
                && r["origin"] == "approval"
                && r["request"]["principal"] == "Tre::User::\"alice\""
        })
        .count();
    assert!(
        refused >= 1,
        "alice's refused approval is a logged decision"
    );
    let verify = tregov(&tre, &moto, &cfg, &["log", "verify"]);
    assert!(verify.status.success(), "{}", stdout(&verify));
}

#[test]
fn a_policy_file_truncated_or_moved_while_the_daemon_runs_is_refused_and_revokes_nothing() {
    let moto = Moto::start();
    let (tre, cfg) = granted(&moto, "");
    let policies = tregov_tests::copy_policies_with_tests(tre.dir.path());
    let daemon = Daemon::start(
        &tre,
        &moto,
        &cfg,
        &["--policies", &policies.display().to_string()],
        &[],
    );
    daemon.wait_for("resync done", Duration::from_secs(60));

    std::fs::write(policies.join("data_access.cedar"), "").expect("truncate");
    let rejected = daemon.wait_for("policy change rejected", Duration::from_secs(30));
    assert!(
        rejected.last().is_some_and(|l| l.contains("policy tests")),
        "{}",
        rejected.join("\n")
    );
    // A resync after the refusal still decides with the last good set.
    std::process::Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .status()
        .expect("kill");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lf_permissions(&moto).len(), 1, "nothing revoked");

    // Moved into a subdirectory: still loaded (the read is recursive, as the watcher is),
    // but its tests no longer find it, so the set is refused again.
    let good =
        std::fs::read_to_string(tregov_tests::workspace_root().join("policies/data_access.cedar"))
            .expect("policy");
    std::fs::create_dir_all(policies.join("data")).expect("mkdir");
    std::fs::write(policies.join("data").join("data_access.cedar"), good).expect("move");
    std::fs::remove_file(policies.join("data_access.cedar")).expect("remove");
    daemon.wait_for("policy change rejected", Duration::from_secs(30));
    assert_eq!(
        lf_permissions(&moto),
        vec![("genomics.gwas_2024".to_string(), writer_permissions())],
        "nothing revoked"
    );
    let metrics = daemon.metrics();
    assert!(
        metrics.contains("tregov_policy_reload_failures_total 2"),
        "{metrics}"
    );
}

#[test]
fn a_listing_that_shrinks_by_ninety_percent_keeps_the_last_good_one_and_status_says_why() {
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    runtime().block_on(async {
        let glue = aws_sdk_glue::Client::new(&moto.sdk_config().await);
        for i in 0..8 {
            create_study(&glue, "genomics", &format!("extra_{i}")).await;
        }
    });
    let cfg = write_config(&tre, 5, "");
    let datasets = |tre: &Tre| {
        let out = tre.run(&["entities", "export"]);
        let all: Vec<Value> = serde_json::from_slice(&out.stdout).expect("entities");
        all.iter()
            .filter(|e| e["uid"]["type"] == "Tre::Dataset")
            .count()
    };
    let first = tregov(&tre, &moto, &cfg, &["collect", "--once"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(datasets(&tre), 10);

    // The data lake role loses DESCRIBE on most of the catalog: Glue answers, with one table.
    runtime().block_on(async {
        let glue = aws_sdk_glue::Client::new(&moto.sdk_config().await);
        let _ = glue.delete_database().name("cardio").send().await;
        for i in 0..8 {
            glue.delete_table()
                .database_name("genomics")
                .name(format!("extra_{i}"))
                .send()
                .await
                .expect("delete");
        }
    });
    let second = tregov(
        &tre,
        &moto,
        &cfg,
        &["--output", "json", "collect", "--once"],
    );
    let report = json_of(&second);
    let held = report["datalake"]["held"].as_str().unwrap_or_default();
    assert!(held.contains("the listing shrank from"), "{report:#}");
    assert_eq!(datasets(&tre), 10, "the store keeps the last good listing");
    let status = tregov(&tre, &moto, &cfg, &["--output", "json", "status"]);
    let status = json_of(&status);
    let datalake = status["collectors"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["collector"] == "datalake"))
        .expect("datalake status");
    assert!(
        datalake["held"]
            .as_str()
            .is_some_and(|h| h.contains("safety.max_shrink_fraction")),
        "{datalake:#}"
    );
    // What rests on the data lake waits: nothing is planned away from the last good view.
    let apply = tregov(&tre, &moto, &cfg, &["apply", "--yes"]);
    assert!(
        stdout(&apply).contains("deferred") || stdout(&apply).contains("applied 0"),
        "{}",
        stdout(&apply)
    );
}

#[test]
fn data_lake_admins_and_protected_roles_keep_their_grants_and_any_other_stranger_loses_its() {
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    let admin = format!("arn:aws:iam::{ACCOUNT}:role/TREDataLakeAdminRole");
    let etl = format!("arn:aws:iam::{ACCOUNT}:role/tre-glue-etl");
    let stranger = format!("arn:aws:iam::{ACCOUNT}:role/analytics-batch");
    runtime().block_on(async {
        for name in ["TREDataLakeAdminRole", "tre-glue-etl", "analytics-batch"] {
            moto.create_role(name, &[]).await;
        }
        let lf = aws_sdk_lakeformation::Client::new(&moto.sdk_config().await);
        lf.put_data_lake_settings()
            .data_lake_settings(
                aws_sdk_lakeformation::types::DataLakeSettings::builder()
                    .data_lake_admins(
                        aws_sdk_lakeformation::types::DataLakePrincipal::builder()
                            .data_lake_principal_identifier(&admin)
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .expect("settings");
    });
    for principal in [&admin, &etl, &stranger] {
        grant_select(&moto, principal, "genomics", "gwas_2024");
    }
    let cfg = write_config(
        &tre, 5, "", // the protected ETL role goes into [datalake] below
    );
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        text.replace(
            &format!("[datalake]\naccount_id = \"{ACCOUNT}\"\n"),
            &format!(
                "[datalake]\naccount_id = \"{ACCOUNT}\"\nprotected_principals = [\"{etl}\"]\n"
            ),
        ),
    )
    .expect("config");

    let collect = tregov(&tre, &moto, &cfg, &["collect", "--once"]);
    assert!(collect.status.success(), "{}", stderr(&collect));
    let plan = json_of(&tregov(&tre, &moto, &cfg, &["--output", "json", "plan"]));
    let revoked: Vec<&str> = plan["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["change"]["kind"] == "lf-revoke")
        .filter_map(|i| i["change"]["principal"].as_str())
        .collect();
    assert_eq!(revoked, vec![stranger.as_str()], "{plan:#}");

    let apply = tregov(&tre, &moto, &cfg, &["apply", "--yes"]);
    assert!(apply.status.success(), "{}", stderr(&apply));
    assert_eq!(lf_permissions_of(&moto, &stranger), vec![]);
    for kept in [&admin, &etl] {
        assert_eq!(
            lf_permissions_of(&moto, kept),
            vec![("genomics.gwas_2024".to_string(), vec!["SELECT".to_string()])],
            "{kept}"
        );
    }
    assert_eq!(
        lf_permissions(&moto),
        vec![("genomics.gwas_2024".to_string(), writer_permissions())],
        "alice's own grant is made; {}",
        role()
    );
}

#[test]
fn a_daemon_that_cannot_bind_its_address_fails_as_the_machine_not_as_invalid_input() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let tre = Tre::new();
    let cfg = tre.dir.path().join("tregov.toml");
    std::fs::write(
        &cfg,
        format!("[daemon]\nmetrics_listen = \"{addr}\"\n[datalake]\naccount_id = \"{ACCOUNT}\"\n"),
    )
    .expect("config");
    let out = tre.run_with(None, &cfg, &["daemon", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot listen"), "{}", stderr(&out));
}
