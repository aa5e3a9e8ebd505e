//! Exact policy analysis with the real solver (cvc5 1.3.1, installed by
//! `scripts/install-cvc5`): `policy diff` and `policy check` from the command line, and the
//! daemon holding back a reload that widens access until an IT admin approves it.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tregov_tests::governed::{parked, seed, tregov, write_config, Daemon};
use tregov_tests::jwt::{auth_section, token};
use tregov_tests::moto::Moto;
use tregov_tests::{copy_policies, stderr, stdout, workspace_root, Tre};

const INACTIVE_FORBID: &str = r#"@id("data-inactive-users-denied")"#;

/// Removes the policy annotated `@id` (and everything up to the next `@id`) from `file`.
fn drop_policy(file: &Path, id_line: &str) {
    let text = std::fs::read_to_string(file).expect("read");
    let start = text.find(id_line).expect("policy present");
    let end = text[start + id_line.len()..]
        .find("@id(")
        .map_or(text.len(), |i| start + id_line.len() + i);
    std::fs::write(file, format!("{}{}", &text[..start], &text[end..])).expect("write");
}

fn two_copies(tre: &Tre) -> (String, std::path::PathBuf) {
    let old = tre.dir.path().join("old");
    let new = tre.dir.path().join("new");
    std::fs::create_dir_all(&old).expect("mkdir");
    std::fs::create_dir_all(&new).expect("mkdir");
    let old = copy_policies(&old);
    let new = copy_policies(&new);
    (old.display().to_string(), new)
}

fn entity_status(entities: &Value, uid: &str) -> Option<String> {
    entities.as_array()?.iter().find_map(|e| {
        let u = &e["uid"];
        let text = format!("{}::\"{}\"", u["type"].as_str()?, u["id"].as_str()?);
        (text == uid).then(|| e["attrs"]["status"].as_str().map(str::to_string))?
    })
}

#[test]
fn dropping_the_inactive_users_forbid_is_more_permissive_for_read_with_an_inactive_user_as_counterexample(
) {
    let tre = Tre::new();
    let (old, new) = two_copies(&tre);
    drop_policy(&new.join("data_access.cedar"), INACTIVE_FORBID);
    let new_dir = new.display().to_string();
    let out = tre.run(&[
        "--output", "json", "policy", "diff", "--from", &old, "--to", &new_dir,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let diff: Value = serde_json::from_slice(&out.stdout).expect("json");
    let signatures = diff["signatures"].as_array().expect("signatures");
    let read = signatures
        .iter()
        .find(|s| s["action"] == r#"Tre::Action::"read""#)
        .expect("read signature");
    assert_eq!(read["verdict"], "more_permissive", "{read}");
    let example = &read["widened"];
    assert_eq!(example["from"]["decision"], "deny", "{example}");
    assert_eq!(example["to"]["decision"], "allow", "{example}");
    let principal = example["request"]["principal"].as_str().expect("principal");
    let status = entity_status(&example["request"]["entities"], principal);
    assert!(
        status.as_deref().is_some_and(|s| s != "active"),
        "the counterexample's user is inactive: {status:?} in {example}"
    );
    // Actions the dropped policy never covered are unchanged.
    let egress = signatures
        .iter()
        .find(|s| s["action"] == r#"Tre::Action::"reviewEgress""#)
        .expect("reviewEgress signature");
    assert_eq!(egress["verdict"], "equivalent");

    let text = stdout(&tre.run(&["policy", "diff", "--from", &old, "--to", &new_dir]));
    assert!(
        text.contains("more permissive: principal Tre::User, action Tre::Action::\"read\""),
        "{text}"
    );
    assert!(text.contains("allowed now, denied before:"), "{text}");
}

#[test]
fn a_narrowing_change_is_less_permissive_and_passes_the_gate() {
    let tre = Tre::new();
    let (old, new) = two_copies(&tre);
    std::fs::write(
        new.join("freeze.cedar"),
        "@id(\"freeze-writes\")\nforbid (principal, action == Tre::Action::\"write\", resource);\n",
    )
    .expect("write");
    let new_dir = new.display().to_string();
    let out = tre.run(&[
        "--output", "json", "policy", "diff", "--from", &old, "--to", &new_dir,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let diff: Value = serde_json::from_slice(&out.stdout).expect("json");
    let changed: Vec<(&str, &str)> = diff["signatures"]
        .as_array()
        .expect("signatures")
        .iter()
        .filter(|s| s["verdict"] != "equivalent")
        .map(|s| {
            (
                s["action"].as_str().unwrap_or(""),
                s["verdict"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        changed,
        vec![(r#"Tre::Action::"write""#, "less_permissive")]
    );
}

#[test]
fn the_shipped_properties_hold_for_the_default_policies() {
    let tre = Tre::new();
    let (code, v) = tre.json(&["policy", "check"]);
    assert_eq!(code, 0, "{v}");
    let props = v["properties"].as_array().expect("properties");
    let ids: Vec<&str> = props.iter().filter_map(|p| p["id"].as_str()).collect();
    for expected in [
        "inactive-users-never-allowed",
        "requester-never-reviews-their-own-egress",
        "no-policy-errors",
    ] {
        assert!(ids.contains(&expected), "{ids:?}");
    }
    assert!(props.iter().all(|p| p["holds"] == true), "{v}");
    assert!(
        props.iter().all(|p| p["signatures"].as_u64() > Some(0)),
        "{v}"
    );
}

#[test]
fn a_seeded_violation_fails_the_property_that_it_breaks_with_a_counterexample() {
    let tre = Tre::new();
    let policies = copy_policies(tre.dir.path());
    std::fs::create_dir_all(policies.join("properties")).expect("mkdir");
    for entry in std::fs::read_dir(workspace_root().join("policies/properties")).expect("dir") {
        let p = entry.expect("entry").path();
        std::fs::copy(
            &p,
            policies
                .join("properties")
                .join(p.file_name().expect("name")),
        )
        .expect("copy");
    }
    drop_policy(
        &policies.join("egress.cedar"),
        r#"@id("egress-requester-never-reviews")"#,
    );
    let dir = policies.display().to_string();
    let out = tre.run(&["--policies", &dir, "policy", "check"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}{}", stderr(&out));
    assert!(
        text.contains("FAILS  requester-never-reviews-their-own-egress"),
        "{text}"
    );
    assert!(
        text.contains("holds  inactive-users-never-allowed"),
        "{text}"
    );
    assert!(text.contains("the policies decide: allow by"), "{text}");
    assert!(text.contains("egress-step-role-reviews"), "{text}");
}

#[test]
fn the_daemon_parks_a_reload_that_widens_access_and_applies_a_narrowing_one_at_once() {
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    let api = format!("[api]\nlisten = \"127.0.0.1:0\"\n{}", auth_section());
    let cfg = write_config(&tre, 1, &api);
    let policies = copy_policies(tre.dir.path());
    let dir = policies.display().to_string();
    let daemon = Daemon::start(&tre, &moto, &cfg, &["--policies", &dir], &[]);
    let api = daemon.api_url(Duration::from_secs(60));
    daemon.wait_for("resync done", Duration::from_secs(60));

    let data_access = policies.join("data_access.cedar");
    let good = std::fs::read_to_string(&data_access).expect("read");
    drop_policy(&data_access, INACTIVE_FORBID);
    let held = daemon.wait_for("waits for an IT admin's approval", Duration::from_secs(60));
    let line = held.last().cloned().unwrap_or_default();
    assert!(
        line.contains(r#"Tre::Action::\"read\""#) || line.contains("read"),
        "{line}"
    );
    let items = parked(&tre, &moto, &cfg);
    let held_item = items
        .iter()
        .find(|(item, _, _)| item.starts_with("accept-policies:"))
        .expect("the widening set is parked");
    assert_eq!(held_item.1, "pending", "{items:?}");

    // An IT admin approves it through the API (a Cedar decision): it then decides.
    let as_ian = ["--api", api.as_str(), "--token", &token("ian")];
    let approve = tregov(
        &tre,
        &moto,
        &cfg,
        &[&["approve", held_item.0.as_str()][..], &as_ian[..]].concat(),
    );
    assert!(approve.status.success(), "{}", stderr(&approve));
    daemon.wait_for("policies reloaded", Duration::from_secs(30));

    // Restored and narrowed: less permissive than the running set, so adopted at once.
    std::fs::write(&data_access, &good).expect("restore");
    std::fs::write(
        policies.join("freeze.cedar"),
        "@id(\"freeze-writes\")\nforbid (principal, action == Tre::Action::\"write\", resource);\n",
    )
    .expect("freeze");
    daemon.wait_for("policies reloaded", Duration::from_secs(60));
    let items = parked(&tre, &moto, &cfg);
    assert!(
        items
            .iter()
            .filter(|(item, _, _)| item.starts_with("accept-policies:"))
            .all(|(_, status, _)| status == "applied"),
        "{items:?}"
    );
}
