//! Planning: `plan(&Desired, &Observed) -> Plan`, pure and synchronous.
//!
//! A plan is data: one action per Docker object, each with a human reason
//! and the ids of the actions it must wait for. Volumes and networks come
//! first; an app waits for the apps it depends on or links to; removals run
//! in reverse order. Volume data is never removed unless `prune_volumes` is
//! asked for, and nothing at all is planned for a host whose state is
//! missing — nor anything that would need it (a move from or to it, an app
//! that waits for an app on it).

mod authority;
mod containers;
mod cost;
mod diff;
mod order;
mod removals;
mod simulate;
mod volumes;

pub use cost::{estimate, Estimate};

pub use authority::{authority, may_be_current, Authority};
pub use diff::{config_change, describe_field};
pub use simulate::simulate;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::Serialize;

use crate::contract::hostkey::SecretKey;
use crate::desired::{ContainerSpec, Desired, VolumeSpec, SECRET_DIGEST};
use crate::model::names;
use crate::observed::{
    ContainerState, CopyRole, MovePhase, Observed, ObservedContainer, ObservedHost, ObservedVolume,
};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema,
)]
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

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema,
)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Relocation {
    pub from: String,
    pub to: String,
    /// The volume's size where the source host reports it (or the last
    /// move verified it).
    pub bytes: Option<u64>,
    /// Its number of entries, where the last move counted them.
    pub files: Option<u64>,
    /// Copy time and downtime from earlier moves on these hosts; `None`
    /// when there were none.
    pub estimate: Option<Estimate>,
    /// The apps stopped on `from` and started on `to` by the move.
    pub apps: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Orphan {
    pub host: String,
    pub kind: Kind,
    pub stack: String,
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
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

pub use crate::contract::names::HELPER_PREFIX;

fn listed(hosts: &[&str]) -> String {
    hosts
        .iter()
        .map(|h| format!("`{h}`"))
        .collect::<Vec<_>>()
        .join(" and ")
}

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
    p.pinned();
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
        if wanted > 0 {
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
        if self.opts.allow_empty {
            // Allowed, and said loudly: everything goes.
            self.warnings.push(format!(
                "the manifests hold no app: all {total} app container(s) drover manages on {} are removed",
                listed(&hosts)
            ));
            return;
        }
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
}
