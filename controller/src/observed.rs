//! The observed state: drover's own serialisable model of what runs on the
//! hosts. It is exactly what `drover observe --output json` prints and what
//! `reconcile --observed FILE` reads, so its JSON form is a contract too
//! (documented in `docs/observed.md`). Docker client types never appear here.
//!
//! A host is either in `hosts` (it was read) or in `unreachable` (it was not,
//! with the reason); a host of the spec in neither is treated as unreadable.
//! No secret value is stored: containers carry digests, not environments.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::contract::membership::{KnownHost, Membership};
pub use crate::contract::records::{CopyRecord, CopyRole, MoveCost, MovePhase};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observed {
    #[serde(default)]
    pub hosts: BTreeMap<String, ObservedHost>,
    /// Hosts that could not be read, with the reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unreachable: BTreeMap<String, String>,
    /// Hosts that left the Cluster but may still hold its data (as the
    /// hosts last recorded it), read so that their data is never taken for
    /// absent. Nothing is ever changed on them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub former: BTreeMap<String, ObservedHost>,
    /// Former hosts that could not be read, with the reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub former_unreachable: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservedHost {
    #[serde(default)]
    pub containers: Vec<ObservedContainer>,
    #[serde(default)]
    pub volumes: Vec<ObservedVolume>,
    #[serde(default)]
    pub networks: Vec<ObservedNetwork>,
    /// Image references present on the host (`name:tag`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// The objects that hold copy records (every one, not only the newest
    /// of each copy): found by the volume they are about, never by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<RecordRef>,
    /// The hosts of the Cluster as drover last recorded them on this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<Membership>,
    /// The Git commit a controller last applied to this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<crate::contract::revision::HostRevision>,
    /// The host's key for digests of secret values; a snapshot says only
    /// `withheld`.
    #[serde(
        default,
        skip_serializing_if = "crate::contract::hostkey::SecretKey::is_absent"
    )]
    pub secret_key: crate::contract::hostkey::SecretKey,
    /// Apps drover froze for a snapshot and has not let go yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frozen: Vec<Frozen>,
    /// Restores under way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restores: Vec<Restoring>,
    /// Clones under way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seeding: Vec<Seeding>,
}

impl Observed {
    /// The complete snapshot `name` of `stack/volume` (the newest when
    /// `None`) on the hosts read: its host and volume.
    pub fn find_snapshot(
        &self,
        stack: &str,
        volume: &str,
        name: Option<&str>,
    ) -> Option<(&str, &ObservedVolume)> {
        let of = format!("{stack}/{volume}");
        self.hosts
            .iter()
            .flat_map(|(h, oh)| oh.volumes.iter().map(move |v| (h.as_str(), v)))
            .filter(|(_, v)| {
                v.snapshot
                    .as_ref()
                    .is_some_and(|s| s.of == of && s.complete() && name.is_none_or(|n| s.name == n))
            })
            .max_by(|(_, a), (_, b)| {
                let key = |v: &ObservedVolume| {
                    v.snapshot
                        .as_ref()
                        .map(|s| (s.taken.clone(), s.name.clone()))
                };
                key(a).cmp(&key(b))
            })
    }

    /// The newest record of the Cluster's members read on any host.
    pub fn newest_membership(&self) -> Option<&Membership> {
        self.hosts
            .values()
            .filter_map(|h| h.membership.as_ref())
            .max_by_key(|m| m.seq)
    }

    /// What the newest record says a host held.
    pub fn recorded_volumes(&self, host: &str) -> &[String] {
        self.newest_membership()
            .and_then(|m| m.hosts.iter().find(|k| k.name == host))
            .map_or(&[], |k| k.volumes.as_slice())
    }

    /// Hosts the records name that are not in the spec: to be read, never
    /// changed.
    pub fn former_hosts(&self, spec: &crate::model::Spec) -> Vec<crate::model::Host> {
        let Some(m) = self.newest_membership() else {
            return Vec::new();
        };
        m.hosts
            .iter()
            .filter(|k| !spec.hosts.contains_key(&k.name))
            .map(|k| crate::model::Host {
                name: k.name.clone(),
                loc: None,
                endpoint: k.endpoint.clone(),
                address: k.address.clone(),
                labels: BTreeMap::new(),
                tls: k.tls.as_ref().map(|[ca, cert, key]| crate::model::Tls {
                    ca: ca.into(),
                    cert: cert.into(),
                    key: key.into(),
                }),
            })
            .collect()
    }
}

/// One object on a host that holds a copy record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordRef {
    /// The Docker object's name.
    pub name: String,
    /// The Docker volume the record is about (`drover.copy-of`).
    pub of: String,
    /// Its sequence number: the newest record of a copy counts.
    pub seq: u64,
    /// What holds it: a label-only volume, or (records written by drover
    /// before 0.2) a container that was never started.
    #[serde(default)]
    pub object: RecordObject,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordObject {
    #[default]
    Volume,
    Container,
}

impl ObservedHost {
    /// The record objects about Docker volume `of`, oldest first.
    pub fn records_of<'a>(&'a self, of: &'a str) -> impl Iterator<Item = &'a RecordRef> + 'a {
        self.records.iter().filter(move |r| r.of == of)
    }

    /// The newest sequence number recorded for `of` on this host.
    pub fn last_seq(&self, of: &str) -> u64 {
        self.records_of(of).map(|r| r.seq).max().unwrap_or(0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl ContainerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Removing => "removing",
            ContainerState::Exited => "exited",
            ContainerState::Dead => "dead",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedPort {
    /// Empty for every address.
    #[serde(default)]
    pub ip: String,
    pub port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
}

fn tcp() -> String {
    "tcp".into()
}

fn is_false(b: &bool) -> bool {
    !b
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservedContainer {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Carries `drover.managed=true`. drover never touches any other.
    #[serde(default)]
    pub managed: bool,
    /// drover's own helper (`drover.internal=true`); never an app.
    #[serde(default, skip_serializing_if = "is_false")]
    pub internal: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default)]
    pub image: String,
    pub state: ContainerState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// An exited container's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    /// From the `drover.spec-fields` label: field -> digest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub spec_fields: BTreeMap<String, String>,
    /// From the `drover.depends-on` label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PublishedPort>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservedVolume {
    pub name: String,
    #[serde(default)]
    pub managed: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub internal: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// The volume's name in its stack (`drover.volume`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    #[serde(default = "local_driver")]
    pub driver: String,
    /// Size of the data in bytes, where the engine reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Names of containers that mount it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used_by: Vec<String>,
    /// Set on an older copy kept after the data moved: the host that holds
    /// the authoritative copy now. Unset on the copy apps use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained_for: Option<String>,
    /// What drover recorded on the host about this copy (moves only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopyRecord>,
    /// Set on a volume a move made (`drover.moved-from`, fixed when it was
    /// created): the host it was copied from. Such a copy without a record
    /// is never taken for the current data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<String>,
    /// Set on a snapshot of a volume (`docs/snapshots.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotInfo>,
}

/// A snapshot volume, from its labels and the record that completes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotInfo {
    /// `<stack>/<volume>` it is a snapshot of.
    pub of: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// When it was taken (RFC 3339); unset while it is unfinished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    /// How long the apps were frozen or stopped for it (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_ms: Option<u64>,
    /// Taken by the controller for `snapshots:` (and pruned by its `keep`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub scheduled: bool,
    /// The backup pushed from it, when it has not changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_as: Option<String>,
}

impl SnapshotInfo {
    /// Whether it was checked and recorded: only then is it used.
    pub fn complete(&self) -> bool {
        self.taken.is_some()
    }

    /// From a volume's labels and, once complete, its record's.
    pub fn from_labels(
        l: &std::collections::HashMap<String, String>,
        record: Option<&std::collections::HashMap<String, String>>,
    ) -> Option<SnapshotInfo> {
        use crate::contract::labels;
        let mut s = SnapshotInfo {
            of: l.get(labels::SNAPSHOT_OF)?.clone(),
            name: l.get(labels::SNAPSHOT)?.clone(),
            revision: l.get(labels::REVISION).cloned(),
            scheduled: l.get(labels::SCHEDULED).is_some_and(|v| v == "true"),
            ..SnapshotInfo::default()
        };
        if let Some(r) = record {
            s.complete_with(r);
        }
        Some(s)
    }

    /// What the snapshot's record says: when it was taken, its size, how
    /// it was held.
    pub fn complete_with(&mut self, record: &std::collections::HashMap<String, String>) {
        use crate::contract::labels;
        let num = |k: &str| record.get(k).and_then(|v| v.parse().ok());
        self.taken = record.get(labels::TAKEN).cloned();
        self.bytes = num(labels::BYTES);
        self.files = num(labels::FILES);
        self.consistency = record.get(labels::CONSISTENCY).cloned();
        self.held_ms = num(labels::HELD_MS);
        self.pushed_as = record.get(labels::PUSHED_AS).cloned();
    }
}

/// A container drover froze for a snapshot, as its record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Frozen {
    pub container: String,
    pub reason: String,
    /// The record's object name.
    pub record: String,
}

/// A restore under way, as its record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restoring {
    /// The Docker volume restored.
    pub volume: String,
    /// The snapshot volume it is restored from.
    pub from: String,
    /// The snapshot name its content is kept as first.
    pub before: String,
    /// The containers to start once it is done.
    pub apps: Vec<String>,
    pub record: String,
}

/// A clone under way, as its record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seeding {
    /// The Docker volume being made.
    pub volume: String,
    /// `stack/volume[@snapshot]`.
    pub from: String,
    pub record: String,
}

impl Frozen {
    pub fn from_labels(
        name: &str,
        l: &std::collections::HashMap<String, String>,
    ) -> Option<Frozen> {
        use crate::contract::labels;
        Some(Frozen {
            container: l.get(labels::FROZEN)?.clone(),
            reason: l.get(labels::FROZEN_FOR).cloned().unwrap_or_default(),
            record: name.to_string(),
        })
    }
}

impl Restoring {
    pub fn from_labels(
        name: &str,
        l: &std::collections::HashMap<String, String>,
    ) -> Option<Restoring> {
        use crate::contract::labels;
        Some(Restoring {
            volume: l.get(labels::RESTORE_OF)?.clone(),
            from: l.get(labels::RESTORE_FROM)?.clone(),
            before: l.get(labels::RESTORE_BEFORE)?.clone(),
            apps: l
                .get(labels::RESTORE_APPS)
                .map(|a| {
                    a.split(',')
                        .filter(|x| !x.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            record: name.to_string(),
        })
    }
}

impl Seeding {
    pub fn from_labels(
        name: &str,
        l: &std::collections::HashMap<String, String>,
    ) -> Option<Seeding> {
        use crate::contract::labels;
        Some(Seeding {
            volume: l.get(labels::SEEDING)?.clone(),
            from: l.get(labels::SEED_FROM).cloned().unwrap_or_default(),
            record: name.to_string(),
        })
    }
}

impl ObservedVolume {
    /// A managed copy of `stack`'s volume `volume` (Docker name
    /// `<stack>-<volume>`) with `copy` as its record, as tests build them.
    pub fn managed(stack: &str, volume: &str, copy: Option<CopyRecord>) -> ObservedVolume {
        ObservedVolume {
            name: crate::model::names::volume(stack, volume),
            managed: true,
            internal: false,
            stack: Some(stack.into()),
            volume: Some(volume.into()),
            driver: local_driver(),
            size_bytes: None,
            used_by: Vec::new(),
            retained_for: None,
            copy,
            moved_from: None,
            snapshot: None,
        }
    }
}

fn local_driver() -> String {
    "local".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservedNetwork {
    pub name: String,
    #[serde(default)]
    pub managed: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub internal: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// The settings it was made with, when not Docker's defaults (its
    /// `drover.network-config` label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

impl Observed {
    /// Reads a file written by `drover observe --output json`.
    pub fn from_json(text: &str) -> Result<Observed, serde_json::Error> {
        serde_json::from_str(text)
    }
}
