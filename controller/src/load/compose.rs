//! Compose files read as Stacks: which files, the stack's name, the
//! override file, profiles, and the forms of Compose that a drover Stack
//! does not have (long syntax of ports and mounts, `links`, `deploy`).
//!
//! A service becomes an app through the same decoder as a Stack's apps
//! ([`Dialect::Compose`]), so every field means one thing in both formats.

use std::collections::{BTreeMap, HashSet};

use crate::diag::Pos;
use crate::load::decode::{
    app, fields, mapping, named_entries, sequence, string, text, volume, Ctx, Dialect,
};
use crate::load::values::{parse_mount, parse_port};
use crate::load::yaml::{Node, Value};
use crate::model::{At, Mount, Port, Rollback, Stack};

/// The names of a Compose file, in the order Compose prefers them.
pub const FILE_NAMES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// The override files merged over it, in the order Compose looks for them.
pub const OVERRIDE_NAMES: &[&str] = &[
    "compose.override.yaml",
    "compose.override.yml",
    "docker-compose.override.yaml",
    "docker-compose.override.yml",
];

/// The top-level fields of a Compose file.
pub const TOP_FIELDS: &[&str] = &[
    "version", "name", "services", "volumes", "networks", "secrets", "configs", "include",
    "x-drover",
];

/// The fields of a top-level Compose volume.
const VOLUME_FIELDS: &[&str] = &[
    "driver",
    "driver_opts",
    "labels",
    "name",
    "external",
    "x-drover",
];

/// The environment variable that names the active profiles, as in Compose.
pub const PROFILES_VAR: &str = "COMPOSE_PROFILES";

/// The Compose file a folder's entries name, in Compose's order of
/// preference.
pub fn file_in<'a>(names: impl IntoIterator<Item = &'a str> + Clone) -> Option<&'static str> {
    FILE_NAMES
        .iter()
        .find(|f| names.clone().into_iter().any(|n| n == **f))
        .copied()
}

/// A stack name made from a folder's name as Compose makes a project name
/// (lower case; letters, digits, `-` and `_`; starting with a letter or a
/// digit), with `_` written `-` as drover's stack names are.
pub fn project_name(folder: &str) -> String {
    folder
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_')
        .map(|c| if c == '_' { '-' } else { c })
        .collect::<String>()
        .trim_start_matches('-')
        .chars()
        .take(63)
        .collect()
}

/// The Stack a Compose document describes. `folder` is the name of the
/// folder that holds the file, for a file without `name:`.
pub fn stack(ctx: &mut Ctx, node: &Node, folder: &str) -> Option<Stack> {
    let f = fields(ctx, node, "a Compose file", TOP_FIELDS)?;
    let name = match f.get("name") {
        Some(n) => crate::load::decode::name_value(ctx, n, "stack")?,
        None => {
            let derived = project_name(folder);
            if derived.is_empty() {
                ctx.error_hint(
                    node.pos,
                    format!("the folder `{folder}` gives this Compose file no stack name"),
                    Some("add `name: my-stack` at the top of the file".into()),
                );
                return None;
            }
            At {
                value: derived,
                loc: ctx.loc(node.pos),
            }
        }
    };
    let networks = f
        .get("networks")
        .map(|n| declared_networks(ctx, n))
        .unwrap_or_else(|| vec!["default".to_string()]);
    for key in ["secrets", "configs", "include"] {
        if let Some(n) = f.get(key) {
            {
                ctx.error_hint(
                    n.pos,
                    format!("drover does not support Compose's top-level `{key}` yet"),
                    Some(match key {
                        "include" => {
                            "put each included file in a folder of its own: each is a stack".into()
                        }
                        _ => "pass the value in `environment:` from drover's environment or `.env`"
                            .into(),
                    }),
                );
            }
        }
    }
    let mut host = None;
    let mut rollback = Rollback::Never;
    if let Some(x) = f.get("x-drover") {
        if let Some(d) = fields(ctx, x, "`x-drover`", &["host", "rollback"]) {
            host = d
                .get("host")
                .and_then(|h| crate::load::decode::name_value(ctx, h, "host"));
            if let Some(r) = d.get("rollback") {
                rollback = crate::load::decode::choice(
                    ctx,
                    r,
                    "`rollback`",
                    &[("auto", Rollback::Auto), ("never", Rollback::Never)],
                )
                .unwrap_or(Rollback::Never);
            }
        }
    }

    let mut volumes = BTreeMap::new();
    if let Some(v) = f.get("volumes") {
        for (vname, pos, vnode) in named_entries(ctx, v, "`volumes`", "volume") {
            if let Some(vol) = compose_volume(ctx, &vname, pos, vnode) {
                volumes.insert(vname, vol);
            }
        }
    }
    let active = active_profiles(ctx);
    let mut apps = BTreeMap::new();
    match f.get("services") {
        None => ctx.error_hint(
            node.pos,
            "a Compose file without `services`",
            Some("add the services the stack runs under `services:`".into()),
        ),
        Some(s) => {
            for (sname, pos, snode) in named_entries(ctx, s, "`services`", "service") {
                if !in_profiles(ctx, snode, &active) {
                    continue;
                }
                let dialect = Dialect::Compose {
                    host: host.as_ref(),
                    networks: &networks,
                };
                if let Some(app) = app(ctx, sname.clone(), pos, snode, dialect) {
                    apps.insert(sname, app);
                }
            }
        }
    }
    Some(Stack {
        name: name.value,
        loc: name.loc,
        volumes,
        apps,
        rollback,
    })
}

/// The fields of a top-level Compose network.
const NETWORK_FIELDS: &[&str] = &[
    "driver",
    "external",
    "attachable",
    "name",
    "internal",
    "ipam",
    "driver_opts",
    "labels",
    "enable_ipv6",
];

/// The networks a Compose file declares. Each is the stack's network on
/// each host (`drover-<stack>`): services reach each other by name and
/// alias as in Compose, but are not kept apart yet; `validate` says so.
fn declared_networks(ctx: &mut Ctx, node: &Node) -> Vec<String> {
    let mut names = vec!["default".to_string()];
    let mut joined = Vec::new();
    // A network's name becomes no Docker object's: any Compose name will do.
    let entries: Vec<(String, &Node)> = mapping(ctx, node, "`networks`")
        .unwrap_or(&[])
        .iter()
        .filter_map(|(k, v)| Some((k.as_scalar()?.to_string(), v)))
        .collect();
    for (name, n) in entries {
        let Some(f) = fields(ctx, n, &format!("network `{name}`"), NETWORK_FIELDS) else {
            continue;
        };
        for key in ["external", "internal", "ipam", "driver_opts", "enable_ipv6"] {
            if let Some(v) = f.get(key) {
                if v.as_scalar() != Some("false") {
                    ctx.error_hint(
                        v.pos,
                        format!("drover does not support `{key}` (in network `{name}`) yet"),
                        Some(format!(
                            "drover makes one network per stack on each host, `drover-<stack>`; remove `{key}:`"
                        )),
                    );
                }
            }
        }
        if let Some(d) = f.get("driver") {
            if let Some(driver) = string(ctx, d, "`driver`").filter(|d| d != "bridge") {
                ctx.error_hint(
                    d.pos,
                    format!("network driver `{driver}` is not supported"),
                    Some("drover's networks are bridge networks on each host".into()),
                );
            }
        }
        if name != "default" {
            joined.push(format!("`{name}`"));
        }
        names.push(name);
    }
    if !joined.is_empty() {
        ctx.note(
            node.pos,
            format!(
                "the networks {} are one network on each host, the stack's: its services reach each other by name and alias, and are not kept apart",
                joined.join(", ")
            ),
        );
    }
    names
}

/// A service's `networks` (a list, or a mapping with `aliases`): the
/// aliases it answers to. Each network must be declared.
pub(super) fn service_networks(ctx: &mut Ctx, node: &Node, declared: &[String]) -> Vec<String> {
    let mut aliases = Vec::new();
    let entries: Vec<(&Node, Option<&Node>)> = match &node.value {
        Value::Seq(items) => items.iter().map(|i| (i, None)).collect(),
        _ => mapping(ctx, node, "`networks`")
            .unwrap_or(&[])
            .iter()
            .map(|(k, v)| (k, Some(v)))
            .collect(),
    };
    for (k, v) in entries {
        let Some(name) = string(ctx, k, "a network") else {
            continue;
        };
        if !declared.contains(&name) {
            ctx.error_hint(
                k.pos,
                format!("network `{name}` is not declared"),
                Some("declare it under the top-level `networks:`".into()),
            );
            continue;
        }
        let Some(v) = v.filter(|v| v.value != Value::Null) else {
            continue;
        };
        let what = format!("network `{name}`");
        let known = [
            "aliases",
            "ipv4_address",
            "ipv6_address",
            "priority",
            "mac_address",
            "link_local_ips",
            "driver_opts",
            "gw_priority",
        ];
        let Some(f) = fields(ctx, v, &what, &known) else {
            continue;
        };
        if let Some(a) = f.get("aliases") {
            for item in sequence(ctx, a, "`aliases`").unwrap_or(&[]) {
                if let Some(t) = text(ctx, item, "an alias") {
                    aliases.push(t.expose().to_string());
                }
            }
        }
        for key in [
            "ipv4_address",
            "ipv6_address",
            "mac_address",
            "link_local_ips",
            "driver_opts",
        ] {
            if let Some(n) = f.get(key) {
                ctx.error_hint(
                    n.pos,
                    format!("drover does not support `{key}` (in {what})"),
                    Some("drover's networks give addresses themselves; reach the service by its name".into()),
                );
            }
        }
    }
    aliases
}

/// The profiles `COMPOSE_PROFILES` turns on (`*` for all).
fn active_profiles(ctx: &Ctx) -> HashSet<String> {
    ctx.env
        .get(PROFILES_VAR)
        .unwrap_or_default()
        .split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Whether a service runs: it has no profile, or one that is active.
fn in_profiles(ctx: &mut Ctx, service: &Node, active: &HashSet<String>) -> bool {
    let Value::Map(entries) = &service.value else {
        return true;
    };
    let Some((_, p)) = entries
        .iter()
        .find(|(k, _)| k.as_scalar() == Some("profiles"))
    else {
        return true;
    };
    let Value::Seq(items) = &p.value else {
        ctx.error(
            p.pos,
            format!("`profiles` must be a list, found {}", p.kind_name()),
        );
        return true;
    };
    items.is_empty()
        || active.contains("*")
        || items
            .iter()
            .filter_map(|i| text(ctx, i, "a profile"))
            .any(|t| active.contains(t.expose()))
}

/// A top-level Compose volume: Compose's `driver`, `driver_opts` and
/// `labels`, with drover's own fields under `x-drover`.
fn compose_volume(
    ctx: &mut Ctx,
    name: &str,
    pos: Pos,
    node: &Node,
) -> Option<crate::model::Volume> {
    let what = format!("volume `{name}`");
    let f = fields(ctx, node, &what, VOLUME_FIELDS)?;
    for key in ["name", "external"] {
        if let Some(n) = f.get(key) {
            ctx.error_hint(
                n.pos,
                format!("drover does not take `{key}` (in {what})"),
                Some(format!(
                    "drover makes and names its volumes itself (`<stack>-{name}`) and never touches one it did not make; remove `{key}:` and copy the data in"
                )),
            );
        }
    }
    // Compose's fields and drover's from `x-drover`, as one drover volume.
    let mut entries: Vec<(Node, Node)> = Vec::new();
    if let Value::Map(e) = &node.value {
        entries.extend(
            e.iter()
                .filter(|(k, _)| matches!(k.as_scalar(), Some("driver" | "driver_opts" | "labels")))
                .cloned(),
        );
    }
    if let Some(x) = f.get("x-drover") {
        for (k, v) in mapping(ctx, x, "`x-drover`").unwrap_or(&[]) {
            if matches!(k.as_scalar(), Some("driver" | "driver_opts" | "labels")) {
                ctx.error(
                    k.pos,
                    format!(
                        "write `{}` beside `x-drover`, as in Compose",
                        k.as_scalar().unwrap_or("")
                    ),
                );
                continue;
            }
            entries.push((k.clone(), v.clone()));
        }
    }
    let merged = Node {
        value: Value::Map(entries),
        pos: node.pos,
    };
    volume(ctx, name.to_string(), pos, &merged)
}

/// A mount in Compose's long syntax: `{ type: volume, source, target,
/// read_only }`.
pub(super) fn long_mount(ctx: &mut Ctx, node: &Node) -> Option<Mount> {
    let f = fields(
        ctx,
        node,
        "a mount",
        &[
            "type",
            "source",
            "target",
            "read_only",
            "volume",
            "bind",
            "tmpfs",
            "consistency",
        ],
    )?;
    let kind = f
        .get("type")
        .and_then(|t| string(ctx, t, "`type`"))
        .unwrap_or_else(|| "volume".into());
    if kind != "volume" {
        let hint = match kind.as_str() {
            "bind" => {
                "drover mounts named volumes: declare one under `volumes:` and mount it by name"
            }
            "tmpfs" => "write the mount point under the service's `tmpfs:`",
            _ => "drover mounts named volumes",
        };
        ctx.error_hint(
            f.get("type").map_or(node.pos, |t| t.pos),
            format!("a mount of type `{kind}` is not supported yet"),
            Some(hint.into()),
        );
        return None;
    }
    for key in ["bind", "tmpfs"] {
        if let Some(n) = f.get(key) {
            ctx.error(n.pos, format!("`{key}` belongs to a mount of type `{key}`"));
        }
    }
    let Some(source) = f.get("source").and_then(|s| text(ctx, s, "`source`")) else {
        ctx.error_hint(
            node.pos,
            "a mount without `source` (an anonymous volume) is not supported",
            Some("name a volume declared under `volumes:` in `source:`".into()),
        );
        return None;
    };
    let target = match f.get("target") {
        Some(t) => text(ctx, t, "`target`")?,
        None => {
            ctx.error(node.pos, "a mount without `target`");
            return None;
        }
    };
    let read_only = f
        .get("read_only")
        .and_then(|r| {
            crate::load::decode::choice(ctx, r, "`read_only`", &[("true", true), ("false", false)])
        })
        .unwrap_or(false);
    if let Some(v) = f.get("volume") {
        fields(ctx, v, "`volume`", &["nocopy", "subpath"]);
        if let Value::Map(e) = &v.value {
            if let Some((k, _)) = e.iter().find(|(k, _)| k.as_scalar() == Some("subpath")) {
                ctx.error(
                    k.pos,
                    "`subpath` is not supported yet: mount the whole volume",
                );
            }
        }
    }
    let short = format!(
        "{}:{}{}",
        source.expose(),
        target.expose(),
        if read_only { ":ro" } else { "" }
    );
    parse_mount(&short)
        .map_err(|(msg, hint)| ctx.error_hint(node.pos, msg, hint))
        .ok()
}

/// A port in Compose's long syntax: `{ target, published, host_ip,
/// protocol }`.
pub(super) fn long_port(ctx: &mut Ctx, node: &Node) -> Option<Port> {
    let f = fields(
        ctx,
        node,
        "a port",
        &[
            "target",
            "published",
            "host_ip",
            "protocol",
            "mode",
            "name",
            "app_protocol",
        ],
    )?;
    let word = |ctx: &mut Ctx, key: &str| {
        f.get(key)
            .and_then(|n| text(ctx, n, &format!("`{key}`")))
            .map(|t| t.expose().to_string())
    };
    let target = word(ctx, "target");
    let published = word(ctx, "published");
    let ip = word(ctx, "host_ip");
    let protocol = word(ctx, "protocol").unwrap_or_else(|| "tcp".into());
    let (Some(target), Some(published)) = (target, published) else {
        ctx.error_hint(
            node.pos,
            "a port needs `target` and `published`",
            Some("drover publishes on the host port you choose: add `published:`".into()),
        );
        return None;
    };
    let ip = match ip {
        Some(ip) if ip.contains(':') => format!("[{ip}]:"),
        Some(ip) => format!("{ip}:"),
        None => String::new(),
    };
    parse_port(&format!("{ip}{published}:{target}/{protocol}"))
        .map_err(|msg| ctx.error(node.pos, msg))
        .ok()
}

/// One of Compose's legacy `links`: `SERVICE` or `SERVICE:ALIAS`.
pub(super) fn link(ctx: &mut Ctx, node: &Node) -> Option<At<String>> {
    let t = text(ctx, node, "a link")?;
    let (service, alias) = t
        .expose()
        .split_once(':')
        .unwrap_or((t.expose(), t.expose()));
    if service != alias {
        ctx.error_hint(
            node.pos,
            format!("a link alias (`{alias}` for `{service}`) is not supported"),
            Some(format!("reach the service by its name, `{service}`")),
        );
        return None;
    }
    let name = Node {
        value: Value::Scalar {
            text: service.to_string(),
            plain: true,
        },
        pos: node.pos,
    };
    crate::load::decode::name_value(ctx, &name, "app")
}

/// What `deploy: { resources: { limits } }` sets.
pub(super) struct Limits<'n> {
    pub memory: Option<&'n Node>,
    pub cpus: Option<&'n Node>,
}

/// `deploy`: its resource limits, and one replica; anything else of Swarm's
/// is a located error.
pub(super) fn deploy_limits<'n>(ctx: &mut Ctx, node: &'n Node) -> Option<Limits<'n>> {
    let f = fields(ctx, node, "`deploy`", &["resources", "replicas"])?;
    if let Some(r) = f.get("replicas") {
        if string(ctx, r, "`replicas`").as_deref() != Some("1") {
            ctx.error_hint(
                r.pos,
                "drover runs one container per app",
                Some("name another service for another container".into()),
            );
        }
    }
    let resources = fields(ctx, f.get("resources")?, "`resources`", &["limits"])?;
    let limits = fields(
        ctx,
        resources.get("limits")?,
        "`limits`",
        &["cpus", "memory"],
    )?;
    Some(Limits {
        memory: limits.get("memory"),
        cpus: limits.get("cpus"),
    })
}

/// Compose's override file merged over the main file, as Compose merges
/// them: mappings key by key, lists of the same key joined (without
/// repeats), and `command`, `entrypoint` and a healthcheck's `test`
/// replaced, as is any value of another type.
pub fn merge(base: Node, over: Node) -> Node {
    merge_at(base, over, "")
}

fn merge_at(base: Node, over: Node, key: &str) -> Node {
    match (base.value, over.value) {
        (Value::Map(mut entries), Value::Map(more)) => {
            for (k, v) in more {
                match entries
                    .iter()
                    .position(|(bk, _)| bk.as_scalar().is_some() && bk.as_scalar() == k.as_scalar())
                {
                    Some(i) => {
                        let name = k.as_scalar().unwrap_or("").to_string();
                        let old = entries.remove(i);
                        let merged = merge_at(old.1, v, &name);
                        entries.insert(i, (old.0, merged));
                    }
                    None => entries.push((k, v)),
                }
            }
            Node {
                value: Value::Map(entries),
                pos: base.pos,
            }
        }
        (Value::Seq(mut items), Value::Seq(more))
            if !matches!(key, "command" | "entrypoint" | "test") =>
        {
            for item in more {
                if !items.iter().any(|i| i.value == item.value) {
                    items.push(item);
                }
            }
            Node {
                value: Value::Seq(items),
                pos: base.pos,
            }
        }
        (_, value) => Node {
            value,
            pos: over.pos,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_are_made_as_compose_makes_them() {
        assert_eq!(project_name("My_App.v2"), "my-appv2");
        assert_eq!(project_name("__x"), "x");
        assert_eq!(project_name("..."), "");
    }

    #[test]
    fn the_preferred_file_name_wins() {
        assert_eq!(
            file_in(["docker-compose.yml", "compose.yaml", "x.yaml"]),
            Some("compose.yaml")
        );
        assert_eq!(file_in(["stack.yaml"]), None);
    }
}
