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
    repofile::{MasterKey, Node, NodeType},
    BackupOptions, Credentials, IndexedFull, LocalDestination, LsOptions, ParentOptions, PathList,
    Repository, RepositoryBackends, RepositoryOptions, RestoreOptions, SnapshotOptions,
    WriteBackend,
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
        /// The store, to reach directly if the host can.
        #[serde(default)]
        direct: Option<Store>,
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
    let result = match job {
        Job::Backup {
            host, tags, parent, ..
        } => {
            let opened = begun.elapsed();
            let repo = repo.to_indexed_ids().map_err(fail)?;
            let indexed = begun.elapsed();
            let mut snap = SnapshotOptions::default().host(host);
            snap = snap.add_tags(&tags.join(",")).map_err(fail)?;
            let snap = snap.to_snapshot().map_err(fail)?;
            // A file is read again unless its size, mtime, ctime and inode
            // are the parent's. The snapshot `last-backup` is brought up to
            // date in place, so what its refresh left alone keeps all four;
            // a file it rewrote has a new ctime even when the app kept its
            // size and mtime. (A parent pushed from another snapshot volume
            // has other inodes: its files are all read, once.)
            let parent_opts =
                ParentOptions::default().parents(parent.into_iter().collect::<Vec<_>>());
            let opts = BackupOptions::default()
                .parent_opts(parent_opts)
                .no_scan(true);
            let source = PathList::from_string(PATH).map_err(fail)?;
            let done = repo.backup(&opts, &source, snap).map_err(fail)?;
            let s = done.summary.unwrap_or_default();
            serde_json::to_value(BackedUp {
                id: done.id.to_hex().to_string(),
                files: s.total_files_processed,
                bytes: s.total_bytes_processed,
                added: s.data_added_packed,
                way: way.clone(),
                opened_ms: opened.as_millis() as u64,
                indexed_ms: indexed.as_millis() as u64,
                pushed_ms: begun.elapsed().as_millis() as u64,
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
        let be = Store::Local {
            path: store.display().to_string(),
        }
        .backend()
        .unwrap();
        let repo = Repository::new(
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
        .unwrap();
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
}
