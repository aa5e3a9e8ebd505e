//! Access that rests on a date ends at that date, against the AWS emulator: an agreement
//! expiring while the daemon runs (warned before, revoked within seconds of the moment) and
//! a project that has ended (its workspace stopped, its role keeping nothing).

use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use tregov_tests::governed::{
    create_topic, identity, identity_with_project, instance_state_and_tags, lf_permissions,
    log_records, revoked_within_two_seconds_of, seed, tregov, why_replayed, write_config,
    write_identity, writer_permissions, Daemon,
};
use tregov_tests::moto::Moto;
use tregov_tests::{stderr, stdout, Tre};

fn datetime(at: SystemTime) -> Value {
    tregov_engine::clock::datetime_value(tregov_engine::clock::wall_ms(at))
}

#[test]
fn an_agreement_expiring_while_the_daemon_runs_is_warned_of_then_ends_its_grants_within_two_seconds(
) {
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    let topic = create_topic(&moto, "tre-expiry");
    let cfg = write_config(
        &tre,
        1,
        &format!(
            "expiry_warning_seconds = 30\nexpiry_topic_arn = \"{topic}\"\n[safety]\nmax_revoke_fraction = 1.0\n"
        ),
    );
    let out = tregov(&tre, &moto, &cfg, &["apply", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        lf_permissions(&moto),
        vec![("genomics.gwas_2024".to_string(), writer_permissions())],
        "{}",
        stdout(&out)
    );

    // The project's access now rests on an agreement that expires while the daemon runs.
    let expires = SystemTime::now() + Duration::from_secs(45);
    write_identity(
        &tre,
        &identity_with_project(
            json!({"agreement": {"__entity": {"type": "Tre::Agreement", "id": "dua-genomics"}}}),
            &[
                json!({"uid": {"type": "Tre::Agreement", "id": "dua-genomics"},
                     "attrs": {"reference": "DUA-2026-017", "expires": datetime(expires)}, "parents": []}),
            ],
        ),
    );
    let daemon = Daemon::start(&tre, &moto, &cfg, &[], &[]);
    daemon.wait_for("resync done", Duration::from_secs(40));
    assert!(
        SystemTime::now() < expires,
        "the daemon took too long to start for the expiry to fall while it runs"
    );
    assert_eq!(
        lf_permissions(&moto),
        vec![("genomics.gwas_2024".to_string(), writer_permissions())],
        "kept while the agreement is in force"
    );
    revoked_within_two_seconds_of(&moto, expires);
    // The revoke is logged after Lake Formation answers: wait for it before stopping the
    // daemon (which is killed), or the log may not hold it yet.
    daemon.wait_for("enforcer=\"lakeformation\"", Duration::from_secs(10));
    daemon.wait_for("reconciled", Duration::from_secs(10));
    drop(daemon);

    // The warning went out before, once; the revoke is logged with the policy that ended it.
    let records = log_records(&tre);
    let warnings: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "apply" && r["change"]["kind"] == "notify")
        .filter(|r| r["change"]["topicArn"] == topic.as_str())
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert_eq!(warnings[0]["result"], "applied", "{:#}", warnings[0]);
    let warned_at = warnings[0]["time"].as_str().unwrap_or_default().to_string();
    let expiry_text = datetime(expires)["__extn"]["arg"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        warned_at < expiry_text,
        "warned at {warned_at}, expiry {expiry_text}"
    );
    let why = why_replayed(&tre, &records, "lf-revoke");
    assert!(why.contains("data-project-agreement-in-force"), "{why}");
}

#[test]
fn a_project_that_has_ended_stops_its_workspace_and_its_role_keeps_no_data_access() {
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    let cfg = write_config(&tre, 5, "[safety]\nmax_revoke_fraction = 1.0\n");
    let out = tregov(&tre, &moto, &cfg, &["apply", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!lf_permissions(&moto).is_empty());

    let ended = SystemTime::now() - Duration::from_secs(60);
    write_identity(
        &tre,
        &identity_with_project(json!({"endsAt": datetime(ended)}), &[]),
    );
    let started = Instant::now();
    let out = tregov(&tre, &moto, &cfg, &["apply", "--yes"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    eprintln!("ended project applied in {:?}", started.elapsed());
    assert_eq!(lf_permissions(&moto), vec![], "{}", stdout(&out));
    let (state, _) = instance_state_and_tags(&moto);
    assert!(
        matches!(state.as_str(), "stopping" | "stopped"),
        "{state}: {}",
        stdout(&out)
    );
    let why = why_replayed(&tre, &log_records(&tre), "stop-workspace");
    assert!(
        why.contains("workspaces-stop-when-their-project-ends"),
        "{why}"
    );
}

#[test]
fn a_membership_ending_while_the_daemon_runs_ends_the_grant_it_gave_within_two_seconds() {
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    let cfg = write_config(&tre, 1, "[safety]\nmax_revoke_fraction = 1.0\n");
    // Alice is on the study's read-write list until `ends` (her tag named after the list).
    let out = tregov(&tre, &moto, &cfg, &["apply", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ends = SystemTime::now() + Duration::from_secs(50);
    let mut people = identity(true);
    for entity in people.as_array_mut().into_iter().flatten() {
        if entity["uid"]["id"] == "alice" {
            entity["tags"] =
                json!({"Tre::AccessGroup::\"genomics/gwas_2024#writers\"": datetime(ends)});
        }
    }
    write_identity(&tre, &people);
    let daemon = Daemon::start(&tre, &moto, &cfg, &[], &[]);
    daemon.wait_for("resync done", Duration::from_secs(45));
    assert!(
        SystemTime::now() < ends,
        "the daemon took too long to start for the end to fall while it runs"
    );
    assert_eq!(
        lf_permissions(&moto),
        vec![("genomics.gwas_2024".to_string(), writer_permissions())],
        "granted while the membership stands"
    );
    revoked_within_two_seconds_of(&moto, ends);
}
