//! The `tregov` command line: argument parsing and output only; the engine does the work.

mod cli;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    output::init_tracing(args.verbose);
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            let code = if err.is_invalid_input() { 3 } else { 1 };
            eprintln!("{:?}", miette::Report::new(err));
            ExitCode::from(code)
        }
    }
}
