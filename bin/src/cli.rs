//! Commands and their wiring to the engine.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use tregov_engine::decide::{outcome_from_response, DecisionOutcome, ParsedRequest};
use tregov_engine::entities::{entities_from_slice, parse_entities_file, parse_uid, EntityGraph};
use tregov_engine::explain::explain;
use tregov_engine::log::DecisionLog;
use tregov_engine::policies::{format_policies, read_policy_dir};
use tregov_engine::testfile;
use tregov_engine::{Decision, Engine, EngineError, PolicyBundle, RequestSpec, Result, StoreBatch};

use crate::output::{self, Format};

#[derive(Parser, Debug)]
#[command(
    name = "tregov",
    version,
    about = "Policy-as-code governance for Trusted Research Environments on AWS",
    long_about = "tregov decides who may do what in a Trusted Research Environment with Cedar \
                  policies, explains every decision, and keeps a tamper-evident record of them.\n\n\
                  Exit codes: 0 ok / allow, 2 deny, 3 invalid input, 1 any other failure."
)]
pub struct Cli {
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub output: Format,

    /// Directory of the entity store and decision log.
    #[arg(
        long,
        global = true,
        env = "TREGOV_DATA_DIR",
        default_value = ".tregov"
    )]
    pub data_dir: PathBuf,

    /// Policies directory (a schema and `.cedar` files). Default: `./policies` when it has a
    /// schema, else the policies built into tregov.
    #[arg(long, global = true, env = "TREGOV_POLICIES")]
    pub policies: Option<PathBuf>,

    /// The configuration file (see `examples/tregov.toml`).
    #[arg(
        long,
        global = true,
        env = "TREGOV_CONFIG",
        default_value = "tregov.toml"
    )]
    pub config: PathBuf,

    /// More log output on stderr (-v info, -vv debug); `TREGOV_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate the policies against the schema in strict mode.
    Validate,
    /// Format policy files with Cedar's formatter.
    Fmt {
        /// Report files that are not formatted instead of rewriting them.
        #[arg(long)]
        check: bool,
    },
    /// Run policy tests (Cedar integration-test JSON format).
    Test {
        /// Test files, or directories searched for them. Default: `policies/tests/`.
        paths: Vec<PathBuf>,
    },
    /// Decide a request.
    Authorize(DecideArgs),
    /// Decide a request and explain it: the policies that made it and what would have to
    /// change.
    Why {
        #[command(flatten)]
        args: DecideArgs,
        /// Re-evaluate the logged decision SEQ with its own policy version and entity slice.
        #[arg(long, value_name = "SEQ", conflicts_with_all = ["principal", "action", "resource", "context", "entities"])]
        replay: Option<u64>,
    },
    /// The entity store.
    #[command(subcommand)]
    Entities(EntitiesCommand),
    /// The decision log.
    #[command(subcommand)]
    Log(LogCommand),
    /// Load the default policies and a sample TRE into the store and explain a few decisions.
    Demo,
    /// The configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Collect AWS state (CloudTrail events) into the store.
    Collect {
        /// One pass, then exit (default: keep collecting every `--interval` seconds).
        #[arg(long)]
        once: bool,
        /// Seconds between passes.
        #[arg(long, default_value_t = 60)]
        interval: u64,
    },
    /// The collected CloudTrail events.
    #[command(subcommand)]
    Events(EventsCommand),
    /// What each collector did on its last run.
    Status,
    /// What would change in AWS to match the policies, each change with the decisions behind
    /// it. With `--policies NEW_DIR`: the impact of a proposed policy change.
    Plan,
    /// Collect, plan and apply the changes (Lake Formation, IAM, workspaces, tags, SNS).
    Apply {
        /// Apply without asking.
        #[arg(long)]
        yes: bool,
    },
    /// Govern continuously: collect, plan and apply; reload policies when they change.
    Daemon {
        /// Plan and log, never apply.
        #[arg(long)]
        dry_run: bool,
        /// Park plan items until an admin runs `tregov approve ID`.
        #[arg(long, conflicts_with = "dry_run")]
        require_approval: bool,
    },
    /// Approve a parked plan item (the daemon applies it on its next pass).
    Approve { id: String },
    /// Reject a parked plan item.
    Reject {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Plan items parked by `daemon --require-approval`, with their status.
    Parked,
    /// Serve the HTTP API (`[api]`, `[auth]`): egress and `is-authorized`, without governing.
    Serve,
    /// Data egress requests, through the HTTP API with a bearer token.
    Egress(crate::egress::EgressArgs),
    /// Actual state the collectors observed (Lake Formation permissions, IAM roles, ...).
    Observed {
        /// Only this kind (`lf-permission`, `lf-location`, `lf-tag`, `glue-table`, `iam-role`).
        #[arg(long)]
        kind: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Check the configuration file; name any bad key with its line.
    Check,
}

#[derive(Args, Debug, Clone)]
pub struct EventFilterArgs {
    /// Events at or after this time (RFC 3339, e.g. `2026-11-01T00:00:00Z`).
    #[arg(long)]
    pub since: Option<String>,
    /// Events whose principal (ARN or id) contains this text.
    #[arg(long)]
    pub principal: Option<String>,
    /// Events with exactly this name (e.g. `PutRolePolicy`).
    #[arg(long)]
    pub name: Option<String>,
    /// Events of this account.
    #[arg(long)]
    pub account: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum EventsCommand {
    /// How many events match.
    Count(EventFilterArgs),
    /// The matching events, oldest first (with `--output json`, one object per line).
    List {
        #[command(flatten)]
        filter: EventFilterArgs,
        /// At most this many.
        #[arg(long)]
        limit: Option<u64>,
    },
}

#[derive(Args, Debug)]
pub struct DecideArgs {
    /// The principal, e.g. `Tre::User::"alice"`.
    #[arg(long)]
    pub principal: Option<String>,
    /// The action, e.g. `Tre::Action::"read"`.
    #[arg(long)]
    pub action: Option<String>,
    /// The resource, e.g. `Tre::Dataset::"gwas-2024"`.
    #[arg(long)]
    pub resource: Option<String>,
    /// The context: a JSON object, or `@FILE`.
    #[arg(long)]
    pub context: Option<String>,
    /// Decide over this entities file instead of the store (nothing is logged).
    #[arg(long)]
    pub entities: Option<PathBuf>,
    /// Schema for `--entities` mode (default: the policies directory's own schema).
    #[arg(long)]
    pub schema: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum EntitiesCommand {
    /// Validate an entities-JSON file against the schema and write it to the store.
    Import {
        file: PathBuf,
        /// Replace every entity previously imported into this partition.
        #[arg(long)]
        replace: bool,
        /// The partition the entities belong to.
        #[arg(long, default_value = "manual")]
        partition: String,
    },
    /// Print every stored entity as an entities-JSON array.
    Export,
    /// Print one stored entity.
    Get { uid: String },
}

#[derive(Subcommand, Debug)]
pub enum LogCommand {
    /// Check the hash chain; name the first bad record.
    Verify,
    /// Print one record, or every record.
    Show { seq: Option<u64> },
    /// Print the last sequence number and hash, to keep outside the TRE.
    Head,
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let ctx = Ctx {
        output: cli.output,
        data_dir: cli.data_dir.clone(),
        policies: cli.policies.clone(),
    };
    match cli.command {
        Command::Validate => ctx.validate(),
        Command::Fmt { check } => ctx.fmt(check),
        Command::Test { paths } => ctx.test(paths),
        Command::Authorize(args) => ctx.decide(args, false),
        Command::Why { args, replay } => match replay {
            Some(seq) => ctx.replay(seq),
            None => ctx.decide(args, true),
        },
        Command::Entities(cmd) => ctx.entities(cmd),
        Command::Log(cmd) => ctx.log(cmd),
        Command::Demo => ctx.demo(),
        Command::Config(ConfigCommand::Check) => {
            crate::collect::config_check(&ctx.output, &cli.config)
        }
        Command::Collect { once, interval } => crate::collect::collect(
            ctx.output,
            &cli.config,
            &ctx.data_dir,
            &ctx.bundle()?,
            once,
            interval,
        ),
        Command::Plan => {
            crate::govern::plan_command(ctx.output, &cli.config, &ctx.data_dir, ctx.bundle()?)
        }
        Command::Apply { yes } => {
            crate::govern::apply_command(ctx.output, &cli.config, &ctx.data_dir, ctx.bundle()?, yes)
        }
        Command::Approve { id } => {
            crate::govern::decide_parked_command(&ctx.data_dir, &id, true, None)
        }
        Command::Reject { id, reason } => {
            crate::govern::decide_parked_command(&ctx.data_dir, &id, false, reason.as_deref())
        }
        Command::Parked => crate::govern::parked_command(ctx.output, &ctx.data_dir),
        Command::Serve => crate::egress::serve_command(&cli.config, &ctx.data_dir, ctx.bundle()?),
        Command::Egress(args) => crate::egress::egress_command(ctx.output, &cli.config, args),
        Command::Daemon {
            dry_run,
            require_approval,
        } => crate::govern::daemon_command(
            &cli.config,
            &ctx.data_dir,
            ctx.bundle()?,
            crate::govern::DaemonOptions {
                dry_run,
                require_approval,
                policies_dir: ctx.policies_dir(),
            },
        ),
        Command::Events(cmd) => crate::collect::events(ctx.output, &ctx.data_dir, cmd),
        Command::Status => crate::collect::status(ctx.output, &ctx.data_dir),
        Command::Observed { kind } => {
            crate::collect::observed(ctx.output, &ctx.data_dir, kind.as_deref())
        }
    }
}

struct Ctx {
    output: Format,
    data_dir: PathBuf,
    policies: Option<PathBuf>,
}

impl Ctx {
    fn json(&self) -> bool {
        self.output == Format::Json
    }

    /// The policies directory in effect, if any (`None`: the built-in policies).
    fn policies_dir(&self) -> Option<PathBuf> {
        if let Some(p) = &self.policies {
            return Some(p.clone());
        }
        let local = PathBuf::from("policies");
        local
            .join(tregov_policies::SCHEMA_FILE)
            .is_file()
            .then_some(local)
    }

    fn bundle(&self) -> Result<PolicyBundle> {
        match self.policies_dir() {
            Some(dir) => PolicyBundle::load_dir(&dir),
            None => PolicyBundle::embedded(),
        }
    }

    fn validate(&self) -> Result<ExitCode> {
        let bundle = self.bundle()?;
        if self.json() {
            output::print_json(&json!({
                "valid": true,
                "policies": bundle.meta.len(),
                "files": bundle.sources.iter().map(|s| &s.name).collect::<Vec<_>>(),
                "warnings": bundle.warnings,
                "policySetVersion": bundle.version,
            }));
        } else {
            for w in &bundle.warnings {
                println!("{w}");
            }
            println!(
                "ok: {} policies in {} files validate in strict mode (policy set {})",
                bundle.meta.len(),
                bundle.sources.len(),
                &bundle.version[..12]
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    fn fmt(&self, check: bool) -> Result<ExitCode> {
        let dir = self.policies_dir().ok_or_else(|| {
            EngineError::Request(
                "no policies directory to format: pass `--policies DIR` or run where `policies/` is"
                    .into(),
            )
        })?;
        let (_, sources) = read_policy_dir(&dir)?;
        let mut unformatted = Vec::new();
        for src in &sources {
            let pretty = format_policies(&src.name, &src.text)?;
            if pretty != src.text {
                if check {
                    unformatted.push(src.name.clone());
                } else {
                    std::fs::write(&src.name, &pretty)
                        .map_err(|e| EngineError::io(&src.name, e))?;
                    unformatted.push(src.name.clone());
                }
            }
        }
        if self.json() {
            output::print_json(&json!({ "check": check, "files": unformatted }));
        } else {
            for f in &unformatted {
                println!(
                    "{}: {}",
                    f,
                    if check { "not formatted" } else { "formatted" }
                );
            }
            if unformatted.is_empty() {
                println!("ok: {} files formatted", sources.len());
            }
        }
        Ok(if check && !unformatted.is_empty() {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    }

    fn test(&self, paths: Vec<PathBuf>) -> Result<ExitCode> {
        let paths = if paths.is_empty() {
            let dir = self
                .policies_dir()
                .map(|d| d.join("tests"))
                .unwrap_or_else(|| PathBuf::from("policies/tests"));
            vec![dir]
        } else {
            paths
        };
        let files = testfile::collect_test_files(&paths)?;
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let report = testfile::run_all(&files, workers);
        if self.json() {
            output::print_json(&json!(report));
        } else {
            for f in &report.failures {
                println!("FAIL {f}");
            }
            println!("{} passed, {} failed", report.passed, report.failed);
        }
        Ok(if report.failed == 0 && report.files > 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    }

    fn request_spec(args: &DecideArgs) -> Result<RequestSpec> {
        let context = match &args.context {
            None => json!({}),
            Some(text) => {
                let (name, body) = match text.strip_prefix('@') {
                    Some(file) => (
                        file.to_string(),
                        std::fs::read_to_string(file).map_err(|e| EngineError::io(file, e))?,
                    ),
                    None => ("--context".to_string(), text.clone()),
                };
                serde_json::from_str(&body).map_err(|e| {
                    EngineError::Request(format!(
                        "`{name}` is not JSON: {e} (line {}, column {})",
                        e.line(),
                        e.column()
                    ))
                })?
            }
        };
        let required = |v: &Option<String>, name: &str| {
            v.clone()
                .ok_or_else(|| EngineError::Request(format!("`--{name}` is required")))
        };
        Ok(RequestSpec {
            principal: required(&args.principal, "principal")?,
            action: required(&args.action, "action")?,
            resource: required(&args.resource, "resource")?,
            context,
        })
    }

    fn decide(&self, args: DecideArgs, explain_it: bool) -> Result<ExitCode> {
        let spec = Self::request_spec(&args)?;
        let engine = match &args.entities {
            Some(entities_path) => {
                // Files mode: `--policies` may be one file or a directory.
                let bundle = match &self.policies {
                    Some(p) => PolicyBundle::load_path(p, args.schema.as_deref())?,
                    None => self.bundle()?,
                };
                let text = std::fs::read_to_string(entities_path)
                    .map_err(|e| EngineError::io(entities_path, e))?;
                let list = parse_entities_file(
                    &entities_path.display().to_string(),
                    &text,
                    bundle.schema.as_ref(),
                )?;
                let graph = EntityGraph::from_entities(&list, bundle.schema.as_ref())?;
                Engine::in_memory(bundle, graph)
            }
            None => Engine::open_existing(&self.data_dir, self.bundle()?)?,
        };
        let request = engine.parse(spec)?;
        let outcome =
            engine.decide_logged(&request, if explain_it { "why" } else { "authorize" })?;
        if explain_it {
            let expl = explain(
                &outcome,
                &request.request,
                engine.graph().entities(),
                engine.bundle(),
            );
            if self.json() {
                output::print_json(&output::explanation_json(&outcome, &expl, engine.bundle()));
            } else {
                output::print_explanation_text(&outcome, &expl);
            }
        } else if self.json() {
            output::print_json(&output::decision_json(&outcome, engine.bundle()));
        } else {
            output::print_decision_text(&outcome, engine.bundle());
        }
        Ok(decision_exit(&outcome))
    }

    fn replay(&self, seq: u64) -> Result<ExitCode> {
        let log = DecisionLog::open(&self.data_dir)?;
        let record = log.record(seq)?;
        if record.get("kind").and_then(Value::as_str) != Some("decision") {
            return Err(EngineError::Request(format!(
                "record {seq} is not a decision"
            )));
        }
        let version = record
            .get("policyVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| EngineError::Request(format!("record {seq} has no policy version")))?;
        let stored = log.load_policies(version)?;
        let bundle = PolicyBundle::from_sources(stored.schema.clone(), stored.sources.clone())?;
        let spec: RequestSpec = serde_json::from_value(
            record.get("request").cloned().unwrap_or(Value::Null),
        )
        .map_err(|e| EngineError::Request(format!("record {seq} has no readable request: {e}")))?;
        let slice: Vec<Value> = record
            .get("slice")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let entities = entities_from_slice(&slice, bundle.schema.as_ref())?;
        let request = ParsedRequest::parse(spec.clone(), &bundle)?;
        let response =
            cedar_policy::Authorizer::new().is_authorized(&request.request, &bundle.set, &entities);
        let mut outcome = outcome_from_response(&response, &bundle);
        outcome.log_seq = Some(seq);
        let logged_decision = record.get("decision").and_then(Value::as_str).unwrap_or("");
        let logged_reasons = string_set(record.get("reasons"));
        let logged_errors: std::collections::BTreeSet<String> = record
            .get("errors")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.get("policy").and_then(Value::as_str).map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let mut differences = Vec::new();
        if logged_decision != outcome.decision.to_string() {
            differences.push(format!(
                "decision was {logged_decision}, replays as {}",
                outcome.decision
            ));
        }
        let reasons: std::collections::BTreeSet<String> = outcome.reasons.iter().cloned().collect();
        if logged_reasons != reasons {
            differences.push(format!(
                "reasons were {logged_reasons:?}, replay gives {reasons:?}"
            ));
        }
        let errors: std::collections::BTreeSet<String> =
            outcome.errors.iter().map(|e| e.policy.clone()).collect();
        if logged_errors != errors {
            differences.push(format!(
                "errors were {logged_errors:?}, replay gives {errors:?}"
            ));
        }
        let reproduces = differences.is_empty();
        let expl = explain(&outcome, &request.request, &entities, &bundle);
        // What today's policies would say about the same request and slice.
        let current = self.bundle().ok().and_then(|current| {
            let req = ParsedRequest::parse(spec.clone(), &current).ok()?;
            let ents = entities_from_slice(&slice, current.schema.as_ref()).ok()?;
            let resp =
                cedar_policy::Authorizer::new().is_authorized(&req.request, &current.set, &ents);
            Some(outcome_from_response(&resp, &current))
        });
        if self.json() {
            let mut v = output::explanation_json(&outcome, &expl, &bundle);
            if let Some(obj) = v.as_object_mut() {
                obj.insert("replayOf".into(), json!(seq));
                obj.insert("reproduces".into(), json!(reproduces));
                obj.insert("differences".into(), json!(differences));
                obj.insert("request".into(), json!(spec));
                if let Some(c) = &current {
                    obj.insert(
                        "currentPolicies".into(),
                        json!({"policySetVersion": c.policy_version, "decision": c.decision.to_string(), "reasons": c.reasons}),
                    );
                }
            }
            output::print_json(&v);
        } else {
            println!(
                "replaying record {seq}: {} {} {}",
                spec.principal, spec.action, spec.resource
            );
            println!(
                "logged at {} under policy set {}",
                record.get("time").and_then(Value::as_str).unwrap_or("?"),
                version
            );
            if reproduces {
                println!("reproduces: yes ({} again)", outcome.decision);
            } else {
                println!("reproduces: NO");
                for d in &differences {
                    println!("  {d}");
                }
            }
            println!();
            output::print_explanation_text(&outcome, &expl);
            if let Some(c) = current {
                println!();
                if c.policy_version == outcome.policy_version {
                    println!("the current policy set is the same version");
                } else {
                    println!(
                        "with the current policy set ({}): {}{}",
                        c.policy_version,
                        c.decision,
                        if c.reasons.is_empty() {
                            String::new()
                        } else {
                            format!(" by {}", c.reasons.join(", "))
                        }
                    );
                }
            }
        }
        Ok(if reproduces {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    }

    fn entities(&self, cmd: EntitiesCommand) -> Result<ExitCode> {
        match cmd {
            EntitiesCommand::Import {
                file,
                replace,
                partition,
            } => {
                let bundle = self.bundle()?;
                let schema = bundle
                    .schema
                    .clone()
                    .ok_or_else(|| EngineError::Request("importing needs a schema".into()))?;
                let text = std::fs::read_to_string(&file).map_err(|e| EngineError::io(&file, e))?;
                let list = parse_entities_file(&file.display().to_string(), &text, Some(&schema))?;
                let store = tregov_engine::Store::open(&self.data_dir)?;
                let outcome = store.apply(
                    &StoreBatch {
                        upserts: list,
                        deletes: Vec::new(),
                        partition,
                        replace_partition: replace,
                    },
                    &schema,
                )?;
                if self.json() {
                    output::print_json(&json!(outcome));
                } else {
                    println!(
                        "imported `{}`: {} inserted, {} updated, {} unchanged, {} deleted (store revision {})",
                        file.display(),
                        outcome.inserted,
                        outcome.updated,
                        outcome.unchanged,
                        outcome.deleted,
                        outcome.revision
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            EntitiesCommand::Export => {
                let store = tregov_engine::Store::open_existing(&self.data_dir)?;
                let bodies = store.all_bodies()?;
                let values: Vec<Value> = bodies
                    .iter()
                    .filter_map(|b| serde_json::from_str(b).ok())
                    .collect();
                output::print_json(&Value::Array(values));
                Ok(ExitCode::SUCCESS)
            }
            EntitiesCommand::Get { uid } => {
                let uid = parse_uid(&uid)?;
                let store = tregov_engine::Store::open_existing(&self.data_dir)?;
                match store.get(&uid)? {
                    Some(body) => {
                        let v: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
                        output::print_json(&v);
                        Ok(ExitCode::SUCCESS)
                    }
                    None => Err(EngineError::Request(format!(
                        "no entity `{uid}` in the store"
                    ))),
                }
            }
        }
    }

    fn log(&self, cmd: LogCommand) -> Result<ExitCode> {
        let log = DecisionLog::open(&self.data_dir)?;
        match cmd {
            LogCommand::Verify => {
                let report = log.verify()?;
                if self.json() {
                    output::print_json(&json!(report));
                } else if let Some(bad) = &report.first_bad {
                    println!(
                        "log verification FAILED after {} good records",
                        report.records
                    );
                    println!(
                        "first bad record: {}{}: {}",
                        bad.seq,
                        if bad.segment.is_empty() {
                            String::new()
                        } else {
                            format!(" ({} line {})", bad.segment, bad.line)
                        },
                        bad.problem
                    );
                } else {
                    println!(
                        "ok: {} records, hash chain intact{}",
                        report.records,
                        report
                            .head
                            .as_ref()
                            .map(|h| format!(", head {} {}", h.seq, h.hash))
                            .unwrap_or_default()
                    );
                    if report.unanchored_tail > 0 {
                        println!(
                            "note: {} record(s) after HEAD (a crash between append and HEAD update); they chain correctly",
                            report.unanchored_tail
                        );
                    }
                }
                Ok(if report.ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            }
            LogCommand::Show { seq: Some(seq) } => {
                output::print_json(&log.record(seq)?);
                Ok(ExitCode::SUCCESS)
            }
            LogCommand::Show { seq: None } => {
                for r in log.records()? {
                    if self.json() {
                        println!("{r}");
                    } else {
                        println!(
                            "{:>6} {} {} {} {} {} -> {} {}",
                            r.get("seq").and_then(Value::as_u64).unwrap_or(0),
                            r.get("time").and_then(Value::as_str).unwrap_or(""),
                            r.get("kind").and_then(Value::as_str).unwrap_or(""),
                            r.pointer("/request/principal")
                                .and_then(Value::as_str)
                                .unwrap_or(""),
                            r.pointer("/request/action")
                                .and_then(Value::as_str)
                                .unwrap_or(""),
                            r.pointer("/request/resource")
                                .and_then(Value::as_str)
                                .unwrap_or(""),
                            r.get("decision").and_then(Value::as_str).unwrap_or(""),
                            string_set(r.get("reasons"))
                                .into_iter()
                                .collect::<Vec<_>>()
                                .join(",")
                        );
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            LogCommand::Head => {
                let head = log.head()?;
                if self.json() {
                    output::print_json(&json!(head));
                } else {
                    match head {
                        Some(h) => println!("{} {}", h.seq, h.hash),
                        None => println!("empty log"),
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }

    fn demo(&self) -> Result<ExitCode> {
        let bundle = self.bundle()?;
        let schema = bundle
            .schema
            .clone()
            .ok_or_else(|| EngineError::Request("the demo needs a schema".into()))?;
        let list = parse_entities_file(
            "examples/sample-tre.entities.json",
            tregov_policies::SAMPLE_TRE_ENTITIES,
            Some(&schema),
        )?;
        let mut engine = Engine::open(&self.data_dir, bundle)?;
        let imported = engine.apply(&StoreBatch {
            upserts: list,
            deletes: Vec::new(),
            partition: "demo".into(),
            replace_partition: true,
        })?;
        let requests: Vec<Value> = serde_json::from_str(tregov_policies::DEMO_REQUESTS)
            .map_err(|e| EngineError::Request(format!("demo requests: {e}")))?;
        if !self.json() {
            println!("tregov demo: the default TRE policies over a sample TRE");
            println!(
                "  policies: {} policies, policy set {}",
                engine.bundle().meta.len(),
                engine.bundle().version
            );
            println!(
                "  store: {} ({} entities; {} new, {} updated this run)",
                self.data_dir.display(),
                engine.graph().len(),
                imported.inserted,
                imported.updated
            );
        }
        let mut results = Vec::new();
        for r in requests {
            let title = r
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let spec: RequestSpec = serde_json::from_value(r)
                .map_err(|e| EngineError::Request(format!("demo request: {e}")))?;
            let request = engine.parse(spec.clone())?;
            let outcome = engine.decide_logged(&request, "demo")?;
            let expl = explain(
                &outcome,
                &request.request,
                engine.graph().entities(),
                engine.bundle(),
            );
            if self.json() {
                let mut v = output::explanation_json(&outcome, &expl, engine.bundle());
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("title".into(), json!(title));
                    obj.insert("request".into(), json!(spec));
                }
                results.push(v);
            } else {
                println!();
                println!("━━ {title}");
                println!(
                    "   tregov why --principal '{}' --action '{}' --resource '{}'{}",
                    spec.principal,
                    spec.action,
                    spec.resource,
                    if spec.context.as_object().is_some_and(|o| !o.is_empty()) {
                        format!(" --context '{}'", spec.context)
                    } else {
                        String::new()
                    }
                );
                print_indented_explanation(&outcome, &expl);
            }
        }
        let verify = engine.log().map(|l| l.verify()).transpose()?;
        if self.json() {
            output::print_json(&json!({"decisions": results, "log": verify}));
        } else if let Some(v) = verify {
            println!();
            println!(
                "decision log: {} records under {}, hash chain {}",
                v.records,
                self.data_dir.join("log").display(),
                if v.ok { "intact" } else { "BROKEN" }
            );
            println!(
                "next: `tregov log show`, `tregov why --replay {}`, `tregov log verify`",
                v.records
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn print_indented_explanation(
    outcome: &DecisionOutcome,
    expl: &tregov_engine::explain::Explanation,
) {
    println!("   → {}  {}", outcome.decision, expl.summary);
    let shown = expl
        .permits
        .iter()
        .chain(expl.forbids.iter())
        .filter(|p| p.applied || !p.failed_conditions.is_empty());
    for p in shown {
        if p.applied {
            println!(
                "     ● {} `{}` ({}:{})",
                p.effect,
                p.id,
                output::short_path(&p.file),
                p.line
            );
        } else if p.effect == "permit" && outcome.decision == Decision::Deny {
            println!("     ○ permit `{}` did not apply:", p.id);
            for c in &p.failed_conditions {
                let values = c
                    .operands
                    .iter()
                    .map(|o| format!("{} = {}", o.expression, o.value))
                    .collect::<Vec<_>>()
                    .join(", ");
                println!(
                    "         {}{}",
                    c.needed,
                    if values.is_empty() {
                        String::new()
                    } else {
                        format!(" ({values})")
                    }
                );
            }
        }
    }
    if let Some(seq) = outcome.log_seq {
        println!("     logged as record {seq}");
    }
}

fn string_set(v: Option<&Value>) -> std::collections::BTreeSet<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn decision_exit(outcome: &DecisionOutcome) -> ExitCode {
    match outcome.decision {
        Decision::Allow => ExitCode::SUCCESS,
        Decision::Deny => ExitCode::from(2),
    }
}
