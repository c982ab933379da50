//! The small grammars of manifest values: names, durations, sizes, ports,
//! mounts, endpoints.

use crate::model::{Mount, Port, Protocol};

/// An app's or a volume's name: a valid name, or one with `_` as Compose's
/// service and volume names have them (`[a-z0-9][a-z0-9_-]{0,62}`).
pub fn is_valid_member_name(name: &str) -> bool {
    is_valid_name(&name.replace('_', "-")) && !name.starts_with('_')
}

/// A service's name in a Compose file, where Compose also takes upper-case
/// letters (`initContainer`) and dots (`wazuh.manager`).
pub fn is_valid_service_name(name: &str) -> bool {
    !name.starts_with('.') && is_valid_member_name(&name.to_ascii_lowercase().replace('.', "-"))
}

/// A name: `[a-z0-9][a-z0-9-]{0,62}`.
pub fn is_valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// The host part of a TCP endpoint, or loopback for a local socket.
pub fn default_address(endpoint: &str) -> String {
    let rest =
        endpoint.split_once("://").map_or(
            endpoint,
            |(scheme, rest)| if scheme == "unix" { "" } else { rest },
        );
    let hostport = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        hostport.rsplit_once(':').map_or(hostport, |(h, _)| h)
    };
    if host.is_empty() {
        "127.0.0.1".to_string()
    } else {
        host.to_string()
    }
}

/// `1h2m3s`, `500ms`, `1.5s` — Go's and Compose's duration format.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s == "0" {
        return Ok(0);
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("`{s}` is not a duration"));
        }
        let num: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("`{s}` is not a duration"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("`{s}` has no unit")),
            u => return Err(format!("unknown unit `{}` in `{s}`", u.trim())),
        };
        rest = &rest[unit_len..];
        total += num * factor;
    }
    if total > u64::MAX as f64 / 2.0 {
        return Err(format!("`{s}` is too long"));
    }
    Ok(total.round() as u64)
}

/// `512m`, `2g`, `1048576` — bytes with an optional binary unit.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let num_len = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let num: f64 = t[..num_len]
        .parse()
        .map_err(|_| format!("`{s}` is not a size"))?;
    let factor: u64 = match t[num_len..].trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => return Err(format!("unknown size unit `{u}` in `{s}`")),
    };
    let bytes = num * factor as f64;
    if !(1.0..=1e18).contains(&bytes) {
        return Err(format!("`{s}` is not a usable size"));
    }
    Ok(bytes.round() as u64)
}

fn parse_u16_port(s: &str, what: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{what} `{s}` is not a port number (1-65535)")),
    }
}

/// `[IP:]HOST:CONTAINER[/tcp|udp]`
pub fn parse_port(s: &str) -> Result<Port, String> {
    let (body, protocol) = match s.rsplit_once('/') {
        Some((b, "tcp")) => (b, Protocol::Tcp),
        Some((b, "udp")) => (b, Protocol::Udp),
        Some((_, p)) => return Err(format!("unknown protocol `{p}` in port `{s}`")),
        None => (s, Protocol::Tcp),
    };
    // An IPv6 address comes in brackets: `[::1]:8080:80`.
    let (ip, rest) = if let Some(v6) = body.strip_prefix('[') {
        let (addr, rest) = v6
            .split_once("]:")
            .ok_or_else(|| format!("port `{s}` has an unterminated `[`"))?;
        (addr.to_string(), rest)
    } else {
        let parts: Vec<&str> = body.split(':').collect();
        match parts.len() {
            2 => (String::new(), body),
            3 => (parts[0].to_string(), &body[parts[0].len() + 1..]),
            // No host port: Docker picks a free one, as for Compose.
            1 => (String::new(), ""),
            _ => return Err(format!("port `{s}` has too many `:`")),
        }
    };
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("`{ip}` in port `{s}` is not an IP address"));
    }
    let (host, container) = match rest {
        "" => ("", body),
        _ => rest
            .split_once(':')
            .ok_or_else(|| format!("port `{s}` has too many `:`"))?,
    };
    if host.contains('-') || container.contains('-') {
        return Err(format!("port ranges are not supported (`{s}`)"));
    }
    Ok(Port {
        ip,
        // 0: a free port of the host's, chosen by Docker.
        host: match host {
            "" => 0,
            h => parse_u16_port(h, "host port")?,
        },
        container: parse_u16_port(container, "container port")?,
        protocol,
    })
}

/// The largest range `expose:` may name.
const MAX_EXPOSED_RANGE: u32 = 1024;

/// `PORT[/tcp|udp]` or `FROM-TO[/tcp|udp]`, as Docker's exposed ports.
pub fn parse_expose(s: &str) -> Result<Vec<String>, String> {
    let (body, protocol) = match s.rsplit_once('/') {
        Some((b, p @ ("tcp" | "udp"))) => (b, p),
        Some((_, p)) => return Err(format!("unknown protocol `{p}` in exposed port `{s}`")),
        None => (s, "tcp"),
    };
    let (from, to) = body.split_once('-').unwrap_or((body, body));
    let from = parse_u16_port(from.trim(), "exposed port")?;
    let to = parse_u16_port(to.trim(), "exposed port")?;
    if to < from || u32::from(to - from) >= MAX_EXPOSED_RANGE {
        return Err(format!(
            "exposed port range `{s}` is empty or wider than {MAX_EXPOSED_RANGE} ports"
        ));
    }
    Ok((from..=to).map(|p| format!("{p}/{protocol}")).collect())
}

/// The options a mount may name after its target.
const MOUNT_OPTIONS: &[&str] = &["ro", "rw", "z", "Z", "nocopy"];

/// Whether a mount's MODE (after its target) makes it read-only. Compose's
/// and Docker's options: `ro`/`rw`, and `z`/`Z` (SELinux labels, which a
/// named volume does not need) and `nocopy`, comma-separated.
pub fn mount_mode(mode: &str, mount: &str) -> Result<bool, (String, Option<String>)> {
    if let Some(p) = mode.split(',').find(|m| PROPAGATIONS.contains(m)) {
        return Err((
            format!(
                "propagation `{p}` applies to a path of the host, and `{mount}` mounts a volume"
            ),
            Some("remove the propagation".into()),
        ));
    }
    if mode.split(',').all(|m| MOUNT_OPTIONS.contains(&m)) {
        Ok(mode.split(',').any(|m| m == "ro"))
    } else {
        Err((
            format!("unknown mount mode `{mode}` in `{mount}`"),
            Some("use `ro` or `rw` (with `z`, `Z` or `nocopy`, comma-separated)".into()),
        ))
    }
}

/// A bind's propagation modes, as Docker names them.
pub const PROPAGATIONS: &[&str] = &[
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

/// A bind mount's MODE: whether it is read-only, and the propagation it
/// names, if any (`ro,rslave`). A mount of a volume takes no propagation.
pub fn bind_mode(
    mode: &str,
    mount: &str,
) -> Result<(bool, Option<String>), (String, Option<String>)> {
    let (propagation, rest): (Vec<&str>, Vec<&str>) =
        mode.split(',').partition(|m| PROPAGATIONS.contains(m));
    if propagation.len() > 1 {
        return Err((
            format!("mount `{mount}` names two propagations"),
            Some(
                "name one of `rprivate`, `rshared` or `rslave` (or their non-recursive forms)"
                    .into(),
            ),
        ));
    }
    let read_only = if rest.is_empty() {
        false
    } else {
        mount_mode(&rest.join(","), mount)?
    };
    Ok((read_only, propagation.first().map(|p| p.to_string())))
}

/// `NAME:PATH[:ro|rw]`
pub fn parse_mount(s: &str) -> Result<Mount, (String, Option<String>)> {
    let parts: Vec<&str> = s.split(':').collect();
    let (volume, target, read_only) = match parts.as_slice() {
        [v, t] => (*v, *t, false),
        [v, t, mode] => (*v, *t, mount_mode(mode, s)?),
        _ => {
            return Err((
                format!("`{s}` is not a volume mount"),
                Some("mounts are `VOLUME:/path/in/container[:ro]`".into()),
            ))
        }
    };
    if volume.starts_with('/') || volume.starts_with('.') || volume.starts_with('~') {
        return Err((
            format!("`{volume}` is a host path; drover mounts only named volumes"),
            Some("declare a volume under the stack's `volumes:` and mount it by name".into()),
        ));
    }
    if !is_valid_member_name(volume) {
        return Err((format!("`{volume}` is not a valid volume name"), None));
    }
    if !target.starts_with('/') {
        return Err((
            format!("mount target `{target}` must be an absolute path"),
            None,
        ));
    }
    Ok(Mount {
        volume: volume.to_string(),
        target: target.to_string(),
        read_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_in_every_accepted_form() {
        assert_eq!(
            parse_port("8080:80").unwrap(),
            Port {
                ip: String::new(),
                host: 8080,
                container: 80,
                protocol: Protocol::Tcp
            }
        );
        assert_eq!(parse_port("127.0.0.1:53:53/udp").unwrap().ip, "127.0.0.1");
        assert_eq!(parse_port("[::1]:80:8080").unwrap().ip, "::1");
        // No host port: a free one, as Compose publishes it.
        assert_eq!(parse_port("80").unwrap().host, 0);
        assert_eq!(parse_port("127.0.0.1::80").unwrap().host, 0);
        assert!(parse_port("80:0").is_err());
        assert!(parse_port("8000-8010:80").is_err());
        assert!(parse_port("80:80/sctp").is_err());
        assert!(parse_port("bad:80:80").is_err());
    }

    #[test]
    fn mounts() {
        let m = parse_mount("pgdata:/var/lib/pg:ro").unwrap();
        assert!(m.read_only);
        assert!(parse_mount("/srv:/data").is_err());
        assert!(parse_mount("data:rel").is_err());
        assert!(parse_mount("data:/x:zz").is_err());
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("1m30s").unwrap(), 90_000_000_000);
        assert_eq!(parse_duration("500ms").unwrap(), 500_000_000);
        assert_eq!(parse_duration("1.5s").unwrap(), 1_500_000_000);
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_bytes("512m").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1G").unwrap(), 1 << 30);
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn names() {
        assert!(is_valid_name("blog"));
        assert!(is_valid_name("0-a"));
        assert!(!is_valid_name("-a"));
        assert!(!is_valid_name("Blog"));
        assert!(!is_valid_name(&"a".repeat(64)));
    }

    #[test]
    fn default_addresses() {
        assert_eq!(default_address("unix:///var/run/docker.sock"), "127.0.0.1");
        assert_eq!(default_address("tcp://10.0.0.2:2376"), "10.0.0.2");
        assert_eq!(default_address("https://[fd00::1]:2376"), "fd00::1");
    }
}
