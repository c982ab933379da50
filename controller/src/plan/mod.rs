//! Planning: `plan(&Desired, &Observed) -> Plan`, pure and synchronous.
//!
//! A plan is data: one action per Docker object, each with a human reason
//! and the ids of the actions it must wait for. Volumes and networks come
//! first; an app waits for the apps it depends on or links to; removals run
//! in reverse order. Volume data is never removed unless `prune_volumes` is
//! asked for, and nothing at all is planned for a host whose state is
//! missing — nor anything that would need it (a move from or to it, an app
//! that waits for an app on it).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::Serialize;

use crate::contract::hostkey::SecretKey;
use crate::desired::{ContainerSpec, Desired, SECRET_DIGEST};
use crate::model::names;
use crate::observed::{
    ContainerState, CopyRole, MovePhase, Observed, ObservedContainer, ObservedHost, ObservedVolume,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Volume,
    Network,
    Container,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Volume => "volume",
            Kind::Network => "network",
            Kind::Container => "container",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Create,
    Recreate,
    Start,
    Stop,
    Remove,
    Relocate,
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verb::Create => "create",
            Verb::Recreate => "recreate",
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Remove => "remove",
            Verb::Relocate => "relocate",
        })
    }
}

/// The extra facts of a `relocate` action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Relocation {
    pub from: String,
    pub to: String,
    /// The volume's size where the source host reports it.
    pub bytes: Option<u64>,
    /// The apps stopped on `from` and started on `to` by the move.
    pub apps: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    pub id: String,
    pub host: String,
    pub kind: Kind,
    pub action: Verb,
    pub stack: String,
    /// The Docker object's name.
    pub name: String,
    pub reason: String,
    /// Ids of the actions this one waits for.
    pub after: Vec<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub relocation: Option<Relocation>,
    /// 1 + the longest chain of actions before this one. Actions of the same
    /// wave are independent of each other and may run in parallel.
    #[serde(skip)]
    pub wave: usize,
}

/// A volume kept on a host although the spec no longer places it there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Orphan {
    pub host: String,
    pub kind: Kind,
    pub stack: String,
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub in_sync: bool,
    pub actions: Vec<Action>,
    pub orphans: Vec<Orphan>,
    pub warnings: Vec<String>,
    /// Problems that stop part of the plan (an unreadable host, a name taken
    /// by an object drover does not manage). A plan with errors is carried
    /// out for everything else, and the command exits 1.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Also remove orphaned and retained volume copies.
    pub prune_volumes: bool,
    /// Apply manifests that hold no app even though the hosts run managed
    /// apps: without it such a plan does nothing and says why (an emptied
    /// or unmounted directory must not wipe the cluster).
    pub allow_empty: bool,
}

fn action_id(host: &str, kind: Kind, name: &str) -> String {
    format!("{host}/{kind}/{name}")
}

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

fn listed(hosts: &[&str]) -> String {
    hosts
        .iter()
        .map(|h| format!("`{h}`"))
        .collect::<Vec<_>>()
        .join(" and ")
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

pub use crate::contract::names::HELPER_PREFIX;

/// The stack and app of a managed app container.
fn app_of(c: &ObservedContainer) -> Option<(&str, &str)> {
    if c.managed && !c.internal {
        Some((c.stack.as_deref()?, c.app.as_deref()?))
    } else {
        None
    }
}

struct Planner<'a> {
    desired: &'a Desired,
    observed: &'a Observed,
    opts: Options,
    /// Hosts of the spec that were read.
    readable: BTreeMap<&'a str, &'a ObservedHost>,
    unreadable: BTreeSet<&'a str>,
    actions: Vec<Action>,
    orphans: Vec<Orphan>,
    warnings: Vec<String>,
    errors: Vec<String>,
    /// Apps (stack, app) that cannot be acted on this time.
    blocked: BTreeSet<(String, String)>,
    /// Volumes (stack, volume) that cannot be acted on this time.
    blocked_volumes: BTreeSet<(String, String)>,
    /// (stack, app) -> the actions that bring the app up to date.
    app_actions: HashMap<(String, String), Vec<usize>>,
    /// Action id -> its index in `actions`.
    index: HashMap<String, usize>,
    /// (stack, volume) -> managed copies on the hosts that were read.
    copies: HashMap<(&'a str, &'a str), Vec<(&'a str, &'a ObservedVolume)>>,
    /// Container name -> readable hosts with a managed app container of it.
    container_hosts: HashMap<&'a str, Vec<&'a str>>,
    /// Stacks that still have something in the spec.
    stacks: BTreeSet<&'a str>,
}

/// Computes what must change for the hosts to match `desired`.
pub fn plan(desired: &Desired, observed: &Observed, opts: Options) -> Plan {
    let mut p = Planner {
        desired,
        observed,
        opts,
        readable: BTreeMap::new(),
        unreadable: BTreeSet::new(),
        actions: Vec::new(),
        orphans: Vec::new(),
        warnings: Vec::new(),
        errors: Vec::new(),
        blocked: BTreeSet::new(),
        blocked_volumes: BTreeSet::new(),
        app_actions: HashMap::new(),
        index: HashMap::new(),
        copies: HashMap::new(),
        container_hosts: HashMap::new(),
        stacks: BTreeSet::new(),
    };
    p.hosts();
    p.volumes();
    p.networks();
    p.containers();
    p.removals();
    p.refuse_emptying();
    p.finish()
}

impl<'a> Planner<'a> {
    /// Manifests with no app at all, against hosts running managed apps,
    /// are far more often a directory emptied or not mounted than a wish
    /// to remove everything: nothing is planned unless that is allowed.
    fn refuse_emptying(&mut self) {
        let wanted: usize = self
            .desired
            .hosts
            .values()
            .map(|h| h.containers.len())
            .sum();
        if self.opts.allow_empty || wanted > 0 {
            return;
        }
        let running: Vec<(&str, usize)> = self
            .readable
            .iter()
            .map(|(h, o)| {
                (
                    *h,
                    o.containers.iter().filter(|c| app_of(c).is_some()).count(),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        if running.is_empty() {
            return;
        }
        let total: usize = running.iter().map(|(_, n)| n).sum();
        let hosts: Vec<&str> = running.iter().map(|(h, _)| *h).collect();
        self.actions.clear();
        self.index.clear();
        self.errors.push(format!(
            "the manifests hold no app, and applying them would remove all {total} app container(s) drover manages on {}; nothing was planned: if the directory is meant to be empty, pass `--allow-empty`",
            listed(&hosts)
        ));
    }

    fn push(&mut self, a: Action) -> usize {
        debug_assert!(!self.index.contains_key(&a.id), "duplicate action {}", a.id);
        self.index.insert(a.id.clone(), self.actions.len());
        self.actions.push(a);
        self.actions.len() - 1
    }

    fn hosts(&mut self) {
        for host in self.desired.hosts.keys() {
            match self.observed.hosts.get(host) {
                Some(h) => {
                    self.readable.insert(host, h);
                }
                None => {
                    self.unreadable.insert(host);
                    let reason = self
                        .observed
                        .unreachable
                        .get(host)
                        .map_or("it is missing from the observed state", String::as_str);
                    self.errors.push(format!(
                        "host `{host}` could not be read: {reason}; nothing that involves it is planned"
                    ));
                }
            }
        }
        for (host, h) in &self.readable {
            for v in &h.volumes {
                if let (true, false, Some(stack), Some(volume)) =
                    (v.managed, v.internal, &v.stack, &v.volume)
                {
                    self.copies
                        .entry((stack, volume))
                        .or_default()
                        .push((host, v));
                }
            }
            for c in &h.containers {
                if app_of(c).is_some() {
                    self.container_hosts.entry(&c.name).or_default().push(host);
                }
            }
        }
        self.stacks
            .extend(self.desired.stacks.iter().map(String::as_str));
        for (host, h) in &self.observed.former {
            let apps: BTreeSet<&str> = h
                .containers
                .iter()
                .filter_map(app_of)
                .filter(|(stack, _)| self.stacks.contains(stack))
                .map(|(stack, _)| stack)
                .collect();
            for stack in apps {
                self.warnings.push(format!(
                    "host `{host}` is no longer in the Cluster but still runs apps of stack `{stack}`; drover changes nothing there"
                ));
            }
        }
        for (host, why) in &self.observed.former_unreachable {
            self.warnings.push(format!(
                "host `{host}` left the Cluster and could not be read ({why}); a volume found nowhere else is not made anew"
            ));
        }
        for host in self.observed.hosts.keys() {
            if !self.desired.hosts.contains_key(host) {
                self.warnings.push(format!(
                    "host `{host}` is not in the Cluster; its objects are left alone"
                ));
            }
        }
    }

    /// Managed copies of a stack's volume on the hosts that were read.
    fn copies(&self, stack: &str, volume: &str) -> Vec<(&'a str, &'a ObservedVolume)> {
        self.copies
            .get(&(stack, volume))
            .cloned()
            .unwrap_or_default()
    }

    fn block_volume(&mut self, stack: &str, volume: &str, error: String) {
        self.errors.push(error);
        self.blocked_volumes
            .insert((stack.to_string(), volume.to_string()));
    }

    fn volumes(&mut self) {
        // (stack, app) -> the first move that carries the app's volumes.
        let mut moving_apps: HashMap<(String, String), String> = HashMap::new();
        for (host, dh) in &self.desired.hosts {
            for v in dh.volumes.values() {
                if self.unreadable.contains(host.as_str()) {
                    self.blocked_volumes
                        .insert((v.stack.clone(), v.volume.clone()));
                    continue;
                }
                // A host that left the Cluster is read, never changed: data
                // on it can neither move nor be made anew elsewhere.
                let away: Vec<&str> = self
                    .observed
                    .former
                    .iter()
                    .filter(|(_, h)| {
                        h.volumes.iter().any(|o| {
                            o.managed
                                && !o.internal
                                && o.stack.as_deref() == Some(v.stack.as_str())
                                && o.volume.as_deref() == Some(v.volume.as_str())
                        })
                    })
                    .map(|(h, _)| h.as_str())
                    .collect();
                if !away.is_empty() {
                    self.block_volume(&v.stack, &v.volume, format!(
                        "volume `{}` has a copy on {}, which is no longer in the Cluster; drover reads it but changes nothing there, so the data cannot move: put the host back in the Cluster to move it (or, if that copy is not wanted, remove it there by hand)",
                        v.name, listed(&away)
                    ));
                    continue;
                }
                let copies = self.copies(&v.stack, &v.volume);
                let (from, reason) = match authority(&v.name, &copies, &self.unreadable) {
                    Authority::Unknown(why) => {
                        self.block_volume(&v.stack, &v.volume, why);
                        continue;
                    }
                    Authority::Finishing { from, to } if &to == host => {
                        let why = format!(
                            "the move from `{from}` to `{host}` was interrupted after the switch; it is finished"
                        );
                        (from, Some(why))
                    }
                    Authority::Finishing { from, to } => {
                        self.block_volume(&v.stack, &v.volume, format!(
                            "the move of volume `{}` from `{from}` to `{to}` was interrupted after its app started on `{to}`; drover finishes it before the data moves again: set the app's host back to `{to}` for one reconcile",
                            v.name
                        ));
                        continue;
                    }
                    Authority::On(h) if &h == host => continue,
                    // Even where the spec wants one of them: a copy the
                    // app never ran on must not be taken on a guess.
                    Authority::Tied(hosts) => {
                        let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
                        self.block_volume(&v.stack, &v.volume, format!(
                            "volume `{}` has current copies on {}; drover will not guess which holds the current data: check them, then choose one with `drover volume adopt --host HOST {}`",
                            v.name, listed(&hosts), v.name
                        ));
                        continue;
                    }
                    Authority::On(from) => (from, None),
                    Authority::Nowhere => {
                        // A former host that cannot be read counts only for
                        // the volumes it held when last read.
                        let former_unread: BTreeMap<&String, &String> = self
                            .observed
                            .former_unreachable
                            .iter()
                            .filter(|(h, _)| self.observed.recorded_volumes(h).contains(&v.name))
                            .collect();
                        if !self.unreadable.is_empty() || !former_unread.is_empty() {
                            let hosts = self
                                .unreadable
                                .iter()
                                .map(|h| format!("`{h}`"))
                                .chain(
                                    former_unread
                                        .keys()
                                        .map(|h| format!("`{h}` (no longer in the Cluster)")),
                                )
                                .collect::<Vec<_>>()
                                .join(", ");
                            self.block_volume(&v.stack, &v.volume, format!(
                                "volume `{}` was not found on the hosts that could be read, and {hosts} could not be read; drover will not create an empty copy",
                                v.name
                            ));
                        } else if copies.iter().any(|(_, c)| {
                            c.retained_for.is_some()
                                || c.copy
                                    .as_ref()
                                    .is_some_and(|r| r.role == CopyRole::Retained)
                        }) {
                            self.block_volume(&v.stack, &v.volume, format!(
                                "volume `{}` has only retained copies and no authoritative one; drover will not guess which holds the current data",
                                v.name
                            ));
                        } else if let Some((h, _)) = copies.iter().find(|(h, _)| h != host) {
                            // Only an unverified copy left by a move: the data
                            // it came from is gone, and it is never trusted.
                            self.block_volume(&v.stack, &v.volume, format!(
                                "volume `{}` has only an unfinished copy (on `{h}`) from an interrupted move; drover will not use it as current data",
                                v.name
                            ));
                        } else if copies.is_empty() {
                            self.push(Action {
                                id: action_id(host, Kind::Volume, &v.name),
                                host: host.clone(),
                                kind: Kind::Volume,
                                action: Verb::Create,
                                stack: v.stack.clone(),
                                name: v.name.clone(),
                                reason: "volume does not exist".into(),
                                after: Vec::new(),
                                relocation: None,
                                wave: 0,
                            });
                        } else {
                            self.block_volume(&v.stack, &v.volume, format!(
                                "volume `{}` on `{host}` is an unfinished copy from an interrupted move and no current copy is left; drover will not use it as current data",
                                v.name
                            ));
                        }
                        continue;
                    }
                };
                let unmanaged_clash = self.readable[host.as_str()]
                    .volumes
                    .iter()
                    .any(|o| o.name == v.name && !o.managed);
                if unmanaged_clash {
                    self.block_volume(&v.stack, &v.volume, format!(
                        "volume name `{}` on `{host}` is taken by a volume drover does not manage; rename or remove it",
                        v.name
                    ));
                    continue;
                }
                let src = copies.iter().find(|(h, _)| *h == from).map(|(_, c)| *c);
                let apps: Vec<String> = dh
                    .containers
                    .values()
                    .filter(|c| c.stack == v.stack && c.mounts.iter().any(|m| m.volume == v.volume))
                    .map(|c| c.app.clone())
                    .collect();
                let reason = reason.unwrap_or_else(|| {
                    if apps.is_empty() {
                        format!("volume moved from `{from}` to `{host}`")
                    } else {
                        format!(
                            "{} moved from `{from}` to `{host}`; the data follows",
                            apps.iter()
                                .map(|a| format!("app `{a}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                });
                // Volumes of the same apps move together, in the first of
                // their actions; the others wait for it (and find their
                // volume moved).
                let id = action_id(host, Kind::Volume, &v.name);
                let mut after = Vec::new();
                for app in &apps {
                    let key = (v.stack.clone(), app.clone());
                    if let Some(first) = moving_apps.get(&key) {
                        if !after.contains(first) {
                            after.push(first.clone());
                        }
                    } else {
                        moving_apps.insert(key, id.clone());
                    }
                }
                self.push(Action {
                    id,
                    host: host.clone(),
                    kind: Kind::Volume,
                    action: Verb::Relocate,
                    stack: v.stack.clone(),
                    name: v.name.clone(),
                    reason,
                    after,
                    relocation: Some(Relocation {
                        from,
                        to: host.clone(),
                        bytes: src.and_then(|c| c.size_bytes),
                        apps,
                    }),
                    wave: 0,
                });
            }
        }
    }

    fn networks(&mut self) {
        for (host, dh) in &self.desired.hosts {
            let Some(&oh) = self.readable.get(host.as_str()) else {
                continue;
            };
            for n in dh.networks.values() {
                match oh.networks.iter().find(|o| o.name == n.name) {
                    Some(o) if o.managed => {}
                    Some(_) => {
                        self.errors.push(format!(
                            "network name `{}` on `{host}` is taken by a network drover does not manage; the apps of stack `{}` there are skipped",
                            n.name, n.stack
                        ));
                        for c in dh.containers.values().filter(|c| c.stack == n.stack) {
                            self.blocked.insert((c.stack.clone(), c.app.clone()));
                        }
                    }
                    None => {
                        self.push(Action {
                            id: action_id(host, Kind::Network, &n.name),
                            host: host.clone(),
                            kind: Kind::Network,
                            action: Verb::Create,
                            stack: n.stack.clone(),
                            name: n.name.clone(),
                            reason: "network does not exist".into(),
                            after: Vec::new(),
                            relocation: None,
                            wave: 0,
                        });
                    }
                }
            }
        }
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    fn containers(&mut self) {
        // Apps carried by a move get no actions of their own.
        let mut moving: HashMap<(String, String), usize> = HashMap::new();
        for (i, a) in self.actions.iter().enumerate() {
            if let Some(r) = &a.relocation {
                for app in &r.apps {
                    moving.insert((a.stack.clone(), app.clone()), i);
                }
            }
        }
        let desired = self.desired;
        let mut to_link: Vec<(usize, &ContainerSpec)> = Vec::new();
        for (host, dh) in &desired.hosts {
            for c in dh.containers.values() {
                let key = (c.stack.clone(), c.app.clone());
                if self.unreadable.contains(host.as_str()) {
                    self.blocked.insert(key);
                    continue;
                }
                if let Some(m) = c.mounts.iter().find(|m| {
                    self.blocked_volumes
                        .contains(&(c.stack.clone(), m.volume.clone()))
                }) {
                    self.errors.push(format!(
                        "app `{}/{}` on `{host}` is skipped: its volume `{}` cannot be placed",
                        c.stack, c.app, m.source
                    ));
                    self.blocked.insert(key);
                    continue;
                }
                if let Some(&i) = moving.get(&key) {
                    // A move starts the app on the target: a foreign
                    // container of its name there stops the move.
                    let taken = self.readable[host.as_str()]
                        .containers
                        .iter()
                        .any(|o| o.name == c.name && !o.managed);
                    if taken {
                        self.errors.push(format!(
                            "container name `{}` on `{host}` is taken by a container drover does not manage; app `{}/{}` is not moved there",
                            c.name, c.stack, c.app
                        ));
                        self.blocked.insert(key.clone());
                    }
                    self.app_actions.entry(key).or_default().push(i);
                    to_link.push((i, c));
                    continue;
                }
                if self.blocked.contains(&key) {
                    continue;
                }
                if let Some(i) = self.container(host, c) {
                    self.app_actions.entry(key).or_default().push(i);
                    to_link.push((i, c));
                }
            }
        }
        // Apps that wait for an app on a host that was not read, or for a
        // blocked app, are skipped too (repeat until nothing changes).
        loop {
            let mut newly = Vec::new();
            for dh in desired.hosts.values() {
                for c in dh.containers.values() {
                    let key = (c.stack.clone(), c.app.clone());
                    if self.blocked.contains(&key) {
                        continue;
                    }
                    let waits = c.depends_on.iter().map(|(t, _)| t).chain(&c.links);
                    if let Some(t) = waits
                        .into_iter()
                        .find(|t| self.blocked.contains(&(c.stack.clone(), (*t).clone())))
                    {
                        newly.push((key, t.clone(), c.host.clone()));
                    }
                }
            }
            if newly.is_empty() {
                break;
            }
            for ((stack, app), target, host) in newly {
                self.errors.push(format!(
                    "app `{stack}/{app}` on `{host}` is skipped: it waits for `{target}`, which cannot be brought up to date"
                ));
                self.blocked.insert((stack, app));
            }
        }
        let blocked_ids: BTreeSet<usize> = self
            .app_actions
            .iter()
            .filter(|(k, _)| self.blocked.contains(*k))
            .flat_map(|(_, v)| v.iter().copied())
            .collect();

        for (i, c) in to_link {
            if blocked_ids.contains(&i) {
                continue;
            }
            let mut after = Vec::new();
            if let Some(n) = self.index_of(&action_id(&c.host, Kind::Network, &c.network)) {
                after.push(n);
            }
            for m in &c.mounts {
                if let Some(v) = self.index_of(&action_id(&c.host, Kind::Volume, &m.source)) {
                    if v != i {
                        after.push(v);
                    }
                }
            }
            for t in c.depends_on.iter().map(|(t, _)| t).chain(&c.links) {
                if let Some(ids) = self.app_actions.get(&(c.stack.clone(), t.clone())) {
                    after.extend(ids.iter().copied().filter(|d| *d != i));
                }
            }
            let ids: Vec<String> = after.iter().map(|j| self.actions[*j].id.clone()).collect();
            self.actions[i].after.extend(ids);
        }
        // Drop the actions of blocked apps (a move whose app waits for a
        // blocked app stays undone too).
        if !blocked_ids.is_empty() {
            let dropped: BTreeSet<String> = blocked_ids
                .iter()
                .map(|i| self.actions[*i].id.clone())
                .collect();
            self.actions.retain(|a| !dropped.contains(&a.id));
            self.app_actions.clear();
            self.index = self
                .actions
                .iter()
                .enumerate()
                .map(|(i, a)| (a.id.clone(), i))
                .collect();
        }
    }

    /// The action for one desired container on a readable host, if any.
    fn container(&mut self, host: &str, c: &ContainerSpec) -> Option<usize> {
        let oh = self.readable[host];
        let found = oh.containers.iter().find(|o| o.name == c.name);
        let compared = found.map(|o| (o, config_change(c, o, &oh.secret_key)));
        if oh.secret_key == SecretKey::Withheld && c.has_secrets() {
            self.warnings.push(format!(
                "secret values on `{host}` are not compared: the observed state was read from a file, which holds no host key"
            ));
        }
        let (verb, reason) = match compared {
            Some((o, _)) if !o.managed => {
                self.errors.push(format!(
                    "container name `{}` on `{host}` is taken by a container drover does not manage; app `{}/{}` is skipped",
                    c.name, c.stack, c.app
                ));
                self.blocked.insert((c.stack.clone(), c.app.clone()));
                return None;
            }
            Some((_, Some(reason))) => (Verb::Recreate, reason),
            Some((o, None)) => match o.state {
                ContainerState::Running | ContainerState::Restarting => return None,
                ContainerState::Created | ContainerState::Exited => {
                    (Verb::Start, format!("container is {}", o.state.as_str()))
                }
                ContainerState::Dead => (Verb::Recreate, "container is dead".to_string()),
                ContainerState::Paused | ContainerState::Removing => {
                    self.warnings.push(format!(
                        "container `{}` on `{host}` is {}; drover leaves it so",
                        c.name,
                        o.state.as_str()
                    ));
                    return None;
                }
            },
            None => {
                if let Some(clash) = self.port_clash(oh, c) {
                    self.errors.push(format!(
                        "app `{}/{}` on `{host}` is skipped: {clash}",
                        c.stack, c.app
                    ));
                    self.blocked.insert((c.stack.clone(), c.app.clone()));
                    return None;
                }
                let elsewhere = self
                    .container_hosts
                    .get(c.name.as_str())
                    .and_then(|hosts| hosts.iter().find(|h| **h != host));
                let reason = match elsewhere {
                    Some(from) => format!("app moved from `{from}`"),
                    None => "container does not exist".to_string(),
                };
                (Verb::Create, reason)
            }
        };
        Some(self.push(Action {
            id: action_id(host, Kind::Container, &c.name),
            host: host.to_string(),
            kind: Kind::Container,
            action: verb,
            stack: c.stack.clone(),
            name: c.name.clone(),
            reason,
            after: Vec::new(),
            relocation: None,
            wave: 0,
        }))
    }

    /// A host port this container wants that an unmanaged container holds.
    fn port_clash(&self, oh: &ObservedHost, c: &ContainerSpec) -> Option<String> {
        for p in &c.ports {
            for o in oh.containers.iter().filter(|o| !o.managed) {
                let taken = o.ports.iter().any(|q| {
                    q.port == p.host
                        && q.protocol == p.protocol.as_str()
                        && (q.ip.is_empty()
                            || p.ip.is_empty()
                            || q.ip == p.ip
                            || q.ip == "0.0.0.0"
                            || q.ip == "::")
                });
                if taken {
                    return Some(format!(
                        "host port {}/{} is taken by container `{}`, which drover does not manage",
                        p.host,
                        p.protocol.as_str(),
                        o.name
                    ));
                }
            }
        }
        None
    }

    fn removals(&mut self) {
        let moving_from: BTreeSet<(String, String, String)> = self
            .actions
            .iter()
            .filter_map(|a| a.relocation.as_ref().map(|r| (a, r)))
            .flat_map(|(a, r)| {
                r.apps
                    .iter()
                    .map(move |app| (r.from.clone(), a.stack.clone(), app.clone()))
            })
            .collect();
        let relocate_targets: BTreeSet<(String, String)> = self
            .actions
            .iter()
            .filter(|a| a.action == Verb::Relocate)
            .map(|a| (a.host.clone(), a.name.clone()))
            .collect();

        // Containers, then (after them) networks and pruned volumes.
        let mut removed: Vec<(usize, String, String, Vec<String>)> = Vec::new();
        let readable: Vec<(&'a str, &'a ObservedHost)> =
            self.readable.iter().map(|(h, o)| (*h, *o)).collect();
        for &(host, oh) in &readable {
            let dh = &self.desired.hosts[host];
            for o in &oh.containers {
                let Some((stack, app)) = app_of(o) else {
                    continue;
                };
                if dh.containers.contains_key(&o.name) && o.name == names::container(stack, app) {
                    continue;
                }
                if moving_from.contains(&(host.to_string(), stack.to_string(), app.to_string())) {
                    continue;
                }
                let now = self.desired.container(stack, app);
                let mut after = Vec::new();
                let reason = match now {
                    Some(c)
                        if self.unreadable.contains(c.host.as_str())
                            || self.blocked.contains(&(stack.to_string(), app.to_string())) =>
                    {
                        // Its replacement cannot be started: keep it running
                        // (a move stopped midway may have stopped it), unless
                        // its data may already be in use on the new host.
                        let stopped =
                            matches!(o.state, ContainerState::Exited | ContainerState::Created);
                        let data_here = c.mounts.iter().all(|m| {
                            let copies = self.copies(stack, &m.volume);
                            authority(&m.source, &copies, &self.unreadable)
                                == Authority::On(host.to_string())
                        });
                        if stopped && data_here {
                            self.push(Action {
                                id: action_id(host, Kind::Container, &o.name),
                                host: host.to_string(),
                                kind: Kind::Container,
                                action: Verb::Start,
                                stack: stack.to_string(),
                                name: o.name.clone(),
                                reason: format!(
                                    "container is {}; it runs here until it can move to `{}`",
                                    o.state.as_str(),
                                    c.host
                                ),
                                after: Vec::new(),
                                relocation: None,
                                wave: 0,
                            });
                        }
                        continue;
                    }
                    Some(c) => {
                        if let Some(i) =
                            self.index_of(&action_id(&c.host, Kind::Container, &c.name))
                        {
                            after.push(self.actions[i].id.clone());
                        }
                        format!("app moved to `{}`", c.host)
                    }
                    None if self.stacks.contains(stack) => {
                        format!("app `{app}` is no longer in stack `{stack}`")
                    }
                    None => format!("stack `{stack}` is no longer in the manifests"),
                };
                let i = self.push(Action {
                    id: action_id(host, Kind::Container, &o.name),
                    host: host.to_string(),
                    kind: Kind::Container,
                    action: Verb::Remove,
                    stack: stack.to_string(),
                    name: o.name.clone(),
                    reason,
                    after,
                    relocation: None,
                    wave: 0,
                });
                removed.push((i, stack.to_string(), app.to_string(), o.depends_on.clone()));
            }
        }
        // Helpers left behind by an interrupted move (a move planned now
        // replaces its own).
        for &(host, oh) in &readable {
            for o in &oh.containers {
                let Some(volume) = o.name.strip_prefix(HELPER_PREFIX) else {
                    continue;
                };
                if !o.internal || relocate_targets.iter().any(|(_, v)| v == volume) {
                    continue;
                }
                self.push(Action {
                    id: action_id(host, Kind::Container, &o.name),
                    host: host.to_string(),
                    kind: Kind::Container,
                    action: Verb::Remove,
                    stack: o.stack.clone().unwrap_or_default(),
                    name: o.name.clone(),
                    reason: "helper left behind by an interrupted volume move".into(),
                    after: Vec::new(),
                    relocation: None,
                    wave: 0,
                });
            }
        }
        // Reverse order: an app is removed after the removed apps that wait for it.
        for (i, stack, app, _) in &removed {
            let dependents: Vec<String> = removed
                .iter()
                .filter(|(j, s, _, deps)| j != i && s == stack && deps.contains(app))
                .map(|(j, ..)| self.actions[*j].id.clone())
                .collect();
            self.actions[*i].after.extend(dependents);
        }
        // A container leaving a move's source that mounts the moving volume
        // (an app renamed or removed in the same change) goes before the
        // move: it must not write during the last copy or after the switch.
        let moves: Vec<(usize, String, String)> = self
            .actions
            .iter()
            .enumerate()
            .filter_map(|(i, a)| Some((i, a.relocation.as_ref()?.from.clone(), a.name.clone())))
            .collect();
        for (i, from, volume) in moves {
            let Some(oh) = self.readable.get(from.as_str()) else {
                continue;
            };
            let users = oh
                .volumes
                .iter()
                .filter(|v| v.name == volume)
                .flat_map(|v| &v.used_by);
            let ids: Vec<String> = users
                .map(|c| action_id(&from, Kind::Container, c))
                .filter(|id| {
                    self.index_of(id)
                        .is_some_and(|j| self.actions[j].action == Verb::Remove)
                })
                .collect();
            self.actions[i].after.extend(ids);
        }

        for &(host, oh) in &readable {
            let dh = &self.desired.hosts[host];
            for n in &oh.networks {
                if !n.managed || n.internal || dh.networks.contains_key(&n.name) {
                    continue;
                }
                let Some(stack) = n.stack.as_deref() else {
                    continue;
                };
                // Anything of the stack still to leave this host goes first.
                let after: Vec<String> = self
                    .actions
                    .iter()
                    .filter(|a| a.stack == stack)
                    .filter(|a| {
                        (a.host == host && a.kind == Kind::Container && a.action == Verb::Remove)
                            || a.relocation.as_ref().is_some_and(|r| r.from == host)
                    })
                    .map(|a| a.id.clone())
                    .collect();
                let still_used = oh.containers.iter().any(|c| {
                    c.stack.as_deref() == Some(stack)
                        && app_of(c).is_some()
                        && !after.contains(&action_id(host, Kind::Container, &c.name))
                        && !moving_from.contains(&(
                            host.to_string(),
                            stack.to_string(),
                            c.app.clone().unwrap_or_default(),
                        ))
                });
                if still_used {
                    continue;
                }
                self.push(Action {
                    id: action_id(host, Kind::Network, &n.name),
                    host: host.to_string(),
                    kind: Kind::Network,
                    action: Verb::Remove,
                    stack: stack.to_string(),
                    name: n.name.clone(),
                    reason: format!("no app of stack `{stack}` runs on `{host}` any more"),
                    after,
                    relocation: None,
                    wave: 0,
                });
            }

            for v in &oh.volumes {
                if !v.managed || v.internal {
                    continue;
                }
                let (Some(stack), Some(volume)) = (v.stack.as_deref(), v.volume.as_deref()) else {
                    continue;
                };
                // Usually the copy is where the spec wants it: look there
                // before searching every host.
                let wanted = dh
                    .volumes
                    .get(&v.name)
                    .filter(|w| w.stack == stack && w.volume == volume)
                    .or_else(|| self.desired.volume(stack, volume));
                let kept = match (&v.retained_for, &v.copy) {
                    (Some(to), _) => Some(format!("copy retained after the move to `{to}`")),
                    (None, Some(r)) if r.role == CopyRole::Incoming => Some(format!(
                        "unfinished copy from an interrupted move from `{}`",
                        r.peer.as_deref().unwrap_or("another host")
                    )),
                    _ => None,
                };
                let reason = match (wanted, &kept) {
                    (Some(w), _) if w.host == host && kept.is_none() => continue,
                    // The copy a move back to this host will build on.
                    (Some(w), Some(_))
                        if w.host == host
                            || relocate_targets.contains(&(host.to_string(), v.name.clone())) =>
                    {
                        continue
                    }
                    (Some(_), None) => continue, // a move's source, or a conflict warned about
                    (Some(_), Some(why)) | (None, Some(why)) => why.clone(),
                    (None, None) if self.stacks.contains(stack) => {
                        format!("volume `{volume}` is no longer in stack `{stack}`")
                    }
                    (None, None) => format!("stack `{stack}` is no longer in the manifests"),
                };
                let removing: Vec<String> = v
                    .used_by
                    .iter()
                    .map(|c| action_id(host, Kind::Container, c))
                    .collect();
                let in_use = removing.iter().any(|id| self.index_of(id).is_none());
                if self.opts.prune_volumes && in_use {
                    self.warnings.push(format!(
                        "volume `{}` on `{host}` is not pruned: a container still uses it",
                        v.name
                    ));
                }
                if !self.opts.prune_volumes || in_use {
                    self.orphans.push(Orphan {
                        host: host.to_string(),
                        kind: Kind::Volume,
                        stack: stack.to_string(),
                        name: v.name.clone(),
                        reason,
                    });
                    continue;
                }
                self.push(Action {
                    id: action_id(host, Kind::Volume, &v.name),
                    host: host.to_string(),
                    kind: Kind::Volume,
                    action: Verb::Remove,
                    stack: stack.to_string(),
                    name: v.name.clone(),
                    reason: format!("{reason}; pruned on request"),
                    after: removing,
                    relocation: None,
                    wave: 0,
                });
            }
        }
    }

    fn finish(mut self) -> Plan {
        for a in &mut self.actions {
            a.after.sort();
            a.after.dedup();
        }
        let index: HashMap<String, usize> = self
            .actions
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i))
            .collect();
        let mut waves = vec![0usize; self.actions.len()];
        for i in 0..self.actions.len() {
            wave_of(i, &self.actions, &index, &mut waves, &mut Vec::new());
        }
        for (a, w) in self.actions.iter_mut().zip(waves) {
            a.wave = w;
        }
        self.actions.sort_by(|a, b| {
            (a.wave, &a.host, a.kind, &a.name, a.action)
                .cmp(&(b.wave, &b.host, b.kind, &b.name, b.action))
        });
        self.orphans
            .sort_by(|a, b| (&a.host, &a.name).cmp(&(&b.host, &b.name)));
        self.warnings.sort();
        self.warnings.dedup();
        // Errors keep the order they were found in: a host's error comes
        // before what it causes.
        let mut seen = BTreeSet::new();
        self.errors.retain(|e| seen.insert(e.clone()));
        Plan {
            in_sync: self.actions.is_empty(),
            actions: self.actions,
            orphans: self.orphans,
            warnings: self.warnings,
            errors: self.errors,
        }
    }
}

fn wave_of(
    i: usize,
    actions: &[Action],
    index: &HashMap<String, usize>,
    waves: &mut [usize],
    path: &mut Vec<usize>,
) -> usize {
    if waves[i] > 0 {
        return waves[i];
    }
    if path.contains(&i) {
        return 0; // cannot happen for an acyclic app graph; never loop
    }
    path.push(i);
    let mut w = 0;
    for dep in &actions[i].after {
        if let Some(&j) = index.get(dep) {
            w = w.max(wave_of(j, actions, index, waves, path));
        }
    }
    path.pop();
    waves[i] = w + 1;
    waves[i]
}

/// Why a managed container must be made again, if it must: "image `a` →
/// `b`; environment `X` changed", never a secret value. The spec hash
/// covers all but the secret values; those are compared through their
/// digests under the host's `key`, and not at all when it is withheld.
pub fn config_change(c: &ContainerSpec, o: &ObservedContainer, key: &SecretKey) -> Option<String> {
    let unkeyed = |d: &String| d == SECRET_DIGEST;
    if o.spec_hash.as_deref() == Some(c.spec_hash.as_str()) && !c.has_secrets() {
        return None;
    }
    if o.spec_fields.values().any(unkeyed) {
        // Made when secret values went into the spec hash unkeyed.
        return Some(
            "its secret values are recorded under the host's key from now on (once per container)"
                .into(),
        );
    }
    let wanted = match key {
        SecretKey::Known(k) => c.keyed_digests(Some(k)),
        SecretKey::Absent if c.has_secrets() => {
            return Some(format!(
                "secret values cannot be compared: the host's key (volume `{}`) is gone, and a new one is made",
                crate::contract::hostkey::VOLUME
            ))
        }
        SecretKey::Absent | SecretKey::Withheld => c.field_digests.clone(),
    };
    let same_hash = o.spec_hash.as_deref() == Some(c.spec_hash.as_str());
    if same_hash && (key == &SecretKey::Withheld || wanted == o.spec_fields) {
        return None;
    }
    if o.spec_fields.is_empty() {
        return Some("configuration changed".into());
    }
    let mut changes = Vec::new();
    let mut secrets = Vec::new();
    let keys: BTreeSet<&String> = wanted.keys().chain(o.spec_fields.keys()).collect();
    for k in keys {
        let secret = c.field_digests.get(k).is_some_and(unkeyed);
        let what = describe_field(k);
        match (wanted.get(k), o.spec_fields.get(k)) {
            (Some(d), Some(old)) if d == old => {}
            (Some(_), Some(_)) if secret && key == &SecretKey::Withheld => {}
            (Some(_), Some(_)) if secret => secrets.push(what),
            (Some(_), Some(old))
                if k == "image"
                    && !old.starts_with(crate::contract::hostkey::KEYED)
                    && !unkeyed(old) =>
            {
                changes.push(format!("image `{}` → `{}`", o.image, c.image));
            }
            (Some(_), Some(_)) => changes.push(format!("{what} changed")),
            (Some(_), None) => changes.push(format!("{what} added")),
            (None, Some(_)) => changes.push(format!("{what} removed")),
            (None, None) => {}
        }
    }
    if !secrets.is_empty() {
        changes.push(format!("a secret value changed ({})", secrets.join(", ")));
    }
    if changes.is_empty() {
        // The hash differs, and no field digest says where.
        return (!same_hash).then(|| "configuration changed".into());
    }
    Some(changes.join("; "))
}

fn describe_field(k: &str) -> String {
    if let Some(e) = k.strip_prefix("env.") {
        format!("environment `{e}`")
    } else if let Some(l) = k.strip_prefix("label.") {
        format!("label `{l}`")
    } else {
        format!("`{k}`")
    }
}

/// What the hosts look like once every action of `plan` has succeeded.
/// Used to check that planning again gives an empty plan.
pub fn simulate(desired: &Desired, observed: &Observed, plan: &Plan) -> Observed {
    use crate::observed::ObservedNetwork;
    let mut out = observed.clone();
    let container_state = |h: &mut ObservedHost, c: &ContainerSpec| {
        if c.has_secrets() && h.secret_key.is_absent() {
            // The apply makes the host's key with the first such container.
            h.secret_key = SecretKey::Known(crate::contract::hostkey::HostKey::fixed(0));
        }
        c.as_observed(ContainerState::Running, h.secret_key.known())
    };
    for a in &plan.actions {
        match (a.kind, a.action) {
            (Kind::Volume, Verb::Create) => {
                let v = &desired.hosts[&a.host].volumes[&a.name];
                let h = out.hosts.entry(a.host.clone()).or_default();
                h.volumes.push(v.as_observed(Some(0), Vec::new()));
            }
            (Kind::Volume, Verb::Relocate) => {
                let r = a.relocation.as_ref().expect("relocate has its facts");
                let v = &desired.hosts[&r.to].volumes[&a.name];
                if let Some(src) = out.hosts.get_mut(&r.from) {
                    for ov in &mut src.volumes {
                        if ov.name == a.name {
                            ov.retained_for = Some(r.to.clone());
                            ov.used_by.clear();
                        }
                    }
                    src.containers.retain(|c| {
                        !(c.stack.as_deref() == Some(&a.stack)
                            && c.app.as_ref().is_some_and(|x| r.apps.contains(x)))
                    });
                }
                let h = out.hosts.entry(r.to.clone()).or_default();
                h.volumes.retain(|ov| ov.name != a.name);
                let users = r
                    .apps
                    .iter()
                    .map(|app| names::container(&a.stack, app))
                    .collect();
                h.volumes.push(v.as_observed(r.bytes, users));
                for app in &r.apps {
                    let c = &desired.hosts[&r.to].containers[&names::container(&a.stack, app)];
                    h.containers.retain(|o| o.name != c.name);
                    let o = container_state(h, c);
                    h.containers.push(o);
                }
            }
            (Kind::Network, Verb::Create) => {
                out.hosts
                    .entry(a.host.clone())
                    .or_default()
                    .networks
                    .push(ObservedNetwork {
                        name: a.name.clone(),
                        managed: true,
                        internal: false,
                        stack: Some(a.stack.clone()),
                    });
            }
            (Kind::Container, Verb::Start)
                if !desired.hosts[&a.host].containers.contains_key(&a.name) =>
            {
                // An app kept on its old host until it can move.
                if let Some(h) = out.hosts.get_mut(&a.host) {
                    for o in h.containers.iter_mut().filter(|o| o.name == a.name) {
                        o.state = ContainerState::Running;
                    }
                }
            }
            (Kind::Container, Verb::Create | Verb::Recreate | Verb::Start) => {
                let c = &desired.hosts[&a.host].containers[&a.name];
                let h = out.hosts.entry(a.host.clone()).or_default();
                h.containers.retain(|o| o.name != c.name);
                let o = container_state(h, c);
                h.containers.push(o);
                for v in &mut h.volumes {
                    if c.mounts.iter().any(|m| m.source == v.name) && !v.used_by.contains(&c.name) {
                        v.used_by.push(c.name.clone());
                    }
                }
            }
            (Kind::Container, Verb::Remove) => {
                if let Some(h) = out.hosts.get_mut(&a.host) {
                    h.containers.retain(|o| o.name != a.name);
                    for v in &mut h.volumes {
                        v.used_by.retain(|u| *u != a.name);
                    }
                }
            }
            (Kind::Network, Verb::Remove) => {
                if let Some(h) = out.hosts.get_mut(&a.host) {
                    h.networks.retain(|o| o.name != a.name);
                }
            }
            (Kind::Volume, Verb::Remove) => {
                if let Some(h) = out.hosts.get_mut(&a.host) {
                    h.volumes.retain(|o| o.name != a.name);
                }
            }
            _ => {}
        }
    }
    out
}
