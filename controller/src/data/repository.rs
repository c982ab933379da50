//! Repositories of backups, in the restic format (`docs/backups.md`).
//!
//! A repository is opened here, on drover's machine, with rustic_core and
//! its backends: a local path, an S3-compatible store, a restic REST
//! server. Backups and restores run in a helper on the volume's host, which
//! reaches the repository through drover ([`crate::data::relay`]): only
//! drover's machine needs to reach the store.
//!
//! Everything rustic_core does blocks: it runs on tokio's blocking threads.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustic_core::{
    repofile::SnapshotFile, ConfigOptions, Credentials, KeyOptions, OpenStatus, PruneOptions,
    Repository as Repo, RepositoryBackends, RepositoryOptions, WriteBackend,
};

use crate::helper::store::Store;
use crate::model::{KeepPolicy, Repository};

/// The tag every backup drover makes carries.
pub const TAG: &str = "drover";

pub use crate::model::{check_backup_id, check_url, repository_location as location, Location};

/// Why a repository cannot be used, for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoError {
    #[error("the password of repository `{0}` is wrong: no key in it opens with it; nothing was written")]
    Password(String),
    #[error("repository `{0}` has no repository in the restic format at its `url` yet: push a backup to it first (`drover volume snapshot STACK/VOLUME --push {0}`)")]
    Missing(String),
    #[error("repository `{name}` cannot be reached or refused access: {why}")]
    Store { name: String, why: String },
    #[error("repository `{name}`: {why}")]
    Other { name: String, why: String },
}

fn rustic(name: &str, e: &rustic_core::RusticError) -> RepoError {
    if e.is_incorrect_password() {
        return RepoError::Password(name.to_string());
    }
    RepoError::Other {
        name: name.to_string(),
        why: explain(e),
    }
}

/// An error of the store itself: unreachable, refused, missing.
fn store(name: &str, e: &rustic_core::RusticError) -> RepoError {
    RepoError::Store {
        name: name.to_string(),
        why: explain(e),
    }
}

pub use crate::helper::relay::explain;

/// How to reach a repository's files, from its `url` and `env`.
pub fn store_of(repo: &Repository) -> Result<Store, RepoError> {
    let loc = location(repo.url.expose()).map_err(|(why, _)| RepoError::Other {
        name: repo.name.clone(),
        why,
    })?;
    let env = |k: &str| repo.env.get(k).map(|t| t.expose().to_string());
    Ok(match loc {
        Location::Local(path) => Store::Local { path },
        Location::S3 {
            endpoint,
            bucket,
            prefix,
        } => {
            let mut o = BTreeMap::from([
                ("bucket".to_string(), bucket),
                ("root".to_string(), format!("/{prefix}")),
                ("endpoint".to_string(), endpoint),
                (
                    "region".to_string(),
                    env("AWS_DEFAULT_REGION").unwrap_or_else(|| "us-east-1".into()),
                ),
                // Only what the manifests say: no ~/.aws, no instance metadata.
                ("disable_config_load".to_string(), "true".into()),
                ("disable_ec2_metadata".to_string(), "true".into()),
                ("retry".to_string(), "3".into()),
            ]);
            for (key, opt) in [
                ("AWS_ACCESS_KEY_ID", "access_key_id"),
                ("AWS_SECRET_ACCESS_KEY", "secret_access_key"),
                ("AWS_SESSION_TOKEN", "session_token"),
            ] {
                if let Some(v) = env(key) {
                    o.insert(opt.to_string(), v);
                }
            }
            if !o.contains_key("access_key_id") {
                o.insert("allow_anonymous".into(), "true".into());
            }
            Store::S3 { options: o }
        }
        Location::Rest(url) => Store::Rest {
            url: match (env("RESTIC_REST_USERNAME"), env("RESTIC_REST_PASSWORD")) {
                (Some(u), Some(p)) => match url.split_once("://") {
                    Some((scheme, rest)) => format!("{scheme}://{u}:{p}@{rest}"),
                    None => url,
                },
                _ => url,
            },
        },
    })
}

/// An open repository.
pub struct Opened {
    pub name: String,
    pub repo: Repo<OpenStatus>,
    pub backend: Arc<dyn WriteBackend>,
    /// How a helper that can reach the store opens it itself.
    pub store: Store,
    /// It was made by this call.
    pub created: bool,
    /// The snapshot files read so far (they never change): a later
    /// listing reads only the new ones ([`backups`]).
    seen: std::sync::Mutex<Vec<SnapshotFile>>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Opened {
    /// The key drover derived from the password, for a helper's job: it
    /// travels on the job's stdin, never on a command line.
    pub fn key(&self) -> crate::helper::repo::Key {
        crate::helper::repo::Key(self.repo.key())
    }
}

fn options() -> RepositoryOptions {
    // No local cache: drover keeps nothing of a repository on its machine.
    RepositoryOptions::default().no_cache(true)
}

/// Opens `repo`, checking its password; with `create`, makes the
/// repository first when its location holds none. Blocks.
pub fn open(repo: &Repository, create: bool) -> Result<Opened, RepoError> {
    let st = store_of(repo)?;
    let be = st.backend().map_err(|e| store(&repo.name, &e))?;
    let backends = RepositoryBackends::new(Arc::clone(&be), None);
    let r = Repo::new(&options(), &backends).map_err(|e| rustic(&repo.name, &e))?;
    let credentials = Credentials::password(repo.password.expose());
    let has_config = r.config_id().map_err(|e| store(&repo.name, &e))?.is_some();
    if !has_config {
        if !create {
            return Err(RepoError::Missing(repo.name.clone()));
        }
        // The store must be there (a bucket is not made): an init would
        // otherwise fail later with a less clear error.
        be.create().map_err(|e| store(&repo.name, &e))?;
        let r = r
            .init(
                &credentials,
                &KeyOptions::default(),
                &ConfigOptions::default(),
            )
            .map_err(|e| rustic(&repo.name, &e))?;
        return Ok(Opened {
            name: repo.name.clone(),
            repo: r,
            backend: be,
            store: st,
            created: true,
            seen: Default::default(),
        });
    }
    let r = r.open(&credentials).map_err(|e| rustic(&repo.name, &e))?;
    Ok(Opened {
        name: repo.name.clone(),
        repo: r,
        backend: be,
        store: st,
        created: false,
        seen: Default::default(),
    })
}

/// Whether the store `o` was opened from still holds the repository it
/// opened: its config read again with the key `o` holds (no key is
/// derived), and the same repository ID. A repository made anew at the
/// same location (another `restic init` there) is not. Blocks.
pub fn still_holds(o: &Opened) -> bool {
    let backends = RepositoryBackends::new(Arc::clone(&o.backend), None);
    let now = Repo::new(&options(), &backends)
        .and_then(|r| r.open(&Credentials::Masterkey(o.repo.key())));
    now.is_ok_and(|r| r.config().id == o.repo.config().id)
}

/// Runs blocking repository work on tokio's blocking threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RepoError> + Send + 'static,
) -> Result<T, RepoError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(RepoError::Other {
            name: String::new(),
            why: format!("the repository work failed: {e}"),
        })
    })
}

/// One backup drover made, as the repository lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Backup {
    /// The full ID (64 hexadecimal digits).
    pub id: String,
    pub stack: String,
    pub volume: String,
    /// The host the volume was on.
    pub host: String,
    pub revision: Option<String>,
    /// RFC 3339.
    pub taken: String,
    /// Seconds since the epoch, for ordering and retention.
    #[serde(skip)]
    pub unix: i64,
    pub bytes: Option<u64>,
    pub files: Option<u64>,
}

impl Backup {
    pub fn short(&self) -> &str {
        short(&self.id)
    }
}

/// The short ID of a backup users see and type: its first 8 digits.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

/// The tags of a backup of `stack/volume` from `host`.
pub fn tags(stack: &str, volume: &str, host: &str, revision: Option<&str>) -> Vec<String> {
    let mut t = vec![
        TAG.to_string(),
        format!("stack={stack}"),
        format!("volume={volume}"),
        format!("host={host}"),
    ];
    if let Some(r) = revision {
        t.push(format!("revision={r}"));
    }
    t
}

/// A snapshot of the repository as a backup of drover's, if it is one.
pub fn as_backup(s: &SnapshotFile) -> Option<Backup> {
    let tags: Vec<String> = (&s.tags).into_iter().cloned().collect();
    if !tags.iter().any(|t| t == TAG) {
        return None;
    }
    let tag = |k: &str| {
        tags.iter()
            .find_map(|t| t.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .map(str::to_string)
    };
    let summary = s.summary.as_ref();
    Some(Backup {
        id: s.id.to_hex().to_string(),
        stack: tag("stack")?,
        volume: tag("volume")?,
        host: tag("host").unwrap_or_else(|| s.hostname.clone()),
        revision: tag("revision"),
        taken: s.time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        unix: s.time.timestamp().as_second(),
        bytes: summary.map(|m| m.total_bytes_processed),
        files: summary.map(|m| m.total_files_processed),
    })
}

/// drover's backups in an open repository, oldest first; only those of
/// `of` (stack, volume) when given.
pub fn backups(o: &Opened, of: Option<(&str, &str)>) -> Result<Vec<Backup>, RepoError> {
    // One listing of the snapshots' names, then only those not read yet
    // (an `Opened` the controller keeps between pushes reads each once).
    // (Taken out while the store is read: a listing that fails reads
    // everything again next time.)
    let seen = std::mem::take(&mut *o.seen.lock().unwrap_or_else(|e| e.into_inner()));
    let all = o
        .repo
        .update_all_snapshots(seen)
        .map_err(|e| rustic(&o.name, &e))?;
    o.seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone_from(&all);
    let mut out: Vec<Backup> = all
        .iter()
        .filter_map(as_backup)
        .filter(|b| of.is_none_or(|(s, v)| b.stack == s && b.volume == v))
        .collect();
    out.sort_by(|a, b| (a.unix, &a.id).cmp(&(b.unix, &b.id)));
    Ok(out)
}

/// The backup of `stack/volume` that `id` names (a prefix of its ID), or the
/// newest for `None`. A backup of another volume is refused by name.
pub fn pick<'a>(
    list: &'a [Backup],
    repo: &str,
    stack: &str,
    volume: &str,
    id: Option<&str>,
) -> Result<&'a Backup, String> {
    let Some(id) = id else {
        return list
            .iter()
            .rev()
            .find(|b| b.stack == stack && b.volume == volume)
            .ok_or_else(|| {
                format!("repository `{repo}` holds no backup of `{stack}/{volume}`: push one with `drover volume snapshot {stack}/{volume} --push {repo}`")
            });
    };
    let id = id.to_ascii_lowercase();
    let matching: Vec<&Backup> = list.iter().filter(|b| b.id.starts_with(&id)).collect();
    match matching.as_slice() {
        [] => Err(format!(
            "repository `{repo}` holds no backup of drover's with ID `{id}`"
        )),
        [b] if b.stack != stack || b.volume != volume => Err(format!(
            "backup `{}` in repository `{repo}` is of `{}/{}`, not of `{stack}/{volume}`; a volume is only ever made from its own backups",
            b.short(),
            b.stack,
            b.volume
        )),
        [b] => Ok(b),
        _ => Err(format!(
            "`{id}` is the start of several backups' IDs in repository `{repo}`: give more digits"
        )),
    }
}

/// The backups `keep` lets go, of one volume's backups (oldest first), as
/// restic's `forget` counts: the newest `last`; the newest backup of each
/// of the newest `hourly` hours, `daily` days, `weekly` ISO weeks and
/// `monthly` months that hold one (UTC).
pub fn forgotten<'a>(list: &'a [Backup], keep: &KeepPolicy) -> Vec<&'a Backup> {
    let mut newest_first: Vec<&Backup> = list.iter().collect();
    newest_first.sort_by(|a, b| (b.unix, &b.id).cmp(&(a.unix, &a.id)));
    let mut kept = vec![false; newest_first.len()];
    for (i, k) in kept.iter_mut().enumerate() {
        if i < keep.last as usize {
            *k = true;
        }
    }
    type Bucket = fn(i64) -> i64;
    let buckets: [(u32, Bucket); 4] = [
        (keep.hourly, |t| t.div_euclid(3600)),
        (keep.daily, |t| t.div_euclid(86_400)),
        // Weeks from a Monday (1970-01-05 was one).
        (keep.weekly, |t| (t - 4 * 86_400).div_euclid(7 * 86_400)),
        (keep.monthly, month_of),
    ];
    for (count, bucket) in buckets {
        let mut seen = Vec::new();
        for (i, b) in newest_first.iter().enumerate() {
            if seen.len() >= count as usize {
                break;
            }
            let key = bucket(b.unix);
            if !seen.contains(&key) {
                seen.push(key);
                kept[i] = true;
            }
        }
    }
    newest_first
        .into_iter()
        .zip(kept)
        .filter(|(_, k)| !k)
        .map(|(b, _)| b)
        .collect()
}

/// Months since 1970-01 of a time in seconds (UTC).
fn month_of(t: i64) -> i64 {
    let ts = rustic_core::jiff::Timestamp::from_second(t).unwrap_or_default();
    let d = ts.to_zoned(rustic_core::jiff::tz::TimeZone::UTC).date();
    i64::from(d.year()) * 12 + i64::from(d.month())
}

/// Forgets `ids` and frees the data no snapshot uses any more. Only the
/// given snapshots are forgotten: the caller picks drover's own.
pub fn forget_and_prune(o: &Opened, ids: &[String]) -> Result<(), RepoError> {
    if ids.is_empty() {
        return Ok(());
    }
    let ids: Vec<rustic_core::repofile::SnapshotId> = ids
        .iter()
        .map(|i| {
            i.parse::<rustic_core::Id>()
                .map(Into::into)
                .map_err(|e| rustic(&o.name, &e))
        })
        .collect::<Result<_, _>>()?;
    o.repo
        .delete_snapshots(&ids)
        .map_err(|e| rustic(&o.name, &e))?;
    let opts = PruneOptions::default();
    let plan = o.repo.prune_plan(&opts).map_err(|e| rustic(&o.name, &e))?;
    o.repo.prune(&opts, plan).map_err(|e| rustic(&o.name, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_reads_each_snapshot_file_once_and_follows_the_store() {
        let store = tempfile::tempdir().unwrap();
        let dir = store.path().join("repo");
        let r = Repository {
            name: "offsite".into(),
            loc: crate::diag::Loc::new(&Arc::from("cluster.yaml"), Default::default()),
            url: crate::model::Text::plain(dir.display().to_string()),
            password: crate::model::Text::plain("pw"),
            env: BTreeMap::new(),
        };
        let o = open(&r, true).unwrap();
        assert!(backups(&o, None).unwrap().is_empty());
        let save = |volume: &str| {
            let snap = rustic_core::SnapshotOptions::default()
                .host("node-a".to_string())
                .add_tags(&tags("blog", volume, "node-a", None).join(","))
                .unwrap()
                .to_snapshot()
                .unwrap();
            o.repo.save_snapshots(vec![snap]).unwrap();
        };
        save("pgdata");
        save("uploads");
        let listed = backups(&o, None).unwrap();
        assert_eq!(listed.len(), 2);
        // Read once, a snapshot file is not read again: one spoiled in the
        // store since is still listed as it was.
        let file = |b: &Backup| dir.join("snapshots").join(&b.id);
        std::fs::write(file(&listed[0]), b"spoiled").unwrap();
        assert_eq!(backups(&o, None).unwrap(), listed);
        // A snapshot forgotten in the store is gone, a new one is read.
        std::fs::remove_file(file(&listed[0])).unwrap();
        save("logs");
        let now: Vec<String> = backups(&o, None)
            .unwrap()
            .into_iter()
            .map(|b| b.volume)
            .collect();
        assert_eq!(now.len(), 2);
        assert!(now.contains(&"logs".to_string()) && !now.contains(&listed[0].volume));
        // Opened anew, every snapshot file is read from the store.
        save("cache");
        let fresh = open(&r, false).unwrap();
        assert_eq!(backups(&fresh, None).unwrap().len(), 3);
    }

    fn at(unix: i64, id: &str) -> Backup {
        Backup {
            id: id.into(),
            stack: "blog".into(),
            volume: "pgdata".into(),
            host: "node-a".into(),
            revision: None,
            taken: String::new(),
            unix,
            bytes: None,
            files: None,
        }
    }

    #[test]
    fn urls_take_restic_forms_and_refuse_others_with_the_way_out() {
        assert_eq!(
            location("s3:http://10.0.0.5:9000/backups/drover/x"),
            Ok(Location::S3 {
                endpoint: "http://10.0.0.5:9000".into(),
                bucket: "backups".into(),
                prefix: "drover/x".into()
            })
        );
        assert_eq!(location("/srv/b"), Ok(Location::Local("/srv/b".into())));
        assert_eq!(
            location("local:/srv/b"),
            Ok(Location::Local("/srv/b".into()))
        );
        assert!(matches!(
            location("rest:http://h:8000/"),
            Ok(Location::Rest(_))
        ));
        assert!(location("s3:backups").unwrap_err().1.contains("s3:http://"));
        assert!(location("b2:bucket").unwrap_err().0.contains("`b2`"));
        assert!(location("backups").unwrap_err().0.contains("relative"));
        assert!(location("s3:http://h:9000/")
            .unwrap_err()
            .0
            .contains("bucket"));
    }

    #[test]
    fn keep_counts_as_restic_forget_does() {
        let h = 3600;
        // Six backups an hour apart over two days' boundary.
        let list: Vec<Backup> = (0..6)
            .map(|i| at(86_400 - 3 * h + i * h, &format!("{i:08}")))
            .collect();
        let gone = |k: KeepPolicy| -> Vec<String> {
            let mut v: Vec<String> = forgotten(&list, &k).iter().map(|b| b.id.clone()).collect();
            v.sort();
            v
        };
        let last2 = KeepPolicy {
            last: 2,
            ..Default::default()
        };
        assert_eq!(
            gone(last2),
            ["00000000", "00000001", "00000002", "00000003"]
        );
        // The newest of each of two days: 00000005 (day 1), 00000002 (day 0).
        let daily2 = KeepPolicy {
            daily: 2,
            ..Default::default()
        };
        assert_eq!(
            gone(daily2),
            ["00000000", "00000001", "00000003", "00000004"]
        );
        let both = KeepPolicy {
            last: 1,
            hourly: 3,
            ..Default::default()
        };
        assert_eq!(gone(both), ["00000000", "00000001", "00000002"]);
        let monthly = KeepPolicy {
            monthly: 1,
            ..Default::default()
        };
        assert_eq!(gone(monthly).len(), 5);
    }

    #[test]
    fn a_backup_is_picked_only_for_its_own_volume() {
        let mut other = at(10, "bbbbbbbb11");
        other.volume = "uploads".into();
        let list = vec![at(5, "aaaaaaaa11"), other, at(20, "aaaaaaaa22")];
        assert_eq!(
            pick(&list, "off", "blog", "pgdata", None).unwrap().id,
            "aaaaaaaa22"
        );
        assert_eq!(
            pick(&list, "off", "blog", "pgdata", Some("aaaaaaaa1"))
                .unwrap()
                .id,
            "aaaaaaaa11"
        );
        assert!(pick(&list, "off", "blog", "pgdata", Some("bbbb"))
            .unwrap_err()
            .contains("not of `blog/pgdata`"));
        assert!(pick(&list, "off", "blog", "pgdata", Some("aaaa"))
            .unwrap_err()
            .contains("several"));
        assert!(pick(&list, "off", "blog", "db", None)
            .unwrap_err()
            .contains("no backup"));
    }
}
