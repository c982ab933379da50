//! The `drover` command: parse the arguments, run, print the error, map it
//! to an exit code.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, Failure, LogFormat};
use drover::output::use_color;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Helper { command } = cli.command {
        return cli::helper::run(command);
    }
    // A long-running controller reports its passes and steps.
    let default_log = if matches!(cli.command, Command::Controller { .. }) {
        "info"
    } else if std::io::stderr().is_terminal() {
        "warn"
    } else {
        // Without a terminal there is no progress bar: volume moves log
        // their progress instead.
        "warn,drover::relocate=info"
    };
    init_logging(cli.log_format, default_log);
    match cli::run(cli.command) {
        Ok(code) => code,
        Err(Failure::Reported) => ExitCode::from(1),
        Err(Failure::Message(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DROVER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // The Docker client logs request and response bodies at debug level:
    // a container's environment, secrets included. Never below info,
    // whatever DROVER_LOG asks for. The object store client reports every
    // missing object it looks for (a repository not made yet); what fails
    // reaches the user as drover's own error.
    let filter = [
        "bollard=info",
        "hyper=info",
        "hyper_util=info",
        "reqwest=info",
        "opendal=off",
    ]
    .into_iter()
    .fold(filter, |f, d| {
        f.add_directive(d.parse().expect("a valid directive"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_ansi(use_color(std::io::stderr().is_terminal()))
            .init(),
    }
}
