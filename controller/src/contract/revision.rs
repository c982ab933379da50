//! The Git commit last applied to a host, recorded on the host itself (a
//! label-only volume `drover-revision-<seq>`, the newest counting), so that
//! `drover status` and `drover observe` show it from any machine.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::contract::labels::revision::{REVISION, SEQ};

/// What the record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub sha: String,
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub author: String,
    /// Commit time, Unix seconds.
    #[serde(default)]
    pub time: i64,
    /// When it was applied to the host, Unix seconds.
    #[serde(default)]
    pub applied: u64,
}

/// The newest record on a host, and every record object (oldest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRevision {
    pub seq: u64,
    #[serde(flatten)]
    pub applied: Applied,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<String>,
}

impl HostRevision {
    pub fn from_volumes<'a>(
        volumes: impl IntoIterator<Item = (&'a str, &'a HashMap<String, String>)>,
    ) -> Option<HostRevision> {
        let mut found: Vec<(u64, &str, Applied)> = volumes
            .into_iter()
            .filter_map(|(name, l)| {
                let applied = serde_json::from_str(l.get(REVISION)?).ok()?;
                Some((l.get(SEQ)?.parse().ok()?, name, applied))
            })
            .collect();
        found.sort_by_key(|(seq, ..)| *seq);
        let objects = found.iter().map(|(_, n, _)| n.to_string()).collect();
        let (seq, _, applied) = found.pop()?;
        Some(HostRevision {
            seq,
            applied,
            objects,
        })
    }

    /// Whether a volume's labels make it a revision record.
    pub fn is_record(l: &HashMap<String, String>) -> bool {
        l.contains_key(REVISION)
    }
}
