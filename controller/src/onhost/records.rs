//! Copy records: what a host holds about each copy of a volume on it (its
//! role, epoch and the move under way), written by moves and by `drover
//! volume adopt`, read by [`crate::plan::authority`].
//!
//! A record is a label-only volume named `drover-copy-<volume>-<seq>`,
//! found by its `drover.copy-of` label (never by its name: one volume's
//! name may begin with another's). Volumes, not containers, because
//! `docker container prune` and `docker system prune` remove every
//! container that is not running, and Docker 23 and later keep named
//! volumes through `docker volume prune` too. Records are never changed,
//! only superseded: the one with the highest sequence number counts.

use std::time::SystemTime;

use crate::docker::{DockerApi, RecordSpec};
use crate::observed::{CopyRecord, RecordObject, RecordRef};

/// The sequence number of a new record on a host whose newest record of
/// the same copy has `last`: the time in nanoseconds, but always above
/// `last`, so a clock stepped back never makes an older record count.
pub fn next_seq(last: u64) -> u64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    now.max(last.saturating_add(1))
}

/// Writes `spec`, a host-wide record (of the Cluster's members, of the
/// commit applied), and removes the `older` record volumes it supersedes.
/// Failures are logged, `what` naming the record: the next pass writes
/// again, and an older record left behind is ignored (the newest counts).
pub async fn supersede(api: &dyn DockerApi, spec: &RecordSpec, older: &[String], what: &str) {
    if let Err(e) = api.create_record(spec).await {
        tracing::warn!(host = %api.host(), error = %e, "cannot record {what}");
        return;
    }
    for old in older {
        let r = RecordRef {
            name: old.clone(),
            of: String::new(),
            seq: 0,
            object: RecordObject::Volume,
        };
        if let Err(e) = api.remove_record(&r).await {
            tracing::warn!(host = %api.host(), error = %e, "cannot remove an old record of {what}");
        }
    }
}

/// Which copy a record describes: the Docker volume and its stack's names.
#[derive(Debug, Clone, Copy)]
pub struct Of<'a> {
    pub name: &'a str,
    pub stack: &'a str,
    pub volume: &'a str,
}

/// Writes `r` as the newest record of copy `of` on `api`'s host.
pub async fn write(
    api: &dyn DockerApi,
    of: Of<'_>,
    r: &CopyRecord,
    seq: u64,
) -> Result<RecordRef, String> {
    let spec = RecordSpec {
        name: crate::contract::names::record(of.name, seq),
        labels: r.labels(of.name, of.stack, of.volume, seq),
    };
    api.create_record(&spec)
        .await
        .map_err(|e| format!("cannot record the state of volume `{}`: {e}", of.name))?;
    Ok(RecordRef {
        name: spec.name,
        of: of.name.to_string(),
        seq,
        object: RecordObject::Volume,
    })
}

/// Removes record objects; a failure is logged (an older record left
/// behind is ignored: the newest counts).
pub async fn remove(api: &dyn DockerApi, old: &[RecordRef]) {
    for r in old {
        if let Err(e) = api.remove_record(r).await {
            tracing::warn!(host = %api.host(), record = %r.name, error = %e, "cannot remove an old copy record");
        }
    }
}

/// `drover volume adopt`: records the copy of Docker volume `name` on
/// `host` as the current one (an epoch above every copy's) and every other
/// copy as retained for it. Nothing is copied or deleted. Refused while a
/// host cannot be read (its copy might be newer) or while a container runs
/// on another copy (it would go on writing to a copy no longer current).
/// Returns what was recorded, a line per copy.
pub async fn adopt(
    engines: &std::collections::BTreeMap<String, std::sync::Arc<dyn DockerApi>>,
    observed: &crate::observed::Observed,
    name: &str,
    host: &str,
) -> Result<Vec<String>, String> {
    use crate::observed::CopyRole;
    if let Some((h, why)) = observed.unreachable.iter().next() {
        return Err(format!(
            "host `{h}` could not be read ({why}); its copy of `{name}` might be the newest, so nothing was recorded"
        ));
    }
    let copies: Vec<(&str, &crate::observed::ObservedVolume)> = observed
        .hosts
        .iter()
        .filter_map(|(h, o)| Some((h.as_str(), o.volumes.iter().find(|v| v.name == name)?)))
        .collect();
    let Some((_, chosen)) = copies.iter().find(|(h, _)| *h == host) else {
        return Err(format!("there is no volume `{name}` on `{host}`"));
    };
    if !chosen.managed {
        return Err(format!(
            "volume `{name}` on `{host}` is not managed by drover; nothing was recorded"
        ));
    }
    for (h, v) in &copies {
        if *h != host && !v.used_by.is_empty() {
            let running: Vec<&str> = observed.hosts[*h]
                .containers
                .iter()
                .filter(|c| {
                    v.used_by.contains(&c.name)
                        && c.state == crate::observed::ContainerState::Running
                })
                .map(|c| c.name.as_str())
                .collect();
            if !running.is_empty() {
                return Err(format!(
                    "`{}` runs on `{h}` with its copy of `{name}`; stop it first (or adopt that copy): nothing was recorded",
                    running.join("`, `")
                ));
            }
        }
    }
    let (Some(stack), Some(volume)) = (chosen.stack.as_deref(), chosen.volume.as_deref()) else {
        return Err(format!(
            "volume `{name}` on `{host}` has no stack labels; nothing was recorded"
        ));
    };
    let of = Of {
        name,
        stack,
        volume,
    };
    let top = copies
        .iter()
        .map(|(_, v)| v.copy.as_ref().map_or(0, |r| r.epoch))
        .max()
        .unwrap_or(0);
    // The chosen copy first: until the others are written, two current
    // copies tie, and a tie decides nothing.
    let mut order: Vec<&(&str, &crate::observed::ObservedVolume)> = copies.iter().collect();
    order.sort_by_key(|(h, _)| *h != host);
    let mut done = Vec::new();
    for (h, v) in order {
        let api = engines
            .get(*h)
            .ok_or_else(|| format!("host `{h}` is not connected; nothing more was recorded"))?;
        let record = if *h == host {
            CopyRecord {
                role: CopyRole::Current,
                epoch: top + 1,
                peer: None,
                moving_to: None,
                phase: None,
                bytes: None,
                cost: None,
                supersedes: Vec::new(),
            }
        } else {
            CopyRecord {
                role: CopyRole::Retained,
                epoch: v.copy.as_ref().map_or(0, |r| r.epoch),
                peer: Some(host.to_string()),
                moving_to: None,
                phase: None,
                bytes: v.copy.as_ref().and_then(|r| r.bytes),
                cost: None,
                supersedes: Vec::new(),
            }
        };
        let state = &observed.hosts[*h];
        let old: Vec<RecordRef> = state.records_of(name).cloned().collect();
        write(api.as_ref(), of, &record, next_seq(state.last_seq(name))).await?;
        remove(api.as_ref(), &old).await;
        done.push(if *h == host {
            format!("volume `{name}` on `{h}`: current (epoch {})", top + 1)
        } else {
            format!("volume `{name}` on `{h}`: retained, kept as it is")
        });
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observed::CopyRole;

    #[test]
    fn a_new_record_always_counts_over_the_last_even_with_a_clock_behind() {
        let far = u64::MAX / 2;
        assert_eq!(next_seq(far), far + 1);
        assert!(next_seq(5) > 1_000_000_000_000_000_000);
    }

    fn copy(role: CopyRole, epoch: u64) -> CopyRecord {
        CopyRecord {
            role,
            epoch,
            peer: None,
            moving_to: None,
            phase: None,
            bytes: None,
            cost: None,
            supersedes: Vec::new(),
        }
    }

    #[tokio::test]
    async fn adopting_a_copy_makes_it_current_above_every_epoch_and_keeps_the_others() {
        use crate::docker::fake::FakeDocker;
        use crate::observed::{Observed, ObservedHost, ObservedVolume};
        use std::sync::Arc;
        let vol = |c: Option<CopyRecord>| ObservedVolume::managed("s", "data", c);
        let mut observed = Observed::default();
        let a = ObservedHost {
            volumes: vec![vol(Some(copy(CopyRole::Current, 3)))],
            ..Default::default()
        };
        let b = ObservedHost {
            volumes: vec![vol(None)],
            ..Default::default()
        };
        observed.hosts.insert("a".into(), a.clone());
        observed.hosts.insert("b".into(), b.clone());
        let fa = Arc::new(FakeDocker::new("a", a));
        let fb = Arc::new(FakeDocker::new("b", b));
        let engines: std::collections::BTreeMap<String, Arc<dyn DockerApi>> = [
            ("a".to_string(), fa.clone() as Arc<dyn DockerApi>),
            ("b".into(), fb.clone()),
        ]
        .into_iter()
        .collect();
        adopt(&engines, &observed, "s-data", "b").await.unwrap();
        let now = |f: &FakeDocker| f.state().volumes[0].copy.clone().unwrap();
        assert_eq!((now(&fb).role, now(&fb).epoch), (CopyRole::Current, 4));
        assert_eq!(now(&fa).role, CopyRole::Retained);
        assert_eq!(now(&fa).peer.as_deref(), Some("b"));
        // A host that was not read may hold a newer copy: nothing is written.
        observed.unreachable.insert("c".into(), "down".into());
        assert!(adopt(&engines, &observed, "s-data", "a").await.is_err());
    }
}
