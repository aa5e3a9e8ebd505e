//! Rendering results for people (`--output text`) and programs (`--output json`).

use serde_json::{json, Value};
use tregov_engine::decide::DecisionOutcome;
use tregov_engine::explain::{Explanation, PolicyExplanation};
use tregov_engine::PolicyBundle;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TREGOV_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// The JSON every decision command prints: `decision`, `reasons`, `errors`, and extras.
pub fn decision_json(outcome: &DecisionOutcome, bundle: &PolicyBundle) -> Value {
    json!({
        "decision": outcome.decision.to_string(),
        "reasons": outcome.reasons,
        "errors": outcome.errors,
        "policySetVersion": outcome.policy_version,
        "determining": outcome.determining(bundle),
        "logSeq": outcome.log_seq,
    })
}

pub fn print_decision_text(outcome: &DecisionOutcome, bundle: &PolicyBundle) {
    println!("decision: {}", outcome.decision);
    for m in outcome.determining(bundle) {
        println!(
            "  {} `{}` ({}:{})",
            if m.effect == "forbid" {
                "forbidden by"
            } else {
                "permitted by"
            },
            m.id,
            short_path(&m.file),
            m.line
        );
    }
    if outcome.decision == tregov_engine::Decision::Deny && outcome.reasons.is_empty() {
        println!("  no permit applied");
    }
    for e in &outcome.errors {
        println!("  error in `{}`: {}", e.policy, e.message);
    }
    println!("policy set: {}", &outcome.policy_version);
    if let Some(seq) = outcome.log_seq {
        println!("logged as record {seq}");
    }
}

pub fn explanation_json(
    outcome: &DecisionOutcome,
    expl: &Explanation,
    bundle: &PolicyBundle,
) -> Value {
    let mut v = decision_json(outcome, bundle);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("summary".into(), json!(expl.summary));
        obj.insert("permits".into(), json!(expl.permits));
        obj.insert("forbids".into(), json!(expl.forbids));
    }
    v
}

pub fn print_explanation_text(outcome: &DecisionOutcome, expl: &Explanation) {
    println!("decision: {}", outcome.decision);
    println!("{}", expl.summary);
    for e in &outcome.errors {
        println!("  error in `{}`: {}", e.policy, e.message);
    }
    let section = |title: &str, list: &[PolicyExplanation]| {
        if list.is_empty() {
            return;
        }
        println!();
        println!("{title}:");
        for p in list {
            let status = if p.applied {
                "applied"
            } else if p.error.is_some() {
                "errored"
            } else {
                "did not apply"
            };
            println!(
                "  {} `{}` ({}:{}) {status}",
                if p.applied { "●" } else { "○" },
                p.id,
                short_path(&p.file),
                p.line
            );
            if let Some(d) = &p.description {
                println!("      {d}");
            }
            for c in &p.failed_conditions {
                println!("      - {}", c.needed);
                for o in &c.operands {
                    println!("          {} = {}", o.expression, o.value);
                }
            }
        }
    };
    section("permits in scope", &expl.permits);
    section("forbids in scope", &expl.forbids);
    println!();
    println!("policy set: {}", outcome.policy_version);
    if let Some(seq) = outcome.log_seq {
        println!("logged as record {seq}");
    }
}

/// Policy files are shown relative to the current directory when they are below it.
pub fn short_path(p: &str) -> String {
    if let Ok(cwd) = std::env::current_dir() {
        if let Ok(rel) = std::path::Path::new(p).strip_prefix(&cwd) {
            return rel.display().to_string();
        }
    }
    p.to_string()
}
