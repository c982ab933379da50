//! The rules that span documents: hosts exist, references resolve, a volume
//! lives on one host, host ports do not clash, cross-host links can be
//! reached, stacks are unique and the dependency graph has no cycle.

use std::collections::{BTreeMap, HashMap};

use crate::diag::{similar, Diagnostic, Loc};
use crate::load::decode::Parsed;
use crate::load::graph::AppGraph;
use crate::model::{At, Host, NetworkMode, Spec, Stack, LOCAL_HOST};

/// Endpoint of the implicit `local` host: `$DOCKER_HOST` or the default
/// socket, resolved when connecting. An empty string stands for that.
pub const IMPLICIT_ENDPOINT: &str = "";

/// Checks everything and returns the spec; it is valid exactly when no
/// diagnostic was added.
pub fn validate(parsed: Parsed, diags: &mut Vec<Diagnostic>) -> Spec {
    let parsed_notes = parsed.notes.clone();
    let (hosts, implicit_local) = match parsed.cluster {
        Some((list, _)) => (
            list.into_iter().map(|h| (h.name.clone(), h)).collect(),
            false,
        ),
        None => {
            let local = Host {
                name: LOCAL_HOST.to_string(),
                loc: None,
                endpoint: IMPLICIT_ENDPOINT.to_string(),
                address: "127.0.0.1".to_string(),
                labels: BTreeMap::new(),
                tls: None,
            };
            (BTreeMap::from([(LOCAL_HOST.to_string(), local)]), true)
        }
    };
    let mut v = Validator {
        hosts: &hosts,
        implicit_local,
        diags,
    };

    let mut stacks: BTreeMap<String, Stack> = BTreeMap::new();
    for mut stack in parsed.stacks {
        if let Some(first) = stacks.get(&stack.name) {
            let msg = format!("stack `{}` is already defined at {}", stack.name, first.loc);
            v.error(
                &stack.loc,
                msg,
                Some("stack names are unique across the directory".into()),
            );
            continue;
        }
        v.stack(&mut stack);
        stacks.insert(stack.name.clone(), stack);
    }
    v.host_ports(&stacks);
    v.object_names(&stacks);
    let repositories: BTreeMap<String, crate::model::Repository> = parsed
        .repositories
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    v.repository_names(&stacks, &repositories);
    v.volume_sources(&stacks);
    v.cycles(&stacks);
    Spec {
        hosts,
        implicit_local,
        stacks,
        repositories,
        notes: parsed_notes,
    }
}

struct Validator<'a> {
    hosts: &'a BTreeMap<String, Host>,
    implicit_local: bool,
    diags: &'a mut Vec<Diagnostic>,
}

impl Validator<'_> {
    /// Every `from:` names a volume of a stack in the directory, not itself.
    fn volume_sources(&mut self, stacks: &BTreeMap<String, Stack>) {
        for stack in stacks.values() {
            for (name, vol) in &stack.volumes {
                let Some(from) = &vol.from else { continue };
                // A backup may be of a stack that is not in these manifests.
                if from.repository.is_some() {
                    continue;
                }
                let Some(src) = stacks.get(&from.stack.value) else {
                    let hint = similar(&from.stack.value, stacks.keys().map(String::as_str));
                    let msg = format!(
                        "`from` names stack `{}`, which is not in the manifests",
                        from.stack.value
                    );
                    self.error(&from.stack.loc, msg, hint);
                    continue;
                };
                if !src.volumes.contains_key(&from.volume.value) {
                    let hint = similar(&from.volume.value, src.volumes.keys().map(String::as_str))
                        .or_else(|| {
                            Some(format!("stack `{}` has no volumes", src.name))
                                .filter(|_| src.volumes.is_empty())
                        });
                    let msg = format!(
                        "`from` names volume `{}` of stack `{}`, which has no such volume",
                        from.volume.value, src.name
                    );
                    self.error(&from.volume.loc, msg, hint);
                    continue;
                }
                if src.name == stack.name && &from.volume.value == name {
                    self.error(
                        &from.loc,
                        format!("volume `{name}` cannot be made from itself"),
                        None,
                    );
                }
            }
        }
    }

    /// Every `backup.to` and `from.repository` names a repository of the
    /// Cluster.
    fn repository_names(
        &mut self,
        stacks: &BTreeMap<String, Stack>,
        repositories: &BTreeMap<String, crate::model::Repository>,
    ) {
        let named = stacks
            .values()
            .flat_map(|s| s.volumes.values())
            .flat_map(|v| {
                let to = v.backup.as_ref().map(|b| ("`backup.to`", &b.to));
                let from = v
                    .from
                    .as_ref()
                    .and_then(|f| f.repository.as_ref())
                    .map(|r| ("`from.repository`", r));
                to.into_iter().chain(from)
            });
        let mut errors = Vec::new();
        for (field, name) in named {
            if repositories.contains_key(&name.value) {
                continue;
            }
            let hint = similar(&name.value, repositories.keys().map(String::as_str)).or_else(|| {
                Some(if repositories.is_empty() {
                    "declare it under `repositories:` in the Cluster, with its `url` and `password`".to_string()
                } else {
                    format!(
                        "the Cluster's repositories are {}",
                        repositories
                            .keys()
                            .map(|r| format!("`{r}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            });
            errors.push((
                name.loc.clone(),
                format!(
                    "{field} names repository `{}`, which the Cluster does not declare",
                    name.value
                ),
                hint,
            ));
        }
        for (loc, message, hint) in errors {
            self.error(&loc, message, hint);
        }
    }

    fn error(&mut self, loc: &Loc, message: String, hint: Option<String>) {
        // The source line is attached later from the file cache.
        self.diags
            .push(Diagnostic::new(loc.clone(), message).with_hint(hint));
    }

    fn check_host(&mut self, host: &At<String>) -> bool {
        if self.hosts.contains_key(&host.value) {
            return true;
        }
        let hint = if self.implicit_local {
            Some("there is no Cluster document, so the only host is `local`".into())
        } else {
            similar(&host.value, self.hosts.keys().map(String::as_str)).or_else(|| {
                Some(format!(
                    "the Cluster's hosts are {}",
                    self.hosts
                        .keys()
                        .map(|h| format!("`{h}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
        };
        self.error(&host.loc, format!("unknown host `{}`", host.value), hint);
        false
    }

    fn stack(&mut self, stack: &mut Stack) {
        let app_names: Vec<String> = stack.apps.keys().cloned().collect();
        let volume_names: Vec<String> = stack.volumes.keys().cloned().collect();
        // Which host each volume is mounted from, and by which app first.
        let mut volume_users: BTreeMap<String, (String, String, Loc)> = BTreeMap::new();

        for app in stack.apps.values_mut() {
            match &app.host {
                Some(h) => {
                    let h = h.clone();
                    self.check_host(&h);
                }
                None if self.implicit_local => {
                    app.host = Some(At {
                        value: LOCAL_HOST.to_string(),
                        loc: app.loc.clone(),
                    });
                }
                None => {
                    let hosts = self
                        .hosts
                        .keys()
                        .map(|h| format!("`{h}`"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    // A Compose service is placed with `x-drover`.
                    let compose =
                        crate::load::compose::is_compose_file(std::path::Path::new(&*app.loc.file));
                    let (what, hint) = if compose {
                        (
                            format!("service `{}` has no host", app.name),
                            format!("add `x-drover: {{ host: … }}` to the service or the file, with one of {hosts}"),
                        )
                    } else {
                        (
                            format!("app `{}` has no `host:`", app.name),
                            format!("add `host:` with one of {hosts}"),
                        )
                    };
                    self.error(&app.loc, what, Some(hint));
                }
            }
        }

        // Names on a network are the same in any case.
        let mut lower: HashMap<String, &str> = HashMap::new();
        for app in stack.apps.values() {
            if let Some(other) = lower.insert(app.name.to_ascii_lowercase(), &app.name) {
                let msg = format!(
                    "apps `{other}` and `{}` differ only in case; they would answer to the same name",
                    app.name
                );
                self.error(&app.loc, msg, Some("rename one of them".into()));
            }
        }
        for app in stack.apps.values() {
            let mut targets: HashMap<&str, &Loc> = HashMap::new();
            for m in &app.volumes {
                if let Some(prev) = targets.insert(&m.value.target, &m.loc) {
                    let msg = format!(
                        "`{}` is mounted twice in app `{}` (also at {prev})",
                        m.value.target, app.name
                    );
                    self.error(&m.loc, msg, None);
                }
                if !stack.volumes.contains_key(&m.value.volume) {
                    let hint = similar(&m.value.volume, volume_names.iter().map(String::as_str))
                        .or_else(|| {
                            Some(format!(
                                "declare it under the stack's `volumes:` as `{}: {{}}`",
                                m.value.volume
                            ))
                        });
                    self.error(
                        &m.loc,
                        format!(
                            "volume `{}` is not declared in stack `{}`",
                            m.value.volume, stack.name
                        ),
                        hint,
                    );
                    continue;
                }
                let host = app.host().to_string();
                match volume_users.get(&m.value.volume) {
                    None => {
                        volume_users.insert(
                            m.value.volume.clone(),
                            (host, app.name.clone(), m.loc.clone()),
                        );
                    }
                    Some((first_host, first_app, _)) if *first_host != host => {
                        let msg = format!(
                            "volume `{}` is mounted by app `{first_app}` on `{first_host}` and by app `{}` on `{host}`; a volume lives on one host",
                            m.value.volume, app.name
                        );
                        self.error(
                            &m.loc,
                            msg,
                            Some("place every app that mounts it on the same host".into()),
                        );
                    }
                    Some(_) => {}
                }
            }
            for target in app.references() {
                if target.value == app.name {
                    continue; // a cycle of one, reported with the cycles
                }
                if !stack.apps.contains_key(&target.value) {
                    let hint = similar(&target.value, app_names.iter().map(String::as_str));
                    self.error(
                        &target.loc,
                        format!("app `{}` is not in stack `{}`", target.value, stack.name),
                        hint.or_else(|| {
                            Some("`depends_on` and `links` name apps of the same stack".into())
                        }),
                    );
                }
            }
            if let NetworkMode::App(t) = &app.network_mode {
                if let Some(target) = stack.apps.get(&t.value) {
                    if target.host() != app.host() {
                        let msg = format!(
                            "app `{}` on `{}` shares the network of `{}` on `{}`; a network stack is on one host",
                            app.name,
                            app.host(),
                            target.name,
                            target.host()
                        );
                        self.error(&t.loc, msg, Some("place both apps on the same host".into()));
                    }
                }
            }
            for link in &app.links {
                let Some(target) = stack.apps.get(&link.value) else {
                    continue;
                };
                // Another host reaches it at the first port it publishes.
                let known = target.ports.first().is_some_and(|p| p.value.host != 0);
                if target.host() != app.host() && !known {
                    let msg = format!(
                        "app `{}` on `{}` links to `{}` on `{}`, which publishes no port of its own choosing",
                        app.name,
                        app.host(),
                        target.name,
                        target.host()
                    );
                    self.error(
                        &link.loc,
                        msg,
                        Some(format!(
                            "publish a port on `{}` with `ports:` (`HOST:CONTAINER`), or place both apps on one host",
                            target.name
                        )),
                    );
                }
            }
        }

        for vol in stack.volumes.values() {
            match (&vol.host, volume_users.get(&vol.name)) {
                (Some(h), None) => {
                    self.check_host(h);
                }
                (Some(h), Some((host, app, _))) => {
                    if self.check_host(h) && h.value != *host {
                        let msg = format!(
                            "volume `{}` is placed on `{}` but app `{app}` mounts it on `{host}`",
                            vol.name, h.value
                        );
                        self.error(
                            &h.loc,
                            msg,
                            Some("a mounted volume follows its apps: remove its `host:`".into()),
                        );
                    }
                }
                (None, None) if !self.implicit_local => {
                    let msg = format!(
                        "volume `{}` is not mounted by any app and has no `host:`",
                        vol.name
                    );
                    self.error(
                        &vol.loc,
                        msg,
                        Some("give it `host:` so drover knows where it lives".into()),
                    );
                }
                (None, _) => {}
            }
        }
    }

    fn host_ports(&mut self, stacks: &BTreeMap<String, Stack>) {
        // (host, port, protocol) -> the IPs bound so far with who bound them.
        // (host, port, protocol) -> (ip, `stack/app`, where) of each binding.
        type Binding = (String, String, Loc);
        let mut used: BTreeMap<(String, u16, &str), Vec<Binding>> = BTreeMap::new();
        for stack in stacks.values() {
            for app in stack.apps.values() {
                for p in app.ports.iter().filter(|p| p.value.host != 0) {
                    let key = (
                        app.host().to_string(),
                        p.value.host,
                        p.value.protocol.as_str(),
                    );
                    let entry = used.entry(key).or_default();
                    let clash = entry.iter().find(|(ip, _, _)| {
                        ip.is_empty() || p.value.ip.is_empty() || *ip == p.value.ip
                    });
                    if let Some((_, who, loc)) = clash {
                        let msg = format!(
                            "host port {}/{} on `{}` is already published by `{who}` at {loc}",
                            p.value.host,
                            p.value.protocol.as_str(),
                            app.host()
                        );
                        self.error(
                            &p.loc,
                            msg,
                            Some("two apps on one host cannot publish the same port".into()),
                        );
                    } else {
                        entry.push((
                            p.value.ip.clone(),
                            format!("{}/{}", stack.name, app.name),
                            p.loc.clone(),
                        ));
                    }
                }
            }
        }
    }

    /// `<stack>-<app>` and `<stack>-<volume>` must name one object each:
    /// stack `a-b` with app `c` and stack `a` with app `b-c` would share a
    /// container.
    fn object_names(&mut self, stacks: &BTreeMap<String, Stack>) {
        let mut containers: BTreeMap<String, (String, Loc)> = BTreeMap::new();
        let mut volumes: BTreeMap<String, (String, Loc)> = BTreeMap::new();
        for stack in stacks.values() {
            // drover's own objects (`drover-lease`, `drover-move-…`,
            // `drover-copy-…`) are named `drover-…`: no stack's may be.
            if stack.name == "drover" || stack.name.starts_with("drover-") {
                let msg = format!(
                    "stack name `{}` is reserved: drover names its own containers and volumes `drover-…`",
                    stack.name
                );
                self.error(&stack.loc, msg, Some("rename the stack".into()));
            }
            for app in stack.apps.values() {
                let name = crate::model::names::container(&stack.name, &app.name);
                let who = format!("app `{}` of stack `{}`", app.name, stack.name);
                if let Some((first, loc)) = containers.get(&name) {
                    let msg = format!(
                        "{who} would get the container name `{name}`, which {first} at {loc} has"
                    );
                    self.error(&app.loc, msg, Some("rename the app or the stack".into()));
                } else {
                    containers.insert(name, (who, app.loc.clone()));
                }
            }
            for vol in stack.volumes.values() {
                let name = crate::model::names::volume(&stack.name, &vol.name);
                let who = format!("volume `{}` of stack `{}`", vol.name, stack.name);
                if let Some((first, loc)) = volumes.get(&name) {
                    let msg = format!("{who} would get the Docker volume name `{name}`, which {first} at {loc} has");
                    self.error(&vol.loc, msg, Some("rename the volume or the stack".into()));
                } else {
                    volumes.insert(name, (who, vol.loc.clone()));
                }
            }
        }
    }

    fn cycles(&mut self, stacks: &BTreeMap<String, Stack>) {
        let graph = AppGraph::new(stacks.values());
        for cycle in graph.cycles() {
            let (stack, first) = &cycle[0];
            let next = &cycle.get(1).unwrap_or(&cycle[0]).1;
            let app = &stacks[stack].apps[first];
            let Some(entry) = app.references().find(|t| t.value == *next) else {
                continue;
            };
            let mut path: Vec<String> = cycle.iter().map(|(_, a)| format!("`{a}`")).collect();
            path.push(format!("`{first}`"));
            let msg = format!("dependency cycle in stack `{stack}`: {}", path.join(" → "));
            self.error(
                &entry.loc,
                msg,
                Some("`depends_on` and `links` must not lead back to the app itself".into()),
            );
        }
    }
}
