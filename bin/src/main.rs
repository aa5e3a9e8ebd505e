//! The `tregov` command line: argument parsing and output only; the engine does the work.

mod access;
mod anchor;
mod args;
mod breakglass;
mod cli;
mod collect;
mod egress;
mod govern;
mod organization;
mod output;
mod policy;
mod systemd;

use std::process::ExitCode;

use clap::Parser;

// glibc's allocator serialises the planner's worker threads (a third of planning time went to
// malloc and free); mimalloc keeps per-thread heaps.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Bad arguments are invalid input (exit 3), never confused with a deny (exit 2).
    let args = match args::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let code = if e.use_stderr() { 3 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    output::init_tracing(args.verbose, args.log_format);
    tregov_config::aws::set_command_line(tregov_config::aws::CommandLine {
        profile: args.profile.clone(),
        region: args.region.clone(),
    });
    let format = args.output;
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            let code = if err.is_invalid_input() { 3 } else { 1 };
            output::print_error(format, err);
            ExitCode::from(code)
        }
    }
}
