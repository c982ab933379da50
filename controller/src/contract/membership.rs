//! The record of the Cluster's members, kept on every host: the hosts, how
//! they were reached, and the volumes each held when last read.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

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
