//! The `tregov` binary end to end: policies, decisions, explanations, the store and the log.

use std::collections::BTreeSet;
use std::io::Write;

use serde_json::Value;
use tregov_tests::{copy_policies, stderr, stdout, workspace_root, Tre};

const ALICE: &str = r#"Tre::User::"alice""#;
const READ: &str = r#"Tre::Action::"read""#;
const WRITE: &str = r#"Tre::Action::"write""#;
const GWAS: &str = r#"Tre::Dataset::"gwas-2024""#;

/// The arguments of `authorize` or `why` for one request.
fn request<'a>(
    command: &'a str,
    principal: &'a str,
    action: &'a str,
    resource: &'a str,
) -> Vec<&'a str> {
    vec![
        command,
        "--principal",
        principal,
        "--action",
        action,
        "--resource",
        resource,
    ]
}

#[test]
fn the_default_policies_validate_in_strict_mode() {
    let (code, v) = Tre::new().json(&["validate"]);
    assert_eq!(code, 0);
    assert_eq!(v["valid"], true);
    assert!(v["policies"].as_u64().unwrap_or(0) >= 30);
}

#[test]
fn the_policy_tests_pass_and_end_with_the_summary_line() {
    let out = Tre::new().run(&["test"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    let last = text.lines().last().unwrap_or("");
    let passed: usize = last
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 80, "{last}");
    assert!(last.ends_with(" passed, 0 failed"), "{last}");
}

#[test]
fn tests_written_for_cedars_own_harness_pass_with_positional_policy_ids() {
    let out = Tre::new().run(&["test", "tests/fixtures/cedar-format"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("3 passed, 0 failed"));
}

#[test]
fn a_failing_test_expectation_is_reported_and_exits_1() {
    let tmp = tempfile::tempdir().expect("tmp");
    let fixture = workspace_root().join("tests/fixtures/cedar-format");
    for f in ["photo.cedar", "photo.cedarschema", "photo.entities.json"] {
        std::fs::copy(fixture.join(f), tmp.path().join(f)).expect("copy");
    }
    let text = std::fs::read_to_string(fixture.join("photo.json")).expect("read");
    let wrong = text.replacen("\"decision\": \"allow\"", "\"decision\": \"deny\"", 1);
    std::fs::write(tmp.path().join("photo.json"), wrong).expect("write");
    let out = Tre::new().run(&["test", &tmp.path().display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("expected decision deny but got allow"),
        "{text}"
    );
    assert!(text.contains("2 passed, 1 failed"), "{text}");
}

/// Every default policy must both apply and not apply somewhere in `policies/tests/`
/// (templates decide only through their links, tested in `cedar_files.rs`).
#[test]
fn every_default_policy_is_exercised_for_both_outcomes() {
    let bundle = tregov_engine::PolicyBundle::embedded().expect("default policies");
    let dir = workspace_root().join("policies/tests");
    let mut applied: BTreeSet<String> = BTreeSet::new();
    let mut not_applied: BTreeSet<String> = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("tests dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "json")
            || path.to_string_lossy().ends_with(".entities.json")
        {
            continue;
        }
        let test: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        let policy_file = test["policies"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches("../");
        let ids: Vec<String> = bundle
            .meta
            .values()
            .filter(|m| m.file == policy_file)
            .map(|m| m.id.clone())
            .collect();
        for req in test["requests"].as_array().expect("requests") {
            let reasons: BTreeSet<String> = req["reason"]
                .as_array()
                .expect("reason")
                .iter()
                .filter_map(|r| r.as_str().map(String::from))
                .collect();
            for id in &ids {
                if reasons.contains(id) {
                    applied.insert(id.clone());
                } else {
                    not_applied.insert(id.clone());
                }
            }
        }
    }
    let policies = bundle
        .meta
        .values()
        .filter(|m| m.kind != tregov_engine::policies::PolicyKind::Template);
    for id in policies.map(|m| &m.id) {
        assert!(applied.contains(id), "no test where `{id}` applies");
        assert!(
            not_applied.contains(id),
            "no test where `{id}` does not apply"
        );
    }
}

#[test]
fn authorize_exits_0_on_allow_and_2_on_deny_with_the_policies_named() {
    let tre = Tre::new().with_sample();
    let (code, v) = tre.json(&request("authorize", ALICE, READ, GWAS));
    assert_eq!(code, 0);
    assert_eq!(v["decision"], "Allow");
    assert_eq!(v["reasons"], serde_json::json!(["data-study-readers-read"]));
    assert_eq!(v["errors"], serde_json::json!([]));
    assert!(v["determining"][0]["file"]
        .as_str()
        .unwrap_or("")
        .ends_with("data_access.cedar"));

    let (code, v) = tre.json(&request("authorize", r#"Tre::User::"mallory""#, READ, GWAS));
    assert_eq!(code, 2);
    assert_eq!(v["decision"], "Deny");
    assert_eq!(
        v["reasons"],
        serde_json::json!(["data-inactive-users-denied"])
    );
}

#[test]
fn a_malformed_request_exits_3_and_decides_nothing() {
    let tre = Tre::new().with_sample();
    let bad_uid = tre.run(&request("authorize", "alice", READ, GWAS));
    assert_eq!(bad_uid.status.code(), Some(3));
    assert!(stderr(&bad_uid).contains("invalid entity uid `alice`"));

    let wrong_type = tre.run(&request("authorize", GWAS, READ, GWAS));
    assert_eq!(wrong_type.status.code(), Some(3), "{}", stderr(&wrong_type));

    let bad_context = tre.run(
        &[
            request("authorize", ALICE, READ, GWAS),
            vec!["--context", "{not json"],
        ]
        .concat(),
    );
    assert_eq!(bad_context.status.code(), Some(3));
    assert!(stderr(&bad_context).contains("not JSON"));

    // None of these reached the decision log.
    let (_, records) = tre.json(&["log", "verify"]);
    let (_, verify_before) = Tre::new().with_sample().json(&["log", "verify"]);
    assert_eq!(records["records"], verify_before["records"]);
}

#[test]
fn why_explains_an_allowed_request_by_its_permits() {
    let tre = Tre::new().with_sample();
    let (code, v) = tre.json(&request("why", ALICE, WRITE, GWAS));
    assert_eq!(code, 0);
    let summary = v["summary"].as_str().unwrap_or("");
    assert!(
        summary.starts_with("allowed: permitted by `data-study-writers-write`"),
        "{summary}"
    );
    assert!(summary.contains("no forbid applied"));
    let forbids = v["forbids"].as_array().expect("forbids");
    assert!(forbids.iter().all(|f| f["applied"] == false));
    assert!(forbids
        .iter()
        .any(|f| f["id"] == "data-max-access-demotes-readwrite"));
}

#[test]
fn why_names_the_forbid_that_denied() {
    let tre = Tre::new().with_sample();
    let (code, v) = tre.json(&request(
        "why",
        r#"Tre::User::"bob""#,
        WRITE,
        r#"Tre::Dataset::"ukb-cardio""#,
    ));
    assert_eq!(code, 2);
    assert_eq!(
        v["summary"],
        "denied: forbidden by `data-max-access-demotes-readwrite`"
    );
    let writers = v["permits"]
        .as_array()
        .expect("permits")
        .iter()
        .find(|p| p["id"] == "data-study-writers-write")
        .expect("writers permit in scope");
    assert_eq!(writers["applied"], true);
}

#[test]
fn why_says_which_condition_kept_each_permit_from_applying() {
    let tre = Tre::new().with_sample();
    let (code, v) = tre.json(&request(
        "why",
        r#"Tre::Service::"tregov""#,
        r#"Tre::Action::"budgetStopWorkspaces""#,
        r#"Tre::Budget::"proj-genomics""#,
    ));
    assert_eq!(code, 2);
    assert!(v["summary"]
        .as_str()
        .unwrap_or("")
        .starts_with("denied: no permit applied"));
    let permit = &v["permits"][0];
    assert_eq!(permit["id"], "budget-stop-workspaces");
    let cond = &permit["failed_conditions"][0];
    assert_eq!(cond["kind"], "when");
    assert_eq!(cond["value"], false);
    assert!(cond["needed"]
        .as_str()
        .unwrap_or("")
        .contains("would have to be true"));
    let operands: Vec<String> = cond["operands"]
        .as_array()
        .expect("operands")
        .iter()
        .map(|o| o["value"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(operands, vec!["82000000", "100000000"]);
}

#[test]
fn why_over_files_decides_without_a_store() {
    let tre = Tre::new();
    let (code, v) = tre.json(
        &[
            request(
                "why",
                r#"Tre::User::"gina""#,
                READ,
                r#"Tre::Dataset::"census-open""#,
            ),
            vec![
                "--policies",
                "policies",
                "--entities",
                "examples/sample-tre.entities.json",
            ],
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        v["reasons"],
        serde_json::json!(["data-open-data-readable-by-active-users"])
    );
    assert!(v["logSeq"].is_null());
    assert!(
        !tre.data_dir().exists(),
        "files mode must not create a store"
    );
}

#[test]
fn an_invalid_policy_edit_is_reported_with_file_line_and_column() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = copy_policies(tmp.path());
    let file = dir.join("egress.cedar");
    let text = std::fs::read_to_string(&file).expect("read");
    let broken = text.replacen(
        "resource.status == \"IN_REVIEW\"",
        "resource.stat == \"IN_REVIEW\"",
        1,
    );
    std::fs::write(&file, &broken).expect("write");
    let line = broken
        .lines()
        .position(|l| l.contains("resource.stat =="))
        .expect("edited line")
        + 1;
    let out = Tre::new().run(&["validate", "--policies", &dir.display().to_string()]);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(err.contains(&format!("egress.cedar:{line}:")), "{err}");
    assert!(err.contains("stat"), "{err}");

    std::fs::write(&file, text.replacen("permit (", "permit (((", 1)).expect("write");
    let out = Tre::new().run(&["validate", "--policies", &dir.display().to_string()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("egress.cedar:"), "{}", stderr(&out));
}

#[test]
fn a_policy_without_an_id_is_rejected() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = copy_policies(tmp.path());
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("backup.cedar"))
        .expect("open");
    writeln!(f, "\npermit (principal, action, resource);").expect("append");
    let out = Tre::new().run(&["validate", "--policies", &dir.display().to_string()]);
    assert_eq!(out.status.code(), Some(3));
    // The report wraps where the terminal would (a longer line number moves the break).
    let unwrapped = stderr(&out)
        .replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        unwrapped.contains("no `@id` annotation"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_invalid_entity_file_is_rejected_whole_with_positions_and_the_store_is_unchanged() {
    let tre = Tre::new().with_sample();
    let before = tre.run(&["entities", "export"]);
    let file = tre.dir.path().join("bad.entities.json");
    std::fs::write(
        &file,
        r#"[
  {"uid": {"type": "Tre::Role", "id": "Newcomer"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Tre::User", "id": "zed"},
   "attrs": {"status": 7}, "parents": []}
]"#,
    )
    .expect("write");
    let out = tre.run(&["entities", "import", &file.display().to_string()]);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(err.contains("bad.entities.json:3:3"), "{err}");
    assert!(err.contains("status"), "{err}");
    let after = tre.run(&["entities", "export"]);
    assert_eq!(stdout(&before), stdout(&after));
}

#[test]
fn entities_import_get_and_export_round_trip() {
    let tre = Tre::new();
    let out = tre.run(&["entities", "import", "examples/sample-tre.entities.json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (code, alice) = tre.json(&["entities", "get", ALICE]);
    assert_eq!(code, 0);
    assert_eq!(alice["attrs"]["status"], "active");
    let sample: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("examples/sample-tre.entities.json"))
            .expect("sample"),
    )
    .expect("json");
    let count = sample.as_array().map(Vec::len).expect("a list");
    let (_, all) = tre.json(&["entities", "export"]);
    assert_eq!(all.as_array().map(Vec::len), Some(count));
    // Importing the same file again changes nothing.
    let (_, again) = tre.json(&["entities", "import", "examples/sample-tre.entities.json"]);
    assert_eq!(again["unchanged"], count);
    assert_eq!(again["inserted"], 0);
}

fn decide_a_few(tre: &Tre) {
    for who in ["alice", "bob", "mallory", "oscar"] {
        let p = format!("Tre::User::\"{who}\"");
        tre.run(&request("authorize", &p, READ, GWAS));
    }
}

fn verify(tre: &Tre) -> Value {
    tre.json(&["log", "verify"]).1
}

/// Rewrites the first log segment's records (one string each) as an attacker would.
fn tamper_with_log(tre: &Tre, edit: impl FnOnce(&mut Vec<String>)) {
    let seg = &tre.segments()[0];
    let text = std::fs::read_to_string(seg).expect("read");
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    edit(&mut lines);
    std::fs::write(seg, lines.join("\n") + "\n").expect("write");
}

/// The sequence number and problem of the first bad record `log verify` names.
fn first_bad(tre: &Tre) -> (u64, String) {
    let v = verify(tre);
    assert_eq!(v["ok"], false, "verify passed: {v}");
    (
        v["first_bad"]["seq"].as_u64().unwrap_or(0),
        v["first_bad"]["problem"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn log_verify_passes_on_an_untouched_log() {
    let tre = Tre::new().with_sample();
    decide_a_few(&tre);
    let v = verify(&tre);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["records"], 17);
    assert_eq!(v["head"]["seq"], 17);
}

#[test]
fn log_verify_catches_one_changed_byte_and_names_the_record() {
    let tre = Tre::new().with_sample();
    decide_a_few(&tre);
    // Record 16 was Deny for mallory; make it read Allow.
    tamper_with_log(&tre, |lines| {
        let changed = lines[15].replacen("\"decision\":\"Deny\"", "\"decision\":\"Allow\"", 1);
        assert_ne!(changed, lines[15]);
        lines[15] = changed;
    });
    assert_eq!(tre.run(&["log", "verify"]).status.code(), Some(1));
    let (seq, problem) = first_bad(&tre);
    assert_eq!(seq, 16);
    assert!(problem.contains("altered"), "{problem}");
}

#[test]
fn log_verify_catches_a_deleted_record() {
    let tre = Tre::new().with_sample();
    decide_a_few(&tre);
    tamper_with_log(&tre, |lines| {
        lines.remove(9);
    });
    let (seq, problem) = first_bad(&tre);
    assert_eq!(seq, 10);
    assert!(problem.contains("deleted"), "{problem}");
}

#[test]
fn log_verify_catches_two_swapped_records() {
    let tre = Tre::new().with_sample();
    decide_a_few(&tre);
    tamper_with_log(&tre, |lines| lines.swap(4, 5));
    let (seq, problem) = first_bad(&tre);
    assert_eq!(seq, 5);
    assert!(problem.contains("out of order"), "{problem}");
}

#[test]
fn log_verify_catches_records_cut_from_the_end() {
    let tre = Tre::new().with_sample();
    decide_a_few(&tre);
    tamper_with_log(&tre, |lines| {
        lines.pop();
    });
    let (_, problem) = first_bad(&tre);
    assert!(problem.contains("removed from the end"), "{problem}");
    // And nothing more is appended to a log that lost records.
    let out = tre.run(&request("authorize", ALICE, READ, GWAS));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn a_logged_decision_replays_with_its_own_policies_after_the_policies_changed() {
    let tre = Tre::new().with_sample();
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = copy_policies(tmp.path());
    let policies = dir.display().to_string();
    let (code, v) = tre.json(
        &[
            request(
                "authorize",
                r#"Tre::Service::"tregov""#,
                r#"Tre::Action::"budgetNotify""#,
                r#"Tre::Budget::"proj-genomics""#,
            ),
            vec!["--policies", &policies],
        ]
        .concat(),
    );
    assert_eq!(code, 0);
    let seq = v["logSeq"].as_u64().expect("logged");
    // The compliance team removes notification on actual spend.
    let budget = dir.join("budget.cedar");
    let text = std::fs::read_to_string(&budget).expect("read");
    let start = text
        .find("@id(\"budget-notify-on-actual\")")
        .expect("policy");
    let end = start + text[start..].find("};").expect("end") + 2;
    std::fs::write(&budget, format!("{}{}", &text[..start], &text[end..])).expect("write");
    let (code, v) = tre.json(&["why", "--policies", &policies, "--replay", &seq.to_string()]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["reproduces"], true);
    assert_eq!(
        v["reasons"],
        serde_json::json!(["budget-notify-on-actual", "budget-notify-on-forecast"])
    );
    assert_eq!(
        v["currentPolicies"]["reasons"],
        serde_json::json!(["budget-notify-on-forecast"])
    );
    assert_ne!(
        v["currentPolicies"]["policySetVersion"],
        v["policySetVersion"]
    );
}

#[test]
fn a_store_killed_mid_import_keeps_either_the_old_or_the_new_state() {
    let tre = Tre::new().with_sample();
    let (_, before) = tre.json(&["entities", "export"]);
    let before_count = before.as_array().map_or(0, Vec::len);
    // A big batch, so the kill lands while it is being validated or written.
    let mut items = Vec::new();
    for i in 0..20_000 {
        items.push(serde_json::json!({
            "uid": {"type": "Tre::User", "id": format!("bulk-{i}")},
            "attrs": {"status": "active"},
            "parents": [{"type": "Tre::Role", "id": "Researcher"}]
        }));
    }
    let file = tre.dir.path().join("bulk.entities.json");
    std::fs::write(&file, serde_json::to_vec(&items).expect("json")).expect("write");
    for delay_ms in [50u64, 150, 300] {
        let mut child = std::process::Command::new(tregov_tests::tregov_bin())
            .arg("--data-dir")
            .arg(tre.data_dir())
            .args(["entities", "import", &file.display().to_string()])
            .current_dir(workspace_root())
            .spawn()
            .expect("spawn");
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let (code, after) = tre.json(&["entities", "export"]);
        assert_eq!(code, 0);
        let n = after.as_array().map_or(0, Vec::len);
        assert!(
            n == before_count || n == before_count + 20_000,
            "partial import visible: {n} entities"
        );
    }
}

#[test]
fn a_bad_command_line_argument_exits_3_not_2() {
    let out = Tre::new().run(&["authorize", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let out = Tre::new().run(&["--output", "yaml", "validate"]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn a_context_file_that_does_not_exist_is_invalid_input() {
    let tre = Tre::new().with_sample();
    let out = tre.run(
        &[
            request("authorize", ALICE, READ, GWAS),
            vec!["--context", "@/no/such/context.json"],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("/no/such/context.json"));
}

#[test]
fn the_example_configuration_is_valid() {
    let out = Tre::new().run(&["--config", "examples/tregov.toml", "config", "check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("2 project(s)"));
}

/// Regression: coverage was computed from the policies the test files named, so a policy
/// file no test named was not uncovered but invisible.
#[test]
fn coverage_names_a_policy_of_a_file_no_test_names() {
    let tre = Tre::new();
    let policies = tregov_tests::copy_policies_with_tests(tre.dir.path());
    std::fs::write(
        policies.join("extra.cedar"),
        "@id(\"extra-untested\")\nforbid (principal, action == Tre::Action::\"write\", resource)\nwhen { resource.classification == \"secret\" };\n",
    )
    .expect("write");
    let dir = policies.display().to_string();
    let out = tre.run(&["--policies", &dir, "test", "--coverage"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(
        text.contains("never determined a decision: extra-untested"),
        "{text}"
    );
}

#[test]
fn under_output_json_an_error_is_one_json_object_on_stdout_naming_its_code() {
    let tre = Tre::new().with_sample();
    let out = tre.run(
        &[
            vec!["--output", "json"],
            request("authorize", "alice", READ, GWAS),
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(3));
    let error: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(&out)));
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("invalid entity uid `alice`"), "{error:#}");
    assert!(error["error"]["code"].is_string(), "{error:#}");
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn completions_generate_for_bash_zsh_and_fish_and_name_the_commands() {
    let tre = Tre::new();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef tregov"),
        ("fish", "complete -c tregov"),
    ] {
        let out = tre.run(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: {script}");
        for command in ["daemon", "why", "completions", "detailed-exitcode"] {
            assert!(script.contains(command), "{shell} lacks `{command}`");
        }
    }
    let unknown = tre.run(&["completions", "tcsh"]);
    assert_eq!(unknown.status.code(), Some(3));
}

#[test]
fn man_pages_are_written_for_tregov_and_each_command() {
    let tre = Tre::new();
    let dir = tre.dir.path().join("man");
    let out = tre.run(&["man", &dir.display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let root = std::fs::read_to_string(dir.join("tregov.1")).expect("tregov.1");
    assert!(root.starts_with(".ie \\n(.g .ds Aq"), "{root}");
    assert!(
        root.contains("tregov\\-daemon(1)") || root.contains("daemon"),
        "{root}"
    );
    let plan = std::fs::read_to_string(dir.join("tregov-plan.1")).expect("tregov-plan.1");
    assert!(plan.contains("detailed\\-exitcode"), "{plan}");
    assert!(dir.join("tregov-policy-diff.1").exists());
}
