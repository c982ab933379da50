//! The manifest model: what the YAML says, typed, with the location of every
//! value that a later rule may need to point at.
//!
//! The loader fills these types; `validate` checks the rules that span
//! documents and returns a [`Spec`] whose references are known to resolve.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::diag::Loc;

/// A string from a manifest that remembers whether it came from `${VAR}`
/// interpolation or an `env_file`. Secret text never reaches any output:
/// `Display` and `Debug` print `<secret>` instead.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text {
    value: String,
    secret: bool,
}

impl Text {
    pub fn plain(value: impl Into<String>) -> Text {
        Text {
            value: value.into(),
            secret: false,
        }
    }

    pub fn secret(value: impl Into<String>) -> Text {
        Text {
            value: value.into(),
            secret: true,
        }
    }

    pub fn new(value: String, secret: bool) -> Text {
        Text { value, secret }
    }

    /// The real value, for the container config and the spec hash only.
    pub fn expose(&self) -> &str {
        &self.value
    }

    pub fn is_secret(&self) -> bool {
        self.secret
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secret {
            f.write_str("<secret>")
        } else {
            f.write_str(&self.value)
        }
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secret {
            f.write_str("<secret>")
        } else {
            write!(f, "{:?}", self.value)
        }
    }
}

/// A value with the place it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct At<T> {
    pub value: T,
    pub loc: Loc,
}

/// The name of the implicit host used when there is no Cluster document.
pub const LOCAL_HOST: &str = "local";

#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub name: String,
    /// Where the name is written (the key under `hosts:`).
    pub loc: Option<Loc>,
    pub endpoint: String,
    /// Where other hosts reach this host's published ports.
    pub address: String,
    pub labels: BTreeMap<String, String>,
    pub tls: Option<Tls>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    pub name: String,
    /// Where `name:` has its value.
    pub loc: Loc,
    pub volumes: BTreeMap<String, Volume>,
    pub apps: BTreeMap<String, App>,
    /// `rollback: auto`: a revision that leaves an app of the stack not
    /// running (or unhealthy) is undone for the stack by the controller.
    pub rollback: Rollback,
    /// The settings of its networks other than Docker's defaults, by their
    /// names in the Compose file (`default` for the stack's own).
    pub networks: BTreeMap<String, NetworkSettings>,
}

/// What a Compose file sets on one of its networks: `internal`, and the
/// subnets of `ipam.config`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetworkSettings {
    /// No way out of the network: its containers reach only each other.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<Subnet>,
}

/// One entry of a network's `ipam.config`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Subnet {
    /// `172.20.0.0/24`
    pub subnet: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
}

/// A stack's `rollback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rollback {
    /// Never rolled back: a bad revision stays in force until a fix.
    #[default]
    Never,
    /// Rolled back to the stack's last healthy revision and quarantined.
    Auto,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    pub name: String,
    pub loc: Loc,
    pub driver: String,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// Only for a volume that no app mounts.
    pub host: Option<At<String>>,
    /// `max_downtime`: how long a move may keep its apps stopped.
    pub max_downtime_ns: Option<u64>,
    /// `consistency`: how its snapshots are made consistent.
    pub consistency: Consistency,
    /// `from`: what seeds the volume when it is first made.
    pub from: Option<VolumeFrom>,
    /// `snapshots: { every, keep }`: snapshots the controller takes.
    pub snapshots: Option<SnapshotSchedule>,
    /// `backup: { to, every, keep }`: backups the controller pushes.
    pub backup: Option<BackupSchedule>,
}

/// `backup: { to: offsite, every: 6h, keep: { last: 4, daily: 7 } }`.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupSchedule {
    /// The repository, by its name in the Cluster.
    pub to: At<String>,
    pub every_ns: u64,
    pub keep: KeepPolicy,
}

/// Which backups of a volume to keep, as restic's `forget` counts them:
/// the newest `last`, and the newest of each of so many hours, days, weeks
/// and months. A backup kept by any rule is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KeepPolicy {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
}

/// A repository of backups (`repositories:` in the Cluster), in the restic
/// format.
#[derive(Debug, Clone, PartialEq)]
pub struct Repository {
    pub name: String,
    /// Where the name is written.
    pub loc: Loc,
    /// restic's forms: a local path, `s3:…`, `rest:…`.
    pub url: Text,
    pub password: Text,
    /// Passed to the storage client (`AWS_ACCESS_KEY_ID`, …); secret.
    pub env: BTreeMap<String, Text>,
}

/// `snapshots: { every: 1h, keep: 24 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSchedule {
    pub every_ns: u64,
    /// How many of the scheduled snapshots to keep (the newest).
    pub keep: u32,
}

/// `from: { stack, volume, snapshot }`: a volume made from a snapshot of
/// another stack's volume, once, when it does not exist yet; with
/// `repository`, from a backup of it there.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeFrom {
    pub stack: At<String>,
    pub volume: At<String>,
    /// A snapshot's name (a backup's ID in a repository); `None` for the latest.
    pub snapshot: Option<String>,
    /// The repository, by its name in the Cluster.
    pub repository: Option<At<String>>,
    pub loc: Loc,
}

/// How a snapshot is made consistent while the apps that mount the volume
/// run (`consistency:`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// `docker pause` for the last pass: what is on disk is what a crash at
    /// that instant would leave.
    #[default]
    Freeze,
    /// Stop and start the apps for the last pass.
    Stop,
    /// A live copy, for data that tolerates one: nothing is frozen, and
    /// the copy is not checked after (it changes while it is read).
    None,
}

impl Consistency {
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Freeze => "freeze",
            Consistency::Stop => "stop",
            Consistency::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Consistency> {
        match s {
            "freeze" => Some(Consistency::Freeze),
            "stop" => Some(Consistency::Stop),
            "none" => Some(Consistency::None),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    UnlessStopped,
    Always,
    OnFailure,
    No,
}

impl Restart {
    pub fn as_str(self) -> &'static str {
        match self {
            Restart::UnlessStopped => "unless-stopped",
            Restart::Always => "always",
            Restart::OnFailure => "on-failure",
            Restart::No => "no",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pull {
    Missing,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    Started,
    Healthy,
    /// Compose's `service_completed_successfully`: the app is a job that
    /// ran and exited with code 0.
    Completed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// `[IP:]HOST:CONTAINER[/tcp|udp]`
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Port {
    /// Empty for every address.
    pub ip: String,
    /// 0 for a free port Docker chooses (`"80"`, as in Compose).
    pub host: u16,
    pub container: u16,
    pub protocol: Protocol,
}

/// `NAME:PATH[:ro]`
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Mount {
    pub volume: String,
    pub target: String,
    pub read_only: bool,
}

/// A path of the app's host mounted into it (Compose's bind mount of an
/// absolute path): it pins the app to that host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Bind {
    /// The host's path, or the name of a Docker volume of the host.
    pub host_path: String,
    pub target: String,
    pub read_only: bool,
    /// A Docker volume drover does not manage, by its name on the host,
    /// rather than a path: Compose's `external: true` volume, or one with
    /// a `name:`.
    pub volume: bool,
    /// For such a volume: it must exist (`external: true`); otherwise
    /// Docker makes it on first use, as Compose would.
    pub must_exist: bool,
    /// A device of the host (Compose's `devices`) rather than a mount,
    /// with its cgroup permissions (`rwm`).
    pub device: Option<String>,
    /// How mounts beneath the path reach the container (`rslave`…), as
    /// the file names it; Docker's default otherwise.
    pub propagation: Option<String>,
}

/// A file of the manifest directory shipped into an app (Compose's bind
/// mount of a file or folder that is in the repository): its content is
/// part of the spec, so an edit recreates the app.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigFile {
    /// Where it goes in the container: an absolute path.
    pub target: String,
    pub content: Vec<u8>,
    pub mode: u32,
}

/// Durations are kept in nanoseconds, as Docker takes them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Healthcheck {
    /// `["NONE"]` disables the image's healthcheck; empty keeps the
    /// image's test (with the timings given here).
    pub test: Vec<Text>,
    pub interval_ns: Option<u64>,
    pub timeout_ns: Option<u64>,
    pub retries: Option<u32>,
    pub start_period_ns: Option<u64>,
}

impl Healthcheck {
    /// Whether Docker will report health for a container with this check
    /// whatever its image says.
    pub fn is_enabled(&self) -> bool {
        self.test.first().is_some_and(|t| t.expose() != "NONE")
    }
}

/// Container options Docker takes as Compose passes them. They are not
/// secret, even when interpolated: like names, `docker inspect` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Options {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domainname: Option<String>,
    /// Compose's `container_name`: another name the app answers to on its
    /// stack's network (the container itself is `<stack>-<app>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// More names it answers to there (Compose's network `aliases`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Ports the container exposes without publishing: `80/tcp`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<String>,
    /// `NAME:ADDRESS` entries for `/etc/hosts`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Mount point, then Docker's tmpfs options (may be empty).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tmpfs: BTreeMap<String, String>,
    /// Name to (soft, hard).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, (i64, i64)>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
    /// The most processes the container may run (-1: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stdin_open: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// The log driver and its options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logging: Option<(String, BTreeMap<String, String>)>,
    /// Compose's `privileged`: every capability and device of the host.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    /// Compose's `pid: host`: the host's process namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    /// The engine's runtime to run it with (`runc`, `nvidia`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// The platform of the image to pull and run (`linux/arm64`), as
    /// Compose's `platform`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

impl Options {
    /// Each option that is set, by its field name, as canonical JSON: what
    /// the spec hash and the plan's "changed" list compare.
    pub fn entries(&self) -> Vec<(String, String)> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => {
                map.into_iter().map(|(k, v)| (k, v.to_string())).collect()
            }
            _ => Vec::new(),
        }
    }
}

/// An app's network stack (Compose's `network_mode`).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum NetworkMode {
    /// Its stack's networks (and any external ones it names).
    #[default]
    Stack,
    /// The host's own network stack: it listens on the host's ports.
    Host,
    /// A loopback device alone.
    None,
    /// Docker's default bridge network of the host (`bridge`): no names
    /// on it, the host's other containers beside it.
    Bridge,
    /// Another app's network stack (`service:NAME`): that app's host, its
    /// addresses and its ports.
    App(At<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub name: String,
    /// Where the app's key is written.
    pub loc: Loc,
    pub image: Text,
    /// Filled in by validation for the implicit `local` host.
    pub host: Option<At<String>>,
    /// `environment` over `env_file`, as Compose does.
    pub environment: BTreeMap<String, Text>,
    pub volumes: Vec<At<Mount>>,
    /// Host paths it mounts: the app never moves off its host.
    pub binds: Vec<At<Bind>>,
    /// Files of the manifest directory shipped into it.
    pub files: Vec<ConfigFile>,
    /// The stack's networks it joins, by their names in a Compose file;
    /// empty for the stack's default network alone.
    pub networks: Vec<String>,
    /// Networks made outside drover that it joins too, by their Docker
    /// names (Compose's `external: true` networks): they must exist on
    /// the app's host, and drover never makes or removes them.
    pub external_networks: Vec<String>,
    /// Compose's `network_mode`: the stack's networks, or the host's, none,
    /// or another app's.
    pub network_mode: NetworkMode,
    /// Fixed IPv4 addresses on the stack's networks it joins (Compose's
    /// `ipv4_address`), by the networks' names in the file.
    pub addresses: BTreeMap<String, At<std::net::Ipv4Addr>>,
    pub ports: Vec<At<Port>>,
    pub healthcheck: Option<Healthcheck>,
    pub restart: Restart,
    pub pull: Pull,
    pub depends_on: Vec<(At<String>, Condition)>,
    /// Apps of `depends_on` whose update restarts this one (Compose's
    /// `restart: true`): drover recreates it when it recreates them.
    pub restart_with: Vec<String>,
    pub links: Vec<At<String>>,
    pub command: Option<Vec<Text>>,
    pub entrypoint: Option<Vec<Text>>,
    pub working_dir: Option<Text>,
    pub user: Option<Text>,
    pub labels: BTreeMap<String, Text>,
    pub stop_signal: Option<String>,
    pub stop_grace_period_ns: Option<u64>,
    pub memory: Option<u64>,
    /// CPUs in billionths, as Docker's `NanoCpus`.
    pub nano_cpus: Option<u64>,
    pub options: Options,
}

impl App {
    /// The host the app is placed on. Valid after validation.
    pub fn host(&self) -> &str {
        self.host.as_ref().map_or(LOCAL_HOST, |h| h.value.as_str())
    }

    /// Where the app's `depends_on` and `links` entries point, with their
    /// locations, in the order written.
    pub fn references(&self) -> impl Iterator<Item = &At<String>> {
        self.depends_on.iter().map(|(t, _)| t).chain(&self.links)
    }
}

/// A validated directory: every reference resolves, every rule holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub hosts: BTreeMap<String, Host>,
    /// True when there was no Cluster document and `local` was implied.
    pub implicit_local: bool,
    pub stacks: BTreeMap<String, Stack>,
    /// The Cluster's `repositories`, by name.
    pub repositories: BTreeMap<String, Repository>,
    /// What `validate` says about valid manifests: how drover reads a
    /// Compose form that means a little less, or something else, to it.
    pub notes: Vec<crate::diag::Diagnostic>,
}

impl Spec {
    /// The host a volume lives on: that of the apps that mount it, or its
    /// own `host:`.
    pub fn volume_host<'a>(&'a self, stack: &'a Stack, volume: &str) -> Option<&'a str> {
        stack
            .apps
            .values()
            .find(|a| a.volumes.iter().any(|m| m.value.volume == volume))
            .map(App::host)
            .or_else(|| {
                stack.volumes.get(volume).and_then(|v| {
                    v.host
                        .as_ref()
                        .map(|h| h.value.as_str())
                        .or(self.implicit_local.then_some(LOCAL_HOST))
                })
            })
    }
}

pub use crate::contract::names;

/// Why a snapshot name is not valid: `[a-z0-9][a-z0-9-]{0,62}`.
pub fn check_snapshot_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid snapshot name: use 1 to 63 lower-case letters, digits and `-`, starting with a letter or digit"
        ))
    }
}

/// Why `url` is not a repository drover can use, and what to write.
pub fn check_url(url: &str) -> Result<(), (String, String)> {
    repository_location(url).map(|_| ())
}

/// Why `id` is not a backup's ID: 8 to 64 hexadecimal digits.
pub fn check_backup_id(id: &str) -> Result<(), String> {
    let ok = (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{id}` is not a backup ID: give its first 8 or more hexadecimal digits, as `drover volume snapshots` shows them"
        ))
    }
}

/// Where a repository is, from restic's URL forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A directory on drover's machine.
    Local(String),
    /// `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]`.
    S3 {
        endpoint: String,
        bucket: String,
        prefix: String,
    },
    /// `rest:http(s)://HOST[:PORT]/[PATH]`.
    Rest(String),
}

pub fn repository_location(url: &str) -> Result<Location, (String, String)> {
    let forms = "use a local path (`/srv/backups`), `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]` or `rest:http(s)://HOST[:PORT]/`";
    if let Some(rest) = url.strip_prefix("s3:") {
        let Some((scheme, tail)) = rest.split_once("://") else {
            return Err((
                format!("`{url}` does not say how to reach the S3 server"),
                "write it with its endpoint: `s3:http://HOST:PORT/BUCKET` (a bare `s3:BUCKET` is not supported)".into(),
            ));
        };
        if scheme != "http" && scheme != "https" {
            return Err((
                format!("`{url}` is not an S3 URL drover reads"),
                forms.into(),
            ));
        }
        let (host, path) = tail.split_once('/').unwrap_or((tail, ""));
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if host.is_empty() || bucket.is_empty() {
            return Err((
                format!(
                    "`{url}` names no {}",
                    if host.is_empty() { "server" } else { "bucket" }
                ),
                "like `s3:http://10.0.0.5:9000/backups/drover`".into(),
            ));
        }
        return Ok(Location::S3 {
            endpoint: format!("{scheme}://{host}"),
            bucket: bucket.to_string(),
            prefix: prefix.trim_end_matches('/').to_string(),
        });
    }
    if let Some(rest) = url.strip_prefix("rest:") {
        if !(rest.starts_with("http://") || rest.starts_with("https://")) {
            return Err((
                format!("`{url}` is not a REST URL drover reads"),
                forms.into(),
            ));
        }
        return Ok(Location::Rest(rest.to_string()));
    }
    let path = url.strip_prefix("local:").unwrap_or(url);
    if path.starts_with('/') {
        return Ok(Location::Local(path.to_string()));
    }
    match url.split_once(':') {
        Some((scheme, _)) if !scheme.contains('/') => Err((
            format!("repositories of type `{scheme}` are not supported by this drover"),
            forms.into(),
        )),
        _ => Err((
            format!("`{url}` is a relative path"),
            "a local repository is a directory on the machine that runs drover: give its absolute path".into(),
        )),
    }
}
