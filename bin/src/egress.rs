//! `tregov serve` and `tregov egress ...`: the HTTP API and its command-line client. The CLI
//! goes through the API like any web app, so identity is checked in one place.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use tregov_api::client::ApiClient;
use tregov_api::Api;
use tregov_collectors::aws::Aws;
use tregov_collectors::config::Config;
use tregov_engine::{EngineError, PolicyBundle, Result};

use crate::output::Format;

#[derive(Args, Debug)]
pub struct EgressArgs {
    /// The tregov API, e.g. `http://127.0.0.1:9465`. Default: `[api] listen` of the
    /// configuration.
    #[arg(long, env = "TREGOV_API", global = true)]
    pub api: Option<String>,
    /// Bearer token (an OIDC JWT from the TRE's identity provider).
    #[arg(long, env = "TREGOV_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: EgressCommand,
}

#[derive(Subcommand, Debug)]
pub enum EgressCommand {
    /// Submit the files in a workspace's egress store for review.
    Submit {
        /// The workspace id (its files are under `<workspace>/` in the egress-store bucket).
        #[arg(long)]
        workspace: String,
        /// Only these files (repeatable; relative to the workspace's prefix). Default: all.
        #[arg(long = "file")]
        files: Vec<String>,
        /// A note for the reviewers.
        #[arg(long)]
        note: Option<String>,
    },
    /// Requests you may see.
    List {
        /// Only `IN_REVIEW`, `APPROVED`, `REJECTED` or `WITHDRAWN`.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        workspace: Option<String>,
    },
    /// One request and its full history from the decision log.
    Show { id: String },
    /// Approve or reject the step you review.
    Review {
        id: String,
        #[arg(long, conflicts_with = "reject", required_unless_present = "reject")]
        approve: bool,
        #[arg(long)]
        reject: bool,
        /// Why (required to reject).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Take one download of an approved request: presigned URLs for its files.
    Download { id: String },
    /// Take back a request still in review (the requester, or an IT admin).
    Withdraw {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

/// `tregov serve`: the API alone, without governing.
pub fn serve_command(
    config_path: &Path,
    data_dir: &Path,
    bundle: PolicyBundle,
) -> Result<ExitCode> {
    let config = Config::load(config_path)?;
    let api_config = config.api.clone().ok_or_else(|| {
        EngineError::Request(format!(
            "`{}` has no `[api]` section: nothing to serve",
            config_path.display()
        ))
    })?;
    crate::collect::runtime()?.block_on(async {
        let aws = Aws::load(&config).await;
        let api = Api::build(&config, data_dir, bundle, &aws)
            .await
            .map_err(EngineError::Request)?;
        let listener = bind(&api_config.listen).await?;
        let bound = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        eprintln!("tregov: serving the API on http://{bound}");
        tracing::info!(api = %bound, "API started");
        let retry = Duration::from_secs(config.daemon.poll_seconds.max(1));
        api.serve(listener, retry, shutdown_signal())
            .await
            .map_err(EngineError::Request)?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Starts the API inside the daemon, when `[api]` is configured.
pub async fn spawn_in_daemon(
    config: &Config,
    data_dir: &Path,
    bundle: PolicyBundle,
    aws: &Aws,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Option<Arc<Api>>> {
    let Some(api_config) = &config.api else {
        return Ok(None);
    };
    let api = Api::build(config, data_dir, bundle, aws)
        .await
        .map_err(EngineError::Request)?;
    let listener = bind(&api_config.listen).await?;
    let bound = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    eprintln!("tregov daemon: serving the API on http://{bound}");
    let retry = Duration::from_secs(config.daemon.poll_seconds.max(1));
    let server = api.clone();
    tokio::spawn(async move {
        if let Err(e) = server.serve(listener, retry, shutdown).await {
            tracing::error!(error = %e, "API server stopped");
        }
    });
    Ok(Some(api))
}

async fn bind(listen: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| EngineError::Request(format!("cannot listen on `{listen}`: {e}")))
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping the API");
}

/// `tregov egress ...`.
pub fn egress_command(output: Format, config_path: &Path, args: EgressArgs) -> Result<ExitCode> {
    let base = match args.api {
        Some(api) => api,
        None => {
            let config = Config::load(config_path)?;
            let listen = config.api.map(|a| a.listen).ok_or_else(|| {
                EngineError::Request(
                    "no API address: pass `--api URL`, set `TREGOV_API`, or configure `[api] listen`"
                        .into(),
                )
            })?;
            format!("http://{listen}")
        }
    };
    let token = args.token.filter(|t| !t.trim().is_empty()).ok_or_else(|| {
        EngineError::Request("no token: pass `--token` or set `TREGOV_TOKEN`".into())
    })?;
    let client = ApiClient::new(&base, &token);
    let (method, path, body) = match &args.command {
        EgressCommand::Submit {
            workspace,
            files,
            note,
        } => {
            let mut body = json!({"workspace": workspace});
            if !files.is_empty() {
                body["files"] = json!(files);
            }
            if let Some(note) = note {
                body["note"] = json!(note);
            }
            ("POST", "/v1/egress/requests".to_string(), Some(body))
        }
        EgressCommand::List { status, workspace } => {
            let mut query = Vec::new();
            if let Some(s) = status {
                query.push(format!("status={}", encode(s)));
            }
            if let Some(w) = workspace {
                query.push(format!("workspace={}", encode(w)));
            }
            let q = if query.is_empty() {
                String::new()
            } else {
                format!("?{}", query.join("&"))
            };
            ("GET", format!("/v1/egress/requests{q}"), None)
        }
        EgressCommand::Show { id } => (
            "GET",
            format!("/v1/egress/requests/{}/history", encode(id)),
            None,
        ),
        EgressCommand::Review {
            id,
            approve,
            reject: _,
            reason,
        } => (
            "POST",
            format!("/v1/egress/requests/{}/reviews", encode(id)),
            Some(
                json!({"decision": if *approve { "approve" } else { "reject" }, "reason": reason}),
            ),
        ),
        EgressCommand::Withdraw { id, reason } => (
            "POST",
            format!("/v1/egress/requests/{}/withdraw", encode(id)),
            Some(json!({"reason": reason})),
        ),
        EgressCommand::Download { id } => (
            "POST",
            format!("/v1/egress/requests/{}/downloads", encode(id)),
            None,
        ),
    };
    let (status, answer) = crate::collect::runtime()?
        .block_on(client.call(method, &path, body.as_ref()))
        .map_err(EngineError::Request)?;
    if !(200..300).contains(&status) {
        let message = answer
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| answer.to_string());
        match output {
            Format::Json => println!("{}", json!({"status": status, "answer": answer})),
            Format::Text => eprintln!("tregov: HTTP {status}: {message}"),
        }
        return Ok(ExitCode::from(match status {
            401 | 403 => 2,
            400 | 404 | 409 | 422 => 3,
            _ => 1,
        }));
    }
    match output {
        Format::Json => println!("{answer}"),
        Format::Text => print_text(&args.command, &answer),
    }
    Ok(ExitCode::SUCCESS)
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A string field (or, for a `/`-path, a nested one), `-` when absent.
fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    let found = if field.starts_with('/') {
        v.pointer(field)
    } else {
        v.get(field)
    };
    found.and_then(Value::as_str).unwrap_or("-")
}

/// The elements of an array field (none when absent).
fn list<'a>(v: &'a Value, field: &str) -> impl Iterator<Item = &'a Value> {
    v.get(field).and_then(Value::as_array).into_iter().flatten()
}

fn summary(r: &Value) -> String {
    let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
    let pending = r
        .get("pending")
        .and_then(Value::as_str)
        .map(|p| format!(" (pending: {p})"))
        .unwrap_or_default();
    let step = match s("status").as_str() {
        "IN_REVIEW" => {
            let idx = r.get("currentStep").and_then(Value::as_u64).unwrap_or(1) as usize;
            let role = r
                .pointer(&format!("/steps/{}", idx.saturating_sub(1)))
                .and_then(Value::as_str)
                .unwrap_or("-");
            format!(" step {idx} ({role})")
        }
        _ => String::new(),
    };
    format!(
        "{}  v{}  {}{step}{pending}  workspace {}  requester {}  {} file(s)  downloads {}/{}",
        s("id"),
        r.get("version").and_then(Value::as_i64).unwrap_or(1),
        s("status"),
        s("workspace"),
        s("requester"),
        r.get("objects")
            .and_then(Value::as_array)
            .map_or(0, Vec::len),
        r.get("downloadCount").and_then(Value::as_i64).unwrap_or(0),
        r.get("downloadLimit").and_then(Value::as_i64).unwrap_or(0),
    )
}

fn print_text(command: &EgressCommand, answer: &Value) {
    match command {
        EgressCommand::List { .. } => {
            let list = answer
                .get("requests")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if list.is_empty() {
                println!("no egress requests");
            }
            for r in &list {
                println!("{}", summary(r));
            }
        }
        EgressCommand::Show { .. } => {
            let request = answer.get("request").cloned().unwrap_or(Value::Null);
            println!("{}", summary(&request));
            for o in list(&request, "objects") {
                println!(
                    "  file {}  version {}  {} bytes",
                    text(o, "key"),
                    text(o, "versionId"),
                    o.get("size").and_then(Value::as_i64).unwrap_or(0)
                );
            }
            println!("history (decision log):");
            for h in list(answer, "history") {
                let seq = h.get("seq").and_then(Value::as_u64).unwrap_or(0);
                let time = text(h, "time");
                match h.get("kind").and_then(Value::as_str) {
                    Some("decision") => println!(
                        "  #{seq} {time}  decision {} {} by {}: {} ({})",
                        text(h, "/request/action"),
                        text(h, "/request/resource"),
                        text(h, "/request/principal"),
                        text(h, "decision"),
                        h.get("reasons")
                            .and_then(Value::as_array)
                            .map(|r| r
                                .iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(", "))
                            .filter(|r| !r.is_empty())
                            .unwrap_or_else(|| "no policy permits it".into())
                    ),
                    _ => println!(
                        "  #{seq} {time}  {} by {} -> {}{}",
                        text(h, "event"),
                        text(h, "actor"),
                        text(h, "status"),
                        h.get("reason")
                            .and_then(Value::as_str)
                            .map(|r| format!("  reason: {r}"))
                            .unwrap_or_default()
                    ),
                }
            }
        }
        EgressCommand::Download { .. } => {
            println!(
                "download {} of request {} ({} left); URLs expire in {} s:",
                answer.get("download").and_then(Value::as_i64).unwrap_or(0),
                text(answer, "request"),
                answer
                    .get("downloadsLeft")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
                answer
                    .get("expiresInSeconds")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
            );
            for f in list(answer, "files") {
                println!("  {}\n    {}", text(f, "key"), text(f, "url"));
            }
        }
        _ => println!("{}", summary(answer)),
    }
}
