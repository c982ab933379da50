//! The desired state: the spec rendered into the concrete Docker objects each
//! host should have — containers with their full config, volumes, networks —
//! and the `drover.spec-hash` of each container.
//!
//! The hash covers exactly the fields that reach the container, so a change
//! to `pull` or `depends_on` never recreates anything. Each field also gets a
//! digest of its own (kept in a label) so that a plan can say *which* field
//! changed. A secret value reaches neither the hash nor an unkeyed digest:
//! its field's digest is keyed by the host ([`crate::contract::hostkey`]).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::contract::hostkey::HostKey;
use crate::contract::labels;
use crate::model::{
    names, Condition, Healthcheck, NetworkMode, Options, Port, Pull, Restart, Spec, Text,
};

/// Marks a field whose value is secret in the `drover.spec-fields` label.
pub const SECRET_DIGEST: &str = "secret";

impl Serialize for Text {
    /// Secret text serializes as `<secret>`, so no output can carry it.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MountSpec {
    /// The Docker volume's name, `<stack>-<volume>`.
    pub source: String,
    /// The volume's name in the stack.
    pub volume: String,
    pub target: String,
    pub read_only: bool,
}

/// A host path mounted into a container, and where the manifest says so.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BindSpec {
    pub host_path: String,
    pub target: String,
    pub read_only: bool,
    /// A Docker volume of the host drover does not manage, by name, rather
    /// than a path.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub volume: bool,
    /// It must exist already (Compose's `external: true`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub must_exist: bool,
    /// A device of the host, with its cgroup permissions, not a mount.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Its propagation (`rslave`…), when the manifest names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagation: Option<String>,
    /// `file:line:col` of the mount, for the plan's error when the app
    /// would have to move.
    pub at: String,
}

/// One container as it should be.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerSpec {
    pub name: String,
    pub stack: String,
    pub app: String,
    pub host: String,
    pub image: Text,
    pub pull: Pull,
    pub command: Option<Vec<Text>>,
    pub entrypoint: Option<Vec<Text>>,
    /// `environment` and `env_file`, with link variables added.
    pub env: BTreeMap<String, Text>,
    pub ports: Vec<Port>,
    pub mounts: Vec<MountSpec>,
    /// Host paths mounted: the app is pinned to its host.
    pub binds: Vec<BindSpec>,
    /// Files written into the container before it starts.
    #[serde(skip)]
    pub files: Vec<crate::model::ConfigFile>,
    pub healthcheck: Option<Healthcheck>,
    pub restart: Restart,
    pub memory: Option<u64>,
    pub nano_cpus: Option<u64>,
    pub user: Option<Text>,
    pub working_dir: Option<Text>,
    pub stop_signal: Option<String>,
    pub stop_grace_period_ns: Option<u64>,
    pub options: Options,
    /// The user's labels and drover's, except the hash labels.
    pub labels: BTreeMap<String, Text>,
    pub network: String,
    /// More networks of its stack it joins, after `network`.
    pub extra_networks: Vec<String>,
    /// Fixed IPv4 addresses, by network.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub addresses: BTreeMap<String, String>,
    pub aliases: Vec<String>,
    /// Apps of the same stack this one waits for.
    pub depends_on: Vec<(String, Condition)>,
    /// Containers whose recreation recreates this one (Compose's
    /// `depends_on: { X: { restart: true } }`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restart_with: Vec<String>,
    /// A job another app waits to complete (`service_completed_successfully`):
    /// exited with code 0, it is done, not down.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub job: bool,
    /// Apps of the same stack this one links to.
    pub links: Vec<String>,
    pub spec_hash: String,
    /// Field name -> short digest, or [`SECRET_DIGEST`].
    pub field_digests: BTreeMap<String, String>,
}

impl ContainerSpec {
    /// Whether its container, as observed, is a job that has run to
    /// completion: exited with code 0.
    pub fn is_done(&self, state: crate::observed::ContainerState, exit_code: Option<i64>) -> bool {
        self.job && state == crate::observed::ContainerState::Exited && exit_code == Some(0)
    }

    /// Whether it is on networks of its own (its stack's, external ones),
    /// rather than the host's, none, or another container's network stack.
    pub fn has_own_network(&self) -> bool {
        !self.network.starts_with("container:")
            && !matches!(self.network.as_str(), "host" | "none" | "bridge")
    }

    /// How long a stop waits before killing: `stop_grace_period`, else 10 s.
    pub fn stop_grace(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.stop_grace_period_ns.unwrap_or(10_000_000_000))
    }
}

impl ContainerSpec {
    /// Every label the container carries on a host with `key`, the hash
    /// labels included.
    pub fn all_labels(&self, key: Option<&HostKey>) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = self
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_string()))
            .collect();
        out.insert(labels::SPEC_HASH.into(), self.spec_hash.clone());
        out.insert(
            labels::SPEC_FIELDS.into(),
            encode_field_digests(&self.keyed_digests(key)),
        );
        out
    }

    /// Whether any field's value is secret.
    pub fn has_secrets(&self) -> bool {
        self.field_digests.values().any(|d| d == SECRET_DIGEST)
    }

    /// The field digests as recorded on a host with `key`: each secret
    /// field's an HMAC under it (left [`SECRET_DIGEST`] without a key).
    pub fn keyed_digests(&self, key: Option<&HostKey>) -> BTreeMap<String, String> {
        let mut out = self.field_digests.clone();
        if let (Some(key), true) = (key, self.has_secrets()) {
            for f in fields(self).into_iter().filter(|f| f.secret) {
                let d = key.digest(&f.name, &f.canonical);
                out.insert(f.name.into_owned(), d);
            }
        }
        out
    }

    /// How the container looks on a host once made as specified, in
    /// `state` (healthy when running with a healthcheck).
    pub fn as_observed(
        &self,
        state: crate::observed::ContainerState,
        key: Option<&HostKey>,
    ) -> crate::observed::ObservedContainer {
        use crate::observed::{ContainerState, Health, ObservedContainer, PublishedPort};
        let mut depends_on: Vec<String> = self
            .depends_on
            .iter()
            .map(|(t, _)| t.clone())
            .chain(self.links.clone())
            .collect();
        depends_on.sort();
        depends_on.dedup();
        ObservedContainer {
            name: self.name.clone(),
            id: String::new(),
            managed: true,
            internal: false,
            stack: Some(self.stack.clone()),
            app: Some(self.app.clone()),
            image: self.image.to_string(),
            state,
            health: (state == ContainerState::Running && self.has_healthcheck())
                .then_some(Health::Healthy),
            exit_code: None,
            spec_hash: Some(self.spec_hash.clone()),
            spec_fields: self.keyed_digests(key),
            depends_on,
            ports: self
                .ports
                .iter()
                .filter(|p| p.host != 0)
                .map(|p| PublishedPort {
                    ip: p.ip.clone(),
                    port: p.host,
                    protocol: p.protocol.as_str().into(),
                })
                .collect(),
        }
    }

    /// Whether Docker will report health for this container.
    pub fn has_healthcheck(&self) -> bool {
        self.healthcheck
            .as_ref()
            .is_some_and(Healthcheck::is_enabled)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VolumeSpec {
    pub name: String,
    pub stack: String,
    pub volume: String,
    pub host: String,
    pub driver: String,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// How long a move may keep the volume's apps stopped (`max_downtime`).
    pub max_downtime: Option<std::time::Duration>,
    /// How its snapshots are made consistent.
    pub consistency: crate::model::Consistency,
    /// What seeds it when it is first made (`from:`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Seed>,
    /// Snapshots the controller takes: every so long, keeping so many.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<(std::time::Duration, usize)>,
    /// Backups the controller pushes (`backup:`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<Backup>,
}

/// `backup:` as the controller uses it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Backup {
    /// The repository's name in the Cluster.
    pub to: String,
    pub every: std::time::Duration,
    pub keep: crate::model::KeepPolicy,
}

/// `from:` as the planner uses it: a snapshot of another stack's volume.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Seed {
    pub stack: String,
    pub volume: String,
    /// A snapshot's name (a backup's ID with `repository`); `None` for the latest.
    pub snapshot: Option<String>,
    /// A repository of the Cluster: the seed is a backup there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Where `from:` is written (`file:line:column`), for errors.
    pub at: String,
}

impl VolumeSpec {
    /// How the volume looks on a host once made, holding `size_bytes`.
    pub fn as_observed(
        &self,
        size_bytes: Option<u64>,
        used_by: Vec<String>,
    ) -> crate::observed::ObservedVolume {
        crate::observed::ObservedVolume {
            name: self.name.clone(),
            managed: true,
            internal: false,
            stack: Some(self.stack.clone()),
            volume: Some(self.volume.clone()),
            driver: self.driver.clone(),
            size_bytes,
            used_by,
            retained_for: None,
            copy: None,
            moved_from: self.labels.get(labels::MOVED_FROM).cloned(),
            snapshot: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkSpec {
    pub name: String,
    pub stack: String,
    pub host: String,
    pub labels: BTreeMap<String, String>,
    /// Made outside drover (Compose's `external: true`): it must exist on
    /// the host; drover never makes or removes it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    /// `internal` and subnets; in the labels too, when not the defaults.
    #[serde(skip_serializing_if = "is_default")]
    pub settings: crate::model::NetworkSettings,
}

fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

impl NetworkSpec {
    /// Its settings as its label holds them; `None` for Docker's defaults.
    pub fn config(&self) -> Option<&String> {
        self.labels.get(labels::NETWORK_CONFIG)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DesiredHost {
    /// Where other hosts reach this host's published ports.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub address: String,
    pub containers: BTreeMap<String, ContainerSpec>,
    pub volumes: BTreeMap<String, VolumeSpec>,
    pub networks: BTreeMap<String, NetworkSpec>,
}

/// What every host of the spec should have. Every host is present, even one
/// that should run nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Desired {
    pub hosts: BTreeMap<String, DesiredHost>,
    /// Every stack of the spec, even one with nothing in it.
    pub stacks: std::collections::BTreeSet<String>,
    /// The Cluster's repositories (their URLs and passwords are never shown).
    #[serde(skip)]
    pub repositories: BTreeMap<String, crate::model::Repository>,
}

impl Desired {
    /// The container of an app, wherever it is placed.
    pub fn container(&self, stack: &str, app: &str) -> Option<&ContainerSpec> {
        let name = names::container(stack, app);
        self.hosts.values().find_map(|h| h.containers.get(&name))
    }

    /// Where a stack's volume should live.
    pub fn volume(&self, stack: &str, volume: &str) -> Option<&VolumeSpec> {
        let name = names::volume(stack, volume);
        self.hosts.values().find_map(|h| h.volumes.get(&name))
    }
}

/// A volume of `stack` on `host` that is not in the manifests (the target
/// of a one-off clone), labelled as the manifests' volumes are.
pub fn volume_spec(stack: &str, volume: &str, host: &str) -> VolumeSpec {
    let mut labels = managed_labels(stack);
    labels.insert(crate::contract::labels::VOLUME.into(), volume.into());
    VolumeSpec {
        name: names::volume(stack, volume),
        stack: stack.into(),
        volume: volume.into(),
        host: host.into(),
        driver: "local".into(),
        driver_opts: BTreeMap::new(),
        labels,
        max_downtime: None,
        consistency: Default::default(),
        from: None,
        snapshots: None,
        backup: None,
    }
}

fn managed_labels(stack: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::MANAGED.to_string(), "true".to_string()),
        (labels::STACK.to_string(), stack.to_string()),
    ])
}

/// Renders a validated spec.
pub fn render(spec: &Spec) -> Desired {
    let mut desired = Desired {
        hosts: spec
            .hosts
            .iter()
            .map(|(name, h)| {
                let d = DesiredHost {
                    address: h.address.clone(),
                    ..DesiredHost::default()
                };
                (name.clone(), d)
            })
            .collect(),
        stacks: spec.stacks.keys().cloned().collect(),
        repositories: spec.repositories.clone(),
    };
    for stack in spec.stacks.values() {
        for (vname, vol) in &stack.volumes {
            let Some(host) = spec.volume_host(stack, vname) else {
                continue;
            };
            let mut l = managed_labels(&stack.name);
            l.insert(labels::VOLUME.into(), vname.clone());
            l.extend(vol.labels.clone());
            let name = names::volume(&stack.name, vname);
            let v = VolumeSpec {
                name: name.clone(),
                stack: stack.name.clone(),
                volume: vname.clone(),
                host: host.to_string(),
                driver: vol.driver.clone(),
                driver_opts: vol.driver_opts.clone(),
                labels: l,
                max_downtime: vol.max_downtime_ns.map(std::time::Duration::from_nanos),
                consistency: vol.consistency,
                from: vol.from.as_ref().map(|f| Seed {
                    stack: f.stack.value.clone(),
                    volume: f.volume.value.clone(),
                    snapshot: f.snapshot.clone(),
                    repository: f.repository.as_ref().map(|r| r.value.clone()),
                    at: f.loc.to_string(),
                }),
                snapshots: vol
                    .snapshots
                    .map(|s| (std::time::Duration::from_nanos(s.every_ns), s.keep as usize)),
                backup: vol.backup.as_ref().map(|b| Backup {
                    to: b.to.value.clone(),
                    every: std::time::Duration::from_nanos(b.every_ns),
                    keep: b.keep,
                }),
            };
            desired
                .hosts
                .entry(host.to_string())
                .or_default()
                .volumes
                .insert(name, v);
        }
        // Networks of other settings than Docker's, by their Docker names.
        let settings: BTreeMap<String, &crate::model::NetworkSettings> = stack
            .networks
            .iter()
            .map(|(k, s)| (names::stack_network(&stack.name, k), s))
            .collect();
        for app in stack.apps.values() {
            let host = app.host().to_string();
            // The stack's own network, or the networks the app joins (the
            // default first, as it was before there were others).
            let own = names::network(&stack.name);
            let mut joined: Vec<String> = match &app.network_mode {
                NetworkMode::Host => vec!["host".into()],
                NetworkMode::None => vec!["none".into()],
                NetworkMode::Bridge => vec!["bridge".into()],
                NetworkMode::App(t) => {
                    vec![format!(
                        "container:{}",
                        names::container(&stack.name, &t.value)
                    )]
                }
                NetworkMode::Stack
                    if app.networks.is_empty() && app.external_networks.is_empty() =>
                {
                    vec![own.clone()]
                }
                NetworkMode::Stack => app
                    .networks
                    .iter()
                    .map(|n| names::stack_network(&stack.name, n))
                    .collect(),
            };
            joined.sort_by(|a, b| (*a != own, a).cmp(&(*b != own, b)));
            let h = desired.hosts.entry(host.clone()).or_default();
            if app.network_mode == NetworkMode::Stack {
                for n in &joined {
                    h.networks.entry(n.clone()).or_insert_with(|| {
                        let settings: crate::model::NetworkSettings =
                            settings.get(n).map(|s| (*s).clone()).unwrap_or_default();
                        let mut labels = managed_labels(&stack.name);
                        if settings != Default::default() {
                            let json =
                                serde_json::to_string(&settings).expect("settings serialize");
                            labels.insert(labels::NETWORK_CONFIG.to_string(), json);
                        }
                        NetworkSpec {
                            name: n.clone(),
                            stack: stack.name.clone(),
                            host: host.clone(),
                            labels,
                            external: false,
                            settings,
                        }
                    });
                }
                // Networks of the host it joins as they are, after its own.
                for n in &app.external_networks {
                    h.networks.entry(n.clone()).or_insert_with(|| NetworkSpec {
                        name: n.clone(),
                        stack: stack.name.clone(),
                        host: host.clone(),
                        labels: BTreeMap::new(),
                        external: true,
                        settings: Default::default(),
                    });
                    if !joined.contains(n) {
                        joined.push(n.clone());
                    }
                }
            }
            let network = joined.remove(0);
            // Only a network of its own gives an app names to answer to.
            let aliases: Vec<String> = match app.network_mode {
                NetworkMode::Stack => std::iter::once(app.name.clone())
                    .chain(app.options.container_name.clone())
                    .chain(app.options.aliases.iter().cloned())
                    .collect(),
                _ => Vec::new(),
            };

            let mut env = BTreeMap::new();
            for link in &app.links {
                let Some(target) = stack.apps.get(&link.value) else {
                    continue;
                };
                let prefix = names::link_prefix(&target.name);
                if target.host() == app.host() {
                    env.insert(format!("{prefix}_HOST"), Text::plain(target.name.clone()));
                    if let Some(p) = target.ports.first() {
                        env.insert(
                            format!("{prefix}_PORT"),
                            Text::plain(p.value.container.to_string()),
                        );
                    }
                } else if let Some(p) = target.ports.first() {
                    let address = spec
                        .hosts
                        .get(target.host())
                        .map_or("", |h| h.address.as_str());
                    env.insert(format!("{prefix}_HOST"), Text::plain(address));
                    env.insert(
                        format!("{prefix}_PORT"),
                        Text::plain(p.value.host.to_string()),
                    );
                }
            }
            // What the user writes wins over link variables.
            env.extend(app.environment.clone());

            let mut l: BTreeMap<String, Text> = managed_labels(&stack.name)
                .into_iter()
                .map(|(k, v)| (k, Text::plain(v)))
                .collect();
            l.insert(labels::APP.into(), Text::plain(app.name.clone()));
            let mut waits: Vec<String> = app.references().map(|t| t.value.clone()).collect();
            waits.sort();
            waits.dedup();
            if !waits.is_empty() {
                l.insert(labels::DEPENDS_ON.into(), Text::plain(waits.join(",")));
            }

            let c = ContainerSpec {
                name: names::container(&stack.name, &app.name),
                stack: stack.name.clone(),
                app: app.name.clone(),
                host: host.clone(),
                image: app.image.clone(),
                pull: app.pull,
                command: app.command.clone(),
                entrypoint: app.entrypoint.clone(),
                env,
                ports: app.ports.iter().map(|p| p.value.clone()).collect(),
                mounts: app
                    .volumes
                    .iter()
                    .map(|m| MountSpec {
                        source: names::volume(&stack.name, &m.value.volume),
                        volume: m.value.volume.clone(),
                        target: m.value.target.clone(),
                        read_only: m.value.read_only,
                    })
                    .collect(),
                binds: app
                    .binds
                    .iter()
                    .map(|b| BindSpec {
                        host_path: b.value.host_path.clone(),
                        target: b.value.target.clone(),
                        read_only: b.value.read_only,
                        volume: b.value.volume,
                        must_exist: b.value.must_exist,
                        device: b.value.device.clone(),
                        propagation: b.value.propagation.clone(),
                        at: b.loc.to_string(),
                    })
                    .collect(),
                files: app.files.clone(),
                healthcheck: app.healthcheck.clone(),
                restart: app.restart,
                memory: app.memory,
                nano_cpus: app.nano_cpus,
                user: app.user.clone(),
                working_dir: app.working_dir.clone(),
                stop_signal: app.stop_signal.clone(),
                stop_grace_period_ns: app.stop_grace_period_ns,
                options: app.options.clone(),
                labels: l,
                network,
                extra_networks: joined,
                addresses: app
                    .addresses
                    .iter()
                    .map(|(k, a)| (names::stack_network(&stack.name, k), a.value.to_string()))
                    .collect(),
                aliases,
                depends_on: app
                    .depends_on
                    .iter()
                    .map(|(t, c)| (t.value.clone(), *c))
                    .collect(),
                restart_with: app
                    .restart_with
                    .iter()
                    .map(|a| names::container(&stack.name, a))
                    .collect(),
                links: app.links.iter().map(|t| t.value.clone()).collect(),
                job: stack.apps.values().any(|a| {
                    a.depends_on
                        .iter()
                        .any(|(t, c)| t.value == app.name && *c == Condition::Completed)
                }),
                spec_hash: String::new(),
                field_digests: BTreeMap::new(),
            };
            h.containers.insert(c.name.clone(), c);
        }
    }
    hash_all(&mut desired);
    hash_followers(&mut desired);
    desired
}

/// Apps recreated whenever another is: one that shares X's network stack
/// (`network_mode: service:X`) loses it when X is recreated, and one that
/// depends on X with `restart: true` is restarted, in Compose, when X is
/// updated. X's spec hash is part of its own, so a change that recreates X
/// recreates it too.
fn hash_followers(desired: &mut Desired) {
    let count: usize = desired.hosts.values().map(|h| h.containers.len()).sum();
    // A chain of followers settles in as many rounds as it is long.
    for _ in 0..count {
        let hashes: BTreeMap<String, String> = desired
            .hosts
            .values()
            .flat_map(|h| h.containers.values())
            .map(|c| (c.name.clone(), c.spec_hash.clone()))
            .collect();
        let mut changed = false;
        for c in desired
            .hosts
            .values_mut()
            .flat_map(|h| h.containers.values_mut())
        {
            let network_of = c
                .network
                .strip_prefix("container:")
                .and_then(|target| hashes.get(target))
                .map(|hash| Text::plain(hash.clone()));
            let restarts_with = (!c.restart_with.is_empty()).then(|| {
                let of: Vec<String> = c
                    .restart_with
                    .iter()
                    .filter_map(|n| hashes.get(n).map(|h| format!("{n}={h}")))
                    .collect();
                Text::plain(of.join(","))
            });
            let mut relabel = |key: &str, value: Option<Text>| match value {
                Some(v) if c.labels.get(key) != Some(&v) => {
                    c.labels.insert(key.into(), v);
                    true
                }
                _ => false,
            };
            let a = relabel(labels::NETWORK_OF, network_of);
            let b = relabel(labels::RESTARTS_WITH, restarts_with);
            if a || b {
                (c.spec_hash, c.field_digests) = hash_container(c);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
}

/// Fills in every container's spec hash and field digests, on a few
/// threads: at thousands of containers the hashing is most of rendering.
fn hash_all(desired: &mut Desired) {
    let mut all: Vec<&mut ContainerSpec> = desired
        .hosts
        .values_mut()
        .flat_map(|h| h.containers.values_mut())
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    let chunk = all.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for part in all.chunks_mut(chunk) {
            scope.spawn(move || {
                for c in part {
                    let (hash, digests) = hash_container(c);
                    c.spec_hash = hash;
                    c.field_digests = digests;
                }
            });
        }
    });
}

/// One field of a container config, as it reaches Docker. Borrowed where
/// the value is already a string, as most are.
struct Field<'a> {
    name: Cow<'a, str>,
    canonical: Cow<'a, str>,
    secret: bool,
}

fn json_texts(list: &[Text]) -> String {
    serde_json::to_string(&list.iter().map(Text::expose).collect::<Vec<_>>()).unwrap_or_default()
}

fn fields<'a>(c: &'a ContainerSpec) -> Vec<Field<'a>> {
    let mut out = Vec::with_capacity(8 + c.env.len() + c.labels.len());
    let mut push = |name: Cow<'static, str>, canonical: Cow<'a, str>, secret: bool| {
        out.push(Field {
            name,
            canonical,
            secret,
        })
    };
    let any_secret = |l: &[Text]| l.iter().any(Text::is_secret);
    push("image".into(), c.image.expose().into(), c.image.is_secret());
    if let Some(cmd) = &c.command {
        push("command".into(), json_texts(cmd).into(), any_secret(cmd));
    }
    if let Some(ep) = &c.entrypoint {
        push("entrypoint".into(), json_texts(ep).into(), any_secret(ep));
    }
    for (k, v) in &c.env {
        push(format!("env.{k}").into(), v.expose().into(), v.is_secret());
    }
    if !c.ports.is_empty() {
        push(
            "ports".into(),
            serde_json::to_string(&c.ports).unwrap_or_default().into(),
            false,
        );
    }
    if !c.mounts.is_empty() {
        let m: Vec<_> = c
            .mounts
            .iter()
            .map(|m| (&m.source, &m.target, m.read_only))
            .collect();
        push(
            "volumes".into(),
            serde_json::to_string(&m).unwrap_or_default().into(),
            false,
        );
    }
    let (devices, binds): (Vec<&BindSpec>, Vec<&BindSpec>) =
        c.binds.iter().partition(|b| b.device.is_some());
    if !binds.is_empty() {
        // A propagation joins the hash only when named: the hashes of
        // binds without one stay as they were.
        let b: Vec<_> = binds
            .iter()
            .map(|b| match &b.propagation {
                None => serde_json::json!([b.host_path, b.target, b.read_only]),
                Some(p) => serde_json::json!([b.host_path, b.target, b.read_only, p]),
            })
            .collect();
        push(
            "binds".into(),
            serde_json::to_string(&b).unwrap_or_default().into(),
            false,
        );
    }
    if !devices.is_empty() {
        let d: Vec<_> = devices
            .iter()
            .map(|b| (&b.host_path, &b.target, &b.device))
            .collect();
        push(
            "devices".into(),
            serde_json::to_string(&d).unwrap_or_default().into(),
            false,
        );
    }
    if !c.files.is_empty() {
        let mut h = Sha256::new();
        for f in &c.files {
            feed(&mut h, &f.target);
            feed(&mut h, &format!("{:o}", f.mode));
            h.update((f.content.len() as u64).to_le_bytes());
            h.update(&f.content);
        }
        push("files".into(), hex_prefix(h, 32).into(), false);
    }
    if let Some(h) = &c.healthcheck {
        let canonical = serde_json::to_string(&(
            h.test.iter().map(Text::expose).collect::<Vec<_>>(),
            h.interval_ns,
            h.timeout_ns,
            h.retries,
            h.start_period_ns,
        ))
        .unwrap_or_default();
        push("healthcheck".into(), canonical.into(), any_secret(&h.test));
    }
    push("restart".into(), c.restart.as_str().into(), false);
    if let Some(m) = c.memory {
        push("memory".into(), m.to_string().into(), false);
    }
    if let Some(n) = c.nano_cpus {
        push("cpus".into(), n.to_string().into(), false);
    }
    if let Some(u) = &c.user {
        push("user".into(), u.expose().into(), u.is_secret());
    }
    if let Some(w) = &c.working_dir {
        push("working_dir".into(), w.expose().into(), w.is_secret());
    }
    if let Some(s) = &c.stop_signal {
        push("stop_signal".into(), s.as_str().into(), false);
    }
    if let Some(g) = c.stop_grace_period_ns {
        push("stop_grace_period".into(), g.to_string().into(), false);
    }
    for (name, canonical) in c.options.entries() {
        push(name.into(), canonical.into(), false);
    }
    for (k, v) in &c.labels {
        if k == labels::DEPENDS_ON {
            continue; // bookkeeping, not the app's config
        }
        push(
            format!("label.{k}").into(),
            v.expose().into(),
            v.is_secret(),
        );
    }
    let mut network = format!("{}|{}", c.network, c.aliases.join(","));
    if !c.extra_networks.is_empty() {
        network = format!("{network}|{}", c.extra_networks.join(","));
    }
    if !c.addresses.is_empty() {
        let fixed: Vec<String> = c
            .addresses
            .iter()
            .map(|(n, a)| format!("{n}={a}"))
            .collect();
        network = format!("{network}|{}", fixed.join(","));
    }
    push("network".into(), network.into(), false);
    out
}

/// Feeds one length-prefixed part to a hash, so that `["ab", "c"]` and
/// `["a", "bc"]` differ.
fn feed(h: &mut Sha256, part: &str) {
    h.update((part.len() as u64).to_le_bytes());
    h.update(part.as_bytes());
}

/// The first `chars` hex digits of the hash.
fn hex_prefix(h: Sha256, chars: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(chars + 1);
    for b in h.finalize().iter().take(chars.div_ceil(2)) {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out.truncate(chars);
    out
}

/// The spec hash and the per-field digests of a container config. Neither
/// depends on a secret value: those are compared through
/// [`ContainerSpec::keyed_digests`], under the host's key.
pub fn hash_container(c: &ContainerSpec) -> (String, BTreeMap<String, String>) {
    let mut all = Sha256::new();
    let mut digests = BTreeMap::new();
    for f in fields(c) {
        feed(&mut all, &f.name);
        feed(&mut all, if f.secret { "\0secret" } else { &f.canonical });
        let d = if f.secret {
            SECRET_DIGEST.to_string()
        } else {
            let mut one = Sha256::new();
            feed(&mut one, &f.name);
            feed(&mut one, &f.canonical);
            hex_prefix(one, 16)
        };
        digests.insert(f.name.into_owned(), d);
    }
    (hex_prefix(all, 32), digests)
}

/// `name=digest;name=digest` for the `drover.spec-fields` label.
pub fn encode_field_digests(d: &BTreeMap<String, String>) -> String {
    d.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// The inverse of [`encode_field_digests`]; malformed parts are skipped.
pub fn decode_field_digests(s: &str) -> BTreeMap<String, String> {
    s.split(';')
        .filter_map(|p| p.rsplit_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
