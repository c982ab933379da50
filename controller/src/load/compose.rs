//! Compose files read as Stacks: which files, the stack's name, the
//! override file, profiles, and the forms of Compose that a drover Stack
//! does not have (long syntax of ports and mounts, `links`, `deploy`).
//!
//! A service becomes an app through the same decoder as a Stack's apps
//! ([`Dialect::Compose`]), so every field means one thing in both formats.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use crate::diag::Pos;
use crate::load::decode::{
    app, fields, mapping, named_entries, sequence, string, text, volume, Ctx, Dialect,
};
use crate::load::files::{io_reason, lexically_normal};
use crate::load::values::{bind_mode, parse_mount, parse_port, PROPAGATIONS};
use crate::load::yaml::{Node, Value};
use crate::model::{At, Bind, ConfigFile, Mount, NetworkSettings, Port, Rollback, Stack, Subnet};

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

/// Whether `path` names a Compose file (by its name, as Compose does).
pub fn is_compose_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| FILE_NAMES.contains(&n))
}

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
        .unwrap_or_else(|| {
            vec![DeclaredNetwork {
                key: "default".to_string(),
                external: None,
                settings: NetworkSettings::default(),
            }]
        });
    let secrets = f
        .get("secrets")
        .map(|n| declared_contents(ctx, n, "secrets"))
        .unwrap_or_default();
    let configs = f
        .get("configs")
        .map(|n| declared_contents(ctx, n, "configs"))
        .unwrap_or_default();
    for key in ["include"] {
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
    let mut external = BTreeMap::new();
    if let Some(v) = f.get("volumes") {
        for (vname, pos, vnode) in named_entries(ctx, v, "`volumes`", "volume") {
            match compose_volume(ctx, &vname, pos, vnode) {
                Some(ComposeVolume::Drover(vol)) => {
                    volumes.insert(vname, *vol);
                }
                Some(ComposeVolume::External(real, must_exist)) => {
                    external.insert(vname, (real, must_exist));
                }
                None => {}
            }
        }
    }
    let active = active_profiles(ctx);
    let data_dirs = RefCell::new(DataDirs {
        external,
        declared: volumes.keys().cloned().collect(),
        found: BTreeMap::new(),
        secrets,
        configs,
    });
    let mut apps = BTreeMap::new();
    let mut services = Vec::new();
    let mut replicated = BTreeMap::new();
    let mut unread = HashSet::new();
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
                    data_dirs: &data_dirs,
                };
                services.push(sname.clone());
                let count = replicas(ctx, snode);
                let Some(app) = app(ctx, sname.clone(), pos, snode, dialect) else {
                    unread.insert(sname);
                    continue;
                };
                if count == 1 {
                    apps.insert(sname, app);
                    continue;
                }
                one_of_several(ctx, snode, &app);
                for i in 1..=count {
                    let mut replica = app.clone();
                    replica.name = replica_name(&sname, i);
                    // Refused above, once.
                    replica.addresses.clear();
                    replica.options.aliases.push(sname.clone());
                    apps.insert(replica.name.clone(), replica);
                }
                replicated.insert(sname, (pos, count));
            }
        }
    }
    name_services(ctx, &mut apps, (&replicated, &unread), &services);
    // Each data directory is a volume of the stack.
    for (dir, pos) in data_dirs.into_inner().found {
        let empty = Node {
            value: Value::Map(Vec::new()),
            pos,
        };
        if let Some(v) = volume(ctx, dir.clone(), pos, &empty) {
            volumes.insert(dir, v);
        }
    }
    distinct_addresses(ctx, &apps);
    Some(Stack {
        name: name.value,
        loc: name.loc,
        volumes,
        apps,
        rollback,
        networks: networks
            .into_iter()
            .filter(|d| d.external.is_none() && d.settings != NetworkSettings::default())
            .map(|d| (d.key, d.settings))
            .collect(),
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

/// A network a Compose file declares.
#[derive(Debug, Clone)]
pub struct DeclaredNetwork {
    /// Its name in the file.
    pub key: String,
    /// For an `external: true` network, its name on the hosts.
    pub external: Option<String>,
    /// `internal` and the subnets of `ipam`.
    pub settings: NetworkSettings,
}

/// The networks a Compose file declares. Each is a network of the stack on
/// each host where a service joins it (`drover-<stack>-<network>`;
/// `default` is `drover-<stack>`), kept apart as in Compose; an external
/// one is a network of the host, joined by its own name.
fn declared_networks(ctx: &mut Ctx, node: &Node) -> Vec<DeclaredNetwork> {
    let mut out = vec![DeclaredNetwork {
        key: "default".to_string(),
        external: None,
        settings: NetworkSettings::default(),
    }];
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
        let external = f.get("external").is_some_and(|v| {
            crate::load::decode::choice(ctx, v, "`external`", &[("true", true), ("false", false)])
                .unwrap_or(false)
        });
        if external {
            // Compose's rule: an external network takes no other settings.
            for (key, v) in f.iter().filter(|(k, _)| !matches!(*k, "external" | "name")) {
                ctx.error_hint(
                    v.pos,
                    format!("`{key}` cannot be set on external network `{name}`"),
                    Some("it is made outside the stack: remove `{key}:`".replace("{key}", key)),
                );
            }
            let real = match f.get("name") {
                Some(v) => string(ctx, v, "`name`"),
                None => Some(name.clone()),
            };
            if let Some(real) = real {
                out.retain(|d| d.key != name);
                out.push(DeclaredNetwork {
                    key: name,
                    external: Some(real),
                    settings: NetworkSettings::default(),
                });
            }
            continue;
        }
        let mut settings = NetworkSettings::default();
        if let Some(v) = f.get("internal") {
            settings.internal = crate::load::decode::choice(
                ctx,
                v,
                "`internal`",
                &[("true", true), ("false", false)],
            )
            .unwrap_or(false);
        }
        if let Some(v) = f.get("ipam") {
            settings.subnets = ipam(ctx, v);
        }
        for key in ["driver_opts", "enable_ipv6"] {
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
        only_default(ctx, f.get("driver"), ("`driver`", "bridge"), |driver| {
            (
                format!("network driver `{driver}` is not supported"),
                "drover's networks are bridge networks on each host".into(),
            )
        });
        out.retain(|d| d.key != name);
        out.push(DeclaredNetwork {
            key: name,
            external: None,
            settings,
        });
    }
    out
}

/// An IPv4 network written `ADDRESS/PREFIX`.
fn cidr(s: &str) -> Option<(std::net::Ipv4Addr, u8)> {
    let (addr, prefix) = s.split_once('/')?;
    let prefix = prefix.parse::<u8>().ok().filter(|p| *p <= 32)?;
    Some((addr.parse().ok()?, prefix))
}

/// Whether `addr` is in the network `(net, prefix)`.
fn within((net, prefix): (std::net::Ipv4Addr, u8), addr: std::net::Ipv4Addr) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(net) & mask == u32::from(addr) & mask
}

/// A network's `ipam`: Docker's default driver, with the IPv4 subnets of
/// `config` (each with its `gateway` and `ip_range` inside it).
fn ipam(ctx: &mut Ctx, node: &Node) -> Vec<Subnet> {
    let Some(f) = fields(ctx, node, "`ipam`", &["driver", "config", "options"]) else {
        return Vec::new();
    };
    only_default(ctx, f.get("driver"), ("`driver`", "default"), |driver| {
        (
            format!("IPAM driver `{driver}` is not supported"),
            "drover's networks take their addresses from Docker's default driver: remove `driver:`"
                .into(),
        )
    });
    if let Some(pos) = f.key_pos("options") {
        ctx.error_hint(
            pos,
            "drover does not support `ipam.options`",
            Some("remove `options:`".into()),
        );
    }
    let mut out = Vec::new();
    let items = f.get("config").and_then(|c| sequence(ctx, c, "`config`"));
    for item in items.unwrap_or(&[]) {
        let known = ["subnet", "gateway", "ip_range", "aux_addresses"];
        let Some(c) = fields(ctx, item, "an entry of `ipam.config`", &known) else {
            continue;
        };
        if let Some(pos) = c.key_pos("aux_addresses") {
            ctx.error_hint(
                pos,
                "drover does not support `aux_addresses`",
                Some("remove it: give the services their addresses with `ipv4_address`".into()),
            );
        }
        let Some(node) = c.get("subnet") else {
            ctx.error_hint(
                item.pos,
                "an entry of `ipam.config` needs `subnet`",
                Some("for example `subnet: 172.28.0.0/16`".into()),
            );
            continue;
        };
        let Some(subnet) = text(ctx, node, "`subnet`") else {
            continue;
        };
        let subnet = subnet.expose().trim().to_string();
        let Some(net) = cidr(&subnet) else {
            ctx.error_hint(
                node.pos,
                format!("`{subnet}` is not an IPv4 subnet"),
                Some("write it `ADDRESS/PREFIX`, for example `172.28.0.0/16` (IPv6 is not supported yet)".into()),
            );
            continue;
        };
        let mut inside = |key: &str, range: bool| -> Option<String> {
            let node = c.get(key)?;
            let value = text(ctx, node, &format!("`{key}`"))?
                .expose()
                .trim()
                .to_string();
            let fits = match range {
                true => cidr(&value).is_some_and(|(a, p)| p >= net.1 && within(net, a)),
                false => value.parse().is_ok_and(|a| within(net, a)),
            };
            if !fits {
                ctx.error(
                    node.pos,
                    format!("`{key}: {value}` is not in the subnet `{subnet}`"),
                );
            }
            Some(value)
        };
        let gateway = inside("gateway", false);
        let ip_range = inside("ip_range", true);
        out.push(Subnet {
            subnet,
            gateway,
            ip_range,
        });
    }
    if items.is_none_or(|i| i.is_empty()) {
        ctx.error_hint(
            node.pos,
            "`ipam` gives the network no subnet",
            Some("write `ipam: { config: [{ subnet: 172.28.0.0/16 }] }`, or remove `ipam:`".into()),
        );
    }
    out
}

/// A service's `networks` (a list, or a mapping with `aliases`): the
/// aliases it answers to, and the networks it joins. Each network must be
/// declared.
pub(super) fn service_networks(
    ctx: &mut Ctx,
    node: &Node,
    declared: &[DeclaredNetwork],
) -> ServiceNetworks {
    let mut out = ServiceNetworks::default();
    let ServiceNetworks {
        aliases,
        joined,
        external,
        addresses,
    } = &mut out;
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
        let network = declared.iter().find(|d| d.key == name);
        match network {
            None => {
                ctx.error_hint(
                    k.pos,
                    format!("network `{name}` is not declared"),
                    Some("declare it under the top-level `networks:`".into()),
                );
                continue;
            }
            Some(DeclaredNetwork {
                external: Some(real),
                ..
            }) => {
                if !external.contains(real) {
                    external.push(real.clone());
                }
            }
            Some(_) => {
                if !joined.contains(&name) {
                    joined.push(name.clone());
                }
            }
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
        if let (Some(n), Some(network)) = (f.get("ipv4_address"), network) {
            if let Some(address) = fixed_address(ctx, n, network) {
                addresses.insert(name.clone(), address);
            }
        }
        for key in [
            "ipv6_address",
            "mac_address",
            "link_local_ips",
            "driver_opts",
        ] {
            if let Some(n) = f.get(key) {
                ctx.error_hint(
                    n.pos,
                    format!("drover does not support `{key}` (in {what})"),
                    Some("drover's networks give addresses themselves; reach the service by its name, or give it an `ipv4_address`".into()),
                );
            }
        }
    }
    out
}

/// The networks a service joins, as its `networks:` says.
#[derive(Default)]
pub(super) struct ServiceNetworks {
    pub aliases: Vec<String>,
    /// Networks of the stack, by their names in the file.
    pub joined: Vec<String>,
    /// Networks of the host, by their names there.
    pub external: Vec<String>,
    /// Fixed addresses, by the names of the stack's networks in the file.
    pub addresses: BTreeMap<String, At<std::net::Ipv4Addr>>,
}

/// A service's `ipv4_address` on `network`: in one of the subnets the
/// network's `ipam` gives it (Docker gives fixed addresses on no other).
fn fixed_address(
    ctx: &mut Ctx,
    node: &Node,
    network: &DeclaredNetwork,
) -> Option<At<std::net::Ipv4Addr>> {
    let written = text(ctx, node, "`ipv4_address`")?
        .expose()
        .trim()
        .to_string();
    let Ok(address) = written.parse::<std::net::Ipv4Addr>() else {
        ctx.error(node.pos, format!("`{written}` is not an IPv4 address"));
        return None;
    };
    let key = &network.key;
    if network.external.is_some() {
        ctx.error_hint(
            node.pos,
            format!("drover does not give fixed addresses on external network `{key}`"),
            Some(
                "remove `ipv4_address`, or declare the network in the file with its `ipam`".into(),
            ),
        );
        return None;
    }
    let subnets = &network.settings.subnets;
    if subnets.is_empty() {
        ctx.error_hint(
            node.pos,
            format!("a fixed address needs a subnet of network `{key}`, and it has none"),
            Some(format!(
                "give network `{key}` one: `ipam: {{ config: [{{ subnet: 172.28.0.0/16 }}] }}`"
            )),
        );
        return None;
    }
    if !subnets
        .iter()
        .filter_map(|s| cidr(&s.subnet))
        .any(|net| within(net, address))
    {
        let list: Vec<&str> = subnets.iter().map(|s| s.subnet.as_str()).collect();
        ctx.error(
            node.pos,
            format!(
                "`{address}` is not in a subnet of network `{key}` ({})",
                list.join(", ")
            ),
        );
        return None;
    }
    Some(At {
        value: address,
        loc: ctx.loc(node.pos),
    })
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

/// The key and value of `key` in a mapping, read as written.
fn entry<'n>(node: &'n Node, key: &str) -> Option<&'n (Node, Node)> {
    match &node.value {
        Value::Map(entries) => entries.iter().find(|(k, _)| k.as_scalar() == Some(key)),
        _ => None,
    }
}

/// The most containers a service may run.
const MAX_REPLICAS: u32 = 100;

/// How many containers a service runs: its `deploy.replicas` or `scale`
/// (Compose's two spellings), 1 when it writes neither. A value that is not
/// a whole number from 1 to [`MAX_REPLICAS`] is a located error (and 1).
fn replicas(ctx: &mut Ctx, service: &Node) -> u32 {
    let written = [
        entry(service, "deploy").and_then(|(_, d)| entry(d, "replicas")),
        entry(service, "scale"),
    ];
    let mut counts = Vec::new();
    for (k, v) in written.into_iter().flatten() {
        let what = format!("`{}`", k.as_scalar().unwrap_or_default());
        let Some(t) = text(ctx, v, &what) else {
            continue;
        };
        match t.expose().trim().parse::<u32>() {
            Ok(n @ 1..=MAX_REPLICAS) => counts.push((n, v.pos)),
            Ok(0) => ctx.error_hint(
                v.pos,
                format!("{what} is 0: the service would run no container"),
                Some("remove the service, or give it a profile (`profiles: [off]`) that is not active".into()),
            ),
            _ => ctx.error_hint(
                v.pos,
                format!("{what} must be a number of containers from 1 to {MAX_REPLICAS}"),
                None,
            ),
        }
    }
    match counts.as_slice() {
        [(a, _), (b, at)] if a != b => {
            ctx.error(
                *at,
                format!("`scale: {b}` differs from `deploy.replicas: {a}`"),
            );
            1
        }
        [(n, _), ..] => *n,
        [] => 1,
    }
}

/// The app of a service's `i`th container (from 1), named as Compose names
/// the container (`<project>-<service>-<i>`).
pub fn replica_name(service: &str, i: u32) -> String {
    format!("{service}-{i}")
}

/// Each fixed address taken by one app alone on its host's network.
fn distinct_addresses(ctx: &mut Ctx, apps: &BTreeMap<String, crate::model::App>) {
    let mut taken = BTreeMap::new();
    for app in apps.values() {
        for (network, address) in &app.addresses {
            let key = (app.host().to_string(), network.clone(), address.value);
            if let Some(first) = taken.insert(key, app.name.clone()) {
                ctx.error_at(
                    address.loc.clone(),
                    format!(
                        "`{}` on network `{network}` is app `{first}`'s address already",
                        address.value
                    ),
                    Some("give each service an address of its own".into()),
                );
            }
        }
    }
}

/// What one container of several may not ask for: a name of its own
/// (`container_name`), a fixed port of its host or a fixed address.
fn one_of_several(ctx: &mut Ctx, service: &Node, app: &crate::model::App) {
    if !app.addresses.is_empty() {
        let at = entry(service, "networks").map_or(service.pos, |(k, _)| k.pos);
        ctx.error_hint(
            at,
            "a service of several containers cannot have a fixed address",
            Some("remove `ipv4_address`: each container answers to the service's name".into()),
        );
    }
    if let Some((k, _)) = entry(service, "container_name") {
        ctx.error_hint(
            k.pos,
            "a service of several containers cannot name its container",
            Some("remove `container_name`: each container answers to the service's name".into()),
        );
    }
    for port in app.ports.iter().filter(|p| p.value.host != 0) {
        ctx.error_at(
            port.loc.clone(),
            format!(
                "a service of several containers cannot publish the host's port {}: only one container can",
                port.value.host
            ),
            Some(format!(
                "publish the container's port alone (`\"{}\"`), and the host picks a free port for each",
                port.value.container
            )),
        );
    }
}

/// The apps of the services of several containers named where the others
/// name their service: each `depends_on` and link waits for all of them,
/// and `network_mode: service:…` joins the first. A service's own name
/// that is taken by a container of another is a located error. What names
/// a service that could not be read (`unread`) is left out: what is wrong
/// is said at the service, once.
fn name_services(
    ctx: &mut Ctx,
    apps: &mut BTreeMap<String, crate::model::App>,
    (replicated, unread): (&BTreeMap<String, (Pos, u32)>, &HashSet<String>),
    services: &[String],
) {
    use crate::model::{At, NetworkMode};
    for (service, (pos, count)) in replicated {
        for i in 1..=*count {
            let name = replica_name(service, i);
            if services.contains(&name) {
                ctx.error_hint(
                    *pos,
                    format!("service `{service}` runs {count} containers, named `{service}-1` to `{service}-{count}` as Compose names them, and `{name}` is another service"),
                    Some(format!("rename the service `{name}`")),
                );
            }
        }
    }
    // The apps a service's name stands for.
    let apps_of = |service: &str| -> Vec<String> {
        match replicated.get(service) {
            None if unread.contains(service) => Vec::new(),
            None => vec![service.to_string()],
            Some((_, count)) => (1..=*count).map(|i| replica_name(service, i)).collect(),
        }
    };
    let all = |target: &At<String>| -> Vec<At<String>> {
        apps_of(&target.value)
            .into_iter()
            .map(|value| At {
                value,
                loc: target.loc.clone(),
            })
            .collect()
    };
    for app in apps.values_mut() {
        app.depends_on = std::mem::take(&mut app.depends_on)
            .into_iter()
            .flat_map(|(t, c)| all(&t).into_iter().map(move |t| (t, c)))
            .collect();
        app.links = app.links.iter().flat_map(all).collect();
        app.restart_with = app.restart_with.iter().flat_map(|t| apps_of(t)).collect();
        if let NetworkMode::App(t) = &mut app.network_mode {
            if replicated.contains_key(&t.value) {
                t.value = replica_name(&t.value, 1);
            } else if unread.contains(&t.value) {
                app.network_mode = NetworkMode::Stack;
            }
        }
    }
}

/// Whether a service runs: it has no profile, or one that is active.
fn in_profiles(ctx: &mut Ctx, service: &Node, active: &HashSet<String>) -> bool {
    let Some((_, p)) = entry(service, "profiles") else {
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
/// A top-level Compose volume: a drover volume, or a volume of the host
/// made outside the stack (`external: true`), by its name there.
enum ComposeVolume {
    Drover(Box<crate::model::Volume>),
    /// Its name on the host, and whether it must exist already.
    External(String, bool),
}

fn compose_volume(ctx: &mut Ctx, name: &str, pos: Pos, node: &Node) -> Option<ComposeVolume> {
    let what = format!("volume `{name}`");
    let f = fields(ctx, node, &what, VOLUME_FIELDS)?;
    if f.get("external").is_some_and(|v| {
        crate::load::decode::choice(ctx, v, "`external`", &[("true", true), ("false", false)])
            .unwrap_or(false)
    }) {
        // A volume of the host, made outside the stack: its mounts pin
        // their apps (see `external_volume`).
        for (key, v) in f.iter().filter(|(k, _)| !matches!(*k, "external" | "name")) {
            ctx.error_hint(
                v.pos,
                format!("`{key}` cannot be set on external volume `{name}`"),
                Some(format!("it is made outside the stack: remove `{key}:`")),
            );
        }
        return match f.get("name") {
            Some(n) => string(ctx, n, "`name`"),
            None => Some(name.to_string()),
        }
        .map(|real| ComposeVolume::External(real, true));
    }
    if let Some(n) = f.get("name") {
        // A name of the user's on the host: a volume drover mounts by that
        // name but does not manage, as it cannot move it under that name.
        let real = string(ctx, n, "`name`")?;
        for (key, v) in f.iter().filter(|(k, _)| !matches!(*k, "name" | "external")) {
            ctx.error_hint(
                v.pos,
                format!("`{key}` cannot be set on volume `{name}`, which has its own `name:`"),
                Some(format!(
                    "drover makes only the volumes it names (`<stack>-{name}`): remove `name:` to let it make and move this one, or make `{real}` yourself and declare it `external: true`"
                )),
            );
        }
        ctx.note(
            n.pos,
            format!("volume `{name}` is `{real}` on the host: drover mounts it by that name (Docker makes it on first use, as for Compose) and never moves, snapshots or removes it; its apps stay on their host"),
        );
        return Some(ComposeVolume::External(real, false));
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
    volume(ctx, name.to_string(), pos, &merged).map(|v| ComposeVolume::Drover(Box::new(v)))
}

/// A mount in Compose's long syntax: `{ type, source, target, read_only }`.
fn long_mount(ctx: &mut Ctx, node: &Node, data_dirs: &RefCell<DataDirs>) -> Option<Mounted> {
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
    if kind != "volume" && kind != "bind" {
        let hint = match kind.as_str() {
            "tmpfs" => "write the mount point under the service's `tmpfs:`",
            _ => "drover mounts named volumes and paths",
        };
        ctx.error_hint(
            f.get("type").map_or(node.pos, |t| t.pos),
            format!("a mount of type `{kind}` is not supported"),
            Some(hint.into()),
        );
        return None;
    }
    if let Some(n) = f.get("tmpfs") {
        ctx.error(n.pos, "`tmpfs` belongs to a mount of type `tmpfs`");
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
        if let Some(o) = fields(ctx, v, "`volume`", &["nocopy", "subpath"]) {
            if let Some(sub) = o.get("subpath") {
                ctx.error(
                    sub.pos,
                    "`subpath` is not supported yet: mount the whole volume",
                );
            }
        }
    }
    if kind == "bind" {
        let options = f.get("bind").and_then(|b| {
            fields(
                ctx,
                b,
                "`bind`",
                &["propagation", "create_host_path", "selinux"],
            )
        });
        let propagation = match options.as_ref().and_then(|o| o.get("propagation")) {
            None => None,
            Some(p) => {
                let named: Vec<(&str, &str)> = PROPAGATIONS.iter().map(|p| (*p, *p)).collect();
                Some(crate::load::decode::choice(ctx, p, "`propagation`", &named)?.to_string())
            }
        };
        let bind = (source.expose(), target.expose(), read_only, propagation);
        return path_mount(ctx, node.pos, bind, data_dirs);
    }
    let short = format!(
        "{}:{}{}",
        source.expose(),
        target.expose(),
        if read_only { ":ro" } else { "" }
    );
    parse_mount(&short)
        .map(Mounted::Volume)
        .map_err(|(msg, hint)| ctx.error_hint(node.pos, msg, hint))
        .ok()
}

/// The volumes a Compose file declares, and those its data directories
/// and anonymous volumes become, with where each is first mounted.
pub struct DataDirs {
    pub declared: std::collections::BTreeSet<String>,
    /// The file's volumes of the host, drover's to mount but not to
    /// manage: their names there, and whether they must exist already
    /// (`external: true`) rather than be made by Docker (`name:`).
    pub external: BTreeMap<String, (String, bool)>,
    pub found: BTreeMap<String, Pos>,
    /// Declared secrets and configs by name: their content, or `None`
    /// for one whose content could not be read (said where it is declared).
    pub secrets: BTreeMap<String, Option<Vec<u8>>>,
    pub configs: BTreeMap<String, Option<Vec<u8>>>,
}

/// The content of each top-level secret or config (`file:`, `content:` or
/// `environment:`), by name; `None` for one whose content could not be
/// read, which is said where it is declared (and not again where it is used).
fn declared_contents(ctx: &mut Ctx, node: &Node, kind: &str) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let entries: Vec<(String, &Node)> = mapping(ctx, node, &format!("`{kind}`"))
        .unwrap_or(&[])
        .iter()
        .filter_map(|(k, v)| Some((k.as_scalar()?.to_string(), v)))
        .collect();
    for (name, n) in entries {
        let what = format!("{} `{name}`", kind.trim_end_matches('s'));
        let known: &[&str] = if kind == "configs" {
            &["file", "environment", "content", "external", "name"]
        } else {
            &["file", "environment", "external", "name"]
        };
        let Some(f) = fields(ctx, n, &what, known) else {
            out.insert(name, None);
            continue;
        };
        for key in ["external", "name"] {
            if let Some(v) = f.get(key) {
                ctx.error_hint(
                    v.pos,
                    format!("drover does not support `{key}` (in {what})"),
                    Some(format!(
                        "give the {kind} `file:` in the repository, or `environment:`"
                    )),
                );
            }
        }
        let content = declared_content(ctx, &f, n, &what);
        out.insert(name, content);
    }
    out
}

/// The content of one top-level secret or config, read from the fields
/// `f` of its declaration `n`; `None` once what is wrong is said.
fn declared_content(
    ctx: &mut Ctx,
    f: &crate::load::decode::Fields,
    n: &Node,
    what: &str,
) -> Option<Vec<u8>> {
    if let Some(file) = f.get("file") {
        let path = text(ctx, file, "`file`")?;
        let source = path.expose().to_string();
        let real = in_manifests(ctx, file.pos, &source)?;
        match shipped(ctx, file.pos, &source, &real, "/", true) {
            Some(files) if files.len() == 1 => files.into_iter().next().map(|f| f.content),
            Some(_) => {
                ctx.error(
                    file.pos,
                    format!("`{source}` is a folder; {what} is one file"),
                );
                None
            }
            None => None,
        }
    } else if let Some(var) = f.get("environment") {
        let name_var = text(ctx, var, "`environment`")?;
        match ctx.env.get(name_var.expose()) {
            Some(v) => Some(v.into_bytes()),
            None => {
                ctx.error_hint(
                    var.pos,
                    format!("variable `{}` is not set", name_var.expose()),
                    Some(
                        "set it in drover's environment or a `.env` file beside the manifest"
                            .into(),
                    ),
                );
                None
            }
        }
    } else if let Some(c) = f.get("content") {
        text(ctx, c, "`content`").map(|t| t.expose().as_bytes().to_vec())
    } else {
        if f.get("external").is_none() && f.get("name").is_none() {
            ctx.error_hint(
                n.pos,
                format!("{what} has no `file`"),
                Some("name a file of the repository in `file:`".into()),
            );
        }
        None
    }
}

/// A service's `secrets` or `configs`: each a name, or `{ source, target,
/// mode }`; written into the container (secrets under `/run/secrets/`).
pub(super) fn service_contents(
    ctx: &mut Ctx,
    node: &Node,
    kind: &str,
    shared: &RefCell<DataDirs>,
) -> Vec<ConfigFile> {
    let mut out = Vec::new();
    for item in sequence(ctx, node, &format!("`{kind}`")).unwrap_or(&[]) {
        let (source, target, mode) = match &item.value {
            Value::Map(_) => {
                let Some(f) = fields(
                    ctx,
                    item,
                    &format!("an entry of `{kind}`"),
                    &["source", "target", "uid", "gid", "mode"],
                ) else {
                    continue;
                };
                let Some(source) = f.get("source").and_then(|s| string(ctx, s, "`source`")) else {
                    ctx.error(item.pos, format!("an entry of `{kind}` needs `source`"));
                    continue;
                };
                for key in ["uid", "gid"] {
                    if let Some(v) = f.get(key) {
                        ctx.error(
                            v.pos,
                            format!("`{key}` is not supported yet: the file belongs to root"),
                        );
                    }
                }
                let target = f.get("target").and_then(|t| string(ctx, t, "`target`"));
                let mode = f.get("mode").and_then(|m| {
                    let s = string(ctx, m, "`mode`")?;
                    let parsed = match s.strip_prefix("0o").or_else(|| s.strip_prefix('0')) {
                        Some(oct) if !oct.is_empty() => u32::from_str_radix(oct, 8).ok(),
                        _ => s.parse::<u32>().ok(),
                    };
                    parsed.filter(|m| *m <= 0o7777).or_else(|| {
                        ctx.error(
                            m.pos,
                            format!("`mode` must be a file mode such as `0440`, found `{s}`"),
                        );
                        None
                    })
                });
                (source, target, mode)
            }
            _ => match string(ctx, item, &format!("an entry of `{kind}`")) {
                Some(s) => (s, None, None),
                None => continue,
            },
        };
        let declared = if kind == "secrets" {
            shared.borrow().secrets.get(&source).cloned()
        } else {
            shared.borrow().configs.get(&source).cloned()
        };
        let content = match declared {
            Some(Some(content)) => content,
            // Its declaration says what is wrong with it.
            Some(None) => continue,
            None => {
                ctx.error_hint(
                    item.pos,
                    format!("{} `{source}` is not declared", kind.trim_end_matches('s')),
                    Some(format!("declare it under the top-level `{kind}:`")),
                );
                continue;
            }
        };
        let target = match (kind, target) {
            (_, Some(t)) if t.starts_with('/') => t,
            ("secrets", Some(t)) => format!("/run/secrets/{t}"),
            ("secrets", None) => format!("/run/secrets/{source}"),
            (_, Some(t)) => format!("/{t}"),
            (_, None) => format!("/{source}"),
        };
        out.push(ConfigFile {
            target,
            content,
            mode: mode.unwrap_or(0o444),
        });
    }
    out
}

/// One entry of a drover app's `files:`: `SOURCE:TARGET[:ro]`, where
/// SOURCE is a file or folder of the manifest directory (relative to the
/// manifest), shipped into the container as a Compose file's is.
pub(super) fn file_entry(ctx: &mut Ctx, item: &Node) -> Option<Vec<ConfigFile>> {
    let t = text(ctx, item, "a file")?;
    let parts: Vec<&str> = t.expose().split(':').collect();
    let (source, target, read_only) = match parts.as_slice() {
        [s, t] => (*s, *t, false),
        [s, t, "ro"] => (*s, *t, true),
        [s, t, "rw"] => (*s, *t, false),
        _ => {
            ctx.error_hint(
                item.pos,
                format!("`{t}` is not a file to ship"),
                Some("write `./PATH:/path/in/container[:ro]`, PATH a file or folder beside the manifest".into()),
            );
            return None;
        }
    };
    if !target.starts_with('/') {
        ctx.error(
            item.pos,
            format!("file target `{target}` must be an absolute path"),
        );
        return None;
    }
    if source.starts_with('/') || source.starts_with('~') {
        ctx.error_hint(
            item.pos,
            format!("`{source}` is not in the manifest directory"),
            Some("ship files that are beside the manifest (`./nginx.conf`)".into()),
        );
        return None;
    }
    let real = in_manifests(ctx, item.pos, source)?;
    shipped(ctx, item.pos, source, &real, target, read_only)
}

/// Where `source` (relative to the Compose file) really is, when it is a
/// file or folder of the manifest directory; a located error otherwise.
fn in_manifests(ctx: &mut Ctx, pos: Pos, source: &str) -> Option<std::path::PathBuf> {
    let path = ctx.file_dir.join(source);
    match path.canonicalize() {
        Ok(real) if real.starts_with(ctx.root) => Some(real),
        Ok(_) => {
            ctx.error(
                pos,
                format!("`{source}` leads outside the manifest directory"),
            );
            None
        }
        Err(e) => {
            ctx.error(pos, format!("`{source}` cannot be read: {}", io_reason(&e)));
            None
        }
    }
}

/// What a Compose mount is to drover.
pub(super) enum Mounted {
    /// A named volume, or a data directory kept in one.
    Volume(Mount),
    /// An absolute host path: it pins the app to its host.
    Bind(Bind),
    /// A file or folder of the manifest directory, shipped into the app.
    Files(Vec<ConfigFile>),
}

/// The most a file or folder shipped into an app may hold.
const MAX_SHIPPED_BYTES: u64 = 1 << 20;
/// …and how many files.
const MAX_SHIPPED_FILES: usize = 1000;

/// A service's mount, in the short (`SOURCE:TARGET[:MODE]`) or the long
/// syntax.
pub(super) fn mount(
    ctx: &mut Ctx,
    app: &str,
    item: &Node,
    data_dirs: &RefCell<DataDirs>,
) -> Option<Mounted> {
    if matches!(item.value, Value::Map(_)) {
        return long_mount(ctx, item, data_dirs);
    }
    let t = text(ctx, item, "a volume mount")?;
    let s = t.expose();
    let is_path = s.starts_with(['/', '.', '~']);
    let parts: Vec<&str> = s.split(':').collect();
    if is_path && (parts.len() == 2 || parts.len() == 3) {
        let (read_only, propagation) = match parts.get(2).map(|mode| bind_mode(mode, s)) {
            Some(Err((msg, hint))) => {
                ctx.error_hint(item.pos, msg, hint);
                return None;
            }
            Some(Ok(mode)) => mode,
            None => (false, None),
        };
        let bind = (parts[0], parts[1], read_only, propagation);
        return path_mount(ctx, item.pos, bind, data_dirs);
    }
    if is_path && parts.len() == 1 {
        // An anonymous volume: kept, as Compose keeps it across a
        // recreate, in a volume of its own named after the app and path.
        if !s.starts_with('/') {
            ctx.error(
                item.pos,
                format!("mount target `{s}` must be an absolute path"),
            );
            return None;
        }
        let name = data_dir_volume(&format!("{app}{s}"));
        let first = data_dirs
            .borrow_mut()
            .found
            .insert(name.clone(), item.pos)
            .is_none();
        if first {
            ctx.note(
                item.pos,
                format!("`{s}` is an anonymous volume: drover keeps it in the volume `{name}`, on its app's host, and moves it with the app"),
            );
        }
        return Some(Mounted::Volume(Mount {
            volume: name,
            target: s.to_string(),
            read_only: false,
        }));
    }
    match parse_mount(s) {
        Ok(m) => Some(Mounted::Volume(m)),
        Err((msg, hint)) => {
            let msg = if t.is_secret() {
                "this volume mount is not valid (its value comes from a variable and is not shown)"
                    .into()
            } else {
                msg
            };
            ctx.error_hint(item.pos, msg, hint);
            None
        }
    }
}

/// A mount of a path: an absolute one is a bind of the host's path, one
/// in the manifest directory is shipped, and one that is not there is a
/// data directory, kept in a volume named after it.
fn path_mount(
    ctx: &mut Ctx,
    pos: Pos,
    (source, target, read_only, propagation): (&str, &str, bool, Option<String>),
    data_dirs: &RefCell<DataDirs>,
) -> Option<Mounted> {
    if !target.starts_with('/') {
        ctx.error(
            pos,
            format!("mount target `{target}` must be an absolute path"),
        );
        return None;
    }
    if source.starts_with('~') {
        ctx.error_hint(
            pos,
            format!("`{source}` is in a home folder, which is not the same on every host"),
            Some("write the host's absolute path, or keep the data in a named volume".into()),
        );
        return None;
    }
    if source.starts_with('/') {
        return Some(Mounted::Bind(Bind {
            volume: false,
            must_exist: false,
            device: None,
            host_path: source.to_string(),
            target: target.to_string(),
            read_only,
            propagation,
        }));
    }
    if let Some(p) = propagation {
        ctx.error_hint(
            pos,
            format!("propagation `{p}` applies to a path of the host, and `{source}` is not one: drover ships it or keeps it in a volume"),
            Some("remove the propagation, or mount the host's absolute path".into()),
        );
        return None;
    }
    let path = ctx.file_dir.join(source);
    let normal = lexically_normal(&path);
    let real = path.canonicalize();
    let inside = match &real {
        Ok(p) => p.starts_with(ctx.root),
        Err(_) => normal.starts_with(ctx.root),
    };
    if !inside {
        ctx.error_hint(
            pos,
            format!("`{source}` leads outside the manifest directory"),
            Some("keep the files an app mounts beside its Compose file".into()),
        );
        return None;
    }
    match real {
        Ok(real) => shipped(ctx, pos, source, &real, target, read_only).map(Mounted::Files),
        Err(_) => {
            let rel = normal.strip_prefix(&ctx.file_dir).unwrap_or(&normal);
            let name = data_dir_volume(&rel.to_string_lossy());
            if name.is_empty() {
                ctx.error(pos, format!("`{source}` names no folder"));
                return None;
            }
            // Not the name of a volume the file declares.
            let name = if data_dirs.borrow().declared.contains(&name) {
                format!("{name}-dir")
            } else {
                name
            };
            let first = data_dirs
                .borrow_mut()
                .found
                .insert(name.clone(), pos)
                .is_none();
            if first {
                ctx.note(
                    pos,
                    format!(
                        "`{source}` is not in the manifest directory, so it is a data directory: drover keeps it in the volume `{name}`, on its app's host, and moves it with the app"
                    ),
                );
            }
            Some(Mounted::Volume(Mount {
                volume: name,
                target: target.to_string(),
                read_only,
            }))
        }
    }
}

/// The volume a data directory is kept in: its path with `-` between the
/// folders, in the letters a volume's name may have.
pub fn data_dir_volume(rel: &str) -> String {
    let joined: String = rel
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let parts: Vec<&str> = joined.split('-').filter(|p| !p.is_empty()).collect();
    parts.join("-").chars().take(63).collect()
}

/// The files under `real` (a file or a folder of the manifest directory),
/// bound for `target` in the container.
fn shipped(
    ctx: &mut Ctx,
    pos: Pos,
    source: &str,
    real: &Path,
    target: &str,
    read_only: bool,
) -> Option<Vec<ConfigFile>> {
    let mut out = Vec::new();
    let mut total = 0u64;
    ctx.shipped.push(real.to_path_buf());
    let mut todo = vec![(real.to_path_buf(), target.trim_end_matches('/').to_string())];
    while let Some((path, into)) = todo.pop() {
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                ctx.error(pos, format!("`{source}` cannot be read: {}", io_reason(&e)));
                return None;
            }
        };
        if meta.is_dir() {
            let mut names: Vec<_> = match std::fs::read_dir(&path) {
                Ok(entries) => entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name())
                    .collect(),
                Err(e) => {
                    ctx.error(pos, format!("`{source}` cannot be read: {}", io_reason(&e)));
                    return None;
                }
            };
            names.sort();
            for name in names.into_iter().rev() {
                let child = path.join(&name);
                if !child.canonicalize().is_ok_and(|c| c.starts_with(ctx.root)) {
                    ctx.error(
                        pos,
                        format!("`{}` leads outside the manifest directory", child.display()),
                    );
                    return None;
                }
                todo.push((child, format!("{into}/{}", name.to_string_lossy())));
            }
            continue;
        }
        if !meta.is_file() {
            ctx.error(
                pos,
                format!("`{source}` holds something that is not a file or a folder"),
            );
            return None;
        }
        total += meta.len();
        if total > MAX_SHIPPED_BYTES || out.len() >= MAX_SHIPPED_FILES {
            ctx.error_hint(
                pos,
                format!(
                    "`{source}` holds more than {} KiB or {MAX_SHIPPED_FILES} files: too much to ship with the manifests",
                    MAX_SHIPPED_BYTES >> 10
                ),
                Some("keep large or many files in a named volume".into()),
            );
            return None;
        }
        let content = match std::fs::read(&path) {
            Ok(c) => c,
            Err(e) => {
                ctx.error(pos, format!("`{source}` cannot be read: {}", io_reason(&e)));
                return None;
            }
        };
        let executable = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0;
        let mode = match (executable, read_only) {
            (true, true) => 0o555,
            (true, false) => 0o755,
            (false, true) => 0o444,
            (false, false) => 0o644,
        };
        out.push(ConfigFile {
            target: into,
            content,
            mode,
        });
    }
    Some(out)
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
    let Some(target) = target else {
        ctx.error(node.pos, "a port needs `target`");
        return None;
    };
    // Without `published`, Docker picks a free host port, as for Compose.
    let ip = match ip {
        Some(ip) if ip.contains(':') => format!("[{ip}]:"),
        Some(ip) => format!("{ip}:"),
        None => String::new(),
    };
    let published = match published {
        Some(p) => format!("{p}:"),
        None if ip.is_empty() => String::new(),
        None => ":".into(),
    };
    parse_port(&format!("{ip}{published}{target}/{protocol}"))
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

/// The fields of Compose's `deploy` that are Swarm's alone, with what to do
/// instead.
const SWARM_DEPLOY: [(&str, &str); 6] = [
    (
        "placement",
        "drover places a service with `x-drover: { host: … }`",
    ),
    (
        "update_config",
        "drover replaces a changed container itself, waiting for its health; remove it",
    ),
    (
        "rollback_config",
        "drover rolls back by Git revision (`drover rollback`); remove it",
    ),
    (
        "restart_policy",
        "write the service's `restart:` (`no`, `always`, `on-failure`, `unless-stopped`)",
    ),
    (
        "endpoint_mode",
        "a service is reached by its name on its networks; remove it",
    ),
    (
        "labels",
        "write the container's labels in the service's `labels:`",
    ),
];

/// A field of which drover takes only Compose's default value: any other
/// is a located error, `refused` giving its message and the way out.
fn only_default(
    ctx: &mut Ctx,
    node: Option<&Node>,
    (what, default): (&str, &str),
    refused: impl FnOnce(&str) -> (String, String),
) {
    let Some(node) = node else { return };
    if let Some(value) = string(ctx, node, what).filter(|v| v != default) {
        let (message, way_out) = refused(&value);
        ctx.error_hint(node.pos, message, Some(way_out));
    }
}

/// `deploy`: its resource limits, and one replica (`mode: replicated`, the
/// default); Swarm's other fields are located errors saying what to do.
pub(super) fn deploy_limits<'n>(ctx: &mut Ctx, node: &'n Node) -> Option<Limits<'n>> {
    let mut known = vec!["resources", "replicas", "mode"];
    known.extend(SWARM_DEPLOY.iter().map(|(f, _)| *f));
    let f = fields(ctx, node, "`deploy`", &known)?;
    // `replicas` is read with the service's `scale`, by [`replicas`].
    only_default(ctx, f.get("mode"), ("`mode`", "replicated"), |mode| {
        (
            format!("drover does not support `deploy.mode: {mode}`: it runs one container per service, on the service's host"),
            "for one container on each of several hosts, write a service per host, each with its `x-drover: { host: … }`".into(),
        )
    });
    for (field, way_out) in SWARM_DEPLOY {
        if let Some(pos) = f.key_pos(field) {
            ctx.error_hint(
                pos,
                format!("drover does not support `deploy.{field}`, which is Docker Swarm's"),
                Some(way_out.into()),
            );
        }
    }
    let resources = fields(
        ctx,
        f.get("resources")?,
        "`resources`",
        &["limits", "reservations"],
    )?;
    if let Some(pos) = resources.key_pos("reservations") {
        ctx.error_hint(
            pos,
            "drover does not support `deploy.resources.reservations`",
            Some("limit memory and CPUs with `limits:`; for GPUs, give the service `runtime: nvidia` and `NVIDIA_VISIBLE_DEVICES` in its `environment:`".into()),
        );
    }
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
