//! Plan, apply and the daemon against the AWS emulator: grants follow the policies, apply is
//! idempotent, and an out-of-band Lake Formation grant seen in the trail is revoked.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tregov_tests::governed::{
    applied_counts, create_topic, grant_record, grant_select, http_get, identity,
    identity_with_project, instance_state_and_tags, lf_permissions, log_records, out_of_band_grant,
    put_log_file, role, runtime, seed, seed_studies, tregov, with_cloudtrail_keys, write_config,
    write_identity, writer_permissions, Daemon, ACCOUNT,
};
use tregov_tests::jwt::{auth_section, token};
use tregov_tests::moto::Moto;
use tregov_tests::{copy_policies, stderr, stdout, Tre};

/// One workspace role with one or two grants: any revoke is most of what tregov granted, so
/// these tests, which are about enforcement, lift the fraction limit (tests/safety.rs
/// covers the limits).
const ONE_GRANT_TRE: &str = "[safety]
max_revoke_fraction = 1.0
";

#[test]
fn apply_grants_what_the_policies_allow_and_a_second_apply_changes_nothing() {
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    let cfg = write_config(&tre, 5, ONE_GRANT_TRE);

    // `--log-format json`: every stderr line one JSON object, the event's fields as keys.
    let collected = tregov(
        &tre,
        &moto,
        &cfg,
        &["-v", "--log-format", "json", "collect", "--once"],
    );
    assert!(collected.status.success(), "{}", stderr(&collected));
    let log_lines: Vec<Value> = stderr(&collected)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
        })
        .collect();
    assert!(
        log_lines
            .iter()
            .any(|l| l["level"] == "INFO" && l["message"].is_string()),
        "{log_lines:?}"
    );
    let pending = tregov(&tre, &moto, &cfg, &["plan", "--detailed-exitcode"]);
    assert_eq!(
        pending.status.code(),
        Some(2),
        "changes pending: {}",
        stderr(&pending)
    );
    let plan = tregov(&tre, &moto, &cfg, &["--output", "json", "plan"]);
    assert!(plan.status.success(), "{}", stderr(&plan));
    let plan: Value = serde_json::from_slice(&plan.stdout).expect("plan json");
    let verbs: Vec<&str> = plan["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["change"]["kind"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        verbs,
        vec!["put-role-policy", "lf-grant", "tag-workspace"],
        "{plan:#}"
    );
    // Every item names the logged decisions behind it.
    for item in plan["items"].as_array().expect("items") {
        assert!(item["decisions"][0]["logSeq"].is_u64(), "{item:#}");
    }

    let first = tregov(&tre, &moto, &cfg, &["apply", "--yes"]);
    assert!(
        first.status.success(),
        "{}\n{}",
        stdout(&first),
        stderr(&first)
    );
    assert!(
        stdout(&first).contains("applied 3 of 3"),
        "{}",
        stdout(&first)
    );
    assert_eq!(
        lf_permissions(&moto),
        vec![("genomics.gwas_2024".to_string(), writer_permissions())]
    );

    let second = tregov(&tre, &moto, &cfg, &["apply", "--yes"]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stdout(&second).starts_with("no changes"),
        "{}",
        stdout(&second)
    );
    let nothing = tregov(&tre, &moto, &cfg, &["plan", "--detailed-exitcode"]);
    assert_eq!(
        nothing.status.code(),
        Some(0),
        "nothing to do: {}",
        stderr(&nothing)
    );

    // alice leaves the read-write list: the study is no longer hers to use.
    write_identity(&tre, &identity(false));
    let third = tregov(&tre, &moto, &cfg, &["apply", "--yes"]);
    assert!(third.status.success(), "{}", stderr(&third));
    assert_eq!(lf_permissions(&moto), vec![], "{}", stdout(&third));

    let verify = tregov(&tre, &moto, &cfg, &["log", "verify"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
}

#[test]
fn the_daemon_revokes_an_out_of_band_lake_formation_grant_seen_in_the_trail() {
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    let cfg = write_config(&tre, 1, ONE_GRANT_TRE);
    let policies = copy_policies(tre.dir.path());
    let out = tregov(&tre, &moto, &cfg, &["apply", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let daemon = Daemon::start(
        &tre,
        &moto,
        &cfg,
        &["--policies", &policies.display().to_string()],
        &[],
    );
    let wait_for = |needle: &str, within: Duration| daemon.wait_for(needle, within);
    let metrics_addr = daemon.metrics_addr.clone();
    // The first full resync, so the change below is found by the trail's fast path.
    wait_for("resync done", Duration::from_secs(60));
    out_of_band_grant(&moto, 1);
    let reconciled = wait_for("reconciled", Duration::from_secs(30));
    assert_eq!(
        lf_permissions(&moto),
        vec![("genomics.gwas_2024".to_string(), writer_permissions())],
        "the out-of-band grant is revoked and the allowed one kept"
    );
    // The drift-revert latency, poll interval excluded, as the daemon measured it.
    let revert_line = reconciled.last().cloned().unwrap_or_default();
    assert!(revert_line.contains("since_detection_ms="), "{revert_line}");
    eprintln!("drift revert: {revert_line}");

    // A broken policy edit is rejected and the last good policies keep deciding: the same
    // drift is reverted again.
    let data_access = policies.join("data_access.cedar");
    let good = std::fs::read_to_string(&data_access).expect("policy");
    std::fs::write(
        &data_access,
        format!("{good}\npermit (principal, action, resource) when {{ "),
    )
    .expect("edit");
    wait_for("policy change rejected", Duration::from_secs(30));
    out_of_band_grant(&moto, 2);
    wait_for("reconciled", Duration::from_secs(30));
    assert_eq!(
        lf_permissions(&moto),
        vec![("genomics.gwas_2024".to_string(), writer_permissions())],
        "a rejected policy edit opens nothing"
    );
    let metrics = http_get(&metrics_addr, "/metrics");
    assert!(
        metrics.contains("tregov_policy_reload_failures_total 1\n"),
        "one broken edit, reported once: {metrics}"
    );
    assert!(
        metrics.contains("tregov_applies_total{enforcer=\"lakeformation\",result=\"applied\"} 2"),
        "{metrics}"
    );
    assert!(http_get(&metrics_addr, "/healthz").ends_with("ok\n"));

    // A valid edit is picked up at once and enforced: writes are frozen.
    std::fs::write(&data_access, &good).expect("restore");
    std::fs::write(
        policies.join("freeze.cedar"),
        "@id(\"freeze-writes\")\nforbid (principal, action == Tre::Action::\"write\", resource);\n",
    )
    .expect("freeze");
    wait_for("policies reloaded", Duration::from_secs(30));
    wait_for("reconciled", Duration::from_secs(30));
    assert_eq!(
        lf_permissions(&moto),
        vec![(
            "genomics.gwas_2024".to_string(),
            vec!["DESCRIBE".to_string(), "SELECT".to_string()]
        )],
    );
    drop(daemon);

    // The revoke is in the log with the decision that denied the grant.
    let records = log_records(&tre);
    let revoke = records
        .iter()
        .find(|r| r["kind"] == "apply" && r["change"]["kind"] == "lf-revoke")
        .expect("revoke logged");
    assert_eq!(revoke["result"], "applied");
    let seq = revoke["decisions"][0].as_u64().expect("decision seq");
    let why = tre.run(&["why", "--replay", &seq.to_string()]);
    assert!(stdout(&why).contains("Deny"), "{}", stdout(&why));
}

fn budget(limit: &str, actual: &str) -> aws_sdk_budgets::types::Budget {
    let spend = |amount: &str| {
        aws_sdk_budgets::types::Spend::builder()
            .amount(amount)
            .unit("USD")
            .build()
            .expect("spend")
    };
    aws_sdk_budgets::types::Budget::builder()
        .budget_name("tre-genomics")
        .budget_limit(spend(limit))
        .time_unit(aws_sdk_budgets::types::TimeUnit::Monthly)
        .budget_type(aws_sdk_budgets::types::BudgetType::Cost)
        .calculated_spend(
            aws_sdk_budgets::types::CalculatedSpend::builder()
                .actual_spend(spend(actual))
                .forecasted_spend(spend(actual))
                .build(),
        )
        .build()
        .expect("budget")
}

fn env_role_policies(moto: &Moto) -> Vec<String> {
    runtime().block_on(async {
        let iam = aws_sdk_iam::Client::new(&moto.sdk_config().await);
        iam.list_role_policies()
            .role_name("swb-env-mgmt")
            .send()
            .await
            .expect("list")
            .policy_names()
            .to_vec()
    })
}

fn applied_kinds(out: &Output) -> Vec<String> {
    let v: Value = serde_json::from_slice(&out.stdout).expect("apply json");
    let mut kinds: Vec<String> = v["plan"]["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    let c = &i["change"];
                    match c["kind"].as_str() {
                        Some("tag-workspace") if c["remove"] == true => "untag".to_string(),
                        Some(k) => k.to_string(),
                        None => String::new(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    kinds.sort();
    kinds
}

#[test]
fn a_budget_breach_denies_and_stops_until_the_budget_is_raised_and_backup_tags_follow_opt_in() {
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    runtime().block_on(async {
        let sdk = moto.sdk_config().await;
        aws_sdk_budgets::Client::new(&sdk)
            .create_budget()
            .account_id(ACCOUNT)
            .budget(budget("1000", "1000"))
            .send()
            .await
            .expect("budget");
        moto.create_role("swb-env-mgmt", &[]).await;
    });
    let topic = create_topic(&moto, "tre-budget");
    let cfg = write_config(&tre, 5, "");
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        text.replace(
            &format!("account_id = \"{ACCOUNT}\"\n[datalake]"),
            &format!(
                "account_id = \"{ACCOUNT}\"\nenvironment_role_arn = \"arn:aws:iam::{ACCOUNT}:role/swb-env-mgmt\"\nnotify_topic_arn = \"{topic}\"\n[datalake]"
            ),
        ),
    )
    .expect("config");

    // Spend at 100% of the limit: notify, deny new workspaces, stop the running one.
    let breach = tregov(&tre, &moto, &cfg, &["--output", "json", "apply", "--yes"]);
    assert!(
        breach.status.success(),
        "{}\n{}",
        stdout(&breach),
        stderr(&breach)
    );
    assert_eq!(
        applied_kinds(&breach),
        vec![
            "lf-grant",
            "notify",
            "put-role-policy",
            "put-role-policy",
            "stop-workspace",
            "tag-workspace"
        ],
        "{}",
        stdout(&breach)
    );
    assert_eq!(
        env_role_policies(&moto),
        vec!["tregov-budget-deny".to_string()]
    );
    let (state, tags) = instance_state_and_tags(&moto);
    assert!(matches!(state.as_str(), "stopping" | "stopped"), "{state}");
    assert_eq!(
        tags.get("tregov:backup").map(String::as_str),
        Some("enabled")
    );

    // The budget is raised: the deny is lifted; the notification is not sent again.
    runtime().block_on(async {
        let budgets = aws_sdk_budgets::Client::new(&moto.sdk_config().await);
        budgets
            .delete_budget()
            .account_id(ACCOUNT)
            .budget_name("tre-genomics")
            .send()
            .await
            .expect("delete");
        budgets
            .create_budget()
            .account_id(ACCOUNT)
            .budget(budget("5000", "1000"))
            .send()
            .await
            .expect("raise");
        // The owner opts out of backups.
        aws_sdk_ec2::Client::new(&moto.sdk_config().await)
            .create_tags()
            .resources(instance_id(&moto).await)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("backup")
                    .value("false")
                    .build(),
            )
            .send()
            .await
            .expect("opt out");
    });
    let raised = tregov(&tre, &moto, &cfg, &["--output", "json", "apply", "--yes"]);
    assert!(
        raised.status.success(),
        "{}\n{}",
        stdout(&raised),
        stderr(&raised)
    );
    assert_eq!(
        applied_kinds(&raised),
        vec!["delete-role-policy", "untag"],
        "{}",
        stdout(&raised)
    );
    assert_eq!(env_role_policies(&moto), Vec::<String>::new());
    let (_, tags) = instance_state_and_tags(&moto);
    assert_eq!(tags.get("tregov:backup"), None);

    let again = tregov(&tre, &moto, &cfg, &["apply", "--yes"]);
    assert!(
        stdout(&again).starts_with("no changes"),
        "{}",
        stdout(&again)
    );
}

async fn instance_id(moto: &Moto) -> String {
    let ec2 = aws_sdk_ec2::Client::new(&moto.sdk_config().await);
    let out = ec2.describe_instances().send().await.expect("describe");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id().map(String::from))
        .next()
        .expect("instance")
}

#[test]
fn with_require_approval_a_revoke_waits_for_an_admin_who_approves_through_the_api() {
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    let api = format!("[api]\nlisten = \"127.0.0.1:0\"\n{}", auth_section());
    let cfg = write_config(&tre, 1, &api);
    let out = tregov(&tre, &moto, &cfg, &["apply", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let daemon = Daemon::start(&tre, &moto, &cfg, &[], &["--require-approval"]);
    let api = daemon.api_url(Duration::from_secs(60));
    daemon.wait_for("resync done", Duration::from_secs(60));

    out_of_band_grant(&moto, 1);
    let parked = daemon.wait_for("parked for approval", Duration::from_secs(30));
    let line = parked.last().cloned().unwrap_or_default();
    let id = line
        .split("item=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("item id")
        .to_string();
    assert!(
        lf_permissions(&moto).iter().any(|(t, _)| t == "cardio.ukb"),
        "nothing applied before approval"
    );
    let listed = tregov(&tre, &moto, &cfg, &["parked"]);
    assert!(
        stdout(&listed).contains(&format!("[{id}] pending")),
        "{}",
        stdout(&listed)
    );

    let as_ian = ["--api", api.as_str(), "--token", &token("ian")];
    let approve = tregov(
        &tre,
        &moto,
        &cfg,
        &[&["approve", id.as_str()][..], &as_ian[..]].concat(),
    );
    assert!(approve.status.success(), "{}", stderr(&approve));
    assert!(stdout(&approve).contains("by ian"), "{}", stdout(&approve));
    daemon.wait_for("reconciled", Duration::from_secs(30));
    assert_eq!(
        lf_permissions(&moto),
        vec![("genomics.gwas_2024".to_string(), writer_permissions())]
    );
    let listed = tregov(&tre, &moto, &cfg, &["parked"]);
    assert!(
        stdout(&listed).contains(&format!("[{id}] applied")),
        "{}",
        stdout(&listed)
    );
    // A decided item cannot be decided again.
    let again = tregov(
        &tre,
        &moto,
        &cfg,
        &[&["reject", id.as_str()][..], &as_ian[..]].concat(),
    );
    assert_eq!(again.status.code(), Some(3), "{}", stderr(&again));
}

#[test]
fn an_apply_killed_midway_converges_on_the_next_with_nothing_doubled() {
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    let cfg = write_config(&tre, 5, "");
    seed_studies(&moto, &tre, 40);

    for delay_ms in [0u64, 40] {
        let mut child = tre
            .command(Some(&moto), &cfg, &["apply", "--yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("apply starts");
        // Kill it once its plan is logged, that is while it applies.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let planned = tre.data_dir().join("log").is_dir()
                && tre.segments().iter().any(|p| {
                    std::fs::read_to_string(p).is_ok_and(|t| t.contains(r#""origin":"apply""#))
                });
            if planned || Instant::now() > deadline {
                break;
            }
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
    }

    eprintln!(
        "after the kills: {} of 41 tables granted",
        lf_permissions(&moto).len()
    );
    let resumed = tregov(&tre, &moto, &cfg, &["apply", "--yes"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let done = tregov(&tre, &moto, &cfg, &["apply", "--yes"]);
    assert!(stdout(&done).starts_with("no changes"), "{}", stdout(&done));

    let held = lf_permissions(&moto);
    assert_eq!(held.len(), 41, "{held:?}");
    assert!(
        held.iter().all(|(_, p)| p == &writer_permissions()),
        "{held:?}"
    );

    // The log survived the kills intact, and no item was recorded as applied twice.
    let verify = tregov(&tre, &moto, &cfg, &["log", "verify"]);
    assert!(verify.status.success(), "{}", stdout(&verify));
    let applied = applied_counts(&tre);
    assert!(applied.values().all(|n| *n == 1), "{applied:?}");
}

/// The admins' backup settings of proj-genomics, in the identity source they alone write.
fn identity_with_backup_settings() -> Value {
    identity_with_project(
        json!({"backupSettings": {"__entity": {"type": "Tre::BackupSettings", "id": "proj-genomics"}}}),
        &[
            json!({"uid": {"type": "Tre::BackupSettings", "id": "proj-genomics"},
            "attrs": {"frequency": "daily", "retentionDays": 180, "coldStorageAfterDays": 90,
                "startWindowMinutes": 60, "completionWindowMinutes": 600,
                "selfServiceNotebookRestore": false}, "parents": []}),
        ],
    )
}

#[test]
fn a_backup_plan_whose_retention_was_shortened_out_of_band_is_planned_back_to_the_admins_setting() {
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    write_identity(&tre, &identity_with_backup_settings());
    // Someone cut the plan's retention to a week.
    runtime().block_on(async {
        use aws_sdk_backup::types::{BackupPlanInput, BackupRuleInput, Lifecycle};
        let rule = BackupRuleInput::builder()
            .rule_name("tregov-workspaces")
            .target_backup_vault_name("Default")
            .schedule_expression("cron(0 5 ? * * *)")
            .start_window_minutes(60)
            .completion_window_minutes(600)
            .lifecycle(Lifecycle::builder().delete_after_days(7).build())
            .build()
            .expect("rule");
        aws_sdk_backup::Client::new(&moto.sdk_config().await)
            .create_backup_plan()
            .backup_plan(
                BackupPlanInput::builder()
                    .backup_plan_name("tre-workspaces")
                    .rules(rule)
                    .build()
                    .expect("plan"),
            )
            .send()
            .await
            .expect("backup plan");
    });
    let cfg = write_config(
        &tre,
        5,
        &format!("[backup]\nplan_name = \"tre-workspaces\"\n{ONE_GRANT_TRE}"),
    );
    let collected = tregov(&tre, &moto, &cfg, &["collect", "--once"]);
    assert!(collected.status.success(), "{}", stderr(&collected));
    let out = tregov(&tre, &moto, &cfg, &["--output", "json", "plan"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: Value = serde_json::from_str(&stdout(&out)).expect("json plan");
    let items = plan["items"].as_array().cloned().unwrap_or_default();
    let update = items
        .iter()
        .find(|i| i["change"]["kind"] == "update-backup-plan")
        .unwrap_or_else(|| panic!("no plan update: {plan:#}"));
    assert_eq!(
        update["change"]["rules"],
        json!([{"RuleName": "tregov-workspaces", "TargetBackupVaultName": "Default",
            "ScheduleExpression": "cron(0 5 ? * * *)", "StartWindowMinutes": 60,
            "CompletionWindowMinutes": 600,
            "Lifecycle": {"DeleteAfterDays": 180, "MoveToColdStorageAfterDays": 90}}])
    );
    assert_eq!(
        update["decisions"][0]["reasons"],
        json!(["backup-plan-follows-the-admins-settings"])
    );
    // moto has no selection calls: unread selections plan nothing, and the collector says
    // why it is incomplete (the daemon's gate then holds the update back; the calls
    // themselves are tested against the SDK's replay client).
    assert!(
        !items.iter().any(|i| i["change"]["kind"]
            .as_str()
            .is_some_and(|k| k.ends_with("backup-selection"))),
        "{plan:#}"
    );
    let status = stdout(&tregov(&tre, &moto, &cfg, &["status"]));
    assert!(status.contains("backup:ListBackupSelections"), "{status}");
}

/// Medians and worst cases of latencies, for the figures a test prints.
fn figures(latencies: &mut [Duration]) -> String {
    latencies.sort();
    let ms = |d: Duration| d.as_millis();
    format!(
        "n={} median={} ms max={} ms",
        latencies.len(),
        ms(latencies[latencies.len() / 2]),
        ms(latencies[latencies.len() - 1])
    )
}

/// From `since` until alice's role holds only what the policies allow.
fn until_reverted(moto: &Moto, since: Instant) -> Duration {
    let allowed = vec![("genomics.gwas_2024".to_string(), writer_permissions())];
    while lf_permissions(moto) != allowed {
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "not reverted within 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    since.elapsed()
}

#[test]
fn an_out_of_band_grant_delivered_only_through_eventbridge_and_sqs_is_reverted_and_its_log_file_adds_nothing(
) {
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    let queue = moto.cloudtrail_events_queue();
    let cfg = write_config(&tre, 1, ONE_GRANT_TRE);
    with_cloudtrail_keys(&cfg, &format!("events_queue_url = \"{queue}\""));
    let out = tregov(&tre, &moto, &cfg, &["apply", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Under systemd (`Type=notify`): the daemon says when it is ready.
    let socket_path = tre.dir.path().join("notify.sock");
    let systemd = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("socket");
    systemd
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let daemon = Daemon::start_with_env(
        &tre,
        &moto,
        &cfg,
        &[],
        &[],
        &[("NOTIFY_SOCKET", socket_path.as_path())],
    );
    let mut said = [0u8; 64];
    let n = systemd.recv(&mut said).expect("READY=1");
    assert_eq!(&said[..n], b"READY=1");
    daemon.wait_for("resync done", Duration::from_secs(60));

    // Through the queue only: no log file holds these events (yet). The daemon times each
    // from the event's arrival in the queue (SQS's `SentTimestamp`) to its last enforcement.
    let mut by_event = Vec::new();
    for n in 1..=20 {
        // The last revoke's read-back must not see this grant first (it would revert it
        // untimed, before its event arrives).
        std::thread::sleep(Duration::from_millis(500));
        grant_select(&moto, &role(), "cardio", "ukb");
        moto.put_cloudtrail_event(&grant_record(n));
        until_reverted(&moto, Instant::now());
        let lines = daemon.wait_for("since_detection_ms=", Duration::from_secs(10));
        let line = lines.last().cloned().unwrap_or_default();
        let ms: u64 = line
            .split("since_detection_ms=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|ms| ms.parse().ok())
            .unwrap_or_else(|| panic!("no figure in {line}"));
        by_event.push(Duration::from_millis(ms));
    }
    // Side by side, the S3 path: the same change found in a log file the 1 s poll lists,
    // timed from the file's arrival in the bucket.
    let mut by_file = Vec::new();
    for n in 101..=110 {
        std::thread::sleep(Duration::from_millis(500));
        grant_select(&moto, &role(), "cardio", "ukb");
        let put = Instant::now();
        put_log_file(&moto, n, &[grant_record(n)]);
        by_file.push(until_reverted(&moto, put));
    }
    eprintln!(
        "drift revert from the event's arrival in the queue: {}; from the log file's arrival in S3 (1 s poll): {}",
        figures(&mut by_event),
        figures(&mut by_file)
    );
    let metrics = daemon.metrics();
    assert!(
        metrics.contains("tregov_queued_event_reconcile_seconds_count 20"),
        "{metrics}"
    );
    drop(daemon);
    let revokes = log_records(&tre)
        .iter()
        .filter(|r| {
            r["kind"] == "apply" && r["result"] == "applied" && r["change"]["kind"] == "lf-revoke"
        })
        .count();
    assert_eq!(revokes, 30, "one revoke per out-of-band grant");

    // The trail delivers the queued events' log files later: read, and nothing new.
    for n in 1..=5 {
        put_log_file(&moto, n, &[grant_record(n)]);
    }
    let collected = tregov(
        &tre,
        &moto,
        &cfg,
        &["--output", "json", "collect", "--once"],
    );
    assert!(collected.status.success(), "{}", stderr(&collected));
    let report: Value = serde_json::from_slice(&collected.stdout).expect("json");
    // (The daemon may have stopped before reading the last files of the S3 path: those add
    // their events now; the five late files add none.)
    let files = report["cloudtrail"]["files"].as_u64().unwrap_or_default();
    assert!(files >= 5, "{report:#}");
    assert_eq!(
        report["cloudtrail"]["items"],
        files - 5,
        "stored once: {report:#}"
    );
    let events = tregov(&tre, &moto, &cfg, &["--output", "json", "events", "count"]);
    let events: Value = serde_json::from_slice(&events.stdout).expect("json");
    assert_eq!(events["count"], 30, "20 through the queue, 10 in log files");
    let out = tregov(&tre, &moto, &cfg, &["apply", "--yes"]);
    assert!(stdout(&out).starts_with("no changes"), "{}", stdout(&out));
}

#[test]
fn a_queued_event_that_fails_to_store_stays_in_the_queue_and_is_stored_once_later() {
    use tregov_collectors::events_queue::EventsQueue;
    use tregov_engine::events::{EventFilter, EventStore};
    let moto = Moto::start();
    let queue = moto.queue("tregov-events", 1);
    let envelope = json!({
        "version": "0", "id": "e-1", "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.lakeformation", "account": ACCOUNT, "region": "us-east-1",
        "time": "2026-12-07T00:00:00Z", "resources": [], "detail": grant_record(1),
    });
    let config = tregov_config::Config::parse(
        "tregov.toml",
        &format!(
            "[[projects]]\nid = \"p\"\naccount_id = \"{ACCOUNT}\"\n[cloudtrail]\nbucket = \"b\"\nevents_queue_url = \"{queue}\"\n"
        ),
    )
    .expect("config");
    let dir = tempfile::tempdir().expect("dir");
    let store = EventStore::open(dir.path()).expect("store");
    let sqlite = rusqlite::Connection::open(dir.path().join("store.sqlite3")).expect("sqlite");
    runtime().block_on(async {
        let sdk = moto.sdk_config().await;
        aws_sdk_sqs::Client::new(&sdk)
            .send_message()
            .queue_url(&queue)
            .message_body(envelope.to_string())
            .send()
            .await
            .expect("sent");
        let aws = tregov_config::aws::Aws::from_sdk_config(sdk);
        let events = EventsQueue::build(&config, &aws).await.expect("configured");

        // The store cannot take the event: the message must not go.
        sqlite
            .execute_batch("ALTER TABLE events RENAME TO events_away")
            .expect("rename");
        let failed = events.receive(&store).await;
        assert!(failed.is_err(), "{failed:?}");
        assert_eq!(moto.queue_depth(&queue), (0, 1), "received, not deleted");

        sqlite
            .execute_batch("ALTER TABLE events_away RENAME TO events")
            .expect("rename back");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let stored = events.receive(&store).await.expect("stored");
        assert_eq!((stored.stored, stored.changes.len()), (1, 1), "{stored:?}");
        assert_eq!(moto.queue_depth(&queue), (0, 0), "deleted once stored");
    });
    let listed = store.list(&EventFilter::default(), None).expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].event_id, "drift-1");
    assert!(
        listed[0]
            .source_file
            .starts_with("eventbridge:tregov-events/"),
        "{}",
        listed[0].source_file
    );
}

#[test]
fn new_log_files_announced_on_an_s3_notification_queue_are_read_without_listing_the_bucket() {
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    let queue = moto.object_created_queue(tregov_tests::governed::BUCKET);
    let cfg = write_config(&tre, 1, "");
    with_cloudtrail_keys(&cfg, &format!("files_queue_url = \"{queue}\""));
    put_log_file(&moto, 1, &[grant_record(1), grant_record(2)]);
    put_log_file(&moto, 2, &[grant_record(3)]);

    let poll = |tre: &Tre| -> Value {
        let out = tregov(
            tre,
            &moto,
            &cfg,
            &["--output", "json", "collect", "--once", "--trail"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let report: Value = serde_json::from_slice(&out.stdout).expect("json");
        report["cloudtrail"].clone()
    };
    let first = poll(&tre);
    assert_eq!(first["listed"], Value::Null, "not listed: {first:#}");
    assert_eq!(
        (first["files"].as_u64(), first["items"].as_u64()),
        (Some(2), Some(3)),
        "{first:#}"
    );
    assert_eq!(
        moto.queue_depth(&queue),
        (0, 0),
        "every notification handled"
    );
    let again = poll(&tre);
    assert_eq!(
        (again["files"].as_u64(), again["notifications"].as_u64()),
        (Some(0), None),
        "{again:#}"
    );

    // A full pass still lists, and finds nothing the queue missed.
    let full = tregov(
        &tre,
        &moto,
        &cfg,
        &["--output", "json", "collect", "--once"],
    );
    let full: Value = serde_json::from_slice(&full.stdout).expect("json");
    assert_eq!(full["cloudtrail"]["listed"], true, "{full:#}");
    assert_eq!(full["cloudtrail"]["items"], 0, "{full:#}");
}

#[test]
fn a_profile_of_the_aws_config_file_the_region_flag_and_per_service_endpoints_are_honoured() {
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    let cfg = write_config(&tre, 5, "");
    put_log_file(&moto, 1, &[grant_record(1)]);
    let aws_config = tre.dir.path().join("aws-config");
    std::fs::write(
        &aws_config,
        format!(
            "[profile tre-admin]\nregion = us-east-1\naws_access_key_id = testing\naws_secret_access_key = testing\nendpoint_url = {}\n",
            moto.endpoint()
        ),
    )
    .expect("aws config");
    // Only what each case sets: none of the emulator's usual environment.
    let collect = |global: &[&str], env: &[(String, String)]| -> Value {
        let mut command = std::process::Command::new(tregov_tests::tregov_bin());
        for (name, _) in std::env::vars() {
            if name.starts_with("AWS_") || name.to_ascii_uppercase().ends_with("_PROXY") {
                command.env_remove(name);
            }
        }
        let out = command
            .args(["--data-dir", &tre.data_dir().display().to_string()])
            .args(["--config", &cfg.display().to_string()])
            .args(global)
            .args(["--output", "json", "collect", "--once"])
            .env("AWS_CONFIG_FILE", &aws_config)
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(env.iter().cloned())
            .output()
            .expect("tregov runs");
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("json")
    };

    let by_profile = collect(&["--profile", "tre-admin"], &[]);
    assert_eq!(by_profile["cloudtrail"]["complete"], true, "{by_profile:#}");
    assert_eq!(by_profile["cloudtrail"]["items"], 1, "{by_profile:#}");
    assert!(
        by_profile["datalake"]["items"].as_u64() > Some(0),
        "{by_profile:#}"
    );

    // The same profile in another region, where the emulator's Glue has no studies: the
    // listing that shrank so far is held back, as any would be.
    let elsewhere = collect(&["--profile", "tre-admin", "--region", "eu-west-2"], &[]);
    let held = elsewhere["datalake"]["held"].as_str().unwrap_or_default();
    let before = by_profile["datalake"]["items"].as_u64().unwrap_or_default();
    assert!(
        held.contains(&format!("shrank from {before} to 1 item(s)")),
        "{elsewhere:#}"
    );

    // No profile and no `AWS_ENDPOINT_URL`: one variable per service, S3 in path style.
    let mut per_service = vec![
        ("AWS_ACCESS_KEY_ID".to_string(), "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
    ];
    for service in [
        "S3",
        "GLUE",
        "LAKEFORMATION",
        "IAM",
        "EC2",
        "SAGEMAKER",
        "BUDGETS",
        "BACKUP",
        "CLOUDTRAIL",
        "STS",
    ] {
        per_service.push((format!("AWS_ENDPOINT_URL_{service}"), moto.endpoint()));
    }
    put_log_file(&moto, 2, &[grant_record(2)]);
    let by_service = collect(&[], &per_service);
    assert_eq!(by_service["cloudtrail"]["complete"], true, "{by_service:#}");
    assert_eq!(by_service["cloudtrail"]["items"], 1, "{by_service:#}");
    assert_eq!(by_service["datalake"]["complete"], true, "{by_service:#}");

    // Through a forward proxy named by `HTTP_PROXY`, as a TRE's egress-controlled network
    // requires: every call goes through it, addressed to the emulator.
    let proxy = tregov_tests::proxy::ForwardProxy::start(moto.port);
    let mut proxied = per_service[..3].to_vec();
    proxied.push(("AWS_ENDPOINT_URL".into(), moto.endpoint()));
    proxied.push(("HTTP_PROXY".into(), proxy.url()));
    put_log_file(&moto, 3, &[grant_record(3)]);
    let through_proxy = collect(&[], &proxied);
    assert_eq!(through_proxy["cloudtrail"]["items"], 1, "{through_proxy:#}");
    assert_eq!(
        through_proxy["datalake"]["complete"], true,
        "{through_proxy:#}"
    );
    let lines = proxy.request_lines();
    let absolute = format!(" {}/", moto.endpoint());
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l.contains(&absolute)),
        "{lines:?}"
    );
}

/// An organization in the emulator: an OU for the TRE with a child OU, a tagged account in
/// the child, an untagged one in the OU and a tagged one outside it. The OU's id and the
/// accounts' ids, in that order.
fn organization(moto: &Moto) -> Vec<String> {
    let out = moto.python(
        r#"
import boto3
o = boto3.client('organizations')
o.create_organization(FeatureSet='ALL')
root = o.list_roots()['Roots'][0]['Id']
ou = o.create_organizational_unit(ParentId=root, Name='tre-projects')['OrganizationalUnit']['Id']
child = o.create_organizational_unit(ParentId=ou, Name='genomics')['OrganizationalUnit']['Id']
def account(name, parent, project):
    a = o.create_account(AccountName=name, Email=name + '@example.org')['CreateAccountStatus']['AccountId']
    o.move_account(AccountId=a, SourceParentId=root, DestinationParentId=parent)
    if project:
        o.tag_resource(ResourceId=a, Tags=[{'Key': 'tre:project', 'Value': project}])
    return a
print(ou, account('genomics', child, 'proj-genomics'), account('untagged', ou, None), account('outside', root, 'proj-outside'))
"#,
    );
    out.split_whitespace().map(String::from).collect()
}

#[test]
fn projects_come_from_the_tagged_accounts_of_an_organizational_unit_and_follow_it_on_resync() {
    let moto = Moto::start();
    let tre = Tre::new();
    let ids = organization(&moto);
    let (ou, genomics, untagged) = (&ids[0], &ids[1], &ids[2]);
    let cfg = tre.dir.path().join("tregov.toml");
    std::fs::write(
        &cfg,
        format!(
            "max_attempts = 2\n[organizations]\nparent_id = \"{ou}\"\nproject_role_name = \"tregov-project\"\n[daemon]\npoll_seconds = 1\nresync_seconds = 2\nmetrics_listen = \"127.0.0.1:0\"\n"
        ),
    )
    .expect("config");

    let collected = tregov(
        &tre,
        &moto,
        &cfg,
        &["-v", "--output", "json", "collect", "--once"],
    );
    assert!(collected.status.success(), "{}", stderr(&collected));
    let report: Value = serde_json::from_slice(&collected.stdout).expect("json");
    assert_eq!(report["config-projects"]["items"], 1, "{report:#}");
    assert!(
        stderr(&collected).contains(&format!("accounts=[\"{genomics}\"]")),
        "{}",
        stderr(&collected)
    );
    assert!(
        stderr(&collected).contains(untagged.as_str())
            && stderr(&collected).contains("not governed"),
        "the untagged account is reported: {}",
        stderr(&collected)
    );

    let daemon = Daemon::start(&tre, &moto, &cfg, &[], &["--dry-run"]);
    daemon.wait_for("projects=1", Duration::from_secs(60));
    daemon.wait_for("resync done", Duration::from_secs(60));
    let added = moto.python(&format!(
        "import boto3\n\
o = boto3.client('organizations')\n\
root = o.list_roots()['Roots'][0]['Id']\n\
a = o.create_account(AccountName='cardio', Email='cardio@example.org')['CreateAccountStatus']['AccountId']\n\
o.move_account(AccountId=a, SourceParentId=root, DestinationParentId='{ou}')\n\
o.tag_resource(ResourceId=a, Tags=[{{'Key': 'tre:project', 'Value': 'proj-cardio'}}])\n\
print(a)"
    ));
    let lines = daemon.wait_for("projects=2", Duration::from_secs(30));
    let line = lines.last().cloned().unwrap_or_default();
    assert!(
        line.contains(&added) && line.contains(genomics.as_str()),
        "{line}"
    );
}
