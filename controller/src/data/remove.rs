//! `drover volume rm`: the rules for deleting a volume's data. Only an
//! explicit command deletes data, and never the current copy of a volume
//! the manifests name, a volume in use, one drover does not manage, or the
//! target of a move that passed its switch.

use crate::desired::Desired;
use crate::docker::hosts::Connections;
use crate::docker::DockerApi;
use crate::observed::{CopyRole, MovePhase, ObservedHost, RecordRef};

/// A volume found deletable, and the records that go with it.
#[derive(Debug)]
pub struct Removable {
    pub host: String,
    pub name: String,
    records: Vec<RecordRef>,
}

/// Checks that volume `name` on `host` may be deleted, from `state` (the
/// host as read under its lease): `Err` says why not.
pub async fn check(
    desired: &Desired,
    conns: &Connections,
    host: &str,
    name: &str,
    state: &ObservedHost,
) -> Result<Removable, String> {
    let Some(v) = state.volumes.iter().find(|v| v.name == name) else {
        return Err(format!("there is no volume `{name}` on `{host}`"));
    };
    if !v.managed {
        return Err(format!(
            "volume `{name}` on `{host}` is not managed by drover; drover never deletes it"
        ));
    }
    if !v.used_by.is_empty() {
        return Err(format!(
            "volume `{name}` on `{host}` is in use by {}",
            v.used_by.join(", ")
        ));
    }
    let authoritative = desired
        .hosts
        .get(host)
        .is_some_and(|h| h.volumes.contains_key(name))
        && crate::plan::may_be_current(v);
    // An unfinished copy whose move passed its switch holds the newest
    // data: its source's record says so.
    if let Some(r) = v.copy.as_ref().filter(|r| r.role == CopyRole::Incoming) {
        let peer = r.peer.clone().unwrap_or_default();
        let Some(p) = conns.engines.get(&peer) else {
            return Err(format!(
                "host `{peer}`, the source of this copy, could not be read; nothing was deleted"
            ));
        };
        let switched = p
            .observe()
            .await
            .map_err(|e| format!("host `{peer}`, the source of this copy, could not be read ({e}); nothing was deleted"))?
            .volumes
            .iter()
            .filter(|o| o.name == name)
            .filter_map(|o| o.copy.as_ref())
            .any(|c| c.phase == Some(MovePhase::Switch) && c.moving_to.as_deref() == Some(host));
        if switched {
            return Err(format!(
                "volume `{name}` on `{host}` is the target of a move that passed its switch and may hold the newest data; run `drover reconcile` to finish the move first"
            ));
        }
    }
    if authoritative {
        return Err(format!(
            "volume `{name}` on `{host}` holds the current data of a volume in the manifests; remove it from the manifests first"
        ));
    }
    Ok(Removable {
        host: host.to_string(),
        name: name.to_string(),
        // The records about the copy go with it (found by the volume they
        // are about, never by a name prefix).
        records: state
            .records_of(name)
            .cloned()
            .chain(v.snapshot.as_ref().map(|_| crate::observed::RecordRef {
                // A snapshot's record of completion.
                name: crate::contract::names::snapshot_record(name),
                of: name.to_string(),
                seq: 0,
                object: crate::observed::RecordObject::Volume,
            }))
            .collect(),
    })
}

/// Deletes the volume and its data, then its records.
pub async fn remove(api: &dyn DockerApi, r: Removable) -> Result<(), String> {
    api.remove_volume(&r.name)
        .await
        .map_err(|e| e.to_string())?;
    crate::onhost::records::remove(api, &r.records).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::docker::fake::FakeDocker;
    use crate::observed::{CopyRecord, ObservedVolume, RecordObject};

    /// The stack `s` with volume `data` on `b` (its app there).
    fn desired() -> Desired {
        crate::testing::desired_on_two_hosts(
            "kind: Stack\nname: s\nvolumes: { data: {} }\napps:\n  app: { image: img, host: b, volumes: ['data:/d'] }\n",
        )
    }

    fn record(role: CopyRole, peer: &str) -> CopyRecord {
        CopyRecord {
            role,
            epoch: 1,
            peer: Some(peer.into()),
            moving_to: None,
            phase: None,
            bytes: None,
            cost: None,
            supersedes: Vec::new(),
        }
    }

    fn host(volume: ObservedVolume) -> ObservedHost {
        ObservedHost {
            records: vec![RecordRef {
                name: "drover-copy-s-data-1".into(),
                of: volume.name.clone(),
                seq: 1,
                object: RecordObject::Volume,
            }],
            volumes: vec![volume],
            ..ObservedHost::default()
        }
    }

    fn conns(hosts: &[(&str, &Arc<FakeDocker>)]) -> Connections {
        Connections {
            engines: hosts
                .iter()
                .map(|(n, f)| (n.to_string(), Arc::clone(f) as Arc<dyn DockerApi>))
                .collect(),
            unreachable: BTreeMap::new(),
        }
    }

    async fn verdict(state: &ObservedHost, on: &str, c: &Connections) -> Result<Removable, String> {
        check(&desired(), c, on, "s-data", state).await
    }

    #[tokio::test]
    async fn a_retained_copy_is_deleted_with_its_records() {
        let retained = host(ObservedVolume::managed(
            "s",
            "data",
            Some(record(CopyRole::Retained, "b")),
        ));
        let a = Arc::new(FakeDocker::new("a", retained.clone()));
        let r = verdict(&retained, "a", &conns(&[("a", &a)])).await.unwrap();
        remove(a.as_ref(), r).await.unwrap();
        assert_eq!(
            a.writes(),
            ["remove-volume s-data", "record remove drover-copy-s-data-1"]
        );
    }

    #[tokio::test]
    async fn the_current_copy_a_volume_in_use_and_foreign_volumes_are_never_deleted() {
        let c = Connections::default();
        let current = host(ObservedVolume::managed(
            "s",
            "data",
            Some(record(CopyRole::Current, "a")),
        ));
        let e = verdict(&current, "b", &c).await.unwrap_err();
        assert!(e.contains("holds the current data"), "{e}");

        let mut used = ObservedVolume::managed("s", "data", None);
        used.used_by = vec!["s-app".into()];
        let e = verdict(&host(used), "a", &c).await.unwrap_err();
        assert!(e.contains("is in use by s-app"), "{e}");

        let mut foreign = ObservedVolume::managed("s", "data", None);
        foreign.managed = false;
        let e = verdict(&host(foreign), "a", &c).await.unwrap_err();
        assert!(e.contains("not managed by drover"), "{e}");

        let e = verdict(&ObservedHost::default(), "a", &c)
            .await
            .unwrap_err();
        assert!(e.contains("there is no volume `s-data` on `a`"), "{e}");
    }

    #[tokio::test]
    async fn the_target_of_a_move_past_its_switch_is_kept_and_an_unreadable_source_keeps_it_too() {
        // `a` is moving the volume to `c` (not in the manifests) and passed
        // its switch: c's incoming copy may hold the newest data.
        let incoming = host(ObservedVolume::managed(
            "s",
            "data",
            Some(record(CopyRole::Incoming, "a")),
        ));
        let mut switching = record(CopyRole::Current, "c");
        switching.moving_to = Some("c".into());
        switching.phase = Some(MovePhase::Switch);
        let a = Arc::new(FakeDocker::new(
            "a",
            host(ObservedVolume::managed("s", "data", Some(switching))),
        ));
        let e = verdict(&incoming, "c", &conns(&[("a", &a)]))
            .await
            .unwrap_err();
        assert!(e.contains("passed its switch"), "{e}");
        let e = verdict(&incoming, "c", &Connections::default())
            .await
            .unwrap_err();
        assert!(e.contains("could not be read; nothing was deleted"), "{e}");
    }
}
