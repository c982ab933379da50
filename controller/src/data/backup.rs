//! Backups: snapshots pushed into a repository, and volumes made from them
//! (`docs/backups.md`).
//!
//! A backup pushes a snapshot: a helper on the volume's host mounts the
//! snapshot read-only and runs rustic_core's backup of it, reaching the
//! repository through drover ([`crate::data::relay`]). A volume's scheduled
//! backups push its snapshot `last-backup`, brought up to date in place
//! each time, so that the copy sends only what changed and the backup reads
//! only changed files (the previous backup is its parent, compared by size,
//! times and inode, as restic does). The repository is opened, and its
//! password checked, before any app is frozen.
//!
//! A pull is the other way: a helper on the target host, with the volume
//! mounted, restores the backup into it and reads every file back against
//! the backup's content.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::contract::{labels, names};
use crate::data::repository::{self as repo, Backup, Opened};
use crate::data::snapshot::{self, CopyOptions, Kept, On, Request, Writers};
use crate::desired::VolumeSpec;
use crate::docker::{DockerApi, HelperSpec};
use crate::helper::repo::{BackedUp, Job, Restored};
use crate::model::{Consistency, Repository};

use crate::observed::ObservedHost;

/// The snapshot a volume's backups are pushed from.
pub const LAST_BACKUP: &str = "last-backup";

/// A backup pushed.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub repository: String,
    pub id: String,
    pub stats: BackedUp,
    /// The repository was made by this push.
    pub created: bool,
    /// How long pushing took (after the snapshot).
    pub took: Duration,
}

impl Pushed {
    pub fn short(&self) -> &str {
        repo::short(&self.id)
    }
}

/// Opens `r` for a push, making the repository when its location holds
/// none. Nothing is frozen before this has succeeded.
pub async fn open_for_push(r: &Repository) -> Result<Arc<Opened>, String> {
    opened(r, true).await.map_err(|e| e.to_string())
}

/// `r` being opened for a push on a thread of its own, while drover does
/// other work (reading the hosts under their leases): deriving the key
/// from the password takes about half a second. It only reads the store;
/// [`Opening::wait`] makes the repository when its location holds none,
/// so that nothing is written before the caller is ready to push.
pub struct Opening {
    r: Repository,
    begun: Instant,
    thread: std::thread::JoinHandle<Result<Opened, repo::RepoError>>,
}

impl Opening {
    pub fn begin(r: &Repository) -> Opening {
        let to_open = r.clone();
        Opening {
            r: r.clone(),
            begun: Instant::now(),
            thread: std::thread::spawn(move || repo::open(&to_open, false)),
        }
    }

    /// [`Opening::wait`] on a blocking thread.
    pub async fn opened(self) -> Result<Arc<Opened>, String> {
        tokio::task::spawn_blocking(move || self.wait())
            .await
            .unwrap_or_else(|e| Err(format!("opening the repository failed: {e}")))
    }

    /// The repository opened, as [`open_for_push`] gives it. Blocks.
    pub fn wait(self) -> Result<Arc<Opened>, String> {
        let opened = self.thread.join().unwrap_or_else(|_| {
            Err(repo::RepoError::Other {
                name: self.r.name.clone(),
                why: "opening it failed".into(),
            })
        });
        let o = match opened {
            Err(repo::RepoError::Missing(_)) => repo::open(&self.r, true),
            o => o,
        }
        .map_err(|e| e.to_string())?;
        tracing::debug!(repository = %o.name, took_ms = self.begun.elapsed().as_millis() as u64, "repository opened");
        Ok(Arc::new(o))
    }
}

/// `kept`, a repository opened before, when its store still holds it
/// ([`repo::still_holds`]: no key derived); else `r` opened anew, so that
/// a repository made again at the same location, or a store that cannot
/// be reached now, is found before anything is written or frozen.
pub async fn open_kept(r: &Repository, kept: Option<Arc<Opened>>) -> Result<Arc<Opened>, String> {
    if let Some(o) = kept {
        let held = Arc::clone(&o);
        let holds = tokio::task::spawn_blocking(move || repo::still_holds(&held));
        if holds.await.unwrap_or(false) {
            return Ok(o);
        }
        tracing::info!(repository = %r.name, "the repository kept open no longer opens with its key; opening it again");
    }
    open_for_push(r).await
}

/// Opens `r` to read it: it must exist.
pub async fn open_to_read(r: &Repository) -> Result<Arc<Opened>, String> {
    opened(r, false).await.map_err(|e| e.to_string())
}

async fn opened(r: &Repository, create: bool) -> Result<Arc<Opened>, repo::RepoError> {
    let r = r.clone();
    let begun = Instant::now();
    let o = repo::blocking(move || repo::open(&r, create)).await?;
    tracing::debug!(repository = %o.name, took_ms = begun.elapsed().as_millis() as u64, "repository opened");
    Ok(Arc::new(o))
}

/// drover's backups in `r` (of `of` only, when given), oldest first; none
/// while no repository has been made at its location yet.
pub async fn list_if_any(
    r: &Repository,
    of: Option<(String, String)>,
) -> Result<Vec<Backup>, String> {
    match opened(r, false).await {
        Ok(o) => list(&o, of).await,
        Err(repo::RepoError::Missing(_)) => Ok(Vec::new()),
        Err(e) => Err(e.to_string()),
    }
}

/// drover's backups in `o`, oldest first (of `of` only, when given).
pub async fn list(o: &Arc<Opened>, of: Option<(String, String)>) -> Result<Vec<Backup>, String> {
    let o = Arc::clone(o);
    repo::blocking(move || repo::backups(&o, of.as_ref().map(|(s, v)| (s.as_str(), v.as_str()))))
        .await
        .map_err(|e| e.to_string())
}

/// Opens `r` and finds the backup of `stack/volume` that `id` names (the
/// newest for `None`); a backup of another volume is refused.
pub async fn find(
    r: &Repository,
    stack: &str,
    volume: &str,
    id: Option<&str>,
) -> Result<(Arc<Opened>, Backup), String> {
    let o = open_to_read(r).await?;
    let all = list(&o, None).await?;
    let b = repo::pick(&all, &r.name, stack, volume, id)?.clone();
    Ok((o, b))
}

/// Starts a helper on `api` named `name` with `volume` at `/data`, idle
/// until [`run_started`] gives it its job. With `direct`, the helper has a
/// network (to a store with an address: [`reaches`]), else it reaches the
/// store through this drover.
async fn start_helper(
    api: &Arc<dyn DockerApi>,
    (volume, name): (&str, &str),
    stack: &str,
    read_only: bool,
    direct: bool,
) -> Result<Kept, String> {
    let image = crate::relocate::ensure_helper_image(api).await?;
    let engine = |e: crate::docker::EngineError| e.to_string();
    api.remove_container(name).await.map_err(engine)?;
    let spec = |network: bool| HelperSpec {
        name: name.to_string(),
        image: image.clone(),
        volume: volume.to_string(),
        read_only,
        source: None,
        labels: crate::contract::internal_labels([(labels::STACK, stack)]),
        cmd: crate::relocate::helper_cmd(&["idle", "--seconds", "21600"]),
        network,
        publish: None,
        records: false,
    };
    let started = match api.run_helper(&spec(direct)).await {
        Err(e) if direct => {
            tracing::warn!(host = %api.host(), error = %e, "a networked helper cannot start; the repository is reached through drover");
            api.remove_container(name).await.map_err(engine)?;
            api.run_helper(&spec(false)).await.map(|_| false)
        }
        r => r.map(|_| direct),
    };
    let direct =
        started.map_err(|e| format!("cannot start the helper on `{}`: {e}", api.host()))?;
    tracing::debug!(host = %api.host(), direct, "helper started");
    Ok(Kept {
        name: name.to_string(),
        network: direct,
    })
}

/// Whether a helper may reach `store` itself, `direct` asking for it: a
/// directory is on drover's machine, and only drover reaches it.
fn reaches(store: &crate::helper::store::Store, direct: bool) -> bool {
    direct && store.address().is_some()
}

/// Runs `job` in the helper `h`, then removes it.
async fn run_started(
    api: &Arc<dyn DockerApi>,
    h: Kept,
    o: &Arc<Opened>,
    job: Job,
) -> Result<serde_json::Value, String> {
    let out = run_in(api, &h, o, job).await;
    remove_helper(api, &h.name).await;
    out
}

/// Runs `job` in the helper `h`, and leaves it to be removed.
async fn run_in(
    api: &Arc<dyn DockerApi>,
    h: &Kept,
    o: &Arc<Opened>,
    job: Job,
) -> Result<serde_json::Value, String> {
    let job = job.direct(h.network.then(|| o.store.clone()));
    let exec = api
        .exec(&h.name, crate::relocate::helper_cmd(&["repo"]))
        .await
        .map_err(|e| e.to_string())?;
    crate::data::relay::serve(api, exec, Arc::clone(&o.backend), &job, "repo").await
}

async fn remove_helper(api: &Arc<dyn DockerApi>, name: &str) {
    if let Err(e) = api.remove_container(name).await {
        tracing::warn!(host = %api.host(), helper = %name, error = %e, "cannot remove the helper");
    }
}

/// Runs a helper job on `api` with `volume` at `/data` ([`start_helper`],
/// [`run_started`]).
async fn run_job(
    api: &Arc<dyn DockerApi>,
    volume: &str,
    stack: &str,
    read_only: bool,
    o: &Arc<Opened>,
    job: Job,
    direct: bool,
) -> Result<serde_json::Value, String> {
    let name = format!("{}{volume}", names::HELPER_PREFIX);
    let direct = reaches(&o.store, direct);
    let h = start_helper(api, (volume, &name), stack, read_only, direct).await?;
    run_started(api, h, o, job).await
}

/// Pushes the complete snapshot volume `snap` of `v` (on `on`) into `o`;
/// with `direct`, straight from the host when it reaches the store. With
/// `noted`, the snapshot's record notes the backup ([`noted_pushed`]).
pub async fn push(
    on: &On,
    v: &VolumeSpec,
    (snap, noted): (&str, Option<&snapshot::Taken>),
    o: &Arc<Opened>,
    revision: Option<&str>,
    direct: bool,
) -> Result<Pushed, String> {
    let begun = Instant::now();
    let name = format!("{}{snap}", names::HELPER_PREFIX);
    let direct = reaches(&o.store, direct);
    let start = start_helper(&on.api, (snap, &name), &v.stack, true, direct);
    let (started, parent) = tokio::join!(start, parent_of(v, o));
    let h = started.map_err(|e| pushing_failed(v, o, &e))?;
    let against = Against {
        parent,
        changed: None,
        followed: None,
    };
    push_from(on, v, (h, noted), o, against, revision, begun).await
}

/// The newest backup of `v` in `o`, the parent of the next one.
async fn parent_of(v: &VolumeSpec, o: &Arc<Opened>) -> Result<Option<String>, String> {
    let mine = list(o, Some((v.stack.clone(), v.volume.clone()))).await?;
    Ok(mine.last().map(|b| b.id.clone()))
}

fn pushing_failed(v: &VolumeSpec, o: &Opened, e: &str) -> String {
    format!(
        "the backup of `{}/{}` into repository `{}` failed: {e}",
        v.stack, v.volume, o.name
    )
}

/// What a push compares the snapshot with.
struct Against {
    /// The newest backup of the volume ([`parent_of`]).
    parent: Result<Option<String>, String>,
    /// The folders that hold all that changed since the parent was pushed,
    /// the only ones read ([`changed_since`]).
    changed: Option<Vec<String>>,
    /// A partial backup read as the snapshot was filled ([`refresh`]): the
    /// parent instead.
    followed: Option<String>,
}

/// Pushes into `o` the snapshot the helper `h` mounts, compared as
/// [`Against`] says; the push began at `begun`. The helper is removed while the snapshot's record
/// notes the backup (with `noted`).
async fn push_from(
    on: &On,
    v: &VolumeSpec,
    (h, noted): (Kept, Option<&snapshot::Taken>),
    o: &Arc<Opened>,
    Against {
        parent,
        changed,
        followed,
    }: Against,
    revision: Option<&str>,
    begun: Instant,
) -> Result<Pushed, String> {
    let host = on.api.host().to_string();
    let parent = match parent {
        Ok(p) => p,
        Err(e) => {
            remove_helper(&on.api, &h.name).await;
            return Err(e);
        }
    };
    let job = Job::Backup {
        key: o.key(),
        host: host.clone(),
        tags: repo::tags(&v.stack, &v.volume, &host, revision),
        parent,
        changed,
        direct: None,
        follow: false,
        followed,
    };
    let pushed = run_in(&on.api, &h, o, job)
        .await
        .map_err(|e| pushing_failed(v, o, &e))
        .and_then(|out| pushed(v, o, out, begun));
    let note = async {
        if let (Some(t), Ok(p)) = (noted, &pushed) {
            noted_pushed(on, t, p).await;
        }
    };
    tokio::join!(remove_helper(&on.api, &h.name), note);
    pushed
}

/// What a backup job's helper answered.
fn pushed(
    v: &VolumeSpec,
    o: &Opened,
    out: serde_json::Value,
    begun: Instant,
) -> Result<Pushed, String> {
    let stats: BackedUp = serde_json::from_value(out).map_err(|e| e.to_string())?;
    tracing::info!(
        volume = %v.name,
        repository = %o.name,
        id = %stats.id,
        added = stats.added,
        way = %stats.way,
        opened_ms = stats.opened_ms,
        indexed_ms = stats.indexed_ms,
        pushed_ms = stats.pushed_ms,
        partial = stats.partial,
        "backed up"
    );
    Ok(Pushed {
        repository: o.name.clone(),
        id: stats.id.clone(),
        stats,
        created: o.created,
        took: begun.elapsed(),
    })
}

/// Restores backup `b` of `o` into the Docker volume `volume` on `on`'s
/// host and reads it back against the backup (the key travels in the
/// job, never on a command line); with `direct`, straight from the store
/// when the host reaches it.
async fn restore_into(
    on: &On,
    volume: &str,
    stack: &str,
    o: &Arc<Opened>,
    b: &Backup,
    direct: bool,
) -> Result<Restored, String> {
    let job = Job::Restore {
        key: o.key(),
        id: b.id.clone(),
        direct: None,
    };
    let out = run_job(&on.api, volume, stack, false, o, job, direct).await?;
    let r: Restored = serde_json::from_value(out).map_err(|e| e.to_string())?;
    tracing::debug!(
        volume,
        opened_ms = r.opened_ms,
        wrote_ms = r.wrote_ms,
        checked_ms = r.checked_ms,
        files = r.files,
        "restored"
    );
    Ok(r)
}

/// A backup made: the snapshot it pushed, and the push.
#[derive(Debug, Clone)]
pub struct Made {
    pub taken: snapshot::Taken,
    pub pushed: Pushed,
}

/// Backs `v` up into repository `r`, which `opening` opens ([`Opening`],
/// [`open_for_push`]): brings the snapshot [`LAST_BACKUP`] up to date,
/// consistent as `consistency` says, and pushes it from the helper that
/// filled it. Nothing is written, and no app frozen, before the
/// repository has opened; the snapshot's helper starts meanwhile. Gives
/// the repository opened too.
#[allow(clippy::too_many_arguments)]
pub async fn backup(
    on: &On,
    state: &ObservedHost,
    v: &VolumeSpec,
    writers: &Writers,
    (r, opening): (
        &Repository,
        impl std::future::Future<Output = Result<Arc<Opened>, String>>,
    ),
    consistency: Consistency,
    revision: Option<String>,
    opts: &CopyOptions,
) -> Result<(Made, Arc<Opened>), String> {
    let req = Request {
        name: Some(LAST_BACKUP.to_string()),
        consistency,
        revision: revision.clone(),
        scheduled: false,
        refresh: true,
    };
    // The helper that fills the snapshot stays for the push: with a
    // network when the host may reach the store itself.
    let direct = repo::store_of(r).is_ok_and(|st| reaches(&st, opts.direct));
    let opts = &CopyOptions {
        keep_helper: Some(direct),
        ..opts.clone()
    };
    let snap = names::snapshot(&v.name, LAST_BACKUP);
    let last = state.volumes.iter().find(|c| c.name == snap);
    // (Read before the refresh, which ends what it says.)
    let pushed_as = last
        .and_then(|l| l.snapshot.as_ref())
        .filter(|s| s.complete())
        .and_then(|s| s.pushed_as.clone());
    let follow = last.is_none();
    let refreshed = refresh(on, state, v, (writers, &req, opts), opening, follow).await?;
    let (mut taken, parent, followed, o) = refreshed;
    let changed = changed_since(&parent, pushed_as.as_deref(), &taken.copied.touched);
    let h =
        taken.copied.kept.take().ok_or_else(|| {
            pushing_failed(v, &o, "the snapshot's helper was not kept for the push")
        })?;
    let pushed = push_from(
        on,
        v,
        (h, Some(&taken)),
        &o,
        Against {
            parent,
            changed,
            followed: followed.as_ref().map(|f| f.id.clone()),
        },
        revision.as_deref(),
        Instant::now(),
    );
    let mut pushed = pushed.await?;
    // (What the partial backup stored is this backup's.)
    pushed.stats.added += followed.map_or(0, |f| f.added);
    Ok((Made { taken, pushed }, o))
}

/// Brings the snapshot `last-backup` up to date as `req` says, or takes it
/// anew: its helper starts while `opening` opens the repository, then the
/// push's parent ([`parent_of`]) is found while the snapshot is refreshed.
/// With `follow` (a new snapshot, copied whole), the helper also reads the
/// snapshot into a partial backup as the copy fills it
/// ([`crate::helper::follow`]), so that most of the push runs beside the
/// copy. The snapshot, the parent, the partial backup when one was made,
/// and the repository opened.
async fn refresh(
    on: &On,
    state: &ObservedHost,
    v: &VolumeSpec,
    (writers, req, opts): (&Writers, &Request, &CopyOptions),
    opening: impl std::future::Future<Output = Result<Arc<Opened>, String>>,
    follow: bool,
) -> Result<Refreshed, String> {
    use futures_util::FutureExt;
    let opened = opening.shared();
    // (The channel closes when `opts` goes with the take: a helper that
    // never started is not waited for.)
    let (kept_tx, kept_rx) = tokio::sync::mpsc::unbounded_channel::<Kept>();
    let started = move |k: &Kept| {
        let _ = kept_tx.send(k.clone());
    };
    let opts = CopyOptions {
        helper_started: follow.then(|| Arc::new(started) as snapshot::StartedFn),
        ..opts.clone()
    };
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<()>();
    let ready = opened.clone().map(|o| o.map(|_| ()));
    let take = async move {
        let taken = snapshot::take(on, state, v, writers, req, &opts, ready).await;
        drop(opts);
        if taken.is_err() {
            let _ = failed_tx.send(());
        }
        taken
    };
    let parent = async {
        let o = opened.clone().await?;
        Ok::<_, String>((parent_of(v, &o).await, o))
    };
    let followed = async {
        let rev = req.revision.as_deref();
        tokio::select! {
            followed = read_as_filled(on, v, kept_rx, opened.clone(), rev) => followed,
            Ok(()) = failed_rx => None,
        }
    };
    match tokio::join!(take, parent, followed) {
        (Ok(t), Ok((parent, o)), followed) => Ok((t, parent, followed, o)),
        (taken, parent, _) => {
            if let Some(k) = taken.as_ref().ok().and_then(|t| t.copied.kept.as_ref()) {
                remove_helper(&on.api, &k.name).await;
            }
            // A repository that did not open is the reason.
            Err(match (parent, taken) {
                (Err(e), _) | (_, Err(e)) => e,
                (Ok(_), Ok(_)) => String::from("the repository did not open"),
            })
        }
    }
}

/// What [`refresh`] gives.
type Refreshed = (
    snapshot::Taken,
    Result<Option<String>, String>,
    Option<BackedUp>,
    Arc<Opened>,
);

/// Reads the snapshot the helper `kept` fills into a partial backup in the
/// repository `opened` ([`crate::helper::follow`]); `None` when none was
/// made (the push then reads the snapshot whole).
async fn read_as_filled(
    on: &On,
    v: &VolumeSpec,
    mut kept: tokio::sync::mpsc::UnboundedReceiver<Kept>,
    opened: impl std::future::Future<Output = Result<Arc<Opened>, String>>,
    revision: Option<&str>,
) -> Option<BackedUp> {
    let k = kept.recv().await?;
    let o = opened.await.ok()?;
    let host = on.api.host().to_string();
    let job = Job::Backup {
        key: o.key(),
        host: host.clone(),
        tags: repo::tags(&v.stack, &v.volume, &host, revision),
        parent: None,
        changed: None,
        direct: None,
        follow: true,
        followed: None,
    };
    let read = run_in(&on.api, &k, &o, job)
        .await
        .and_then(|out| serde_json::from_value::<BackedUp>(out).map_err(|e| e.to_string()));
    match read {
        Ok(b) => {
            tracing::debug!(volume = %v.name, files = b.files, bytes = b.bytes, pushed_ms = b.pushed_ms, "read the snapshot as it was filled");
            Some(b)
        }
        Err(e) => {
            tracing::debug!(volume = %v.name, error = %e, "the snapshot was not read as it was filled; its push reads it whole");
            None
        }
    }
}

/// At most this many changed folders are read alone; more, and the whole
/// snapshot is walked.
const MAX_CHANGED_DIRS: usize = 4096;

/// The folders of `last-backup` a push into a repository must read, when
/// its refresh (`touched`) is all that changed since `parent` was pushed
/// from it (its record says `pushed_as`, and that is the repository's
/// newest backup of the volume) and the refresh deleted nothing: a backup
/// made from `parent` and those folders then holds what the snapshot
/// holds. Otherwise `None`: the whole snapshot is compared with `parent`.
fn changed_since(
    parent: &Result<Option<String>, String>,
    pushed_as: Option<&str>,
    touched: &crate::relocate::Touched,
) -> Option<Vec<String>> {
    let Ok(Some(parent)) = parent else {
        return None;
    };
    let whole =
        touched.deleted || touched.dirs.contains("") || touched.dirs.len() > MAX_CHANGED_DIRS;
    (pushed_as == Some(parent.as_str()) && !whole).then(|| touched.dirs.iter().cloned().collect())
}

/// Notes on the snapshot's record that it holds backup `pushed` (a
/// failure only costs the next backup a whole walk).
async fn noted_pushed(on: &On, taken: &snapshot::Taken, pushed: &Pushed) {
    if let Err(e) = snapshot::record_pushed(&on.api, taken, &pushed.id).await {
        tracing::warn!(volume = %taken.volume, error = %e, "cannot note the backup on the snapshot's record; the next backup reads it whole");
    }
}

/// What a pull wrote.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub stats: Restored,
    pub took: Duration,
}

/// Makes the volume `target` on `on` hold backup `b` of `o`, and checks it
/// against the backup by content. `target` must be new, or the unfinished
/// result of an earlier pull ([`snapshot::seeded`]): data is never
/// overwritten.
pub async fn pull(
    on: &On,
    state: &ObservedHost,
    target: &VolumeSpec,
    o: &Arc<Opened>,
    b: &Backup,
    direct: bool,
) -> Result<Pulled, String> {
    let started = Instant::now();
    let what = format!("{}:{}", o.name, b.short());
    let stats = snapshot::seeded(
        on,
        state,
        target,
        &what,
        restore_into(on, &target.name, &target.stack, o, b, direct),
    )
    .await
    .map_err(|e| {
        format!(
            "making `{}/{}` from backup `{what}` failed: {e}; run it again to finish it",
            target.stack, target.volume
        )
    })?;
    Ok(Pulled {
        stats,
        took: started.elapsed(),
    })
}

/// Forgets the backups of `v` in `o` that `keep` no longer keeps (only
/// drover's backups of that volume), and frees their data; how many.
pub async fn retain(
    o: &Arc<Opened>,
    v: &VolumeSpec,
    keep: crate::model::KeepPolicy,
) -> Result<usize, String> {
    let mine = list(o, Some((v.stack.clone(), v.volume.clone()))).await?;
    let gone: Vec<String> = repo::forgotten(&mine, &keep)
        .into_iter()
        .map(|b| b.id.clone())
        .collect();
    let n = gone.len();
    if n > 0 {
        let o = Arc::clone(o);
        repo::blocking(move || repo::forget_and_prune(&o, &gone))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(n)
}

/// Backups as `drover volume snapshots` lists them, beside host snapshots.
pub fn listed(repository: &str, backups: &[Backup]) -> Vec<snapshot::Listed> {
    backups
        .iter()
        .map(|b| snapshot::Listed {
            stack: b.stack.clone(),
            volume: b.volume.clone(),
            name: b.short().to_string(),
            host: b.host.clone(),
            repository: Some(repository.to_string()),
            id: Some(b.id.clone()),
            docker_volume: String::new(),
            state: "complete",
            taken: Some(b.taken.clone()),
            bytes: b.bytes,
            files: b.files,
            revision: b.revision.clone(),
            consistency: None,
            held_ms: None,
        })
        .collect()
}

/// Brings backup `b` of `v` from `o` to `v`'s host as the snapshot
/// `<repository>-<id>` (kept there, like any snapshot), checked against the
/// backup by content; one already there is used as it is. Its name.
pub async fn pull_snapshot(
    on: &On,
    state: &ObservedHost,
    v: &VolumeSpec,
    o: &Arc<Opened>,
    b: &Backup,
    direct: bool,
) -> Result<String, String> {
    let name = format!("{}-{}", o.name, b.short());
    if snapshot::complete(state, &names::snapshot(&v.name, &name)).is_some() {
        return Ok(name);
    }
    let req = Request {
        name: Some(name.clone()),
        revision: b.revision.clone(),
        ..Request::default()
    };
    let started = Instant::now();
    let (name, snap) = snapshot::prepare(on, state, v, &req).await?;
    let stats = restore_into(on, &snap, &v.stack, o, b, direct)
        .await
        .map_err(|e| {
            format!(
                "bringing backup `{}:{}` to `{}` failed: {e}; run it again to finish it",
                o.name,
                b.short(),
                on.api.host()
            )
        })?;
    let taken = snapshot::Taken {
        name: name.clone(),
        volume: snap,
        host: on.api.host().to_string(),
        copied: snapshot::Copied {
            bytes: stats.bytes,
            files: stats.files,
            held: None,
            touched: Default::default(),
            kept: None,
        },
        consistency: Consistency::default(),
        took: started.elapsed(),
        at: b.taken.clone(),
    };
    snapshot::complete_snapshot(&on.api, &taken, None).await?;
    Ok(name)
}

/// How far a recovered copy's epoch jumps over every epoch the hosts that
/// can be read know of: the lost host's copy may have moved since, unseen.
const RECOVERY_EPOCH_JUMP: u64 = 1000;

/// Whether `v` may be recovered on its host from a backup: its host can be
/// read, and no host that can be read holds a current copy (that would be
/// a move). The epoch the recovered copy gets, and the hosts that could not
/// be read (their copies become stale).
pub fn recovery_check(
    observed: &crate::observed::Observed,
    v: &VolumeSpec,
) -> Result<(u64, Vec<String>), String> {
    let Some(target) = observed.hosts.get(&v.host) else {
        return Err(format!(
            "host `{}`, where the manifests place `{}/{}`, cannot be read: the volume is recovered onto a host that works",
            v.host, v.stack, v.volume
        ));
    };
    let seeding = target.seeding.iter().any(|s| s.volume == v.name);
    let mut top = 0;
    for (h, state) in &observed.hosts {
        for c in state.volumes.iter().filter(|c| c.name == v.name) {
            top = top.max(c.copy.as_ref().map_or(0, |r| r.epoch));
            if h == &v.host && seeding {
                continue;
            }
            if crate::plan::may_be_current(c) {
                return Err(format!(
                    "volume `{}/{}` has a current copy on `{h}`, which can be read: that is a move, not a recovery (`drover reconcile` moves it where the manifests place it)",
                    v.stack, v.volume
                ));
            }
            if h == &v.host {
                return Err(format!(
                    "volume `{}` exists on `{h}` (a copy kept by an earlier move): a recovery never overwrites data; remove it with `drover volume rm --host {h} {}`, or make it current with `drover volume adopt --host {h} {}`",
                    v.name, v.name, v.name
                ));
            }
        }
    }
    Ok((
        top + RECOVERY_EPOCH_JUMP,
        observed.unreachable.keys().cloned().collect(),
    ))
}

/// What a recovery did.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub pulled: Pulled,
    pub epoch: u64,
    /// The hosts whose copies are stale from now on.
    pub lost: Vec<String>,
}

/// Makes `v` on its host from backup `b` and records it as the current
/// copy, with an epoch above every other and the hosts that could not be
/// read named as superseded: a copy there, if the host comes back, is
/// stale and never used ([`crate::plan::authority`]).
pub async fn recover(
    on: &On,
    observed: &crate::observed::Observed,
    v: &VolumeSpec,
    o: &Arc<Opened>,
    b: &Backup,
    direct: bool,
) -> Result<Recovered, String> {
    let (epoch, lost) = recovery_check(observed, v)?;
    let state = &observed.hosts[&v.host];
    let started = Instant::now();
    let what = format!("{}:{}", o.name, b.short());
    let stats = snapshot::seeded(on, state, v, &what, async {
        let stats = restore_into(on, &v.name, &v.stack, o, b, direct).await?;
        // Recorded before the volume counts as made (its seed record goes
        // after this): it is never current without its epoch.
        let record = crate::contract::records::CopyRecord {
            role: crate::contract::records::CopyRole::Current,
            epoch,
            peer: None,
            moving_to: None,
            phase: None,
            bytes: Some(stats.bytes),
            cost: None,
            supersedes: lost.clone(),
        };
        let of = crate::onhost::records::Of {
            name: &v.name,
            stack: &v.stack,
            volume: &v.volume,
        };
        let seq = crate::onhost::records::next_seq(state.last_seq(&v.name));
        crate::onhost::records::write(on.api.as_ref(), of, &record, seq).await?;
        Ok(stats)
    })
    .await
    .map_err(|e| {
        format!(
            "recovering `{}/{}` from backup `{what}` failed: {e}; run it again to finish it",
            v.stack, v.volume
        )
    })?;
    Ok(Recovered {
        pulled: Pulled {
            stats,
            took: started.elapsed(),
        },
        epoch,
        lost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relocate::Touched;

    fn touched(dirs: &[&str], deleted: bool) -> Touched {
        Touched {
            dirs: dirs.iter().map(|d| d.to_string()).collect(),
            deleted,
        }
    }

    #[test]
    fn only_a_refresh_of_the_newest_backup_that_deleted_nothing_below_the_top_is_read_in_part() {
        let parent = Ok(Some("abc".to_string()));
        let t = touched(&["d0", "d0/sub"], false);
        assert_eq!(
            changed_since(&parent, Some("abc"), &t),
            Some(vec!["d0".to_string(), "d0/sub".to_string()])
        );
        // Nothing changed: nothing to read.
        assert_eq!(
            changed_since(&parent, Some("abc"), &touched(&[], false)),
            Some(vec![])
        );
        // Pushed as another backup, never pushed, no parent, a parent
        // that could not be listed.
        assert_eq!(changed_since(&parent, Some("abd"), &t), None);
        assert_eq!(changed_since(&parent, None, &t), None);
        assert_eq!(changed_since(&Ok(None), Some("abc"), &t), None);
        assert_eq!(changed_since(&Err("x".into()), Some("abc"), &t), None);
        // A deletion, the top folder, too many folders.
        assert_eq!(
            changed_since(&parent, Some("abc"), &touched(&["d0"], true)),
            None
        );
        assert_eq!(
            changed_since(&parent, Some("abc"), &touched(&["", "d0"], false)),
            None
        );
        let many: Vec<String> = (0..=MAX_CHANGED_DIRS).map(|i| format!("d{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            changed_since(&parent, Some("abc"), &touched(&many, false)),
            None
        );
    }
}
