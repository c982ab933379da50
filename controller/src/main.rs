//! The `drover` command: parse the arguments, run, print the error, map it
//! to an exit code.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use drover::graph::Format;
use drover::interpolate::ProcessEnv;
use drover::load::{load, LoadError};
use drover::observed::Observed;
use drover::output::{plan_json, plan_text, use_color};
use drover::plan::{self, Options};
use drover::{desired, schema};

#[derive(Parser)]
#[command(
    name = "drover",
    version,
    about = "Keep Docker hosts in line with a directory of manifests; the data follows its container"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Load and check the manifests; touches no host.
    Validate {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Compute the plan that makes the hosts match the manifests, and carry it out.
    Reconcile {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Only print the plan; nothing is written anywhere.
        #[arg(long)]
        dry_run: bool,
        /// Plan against a state saved by `drover observe` instead of reading hosts.
        #[arg(long, value_name = "FILE")]
        observed: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        /// Exit 0 when in sync, 2 when changes are pending, 1 on error.
        #[arg(long)]
        detailed_exitcode: bool,
        /// Also delete orphaned and retained volume copies.
        #[arg(long)]
        prune_volumes: bool,
    },
    /// Print the dependency graph.
    Graph {
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Dot)]
        format: Format,
    },
    /// Print the JSON Schema of the manifests.
    Schema,
}

/// Why a command failed: already reported, or a one-line reason.
enum Failure {
    Reported,
    Message(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Message(s)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli.command) {
        Ok(code) => code,
        Err(Failure::Reported) => ExitCode::from(1),
        Err(Failure::Message(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DROVER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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

/// Writes to stdout; a closed pipe (`drover … | head`) is not an error.
fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn load_spec(dir: &Path) -> Result<drover::model::Spec, Failure> {
    load(dir, &ProcessEnv).map_err(|e| match e {
        LoadError::Invalid(d) => {
            eprint!("{}", d.render(use_color(std::io::stderr().is_terminal())));
            Failure::Reported
        }
        other => Failure::Message(other.to_string()),
    })
}

fn run(command: Command) -> Result<ExitCode, Failure> {
    match command {
        Command::Validate { dir } => {
            let spec = load_spec(&dir)?;
            let apps: usize = spec.stacks.values().map(|s| s.apps.len()).sum();
            print(&format!(
                "{}: valid ({} stack{}, {apps} app{}, {} host{})\n",
                dir.display(),
                spec.stacks.len(),
                if spec.stacks.len() == 1 { "" } else { "s" },
                if apps == 1 { "" } else { "s" },
                spec.hosts.len(),
                if spec.hosts.len() == 1 { "" } else { "s" },
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::Graph { dir, format } => {
            let spec = load_spec(&dir)?;
            print(&drover::graph::render(&spec, format));
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            print(&schema::manifest_schema());
            Ok(ExitCode::SUCCESS)
        }
        Command::Reconcile {
            dir,
            dry_run,
            observed,
            output,
            detailed_exitcode,
            prune_volumes,
        } => {
            let spec = load_spec(&dir)?;
            let desired = desired::render(&spec);
            let Some(path) = observed else {
                return Err(Failure::Message(
                    "reading live hosts is not available in this build; pass `--observed FILE` with `--dry-run`".into(),
                ));
            };
            if !dry_run {
                return Err(Failure::Message(
                    "`--observed` plans against a saved state and cannot apply; add `--dry-run`"
                        .into(),
                ));
            }
            let text = std::fs::read_to_string(&path).map_err(|e| {
                format!(
                    "cannot read `{}`: {}",
                    path.display(),
                    drover::parse::io_reason(&e)
                )
            })?;
            let observed = Observed::from_json(&text).map_err(|e| {
                format!(
                    "{}:{}:{}: not an observed state: {e}",
                    path.display(),
                    e.line(),
                    e.column()
                )
            })?;
            let plan = plan::plan(&desired, &observed, Options { prune_volumes });
            match output {
                OutputFormat::Json => print(&plan_json(&plan)),
                OutputFormat::Text => print(&plan_text(
                    &plan,
                    use_color(std::io::stdout().is_terminal()),
                )),
            }
            for e in &plan.errors {
                if output == OutputFormat::Json {
                    eprintln!("error: {e}");
                }
            }
            Ok(if !plan.errors.is_empty() {
                ExitCode::from(1)
            } else if detailed_exitcode && !plan.in_sync {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
