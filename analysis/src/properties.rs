//! `policy check`: properties a policy set must keep, proved for every request signature
//! they speak about, each failure with a counterexample.
//!
//! A property is a Cedar policy in `properties/` beside the policies, validated against the
//! same schema, named by `@id`, described by `@description`, and of one kind, given by
//! `@property`:
//! - `never_allowed`: no request this policy permits is allowed by the policy set
//!   (`permit(principal is Tre::User, action, resource) when { !principal.active };`);
//! - `always_allowed`: every request this policy permits is allowed by the set;
//! - `never_errors`: no policy of the set errors on a valid request whose action this
//!   policy's scope covers (write `permit(principal, action, resource);` for all).

use std::path::Path;

use cedar_policy::{PolicySet, RequestEnv, Schema};
use cedar_policy_symcc::{
    solver::LocalSolver, CedarSymCompiler, CompiledPolicy, CompiledPolicySet, Env,
};
use serde::Serialize;
use tregov_engine::policies::{read_source, PolicySource};
use tregov_engine::PolicyBundle;

use crate::counterexample::{Counterexample, Decided};
use crate::AnalysisError;

pub use tregov_engine::policies::POLICY_PROPERTIES_DIR as PROPERTIES_DIR;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    NeverAllowed,
    AlwaysAllowed,
    NeverErrors,
}

impl Kind {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "never_allowed" => Some(Kind::NeverAllowed),
            "always_allowed" => Some(Kind::AlwaysAllowed),
            "never_errors" => Some(Kind::NeverErrors),
            _ => None,
        }
    }
}

/// One property's result.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyResult {
    pub id: String,
    pub kind: Kind,
    pub description: String,
    pub file: String,
    pub line: usize,
    pub holds: bool,
    /// How many request signatures the property was proved over.
    pub signatures: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counterexample: Option<Violation>,
}

/// A request that breaks a property, with the set's decision on it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    pub request: Counterexample,
    pub decided: Decided,
    /// For `never_errors`: the policy that errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    pub text: String,
}

/// Reads every `.cedar` file under `dir` (sorted); none is an error, as a `check` that
/// proves nothing must not pass.
pub fn read_properties(dir: &Path) -> Result<Vec<PolicySource>, AnalysisError> {
    let entries = std::fs::read_dir(dir).map_err(|e| AnalysisError::Properties {
        message: format!("cannot read `{}`: {e}", dir.display()),
    })?;
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(AnalysisError::Properties {
            message: format!("no `.cedar` property files in `{}`", dir.display()),
        });
    }
    paths
        .iter()
        .map(|p| read_source(p).map_err(AnalysisError::from))
        .collect()
}

/// Proves every property over `bundle`.
pub async fn check(
    bundle: &PolicyBundle,
    properties: Vec<PolicySource>,
    solver: LocalSolver,
) -> Result<Vec<PropertyResult>, AnalysisError> {
    let schema = bundle.schema.as_ref().ok_or(AnalysisError::NoSchema)?;
    let props = PolicyBundle::from_sources(bundle.schema_source.clone(), properties)?;
    let mut compiler = CedarSymCompiler::new(solver)?;
    let mut envs: Vec<RequestEnv> = schema.request_envs().collect();
    envs.sort_by_key(crate::diff::signature_key);
    let mut results = Vec::new();
    for (id, meta) in &props.meta {
        let kind = meta
            .annotations
            .get("property")
            .and_then(|k| Kind::parse(k))
            .ok_or_else(|| AnalysisError::Properties {
                message: format!(
                    "{}:{}: property `{id}` needs `@property(\"never_allowed\" | \"always_allowed\" | \"never_errors\")`",
                    meta.file, meta.line
                ),
            })?;
        let property = single(&props, id)?;
        let mut result = PropertyResult {
            id: id.clone(),
            kind,
            description: meta
                .annotations
                .get("description")
                .cloned()
                .unwrap_or_default(),
            file: meta.file.clone(),
            line: meta.line,
            holds: true,
            signatures: 0,
            counterexample: None,
        };
        for env in &envs {
            if props
                .policies_for(env.action())
                .policy(&policy_id(id))
                .is_none()
            {
                continue;
            }
            result.signatures += 1;
            let set = bundle.policies_for(env.action());
            let found = prove(&mut compiler, kind, &property, set, env, schema).await?;
            if let Some(violation) = found {
                result.holds = false;
                result.counterexample = Some(violation);
                break;
            }
        }
        results.push(result);
    }
    Ok(results)
}

fn policy_id(id: &str) -> cedar_policy::PolicyId {
    cedar_policy::PolicyId::new(id)
}

fn single(props: &PolicyBundle, id: &str) -> Result<PolicySet, AnalysisError> {
    let mut set = PolicySet::new();
    if let Some(p) = props.set.policy(&policy_id(id)) {
        set.add(p.clone()).map_err(|e| AnalysisError::Properties {
            message: e.to_string(),
        })?;
    }
    Ok(set)
}

async fn prove(
    compiler: &mut CedarSymCompiler<LocalSolver>,
    kind: Kind,
    property: &PolicySet,
    set: &PolicySet,
    env: &RequestEnv,
    schema: &Schema,
) -> Result<Option<Violation>, AnalysisError> {
    let compile = |s: &PolicySet, which: &'static str| {
        CompiledPolicySet::compile(s, env, schema).map_err(|e| AnalysisError::Compile {
            which,
            action: env.action().to_string(),
            message: e.to_string(),
        })
    };
    let violation = |cex: Env, policy: Option<String>| {
        let request = Counterexample::from_env(&cex);
        Violation {
            text: request.describe(),
            decided: Counterexample::decided_by(&cex, set),
            request,
            policy,
        }
    };
    match kind {
        Kind::NeverAllowed => {
            let (p, s) = (compile(property, "property")?, compile(set, "policies")?);
            Ok(compiler
                .check_disjoint_with_counterexample_opt(&p, &s)
                .await?
                .map(|cex| violation(cex, None)))
        }
        Kind::AlwaysAllowed => {
            let (p, s) = (compile(property, "property")?, compile(set, "policies")?);
            Ok(compiler
                .check_implies_with_counterexample_opt(&p, &s)
                .await?
                .map(|cex| violation(cex, None)))
        }
        Kind::NeverErrors => {
            for policy in set.policies() {
                let compiled = CompiledPolicy::compile(policy, env, schema).map_err(|e| {
                    AnalysisError::Compile {
                        which: "policies",
                        action: env.action().to_string(),
                        message: e.to_string(),
                    }
                })?;
                if let Some(cex) = compiler
                    .check_never_errors_with_counterexample_opt(&compiled)
                    .await?
                {
                    return Ok(Some(violation(cex, Some(policy.id().to_string()))));
                }
            }
            Ok(None)
        }
    }
}
