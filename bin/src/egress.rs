//! `tregov serve` and `tregov egress ...`: the HTTP API and its command-line client. The CLI
//! goes through the API like any web app, so identity is checked in one place.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use tregov_api::client::ApiClient;
use tregov_api::Api;
use tregov_config::aws::Aws;
use tregov_config::Config;
use tregov_engine::{EngineError, PolicyBundle, Result};

use tregov_render::egress::{answer_text, Answer};

use crate::output::Format;

/// Where the API is and who is calling it.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// The tregov API, e.g. `http://127.0.0.1:9465`. Default: `[api] listen` of the
    /// configuration.
    #[arg(long, env = "TREGOV_API", global = true)]
    pub api: Option<String>,
    /// Bearer token (an OIDC JWT from the TRE's identity provider).
    #[arg(long, env = "TREGOV_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

impl ApiArgs {
    /// A client for the API, with the caller's token.
    pub(crate) fn client(&self, config_path: &Path) -> Result<ApiClient> {
        let base = match &self.api {
            Some(api) => api.clone(),
            None => {
                let config = Config::load(config_path)?;
                let api = config.api.ok_or_else(|| {
                    EngineError::Request(
                        "no API address: pass `--api URL`, set `TREGOV_API`, or configure `[api] listen`"
                            .into(),
                    )
                })?;
                format!("{}://{}", api.scheme(), api.listen)
            }
        };
        let token = self
            .token
            .clone()
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| {
                EngineError::Request("no token: pass `--token` or set `TREGOV_TOKEN`".into())
            })?;
        Ok(ApiClient::new(&base, &token))
    }
}

#[derive(Args, Debug)]
pub struct EgressArgs {
    #[command(flatten)]
    pub api: ApiArgs,
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
    /// Try again the S3 work of a request that `FAILED` (IT admins).
    Retry {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// End a request that `FAILED`; its staged copies are removed (IT admins).
    Close {
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
    if config.api.is_none() {
        return Err(EngineError::Request(format!(
            "`{}` has no `[api]` section: nothing to serve",
            config_path.display()
        )));
    }
    crate::collect::runtime()?.block_on(async {
        let aws = Aws::load(&config).await;
        tokio::spawn(crate::anchor::run_anchorer(
            config.clone(),
            aws.clone(),
            data_dir.to_path_buf(),
        ));
        let shutdown = crate::govern::shutdown_signal();
        if let Some(served) = start_api(&config, data_dir, bundle, &aws, shutdown).await? {
            let _ = served.1.await;
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Starts the API, when `[api]` is configured, until `shutdown` resolves: the API (to share
/// reloaded policies with) and the task serving it.
pub async fn start_api(
    config: &Config,
    data_dir: &Path,
    bundle: PolicyBundle,
    aws: &Aws,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Option<(Arc<Api>, tokio::task::JoinHandle<()>)>> {
    let Some(api_config) = &config.api else {
        return Ok(None);
    };
    let api = Api::build(config, data_dir, bundle, aws)
        .await
        .map_err(EngineError::Request)?;
    let (listener, bound) = bind(&api_config.listen).await?;
    eprintln!("tregov: serving the API on {}://{bound}", api.scheme());
    tracing::info!(api = %bound, "API started");
    let server = api.clone();
    let retry = config
        .egress
        .as_ref()
        .map_or(config.daemon.poll(), |e| e.retry_every());
    let task = tokio::spawn(async move {
        if let Err(e) = server.serve(listener, retry, shutdown).await {
            tracing::error!(error = %e, "API server stopped");
        }
    });
    Ok(Some((api, task)))
}

/// A listener on `listen`, and the address it bound (a port `0` is chosen by the system).
async fn bind(listen: &str) -> Result<(tokio::net::TcpListener, String)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| EngineError::System(format!("cannot listen on `{listen}`: {e}")))?;
    let bound = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    Ok((listener, bound))
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listen` until the process ends; the
/// address it bound.
pub async fn serve_ops(
    listen: &str,
    metrics: Arc<tregov_engine::metrics::Metrics>,
) -> Result<String> {
    let (listener, bound) = bind(listen).await?;
    tokio::spawn(tregov_api::ops::serve(listener, metrics));
    Ok(bound)
}

/// `tregov egress ...`.
pub fn egress_command(output: Format, config_path: &Path, args: EgressArgs) -> Result<ExitCode> {
    let client = args.api.client(config_path)?;
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
        EgressCommand::Retry { id, reason } => (
            "POST",
            format!("/v1/egress/requests/{}/retry", encode(id)),
            Some(json!({"reason": reason})),
        ),
        EgressCommand::Close { id, reason } => (
            "POST",
            format!("/v1/egress/requests/{}/close", encode(id)),
            Some(json!({"reason": reason})),
        ),
        EgressCommand::Download { id } => (
            "POST",
            format!("/v1/egress/requests/{}/downloads", encode(id)),
            None,
        ),
    };
    let answer = match call(output, &client, method, &path, body.as_ref())? {
        Ok(answer) => answer,
        Err(code) => return Ok(code),
    };
    let kind = match &args.command {
        EgressCommand::List { .. } => Answer::List,
        EgressCommand::Show { .. } => Answer::Show,
        EgressCommand::Download { .. } => Answer::Download,
        _ => Answer::Request,
    };
    match output {
        Format::Json => println!("{answer}"),
        Format::Text => print!("{}", answer_text(kind, &answer)),
    }
    Ok(ExitCode::SUCCESS)
}

/// One API call. A refusal is printed here and comes back as its exit code: 2 refused
/// (401, 403), 3 the request was wrong (400, 404, 409, 422), 1 anything else.
pub(crate) fn call(
    output: Format,
    client: &ApiClient,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<std::result::Result<Value, ExitCode>> {
    let (status, answer) = crate::collect::runtime()?
        .block_on(client.call(method, path, body))
        .map_err(EngineError::System)?;
    if (200..300).contains(&status) {
        return Ok(Ok(answer));
    }
    let message = answer
        .get("error")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| answer.to_string());
    match output {
        Format::Json => println!("{}", json!({"status": status, "answer": answer})),
        Format::Text => eprintln!("tregov: HTTP {status}: {message}"),
    }
    Ok(Err(ExitCode::from(match status {
        401 | 403 => 2,
        400 | 404 | 409 | 422 => 3,
        _ => 1,
    })))
}

/// `tregov approve | reject ID...`: each through the API, as the token's subject.
pub fn decide_parked(
    output: Format,
    config_path: &Path,
    api: ApiArgs,
    ids: &[String],
    approve: bool,
    reason: Option<String>,
) -> Result<ExitCode> {
    let client = api.client(config_path)?;
    let verb = if approve { "approve" } else { "reject" };
    let mut code = ExitCode::SUCCESS;
    for id in ids {
        let path = format!("/v1/parked/{}/{verb}", encode(id));
        match call(
            output,
            &client,
            "POST",
            &path,
            Some(&json!({"reason": reason})),
        )? {
            Ok(answer) if output == Format::Json => println!("{answer}"),
            Ok(answer) => println!(
                "{}: `{id}` ({}, by {})",
                answer["status"].as_str().unwrap_or(verb),
                answer["kind"].as_str().unwrap_or("plan-item"),
                answer["decidedBy"].as_str().unwrap_or("?")
            ),
            Err(refused) => code = refused,
        }
    }
    Ok(code)
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
