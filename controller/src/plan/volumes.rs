//! Planning volumes: made where the spec wants them, moved with their app,
//! never made empty while a copy may exist elsewhere.

use super::*;

impl<'a> Planner<'a> {
    /// Managed copies of a stack's volume on the hosts that were read.
    pub(super) fn copies(&self, stack: &str, volume: &str) -> Vec<(&'a str, &'a ObservedVolume)> {
        self.copies
            .get(&(stack, volume))
            .cloned()
            .unwrap_or_default()
    }

    pub(super) fn block_volume(&mut self, stack: &str, volume: &str, error: String) {
        self.errors.push(error);
        self.blocked_volumes
            .insert((stack.to_string(), volume.to_string()));
    }

    fn create_volume(&mut self, host: &str, v: &VolumeSpec, reason: String) {
        self.push(Action {
            id: action_id(host, Kind::Volume, &v.name),
            host: host.to_string(),
            kind: Kind::Volume,
            action: Verb::Create,
            stack: v.stack.clone(),
            name: v.name.clone(),
            reason,
            after: Vec::new(),
            relocation: None,
            wave: 0,
        });
    }

    /// Where a volume with `from:` is made from (`blog/pgdata@NAME on
    /// `node-a``), or the located error that keeps it from being made.
    pub(super) fn seed_of(&self, v: &VolumeSpec) -> Result<Option<String>, String> {
        let Some(seed) = &v.from else {
            return Ok(None);
        };
        // A backup is looked for when the volume is made: the plan does not
        // read repositories.
        if let Some(repo) = &seed.repository {
            return Ok(Some(format!(
                "backup `{}` of {}/{} in repository `{repo}`",
                seed.snapshot.as_deref().unwrap_or("latest"),
                seed.stack,
                seed.volume
            )));
        }
        let wanted = match &seed.snapshot {
            Some(n) => format!("snapshot `{n}`"),
            None => "snapshot".to_string(),
        };
        match self.observed.find_snapshot(&seed.stack, &seed.volume, seed.snapshot.as_deref()) {
            Some((h, o)) => Ok(Some(format!(
                "{}/{}@{} on `{h}`",
                seed.stack,
                seed.volume,
                o.snapshot.as_ref().map_or("", |s| s.name.as_str())
            ))),
            None if !self.unreadable.is_empty() => Err(format!(
                "{}: volume `{}` is to be made from a {wanted} of `{}/{}`; none was found on the hosts that could be read, and some could not: it is not made empty",
                seed.at, v.name, seed.stack, seed.volume
            )),
            None => Err(format!(
                "{}: volume `{}` is to be made from a {wanted} of `{}/{}`, and there is none: take one with `drover volume snapshot {}/{}`{}",
                seed.at,
                v.name,
                seed.stack,
                seed.volume,
                seed.stack,
                seed.volume,
                seed.snapshot.as_ref().map_or(String::new(), |n| format!(" --name {n}"))
            )),
        }
    }

    pub(super) fn volumes(&mut self) {
        // (stack, app) -> the first move that carries the app's volumes.
        let mut moving_apps: HashMap<(String, String), String> = HashMap::new();
        for (host, dh) in &self.desired.hosts {
            for v in dh.volumes.values() {
                // Held where it is by a pinned app (see `pinned`).
                if self
                    .blocked_volumes
                    .contains(&(v.stack.clone(), v.volume.clone()))
                {
                    continue;
                }
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
                    Authority::On(h) if &h == host => {
                        // A seed from a snapshot that was interrupted is
                        // finished before its apps start.
                        let seeding = self.readable[host.as_str()]
                            .seeding
                            .iter()
                            .any(|s| s.volume == v.name);
                        if seeding && v.from.is_some() {
                            match self.seed_of(v) {
                                Ok(from) => {
                                    let why = format!(
                                        "an interrupted copy from {} is finished",
                                        from.unwrap_or_default()
                                    );
                                    self.create_volume(host, v, why);
                                }
                                Err(e) => self.block_volume(&v.stack, &v.volume, e),
                            }
                        }
                        continue;
                    }
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
                            // With a backup, what to run if that host is lost.
                            let repo = v
                                .backup
                                .as_ref()
                                .map(|b| b.to.clone())
                                .or_else(|| self.desired.repositories.keys().next().cloned());
                            let recover = repo.map_or(String::new(), |r| format!(
                                "; if it is lost, make the volume on `{host}` from its last backup: `drover volume recover {}/{} --from {r}`",
                                v.stack, v.volume
                            ));
                            self.block_volume(&v.stack, &v.volume, format!(
                                "volume `{}` was not found on the hosts that could be read, and {hosts} could not be read; drover will not create an empty copy{recover}",
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
                            let reason = match self.seed_of(v) {
                                Ok(None) => "volume does not exist".to_string(),
                                Ok(Some(from)) => {
                                    format!("volume does not exist; made from {from}")
                                }
                                Err(e) => {
                                    self.block_volume(&v.stack, &v.volume, e);
                                    continue;
                                }
                            };
                            self.create_volume(host, v, reason);
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
                    relocation: Some({
                        let bytes = src.and_then(|c| c.size_bytes);
                        Relocation {
                            estimate: super::estimate(self.observed, &from, host, bytes),
                            files: src
                                .and_then(|c| c.copy.as_ref())
                                .and_then(|r| r.cost)
                                .and_then(|c| c.files),
                            from,
                            to: host.clone(),
                            bytes,
                            apps,
                        }
                    }),
                    wave: 0,
                });
            }
        }
    }
}
