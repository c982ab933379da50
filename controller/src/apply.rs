//! Carrying out a plan. The executor is built only on the apply path, so a
//! dry run cannot write.
//!
//! Actions run as soon as the actions they wait for have succeeded, in
//! parallel across hosts and up to a bound within a host. An action whose
//! prerequisite failed is skipped, and so is everything after it. Before
//! anything changes on a host, every image that host needs is checked (and
//! pulled, as `pull:` says); a missing image stops the whole host. An app
//! starts only once the apps it depends on are running (or healthy, with
//! `condition: healthy`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::desired::{ContainerSpec, Desired};
use crate::docker::{DockerApi, EngineError};
use crate::model::{names, Condition, Pull};
use crate::observed::{ContainerState, Health};
use crate::plan::{Action, Kind, Plan, Verb};

/// Actions running at once on one host unless told otherwise. Making and
/// starting a container is the engine's work, with waits inside it, so an
/// engine keeps up with more than a few at once: on a busy two-core host, 16
/// made and started 50 containers about 8% faster than 4, and recreated them
/// about 12% faster (the workload of `bench/compose.sh`). Compose's own
/// bound is 64.
pub const DEFAULT_PER_HOST: usize = 16;

#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions {
    /// Actions running at once on one host.
    pub per_host: usize,
    /// How long to wait for a dependency to be running or healthy.
    pub dependency_timeout: Duration,
    /// How often to look again while waiting.
    pub poll: Duration,
    /// Let volume moves copy straight from helper to helper when the
    /// hosts can reach each other (falling back to the Docker API).
    pub direct_copy: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            per_host: DEFAULT_PER_HOST,
            dependency_timeout: Duration::from_secs(120),
            poll: Duration::from_millis(250),
            direct_copy: true,
        }
    }
}

/// Why an action did not start: the process is stopping.
pub const STOPPING: &str = "drover is stopping; the next pass carries it out";

/// What happened to one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Failed(String),
    /// Not done because of something else: what it waits for failed, its
    /// host cannot take it.
    Skipped(String),
    /// drover is stopping: not started, or stopped where the next pass goes
    /// on. Shown as skipped, with the reason.
    Cancelled(String),
}

/// Told about every step as it happens.
pub trait Reporter: Send + Sync {
    fn started(&self, action: &Action);
    /// How far a volume move has come.
    fn progress(&self, _action: &Action, _p: &crate::relocate::Progress) {}
    fn finished(&self, action: &Action, outcome: &Outcome, took: Duration);
}

impl Outcome {
    /// `done`, `failed` or `skipped`, as logs and metrics name it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Failed(_) => "failed",
            Outcome::Skipped(_) | Outcome::Cancelled(_) => "skipped",
        }
    }
}

/// Logs that a step started, the same way wherever a plan is applied.
pub fn log_started(a: &Action) {
    tracing::info!(host = %a.host, kind = %a.kind, action = %a.action, name = %a.name, reason = %a.reason, "step started");
}

/// Logs how a step ended.
pub fn log_finished(a: &Action, outcome: &Outcome, took: Duration) {
    match outcome {
        Outcome::Done => {
            tracing::info!(host = %a.host, kind = %a.kind, action = %a.action, name = %a.name, took = ?took, "step done")
        }
        Outcome::Failed(e) => {
            tracing::error!(host = %a.host, kind = %a.kind, action = %a.action, name = %a.name, error = %e, "step failed")
        }
        Outcome::Skipped(w) | Outcome::Cancelled(w) => {
            tracing::warn!(host = %a.host, kind = %a.kind, action = %a.action, name = %a.name, reason = %w, "step skipped")
        }
    }
}

/// The result of applying a plan: every action's outcome, in plan order.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub outcomes: Vec<(Action, Outcome)>,
}

impl Report {
    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.outcomes.iter().filter(|(_, o)| f(o)).count()
    }

    pub fn all_done(&self) -> bool {
        self.outcomes.iter().all(|(_, o)| *o == Outcome::Done)
    }

    /// The errors of the steps that failed, in order.
    pub fn failures(&self) -> Vec<&str> {
        self.outcomes
            .iter()
            .filter_map(|(_, o)| match o {
                Outcome::Failed(e) => Some(e.as_str()),
                _ => None,
            })
            .collect()
    }
}

pub struct Executor {
    engines: BTreeMap<String, Arc<dyn DockerApi>>,
    desired: Arc<Desired>,
    opts: ApplyOptions,
    stop: CancellationToken,
}

#[derive(Debug, Clone, thiserror::Error)]
enum StepError {
    #[error("{0}")]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Move(#[from] crate::relocate::MoveError),
    /// drover is stopping: the step did not start, or stopped at a point
    /// the next pass goes on from.
    #[error("{STOPPING}")]
    Stopped,
    #[error("{0}")]
    Other(String),
}

impl StepError {
    /// A stop is no failure: the step is cancelled, and the next pass does it.
    fn outcome(self) -> Outcome {
        match self {
            StepError::Stopped => Outcome::Cancelled(STOPPING.into()),
            StepError::Move(crate::relocate::MoveError::Stopped) => {
                Outcome::Cancelled(crate::relocate::STOPPED.into())
            }
            e => Outcome::Failed(e.to_string()),
        }
    }
}

impl Executor {
    pub fn new(
        engines: BTreeMap<String, Arc<dyn DockerApi>>,
        desired: Arc<Desired>,
        opts: ApplyOptions,
    ) -> Executor {
        Executor {
            engines,
            desired,
            opts,
            stop: CancellationToken::new(),
        }
    }

    /// Once `stop` is cancelled no new action starts (each is skipped), the
    /// running ones finish, a dependency wait ends, and a volume move stops
    /// at the next point it can resume from.
    pub fn stop_when(mut self, stop: CancellationToken) -> Executor {
        self.stop = stop;
        self
    }

    /// Carries out `plan`, reporting each step.
    pub async fn apply(&self, plan: &Plan, reporter: Arc<dyn Reporter>) -> Report {
        let mut outcome: HashMap<String, Outcome> = HashMap::new();
        let blocked_hosts = self.prepare_images(plan).await;
        for a in &plan.actions {
            let host_problem = blocked_hosts.get(&a.host).or_else(|| {
                a.relocation
                    .as_ref()
                    .and_then(|r| blocked_hosts.get(&r.from))
            });
            if let Some(reason) = host_problem {
                let o = Outcome::Skipped(reason.clone());
                reporter.finished(a, &o, Duration::ZERO);
                outcome.insert(a.id.clone(), o);
            }
        }

        let semaphores: HashMap<String, Arc<Semaphore>> = self
            .engines
            .keys()
            .map(|h| {
                (
                    h.clone(),
                    Arc::new(Semaphore::new(self.opts.per_host.max(1))),
                )
            })
            .collect();
        let mut running: JoinSet<(String, Outcome)> = JoinSet::new();
        let mut started: BTreeSet<String> = outcome.keys().cloned().collect();
        loop {
            for a in &plan.actions {
                if started.contains(&a.id) {
                    continue;
                }
                let failed_dep = a.after.iter().find(|d| {
                    matches!(
                        outcome.get(*d),
                        Some(Outcome::Failed(_) | Outcome::Skipped(_) | Outcome::Cancelled(_))
                    )
                });
                if self.stop.is_cancelled() {
                    let o = Outcome::Cancelled(STOPPING.into());
                    reporter.finished(a, &o, Duration::ZERO);
                    outcome.insert(a.id.clone(), o);
                    started.insert(a.id.clone());
                    continue;
                }
                if let Some(dep) = failed_dep {
                    let o =
                        Outcome::Skipped(format!("it waits for `{dep}`, which did not succeed"));
                    reporter.finished(a, &o, Duration::ZERO);
                    outcome.insert(a.id.clone(), o);
                    started.insert(a.id.clone());
                    continue;
                }
                if !a
                    .after
                    .iter()
                    .all(|d| outcome.get(d) == Some(&Outcome::Done))
                {
                    continue;
                }
                started.insert(a.id.clone());
                let step = Step {
                    action: a.clone(),
                    engines: self.engines.clone(),
                    desired: Arc::clone(&self.desired),
                    opts: self.opts,
                    reporter: Arc::clone(&reporter),
                    stop: self.stop.clone(),
                };
                let sem = semaphores.get(&a.host).cloned();
                let reporter = Arc::clone(&reporter);
                let span = tracing::info_span!("step", host = %a.host, name = %a.name);
                running.spawn(
                    async move {
                        let t = Instant::now();
                        // Waiting for dependencies takes no slot of the host, so
                        // a slow dependency does not hold up unrelated work.
                        let ready = step.wait_for_dependencies().await;
                        let _permit = match &sem {
                            Some(s) => s.acquire().await.ok(),
                            None => None,
                        };
                        reporter.started(&step.action);
                        let result = match ready {
                            Ok(()) => step.run().await,
                            Err(e) => Err(e),
                        };
                        let o = match result {
                            Ok(()) => Outcome::Done,
                            Err(e) => e.outcome(),
                        };
                        reporter.finished(&step.action, &o, t.elapsed());
                        (step.action.id, o)
                    }
                    .instrument(span),
                );
            }
            match running.join_next().await {
                Some(Ok((id, o))) => {
                    outcome.insert(id, o);
                }
                Some(Err(e)) => tracing::error!(error = %e, "a step task failed"),
                None => break,
            }
        }
        Report {
            outcomes: plan
                .actions
                .iter()
                .map(|a| {
                    let o = outcome
                        .get(&a.id)
                        .cloned()
                        .unwrap_or_else(|| Outcome::Skipped("never became ready".into()));
                    (a.clone(), o)
                })
                .collect(),
        }
    }

    /// Makes sure every host has the images its new containers need, as
    /// `pull:` says. Returns the hosts that cannot go on, with the reason.
    async fn prepare_images(&self, plan: &Plan) -> BTreeMap<String, String> {
        type Wanted = (Pull, Option<String>);
        let mut needs: BTreeMap<String, BTreeMap<String, Wanted>> = BTreeMap::new();
        for a in &plan.actions {
            for c in self.containers_started_by(a) {
                needs.entry(c.host.clone()).or_default().insert(
                    c.image.expose().to_string(),
                    (c.pull, c.options.platform.clone()),
                );
            }
        }
        let mut tasks = JoinSet::new();
        for (host, images) in needs {
            let Some(api) = self.engines.get(&host).cloned() else {
                continue;
            };
            let secret: BTreeSet<String> = self
                .desired
                .hosts
                .get(&host)
                .map(|h| {
                    h.containers
                        .values()
                        .filter(|c| c.image.is_secret())
                        .map(|c| c.image.expose().to_string())
                        .collect()
                })
                .unwrap_or_default();
            tasks.spawn(async move {
                for (image, (pull, platform)) in images {
                    let hidden = secret.contains(&image);
                    let shown = if hidden { "<secret>".to_string() } else { image.clone() };
                    // The engine's own messages may repeat the image.
                    let said = |e: crate::docker::EngineError| {
                        let text = e.to_string();
                        if hidden {
                            let (repo, _) = crate::docker::split_image(&image);
                            text.replace(&image, "<secret>").replace(repo, "<secret>")
                        } else {
                            text
                        }
                    };
                    let present = match api.image_present(&image).await {
                        Ok(p) => p,
                        Err(e) => return Some((host, format!("cannot check image `{shown}`: {}", said(e)))),
                    };
                    let result = match (pull, present) {
                        (Pull::Never, false) => Err(format!("image `{shown}` is not on `{host}` and `pull: never` forbids pulling it")),
                        (Pull::Never, true) | (Pull::Missing, true) => Ok(()),
                        (Pull::Always, _) | (Pull::Missing, false) => match api.pull_image(&image, platform.as_deref()).await {
                            Ok(()) => Ok(()),
                            Err(_) if present => Ok(()), // `always`, but the copy on the host will do
                            Err(e) => Err(format!("image `{shown}` is not on `{host}` and cannot be pulled: {}", said(e))),
                        },
                    };
                    if let Err(reason) = result {
                        return Some((host, format!("{reason}; nothing on `{}` was changed", api.host())));
                    }
                }
                None
            });
        }
        let mut blocked = BTreeMap::new();
        while let Some(r) = tasks.join_next().await {
            if let Ok(Some((host, reason))) = r {
                tracing::error!(%host, %reason, "images");
                blocked.insert(host, reason);
            }
        }
        blocked
    }

    fn containers_started_by<'a>(&'a self, a: &'a Action) -> Vec<&'a ContainerSpec> {
        match (a.kind, a.action) {
            (Kind::Container, Verb::Create | Verb::Recreate) => self
                .desired
                .hosts
                .get(&a.host)
                .and_then(|h| h.containers.get(&a.name))
                .into_iter()
                .collect(),
            (Kind::Volume, Verb::Relocate) => a
                .relocation
                .iter()
                .flat_map(|r| {
                    r.apps
                        .iter()
                        .filter_map(|app| self.desired.container(&a.stack, app))
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// One action with what it needs to run on its own task.
struct Step {
    action: Action,
    engines: BTreeMap<String, Arc<dyn DockerApi>>,
    desired: Arc<Desired>,
    opts: ApplyOptions,
    reporter: Arc<dyn Reporter>,
    stop: CancellationToken,
}

impl Step {
    fn api(&self, host: &str) -> Result<&Arc<dyn DockerApi>, StepError> {
        self.engines
            .get(host)
            .ok_or_else(|| StepError::Other(format!("host `{host}` is not connected")))
    }

    /// The desired object this action makes, from one of the host's maps.
    fn wanted<'s, T>(
        &'s self,
        what: &str,
        pick: impl Fn(&'s crate::desired::DesiredHost) -> &'s BTreeMap<String, T>,
    ) -> Result<&'s T, StepError> {
        let a = &self.action;
        self.desired
            .hosts
            .get(&a.host)
            .and_then(|h| pick(h).get(&a.name))
            .ok_or_else(|| {
                StepError::Other(format!("{what} `{}` is not in the desired state", a.name))
            })
    }

    fn container(&self) -> Result<&ContainerSpec, StepError> {
        self.wanted("container", |h| &h.containers)
    }

    async fn run(&self) -> Result<(), StepError> {
        let a = &self.action;
        let api = self.api(&a.host)?;
        match (a.kind, a.action) {
            (Kind::Volume, Verb::Create) => {
                let v = self.wanted("volume", |h| &h.volumes)?;
                match &v.from {
                    Some(_) => self.seed(v).await?,
                    None => api.create_volume(v).await?,
                }
            }
            (Kind::Volume, Verb::Remove) => api.remove_volume(&a.name).await?,
            (Kind::Network, Verb::Create) => {
                api.create_network(self.wanted("network", |h| &h.networks)?)
                    .await?
            }
            (Kind::Network, Verb::Remove) => api.remove_network(&a.name).await?,
            (Kind::Container, Verb::Create) => {
                let c = self.container()?;
                api.create_container(c).await?;
                api.start_container(&c.name).await?;
            }
            (Kind::Container, Verb::Recreate) => {
                let c = self.container()?;
                api.stop_container(&c.name, c.stop_grace()).await?;
                api.remove_container(&c.name).await?;
                api.create_container(c).await?;
                api.start_container(&c.name).await?;
            }
            // Also an app kept on its old host until it can move.
            (Kind::Container, Verb::Start) => api.start_container(&a.name).await?,
            (Kind::Container, Verb::Stop) => {
                api.stop_container(&a.name, Duration::from_secs(10)).await?
            }
            (Kind::Container, Verb::Remove) => {
                api.stop_container(&a.name, Duration::from_secs(10)).await?;
                api.remove_container(&a.name).await?;
            }
            (Kind::Volume, Verb::Relocate) => self.relocate().await?,
            (kind, verb) => return Err(StepError::Other(format!("cannot {verb} a {kind}"))),
        }
        Ok(())
    }

    async fn relocate(&self) -> Result<(), StepError> {
        let a = &self.action;
        let r = a
            .relocation
            .as_ref()
            .ok_or_else(|| StepError::Other("a move without its facts".into()))?;
        // The action's volume first, then every volume its apps mount, and
        // every app on the new host that mounts one of those, until nothing
        // is added: they all move together.
        let target = self
            .desired
            .hosts
            .get(&r.to)
            .ok_or_else(|| StepError::Other(format!("host `{}` is not in the spec", r.to)))?;
        let mut volumes = vec![self.wanted("volume", |h| &h.volumes)?.clone()];
        let mut apps: Vec<ContainerSpec> = Vec::new();
        loop {
            let before = (volumes.len(), apps.len());
            for c in target.containers.values().filter(|c| c.stack == a.stack) {
                let mounts_one = c
                    .mounts
                    .iter()
                    .any(|m| volumes.iter().any(|v| v.name == m.source));
                if mounts_one && !apps.iter().any(|x| x.name == c.name) {
                    apps.push(c.clone());
                }
            }
            for m in apps.iter().flat_map(|c| &c.mounts) {
                if let Some(v) = target.volumes.get(&m.source) {
                    if !volumes.iter().any(|x| x.name == v.name) {
                        volumes.push(v.clone());
                    }
                }
            }
            if (volumes.len(), apps.len()) == before {
                break;
            }
        }
        let reporter = Arc::clone(&self.reporter);
        let action = a.clone();
        let mv = crate::relocate::Move::new(
            Arc::clone(self.api(&r.from)?),
            Arc::clone(self.api(&r.to)?),
            volumes,
            apps,
            crate::relocate::MoveOptions {
                ready_timeout: self.opts.dependency_timeout,
                poll: self.opts.poll,
                target_address: target.address.clone(),
                direct: self.opts.direct_copy,
                stop: self.stop.clone(),
            },
            Arc::new(move |p| reporter.progress(&action, p)),
        );
        mv.run().await.map_err(StepError::Move)
    }

    /// Makes a volume with `from:` as a clone of the snapshot it names,
    /// found on the hosts as they are now.
    async fn seed(&self, v: &crate::desired::VolumeSpec) -> Result<(), StepError> {
        let Some(seed) = &v.from else {
            return Ok(());
        };
        if let Some(repo) = &seed.repository {
            return self.seed_from_backup(v, seed, repo).await;
        }
        let mut observed = crate::observed::Observed::default();
        for (h, api) in &self.engines {
            observed.hosts.insert(h.clone(), api.observe().await?);
        }
        let (src_host, snap) = observed
            .find_snapshot(&seed.stack, &seed.volume, seed.snapshot.as_deref())
            .map(|(h, o)| (h.to_string(), o.snapshot.clone().unwrap_or_default().name))
            .ok_or_else(|| {
                StepError::Other(format!(
                    "{}: the snapshot of `{}/{}` to make volume `{}` from is gone",
                    seed.at, seed.stack, seed.volume, v.name
                ))
            })?;
        let source = self
            .desired
            .volume(&seed.stack, &seed.volume)
            .cloned()
            .unwrap_or_else(|| crate::desired::volume_spec(&seed.stack, &seed.volume, &src_host));
        let on = |h: &str| -> Result<crate::data::snapshot::On, StepError> {
            Ok(crate::data::snapshot::On::of(self.api(h)?, &self.desired))
        };
        let empty = crate::observed::ObservedHost::default();
        let src_state = observed.hosts.get(&src_host).unwrap_or(&empty);
        let clone_from = crate::data::snapshot::CloneSource {
            on: on(&src_host)?,
            state: src_state,
            volume: &source,
            snapshot: Some(snap),
            writers: Default::default(),
            consistency: Default::default(),
        };
        let opts = crate::data::snapshot::CopyOptions {
            direct: self.opts.direct_copy,
            progress: Arc::new(|_| {}),
            ready_timeout: self.opts.dependency_timeout,
            poll: self.opts.poll,
            keep_helper: None,
            helper_started: None,
        };
        let dst_state = observed.hosts.get(&v.host).unwrap_or(&empty);
        crate::data::snapshot::clone(&clone_from, &on(&v.host)?, dst_state, v, &opts)
            .await
            .map(|_| ())
            .map_err(StepError::Other)
    }

    /// Makes a volume with `from: { repository }` from that backup: pulled
    /// into it on its host and checked against the backup by content.
    async fn seed_from_backup(
        &self,
        v: &crate::desired::VolumeSpec,
        seed: &crate::desired::Seed,
        repo: &str,
    ) -> Result<(), StepError> {
        use crate::data::backup;
        let r = self.desired.repositories.get(repo).ok_or_else(|| {
            StepError::Other(format!(
                "{}: repository `{repo}` is not in the Cluster",
                seed.at
            ))
        })?;
        let fail = |e: String| StepError::Other(format!("{}: {e}", seed.at));
        let (o, b) = backup::find(r, &seed.stack, &seed.volume, seed.snapshot.as_deref())
            .await
            .map_err(fail)?;
        let api = self.api(&v.host)?;
        let state = api.observe().await?;
        let on = crate::data::snapshot::On::of(api, &self.desired);
        backup::pull(&on, &state, v, &o, &b, self.opts.direct_copy)
            .await
            .map(|_| ())
            .map_err(StepError::Other)
    }

    /// Before a container is made or started: waits until every app it
    /// depends on is running, or healthy for `condition: healthy`.
    async fn wait_for_dependencies(&self) -> Result<(), StepError> {
        let a = &self.action;
        match (a.kind, a.action) {
            (Kind::Container, Verb::Create | Verb::Recreate) => {
                self.wait_for(self.container()?).await
            }
            (Kind::Container, Verb::Start) => match self.container() {
                Ok(c) => self.wait_for(c).await,
                Err(_) => Ok(()),
            },
            _ => Ok(()),
        }
    }

    async fn wait_for(&self, c: &ContainerSpec) -> Result<(), StepError> {
        for (target, condition) in &c.depends_on {
            let Some(t) = self.desired.container(&c.stack, target) else {
                continue;
            };
            let api = self.api(&t.host)?;
            let deadline = Instant::now() + self.opts.dependency_timeout;
            loop {
                let status = api
                    .container_status(&names::container(&c.stack, target))
                    .await?;
                let ready = match (&status, condition) {
                    (Some(s), Condition::Started) => s.state == ContainerState::Running,
                    (Some(s), Condition::Healthy) => {
                        s.state == ContainerState::Running && s.health == Some(Health::Healthy)
                    }
                    (Some(s), Condition::Completed) => match (s.state, s.exit_code) {
                        (ContainerState::Exited, Some(0)) => true,
                        (ContainerState::Exited | ContainerState::Dead, code) => {
                            return Err(StepError::Other(format!(
                                "app `{}` waits for `{target}` to complete, but it exited with {}",
                                c.app,
                                code.map_or("no code".to_string(), |c| format!("code {c}"))
                            )));
                        }
                        _ => false,
                    },
                    (None, _) => false,
                };
                if ready {
                    break;
                }
                // The image may bring its own check: only a running
                // container that reports no health at all has none.
                let no_check = status
                    .as_ref()
                    .is_some_and(|s| s.state == ContainerState::Running && s.health.is_none());
                if *condition == Condition::Healthy && !t.has_healthcheck() && no_check {
                    return Err(StepError::Other(format!(
                        "app `{}` waits for `{target}` to be healthy, but `{target}` has no healthcheck",
                        c.app
                    )));
                }
                if self.stop.is_cancelled() {
                    return Err(StepError::Stopped);
                }
                if Instant::now() >= deadline {
                    let what = match condition {
                        Condition::Started => "running",
                        Condition::Healthy => "healthy",
                        Condition::Completed => "completed",
                    };
                    let state = crate::docker::describe_status(status.as_ref());
                    return Err(StepError::Other(format!(
                        "app `{}` waited {}s for `{target}` to be {what}, but it is {state}",
                        c.app,
                        self.opts.dependency_timeout.as_secs()
                    )));
                }
                tokio::time::sleep(self.opts.poll).await;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::fake::FakeDocker;
    use crate::observed::{Observed, ObservedHost};
    use crate::plan::{plan, Options};

    use crate::testing::{desired_on_two_hosts as desired, outcome_of};

    struct NoReport;
    impl Reporter for NoReport {
        fn started(&self, _: &Action) {}
        fn finished(&self, _: &Action, _: &Outcome, _: Duration) {}
    }

    fn host_with(images: &[&str]) -> ObservedHost {
        ObservedHost {
            images: images.iter().map(|s| s.to_string()).collect(),
            ..ObservedHost::default()
        }
    }

    /// Plans against the fakes' state and applies the plan to them.
    async fn run(
        d: Desired,
        a: &Arc<FakeDocker>,
        b: &Arc<FakeDocker>,
        opts: ApplyOptions,
    ) -> Report {
        run_until(d, a, b, opts, CancellationToken::new()).await
    }

    async fn run_until(
        d: Desired,
        a: &Arc<FakeDocker>,
        b: &Arc<FakeDocker>,
        opts: ApplyOptions,
        stop: CancellationToken,
    ) -> Report {
        let observed = Observed {
            hosts: BTreeMap::from([("a".to_string(), a.state()), ("b".to_string(), b.state())]),
            unreachable: BTreeMap::new(),
            ..Default::default()
        };
        let p = plan(&d, &observed, Options::default());
        let engines: BTreeMap<String, Arc<dyn DockerApi>> = BTreeMap::from([
            ("a".to_string(), Arc::clone(a) as Arc<dyn DockerApi>),
            ("b".to_string(), Arc::clone(b) as Arc<dyn DockerApi>),
        ]);
        Executor::new(engines, Arc::new(d), opts)
            .stop_when(stop)
            .apply(&p, Arc::new(NoReport))
            .await
    }

    const STACK: &str = "kind: Stack
name: s
volumes: { v: {} }
apps:
  db: { image: img, host: a, volumes: ['v:/v'], ports: ['5432:5432'] }
  web: { image: img, host: b, depends_on: [db], links: [db] }
  solo: { image: img, host: b }
";

    fn fakes(images: &[&str]) -> (Arc<FakeDocker>, Arc<FakeDocker>) {
        (
            Arc::new(FakeDocker::new("a", host_with(images))),
            Arc::new(FakeDocker::new("b", host_with(images))),
        )
    }

    fn fast() -> ApplyOptions {
        ApplyOptions {
            dependency_timeout: Duration::from_millis(300),
            poll: Duration::from_millis(20),
            ..ApplyOptions::default()
        }
    }

    #[tokio::test]
    async fn steps_run_after_what_they_wait_for_across_hosts() {
        let (a, b) = fakes(&["img"]);
        let report = run(desired(STACK), &a, &b, fast()).await;
        assert!(report.all_done(), "{:?}", report.outcomes);
        let t = |f: &FakeDocker, c: &str| {
            f.when(c)
                .unwrap_or_else(|| panic!("no `{c}` in {:?}", f.calls()))
        };
        assert!(t(&a, "create-volume s-v") < t(&a, "create s-db"));
        assert!(t(&a, "create-network drover-s") < t(&a, "create s-db"));
        assert!(
            t(&a, "start s-db") < t(&b, "create s-web"),
            "web must wait for db"
        );
        // Planning again against the result: nothing left, nothing written.
        let (wa, wb) = (a.writes().len(), b.writes().len());
        let again = run(desired(STACK), &a, &b, fast()).await;
        assert!(again.outcomes.is_empty());
        assert_eq!((a.writes().len(), b.writes().len()), (wa, wb));
    }

    #[tokio::test]
    async fn a_stopping_executor_starts_nothing_and_writes_nothing() {
        let (a, b) = fakes(&["img"]);
        let stop = CancellationToken::new();
        stop.cancel();
        let report = run_until(desired(STACK), &a, &b, fast(), stop).await;
        assert!(!report.outcomes.is_empty());
        assert!(report
            .outcomes
            .iter()
            .all(|(_, o)| *o == Outcome::Cancelled(STOPPING.into())));
        assert!(a.writes().is_empty() && b.writes().is_empty());
    }

    #[tokio::test]
    async fn a_failed_step_skips_what_waits_for_it_and_the_rest_goes_on() {
        let (a, b) = fakes(&["img"]);
        a.fail("create s-db");
        let report = run(desired(STACK), &a, &b, fast()).await;
        let outcome = |name: &str| outcome_of(&report, name).clone();
        assert!(matches!(outcome("s-db"), Outcome::Failed(e) if e.contains("scripted failure")));
        assert!(matches!(outcome("s-web"), Outcome::Skipped(w) if w.contains("a/container/s-db")));
        assert_eq!(outcome("s-solo"), Outcome::Done);
        assert!(b.when("create s-web").is_none());
    }

    #[tokio::test]
    async fn a_missing_image_stops_its_host_before_anything_changes_there() {
        let a = Arc::new(FakeDocker::new("a", host_with(&[])));
        let b = Arc::new(FakeDocker::new("b", host_with(&["img"])));
        let report = run(desired(STACK), &a, &b, fast()).await;
        assert!(
            a.writes().iter().all(|c| c.starts_with("pull")),
            "{:?}",
            a.writes()
        );
        let db = outcome_of(&report, "s-db");
        assert!(
            matches!(db, Outcome::Skipped(w) if w.contains("image `img` is not on `a` and cannot be pulled")),
            "{db:?}"
        );
        // web waits for db: skipped; solo does not: done.
        assert!(b.when("create s-web").is_none());
        assert!(b.when("start s-solo").is_some());
    }

    #[tokio::test]
    async fn pull_never_refuses_and_missing_pulls_only_when_absent() {
        let stack = "kind: Stack\nname: p\napps:\n  x: { image: img, host: a, pull: never }\n  y: { image: other, host: b }\n";
        let (a, b) = fakes(&[]);
        b.allow_pull("other");
        let report = run(desired(stack), &a, &b, fast()).await;
        assert!(
            a.calls().iter().all(|c| !c.starts_with("pull")),
            "{:?}",
            a.calls()
        );
        assert!(
            matches!(outcome_of(&report, "p-x"), Outcome::Skipped(w) if w.contains("`pull: never` forbids pulling it"))
        );
        assert_eq!(b.calls().iter().filter(|c| *c == "pull other").count(), 1);
        assert!(b.when("start p-y").is_some());
    }

    /// `web` waits for `db` to be healthy.
    const WAITS_FOR_HEALTHY: &str = "kind: Stack
name: h
apps:
  db: { image: img, host: a, healthcheck: { test: ['CMD', 'true'] } }
  web: { image: img, host: a, depends_on: { db: { condition: healthy } } }
";

    #[tokio::test]
    async fn a_dependency_that_never_becomes_healthy_fails_with_its_health_output() {
        let (a, b) = fakes(&["img"]);
        a.set_health("h-db", Health::Unhealthy, "connection refused");
        let report = run(desired(WAITS_FOR_HEALTHY), &a, &b, fast()).await;
        let web = outcome_of(&report, "h-web");
        match web {
            Outcome::Failed(e) => assert_eq!(
                e,
                "app `web` waited 0s for `db` to be healthy, but it is running, unhealthy; last health output: connection refused"
            ),
            other => panic!("{other:?}"),
        }
        assert!(a.when("create h-web").is_none(), "web must not be created");
    }

    #[tokio::test]
    async fn a_stop_while_a_step_waits_for_its_dependency_skips_it_and_fails_nothing() {
        let (a, b) = fakes(&["img"]);
        a.set_health("h-db", Health::Starting, "");
        let stop = CancellationToken::new();
        let opts = ApplyOptions {
            dependency_timeout: Duration::from_secs(30),
            ..fast()
        };
        let later = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            later.cancel();
        });
        let report = run_until(desired(WAITS_FOR_HEALTHY), &a, &b, opts, stop).await;
        let web = outcome_of(&report, "h-web");
        assert_eq!(*web, Outcome::Cancelled(STOPPING.into()));
        assert_eq!(report.count(|o| matches!(o, Outcome::Failed(_))), 0);
        assert!(a.when("create h-web").is_none(), "web must not be created");
    }

    #[tokio::test]
    async fn a_healthcheck_from_the_image_counts_and_no_healthcheck_at_all_is_named() {
        let stack = "kind: Stack
name: i
apps:
  db: { image: img, host: a }
  web: { image: img, host: a, depends_on: { db: { condition: healthy } } }
";
        let (a, b) = fakes(&["img"]);
        a.set_health("i-db", Health::Healthy, "");
        assert!(run(desired(stack), &a, &b, fast()).await.all_done());

        let (a, b) = fakes(&["img"]);
        let report = run(desired(stack), &a, &b, fast()).await;
        let web = outcome_of(&report, "i-web");
        assert_eq!(
            *web,
            Outcome::Failed(
                "app `web` waits for `db` to be healthy, but `db` has no healthcheck".into()
            )
        );
    }

    #[tokio::test]
    async fn healthy_dependencies_let_their_dependents_start() {
        let stack = "kind: Stack
name: g
apps:
  db: { image: img, host: a, healthcheck: { test: ['CMD', 'true'] } }
  web: { image: img, host: b, depends_on: { db: { condition: healthy } } }
";
        let (a, b) = fakes(&["img"]);
        a.set_health("g-db", Health::Healthy, "");
        let report = run(desired(stack), &a, &b, fast()).await;
        assert!(report.all_done(), "{:?}", report.outcomes);
    }
}
