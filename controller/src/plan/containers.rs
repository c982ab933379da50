//! Planning networks and containers: made, recreated (with the reason),
//! started; names and ports held by others block the app.

use super::*;

impl<'a> Planner<'a> {
    /// An app that mounts a host path is pinned to the host it runs on: a
    /// spec that places it elsewhere is a located error, and the app, its
    /// volumes and its data stay where they are.
    pub(super) fn pinned(&mut self) {
        let desired = self.desired;
        for (host, dh) in &desired.hosts {
            for c in dh.containers.values().filter(|c| !c.binds.is_empty()) {
                // Docker would make a missing volume, empty: never that.
                if let Some(&oh) = self.readable.get(host.as_str()) {
                    for b in c.binds.iter().filter(|b| b.must_exist) {
                        if !oh.volumes.iter().any(|v| v.name == b.host_path) {
                            self.errors.push(format!(
                                "{}: volume `{}` is external to stack `{}` and does not exist on `{host}`; app `{}` is skipped (make it, or bring its data, with `docker volume create {}`)",
                                b.at, b.host_path, c.stack, c.app, b.host_path
                            ));
                            self.blocked.insert((c.stack.clone(), c.app.clone()));
                        }
                    }
                }
                let elsewhere = self.readable.iter().find(|(h, oh)| {
                    **h != host.as_str()
                        && oh.containers.iter().any(|o| o.managed && o.name == c.name)
                });
                let Some((from, _)) = elsewhere else {
                    continue;
                };
                let b = &c.binds[0];
                let (uses, way_out) = match (&b.device, b.volume) {
                    (Some(_), _) => ("uses the host device", "a device is its host's"),
                    (None, true) => (
                        "mounts the host volume",
                        "move the data into a named volume to let it move",
                    ),
                    (None, false) => (
                        "mounts the host path",
                        "move the data into a named volume to let it move",
                    ),
                };
                self.errors.push(format!(
                    "{}: app `{}/{}` {uses} `{}` of `{from}`, so it stays there: it is not moved to `{host}` ({way_out})",
                    b.at, c.stack, c.app, b.host_path
                ));
                self.blocked.insert((c.stack.clone(), c.app.clone()));
                for m in &c.mounts {
                    self.blocked_volumes
                        .insert((c.stack.clone(), m.volume.clone()));
                }
            }
        }
    }

    /// Skips the apps of `dh` that join the network `name`.
    fn block_joining(&mut self, dh: &crate::desired::DesiredHost, name: &str) {
        for c in dh.containers.values() {
            if c.network == name || c.extra_networks.iter().any(|n| n == name) {
                self.blocked.insert((c.stack.clone(), c.app.clone()));
            }
        }
    }

    pub(super) fn networks(&mut self) {
        for (host, dh) in &self.desired.hosts {
            let Some(&oh) = self.readable.get(host.as_str()) else {
                continue;
            };
            for n in dh.networks.values() {
                let found = oh.networks.iter().find(|o| o.name == n.name);
                if n.external {
                    if found.is_none() {
                        self.errors.push(format!(
                            "network `{}` is external to stack `{}` and does not exist on `{host}`; its apps there that join it are skipped (make it with `docker network create {}`)",
                            n.name, n.stack, n.name
                        ));
                        self.block_joining(dh, &n.name);
                    }
                    continue;
                }
                match found {
                    Some(o) if o.managed && o.config.as_ref() != n.config() => {
                        self.errors.push(format!(
                            "network `{}` on `{host}` was made with other settings than stack `{}` gives it now ({}); drover does not change a network in place, and the stack's apps on it there are skipped: remove them and the network (`docker network rm {}`), and drover makes it again",
                            n.name,
                            n.stack,
                            n.config().map_or("Docker's defaults", |c| c.as_str()),
                            n.name
                        ));
                        self.block_joining(dh, &n.name);
                    }
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

    pub(super) fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    pub(super) fn containers(&mut self) {
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
                if !c.binds.is_empty() && self.blocked.contains(&key) {
                    continue; // pinned elsewhere: said by `pinned`
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
            for net in std::iter::once(&c.network).chain(&c.extra_networks) {
                if let Some(n) = self.index_of(&action_id(&c.host, Kind::Network, net)) {
                    after.push(n);
                }
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
    pub(super) fn container(&mut self, host: &str, c: &ContainerSpec) -> Option<usize> {
        let oh = self.readable[host];
        let found = oh.containers.iter().find(|o| o.name == c.name);
        let compared = found.map(|o| (o, config_change(c, o, &oh.secret_key)));
        if oh.secret_key == SecretKey::Withheld && c.has_secrets() {
            self.warnings.push(format!(
                "secret values on `{host}` are not compared: the observed state was read from a file, which holds no host key"
            ));
        }
        // A restore or clone under way holds the apps of its volume.
        let busy = c.mounts.iter().find_map(|m| {
            let restoring = oh.restores.iter().find(|r| r.volume == m.source);
            let seeding = oh.seeding.iter().find(|r| r.volume == m.source);
            match (restoring, seeding) {
                (Some(r), _) => Some(format!(
                    "a restore of volume `{}` from `{}` is not finished; `drover volume restore` with that snapshot finishes it",
                    m.source, r.from
                )),
                // (One with `from:` is finished by its volume's action.)
                (_, Some(_))
                    if self
                        .desired
                        .hosts
                        .get(host)
                        .and_then(|h| h.volumes.get(&m.source))
                        .is_some_and(|v| v.from.is_some()) =>
                {
                    None
                }
                (_, Some(r)) => Some(format!(
                    "volume `{}` is being cloned from `{}` and is not complete; `drover volume clone` again finishes it",
                    m.source, r.from
                )),
                _ => None,
            }
        });
        if let Some(why) = busy {
            self.errors.push(format!(
                "app `{}/{}` on `{host}` is not started: {why}",
                c.stack, c.app
            ));
            self.blocked.insert((c.stack.clone(), c.app.clone()));
            return None;
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
            Some((o, None)) if c.is_done(o.state, o.exit_code) => return None,
            Some((o, None)) => match o.state {
                ContainerState::Running | ContainerState::Restarting => return None,
                ContainerState::Created | ContainerState::Exited => {
                    (Verb::Start, format!("container is {}", o.state.as_str()))
                }
                ContainerState::Dead => (Verb::Recreate, "container is dead".to_string()),
                ContainerState::Paused if oh.frozen.iter().any(|f| f.container == c.name) => {
                    self.warnings.push(format!(
                        "container `{}` on `{host}` is frozen for a snapshot; it is unfrozen once the snapshot ends, or by the next pass if the drover taking it stopped",
                        c.name
                    ));
                    return None;
                }
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
    pub(super) fn port_clash(&self, oh: &ObservedHost, c: &ContainerSpec) -> Option<String> {
        for p in c.ports.iter().filter(|p| p.host != 0) {
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
}
