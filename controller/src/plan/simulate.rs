//! What the hosts hold once a plan has run, to check that planning again
//! finds nothing to do.

use super::*;

/// What the hosts look like once every action of `plan` has succeeded.
/// Used to check that planning again gives an empty plan.
pub fn simulate(desired: &Desired, observed: &Observed, plan: &Plan) -> Observed {
    use crate::observed::ObservedNetwork;
    let mut out = observed.clone();
    let container_state = |h: &mut ObservedHost, c: &ContainerSpec| {
        if c.has_secrets() && h.secret_key.is_absent() {
            // The apply makes the host's key with the first such container.
            h.secret_key = SecretKey::Known(crate::contract::hostkey::HostKey::fixed(0));
        }
        c.as_observed(ContainerState::Running, h.secret_key.known())
    };
    for a in &plan.actions {
        match (a.kind, a.action) {
            (Kind::Volume, Verb::Create) => {
                let v = &desired.hosts[&a.host].volumes[&a.name];
                let h = out.hosts.entry(a.host.clone()).or_default();
                h.volumes.push(v.as_observed(Some(0), Vec::new()));
            }
            (Kind::Volume, Verb::Relocate) => {
                let r = a.relocation.as_ref().expect("relocate has its facts");
                let v = &desired.hosts[&r.to].volumes[&a.name];
                if let Some(src) = out.hosts.get_mut(&r.from) {
                    for ov in &mut src.volumes {
                        if ov.name == a.name {
                            ov.retained_for = Some(r.to.clone());
                            ov.used_by.clear();
                        }
                    }
                    src.containers.retain(|c| {
                        !(c.stack.as_deref() == Some(&a.stack)
                            && c.app.as_ref().is_some_and(|x| r.apps.contains(x)))
                    });
                }
                let h = out.hosts.entry(r.to.clone()).or_default();
                h.volumes.retain(|ov| ov.name != a.name);
                let users = r
                    .apps
                    .iter()
                    .map(|app| names::container(&a.stack, app))
                    .collect();
                h.volumes.push(v.as_observed(r.bytes, users));
                for app in &r.apps {
                    let c = &desired.hosts[&r.to].containers[&names::container(&a.stack, app)];
                    h.containers.retain(|o| o.name != c.name);
                    let o = container_state(h, c);
                    h.containers.push(o);
                }
            }
            (Kind::Network, Verb::Create) => {
                out.hosts
                    .entry(a.host.clone())
                    .or_default()
                    .networks
                    .push(ObservedNetwork {
                        name: a.name.clone(),
                        managed: true,
                        internal: false,
                        stack: Some(a.stack.clone()),
                        config: desired
                            .hosts
                            .get(&a.host)
                            .and_then(|h| h.networks.get(&a.name))
                            .and_then(|n| n.config().cloned()),
                    });
            }
            (Kind::Container, Verb::Start)
                if !desired.hosts[&a.host].containers.contains_key(&a.name) =>
            {
                // An app kept on its old host until it can move.
                if let Some(h) = out.hosts.get_mut(&a.host) {
                    for o in h.containers.iter_mut().filter(|o| o.name == a.name) {
                        o.state = ContainerState::Running;
                    }
                }
            }
            (Kind::Container, Verb::Create | Verb::Recreate | Verb::Start) => {
                let c = &desired.hosts[&a.host].containers[&a.name];
                let h = out.hosts.entry(a.host.clone()).or_default();
                h.containers.retain(|o| o.name != c.name);
                let o = container_state(h, c);
                h.containers.push(o);
                for v in &mut h.volumes {
                    if c.mounts.iter().any(|m| m.source == v.name) && !v.used_by.contains(&c.name) {
                        v.used_by.push(c.name.clone());
                    }
                }
            }
            (Kind::Container, Verb::Remove) => {
                if let Some(h) = out.hosts.get_mut(&a.host) {
                    h.containers.retain(|o| o.name != a.name);
                    for v in &mut h.volumes {
                        v.used_by.retain(|u| *u != a.name);
                    }
                }
            }
            (Kind::Network, Verb::Remove) => {
                if let Some(h) = out.hosts.get_mut(&a.host) {
                    h.networks.retain(|o| o.name != a.name);
                }
            }
            (Kind::Volume, Verb::Remove) => {
                if let Some(h) = out.hosts.get_mut(&a.host) {
                    h.volumes.retain(|o| o.name != a.name);
                }
            }
            _ => {}
        }
    }
    out
}
