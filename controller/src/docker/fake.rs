//! A recording fake Docker host for unit tests of the logic above the
//! engine boundary. It keeps an [`ObservedHost`] as its whole state and logs
//! every call; failures and health can be scripted. The real engine is
//! tested end to end, never through this.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::desired::{ContainerSpec, NetworkSpec, VolumeSpec};
use crate::docker::{
    ContainerStatus, DockerApi, EngineError, Exec, HelperSpec, LeaseRecord, RecordSpec,
};
use crate::observed::{ContainerState, Health, ObservedContainer, ObservedHost, ObservedNetwork};

/// Orders calls across every fake host of a test.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

#[derive(Default)]
struct State {
    host: ObservedHost,
    /// `(sequence, call)`.
    calls: Vec<(u64, String)>,
    /// Calls (as logged, e.g. `start web`) that fail.
    failing: BTreeSet<String>,
    /// Lease renewals never answer (a hung engine).
    hung_renewals: bool,
    /// Health reported for containers by name, with the last output.
    health: BTreeMap<String, (Health, String)>,
    /// Images that can be pulled.
    pullable: BTreeSet<String>,
    /// The lease objects, by name, and how many were ever made.
    leases: BTreeMap<String, LeaseRecord>,
    lease_ids: u64,
}

pub struct FakeDocker {
    name: String,
    state: Mutex<State>,
}

impl FakeDocker {
    pub fn new(name: &str, host: ObservedHost) -> FakeDocker {
        FakeDocker {
            name: name.to_string(),
            state: Mutex::new(State {
                host,
                ..State::default()
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Every call so far, in order, as `verb name`.
    pub fn calls(&self) -> Vec<String> {
        self.with(|s| s.calls.iter().map(|(_, c)| c.clone()).collect())
    }

    /// When `call` was first made, comparable across fake hosts.
    pub fn when(&self, call: &str) -> Option<u64> {
        self.with(|s| s.calls.iter().find(|(_, c)| c == call).map(|(n, _)| *n))
    }

    /// Calls that changed something.
    pub fn writes(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| {
                !c.starts_with("observe") && !c.starts_with("status") && !c.starts_with("image?")
            })
            .collect()
    }

    pub fn fail(&self, call: &str) {
        self.with(|s| s.failing.insert(call.to_string()));
    }

    /// From now on lease renewals never answer, as on a hung engine.
    pub fn hang_renewals(&self) {
        self.with(|s| s.hung_renewals = true);
    }

    pub fn set_health(&self, container: &str, health: Health, output: &str) {
        self.with(|s| {
            s.health
                .insert(container.to_string(), (health, output.to_string()))
        });
    }

    pub fn allow_pull(&self, image: &str) {
        self.with(|s| s.pullable.insert(image.to_string()));
    }

    pub fn state(&self) -> ObservedHost {
        self.with(|s| s.host.clone())
    }

    fn call(&self, c: String) -> Result<(), EngineError> {
        self.with(|s| {
            s.calls
                .push((SEQUENCE.fetch_add(1, Ordering::SeqCst), c.clone()));
            if s.failing.contains(&c) {
                Err(EngineError::Api {
                    host: self.name.clone(),
                    op: c,
                    message: "scripted failure".into(),
                    status: None,
                })
            } else {
                Ok(())
            }
        })
    }
}

#[async_trait]
impl DockerApi for FakeDocker {
    fn host(&self) -> &str {
        &self.name
    }

    async fn observe(&self) -> Result<ObservedHost, EngineError> {
        self.call("observe".into())?;
        Ok(self.state())
    }

    async fn image_present(&self, image: &str) -> Result<bool, EngineError> {
        self.call(format!("image? {image}"))?;
        Ok(self.with(|s| s.host.images.iter().any(|i| i == image)))
    }

    async fn pull_image(&self, image: &str) -> Result<(), EngineError> {
        self.call(format!("pull {image}"))?;
        self.with(|s| {
            if s.pullable.contains(image) {
                s.host.images.push(image.to_string());
                Ok(())
            } else {
                Err(EngineError::Api {
                    host: self.name.clone(),
                    op: format!("pull `{image}`"),
                    message: "no registry".into(),
                    status: None,
                })
            }
        })
    }

    async fn create_volume(&self, v: &VolumeSpec) -> Result<(), EngineError> {
        self.call(format!("create-volume {}", v.name))?;
        self.with(|s| s.host.volumes.push(v.as_observed(None, Vec::new())));
        Ok(())
    }

    async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        self.call(format!("remove-volume {name}"))?;
        self.with(|s| s.host.volumes.retain(|v| v.name != name));
        Ok(())
    }

    async fn create_network(&self, n: &NetworkSpec) -> Result<(), EngineError> {
        self.call(format!("create-network {}", n.name))?;
        self.with(|s| {
            s.host.networks.push(ObservedNetwork {
                name: n.name.clone(),
                managed: true,
                internal: false,
                stack: Some(n.stack.clone()),
            })
        });
        Ok(())
    }

    async fn remove_network(&self, name: &str) -> Result<(), EngineError> {
        self.call(format!("remove-network {name}"))?;
        self.with(|s| s.host.networks.retain(|n| n.name != name));
        Ok(())
    }

    async fn create_container(&self, c: &ContainerSpec) -> Result<(), EngineError> {
        self.call(format!("create {}", c.name))?;
        let key = match c.has_secrets() {
            true => Some(self.secret_key().await?),
            false => None,
        };
        self.with(|s| {
            s.host
                .containers
                .push(c.as_observed(ContainerState::Created, key.as_ref()))
        });
        Ok(())
    }

    async fn secret_key(&self) -> Result<crate::contract::hostkey::HostKey, EngineError> {
        use crate::contract::hostkey::{HostKey, SecretKey};
        let host = self.name.clone();
        self.with(|s| {
            if let SecretKey::Known(k) = &s.host.secret_key {
                return Ok(k.clone());
            }
            let k = HostKey::random().map_err(|message| EngineError::Api {
                host,
                op: "make a key".into(),
                message,
                status: None,
            })?;
            s.host.secret_key = SecretKey::Known(k.clone());
            Ok(k)
        })
    }

    async fn start_container(&self, name: &str) -> Result<(), EngineError> {
        self.call(format!("start {name}"))?;
        self.with(|s| {
            for c in s.host.containers.iter_mut().filter(|c| c.name == name) {
                c.state = ContainerState::Running;
            }
        });
        Ok(())
    }

    async fn stop_container(&self, name: &str, _grace: Duration) -> Result<(), EngineError> {
        self.call(format!("stop {name}"))?;
        self.with(|s| {
            for c in s.host.containers.iter_mut().filter(|c| c.name == name) {
                c.state = ContainerState::Exited;
            }
        });
        Ok(())
    }

    async fn remove_container(&self, name: &str) -> Result<(), EngineError> {
        self.call(format!("remove {name}"))?;
        self.with(|s| s.host.containers.retain(|c| c.name != name));
        Ok(())
    }

    async fn container_status(&self, name: &str) -> Result<Option<ContainerStatus>, EngineError> {
        self.call(format!("status {name}"))?;
        Ok(self.with(|s| {
            s.host.containers.iter().find(|c| c.name == name).map(|c| {
                let h = s.health.get(name);
                ContainerStatus {
                    state: c.state,
                    health: h.map(|(h, _)| *h),
                    last_health_output: h.map(|(_, o)| o.clone()),
                    restart: None,
                }
            })
        }))
    }

    async fn set_restart(
        &self,
        name: &str,
        restart: crate::model::Restart,
    ) -> Result<(), EngineError> {
        self.call(format!("restart-policy {name} {}", restart.as_str()))
    }

    async fn import_image(&self, tag: &str, _rootfs: bytes::Bytes) -> Result<(), EngineError> {
        self.call(format!("import {tag}"))?;
        self.with(|s| s.host.images.push(tag.to_string()));
        Ok(())
    }

    async fn run_helper(&self, h: &HelperSpec) -> Result<Option<u16>, EngineError> {
        self.call(format!("helper {}", h.name))?;
        self.with(|s| {
            s.host
                .containers
                .push(internal(&h.name, &h.image, ContainerState::Running))
        });
        Ok(None)
    }

    async fn create_record(&self, m: &RecordSpec) -> Result<(), EngineError> {
        self.call(format!("record {}", m.name))?;
        let labels: std::collections::HashMap<String, String> =
            m.labels.clone().into_iter().collect();
        let Some((of, seq, record)) = crate::observed::CopyRecord::from_labels(&labels) else {
            return Ok(());
        };
        self.with(|s| {
            let newest = s.host.last_seq(&of) < seq;
            s.host.records.push(crate::observed::RecordRef {
                name: m.name.clone(),
                of: of.clone(),
                seq,
                object: crate::observed::RecordObject::Volume,
            });
            if let Some(v) = s.host.volumes.iter_mut().find(|v| v.name == of) {
                if newest {
                    v.retained_for = (record.role == crate::observed::CopyRole::Retained)
                        .then(|| record.peer.clone())
                        .flatten();
                    v.copy = Some(record);
                }
            }
        });
        Ok(())
    }

    async fn remove_record(&self, r: &crate::observed::RecordRef) -> Result<(), EngineError> {
        self.call(format!("record remove {}", r.name))?;
        self.with(|s| s.host.records.retain(|x| x.name != r.name));
        Ok(())
    }

    async fn create_lease(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Option<String>, EngineError> {
        self.call(format!("lease create {name}"))?;
        Ok(self.with(|s| {
            if s.leases.contains_key(name) {
                return None;
            }
            s.lease_ids += 1;
            let id = format!("lease{}", s.lease_ids);
            s.leases.insert(
                name.to_string(),
                LeaseRecord {
                    id: id.clone(),
                    labels: labels.clone(),
                    renewed_until: None,
                },
            );
            Some(id)
        }))
    }

    async fn read_lease(&self, name: &str) -> Result<Option<LeaseRecord>, EngineError> {
        self.call(format!("status lease {name}"))?;
        Ok(self.with(|s| s.leases.get(name).cloned()))
    }

    async fn renew_lease(&self, id: &str, until: u64) -> Result<bool, EngineError> {
        self.call(format!("lease renew {id}"))?;
        if self.with(|s| s.hung_renewals) {
            std::future::pending::<()>().await;
        }
        Ok(self.with(|s| {
            s.leases
                .values_mut()
                .find(|l| l.id == id)
                .map(|l| l.renewed_until = Some(until))
                .is_some()
        }))
    }

    async fn remove_lease(&self, id: &str) -> Result<bool, EngineError> {
        self.call(format!("lease remove {id}"))?;
        Ok(self.with(|s| {
            let before = s.leases.len();
            s.leases.retain(|_, l| l.id != id);
            s.leases.len() < before
        }))
    }

    async fn exec(&self, container: &str, cmd: Vec<String>) -> Result<Exec, EngineError> {
        self.call(format!("exec {container} {}", cmd.join(" ")))?;
        Err(EngineError::Api {
            host: self.name.clone(),
            op: format!("exec in `{container}`"),
            message: "a fake host runs no commands".into(),
            status: None,
        })
    }

    async fn exec_exit_code(&self, _id: &str) -> Result<Option<i64>, EngineError> {
        Ok(Some(1))
    }

    async fn ping(&self) -> Result<(), EngineError> {
        self.call("ping".into())
    }
}

fn internal(name: &str, image: &str, state: ContainerState) -> ObservedContainer {
    ObservedContainer {
        name: name.to_string(),
        id: String::new(),
        managed: true,
        internal: true,
        stack: None,
        app: None,
        image: image.to_string(),
        state,
        health: None,
        spec_hash: None,
        spec_fields: BTreeMap::new(),
        depends_on: Vec::new(),
        ports: Vec::new(),
    }
}
