//! The output format and the log writer; what is shown is rendered by `tregov-render`.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// How log lines are written on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init_tracing(verbose: u8, format: LogFormat) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TREGOV_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

pub fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// A failed command's error: for people, miette's report on stderr; under `--output json`,
/// one JSON object on stdout (`{"error": {"message", "code", "labels", "help", ...}}`, miette's
/// JSON report), where a script reading the output looks.
pub fn print_error(format: Format, err: tregov_engine::EngineError) {
    match format {
        Format::Text => eprintln!("{:?}", miette::Report::new(err)),
        Format::Json => {
            let mut rendered = String::new();
            let error = match miette::JSONReportHandler::new().render_report(&mut rendered, &err) {
                Ok(()) => serde_json::from_str(&rendered)
                    .unwrap_or_else(|_| serde_json::json!({ "message": err.to_string() })),
                Err(_) => serde_json::json!({ "message": err.to_string() }),
            };
            println!("{}", serde_json::json!({ "error": error }));
        }
    }
}

/// `tregov man DIR`: `tregov.1` and a page per command, as `git` and `cargo` ship them.
pub fn man_pages(dir: &std::path::Path) -> tregov_engine::error::Result<std::process::ExitCode> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir).map_err(|e| tregov_engine::EngineError::io(dir, e))?;
    let root = crate::args::Cli::command();
    let mut written = 0;
    write_pages(dir, root.clone(), "tregov", &mut written)?;
    eprintln!("wrote {written} man page(s) into {}", dir.display());
    Ok(std::process::ExitCode::SUCCESS)
}

fn write_pages(
    dir: &std::path::Path,
    command: clap::Command,
    name: &str,
    written: &mut usize,
) -> tregov_engine::error::Result<()> {
    let command = command.name(name.to_string());
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut page)
        .and_then(|()| std::fs::write(&path, page))
        .map_err(|e| tregov_engine::EngineError::io(&path, e))?;
    *written += 1;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let sub_name = format!("{name}-{}", sub.get_name());
        write_pages(dir, sub.clone(), &sub_name, written)?;
    }
    Ok(())
}
