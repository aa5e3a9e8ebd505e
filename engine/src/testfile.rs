//! Policy tests in the JSON format of Cedar's own integration tests, run with the semantics
//! of Cedar's harness: entities and context read with the schema, `shouldValidate` compared
//! with strict validation, and the decision, `reason` and `errors` (policy ids) compared as
//! sets.
//!
//! Policy ids follow Cedar's harness (`policy0`, `policy1`, ... in file order); a test may
//! also name policies by their `@id`, so tests of tregov's own policies read as prose.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Entities, PolicySet, Request, Schema, ValidationMode, Validator,
};
use serde::Deserialize;
use serde_json::Value;

use crate::decide::error_chain;
use crate::entities::uid_from_json;
use crate::error::{EngineError, Result};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TestFile {
    policies: String,
    entities: String,
    schema: String,
    should_validate: bool,
    #[serde(alias = "queries")]
    requests: Vec<TestRequest>,
    #[serde(default)]
    policy_format: Option<String>,
    #[serde(default)]
    schema_format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TestRequest {
    #[serde(default, alias = "desc")]
    description: String,
    principal: Value,
    action: Value,
    resource: Value,
    #[serde(default)]
    context: Value,
    #[serde(default, alias = "enableRequestValidation")]
    validate_request: Option<bool>,
    decision: String,
    #[serde(alias = "reasons")]
    reason: Vec<String>,
    #[serde(default)]
    errors: Vec<String>,
}

/// The outcome of running test files.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct TestReport {
    pub files: usize,
    pub passed: usize,
    pub failed: usize,
    pub failures: Vec<String>,
    /// Every test case, in file order (for JUnit reports).
    #[serde(skip)]
    pub cases: Vec<CaseResult>,
    /// Every policy the tests decided with (by `@id` where it has one).
    #[serde(skip)]
    pub policies: BTreeSet<String>,
    /// The policies that determined at least one decision.
    #[serde(skip)]
    pub determined: BTreeSet<String>,
}

/// One test case's result.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub file: String,
    pub name: String,
    /// Why it failed; `None` when it passed.
    pub failure: Option<String>,
}

impl TestReport {
    pub fn merge(&mut self, other: TestReport) {
        self.files += other.files;
        self.passed += other.passed;
        self.failed += other.failed;
        self.failures.extend(other.failures);
        self.cases.extend(other.cases);
        self.policies.extend(other.policies);
        self.determined.extend(other.determined);
    }

    /// Policies no test decision was determined by: untested (or dead) rules.
    pub fn uncovered(&self) -> Vec<String> {
        self.policies
            .difference(&self.determined)
            .cloned()
            .collect()
    }

    pub(crate) fn record(
        &mut self,
        file: &str,
        name: String,
        outcome: std::result::Result<(), String>,
    ) {
        match &outcome {
            Ok(()) => self.passed += 1,
            Err(msg) => {
                self.failed += 1;
                self.failures.push(format!("{file}: {name}: {msg}"));
            }
        }
        self.cases.push(CaseResult {
            file: file.to_string(),
            name,
            failure: outcome.err(),
        });
    }
}

/// Finds test files: files given directly, and under directories every `.json` file that has
/// a `requests` field.
pub fn collect_test_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out)?;
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(EngineError::Request(format!(
                "no such test file or directory `{}`",
                p.display()
            )));
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| EngineError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, out)?;
            continue;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if !name.ends_with(".json")
            || name.ends_with(".entities.json")
            || name.ends_with(".cedarschema.json")
        {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        // Only files that are tests: a top-level object with `requests` (or the older
        // `queries`).
        if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&text) {
            if map.contains_key("requests") || map.contains_key("queries") {
                out.push(path);
            }
        }
    }
    Ok(())
}

/// Runs test files on up to `workers` threads; failures come back in file order.
pub fn run_all(files: &[PathBuf], workers: usize) -> TestReport {
    let workers = workers.max(1).min(files.len().max(1));
    let chunks: Vec<Vec<(usize, &PathBuf)>> = (0..workers)
        .map(|w| files.iter().enumerate().skip(w).step_by(workers).collect())
        .collect();
    let mut results: BTreeMap<usize, TestReport> = BTreeMap::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .into_iter()
                        .map(|(i, f)| (i, run_file(f)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            if let Ok(list) = h.join() {
                results.extend(list);
            }
        }
    });
    let mut report = TestReport::default();
    for (_, r) in results {
        report.merge(r);
    }
    report
}

/// Resolves a path named inside a test: from the current directory, else from the test
/// file's directory.
fn resolve(name: &str, test_file: &Path) -> PathBuf {
    let p = PathBuf::from(name);
    if p.is_absolute() || p.exists() {
        return p;
    }
    test_file.parent().map_or(p.clone(), |d| d.join(&p))
}

fn read(name: &str, test_file: &Path) -> std::result::Result<(PathBuf, String), String> {
    let path = resolve(name, test_file);
    std::fs::read_to_string(&path)
        .map(|t| (path.clone(), t))
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

/// Runs one test file.
pub fn run_file(path: &Path) -> TestReport {
    let shown = path.display().to_string();
    let mut report = TestReport {
        files: 1,
        ..Default::default()
    };
    let fail_file = |report: &mut TestReport, n: usize, msg: String| {
        report.failed += n.max(1);
        report.failures.push(format!("{shown}: {msg}"));
        report.cases.push(CaseResult {
            file: shown.clone(),
            name: "the test file".into(),
            failure: Some(msg),
        });
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            fail_file(&mut report, 1, format!("cannot read: {e}"));
            return report;
        }
    };
    let test: TestFile = match serde_json::from_str(&text) {
        Ok(t) => t,
        Err(e) => {
            fail_file(&mut report, 1, format!("not a test file: {e}"));
            return report;
        }
    };
    let n = test.requests.len();
    let loaded = (|| -> std::result::Result<Loaded, String> {
        let (schema_path, schema_text) = read(&test.schema, path)?;
        let json_schema = test.schema_format.as_deref() == Some("json")
            || schema_path.extension().is_some_and(|e| e == "json");
        let schema = if json_schema {
            Schema::from_json_str(&schema_text)
                .map_err(|e| format!("schema: {}", error_chain(&e)))?
        } else {
            Schema::from_cedarschema_str(&schema_text)
                .map(|(s, _)| s)
                .map_err(|e| format!("schema: {}", error_chain(&e)))?
        };
        let policies = load_test_policies(&test, path)?;
        let (_, entities_text) = read(&test.entities, path)?;
        let entities = Entities::from_json_str(&entities_text, Some(&schema))
            .map_err(|e| format!("entities: {}", error_chain(&e)))?;
        Ok(Loaded {
            schema,
            policies,
            entities,
        })
    })();
    let loaded = match loaded {
        Ok(l) => l,
        Err(msg) => {
            fail_file(&mut report, n, msg);
            return report;
        }
    };
    report.policies = loaded
        .policies
        .set
        .policies()
        .map(|p| loaded.policies.name(p.id().as_ref()))
        .collect();
    let validation = Validator::new(loaded.schema.clone())
        .validate(&loaded.policies.set, ValidationMode::Strict);
    let validates = validation.validation_passed();
    if validates != test.should_validate {
        let first = validation
            .validation_errors()
            .next()
            .map(|e| format!(" (first error: {e})"))
            .unwrap_or_default();
        let msg = format!(
            "shouldValidate is {} but strict validation {}{first}",
            test.should_validate,
            if validates { "passes" } else { "fails" }
        );
        report.record(&shown, "validation".into(), Err(msg));
    }
    let authorizer = Authorizer::new();
    for (i, req) in test.requests.iter().enumerate() {
        let label = if req.description.is_empty() {
            format!("request {}", i + 1)
        } else {
            format!("request {} `{}`", i + 1, req.description)
        };
        let outcome = run_request(req, &loaded, &authorizer).map(|determined| {
            report.determined.extend(determined);
        });
        report.record(&shown, label, outcome);
    }
    report
}

struct Loaded {
    schema: Schema,
    policies: TestPolicies,
    entities: Entities,
}

struct TestPolicies {
    set: PolicySet,
    /// Positional id → `@id` annotation, for tests that name policies by `@id`.
    aliases: BTreeMap<String, String>,
}

impl TestPolicies {
    /// A policy's name for reports: its `@id` where it has one.
    fn name(&self, id: &str) -> String {
        self.aliases
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }
}

fn load_test_policies(test: &TestFile, path: &Path) -> std::result::Result<TestPolicies, String> {
    let resolved = resolve(&test.policies, path);
    if test.policy_format.as_deref() == Some("json") {
        let (_, text) = read(&test.policies, path)?;
        let set = PolicySet::from_json_str(&text)
            .map_err(|e| format!("policies: {}", error_chain(&e)))?;
        return Ok(TestPolicies {
            set,
            aliases: BTreeMap::new(),
        });
    }
    // A directory of `.cedar` files (a tregov extension): files in name order, one set.
    let text = if resolved.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&resolved)
            .map_err(|e| format!("cannot read `{}`: {e}", resolved.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "cedar"))
            .collect();
        files.sort();
        let mut all = String::new();
        for f in files {
            let t = std::fs::read_to_string(&f)
                .map_err(|e| format!("cannot read `{}`: {e}", f.display()))?;
            all.push_str(&t);
            all.push('\n');
        }
        all
    } else {
        read(&test.policies, path)?.1
    };
    let set = PolicySet::from_str(&text).map_err(|e| format!("policies: {}", error_chain(&e)))?;
    let aliases = set
        .policies()
        .filter_map(|p| {
            p.annotation("id")
                .map(|a| (p.id().to_string(), a.to_string()))
        })
        .collect();
    Ok(TestPolicies { set, aliases })
}

/// Runs one request; on success, the policies that determined its decision.
fn run_request(
    req: &TestRequest,
    loaded: &Loaded,
    authorizer: &Authorizer,
) -> std::result::Result<Vec<String>, String> {
    let uid = |v: &Value, what: &str| {
        uid_from_json(v).ok_or_else(|| format!("`{what}` is not an entity reference: {v}"))
    };
    let principal = uid(&req.principal, "principal")?;
    let action = uid(&req.action, "action")?;
    let resource = uid(&req.resource, "resource")?;
    let context_json = if req.context.is_null() {
        Value::Object(Default::default())
    } else {
        req.context.clone()
    };
    let context = Context::from_json_value(context_json, Some((&loaded.schema, &action)))
        .map_err(|e| format!("context: {}", error_chain(&e)))?;
    let schema = if req.validate_request.unwrap_or(true) {
        Some(&loaded.schema)
    } else {
        None
    };
    let request = Request::new(principal, action, resource, context, schema)
        .map_err(|e| format!("request: {}", error_chain(&e)))?;
    let response = authorizer.is_authorized(&request, &loaded.policies.set, &loaded.entities);
    let decision = match response.decision() {
        cedar_policy::Decision::Allow => "allow",
        cedar_policy::Decision::Deny => "deny",
    };
    let reasons: BTreeSet<String> = response
        .diagnostics()
        .reason()
        .map(|r| r.to_string())
        .collect();
    let errors: BTreeSet<String> = response
        .diagnostics()
        .errors()
        .map(|e| match e {
            cedar_policy::AuthorizationError::PolicyEvaluationError(pe) => {
                pe.policy_id().to_string()
            }
        })
        .collect();
    let mut problems = Vec::new();
    if !req.decision.eq_ignore_ascii_case(decision) {
        problems.push(format!(
            "expected decision {} but got {decision}",
            req.decision.to_lowercase()
        ));
    }
    let expected_reasons: BTreeSet<String> = req.reason.iter().cloned().collect();
    if !same_ids(&expected_reasons, &reasons, &loaded.policies.aliases) {
        problems.push(format!(
            "expected reason {:?} but got {:?}",
            expected_reasons,
            display_ids(&reasons, &loaded.policies.aliases)
        ));
    }
    let expected_errors: BTreeSet<String> = req.errors.iter().cloned().collect();
    if !same_ids(&expected_errors, &errors, &loaded.policies.aliases) {
        problems.push(format!(
            "expected errors {:?} but got {:?}",
            expected_errors,
            display_ids(&errors, &loaded.policies.aliases)
        ));
    }
    if problems.is_empty() {
        Ok(reasons.iter().map(|r| loaded.policies.name(r)).collect())
    } else {
        Err(problems.join("; "))
    }
}

/// Whether `expected` names the same policies as `actual`, by positional id or by `@id`.
fn same_ids(
    expected: &BTreeSet<String>,
    actual: &BTreeSet<String>,
    aliases: &BTreeMap<String, String>,
) -> bool {
    if expected == actual {
        return true;
    }
    let by_alias: BTreeSet<String> = actual
        .iter()
        .map(|id| aliases.get(id).cloned().unwrap_or_else(|| id.clone()))
        .collect();
    expected == &by_alias
}

fn display_ids(ids: &BTreeSet<String>, aliases: &BTreeMap<String, String>) -> BTreeSet<String> {
    ids.iter()
        .map(|id| aliases.get(id).cloned().unwrap_or_else(|| id.clone()))
        .collect()
}
