//! `breakglass`: the requests and grants the store holds, and the workflow's steps through
//! the API with the caller's token.

use std::path::Path;
use std::process::ExitCode;

use serde_json::{json, Value};
use tregov_engine::breakglass::{grants, requests};
use tregov_engine::{Engine, PolicyBundle, Result};

use crate::args::BreakglassCommand;
use crate::output::{print_json, Format};

pub fn breakglass_command(
    output: Format,
    config_path: &Path,
    data_dir: &Path,
    bundle: PolicyBundle,
    command: Option<BreakglassCommand>,
) -> Result<ExitCode> {
    let (api, path, body) = match command.unwrap_or(BreakglassCommand::List) {
        BreakglassCommand::List => return list(output, data_dir, bundle),
        BreakglassCommand::Request {
            project,
            reason,
            duration,
            api,
        } => (
            api,
            "/v1/breakglass",
            json!({"project": project, "reason": reason, "seconds": duration}),
        ),
        BreakglassCommand::Approve { request, api } => {
            (api, "/v1/breakglass/approve", json!({"request": request}))
        }
        BreakglassCommand::Revoke { grant, api } => {
            (api, "/v1/breakglass/revoke", json!({"grant": grant}))
        }
    };
    let client = api.client(config_path)?;
    match crate::egress::call(output, &client, "POST", path, Some(&body))? {
        Ok(answer) if output == Format::Json => println!("{answer}"),
        Ok(answer) => println!("{}", summary(&answer)),
        Err(refused) => return Ok(refused),
    }
    Ok(ExitCode::SUCCESS)
}

/// One line about a request or grant the API answered with.
fn summary(answer: &Value) -> String {
    let text = |k: &str| answer[k].as_str().unwrap_or("?").to_string();
    if let Some(by) = answer["revoked_by"].as_str() {
        return format!("revoked: `{}` (by {by})", text("id"));
    }
    if answer.get("expires_at").is_some() {
        return format!(
            "approved: `{}` for {} into {} until {}",
            text("id"),
            text("user"),
            text("project"),
            text("expires_at")
        );
    }
    format!(
        "requested: `{}` ({} s), waiting for a member of {}",
        text("id"),
        answer["seconds"],
        text("approvers")
    )
}

fn list(output: Format, data_dir: &Path, bundle: PolicyBundle) -> Result<ExitCode> {
    let mut engine = Engine::open(data_dir, bundle)?;
    engine.refresh()?;
    let graph = engine.graph();
    let requests = requests(graph);
    let grants: Vec<_> = grants(graph).into_iter().map(|(_, g)| g).collect();
    if output == Format::Json {
        print_json(&json!({"requests": requests, "grants": grants}));
        return Ok(ExitCode::SUCCESS);
    }
    let now = tregov_engine::clock::wall_ms(std::time::SystemTime::now());
    for r in &requests {
        let grant = grants.iter().find(|g| g.id == r.id);
        let state = match grant {
            None => "waiting for approval".to_string(),
            Some(g) if g.revoked_by.is_some() => format!(
                "approved by {}, revoked by {}",
                g.approved_by,
                g.revoked_by.as_deref().unwrap_or("?")
            ),
            Some(g) if g.stands_at(now) => {
                format!("approved by {}, until {}", g.approved_by, g.expires_at)
            }
            Some(g) => format!("approved by {}, ended {}", g.approved_by, g.expires_at),
        };
        println!(
            "{}: {} into {} for {} s ({}): {state}",
            r.id, r.user, r.project, r.seconds, r.reason
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `90m`, `2h`, `3600s` or `3600`: seconds.
pub fn parse_seconds(text: &str) -> std::result::Result<u64, String> {
    let (number, unit) = match text.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => (&text[..at], c),
        _ => (text, 's'),
    };
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        _ => return Err(format!("`{text}`: the unit is `s`, `m` or `h`")),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{text}` is not a duration like `90m`, `2h` or `3600`"))
}

#[cfg(test)]
mod tests {
    use super::parse_seconds;

    #[test]
    fn durations_read_in_seconds_minutes_and_hours() {
        assert_eq!(parse_seconds("3600"), Ok(3600));
        assert_eq!(parse_seconds("90m"), Ok(5400));
        assert_eq!(parse_seconds("2h"), Ok(7200));
        assert!(parse_seconds("2d").is_err());
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("h").is_err());
    }
}
