//! Reaching every host of the spec at once, and reading their state. A host
//! that cannot be reached or read is recorded as unreachable with the reason
//! — never as an empty host.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::docker::{DockerApi, Engine};
use crate::model::{Host, Spec};
use crate::observed::Observed;

/// Connections to the hosts that answered, and why the others did not.
#[derive(Default, Clone)]
pub struct Connections {
    pub engines: BTreeMap<String, Arc<dyn DockerApi>>,
    pub unreachable: BTreeMap<String, String>,
}

/// Connects to every host of the spec in parallel.
pub async fn connect_all(spec: &Spec) -> Connections {
    connect(spec.hosts.values()).await
}

/// Connects to the given hosts in parallel.
pub async fn connect<'a>(hosts: impl IntoIterator<Item = &'a Host>) -> Connections {
    let tasks: Vec<_> = hosts
        .into_iter()
        .cloned()
        .map(|h| tokio::spawn(async move { (h.name.clone(), Engine::connect(&h).await) }))
        .collect();
    let mut out = Connections::default();
    for t in tasks {
        match t.await {
            Ok((name, Ok(engine))) => {
                out.engines.insert(name, Arc::new(engine));
            }
            Ok((name, Err(e))) => {
                tracing::warn!(host = %name, error = %e, "host unreachable");
                out.unreachable.insert(name, e.to_string());
            }
            Err(e) => tracing::error!(error = %e, "connection task failed"),
        }
    }
    out
}

/// Reads every connected host in parallel.
pub async fn observe_all(conns: &Connections) -> Observed {
    let tasks: Vec<_> = conns
        .engines
        .iter()
        .map(|(name, api)| {
            let (name, api) = (name.clone(), Arc::clone(api));
            tokio::spawn(async move { (name, api.observe().await) })
        })
        .collect();
    let mut observed = Observed {
        unreachable: conns.unreachable.clone(),
        ..Observed::default()
    };
    for t in tasks {
        match t.await {
            Ok((name, Ok(host))) => {
                observed.hosts.insert(name, host);
            }
            Ok((name, Err(e))) => {
                tracing::warn!(host = %name, error = %e, "host could not be read");
                observed.unreachable.insert(name, e.to_string());
            }
            Err(e) => tracing::error!(error = %e, "observe task failed"),
        }
    }
    observed
}

/// Reads the hosts that left the Cluster but are still recorded on its
/// hosts (the record of members), into `observed.former`: read only, never
/// changed, so that their data is never taken for absent.
pub async fn observe_former(spec: &Spec, observed: &mut Observed) {
    let former = observed.former_hosts(spec);
    if former.is_empty() {
        return;
    }
    let conns = connect(former.iter()).await;
    let read = observe_all(&conns).await;
    observed.former = read.hosts;
    observed.former_unreachable = read.unreachable;
}

/// Reads every connected host of the Cluster, and the former hosts its
/// record of members names.
pub async fn observe_cluster(spec: &Spec, conns: &Connections) -> Observed {
    let mut observed = observe_all(conns).await;
    observe_former(spec, &mut observed).await;
    observed
}
