//! The copy record: what a host holds about each copy of a volume on it
//! (its role, epoch and the move under way), as labels of a label-only
//! volume `drover-copy-<volume>-<seq>`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    /// What the move that made (or left) this copy cost, for the estimates
    /// of later plans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<MoveCost>,
    /// Made by a recovery from a backup: the hosts whose copies it
    /// replaced, which count as stale while their epoch is lower.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supersedes: Vec<String>,
}

/// What a finished move measured, kept in the records of both its copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveCost {
    /// Entries (files, folders, links) in the verified copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    /// Bytes per second of the copy while the apps ran, where it sent
    /// enough to tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    /// How long the apps were down, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
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
        if let Some(c) = &self.cost {
            for (k, v) in [
                (l::COPY_FILES, c.files),
                (l::MOVE_RATE, c.rate),
                (l::MOVE_DOWNTIME, c.downtime_ms),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), v.to_string());
                }
            }
        }
        if !self.supersedes.is_empty() {
            m.insert(l::COPY_SUPERSEDES.into(), self.supersedes.join(","));
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
                cost: {
                    let n = |key: &str| l.get(key).and_then(|v| v.parse::<u64>().ok());
                    let c = MoveCost {
                        files: n(k::COPY_FILES),
                        rate: n(k::MOVE_RATE),
                        downtime_ms: n(k::MOVE_DOWNTIME),
                    };
                    (c != MoveCost::default()).then_some(c)
                },
                supersedes: l
                    .get(k::COPY_SUPERSEDES)
                    .map(|s| {
                        s.split(',')
                            .filter(|h| !h.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
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
