//! Scheduled backups (`backup: { to, every, keep }`): which are due, the
//! step that pushes them under the leases, and the retention that forgets
//! what `keep` no longer keeps — only drover's backups of that volume.
//!
//! When a volume was last backed up is read from its repository once (the
//! first round that needs it) and kept here after; a backup is due once
//! `every` has passed since (at once when there is none). A repository that
//! cannot be read is tried again the next round, and nothing is frozen
//! for it.

use super::*;

use crate::data::backup;
use crate::data::clock;
use crate::desired::VolumeSpec;

/// `(stack, volume, repository)`.
pub type BackupKey = (String, String, String);

/// What the controller knows of the repositories.
#[derive(Debug, Default)]
pub struct Known {
    /// The newest good backup of each volume, Unix seconds.
    pub last: BTreeMap<BackupKey, u64>,
    /// The repositories read at least once.
    listed: BTreeSet<String>,
    /// Repositories kept open from an earlier round's push, with what the
    /// Cluster declared for them then: a later push into one the Cluster
    /// still declares so does not derive the key from the password again.
    /// One whose push failed is opened again the next time.
    open: BTreeMap<
        String,
        (
            crate::model::Repository,
            Arc<crate::data::repository::Opened>,
        ),
    >,
}

impl Known {
    /// `r` as an earlier round opened it, if the Cluster still declares it
    /// so.
    fn kept_open(
        &self,
        r: &crate::model::Repository,
    ) -> Option<Arc<crate::data::repository::Opened>> {
        let (was, o) = self.open.get(&r.name)?;
        (was == r).then(|| Arc::clone(o))
    }
}

fn key(v: &VolumeSpec, repo: &str) -> BackupKey {
    (v.stack.clone(), v.volume.clone(), repo.to_string())
}

/// The volumes with a backup schedule, on hosts that were read.
fn scheduled<'a>(
    desired: &'a Desired,
    observed: &'a Observed,
) -> impl Iterator<Item = (&'a VolumeSpec, &'a crate::desired::Backup)> {
    desired
        .hosts
        .iter()
        .filter(|(h, _)| observed.hosts.contains_key(*h))
        .flat_map(|(_, dh)| dh.volumes.values())
        .filter_map(|v| v.backup.as_ref().map(|b| (v, b)))
}

/// The volumes whose backup is due at `now`: those that exist where the
/// manifests place them, in repositories that have been read.
pub fn due<'a>(
    desired: &'a Desired,
    observed: &'a Observed,
    known: &Known,
    now: u64,
) -> Vec<(&'a VolumeSpec, &'a crate::desired::Backup)> {
    scheduled(desired, observed)
        .filter(|(v, _)| {
            observed.hosts[&v.host]
                .volumes
                .iter()
                .any(|o| o.name == v.name && crate::plan::may_be_current(o))
        })
        .filter(|(_, b)| known.listed.contains(&b.to))
        .filter(|(v, b)| {
            known
                .last
                .get(&key(v, &b.to))
                .is_none_or(|t| now >= t + b.every.as_secs())
        })
        .collect()
}

/// The soonest a scheduled backup falls due after `now`, in seconds.
pub fn next_due_in(desired: &Desired, observed: &Observed, known: &Known, now: u64) -> Option<u64> {
    scheduled(desired, observed)
        .map(|(v, b)| {
            known
                .last
                .get(&key(v, &b.to))
                .map_or(0, |t| (t + b.every.as_secs()).saturating_sub(now))
        })
        .min()
}

/// A volume whose scheduled backup is late: none within one and a half
/// times its interval (and a minute).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overdue {
    pub stack: String,
    pub volume: String,
    pub repository: String,
    pub every_seconds: u64,
    /// Unix time of its newest backup there, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<u64>,
}

pub fn overdue(
    desired: &Desired,
    observed: &Observed,
    known: &Known,
    now: u64,
    since: u64,
) -> Vec<Overdue> {
    scheduled(desired, observed)
        .filter_map(|(v, b)| {
            let last = known.last.get(&key(v, &b.to)).copied();
            let every = b.every.as_secs();
            let late = every + every / 2 + 60;
            (now > last.unwrap_or(since) + late).then(|| Overdue {
                stack: v.stack.clone(),
                volume: v.volume.clone(),
                repository: b.to.clone(),
                every_seconds: every,
                last,
            })
        })
        .collect()
}

/// What one round of scheduled backups did.
#[derive(Debug, Default)]
pub struct Round {
    pub pushed: Vec<(BackupKey, backup::Made)>,
    pub failed: Vec<(BackupKey, String)>,
    /// Backups forgotten by `keep`, per volume.
    pub forgotten: Vec<(BackupKey, usize)>,
}

/// Reads, once, when each volume was last backed up into the repositories
/// the schedules name; a repository that cannot be read is reported for
/// each of its volumes and tried again next round.
async fn list_repositories(
    desired: &Desired,
    observed: &Observed,
    known: &mut Known,
    round: &mut Round,
) {
    let wanted: BTreeSet<String> = scheduled(desired, observed)
        .map(|(_, b)| b.to.clone())
        .filter(|r| !known.listed.contains(r))
        .collect();
    for name in wanted {
        let Some(r) = desired.repositories.get(&name) else {
            continue;
        };
        // (None there yet: the first push makes it.)
        match backup::list_if_any(r, None).await {
            Ok(list) => {
                for b in list {
                    let k = (b.stack, b.volume, name.clone());
                    let t = u64::try_from(b.unix).unwrap_or(0);
                    let e = known.last.entry(k).or_insert(t);
                    *e = (*e).max(t);
                }
                known.listed.insert(name);
            }
            Err(e) => {
                for (v, b) in scheduled(desired, observed).filter(|(_, b)| b.to == name) {
                    round.failed.push((key(v, &b.to), e.clone()));
                }
            }
        }
    }
}

/// Pushes the due backups and forgets what `keep` no longer keeps, under
/// the leases (taken here, released at the end). Nothing is taken when
/// nothing is due.
pub async fn run(
    desired: &Desired,
    conns: &mut crate::docker::hosts::Connections,
    seen: &Observed,
    known: &mut Known,
    holder: &Arc<Holder>,
    stop: &CancellationToken,
    direct: bool,
) -> Result<Round, String> {
    let mut round = Round::default();
    known
        .open
        .retain(|name, _| desired.repositories.contains_key(name));
    list_repositories(desired, seen, known, &mut round).await;
    if due(desired, seen, known, clock::now()).is_empty() {
        return Ok(round);
    }
    let (leases, observed) = crate::onhost::lease::take_and_observe(conns, holder, stop)
        .await
        .map_err(|e| e.to_string())?;
    let opts = crate::data::snapshot::CopyOptions::quiet(direct);
    for (v, b) in due(desired, &observed, known, clock::now()) {
        let k = key(v, &b.to);
        let (Some(api), Some(r)) = (conns.engines.get(&v.host), desired.repositories.get(&b.to))
        else {
            continue;
        };
        let state = &observed.hosts[&v.host];
        let on = crate::data::snapshot::On::of(api, desired);
        let writers = crate::data::snapshot::Writers::for_volume(desired, state, v);
        let kept = known.kept_open(r);
        let done = async {
            // Nothing is frozen for a repository that cannot be used.
            let opening = backup::open_kept(r, kept);
            let (made, o) = backup::backup(
                &on,
                state,
                v,
                &writers,
                (r, opening),
                v.consistency,
                None,
                &opts,
            )
            .await?;
            let forgotten = backup::retain(&o, v, b.keep)
                .await
                .map_err(|e| format!("the backup is stored, but forgetting old ones failed: {e}"));
            Ok::<_, String>((made, forgotten, o))
        }
        .await;
        match done {
            Ok((made, forgotten, o)) => {
                // (One this push made says so: it is opened again next time.)
                if o.created {
                    known.open.remove(&r.name);
                } else {
                    known.open.insert(r.name.clone(), (r.clone(), o));
                }
                known.last.insert(k.clone(), clock::now());
                match forgotten {
                    Ok(n) => round.forgotten.push((k.clone(), n)),
                    Err(e) => round.failed.push((k.clone(), e)),
                }
                round.pushed.push((k, made));
            }
            Err(e) => {
                known.open.remove(&r.name);
                round.failed.push((k, e));
            }
        }
        if stop.is_cancelled() {
            break;
        }
    }
    leases.release().await;
    Ok(round)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observed::ObservedHost;

    #[tokio::test]
    async fn a_repository_is_kept_open_only_as_the_cluster_still_declares_it() {
        let store = tempfile::tempdir().unwrap();
        let r = crate::model::Repository {
            name: "offsite".into(),
            loc: crate::diag::Loc::new(&Arc::from("cluster.yaml"), Default::default()),
            url: crate::model::Text::plain(store.path().join("repo").display().to_string()),
            password: crate::model::Text::plain("pw"),
            env: BTreeMap::new(),
        };
        let made = backup::open_for_push(&r).await.unwrap();
        assert!(made.created);
        let mut known = Known::default();
        known.open.insert(r.name.clone(), (r.clone(), made));
        assert!(known.kept_open(&r).is_some());
        let changed = crate::model::Repository {
            password: crate::model::Text::plain("another"),
            ..r.clone()
        };
        assert!(
            known.kept_open(&changed).is_none(),
            "a new password opens it again"
        );
        let other = crate::model::Repository {
            name: "elsewhere".into(),
            ..r.clone()
        };
        assert!(known.kept_open(&other).is_none());

        // Kept, it is used while its store still holds it; a repository
        // made anew at the same location is opened again.
        let kept = known.kept_open(&r);
        let same = backup::open_kept(&r, kept.clone()).await.unwrap();
        assert!(Arc::ptr_eq(&same, kept.as_ref().unwrap()));
        std::fs::remove_dir_all(store.path().join("repo")).unwrap();
        let anew = backup::open_for_push(&r).await.unwrap();
        assert!(anew.created);
        let again = backup::open_kept(&r, kept.clone()).await.unwrap();
        assert!(!Arc::ptr_eq(&again, kept.as_ref().unwrap()));
        assert_eq!(again.repo.config().id, anew.repo.config().id);
        // Gone, with nothing at its location: made there, as by a first
        // push (and reported as made).
        std::fs::remove_dir_all(store.path().join("repo")).unwrap();
        let made = backup::open_kept(&r, Some(anew)).await.unwrap();
        assert!(made.created);
    }

    fn desired() -> Desired {
        let mut d = Desired::default();
        let mut v = crate::desired::volume_spec("blog", "pgdata", "a");
        v.backup = Some(crate::desired::Backup {
            to: "offsite".into(),
            every: Duration::from_secs(3600),
            keep: crate::model::KeepPolicy {
                last: 2,
                ..Default::default()
            },
        });
        d.hosts
            .entry("a".into())
            .or_default()
            .volumes
            .insert(v.name.clone(), v);
        d
    }

    fn observed() -> Observed {
        let v = crate::desired::volume_spec("blog", "pgdata", "a").as_observed(Some(1), vec![]);
        Observed {
            hosts: BTreeMap::from([(
                "a".to_string(),
                ObservedHost {
                    volumes: vec![v],
                    ..ObservedHost::default()
                },
            )]),
            ..Observed::default()
        }
    }

    #[test]
    fn a_backup_is_due_every_so_long_once_its_repository_was_read() {
        let (d, o) = (desired(), observed());
        let mut known = Known::default();
        assert!(
            due(&d, &o, &known, 10_000).is_empty(),
            "not before the repository is read"
        );
        known.listed.insert("offsite".into());
        assert_eq!(
            due(&d, &o, &known, 10_000).len(),
            1,
            "none yet: due at once"
        );
        let k = (
            "blog".to_string(),
            "pgdata".to_string(),
            "offsite".to_string(),
        );
        known.last.insert(k, 10_000);
        assert!(due(&d, &o, &known, 10_000 + 3599).is_empty());
        assert_eq!(due(&d, &o, &known, 10_000 + 3600).len(), 1);
        assert_eq!(next_due_in(&d, &o, &known, 10_000 + 600), Some(3000));
        assert!(overdue(&d, &o, &known, 10_000 + 5000, 0).is_empty());
        let late = overdue(&d, &o, &known, 10_000 + 5500, 0);
        assert_eq!(late[0].repository, "offsite");
    }
}
