//! `drover controller`: keeps every host in line with the directory, all the
//! time.
//!
//! The parts, kept apart as in kube-runtime: [`watch`] turns file changes
//! and each host's Docker events into triggers; [`schedule`] folds triggers
//! into passes (debounced, never overlapping); a *pass* is the same
//! load → render → observe → plan → apply walk as `drover reconcile`, and is
//! never told why it runs, so it must be idempotent; [`limits`] holds the
//! brakes (backoff for failing hosts, a cap on restoring one app); [`http`]
//! serves `/healthz` and [`metrics`].
//!
//! Failures are sorted as the style guide asks: an invalid directory is
//! permanent until the next change (the last good spec stays in force and
//! nothing from the invalid files is applied); a host or API failure is
//! transient (retried with backoff that resets on success, while the other
//! hosts keep converging). Nothing here ever makes the controller exit but a
//! signal.

pub mod backups;
pub mod dashboard;
pub mod follow;
mod heal;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod notify;
pub mod rollback;
pub mod schedule;
pub mod snapshots;
mod status;
pub mod watch;

pub use heal::drop_with_dependents;
use status::{unix_at, unix_now};
pub use status::{HostStatus, ManifestStatus, PassSummary, Shared, Status, Throttled};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::apply::{ApplyOptions, Outcome, Reporter};
use crate::desired::{self, Desired};
use crate::docker::hosts::{connect, observe_cluster};
use crate::load::interpolate::ProcessEnv;
use crate::load::{load, LoadError};
use crate::model::{Host, Spec};
use crate::observed::Observed;
use crate::onhost::lease::Holder;
use crate::pass::Pass;
use crate::plan::{self, Action, Kind, Plan, Verb};
use limits::{jitter, AppKey, Backoff, HealLimit};
use metrics::{AppLabels, HostLabel, Metrics, ResultLabel};
use schedule::{Debounce, Trigger, Wake};

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub dir: PathBuf,
    /// A pass at least this often, even without a trigger.
    pub resync: Duration,
    pub listen: Option<SocketAddr>,
    pub debounce: Debounce,
    pub apply: ApplyOptions,
    /// At most this many restorations of one app…
    pub heal_limit: usize,
    /// …within this window.
    pub heal_window: Duration,
    /// Apply a directory that holds no app (see [`plan::Options`]).
    pub allow_empty: bool,
    /// Follow a Git remote instead of watching `dir`.
    pub git: Option<follow::GitSource>,
    /// `--notify` URLs, and how events are written to them.
    pub notify: Vec<String>,
    pub notify_format: notify::Format,
    /// `user:password` the dashboard asks for (`--dashboard-auth-env`).
    pub dashboard_auth: Option<String>,
}

/// Runs until `stop` is cancelled (a signal): then the current step
/// finishes, or a volume move stops at a point it can resume from, and
/// this returns.
pub async fn run(opts: Options, stop: CancellationToken) -> Result<(), String> {
    let follow = opts
        .git
        .as_ref()
        .map(|g| Arc::new(follow::Follow::new(g.webhook_secret.clone())));
    let mut shared = Shared::new(follow.clone());
    shared.dashboard_auth = opts
        .dashboard_auth
        .as_deref()
        .map(dashboard::basic_credentials);
    let exposed = opts
        .listen
        .is_some_and(|a| !a.ip().is_loopback() && shared.dashboard_auth.is_none());
    shared.update_view(|v| v.protected = !exposed);
    let shared = Arc::new(shared);
    let server = match opts.listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            tracing::info!(%addr, "serving the dashboard at /, /healthz and /metrics");
            if exposed {
                tracing::warn!(%addr, "the dashboard is served beyond loopback without a password: anyone who reaches it sees the cluster (set --dashboard-auth-env)");
            }
            Some(tokio::spawn(http::serve(
                listener,
                Arc::clone(&shared),
                stop.clone(),
            )))
        }
        None => None,
    };
    let trigger = Trigger::default();
    let notifier = notify::Notifier::start(&opts.notify, opts.notify_format, Arc::clone(&shared));
    let (_files, fetcher) = match (&opts.git, &follow) {
        (Some(git), Some(follow)) => {
            shared.update(|s| {
                s.revision = Some(follow::RevisionStatus {
                    remote: crate::git::shown_url(&git.remote.url),
                    branch: git.remote.branch.clone(),
                    ..Default::default()
                })
            });
            tracing::info!(remote = %crate::git::shown_url(&git.remote.url), branch = %git.remote.branch, interval = ?git.interval, "following a Git remote");
            let task = tokio::spawn(follow::fetch_loop(
                git.clone(),
                Arc::clone(follow),
                Arc::clone(&shared),
                trigger.clone(),
                stop.clone(),
            ));
            (None, Some(task))
        }
        _ => (Some(watch::watch_dir(&opts.dir, trigger.clone())?), None),
    };
    let mut c = Controller::new(opts, Arc::clone(&shared), trigger.clone());
    c.follow = follow;
    c.notifier = notifier;
    tracing::info!(dir = %c.opts.dir.display(), resync = ?c.opts.resync, "controller started");
    // The first pass runs at once.
    let mut deadline = Instant::now();
    loop {
        let at = tokio::time::Instant::from_std(deadline);
        if trigger.next(at, c.opts.debounce, &stop).await == Wake::Stop {
            break;
        }
        // A bug in one pass must not end the controller: it is logged and
        // counted as a failed pass, and the next one starts afresh.
        deadline = match std::panic::AssertUnwindSafe(c.pass(&stop))
            .catch_unwind()
            .await
        {
            Ok(next) => next,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(panic = %what, "a pass failed unexpectedly");
                c.shared
                    .metrics
                    .passes
                    .get_or_create(&ResultLabel {
                        result: "failed".into(),
                    })
                    .inc();
                Instant::now() + Duration::from_secs(5)
            }
        };
        if stop.is_cancelled() {
            break;
        }
    }
    shared.update(|s| {
        s.stopping = true;
        s.ready = false;
        s.reason = Some("shutting down".into());
    });
    tracing::info!("controller stopped");
    c.stop_watchers();
    if let Some(f) = fetcher {
        let _ = f.await;
    }
    if let Some(server) = server {
        let _ = server.await;
    }
    Ok(())
}

/// One host's event watcher, restarted when the host's settings change.
struct HostWatch {
    host: Host,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct Controller {
    opts: Options,
    shared: Arc<Shared>,
    trigger: Trigger,
    last_good: Option<Arc<Spec>>,
    watchers: BTreeMap<String, HostWatch>,
    /// Hosts that could not be reached, and when to try each again.
    unreachable: BTreeMap<String, Backoff>,
    /// Failed passes in a row, and when to try again.
    retry: Backoff,
    heals: HealLimit,
    /// Containers seen running with the spec they have now, as
    /// `(host, name, spec hash)`: making one of them again is a restoration.
    seen: HashSet<(String, String, String)>,
    throttled_before: BTreeSet<AppKey>,
    passes: u64,
    /// This controller as a lease holder, the same for every pass.
    holder: Arc<Holder>,
    /// When it started (Unix seconds): no scheduled snapshot is overdue
    /// before it had its chance.
    started_unix: u64,
    /// When each volume was last backed up, per repository.
    backups: backups::Known,
    /// With `--git`: the commits the fetch task brings.
    follow: Option<Arc<follow::Follow>>,
    /// The commit of the spec in force (`last_good`).
    in_force: Option<crate::git::Revision>,
    /// The commit last read, and what reading it gave.
    read: Option<(String, Result<(), Vec<String>>)>,
    notifier: notify::Notifier,
    /// Events already sent, so that each is said once.
    said: HashSet<(notify::Kind, String)>,
    /// `rollback: auto` stacks: their last healthy revision, quarantines.
    rollbacks: rollback::Rollbacks,
}

impl Controller {
    fn new(mut opts: Options, shared: Arc<Shared>, trigger: Trigger) -> Controller {
        let started_unix = crate::data::clock::now();
        // Passes back to back would only load the hosts.
        opts.resync = opts.resync.max(Duration::from_secs(1));
        let resync = opts.resync;
        Controller {
            heals: HealLimit::new(opts.heal_limit, opts.heal_window),
            opts,
            shared,
            trigger,
            last_good: None,
            watchers: BTreeMap::new(),
            unreachable: BTreeMap::new(),
            retry: Backoff::new(Duration::from_secs(1), resync),
            seen: HashSet::new(),
            throttled_before: BTreeSet::new(),
            passes: 0,
            holder: Arc::new(Holder::new("controller")),
            started_unix,
            backups: backups::Known::default(),
            follow: None,
            in_force: None,
            read: None,
            notifier: notify::Notifier::default(),
            said: HashSet::new(),
            rollbacks: rollback::Rollbacks::default(),
        }
    }

    fn stop_watchers(&mut self) {
        for (_, w) in std::mem::take(&mut self.watchers) {
            w.stop.cancel();
            w.task.abort();
        }
    }

    /// One event watcher per host of the spec in force.
    fn sync_watchers(&mut self, spec: &Spec) {
        self.watchers.retain(|name, w| {
            let keep = spec.hosts.get(name) == Some(&w.host);
            if !keep {
                w.stop.cancel();
            }
            keep
        });
        for (name, host) in &spec.hosts {
            if self.watchers.contains_key(name) {
                continue;
            }
            let stop = CancellationToken::new();
            let task = tokio::spawn(watch::watch_host(
                host.clone(),
                self.trigger.clone(),
                stop.clone(),
            ));
            self.watchers.insert(
                name.clone(),
                HostWatch {
                    host: host.clone(),
                    stop,
                    task,
                },
            );
        }
    }

    /// Loads the directory once its files have been quiet for the debounce
    /// time — by the watcher's events and by their modification times, which
    /// do not lag behind a write — and again if they changed while it was
    /// read: a file half written (an editor, a `git pull` under way) is
    /// never acted on. Keeps the last good spec when the directory is
    /// invalid, or still changing after a few reads (the change's own
    /// trigger brings the next pass).
    async fn load(&mut self) -> Result<(), Vec<String>> {
        if let Some(follow) = self.follow.clone() {
            return self.load_commit(&follow).await;
        }
        let quiet = self.opts.debounce.quiet;
        let newest = |dir: PathBuf| async move {
            tokio::task::spawn_blocking(move || watch::newest_change(&dir))
                .await
                .ok()
                .flatten()
        };
        let mut loaded = None;
        for _ in 0..5 {
            let events = self.trigger.files_settled(quiet).await;
            let changed = newest(self.opts.dir.clone()).await;
            // A time in the future (a skewed clock) says nothing: the
            // comparison after the read still holds.
            let age = changed.map_or(quiet, |t| {
                SystemTime::now().duration_since(t).unwrap_or(quiet)
            });
            if age < quiet {
                tokio::time::sleep(quiet - age).await;
                continue;
            }
            let dir = self.opts.dir.clone();
            let read = tokio::task::spawn_blocking(move || load(&dir, &ProcessEnv)).await;
            if self.trigger.file_changes() == events
                && newest(self.opts.dir.clone()).await == changed
            {
                loaded = Some(read);
                break;
            }
        }
        let Some(loaded) = loaded else {
            tracing::info!("the manifests keep changing; the spec in force stays for this pass");
            return match self.last_good {
                Some(_) => Ok(()),
                None => Err(vec!["the manifests keep changing".into()]),
            };
        };
        self.took(loaded, |e| e)
    }

    /// With `--git`: reads the newest commit the fetch task wrote out, once.
    async fn load_commit(&mut self, follow: &follow::Follow) -> Result<(), Vec<String>> {
        let Some(tree) = follow.latest() else {
            return match self.last_good {
                Some(_) => Ok(()),
                None => Err(vec!["waiting for the first fetch of the Git remote".into()]),
            };
        };
        let sha = tree.revision.sha.clone();
        if let Some((read, result)) = &self.read {
            if *read == sha {
                return result.clone();
            }
        }
        let dir = tree.dir.clone();
        let read = tokio::task::spawn_blocking(move || load(&dir, &ProcessEnv)).await;
        // Errors name files as the repository does, not the work folder.
        let prefix = format!("{}/", tree.dir.display());
        let path = self
            .opts
            .git
            .as_ref()
            .map(|g| g.remote.path.display().to_string())
            .unwrap_or_default();
        let shown = move |e: String| match e.strip_prefix(&prefix) {
            Some(rest) if path.is_empty() => rest.to_string(),
            Some(rest) => format!("{path}/{rest}"),
            None => e,
        };
        let result = self.took(read, shown);
        let rev = tree.revision.clone();
        match &result {
            Ok(()) => {
                tracing::info!(sha = %rev.sha, subject = %rev.subject, "applying a new commit");
                self.in_force = Some(rev.clone());
                self.set_latest(&rev, follow::RevisionState::Applying, Vec::new());
            }
            Err(errors) => {
                tracing::error!(sha = %rev.sha, errors = errors.len(), "the manifests at this commit are invalid; it is not applied");
                self.set_latest(&rev, follow::RevisionState::Invalid, errors.clone());
                let message = format!(
                    "the manifests at {} are invalid; the revision in force stays: {}",
                    rev.short(),
                    errors.join("; ")
                );
                self.say(notify::Event::new(
                    notify::Kind::RevisionInvalid,
                    Some(&rev.sha),
                    message,
                ));
            }
        }
        self.read = Some((sha, result.clone()));
        // Only the trees of the commit in force and the newest are kept.
        if let Some(git) = &self.opts.git {
            let mut keep = vec![rev.sha.clone()];
            keep.extend(self.in_force.iter().map(|r| r.sha.clone()));
            let remote = git.remote.clone();
            tokio::task::spawn_blocking(move || {
                remote.prune(&keep.iter().map(String::as_str).collect::<Vec<_>>())
            });
        }
        result
    }

    fn set_latest(
        &self,
        rev: &crate::git::Revision,
        state: follow::RevisionState,
        errors: Vec<String>,
    ) {
        self.shared.update(|s| {
            let r = s.revision.get_or_insert_with(Default::default);
            r.latest = Some(follow::Latest {
                sha: rev.sha.clone(),
                subject: rev.subject.clone(),
                state,
                errors,
            });
        });
    }

    /// Sends `event` unless the same kind was sent for the same key.
    fn say(&mut self, event: notify::Event) {
        let key = (event.event, event.revision.clone().unwrap_or_default());
        if self.said.insert(key) {
            self.notifier.send(event);
        }
    }

    /// What a read of the manifests gave: the spec in force on success;
    /// the errors (each through `shown`) otherwise.
    fn took(
        &mut self,
        loaded: Result<Result<Spec, LoadError>, tokio::task::JoinError>,
        shown: impl Fn(String) -> String,
    ) -> Result<(), Vec<String>> {
        let errors: Vec<String> = match loaded {
            Ok(Ok(spec)) => {
                self.last_good = Some(Arc::new(spec));
                self.shared.metrics.manifests_valid.set(1);
                self.shared.update(|s| {
                    s.manifests = ManifestStatus {
                        valid: true,
                        errors: Vec::new(),
                        in_force: true,
                    }
                });
                return Ok(());
            }
            Ok(Err(LoadError::Invalid(d))) => {
                d.0.iter()
                    .map(|d| shown(format!("{}: {}", d.loc, d.message)))
                    .collect()
            }
            Ok(Err(other)) => vec![other.to_string()],
            Err(e) => vec![format!("loading the manifests failed: {e}")],
        };
        // Said once per new set of problems, not on every pass.
        let known = self.shared.status().manifests.errors == errors;
        for e in &errors {
            if known {
                tracing::debug!(error = %e, "the manifests are still invalid");
            } else {
                tracing::error!(error = %e, "the manifests are invalid; the last good spec stays in force");
            }
        }
        self.shared.metrics.manifests_valid.set(0);
        let in_force = self.last_good.is_some();
        self.shared.update(|s| {
            s.manifests = ManifestStatus {
                valid: false,
                errors: errors.clone(),
                in_force,
            }
        });
        Err(errors)
    }

    /// One pass, in its own span; returns when the next one is due without
    /// a trigger.
    async fn pass(&mut self, stop: &CancellationToken) -> Instant {
        self.passes += 1;
        let span = tracing::info_span!("pass", n = self.passes);
        self.pass_in_span(stop).instrument(span).await
    }

    async fn pass_in_span(&mut self, stop: &CancellationToken) -> Instant {
        let n = self.passes;
        let started = Instant::now();
        let manifests = self.load().await;
        let Some(spec) = self.last_good.clone() else {
            let errors = manifests.err().unwrap_or_default();
            self.finish(n, started, false, Default::default(), errors, 0);
            // Nothing to enforce until the directory is valid: the file
            // watcher brings the next pass.
            return Instant::now() + self.opts.resync;
        };
        // A stack quarantined at this commit stays as it was when healthy.
        let spec = match (&self.follow, &self.in_force) {
            (Some(_), Some(rev)) => self.rollbacks.spec(spec, &rev.sha),
            _ => spec,
        };
        self.show_quarantines();
        self.sync_watchers(&spec);
        let desired = Arc::new(desired::render(&spec));

        let now = Instant::now();
        let (try_now, waiting): (Vec<&Host>, Vec<&Host>) = spec
            .hosts
            .values()
            .partition(|h| self.unreachable.get(&h.name).is_none_or(|b| b.ready(now)));
        let tried: BTreeSet<String> = try_now.iter().map(|h| h.name.clone()).collect();
        let mut conns = connect(try_now).await;
        for h in waiting {
            let b = &self.unreachable[&h.name];
            let wait = b
                .retry_at()
                .map_or(0, |t| t.saturating_duration_since(now).as_secs());
            conns.unreachable.insert(
                h.name.clone(),
                format!(
                    "{} (next try in {wait}s)",
                    b.last_error().unwrap_or("unreachable")
                ),
            );
        }
        let observed = observe_cluster(&spec, &conns).await;
        self.note_hosts(&spec, &tried, &observed);
        // Changes wait for the lease of every host, and are planned against
        // what the hosts hold once it is taken.
        let pass = Pass {
            spec: &spec,
            desired: Arc::clone(&desired),
            opts: plan::Options {
                // A commit that removes every stack is a real deletion (the
                // directory owns its hosts); it is said loudly below.
                allow_empty: self.opts.allow_empty || self.follow.is_some(),
                ..Default::default()
            },
        };
        let mut planned = pass.plan(observed);
        if self.follow.is_some() {
            for w in &planned.plan.warnings {
                if w.starts_with("the manifests hold no app") {
                    tracing::error!(warning = %w, "this commit removes every stack");
                    let rev = self.in_force.as_ref().map(|r| r.sha.clone());
                    self.say(notify::Event::new(
                        notify::Kind::PassFailed,
                        rev.as_deref(),
                        format!("this commit removes every stack: {w}"),
                    ));
                }
            }
        }
        if let Err(reason) = pass
            .lock(&mut planned, &mut conns, &self.holder, stop)
            .await
        {
            // Another drover is at work: nothing is done this pass.
            planned.plan.actions.clear();
            planned.plan.errors.push(reason.to_string());
        }
        crate::pass::size_moves(&mut planned, &conns).await;
        self.remember_running(&desired, &planned.observed);

        let throttled = self.limit_heals(&desired, &mut planned.plan);
        let mut errors = planned.plan.errors.clone();
        let mut counts = Counts {
            throttled,
            ..Counts::default()
        };
        for a in &planned.plan.actions {
            tracing::info!(host = %a.host, kind = %a.kind, action = %a.action, name = %a.name, reason = %a.reason, "planned");
        }
        let reporter = Arc::new(PassReporter {
            shared: Arc::clone(&self.shared),
            moved: Mutex::new(HashMap::new()),
            notifier: self.notifier.clone(),
            revision: self.in_force.as_ref().map(|r| r.sha.clone()),
        });
        let seen = planned.observed.clone();
        let applied = pass.apply(planned, &conns, self.opts.apply, reporter).await;
        self.show_on_dashboard(&spec, &desired, &conns, &seen, &applied.report);
        let mut snapshot_errors = self
            .scheduled_snapshots(&desired, &mut conns, &seen, stop)
            .await;
        snapshot_errors.extend(
            self.scheduled_backups(&desired, &mut conns, &seen, stop)
                .await,
        );
        let mut failed_hosts = BTreeSet::new();
        for (a, o) in &applied.report.outcomes {
            match o {
                Outcome::Done => counts.done += 1,
                Outcome::Failed(e) => {
                    counts.failed += 1;
                    errors.push(format!(
                        "{} {} `{}` on `{}` failed: {e}",
                        a.action, a.kind, a.name, a.host
                    ));
                    failed_hosts.insert(a.host.clone());
                }
                Outcome::Skipped(why) | Outcome::Cancelled(why) => {
                    counts.skipped += 1;
                    errors.push(format!(
                        "{} {} `{}` on `{}` skipped: {why}",
                        a.action, a.kind, a.name, a.host
                    ));
                }
            }
        }
        for h in failed_hosts {
            self.shared
                .metrics
                .host_errors
                .get_or_create(&HostLabel { host: h })
                .inc();
        }
        errors.extend(applied.lost);
        errors.extend(snapshot_errors);
        // Throttled apps are not a failure of the pass: they are the brake
        // doing its work, and /healthz lists them.
        let converged = errors.is_empty() && counts.failed == 0 && counts.skipped == 0;
        for e in &errors {
            tracing::warn!(error = %e, "pass did not converge");
        }
        if let Err(e) = &manifests {
            errors.extend(e.iter().cloned());
        }
        let rolled_back = self
            .health_gate(
                &spec,
                &desired,
                &applied.report.outcomes,
                &conns,
                &seen,
                stop,
            )
            .await;
        self.revision_done(converged, &errors, &conns, &seen).await;
        let next = self.finish(
            n,
            started,
            converged && manifests.is_ok(),
            counts,
            errors,
            throttled,
        );
        let mut due = Instant::now() + self.opts.resync;
        if rolled_back {
            // The stacks go back at once.
            due = Instant::now();
        }
        // Hosts and steps that failed are retried soon; invalid manifests
        // are not (they stay invalid until a change, which triggers a pass).
        if !converged && !stop.is_cancelled() {
            let delay = self.retry.failed(now, "pass failed".into(), jitter());
            due = due.min(Instant::now() + delay);
        } else {
            self.retry.succeeded();
        }
        let snapshot_due = snapshots::next_due_in(&desired, &seen, crate::data::clock::now())
            .map(|s| Instant::now() + Duration::from_secs(s.max(1)));
        let backup_due =
            backups::next_due_in(&desired, &seen, &self.backups, crate::data::clock::now())
                .map(|s| Instant::now() + Duration::from_secs(s.max(1)));
        [next, snapshot_due, backup_due]
            .into_iter()
            .flatten()
            .fold(due, Instant::min)
    }

    /// Shows work on the dashboard while the returned guard lives (its
    /// bar is indeterminate: the figures are in the log and `/metrics`).
    fn at_work(&self, id: &str, what: &str, phase: &str) -> dashboard::AtWork {
        dashboard::AtWork::new(
            Arc::clone(&self.shared),
            dashboard::WorkView {
                id: id.into(),
                what: what.into(),
                phase: phase.into(),
                done: 0,
                total: 0,
                started: unix_now(),
            },
        )
    }

    /// The dashboard's apps and hosts after a pass: the state read before
    /// it, with what the pass did.
    fn show_on_dashboard(
        &self,
        spec: &Spec,
        desired: &Desired,
        conns: &crate::docker::hosts::Connections,
        seen: &Observed,
        report: &crate::apply::Report,
    ) {
        let done = Plan {
            actions: report
                .outcomes
                .iter()
                .filter(|(_, o)| *o == Outcome::Done)
                .map(|(a, _)| a.clone())
                .collect(),
            ..Plan::default()
        };
        let after = plan::simulate(desired, seen, &done);
        let rows = crate::output::status_rows(desired, &after);
        let hosts = spec
            .hosts
            .keys()
            .map(|name| dashboard::HostView {
                name: name.clone(),
                reachable: conns.engines.contains_key(name),
                api_version: conns.engines.get(name).and_then(|e| e.api_version()),
                error: conns.unreachable.get(name).cloned(),
            })
            .collect();
        self.shared
            .update_view(|v| v.refresh(desired, rows, hosts, unix_now()));
    }

    /// Takes the scheduled snapshots that are due and prunes past `keep`;
    /// notes the figures. Its errors, one line each.
    async fn scheduled_snapshots(
        &mut self,
        desired: &Desired,
        conns: &mut crate::docker::hosts::Connections,
        seen: &Observed,
        stop: &CancellationToken,
    ) -> Vec<String> {
        let m = &self.shared.metrics;
        let label = |(stack, volume): &(String, String)| metrics::VolumeLabels {
            stack: stack.clone(),
            volume: volume.clone(),
        };
        let mut errors = Vec::new();
        let _shown = self.at_work("snapshots", "scheduled snapshots", "taking");
        let round = snapshots::run(
            desired,
            conns,
            seen,
            &self.holder,
            stop,
            self.opts.apply.direct_copy,
        )
        .await;
        let round = match round {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("scheduled snapshots wait: {e}"));
                Default::default()
            }
        };
        for (key, t) in &round.taken {
            tracing::info!(stack = %key.0, volume = %key.1, snapshot = %t.name, bytes = t.copied.bytes, held_ms = t.copied.held.map_or(0, |d| d.as_millis() as u64), "took a scheduled snapshot");
            if let Some(d) = t.copied.held {
                m.snapshot_held.observe(d.as_secs_f64());
            }
        }
        for (key, e) in &round.failed {
            m.snapshot_failures.get_or_create(&label(key)).inc();
            errors.push(format!(
                "the scheduled snapshot of `{}/{}` failed: {e}",
                key.0, key.1
            ));
        }
        for (host, name) in &round.pruned {
            tracing::info!(host = %host, snapshot = %name, "pruned a scheduled snapshot past `keep`");
        }
        // The figures, from the hosts as they are now.
        let now_seen = round.observed.as_ref().unwrap_or(seen);
        let now = crate::data::clock::now();
        for dh in desired.hosts.values() {
            for v in dh.volumes.values().filter(|v| v.snapshots.is_some()) {
                if let Some(t) = snapshots::last_snapshot(now_seen, v) {
                    m.snapshot_last
                        .get_or_create(&label(&(v.stack.clone(), v.volume.clone())))
                        .set(t as f64);
                }
            }
        }
        let overdue = snapshots::overdue(desired, now_seen, now, self.started_unix);
        self.shared.update(|s| s.snapshots_overdue = overdue);
        errors
    }

    /// Pushes the scheduled backups that are due and forgets past `keep`;
    /// notes the figures. Its errors, one line each.
    async fn scheduled_backups(
        &mut self,
        desired: &Desired,
        conns: &mut crate::docker::hosts::Connections,
        seen: &Observed,
        stop: &CancellationToken,
    ) -> Vec<String> {
        let label = |(stack, volume, repository): &backups::BackupKey| metrics::BackupLabels {
            stack: stack.clone(),
            volume: volume.clone(),
            repository: repository.clone(),
        };
        let mut errors = Vec::new();
        let _shown = self.at_work("backups", "scheduled backups", "pushing");
        let round = backups::run(
            desired,
            conns,
            seen,
            &mut self.backups,
            &self.holder,
            stop,
            self.opts.apply.direct_copy,
        )
        .await
        .unwrap_or_else(|e| {
            errors.push(format!("scheduled backups wait: {e}"));
            Default::default()
        });
        let m = &self.shared.metrics;
        for (k, made) in &round.pushed {
            let p = &made.pushed;
            tracing::info!(stack = %k.0, volume = %k.1, repository = %k.2, id = %p.short(), added = p.stats.added, held_ms = made.taken.copied.held.map_or(0, |d| d.as_millis() as u64), "pushed a scheduled backup");
            m.backup_added
                .get_or_create(&label(k))
                .inc_by(p.stats.added);
            if let Some(d) = made.taken.copied.held {
                m.snapshot_held.observe(d.as_secs_f64());
            }
        }
        for (k, n) in round.forgotten.iter().filter(|(_, n)| *n > 0) {
            tracing::info!(stack = %k.0, volume = %k.1, repository = %k.2, forgotten = n, "forgot backups past `keep`");
        }
        for (k, e) in &round.failed {
            m.backup_failures.get_or_create(&label(k)).inc();
            let revision = self.in_force.as_ref().map(|r| r.sha.as_str());
            self.notifier.send(
                notify::Event::new(
                    notify::Kind::BackupFailed,
                    revision,
                    format!("the backup of `{}/{}` into `{}` failed: {e}", k.0, k.1, k.2),
                )
                .on(Some(&k.0), None, None),
            );
            errors.push(format!(
                "the scheduled backup of `{}/{}` into `{}` failed: {e}",
                k.0, k.1, k.2
            ));
        }
        for (k, t) in &self.backups.last {
            m.backup_last.get_or_create(&label(k)).set(*t as f64);
        }
        let now = crate::data::clock::now();
        let overdue = backups::overdue(desired, seen, &self.backups, now, self.started_unix);
        self.shared.update(|s| s.backups_overdue = overdue);
        errors
    }

    /// With `--git`: the commit in force is applied once a pass converged
    /// it; otherwise it failed (said once per commit).
    async fn revision_done(
        &mut self,
        converged: bool,
        errors: &[String],
        conns: &crate::docker::hosts::Connections,
        seen: &Observed,
    ) {
        let Some(rev) = self.in_force.clone() else {
            return;
        };
        if converged {
            // Each host records it, for `drover status` from any machine.
            let applied = crate::contract::revision::Applied {
                sha: rev.sha.clone(),
                subject: rev.subject.clone(),
                author: rev.author.clone(),
                time: rev.time,
                applied: crate::data::clock::now(),
            };
            let hosts: Vec<&str> = seen.hosts.keys().map(String::as_str).collect();
            crate::onhost::revision::write(&conns.engines, seen, hosts, &applied).await;
        }
        let applied_before = self
            .shared
            .status()
            .revision
            .and_then(|r| r.applied)
            .map(|a| a.sha);
        let newest_is_in_force = self
            .shared
            .status()
            .revision
            .and_then(|r| r.latest)
            .is_none_or(|l| l.sha == rev.sha);
        if converged {
            if applied_before.as_deref() != Some(rev.sha.as_str()) {
                tracing::info!(sha = %rev.sha, subject = %rev.subject, "commit applied");
                let m = &self.shared.metrics;
                m.set_revision(&rev.sha, applied_before.as_deref());
                m.revision_applied.set(unix_now());
                self.shared.update(|s| {
                    s.revision.get_or_insert_with(Default::default).applied = Some(rev.clone())
                });
                self.say(notify::Event::new(
                    notify::Kind::RevisionApplied,
                    Some(&rev.sha),
                    format!("{} applied: {}", rev.short(), rev.subject),
                ));
            }
            if newest_is_in_force {
                let held = self.rollbacks.lines();
                let state = if held.is_empty() {
                    follow::RevisionState::Applied
                } else {
                    follow::RevisionState::Quarantined
                };
                self.set_latest(&rev, state, held);
            }
        } else {
            if newest_is_in_force {
                self.set_latest(&rev, follow::RevisionState::Failed, Vec::new());
            }
            let first = errors.first().cloned().unwrap_or_default();
            self.say(notify::Event::new(
                notify::Kind::PassFailed,
                Some(&rev.sha),
                format!(
                    "the pass applying {} did not converge: {}",
                    rev.short(),
                    crate::docker::without_health_output(&first)
                ),
            ));
        }
    }

    /// With `--git`, after a pass: waits for the `rollback: auto` stacks
    /// the pass changed to run and be healthy, notes the healthy ones, and
    /// quarantines this commit for each that is not (when it has a healthy
    /// revision to go back to). Whether any was rolled back.
    async fn health_gate(
        &mut self,
        spec: &Spec,
        desired: &Desired,
        outcomes: &[(Action, Outcome)],
        conns: &crate::docker::hosts::Connections,
        seen: &Observed,
        stop: &CancellationToken,
    ) -> bool {
        let Some(rev) = self.in_force.clone().filter(|_| self.follow.is_some()) else {
            return false;
        };
        let guarded = rollback::guarded(spec);
        if guarded.is_empty() {
            return false;
        }
        let mut failed: BTreeMap<String, String> = BTreeMap::new();
        let mut changed = BTreeSet::new();
        for (a, o) in outcomes.iter().filter(|(a, _)| guarded.contains(&a.stack)) {
            match o {
                Outcome::Done => {
                    changed.insert(a.stack.clone());
                }
                Outcome::Failed(e) => {
                    failed.entry(a.stack.clone()).or_insert_with(|| {
                        format!(
                            "{} {} `{}` failed: {}",
                            a.action,
                            a.kind,
                            a.name,
                            crate::docker::without_health_output(&e.to_string())
                        )
                    });
                }
                Outcome::Skipped(_) | Outcome::Cancelled(_) => {}
            }
        }
        changed.retain(|s| !failed.contains_key(s));
        let timeout = self.opts.apply.dependency_timeout;
        failed.extend(rollback::wait_healthy(desired, changed.clone(), conns, timeout, stop).await);
        for stack in &guarded {
            let healthy = if changed.contains(stack) {
                !failed.contains_key(stack)
            } else {
                !failed.contains_key(stack) && rollback::is_healthy(desired, seen, stack)
            };
            if healthy {
                self.rollbacks.healthy_at(spec, stack, &rev.sha);
            }
        }
        let mut rolled = false;
        for (stack, reason) in failed {
            let Some(q) = self
                .rollbacks
                .quarantine(spec, &stack, &rev.sha, reason.clone())
            else {
                tracing::warn!(stack = %stack, reason = %reason, "a rollback: auto stack is not healthy, and has no other healthy revision to go back to");
                continue;
            };
            rolled = true;
            tracing::error!(stack = %stack, sha = %rev.sha, back_to = %q.back_to, reason = %reason, "rolling the stack back; this commit is quarantined for it");
            self.notifier.send(
                notify::Event::new(notify::Kind::Rollback, Some(&rev.sha), q.line()).on(
                    Some(&stack),
                    None,
                    None,
                ),
            );
        }
        self.show_quarantines();
        rolled
    }

    /// `/healthz` lists the stacks held at an older revision.
    fn show_quarantines(&self) {
        let held: Vec<_> = self.rollbacks.quarantined.values().cloned().collect();
        self.shared.update(|s| {
            if let Some(r) = s.revision.as_mut() {
                r.quarantined = held;
            }
        });
    }

    /// Records which hosts answered; an unreachable one backs off.
    fn note_hosts(&mut self, spec: &Spec, tried: &BTreeSet<String>, observed: &Observed) {
        let now = Instant::now();
        let mut hosts = BTreeMap::new();
        for name in spec.hosts.keys() {
            let status = match observed.unreachable.get(name) {
                None => {
                    self.unreachable.remove(name);
                    HostStatus {
                        reachable: true,
                        ..HostStatus::default()
                    }
                }
                Some(reason) => {
                    let b = self.unreachable.entry(name.clone()).or_insert_with(|| {
                        Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
                    });
                    if tried.contains(name) {
                        let delay = b.failed(now, reason.clone(), jitter());
                        tracing::warn!(host = %name, error = %reason, retry_in = ?delay, "host could not be read");
                        self.shared
                            .metrics
                            .host_errors
                            .get_or_create(&HostLabel { host: name.clone() })
                            .inc();
                    }
                    HostStatus {
                        reachable: false,
                        failures: b.failures(),
                        error: b.last_error().map(str::to_string),
                        retry_at: b.retry_at().map(unix_at),
                    }
                }
            };
            hosts.insert(name.clone(), status);
        }
        self.shared.update(|s| s.hosts = hosts);
    }

    /// Records the end of a pass; returns when a throttled app may be
    /// restored again.
    fn finish(
        &mut self,
        n: u64,
        started: Instant,
        ok: bool,
        counts: Counts,
        errors: Vec<String>,
        throttled: usize,
    ) -> Option<Instant> {
        let took = started.elapsed();
        let m = &self.shared.metrics;
        m.passes
            .get_or_create(&ResultLabel {
                result: if ok { "ok" } else { "failed" }.into(),
            })
            .inc();
        m.pass_duration.observe(took.as_secs_f64());
        let finished = unix_now();
        if ok {
            m.last_success.set(finished);
        }
        tracing::info!(ok, done = counts.done, failed = counts.failed, skipped = counts.skipped, throttled, took = ?took, "pass finished");
        let summary = PassSummary {
            number: n,
            finished,
            duration_seconds: took.as_secs_f64(),
            ok,
            done: counts.done,
            failed: counts.failed,
            skipped: counts.skipped,
            throttled: counts.throttled,
            // /healthz is served to anyone: a health check's output (which
            // may hold anything) stays in the log.
            errors: errors
                .iter()
                .map(|e| crate::docker::without_health_output(e))
                .collect(),
        };
        let mut next = None;
        self.shared.update(|s| {
            s.passes = n;
            if ok {
                s.last_success = Some(finished);
            }
            s.ready = ok && s.manifests.valid;
            s.reason = if !s.manifests.valid {
                Some(match s.manifests.errors.first() {
                    Some(e) => format!("the manifests are invalid: {e}"),
                    None => "the manifests are invalid".into(),
                })
            } else if !ok {
                Some(match summary.errors.first() {
                    Some(e) => format!("the last pass did not converge: {e}"),
                    None => "the last pass did not converge".into(),
                })
            } else {
                None
            };
            next = s
                .throttled
                .iter()
                .map(|t| t.until)
                .min_by(f64::total_cmp)
                .map(|u| Instant::now() + Duration::from_secs_f64((u - unix_now()).max(0.0)));
            s.last_pass = Some(summary.clone());
        });
        self.shared.update_view(|v| v.pass(summary));
        next
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    done: usize,
    failed: usize,
    skipped: usize,
    throttled: usize,
}

/// Logs each step and counts it in the metrics.
struct PassReporter {
    shared: Arc<Shared>,
    /// Bytes sent so far by each running move.
    /// Per relocate action: bytes sent so far, and the apps' downtime
    /// once they started on the target.
    moved: Mutex<HashMap<String, (u64, Option<Duration>)>>,
    notifier: notify::Notifier,
    /// The commit being applied, with `--git`.
    revision: Option<String>,
}

impl PassReporter {
    fn say(&self, kind: notify::Kind, a: &Action, message: String) {
        self.notifier.send(
            notify::Event::new(kind, self.revision.as_deref(), message).on(
                Some(&a.stack),
                None,
                Some(&a.host),
            ),
        );
    }
}

impl Reporter for PassReporter {
    fn started(&self, a: &Action) {
        crate::apply::log_started(a);
        if a.action == Verb::Relocate {
            self.shared.update_view(|v| {
                v.work(dashboard::WorkView {
                    id: a.id.clone(),
                    what: format!("move {} `{}` to `{}`", a.kind, a.name, a.host),
                    phase: "starting".into(),
                    done: 0,
                    total: a.relocation.as_ref().and_then(|r| r.bytes).unwrap_or(0),
                    started: unix_now(),
                })
            });
            self.say(
                notify::Kind::MoveStarted,
                a,
                format!(
                    "moving {} `{}` to `{}`: {}",
                    a.kind, a.name, a.host, a.reason
                ),
            );
        }
    }

    fn progress(&self, a: &Action, p: &crate::relocate::Progress) {
        self.shared.update_view(|v| {
            v.work(dashboard::WorkView {
                id: a.id.clone(),
                what: format!("move {} `{}` to `{}`", a.kind, a.name, a.host),
                phase: p.phase.as_str().into(),
                done: p.done,
                total: p.total,
                started: unix_now(),
            })
        });
        self.moved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(a.id.clone(), (p.done, p.downtime));
    }

    fn finished(&self, a: &Action, outcome: &Outcome, took: Duration) {
        let m = &self.shared.metrics;
        crate::apply::log_finished(a, outcome, took);
        let text = match outcome {
            Outcome::Done => format!(
                "{} {} `{}` on `{}` ({}) in {:.1}s",
                a.action,
                a.kind,
                a.name,
                a.host,
                a.reason,
                took.as_secs_f64()
            ),
            Outcome::Failed(e) | Outcome::Skipped(e) | Outcome::Cancelled(e) => format!(
                "{} {} `{}` on `{}`: {}",
                a.action,
                a.kind,
                a.name,
                a.host,
                crate::docker::without_health_output(e)
            ),
        };
        self.shared.update_view(|v| {
            v.done(&a.id);
            v.event(outcome.as_str(), text, unix_now());
        });
        m.action(&a.kind.to_string(), &a.action.to_string(), outcome.as_str());
        let sent = self
            .moved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&a.id);
        if a.action == Verb::Relocate {
            match outcome {
                Outcome::Done => self.say(
                    notify::Kind::MoveFinished,
                    a,
                    format!(
                        "moved {} `{}` to `{}` in {:.1}s",
                        a.kind,
                        a.name,
                        a.host,
                        took.as_secs_f64()
                    ),
                ),
                Outcome::Failed(e) => self.say(
                    notify::Kind::MoveFailed,
                    a,
                    format!("moving {} `{}` to `{}` failed: {e}", a.kind, a.name, a.host),
                ),
                _ => {}
            }
        }
        if a.action == Verb::Relocate && *outcome == Outcome::Done {
            let (sent, downtime) = sent.unwrap_or_default();
            m.relocation_bytes.inc_by(sent);
            m.relocation_duration.observe(took.as_secs_f64());
            if let Some(d) = downtime {
                m.relocation_downtime.observe(d.as_secs_f64());
            }
        }
    }
}
