//! What a move will cost, for the plan: its copy time and downtime,
//! estimated from what earlier moves on the same hosts measured (the
//! [`MoveCost`] each leaves in the records of its copies).

use serde::Serialize;

use crate::observed::{MoveCost, Observed};

/// The estimate of a `relocate` action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Estimate {
    /// Time to copy the data while the apps run, when the size is known.
    pub copy_ms: Option<u64>,
    /// Time the apps are down.
    pub downtime_ms: Option<u64>,
    /// How many earlier moves the figures come from.
    pub from_moves: usize,
}

/// The estimate for a move of `bytes` from `from` to `to`, from the moves
/// recorded on either host: between these two hosts when there were any,
/// else any that left a record there. `None` when none did.
pub fn estimate(observed: &Observed, from: &str, to: &str, bytes: Option<u64>) -> Option<Estimate> {
    let mut all: Vec<(bool, MoveCost)> = Vec::new();
    for (host, other) in [(from, to), (to, from)] {
        let Some(h) = observed.hosts.get(host) else {
            continue;
        };
        for v in &h.volumes {
            let Some(r) = &v.copy else { continue };
            if let Some(c) = r.cost {
                let between =
                    r.peer.as_deref() == Some(other) || v.moved_from.as_deref() == Some(other);
                all.push((between, c));
            }
        }
    }
    if all.iter().any(|(between, _)| *between) {
        all.retain(|(between, _)| *between);
    }
    if all.is_empty() {
        return None;
    }
    let rate = median(all.iter().filter_map(|(_, c)| c.rate));
    let downtime_ms = median(all.iter().filter_map(|(_, c)| c.downtime_ms));
    Some(Estimate {
        copy_ms: match (bytes, rate) {
            (Some(b), Some(r)) if r > 0 => Some((b as u128 * 1000 / r as u128) as u64),
            _ => None,
        },
        downtime_ms,
        from_moves: all.len(),
    })
}

fn median(values: impl Iterator<Item = u64>) -> Option<u64> {
    let mut v: Vec<u64> = values.collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observed::{CopyRecord, CopyRole, ObservedHost, ObservedVolume};

    fn moved(peer: &str, rate: u64, downtime_ms: u64) -> ObservedVolume {
        let mut v = ObservedVolume::managed(
            "s",
            "v",
            Some(CopyRecord {
                role: CopyRole::Retained,
                epoch: 1,
                peer: Some(peer.into()),
                moving_to: None,
                phase: None,
                bytes: None,
                cost: Some(MoveCost {
                    files: Some(10),
                    rate: Some(rate),
                    downtime_ms: Some(downtime_ms),
                }),
                supersedes: Vec::new(),
            }),
        );
        v.name = format!("s-v-{rate}");
        v
    }

    fn observed(a: Vec<ObservedVolume>) -> Observed {
        Observed {
            hosts: [(
                "a".to_string(),
                ObservedHost {
                    volumes: a,
                    ..Default::default()
                },
            )]
            .into(),
            ..Default::default()
        }
    }

    #[test]
    fn moves_between_the_same_hosts_decide_and_the_median_is_taken() {
        let o = observed(vec![
            moved("b", 100 << 20, 800),
            moved("b", 200 << 20, 900),
            moved("b", 300 << 20, 5000),
            moved("c", 1, 60_000),
        ]);
        let e = estimate(&o, "a", "b", Some(1 << 30)).unwrap();
        assert_eq!(e.from_moves, 3);
        assert_eq!(e.copy_ms, Some(5120), "1 GiB at 200 MiB/s");
        assert_eq!(e.downtime_ms, Some(900));
        // Other hosts: every move recorded on `a` counts.
        let e = estimate(&o, "a", "d", None).unwrap();
        assert_eq!((e.from_moves, e.copy_ms), (4, None));
    }

    #[test]
    fn without_an_earlier_move_there_is_no_estimate() {
        let mut plain = ObservedVolume::managed("s", "v", None);
        plain.size_bytes = Some(5);
        assert_eq!(estimate(&observed(vec![plain]), "a", "b", Some(5)), None);
    }
}
