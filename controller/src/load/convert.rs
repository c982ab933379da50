//! `drover convert`: a Compose file written out as the drover Stack it is
//! read as. The Compose file is loaded first (so it is valid, and every
//! derived fact — the stack's name, data directories, shipped files — is
//! the loader's own); then its nodes are translated field by field, keeping
//! `${VAR}` references as written, so that the Stack means what the
//! Compose file meant.

use std::path::Path;

use crate::load::decode::{OPTION_FIELDS, VOLUME_FIELDS};
use crate::load::yaml::{Node, Value};
use crate::model::{NetworkMode, Stack};

/// Why a Compose file cannot be written as a drover Stack.
#[derive(Debug)]
pub struct Unconvertible(pub Vec<String>);

/// The drover Stack manifest of the Compose document `node` (its override
/// merged in), which the loader read as `stack`; `file_dir` is its folder.
pub fn stack_yaml(node: &Node, stack: &Stack, file_dir: &Path) -> Result<String, Unconvertible> {
    let mut problems = Vec::new();
    let top = entries(node);
    let x_drover = get(&top, "x-drover").map(entries).unwrap_or_default();
    let mut out = String::from("kind: Stack\n");
    out.push_str(&format!("name: {}\n", scalar(&stack.name)));
    if let Some(r) = get(&x_drover, "rollback") {
        out.push_str(&format!("rollback: {}\n", emit_inline(r)));
    }
    let default_host = get(&x_drover, "host");

    // Volumes: the file's, then those its data directories became.
    let declared = get(&top, "volumes").map(entries).unwrap_or_default();
    let mut volumes = String::new();
    for (name, v) in &stack.volumes {
        let raw = declared.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
        let mut fields: Vec<(String, &Node)> = Vec::new();
        if let Some(raw) = raw {
            for (k, v) in entries(raw) {
                match k.as_str() {
                    "driver" | "driver_opts" | "labels" => fields.push((k, v)),
                    "x-drover" => fields.extend(
                        entries(v)
                            .into_iter()
                            .filter(|(k, _)| VOLUME_FIELDS.contains(&k.as_str())),
                    ),
                    _ => {}
                }
            }
        }
        let _ = v;
        volumes.push_str(&format!("  {}:", key(name)));
        if fields.is_empty() {
            volumes.push_str(" {}\n");
        } else {
            volumes.push('\n');
            for (k, v) in fields {
                volumes.push_str(&emit_field(&k, v, 4));
            }
        }
    }
    if !volumes.is_empty() {
        out.push_str("volumes:\n");
        out.push_str(&volumes);
    }

    let services = get(&top, "services").map(entries).unwrap_or_default();
    let secrets = get(&top, "secrets").map(entries).unwrap_or_default();
    let configs = get(&top, "configs").map(entries).unwrap_or_default();
    out.push_str("apps:\n");
    // A service of several containers is an app per container, each
    // answering to the service's name: the loader named them.
    let service_of = |name: &'_ str| -> Option<(String, bool)> {
        if services.iter().any(|(k, _)| k == name) {
            return Some((name.to_string(), false));
        }
        let (service, _) = name.rsplit_once('-')?;
        let replica = stack.apps.get(name)?;
        replica
            .options
            .aliases
            .iter()
            .any(|a| a == service)
            .then(|| (service.to_string(), true))
    };
    let containers = |target: &str| -> Vec<String> {
        match stack.apps.contains_key(target) {
            true => vec![target.to_string()],
            false => (1..)
                .map(|i| super::compose::replica_name(target, i))
                .take_while(|n| stack.apps.contains_key(n))
                .collect(),
        }
    };
    for (name, app) in &stack.apps {
        let Some((service, replica)) = service_of(name) else {
            continue;
        };
        let Some((_, raw)) = services.iter().find(|(k, _)| *k == service) else {
            continue;
        };
        out.push_str(&format!("  {}:\n", key(name)));
        let svc = entries(raw);
        let mut host = default_host;
        let mut depends: Vec<(String, String)> = Vec::new();
        let mut links: Vec<String> = Vec::new();
        let mut files: Vec<String> = Vec::new();
        let mut aliases: Vec<String> = Vec::new();
        let mut body = String::new();
        for (k, v) in &svc {
            match k.as_str() {
                "image" | "command" | "entrypoint" | "env_file" | "healthcheck" | "user"
                | "working_dir" | "stop_signal" | "stop_grace_period" | "labels" | "cpus"
                | "restart" => body.push_str(&emit_field(k, v, 4)),
                k if OPTION_FIELDS.contains(&k) => body.push_str(&emit_field(k, v, 4)),
                "environment" => body.push_str(&environment(v, app)),
                "ports" => body.push_str(&list_field("ports", v, port)),
                "volumes" => {
                    // The loader's own reading: volumes (data directories
                    // and anonymous ones named), host paths, shipped files.
                    let mounts: Vec<String> = app
                        .volumes
                        .iter()
                        .map(|m| {
                            let ro = if m.value.read_only { ":ro" } else { "" };
                            format!("{}:{}{ro}", m.value.volume, m.value.target)
                        })
                        .collect();
                    body.push_str(&strings_field("volumes", &mounts));
                    problems.extend(app.binds.iter().filter(|b| b.value.device.is_none()).map(|b| format!(
                        "service `{name}` mounts the host {} `{}`: a drover Stack cannot (keep it in Compose, or keep the data in a named volume)",
                        if b.value.volume { "volume" } else { "path" },
                        b.value.host_path
                    )));
                    files.extend(items(v).filter_map(|item| shipped_source(item, file_dir)));
                }
                "depends_on" => match &v.value {
                    Value::Seq(list) => {
                        depends.extend(list.iter().map(|t| (text(t), "started".to_string())))
                    }
                    _ => {
                        for (target, entry) in entries(v) {
                            let mut condition = get(&entries(entry), "condition")
                                .map(|c| {
                                    text(c)
                                        .trim_start_matches("service_")
                                        .trim_end_matches("_successfully")
                                        .to_string()
                                })
                                .unwrap_or_else(|| "started".into());
                            if containers(&target)
                                .iter()
                                .any(|c| app.restart_with.contains(c))
                            {
                                condition.push_str(", restart: true");
                            }
                            depends.push((target, condition));
                        }
                    }
                },
                "links" => links
                    .extend(items(v).map(|l| text(l).split(':').next().unwrap_or("").to_string())),
                "mem_limit" => body.push_str(&emit_field("memory", v, 4)),
                "pull_policy" => {
                    let p = text(v).replace("if_not_present", "missing");
                    body.push_str(&format!("    pull: {}\n", scalar(&p)));
                }
                "deploy" => {
                    let limits = get(&entries(v), "resources")
                        .and_then(|r| get(&entries(r), "limits"))
                        .map(entries)
                        .unwrap_or_default();
                    if let Some(m) = get(&limits, "memory") {
                        body.push_str(&emit_field("memory", m, 4));
                    }
                    if let Some(c) = get(&limits, "cpus") {
                        body.push_str(&emit_field("cpus", c, 4));
                    }
                }
                "x-drover" => host = get(&entries(v), "host").or(host),
                // Said below, from what the loader read.
                "privileged" | "pid" | "devices" => {}
                "network_mode" => {
                    let mode = match &app.network_mode {
                        NetworkMode::Host => "host".to_string(),
                        NetworkMode::None => "none".to_string(),
                        NetworkMode::Bridge => "bridge".to_string(),
                        NetworkMode::App(t) => format!("app:{}", t.value),
                        NetworkMode::Stack => String::new(),
                    };
                    body.push_str(&format!("    network_mode: {}\n", scalar(&mode)));
                }
                "networks" => {
                    for (_, net) in entries(v) {
                        if let Some(a) = get(&entries(net), "aliases") {
                            aliases.extend(items(a).map(text));
                        }
                    }
                }
                kind @ ("secrets" | "configs") => {
                    let declared = if kind == "secrets" {
                        &secrets
                    } else {
                        &configs
                    };
                    for item in items(v) {
                        let (source, target) = match &item.value {
                            Value::Map(_) => {
                                let e = entries(item);
                                (
                                    get(&e, "source").map(text).unwrap_or_default(),
                                    get(&e, "target").map(text),
                                )
                            }
                            _ => (text(item), None),
                        };
                        let target = match (kind, target) {
                            (_, Some(t)) if t.starts_with('/') => t,
                            ("secrets", t) => {
                                format!("/run/secrets/{}", t.unwrap_or(source.clone()))
                            }
                            (_, t) => format!("/{}", t.unwrap_or(source.clone())),
                        };
                        let file = get(
                            &declared
                                .iter()
                                .find(|(k, _)| *k == source)
                                .map(|(_, v)| entries(v))
                                .unwrap_or_default(),
                            "file",
                        )
                        .map(text);
                        match file {
                            Some(f) => files.push(format!("{f}:{target}:ro")),
                            None => problems.push(format!(
                                "service `{name}` takes {} `{source}` from somewhere other than a file: a drover Stack ships files only",
                                kind.trim_end_matches('s')
                            )),
                        }
                    }
                }
                _ => {} // `profiles`, `x-…`: what made the app, not the app
            }
        }
        if let Some(h) = host {
            out.push_str(&emit_field("host", h, 4));
        }
        out.push_str(&body);
        // What only a Compose file's service may ask of its host.
        let asks = [
            ("privileged", app.options.privileged),
            ("pid", app.options.pid.is_some()),
            (
                "devices",
                app.binds.iter().any(|b| b.value.device.is_some()),
            ),
        ];
        problems.extend(asks.iter().filter(|(_, asked)| *asked).map(|(k, _)| {
            format!("service `{name}` asks for `{k}`: a drover Stack cannot (keep it in Compose)")
        }));
        problems.extend(app.addresses.keys().map(|n| {
            format!("service `{name}` has a fixed address on network `{n}`: a drover Stack cannot (keep it in Compose)")
        }));
        if !svc.iter().any(|(k, _)| k == "restart") {
            // Compose's default, which is not drover's.
            out.push_str("    restart: \"no\"\n");
        }
        // Compose's links are an order too, after `depends_on`.
        for l in links {
            if !depends.iter().any(|(t, _)| *t == l) {
                depends.push((l, "started".into()));
            }
        }
        if replica {
            aliases.push(service.clone());
        }
        let depends: Vec<(String, String)> = depends
            .into_iter()
            .flat_map(|(t, c)| containers(&t).into_iter().map(move |t| (t, c.clone())))
            .collect();
        if !depends.is_empty() {
            out.push_str("    depends_on:\n");
            for (target, condition) in depends {
                out.push_str(&format!(
                    "      {}: {{ condition: {condition} }}\n",
                    key(&target)
                ));
            }
        }
        out.push_str(&strings_field("files", &files));
        out.push_str(&strings_field("aliases", &aliases));
        out.push_str(&strings_field("networks", &app.networks));
        out.push_str(&strings_field("external_networks", &app.external_networks));
    }
    problems.extend(stack.networks.keys().map(|n| {
        format!(
            "network `{n}` has `internal` or `ipam`: a drover Stack cannot (keep it in Compose)"
        )
    }));
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(Unconvertible(problems))
    }
}

/// A mount of a file or folder of the repository (relative to the Compose
/// file) as a drover Stack's `files:` entry writes it; `None` for any other
/// mount.
fn shipped_source(item: &Node, file_dir: &Path) -> Option<String> {
    let (source, target, ro) = match &item.value {
        Value::Map(_) => {
            let e = entries(item);
            (
                get(&e, "source").map(text)?,
                get(&e, "target").map(text).unwrap_or_default(),
                get(&e, "read_only").is_some_and(|r| text(r) == "true"),
            )
        }
        _ => {
            let s = text(item);
            let parts: Vec<&str> = s.split(':').collect();
            match parts.as_slice() {
                [s, t, rest @ ..] => (
                    s.to_string(),
                    t.to_string(),
                    rest.first()
                        .is_some_and(|m| m.split(',').any(|o| o == "ro")),
                ),
                _ => return None,
            }
        }
    };
    let ro = if ro { ":ro" } else { "" };
    (source.starts_with('.') && file_dir.join(&source).exists())
        .then(|| format!("{source}:{target}{ro}"))
}

/// A port in the short syntax.
fn port(item: &Node) -> String {
    match &item.value {
        Value::Map(_) => {
            let e = entries(item);
            let ip = get(&e, "host_ip").map(|i| {
                let i = text(i);
                if i.contains(':') {
                    format!("[{i}]:")
                } else {
                    format!("{i}:")
                }
            });
            let proto = get(&e, "protocol")
                .map(text)
                .unwrap_or_else(|| "tcp".into());
            format!(
                "{}{}:{}/{proto}",
                ip.unwrap_or_default(),
                get(&e, "published").map(text).unwrap_or_default(),
                get(&e, "target").map(text).unwrap_or_default(),
            )
        }
        _ => text(item),
    }
}

/// `environment`, with Compose's `KEY` alone written `KEY: ${KEY}` when it
/// is set now (Compose leaves an unset one out; so does the Stack).
fn environment(v: &Node, app: &crate::model::App) -> String {
    let mut out = String::from("    environment:\n");
    let pairs: Vec<(String, Option<String>)> = match &v.value {
        Value::Seq(list) => list
            .iter()
            .map(|item| {
                let s = text(item);
                match s.split_once('=') {
                    Some((k, val)) => (k.to_string(), Some(val.to_string())),
                    None => (s, None),
                }
            })
            .collect(),
        _ => entries(v)
            .into_iter()
            .map(|(k, val)| (k, (val.value != Value::Null).then(|| text(val))))
            .collect(),
    };
    for (k, val) in pairs {
        let val = match val {
            Some(val) => val,
            None if app.environment.contains_key(&k) => format!("${{{k}}}"),
            None => continue,
        };
        out.push_str(&format!("      {}: {}\n", key(&k), scalar(&val)));
    }
    out
}

fn list_field(name: &str, v: &Node, each: fn(&Node) -> String) -> String {
    strings_field(name, &items(v).map(each).collect::<Vec<_>>())
}

fn strings_field(name: &str, list: &[String]) -> String {
    if list.is_empty() {
        return String::new();
    }
    let shown: Vec<String> = list.iter().map(|s| quoted(s)).collect();
    format!("    {name}: [{}]\n", shown.join(", "))
}

/// One field of the output at `indent`, its value as written.
fn emit_field(name: &str, v: &Node, indent: usize) -> String {
    let pad = " ".repeat(indent);
    match &v.value {
        Value::Map(e) if !e.is_empty() => {
            let mut out = format!("{pad}{}:\n", key(name));
            for (k, val) in e {
                out.push_str(&emit_field(&text(k), val, indent + 2));
            }
            out
        }
        _ => format!("{pad}{}: {}\n", key(name), emit_inline(v)),
    }
}

/// A value on one line: a scalar, a flow list or a flow mapping.
fn emit_inline(v: &Node) -> String {
    match &v.value {
        Value::Null => "null".into(),
        Value::Scalar { text, plain } if *plain && plain_ok(text) => text.clone(),
        Value::Scalar { text, .. } => quoted(text),
        Value::Seq(list) => format!(
            "[{}]",
            list.iter().map(emit_inline).collect::<Vec<_>>().join(", ")
        ),
        Value::Map(e) => format!(
            "{{ {} }}",
            e.iter()
                .map(|(k, v)| format!("{}: {}", key(&text(k)), emit_inline(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Whether a plain scalar stays itself inside a flow collection.
fn plain_ok(s: &str) -> bool {
    !s.is_empty()
        && !s.contains([',', '[', ']', '{', '}', '#', '"', '\''])
        && !s.contains(": ")
        && !s.starts_with(['&', '*', '!', '|', '>', '%', '@', '`', '-', '?', ':'])
        && !s.ends_with(':')
}

/// A string as YAML reads it back: plain where it may be, else quoted.
fn scalar(s: &str) -> String {
    if plain_ok(s)
        && s.parse::<f64>().is_err()
        && !matches!(
            s,
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "~"
        )
    {
        s.to_string()
    } else {
        quoted(s)
    }
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn key(s: &str) -> String {
    scalar(s)
}

fn text(n: &Node) -> String {
    n.as_scalar().unwrap_or_default().to_string()
}

fn entries(n: &Node) -> Vec<(String, &Node)> {
    match &n.value {
        Value::Map(e) => e.iter().map(|(k, v)| (text(k), v)).collect(),
        _ => Vec::new(),
    }
}

fn items(n: &Node) -> impl Iterator<Item = &Node> {
    match &n.value {
        Value::Seq(list) => list.iter().collect::<Vec<_>>().into_iter(),
        _ => vec![n].into_iter(),
    }
}

fn get<'n>(e: &[(String, &'n Node)], name: &str) -> Option<&'n Node> {
    e.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}
