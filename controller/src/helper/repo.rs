//! In the helper: a backup of the volume into a repository, or a restore
//! from one, with rustic_core. The repository is reached directly when the
//! job names its store and the host can reach it, and through drover
//! ([`crate::data::relay`]) otherwise. The password and the store's
//! credentials arrive in the job, on stdin: they are never in the helper's
//! command line or environment.

use std::io::{Read, Write};
use std::sync::Arc;

use rustic_core::{
    BackupOptions, Credentials, LocalDestination, LsOptions, ParentOptions, PathList, Repository,
    RepositoryBackends, RepositoryOptions, RestoreOptions, SnapshotOptions, WriteBackend,
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
        password: String,
        /// The restic snapshot's host name.
        host: String,
        tags: Vec<String>,
        /// The backup the files are compared with, by size and time.
        parent: Option<String>,
        /// The store, to reach directly if the host can.
        #[serde(default)]
        direct: Option<Store>,
    },
    /// Make the volume (at `/data`) what the backup holds, and check it
    /// against the backup by content.
    Restore {
        password: String,
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

    /// The repository's password, and the store to try directly.
    fn access(&self) -> (String, Option<&Store>) {
        match self {
            Job::Backup {
                password, direct, ..
            }
            | Job::Restore {
                password, direct, ..
            } => (password.clone(), direct.as_ref()),
        }
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
}

/// What a restore wrote and checked.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Restored {
    pub files: u64,
    pub bytes: u64,
    /// Files whose content was checked against the backup after.
    pub verified: u64,
    /// How long writing and checking took (milliseconds).
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
    let job: Job = read_header(&mut input)?;
    let opts = RepositoryOptions::default().no_cache(true);
    let open = |be: Arc<dyn WriteBackend>, password: &str| {
        Repository::new(&opts, &RepositoryBackends::new(be, None))
            .and_then(|r| r.open(&Credentials::password(password)))
    };
    let (password, store) = job.access();
    // Straight to the store when this host reaches it and it opens.
    let direct = match store {
        None => Err(None),
        Some(s) => match s.reachable(PROBE) {
            Err(why) => Err(Some(format!("the host cannot reach the store: {why}"))),
            Ok(()) => s.backend().and_then(|be| open(be, &password)).map_err(|e| {
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
            let repo = open(relay.clone() as Arc<dyn WriteBackend>, &password).map_err(fail)?;
            (relay, repo, Way::Relayed(why))
        }
    };
    let result = match job {
        Job::Backup {
            host, tags, parent, ..
        } => {
            let repo = repo.to_indexed_ids().map_err(fail)?;
            let mut snap = SnapshotOptions::default().host(host);
            snap = snap.add_tags(&tags.join(",")).map_err(fail)?;
            let snap = snap.to_snapshot().map_err(fail)?;
            // Each backup reads a fresh copy of the volume: its inodes and
            // change times are new, its sizes and times are not.
            let parent_opts = ParentOptions::default()
                .parents(parent.into_iter().collect::<Vec<_>>())
                .ignore_ctime(true)
                .ignore_inode(true);
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
            })
        }
        Job::Restore { id, .. } => {
            let repo = repo.to_indexed().map_err(fail)?;
            let node = repo
                .node_from_snapshot_path(&format!("{id}:{PATH}"), |_| true)
                .map_err(fail)?;
            let ls = repo.ls(&node, &LsOptions::default()).map_err(fail)?;
            let dest = LocalDestination::new(&format!("{PATH}/"), true, false).map_err(fail)?;
            let opts = RestoreOptions::default()
                .delete(true)
                .numeric_id(true);
            let started = std::time::Instant::now();
            let plan = repo
                .prepare_restore(&opts, ls.clone(), &dest, false)
                .map_err(fail)?;
            let bytes = plan.restore_size;
            repo.restore(plan, &opts, ls.clone(), &dest).map_err(fail)?;
            let wrote = started.elapsed();
            // Read back: every file's content against the backup's.
            let check = RestoreOptions::default()
                .delete(true)
                .numeric_id(true)
                .verify_existing(true);
            let again = repo
                .prepare_restore(&check, ls.clone(), &dest, true)
                .map_err(fail)?;
            let f = again.stats.files;
            // rustic counts links and special files as extra (it would
            // make them again): they are checked here instead.
            let mut special = 0;
            for item in ls {
                let (path, n) = item.map_err(fail)?;
                if !n.is_special() {
                    continue;
                }
                special += 1;
                let at = std::path::Path::new(PATH).join(&path);
                if let rustic_core::repofile::NodeType::Symlink { .. } = &n.node_type {
                    let target = std::fs::read_link(&at)?;
                    if target != n.node_type.to_link() {
                        return Err(std::io::Error::other(format!(
                            "the restored link {} differs from the backup's",
                            path.display()
                        )));
                    }
                }
            }
            if f.restore + f.modify > 0 || f.additional != special || again.restore_size > 0 {
                return Err(std::io::Error::other(format!(
                    "the restored volume differs from the backup: {} files to restore, {} to change, {} extra",
                    f.restore,
                    f.modify,
                    f.additional.saturating_sub(special)
                )));
            }
            serde_json::to_value(Restored {
                files: f.verified + f.unchanged + special,
                bytes,
                verified: f.verified,
                wrote_ms: wrote.as_millis() as u64,
                checked_ms: (started.elapsed() - wrote).as_millis() as u64,
                way: way.clone(),
            })
        }
    }
    .map_err(std::io::Error::other)?;
    relay.done(result)
}
