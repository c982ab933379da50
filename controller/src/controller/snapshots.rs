//! Scheduled snapshots (`snapshots: { every, keep }`): which are due, which
//! the `keep` prunes, which are overdue — decided from the observed state
//! alone — and the step that takes and prunes them under the leases.
//!
//! A snapshot is due once `every` has passed since the newest scheduled
//! snapshot of the volume (at once when there is none): a controller that
//! was down for many slots takes one, not one per slot missed. `keep`
//! prunes only the snapshots the schedule took, never one taken by hand.

use super::*;

use crate::data::clock;
use crate::desired::VolumeSpec;
use crate::observed::ObservedVolume;

/// `(stack, volume)` of a volume of the manifests.
pub type VolumeKey = (String, String);

/// The snapshots of `stack/volume` on the hosts read: host and volume,
/// complete ones only, oldest first.
fn snapshots_of<'a>(observed: &'a Observed, v: &VolumeSpec) -> Vec<(&'a str, &'a ObservedVolume)> {
    let of = format!("{}/{}", v.stack, v.volume);
    let mut out: Vec<(&str, &ObservedVolume)> = observed
        .hosts
        .iter()
        .flat_map(|(h, oh)| oh.volumes.iter().map(move |o| (h.as_str(), o)))
        .filter(|(_, o)| {
            o.snapshot
                .as_ref()
                .is_some_and(|s| s.of == of && s.complete())
        })
        .collect();
    out.sort_by_key(|(_, o)| o.snapshot.as_ref().and_then(|s| s.taken.clone()));
    out
}

fn taken(o: &ObservedVolume) -> Option<u64> {
    o.snapshot
        .as_ref()
        .and_then(|s| s.taken.as_deref())
        .and_then(clock::parse_rfc3339)
}

/// When the newest complete snapshot of the volume was taken (any, by hand
/// too), Unix seconds.
pub fn last_snapshot(observed: &Observed, v: &VolumeSpec) -> Option<u64> {
    snapshots_of(observed, v)
        .iter()
        .filter_map(|(_, o)| taken(o))
        .max()
}

/// When the schedule last took one.
fn last_scheduled(observed: &Observed, v: &VolumeSpec) -> Option<u64> {
    snapshots_of(observed, v)
        .iter()
        .filter(|(_, o)| o.snapshot.as_ref().is_some_and(|s| s.scheduled))
        .filter_map(|(_, o)| taken(o))
        .max()
}

/// The volumes with a schedule, on hosts that were read.
fn scheduled<'a>(
    desired: &'a Desired,
    observed: &'a Observed,
) -> impl Iterator<Item = (&'a VolumeSpec, Duration, usize)> {
    desired
        .hosts
        .iter()
        .filter(|(h, _)| observed.hosts.contains_key(*h))
        .flat_map(|(_, dh)| dh.volumes.values())
        .filter_map(|v| v.snapshots.map(|(every, keep)| (v, every, keep)))
}

/// The volumes whose scheduled snapshot is due at `now` (Unix seconds):
/// those that exist where the manifests place them.
pub fn due<'a>(desired: &'a Desired, observed: &'a Observed, now: u64) -> Vec<&'a VolumeSpec> {
    scheduled(desired, observed)
        .filter(|(v, ..)| {
            observed.hosts[&v.host]
                .volumes
                .iter()
                .any(|o| o.name == v.name && crate::plan::may_be_current(o))
        })
        .filter(|(v, every, _)| {
            last_scheduled(observed, v).is_none_or(|t| now >= t + every.as_secs())
        })
        .map(|(v, ..)| v)
        .collect()
}

/// The scheduled snapshots `keep` no longer keeps: `(host, Docker volume)`.
pub fn to_prune(desired: &Desired, observed: &Observed) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (v, _, keep) in scheduled(desired, observed) {
        let mine: Vec<_> = snapshots_of(observed, v)
            .into_iter()
            .filter(|(_, o)| o.snapshot.as_ref().is_some_and(|s| s.scheduled))
            .collect();
        let extra = mine.len().saturating_sub(keep);
        out.extend(
            mine.into_iter()
                .take(extra)
                .map(|(h, o)| (h.to_string(), o.name.clone())),
        );
    }
    out
}

/// The soonest a scheduled snapshot falls due after `now`, in seconds.
pub fn next_due_in(desired: &Desired, observed: &Observed, now: u64) -> Option<u64> {
    scheduled(desired, observed)
        .map(|(v, every, _)| {
            last_scheduled(observed, v).map_or(0, |t| (t + every.as_secs()).saturating_sub(now))
        })
        .min()
}

/// A volume whose scheduled snapshot is late: none within one and a half
/// times its interval (and a minute).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overdue {
    pub stack: String,
    pub volume: String,
    pub every_seconds: u64,
    /// Unix time of its newest snapshot, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<u64>,
}

pub fn overdue(desired: &Desired, observed: &Observed, now: u64, since: u64) -> Vec<Overdue> {
    scheduled(desired, observed)
        .filter_map(|(v, every, _)| {
            let last = last_scheduled(observed, v);
            let late = every.as_secs() + every.as_secs() / 2 + 60;
            // A controller that just started has not had its chance yet.
            let from = last.unwrap_or(since);
            (now > from + late).then(|| Overdue {
                stack: v.stack.clone(),
                volume: v.volume.clone(),
                every_seconds: every.as_secs(),
                last: last_snapshot(observed, v),
            })
        })
        .collect()
}

/// What one round of scheduled snapshots did.
#[derive(Debug, Default)]
pub struct Round {
    pub taken: Vec<(VolumeKey, crate::data::snapshot::Taken)>,
    pub failed: Vec<(VolumeKey, String)>,
    pub pruned: Vec<(String, String)>,
    /// The hosts as read after the snapshots were taken, when any was
    /// (what was pruned since is older than what the figures count).
    pub observed: Option<Observed>,
}

/// Takes the due snapshots and prunes what `keep` no longer keeps, under
/// the leases (taken here, released at the end). Nothing is done when
/// nothing is due.
pub async fn run(
    desired: &Desired,
    conns: &mut crate::docker::hosts::Connections,
    seen: &Observed,
    holder: &Arc<Holder>,
    stop: &CancellationToken,
    direct: bool,
) -> Result<Round, String> {
    let now = clock::now();
    if due(desired, seen, now).is_empty() && to_prune(desired, seen).is_empty() {
        return Ok(Round::default());
    }
    let (leases, observed) = crate::onhost::lease::take_and_observe(conns, holder, stop)
        .await
        .map_err(|e| e.to_string())?;
    let mut round = Round::default();
    let opts = crate::data::snapshot::CopyOptions::quiet(direct);
    for v in due(desired, &observed, clock::now()) {
        let key = (v.stack.clone(), v.volume.clone());
        let Some(api) = conns.engines.get(&v.host) else {
            continue;
        };
        let state = &observed.hosts[&v.host];
        let on = crate::data::snapshot::On::of(api, desired);
        let writers = crate::data::snapshot::Writers::for_volume(desired, state, v);
        let req = crate::data::snapshot::Request {
            name: None,
            consistency: v.consistency,
            revision: None,
            scheduled: true,
            refresh: false,
        };
        match crate::data::snapshot::take(
            &on,
            state,
            v,
            &writers,
            &req,
            &opts,
            crate::data::snapshot::now(),
        )
        .await
        {
            Ok(t) => round.taken.push((key, t)),
            Err(e) => round.failed.push((key, e)),
        }
        if stop.is_cancelled() {
            break;
        }
    }
    // Pruned from what is there now, the snapshots just taken included.
    let after = crate::docker::hosts::observe_all(conns).await;
    for (host, name) in to_prune(desired, &after) {
        let Some(api) = conns.engines.get(&host) else {
            continue;
        };
        let Some(state) = after.hosts.get(&host) else {
            continue;
        };
        let r = match crate::data::remove::check(desired, conns, &host, &name, state).await {
            Ok(r) => crate::data::remove::remove(api.as_ref(), r).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => round.pruned.push((host, name)),
            Err(e) => {
                tracing::warn!(host = %host, snapshot = %name, error = %e, "a scheduled snapshot past `keep` was not pruned")
            }
        }
    }
    leases.release().await;
    round.observed = Some(after);
    Ok(round)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observed::{ObservedHost, SnapshotInfo};

    fn desired() -> Desired {
        crate::testing::desired_on_two_hosts(
            "kind: Stack\nname: s\nvolumes: { data: { snapshots: { every: 1h, keep: 2 } } }\napps:\n  app: { image: img, host: a, volumes: ['data:/d'] }\n",
        )
    }

    fn snap(name: &str, taken: u64, scheduled: bool) -> ObservedVolume {
        let mut v = ObservedVolume::managed("s", "data", None);
        v.name = format!("s-data.{name}");
        v.stack = None;
        v.volume = None;
        v.snapshot = Some(SnapshotInfo {
            of: "s/data".into(),
            name: name.into(),
            taken: Some(clock::rfc3339(taken)),
            scheduled,
            ..Default::default()
        });
        v
    }

    fn observed(snaps: Vec<ObservedVolume>) -> Observed {
        let mut vols = vec![ObservedVolume::managed("s", "data", None)];
        vols.extend(snaps);
        let mut o = Observed::default();
        o.hosts.insert(
            "a".into(),
            ObservedHost {
                volumes: vols,
                ..Default::default()
            },
        );
        o.hosts.insert("b".into(), ObservedHost::default());
        o
    }

    #[test]
    fn a_snapshot_is_due_once_its_interval_passed_and_only_once_after_a_long_gap() {
        let d = desired();
        let t = 1_800_000_000;
        assert_eq!(
            due(&d, &observed(vec![]), t).len(),
            1,
            "none yet: due at once"
        );
        let o = observed(vec![snap("x", t, true)]);
        assert!(due(&d, &o, t + 3599).is_empty());
        assert_eq!(due(&d, &o, t + 3600).len(), 1);
        // Ten slots missed: one snapshot is due, and once taken, none.
        assert_eq!(due(&d, &o, t + 36_000).len(), 1);
        let o = observed(vec![snap("x", t, true), snap("y", t + 36_000, true)]);
        assert!(due(&d, &o, t + 36_001).is_empty());
        assert_eq!(next_due_in(&d, &o, t + 36_001), Some(3599));
        // A snapshot taken by hand does not stand in for the schedule.
        let o = observed(vec![snap("manual", t + 10, false)]);
        assert_eq!(due(&d, &o, t + 20).len(), 1);
    }

    #[test]
    fn keep_prunes_only_the_oldest_scheduled_snapshots() {
        let d = desired();
        let t = 1_800_000_000;
        let o = observed(vec![
            snap("old", t, true),
            snap("mine", t + 1, false),
            snap("mid", t + 3600, true),
            snap("new", t + 7200, true),
        ]);
        assert_eq!(
            to_prune(&d, &o),
            [("a".to_string(), "s-data.old".to_string())]
        );
        assert!(overdue(&d, &o, t + 7200 + 3600, t).is_empty());
        let late = overdue(&d, &o, t + 7200 + 5461, t);
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].last, Some(t + 7200));
    }
}
