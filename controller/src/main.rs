//! The `drover` command: parse the arguments, run, print the error, map it
//! to an exit code.

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
use drover::output::{plan_json, plan_text, status_table, use_color, volume_table};
use drover::pass::Pass;
use drover::plan::{self, Action, Options};

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
enum CopyVia {
    Auto,
    Api,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

/// How a plan is carried out: `reconcile`'s and `controller`'s options.
#[derive(Args)]
struct ApplyArgs {
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
            direct_copy: self.copy_via == CopyVia::Auto,
            ..ApplyOptions::default()
        }
    }
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
        #[arg(long, value_name = "FILE", requires = "dry_run")]
        observed: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        /// Exit 0 when in sync, 2 when changes are pending, 1 on error.
        #[arg(long)]
        detailed_exitcode: bool,
        /// Also delete orphaned and retained volume copies.
        #[arg(long)]
        prune_volumes: bool,
        /// Apply manifests that hold no app, removing every managed app
        /// from the hosts (refused without it).
        #[arg(long)]
        allow_empty: bool,
        #[command(flatten)]
        apply: ApplyArgs,
    },
    /// Keep every host in line with the directory, all the time: watch the
    /// files and each host's Docker events, and reconcile on any change and
    /// on a timer.
    Controller {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// A full pass at least this often, even when nothing was seen to change.
        #[arg(long, default_value = "60s", value_parser = duration_arg, value_name = "DURATION")]
        resync: Duration,
        /// Serve `/healthz`, `/livez` and Prometheus `/metrics` here (e.g. `0.0.0.0:9090`).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// A pass starts once changes have been quiet this long (at most 10 times as long after the first).
        #[arg(long, default_value = "300ms", value_parser = duration_arg, value_name = "DURATION")]
        debounce: Duration,
        /// At most this many restorations of one app (started or made again
        /// after being stopped or removed out of band)…
        #[arg(long, default_value_t = 5, value_name = "N")]
        heal_limit: usize,
        /// …within this window; past it the app is left as it is until the window moves.
        #[arg(long, default_value = "10m", value_parser = duration_arg, value_name = "DURATION")]
        heal_window: Duration,
        /// Apply a directory that holds no app, removing every managed app
        /// from the hosts (refused without it, however the directory got so).
        #[arg(long)]
        allow_empty: bool,
        #[command(flatten)]
        apply: ApplyArgs,
    },
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
        command: VolumeCommand,
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
    /// Runs inside a helper container during a volume move.
    #[command(hide = true)]
    Helper {
        #[command(subcommand)]
        command: HelperCommand,
    },
}

#[derive(Subcommand)]
enum HelperCommand {
    /// Lists the volume, one JSON entry per line.
    Scan {
        /// Hash every regular file (reusing hashes of unchanged files).
        #[arg(long)]
        hash: bool,
    },
    /// Streams the paths read from stdin to stdout.
    Pack,
    /// Applies a stream read from stdin.
    Unpack,
    /// Deletes the paths read from stdin.
    Delete,
    /// Streams the paths read from stdin (after a token line) to a receiving helper.
    Send {
        #[arg(long)]
        to: String,
        /// At most this many bytes per second (for tests).
        #[arg(long)]
        rate: Option<u64>,
    },
    /// Waits for a sending helper (after reading the token from stdin) and unpacks its stream.
    Receive {
        #[arg(long)]
        port: u16,
    },
    /// Waits, so that commands can be run in the helper.
    Idle {
        #[arg(long, default_value_t = 21600)]
        seconds: u64,
    },
}

#[derive(Subcommand)]
enum VolumeCommand {
    /// Managed volumes on every host, with orphaned and retained copies marked.
    Ls {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Delete one managed volume and its data: `drover volume rm [DIR] --host HOST NAME`.
    Rm {
        /// `[DIR] NAME`: the manifest directory (default `.`) and the volume's
        /// Docker name (`<stack>-<volume>`).
        #[arg(num_args = 1..=2, required = true, value_names = ["DIR", "NAME"])]
        args: Vec<String>,
        /// The host the volume is on.
        #[arg(long)]
        host: String,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
    /// Record one copy of a volume as the current one and every other copy
    /// as retained (nothing is copied or deleted): `drover volume adopt
    /// [DIR] --host HOST NAME`. For a volume whose copy records were lost.
    Adopt {
        /// `[DIR] NAME`: the manifest directory (default `.`) and the volume's
        /// Docker name (`<stack>-<volume>`).
        #[arg(num_args = 1..=2, required = true, value_names = ["DIR", "NAME"])]
        args: Vec<String>,
        /// The host whose copy holds the data to keep.
        #[arg(long)]
        host: String,
    },
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
    if let Command::Helper { command } = cli.command {
        return helper(command);
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
    match run(cli.command) {
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
    // whatever DROVER_LOG asks for.
    let filter = ["bollard=info", "hyper=info", "hyper_util=info"]
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

/// A duration as the manifests write it (`60s`, `1m30s`, `500ms`), or seconds.
fn duration_arg(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    drover::load::decode::parse_duration(s).map(Duration::from_nanos)
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
            drover::load::decode::io_reason(&e)
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

fn helper(command: HelperCommand) -> ExitCode {
    use drover::helper::{self, ROOT, STATE};
    let root = Path::new(ROOT);
    let state = Path::new(STATE);
    helper::widen_pipes();
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let result = match command {
        HelperCommand::Scan { hash } => helper::scan_out(root, state, hash, &mut stdout),
        HelperCommand::Pack => helper::pack(root, state, stdin, &mut stdout),
        HelperCommand::Unpack => helper::unpack(root, state, stdin, &mut stdout),
        HelperCommand::Delete => helper::delete(root, stdin),
        HelperCommand::Send { to, rate } => {
            helper::send(root, state, &to, rate, stdin, &mut stdout)
        }
        HelperCommand::Receive { port } => helper::receive(root, state, port, stdin, &mut stdout),
        HelperCommand::Idle { seconds } => {
            drover::helper::idle(Duration::from_secs(seconds));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drover helper: {e}");
            ExitCode::from(1)
        }
    }
}

/// Prints each step of an apply as it finishes; on a terminal, volume moves
/// show a progress bar.
struct StepPrinter {
    color: bool,
    bars: Option<indicatif::MultiProgress>,
    moving: std::sync::Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
}

impl StepPrinter {
    fn bar(&self, a: &Action) -> Option<indicatif::ProgressBar> {
        let bars = self.bars.as_ref()?;
        let mut moving = self.moving.lock().unwrap_or_else(|p| p.into_inner());
        Some(
            moving
                .entry(a.id.clone())
                .or_insert_with(|| {
                    let b = bars.add(indicatif::ProgressBar::new(0));
                    b.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{prefix} {msg:8} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    b.set_prefix(format!("move {} to {}", a.name, a.host));
                    b
                })
                .clone(),
        )
    }
}

impl Reporter for StepPrinter {
    fn started(&self, a: &Action) {
        drover::apply::log_started(a);
    }

    fn progress(&self, a: &Action, p: &drover::relocate::Progress) {
        if let Some(b) = self.bar(a) {
            b.set_message(p.phase.as_str());
            if p.total > 0 {
                if b.length() != Some(p.total) {
                    b.set_length(p.total);
                    b.reset_eta();
                }
                b.set_position(p.done);
            }
        }
    }

    fn finished(&self, a: &Action, outcome: &Outcome, took: Duration) {
        let (green, red, yellow, reset) = if self.color {
            ("\x1b[32m", "\x1b[31m", "\x1b[33m", "\x1b[0m")
        } else {
            ("", "", "", "")
        };
        let head = format!(
            "{:<8} {:<9} {} on {}",
            a.action.to_string(),
            a.kind.to_string(),
            a.name,
            a.host
        );
        let line = match outcome {
            Outcome::Done => format!(
                "{green}done{reset}    {head} ({}) {:.1}s\n",
                a.reason,
                took.as_secs_f64()
            ),
            Outcome::Failed(e) => format!("{red}failed{reset}  {head}: {e}\n"),
            Outcome::Skipped(why) => format!("{yellow}skipped{reset} {head}: {why}\n"),
        };
        drover::apply::log_finished(a, outcome, took);
        let bar = self
            .moving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&a.id);
        match bar {
            Some(b) => {
                b.finish_and_clear();
                b.suspend(|| print(&line));
            }
            None => print(&line),
        }
    }
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

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

fn run(command: Command) -> Result<ExitCode, Failure> {
    match command {
        Command::Validate { dir } => {
            let spec = load_spec(&dir)?;
            let apps: usize = spec.stacks.values().map(|s| s.apps.len()).sum();
            print(&format!(
                "{}: valid ({}, {}, {})\n",
                dir.display(),
                plural(spec.stacks.len(), "stack"),
                plural(apps, "app"),
                plural(spec.hosts.len(), "host"),
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::Graph { dir, format } => {
            let spec = load_spec(&dir)?;
            print(&drover::load::graph::render(&spec, format));
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            print(&schema::manifest_schema());
            Ok(ExitCode::SUCCESS)
        }
        Command::Helper { command } => Ok(helper(command)),
        Command::Observe { dir, output } => {
            let spec = load_spec(&dir)?;
            let observed = observe_spec(&spec)?;
            match output {
                OutputFormat::Json => {
                    print(&(serde_json::to_string_pretty(&observed).expect("serializes") + "\n"))
                }
                OutputFormat::Text => print(&status_table(&desired::render(&spec), &observed)),
            }
            Ok(unreachable_exit(&observed))
        }
        Command::Status { dir } => {
            let spec = load_spec(&dir)?;
            let observed = observe_spec(&spec)?;
            print(&status_table(&desired::render(&spec), &observed));
            Ok(unreachable_exit(&observed))
        }
        Command::Volume { command } => volume(command),
        Command::Controller {
            dir,
            resync,
            listen,
            debounce,
            heal_limit,
            heal_window,
            allow_empty,
            apply,
        } => {
            let opts = drover::controller::Options {
                dir,
                resync,
                listen,
                debounce: drover::controller::schedule::Debounce {
                    quiet: debounce,
                    max: debounce * 10,
                },
                apply: apply.options(),
                heal_limit,
                heal_window,
                allow_empty,
            };
            let rt = runtime()?;
            rt.block_on(async {
                let stop = tokio_util::sync::CancellationToken::new();
                stop_on_signals(stop.clone())?;
                drover::controller::run(opts, stop).await?;
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Reconcile {
            dir,
            dry_run,
            observed,
            output,
            detailed_exitcode,
            prune_volumes,
            allow_empty,
            apply,
        } => {
            // A saved state is read while the manifests load.
            let saved = observed.map(|path| std::thread::spawn(move || read_observed(&path)));
            let spec = load_spec(&dir)?;
            let desired = Arc::new(desired::render(&spec));
            let rt = runtime()?;
            let (observed, mut conns) = match saved {
                Some(reading) => (
                    reading
                        .join()
                        .map_err(|_| "reading the saved state failed".to_string())??,
                    None,
                ),
                None => {
                    let conns = rt.block_on(connect_all(&spec));
                    (rt.block_on(observe_cluster(&spec, &conns)), Some(conns))
                }
            };
            let pass = Pass {
                spec: &spec,
                desired: Arc::clone(&desired),
                opts: Options {
                    prune_volumes,
                    allow_empty,
                },
            };
            let mut planned = pass.plan(observed);
            // Changes wait for the lease of every host, then are planned
            // again against what the hosts hold now: another drover may
            // have been at work.
            let stop = tokio_util::sync::CancellationToken::new();
            if let Some(conns) = conns.as_mut().filter(|_| !dry_run && pass.writes(&planned)) {
                // From here a first Ctrl-C starts no further step, and the
                // leases are released.
                rt.block_on(async { stop_on_signals(stop.clone()) })?;
                let holder = Arc::new(Holder::new("reconcile"));
                rt.block_on(pass.lock(&mut planned, conns, &holder, &stop))?;
            }
            // A plan read while another drover holds a lease may soon be
            // out of date; say so (an applying run holds the leases itself).
            if dry_run {
                for (host, h) in &planned.observed.hosts {
                    if h.containers
                        .iter()
                        .any(|c| c.internal && c.name == drover::onhost::lease::NAME)
                    {
                        planned.plan.warnings.push(format!(
                            "host `{host}` is being changed by another drover (its lease is held): this plan may soon be out of date"
                        ));
                    }
                }
            }
            let color = use_color(std::io::stdout().is_terminal());
            let show_plan = |plan: &plan::Plan| match output {
                OutputFormat::Json => print(&plan_json(plan)),
                OutputFormat::Text => print(&plan_text(plan, color)),
            };
            for e in &planned.plan.errors {
                if output == OutputFormat::Json || !dry_run {
                    eprintln!("error: {e}");
                }
            }
            // A dry run ends here: the executor, the only thing that writes,
            // is never built on this path.
            let Some(conns) = conns.filter(|_| !dry_run) else {
                show_plan(&planned.plan);
                let code = if !planned.plan.errors.is_empty() {
                    ExitCode::from(1)
                } else if detailed_exitcode && !planned.plan.in_sync {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
                // The process ends here: freeing a large spec and state piece
                // by piece would only delay the exit.
                std::mem::forget((spec, desired, planned));
                return Ok(code);
            };
            if output == OutputFormat::Text {
                show_plan(&planned.plan);
            }
            let quiet: Arc<dyn Reporter> = Arc::new(Quiet);
            if planned.plan.actions.is_empty() {
                let applied = rt.block_on(pass.apply(planned, &conns, apply.options(), quiet));
                if output == OutputFormat::Json {
                    show_plan(&applied.plan);
                }
                return Ok(if applied.plan.errors.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                });
            }
            if output == OutputFormat::Text {
                print("\n");
            }
            let reporter: Arc<dyn Reporter> = Arc::new(StepPrinter {
                color,
                bars: std::io::stderr()
                    .is_terminal()
                    .then(indicatif::MultiProgress::new),
                moving: Default::default(),
            });
            let applied = rt.block_on(pass.apply(
                planned,
                &conns,
                apply.options(),
                if output == OutputFormat::Text {
                    reporter
                } else {
                    quiet
                },
            ));
            let (plan, report, lost) = (applied.plan, applied.report, applied.lost);
            let done = report.count(|o| *o == Outcome::Done);
            let failed = report.count(|o| matches!(o, Outcome::Failed(_)));
            let skipped = report.count(|o| matches!(o, Outcome::Skipped(_)));
            match output {
                OutputFormat::Text => print(&format!(
                    "\nApplied: {done} done, {failed} failed, {skipped} skipped.\n"
                )),
                OutputFormat::Json => {
                    let mut v = serde_json::to_value(&plan).expect("serializes");
                    v["results"] = report
                        .outcomes
                        .iter()
                        .map(|(a, o)| match o {
                            Outcome::Done => serde_json::json!({"id": a.id, "outcome": "done"}),
                            Outcome::Failed(e) => {
                                serde_json::json!({"id": a.id, "outcome": "failed", "error": e})
                            }
                            Outcome::Skipped(w) => {
                                serde_json::json!({"id": a.id, "outcome": "skipped", "reason": w})
                            }
                        })
                        .collect();
                    print(&(serde_json::to_string_pretty(&v).expect("serializes") + "\n"));
                }
            }
            for (a, o) in &report.outcomes {
                if let Outcome::Failed(e) = o {
                    eprintln!(
                        "error: {} {} `{}` on `{}` failed: {e}",
                        a.action, a.kind, a.name, a.host
                    );
                }
            }
            for e in &lost {
                eprintln!("error: {e}");
            }
            Ok(
                if failed + skipped > 0 || !plan.errors.is_empty() || !lost.is_empty() {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                },
            )
        }
    }
}

struct Quiet;

impl Reporter for Quiet {
    fn started(&self, _: &Action) {}
    fn finished(&self, _: &Action, _: &Outcome, _: Duration) {}
}

/// `[DIR] NAME` of a volume command.
fn dir_and_name(args: &[String], command: &str) -> Result<(PathBuf, String), Failure> {
    match args {
        [name] => Ok((PathBuf::from("."), name.clone())),
        [dir, name] => Ok((PathBuf::from(dir), name.clone())),
        _ => Err(format!("usage: drover volume {command} [DIR] --host HOST NAME").into()),
    }
}

fn volume(command: VolumeCommand) -> Result<ExitCode, Failure> {
    match command {
        VolumeCommand::Ls { dir } => {
            let spec = load_spec(&dir)?;
            let observed = observe_spec(&spec)?;
            print(&volume_table(&desired::render(&spec), &observed));
            Ok(unreachable_exit(&observed))
        }
        VolumeCommand::Adopt { args, host } => {
            let (dir, name) = dir_and_name(&args, "adopt")?;
            let spec = load_spec(&dir)?;
            let rt = runtime()?;
            let mut conns = rt.block_on(connect_all(&spec));
            let stop = tokio_util::sync::CancellationToken::new();
            let holder = Arc::new(Holder::new("volume adopt"));
            let (leases, observed) = rt.block_on(take_and_observe(&mut conns, &holder, &stop))?;
            let done = rt.block_on(drover::onhost::records::adopt(
                &conns.engines,
                &observed,
                &name,
                &host,
            ));
            rt.block_on(leases.release());
            for line in done? {
                print(&format!("{line}\n"));
            }
            Ok(ExitCode::SUCCESS)
        }
        VolumeCommand::Rm { args, host, yes } => {
            let (dir, name) = dir_and_name(&args, "rm")?;
            let spec = load_spec(&dir)?;
            let d = desired::render(&spec);
            let rt = runtime()?;
            let conns = rt.block_on(connect_all(&spec));
            let Some(api) = conns.engines.get(&host) else {
                return Err(match conns.unreachable.get(&host) {
                    Some(reason) => format!("host `{host}` could not be read: {reason}"),
                    None => format!("`{host}` is not a host of the Cluster"),
                }
                .into());
            };
            // Read and deleted under the host's lease: no move or other
            // drover works on it meanwhile.
            let lease = rt
                .block_on(drover::onhost::lease::take(
                    api.as_ref(),
                    &Holder::new("volume rm"),
                ))
                .map_err(|e| e.to_string())?;
            let result = (|| -> Result<ExitCode, Failure> {
                let state = rt
                    .block_on(api.observe())
                    .map_err(|e| format!("host `{host}` could not be read: {e}"))?;
                let Some(v) = state.volumes.iter().find(|v| v.name == name) else {
                    return Err(format!("there is no volume `{name}` on `{host}`").into());
                };
                if !v.managed {
                    return Err(format!(
                    "volume `{name}` on `{host}` is not managed by drover; drover never deletes it"
                )
                    .into());
                }
                if !v.used_by.is_empty() {
                    return Err(format!(
                        "volume `{name}` on `{host}` is in use by {}",
                        v.used_by.join(", ")
                    )
                    .into());
                }
                let authoritative = d
                    .hosts
                    .get(&host)
                    .is_some_and(|h| h.volumes.contains_key(&name))
                    && drover::plan::may_be_current(v);
                // An unfinished copy whose move passed its switch holds the
                // newest data: its source's record says so.
                if let Some(r) = v
                    .copy
                    .as_ref()
                    .filter(|r| r.role == drover::observed::CopyRole::Incoming)
                {
                    let peer = r.peer.clone().unwrap_or_default();
                    let switched = match conns.engines.get(&peer) {
                    Some(p) => rt
                        .block_on(p.observe())
                        .map_err(|e| format!("host `{peer}`, the source of this copy, could not be read ({e}); nothing was deleted"))?
                        .volumes
                        .iter()
                        .filter(|o| o.name == name)
                        .filter_map(|o| o.copy.as_ref())
                        .any(|c| {
                            c.phase == Some(drover::observed::MovePhase::Switch)
                                && c.moving_to.as_deref() == Some(host.as_str())
                        }),
                    None => {
                        return Err(format!(
                            "host `{peer}`, the source of this copy, could not be read; nothing was deleted"
                        )
                        .into())
                    }
                };
                    if switched {
                        return Err(format!(
                        "volume `{name}` on `{host}` is the target of a move that passed its switch and may hold the newest data; run `drover reconcile` to finish the move first"
                    )
                    .into());
                    }
                }
                if authoritative {
                    return Err(format!(
                    "volume `{name}` on `{host}` holds the current data of a volume in the manifests; remove it from the manifests first"
                )
                .into());
                }
                if !yes {
                    if !std::io::stdin().is_terminal() {
                        return Err("deleting volume data needs confirmation: pass `--yes`"
                            .to_string()
                            .into());
                    }
                    eprint!("Delete volume `{name}` on `{host}` and all its data? [y/N] ");
                    let mut answer = String::new();
                    let _ = std::io::stdin().lock().read_line(&mut answer);
                    if !matches!(answer.trim(), "y" | "Y" | "yes") {
                        eprintln!("nothing was deleted");
                        return Ok(ExitCode::from(1));
                    }
                }
                rt.block_on(api.remove_volume(&name))
                    .map_err(|e| e.to_string())?;
                // The records about the deleted copy go with it (found by
                // the volume they are about, never by a name prefix).
                let records: Vec<_> = state.records_of(&name).cloned().collect();
                rt.block_on(drover::onhost::records::remove(api.as_ref(), &records));
                print(&format!("deleted volume `{name}` on `{host}`\n"));
                Ok(ExitCode::SUCCESS)
            })();
            rt.block_on(drover::onhost::lease::release(api.as_ref(), &lease));
            result
        }
    }
}
