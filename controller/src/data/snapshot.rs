//! Snapshots, restores and clones of a volume (`docs/snapshots.md`):
//! consistent copies made with a move's data paths, checked by content.
//!
//! A snapshot is a Docker volume `<stack>-<volume>.<name>` on the volume's
//! host. It is copied while the apps run, then once more while the apps
//! that mount the volume are frozen (`docker pause`) or stopped, and that
//! last pass compares every file by content: what it leaves alone is
//! verified, what it sends is read again on both sides. Docker volume
//! labels are fixed when a volume is made, so what is known only at the end
//! (when it was taken, its size, how long the apps were frozen) is kept on
//! a record beside it; a snapshot without one is unfinished and never used.
//!
//! Every step that could leave an app frozen or a volume half-written
//! writes its record first ([`crate::contract::records`]-style label-only
//! volumes): a drover that dies there leaves the next one (or the
//! controller) what it needs to unfreeze the app, or finish the restore.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::contract::{labels, names};
use crate::data::clock;
use crate::desired::VolumeSpec;
use crate::docker::{DockerApi, RecordSpec};
use crate::observed::{ContainerState, ObservedHost, RecordObject, RecordRef};
use crate::relocate::{Copier, ProgressFn};

pub use crate::model::Consistency;

pub use crate::model::check_snapshot_name as check_name;

/// Where a copy runs: a host and how its helpers reach it.
#[derive(Clone)]
pub struct On {
    pub api: Arc<dyn DockerApi>,
    /// The host's Cluster `address` (the direct path between helpers).
    pub address: String,
}

impl On {
    /// `api`'s host, reached at its Cluster `address` in `desired`.
    pub fn of(api: &Arc<dyn DockerApi>, desired: &crate::desired::Desired) -> On {
        On {
            api: Arc::clone(api),
            address: desired
                .hosts
                .get(api.host())
                .map(|h| h.address.clone())
                .unwrap_or_default(),
        }
    }
}

/// How copies are made: the data path and progress.
#[derive(Clone)]
pub struct CopyOptions {
    /// Whether the direct helper-to-helper path may be tried.
    pub direct: bool,
    pub progress: ProgressFn,
    /// How long apps started again may take to become ready.
    pub ready_timeout: Duration,
    pub poll: Duration,
    /// `Some(network)`: the helper that filled a snapshot on its own host
    /// stays, idle, for a job on the snapshot (a push from it), with a
    /// network when `true`; [`Copied::kept`] names it, and the caller
    /// removes it. Only a copy on one host keeps its helper.
    pub keep_helper: Option<bool>,
    /// Called with the helper kept ([`CopyOptions::keep_helper`]) once it
    /// has started, before the copy: a job may run in it beside the copy.
    pub helper_started: Option<StartedFn>,
}

/// What [`CopyOptions::helper_started`] calls.
pub type StartedFn = Arc<dyn Fn(&Kept) + Send + Sync>;

impl CopyOptions {
    /// No progress shown; apps started again may take two minutes.
    pub fn quiet(direct: bool) -> CopyOptions {
        CopyOptions {
            direct,
            progress: Arc::new(|_| {}),
            ready_timeout: Duration::from_secs(120),
            poll: Duration::from_millis(250),
            keep_helper: None,
            helper_started: None,
        }
    }
}

/// The containers that mount a volume and may write to it, on its host.
#[derive(Debug, Clone, Default)]
pub struct Writers {
    /// Names, and how long each may take to stop.
    pub containers: BTreeMap<String, Duration>,
}

impl Writers {
    /// The containers (not drover's own) that mount `volume` on `state`'s
    /// host; each stops within `grace` (its `stop_grace_period`, else 10 s).
    pub fn of(state: &ObservedHost, volume: &str, grace: impl Fn(&str) -> Duration) -> Writers {
        let internal = |n: &str| state.containers.iter().any(|c| c.name == n && c.internal);
        let containers = state
            .volumes
            .iter()
            .filter(|v| v.name == volume)
            .flat_map(|v| &v.used_by)
            .filter(|n| !internal(n))
            .map(|n| (n.clone(), grace(n)))
            .collect();
        Writers { containers }
    }

    /// [`Writers::of`] volume `v`, each stopping within its app's
    /// `stop_grace_period` in `desired` (else 10 s).
    pub fn for_volume(
        desired: &crate::desired::Desired,
        state: &ObservedHost,
        v: &VolumeSpec,
    ) -> Writers {
        Writers::of(state, &v.name, |name| {
            desired
                .hosts
                .get(&v.host)
                .and_then(|h| h.containers.get(name))
                .map_or(Duration::from_secs(10), |c| c.stop_grace())
        })
    }
}

/// The complete snapshot volume `snap` on `state`'s host, if there is one.
pub fn complete<'a>(
    state: &'a ObservedHost,
    snap: &str,
) -> Option<&'a crate::observed::SnapshotInfo> {
    state
        .volumes
        .iter()
        .find(|o| o.name == snap)
        .and_then(|o| o.snapshot.as_ref())
        .filter(|s| s.complete())
}

/// What a finished copy held, and how long its apps could not write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Copied {
    pub bytes: u64,
    pub files: u64,
    /// How long the apps were frozen (or stopped) for the last pass.
    pub held: Option<Duration>,
    /// What the copy changed in the snapshot.
    pub touched: crate::relocate::Touched,
    /// The helper left running ([`CopyOptions::keep_helper`]).
    pub kept: Option<Kept>,
}

pub use crate::relocate::Kept;

/// A snapshot taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub name: String,
    /// Its Docker volume.
    pub volume: String,
    pub host: String,
    pub copied: Copied,
    pub consistency: Consistency,
    pub took: Duration,
    /// When it was taken (RFC 3339), as its record says.
    pub at: String,
}

/// What to snapshot and how.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The snapshot's name (default: the UTC time, `20261201t221500z`).
    pub name: Option<String>,
    pub consistency: Consistency,
    /// The Git revision of the manifests, when known.
    pub revision: Option<String>,
    /// Taken for `snapshots:` (pruned by its `keep`).
    pub scheduled: bool,
    /// A snapshot of this name may exist: it is brought up to date in
    /// place, so the copy sends only what changed (the one a backup
    /// pushes).
    pub refresh: bool,
}

/// The labels of a snapshot of `v` named `name`.
fn snapshot_labels(v: &VolumeSpec, name: &str, req: &Request) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        (labels::MANAGED.to_string(), "true".to_string()),
        (
            labels::SNAPSHOT_OF.to_string(),
            format!("{}/{}", v.stack, v.volume),
        ),
        (labels::SNAPSHOT.to_string(), name.to_string()),
        (
            labels::CONTRACT.to_string(),
            crate::contract::VERSION.to_string(),
        ),
    ]);
    if let Some(r) = &req.revision {
        l.insert(labels::REVISION.into(), r.clone());
    }
    if req.scheduled {
        l.insert(labels::SCHEDULED.into(), "true".into());
    }
    l
}

/// A label-only volume `name` with `extra` labels: drover's notes on a host.
fn note(name: String, extra: impl IntoIterator<Item = (&'static str, String)>) -> RecordSpec {
    RecordSpec {
        name,
        labels: crate::contract::internal_labels(extra),
    }
}

fn note_ref(name: &str) -> RecordRef {
    RecordRef {
        name: name.to_string(),
        of: String::new(),
        seq: 0,
        object: RecordObject::Volume,
    }
}

fn engine(e: crate::docker::EngineError) -> String {
    e.to_string()
}

/// A volume shaped like `v` but named `name` with `labels`: a snapshot's
/// or a clone's Docker volume.
fn volume_like(v: &VolumeSpec, name: &str, labels: BTreeMap<String, String>) -> VolumeSpec {
    VolumeSpec {
        name: name.to_string(),
        labels,
        ..v.clone()
    }
}

/// Freezes (or stops) the writers, runs the last pass, and lets them go
/// again whatever the pass did. A freeze is recorded on the host before it
/// starts, so that a drover that dies meanwhile leaves the next one what it
/// needs to end it ([`thaw`]).
async fn hold_for<T>(
    api: &Arc<dyn DockerApi>,
    writers: &Writers,
    consistency: Consistency,
    reason: &str,
    last: impl std::future::Future<Output = Result<T, String>>,
) -> Result<(T, Option<Duration>), String> {
    let mut held = Vec::new();
    let mut failed = None;
    let started = Instant::now();
    if consistency != Consistency::None {
        for (name, grace) in &writers.containers {
            // (An error here still lets go of those held before it.)
            let status = match api.container_status(name).await {
                Ok(s) => s,
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            };
            if !status.is_some_and(|s| s.state == ContainerState::Running) {
                continue;
            }
            let r = match consistency {
                Consistency::Freeze => {
                    let rec = note(
                        names::freeze_record(name),
                        [
                            (labels::FROZEN, name.clone()),
                            (labels::FROZEN_FOR, reason.to_string()),
                        ],
                    );
                    match api.create_record(&rec).await {
                        Ok(()) => api.pause_container(name).await,
                        Err(e) => Err(e),
                    }
                }
                _ => api.stop_container(name, *grace).await,
            };
            held.push(name.clone());
            if let Err(e) = r {
                failed = Some(e.to_string());
                break;
            }
        }
    }
    crate::relocate::test_checkpoint("frozen");
    let out = match failed {
        Some(e) => Err(e),
        None => last.await,
    };
    let mut release_err = None;
    for name in &held {
        let r = match consistency {
            Consistency::Freeze => match api.unpause_container(name).await {
                Ok(()) => {
                    api.remove_record(&note_ref(&names::freeze_record(name)))
                        .await
                }
                Err(e) => Err(e),
            },
            _ => api.start_container(name).await,
        };
        if let Err(e) = r {
            tracing::error!(container = %name, error = %e, "cannot let the app go on");
            release_err.get_or_insert(e.to_string());
        }
    }
    let took = (!held.is_empty()).then(|| started.elapsed());
    if let Some(t) = took {
        tracing::info!(
            consistency = consistency.as_str(),
            held_ms = t.as_millis() as u64,
            apps = held.len(),
            "apps held for the last pass"
        );
    }
    let out = out?;
    if let Some(e) = release_err {
        return Err(format!(
            "the copy is complete, but an app could not be let go on: {e}"
        ));
    }
    Ok((out, took))
}

/// Copies `from` (a volume on `src`) into `to` (on `dst`) so that `to`
/// holds what `from` held at one instant: copied while the writers run
/// (once more by content when that first pass sent much), then once more
/// while they are held, that last pass checked by content. Nothing is
/// copied before `ready` has succeeded ([`now`] when nothing is awaited);
/// the helper starts meanwhile.
#[allow(clippy::too_many_arguments)]
async fn copy_consistent(
    src: &On,
    dst: &On,
    (from, to, stack): (&str, &str, &str),
    writers: &Writers,
    consistency: Consistency,
    reason: &str,
    opts: &CopyOptions,
    ready: impl std::future::Future<Output = Result<(), String>>,
) -> Result<Copied, String> {
    let tag = crate::relocate::ensure_helper_image(&src.api).await?;
    if !Arc::ptr_eq(&src.api, &dst.api) {
        crate::relocate::ensure_helper_image(&dst.api).await?;
    }
    // (On one host a single helper reads both volumes: see `Helpers`.)
    let cp = Copier::new(
        Arc::clone(&src.api),
        Arc::clone(&dst.api),
        dst.address.clone(),
        opts.direct,
        Arc::clone(&opts.progress),
        from,
    )
    .for_what("snapshot");
    let keep = opts.keep_helper.filter(|_| Arc::ptr_eq(&src.api, &dst.api));
    let h = cp.helpers(from, to, stack, &tag);
    if keep == Some(true) {
        h.with_network();
    }
    let (started, ready) = tokio::join!(h.start(), ready);
    if let Err(e) = started.and(ready) {
        h.stop().await;
        return Err(e);
    }
    if let (Some(_), Some(started)) = (keep, &opts.helper_started) {
        started(&h.kept());
    }
    let copied = async {
        cp.copy_while_running(std::slice::from_ref(&h), None, true)
            .await?;
        if consistency == Consistency::None {
            let (bytes, files) = cp.last_pass_live(&h).await?;
            return Ok(Copied {
                bytes,
                files,
                held: None,
                touched: cp.touched(),
                kept: None,
            });
        }
        let ((bytes, files), held) = hold_for(
            &src.api,
            writers,
            consistency,
            reason,
            cp.copy_after_stop(&h),
        )
        .await?;
        Ok(Copied {
            bytes,
            files,
            held,
            touched: cp.touched(),
            kept: None,
        })
    };
    match (cp.guarded(copied).await, keep) {
        (Ok(mut c), Some(_)) => {
            c.kept = Some(h.kept());
            Ok(c)
        }
        (r, _) => {
            h.stop().await;
            r
        }
    }
}

/// Ready at once: a step that awaits nothing first.
pub fn now() -> std::future::Ready<Result<(), String>> {
    std::future::ready(Ok(()))
}

/// Takes a snapshot of `v` on its host. Nothing but the new snapshot is
/// written; on any failure it is discarded and the apps go on. Nothing is
/// written before `ready` has succeeded ([`now`] when nothing is awaited);
/// what needs no write (reading the request against the host, and
/// starting the helper when the snapshot's volume is there) goes on
/// meanwhile.
pub async fn take(
    on: &On,
    state: &ObservedHost,
    v: &VolumeSpec,
    writers: &Writers,
    req: &Request,
    opts: &CopyOptions,
    ready: impl std::future::Future<Output = Result<(), String>>,
) -> Result<Taken, String> {
    let started = Instant::now();
    let (name, snap, step) = to_prepare(on, state, v, req)?;
    let gate = async {
        ready.await?;
        prepared(on, v, req, (&name, &snap), step).await
    };
    // The helper mounts the snapshot's volume: a new one is made first.
    let gate = match step {
        Prepare::Create => {
            gate.await?;
            None
        }
        _ => Some(gate),
    };
    let ready = async {
        match gate {
            Some(g) => g.await,
            None => Ok(()),
        }
    };
    let reason = format!("snapshot `{name}` of `{}/{}`", v.stack, v.volume);
    let copied = copy_consistent(
        on,
        on,
        (&v.name, &snap, &v.stack),
        writers,
        req.consistency,
        &reason,
        opts,
        ready,
    )
    .await;
    let copied = match copied {
        Ok(c) => c,
        // Kept, unfinished: the next one brings it up to date.
        Err(e) if req.refresh => return Err(format!("{reason} failed: {e}")),
        Err(e) => {
            discard(&on.api, &snap).await;
            return Err(format!("{reason} failed, and was discarded: {e}"));
        }
    };
    let taken = Taken {
        name,
        volume: snap,
        host: on.api.host().to_string(),
        copied,
        consistency: req.consistency,
        took: started.elapsed(),
        at: clock::rfc3339(clock::now()),
    };
    if let Err(e) = complete_snapshot(&on.api, &taken, None).await {
        if let Some(k) = &taken.copied.kept {
            let _ = on.api.remove_container(&k.name).await;
        }
        discard(&on.api, &taken.volume).await;
        return Err(format!(
            "{reason} could not be recorded, and was discarded: {e}"
        ));
    }
    Ok(taken)
}

/// Makes (or finds unfinished) the Docker volume of `v`'s snapshot that
/// `req` names, to be filled: its name and its volume's.
pub async fn prepare(
    on: &On,
    state: &ObservedHost,
    v: &VolumeSpec,
    req: &Request,
) -> Result<(String, String), String> {
    let (name, snap, step) = to_prepare(on, state, v, req)?;
    prepared(on, v, req, (&name, &snap), step).await?;
    Ok((name, snap))
}

/// What [`prepare`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prepare {
    /// A new snapshot's volume.
    Create,
    /// A complete snapshot brought up to date: unfinished until it is.
    Refresh,
    /// An unfinished one of an earlier try, which this one finishes:
    /// nothing.
    Finish,
}

/// Writes what `step` says for the snapshot `name` (volume `snap`).
async fn prepared(
    on: &On,
    v: &VolumeSpec,
    req: &Request,
    (name, snap): (&str, &str),
    step: Prepare,
) -> Result<(), String> {
    match step {
        Prepare::Create => on
            .api
            .create_volume(&volume_like(v, snap, snapshot_labels(v, name, req)))
            .await
            .map_err(engine),
        Prepare::Refresh => on
            .api
            .remove_record(&note_ref(&names::snapshot_record(snap)))
            .await
            .map_err(engine),
        Prepare::Finish => Ok(()),
    }
}

/// The snapshot `req` asks for, read against the host (nothing written):
/// its name, its volume's, and what [`prepared`] writes.
fn to_prepare(
    on: &On,
    state: &ObservedHost,
    v: &VolumeSpec,
    req: &Request,
) -> Result<(String, String, Prepare), String> {
    let host = on.api.host().to_string();
    let name = req
        .name
        .clone()
        .unwrap_or_else(|| clock::compact(clock::now()));
    check_name(&name)?;
    let snap = names::snapshot(&v.name, &name);
    if !state.volumes.iter().any(|o| o.name == v.name) {
        return Err(format!(
            "volume `{}/{}` does not exist on `{host}` yet: nothing to snapshot",
            v.stack, v.volume
        ));
    }
    let step = match state.volumes.iter().find(|o| o.name == snap) {
        Some(o) if o.snapshot.as_ref().is_some_and(|s| s.complete()) && req.refresh => {
            Prepare::Refresh
        }
        Some(o) if o.snapshot.as_ref().is_some_and(|s| s.complete()) => {
            return Err(format!(
                "snapshot `{name}` of `{}/{}` exists on `{host}`; choose another `--name`",
                v.stack, v.volume
            ))
        }
        Some(o) if o.snapshot.is_some() => Prepare::Finish,
        Some(_) => {
            return Err(format!(
                "volume `{snap}` on `{host}` is not a snapshot drover made; nothing was done"
            ))
        }
        None => Prepare::Create,
    };
    Ok((name, snap, step))
}

/// Records a filled snapshot as complete; with `pushed`, as the content of
/// that backup (its ID) too.
pub async fn complete_snapshot(
    api: &Arc<dyn DockerApi>,
    t: &Taken,
    pushed: Option<&str>,
) -> Result<(), String> {
    let mut done = note(
        names::snapshot_record(&t.volume),
        [
            (labels::SNAPSHOT_RECORD, t.volume.clone()),
            (labels::TAKEN, t.at.clone()),
            (labels::BYTES, t.copied.bytes.to_string()),
            (labels::FILES, t.copied.files.to_string()),
            (labels::CONSISTENCY, t.consistency.as_str().to_string()),
            (
                labels::HELD_MS,
                t.copied
                    .held
                    .map_or(0, |d| d.as_millis() as u64)
                    .to_string(),
            ),
        ],
    );
    if let Some(id) = pushed {
        done.labels.insert(labels::PUSHED_AS.into(), id.to_string());
    }
    api.create_record(&done).await.map_err(engine)
}

/// Records that snapshot `t` holds what backup `id` holds (pushed from it
/// and not refreshed since), so that the next backup from it reads only
/// what its refresh changes. Its record is written again: a drover that
/// dies in between leaves the snapshot unfinished, to be refreshed whole.
pub async fn record_pushed(api: &Arc<dyn DockerApi>, t: &Taken, id: &str) -> Result<(), String> {
    api.remove_record(&note_ref(&names::snapshot_record(&t.volume)))
        .await
        .map_err(engine)?;
    complete_snapshot(api, t, Some(id)).await
}

/// Removes an unfinished snapshot this drover made.
async fn discard(api: &Arc<dyn DockerApi>, snap: &str) {
    let _ = api
        .remove_record(&note_ref(&names::snapshot_record(snap)))
        .await;
    if let Err(e) = api.remove_volume(snap).await {
        tracing::warn!(volume = %snap, error = %e, "cannot remove the unfinished snapshot; `drover volume rm` removes it");
    }
}

/// Ends every freeze a drover that stopped left on this host: the app is
/// unpaused and the record removed. Run under the host's lease (no other
/// drover is at work there then). Returns the containers let go.
pub async fn thaw(api: &dyn DockerApi, state: &ObservedHost) -> Vec<String> {
    let mut done = Vec::new();
    for f in &state.frozen {
        let paused = state
            .containers
            .iter()
            .any(|c| c.name == f.container && c.state == ContainerState::Paused);
        if paused {
            if let Err(e) = api.unpause_container(&f.container).await {
                tracing::error!(container = %f.container, error = %e, "cannot unfreeze the app");
                continue;
            }
            tracing::warn!(container = %f.container, host = %api.host(), reason = %f.reason, "unfroze an app a drover that stopped had frozen");
            done.push(f.container.clone());
        }
        let _ = api.remove_record(&note_ref(&f.record)).await;
    }
    done
}

/// A restore done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The snapshot the content being replaced was kept as.
    pub before: String,
    pub copied: Copied,
    /// How long the apps were stopped.
    pub stopped: Duration,
    /// The apps started again.
    pub started: Vec<String>,
}

/// Replaces the content of `v` with its snapshot `name`: the writers stop,
/// the content is kept as snapshot `before-restore-<time>`, the snapshot's
/// content is copied in and checked, the writers start again (and must
/// become ready). A restore interrupted anywhere is finished by the next
/// one ([`restore`] again, or [`finish_restores`]): until the content is
/// the snapshot's, the record of the restore stays and its apps do not
/// start.
pub async fn restore(
    on: &On,
    state: &ObservedHost,
    v: &VolumeSpec,
    writers: &Writers,
    name: &str,
    opts: &CopyOptions,
) -> Result<Restored, String> {
    let host = on.api.host();
    check_name(name)?;
    let snap = names::snapshot(&v.name, name);
    let pending = state.restores.iter().find(|r| r.volume == v.name);
    if let Some(p) = pending.filter(|p| p.from != snap) {
        return Err(format!(
            "an interrupted restore of `{}/{}` from `{}` is not finished; run it again with that snapshot first",
            v.stack,
            v.volume,
            p.from.rsplit_once('.').map_or(p.from.as_str(), |(_, n)| n)
        ));
    }
    if complete(state, &snap).is_none() {
        return Err(format!(
            "there is no snapshot `{name}` of `{}/{}` on `{host}` (`drover volume snapshots` lists them)",
            v.stack, v.volume
        ));
    }
    if !state.volumes.iter().any(|o| o.name == v.name) {
        return Err(format!(
            "volume `{}/{}` does not exist on `{host}`",
            v.stack, v.volume
        ));
    }
    let record = match pending {
        Some(p) => p.clone(),
        None => {
            let running = running_of(&on.api, writers).await?;
            let before = format!("before-restore-{}", clock::compact(clock::now()));
            let rec = crate::observed::Restoring {
                volume: v.name.clone(),
                from: snap.clone(),
                before,
                apps: running,
                record: names::restore_record(&v.name),
            };
            on.api
                .create_record(&note(
                    rec.record.clone(),
                    [
                        (labels::RESTORE_OF, rec.volume.clone()),
                        (labels::RESTORE_FROM, rec.from.clone()),
                        (labels::RESTORE_BEFORE, rec.before.clone()),
                        (labels::RESTORE_APPS, rec.apps.join(",")),
                    ],
                ))
                .await
                .map_err(engine)?;
            rec
        }
    };
    // The content being replaced is copied while its apps still run, into
    // the snapshot that keeps it (left unfinished): once they have
    // stopped, `finish` copies only what changed since.
    let fresh;
    let state = match pending {
        Some(_) => state,
        None => {
            if let Err(e) = copy_before(on, state, v, &record.before, opts).await {
                tracing::warn!(volume = %v.name, error = %e, "the content before the restore is copied with its apps stopped");
            }
            fresh = on.api.observe().await.map_err(engine)?;
            &fresh
        }
    };
    let stopped_at = Instant::now();
    finish(on, state, v, writers, &record, opts)
        .await
        .map(|(before, copied, started)| Restored {
            before,
            copied,
            stopped: stopped_at.elapsed(),
            started,
        })
}

/// Copies the content of `v`, its apps running, into its snapshot `before`,
/// left unfinished: a copy to bring up to date, never one to use.
async fn copy_before(
    on: &On,
    state: &ObservedHost,
    v: &VolumeSpec,
    before: &str,
    opts: &CopyOptions,
) -> Result<(), String> {
    let req = Request {
        name: Some(before.to_string()),
        consistency: Consistency::None,
        ..Request::default()
    };
    let (_, snap) = prepare(on, state, v, &req).await?;
    let reason = format!("snapshot `{before}` of `{}/{}`", v.stack, v.volume);
    copy_consistent(
        on,
        on,
        (&v.name, &snap, &v.stack),
        &Writers::default(),
        Consistency::None,
        &reason,
        opts,
        now(),
    )
    .await
    .map(|_| ())
}

/// The writers that run now.
async fn running_of(api: &Arc<dyn DockerApi>, writers: &Writers) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for name in writers.containers.keys() {
        let s = api.container_status(name).await.map_err(engine)?;
        if s.is_some_and(|s| {
            matches!(
                s.state,
                ContainerState::Running | ContainerState::Restarting | ContainerState::Paused
            )
        }) {
            out.push(name.clone());
        }
    }
    Ok(out)
}

/// Carries a recorded restore to its end.
async fn finish(
    on: &On,
    state: &ObservedHost,
    v: &VolumeSpec,
    writers: &Writers,
    r: &crate::observed::Restoring,
    opts: &CopyOptions,
) -> Result<(String, Copied, Vec<String>), String> {
    // Every writer stops (and stays stopped: the record keeps the
    // planner from starting them until the restore is done).
    for (name, grace) in &writers.containers {
        on.api.stop_container(name, *grace).await.map_err(engine)?;
    }
    if complete(state, &names::snapshot(&v.name, &r.before)).is_none() {
        // The content being replaced is kept first, checked like any
        // snapshot (the apps are stopped: nothing to hold).
        let req = Request {
            name: Some(r.before.clone()),
            consistency: Consistency::Stop,
            revision: None,
            scheduled: false,
            refresh: false,
        };
        if let Err(e) = take(on, state, v, &Writers::default(), &req, opts, now()).await {
            // Nothing was restored: the volume is as it was, and so are
            // its apps.
            let _ = on.api.remove_record(&note_ref(&r.record)).await;
            for name in &r.apps {
                let _ = on.api.start_container(name).await;
            }
            return Err(format!(
                "the content of `{}/{}` could not be kept before the restore, so nothing was restored and its apps run again: {e}",
                v.stack, v.volume
            ));
        }
    }
    let reason = format!("restore of `{}/{}`", v.stack, v.volume);
    crate::relocate::test_checkpoint("restore-copy");
    let copied = copy_consistent(
        on,
        on,
        (&r.from, &v.name, &v.stack),
        &Writers::default(),
        Consistency::Stop,
        &reason,
        opts,
        now(),
    )
    .await
    .map_err(|e| format!("{reason} did not finish ({e}); its apps stay stopped, and `drover volume restore` again finishes it"))?;
    on.api
        .remove_record(&note_ref(&r.record))
        .await
        .map_err(engine)?;
    let mut started = Vec::new();
    for name in &r.apps {
        on.api.start_container(name).await.map_err(engine)?;
        started.push(name.clone());
    }
    for name in &started {
        wait_ready(&on.api, name, opts).await?;
    }
    Ok((r.before.clone(), copied, started))
}

/// Finishes every restore a drover that stopped left on this host (under
/// its lease), so that no app stays stopped for it.
pub async fn finish_restores(
    on: &On,
    state: &ObservedHost,
    desired: &crate::desired::Desired,
    opts: &CopyOptions,
) -> Vec<Result<String, String>> {
    let mut out = Vec::new();
    for r in &state.restores {
        let Some(v) = desired
            .hosts
            .get(on.api.host())
            .and_then(|h| h.volumes.get(&r.volume))
        else {
            out.push(Err(format!(
                "an interrupted restore of volume `{}` on `{}` cannot be finished: the volume is no longer placed there",
                r.volume,
                on.api.host()
            )));
            continue;
        };
        let writers = Writers::for_volume(desired, state, v);
        out.push(finish(on, state, v, &writers, r, opts).await.map(|_| {
            format!(
                "finished the interrupted restore of `{}/{}`",
                v.stack, v.volume
            )
        }));
    }
    out
}

/// Running, and healthy when the container has a healthcheck.
async fn wait_ready(
    api: &Arc<dyn DockerApi>,
    name: &str,
    opts: &CopyOptions,
) -> Result<(), String> {
    use crate::relocate::Unready;
    match crate::relocate::wait_until_ready(api, name, opts.ready_timeout, opts.poll).await {
        Ok(()) => Ok(()),
        Err(Unready::Engine(e)) => Err(e),
        Err(Unready::Is(state)) => Err(format!(
            "container `{name}` did not become ready after the restore (it is {state}); the data is restored"
        )),
    }
}

/// Where a clone's data comes from.
pub struct CloneSource<'a> {
    pub on: On,
    pub state: &'a ObservedHost,
    pub volume: &'a VolumeSpec,
    /// A snapshot's name; `None` copies the live volume, held as a
    /// snapshot would be.
    pub snapshot: Option<String>,
    pub writers: Writers,
    pub consistency: Consistency,
}

/// Makes `target` (which must not exist yet) on `dst` from `source`. The
/// clone is recorded as unfinished until checked; one that failed is
/// finished by running it again. An existing volume is never written.
pub async fn clone(
    source: &CloneSource<'_>,
    dst: &On,
    dst_state: &ObservedHost,
    target: &VolumeSpec,
    opts: &CopyOptions,
) -> Result<Copied, String> {
    let v = source.volume;
    let (from, what) = match &source.snapshot {
        Some(n) => {
            let snap = names::snapshot(&v.name, n);
            if complete(source.state, &snap).is_none() {
                return Err(format!(
                    "there is no snapshot `{n}` of `{}/{}` on `{}`",
                    v.stack,
                    v.volume,
                    source.on.api.host()
                ));
            }
            (snap, format!("{}/{}@{n}", v.stack, v.volume))
        }
        None => (v.name.clone(), format!("{}/{}", v.stack, v.volume)),
    };
    let (writers, consistency) = match source.snapshot {
        Some(_) => (Writers::default(), Consistency::Stop),
        None => (source.writers.clone(), source.consistency),
    };
    let reason = format!("clone of `{what}`");
    seeded(dst, dst_state, target, &what, async {
        copy_consistent(
            &source.on,
            dst,
            (&from, &target.name, &target.stack),
            &writers,
            consistency,
            &reason,
            opts,
            now(),
        )
        .await
    })
    .await
    .map_err(|e| {
        format!(
            "{reason} into `{}/{}` failed: {e}; run it again to finish it",
            target.stack, target.volume
        )
    })
}

/// Makes `target` (which must not exist yet) on `dst` and fills it with
/// `fill`, recorded as unfinished (seeded from `what`) until `fill` has
/// succeeded: a volume whose record stays is never used, and running the
/// same again finishes it. An existing volume is never written.
pub async fn seeded<T>(
    dst: &On,
    dst_state: &ObservedHost,
    target: &VolumeSpec,
    what: &str,
    fill: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    let seeding = dst_state.seeding.iter().find(|s| s.volume == target.name);
    if dst_state.volumes.iter().any(|o| o.name == target.name) && seeding.is_none() {
        return Err(format!(
            "volume `{}/{}` exists on `{}`: a copy never overwrites data",
            target.stack,
            target.volume,
            dst.api.host()
        ));
    }
    if seeding.is_none() {
        dst.api
            .create_record(&note(
                names::seed_record(&target.name),
                [
                    (labels::SEEDING, target.name.clone()),
                    (labels::SEED_FROM, what.to_string()),
                ],
            ))
            .await
            .map_err(engine)?;
        let mut l = target.labels.clone();
        l.insert(labels::CLONED_FROM.into(), what.to_string());
        dst.api
            .create_volume(&volume_like(target, &target.name, l))
            .await
            .map_err(engine)?;
    }
    let out = fill.await?;
    dst.api
        .remove_record(&note_ref(&names::seed_record(&target.name)))
        .await
        .map_err(engine)?;
    Ok(out)
}

/// One snapshot as `drover volume snapshots` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listed {
    pub stack: String,
    pub volume: String,
    pub name: String,
    /// The host it is kept on; for a backup, the host the volume was on.
    pub host: String,
    /// For a backup: the repository it is kept in, and its full ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Its Docker volume (empty for a backup).
    pub docker_volume: String,
    /// `complete`, or `unfinished` (never used).
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub taken: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    /// How long the apps were frozen or stopped for it (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_ms: Option<u64>,
}

/// Every snapshot on the hosts read, of one volume (`(stack, volume)`) or
/// of all; oldest first within a volume.
pub fn list(observed: &crate::observed::Observed, of: Option<(&str, &str)>) -> Vec<Listed> {
    let mut out: Vec<Listed> = observed
        .hosts
        .iter()
        .flat_map(|(host, h)| h.volumes.iter().map(move |v| (host, v)))
        .filter_map(|(host, v)| {
            let s = v.snapshot.as_ref()?;
            let (stack, volume) = s.of.split_once('/')?;
            if of.is_some_and(|(a, b)| (a, b) != (stack, volume)) {
                return None;
            }
            Some(Listed {
                stack: stack.to_string(),
                volume: volume.to_string(),
                name: s.name.clone(),
                host: host.clone(),
                repository: None,
                id: None,
                docker_volume: v.name.clone(),
                state: if s.complete() {
                    "complete"
                } else {
                    "unfinished"
                },
                taken: s.taken.clone(),
                bytes: s.bytes,
                files: s.files,
                revision: s.revision.clone(),
                consistency: s.consistency.clone(),
                held_ms: s.held_ms,
            })
        })
        .collect();
    sort(&mut out);
    out
}

/// Volume by volume, oldest first.
pub fn sort(rows: &mut [Listed]) {
    rows.sort_by(|a, b| {
        (&a.stack, &a.volume, &a.taken, &a.name, &a.host)
            .cmp(&(&b.stack, &b.volume, &b.taken, &b.name, &b.host))
    });
}

/// The table of `drover volume snapshots`.
pub fn table(rows: &[Listed]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                format!("{}/{}", r.stack, r.volume),
                r.name.clone(),
                match &r.repository {
                    Some(repo) => format!("{repo} (repository)"),
                    None => r.host.clone(),
                },
                r.taken.clone().unwrap_or_else(|| r.state.to_string()),
                r.bytes.map_or("-".into(), crate::output::human_bytes),
                r.files.map_or("-".into(), |f| f.to_string()),
                r.revision.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    crate::output::table(
        &[
            "VOLUME", "SNAPSHOT", "WHERE", "TAKEN", "BYTES", "FILES", "REVISION",
        ],
        &rows,
    )
}

/// What `drover volume restore --dry-run` shows: what would be stopped,
/// kept and copied. Reads only.
pub fn restore_preview(state: &ObservedHost, v: &VolumeSpec, name: &str) -> Result<String, String> {
    let Some(s) = complete(state, &names::snapshot(&v.name, name)) else {
        return Err(format!(
            "there is no snapshot `{name}` of `{}/{}` on `{}` (`drover volume snapshots` lists them)",
            v.stack, v.volume, v.host
        ));
    };
    let writers = Writers::of(state, &v.name, |_| Duration::ZERO);
    let apps: Vec<&str> = writers.containers.keys().map(String::as_str).collect();
    let mut out = format!(
        "restore `{}/{}` on `{}` from snapshot `{name}` (taken {}, {} in {} entries):\n",
        v.stack,
        v.volume,
        v.host,
        s.taken.as_deref().unwrap_or("-"),
        s.bytes.map_or("-".into(), crate::output::human_bytes),
        s.files.map_or("-".into(), |f| f.to_string()),
    );
    if apps.is_empty() {
        out.push_str("  no app mounts it: none is stopped\n");
    } else {
        out.push_str(&format!(
            "  stop {}, and start again those that run now\n",
            apps.join(", ")
        ));
    }
    out.push_str("  keep its content first as snapshot `before-restore-<time>`\n");
    out.push_str("  copy the snapshot's content in, and check it by content hash\n");
    Ok(out)
}

/// Under the leases of a pass: lets go of the apps a drover that stopped
/// left frozen, and finishes the restores it left. True when it changed
/// anything (the hosts are read again then).
pub async fn recover(
    conns: &crate::docker::hosts::Connections,
    desired: &crate::desired::Desired,
    observed: &crate::observed::Observed,
) -> bool {
    let mut changed = false;
    for (host, state) in &observed.hosts {
        let Some(api) = conns.engines.get(host) else {
            continue;
        };
        changed |= !thaw(api.as_ref(), state).await.is_empty() || !state.frozen.is_empty();
        if state.restores.is_empty() {
            continue;
        }
        let on = On::of(api, desired);
        for r in finish_restores(&on, state, desired, &CopyOptions::quiet(true)).await {
            match r {
                Ok(line) => tracing::warn!(host = %host, "{line}"),
                Err(e) => {
                    tracing::error!(host = %host, error = %e, "an interrupted restore is not finished")
                }
            }
        }
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::fake::FakeDocker;

    /// Host `a` with a disk, the stack `m`'s volume holding two files and
    /// its app running.
    struct Host {
        _disk: tempfile::TempDir,
        api: Arc<FakeDocker>,
        v: VolumeSpec,
        writers: Writers,
    }

    async fn host() -> Host {
        let disk = tempfile::tempdir().unwrap();
        let d = crate::testing::desired_on_two_hosts(
            "kind: Stack\nname: m\nvolumes: { data: {} }\napps:\n  app: { image: img, host: a, volumes: ['data:/data'] }\n",
        );
        let api = Arc::new(FakeDocker::with_disk(
            "a",
            ObservedHost::default(),
            disk.path(),
        ));
        let v = d.hosts["a"].volumes["m-data"].clone();
        api.create_volume(&v).await.unwrap();
        let app = &d.hosts["a"].containers["m-app"];
        api.create_container(app).await.unwrap();
        api.start_container(&app.name).await.unwrap();
        let data = api.volume_path("m-data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::write(data.join("a.txt"), "one\n").unwrap();
        std::fs::write(data.join("sub/b.bin"), vec![9u8; 100_000]).unwrap();
        Host {
            _disk: disk,
            api,
            v,
            writers: Writers {
                containers: BTreeMap::from([("m-app".to_string(), Duration::from_secs(1))]),
            },
        }
    }

    impl Host {
        fn on(&self) -> On {
            On {
                api: Arc::clone(&self.api) as Arc<dyn DockerApi>,
                address: String::new(),
            }
        }

        fn opts() -> CopyOptions {
            CopyOptions {
                direct: false,
                progress: Arc::new(|_| {}),
                ready_timeout: Duration::from_secs(5),
                poll: Duration::from_millis(20),
                keep_helper: None,
                helper_started: None,
            }
        }

        async fn snapshot(&self, name: &str) -> Result<Taken, String> {
            self.snapshot_when(name, false, now()).await
        }

        async fn snapshot_when(
            &self,
            name: &str,
            refresh: bool,
            ready: impl std::future::Future<Output = Result<(), String>>,
        ) -> Result<Taken, String> {
            let req = Request {
                name: Some(name.into()),
                refresh,
                ..Request::default()
            };
            let state = self.api.observe().await.unwrap();
            let opts = Host::opts();
            take(
                &self.on(),
                &state,
                &self.v,
                &self.writers,
                &req,
                &opts,
                ready,
            )
            .await
        }

        fn app_state(&self) -> ContainerState {
            let state = self.api.state();
            let app = state.containers.iter().find(|c| c.name == "m-app");
            app.map_or(ContainerState::Dead, |c| c.state)
        }

        fn read(&self, volume: &str, file: &str) -> Option<Vec<u8>> {
            std::fs::read(self.api.volume_path(volume).join(file)).ok()
        }
    }

    #[tokio::test]
    async fn a_snapshot_freezes_the_app_only_for_its_last_pass_and_matches_the_volume() {
        let h = host().await;
        let t = h.snapshot("s1").await.unwrap();
        assert_eq!(t.volume, "m-data.s1");
        assert_eq!(t.copied.files, 4, "the root, a folder and two files");
        assert!(t.copied.held.is_some());
        for f in ["a.txt", "sub/b.bin"] {
            assert_eq!(h.read("m-data.s1", f), h.read("m-data", f));
        }
        let calls = h.api.calls();
        let at = |c: &str| {
            calls
                .iter()
                .position(|x| x == c)
                .unwrap_or_else(|| panic!("no `{c}` in {calls:?}"))
        };
        let (freeze, pause, unpause) = (
            at("record drover-freeze-m-app"),
            at("pause m-app"),
            at("unpause m-app"),
        );
        assert!(freeze < pause && pause < unpause);
        // On one host a single helper reads both volumes.
        assert!(calls.iter().any(|c| c == "helper drover-move-m-data.s1"));
        assert!(
            !calls.iter().any(|c| c == "helper drover-move-m-data"),
            "{calls:?}"
        );
        // Copied by content before the freeze, so only the check is left
        // for it: no file is sent while the app is paused.
        assert!(
            calls[pause..unpause].iter().all(|c| !c.contains("copy-in")),
            "{calls:?}"
        );
        let state = h.api.state();
        assert!(state.frozen.is_empty(), "the freeze record is gone");
        let s = state
            .volumes
            .iter()
            .find(|v| v.name == "m-data.s1")
            .unwrap();
        assert!(s.snapshot.as_ref().is_some_and(|s| s.complete()));
        assert_eq!(h.app_state(), ContainerState::Running);
        // The name is taken now.
        assert!(h.snapshot("s1").await.unwrap_err().contains("exists"));
    }

    #[tokio::test]
    async fn a_snapshot_writes_nothing_before_it_is_ready() {
        let h = host().await;
        h.snapshot("last").await.unwrap();
        std::fs::write(h.api.volume_path("m-data").join("a.txt"), "two\n").unwrap();
        let refused = || async { Err::<(), _>("the password is wrong".to_string()) };
        let before = h.api.calls().len();
        // A refresh: the snapshot stays complete, as it was.
        let e = h.snapshot_when("last", true, refused()).await.unwrap_err();
        assert!(e.contains("the password is wrong"), "{e}");
        // A new one: no volume is made.
        let e = h.snapshot_when("new", false, refused()).await.unwrap_err();
        assert!(e.contains("the password is wrong"), "{e}");
        // Only its helper was started, and removed again.
        let calls = h.api.calls()[before..].to_vec();
        let writes = ["record", "create-volume", "pause", "exec"];
        assert!(
            calls
                .iter()
                .all(|c| !writes.iter().any(|w| c.starts_with(w))),
            "{calls:?}"
        );
        assert!(calls.contains(&"helper drover-move-m-data.last".to_string()));
        assert_eq!(h.read("m-data.last", "a.txt").unwrap(), b"one\n");
        assert_eq!(h.app_state(), ContainerState::Running);
        // Ready, the refresh brings it up to date.
        h.snapshot_when("last", true, now()).await.unwrap();
        assert_eq!(h.read("m-data.last", "a.txt").unwrap(), b"two\n");
    }

    #[tokio::test]
    async fn a_restore_keeps_what_it_replaces_and_starts_the_app_again() {
        let h = host().await;
        h.snapshot("good").await.unwrap();
        let data = h.api.volume_path("m-data");
        std::fs::write(data.join("a.txt"), "bad\n").unwrap();
        std::fs::remove_dir_all(data.join("sub")).unwrap();
        let state = h.api.observe().await.unwrap();
        let done = restore(&h.on(), &state, &h.v, &h.writers, "good", &Host::opts())
            .await
            .unwrap();
        assert_eq!(h.read("m-data", "a.txt").unwrap(), b"one\n");
        assert_eq!(h.read("m-data", "sub/b.bin").unwrap().len(), 100_000);
        let before = format!("m-data.{}", done.before);
        assert_eq!(h.read(&before, "a.txt").unwrap(), b"bad\n");
        assert!(h.read(&before, "sub/b.bin").is_none());
        assert_eq!(done.started, ["m-app"]);
        let state = h.api.state();
        assert!(state.restores.is_empty(), "the restore's record is gone");
        assert_eq!(h.app_state(), ContainerState::Running);
    }

    #[tokio::test]
    async fn an_app_a_dead_drover_left_frozen_is_let_go() {
        let h = host().await;
        let rec = note(
            names::freeze_record("m-app"),
            [
                (labels::FROZEN, "m-app".to_string()),
                (labels::FROZEN_FOR, "a test".to_string()),
            ],
        );
        h.api.create_record(&rec).await.unwrap();
        h.api.pause_container("m-app").await.unwrap();
        let state = h.api.observe().await.unwrap();
        assert_eq!(thaw(h.api.as_ref(), &state).await, ["m-app"]);
        let state = h.api.state();
        assert!(state.frozen.is_empty());
        assert_eq!(h.app_state(), ContainerState::Running);
    }
}
