//! Which hosts the Cluster had: recorded on every host, so that a host
//! removed from the Cluster while it still holds data (or runs apps) is
//! still read — never taken for empty, and its volumes never made anew,
//! empty, elsewhere. Nothing is ever changed on a former host.
//!
//! The record is a label-only volume `drover-cluster-<seq>` (the newest
//! counts), written on each host of the Cluster under the leases whenever
//! the list changes. A former host stays in it while it holds anything
//! drover manages, or cannot be read.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::docker::{DockerApi, RecordSpec};
use crate::model::{Host, Spec};
use crate::observed::{KnownHost, Observed, ObservedHost};

pub use crate::contract::labels::cluster::{HOSTS, SEQ};

fn known(h: &Host, volumes: Vec<String>) -> KnownHost {
    KnownHost {
        name: h.name.clone(),
        endpoint: crate::docker::endpoint_of(h),
        address: h.address.clone(),
        tls: h
            .tls
            .as_ref()
            .map(|t| [&t.ca, &t.cert, &t.key].map(|p| p.display().to_string())),
        volumes,
    }
}

/// The managed volumes a host holds.
fn volumes_of(h: &ObservedHost) -> Vec<String> {
    let mut v: Vec<String> = h
        .volumes
        .iter()
        .filter(|v| v.managed && !v.internal)
        .map(|v| v.name.clone())
        .collect();
    v.sort();
    v
}

/// Whether a former host still matters: it holds something drover manages.
fn holds_anything(h: &ObservedHost) -> bool {
    h.volumes.iter().any(|v| v.managed && !v.internal)
        || h.containers.iter().any(|c| c.managed && !c.internal)
}

/// The list to record, if any host of the Cluster that was read lacks it:
/// the Cluster's hosts, and the former hosts that still matter (those that
/// hold anything drover manages, or could not be read).
pub fn wanted(spec: &Spec, observed: &Observed) -> Option<Vec<KnownHost>> {
    // A host that cannot be read keeps what was last recorded of it.
    let mut hosts: Vec<KnownHost> = spec
        .hosts
        .values()
        .map(|h| {
            let volumes = observed
                .hosts
                .get(&h.name)
                .map_or_else(|| observed.recorded_volumes(&h.name).to_vec(), volumes_of);
            known(h, volumes)
        })
        .collect();
    if let Some(m) = observed.newest_membership() {
        for k in m.hosts.iter().filter(|k| !spec.hosts.contains_key(&k.name)) {
            match observed.former.get(&k.name) {
                Some(h) if holds_anything(h) => hosts.push(KnownHost {
                    volumes: volumes_of(h),
                    ..k.clone()
                }),
                Some(_) => {}
                // Not read: kept while it may hold a volume.
                None if !k.volumes.is_empty() => hosts.push(k.clone()),
                None => {}
            }
        }
    }
    hosts.sort();
    let stale = observed
        .hosts
        .values()
        .any(|h| h.membership.as_ref().is_none_or(|m| m.hosts != hosts));
    stale.then_some(hosts)
}

/// Writes the list on every connected host whose record differs, and
/// removes the older records there. Failures are logged: the next pass
/// writes again.
pub async fn write(
    engines: &BTreeMap<String, Arc<dyn DockerApi>>,
    observed: &Observed,
    hosts: &[KnownHost],
) {
    let json = serde_json::to_string(hosts).expect("serializes");
    for (name, api) in engines {
        let Some(h) = observed.hosts.get(name) else {
            continue;
        };
        let current = h.membership.as_ref();
        if current.is_some_and(|m| m.hosts == hosts) {
            continue;
        }
        let seq = crate::onhost::records::next_seq(current.map_or(0, |m| m.seq));
        let spec = RecordSpec {
            name: crate::contract::names::membership(seq),
            labels: crate::contract::internal_labels([
                (HOSTS, json.clone()),
                (SEQ, seq.to_string()),
            ]),
        };
        let older = current.map(|m| m.objects.clone()).unwrap_or_default();
        crate::onhost::records::supersede(api.as_ref(), &spec, &older, "the Cluster's hosts").await;
    }
}

/// After work under the leases: records the Cluster's hosts as the work
/// left them. When it `changed` anything the hosts are read again, within
/// 10 s (a host that stopped answering leaves the record to a later run);
/// otherwise `before` is what they hold.
pub async fn record_after(
    spec: &Spec,
    conns: &crate::docker::hosts::Connections,
    before: &Observed,
    changed: bool,
) {
    let again;
    let now = if changed {
        let read = crate::docker::hosts::observe_cluster(spec, conns);
        match tokio::time::timeout(std::time::Duration::from_secs(10), read).await {
            Ok(o) => {
                again = o;
                &again
            }
            Err(_) => return,
        }
    } else {
        before
    };
    if let Some(hosts) = wanted(spec, now) {
        write(&conns.engines, now, &hosts).await;
    }
}
