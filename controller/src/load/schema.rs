//! The JSON Schema of the manifests, for editors (`yaml-language-server`)
//! and for `drover schema`. These types exist only to describe the format;
//! the loader checks the same fields (a test keeps the two equal).

#![allow(dead_code)] // the fields are read by the schema generator only

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

/// A lower-case name: `[a-z0-9][a-z0-9-]{0,62}`.
struct Name;

impl JsonSchema for Name {
    fn schema_name() -> Cow<'static, str> {
        "Name".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[a-z0-9][a-z0-9-]{0,62}$",
            "description": "lower-case letters, digits and `-`, starting with a letter or digit, at most 63 characters"
        })
    }
}

/// A string, number or boolean, taken as its text (as Compose does).
struct Scalar;

impl JsonSchema for Scalar {
    fn schema_name() -> Cow<'static, str> {
        "Scalar".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": ["string", "number", "boolean"] })
    }
}

/// One manifest document.
#[derive(JsonSchema)]
#[serde(tag = "kind")]
enum Manifest {
    Cluster(Cluster),
    Stack(Stack),
}

/// The Docker hosts drover manages. At most one per directory; without one,
/// there is a single implicit host `local` at `$DOCKER_HOST`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Cluster {
    /// Each host by name.
    hosts: BTreeMap<String, Host>,
    /// Repositories of backups, in the restic format, by name.
    #[serde(default)]
    repositories: Option<BTreeMap<String, Repository>>,
}

/// A repository of backups in the restic format.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Repository {
    /// A local path on drover's machine, `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]`
    /// or `rest:http(s)://HOST[:PORT]/`.
    url: String,
    /// From the environment: `${DROVER_REPO_PASSWORD}`.
    password: String,
    /// The storage client's settings (`AWS_ACCESS_KEY_ID`, …); secret.
    #[serde(default)]
    env: Option<BTreeMap<String, String>>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Host {
    /// `unix:///var/run/docker.sock`, `tcp://HOST:PORT` or `https://HOST:PORT`.
    endpoint: String,
    /// Where other hosts reach this host's published ports. Defaults to the
    /// endpoint's host, or 127.0.0.1 for a socket.
    #[serde(default)]
    address: Option<String>,
    /// Free-form, shown in status.
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    tls: Option<Tls>,
}

/// Client certificates for a TLS endpoint; paths relative to this file.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Tls {
    ca: String,
    cert: String,
    key: String,
}

/// A set of apps and their data volumes.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Stack {
    /// Unique across the directory.
    name: Name,
    #[serde(default)]
    volumes: Option<BTreeMap<String, Option<Volume>>>,
    #[serde(default)]
    apps: Option<BTreeMap<String, App>>,
    /// `auto`: when the controller applies a new Git revision and an app
    /// of this stack is not running (and healthy, with a healthcheck)
    /// within the dependency timeout, the stack goes back to its last
    /// healthy revision and the new one is quarantined until a newer
    /// commit. Data is never rolled back. `never` by default.
    #[serde(default)]
    rollback: Option<RollbackName>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum RollbackName {
    Auto,
    Never,
}

/// A named data volume. Its data follows the apps that mount it.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Volume {
    /// Volume driver; `local` by default.
    #[serde(default)]
    driver: Option<String>,
    #[serde(default)]
    driver_opts: Option<BTreeMap<String, Scalar>>,
    #[serde(default)]
    labels: Option<BTreeMap<String, Scalar>>,
    /// Only for a volume that no app mounts.
    #[serde(default)]
    host: Option<Name>,
    /// How long a move may keep the volume's apps stopped, like `5s`: the
    /// move copies while they run until what is left fits, or fails
    /// without stopping them.
    #[serde(default)]
    max_downtime: Option<String>,
    /// How a snapshot of the volume is made consistent: `freeze` (the
    /// default: the apps that mount it are paused for the last pass),
    /// `stop` (stopped and started again) or `none` (a live copy).
    #[serde(default)]
    consistency: Option<ConsistencyName>,
    /// Seeds the volume when it is first made, from a snapshot of another
    /// stack's volume; never touches a volume that exists.
    #[serde(default)]
    from: Option<VolumeFrom>,
    /// Snapshots `drover controller` takes: `every` (a duration of a
    /// minute or more), keeping the newest `keep` of them.
    #[serde(default)]
    snapshots: Option<SnapshotSchedule>,
    /// Backups `drover controller` pushes into a repository: `to` (its
    /// name), `every` (a second or more), and `keep` (restic's counts).
    #[serde(default)]
    backup: Option<BackupSchedule>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct BackupSchedule {
    to: Name,
    every: String,
    keep: Keep,
}

/// The newest `last`, and the newest of each of so many hours, days,
/// weeks and months; or a number, for `last`.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum Keep {
    Last(u32),
    Counts {
        #[serde(default)]
        last: Option<u32>,
        #[serde(default)]
        hourly: Option<u32>,
        #[serde(default)]
        daily: Option<u32>,
        #[serde(default)]
        weekly: Option<u32>,
        #[serde(default)]
        monthly: Option<u32>,
    },
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct VolumeFrom {
    stack: Name,
    volume: Name,
    /// A snapshot's name (with `repository`, a backup's ID), or `latest`
    /// (the default).
    #[serde(default)]
    snapshot: Option<String>,
    /// A repository of the Cluster: the volume is made from a backup there.
    #[serde(default)]
    repository: Option<Name>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct SnapshotSchedule {
    every: String,
    keep: u32,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum ConsistencyName {
    Freeze,
    Stop,
    None,
}

/// A string, or a list of strings.
#[derive(JsonSchema)]
#[serde(untagged)]
enum StringOrList {
    String(String),
    List(Vec<String>),
}

#[derive(JsonSchema)]
#[serde(untagged)]
enum Environment {
    /// `KEY: value`
    Map(BTreeMap<String, Scalar>),
    /// `KEY=value`
    List(Vec<String>),
}

#[derive(JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum Restart {
    UnlessStopped,
    Always,
    OnFailure,
    No,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Pull {
    Missing,
    Always,
    Never,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Condition {
    Started,
    Healthy,
    /// The app is a job: it ran and exited with code 0.
    Completed,
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully,
}

/// One `ulimits` entry: a number for both limits, or each.
#[derive(JsonSchema)]
#[serde(untagged)]
enum Ulimit {
    Both(i64),
    Each { soft: i64, hard: i64 },
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct DependsOnEntry {
    /// `started` (default) or `healthy`.
    #[serde(default)]
    condition: Option<Condition>,
    /// Compose's; only `true`.
    #[serde(default)]
    required: Option<bool>,
    /// Compose's; only `false`.
    #[serde(default)]
    restart: Option<bool>,
}

#[derive(JsonSchema)]
#[serde(untagged)]
enum DependsOn {
    /// Apps that must be started first.
    List(Vec<Name>),
    Map(BTreeMap<String, Option<DependsOnEntry>>),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Healthcheck {
    /// `["CMD", ...]`, `["CMD-SHELL", "..."]`, `["NONE"]`, or a shell string.
    #[serde(default)]
    test: Option<StringOrList>,
    /// A duration such as `5s` or `1m30s`.
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default)]
    start_period: Option<String>,
    #[serde(default)]
    disable: Option<bool>,
}

/// A stateless container, placed on a host, mounting volumes of its stack.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct App {
    image: String,
    /// Placement. Changing it relocates the app and its volumes.
    #[serde(default)]
    host: Option<Name>,
    /// Values are interpolated from drover's environment (`${VAR}`); such
    /// values are secret and never shown.
    #[serde(default)]
    environment: Option<Environment>,
    /// Env files relative to this manifest, inside the directory.
    #[serde(default)]
    env_file: Option<StringOrList>,
    /// `VOLUME:/path[:ro]`, VOLUME declared in this stack.
    #[serde(default)]
    volumes: Option<Vec<String>>,
    /// `[IP:]HOST:CONTAINER[/tcp|udp]`
    #[serde(default)]
    ports: Option<Vec<String>>,
    #[serde(default)]
    healthcheck: Option<Healthcheck>,
    /// `unless-stopped` by default.
    #[serde(default)]
    restart: Option<Restart>,
    /// `missing` by default.
    #[serde(default)]
    pull: Option<Pull>,
    #[serde(default)]
    depends_on: Option<DependsOn>,
    /// Apps of this stack; each injects `NAME_HOST` and `NAME_PORT`.
    #[serde(default)]
    links: Option<Vec<Name>>,
    #[serde(default)]
    command: Option<StringOrList>,
    #[serde(default)]
    entrypoint: Option<StringOrList>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, Scalar>>,
    #[serde(default)]
    stop_signal: Option<String>,
    #[serde(default)]
    stop_grace_period: Option<String>,
    /// A size such as `512m` or `2g`.
    #[serde(default)]
    memory: Option<Scalar>,
    #[serde(default)]
    cpus: Option<Scalar>,
    /// Files or folders beside the manifest shipped into the container
    /// before it starts: `./PATH:/path/in/container[:ro]`. An edit
    /// recreates the app.
    #[serde(default)]
    files: Option<Vec<String>>,
    /// More names the app answers to on its stack's networks.
    #[serde(default)]
    aliases: Option<Vec<String>>,
    /// The stack's networks the app joins (`default` is the stack's own);
    /// apps that share none do not reach each other.
    #[serde(default)]
    networks: Option<Vec<String>>,
    /// Networks made outside drover that the app joins too, by their
    /// Docker names; they must exist on its host.
    #[serde(default)]
    external_networks: Option<Vec<String>>,
    /// `host` (the host's network stack), `none`, or `app:NAME` (the
    /// network stack of an app of the stack on the same host).
    #[serde(default)]
    network_mode: Option<String>,
    #[serde(flatten)]
    options: ContainerOptions,
}

/// The container options both formats take, as Compose passes them to
/// Docker (`OPTION_FIELDS`).
#[derive(JsonSchema)]
struct ContainerOptions {
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    domainname: Option<String>,
    /// Another name the app answers to on its stack's network; the
    /// container is still `<stack>-<app>`.
    #[serde(default)]
    container_name: Option<String>,
    /// Ports exposed without publishing: `PORT[/tcp|udp]` or `FROM-TO`.
    #[serde(default)]
    expose: Option<Vec<Scalar>>,
    /// `NAME:ADDRESS` entries, or a mapping of them.
    #[serde(default)]
    extra_hosts: Option<Environment>,
    #[serde(default)]
    cap_add: Option<Vec<String>>,
    #[serde(default)]
    cap_drop: Option<Vec<String>>,
    /// Mount points of tmpfs file systems: `/path[:options]`.
    #[serde(default)]
    tmpfs: Option<StringOrList>,
    #[serde(default)]
    ulimits: Option<BTreeMap<String, Ulimit>>,
    #[serde(default)]
    read_only: Option<bool>,
    #[serde(default)]
    security_opt: Option<Vec<String>>,
    #[serde(default)]
    sysctls: Option<Environment>,
    #[serde(default)]
    init: Option<bool>,
    /// A size such as `256m`.
    #[serde(default)]
    shm_size: Option<Scalar>,
    #[serde(default)]
    pids_limit: Option<i64>,
    #[serde(default)]
    tty: Option<bool>,
    #[serde(default)]
    stdin_open: Option<bool>,
    #[serde(default)]
    dns: Option<StringOrList>,
    #[serde(default)]
    dns_search: Option<StringOrList>,
    #[serde(default)]
    logging: Option<Logging>,
    /// The engine's runtime to run the container with (`runc`, `nvidia`).
    #[serde(default)]
    runtime: Option<String>,
    /// The platform of the image to pull and run: `OS[/ARCH[/VARIANT]]`.
    #[serde(default)]
    platform: Option<String>,
}

/// The container's log driver (`json-file` by default) and its options.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Logging {
    #[serde(default)]
    driver: Option<String>,
    #[serde(default)]
    options: Option<BTreeMap<String, Scalar>>,
}

/// The schema as pretty JSON, with a trailing newline.
pub fn manifest_schema() -> String {
    let mut schema = schemars::schema_for!(Manifest);
    schema.insert("title".into(), "drover manifest".into());
    serde_json::to_string_pretty(&schema).expect("a schema serializes") + "\n"
}

/// A Compose file as drover reads it (docs/compose.md): the fields drover
/// takes, with Compose's forms. A field Compose has and drover does not
/// take is absent, so editors flag it as `drover validate` does.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct ComposeFile {
    /// Ignored, as by Compose.
    #[serde(default)]
    version: Option<Scalar>,
    /// The stack's name; else the folder's, made a valid name.
    #[serde(default)]
    name: Option<String>,
    services: BTreeMap<String, Service>,
    /// Named volumes: drover volumes that move with their apps.
    #[serde(default)]
    volumes: Option<BTreeMap<String, Option<ComposeVolume>>>,
    /// Networks of the stack on each host where a service joins them, or
    /// networks of the host (`external: true`).
    #[serde(default)]
    networks: Option<BTreeMap<String, Option<ComposeNetwork>>>,
    #[serde(default)]
    secrets: Option<BTreeMap<String, Content>>,
    #[serde(default)]
    configs: Option<BTreeMap<String, Content>>,
    /// Placement and drover's own settings for every service of the file.
    #[serde(default, rename = "x-drover")]
    x_drover: Option<XDroverFile>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct XDroverFile {
    /// The host of every service that names none.
    #[serde(default)]
    host: Option<Name>,
    #[serde(default)]
    rollback: Option<RollbackName>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct XDroverService {
    /// The service's host.
    #[serde(default)]
    host: Option<Name>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct ComposeVolume {
    #[serde(default)]
    driver: Option<String>,
    #[serde(default)]
    driver_opts: Option<BTreeMap<String, Scalar>>,
    #[serde(default)]
    labels: Option<Environment>,
    /// drover's volume settings (`max_downtime`, `snapshots`, `backup`, …).
    #[serde(default, rename = "x-drover")]
    x_drover: Option<serde_json::Value>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct ComposeNetwork {
    /// `bridge`, the only driver.
    #[serde(default)]
    driver: Option<String>,
    /// A network made outside the stack, joined by its name on the host.
    #[serde(default)]
    external: Option<bool>,
    /// An external network's name on the host.
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    attachable: Option<bool>,
    #[serde(default)]
    labels: Option<Environment>,
    /// No way out of the network: its containers reach only each other.
    #[serde(default)]
    internal: Option<bool>,
    /// Docker's default IPAM driver with IPv4 subnets, for services'
    /// `ipv4_address`.
    #[serde(default)]
    ipam: Option<ComposeIpam>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct ComposeIpam {
    /// `default`, the only driver.
    #[serde(default)]
    driver: Option<String>,
    config: Vec<ComposeSubnet>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct ComposeSubnet {
    /// `ADDRESS/PREFIX`, IPv4.
    subnet: String,
    #[serde(default)]
    gateway: Option<String>,
    /// Where Docker picks the addresses it gives, inside the subnet.
    #[serde(default)]
    ip_range: Option<String>,
}

/// A secret or config: from a file of the repository, drover's
/// environment, or (configs) written inline.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Content {
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    content: Option<String>,
}

/// A string or a number (`8080:80`, `80`), or Compose's long form.
#[derive(JsonSchema)]
#[serde(untagged)]
enum ShortOrLong {
    Short(Scalar),
    Long(BTreeMap<String, serde_json::Value>),
}

/// A Compose service: one app of the stack.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Service {
    image: String,
    #[serde(default)]
    command: Option<StringOrList>,
    #[serde(default)]
    entrypoint: Option<StringOrList>,
    #[serde(default)]
    environment: Option<Environment>,
    #[serde(default)]
    env_file: Option<serde_json::Value>,
    #[serde(default)]
    ports: Option<Vec<ShortOrLong>>,
    /// Named volumes, data directories (`./data:/var/lib/x`), files of
    /// the repository, or host paths (which pin the service).
    #[serde(default)]
    volumes: Option<Vec<ShortOrLong>>,
    #[serde(default)]
    depends_on: Option<DependsOn>,
    #[serde(default)]
    healthcheck: Option<Healthcheck>,
    /// `no` by default, as in Compose.
    #[serde(default)]
    restart: Option<String>,
    #[serde(default)]
    labels: Option<Environment>,
    #[serde(default)]
    user: Option<Scalar>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    stop_signal: Option<String>,
    #[serde(default)]
    stop_grace_period: Option<String>,
    #[serde(default)]
    mem_limit: Option<Scalar>,
    #[serde(default)]
    cpus: Option<Scalar>,
    /// `resources.limits` (`memory`, `cpus`), `replicas` and `mode:
    /// replicated`.
    #[serde(default)]
    deploy: Option<serde_json::Value>,
    /// How many containers the service runs (as `deploy.replicas`): each
    /// is an app `<service>-<i>` that answers to the service's name too.
    #[serde(default)]
    scale: Option<Scalar>,
    #[serde(default)]
    links: Option<Vec<String>>,
    /// Deployed only when one is in `COMPOSE_PROFILES`.
    #[serde(default)]
    profiles: Option<Vec<String>>,
    /// `missing`, `always`, `never` or `if_not_present`.
    #[serde(default)]
    pull_policy: Option<String>,
    #[serde(default, rename = "x-drover")]
    x_drover: Option<XDroverService>,
    /// A list of networks of the file, or a mapping with `aliases`.
    #[serde(default)]
    networks: Option<serde_json::Value>,
    #[serde(default)]
    secrets: Option<Vec<ShortOrLong>>,
    #[serde(default)]
    configs: Option<Vec<ShortOrLong>>,
    /// `host`, `none` or `service:NAME` (a service on the same host).
    #[serde(default)]
    network_mode: Option<String>,
    /// Only beside `image:`: drover runs that image and never builds.
    #[serde(default)]
    build: Option<ShortOrLong>,
    /// Every capability and device of the host.
    #[serde(default)]
    privileged: Option<bool>,
    /// Only `host`: the host's processes.
    #[serde(default)]
    pid: Option<String>,
    /// Devices of the host (`/dev/X[:/dev/Y[:rwm]]`, or `source`,
    /// `target`, `permissions`); like a host path, they pin the app.
    #[serde(default)]
    devices: Option<Vec<ShortOrLong>>,
    #[serde(flatten)]
    options: ContainerOptions,
}

/// The schema of Compose files as drover reads them, as pretty JSON with a
/// trailing newline. `x-` fields are allowed where Compose allows them.
pub fn compose_schema() -> String {
    let mut schema = schemars::schema_for!(ComposeFile);
    schema.insert("title".into(), "Compose file, as drover reads it".into());
    let mut value = schema.to_value();
    let extension = serde_json::json!({ "^x-": {} });
    value["patternProperties"] = extension.clone();
    for def in ["Service", "ComposeVolume", "ComposeNetwork"] {
        value["$defs"][def]["patternProperties"] = extension.clone();
    }
    serde_json::to_string_pretty(&value).expect("a schema serializes") + "\n"
}

/// The JSON Schema of a plan as `--output json` prints it, with its
/// `format_version`.
pub fn plan_schema() -> String {
    let mut schema = schemars::schema_for!(crate::plan::Plan);
    schema.insert("title".into(), "drover plan".into());
    let mut value = schema.to_value();
    value["properties"]["format_version"] = serde_json::json!({
        "description": "The version of this format: it changes only when a field changes meaning or goes away.",
        "const": crate::output::FORMAT_VERSION
    });
    if let Some(r) = value["required"].as_array_mut() {
        r.insert(0, "format_version".into());
    }
    serde_json::to_string_pretty(&value).expect("a schema serializes") + "\n"
}

/// The JSON Schema of `drover diff --output json`, with its
/// `format_version`.
pub fn diff_schema() -> String {
    let mut schema = schemars::schema_for!(crate::changes::SpecDiff);
    schema.insert("title".into(), "drover diff".into());
    let mut value = schema.to_value();
    value["properties"]["format_version"] = serde_json::json!({
        "description": "The version of this format, shared with the plan's.",
        "const": crate::output::FORMAT_VERSION
    });
    if let Some(r) = value["required"].as_array_mut() {
        r.insert(0, "format_version".into());
    }
    serde_json::to_string_pretty(&value).expect("a schema serializes") + "\n"
}
