//! Planning removals: what the spec no longer asks for, in reverse order,
//! never volume data unless asked.

use super::*;

impl<'a> Planner<'a> {
    pub(super) fn removals(&mut self) {
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
}
