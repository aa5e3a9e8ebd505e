//! `access who|of`: the access report over the store, at the governance clock, with the
//! deployment facts of the configuration when there is one; `exemptions`: the exemptions
//! the store holds, and granting one through the API; `review`: campaigns.

use std::path::Path;
use std::process::ExitCode;

use tregov_config::Config;
use tregov_engine::entities::{parse_uid, uid_from_parts};
use tregov_engine::plan::{access_report_now, PlanSettings, Scope};
use tregov_engine::{Engine, PolicyBundle, Result};
use tregov_render::access::{access_csv, access_text};

use crate::args::{AccessCommand, ExemptionsCommand, LinksCommand, ReportFormat, ReviewCommand};
use crate::output::{print_json, Format};

pub fn access_command(
    output: Format,
    config_path: &Path,
    data_dir: &Path,
    bundle: PolicyBundle,
    command: AccessCommand,
) -> Result<ExitCode> {
    let (scope, title, format) = match command {
        AccessCommand::Who { dataset, report } => {
            let uid = named("Tre::Dataset", &dataset)?;
            let title = format!("who may reach `{}`", uid.id().unescaped());
            (Scope::Dataset(uid), title, report.format)
        }
        AccessCommand::Of { user, report } => {
            let uid = named("Tre::User", &user)?;
            let title = format!("what `{}` may reach", uid.id().unescaped());
            (Scope::User(uid), title, report.format)
        }
    };
    let mut engine = Engine::open(data_dir, bundle)?;
    engine.refresh()?;
    let settings = match config_path.exists() {
        true => Config::load(config_path)?.plan_settings(""),
        false => PlanSettings::default(),
    };
    let report = access_report_now(&engine, settings, &scope)?;
    let format = format.unwrap_or(match output {
        Format::Text => ReportFormat::Text,
        Format::Json => ReportFormat::Json,
    });
    match format {
        ReportFormat::Text => print!("{}", access_text(&report, &title)),
        ReportFormat::Json => print_json(&serde_json::to_value(&report).unwrap_or_default()),
        ReportFormat::Csv => print!("{}", access_csv(&report)),
    }
    Ok(ExitCode::SUCCESS)
}

/// An id of `type_name`, or a whole uid.
fn named(type_name: &str, text: &str) -> Result<cedar_policy::EntityUid> {
    match text.contains("::") {
        true => parse_uid(text),
        false => uid_from_parts(type_name, text),
    }
}

pub fn exemptions_command(
    output: Format,
    config_path: &Path,
    data_dir: &Path,
    bundle: PolicyBundle,
    command: Option<ExemptionsCommand>,
) -> Result<ExitCode> {
    match command.unwrap_or(ExemptionsCommand::List) {
        ExemptionsCommand::List => {
            let mut engine = Engine::open(data_dir, bundle)?;
            engine.refresh()?;
            let now = tregov_engine::clock::wall_ms(std::time::SystemTime::now());
            for (_, e) in tregov_engine::exemptions::stored(&engine) {
                match output {
                    Format::Json => println!("{}", serde_json::json!(e)),
                    Format::Text => println!(
                        "{}: `{}` on `{}` from `{}` until {}{} (by {}: {})",
                        e.id,
                        e.user,
                        e.dataset,
                        e.policy,
                        e.expires,
                        if e.expires_ms <= now { ", ended" } else { "" },
                        e.granted_by,
                        e.reason
                    ),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ExemptionsCommand::Grant {
            user,
            dataset,
            policy,
            until,
            reason,
            api,
        } => {
            let client = api.client(config_path)?;
            let body = serde_json::json!({
                "user": user, "dataset": dataset, "policy": policy, "until": until, "reason": reason,
            });
            match crate::egress::call(output, &client, "POST", "/v1/exemptions", Some(&body))? {
                Ok(answer) if output == Format::Json => println!("{answer}"),
                Ok(answer) => println!(
                    "granted: `{}` until {}",
                    answer["id"].as_str().unwrap_or("?"),
                    answer["expires"].as_str().unwrap_or("?")
                ),
                Err(refused) => return Ok(refused),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn links_command(
    output: Format,
    config_path: &Path,
    data_dir: &Path,
    bundle: PolicyBundle,
    command: Option<LinksCommand>,
) -> Result<ExitCode> {
    let (api, verb, path, body) = match command.unwrap_or(LinksCommand::List) {
        LinksCommand::List => {
            let engine = Engine::open(data_dir, bundle)?;
            for s in tregov_engine::policy_links::stored(engine.graph()) {
                match output {
                    Format::Json => println!("{}", serde_json::json!(s)),
                    Format::Text => println!(
                        "{}: template `{}` with {} (by {})",
                        s.link.link_id,
                        s.link.template_id,
                        s.link
                            .args
                            .iter()
                            .map(|(slot, uid)| format!("{slot} = {uid}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        s.created_by
                    ),
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        LinksCommand::Add {
            template,
            dataset,
            user,
            api,
        } => {
            let body = serde_json::json!({"template": template, "dataset": dataset, "user": user});
            (api, "POST", "/v1/policy-links".to_string(), Some(body))
        }
        LinksCommand::Remove { id, api } => (api, "DELETE", format!("/v1/policy-links/{id}"), None),
    };
    let client = api.client(config_path)?;
    match crate::egress::call(output, &client, verb, &path, body.as_ref())? {
        Ok(answer) if output == Format::Json => println!("{answer}"),
        Ok(answer) => println!(
            "{}",
            answer["link_id"]
                .as_str()
                .map(|id| format!("linked: `{id}`"))
                .or_else(|| answer["removed"]
                    .as_str()
                    .map(|id| format!("removed: `{id}`")))
                .unwrap_or_else(|| answer.to_string())
        ),
        Err(refused) => return Ok(refused),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn review_command(
    output: Format,
    config_path: &Path,
    data_dir: &Path,
    bundle: PolicyBundle,
    command: ReviewCommand,
) -> Result<ExitCode> {
    let (api, path, body) = match command {
        ReviewCommand::Report { campaign } => {
            return review_report(output, data_dir, bundle, &campaign)
        }
        ReviewCommand::Start {
            scope,
            reviewers,
            due,
            default,
            api,
        } => (
            api,
            "/v1/reviews",
            serde_json::json!({"scope": scope, "reviewers": reviewers, "due": due, "defaultVerdict": default}),
        ),
        ReviewCommand::Attest { item, verdict, api } => (
            api,
            "/v1/reviews/attest",
            serde_json::json!({"item": item, "verdict": verdict}),
        ),
    };
    let client = api.client(config_path)?;
    match crate::egress::call(output, &client, "POST", path, Some(&body))? {
        Ok(answer) if output == Format::Json => println!("{answer}"),
        Ok(answer) if answer.get("items").is_some() => {
            println!(
                "started `{}`, due {}:",
                answer["id"].as_str().unwrap_or("?"),
                answer["due"].as_str().unwrap_or("?")
            );
            for item in answer["items"].as_array().into_iter().flatten() {
                println!("  {}", item["id"].as_str().unwrap_or("?"));
            }
        }
        Ok(answer) => println!(
            "{}: `{}` (by {})",
            answer["verdict"].as_str().unwrap_or("?"),
            answer["id"].as_str().unwrap_or("?"),
            answer["attested_by"].as_str().unwrap_or("?")
        ),
        Err(refused) => return Ok(refused),
    }
    Ok(ExitCode::SUCCESS)
}

fn review_report(
    output: Format,
    data_dir: &Path,
    bundle: PolicyBundle,
    campaign: &str,
) -> Result<ExitCode> {
    let mut engine = Engine::open_existing(data_dir, bundle)?;
    engine.refresh()?;
    let (items, attestations) = tregov_engine::reviews::report(&engine, campaign)?;
    if output == Format::Json {
        print_json(&serde_json::json!({"items": items, "attestations": attestations}));
        return Ok(ExitCode::SUCCESS);
    }
    println!("campaign `{campaign}`: {} item(s)", items.len());
    for item in &items {
        println!(
            "  {} [{}] {} on `{}` ({})",
            item.id,
            item.verdict,
            item.user,
            item.dataset,
            item.actions.join(", ")
        );
    }
    for a in &attestations {
        println!(
            "  {} attested {} `{}` at {} (log record {})",
            a.reviewer, a.verdict, a.item, a.time, a.log_seq
        );
    }
    Ok(ExitCode::SUCCESS)
}
