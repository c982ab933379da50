//! In the helper: a backup of the volume into a repository, or a restore
//! from one, with rustic_core. The repository is reached directly when the
//! job names its store and the host can reach it, and through drover
//! ([`crate::data::relay`]) otherwise. The repository's key and the
//! store's credentials arrive in the job, on stdin: they are never in the
//! helper's command line or environment. drover derived the key from the
//! password when it opened the repository, so that the helper does not
//! spend the key derivation's time (scrypt, about half a second) again.

use std::io::{Read, Write};
use std::sync::Arc;

use rustic_core::{
    repofile::{MasterKey, Node, NodeType, SnapshotFile, SnapshotSummary},
    BackupOptions, Credentials, IndexedFull, IndexedIdsStatus, LocalDestination, LocalSource,
    LsOptions, ParentOptions, PathList, ReadSource, Repository, RepositoryBackends,
    RepositoryOptions, RestoreOptions, SnapshotOptions, WriteBackend,
};
use serde::{Deserialize, Serialize};

use crate::helper::relay::{explain, read_header, Relayed};
use crate::helper::store::Store;

/// What drover asks of a helper.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum Job {
    /// Back up the volume (at `/data`).
    Backup {
        key: Key,
        /// The restic snapshot's host name.
        host: String,
        tags: Vec<String>,
        /// The backup the files are compared with, by size, times and
        /// inode.
        parent: Option<String>,
        /// The folders (relative to the volume) that hold everything that
        /// changed since `parent` was pushed from this same snapshot, when
        /// drover knows it and nothing was deleted: only they are read, and
        /// the rest of the backup is `parent`'s (`incremental`).
        #[serde(default)]
        changed: Option<Vec<String>>,
        /// The store, to reach directly if the host can.
        #[serde(default)]
        direct: Option<Store>,
        /// Read the volume while the copy on this host fills it
        /// ([`crate::helper::follow`]), into a partial backup that only
        /// serves as the parent of the push after (`followed`).
        #[serde(default)]
        follow: bool,
        /// The partial backup read while the volume was filled: the parent
        /// instead of `parent`, deleted once this backup is made.
        #[serde(default)]
        followed: Option<String>,
    },
    /// Make the volume (at `/data`) what the backup holds, and check it
    /// against the backup by content.
    Restore {
        key: Key,
        id: String,
        #[serde(default)]
        direct: Option<Store>,
    },
}

impl Job {
    /// The job, telling the helper the store to reach directly (or not).
    pub fn direct(mut self, store: Option<Store>) -> Job {
        match &mut self {
            Job::Backup { direct, .. } | Job::Restore { direct, .. } => *direct = store,
        }
        self
    }

    /// The repository's key, and the store to try directly.
    fn access(&self) -> (Credentials, Option<&Store>) {
        match self {
            Job::Backup { key, direct, .. } | Job::Restore { key, direct, .. } => {
                (Credentials::Masterkey(key.0.clone()), direct.as_ref())
            }
        }
    }
}

/// A repository's master key, as a job carries it: never shown.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Key(pub MasterKey);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(…)")
    }
}

/// What a backup stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BackedUp {
    pub id: String,
    pub files: u64,
    pub bytes: u64,
    /// Bytes added to the repository (after deduplication and compression).
    pub added: u64,
    /// How the helper reached the store.
    pub way: Way,
    /// From the job's start: the repository open, its index read, the
    /// push done.
    #[serde(default)]
    pub opened_ms: u64,
    #[serde(default)]
    pub indexed_ms: u64,
    #[serde(default)]
    pub pushed_ms: u64,
    /// Only the folders that changed since the parent were read
    /// (`incremental`).
    #[serde(default)]
    pub partial: bool,
    /// Compared with a partial backup read while the snapshot was copied
    /// (`followed`): only what changed since was read.
    #[serde(default)]
    pub followed: bool,
}

/// What a restore wrote and checked.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Restored {
    pub files: u64,
    pub bytes: u64,
    /// Files whose content was checked against the backup after.
    pub verified: u64,
    /// How long opening the repository (to the backup's files listed),
    /// writing and checking took (milliseconds).
    #[serde(default)]
    pub opened_ms: u64,
    #[serde(default)]
    pub wrote_ms: u64,
    #[serde(default)]
    pub checked_ms: u64,
    /// How the helper reached the store.
    pub way: Way,
}

/// How a helper reached a repository's store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Way {
    /// Itself, straight from the host.
    Direct,
    /// Through drover; with why, when the store was named to it.
    Relayed(Option<String>),
}

impl Default for Way {
    fn default() -> Way {
        Way::Relayed(None)
    }
}

impl std::fmt::Display for Way {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Way::Direct => write!(f, "straight from the host"),
            Way::Relayed(Some(why)) => write!(f, "through drover ({why})"),
            Way::Relayed(None) => write!(f, "through drover"),
        }
    }
}

/// The path backups are made of: where the helper mounts the volume.
pub const PATH: &str = "/data";

/// How long a host may try to open a connection to the store before the
/// relay through drover is used instead (a host whose packets are dropped
/// costs this once per job; one that is refused, nothing).
const PROBE: std::time::Duration = std::time::Duration::from_secs(10);

fn fail(e: Box<rustic_core::RusticError>) -> std::io::Error {
    std::io::Error::other(explain(&e))
}

/// Runs the job read from `input`, talking to drover over `input` and
/// `output`.
pub fn run(
    mut input: impl Read + Send + 'static,
    output: impl Write + Send + 'static,
) -> std::io::Result<()> {
    let begun = std::time::Instant::now();
    let job: Job = read_header(&mut input)?;
    // A cache of the repository's index and trees for this job alone, in
    // the helper's /tmp (a tmpfs), gone with it: a tree is then read with
    // the rest of its pack in one request, not in one request each (the
    // parent's trees in a backup, the backup's in a restore and its
    // read-back).
    let cache = crate::scratch::TempDir::new("repo-cache");
    let opts = RepositoryOptions::default().cache_dir(cache.path().to_path_buf());
    let (credentials, store) = job.access();
    let open = |be: Arc<dyn WriteBackend>| {
        Repository::new(&opts, &RepositoryBackends::new(be, None))
            .and_then(|r| r.open(&credentials))
    };
    // Straight to the store when this host reaches it and it opens.
    let direct = match store {
        None => Err(None),
        Some(s) => match s.reachable(PROBE) {
            Err(why) => Err(Some(format!("the host cannot reach the store: {why}"))),
            Ok(()) => s.backend().and_then(open).map_err(|e| {
                Some(format!(
                    "the store does not open from the host: {}",
                    explain(&e)
                ))
            }),
        },
    };
    let (relay, repo, way) = match direct {
        Ok(repo) => {
            // drover still hears the result; when it goes, so does the job.
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut input, &mut std::io::sink());
                std::process::exit(3);
            });
            let relay = Arc::new(Relayed::new(Box::new(std::io::empty()), Box::new(output)));
            (relay, repo, Way::Direct)
        }
        Err(why) => {
            let relay = Arc::new(Relayed::new(Box::new(input), Box::new(output)));
            let repo = open(relay.clone() as Arc<dyn WriteBackend>).map_err(fail)?;
            (relay, repo, Way::Relayed(why))
        }
    };
    // A backup's snapshot was just copied, a restore writes the volume,
    // and whatever else the host's filesystem holds unwritten: all of it
    // goes to disk while the job computes, not at the helper's removal.
    // (While a copy fills the volume, a flush would slow its reads of the
    // source: it waits for the copy's end.)
    let root = std::path::Path::new(PATH);
    let _flushing = match &job {
        Job::Backup { follow: true, .. } => {
            // The copy this reads behind goes first: its last pass holds
            // the apps frozen. (Every thread started from here on inherits
            // this.)
            let _ = rustix::process::setpriority_process(None, 10);
            crate::helper::Flusher::start_after(root, || {
                crate::helper::follow::copy_ended(std::path::Path::new(crate::helper::COPIED))
            })
        }
        _ => crate::helper::Flusher::start(root),
    };
    let result = match job {
        Job::Backup {
            host,
            tags,
            parent,
            changed,
            follow,
            followed,
            ..
        } => {
            let opened = begun.elapsed();
            let repo = repo.to_indexed_ids().map_err(fail)?;
            let indexed = begun.elapsed();
            let stats = |done: SnapshotFile, partial| {
                let s = done.summary.unwrap_or_default();
                BackedUp {
                    id: done.id.to_hex().to_string(),
                    files: s.total_files_processed,
                    bytes: s.total_bytes_processed,
                    added: s.data_added_packed,
                    way: way.clone(),
                    opened_ms: opened.as_millis() as u64,
                    indexed_ms: indexed.as_millis() as u64,
                    pushed_ms: begun.elapsed().as_millis() as u64,
                    partial,
                    followed: false,
                }
            };
            if follow {
                let opts = BackupOptions::default().no_scan(true);
                let following = crate::helper::follow::Following::here(opts);
                let done = followed_partly(&repo, &following, (&host, &tags)).map_err(fail)?;
                let done =
                    serde_json::to_value(stats(done, true)).map_err(std::io::Error::other)?;
                return relay.done(done);
            }
            let mut snap = SnapshotOptions::default().host(host);
            snap = snap.add_tags(&tags.join(",")).map_err(fail)?;
            let snap = snap.to_snapshot().map_err(fail)?;
            // A file is read again unless its size, mtime, ctime and inode
            // are the parent's. The snapshot `last-backup` is brought up to
            // date in place, so what its refresh left alone keeps all four;
            // a file it rewrote has a new ctime even when the app kept its
            // size and mtime. (A parent pushed from another snapshot volume
            // has other inodes: its files are all read, once.)
            let parent_opts = ParentOptions::default().parents(
                followed
                    .as_ref()
                    .or(parent.as_ref())
                    .cloned()
                    .into_iter()
                    .collect::<Vec<_>>(),
            );
            let opts = BackupOptions::default()
                .parent_opts(parent_opts)
                .no_scan(true);
            let source = PathList::from_string(PATH).map_err(fail)?;
            let (repo, partly) = match (changed, &parent) {
                _ if followed.is_some() => (repo, None),
                (Some(dirs), Some(parent)) => {
                    let root = std::path::Path::new(PATH);
                    incremental(repo, &opts, (root, &dirs, parent), &tags, snap.clone())
                        .map_err(fail)?
                }
                _ => (repo, None),
            };
            let partial = partly.is_some();
            let done = match partly {
                Some(done) => Ok(done),
                None => repo.backup(&opts, &source, snap),
            };
            if let Some(followed) = &followed {
                // Made or not, the backup no longer needs it.
                let _ = repo
                    .get_snapshot_from_str(followed, |s| s.tags.contains(PARTIAL_TAG))
                    .and_then(|f| repo.delete_snapshots(&[f.id]));
            }
            serde_json::to_value(BackedUp {
                followed: followed.is_some(),
                ..stats(done.map_err(fail)?, partial)
            })
        }
        Job::Restore { id, .. } => {
            let repo = repo.to_indexed().map_err(fail)?;
            let node = repo
                .node_from_snapshot_path(&format!("{id}:{PATH}"), |_| true)
                .map_err(fail)?;
            let ls = repo.ls(&node, &LsOptions::default()).map_err(fail)?;
            let dest = LocalDestination::new(&format!("{PATH}/"), true, false).map_err(fail)?;
            let opts = RestoreOptions::default().delete(true).numeric_id(true);
            let started = std::time::Instant::now();
            let opened = begun.elapsed();
            let plan = repo
                .prepare_restore(&opts, ls.clone(), &dest, false)
                .map_err(fail)?;
            let bytes = plan.restore_size;
            repo.restore(plan, &opts, ls.clone(), &dest).map_err(fail)?;
            let wrote = started.elapsed();
            let (verified, files) = read_back(&repo, std::path::Path::new(PATH), ls)?;
            serde_json::to_value(Restored {
                files,
                bytes,
                verified,
                opened_ms: opened.as_millis() as u64,
                wrote_ms: wrote.as_millis() as u64,
                checked_ms: (started.elapsed() - wrote).as_millis() as u64,
                way: way.clone(),
            })
        }
    }
    .map_err(std::io::Error::other)?;
    relay.done(result)
}

/// The tag of the partial backup an incremental one is made from, deleted
/// once it is merged (one a helper that died left behind is no backup of
/// drover's: it lacks [`crate::data::repository::TAG`]).
const PARTIAL_TAG: &str = "drover-partial";

/// A backup made from `parent` and the folders `dirs` of the volume alone,
/// when everything that changed since `parent` was pushed lies in them and
/// nothing was deleted (drover knows it from the snapshot's refresh): the
/// folders are backed up (their unchanged files compared with `parent`, as
/// always), then merged with `parent`'s tree, each entry the newer of the
/// two. Each folder read must still hold every entry the parent's did
/// (else the partial backup is dropped and `None` says to back up the
/// whole volume).
fn incremental(
    repo: Repository<IndexedIdsStatus>,
    opts: &BackupOptions,
    (root, dirs, parent): (&std::path::Path, &[String], &str),
    tags: &[String],
    mut snap: SnapshotFile,
) -> rustic_core::RusticResult<(Repository<IndexedIdsStatus>, Option<SnapshotFile>)> {
    let paths: PathList = dirs
        .iter()
        .filter(|d| !d.is_empty() && !d.split('/').any(|c| c.is_empty() || c == "." || c == ".."))
        .map(|d| root.join(d))
        .collect();
    if paths.len() != dirs.len() || repo.config().append_only == Some(true) {
        return Ok((repo, None));
    }
    let paths = paths.merge();
    let parent = repo.get_snapshot_from_str(parent, |_| true)?;
    snap.parent = Some(parent.id);
    snap.parents = vec![parent.id];
    if paths.is_empty() {
        // Nothing changed: the parent's tree again, under a new snapshot.
        let merged = repo.merge_snapshots(&[parent], &newer, snap)?;
        return Ok((repo, Some(merged)));
    }
    let partial = partial_snapshot(&snap.hostname, tags)?;
    let folders = Folders {
        dirs: paths.paths(),
        opts: opts.clone(),
    };
    let partial = repo.archive(opts, &folders, partial, &folders.dirs)?;
    // (The index read at the start lacks the partial backup's trees.)
    let repo = repo.drop_index().to_indexed_ids()?;
    let added = partial.summary.clone().unwrap_or_default();
    let mut summary = SnapshotSummary::default();
    summary.files_new = added.files_new;
    summary.files_changed = added.files_changed;
    summary.data_blobs = added.data_blobs;
    summary.data_added = added.data_added;
    summary.data_added_packed = added.data_added_packed;
    summary.data_added_files = added.data_added_files;
    summary.data_added_files_packed = added.data_added_files_packed;
    snap.summary = Some(summary);
    // Each folder read keeps the parent's entries: a merge never drops one,
    // so one the partial backup lacks would come back from the parent.
    let names = |tree, path: &std::path::Path| -> rustic_core::RusticResult<Option<Vec<_>>> {
        let mut tree = tree;
        for c in path.components() {
            let std::path::Component::Normal(name) = c else {
                continue;
            };
            let found = repo
                .get_tree(&tree)?
                .nodes
                .into_iter()
                .find(|n| n.name() == name);
            match found.and_then(|n| n.subtree) {
                Some(sub) => tree = sub,
                None => return Ok(None),
            }
        }
        Ok(Some(
            repo.get_tree(&tree)?
                .nodes
                .into_iter()
                .map(|n| n.name)
                .collect(),
        ))
    };
    for p in paths.paths() {
        let now = names(partial.tree, &p)?.unwrap_or_default();
        let before = names(parent.tree, &p)?.unwrap_or_default();
        if before.iter().any(|n| !now.contains(n)) {
            repo.delete_snapshots(&[partial.id])?;
            return Ok((repo, None));
        }
    }
    let merged = repo.merge_snapshots(&[parent, partial.clone()], &newer, snap)?;
    repo.delete_snapshots(&[partial.id])?;
    Ok((repo, Some(merged)))
}

/// A partial backup's snapshot: [`PARTIAL_TAG`], and the tags that name
/// the volume.
fn partial_snapshot(host: &str, tags: &[String]) -> rustic_core::RusticResult<SnapshotFile> {
    let mut partial_tags = vec![PARTIAL_TAG.to_string()];
    partial_tags.extend(tags.iter().filter(|t| t.contains('=')).cloned());
    SnapshotOptions::default()
        .host(host.to_string())
        .add_tags(&partial_tags.join(","))?
        .to_snapshot()
}

/// The partial backup of the volume the copy on this host is filling
/// ([`crate::helper::follow`]), with no parent. None is made into an
/// append-only repository, which could not delete it.
fn followed_partly(
    repo: &Repository<IndexedIdsStatus>,
    following: &crate::helper::follow::Following,
    (host, tags): (&str, &[String]),
) -> rustic_core::RusticResult<SnapshotFile> {
    if repo.config().append_only == Some(true) {
        return Err(rustic_core::RusticError::new(
            rustic_core::ErrorKind::Repository,
            "The repository is append-only: no partial backup is made.",
        ));
    }
    let opts = following
        .opts
        .clone()
        .parent_opts(ParentOptions::default().force(true));
    let snap = partial_snapshot(host, tags)?;
    repo.archive(
        &opts,
        following,
        snap,
        std::slice::from_ref(&following.root),
    )
}

/// The folders of a partial backup, each walked after its own entry (a
/// walk leaves out the folder it starts from, which a backup then holds
/// with no times of its own, as it holds `/data`).
struct Folders {
    dirs: Vec<std::path::PathBuf>,
    opts: BackupOptions,
}

type Entry = rustic_core::ReadSourceEntry<<LocalSource as ReadSource>::Open>;

impl ReadSource for Folders {
    type Open = <LocalSource as ReadSource>::Open;
    type Iter = Box<dyn Iterator<Item = rustic_core::RusticResult<Entry>> + Send>;

    fn size(&self) -> rustic_core::RusticResult<Option<u64>> {
        Ok(None)
    }

    fn entries(&self) -> Self::Iter {
        let opts = self.opts.clone();
        Box::new(self.dirs.clone().into_iter().flat_map(move |dir| {
            let within = LocalSource::new(
                opts.ignore_save_opts,
                &opts.excludes,
                &opts.ignore_filter_opts,
                &[&dir],
            );
            let own = own_entry(&opts, &dir);
            let all: Self::Iter = match within {
                Ok(within) => Box::new(std::iter::once(own).chain(within.entries())),
                Err(e) => Box::new(std::iter::once(Err(e))),
            };
            all
        }))
    }
}

/// The entry of folder `dir` itself, as rustic's walk makes those within.
fn own_entry(opts: &BackupOptions, dir: &std::path::Path) -> rustic_core::RusticResult<Entry> {
    let failed = |e: String| {
        rustic_core::RusticError::new(
            rustic_core::ErrorKind::InputOutput,
            "Cannot read the folder `{path}`: {error}",
        )
        .attach_context("path", dir.display().to_string())
        .attach_context("error", e)
    };
    let entry = ignore::WalkBuilder::new(dir)
        .max_depth(Some(0))
        .follow_links(false)
        .build()
        .next()
        .ok_or_else(|| failed("not found".into()))?
        .map_err(|e| failed(e.to_string()))?;
    opts.ignore_save_opts
        .map_entry(entry)
        .map_err(|e| failed(e.to_string()))
}

/// Of one entry in a parent and in the partial backup merged into it, the
/// one the backup keeps: a folder the partial one only passes through (no
/// times of its own) is the parent's; else the later change (ctime, then
/// mtime), which is the partial's for everything the refresh touched.
fn newer(a: &Node, b: &Node) -> std::cmp::Ordering {
    let key = |n: &Node| {
        (
            n.meta.ctime.is_some() || n.meta.mtime.is_some(),
            n.meta.ctime,
            n.meta.mtime,
        )
    };
    key(a).cmp(&key(b))
}

/// Reads the restored volume back against the backup, on every core: each
/// file's blobs hashed where they lie, each link's target, and nothing in
/// the volume that the backup does not hold. The backup's list is read as
/// it streams, never held whole. How many files were read, and how many
/// entries other than folders the backup holds.
fn read_back<S, I>(
    repo: &Repository<S>,
    root: &std::path::Path,
    ls: I,
) -> std::io::Result<(u64, u64)>
where
    S: IndexedFull + Sync,
    I: Iterator<Item = rustic_core::RusticResult<(std::path::PathBuf, Node)>> + Clone + Send,
{
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let differs = |path: &std::path::Path, what: &str| {
        std::io::Error::other(format!(
            "the restored volume differs from the backup: {} {what}",
            path.display()
        ))
    };
    // Each blob read whole into the worker's buffer and hashed there.
    let check = |path: &std::path::Path, n: &Node, buf: &mut Vec<u8>| -> std::io::Result<bool> {
        use sha2::Digest;
        use std::io::Read;
        let at = root.join(path);
        let meta = std::fs::symlink_metadata(&at).map_err(|e| differs(path, &e.to_string()))?;
        match &n.node_type {
            NodeType::File => {
                if !meta.is_file() || meta.len() != n.meta.size {
                    return Err(differs(path, "is not the backup's file"));
                }
                let mut file = std::fs::File::open(&at)?;
                for id in n.content.iter().flatten() {
                    let entry = repo.get_index_entry(id).map_err(fail)?;
                    let length = entry.location.data_length() as usize;
                    if buf.len() < length {
                        buf.resize(length, 0);
                    }
                    let blob = &mut buf[..length];
                    file.read_exact(blob)
                        .map_err(|e| differs(path, &e.to_string()))?;
                    if rustic_core::Id::new(sha2::Sha256::digest(blob).into()) != **id {
                        return Err(differs(path, "has content the backup does not"));
                    }
                }
                Ok(true)
            }
            NodeType::Dir if !meta.is_dir() => Err(differs(path, "is not a folder")),
            NodeType::Symlink { .. } => {
                if std::fs::read_link(&at)? != n.node_type.to_link() {
                    return Err(differs(path, "links elsewhere than the backup's link"));
                }
                Ok(false)
            }
            _ => Ok(false),
        }
    };
    let listed = std::sync::Mutex::new(ls.clone());
    let stop = AtomicBool::new(false);
    let (read, entries, others) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| -> std::io::Result<()> {
                    let mut buf = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let next = listed
                            .lock()
                            .map_err(|_| std::io::Error::other("a check failed"))?
                            .next();
                        let Some(item) = next else { break };
                        let checked = item.map_err(fail).and_then(|(path, n)| {
                            entries.fetch_add(1, Ordering::Relaxed);
                            if !n.is_dir() {
                                others.fetch_add(1, Ordering::Relaxed);
                            }
                            check(&path, &n, &mut buf)
                        });
                        match checked {
                            Ok(true) => {
                                read.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(false) => {}
                            Err(e) => {
                                stop.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(std::io::Error::other("a check failed")))
        })
    })?;
    // Nothing beside what the backup holds: each of its entries was found
    // above, so the volume holds no other when the counts are equal.
    let mut found = 0u64;
    walk(root, &mut |_| {
        found += 1;
        Ok(())
    })?;
    let entries = entries.into_inner();
    if found != entries {
        // Name one: only now are the backup's paths held.
        let known = ls
            .map(|item| item.map(|(p, _)| p))
            .collect::<Result<std::collections::HashSet<_>, _>>()
            .map_err(fail)?;
        walk(root, &mut |path| match known.contains(path) {
            true => Ok(()),
            false => Err(differs(path, "is not in the backup")),
        })?;
        return Err(std::io::Error::other(format!(
            "the restored volume holds {found} entries, the backup {entries}"
        )));
    }
    Ok((read.into_inner(), others.into_inner()))
}

/// Calls `f` with the path (under `root`) of every entry beneath `root`,
/// not following links.
fn walk(
    root: &std::path::Path,
    f: &mut dyn FnMut(&std::path::Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let at = entry.path();
            f(at.strip_prefix(root).unwrap_or(&at))?;
            if entry.file_type()?.is_dir() {
                dirs.push(at);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustic_core::{ConfigOptions, KeyOptions};

    /// A new repository in the folder `store`.
    fn new_repo(store: &std::path::Path) -> Repository<IndexedIdsStatus> {
        let be = Store::Local {
            path: store.display().to_string(),
        }
        .backend()
        .unwrap();
        Repository::new(
            &RepositoryOptions::default().no_cache(true),
            &RepositoryBackends::new(be, None),
        )
        .unwrap()
        .init(
            &Credentials::password("pw"),
            &KeyOptions::default(),
            &ConfigOptions::default(),
        )
        .unwrap()
        .to_indexed_ids()
        .unwrap()
    }

    #[test]
    fn a_restore_read_back_finds_a_changed_byte_a_changed_link_and_an_extra_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, src, dst) = (
            tmp.path().join("repo"),
            tmp.path().join("src"),
            tmp.path().join("dst"),
        );
        for d in ["a/b", "c"] {
            std::fs::create_dir_all(src.join(d)).unwrap();
        }
        std::fs::write(src.join("a/b/big"), vec![7u8; 3 << 20]).unwrap();
        std::fs::write(src.join("c/small"), b"hello").unwrap();
        std::fs::write(src.join("empty"), b"").unwrap();
        std::os::unix::fs::symlink("c/small", src.join("link")).unwrap();
        let repo = new_repo(&store);
        let source = PathList::from_string(&src.display().to_string()).unwrap();
        let snap = SnapshotOptions::default().to_snapshot().unwrap();
        let id = repo
            .backup(&BackupOptions::default(), &source, snap)
            .unwrap()
            .id;
        let repo = repo.to_indexed().unwrap();
        let node = repo
            .node_from_snapshot_path(&format!("{id}:{}", src.display()), |_| true)
            .unwrap();
        let ls = repo.ls(&node, &LsOptions::default()).unwrap();
        let dest = LocalDestination::new(&format!("{}/", dst.display()), true, false).unwrap();
        let opts = RestoreOptions::default().numeric_id(true);
        let plan = repo
            .prepare_restore(&opts, ls.clone(), &dest, false)
            .unwrap();
        repo.restore(plan, &opts, ls.clone(), &dest).unwrap();

        assert_eq!(read_back(&repo, &dst, ls.clone()).unwrap(), (3, 4));
        // One byte, deep in a blob, the size unchanged.
        let mut big = std::fs::read(dst.join("a/b/big")).unwrap();
        big[2 << 20] = 8;
        std::fs::write(dst.join("a/b/big"), &big).unwrap();
        let e = read_back(&repo, &dst, ls.clone()).unwrap_err().to_string();
        assert!(e.contains("a/b/big has content the backup does not"), "{e}");
        big[2 << 20] = 7;
        std::fs::write(dst.join("a/b/big"), &big).unwrap();
        std::fs::remove_file(dst.join("link")).unwrap();
        std::os::unix::fs::symlink("empty", dst.join("link")).unwrap();
        let e = read_back(&repo, &dst, ls.clone()).unwrap_err().to_string();
        assert!(e.contains("link links elsewhere"), "{e}");
        std::fs::remove_file(dst.join("link")).unwrap();
        std::os::unix::fs::symlink("c/small", dst.join("link")).unwrap();
        std::fs::write(dst.join("c/stray"), b"x").unwrap();
        let e = read_back(&repo, &dst, ls.clone()).unwrap_err().to_string();
        assert!(e.contains("c/stray is not in the backup"), "{e}");
    }

    #[test]
    fn a_volume_read_as_its_copy_fills_it_spares_the_push_after_all_but_what_changed_since() {
        let tmp = tempfile::tempdir().unwrap();
        let p = |n: &str| tmp.path().join(n);
        let (store, src, dst) = (p("repo"), p("src"), p("dst"));
        for d in [src.join("a/b"), src.join("c"), dst.clone()] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(src.join("a/b/big"), vec![7u8; 3 << 20]).unwrap();
        std::fs::write(src.join("a/b/f1"), b"one").unwrap();
        std::fs::write(src.join("c/small"), b"hello").unwrap();
        std::fs::write(src.join("top"), b"top").unwrap();
        // Walked by the follower, never copied: left out of its backup.
        std::fs::write(src.join("c/later"), b"later").unwrap();
        let repo = new_repo(&store);
        let tags = ["drover".to_string(), "volume=data".to_string()];
        let following = crate::helper::follow::Following {
            source: src.clone(),
            root: dst.clone(),
            log: p("copied"),
            opts: BackupOptions::default().no_scan(true),
            racy: std::time::Duration::ZERO,
        };
        let partial = std::thread::scope(|s| {
            let follower = s.spawn(|| followed_partly(&repo, &following, ("h", &tags)));
            // The follower waits for the copy.
            std::thread::sleep(std::time::Duration::from_millis(200));
            let list = b"a\na/b\na/b/big\na/b/f1\nc\nc/small\ntop\n";
            crate::helper::copy_in(
                (&src, &p("src.json")),
                (&dst, &p("dst.json")),
                Some(&p("copied")),
                &list[..],
                &mut Vec::new(),
            )
            .unwrap();
            follower.join().unwrap().unwrap()
        });
        assert!(partial.tags.contains(PARTIAL_TAG));
        let summary = partial.summary.clone().unwrap();
        assert_eq!(summary.total_files_processed, 4, "{summary:?}");
        assert!(summary.data_added >= 3 << 20);

        // A later pass of the copy changes one file; the push after is a
        // job of its own, which reads the index anew.
        std::fs::write(dst.join("c/small"), b"HELLO").unwrap();
        let repo = repo.drop_index().to_indexed_ids().unwrap();
        let opts = BackupOptions::default()
            .parent_opts(ParentOptions::default().parents(vec![partial.id.to_string()]));
        let source = PathList::from_string(&dst.display().to_string()).unwrap();
        // (A parent serves a backup of the same host and paths alone.)
        let snap = SnapshotOptions::default()
            .host("h".to_string())
            .to_snapshot()
            .unwrap();
        let done = repo.backup(&opts, &source, snap).unwrap();
        let summary = done.summary.unwrap();
        assert_eq!(
            (
                summary.files_unmodified,
                summary.files_changed,
                summary.files_new
            ),
            (3, 1, 0),
            "{summary:?}"
        );
        assert_eq!(summary.data_added_files, 5, "{summary:?}");
    }

    #[test]
    fn a_backup_of_the_changed_folders_merged_with_its_parent_is_the_whole_backup() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, src) = (tmp.path().join("repo"), tmp.path().join("src"));
        for d in ["a/b", "c"] {
            std::fs::create_dir_all(src.join(d)).unwrap();
        }
        std::fs::write(src.join("a/b/big"), vec![7u8; 3 << 20]).unwrap();
        std::fs::write(src.join("a/b/f1"), b"one").unwrap();
        std::fs::write(src.join("c/small"), b"hello").unwrap();
        std::fs::write(src.join("top"), b"top").unwrap();
        let repo = new_repo(&store);
        let source = PathList::from_string(&src.display().to_string()).unwrap();
        let tags = ["drover".to_string(), "volume=data".to_string()];
        let snap = || {
            SnapshotOptions::default()
                .add_tags(&tags.join(","))
                .unwrap()
                .to_snapshot()
                .unwrap()
        };
        let with_parent = |id: &str| {
            BackupOptions::default()
                .parent_opts(ParentOptions::default().parents(vec![id.to_string()]))
        };
        let first = repo
            .backup(&BackupOptions::default(), &source, snap())
            .unwrap();
        let first_id = first.id.to_string();

        // A file changed in place, one added, and a new folder with a file.
        std::fs::write(src.join("a/b/f1"), b"uno").unwrap();
        std::fs::write(src.join("a/b/new"), b"new").unwrap();
        std::fs::create_dir(src.join("a/n")).unwrap();
        std::fs::write(src.join("a/n/x"), b"x").unwrap();
        let dirs = ["a".to_string(), "a/b".to_string(), "a/n".to_string()];
        let opts = with_parent(&first_id);
        let (repo, merged) =
            incremental(repo, &opts, (&src, &dirs, &first_id), &tags, snap()).unwrap();
        let merged = merged.expect("merged");
        let whole = repo.backup(&opts, &source, snap()).unwrap();
        assert_eq!(
            merged.tree, whole.tree,
            "the merged backup is the whole one"
        );
        assert_eq!(merged.parent, Some(first.id));
        let summary = merged.summary.clone().unwrap();
        assert_eq!(summary.total_files_processed, 6);
        // Only drover's two backups (and the whole one) are left.
        let all = repo.get_all_snapshots().unwrap();
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(all.iter().all(|s| !s.tags.contains(PARTIAL_TAG)));

        // Nothing changed: the parent's tree again. (Each job opens the
        // repository anew; here its index is read again.)
        let repo = repo.drop_index().to_indexed_ids().unwrap();
        let merged_id = merged.id.to_string();
        let (repo, again) =
            incremental(repo, &opts, (&src, &[], &merged_id), &tags, snap()).unwrap();
        assert_eq!(again.unwrap().tree, whole.tree);

        // A folder that lost an entry the caller did not say was deleted:
        // the merge would keep it, so the whole volume is read instead.
        std::fs::remove_file(src.join("c/small")).unwrap();
        std::fs::write(src.join("c/other"), b"o").unwrap();
        let (repo, none) = incremental(
            repo,
            &opts,
            (&src, &["c".to_string()], &merged_id),
            &tags,
            snap(),
        )
        .unwrap();
        assert!(none.is_none());
        // (Nor did it leave a backup behind.)
        assert_eq!(repo.get_all_snapshots().unwrap().len(), 4);
    }
}
