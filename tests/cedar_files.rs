//! Policy files handed to tregov as a Cedar user hands them to the Cedar CLI: plain Cedar
//! without `@id` (named `policy0`, `policy1`, ...), templates with a `--template-linked`
//! file, `--request-json`, and the CLI's `run-tests` format, with coverage and JUnit.

use std::path::PathBuf;

use serde_json::Value;
use tregov_tests::{stderr, stdout, workspace_root, Tre};

fn fixture(name: &str) -> String {
    let path: PathBuf = workspace_root()
        .join("tests/fixtures/cedar-templates")
        .join(name);
    path.display().to_string()
}

/// `--policies`, `--schema` and `--template-linked` for the documents fixture.
fn files() -> Vec<String> {
    vec![
        "--policies".into(),
        fixture("documents.cedar"),
        "--schema".into(),
        fixture("documents.cedarschema"),
        "--template-linked".into(),
        fixture("linked.json"),
    ]
}

fn run(tre: &Tre, args: &[&str]) -> std::process::Output {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(files());
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    tre.run(&refs)
}

#[test]
fn a_template_linked_policy_decides_from_a_request_json_file_and_is_named_by_its_link_id() {
    let tre = Tre::new();
    let out = run(
        &tre,
        &[
            "--output",
            "json",
            "authorize",
            "--entities",
            &fixture("documents.entities.json"),
            "--request-json",
            &fixture("request.json"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["decision"], "Allow", "{v}");
    assert_eq!(v["reasons"], serde_json::json!(["bob-views-plan"]), "{v}");
}

#[test]
fn why_explains_a_link_with_its_templates_conditions() {
    let tre = Tre::new();
    let out = run(
        &tre,
        &[
            "why",
            "--entities",
            &fixture("documents.entities.json"),
            "--principal",
            "User::\"carol\"",
            "--action",
            "Action::\"edit\"",
            "--resource",
            "Document::\"plan\"",
        ],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("carol-edits-plan"), "{text}");
    assert!(text.contains("template `editors`"), "{text}");
}

#[test]
fn plain_cedar_files_validate_with_cedars_own_names() {
    let tre = Tre::new();
    let out = run(&tre, &["--output", "json", "validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["valid"], true);
}

#[test]
fn a_link_to_a_missing_template_is_an_error_naming_the_links_file() {
    let tre = Tre::new();
    let links = tre.dir.path().join("bad-links.json");
    std::fs::write(
        &links,
        r#"[{"template_id": "policy9", "link_id": "x", "args": {"?principal": "User::\"bob\""}}]"#,
    )
    .expect("write");
    let out = tre.run(&[
        "validate",
        "--policies",
        &fixture("documents.cedar"),
        "--schema",
        &fixture("documents.cedarschema"),
        "--template-linked",
        &links.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("no template `policy9`"), "{err}");
    assert!(err.contains("bad-links.json"), "{err}");
}

#[test]
fn the_cedar_cli_run_tests_format_passes_and_reports_junit() {
    let tre = Tre::new();
    let out = run(
        &tre,
        &[
            "test",
            "--tests",
            &fixture("documents.tests.json"),
            "--format",
            "junit",
        ],
    );
    let xml = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{xml}{}", stderr(&out));
    assert!(xml.contains(r#"tests="6" failures="0""#), "{xml}");
    assert!(
        xml.contains(r#"name="test `bob views the plan through his link`"/>"#),
        "{xml}"
    );
}

#[test]
fn coverage_names_the_policy_no_test_decision_was_determined_by() {
    let tre = Tre::new();
    let out = run(
        &tre,
        &[
            "test",
            "--tests",
            &fixture("documents.tests.json"),
            "--coverage",
        ],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("6 passed, 0 failed"), "{text}");
    assert!(
        text.contains("coverage: 4 of 5 policies determined at least one decision"),
        "{text}"
    );
    assert!(
        text.contains("never determined a decision: policy4"),
        "{text}"
    );
}

#[test]
fn a_run_tests_case_that_expects_the_wrong_decision_fails_in_junit_with_its_reason() {
    let tre = Tre::new();
    let text = std::fs::read_to_string(fixture("documents.tests.json")).expect("read");
    let wrong = text.replacen("\"decision\": \"deny\"", "\"decision\": \"allow\"", 1);
    let dir = tre.dir.path();
    std::fs::write(dir.join("documents.tests.json"), wrong).expect("write");
    std::fs::copy(
        fixture("documents.entities.json"),
        dir.join("documents.entities.json"),
    )
    .expect("copy");
    let tests = dir.join("documents.tests.json").display().to_string();
    let out = run(&tre, &["test", "--tests", &tests, "--format", "junit"]);
    assert_eq!(out.status.code(), Some(1));
    let xml = stdout(&out);
    assert!(xml.contains(r#"failures="1""#), "{xml}");
    assert!(xml.contains("expected allow, got deny"), "{xml}");
}

#[test]
fn the_governed_policies_still_need_an_id_as_a_validation_error() {
    let tre = Tre::new();
    let policies = tregov_tests::copy_policies(tre.dir.path());
    std::fs::write(
        policies.join("unnamed.cedar"),
        "permit (principal, action == Tre::Action::\"read\", resource);\n",
    )
    .expect("write");
    let out = tre.run(&["validate", "--policies", &policies.display().to_string()]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("policy has no `@id` annotation"),
        "{}",
        stderr(&out)
    );
}

/// The built-in `study-guest-reader` template, linked in the store through the API by whoever
/// the policies allow, decides under its link id over the store, and is gone when removed.
#[test]
fn a_template_linked_through_the_api_by_a_data_manager_lets_one_user_read_until_removed() {
    use tregov_tests::jwt::{auth_section, token};
    use tregov_tests::served::Served;

    let tre = Tre::new().with_sample();
    let config = tre.dir.path().join("tregov.toml");
    std::fs::write(
        &config,
        format!("[api]\nlisten = \"127.0.0.1:0\"\n{}", auth_section()),
    )
    .expect("config");
    let server = Served::start(tre.command(None, &config, &["serve"]));
    let bob_reads = [
        "authorize",
        "--principal",
        "Tre::User::\"bob\"",
        "--action",
        "Tre::Action::\"read\"",
        "--resource",
        "Tre::Dataset::\"alice-scratch\"",
    ];
    let (code, before) = tre.json(&bob_reads);
    assert_eq!(code, 2, "bob does not read alice's study: {before}");

    let links = |who: &str, args: &[&str]| {
        let mut all = vec!["links"];
        all.extend_from_slice(args);
        let token = token(who);
        all.extend_from_slice(&["--api", &server.base, "--token", &token]);
        tre.run_with(None, &config, &all)
    };
    let add = [
        "add",
        "study-guest-reader",
        "--dataset",
        "alice-scratch",
        "--user",
        "bob",
    ];
    let refused = links("bob", &add);
    assert!(!refused.status.success(), "bob links nothing for himself");
    let linked = links("frank", &add);
    assert!(
        linked.status.success(),
        "{}{}",
        stdout(&linked),
        stderr(&linked)
    );
    let id = "study-guest-reader/alice-scratch/bob";
    assert!(stdout(&linked).contains(id), "{}", stdout(&linked));

    let (code, after) = tre.json(&bob_reads);
    assert_eq!(code, 0, "{after}");
    assert_eq!(after["reasons"], serde_json::json!([id]), "{after}");
    let mut why_args = bob_reads;
    why_args[0] = "why";
    let why = tre.run(&why_args);
    assert!(
        stdout(&why).contains("a link of template `study-guest-reader`"),
        "{}",
        stdout(&why)
    );
    // The logged decision replays with the link: the log holds the set with it.
    let seq = after["logSeq"].to_string();
    let (code, replayed) = tre.json(&["why", "--replay", &seq]);
    assert_eq!(code, 0, "{replayed}");
    assert_eq!(replayed["reproduces"], true, "{replayed}");

    let removed = links("frank", &["remove", id]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    let (code, gone) = tre.json(&bob_reads);
    assert_eq!(code, 2, "{gone}");
}
