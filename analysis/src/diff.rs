//! `policy diff`: for every request signature of the schema (principal type, action,
//! resource type), whether a new policy set allows exactly what the old one does, more, less,
//! or both more and less, proved by the solver, each difference with a request that shows it.

use std::collections::BTreeSet;

use cedar_policy::{PolicySet, RequestEnv, Schema};
use cedar_policy_symcc::{solver::LocalSolver, CedarSymCompiler, CompiledPolicySet, Env};
use serde::Serialize;
use tregov_engine::PolicyBundle;

use crate::counterexample::{Counterexample, Decided};
use crate::AnalysisError;

/// How a signature's allowed requests changed from the old set to the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Equivalent,
    /// The new set allows everything the old one did, and more.
    MorePermissive,
    /// The new set allows only what the old one did, and not all of it.
    LessPermissive,
    /// Each allows something the other does not.
    Incomparable,
    /// The signature is gone from the new schema.
    Removed,
}

impl Verdict {
    /// Whether the new set allows some request the old one denied.
    pub fn widens(self) -> bool {
        matches!(self, Verdict::MorePermissive | Verdict::Incomparable)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Equivalent => "equivalent",
            Verdict::MorePermissive => "more permissive",
            Verdict::LessPermissive => "less permissive",
            Verdict::Incomparable => "incomparable",
            Verdict::Removed => "removed",
        }
    }
}

/// A request the two sets decide differently, with both decisions as Cedar makes them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Example {
    pub request: Counterexample,
    pub from: Decided,
    pub to: Decided,
    /// The request and entities in Cedar's own words.
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureDiff {
    pub principal_type: String,
    pub action: String,
    pub resource_type: String,
    pub verdict: Verdict,
    /// Allowed by the new set, denied by the old.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub widened: Option<Example>,
    /// Allowed by the old set, denied by the new.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub narrowed: Option<Example>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDiff {
    pub from_version: String,
    pub to_version: String,
    pub signatures: Vec<SignatureDiff>,
}

impl PolicyDiff {
    /// Whether the new set allows anything the old one does not.
    pub fn widens(&self) -> bool {
        self.signatures.iter().any(|s| s.verdict.widens())
    }

    /// The actions for which the new set allows something new.
    pub fn widened_actions(&self) -> BTreeSet<String> {
        self.signatures
            .iter()
            .filter(|s| s.verdict.widens())
            .map(|s| s.action.clone())
            .collect()
    }

    pub fn changed(&self) -> impl Iterator<Item = &SignatureDiff> {
        self.signatures
            .iter()
            .filter(|s| s.verdict != Verdict::Equivalent)
    }
}

/// Compares `from` with `to` over every request signature of `to`'s schema (and names the
/// signatures only `from`'s schema has). Both sets are compiled against `to`'s schema: an
/// old set that does not validate under it cannot be compared, and says so.
pub async fn diff(
    from: &PolicyBundle,
    to: &PolicyBundle,
    solver: LocalSolver,
) -> Result<PolicyDiff, AnalysisError> {
    let schema = to.schema.as_ref().ok_or(AnalysisError::NoSchema)?;
    let mut compiler = CedarSymCompiler::new(solver)?;
    let mut signatures = Vec::new();
    // The schema's signatures come in no fixed order: sorted, the report reads the same
    // every time.
    let mut envs: Vec<RequestEnv> = schema.request_envs().collect();
    envs.sort_by_key(signature_key);
    for env in &envs {
        let old = from.policies_for(env.action());
        let new = to.policies_for(env.action());
        let verdict_and_examples = if same_policies(old, new) {
            (Verdict::Equivalent, None, None)
        } else {
            compare(&mut compiler, old, new, env, schema).await?
        };
        let (verdict, widened, narrowed) = verdict_and_examples;
        signatures.push(SignatureDiff {
            principal_type: env.principal().to_string(),
            action: env.action().to_string(),
            resource_type: env.resource().to_string(),
            verdict,
            widened,
            narrowed,
        });
    }
    signatures.extend(removed_signatures(from, &envs));
    Ok(PolicyDiff {
        from_version: from.version.clone(),
        to_version: to.version.clone(),
        signatures,
    })
}

type Compared = (Verdict, Option<Example>, Option<Example>);

async fn compare(
    compiler: &mut CedarSymCompiler<LocalSolver>,
    old: &PolicySet,
    new: &PolicySet,
    env: &RequestEnv,
    schema: &Schema,
) -> Result<Compared, AnalysisError> {
    let compile = |set: &PolicySet, which: &'static str| {
        CompiledPolicySet::compile(set, env, schema).map_err(|e| AnalysisError::Compile {
            which,
            action: env.action().to_string(),
            message: e.to_string(),
        })
    };
    let old_compiled = compile(old, "old")?;
    let new_compiled = compile(new, "new")?;
    let widened = compiler
        .check_implies_with_counterexample_opt(&new_compiled, &old_compiled)
        .await?
        .map(|cex| example(&cex, old, new));
    let narrowed = compiler
        .check_implies_with_counterexample_opt(&old_compiled, &new_compiled)
        .await?
        .map(|cex| example(&cex, old, new));
    let verdict = match (&widened, &narrowed) {
        (None, None) => Verdict::Equivalent,
        (Some(_), None) => Verdict::MorePermissive,
        (None, Some(_)) => Verdict::LessPermissive,
        (Some(_), Some(_)) => Verdict::Incomparable,
    };
    Ok((verdict, widened, narrowed))
}

fn example(cex: &Env, old: &PolicySet, new: &PolicySet) -> Example {
    let request = Counterexample::from_env(cex);
    Example {
        text: request.describe(),
        request,
        from: Counterexample::decided_by(cex, old),
        to: Counterexample::decided_by(cex, new),
    }
}

/// Two slices with the same policy texts decide alike: no solver needed (the daemon's
/// reloads usually change one file, so most signatures take this path).
fn same_policies(a: &PolicySet, b: &PolicySet) -> bool {
    // A link is its template's text and the values it links: two links of one template
    // read alike as text.
    let texts = |set: &PolicySet| -> Vec<String> {
        let mut t: Vec<String> = set
            .policies()
            .map(|p| {
                let mut links: Vec<String> = p
                    .template_links()
                    .unwrap_or_default()
                    .iter()
                    .map(|(slot, uid)| format!("{slot}={uid}"))
                    .collect();
                links.sort();
                format!("{p}\n{}", links.join(","))
            })
            .collect();
        t.sort();
        t
    };
    texts(a) == texts(b)
}

/// (action, principal type, resource type): how signatures are ordered and compared.
pub(crate) fn signature_key(e: &RequestEnv) -> (String, String, String) {
    (
        e.action().to_string(),
        e.principal().to_string(),
        e.resource().to_string(),
    )
}

fn removed_signatures(from: &PolicyBundle, kept: &[RequestEnv]) -> Vec<SignatureDiff> {
    let Some(old_schema) = from.schema.as_ref() else {
        return Vec::new();
    };
    let kept: BTreeSet<_> = kept.iter().map(signature_key).collect();
    let mut removed: Vec<_> = old_schema
        .request_envs()
        .map(|e| signature_key(&e))
        .filter(|k| !kept.contains(k))
        .collect();
    removed.sort();
    removed
        .into_iter()
        .map(|(action, principal_type, resource_type)| SignatureDiff {
            principal_type,
            action,
            resource_type,
            verdict: Verdict::Removed,
            widened: None,
            narrowed: None,
        })
        .collect()
}
