//! Which hosts the Cluster had: recorded on every host, so that a host
//! removed from the Cluster while it still holds data (or runs apps) is
//! still read — never taken for empty, and its volumes never made anew,
//! empty, elsewhere. Nothing is ever changed on a former host.
//!
//! The record is a label-only volume `drover-cluster-<seq>` (the newest
//! counts), written on each host of the Cluster under the leases whenever
//! the list changes. A former host stays in it while it holds anything
//! drover manages, or cannot be read.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::desired::labels;
use crate::engine::{DockerApi, RecordSpec};
use crate::model::{Host, Spec, Tls};
use crate::observed::{KnownHost, Membership, Observed, ObservedHost, RecordObject, RecordRef};

/// The hosts, as JSON.
pub const HOSTS: &str = "drover.cluster-hosts";
/// The record's sequence number.
pub const SEQ: &str = "drover.cluster-seq";

/// The newest membership record among a host's volumes, if any.
pub fn from_volumes<'a>(
    volumes: impl IntoIterator<Item = (&'a str, &'a HashMap<String, String>)>,
) -> Option<Membership> {
    let mut found: Vec<(u64, &str, Vec<KnownHost>)> = Vec::new();
    for (name, l) in volumes {
        let (Some(hosts), Some(seq)) = (l.get(HOSTS), l.get(SEQ)) else {
            continue;
        };
        let (Ok(hosts), Ok(seq)) = (serde_json::from_str(hosts), seq.parse()) else {
            continue;
        };
        found.push((seq, name, hosts));
    }
    found.sort_by_key(|(seq, ..)| *seq);
    let objects = found.iter().map(|(_, n, _)| n.to_string()).collect();
    let (seq, _, hosts) = found.pop()?;
    Some(Membership {
        seq,
        hosts,
        objects,
    })
}

/// Whether a volume's labels make it a membership record.
pub fn is_record(l: &HashMap<String, String>) -> bool {
    l.contains_key(HOSTS)
}

fn known(h: &Host, volumes: Vec<String>) -> KnownHost {
    KnownHost {
        name: h.name.clone(),
        endpoint: crate::engine::endpoint_of(h),
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

/// What the newest record says a host held.
pub fn recorded_volumes<'a>(observed: &'a Observed, host: &str) -> &'a [String] {
    newest(observed)
        .and_then(|m| m.hosts.iter().find(|k| k.name == host))
        .map_or(&[], |k| k.volumes.as_slice())
}

/// The newest record read on any host of the spec.
fn newest(observed: &Observed) -> Option<&Membership> {
    observed
        .hosts
        .values()
        .filter_map(|h| h.membership.as_ref())
        .max_by_key(|m| m.seq)
}

/// Hosts the records name that are not in the spec: to be read, never
/// changed.
pub fn former_hosts(spec: &Spec, observed: &Observed) -> Vec<Host> {
    let Some(m) = newest(observed) else {
        return Vec::new();
    };
    m.hosts
        .iter()
        .filter(|k| !spec.hosts.contains_key(&k.name))
        .map(|k| Host {
            name: k.name.clone(),
            loc: None,
            endpoint: k.endpoint.clone(),
            address: k.address.clone(),
            labels: BTreeMap::new(),
            tls: k.tls.as_ref().map(|[ca, cert, key]| Tls {
                ca: ca.into(),
                cert: cert.into(),
                key: key.into(),
            }),
        })
        .collect()
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
                .map_or_else(|| recorded_volumes(observed, &h.name).to_vec(), volumes_of);
            known(h, volumes)
        })
        .collect();
    if let Some(m) = newest(observed) {
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
        let seq = crate::records::next_seq(current.map_or(0, |m| m.seq));
        let spec = RecordSpec {
            name: format!("drover-cluster-{seq}"),
            labels: BTreeMap::from([
                (labels::MANAGED.to_string(), "true".to_string()),
                (labels::INTERNAL.to_string(), "true".to_string()),
                (HOSTS.to_string(), json.clone()),
                (SEQ.to_string(), seq.to_string()),
            ]),
        };
        if let Err(e) = api.create_record(&spec).await {
            tracing::warn!(host = %name, error = %e, "cannot record the Cluster's hosts");
            continue;
        }
        for old in current.map(|m| m.objects.clone()).unwrap_or_default() {
            let r = RecordRef {
                name: old,
                of: String::new(),
                seq: 0,
                object: RecordObject::Volume,
            };
            if let Err(e) = api.remove_record(&r).await {
                tracing::warn!(host = %name, error = %e, "cannot remove an old record of the Cluster's hosts");
            }
        }
    }
}

/// After work under the leases: records the Cluster's hosts as the work
/// left them. When it `changed` anything the hosts are read again, within
/// 10 s (a host that stopped answering leaves the record to a later run);
/// otherwise `before` is what they hold.
pub async fn record_after(
    spec: &Spec,
    conns: &crate::hosts::Connections,
    before: &Observed,
    changed: bool,
) {
    let again;
    let now = if changed {
        let read = crate::hosts::observe_cluster(spec, conns);
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
