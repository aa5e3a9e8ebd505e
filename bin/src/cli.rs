//! Each command wired to the libraries that do its work: policies, decisions, the store and
//! the log here; collecting, governing and the API in their own files.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{json, Value};
use tregov_engine::entities::parse_uid;
use tregov_engine::governor::Mode;
use tregov_engine::log::DecisionLog;
use tregov_engine::policies::{format_policies, read_policy_dir};
use tregov_engine::{demo, replay, testfile};
use tregov_engine::{Decision, DecisionOutcome, Engine, EngineError, PolicyBundle, RequestSpec};
use tregov_engine::{Result, StoreBatch};
use tregov_render::{decision as show, log as show_log};

use crate::args::{
    Cli, Command, ConfigCommand, DecideArgs, EntitiesCommand, FileArgs, LogCommand, TestFormat,
};
use crate::output::{print_json, Format};

pub fn run(cli: Cli) -> Result<ExitCode> {
    let ctx = Ctx {
        output: cli.output,
        data_dir: cli.data_dir.clone(),
        policies: cli.policies.clone(),
    };
    let (out, config, data) = (ctx.output, &cli.config, &ctx.data_dir);
    match cli.command {
        Command::Validate(files) => ctx.validate(files),
        Command::Fmt { check } => ctx.fmt(check),
        Command::Test {
            paths,
            tests,
            files,
            coverage,
            format,
        } => ctx.test(paths, tests, files, coverage, format),
        Command::Authorize(args) => ctx.decide(args, false),
        Command::Why { args, replay } => match replay {
            Some(seq) => ctx.replay(seq),
            None => ctx.decide(args, true),
        },
        Command::Policy(cmd) => {
            crate::policy::policy_command(out, data, ctx.bundle(), ctx.policies_dir(), cmd)
        }
        Command::Entities(cmd) => ctx.entities(cmd),
        Command::Log(cmd) => ctx.log(cmd, config),
        Command::Demo => ctx.demo(),
        Command::Config(ConfigCommand::Check) => crate::collect::config_check(out, config),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "tregov", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => crate::output::man_pages(&dir),
        Command::Collect {
            once,
            interval,
            trail,
        } => crate::collect::collect(out, config, data, &ctx.bundle()?, once, interval, trail),
        Command::Plan { detailed_exitcode } => {
            crate::govern::plan_command(out, config, data, ctx.bundle()?, detailed_exitcode)
        }
        Command::Apply { yes } => {
            crate::govern::apply_command(out, config, data, ctx.bundle()?, yes)
        }
        Command::Approve { ids, reason, api } => {
            crate::egress::decide_parked(out, config, api, &ids, true, reason)
        }
        Command::Reject { ids, reason, api } => {
            crate::egress::decide_parked(out, config, api, &ids, false, reason)
        }
        Command::Parked => crate::govern::parked_command(out, data),
        Command::Serve => crate::egress::serve_command(config, data, ctx.bundle()?),
        Command::Egress(args) => crate::egress::egress_command(out, config, args),
        Command::Daemon {
            dry_run,
            require_approval,
        } => {
            let mode = match (dry_run, require_approval) {
                (true, _) => Mode::DryRun,
                (_, true) => Mode::RequireApproval,
                _ => Mode::Enforce,
            };
            let options = crate::govern::GovernOptions {
                mode,
                origin: "daemon",
                policies_dir: ctx.policies_dir(),
            };
            crate::govern::daemon_command(config, data, ctx.gated_bundle()?, options)
        }
        Command::Events(cmd) => crate::collect::events(out, data, cmd),
        Command::Breakglass { command } => {
            crate::breakglass::breakglass_command(out, config, data, ctx.bundle()?, command)
        }
        Command::Review(cmd) => {
            crate::access::review_command(out, config, data, ctx.bundle()?, cmd)
        }
        Command::Links { command } => {
            crate::access::links_command(out, config, data, ctx.bundle()?, command)
        }
        Command::Exemptions { command } => {
            crate::access::exemptions_command(out, config, data, ctx.bundle()?, command)
        }
        Command::Access(cmd) => {
            crate::access::access_command(out, config, data, ctx.bundle()?, cmd)
        }
        Command::Status => crate::collect::status(out, data),
        Command::Observed { kind } => crate::collect::observed(out, data, kind.as_deref()),
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

    /// The policies in effect, with the links of a template-linked file if one is given.
    fn bundle_with_links(&self, links: Option<&std::path::Path>) -> Result<PolicyBundle> {
        let Some(links) = links else {
            return self.bundle();
        };
        let bundle = self.bundle()?;
        let mut sources = bundle.sources;
        sources.push(tregov_engine::policies::read_source(links)?);
        PolicyBundle::from_sources(bundle.schema_source, sources)
    }

    /// The policies through the gate a reload passes (their tests too): what governs must
    /// pass it from the first decision on.
    fn gated_bundle(&self) -> Result<PolicyBundle> {
        match self.policies_dir() {
            Some(dir) => tregov_engine::policy_gate::load_gated(&dir),
            None => PolicyBundle::embedded(),
        }
    }

    fn validate(&self, files: FileArgs) -> Result<ExitCode> {
        // A file (not a directory) is validated as the Cedar CLI validates one.
        let bundle = match &self.policies {
            Some(p) if p.is_file() => PolicyBundle::load_path(
                p,
                files.schema.as_deref(),
                files.template_linked.as_deref(),
            )?,
            _ => self.bundle_with_links(files.template_linked.as_deref())?,
        };
        if self.json() {
            print_json(&json!({
                "valid": true,
                "policies": bundle.meta.len(),
                "files": bundle.sources.iter().map(|s| &s.name).collect::<Vec<_>>(),
                "warnings": bundle.warnings,
                "policySetVersion": bundle.version,
            }));
            return Ok(ExitCode::SUCCESS);
        }
        for w in &bundle.warnings {
            println!("{w}");
        }
        println!(
            "ok: {} policies in {} files validate in strict mode (policy set {})",
            bundle.meta.len(),
            bundle.sources.len(),
            tregov_render::short_version(&bundle.version)
        );
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
                if !check {
                    std::fs::write(&src.name, &pretty)
                        .map_err(|e| EngineError::io(&src.name, e))?;
                }
                unformatted.push(src.name.clone());
            }
        }
        let verdict = if check { "not formatted" } else { "formatted" };
        if self.json() {
            print_json(&json!({ "check": check, "files": unformatted }));
        } else if unformatted.is_empty() {
            println!("ok: {} files formatted", sources.len());
        } else {
            unformatted.iter().for_each(|f| println!("{f}: {verdict}"));
        }
        Ok(exit(!check || unformatted.is_empty()))
    }

    fn test(
        &self,
        paths: Vec<PathBuf>,
        cli_tests: Vec<PathBuf>,
        files: FileArgs,
        coverage: bool,
        format: Option<TestFormat>,
    ) -> Result<ExitCode> {
        let own_tests = paths.is_empty() && cli_tests.is_empty();
        let paths = if own_tests {
            let dir = self
                .policies_dir()
                .unwrap_or_else(|| PathBuf::from("policies"));
            vec![dir.join("tests")]
        } else {
            paths
        };
        let files_found = testfile::collect_test_files(&paths)?;
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut report = testfile::run_all(&files_found, workers);
        if own_tests && coverage {
            // Coverage of the policies themselves: a policy file no test names is uncovered
            // too, not invisible.
            let bundle = self.bundle()?;
            report.policies.extend(
                bundle
                    .meta
                    .values()
                    .filter(|m| m.kind != tregov_engine::policies::PolicyKind::Template)
                    .map(|m| m.id.clone()),
            );
        }
        if !cli_tests.is_empty() {
            let bundle = match &self.policies {
                Some(p) => PolicyBundle::load_path(
                    p,
                    files.schema.as_deref(),
                    files.template_linked.as_deref(),
                )?,
                None => self.bundle_with_links(files.template_linked.as_deref())?,
            };
            for tests in &cli_tests {
                report.merge(tregov_engine::cli_tests::run_cli_tests(&bundle, tests));
            }
        }
        let format = format.unwrap_or(match self.output {
            Format::Json => TestFormat::Json,
            Format::Text => TestFormat::Text,
        });
        match format {
            TestFormat::Junit => print!("{}", tregov_render::testing::junit_xml(&report)),
            TestFormat::Json => {
                let mut v = json!(report);
                if coverage {
                    v["uncovered"] = json!(report.uncovered());
                }
                print_json(&v)
            }
            TestFormat::Text => {
                report.failures.iter().for_each(|f| println!("FAIL {f}"));
                println!("{} passed, {} failed", report.passed, report.failed);
                if coverage {
                    print!("{}", tregov_render::testing::coverage_text(&report));
                }
            }
        }
        Ok(exit(report.failed == 0 && report.files > 0))
    }

    fn decide(&self, args: DecideArgs, explain_it: bool) -> Result<ExitCode> {
        let spec = request_spec(&args)?;
        let engine = match &args.entities {
            // Files mode, as the Cedar CLI decides: `--policies` may be one file.
            Some(entities) => {
                let bundle = match &self.policies {
                    Some(p) => PolicyBundle::load_path(
                        p,
                        args.schema.as_deref(),
                        args.template_linked.as_deref(),
                    )?,
                    None => self.bundle_with_links(args.template_linked.as_deref())?,
                };
                Engine::over_file(bundle, entities)?
            }
            None => Engine::open_existing(
                &self.data_dir,
                self.bundle_with_links(args.template_linked.as_deref())?,
            )?,
        };
        let spec = engine.at_the_clock(spec);
        let exemption = asked_with_exemption(&engine, &spec);
        let request = engine.parse(spec)?;
        let origin = if explain_it { "why" } else { "authorize" };
        let outcome = engine.decide_logged(&request, origin)?;
        let bundle = engine.bundle();
        if explain_it {
            let entities = engine.entities_of(&request)?;
            let expl =
                tregov_engine::explain::explain(&outcome, &request.request, &entities, bundle);
            match self.output {
                Format::Json => {
                    let mut v = show::explanation_json(&outcome, &expl, bundle);
                    v["exemption"] = serde_json::json!(exemption);
                    print_json(&v)
                }
                Format::Text => {
                    print!("{}", show::explanation_text(&outcome, &expl));
                    if let Some(e) = &exemption {
                        println!(
                            "asked with exemption `{}`: from `{}` until {} (granted by {}: {})",
                            e.id, e.policy, e.expires, e.granted_by, e.reason
                        );
                    }
                }
            }
        } else {
            match self.output {
                Format::Json => print_json(&show::decision_json(&outcome, bundle)),
                Format::Text => print!("{}", show::decision_text(&outcome, bundle)),
            }
        }
        Ok(decision_exit(&outcome))
    }

    fn replay(&self, seq: u64) -> Result<ExitCode> {
        let log = DecisionLog::open(&self.data_dir)?;
        let current = self.bundle().ok();
        let replayed = replay::replay(&log, seq, current.as_ref())?;
        match self.output {
            Format::Json => print_json(&show_log::replay_json(&replayed)),
            Format::Text => print!("{}", show_log::replay_text(&replayed)),
        }
        Ok(exit(replayed.reproduces()))
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
                let name = file.display().to_string();
                let upserts =
                    tregov_engine::entities::parse_entities_file(&name, &text, Some(&schema))?;
                let store = tregov_engine::Store::open(&self.data_dir)?;
                let batch = StoreBatch {
                    upserts,
                    deletes: Vec::new(),
                    partition,
                    replace_partition: replace,
                };
                let o = store.apply(&batch, &schema)?;
                match self.output {
                    Format::Json => print_json(&json!(o)),
                    Format::Text => println!(
                        "imported `{name}`: {} inserted, {} updated, {} unchanged, {} deleted (store revision {})",
                        o.inserted, o.updated, o.unchanged, o.deleted, o.revision
                    ),
                }
            }
            EntitiesCommand::Export => {
                let store = tregov_engine::Store::open_existing(&self.data_dir)?;
                let values: Vec<Value> = store
                    .all_bodies()?
                    .iter()
                    .filter_map(|b| serde_json::from_str(b).ok())
                    .collect();
                print_json(&Value::Array(values));
            }
            EntitiesCommand::Get { uid } => {
                let uid = parse_uid(&uid)?;
                let store = tregov_engine::Store::open_existing(&self.data_dir)?;
                let body = store.get(&uid)?.ok_or_else(|| {
                    EngineError::Request(format!("no entity `{uid}` in the store"))
                })?;
                print_json(&serde_json::from_str(&body).unwrap_or(Value::String(body)));
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    fn log(&self, cmd: LogCommand, config: &std::path::Path) -> Result<ExitCode> {
        let log = DecisionLog::open(&self.data_dir)?;
        match cmd {
            LogCommand::Verify { anchors: true } => {
                return crate::anchor::verify_command(self.output, config, &self.data_dir)
            }
            LogCommand::Verify { anchors: false } => {
                let report = log.verify()?;
                match self.output {
                    Format::Json => print_json(&json!(report)),
                    Format::Text => print!("{}", show_log::verify_text(&report)),
                }
                return Ok(exit(report.ok));
            }
            LogCommand::Show { seq: Some(seq) } => print_json(&log.record(seq)?),
            LogCommand::Show { seq: None } => {
                for r in log.records()? {
                    match self.output {
                        Format::Json => println!("{r}"),
                        Format::Text => println!("{}", show_log::record_line(&r)),
                    }
                }
            }
            LogCommand::Head => {
                let head = log.head()?;
                match (self.output, head) {
                    (Format::Json, head) => print_json(&json!(head)),
                    (Format::Text, Some(h)) => println!("{} {}", h.seq, h.hash),
                    (Format::Text, None) => println!("empty log"),
                }
            }
            LogCommand::Anchor => {
                return crate::anchor::anchor_command(self.output, config, &self.data_dir)
            }
            LogCommand::Keygen { path } => {
                return crate::anchor::keygen_command(self.output, &path)
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    fn demo(&self) -> Result<ExitCode> {
        let mut engine = Engine::open(&self.data_dir, self.bundle()?)?;
        let imported = demo::load_sample(&mut engine)?;
        let decisions = demo::decide_all(&engine)?;
        let verify = engine.log().map(|l| l.verify()).transpose()?;
        if self.json() {
            let results: Vec<Value> = decisions
                .iter()
                .map(|d| {
                    let mut v = show::explanation_json(&d.outcome, &d.explanation, engine.bundle());
                    v["title"] = json!(d.title);
                    v["request"] = json!(d.spec);
                    v
                })
                .collect();
            print_json(&json!({"decisions": results, "log": verify}));
            return Ok(ExitCode::SUCCESS);
        }
        println!("tregov demo: the default TRE policies over a sample TRE");
        let bundle = engine.bundle();
        println!(
            "  policies: {} policies, policy set {}",
            bundle.meta.len(),
            bundle.version
        );
        println!(
            "  store: {} ({} entities; {} new, {} updated this run)",
            self.data_dir.display(),
            engine.graph().len(),
            imported.inserted,
            imported.updated
        );
        for d in &decisions {
            println!("\n━━ {}\n   tregov why {}", d.title, why_args(&d.spec));
            print!(
                "{}",
                show::indented_explanation_text(&d.outcome, &d.explanation)
            );
        }
        if let Some(v) = verify {
            let chain = if v.ok { "intact" } else { "BROKEN" };
            let dir = self.data_dir.join("log");
            println!(
                "\ndecision log: {} records under {}, hash chain {chain}",
                v.records,
                dir.display()
            );
            println!(
                "next: `tregov log show`, `tregov why --replay {}`, `tregov log verify`",
                v.records
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// A request as the arguments of `tregov why`.
fn why_args(spec: &RequestSpec) -> String {
    let context = match spec.context.as_object() {
        Some(o) if !o.is_empty() => format!(" --context '{}'", spec.context),
        _ => String::new(),
    };
    format!(
        "--principal '{}' --action '{}' --resource '{}'{context}",
        spec.principal, spec.action, spec.resource
    )
}

fn request_spec(args: &DecideArgs) -> Result<RequestSpec> {
    if let Some(path) = &args.request_json {
        return request_from_json_file(path);
    }
    let required = |v: &Option<String>, name: &str| {
        v.clone()
            .ok_or_else(|| EngineError::Request(format!("`--{name}` is required")))
    };
    RequestSpec::from_text(
        required(&args.principal, "principal")?,
        required(&args.action, "action")?,
        required(&args.resource, "resource")?,
        args.context.as_deref(),
    )
}

/// A request as the Cedar CLI's `--request-json` file holds it: `principal`, `action` and
/// `resource` as entity uids in Cedar syntax, and a `context` object.
fn request_from_json_file(path: &std::path::Path) -> Result<RequestSpec> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RequestJson {
        principal: Option<String>,
        action: Option<String>,
        resource: Option<String>,
        #[serde(default)]
        context: Value,
    }
    let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
    let name = path.display().to_string();
    let request: RequestJson = serde_json::from_str(&text)
        .map_err(|e| EngineError::Request(format!("`{name}` is not a request: {e}")))?;
    let required = |v: Option<String>, field: &str| {
        v.ok_or_else(|| EngineError::Request(format!("`{name}` has no `{field}`")))
    };
    let context = match request.context {
        Value::Null => json!({}),
        other => other,
    };
    RequestSpec::from_text(
        required(request.principal, "principal")?,
        required(request.action, "action")?,
        required(request.resource, "resource")?,
        Some(&context.to_string()),
    )
}

pub(crate) fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn decision_exit(outcome: &DecisionOutcome) -> ExitCode {
    match outcome.decision {
        Decision::Allow => ExitCode::SUCCESS,
        Decision::Deny => ExitCode::from(2),
    }
}

/// The stored exemption a request was asked with (the store's, filled in at the clock).
fn asked_with_exemption(
    engine: &Engine,
    spec: &RequestSpec,
) -> Option<tregov_engine::exemptions::Exemption> {
    let uid = spec
        .context
        .get("exemption")
        .and_then(tregov_engine::entities::uid_from_json)?;
    tregov_engine::exemptions::stored(engine)
        .into_iter()
        .find(|(stored, _)| *stored == uid)
        .map(|(_, e)| e)
}
