//! `deploy/`: the CloudFormation templates grant tregov's roles exactly the AWS actions its
//! code calls (every SDK operation in the source, mapped to its IAM action), and `cfn-lint`
//! passes on every template; the systemd unit and the alert rules name what exists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tregov_tests::{stderr, stdout, workspace_root};

/// Where tregov's own code calls AWS.
const SOURCE_DIRS: &[&str] = &[
    "collectors/src",
    "enforcers/src",
    "api/src",
    "bin/src",
    "config/src",
    "engine/src",
];

/// SDK operations whose IAM action has another name, or needs more than one.
const IAM_ACTIONS: &[(&str, &[&str])] = &[
    ("s3:ListObjectsV2", &["s3:ListBucket"]),
    ("s3:HeadObject", &["s3:GetObject"]),
    ("s3:HeadBucket", &["s3:ListBucket"]),
    ("s3:ListObjectVersions", &["s3:ListBucketVersions"]),
    ("s3:CopyObject", &["s3:GetObject", "s3:PutObject"]),
    ("s3:UploadPartCopy", &["s3:GetObject", "s3:PutObject"]),
    ("s3:CreateMultipartUpload", &["s3:PutObject"]),
    ("s3:UploadPart", &["s3:PutObject"]),
    ("s3:CompleteMultipartUpload", &["s3:PutObject"]),
    (
        "s3:GetObjectLockConfiguration",
        &["s3:GetBucketObjectLockConfiguration"],
    ),
    ("sqs:DeleteMessageBatch", &["sqs:DeleteMessage"]),
    ("budgets:DescribeBudgets", &["budgets:ViewBudget"]),
    ("budgets:DescribeBudget", &["budgets:ViewBudget"]),
    (
        "budgets:DescribeBudgetPerformanceHistory",
        &["budgets:ViewBudget"],
    ),
    ("budgets:UpdateBudget", &["budgets:ModifyBudget"]),
    // Needs no permission (AWS documents it as always allowed).
    ("sts:GetCallerIdentity", &[]),
];

/// What the code needs that is no SDK call in it, and why.
const IMPLIED: &[(&str, &str)] = &[
    (
        "sts:AssumeRole",
        "every `role_arn` is assumed through aws-config's provider",
    ),
    (
        "s3:GetObjectVersion",
        "egress reads and copies the reviewed version (`version_id`)",
    ),
    (
        "iam:PassRole",
        "a backup selection names the role AWS Backup runs as",
    ),
    (
        "kms:GenerateDataKey",
        "egress copies are encrypted with `[egress] kms_key_id` (SSE-KMS)",
    ),
    ("kms:Decrypt", "egress reads and copies SSE-KMS objects"),
    (
        "s3:PutObjectRetention",
        "anchors are written under an Object Lock retention",
    ),
];

/// The fluent method of every operation of each SDK crate tregov depends on, with the
/// operation's name, read from the crates' own sources (`src/operation/<op>.rs`).
fn sdk_operations() -> BTreeMap<String, BTreeMap<String, String>> {
    // This machine's platform only: the crates built here, nothing to download.
    let rustc = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc runs");
    let host = stdout(&rustc)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(String::from))
        .expect("the host triple");
    let out = Command::new("cargo")
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
            &host,
        ])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let metadata: Value = serde_json::from_slice(&out.stdout).expect("metadata");
    let mut by_service = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().unwrap_or_default();
        let Some(service) = name.strip_prefix("aws-sdk-") else {
            continue;
        };
        let manifest = PathBuf::from(package["manifest_path"].as_str().expect("manifest"));
        let dir = manifest.with_file_name("src").join("operation");
        let mut ops = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).expect("operations").flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("operation");
            let op = text
                .lines()
                .find_map(|l| l.strip_prefix("pub struct ")?.strip_suffix(';'))
                .map(String::from);
            let method = path.file_stem().and_then(|s| s.to_str()).map(String::from);
            if let (Some(op), Some(method)) = (op, method) {
                ops.insert(method, op);
            }
        }
        by_service.insert(service.to_string(), ops);
    }
    by_service
}

/// A source file's text without its unit tests (which may call AWS to set up).
fn without_tests(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests")
        .map_or(text, |at| &text[..at])
}

/// `service:Operation` for every SDK call in `sources`: a method named as an operation of a
/// crate the file names (`aws_sdk_<service>`), called (`.method(`).
fn operations_called(
    sources: &[(String, String)],
    sdk: &BTreeMap<String, BTreeMap<String, String>>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut called: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in sources {
        let text = without_tests(text);
        for (service, ops) in sdk {
            if !text.contains(&format!("aws_sdk_{service}")) {
                continue;
            }
            for (method, op) in ops {
                if text.contains(&format!(".{method}()")) {
                    called
                        .entry(format!("{service}:{op}"))
                        .or_default()
                        .insert(path.clone());
                }
            }
        }
    }
    called
}

/// The IAM actions those calls need, with the implied ones.
fn actions_needed(called: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    let mut needed: BTreeSet<String> = IMPLIED.iter().map(|(a, _)| a.to_string()).collect();
    for op in called.keys() {
        match IAM_ACTIONS.iter().find(|(sdk, _)| sdk == op) {
            Some((_, actions)) => needed.extend(actions.iter().map(|a| a.to_string())),
            None => {
                needed.insert(op.clone());
            }
        }
    }
    needed
}

/// The actions the templates grant tregov's roles: statements inside resources whose
/// logical id starts with `Tregov` and whose type is an IAM role or policy.
fn actions_granted(templates: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let mut granted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, text) in templates {
        let mut resource: Option<(String, bool)> = None;
        let mut in_resources = false;
        for line in text.lines() {
            if line == "Resources:" {
                in_resources = true;
                continue;
            }
            if !line.starts_with(' ') && !line.is_empty() {
                in_resources = false;
            }
            if !in_resources {
                continue;
            }
            if let Some(id) = line
                .strip_prefix("  ")
                .filter(|l| !l.starts_with(' '))
                .and_then(|l| l.strip_suffix(':'))
            {
                resource = Some((id.to_string(), false));
                continue;
            }
            let Some((id, iam)) = resource.as_mut() else {
                continue;
            };
            let trimmed = line.trim();
            if let Some(kind) = trimmed.strip_prefix("Type: ") {
                *iam = kind.starts_with("AWS::IAM::Role")
                    || kind.starts_with("AWS::IAM::ManagedPolicy")
                    || kind.starts_with("AWS::IAM::Policy");
            }
            if !(*iam && id.starts_with("Tregov")) {
                continue;
            }
            let action = trimmed
                .strip_prefix("- ")
                .or_else(|| trimmed.strip_prefix("Action: "))
                .filter(|a| {
                    a.split_once(':').is_some_and(|(service, name)| {
                        !service.is_empty()
                            && service
                                .bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                            && name.starts_with(|c: char| c.is_ascii_uppercase())
                            && name.bytes().all(|b| b.is_ascii_alphanumeric())
                    })
                });
            if let Some(action) = action {
                granted
                    .entry(action.to_string())
                    .or_default()
                    .insert(file.clone());
            }
        }
    }
    granted
}

fn read_dir_texts(dir: &Path, ext: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == ext) {
                let text = std::fs::read_to_string(&path).expect("text");
                let shown = path
                    .strip_prefix(workspace_root())
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                out.push((shown, text));
            }
        }
    }
    out.sort();
    out
}

fn sources() -> Vec<(String, String)> {
    SOURCE_DIRS
        .iter()
        .flat_map(|d| read_dir_texts(&workspace_root().join(d), "rs"))
        .collect()
}

fn templates() -> Vec<(String, String)> {
    read_dir_texts(&workspace_root().join("deploy/cloudformation"), "yaml")
}

/// What the code needs and no template grants, and what a template grants that nothing
/// needs.
fn coverage(sources: &[(String, String)]) -> (Vec<String>, Vec<String>) {
    let called = operations_called(sources, &sdk_operations());
    let needed = actions_needed(&called);
    let granted = actions_granted(&templates());
    let missing = needed
        .iter()
        .filter(|a| !granted.contains_key(*a))
        .map(|a| {
            let by = called
                .iter()
                .filter(|(op, _)| {
                    IAM_ACTIONS
                        .iter()
                        .find(|(sdk, _)| sdk == op)
                        .map_or(**op == *a, |(_, actions)| actions.contains(&a.as_str()))
                })
                .flat_map(|(_, files)| files.iter().cloned())
                .collect::<Vec<_>>();
            let by: BTreeSet<String> = by.into_iter().collect();
            let why = IMPLIED
                .iter()
                .find(|(i, _)| i == a)
                .map(|(_, why)| why.to_string());
            let by = why.unwrap_or_else(|| by.into_iter().collect::<Vec<_>>().join(", "));
            format!("{a} (called in {by})")
        })
        .collect();
    let extra = granted
        .iter()
        .filter(|(a, _)| !needed.contains(*a))
        .map(|(a, files)| {
            format!(
                "{a} (granted in {})",
                files.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    (missing, extra)
}

#[test]
fn the_templates_grant_exactly_the_actions_the_code_calls() {
    let (missing, extra) = coverage(&sources());
    assert!(
        missing.is_empty(),
        "called in the code, granted by no template:\n  {}",
        missing.join("\n  ")
    );
    assert!(
        extra.is_empty(),
        "granted by a template, called nowhere:\n  {}",
        extra.join("\n  ")
    );
}

#[test]
fn a_call_added_to_the_code_and_not_to_a_template_is_named_with_its_file() {
    let mut with_new_call = sources();
    with_new_call.push((
        "collectors/src/new_collector.rs".into(),
        "use aws_sdk_s3::Client;\nasync fn f(s3: &Client) { let _ = s3.delete_bucket().bucket(\"b\").send().await; }\n".into(),
    ));
    let (missing, _) = coverage(&with_new_call);
    assert_eq!(
        missing,
        vec!["s3:DeleteBucket (called in collectors/src/new_collector.rs)".to_string()]
    );
}

#[test]
fn cfn_lint_passes_on_every_template() {
    let installer = workspace_root().join("scripts/install-cfn-lint");
    let out = Command::new(&installer).output().expect("installer runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let cfn_lint = stdout(&out).trim().to_string();
    let templates: Vec<PathBuf> = templates()
        .into_iter()
        .map(|(path, _)| workspace_root().join(path))
        .collect();
    assert!(templates.len() >= 4, "{templates:?}");
    let lint = Command::new(&cfn_lint)
        .args(&templates)
        .output()
        .expect("cfn-lint runs");
    assert!(
        lint.status.success(),
        "cfn-lint:\n{}{}",
        stdout(&lint),
        stderr(&lint)
    );
}

#[test]
fn the_alert_rules_and_dashboard_use_only_metrics_the_daemon_exposes() {
    // Labelled families appear once they have a series: give each one.
    let daemon = tregov_engine::metrics::Metrics::new();
    daemon.reconciled("trail", false, std::time::Duration::from_millis(5));
    daemon.applied("lakeformation", false);
    daemon.safety_trip("max_revoke_fraction");
    daemon.set_finding("tag-drift", 1);
    let metrics = daemon.render();
    let exposed: BTreeSet<String> = metrics
        .lines()
        .filter(|l| l.starts_with("# TYPE "))
        .filter_map(|l| l.split_whitespace().nth(2).map(String::from))
        .collect();
    let known = |name: &str| {
        exposed.iter().any(|m| {
            name == m
                || ["_total", "_bucket", "_count", "_sum", "_info"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(m.as_str()))
        })
    };
    for file in [
        "deploy/prometheus/tregov-alerts.yaml",
        "deploy/grafana/tregov-dashboard.json",
    ] {
        let text = std::fs::read_to_string(workspace_root().join(file)).expect(file);
        let used: BTreeSet<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("tregov_"))
            .collect();
        assert!(!used.is_empty(), "{file} uses no tregov metric");
        let unknown: Vec<&&str> = used.iter().filter(|m| !known(m)).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics the daemon does not expose: {unknown:?}\nexposed: {exposed:?}"
        );
    }
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("deploy/grafana/tregov-dashboard.json"))
            .expect("dashboard"),
    )
    .expect("the dashboard is JSON");
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() >= 6));
}

#[test]
fn the_systemd_unit_waits_for_readiness_and_is_sandboxed() {
    let unit = std::fs::read_to_string(workspace_root().join("deploy/systemd/tregov.service"))
        .expect("unit");
    for line in [
        "Type=notify",
        "ExecStart=/usr/local/bin/tregov",
        "ProtectSystem=strict",
        "NoNewPrivileges=true",
        "PrivateTmp=true",
        "ReadWritePaths=/var/lib/tregov",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(line)), "lacks `{line}`");
    }
    // systemd's own verifier, where this machine has it.
    if let Ok(out) = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(workspace_root().join("deploy/systemd/tregov.service"))
        .output()
    {
        let complaints: Vec<&str> = std::str::from_utf8(&out.stderr)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("tregov.service") && !l.contains("/usr/local/bin/tregov"))
            .collect();
        assert!(complaints.is_empty(), "{complaints:?}");
    }
}
