//! `tregov policy diff` and `tregov policy check` as text: the verdict per request signature,
//! and for each difference or broken property the request that shows it.

use tregov_analysis::counterexample::Decided;
use tregov_analysis::diff::Example;
use tregov_analysis::{PolicyDiff, PropertyResult, Verdict};

use crate::{line, short_path, short_version};

pub fn diff_text(diff: &PolicyDiff) -> String {
    let mut out = String::new();
    let count = |v: Verdict| diff.signatures.iter().filter(|s| s.verdict == v).count();
    line!(
        out,
        "policy set {} -> {}: {} request signatures, {} equivalent, {} more permissive, {} less permissive, {} incomparable, {} removed",
        short_version(&diff.from_version),
        short_version(&diff.to_version),
        diff.signatures.len(),
        count(Verdict::Equivalent),
        count(Verdict::MorePermissive),
        count(Verdict::LessPermissive),
        count(Verdict::Incomparable),
        count(Verdict::Removed),
    );
    for sig in diff.changed() {
        line!(out);
        line!(
            out,
            "{}: principal {}, action {}, resource {}",
            sig.verdict.as_str(),
            sig.principal_type,
            sig.action,
            sig.resource_type
        );
        if let Some(example) = &sig.widened {
            line!(out, "  allowed now, denied before:");
            example_text(&mut out, example);
        }
        if let Some(example) = &sig.narrowed {
            line!(out, "  allowed before, denied now:");
            example_text(&mut out, example);
        }
    }
    out
}

fn example_text(out: &mut String, example: &Example) {
    for l in example.text.lines() {
        line!(out, "    {l}");
    }
    line!(out, "    before: {}", decided_text(&example.from));
    line!(out, "    now:    {}", decided_text(&example.to));
}

fn decided_text(d: &Decided) -> String {
    let mut s = d.decision.clone();
    if !d.reasons.is_empty() {
        s.push_str(&format!(" by {}", d.reasons.join(", ")));
    } else if d.decision == "deny" {
        s.push_str(" (no policy permits it)");
    }
    if !d.errors.is_empty() {
        s.push_str(&format!("; errors: {}", d.errors.join("; ")));
    }
    s
}

pub fn check_text(results: &[PropertyResult]) -> String {
    let mut out = String::new();
    for r in results {
        let verdict = if r.holds { "holds" } else { "FAILS" };
        line!(
            out,
            "{verdict}  {} ({}, {} signatures) {}:{}",
            r.id,
            serde_kind(r),
            r.signatures,
            short_path(&r.file),
            r.line
        );
        if !r.description.is_empty() {
            line!(out, "       {}", r.description);
        }
        if let Some(v) = &r.counterexample {
            if let Some(policy) = &v.policy {
                line!(out, "       policy `{policy}` errors on:");
            } else {
                line!(out, "       counterexample:");
            }
            for l in v.text.lines() {
                line!(out, "         {l}");
            }
            line!(
                out,
                "       the policies decide: {}",
                decided_text(&v.decided)
            );
        }
    }
    let failed = results.iter().filter(|r| !r.holds).count();
    line!(
        out,
        "{} properties hold, {failed} fail",
        results.len() - failed
    );
    out
}

fn serde_kind(r: &PropertyResult) -> String {
    serde_json::to_value(r.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
