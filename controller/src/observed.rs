//! The observed state: drover's own serialisable model of what runs on the
//! hosts. It is exactly what `drover observe --output json` prints and what
//! `reconcile --observed FILE` reads, so its JSON form is a contract too
//! (documented in `docs/observed.md`). Docker client types never appear here.
//!
//! A host is either in `hosts` (it was read) or in `unreachable` (it was not,
//! with the reason); a host of the spec in neither is treated as unreadable.
//! No secret value is stored: containers carry digests, not environments.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

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
    /// The host's key for digests of secret values; a snapshot says only
    /// `withheld`.
    #[serde(
        default,
        skip_serializing_if = "crate::contract::hostkey::SecretKey::is_absent"
    )]
    pub secret_key: crate::contract::hostkey::SecretKey,
}

/// The Cluster's hosts as recorded on a host (a label-only volume
/// `drover-cluster-<seq>`, the newest counting): how a host that left the
/// Cluster is still found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    pub seq: u64,
    pub hosts: Vec<KnownHost>,
    /// The record objects (all of them, oldest first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<String>,
}

impl Membership {
    /// The newest membership record among a host's volumes, if any.
    pub fn from_volumes<'a>(
        volumes: impl IntoIterator<Item = (&'a str, &'a HashMap<String, String>)>,
    ) -> Option<Membership> {
        use crate::contract::labels::cluster::{HOSTS, SEQ};
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
        l.contains_key(crate::contract::labels::cluster::HOSTS)
    }
}

impl Observed {
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

/// How a host of the Cluster was reached.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownHost {
    pub name: String,
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// `ca`, `cert` and `key` paths, for a TLS host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<[String; 3]>,
    /// The managed volumes (Docker names) it held when last read: what it
    /// may still hold when it cannot be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
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
        }
    }
}

/// What a copy of a volume is, as recorded on its host by a move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyRole {
    /// The copy apps use.
    Current,
    /// Being filled by a move, not yet verified: never used as current.
    Incoming,
    /// An older copy kept after the data moved on.
    Retained,
}

/// Where a move stands, recorded on the source's copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MovePhase {
    /// Copying; the source is still the current copy.
    Copy,
    /// Verified, and the app may have started on the target: from here the
    /// move only goes forward (or back by an explicit rollback).
    Switch,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyRecord {
    pub role: CopyRole,
    /// Grows by one with every move: the higher of two current copies wins.
    #[serde(default)]
    pub epoch: u64,
    /// The other host of the move: the source of an incoming copy, the
    /// holder of the current copy for a retained one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<MovePhase>,
    /// The size of the data (regular files) when the copy was last verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

impl CopyRecord {
    /// The labels of the marker that records this, for volume `of`.
    pub fn labels(
        &self,
        of: &str,
        stack: &str,
        volume: &str,
        seq: u64,
    ) -> BTreeMap<String, String> {
        use crate::contract::labels as l;
        let mut m = crate::contract::internal_labels([
            (l::STACK, stack.to_string()),
            (l::VOLUME, volume.to_string()),
            (l::COPY_OF, of.to_string()),
            (l::COPY_ROLE, role_word(self.role).to_string()),
            (l::COPY_EPOCH, self.epoch.to_string()),
            (l::COPY_SEQ, seq.to_string()),
        ]);
        if let Some(p) = &self.peer {
            m.insert(l::COPY_PEER.into(), p.clone());
        }
        if let Some(t) = &self.moving_to {
            m.insert(l::MOVE_TO.into(), t.clone());
        }
        if let Some(b) = self.bytes {
            m.insert(l::COPY_BYTES.into(), b.to_string());
        }
        if let Some(p) = self.phase {
            let w = match p {
                MovePhase::Copy => "copy",
                MovePhase::Switch => "switch",
            };
            m.insert(l::MOVE_PHASE.into(), w.into());
        }
        m
    }

    /// Reads a marker's labels: the volume it is about, its sequence number
    /// and the record. `None` for a container that is not a marker.
    pub fn from_labels(
        l: &std::collections::HashMap<String, String>,
    ) -> Option<(String, u64, CopyRecord)> {
        use crate::contract::labels as k;
        let of = l.get(k::COPY_OF)?.clone();
        let role = match l.get(k::COPY_ROLE)?.as_str() {
            "current" => CopyRole::Current,
            "incoming" => CopyRole::Incoming,
            "retained" => CopyRole::Retained,
            _ => return None,
        };
        let num = |key: &str| l.get(key).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let phase = match l.get(k::MOVE_PHASE).map(String::as_str) {
            Some("copy") => Some(MovePhase::Copy),
            Some("switch") => Some(MovePhase::Switch),
            _ => None,
        };
        Some((
            of,
            num(k::COPY_SEQ),
            CopyRecord {
                role,
                epoch: num(k::COPY_EPOCH),
                peer: l.get(k::COPY_PEER).cloned(),
                moving_to: l.get(k::MOVE_TO).cloned(),
                phase,
                bytes: l.get(k::COPY_BYTES).and_then(|v| v.parse().ok()),
            },
        ))
    }
}

fn role_word(r: CopyRole) -> &'static str {
    match r {
        CopyRole::Current => "current",
        CopyRole::Incoming => "incoming",
        CopyRole::Retained => "retained",
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
}

impl Observed {
    /// Reads a file written by `drover observe --output json`.
    pub fn from_json(text: &str) -> Result<Observed, serde_json::Error> {
        serde_json::from_str(text)
    }
}
