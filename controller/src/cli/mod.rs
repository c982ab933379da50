//! The command line: the arguments, and one module per command that does
//! more than print what the library returns.

mod controller;
pub(crate) mod helper;
mod reconcile;
mod show;
mod snapshots;
mod volume;

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use drover::apply::{ApplyOptions, Outcome, Reporter};
use drover::desired;
use drover::docker::hosts::{connect_all, observe_cluster};
use drover::load::graph::Format;
use drover::load::interpolate::ProcessEnv;
use drover::load::schema;
use drover::load::{load, LoadError};
use drover::model::Spec;
use drover::observed::Observed;
use drover::onhost::lease::{take_and_observe, Holder};
use drover::output::{
    plan_json, plan_markdown, plan_text, plan_value, status_table, use_color, volume_table,
};
use drover::pass::Pass;
use drover::plan::{self, Action, Options};

#[derive(Parser)]
#[command(
    name = "drover",
    version,
    about = "Keep Docker hosts in line with a directory of manifests; the data follows its container"
)]
pub(crate) struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CopyVia {
    Auto,
    Api,
}

impl CopyVia {
    /// Whether data may take a direct path: helper to helper, or a host
    /// to a repository's store.
    pub(crate) fn direct(self) -> bool {
        self == CopyVia::Auto
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    Text,
    Json,
}

/// What `drover schema` describes.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SchemaOf {
    Manifests,
    Compose,
    Plan,
    Diff,
}

/// How a plan or a diff is printed: for people, for programs, or for a
/// pull-request comment.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PlanFormat {
    Text,
    Json,
    Markdown,
}

/// How a plan is carried out: `reconcile`'s and `controller`'s options.
#[derive(Args)]
pub(crate) struct ApplyArgs {
    /// Actions run at once on one host.
    #[arg(long, default_value_t = drover::apply::DEFAULT_PER_HOST, value_name = "N")]
    parallel: usize,
    /// How long an app waits for the apps it depends on (seconds).
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    dependency_timeout: u64,
    /// How volume moves carry data: `auto` copies straight between helper
    /// containers when the hosts reach each other, else through the
    /// Docker API; `api` always goes through the Docker API.
    #[arg(long, value_enum, default_value_t = CopyVia::Auto)]
    copy_via: CopyVia,
}

impl ApplyArgs {
    fn options(&self) -> ApplyOptions {
        ApplyOptions {
            per_host: self.parallel,
            dependency_timeout: Duration::from_secs(self.dependency_timeout),
            direct_copy: self.copy_via.direct(),
            ..ApplyOptions::default()
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Load and check the manifests; touches no host.
    Validate {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Compute the plan that makes the hosts match the manifests, and carry it out.
    Reconcile(reconcile::ReconcileArgs),
    /// Keep every host in line with the directory, all the time: watch the
    /// files and each host's Docker events, and reconcile on any change and
    /// on a timer.
    Controller(Box<controller::ControllerArgs>),
    /// Print the actual state of every host.
    Observe {
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
        output: OutputFormat,
    },
    /// A table of every app: where it runs, its state and health, and whether it is in sync.
    Status {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Managed volumes.
    Volume {
        #[command(subcommand)]
        command: volume::VolumeCommand,
    },
    /// Print the dependency graph.
    Graph {
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Dot)]
        format: Format,
    },
    /// Print a JSON Schema: of the manifests, of Compose files as drover
    /// reads them, of a JSON plan, or of a JSON diff.
    Schema {
        #[arg(value_enum, default_value_t = SchemaOf::Manifests)]
        of: SchemaOf,
    },
    /// Print the drover Stack manifest a Compose file is read as.
    Convert { file: PathBuf },
    /// What the manifests change against a Git revision, with no host and
    /// no network: apps added, removed and changed, and the data that will
    /// move.
    Diff {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The revision to compare with: `origin/main`, `HEAD~1`, a commit.
        #[arg(long, value_name = "REF")]
        base: String,
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        output: PlanFormat,
        /// Exit 0 without changes, 2 with changes, 1 on error.
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Runs inside a helper container during a volume move.
    #[command(hide = true)]
    Helper {
        #[command(subcommand)]
        command: helper::HelperCommand,
    },
}

/// Why a command failed: already reported, or a one-line reason.
pub(crate) enum Failure {
    Reported,
    Message(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Message(s)
    }
}

impl From<drover::onhost::lease::Taking> for Failure {
    fn from(e: drover::onhost::lease::Taking) -> Self {
        Failure::Message(e.to_string())
    }
}

/// A duration as the manifests write it (`60s`, `1m30s`, `500ms`), or seconds.
fn duration_arg(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    drover::load::values::parse_duration(s).map(Duration::from_nanos)
}

/// The first SIGTERM or SIGINT cancels `stop` (the current step finishes);
/// a second one ends the process at once.
fn stop_on_signals(stop: tokio_util::sync::CancellationToken) -> Result<(), Failure> {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind| {
        signal(kind).map_err(|e| Failure::Message(format!("cannot listen for signals: {e}")))
    };
    let (mut term, mut int) = (
        listen(SignalKind::terminate())?,
        listen(SignalKind::interrupt())?,
    );
    tokio::spawn(async move {
        let first = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!(
            signal = first,
            "stopping once the current step has finished; a second signal stops at once"
        );
        stop.cancel();
        let code = tokio::select! {
            _ = term.recv() => 143,
            _ = int.recv() => 130,
        };
        tracing::error!("stopping at once");
        std::process::exit(code);
    });
    Ok(())
}

/// Writes to stdout; a closed pipe (`drover … | head`) is not an error.
fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn load_spec(dir: &Path) -> Result<Spec, Failure> {
    load(dir, &ProcessEnv).map_err(|e| match e {
        LoadError::Invalid(d) => {
            eprint!("{}", d.render(use_color(std::io::stderr().is_terminal())));
            Failure::Reported
        }
        other => Failure::Message(other.to_string()),
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Message(format!("cannot start the async runtime: {e}")))
}

fn read_observed(path: &Path) -> Result<Observed, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read `{}`: {}",
            path.display(),
            drover::load::files::io_reason(&e)
        )
    })?;
    Ok(Observed::from_json(&text).map_err(|e| {
        format!(
            "{}:{}:{}: not an observed state: {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })?)
}

/// Reads every host of the spec.
fn observe_spec(spec: &Spec) -> Result<Observed, Failure> {
    Ok(runtime()?.block_on(async { observe_cluster(spec, &connect_all(spec).await).await }))
}

/// Names each host that could not be read; exit 1 when there is one.
fn unreachable_exit(observed: &Observed) -> ExitCode {
    for (host, reason) in &observed.unreachable {
        eprintln!("error: host `{host}` could not be read: {reason}");
    }
    if observed.unreachable.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Asks `question` before a change, unless `--yes`; without a terminal,
/// refuses with `refusal`.
fn confirm(yes: bool, question: &str, refusal: &str) -> Result<bool, Failure> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(refusal.to_string().into());
    }
    eprint!("{question}? [y/N] ");
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

pub(crate) fn run(command: Command) -> Result<ExitCode, Failure> {
    match command {
        Command::Validate { dir } => show::validate(&dir),
        Command::Graph { dir, format } => show::graph(&dir, format),
        Command::Schema { of } => show::schema(of),
        Command::Convert { file } => show::convert(&file),
        Command::Diff {
            dir,
            base,
            output,
            detailed_exitcode,
        } => show::diff(&dir, &base, output, detailed_exitcode),
        Command::Helper { command } => Ok(helper::run(command)),
        Command::Observe { dir, output } => show::observe(&dir, output),
        Command::Status { dir } => show::status(&dir),
        Command::Volume { command } => volume::run(command),
        Command::Controller(args) => controller::run(*args),
        Command::Reconcile(args) => reconcile::run(args),
    }
}
