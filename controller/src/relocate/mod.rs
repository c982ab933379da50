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

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::contract::labels;
use crate::desired::{ContainerSpec, VolumeSpec};
use crate::docker::{DockerApi, ExecOutput, HelperSpec};
use crate::helper::scan::{self, Entry, EntryKind};
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
}

pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// The image helpers and markers run from: the running drover binary (with
/// the libraries it needs, when it is not static) and an empty `/tmp`.
#[derive(Clone)]
pub struct HelperImage {
    pub tag: String,
    pub rootfs: Bytes,
}

static IMAGE: OnceLock<Result<HelperImage, String>> = OnceLock::new();

/// The helper image for this binary, built once per process. The binary is
/// `$DROVER_HELPER_BINARY` when set, else the running one.
pub fn helper_image() -> Result<HelperImage, String> {
    IMAGE.get_or_init(build_helper_image).clone()
}

fn build_helper_image() -> Result<HelperImage, String> {
    let path = match std::env::var_os("DROVER_HELPER_BINARY") {
        Some(p) => std::path::PathBuf::from(p),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find the running binary for the helper image: {e}"))?,
    };
    let bin = std::fs::read(&path)
        .map_err(|e| format!("cannot read the helper binary {}: {e}", path.display()))?;
    let libs = if has_interpreter(&bin) {
        shared_libraries(&path)?
    } else {
        Vec::new()
    };
    let mut tar = tar::Builder::new(Vec::with_capacity(bin.len() + (1 << 20)));
    let mut dir = |name: &str, mode: u32| -> Result<(), String> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        h.set_cksum();
        tar.append_data(&mut h, name, std::io::empty())
            .map_err(|e| e.to_string())
    };
    dir("tmp/", 0o1777)?;
    dir("data/", 0o755)?;
    let mut file = |name: &str, data: &[u8]| -> Result<(), String> {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        h.set_cksum();
        tar.append_data(&mut h, name, data)
            .map_err(|e| e.to_string())
    };
    file("drover", &bin)?;
    drop(bin);
    for lib in libs {
        let data = std::fs::read(&lib).map_err(|e| format!("cannot read {lib}: {e}"))?;
        file(lib.trim_start_matches('/'), &data)?;
    }
    let rootfs = tar.into_inner().map_err(|e| e.to_string())?;
    let digest = blake3::hash(&rootfs).to_hex();
    Ok(HelperImage {
        tag: crate::contract::names::helper_image(&digest.as_str()[..16]),
        rootfs: Bytes::from(rootfs),
    })
}

/// Whether an ELF binary names a dynamic loader (is not static).
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) {
        return false;
    }
    let (Some(phoff), Some(entsize), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(count)).any(|i| {
        let at = usize::try_from(phoff).unwrap_or(usize::MAX) + i * usize::from(entsize);
        elf.get(at..at + 4) == Some(&3u32.to_le_bytes()[..]) // PT_INTERP
    })
}

fn shared_libraries(bin: &std::path::Path) -> Result<Vec<String>, String> {
    let out = std::process::Command::new("ldd")
        .arg(bin)
        .output()
        .map_err(|e| format!("this drover is not static and `ldd` cannot be run ({e}); set DROVER_HELPER_BINARY to a static drover"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.trim().split(' ').next()?,
                None => l.split(' ').next()?,
            };
            path.starts_with('/').then(|| path.to_string())
        })
        .collect())
}

/// The test-only hook: `DROVER_TEST_ABORT_AT=<phase>` kills the process the
/// moment a move reaches that phase, as SIGKILL would.
fn checkpoint(phase: Phase) {
    if std::env::var("DROVER_TEST_ABORT_AT").is_ok_and(|p| p == phase.as_str()) {
        eprintln!(
            "drover: aborting at phase `{}` (DROVER_TEST_ABORT_AT)",
            phase.as_str()
        );
        std::process::abort();
    }
}

/// One move, with everything it needs.
pub struct Move {
    pub src: Arc<dyn DockerApi>,
    pub dst: Arc<dyn DockerApi>,
    /// The volumes as they should be on the target: the action's first, then
    /// every other volume its apps mount (they move together, since the apps
    /// start on the target only once all their data is there).
    pub volumes: Vec<VolumeSpec>,
    /// The apps that mount them, as they should be on the target.
    pub apps: Vec<ContainerSpec>,
    pub opts: MoveOptions,
    pub progress: ProgressFn,
    /// Records written by this run, per host, oldest first.
    written: std::sync::Mutex<BTreeMap<String, Vec<RecordRef>>>,
    /// The newest record sequence number per (host, volume).
    last_seq: std::sync::Mutex<BTreeMap<(String, String), u64>>,
    /// Bytes of finished transfers, and of all transfers planned so far.
    sent: std::sync::atomic::AtomicU64,
    planned: std::sync::atomic::AtomicU64,
    /// The phase and time of the last progress line logged.
    logged: std::sync::Mutex<Option<(Phase, Instant)>>,
    /// Source containers whose restart policy was set to `no` while they
    /// are stopped for the move, with the policy they had.
    held: std::sync::Mutex<Vec<(String, Restart)>>,
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

/// Why a move ended early on a stop request.
pub const STOPPED: &str =
    "stopped before the app was stopped: it runs on its source, and the next pass resumes the copy";

/// `/drover helper ARGS…`, as run in a helper.
fn helper_cmd(args: &[&str]) -> Vec<String> {
    ["/drover", "helper"]
        .iter()
        .chain(args)
        .map(|s| s.to_string())
        .collect()
}

/// Writes `input` to a command's stdin, then closes it.
fn feed(
    mut stdin: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    input: Vec<u8>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        let r = stdin.write_all(&input).await;
        let _ = stdin.shutdown().await;
        r
    })
}

/// `DROVER_TEST_THROTTLE`: a slow network for tests, in bytes per second.
fn test_throttle() -> Option<u64> {
    std::env::var("DROVER_TEST_THROTTLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|r| *r > 0)
}

/// One volume of a move, as found when it started.
struct Part<'a> {
    volume: &'a VolumeSpec,
    /// The source copy's epoch; the target's becomes one more.
    epoch: u64,
    /// The size of the data, once verified.
    bytes: Option<u64>,
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

/// The port a receiving helper listens on inside its container.
const DIRECT_PORT: u16 = 7070;

fn random_token() -> Result<String, String> {
    crate::contract::hostkey::random_bytes().map(|b| crate::contract::hostkey::hex(&b))
}

fn helper_name(volume: &str) -> String {
    format!("{}{volume}", crate::plan::HELPER_PREFIX)
}

fn first_lines(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let s = s.trim();
    s.chars().take(600).collect()
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
        Move {
            src,
            dst,
            volumes,
            apps,
            opts,
            progress,
            written: Default::default(),
            last_seq: Default::default(),
            sent: Default::default(),
            planned: Default::default(),
            logged: Default::default(),
            held: Default::default(),
        }
    }

    fn from(&self) -> &str {
        self.src.host()
    }

    fn to(&self) -> &str {
        self.dst.host()
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
            tracing::info!(volume = %self.volumes[0].name, from = %self.from(), to = %self.to(), phase = phase.as_str(), done, total, "relocation progress");
        }
        (self.progress)(&Progress { phase, done, total });
    }

    /// Carries out (or resumes, or finishes) the move of every volume of
    /// the apps. On an error before the target copies are current, the apps
    /// run on the source again.
    pub async fn run(&self) -> Result<(), String> {
        let image = helper_image()?;
        let (src_state, dst_state) = tokio::join!(self.src.observe(), self.dst.observe());
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
                return Err(format!(
                    "container name `{}` on `{}` is taken by a container drover does not manage; nothing was done",
                    c.name,
                    self.to()
                ));
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
                    return Err(format!(
                    "volume `{}` is not where the plan expected it ({other:?}); nothing was done",
                    v.name
                ))
                }
            };
            let record = sv.as_ref().and_then(|c| c.copy.as_ref());
            let old_records =
                |h: &ObservedHost| -> Vec<RecordRef> { h.records_of(&v.name).cloned().collect() };
            {
                let mut last = self.last_seq.lock().unwrap_or_else(|e| e.into_inner());
                for (api, h) in [(&self.src, &src_state), (&self.dst, &dst_state)] {
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
                finishing,
                on_target: tv.is_some(),
                src_records: old_records(&src_state),
                dst_records: old_records(&dst_state),
            });
        }
        if parts.is_empty() {
            return Ok(());
        }
        for (api, host) in [(&self.src, &src_state), (&self.dst, &dst_state)] {
            if !host.images.contains(&image.tag) {
                api.import_image(&image.tag, image.rootfs.clone())
                    .await
                    .map_err(|e| format!("cannot load the helper image: {e}"))?;
            }
        }
        let helpers: Vec<Helpers> = parts
            .iter()
            .map(|p| Helpers::new(self, p.volume, &image.tag))
            .collect();

        // The apps may have started on the target only if every volume
        // passed its switch: then the move only goes forward. Otherwise they
        // never did, and every volume goes through the whole protocol (those
        // already switched find nothing left to copy).
        if !parts.iter().all(|p| p.finishing) {
            if self.opts.stop.is_cancelled() {
                return Err(STOPPED.into());
            }
            self.report(Phase::Prepare, 0);
            checkpoint(Phase::Prepare);
            for p in &mut parts {
                let incoming = CopyRecord {
                    role: CopyRole::Incoming,
                    epoch: p.epoch + 1,
                    peer: Some(self.from().into()),
                    moving_to: None,
                    phase: None,
                    bytes: None,
                };
                self.mark(&self.dst, p.volume, incoming).await?;
                if !p.on_target {
                    // Marked for good as made by a move: without its record
                    // it is never taken for the current data.
                    let mut target = p.volume.clone();
                    target
                        .labels
                        .insert(labels::MOVED_FROM.into(), self.from().into());
                    self.dst
                        .create_volume(&target)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                let r = self.source_record(p, MovePhase::Copy);
                self.mark(&self.src, p.volume, r).await?;
            }
            for h in &helpers {
                if let Err(e) = h.start().await {
                    self.back_to_source(&helpers).await;
                    return Err(e);
                }
            }
            for h in &helpers {
                let copied = tokio::select! {
                    r = self.guarded(self.copy_while_running(h)) => r,
                    _ = self.opts.stop.cancelled() => Err(STOPPED.into()),
                };
                if let Err(e) = copied {
                    self.back_to_source(&helpers).await;
                    return Err(e);
                }
            }
            if self.opts.stop.is_cancelled() {
                self.back_to_source(&helpers).await;
                return Err(STOPPED.into());
            }
            checkpoint(Phase::Stop);
            self.report(Phase::Stop, 0);
            if let Err(e) = self.guarded(self.stop_on_source()).await {
                self.back_to_source(&helpers).await;
                return Err(e);
            }
            for (p, h) in parts.iter_mut().zip(&helpers) {
                match self.guarded(self.copy_after_stop(h)).await {
                    Ok(b) => p.bytes = Some(b),
                    Err(e) => {
                        self.back_to_source(&helpers).await;
                        return Err(e);
                    }
                }
            }
            checkpoint(Phase::Switch);
            for p in &parts {
                let r = self.source_record(p, MovePhase::Switch);
                if let Err(e) = self.mark(&self.src, p.volume, r).await {
                    // Not every volume switched: none may count as switched.
                    if self.unswitch(&parts).await.is_ok() {
                        self.back_to_source(&helpers).await;
                    }
                    return Err(e);
                }
            }
        } else {
            // Every switch was recorded: the source apps must stay stopped.
            self.stop_on_source().await?;
        }

        checkpoint(Phase::Start);
        self.report(Phase::Start, 0);
        if let Err(e) = self.guarded(self.start_on_target()).await {
            self.undo_switch(&parts, &helpers).await;
            return Err(e);
        }
        checkpoint(Phase::Commit);
        self.report(Phase::Commit, 0);
        for p in &parts {
            let current = CopyRecord {
                role: CopyRole::Current,
                epoch: p.epoch + 1,
                peer: None,
                moving_to: None,
                phase: None,
                bytes: p.bytes,
            };
            self.mark(&self.dst, p.volume, current).await?;
        }
        for p in &parts {
            let retained = CopyRecord {
                role: CopyRole::Retained,
                epoch: p.epoch,
                peer: Some(self.to().into()),
                moving_to: None,
                phase: None,
                bytes: p.bytes,
            };
            self.mark(&self.src, p.volume, retained).await?;
        }
        checkpoint(Phase::Retire);
        self.report(Phase::Retire, 0);
        for c in &self.apps {
            self.src
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
            for (api, old) in [(&self.src, &p.src_records), (&self.dst, &p.dst_records)] {
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

    /// Runs a step of the move while both engines answer: one that stops
    /// answering (a host that lost power leaves its streams open and
    /// silent) ends the step within two missed pings, and the move rolls
    /// back.
    async fn guarded<T>(
        &self,
        step: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        tokio::select! {
            r = step => r,
            e = stalled(&self.src) => Err(e),
            e = stalled(&self.dst) => Err(e),
        }
    }

    fn source_record(&self, p: &Part<'_>, phase: MovePhase) -> CopyRecord {
        CopyRecord {
            role: CopyRole::Current,
            epoch: p.epoch,
            peer: None,
            moving_to: Some(self.to().into()),
            phase: Some(phase),
            bytes: p.bytes,
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
                .src
                .container_status(&c.name)
                .await
                .map_err(|e| e.to_string())?
            else {
                continue;
            };
            if let Some(r) = s.restart.filter(|r| *r != Restart::No) {
                self.src
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
            self.src
                .stop_container(&c.name, c.stop_grace())
                .await
                .map_err(|e| e.to_string())?;
        }
        // Stopped means stopped: a restart policy must not bring it back.
        for c in &self.apps {
            if let Some(s) = self
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
        self.no_other_writers().await
    }

    /// Every other container on the source that mounts a moving volume must
    /// be stopped, and not be one the engine starts on its own: otherwise it
    /// could write during the last copy or after the switch.
    async fn no_other_writers(&self) -> Result<(), String> {
        let state = self.src.observe().await.map_err(|e| e.to_string())?;
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
        let (src, dst) = tokio::join!(bounded(self.src.observe()), bounded(self.dst.observe()));
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
            if let Err(e) = self.src.set_restart(&name, restart).await {
                tracing::error!(error = %e, container = %name, "cannot give the app its restart policy back");
            }
        }
        for c in &self.apps {
            if let Err(e) = self.src.start_container(&c.name).await {
                tracing::error!(error = %e, container = %c.name, "cannot start the app on its source again");
            }
        }
    }

    /// After the switch, the app failed on the target: stop it there, record
    /// the source as the copy to use again, and start it there.
    async fn undo_switch(&self, parts: &[Part<'_>], helpers: &[Helpers<'_>]) {
        for c in &self.apps {
            if let Err(e) = bounded(self.dst.remove_container(&c.name)).await {
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
            self.mark(&self.src, p.volume, r).await?;
        }
        Ok(())
    }

    async fn copy_while_running(&self, h: &Helpers<'_>) -> Result<(), String> {
        checkpoint(Phase::Copy);
        // First by size and time alone (reads nothing twice), then by
        // content: what the second pass finds was changed by the running app
        // or differs in a copy the target kept from before.
        self.sync(h, false, Phase::Copy).await?;
        self.sync(h, true, Phase::Copy).await?;
        Ok(())
    }

    /// Copies what changed after the stop and verifies; returns the size of
    /// the data (regular files) that was verified.
    async fn copy_after_stop(&self, h: &Helpers<'_>) -> Result<u64, String> {
        checkpoint(Phase::Delta);
        let src = self.sync(h, true, Phase::Delta).await?;
        checkpoint(Phase::Verify);
        self.report(Phase::Verify, 0);
        if let Ok(path) = std::env::var("DROVER_TEST_DAMAGE_COPY") {
            // Test-only: lose a file of the copy right before it is checked.
            h.delete(&[path]).await?;
        }
        let dst = h.scan(&self.dst, true).await?;
        let diff = scan::differences(&src, &dst);
        if !diff.is_empty() {
            let shown: Vec<String> = diff.iter().take(5).cloned().collect();
            return Err(format!(
                "the copy of volume `{}` on `{}` does not match the source ({} difference(s): {}); the app stays on `{}`",
                h.volume.name,
                self.to(),
                diff.len(),
                shown.join("; "),
                self.from()
            ));
        }
        Ok(src.iter().map(|e| e.size).sum())
    }

    /// One pass: scan both sides, delete what the target has in excess, send
    /// what differs. Returns the source's scan.
    async fn sync(
        &self,
        h: &Helpers<'_>,
        by_content: bool,
        phase: Phase,
    ) -> Result<Vec<Entry>, String> {
        let (src, dst) = tokio::join!(h.scan(&self.src, by_content), h.scan(&self.dst, by_content));
        let (src, dst) = (src?, dst?);
        let (send, delete, bytes) = to_send(&src, &dst, by_content);
        tracing::debug!(
            phase = phase.as_str(),
            by_content,
            entries = src.len(),
            send = send.len(),
            delete = delete.len(),
            bytes,
            "scanned both sides"
        );
        if !delete.is_empty() {
            h.delete(&delete).await?;
        }
        if !send.is_empty() {
            use std::sync::atomic::Ordering::Relaxed;
            self.planned.fetch_add(bytes, Relaxed);
            self.report(phase, 0);
            h.transfer(&send, bytes, phase).await?;
            self.sent.fetch_add(bytes, Relaxed);
        }
        Ok(src)
    }

    async fn start_on_target(&self) -> Result<(), String> {
        for c in &self.apps {
            self.dst
                .remove_container(&c.name)
                .await
                .map_err(|e| e.to_string())?;
            self.dst
                .create_container(c)
                .await
                .map_err(|e| e.to_string())?;
        }
        for c in &self.apps {
            self.dst
                .start_container(&c.name)
                .await
                .map_err(|e| e.to_string())?;
        }
        checkpoint(Phase::Wait);
        self.report(Phase::Wait, 0);
        for c in &self.apps {
            self.wait_ready(c).await?;
        }
        Ok(())
    }

    /// Running, and healthy when the container has a healthcheck.
    async fn wait_ready(&self, c: &ContainerSpec) -> Result<(), String> {
        let deadline = Instant::now() + self.opts.ready_timeout;
        loop {
            let s = self
                .dst
                .container_status(&c.name)
                .await
                .map_err(|e| e.to_string())?;
            let ready = s.as_ref().is_some_and(|s| {
                s.state == ContainerState::Running
                    && (s.health.is_none() || s.health == Some(Health::Healthy))
            });
            if ready {
                return Ok(());
            }
            // Docker calls a container unhealthy only after its retries.
            let gone = s.as_ref().is_none_or(|s| {
                matches!(s.state, ContainerState::Exited | ContainerState::Dead)
                    || s.health == Some(Health::Unhealthy)
            });
            if gone || Instant::now() >= deadline {
                let state = crate::docker::describe_status(s.as_ref());
                return Err(format!(
                    "app `{}` did not become ready on `{}` (it is {state}); the move was rolled back and it runs on `{}` again",
                    c.app,
                    self.to(),
                    self.from()
                ));
            }
            tokio::time::sleep(self.opts.poll).await;
        }
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

/// What to send and delete so that `dst` matches `src`, and the bytes to
/// send. Entries are compared by everything the copy keeps (times
/// included); `by_content` also compares hashes where both sides have one.
pub fn to_send(src: &[Entry], dst: &[Entry], by_content: bool) -> (Vec<String>, Vec<String>, u64) {
    let d = scan::by_path(dst);
    let mut send = Vec::new();
    let mut bytes = 0;
    for s in src {
        let differs = match d.get(s.path.as_str()) {
            None => true,
            Some(t) => {
                s.kind != t.kind
                    || s.mode != t.mode
                    || (s.uid, s.gid) != (t.uid, t.gid)
                    || s.size != t.size
                    || s.target != t.target
                    || (s.kind != EntryKind::Dir && s.mtime_ns != t.mtime_ns)
                    || (by_content && s.hash.is_some() && t.hash.is_some() && s.hash != t.hash)
            }
        };
        if differs {
            send.push(s.path.clone());
            if s.kind == EntryKind::File {
                bytes += s.size;
            }
        }
    }
    let s = scan::by_path(src);
    let delete = dst
        .iter()
        .filter(|e| !e.path.is_empty() && !s.contains_key(e.path.as_str()))
        .map(|e| e.path.clone())
        .collect();
    (send, delete, bytes)
}

/// The two helper containers of a move.
struct Helpers<'a> {
    mv: &'a Move,
    volume: &'a VolumeSpec,
    image: String,
    name: String,
    /// `address:port` of the target helper while the direct path works.
    direct: std::sync::Mutex<Option<String>>,
}

impl<'a> Helpers<'a> {
    fn new(mv: &'a Move, volume: &'a VolumeSpec, image: &str) -> Helpers<'a> {
        Helpers {
            mv,
            volume,
            image: image.to_string(),
            name: helper_name(&volume.name),
            direct: std::sync::Mutex::new(None),
        }
    }

    fn spec(&self, read_only: bool, network: bool, publish: Option<(String, u16)>) -> HelperSpec {
        HelperSpec {
            name: self.name.clone(),
            image: self.image.clone(),
            volume: self.volume.name.clone(),
            read_only,
            labels: crate::contract::internal_labels([(labels::STACK, &self.volume.stack)]),
            cmd: helper_cmd(&["idle", "--seconds", "21600"]),
            network,
            publish,
        }
    }

    async fn start(&self) -> Result<(), String> {
        let addr = self.mv.opts.target_address.as_str();
        let loopback =
            addr.is_empty() || addr == "localhost" || addr.starts_with("127.") || addr == "::1";
        let direct = self.mv.opts.direct && !loopback;
        for (api, ro) in [(&self.mv.src, true), (&self.mv.dst, false)] {
            api.remove_container(&self.name)
                .await
                .map_err(|e| e.to_string())?;
            // Published on every interface of the target: `address` may be
            // one the host does not hold itself (NAT).
            let publish = (direct && !ro).then(|| (String::new(), DIRECT_PORT));
            let port = match api.run_helper(&self.spec(ro, direct, publish)).await {
                Ok(p) => p,
                Err(e) if direct => {
                    tracing::warn!(host = %api.host(), error = %e, "a networked helper cannot start; copying through the Docker API");
                    api.remove_container(&self.name)
                        .await
                        .map_err(|e| e.to_string())?;
                    api.run_helper(&self.spec(ro, false, None))
                        .await
                        .map_err(|e| format!("cannot start the helper on `{}`: {e}", api.host()))?
                }
                Err(e) => return Err(format!("cannot start the helper on `{}`: {e}", api.host())),
            };
            if let Some(p) = port {
                let at = if addr.contains(':') {
                    format!("[{addr}]:{p}")
                } else {
                    format!("{addr}:{p}")
                };
                *self.direct.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
            }
        }
        Ok(())
    }

    async fn stop(&self) {
        for api in [&self.mv.src, &self.mv.dst] {
            let _ = bounded(api.remove_container(&self.name)).await;
        }
    }

    /// Runs a helper command, feeding it `input`; returns its output.
    async fn run(
        &self,
        api: &Arc<dyn DockerApi>,
        args: &[&str],
        input: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let mut ex = api
            .exec(&self.name, helper_cmd(args))
            .await
            .map_err(|e| e.to_string())?;
        let writer = feed(ex.input, input);
        let (out, err) = collect(&mut ex.output).await?;
        let _ = writer.await;
        check_exit(api, &ex.id, args[0], &err).await?;
        Ok(out)
    }

    /// A scan of one side, parsed line by line as it arrives.
    async fn scan(&self, api: &Arc<dyn DockerApi>, hash: bool) -> Result<Vec<Entry>, String> {
        let args: &[&str] = if hash { &["scan", "--hash"] } else { &["scan"] };
        let mut ex = api
            .exec(&self.name, helper_cmd(args))
            .await
            .map_err(|e| e.to_string())?;
        let _ = ex.input.shutdown().await;
        let (mut entries, mut ended, mut pending, mut err) =
            (Vec::new(), false, Vec::new(), Vec::new());
        let bad = |e: serde_json::Error| format!("a scan on `{}` gave a bad line: {e}", api.host());
        while let Some(chunk) = ex.output.next().await {
            match chunk.map_err(|e| e.to_string())? {
                ExecOutput::Stdout(b) => {
                    for line in complete_lines(&mut pending, &b) {
                        match serde_json::from_slice::<crate::helper::Line>(&line).map_err(bad)? {
                            crate::helper::Line::Entry(e) => entries.push(*e),
                            crate::helper::Line::End { end } => {
                                ended = end as usize == entries.len()
                            }
                        }
                    }
                }
                ExecOutput::Stderr(b) => err.extend_from_slice(&b),
            }
        }
        check_exit(api, &ex.id, "scan", &err).await?;
        if !ended || !pending.is_empty() {
            return Err(format!("the scan on `{}` was cut short", api.host()));
        }
        Ok(entries)
    }

    async fn delete(&self, paths: &[String]) -> Result<(), String> {
        self.run(&self.mv.dst, &["delete"], lines(paths)).await?;
        Ok(())
    }

    /// Streams `paths` from the source helper into the target helper: over
    /// the direct path while it works, else through drover.
    async fn transfer(&self, paths: &[String], total: u64, phase: Phase) -> Result<(), String> {
        let direct = self
            .direct
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(to) = direct {
            match self.transfer_direct(&to, paths, total, phase).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(volume = %self.volume.name, error = %e, "the direct path between the helpers failed; copying through the Docker API instead");
                    *self.direct.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
            }
        }
        self.transfer_api(paths, total, phase).await
    }

    /// The direct path: the target helper listens on a published port, the
    /// source helper connects with a one-time token and streams to it.
    async fn transfer_direct(
        &self,
        to: &str,
        paths: &[String],
        total: u64,
        phase: Phase,
    ) -> Result<(), String> {
        let token = random_token()?;
        let port = DIRECT_PORT.to_string();
        let mut recv = self
            .mv
            .dst
            .exec(&self.name, helper_cmd(&["receive", "--port", &port]))
            .await
            .map_err(|e| e.to_string())?;
        recv.input
            .write_all(format!("{token}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let _ = recv.input.shutdown().await;
        let mut args = vec!["send", "--to", to];
        let rate = test_throttle().map(|r| r.to_string());
        if let Some(r) = &rate {
            args.extend(["--rate", r.as_str()]);
        }
        let mut send = self
            .mv
            .src
            .exec(&self.name, helper_cmd(&args))
            .await
            .map_err(|e| e.to_string())?;
        let mut input = format!("{token}\n").into_bytes();
        input.extend(lines(paths));
        let writer = feed(send.input, input);
        let mut send_err = Vec::new();
        let mut pending = Vec::new();
        while let Some(chunk) = send.output.next().await {
            match chunk.map_err(|e| e.to_string())? {
                ExecOutput::Stdout(b) => {
                    for line in complete_lines(&mut pending, &b) {
                        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) {
                            if let Some(n) = v["sent"].as_u64() {
                                self.mv.report(phase, n.min(total));
                            }
                        }
                    }
                }
                ExecOutput::Stderr(b) if send_err.len() < 4096 => send_err.extend_from_slice(&b),
                ExecOutput::Stderr(_) => {}
            }
        }
        let _ = writer.await;
        // A sender that failed (say, it could not connect) is not waited
        // for by its receiver: that one gives up on its own. When the
        // receiver failed first (a full disk, say), its reason is the one
        // given.
        if let Err(sent) = check_exit(&self.mv.src, &send.id, "send", &send_err).await {
            let received =
                tokio::time::timeout(Duration::from_secs(5), collect(&mut recv.output)).await;
            if let Ok(Ok((_, err))) = received {
                check_exit(&self.mv.dst, &recv.id, "receive", &err).await?;
            }
            return Err(sent);
        }
        let (out, err) = collect(&mut recv.output).await?;
        check_exit(&self.mv.dst, &recv.id, "receive", &err).await?;
        self.unpacked(&out, phase, total, "direct")
    }

    /// Reads the summary a finished unpack printed.
    fn unpacked(&self, out: &[u8], phase: Phase, total: u64, path: &str) -> Result<(), String> {
        let done: crate::helper::Unpacked = serde_json::from_slice(out)
            .map_err(|_| format!("the unpack on `{}` gave no summary", self.mv.to()))?;
        self.mv.report(phase, total);
        tracing::debug!(entries = done.end, bytes = done.bytes, path, "unpacked");
        Ok(())
    }

    /// The API path: both helpers' streams pass through drover.
    async fn transfer_api(&self, paths: &[String], total: u64, phase: Phase) -> Result<(), String> {
        let pack = self
            .mv
            .src
            .exec(&self.name, helper_cmd(&["pack"]))
            .await
            .map_err(|e| e.to_string())?;
        let unpack = self
            .mv
            .dst
            .exec(&self.name, helper_cmd(&["unpack"]))
            .await
            .map_err(|e| e.to_string())?;
        // The unpack's output is read as it comes: its end means the unpack
        // has exited, and a stream it no longer reads must not be written
        // on (a write would wait for ever).
        let mut unpack_input = unpack.input;
        let ended = tokio_util::sync::CancellationToken::new();
        let unpack_output = {
            let (mut output, ended) = (unpack.output, ended.clone());
            tokio::spawn(async move {
                let r = collect(&mut output).await;
                ended.cancel();
                r
            })
        };
        let writer = feed(pack.input, lines(paths));
        let mut pack_err = Vec::new();
        let mut sent = 0u64;
        let mut last = Instant::now();
        let mut broken = None;
        let throttle = test_throttle();
        // Reading from the source and writing to the target overlap; at most
        // QUEUE chunks (a few MiB) wait in between.
        const QUEUE: usize = 64;
        let (tx, mut rx) = tokio::sync::mpsc::channel(QUEUE);
        let mut source = pack.output;
        let reader = tokio::spawn(async move {
            while let Some(chunk) = source.next().await {
                let stop = chunk.is_err();
                if tx.send(chunk).await.is_err() || stop {
                    break;
                }
            }
        });
        while let Some(chunk) = rx.recv().await {
            match chunk {
                Ok(ExecOutput::Stdout(b)) => {
                    if broken.is_none() {
                        tokio::select! {
                            r = unpack_input.write_all(&b) => {
                                if let Err(e) = r {
                                    broken = Some(e.to_string());
                                }
                            }
                            () = ended.cancelled() => {
                                broken = Some("the unpack ended before the stream did".into());
                            }
                        }
                    }
                    if broken.is_some() {
                        break;
                    }
                    sent += b.len() as u64;
                    if let Some(rate) = throttle {
                        let secs = b.len() as f64 / rate as f64;
                        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                    }
                    if last.elapsed() > Duration::from_millis(200) {
                        self.mv.report(phase, sent.min(total));
                        last = Instant::now();
                    }
                }
                Ok(ExecOutput::Stderr(b)) if pack_err.len() < 4096 => {
                    pack_err.extend_from_slice(&b)
                }
                Ok(ExecOutput::Stderr(_)) => {}
                Err(e) => {
                    broken.get_or_insert(e.to_string());
                    break;
                }
            }
        }
        drop(rx);
        let _ = unpack_input.shutdown().await;
        let (out, err) = unpack_output
            .await
            .map_err(|e| format!("reading the unpack failed: {e}"))??;
        // The target's reason first: a source cut off mid-stream only says
        // that it was.
        check_exit(&self.mv.dst, &unpack.id, "unpack", &err).await?;
        reader.abort();
        let _ = reader.await;
        let _ = writer.await;
        check_exit(&self.mv.src, &pack.id, "pack", &pack_err).await?;
        if let Some(e) = broken {
            return Err(format!("the stream to `{}` broke: {e}", self.mv.to()));
        }
        self.unpacked(&out, phase, total, "api")
    }
}

/// All of a command's output: stdout and stderr.
async fn collect(
    output: &mut crate::docker::ExecOutputStream,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while let Some(chunk) = output.next().await {
        match chunk.map_err(|e| e.to_string())? {
            ExecOutput::Stdout(b) => out.extend_from_slice(&b),
            ExecOutput::Stderr(b) => err.extend_from_slice(&b),
        }
    }
    Ok((out, err))
}

/// Appends `chunk` to `pending` and takes out every complete line.
fn complete_lines(pending: &mut Vec<u8>, chunk: &[u8]) -> Vec<Vec<u8>> {
    pending.extend_from_slice(chunk);
    let Some(last) = pending.iter().rposition(|c| *c == b'\n') else {
        return Vec::new();
    };
    let done: Vec<u8> = pending.drain(..=last).collect();
    done.split(|c| *c == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn lines(paths: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in paths {
        out.extend_from_slice(p.as_bytes());
        out.push(b'\n');
    }
    out
}

async fn check_exit(
    api: &Arc<dyn DockerApi>,
    id: &str,
    what: &str,
    stderr: &[u8],
) -> Result<(), String> {
    for _ in 0..50 {
        match api.exec_exit_code(id).await {
            Ok(Some(0)) => return Ok(()),
            Ok(Some(code)) => {
                return Err(format!(
                    "helper `{what}` on `{}` failed (exit {code}): {}",
                    api.host(),
                    first_lines(stderr)
                ))
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!(
        "helper `{what}` on `{}` did not finish",
        api.host()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_dynamic_binary_is_told_from_a_static_one() {
        let me = std::fs::read("/proc/self/exe").unwrap();
        assert!(has_interpreter(&me), "test binaries are dynamic");
        assert!(!has_interpreter(b"#!/bin/sh\n"));
    }
}
