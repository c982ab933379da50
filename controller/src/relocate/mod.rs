//! Moving a volume's data to another host with its apps: the `relocate`
//! step of a plan. The state machine and its crash analysis are in
//! `docs/relocation.md`; in short:
//!
//! prepare (record the target copy as incoming, make the volume, record the
//! move on the source) → copy while the app runs → stop the app on the
//! source → copy what changed → verify → record the switch → start on the
//! target → wait until healthy → record the target copy as current and the
//! source copy as retained → remove the old containers.
//!
//! The records live on the hosts as marker containers
//! ([`crate::observed::CopyRecord`]), written before each step they allow, so
//! a new drover reading them decides the same way ([`crate::plan::authority`]).
//! Data streams from a helper container on the source, through drover, into
//! a helper on the target ([`crate::helper`]); memory does not grow with the
//! volume's size. Nothing here ever deletes a volume.

mod image;
#[cfg(test)]
mod on_fakes;
mod transfer;

pub use image::{helper_image, HelperImage};
use transfer::Side;
pub use transfer::{helper_cmd, Helpers, Kept};
pub use transfer::{to_send, PathList, SendPlan};

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::contract::labels;
use crate::desired::{ContainerSpec, VolumeSpec};
use crate::docker::{DockerApi, ExecOutput, HelperSpec};
use crate::helper::scan::{self, Entry, EntryKind, Pair};
use crate::model::Restart;
use crate::observed::{
    ContainerState, CopyRecord, CopyRole, Health, MovePhase, ObservedHost, RecordRef,
};
use crate::plan::{authority, Authority};

/// The phases of a move, in order, as named in progress, logs and the
/// `DROVER_TEST_ABORT_AT` hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Prepare,
    Copy,
    Stop,
    Delta,
    Verify,
    Switch,
    Start,
    Wait,
    Commit,
    Retire,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Prepare => "prepare",
            Phase::Copy => "copy",
            Phase::Stop => "stop",
            Phase::Delta => "delta",
            Phase::Verify => "verify",
            Phase::Switch => "switch",
            Phase::Start => "start",
            Phase::Wait => "wait",
            Phase::Commit => "commit",
            Phase::Retire => "retire",
        }
    }
}

/// How far a move has come: bytes sent of those to send in this phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    pub done: u64,
    pub total: u64,
    /// How long the apps were down, once they started on the target.
    pub downtime: Option<Duration>,
}

pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// The test-only hook: `DROVER_TEST_ABORT_AT=<phase>` kills the process the
/// moment a move reaches that phase, as SIGKILL would.
fn checkpoint(phase: Phase) {
    test_checkpoint(phase.as_str());
}

/// The same hook at a named point outside a move (`frozen`: a snapshot's
/// apps were just frozen).
pub fn test_checkpoint(at: &str) {
    if std::env::var("DROVER_TEST_ABORT_AT").is_ok_and(|p| p == at) {
        eprintln!("drover: aborting at `{at}` (DROVER_TEST_ABORT_AT)");
        std::process::abort();
    }
}

/// Loads drover's helper image on `api` unless it is there; its tag.
pub async fn ensure_helper_image(api: &Arc<dyn DockerApi>) -> Result<String, String> {
    let image = helper_image()?;
    let present = api
        .image_present(&image.tag)
        .await
        .map_err(|e| e.to_string())?;
    if !present {
        api.import_image(&image.tag, image.rootfs())
            .await
            .map_err(|e| format!("cannot load the helper image on `{}`: {e}", api.host()))?;
    }
    Ok(image.tag)
}

/// What one pass of a move found and did.
struct Pass {
    /// How long its scans took: about what one more pass would take to
    /// find that nothing changed.
    scans: Duration,
    /// The source's entries, and the bytes of its regular files.
    entries: u64,
    bytes: u64,
    /// What the delta sent to or deleted on the target, in scan order
    /// (empty for other passes).
    changed: PathList,
    /// How many entries it sent.
    sent: usize,
}

/// One move, with everything it needs.
pub struct Move {
    /// The copier between the source and the target host.
    cp: Copier,
    /// The volumes as they should be on the target: the action's first, then
    /// every other volume its apps mount (they move together, since the apps
    /// start on the target only once all their data is there).
    pub volumes: Vec<VolumeSpec>,
    /// The apps that mount them, as they should be on the target.
    pub apps: Vec<ContainerSpec>,
    pub opts: MoveOptions,
    /// Records written by this run, per host, oldest first.
    written: std::sync::Mutex<BTreeMap<String, Vec<RecordRef>>>,
    /// The newest record sequence number per (host, volume).
    last_seq: std::sync::Mutex<BTreeMap<(String, String), u64>>,
    /// Source containers whose restart policy was set to `no` while they
    /// are stopped for the move, with the policy they had.
    held: std::sync::Mutex<Vec<(String, Restart)>>,
}

/// Copies volumes from one host to another (or to another volume on the
/// same host) through helper containers, and counts what it sent: the
/// data path of moves, snapshots, restores and clones.
pub struct Copier {
    pub src: Arc<dyn DockerApi>,
    pub dst: Arc<dyn DockerApi>,
    /// Where the source's helper can reach the target host; the direct
    /// path is tried when `direct` and this is not loopback.
    target_address: String,
    direct: bool,
    progress: ProgressFn,
    /// What is copied, and what for (`relocation`, `snapshot`), for logs.
    what: String,
    kind: &'static str,
    /// Bytes of finished transfers, and of all transfers planned so far.
    sent: std::sync::atomic::AtomicU64,
    planned: std::sync::atomic::AtomicU64,
    /// The phase and time of the last progress line logged.
    logged: std::sync::Mutex<Option<(Phase, Instant)>>,
    /// When the apps stopped writing, and when they could again.
    down: std::sync::Mutex<Option<(Instant, Option<Instant>)>>,
    /// Bytes per second of the bulk copy, once it sent [`RATE_SAMPLE`].
    rate: std::sync::Mutex<Option<u64>>,
    /// What the passes so far changed on the target.
    touched: std::sync::Mutex<Touched>,
}

/// What a copy changed on its target: the folders (relative to the volume,
/// `""` for its root) of the entries it sent, and whether it deleted any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    pub dirs: std::collections::BTreeSet<String>,
    pub deleted: bool,
}

impl Touched {
    fn note(&mut self, plan: &SendPlan) {
        self.deleted |= !plan.delete.is_empty();
        for p in plan.send.iter() {
            let dir = p.rsplit_once('/').map_or("", |(d, _)| d);
            if !self.dirs.contains(dir) {
                self.dirs.insert(dir.to_string());
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct MoveOptions {
    /// How long the apps may take to become healthy (or running) on the target.
    pub ready_timeout: Duration,
    pub poll: Duration,
    /// Where the source's helper can reach the target host (its Cluster
    /// `address`); the direct path is tried when set and not loopback.
    pub target_address: String,
    /// Whether to try the direct helper-to-helper path at all.
    pub direct: bool,
    /// Once cancelled, the move stops at the next point it can resume from:
    /// while the apps still run on the source (before prepare, or during
    /// the copy, which a later move resumes from what the target has). Once
    /// the apps are stopped, the move goes on to its end or its rollback, so
    /// that they are never left down.
    pub stop: tokio_util::sync::CancellationToken,
}

/// Why a move did not end with the apps on the target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoveError {
    /// A stop request came before the app was stopped: it runs on its
    /// source, and the next pass resumes the copy.
    #[error("{STOPPED}")]
    Stopped,
    #[error("{0}")]
    Failed(String),
}

impl From<String> for MoveError {
    fn from(e: String) -> Self {
        MoveError::Failed(e)
    }
}

/// Why a move ended early on a stop request.
pub const STOPPED: &str =
    "stopped before the app was stopped: it runs on its source, and the next pass resumes the copy";

/// `DROVER_TEST_THROTTLE`: a slow network for tests, in bytes per second.
fn test_throttle() -> Option<u64> {
    std::env::var("DROVER_TEST_THROTTLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|r| *r > 0)
}

/// Passes by content while the apps run, at most, to bring what is left
/// within a volume's `max_downtime`.
const BUDGET_PASSES: usize = 6;

/// A copy while the apps run tells the copy rate of these hosts once it
/// sent this much.
const RATE_SAMPLE: u64 = 16 << 20;

/// A first pass of a snapshot's copy that sent less than this, in fewer
/// entries than [`SHORT_BULK_FILES`], is not followed by another while the
/// apps run: the pass with the apps held reads no more than that.
const SHORT_BULK: u64 = 16 << 20;
const SHORT_BULK_FILES: usize = 1000;

/// One volume of a move, as found when it started.
struct Part<'a> {
    volume: &'a VolumeSpec,
    /// The source copy's epoch; the target's becomes one more.
    epoch: u64,
    /// The size of the data and its number of entries, once verified.
    bytes: Option<u64>,
    files: Option<u64>,
    /// Its move passed the switch in an earlier run.
    finishing: bool,
    /// The target already has a copy (retained, or from an earlier try).
    on_target: bool,
    /// Records on each host before this run; removed at its end.
    src_records: Vec<RecordRef>,
    dst_records: Vec<RecordRef>,
}

/// How often each engine of a move is asked whether it still answers, and
/// how long an answer may take; two missed in a row (about 20 s) end the
/// step.
const PING_EVERY: Duration = Duration::from_secs(5);
const PING_WAIT: Duration = Duration::from_secs(5);

/// Resolves (with the reason) once `api` has missed two pings in a row.
async fn stalled(api: &Arc<dyn DockerApi>) -> String {
    let mut missed = 0;
    loop {
        tokio::time::sleep(PING_EVERY).await;
        match tokio::time::timeout(PING_WAIT, api.ping()).await {
            Ok(Ok(())) => missed = 0,
            _ => missed += 1,
        }
        if missed >= 2 {
            return format!(
                "host `{}` stopped answering during the move (two pings unanswered)",
                api.host()
            );
        }
    }
}

/// A call on a host that may be gone, given [`PING_WAIT`] twice at most.
async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, crate::docker::EngineError>>,
) -> Result<T, String> {
    tokio::time::timeout(PING_WAIT * 2, call)
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())
}

impl Move {
    pub fn new(
        src: Arc<dyn DockerApi>,
        dst: Arc<dyn DockerApi>,
        volumes: Vec<VolumeSpec>,
        apps: Vec<ContainerSpec>,
        opts: MoveOptions,
        progress: ProgressFn,
    ) -> Move {
        let cp = Copier::new(
            src,
            dst,
            opts.target_address.clone(),
            opts.direct,
            progress,
            &volumes.first().map(|v| v.name.clone()).unwrap_or_default(),
        )
        .for_what("relocation");
        Move {
            cp,
            volumes,
            apps,
            opts,
            written: Default::default(),
            last_seq: Default::default(),
            held: Default::default(),
        }
    }

    fn from(&self) -> &str {
        self.cp.src.host()
    }

    fn to(&self) -> &str {
        self.cp.dst.host()
    }

    /// Carries out (or resumes, or finishes) the move of every volume of
    /// the apps. On an error before the target copies are current, the apps
    /// run on the source again.
    pub async fn run(&self) -> Result<(), MoveError> {
        let image = helper_image()?;
        let (src_state, dst_state) = tokio::join!(self.cp.src.observe(), self.cp.dst.observe());
        let src_state = src_state.map_err(|e| e.to_string())?;
        let dst_state = dst_state.map_err(|e| e.to_string())?;
        // The apps' containers on the target are replaced: never one that
        // drover does not manage.
        for c in &self.apps {
            if dst_state
                .containers
                .iter()
                .any(|o| o.name == c.name && (!o.managed || o.internal))
            {
                return Err(MoveError::Failed(format!(
                    "container name `{}` on `{}` is taken by a container drover does not manage; nothing was done",
                    c.name,
                    self.to()
                )));
            }
        }
        let mut parts = Vec::new();
        for v in &self.volumes {
            let find = |h: &ObservedHost| h.volumes.iter().find(|o| o.name == v.name).cloned();
            let (sv, tv) = (find(&src_state), find(&dst_state));
            let mut copies = Vec::new();
            if let Some(c) = &sv {
                copies.push((self.from(), c));
            }
            if let Some(c) = &tv {
                copies.push((self.to(), c));
            }
            let finishing = match authority(&v.name, &copies, &Default::default()) {
                // Moved already, with another volume of its apps.
                Authority::On(h) if h == self.to() => continue,
                Authority::On(h) if h == self.from() => false,
                Authority::Finishing { from, to } if from == self.from() && to == self.to() => true,
                other => {
                    return Err(MoveError::Failed(format!(
                    "volume `{}` is not where the plan expected it ({other:?}); nothing was done",
                    v.name
                )))
                }
            };
            let record = sv.as_ref().and_then(|c| c.copy.as_ref());
            let old_records =
                |h: &ObservedHost| -> Vec<RecordRef> { h.records_of(&v.name).cloned().collect() };
            {
                let mut last = self.last_seq.lock().unwrap_or_else(|e| e.into_inner());
                for (api, h) in [(&self.cp.src, &src_state), (&self.cp.dst, &dst_state)] {
                    last.insert(
                        (api.host().to_string(), v.name.clone()),
                        h.last_seq(&v.name),
                    );
                }
            }
            parts.push(Part {
                volume: v,
                epoch: record.map_or(0, |r| r.epoch),
                bytes: record.and_then(|r| r.bytes),
                files: record.and_then(|r| r.cost).and_then(|c| c.files),
                finishing,
                on_target: tv.is_some(),
                src_records: old_records(&src_state),
                dst_records: old_records(&dst_state),
            });
        }
        if parts.is_empty() {
            return Ok(());
        }
        for (api, host) in [(&self.cp.src, &src_state), (&self.cp.dst, &dst_state)] {
            if !host.images.contains(&image.tag) {
                api.import_image(&image.tag, image.rootfs())
                    .await
                    .map_err(|e| format!("cannot load the helper image: {e}"))?;
            }
        }
        let helpers: Vec<Helpers> = parts
            .iter()
            .map(|p| {
                self.cp
                    .helpers(&p.volume.name, &p.volume.name, &p.volume.stack, &image.tag)
            })
            .collect();

        // The apps may have started on the target only if every volume
        // passed its switch: then the move only goes forward. Otherwise they
        // never did, and every volume goes through the whole protocol (those
        // already switched find nothing left to copy).
        if !parts.iter().all(|p| p.finishing) {
            if self.opts.stop.is_cancelled() {
                return Err(MoveError::Stopped);
            }
            self.cp.report(Phase::Prepare, 0);
            checkpoint(Phase::Prepare);
            for p in &mut parts {
                let incoming = CopyRecord {
                    role: CopyRole::Incoming,
                    epoch: p.epoch + 1,
                    peer: Some(self.from().into()),
                    moving_to: None,
                    phase: None,
                    bytes: None,
                    cost: None,
                    supersedes: Vec::new(),
                };
                self.mark(&self.cp.dst, p.volume, incoming).await?;
                if !p.on_target {
                    // Marked for good as made by a move: without its record
                    // it is never taken for the current data.
                    let mut target = p.volume.clone();
                    target
                        .labels
                        .insert(labels::MOVED_FROM.into(), self.from().into());
                    self.cp
                        .dst
                        .create_volume(&target)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                let r = self.source_record(p, MovePhase::Copy);
                self.mark(&self.cp.src, p.volume, r).await?;
            }
            for h in &helpers {
                if let Err(e) = h.start().await {
                    self.back_to_source(&helpers).await;
                    return Err(e.into());
                }
            }
            let copied = tokio::select! {
                r = self.cp.guarded(self.cp.copy_while_running(&helpers, self.budget(), false)) => r.map_err(MoveError::Failed),
                _ = self.opts.stop.cancelled() => Err(MoveError::Stopped),
            };
            if let Err(e) = copied {
                self.back_to_source(&helpers).await;
                return Err(e);
            }
            if self.opts.stop.is_cancelled() {
                self.back_to_source(&helpers).await;
                return Err(MoveError::Stopped);
            }
            checkpoint(Phase::Stop);
            self.cp.report(Phase::Stop, 0);
            self.cp.mark_down();
            if let Err(e) = self.cp.guarded(self.stop_on_source()).await {
                self.back_to_source(&helpers).await;
                return Err(e.into());
            }
            // Other containers that could write are looked for while the
            // change is copied: either failing rolls the move back.
            let copied = async {
                let mut sizes = Vec::new();
                for h in &helpers {
                    sizes.push(
                        self.cp
                            .copy_after_stop(h)
                            .await
                            .map_err(|e| format!("{e}; the app stays on `{}`", self.from()))?,
                    );
                }
                Ok::<_, String>(sizes)
            };
            let checked = self.cp.guarded(async {
                let (sizes, writers) = tokio::join!(copied, self.no_other_writers());
                writers.and(sizes)
            });
            match checked.await {
                Ok(sizes) => {
                    for (p, (bytes, files)) in parts.iter_mut().zip(sizes) {
                        p.bytes = Some(bytes);
                        p.files = Some(files);
                    }
                }
                Err(e) => {
                    self.back_to_source(&helpers).await;
                    return Err(e.into());
                }
            }
            checkpoint(Phase::Switch);
            for p in &parts {
                let r = self.source_record(p, MovePhase::Switch);
                if let Err(e) = self.mark(&self.cp.src, p.volume, r).await {
                    // Not every volume switched: none may count as switched.
                    if self.unswitch(&parts).await.is_ok() {
                        self.back_to_source(&helpers).await;
                    }
                    return Err(e.into());
                }
            }
        } else {
            // Every switch was recorded: the source apps must stay stopped.
            self.cp.mark_down();
            self.stop_on_source().await?;
            self.no_other_writers().await?;
        }

        checkpoint(Phase::Start);
        self.cp.report(Phase::Start, 0);
        if let Err(e) = self.cp.guarded(self.start_on_target()).await {
            self.undo_switch(&parts, &helpers).await;
            return Err(e.into());
        }
        if let Some(d) = self.cp.downtime() {
            let budget = self.budget();
            let shown = crate::output::human_duration(d);
            tracing::info!(volume = %self.volumes[0].name, from = %self.from(), to = %self.to(), downtime_ms = d.as_millis() as u64, "the apps were down for {shown}");
            if let Some(b) = budget.filter(|b| d > *b) {
                tracing::warn!(volume = %self.volumes[0].name, downtime_ms = d.as_millis() as u64, budget_ms = b.as_millis() as u64, "the apps were down for {shown}, longer than `max_downtime` ({}): stopping or starting them took longer than the copy's estimate", crate::output::human_duration(b));
            }
        }
        checkpoint(Phase::Commit);
        self.cp.report(Phase::Commit, 0);
        for p in &parts {
            let current = CopyRecord {
                role: CopyRole::Current,
                epoch: p.epoch + 1,
                peer: None,
                moving_to: None,
                phase: None,
                bytes: p.bytes,
                cost: Some(self.cost(p)),
                supersedes: Vec::new(),
            };
            self.mark(&self.cp.dst, p.volume, current).await?;
        }
        for p in &parts {
            let retained = CopyRecord {
                role: CopyRole::Retained,
                epoch: p.epoch,
                peer: Some(self.to().into()),
                moving_to: None,
                phase: None,
                bytes: p.bytes,
                cost: Some(self.cost(p)),
                supersedes: Vec::new(),
            };
            self.mark(&self.cp.src, p.volume, retained).await?;
        }
        checkpoint(Phase::Retire);
        self.cp.report(Phase::Retire, 0);
        for c in &self.apps {
            self.cp
                .src
                .remove_container(&c.name)
                .await
                .map_err(|e| e.to_string())?;
        }
        for h in &helpers {
            h.stop().await;
        }
        // Older records go last: the newest record of each copy is in
        // place. Each is told by the volume it is about, never by its name.
        let written = std::mem::take(&mut *self.written.lock().unwrap_or_else(|p| p.into_inner()));
        for p in &parts {
            for (api, old) in [
                (&self.cp.src, &p.src_records),
                (&self.cp.dst, &p.dst_records),
            ] {
                let mine: Vec<RecordRef> = written
                    .get(api.host())
                    .into_iter()
                    .flatten()
                    .filter(|r| r.of == p.volume.name)
                    .cloned()
                    .collect();
                let older = mine.len().saturating_sub(1);
                let mut gone = old.clone();
                gone.extend(mine.into_iter().take(older));
                crate::onhost::records::remove(api.as_ref(), &gone).await;
            }
        }
        Ok(())
    }

    fn source_record(&self, p: &Part<'_>, phase: MovePhase) -> CopyRecord {
        CopyRecord {
            role: CopyRole::Current,
            epoch: p.epoch,
            peer: None,
            moving_to: Some(self.to().into()),
            phase: Some(phase),
            bytes: p.bytes,
            cost: None,
            supersedes: Vec::new(),
        }
    }

    /// Writes a new record; the newest (by sequence) is the one that counts.
    async fn mark(
        &self,
        api: &Arc<dyn DockerApi>,
        volume: &VolumeSpec,
        r: CopyRecord,
    ) -> Result<(), String> {
        let key = (api.host().to_string(), volume.name.clone());
        let seq = {
            let mut last = self.last_seq.lock().unwrap_or_else(|e| e.into_inner());
            let seq = crate::onhost::records::next_seq(last.get(&key).copied().unwrap_or(0));
            last.insert(key, seq);
            seq
        };
        let of = crate::onhost::records::Of {
            name: &volume.name,
            stack: &volume.stack,
            volume: &volume.volume,
        };
        let written = crate::onhost::records::write(api.as_ref(), of, &r, seq).await?;
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(api.host().to_string())
            .or_default()
            .push(written);
        Ok(())
    }

    async fn stop_on_source(&self) -> Result<(), String> {
        // Stopped for good: the engine must not start them again on its own
        // (a restart of the engine starts an `always` container), neither
        // during the last copy nor after the switch. The policy they had
        // comes back if the move is rolled back.
        for c in &self.apps {
            let Some(s) = self
                .cp
                .src
                .container_status(&c.name)
                .await
                .map_err(|e| e.to_string())?
            else {
                continue;
            };
            if let Some(r) = s.restart.filter(|r| *r != Restart::No) {
                self.cp
                    .src
                    .set_restart(&c.name, Restart::No)
                    .await
                    .map_err(|e| e.to_string())?;
                self.held
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((c.name.clone(), r));
            }
        }
        for c in &self.apps {
            self.cp
                .src
                .stop_container(&c.name, c.stop_grace())
                .await
                .map_err(|e| e.to_string())?;
        }
        // Stopped means stopped: a restart policy must not bring it back.
        for c in &self.apps {
            if let Some(s) = self
                .cp
                .src
                .container_status(&c.name)
                .await
                .map_err(|e| e.to_string())?
            {
                if matches!(
                    s.state,
                    ContainerState::Running | ContainerState::Restarting
                ) {
                    return Err(format!(
                        "container `{}` on `{}` did not stop",
                        c.name,
                        self.from()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every other container on the source that mounts a moving volume must
    /// be stopped, and not be one the engine starts on its own: otherwise it
    /// could write during the last copy or after the switch.
    async fn no_other_writers(&self) -> Result<(), String> {
        let state = self.cp.src.observe().await.map_err(|e| e.to_string())?;
        for v in &self.volumes {
            let Some(copy) = state.volumes.iter().find(|o| o.name == v.name) else {
                continue;
            };
            for user in &copy.used_by {
                let ours = self.apps.iter().any(|c| &c.name == user)
                    || state
                        .containers
                        .iter()
                        .any(|c| &c.name == user && c.internal);
                if ours {
                    continue;
                }
                let Some(s) = self
                    .cp
                    .src
                    .container_status(user)
                    .await
                    .map_err(|e| e.to_string())?
                else {
                    continue;
                };
                let why = if matches!(
                    s.state,
                    ContainerState::Running | ContainerState::Restarting | ContainerState::Paused
                ) {
                    Some(s.state.as_str())
                } else if s.restart == Some(Restart::Always) {
                    Some("stopped, but restarted by the engine whenever it starts (`restart: always`)")
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(format!(
                        "container `{user}` on `{}` also mounts volume `{}` and is {why}: it could write to the data while it moves; stop or remove it, then reconcile again",
                        self.from(),
                        v.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// Puts the app back on the source after a failure before the switch,
    /// if the records, read again now, still make the source's copies the
    /// current ones.
    async fn back_to_source(&self, helpers: &[Helpers<'_>]) {
        for h in helpers {
            h.stop().await;
        }
        let (src, dst) = tokio::join!(
            bounded(self.cp.src.observe()),
            bounded(self.cp.dst.observe())
        );
        let verdict = match src {
            Ok(src) => source_still_current(
                self.volumes.iter().map(|v| v.name.as_str()),
                (self.from(), &src),
                (self.to(), dst.as_ref().ok()),
            ),
            Err(e) => Err(format!("`{}` cannot be read: {e}", self.from())),
        };
        if let Err(why) = verdict {
            tracing::error!(reason = %why, from = %self.from(), "the app is not started on its source again");
            return;
        }
        let held = std::mem::take(&mut *self.held.lock().unwrap_or_else(|e| e.into_inner()));
        for (name, restart) in held {
            if let Err(e) = self.cp.src.set_restart(&name, restart).await {
                tracing::error!(error = %e, container = %name, "cannot give the app its restart policy back");
            }
        }
        for c in &self.apps {
            if let Err(e) = self.cp.src.start_container(&c.name).await {
                tracing::error!(error = %e, container = %c.name, "cannot start the app on its source again");
            }
        }
    }

    /// After the switch, the app failed on the target: stop it there, record
    /// the source as the copy to use again, and start it there.
    async fn undo_switch(&self, parts: &[Part<'_>], helpers: &[Helpers<'_>]) {
        for c in &self.apps {
            if let Err(e) = bounded(self.cp.dst.remove_container(&c.name)).await {
                // It may still run there: never start a second writer.
                tracing::error!(error = %e, container = %c.name, "cannot remove the app from the target; it is not started on the source");
                return;
            }
        }
        if let Err(e) = self.unswitch(parts).await {
            tracing::error!(error = %e, "cannot record the rollback; the app stays stopped");
            return;
        }
        self.back_to_source(helpers).await;
    }

    /// Records every source copy as the one to use again.
    async fn unswitch(&self, parts: &[Part<'_>]) -> Result<(), String> {
        for p in parts {
            let r = self.source_record(p, MovePhase::Copy);
            self.mark(&self.cp.src, p.volume, r).await?;
        }
        Ok(())
    }

    /// The downtime the move must fit: the smallest `max_downtime` of its
    /// volumes (the apps stop for all of them).
    fn budget(&self) -> Option<Duration> {
        self.volumes.iter().filter_map(|v| v.max_downtime).min()
    }

    /// What this move measured, for the records of a copy of `p`.
    fn cost(&self, p: &Part<'_>) -> crate::observed::MoveCost {
        crate::observed::MoveCost {
            files: p.files,
            rate: self.cp.rate(),
            downtime_ms: self.cp.downtime().map(|d| d.as_millis() as u64),
        }
    }

    async fn start_on_target(&self) -> Result<(), String> {
        for c in &self.apps {
            self.cp
                .dst
                .remove_container(&c.name)
                .await
                .map_err(|e| e.to_string())?;
            self.cp
                .dst
                .create_container(c)
                .await
                .map_err(|e| e.to_string())?;
        }
        for c in &self.apps {
            self.cp
                .dst
                .start_container(&c.name)
                .await
                .map_err(|e| e.to_string())?;
        }
        self.cp.mark_up();
        checkpoint(Phase::Wait);
        self.cp.report(Phase::Wait, 0);
        for c in &self.apps {
            self.wait_ready(c).await?;
        }
        Ok(())
    }

    /// Running, and healthy when the container has a healthcheck.
    async fn wait_ready(&self, c: &ContainerSpec) -> Result<(), String> {
        let ready = wait_until_ready(
            &self.cp.dst,
            &c.name,
            self.opts.ready_timeout,
            self.opts.poll,
        );
        match ready.await {
            Ok(()) => Ok(()),
            Err(Unready::Engine(e)) => Err(e),
            Err(Unready::Is(state)) => Err(format!(
                "app `{}` did not become ready on `{}` (it is {state}); the move was rolled back and it runs on `{}` again",
                c.app,
                self.to(),
                self.from()
            )),
        }
    }
}

/// Why a container did not become ready.
pub enum Unready {
    /// Its engine failed.
    Engine(String),
    /// It is this (its state described), or was when time ran out.
    Is(String),
}

/// Waits until the container `name` runs, and is healthy when it has a
/// healthcheck; gives up at once when it exited or is unhealthy (Docker
/// calls it so only after its retries), else after `timeout`.
pub async fn wait_until_ready(
    api: &Arc<dyn DockerApi>,
    name: &str,
    timeout: Duration,
    poll: Duration,
) -> Result<(), Unready> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = api
            .container_status(name)
            .await
            .map_err(|e| Unready::Engine(e.to_string()))?;
        let ready = s.as_ref().is_some_and(|s| {
            s.state == ContainerState::Running
                && (s.health.is_none() || s.health == Some(Health::Healthy))
        });
        if ready {
            return Ok(());
        }
        let gone = s.as_ref().is_none_or(|s| {
            matches!(s.state, ContainerState::Exited | ContainerState::Dead)
                || s.health == Some(Health::Unhealthy)
        });
        if gone || Instant::now() >= deadline {
            return Err(Unready::Is(crate::docker::describe_status(s.as_ref())));
        }
        tokio::time::sleep(poll).await;
    }
}

impl Copier {
    pub fn new(
        src: Arc<dyn DockerApi>,
        dst: Arc<dyn DockerApi>,
        target_address: String,
        direct: bool,
        progress: ProgressFn,
        what: &str,
    ) -> Copier {
        Copier {
            src,
            dst,
            target_address,
            direct,
            progress,
            what: what.to_string(),
            kind: "copy",
            sent: Default::default(),
            planned: Default::default(),
            logged: Default::default(),
            down: Default::default(),
            rate: Default::default(),
            touched: Default::default(),
        }
    }

    /// What the passes so far changed on the target.
    pub fn touched(&self) -> Touched {
        self.touched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Names what the copy is for in its logs (`relocation progress`).
    pub fn for_what(mut self, kind: &'static str) -> Copier {
        self.kind = kind;
        self
    }

    /// The helpers that copy Docker volume `from` on the source into `to`
    /// on the target, labelled as stack `stack`'s.
    pub fn helpers(&self, from: &str, to: &str, stack: &str, image: &str) -> Helpers<'_> {
        Helpers::new(self, (from, to), stack, image)
    }

    fn to(&self) -> &str {
        self.dst.host()
    }

    /// The copy rate measured while the apps ran, in bytes a second.
    pub fn rate(&self) -> Option<u64> {
        *self.rate.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reports progress: `in_flight` bytes of the current transfer on top
    /// of all finished ones, of all planned so far in this move.
    fn report(&self, phase: Phase, in_flight: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let total = self.planned.load(Relaxed);
        let done = (self.sent.load(Relaxed) + in_flight).min(total);
        // Logs get a line per phase and about one a second while copying.
        let log = {
            let mut last = self.logged.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.is_none_or(|(p, t)| p != phase || t.elapsed() >= Duration::from_secs(1));
            if due {
                *last = Some((phase, Instant::now()));
            }
            due
        };
        if log {
            tracing::info!(what = %self.what, from = %self.src.host(), to = %self.dst.host(), phase = phase.as_str(), done, total, "{} progress", self.kind);
        }
        (self.progress)(&Progress {
            phase,
            done,
            total,
            downtime: self.downtime(),
        });
    }

    /// Runs a step of a copy while both engines answer: one that stops
    /// answering (a host that lost power leaves its streams open and
    /// silent) ends the step within two missed pings, and the step fails.
    pub async fn guarded<T>(
        &self,
        step: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        tokio::select! {
            r = step => r,
            e = stalled(&self.src) => Err(e),
            e = stalled(&self.dst) => Err(e),
        }
    }

    /// The copy while the apps run: first by size and time alone (reads
    /// nothing twice), then by content: what that pass finds was changed by
    /// the running apps or differs in a copy the target kept from before.
    /// With a downtime budget, passes by content go on until what is left
    /// would fit it, or fail without the apps ever stopped. For a
    /// `snapshot` (no budget), a first pass that sent less than
    /// [`SHORT_BULK`] in fewer than [`SHORT_BULK_FILES`] entries is enough:
    /// it was short, so what the apps changed meanwhile is little, and the
    /// pass with the apps held compares everything by content anyway.
    pub async fn copy_while_running(
        &self,
        helpers: &[Helpers<'_>],
        budget: Option<Duration>,
        snapshot: bool,
    ) -> Result<(), String> {
        checkpoint(Phase::Copy);
        let (started, sent_before) = (Instant::now(), self.sent.load(Relaxed));
        let mut files = 0;
        for h in helpers {
            files += self.sync(h, false, Phase::Copy).await?.sent;
        }
        let sent = self.sent.load(Relaxed) - sent_before;
        let took = started.elapsed().as_secs_f64();
        if sent >= RATE_SAMPLE && took > 0.0 {
            *self.rate.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((sent as f64 / took) as u64);
        }
        if snapshot && budget.is_none() && sent < SHORT_BULK && files < SHORT_BULK_FILES {
            return Ok(());
        }
        let mut estimate = Duration::ZERO;
        for pass in 1..=BUDGET_PASSES {
            let started = Instant::now();
            let mut scans = Duration::ZERO;
            for h in helpers {
                scans += self.sync(h, true, Phase::Copy).await?.scans;
            }
            // After the stop, the delta pass copies what changed during this
            // one (about as long as this one took), then what it sent is
            // read again on both sides (about as long as sending it).
            let took = started.elapsed();
            estimate = took + took.saturating_sub(scans);
            let Some(budget) = budget else {
                return Ok(());
            };
            tracing::info!(what = %self.what, pass, estimate_ms = estimate.as_millis() as u64, budget_ms = budget.as_millis() as u64, "copied what changed while the apps run");
            if estimate <= budget {
                return Ok(());
            }
        }
        Err(format!(
            "volume `{}` changes faster than its `max_downtime` of {} allows: after {BUDGET_PASSES} passes while the apps ran, copying and checking what is left would still take about {}; the apps were not stopped and run on `{}`",
            self.what,
            crate::output::human_duration(budget.unwrap_or_default()),
            crate::output::human_duration(estimate),
            self.src.host()
        ))
    }

    /// Notes when the apps were asked to stop (or froze), for the downtime.
    pub fn mark_down(&self) {
        *self.down.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), None));
    }

    /// Notes when the apps could write again.
    pub fn mark_up(&self) {
        if let Some((_, up)) = self.down.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            *up = Some(Instant::now());
        }
    }

    /// How long the apps were down: from the stop on the source until they
    /// were started on the target.
    pub fn downtime(&self) -> Option<Duration> {
        let down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        down.and_then(|(from, to)| Some(to?.duration_since(from)))
    }

    /// Copies what changed after the stop and verifies; returns the size of
    /// the data (regular files) that was verified and its number of entries.
    /// The delta compares every entry by content with the apps stopped (and
    /// other writers are ruled out meanwhile): what it leaves alone is
    /// verified by it. What it sent or deleted is scanned again on both
    /// sides and checked, so the check after the stop grows with the change,
    /// not with the volume.
    pub async fn copy_after_stop(&self, h: &Helpers<'_>) -> Result<(u64, u64), String> {
        checkpoint(Phase::Delta);
        let pass = self.sync(h, true, Phase::Delta).await?;
        checkpoint(Phase::Verify);
        self.report(Phase::Verify, 0);
        let mut again = pass.changed;
        if let Ok(path) = std::env::var("DROVER_TEST_DAMAGE_COPY") {
            // Test-only: lose a file of the copy right before it is checked.
            let mut lost = PathList::default();
            lost.push(&path);
            h.delete(&lost).await?;
            again = again.union(&lost);
        }
        if !again.is_empty() {
            // The source's hashes of files it did not send come from the
            // delta's scan, taken with the apps stopped.
            let (src, dst) = tokio::join!(
                h.scan(Side::Src, true, true, Some(&again)),
                h.scan(Side::Dst, true, false, Some(&again))
            );
            let mut check = scan::Check::new(5);
            scan::merge(&mut src?, &mut dst?, |p| check.add(p)).await?;
            let check = check.finish();
            if check.found > 0 {
                return Err(format!(
                    "the copy of volume `{}` on `{}` does not match the source ({} difference(s): {})",
                    h.dst_volume,
                    self.dst.host(),
                    check.found,
                    check.shown.join("; "),
                ));
            }
        }
        Ok((pass.bytes, pass.entries))
    }

    /// One pass: scan both sides, delete what the target has in excess, send
    /// what differs.
    async fn sync(&self, h: &Helpers<'_>, by_content: bool, phase: Phase) -> Result<Pass, String> {
        let started = Instant::now();
        // After the stop, the source's hashes hold until the check.
        let stopped = phase == Phase::Delta;
        let (src, dst) = tokio::join!(
            h.scan(Side::Src, by_content, stopped, None),
            h.scan(Side::Dst, by_content, false, None)
        );
        let mut plan = SendPlan::new(by_content);
        let (mut entries, mut bytes) = (0u64, 0u64);
        let (mut src, mut dst) = (src?, dst?);
        scan::merge(&mut src, &mut dst, |p| {
            if let Pair::Src(s) | Pair::Both(s, _) = &p {
                entries += 1;
                bytes += s.size;
            }
            plan.add(p)
        })
        .await?;
        let scans = started.elapsed();
        let plan = plan.finish();
        self.touched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .note(&plan);
        tracing::debug!(
            phase = phase.as_str(),
            by_content,
            entries,
            send = plan.send.len(),
            delete = plan.delete.len(),
            bytes = plan.bytes,
            read_src = src.read,
            read_dst = dst.read,
            "scanned both sides"
        );
        if !plan.delete.is_empty() {
            h.delete(&plan.delete).await?;
        }
        // Only the delta's changes are checked again (a first copy's list
        // is the whole volume, and is not held twice).
        let changed = if phase == Phase::Delta {
            plan.send.union(&plan.delete)
        } else {
            PathList::default()
        };
        let sent = plan.send.len();
        if !plan.send.is_empty() {
            self.planned.fetch_add(plan.bytes, Relaxed);
            self.report(phase, 0);
            h.transfer(plan.send, plan.bytes, phase).await?;
            self.sent.fetch_add(plan.bytes, Relaxed);
        }
        Ok(Pass {
            scans,
            entries,
            bytes,
            changed,
            sent,
        })
    }

    /// A last pass by content while the apps write (`consistency: none`):
    /// nothing is checked after it, since the data changes as it is read.
    pub async fn last_pass_live(&self, h: &Helpers<'_>) -> Result<(u64, u64), String> {
        let pass = self.sync(h, true, Phase::Copy).await?;
        Ok((pass.bytes, pass.entries))
    }
}

/// Whether the apps of a move may start on its source again: every
/// volume's copy there is recorded current and not switched, and, where the
/// target could be read, the records of both decide for the source.
pub fn source_still_current<'a, 'b>(
    volumes: impl IntoIterator<Item = &'a str>,
    (from, src): (&str, &'b ObservedHost),
    (to, dst): (&str, Option<&'b ObservedHost>),
) -> Result<(), String> {
    for name in volumes {
        let find = |h: &'b ObservedHost| h.volumes.iter().find(|v| v.name == name);
        let Some(here) = find(src) else {
            return Err(format!("volume `{name}` is gone from `{from}`"));
        };
        let switched = here
            .copy
            .as_ref()
            .is_some_and(|r| r.role != CopyRole::Current || r.phase == Some(MovePhase::Switch));
        if switched {
            return Err(format!(
                "the record of volume `{name}` on `{from}` no longer makes it the current copy"
            ));
        }
        let mut copies = vec![(from, here)];
        if let Some(t) = dst.and_then(find) {
            copies.push((to, t));
        }
        match authority(name, &copies, &Default::default()) {
            Authority::On(h) if h == from => {}
            other => {
                return Err(format!(
                    "the records of volume `{name}` no longer make `{from}` its current copy ({other:?})"
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_notes_the_folders_it_wrote_into_and_whether_it_deleted() {
        let mut t = Touched::default();
        let mut plan = SendPlan::new(false);
        for p in ["d0/f1", "d0/new", "d0/new/x", "top"] {
            plan.send.push(p);
        }
        t.note(&plan);
        let dirs: Vec<&str> = t.dirs.iter().map(String::as_str).collect();
        assert_eq!(dirs, ["", "d0", "d0/new"]);
        assert!(!t.deleted);
        let mut plan = SendPlan::new(true);
        plan.delete.push("d1/gone");
        t.note(&plan);
        assert!(t.deleted);
    }

    #[test]
    fn a_rollback_starts_nothing_on_a_source_the_records_no_longer_favour() {
        use crate::observed::ObservedVolume;
        let vol = |r: Option<CopyRecord>| ObservedVolume::managed("s", "data", r);
        let rec = |role, epoch, phase| CopyRecord {
            role,
            epoch,
            peer: None,
            moving_to: Some("b".into()),
            phase,
            bytes: None,
            cost: None,
            supersedes: Vec::new(),
        };
        let host = |r| ObservedHost {
            volumes: vec![vol(r)],
            ..Default::default()
        };
        let src = host(Some(rec(CopyRole::Current, 1, Some(MovePhase::Copy))));
        let incoming = host(Some(rec(CopyRole::Incoming, 2, None)));
        let check = |s: &ObservedHost, d: Option<&ObservedHost>| {
            source_still_current(["s-data"], ("a", s), ("b", d))
        };
        assert!(check(&src, Some(&incoming)).is_ok());
        assert!(check(&src, None).is_ok(), "a dead target is no reason");
        // Another drover finished the move meanwhile: the target's copy is
        // current with a higher epoch.
        let current = host(Some(rec(CopyRole::Current, 2, None)));
        assert!(check(&src, Some(&current)).is_err());
        // Or the source's own record says the switch happened.
        let switched = host(Some(rec(CopyRole::Current, 1, Some(MovePhase::Switch))));
        assert!(check(&switched, None).is_err());
    }
}
