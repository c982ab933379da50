//! Which copy of a volume is current, from the copy records the hosts
//! hold; a move asks the same question before it acts.

use super::*;

/// Which copy of a volume holds its current data, from what the hosts
/// record. The relocation step asks the same question before it acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authority {
    /// No copy is current: there is none, or only retained or incoming ones.
    Nowhere,
    /// The copy on this host.
    On(String),
    /// A move passed its switch (the app may have started on `to`): `to`
    /// holds the data and the move must be finished.
    Finishing { from: String, to: String },
    /// Several copies claim to be current with the same epoch.
    Tied(Vec<String>),
    /// It cannot be decided now; why.
    Unknown(String),
}

/// Whether a copy may be the current one: not retained, not incoming, not
/// made by a move whose record is gone.
pub fn may_be_current(v: &ObservedVolume) -> bool {
    v.retained_for.is_none()
        && match &v.copy {
            Some(r) => r.role == CopyRole::Current,
            None => v.moved_from.is_none(),
        }
}

fn epoch_of(v: &ObservedVolume) -> u64 {
    v.copy.as_ref().map_or(0, |r| r.epoch)
}

/// Decides [`Authority`] from the copies on the hosts that were read.
///
/// The records are consulted together: a copy without a record next to
/// one that has a record (or one a move made) means records were lost,
/// and nothing is decided; a `switch` on the source counts only while the
/// target still holds the incoming copy that very move made.
pub fn authority(
    name: &str,
    copies: &[(&str, &ObservedVolume)],
    unreadable: &BTreeSet<&str>,
) -> Authority {
    // A recovery from a backup names the hosts whose copies it replaced:
    // theirs, of a lower epoch, are stale and never current again.
    let superseded: Vec<(&str, u64)> = copies
        .iter()
        .filter_map(|(_, v)| v.copy.as_ref())
        .filter(|r| r.role == CopyRole::Current)
        .flat_map(|r| r.supersedes.iter().map(move |h| (h.as_str(), r.epoch)))
        .collect();
    let kept: Vec<(&str, &ObservedVolume)> = copies
        .iter()
        .filter(|(h, v)| !superseded.iter().any(|(s, e)| s == h && epoch_of(v) < *e))
        .copied()
        .collect();
    let copies = kept.as_slice();
    let unrecorded: Vec<&str> = copies
        .iter()
        .filter(|(_, v)| v.copy.is_none())
        .map(|(h, _)| *h)
        .collect();
    let moves_seen = copies
        .iter()
        .any(|(_, v)| v.copy.is_some() || v.moved_from.is_some());
    if !unrecorded.is_empty() && moves_seen {
        let all: Vec<&str> = copies.iter().map(|(h, _)| *h).collect();
        let made = copies
            .iter()
            .find(|(_, v)| v.copy.is_none() && v.moved_from.is_some())
            .map(|(h, _)| *h);
        let what = match (all.as_slice(), made) {
            ([_], Some(h)) => format!("its only copy, on `{h}`, was made by a move"),
            _ => format!("it has copies on {}", listed(&all)),
        };
        return Authority::Unknown(format!(
            "the copy records of volume `{name}` are missing on {} (removed by a prune?) and {what}; drover will not guess which holds the current data: check them, then choose one with `drover volume adopt --host HOST {name}`",
            listed(&unrecorded)
        ));
    }
    for (h, v) in copies {
        let Some(r) = v
            .copy
            .as_ref()
            .filter(|r| r.role == CopyRole::Current && r.phase == Some(MovePhase::Switch))
        else {
            continue;
        };
        let Some(to) = &r.moving_to else { continue };
        if unreadable.contains(to.as_str()) {
            return Authority::Unknown(format!(
                "the move of volume `{name}` from `{h}` to `{to}` was interrupted after its app was started on `{to}`, and `{to}` cannot be read; the app is started nowhere until it can"
            ));
        }
        // Only the copy this move made finishes it: a target whose record
        // went on (current, or retained after a later move) left this
        // switch behind, and the epochs below decide.
        let made_by_this_move = copies.iter().any(|(t, tv)| {
            t == to
                && tv.copy.as_ref().is_some_and(|tr| {
                    tr.role == CopyRole::Incoming
                        && tr.epoch == r.epoch + 1
                        && tr.peer.as_deref().is_none_or(|p| p == *h)
                })
        });
        if made_by_this_move {
            return Authority::Finishing {
                from: h.to_string(),
                to: to.clone(),
            };
        }
    }
    let current: Vec<&(&str, &ObservedVolume)> =
        copies.iter().filter(|(_, v)| may_be_current(v)).collect();
    let Some(top) = current.iter().map(|(_, v)| epoch_of(v)).max() else {
        return Authority::Nowhere;
    };
    let best: Vec<String> = current
        .iter()
        .filter(|(_, v)| epoch_of(v) == top)
        .map(|(h, _)| h.to_string())
        .collect();
    match best.as_slice() {
        [one] => Authority::On(one.clone()),
        _ => Authority::Tied(best),
    }
}
