//! Policy tests in the Cedar CLI's `run-tests` format: a JSON array of
//! `{name, request: {principal, action, resource, context}, entities, decision, reason,
//! num_errors}`, where `entities` is an entities-JSON array or a file beside the tests.
//! Judged as `cedar run-tests` judges them: the decision must match, every listed reason must
//! be among the determining policies, and the number of errors must match; with a schema,
//! the policies must validate in strict mode without warnings.

use std::path::Path;
use std::str::FromStr;

use cedar_policy::{Authorizer, Context, Entities, EntityUid, Request, ValidationMode, Validator};
use serde::Deserialize;
use serde_json::Value;

use crate::decide::error_chain;
use crate::policies::{PolicyBundle, PolicyKind};
use crate::testfile::TestReport;

/// A case; its `name` is read from the raw JSON, so a case that fails to parse is still named.
#[derive(Debug, Deserialize)]
struct CliTest {
    request: CliRequest,
    entities: Value,
    decision: String,
    reason: Vec<String>,
    num_errors: usize,
}

#[derive(Debug, Deserialize)]
struct CliRequest {
    principal: Option<String>,
    action: Option<String>,
    resource: Option<String>,
    #[serde(default)]
    context: Value,
}

/// Runs the tests of `tests_path` against `bundle`.
pub fn run_cli_tests(bundle: &PolicyBundle, tests_path: &Path) -> TestReport {
    let shown = tests_path.display().to_string();
    let mut report = TestReport {
        files: 1,
        policies: bundle
            .meta
            .values()
            .filter(|m| m.kind != PolicyKind::Template)
            .map(|m| m.id.clone())
            .collect(),
        ..Default::default()
    };
    let tests: Vec<Value> = match std::fs::read_to_string(tests_path)
        .map_err(|e| format!("cannot read: {e}"))
        .and_then(|t| serde_json::from_str(&t).map_err(|e| format!("not a run-tests file: {e}")))
    {
        Ok(tests) => tests,
        Err(msg) => {
            report.record(&shown, "the tests file".into(), Err(msg));
            return report;
        }
    };
    let invalid = bundle.schema.as_ref().and_then(|schema| {
        let result = Validator::new(schema.clone()).validate(&bundle.set, ValidationMode::Strict);
        (!result.validation_passed_without_warnings()).then(|| {
            let problems: Vec<String> = result
                .validation_errors()
                .map(ToString::to_string)
                .chain(result.validation_warnings().map(ToString::to_string))
                .collect();
            format!("policy set validation failed: {}", problems.join("; "))
        })
    });
    let dir = tests_path.parent().unwrap_or_else(|| Path::new("."));
    for (i, test) in tests.iter().enumerate() {
        let name = test
            .get("name")
            .and_then(Value::as_str)
            .map_or_else(|| format!("test {}", i + 1), |n| format!("test `{n}`"));
        let outcome = match &invalid {
            Some(msg) => Err(msg.clone()),
            None => run_one(bundle, test, dir).map(|determined| {
                report.determined.extend(determined);
            }),
        };
        report.record(&shown, name, outcome);
    }
    report
}

fn run_one(bundle: &PolicyBundle, test: &Value, dir: &Path) -> Result<Vec<String>, String> {
    let test: CliTest =
        serde_json::from_value(test.clone()).map_err(|e| format!("not a test case: {e}"))?;
    let schema = bundle.schema.as_ref();
    let uid = |v: &Option<String>, field: &str| -> Result<EntityUid, String> {
        let text = v
            .as_deref()
            .ok_or_else(|| format!("the request has no `{field}`"))?;
        EntityUid::from_str(text).map_err(|e| format!("failed to parse {field} `{text}`: {e}"))
    };
    let action = uid(&test.request.action, "action")?;
    let context_json = match &test.request.context {
        Value::Null => Value::Object(Default::default()),
        other => other.clone(),
    };
    let context = Context::from_json_value(context_json, schema.zip(Some(&action)))
        .map_err(|e| format!("context: {}", error_chain(&e)))?;
    let request = Request::new(
        uid(&test.request.principal, "principal")?,
        action,
        uid(&test.request.resource, "resource")?,
        context,
        schema,
    )
    .map_err(|e| format!("request: {}", error_chain(&e)))?;
    let entities = entities(&test.entities, dir, schema)?;
    let response = Authorizer::new().is_authorized(&request, &bundle.set, &entities);
    let decision = match response.decision() {
        cedar_policy::Decision::Allow => "allow",
        cedar_policy::Decision::Deny => "deny",
    };
    let reasons: Vec<String> = response
        .diagnostics()
        .reason()
        .map(ToString::to_string)
        .collect();
    let mut problems = Vec::new();
    if !test.decision.eq_ignore_ascii_case(decision) {
        problems.push(format!("expected {}, got {decision}", test.decision));
    }
    let missing: Vec<&String> = test
        .reason
        .iter()
        .filter(|r| !reasons.contains(r))
        .collect();
    if !missing.is_empty() {
        problems.push(format!("missing reason(s): {missing:?}"));
    }
    let errors: Vec<String> = response
        .diagnostics()
        .errors()
        .map(ToString::to_string)
        .collect();
    if errors.len() != test.num_errors {
        problems.push(format!(
            "expected {} error(s), but got {}: {errors:?}",
            test.num_errors,
            errors.len()
        ));
    }
    if problems.is_empty() {
        Ok(reasons)
    } else {
        Err(problems.join("; "))
    }
}

/// Inline entities, or a file that must lie inside the tests' own directory.
fn entities(
    v: &Value,
    dir: &Path,
    schema: Option<&cedar_policy::Schema>,
) -> Result<Entities, String> {
    let Some(file) = v.as_str() else {
        return Entities::from_json_value(v.clone(), schema)
            .map_err(|e| format!("entities: {}", error_chain(&e)));
    };
    let path = dir.join(file);
    let canonical = path
        .canonicalize()
        .map_err(|e| format!("entities file `{}`: {e}", path.display()))?;
    let canonical_dir = dir
        .canonicalize()
        .map_err(|e| format!("tests directory `{}`: {e}", dir.display()))?;
    if !canonical.starts_with(&canonical_dir) {
        return Err(format!(
            "entities file `{file}` is outside the tests' directory `{}`",
            dir.display()
        ));
    }
    let text = std::fs::read_to_string(&canonical)
        .map_err(|e| format!("entities file `{}`: {e}", canonical.display()))?;
    Entities::from_json_str(&text, schema)
        .map_err(|e| format!("entities `{file}`: {}", error_chain(&e)))
}
