//! A recording fake Docker host for unit tests of the logic above the
//! engine boundary. It keeps an [`ObservedHost`] as its whole state and logs
//! every call; failures, hung calls and health can be scripted. Given a
//! folder ([`FakeDocker::with_disk`]), each volume is a folder in it and a
//! helper's commands (`scan`, `pack`, `unpack`, `delete`) run in-process
//! over it, so a whole volume move runs without root or Docker. The real
//! engine is tested end to end, never through this.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;

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
    /// Where volumes are folders, when the fake has a disk.
    disk: Option<std::path::PathBuf>,
    /// Helper containers, by name: the volume each mounts, and the source
    /// volume it also mounts read-only (a copy on one host).
    helpers: BTreeMap<String, String>,
    sources: BTreeMap<String, String>,
    /// Exit codes of finished commands, by exec id.
    exits: BTreeMap<String, i64>,
    execs: u64,
    /// Calls that never answer (a host that froze there).
    hanging: BTreeSet<String>,
    /// Run as a call is made, before it acts.
    hooks: BTreeMap<String, Arc<dyn Fn() + Send + Sync>>,
    /// Every copy record's content, by record name: a volume's record is
    /// the newest one about it, as the engine reads them.
    records: BTreeMap<String, (String, u64, crate::observed::CopyRecord)>,
}

impl State {
    /// Volume `of`'s record from the newest record about it.
    fn refresh_records(&mut self, of: &str) {
        let newest = self
            .records
            .values()
            .filter(|(o, ..)| o == of)
            .max_by_key(|(_, seq, _)| *seq)
            .map(|(.., r)| r.clone());
        for v in self.host.volumes.iter_mut().filter(|v| v.name == of) {
            v.retained_for = newest
                .as_ref()
                .filter(|r| r.role == crate::observed::CopyRole::Retained)
                .and_then(|r| r.peer.clone());
            v.copy = newest.clone();
        }
    }
}

pub struct FakeDocker {
    name: String,
    state: Arc<Mutex<State>>,
}

impl FakeDocker {
    pub fn new(name: &str, host: ObservedHost) -> FakeDocker {
        FakeDocker {
            name: name.to_string(),
            state: Arc::new(Mutex::new(State {
                host,
                ..State::default()
            })),
        }
    }

    /// A fake whose volumes are folders under `dir`, and whose helpers run
    /// their commands over them.
    pub fn with_disk(name: &str, host: ObservedHost, dir: &std::path::Path) -> FakeDocker {
        let fake = FakeDocker::new(name, host);
        fake.with(|s| s.disk = Some(dir.to_path_buf()));
        for v in fake.state().volumes {
            let _ = std::fs::create_dir_all(fake.volume_path(&v.name));
        }
        fake
    }

    /// The folder that holds volume `name`'s data (with a disk).
    pub fn volume_path(&self, name: &str) -> std::path::PathBuf {
        self.with(|s| s.disk.clone().unwrap_or_default())
            .join("volumes")
            .join(name)
    }

    /// Where a helper keeps its scan cache (its `/tmp`), with a disk.
    fn helper_state(&self, helper: &str) -> Option<std::path::PathBuf> {
        let dir = self.with(|s| s.disk.clone())?.join("helpers").join(helper);
        std::fs::create_dir_all(&dir).ok()?;
        Some(dir.join("scan.json"))
    }

    /// From now on `call` never answers.
    pub fn hang(&self, call: &str) {
        self.with(|s| s.hanging.insert(call.to_string()));
    }

    /// Runs `f` each time `call` is made, before it acts: the world changing
    /// under drover at that moment.
    pub fn on(&self, call: &str, f: impl Fn() + Send + Sync + 'static) {
        self.with(|s| s.hooks.insert(call.to_string(), Arc::new(f)));
    }

    /// Calls answer again.
    pub fn unhang(&self) {
        self.with(|s| s.hanging.clear());
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

    async fn call(&self, c: String) -> Result<(), EngineError> {
        if self.with(|s| s.hanging.contains(&c)) {
            std::future::pending::<()>().await;
        }
        if let Some(hook) = self.with(|s| s.hooks.get(&c).cloned()) {
            hook();
        }
        self.record(c)
    }

    fn record(&self, c: String) -> Result<(), EngineError> {
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
        self.call("observe".into()).await?;
        Ok(self.state())
    }

    async fn volume_sizes(&self) -> Result<BTreeMap<String, u64>, EngineError> {
        self.call("volume-sizes".into()).await?;
        Ok(self
            .state()
            .volumes
            .iter()
            .filter_map(|v| Some((v.name.clone(), v.size_bytes?)))
            .collect())
    }

    async fn image_present(&self, image: &str) -> Result<bool, EngineError> {
        self.call(format!("image? {image}")).await?;
        Ok(self.with(|s| s.host.images.iter().any(|i| i == image)))
    }

    async fn pull_image(&self, image: &str, _platform: Option<&str>) -> Result<(), EngineError> {
        self.call(format!("pull {image}")).await?;
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
        self.call(format!("create-volume {}", v.name)).await?;
        self.with(|s| {
            let mut o = v.as_observed(None, Vec::new());
            let labels: std::collections::HashMap<String, String> =
                v.labels.clone().into_iter().collect();
            o.snapshot = crate::observed::SnapshotInfo::from_labels(&labels, None);
            if o.snapshot.is_some() {
                (o.stack, o.volume) = (None, None);
            }
            s.host.volumes.push(o);
            if s.records.values().any(|(of, ..)| *of == v.name) {
                s.refresh_records(&v.name);
            }
        });
        if self.with(|s| s.disk.is_some()) {
            let _ = std::fs::create_dir_all(self.volume_path(&v.name));
        }
        Ok(())
    }

    async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        self.call(format!("remove-volume {name}")).await?;
        self.with(|s| s.host.volumes.retain(|v| v.name != name));
        if self.with(|s| s.disk.is_some()) {
            let _ = std::fs::remove_dir_all(self.volume_path(name));
        }
        Ok(())
    }

    async fn create_network(&self, n: &NetworkSpec) -> Result<(), EngineError> {
        self.call(format!("create-network {}", n.name)).await?;
        self.with(|s| {
            s.host.networks.push(ObservedNetwork {
                name: n.name.clone(),
                managed: true,
                internal: false,
                stack: Some(n.stack.clone()),
                config: n.config().cloned(),
            })
        });
        Ok(())
    }

    async fn remove_network(&self, name: &str) -> Result<(), EngineError> {
        self.call(format!("remove-network {name}")).await?;
        self.with(|s| s.host.networks.retain(|n| n.name != name));
        Ok(())
    }

    async fn create_container(&self, c: &ContainerSpec) -> Result<(), EngineError> {
        self.call(format!("create {}", c.name)).await?;
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
        self.call(format!("start {name}")).await?;
        self.with(|s| {
            for c in s.host.containers.iter_mut().filter(|c| c.name == name) {
                c.state = ContainerState::Running;
            }
        });
        Ok(())
    }

    async fn stop_container(&self, name: &str, _grace: Duration) -> Result<(), EngineError> {
        self.call(format!("stop {name}")).await?;
        self.with(|s| {
            for c in s.host.containers.iter_mut().filter(|c| c.name == name) {
                c.state = ContainerState::Exited;
            }
        });
        Ok(())
    }

    async fn pause_container(&self, name: &str) -> Result<(), EngineError> {
        self.call(format!("pause {name}")).await?;
        self.with(|s| {
            for c in s.host.containers.iter_mut().filter(|c| c.name == name) {
                c.state = ContainerState::Paused;
            }
        });
        Ok(())
    }

    async fn unpause_container(&self, name: &str) -> Result<(), EngineError> {
        self.call(format!("unpause {name}")).await?;
        self.with(|s| {
            for c in s
                .host
                .containers
                .iter_mut()
                .filter(|c| c.name == name && c.state == ContainerState::Paused)
            {
                c.state = ContainerState::Running;
            }
        });
        Ok(())
    }

    async fn remove_container(&self, name: &str) -> Result<(), EngineError> {
        self.call(format!("remove {name}")).await?;
        self.with(|s| {
            s.host.containers.retain(|c| c.name != name);
            s.helpers.remove(name);
        });
        Ok(())
    }

    async fn container_status(&self, name: &str) -> Result<Option<ContainerStatus>, EngineError> {
        self.call(format!("status {name}")).await?;
        Ok(self.with(|s| {
            s.host.containers.iter().find(|c| c.name == name).map(|c| {
                let h = s.health.get(name);
                ContainerStatus {
                    state: c.state,
                    health: h.map(|(h, _)| *h),
                    exit_code: c.exit_code,
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
            .await
    }

    async fn import_image(
        &self,
        tag: &str,
        _rootfs: crate::docker::RootFs,
    ) -> Result<(), EngineError> {
        self.call(format!("import {tag}")).await?;
        self.with(|s| s.host.images.push(tag.to_string()));
        Ok(())
    }

    async fn run_helper(&self, h: &HelperSpec) -> Result<Option<u16>, EngineError> {
        self.call(format!("helper {}", h.name)).await?;
        self.with(|s| {
            s.host
                .containers
                .push(internal(&h.name, &h.image, ContainerState::Running));
            s.helpers.insert(h.name.clone(), h.volume.clone());
            match &h.source {
                Some(src) => s.sources.insert(h.name.clone(), src.clone()),
                None => s.sources.remove(&h.name),
            };
        });
        // A new helper starts with an empty /tmp: no scan cache.
        if let Some(state) = self.helper_state(&h.name) {
            let _ = std::fs::remove_file(state);
        }
        Ok(None)
    }

    async fn create_record(&self, m: &RecordSpec) -> Result<(), EngineError> {
        self.call(format!("record {}", m.name)).await?;
        let labels: std::collections::HashMap<String, String> =
            m.labels.clone().into_iter().collect();
        if crate::contract::is_data_record(&labels) {
            self.with(|s| {
                let h = &mut s.host;
                h.frozen
                    .extend(crate::observed::Frozen::from_labels(&m.name, &labels));
                h.restores
                    .extend(crate::observed::Restoring::from_labels(&m.name, &labels));
                h.seeding
                    .extend(crate::observed::Seeding::from_labels(&m.name, &labels));
                // A snapshot's record completes it.
                if let Some(of) = labels.get(crate::contract::labels::SNAPSHOT_RECORD) {
                    for v in h.volumes.iter_mut().filter(|v| &v.name == of) {
                        if let Some(snap) = v.snapshot.as_mut() {
                            snap.complete_with(&labels);
                        }
                    }
                }
            });
            return Ok(());
        }
        let Some((of, seq, record)) = crate::observed::CopyRecord::from_labels(&labels) else {
            return Ok(());
        };
        self.with(|s| {
            s.host.records.push(crate::observed::RecordRef {
                name: m.name.clone(),
                of: of.clone(),
                seq,
                object: crate::observed::RecordObject::Volume,
            });
            s.records.insert(m.name.clone(), (of.clone(), seq, record));
            s.refresh_records(&of);
        });
        Ok(())
    }

    async fn remove_record(&self, r: &crate::observed::RecordRef) -> Result<(), EngineError> {
        self.call(format!("record remove {}", r.name)).await?;
        self.with(|s| {
            s.host.frozen.retain(|x| x.record != r.name);
            s.host.restores.retain(|x| x.record != r.name);
            s.host.seeding.retain(|x| x.record != r.name);
            s.host.records.retain(|x| x.name != r.name);
            s.records.remove(&r.name);
            s.refresh_records(&r.of);
        });
        Ok(())
    }

    async fn create_lease(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Option<String>, EngineError> {
        self.call(format!("lease create {name}")).await?;
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
        self.call(format!("status lease {name}")).await?;
        Ok(self.with(|s| s.leases.get(name).cloned()))
    }

    async fn renew_lease(&self, id: &str, until: u64) -> Result<bool, EngineError> {
        self.call(format!("lease renew {id}")).await?;
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
        self.call(format!("lease remove {id}")).await?;
        Ok(self.with(|s| {
            let before = s.leases.len();
            s.leases.retain(|_, l| l.id != id);
            s.leases.len() < before
        }))
    }

    async fn exec(&self, container: &str, cmd: Vec<String>) -> Result<Exec, EngineError> {
        self.call(format!("exec {container} {}", cmd.join(" ")))
            .await?;
        let volume = self.with(|s| s.helpers.get(container).cloned());
        let (Some(volume), Some(state)) = (volume, self.helper_state(container)) else {
            return Err(EngineError::Api {
                host: self.name.clone(),
                op: format!("exec in `{container}`"),
                message: "a fake host without a disk runs no commands".into(),
                status: None,
            });
        };
        let id = self.with(|s| {
            s.execs += 1;
            format!("{}-exec-{}", self.name, s.execs)
        });
        let root = self.volume_path(&volume);
        let source = self
            .with(|s| s.sources.get(container).cloned())
            .map(|v| self.volume_path(&v));
        let args: Vec<String> = cmd.into_iter().skip(2).collect();
        let done = Arc::clone(&self.state);
        let key = id.clone();
        let exec = in_process(args, (root, source), state, move |code| {
            done.lock()
                .unwrap_or_else(|p| p.into_inner())
                .exits
                .insert(key, code);
        })
        .map_err(|e| EngineError::Api {
            host: self.name.clone(),
            op: format!("exec in `{container}`"),
            message: e.to_string(),
            status: None,
        })?;
        Ok(Exec { id, ..exec })
    }

    async fn exec_exit_code(&self, id: &str) -> Result<Option<i64>, EngineError> {
        Ok(self.with(|s| s.exits.get(id).copied()))
    }

    async fn ping(&self) -> Result<(), EngineError> {
        self.call("ping".into()).await
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
        exit_code: None,
        health: None,
        spec_hash: None,
        spec_fields: BTreeMap::new(),
        depends_on: Vec::new(),
        ports: Vec::new(),
    }
}

/// Runs `drover helper ARGS` in-process over `root`, as a helper container
/// would: its stdin and stdout are socket pairs, its stderr comes after
/// its stdout, and `exited` gets its exit code when it ends.
fn in_process(
    args: Vec<String>,
    (root, source): (std::path::PathBuf, Option<std::path::PathBuf>),
    state: std::path::PathBuf,
    exited: impl FnOnce(i64) + Send + 'static,
) -> std::io::Result<Exec> {
    use crate::docker::ExecOutput;
    use std::io::BufReader;
    use std::os::unix::net::UnixStream;
    let (input, mut stdin) = UnixStream::pair()?;
    let (stdout, mut output) = UnixStream::pair()?;
    input.set_nonblocking(true)?;
    stdout.set_nonblocking(true)?;
    let input = tokio::net::UnixStream::from_std(input)?;
    let stdout = tokio::net::UnixStream::from_std(stdout)?;
    let (err_tx, err_rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let result = match args.first().map(String::as_str) {
            Some("scan") => {
                let flag = |f: &str| args.iter().any(|a| a == f);
                let (hash, stopped) = (flag("--hash"), flag("--stopped"));
                let source_state = crate::helper::source_state(&state);
                let (root, state) = match (&source, flag("--source")) {
                    (Some(src), true) => (src.clone(), source_state),
                    _ => (root.clone(), state.clone()),
                };
                if flag("--only") {
                    let paths = BufReader::new(&mut stdin);
                    crate::helper::scan_only(&root, &state, hash, stopped, paths, &mut output)
                } else {
                    crate::helper::scan_out(&root, &state, hash, stopped, &mut output)
                }
            }
            Some("pack") => {
                crate::helper::pack(&root, &state, BufReader::new(&mut stdin), &mut output)
            }
            Some("unpack") => crate::helper::unpack(&root, &state, &mut stdin, &mut output),
            Some("delete") => crate::helper::delete(&root, BufReader::new(&mut stdin)),
            Some("copy-in") => match &source {
                Some(src) => crate::helper::copy_in(
                    (src, &crate::helper::source_state(&state)),
                    (&root, &state),
                    None,
                    BufReader::new(&mut stdin),
                    &mut output,
                ),
                None => Err(std::io::Error::other("no source volume is mounted")),
            },
            other => Err(std::io::Error::other(format!(
                "the fake runs no `{other:?}`"
            ))),
        };
        let (code, err) = match result {
            Ok(()) => (0, Vec::new()),
            Err(e) => (1, format!("drover helper: {e}\n").into_bytes()),
        };
        exited(code);
        let _ = err_tx.send(err);
        drop(output);
    });
    let stdout = futures_util::stream::unfold(Some(stdout), |st| async move {
        use tokio::io::AsyncReadExt;
        let mut st = st?;
        let mut buf = vec![0u8; 64 << 10];
        match st.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(ExecOutput::Stdout(bytes::Bytes::from(buf))), Some(st)))
            }
            Err(e) => Some((
                Err(EngineError::Api {
                    host: "fake".into(),
                    op: "read a command's output".into(),
                    message: e.to_string(),
                    status: None,
                }),
                None,
            )),
        }
    });
    let stderr = futures_util::stream::once(async move { err_rx.await.unwrap_or_default() })
        .filter_map(|e| async move {
            (!e.is_empty()).then(|| Ok(ExecOutput::Stderr(bytes::Bytes::from(e))))
        });
    Ok(Exec {
        id: String::new(),
        output: Box::pin(stdout.chain(stderr)),
        input: Box::pin(input),
    })
}
