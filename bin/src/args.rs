//! The command line's arguments: every command, flag and environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::output::Format;

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

    /// The log's format on stderr: `text` for people, `json` (one object per line, the
    /// structured fields as keys) for a log pipeline.
    #[arg(
        long,
        global = true,
        env = "TREGOV_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: crate::output::LogFormat,

    /// The AWS profile of the shared config and credentials files (`AWS_PROFILE` also
    /// works, as in every AWS tool).
    #[arg(long, global = true)]
    pub profile: Option<String>,

    /// The AWS region; outranks `region` in the configuration and `AWS_REGION`.
    #[arg(long, global = true)]
    pub region: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate the policies against the schema in strict mode (`--policies FILE --schema
    /// FILE` validates one file as the Cedar CLI does: `@id` optional).
    Validate(FileArgs),
    /// Format policy files with Cedar's formatter.
    Fmt {
        /// Report files that are not formatted instead of rewriting them.
        #[arg(long)]
        check: bool,
    },
    /// Run policy tests: Cedar's integration-test JSON format (files or directories), and
    /// the Cedar CLI's `run-tests` format (`--tests FILE` against `--policies FILE`).
    Test {
        /// Test files, or directories searched for them. Default: `policies/tests/` (none
        /// when only `--tests` is given).
        paths: Vec<PathBuf>,
        /// A test file in the Cedar CLI's `run-tests` format, run against `--policies` (a
        /// file or directory; `@id` optional) with `--schema` and `--template-linked`.
        #[arg(long, value_name = "FILE")]
        tests: Vec<PathBuf>,
        #[command(flatten)]
        files: FileArgs,
        /// Also list the policies that never determined a decision in any test.
        #[arg(long)]
        coverage: bool,
        /// The report's format (default: `--output`); `junit` for CI systems.
        #[arg(long, value_enum)]
        format: Option<TestFormat>,
    },
    /// Decide a request.
    Authorize(DecideArgs),
    /// Decide a request and explain it: the policies that made it and what would have to
    /// change.
    Why {
        #[command(flatten)]
        args: DecideArgs,
        /// Re-evaluate the logged decision SEQ with its own policy version and entity slice.
        #[arg(long, value_name = "SEQ", conflicts_with_all = ["principal", "action", "resource", "context", "entities", "request_json"])]
        replay: Option<u64>,
    },
    /// Exact analysis by Cedar's symbolic compiler and the cvc5 solver: what a policy change
    /// allows that the old set does not (and the reverse), and the properties the policies
    /// must keep. Exit 2 when a change widens access or a property fails.
    #[command(subcommand)]
    Policy(PolicyCommand),
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
    /// Shell completions for `bash`, `zsh`, `fish`, `elvish` or `powershell`, on stdout
    /// (e.g. `tregov completions bash > /etc/bash_completion.d/tregov`).
    Completions { shell: clap_complete::Shell },
    /// Man pages: `tregov.1` and one per command (`tregov-daemon.1`...), written into DIR.
    Man { dir: PathBuf },
    /// Collect AWS state (CloudTrail events) into the store.
    Collect {
        /// One pass, then exit (default: keep collecting every `--interval` seconds).
        #[arg(long)]
        once: bool,
        /// Seconds between passes.
        #[arg(long, default_value_t = 60)]
        interval: u64,
        /// Only the trail's new log files, as the daemon polls between resyncs (from
        /// `files_queue_url` when it is set, without listing the bucket).
        #[arg(long)]
        trail: bool,
    },
    /// The collected CloudTrail events.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Access reviews over the store, from the decisions the planner enforces: who may reach
    /// a dataset, what a user may reach, the policies that allow it and the date that ends it.
    #[command(subcommand)]
    Access(AccessCommand),
    /// Exemptions from a named policy, until a date: listed (the default), or granted
    /// through the API with your token (`grantExemption`, for the project's data managers).
    Exemptions {
        #[command(subcommand)]
        command: Option<ExemptionsCommand>,
    },
    /// Break-glass into a project account: requested by an auditor, approved by another
    /// person in the approver role, revoked early (through the API with your token; each a
    /// Cedar decision), or listed from the store (the default).
    Breakglass {
        #[command(subcommand)]
        command: Option<BreakglassCommand>,
    },
    /// Template links kept in the store: listed (the default), created or removed through
    /// the API with your token (`linkTemplate`, `unlinkTemplate`: by default a study's admins
    /// and its project's data managers).
    Links {
        #[command(subcommand)]
        command: Option<LinksCommand>,
    },
    /// Access review campaigns: started and attested through the API with your token
    /// (`startReview`, `attestReview`); the report of who attested what, when, from the log.
    #[command(subcommand)]
    Review(ReviewCommand),
    /// What each collector did on its last run.
    Status,
    /// What would change in AWS to match the policies, each change with the decisions behind
    /// it. With `--policies NEW_DIR`: the impact of a proposed policy change.
    Plan {
        /// Exit 0 when there is nothing to do and 2 when changes are pending (1 stays an
        /// error), as `terraform plan -detailed-exitcode` does.
        #[arg(long)]
        detailed_exitcode: bool,
    },
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
    /// Approve parked changes, through the API with your token (the daemon applies them on
    /// its next pass). Approving is a Cedar decision (`approvePlanItem`).
    Approve {
        #[arg(required = true)]
        ids: Vec<String>,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        api: crate::egress::ApiArgs,
    },
    /// Reject parked changes, through the API with your token (`rejectPlanItem`).
    Reject {
        #[arg(required = true)]
        ids: Vec<String>,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        api: crate::egress::ApiArgs,
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
pub enum PolicyCommand {
    /// For every request signature of the schema (principal type, action, resource type):
    /// whether the new set is equivalent, more permissive, less permissive or incomparable,
    /// each difference with a request and entities that show it.
    Diff {
        /// The old set: a policies directory (default: the policies in effect).
        #[arg(long, conflicts_with = "from_version")]
        from: Option<PathBuf>,
        /// The old set: a policy-set version the decision log recorded (a prefix will do).
        #[arg(long, value_name = "VERSION")]
        from_version: Option<String>,
        /// The new set: a policies directory.
        #[arg(long)]
        to: PathBuf,
        #[command(flatten)]
        solver: SolverArgs,
    },
    /// Prove the properties (`@property` policies in `properties/` beside the policies, or
    /// the built-in ones) for every request the schema allows.
    Check {
        /// The directory of property files (default: `properties/` in the policies directory).
        #[arg(long)]
        properties: Option<PathBuf>,
        #[command(flatten)]
        solver: SolverArgs,
    },
}

#[derive(Args, Debug, Clone)]
pub struct SolverArgs {
    /// The cvc5 1.3.1 executable (`scripts/install-cvc5` installs one and prints its path).
    #[arg(long, env = "CVC5")]
    pub solver: Option<PathBuf>,
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

#[derive(Subcommand, Debug)]
pub enum AccessCommand {
    /// Every user and workspace role that may read, write or administer DATASET.
    Who {
        /// The dataset: its id, or its uid (`Tre::Dataset::"gwas-2024"`).
        dataset: String,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Everything USER may reach, directly and through their workspaces' roles.
    Of {
        /// The user: their id, or their uid (`Tre::User::"alice"`).
        user: String,
        #[command(flatten)]
        report: ReportArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum ExemptionsCommand {
    /// Every stored exemption, ended ones too.
    List,
    /// Exempt USER's access to DATASET from POLICY until a date, for a reason.
    Grant {
        #[arg(long)]
        user: String,
        #[arg(long)]
        dataset: String,
        /// The `@id` of the policy (one that reads `context.exemption`).
        #[arg(long)]
        policy: String,
        /// When it ends: `2027-01-31` or `2027-01-31T12:00:00Z`.
        #[arg(long)]
        until: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        api: crate::egress::ApiArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum LinksCommand {
    /// Every stored link.
    List,
    /// Link TEMPLATE (its `@id`) to a study, and to a user if the template has `?principal`.
    Add {
        template: String,
        #[arg(long)]
        dataset: String,
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        api: crate::egress::ApiArgs,
    },
    /// Remove the stored link ID.
    Remove {
        id: String,
        #[command(flatten)]
        api: crate::egress::ApiArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum BreakglassCommand {
    /// Every request and grant, ended ones too.
    List,
    /// Ask for emergency access into PROJECT, for a reason and a while (at most the
    /// configured maximum).
    Request {
        project: String,
        #[arg(long)]
        reason: String,
        /// How long: `90m`, `2h`, `3600s` or seconds.
        #[arg(long = "for", value_parser = crate::breakglass::parse_seconds)]
        duration: u64,
        #[command(flatten)]
        api: crate::egress::ApiArgs,
    },
    /// Approve REQUEST (its id as `breakglass list` shows it): the grant opens on the
    /// daemon's next plan.
    Approve {
        request: String,
        #[command(flatten)]
        api: crate::egress::ApiArgs,
    },
    /// End GRANT before its time: it closes on the daemon's next plan.
    Revoke {
        grant: String,
        #[command(flatten)]
        api: crate::egress::ApiArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum ReviewCommand {
    /// Start a campaign: one item per user's access to a study in scope.
    Start {
        /// `project:ID` or `dataset:ID`.
        #[arg(long)]
        scope: String,
        /// The role whose members attest (e.g. `InformationGovernance`).
        #[arg(long)]
        reviewers: String,
        /// The due date: `2027-01-31` or `2027-01-31T12:00:00Z`.
        #[arg(long)]
        due: String,
        /// What an item still open at the due date becomes.
        #[arg(long, value_parser = ["keep", "revoke"], default_value = "keep")]
        default: String,
        #[command(flatten)]
        api: crate::egress::ApiArgs,
    },
    /// Attest one item: keep or revoke the access.
    Attest {
        item: String,
        #[arg(value_parser = ["keep", "revoke"])]
        verdict: String,
        #[command(flatten)]
        api: crate::egress::ApiArgs,
    },
    /// A campaign's items and who attested what, when (from the decision log).
    Report { campaign: String },
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The report's format (default: `--output`).
    #[arg(long, value_enum)]
    pub format: Option<ReportFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TestFormat {
    Text,
    Json,
    Junit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
    Csv,
}

/// Policy files handed to a command as the Cedar CLI takes them.
#[derive(Args, Debug, Default)]
pub struct FileArgs {
    /// The schema for a `--policies FILE` (default: the policies directory's own schema).
    #[arg(long)]
    pub schema: Option<PathBuf>,
    /// Template-linked policies: a JSON array of `{template_id, link_id, args}`, as the
    /// Cedar CLI reads them.
    #[arg(short = 'k', long, value_name = "FILE")]
    pub template_linked: Option<PathBuf>,
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
    /// Template-linked policies: a JSON array of `{template_id, link_id, args}`, as the
    /// Cedar CLI reads them.
    #[arg(short = 'k', long, value_name = "FILE")]
    pub template_linked: Option<PathBuf>,
    /// The request as the Cedar CLI's `--request-json` file holds it (`principal`,
    /// `action`, `resource`, `context`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["principal", "action", "resource", "context"])]
    pub request_json: Option<PathBuf>,
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
    Verify {
        /// Also check the log against every signed head in `[log] anchor_bucket`: a
        /// rewritten chain, a rolled-back log or a forged head fails.
        #[arg(long)]
        anchors: bool,
    },
    /// Sign the head now and write it to `[log] anchor_bucket` (the daemon does this every
    /// `anchor_records` records or `anchor_seconds`).
    Anchor,
    /// Write a new ed25519 signing key (PKCS#8, mode 0600) and its public key beside it
    /// (`<path>.pub`, for auditors' `verify_key`).
    Keygen { path: PathBuf },
    /// Print one record, or every record.
    Show { seq: Option<u64> },
    /// Print the last sequence number and hash, to keep outside the TRE.
    Head,
}
