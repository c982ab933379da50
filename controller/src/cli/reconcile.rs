//! `drover reconcile`: one pass, shown as it goes.

use super::*;

/// `drover reconcile`'s arguments.
#[derive(Args)]
pub struct ReconcileArgs {
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Only print the plan; nothing is written anywhere.
    #[arg(long)]
    pub dry_run: bool,
    /// Plan against a state saved by `drover observe` instead of reading hosts.
    #[arg(long, value_name = "FILE", requires = "dry_run")]
    pub observed: Option<PathBuf>,
    /// `markdown` (a pull-request comment) with `--dry-run` only.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub output: PlanFormat,
    /// Exit 0 when in sync, 2 when changes are pending, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Also delete orphaned and retained volume copies.
    #[arg(long)]
    pub prune_volumes: bool,
    /// Apply manifests that hold no app, removing every managed app
    /// from the hosts (refused without it).
    #[arg(long)]
    pub allow_empty: bool,
    #[command(flatten)]
    pub apply: ApplyArgs,
}

pub fn run(args: ReconcileArgs) -> Result<ExitCode, Failure> {
    let ReconcileArgs {
        dir,
        dry_run,
        observed,
        output,
        detailed_exitcode,
        prune_volumes,
        allow_empty,
        apply,
    } = args;
    if output == PlanFormat::Markdown && !dry_run {
        return Err(Failure::Message(
            "`--output markdown` shows a plan for review: add `--dry-run`".into(),
        ));
    }
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
        PlanFormat::Json => print(&plan_json(plan)),
        PlanFormat::Text => print(&plan_text(plan, color)),
        PlanFormat::Markdown => print(&plan_markdown(plan)),
    };
    for e in &planned.plan.errors {
        if output != PlanFormat::Text || !dry_run {
            eprintln!("error: {e}");
        }
    }
    // A dry run ends here: the executor, the only thing that writes,
    // is never built on this path.
    if let Some(conns) = &conns {
        rt.block_on(drover::pass::size_moves(&mut planned, conns));
    }
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
    if output == PlanFormat::Text {
        show_plan(&planned.plan);
    }
    let quiet: Arc<dyn Reporter> = Arc::new(Quiet);
    if planned.plan.actions.is_empty() {
        let applied = rt.block_on(pass.apply(planned, &conns, apply.options(), quiet));
        if output == PlanFormat::Json {
            show_plan(&applied.plan);
        }
        return Ok(if applied.plan.errors.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    if output == PlanFormat::Text {
        print("\n");
    }
    let reporter: Arc<dyn Reporter> = Arc::new(StepPrinter {
        color,
        bars: std::io::stderr()
            .is_terminal()
            .then(indicatif::MultiProgress::new),
        moving: Default::default(),
        downtime: Default::default(),
    });
    let applied = rt.block_on(pass.apply(
        planned,
        &conns,
        apply.options(),
        if output == PlanFormat::Text {
            reporter
        } else {
            quiet
        },
    ));
    let (plan, report, lost) = (applied.plan, applied.report, applied.lost);
    let done = report.count(|o| *o == Outcome::Done);
    let failed = report.count(|o| matches!(o, Outcome::Failed(_)));
    let skipped = report.count(|o| matches!(o, Outcome::Skipped(_) | Outcome::Cancelled(_)));
    match output {
        PlanFormat::Text => print(&format!(
            "\nApplied: {done} done, {failed} failed, {skipped} skipped.\n"
        )),
        PlanFormat::Json | PlanFormat::Markdown => {
            let mut v = plan_value(&plan);
            v["results"] = report
                .outcomes
                .iter()
                .map(|(a, o)| match o {
                    Outcome::Done => serde_json::json!({"id": a.id, "outcome": "done"}),
                    Outcome::Failed(e) => {
                        serde_json::json!({"id": a.id, "outcome": "failed", "error": e})
                    }
                    Outcome::Skipped(w) | Outcome::Cancelled(w) => {
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

/// Prints each step of an apply as it finishes; on a terminal, volume moves
/// show a progress bar.
struct StepPrinter {
    color: bool,
    bars: Option<indicatif::MultiProgress>,
    moving: std::sync::Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
    /// The apps' downtime of each move, once they started on the target.
    downtime: std::sync::Mutex<std::collections::HashMap<String, Duration>>,
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
        if let Some(d) = p.downtime {
            self.downtime
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(a.id.clone(), d);
        }
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
        let down = self
            .downtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&a.id)
            .map(|d| format!(", apps down {}", drover::output::human_duration(d)))
            .unwrap_or_default();
        let line = match outcome {
            Outcome::Done => format!(
                "{green}done{reset}    {head} ({}) {:.1}s{down}\n",
                a.reason,
                took.as_secs_f64()
            ),
            Outcome::Failed(e) => format!("{red}failed{reset}  {head}: {e}\n"),
            Outcome::Skipped(why) | Outcome::Cancelled(why) => {
                format!("{yellow}skipped{reset} {head}: {why}\n")
            }
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

struct Quiet;

impl Reporter for Quiet {
    fn started(&self, _: &Action) {}
    fn finished(&self, _: &Action, _: &Outcome, _: Duration) {}
}
