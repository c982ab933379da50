//! From located YAML nodes to the typed manifest model.
//!
//! Every field of every kind is checked here: unknown fields, wrong types,
//! malformed ports, mounts, durations and names. Problems are collected, not
//! returned early, so one run reports all of them. Cross-document rules
//! (unknown hosts, cycles, port clashes) belong to `validate`.

use crate::load::files::{io_reason, read_limited};
use crate::load::files::{lexically_normal, MAX_ENV_FILE_BYTES};
use crate::load::values::{
    default_address, is_valid_name, parse_bytes, parse_duration, parse_mount, parse_port,
};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diag::Pos;
use crate::diag::{similar, Diagnostic, Loc};
use crate::load::interpolate::{interpolate_with, parse_env_file, Env, InterpolationError, Unset};
use crate::load::values;
use crate::load::yaml::{Node, Value};
use crate::model::{
    App, At, BackupSchedule, Condition, Consistency, Healthcheck, Host, KeepPolicy, NetworkMode,
    Options, Pull, Repository, Restart, Rollback, SnapshotSchedule, Stack, Text, Tls, Volume,
    VolumeFrom,
};

pub const KINDS: &[&str] = &["Cluster", "Stack"];
pub const CLUSTER_FIELDS: &[&str] = &["kind", "hosts", "repositories"];
pub const REPOSITORY_FIELDS: &[&str] = &["url", "password", "env"];
/// What `env:` of a repository may set: the storage client's settings.
pub const REPOSITORY_ENV: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "RESTIC_REST_USERNAME",
    "RESTIC_REST_PASSWORD",
];
pub const BACKUP_FIELDS: &[&str] = &["to", "every", "keep"];
pub const KEEP_FIELDS: &[&str] = &["last", "hourly", "daily", "weekly", "monthly"];
pub const HOST_FIELDS: &[&str] = &["endpoint", "address", "labels", "tls"];
pub const TLS_FIELDS: &[&str] = &["ca", "cert", "key"];
pub const STACK_FIELDS: &[&str] = &["kind", "name", "volumes", "apps", "rollback"];
pub const VOLUME_FIELDS: &[&str] = &[
    "driver",
    "driver_opts",
    "labels",
    "host",
    "max_downtime",
    "consistency",
    "from",
    "snapshots",
    "backup",
];
pub const SCHEDULE_FIELDS: &[&str] = &["every", "keep"];
pub const FROM_FIELDS: &[&str] = &["stack", "volume", "snapshot", "repository"];
pub const APP_FIELDS: &[&str] = &[
    "image",
    "host",
    "environment",
    "env_file",
    "volumes",
    "ports",
    "healthcheck",
    "restart",
    "pull",
    "depends_on",
    "links",
    "command",
    "entrypoint",
    "working_dir",
    "user",
    "labels",
    "stop_signal",
    "stop_grace_period",
    "memory",
    "cpus",
    "files",
    "aliases",
    "networks",
    "external_networks",
    "network_mode",
];
/// The container options an app takes in both formats (see [`Options`]).
pub const OPTION_FIELDS: &[&str] = &[
    "hostname",
    "domainname",
    "container_name",
    "expose",
    "extra_hosts",
    "cap_add",
    "cap_drop",
    "tmpfs",
    "ulimits",
    "read_only",
    "security_opt",
    "sysctls",
    "init",
    "shm_size",
    "pids_limit",
    "tty",
    "stdin_open",
    "dns",
    "dns_search",
    "logging",
    "runtime",
    "platform",
];
pub const HEALTHCHECK_FIELDS: &[&str] = &[
    "test",
    "interval",
    "timeout",
    "retries",
    "start_period",
    "disable",
];
pub const DEPENDS_ON_FIELDS: &[&str] = &["condition", "required", "restart"];

/// What the documents say, before the rules that span documents.
#[derive(Debug, Default)]
pub struct Parsed {
    /// The hosts of the Cluster document and where its `kind` is written.
    pub cluster: Option<(Vec<Host>, Loc)>,
    /// The Cluster's repositories.
    pub repositories: Vec<Repository>,
    pub stacks: Vec<Stack>,
    /// The text of every manifest read, by the path shown to users, so that
    /// diagnostics found later can show their line. Env files are not here:
    /// their lines are secret.
    pub sources: HashMap<Arc<str>, String>,
    /// What `validate` says once about manifests that are valid.
    pub notes: Vec<Diagnostic>,
}

/// Where one manifest file sits, and what it is checked against.
pub struct Ctx<'a> {
    /// The path as shown to users: DIR as given, joined with the file's path.
    pub file: Arc<str>,
    pub src: &'a str,
    /// The directory of the file as found under DIR (for `env_file`).
    pub file_dir: PathBuf,
    /// DIR with symlinks resolved: nothing may lead outside it.
    pub root: &'a Path,
    /// DIR as given, for showing the paths of `env_file`s.
    pub root_shown: &'a Path,
    pub env: &'a dyn Env,
    pub diags: &'a mut Vec<Diagnostic>,
    /// Notes: how a valid form is read (see [`crate::model::Spec::notes`]).
    pub notes: &'a mut Vec<Diagnostic>,
    /// Files and folders of the directory shipped into apps: never
    /// manifests themselves.
    pub shipped: &'a mut Vec<PathBuf>,
    /// A Compose override file merged into this one: its nodes' lines are
    /// [`OVERRIDE_LINES`] further down, so that each place names its file.
    pub overlay: Option<(Arc<str>, &'a str)>,
}

/// The note on a variable of a Compose file that is not set, after its name.
const BLANKED: &str = "is not set: an empty string is used, as Compose does";

/// The variable a note of [`Ctx::interpolate`] says was not set.
pub fn blanked_variable(note: &Diagnostic) -> Option<&str> {
    note.message
        .strip_prefix("variable `")?
        .strip_suffix(BLANKED)?
        .strip_suffix("` ")
}

/// How far down the lines of a Compose override file are moved once it is
/// merged into its main file.
pub const OVERRIDE_LINES: u32 = 1 << 24;

impl Ctx<'_> {
    pub fn loc(&self, pos: Pos) -> Loc {
        match (&self.overlay, pos.line.checked_sub(OVERRIDE_LINES)) {
            (Some((file, _)), Some(line)) if line > 0 => Loc::new(file, Pos { line, ..pos }),
            _ => Loc::new(&self.file, pos),
        }
    }

    pub fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.error_hint(pos, message, None);
    }

    /// `raw` interpolated: in a Compose file an unset variable without a
    /// default is an empty string, noted once per file as Compose warns of
    /// it; in a drover manifest it is an error.
    pub fn interpolate(
        &mut self,
        pos: Pos,
        raw: &str,
    ) -> Result<(String, bool), InterpolationError> {
        let compose = super::compose::is_compose_file(Path::new(&*self.file));
        let unset = if compose {
            Unset::Blank
        } else {
            Unset::Refused
        };
        let (value, used, blanks) = interpolate_with(raw, self.env, unset)?;
        for name in blanks {
            let loc = self.loc(pos);
            let message = format!("variable `{name}` {BLANKED}");
            if !self
                .notes
                .iter()
                .any(|n| n.loc.file == loc.file && n.message == message)
            {
                self.notes.push(Diagnostic::new(loc, message));
            }
        }
        Ok((value, used))
    }

    /// A note on a valid form, shown by `validate`.
    pub fn note(&mut self, pos: Pos, message: impl Into<String>) {
        let loc = self.loc(pos);
        self.notes.push(Diagnostic::new(loc, message));
    }

    pub fn error_hint(&mut self, pos: Pos, message: impl Into<String>, hint: Option<String>) {
        self.error_at(self.loc(pos), message, hint);
    }

    /// An error at a place already located (of this file or its override).
    pub fn error_at(&mut self, loc: Loc, message: impl Into<String>, hint: Option<String>) {
        let src = match &self.overlay {
            Some((file, src)) if *file == loc.file => src,
            _ => self.src,
        };
        let d = Diagnostic::new(loc, message)
            .with_hint(hint)
            .with_source(src);
        self.diags.push(d);
    }
}

/// One document of a manifest file.
pub enum Document {
    Cluster {
        hosts: Vec<Host>,
        repositories: Vec<Repository>,
        kind_loc: Loc,
    },
    Stack(Stack),
}

/// Turns one YAML document into a Cluster or a Stack; `None` when it is
/// empty or too broken to say (the errors are in `ctx.diags`).
pub fn document(ctx: &mut Ctx, node: &Node) -> Option<Document> {
    if node.value == Value::Null {
        return None;
    }
    let Value::Map(entries) = &node.value else {
        ctx.error(
            node.pos,
            format!(
                "a manifest document must be a mapping with a `kind`, found {}",
                node.kind_name()
            ),
        );
        return None;
    };
    let kind = entries
        .iter()
        .find(|(k, _)| k.as_scalar() == Some("kind"))
        .map(|(_, v)| v);
    let Some(kind) = kind else {
        ctx.error_hint(
            node.pos,
            "document has no `kind`",
            Some("add `kind: Stack` or `kind: Cluster`".into()),
        );
        return None;
    };
    match kind.as_scalar() {
        Some("Cluster") => Some(cluster(ctx, node, kind.pos)),
        Some("Stack") => stack(ctx, node).map(Document::Stack),
        other => {
            let shown = other.unwrap_or("");
            ctx.error_hint(
                kind.pos,
                format!("unknown kind `{shown}`, expected `Cluster` or `Stack`"),
                similar(shown, KINDS.iter().copied()),
            );
            None
        }
    }
}

pub(super) struct Fields<'n> {
    entries: Vec<(&'n str, &'n Node, &'n Node)>,
}

impl<'n> Fields<'n> {
    pub(super) fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == name)
            .map(|(_, _, v)| *v)
    }

    /// Where the key of field `name` is written.
    pub(super) fn key_pos(&self, name: &str) -> Option<Pos> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == name)
            .map(|(_, k, _)| k.pos)
    }

    /// Each field written, with its value, in the order written.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&'n str, &'n Node)> + '_ {
        self.entries.iter().map(|(k, _, v)| (*k, *v))
    }
}

/// The entries of a mapping with known field names; every other key is an
/// error at the key, with a hint when it looks like a typo.
pub(super) fn fields<'n>(
    ctx: &mut Ctx,
    node: &'n Node,
    what: &str,
    known: &[&str],
) -> Option<Fields<'n>> {
    let entries = mapping(ctx, node, what)?;
    let mut out = Vec::new();
    for (k, v) in entries {
        let Some(name) = k.as_scalar() else {
            ctx.error(k.pos, format!("keys of {what} must be strings"));
            continue;
        };
        if known.contains(&name) {
            out.push((name, k, v));
        } else if name.starts_with("x-") {
            // An extension field, as in Compose: for anchors, or for tools.
        } else if let Some(way_out) = compose_field(what, name) {
            // A field of Compose's is never "corrected" into a drover field
            // of another meaning (`hostname` is not `host`).
            let message = if what.starts_with("service ") {
                format!("drover does not support `{name}` (in {what})")
            } else {
                format!("{what} does not take Compose's field `{name}`")
            };
            ctx.error_hint(k.pos, message, Some(way_out));
        } else if let Some((near, way_out)) = near_compose_field(what, name, known) {
            // A typo of a Compose field drover does not take is no typo of
            // a drover field that merely looks alike.
            ctx.error_hint(
                k.pos,
                format!("unknown field `{name}` in {what}"),
                Some(format!("it looks like Compose's `{near}`: {way_out}")),
            );
        } else {
            let hint = similar(name, known.iter().copied()).or_else(|| {
                Some(format!(
                    "{what} takes {}",
                    known
                        .iter()
                        .map(|f| format!("`{f}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            });
            ctx.error_hint(k.pos, format!("unknown field `{name}` in {what}"), hint);
        }
    }
    Some(Fields { entries: out })
}

/// Every field of a Compose service, as the Compose Specification lists them.
pub const COMPOSE_SERVICE_FIELDS: &[&str] = &[
    "annotations",
    "attach",
    "blkio_config",
    "build",
    "cgroup",
    "cgroup_parent",
    "command",
    "configs",
    "container_name",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpu_shares",
    "cpus",
    "cpuset",
    "credential_spec",
    "depends_on",
    "deploy",
    "develop",
    "device_cgroup_rules",
    "devices",
    "dns",
    "dns_opt",
    "dns_search",
    "domainname",
    "entrypoint",
    "env_file",
    "environment",
    "expose",
    "extends",
    "external_links",
    "extra_hosts",
    "gpus",
    "group_add",
    "healthcheck",
    "hostname",
    "image",
    "init",
    "ipc",
    "isolation",
    "label_file",
    "labels",
    "links",
    "logging",
    "mac_address",
    "mem_limit",
    "mem_reservation",
    "mem_swappiness",
    "memswap_limit",
    "models",
    "network_mode",
    "networks",
    "oom_kill_disable",
    "oom_score_adj",
    "pid",
    "pids_limit",
    "platform",
    "ports",
    "post_start",
    "pre_stop",
    "privileged",
    "profiles",
    "provider",
    "pull_policy",
    "read_only",
    "restart",
    "runtime",
    "scale",
    "secrets",
    "security_opt",
    "shm_size",
    "stdin_open",
    "stop_grace_period",
    "stop_signal",
    "storage_opt",
    "sysctls",
    "tmpfs",
    "tty",
    "ulimits",
    "use_api_socket",
    "user",
    "userns_mode",
    "uts",
    "volumes",
    "volumes_from",
    "working_dir",
];

/// What to do about Compose's `field` written in an app of a drover Stack
/// that does not take it; `None` when it is no Compose field.
fn compose_field(what: &str, field: &str) -> Option<String> {
    let service = what.starts_with("app ") || what.starts_with("service ");
    if !service || !COMPOSE_SERVICE_FIELDS.contains(&field) {
        return None;
    }
    Some(match field {
        "build" => "drover does not build images: build and push the image, then name it in `image:`".into(),
        "mem_limit" => "drover writes it `memory:`, as in `memory: 512m`".into(),
        "pull_policy" => "drover writes it `pull:` (`missing`, `always` or `never`)".into(),
        "deploy" => "write `memory:` and `cpus:` on the app; replicas and placement are the manifests' `host:`".into(),
        "privileged" | "devices" | "pid" => "only a Compose file's service may ask for it, as only one may mount a host path; in a drover Stack grant what the app needs with `cap_add:`".into(),
        "ipc" | "volumes_from" | "userns_mode" | "uts" | "cgroup" if what.starts_with("service ") => {
            "not supported: remove it (`pid: host` and `network_mode: host` are taken)".into()
        }
        "ipc" | "volumes_from" | "userns_mode" | "uts" | "cgroup" => {
            "not supported: remove it (`network_mode: host` is taken)".into()
        }
        "extends" => "not supported yet: write the fields out, or share them with an `x-` field, an anchor and `<<:`".into(),
        "scale" => "drover runs one container per app: name another app for another container".into(),
        _ => format!("drover does not support `{field}` yet; docs/compose.md lists what it takes"),
    })
}

/// For a misspelt field of an app, the Compose field it is closest to when
/// that is closer than any field `known` and not one of them, with what to
/// do about it.
fn near_compose_field(what: &str, name: &str, known: &[&str]) -> Option<(&'static str, String)> {
    if !what.starts_with("app ") && !what.starts_with("service ") {
        return None;
    }
    let score = |c: &str| strsim::jaro_winkler(name, c);
    let best_known = known.iter().map(|k| score(k)).fold(0.0, f64::max);
    let (near, s) = COMPOSE_SERVICE_FIELDS
        .iter()
        .filter(|f| !known.contains(f))
        .map(|f| (*f, score(f)))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    (s >= 0.8 && s > best_known).then(|| (near, compose_field(what, near).unwrap_or_default()))
}

/// A mapping's entries; `null` counts as an empty mapping, as in Compose.
pub(super) fn mapping<'n>(ctx: &mut Ctx, node: &'n Node, what: &str) -> Option<&'n [(Node, Node)]> {
    match &node.value {
        Value::Map(entries) => Some(entries),
        Value::Null => Some(&[]),
        _ => {
            ctx.error(
                node.pos,
                format!("{what} must be a mapping, found {}", node.kind_name()),
            );
            None
        }
    }
}

pub(super) fn sequence<'n>(ctx: &mut Ctx, node: &'n Node, what: &str) -> Option<&'n [Node]> {
    match &node.value {
        Value::Seq(items) => Some(items),
        Value::Null => Some(&[]),
        _ => {
            ctx.error(
                node.pos,
                format!("{what} must be a list, found {}", node.kind_name()),
            );
            None
        }
    }
}

/// A scalar as written. Numbers and booleans are accepted as their text, as
/// Compose does for `environment: { DEBUG: true }`.
pub(super) fn string(ctx: &mut Ctx, node: &Node, what: &str) -> Option<String> {
    match &node.value {
        Value::Scalar { text, .. } => Some(text.clone()),
        Value::Null => {
            ctx.error(node.pos, format!("{what} has no value"));
            None
        }
        _ => {
            ctx.error(
                node.pos,
                format!("{what} must be a string, found {}", node.kind_name()),
            );
            None
        }
    }
}

/// A string with `${VAR}` interpolation (Stack documents only).
pub(super) fn text(ctx: &mut Ctx, node: &Node, what: &str) -> Option<Text> {
    let raw = string(ctx, node, what)?;
    match ctx.interpolate(node.pos, &raw) {
        Ok((value, used)) => Some(Text::new(value, used)),
        Err(e) => {
            ctx.error_hint(node.pos, format!("{what}: {}", e.message), e.hint);
            None
        }
    }
}

/// Whether `name` is a valid name; an error at `pos` if not. A `secret`
/// name (from `${VAR}`) that is not valid is never shown: it never became
/// a Docker object's name.
fn check_name(ctx: &mut Ctx, pos: Pos, name: &str, what: &str, secret: bool) -> bool {
    // Apps and volumes may be named as Compose names them, with `_`.
    let member = matches!(what, "app" | "service" | "volume");
    if is_valid_name(name) || (member && values::is_valid_member_name(name)) {
        return true;
    }
    // A Compose file's services, as Compose names them.
    let compose = super::compose::is_compose_file(Path::new(&*ctx.file));
    if compose && matches!(what, "app" | "service") && values::is_valid_service_name(name) {
        return true;
    }
    if secret {
        ctx.error_hint(
            pos,
            format!("this is not a valid {what} name (its value comes from a variable and is not shown)"),
            Some("names use lower-case letters, digits and `-`, starting with a letter or digit, at most 63 characters".into()),
        );
        return false;
    }
    let fixed: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .trim_start_matches('-')
        .chars()
        .take(63)
        .collect();
    let hint = if is_valid_name(&fixed) {
        Some(format!("try `{fixed}`"))
    } else {
        None
    };
    ctx.error_hint(
        pos,
        format!(
            "`{name}` is not a valid {what} name: use lower-case letters, digits and `-`, \
             starting with a letter or digit, at most 63 characters"
        ),
        hint,
    );
    false
}

/// A name given as a value (`host: node-a`, `links: [db]`), interpolated.
pub(super) fn name_value(ctx: &mut Ctx, node: &Node, what: &str) -> Option<At<String>> {
    let t = text(ctx, node, what)?;
    // Names become Docker object names and labels, visible on every host;
    // they are not secret even when interpolated.
    let value = t.expose().to_string();
    check_name(ctx, node.pos, &value, what, t.is_secret()).then(|| At {
        value,
        loc: ctx.loc(node.pos),
    })
}

/// Map keys that are names, with their positions.
pub(super) fn named_entries<'n>(
    ctx: &mut Ctx,
    node: &'n Node,
    what: &str,
    kind: &str,
) -> Vec<(String, Pos, &'n Node)> {
    let Some(entries) = mapping(ctx, node, what) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in entries {
        let Some(name) = string(ctx, k, &format!("a {kind} name")) else {
            continue;
        };
        if check_name(ctx, k.pos, &name, kind, false) {
            out.push((name, k.pos, v));
        }
    }
    out
}

fn plain_map(ctx: &mut Ctx, node: &Node, what: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in mapping(ctx, node, what).unwrap_or(&[]) {
        if let (Some(k), Some(v)) = (string(ctx, k, "a key"), string(ctx, v, what)) {
            out.insert(k, v);
        }
    }
    out
}

/// `labels` as a mapping, or (as Compose takes them) a list of
/// `KEY=VALUE`.
fn labels(ctx: &mut Ctx, node: &Node, interpolated: bool) -> BTreeMap<String, Text> {
    let mut out = BTreeMap::new();
    let pairs: Vec<(Node, Node)> = match &node.value {
        Value::Seq(items) => items
            .iter()
            .filter_map(|i| {
                let s = string(ctx, i, "a label")?;
                let (k, v) = s.split_once('=').unwrap_or((&s, ""));
                let scalar = |text: &str| Node {
                    value: Value::Scalar {
                        text: text.to_string(),
                        plain: false,
                    },
                    pos: i.pos,
                };
                Some((scalar(k), scalar(v)))
            })
            .collect(),
        _ => mapping(ctx, node, "`labels`").unwrap_or(&[]).to_vec(),
    };
    for (k, v) in &pairs {
        let Some(key) = string(ctx, k, "a label") else {
            continue;
        };
        if key.starts_with("drover.") {
            ctx.error(
                k.pos,
                format!("label `{key}` is reserved: drover's own labels start with `drover.`"),
            );
            continue;
        }
        let value = if interpolated {
            text(ctx, v, &format!("label `{key}`"))
        } else {
            string(ctx, v, &format!("label `{key}`")).map(Text::plain)
        };
        if let Some(value) = value {
            out.insert(key, value);
        }
    }
    out
}

fn cluster(ctx: &mut Ctx, node: &Node, kind_pos: Pos) -> Document {
    let kind_loc = ctx.loc(kind_pos);
    let (mut hosts, mut repositories) = (Vec::new(), Vec::new());
    let Some(f) = fields(ctx, node, "a Cluster", CLUSTER_FIELDS) else {
        return Document::Cluster {
            hosts,
            repositories,
            kind_loc,
        };
    };
    if let Some(r) = f.get("repositories") {
        for (name, pos, v) in named_entries(ctx, r, "`repositories`", "repository") {
            if let Some(repo) = repository(ctx, name, pos, v) {
                repositories.push(repo);
            }
        }
    }
    match f.get("hosts") {
        None => ctx.error_hint(
            node.pos,
            "a Cluster needs `hosts`",
            Some("list each Docker host under `hosts:` with its `endpoint`".into()),
        ),
        Some(h) => {
            for (name, pos, v) in named_entries(ctx, h, "`hosts`", "host") {
                if let Some(host) = host(ctx, name, pos, v) {
                    hosts.push(host);
                }
            }
        }
    }
    Document::Cluster {
        hosts,
        repositories,
        kind_loc,
    }
}

/// A repository of the Cluster: `{ url, password, env }`.
fn repository(ctx: &mut Ctx, name: String, pos: Pos, node: &Node) -> Option<Repository> {
    let what = format!("repository `{name}`");
    let f = fields(ctx, node, &what, REPOSITORY_FIELDS)?;
    let url = match f.get("url") {
        None => {
            ctx.error_hint(
                pos,
                format!("{what} has no `url`"),
                Some("like `url: s3:http://10.0.0.5:9000/backups/drover` or `url: /srv/backups`".into()),
            );
            None
        }
        Some(u) => text(ctx, u, "`url`").filter(|t| match crate::model::check_url(t.expose()) {
            Ok(()) => true,
            Err((message, hint)) => {
                let message = if t.is_secret() {
                    "this repository `url` is not one drover can use (its value comes from a variable and is not shown)".to_string()
                } else {
                    message
                };
                ctx.error_hint(u.pos, message, Some(hint));
                false
            }
        }),
    };
    let password = match f.get("password") {
        None => {
            ctx.error_hint(
                pos,
                format!("{what} has no `password`"),
                Some("give it from the environment: `password: ${DROVER_REPO_PASSWORD}`".into()),
            );
            None
        }
        Some(p) => text(ctx, p, "`password`").filter(|t| {
            if !t.is_secret() {
                ctx.error_hint(
                    p.pos,
                    "the repository password is written in the manifest, where everyone who reads the repository sees it",
                    Some("give it from the environment: `password: ${DROVER_REPO_PASSWORD}`".into()),
                );
            } else if t.expose().is_empty() {
                ctx.error(p.pos, "the repository password is empty");
            }
            t.is_secret() && !t.expose().is_empty()
        }),
    };
    let mut env = BTreeMap::new();
    if let Some(e) = f.get("env") {
        for (k, v) in mapping(ctx, e, "`env`").unwrap_or(&[]) {
            let Some(key) = string(ctx, k, "a key") else {
                continue;
            };
            if !REPOSITORY_ENV.contains(&key.as_str()) {
                let known = REPOSITORY_ENV
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>();
                ctx.error_hint(
                    k.pos,
                    format!("`{key}` is not a setting drover passes to the storage"),
                    Some(format!("`env` takes {}", known.join(", "))),
                );
                continue;
            }
            if let Some(t) = text(ctx, v, &format!("`env.{key}`")) {
                // What the storage client is given is secret, however written.
                env.insert(key, Text::secret(t.expose()));
            }
        }
    }
    Some(Repository {
        name,
        loc: ctx.loc(pos),
        url: url?,
        password: password?,
        env,
    })
}

fn host(ctx: &mut Ctx, name: String, pos: Pos, node: &Node) -> Option<Host> {
    let what = format!("host `{name}`");
    let f = fields(ctx, node, &what, HOST_FIELDS)?;
    let endpoint = match f.get("endpoint") {
        None => {
            ctx.error_hint(
                pos,
                format!("{what} has no `endpoint`"),
                Some("for example `endpoint: unix:///var/run/docker.sock`".into()),
            );
            None
        }
        Some(e) => string(ctx, e, "`endpoint`").and_then(|s| {
            let ok = ["unix://", "tcp://", "https://", "http://"]
                .iter()
                .any(|p| s.starts_with(p) && s.len() > p.len());
            if ok {
                Some((s, e.pos))
            } else {
                ctx.error_hint(
                    e.pos,
                    format!("`{s}` is not a Docker endpoint"),
                    Some("use `unix:///path`, `tcp://HOST:PORT` or `https://HOST:PORT`".into()),
                );
                None
            }
        }),
    };
    let address = f.get("address").and_then(|a| string(ctx, a, "`address`"));
    let labels = f
        .get("labels")
        .map(|l| plain_map(ctx, l, "`labels`"))
        .unwrap_or_default();
    let tls = f.get("tls").and_then(|t| tls(ctx, t));
    let (endpoint, endpoint_pos) = endpoint?;
    if tls.is_some() && endpoint.starts_with("unix://") {
        ctx.error(
            endpoint_pos,
            "`tls` needs a `tcp://` or `https://` endpoint",
        );
    }
    let address = address.unwrap_or_else(|| default_address(&endpoint));
    Some(Host {
        name,
        loc: Some(ctx.loc(pos)),
        endpoint,
        address,
        labels,
        tls,
    })
}

fn tls(ctx: &mut Ctx, node: &Node) -> Option<Tls> {
    let f = fields(ctx, node, "`tls`", TLS_FIELDS)?;
    let path = |ctx: &mut Ctx, key: &str| -> Option<PathBuf> {
        match f.get(key) {
            None => {
                ctx.error(node.pos, format!("`tls` needs `{key}`"));
                None
            }
            Some(v) => string(ctx, v, &format!("`tls.{key}`")).map(|p| ctx.file_dir.join(p)),
        }
    };
    let (ca, cert, key) = (path(ctx, "ca"), path(ctx, "cert"), path(ctx, "key"));
    Some(Tls {
        ca: ca?,
        cert: cert?,
        key: key?,
    })
}

fn stack(ctx: &mut Ctx, node: &Node) -> Option<Stack> {
    let f = fields(ctx, node, "a Stack", STACK_FIELDS)?;
    let name = match f.get("name") {
        None => {
            ctx.error_hint(
                node.pos,
                "a Stack needs a `name`",
                Some("add `name: my-stack`; names are unique across the directory".into()),
            );
            None
        }
        Some(n) => name_value(ctx, n, "stack"),
    };
    let mut volumes = BTreeMap::new();
    if let Some(v) = f.get("volumes") {
        for (vname, pos, vnode) in named_entries(ctx, v, "`volumes`", "volume") {
            if let Some(vol) = volume(ctx, vname.clone(), pos, vnode) {
                volumes.insert(vname, vol);
            }
        }
    }
    let mut apps = BTreeMap::new();
    if let Some(a) = f.get("apps") {
        for (aname, pos, anode) in named_entries(ctx, a, "`apps`", "app") {
            if let Some(app) = app(ctx, aname.clone(), pos, anode, Dialect::Drover) {
                apps.insert(aname, app);
            }
        }
    }
    let rollback = f.get("rollback").map_or(Some(Rollback::Never), |r| {
        choice(
            ctx,
            r,
            "`rollback`",
            &[("auto", Rollback::Auto), ("never", Rollback::Never)],
        )
    });
    let name = name?;
    Some(Stack {
        name: name.value,
        loc: name.loc,
        volumes,
        apps,
        rollback: rollback?,
        networks: BTreeMap::new(),
    })
}

pub(super) fn volume(ctx: &mut Ctx, name: String, pos: Pos, node: &Node) -> Option<Volume> {
    let f = fields(ctx, node, &format!("volume `{name}`"), VOLUME_FIELDS)?;
    let driver = f
        .get("driver")
        .and_then(|d| text(ctx, d, "`driver`"))
        .map_or_else(|| "local".to_string(), |t| t.expose().to_string());
    let driver_opts = f
        .get("driver_opts")
        .map(|o| {
            let mut out = BTreeMap::new();
            for (k, v) in mapping(ctx, o, "`driver_opts`").unwrap_or(&[]) {
                if let (Some(k), Some(v)) =
                    (string(ctx, k, "a key"), text(ctx, v, "a driver option"))
                {
                    out.insert(k, v.expose().to_string());
                }
            }
            out
        })
        .unwrap_or_default();
    let labels = f
        .get("labels")
        .map(|l| {
            labels(ctx, l, true)
                .into_iter()
                .map(|(k, v)| (k, v.expose().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let host = f.get("host").and_then(|h| name_value(ctx, h, "host"));
    let max_downtime_ns = f.get("max_downtime").and_then(|d| {
        let ns = duration(ctx, d, "`max_downtime`")?;
        if ns == 0 {
            ctx.error_hint(
                d.pos,
                "`max_downtime` is 0: no move could ever stop the apps",
                Some("give the time the apps may be down during a move, like `5s`".into()),
            );
            return None;
        }
        Some(ns)
    });
    let consistency = f
        .get("consistency")
        .and_then(|c| {
            choice(
                ctx,
                c,
                "`consistency`",
                &[
                    ("freeze", Consistency::Freeze),
                    ("stop", Consistency::Stop),
                    ("none", Consistency::None),
                ],
            )
        })
        .unwrap_or_default();
    let from = f.get("from").and_then(|n| volume_from(ctx, n));
    let snapshots = f.get("snapshots").and_then(|n| schedule(ctx, n));
    let backup = f.get("backup").and_then(|n| backup(ctx, n));
    Some(Volume {
        name,
        loc: ctx.loc(pos),
        driver,
        driver_opts,
        labels,
        host,
        max_downtime_ns,
        consistency,
        from,
        snapshots,
        backup,
    })
}

/// `backup: { to, every, keep }`.
fn backup(ctx: &mut Ctx, node: &Node) -> Option<BackupSchedule> {
    let f = fields(ctx, node, "`backup`", BACKUP_FIELDS)?;
    let example = "like `backup: { to: offsite, every: 6h, keep: { last: 4, daily: 7 } }`";
    let to = match f.get("to") {
        None => {
            ctx.error_hint(node.pos, "`backup` has no `to`", Some(example.into()));
            None
        }
        Some(n) => name_value(ctx, n, "`backup.to`"),
    };
    let every_ns = match f.get("every") {
        None => {
            ctx.error_hint(node.pos, "`backup` has no `every`", Some(example.into()));
            None
        }
        Some(n) => match duration(ctx, n, "`backup.every`")? {
            ns if ns < 1_000_000_000 => {
                ctx.error_hint(
                    n.pos,
                    "`backup.every` is less than a second",
                    Some("each backup copies what changed and stores it: like `every: 6h`".into()),
                );
                None
            }
            ns => Some(ns),
        },
    };
    let keep = match f.get("keep") {
        None => {
            ctx.error_hint(node.pos, "`backup` has no `keep`", Some(example.into()));
            None
        }
        Some(n) => keep_policy(ctx, n),
    };
    Some(BackupSchedule {
        to: to?,
        every_ns: every_ns?,
        keep: keep?,
    })
}

/// `keep: { last, hourly, daily, weekly, monthly }`, or `keep: N` for the
/// newest N.
fn keep_policy(ctx: &mut Ctx, node: &Node) -> Option<KeepPolicy> {
    let count = |ctx: &mut Ctx, n: &Node, what: &str| -> Option<u32> {
        let s = string(ctx, n, what)?;
        match s.parse::<u32>() {
            Ok(k) => Some(k),
            Err(_) => {
                ctx.error(n.pos, format!("{what} must be a whole number, found `{s}`"));
                None
            }
        }
    };
    let mut keep = KeepPolicy::default();
    let errors_before = ctx.diags.len();
    if matches!(node.value, Value::Scalar { .. }) {
        keep.last = count(ctx, node, "`backup.keep`")?;
    } else {
        let f = fields(ctx, node, "`backup.keep`", KEEP_FIELDS)?;
        for (key, slot) in [
            ("last", &mut keep.last),
            ("hourly", &mut keep.hourly),
            ("daily", &mut keep.daily),
            ("weekly", &mut keep.weekly),
            ("monthly", &mut keep.monthly),
        ] {
            if let Some(n) = f.get(key) {
                *slot = count(ctx, n, &format!("`backup.keep.{key}`"))?;
            }
        }
    }
    // (A field that is not known was named already.)
    if keep == KeepPolicy::default() && ctx.diags.len() == errors_before {
        ctx.error_hint(
            node.pos,
            "`backup.keep` keeps no backup",
            Some("keep at least one: like `keep: { last: 4, daily: 7 }`".into()),
        );
        return None;
    }
    Some(keep)
}

/// `snapshots: { every, keep }`.
fn schedule(ctx: &mut Ctx, node: &Node) -> Option<SnapshotSchedule> {
    let f = fields(ctx, node, "`snapshots`", SCHEDULE_FIELDS)?;
    let example = "like `snapshots: { every: 1h, keep: 24 }`";
    let every_ns = match f.get("every") {
        None => {
            ctx.error_hint(node.pos, "`snapshots` has no `every`", Some(example.into()));
            None
        }
        Some(n) => match duration(ctx, n, "`snapshots.every`")? {
            ns if ns < 1_000_000_000 => {
                ctx.error_hint(
                    n.pos,
                    "`snapshots.every` is less than a second",
                    Some("each snapshot copies what changed: like `every: 1h`".into()),
                );
                None
            }
            ns => Some(ns),
        },
    };
    let keep = match f.get("keep") {
        None => {
            ctx.error_hint(node.pos, "`snapshots` has no `keep`", Some(example.into()));
            None
        }
        Some(n) => {
            let s = string(ctx, n, "`snapshots.keep`")?;
            match s.parse::<u32>() {
                Ok(k) if k >= 1 => Some(k),
                _ => {
                    ctx.error_hint(
                        n.pos,
                        format!(
                            "`snapshots.keep` must be a whole number of 1 or more, found `{s}`"
                        ),
                        Some("how many of the scheduled snapshots to keep, the newest".into()),
                    );
                    None
                }
            }
        }
    };
    Some(SnapshotSchedule {
        every_ns: every_ns?,
        keep: keep?,
    })
}

/// `from: { stack, volume, snapshot }`.
fn volume_from(ctx: &mut Ctx, node: &Node) -> Option<VolumeFrom> {
    let f = fields(ctx, node, "`from`", FROM_FIELDS)?;
    let repository = f
        .get("repository")
        .and_then(|n| name_value(ctx, n, "`from.repository`"));
    let need = |ctx: &mut Ctx, key: &str| {
        let v = f
            .get(key)
            .and_then(|n| name_value(ctx, n, &format!("`from.{key}`")));
        if f.get(key).is_none() {
            ctx.error_hint(
                node.pos,
                format!("`from` has no `{key}`"),
                Some("`from` names a snapshot of another stack's volume: `from: { stack: blog, volume: pgdata, snapshot: latest }`".into()),
            );
        }
        v
    };
    let (stack, volume) = (need(ctx, "stack"), need(ctx, "volume"));
    let snapshot = match f.get("snapshot") {
        None => None,
        Some(n) => {
            let t = text(ctx, n, "`from.snapshot`")?;
            let name = t.expose().to_string();
            if name == "latest" {
                None
            } else if f.get("repository").is_some() {
                if let Err(e) = crate::model::check_backup_id(&name) {
                    ctx.error_hint(n.pos, e, Some("or `latest`, the newest backup".into()));
                    return None;
                }
                Some(name)
            } else if let Err(e) = crate::model::check_snapshot_name(&name) {
                ctx.error_hint(n.pos, e, Some("or `latest`, the newest snapshot".into()));
                return None;
            } else {
                Some(name)
            }
        }
    };
    Some(VolumeFrom {
        stack: stack?,
        volume: volume?,
        snapshot,
        repository,
        loc: ctx.loc(node.pos),
    })
}

/// How an app is written: as an app of a drover Stack, or as a service of
/// a Compose file (Compose's names, forms and defaults).
#[derive(Clone, Copy)]
pub enum Dialect<'a> {
    Drover,
    Compose {
        /// The file's `x-drover: { host }`, where it has one.
        host: Option<&'a At<String>>,
        /// The networks the file declares.
        networks: &'a [super::compose::DeclaredNetwork],
        /// The file's volumes, secrets and configs, and the volumes its
        /// data directories and anonymous volumes become.
        data_dirs: &'a std::cell::RefCell<super::compose::DataDirs>,
    },
}

/// An app's `network_mode`: `host`, `none`, or `service:NAME` (`app:NAME`
/// in a drover Stack), which also makes the app wait for NAME. What Docker
/// refuses beside a mode is a located error here, not at apply.
fn network_mode(
    ctx: &mut Ctx,
    node: &Node,
    f: &Fields,
    depends_on: &mut Vec<(At<String>, Condition)>,
) -> NetworkMode {
    let Some(t) = text(ctx, node, "`network_mode`") else {
        return NetworkMode::Stack;
    };
    let written = t.expose().trim().to_string();
    let mode = match written.as_str() {
        "host" => NetworkMode::Host,
        "none" => NetworkMode::None,
        "bridge" => NetworkMode::Bridge,
        other => match other
            .strip_prefix("service:")
            .or_else(|| other.strip_prefix("app:"))
        {
            Some(target) => {
                let target = At {
                    value: target.to_string(),
                    loc: ctx.loc(node.pos),
                };
                if !depends_on.iter().any(|(t, _)| t.value == target.value) {
                    depends_on.push((target.clone(), Condition::Started));
                }
                NetworkMode::App(target)
            }
            None => {
                let hint = match other {
                    "default" => {
                        "drover's stack network is a bridge network of its own: remove `network_mode:`".to_string()
                    }
                    o if o.starts_with("container:") => {
                        "share the network of an app of the stack with `service:NAME`".into()
                    }
                    _ => "write `host`, `none` or `service:NAME`".into(),
                };
                ctx.error_hint(
                    node.pos,
                    format!("drover does not support `network_mode: {other}`"),
                    Some(hint),
                );
                return NetworkMode::Stack;
            }
        },
    };
    // Docker refuses these beside another network stack than its own.
    let refused: &[&str] = match mode {
        NetworkMode::App(_) => &[
            "networks",
            "external_networks",
            "ports",
            "expose",
            "hostname",
            "domainname",
            "dns",
            "dns_search",
            "extra_hosts",
            "aliases",
        ],
        NetworkMode::Bridge => &["networks", "external_networks", "aliases"],
        _ => &["networks", "external_networks", "ports", "aliases"],
    };
    for key in refused {
        if let Some(n) = f.get(key) {
            let hint = match (&mode, *key) {
                (NetworkMode::App(t), _) => format!(
                    "it shares the network of `{}`: write `{key}` there",
                    t.value
                ),
                (NetworkMode::Host, "ports") => {
                    "it listens on the host's own ports: remove `ports:`".into()
                }
                _ => format!("remove `{key}:`, or `network_mode:`"),
            };
            ctx.error_hint(
                n.pos,
                format!("`{key}` cannot be used with `network_mode: {written}`"),
                Some(hint),
            );
        }
    }
    mode
}

/// The fields of a Compose service that drover takes, besides
/// [`OPTION_FIELDS`]. Every other field of the Compose Specification is a
/// located error saying what to do.
pub const SERVICE_FIELDS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "volumes",
    "depends_on",
    "healthcheck",
    "restart",
    "labels",
    "user",
    "working_dir",
    "stop_signal",
    "stop_grace_period",
    "mem_limit",
    "cpus",
    "deploy",
    "links",
    "profiles",
    "pull_policy",
    "x-drover",
    "networks",
    "secrets",
    "configs",
    "network_mode",
    "privileged",
    "devices",
    "pid",
    "build",
    "scale",
];

pub(super) fn app(
    ctx: &mut Ctx,
    name: String,
    pos: Pos,
    node: &Node,
    dialect: Dialect,
) -> Option<App> {
    let compose = matches!(dialect, Dialect::Compose { .. });
    let what = if compose {
        format!("service `{name}`")
    } else {
        format!("app `{name}`")
    };
    let known: Vec<&str> = if compose { SERVICE_FIELDS } else { APP_FIELDS }
        .iter()
        .chain(OPTION_FIELDS)
        .copied()
        .collect();
    let f = fields(ctx, node, &what, &known)?;
    let builds = f.key_pos("build");
    // Beside `image:`, `build:` is how the image was made: drover runs the
    // image, as `docker stack deploy` does; without it there is no image.
    if let Some(b) = builds {
        if f.get("image").is_some() {
            ctx.note(
                b,
                format!("drover does not build images: {what} runs its `image`, which must be on its host or in a registry"),
            );
        } else {
            ctx.error_hint(
                b,
                format!("drover does not support `build` (in {what})"),
                compose_field(&what, "build"),
            );
        }
    }
    let image = match f.get("image") {
        // `build:` without `image:` is said once, at `build`.
        None if builds.is_some() => None,
        None => {
            ctx.error_hint(
                pos,
                format!("{what} has no `image`"),
                Some("add `image: NAME:TAG`".into()),
            );
            None
        }
        Some(i) => text(ctx, i, "`image`").filter(|t| {
            if t.expose().trim().is_empty() {
                ctx.error(i.pos, "`image` is empty");
                false
            } else {
                true
            }
        }),
    };
    let host = match dialect {
        Dialect::Drover => f.get("host").and_then(|h| name_value(ctx, h, "host")),
        Dialect::Compose { host, .. } => match f.get("x-drover") {
            Some(x) => {
                let placed = fields(ctx, x, "`x-drover`", &["host"])?;
                placed
                    .get("host")
                    .and_then(|h| name_value(ctx, h, "host"))
                    .or_else(|| host.cloned())
            }
            None => host.cloned(),
        },
    };

    let mut environment = BTreeMap::new();
    if let Some(files) = f.get("env_file") {
        env_files(ctx, files, &mut environment);
    }
    if let Some(e) = f.get("environment") {
        environment_entries(ctx, e, &mut environment, compose);
    }

    let mut volumes = Vec::new();
    let mut binds = Vec::new();
    let mut files = Vec::new();
    if let Some(list) = f.get("volumes") {
        for item in sequence(ctx, list, "`volumes`").unwrap_or(&[]) {
            if let Dialect::Compose { data_dirs, .. } = dialect {
                let loc = ctx.loc(item.pos);
                match super::compose::mount(ctx, &name, item, data_dirs) {
                    Some(super::compose::Mounted::Volume(m)) => {
                        // A volume of the host, made outside the stack.
                        let external = data_dirs.borrow().external.get(&m.volume).cloned();
                        match external {
                            Some((name, must_exist)) => binds.push(At {
                                value: crate::model::Bind {
                                    host_path: name,
                                    target: m.target,
                                    read_only: m.read_only,
                                    volume: true,
                                    must_exist,
                                    device: None,
                                    propagation: None,
                                },
                                loc,
                            }),
                            None => volumes.push(At { value: m, loc }),
                        }
                    }
                    Some(super::compose::Mounted::Bind(b)) => binds.push(At { value: b, loc }),
                    Some(super::compose::Mounted::Files(f)) => files.extend(f),
                    None => {}
                }
                continue;
            }
            if let Some(s) = text(ctx, item, "a volume mount") {
                match parse_mount(s.expose()) {
                    Ok(m) => volumes.push(At {
                        value: m,
                        loc: ctx.loc(item.pos),
                    }),
                    Err((msg, hint)) => ctx.error_hint(
                        item.pos,
                        unless_secret(&s, msg, "this volume mount is not valid"),
                        hint,
                    ),
                }
            }
        }
    }
    let mut ports = Vec::new();
    if let Some(list) = f.get("ports") {
        for item in sequence(ctx, list, "`ports`").unwrap_or(&[]) {
            if compose && matches!(item.value, Value::Map(_)) {
                if let Some(p) = super::compose::long_port(ctx, item) {
                    ports.push(At {
                        value: p,
                        loc: ctx.loc(item.pos),
                    });
                }
                continue;
            }
            if let Some(s) = text(ctx, item, "a port") {
                match parse_port(s.expose()) {
                    Ok(p) => ports.push(At {
                        value: p,
                        loc: ctx.loc(item.pos),
                    }),
                    Err(msg) => ctx.error_hint(
                        item.pos,
                        unless_secret(&s, msg, "this port is not valid"),
                        Some("ports are `[IP:]HOST:CONTAINER[/tcp|udp]`, as in `8080:80`".into()),
                    ),
                }
            }
        }
    }
    let healthcheck = f.get("healthcheck").and_then(|h| healthcheck(ctx, h));
    let restart = f.get("restart").and_then(|r| {
        // Compose reads an empty policy (an unset `${VAR}`) as `no`.
        if compose && text(ctx, r, "`restart`")?.expose().is_empty() {
            return Some(Restart::No);
        }
        choice(
            ctx,
            r,
            "`restart`",
            &[
                ("unless-stopped", Restart::UnlessStopped),
                ("always", Restart::Always),
                ("on-failure", Restart::OnFailure),
                ("no", Restart::No),
            ],
        )
    });
    let pull_key = if compose { "pull_policy" } else { "pull" };
    let pull = f.get(pull_key).and_then(|p| {
        choice(
            ctx,
            p,
            &format!("`{pull_key}`"),
            &[
                ("missing", Pull::Missing),
                ("always", Pull::Always),
                ("never", Pull::Never),
                ("if_not_present", Pull::Missing),
            ],
        )
    });
    let (mut depends_on, restart_with) = f
        .get("depends_on")
        .map(|d| depends_on(ctx, d))
        .unwrap_or_default();
    let mut links = Vec::new();
    if let Some(l) = f.get("links") {
        for item in sequence(ctx, l, "`links`").unwrap_or(&[]) {
            if compose {
                // Compose's legacy links: the service's name, and an order.
                if let Some(target) = super::compose::link(ctx, item) {
                    if !depends_on.iter().any(|(t, _)| t.value == target.value) {
                        depends_on.push((target, Condition::Started));
                    }
                }
            } else if let Some(target) = name_value(ctx, item, "app") {
                links.push(target);
            }
        }
    }
    let cmd = f.get("command").and_then(|c| command(ctx, c, "`command`"));
    let entrypoint = f
        .get("entrypoint")
        .and_then(|c| command(ctx, c, "`entrypoint`"));
    let working_dir = f
        .get("working_dir")
        .and_then(|w| text(ctx, w, "`working_dir`"));
    let user = f.get("user").and_then(|u| text(ctx, u, "`user`"));
    let app_labels = f
        .get("labels")
        .map(|l| labels(ctx, l, true))
        .unwrap_or_default();
    let stop_signal = f
        .get("stop_signal")
        .and_then(|s| text(ctx, s, "`stop_signal`"))
        .map(|t| t.expose().to_string());
    let stop_grace_period_ns = f
        .get("stop_grace_period")
        .and_then(|d| duration(ctx, d, "`stop_grace_period`"));
    let limits = match (compose, f.get("deploy")) {
        (true, Some(d)) => super::compose::deploy_limits(ctx, d),
        _ => None,
    };
    let memory_node = f
        .get(if compose { "mem_limit" } else { "memory" })
        .or_else(|| limits.as_ref().and_then(|l| l.memory));
    let memory = memory_node.and_then(|m| {
        let s = text(ctx, m, "`memory`")?;
        parse_bytes(s.expose())
            .map_err(|e| {
                let msg = unless_secret(&s, e, "`memory` is not a size");
                ctx.error_hint(m.pos, msg, Some("for example `512m` or `2g`".into()))
            })
            .ok()
    });
    let cpus_node = f
        .get("cpus")
        .or_else(|| limits.as_ref().and_then(|l| l.cpus));
    let nano_cpus = cpus_node.and_then(|c| {
        let s = text(ctx, c, "`cpus`")?;
        match s.expose().trim().parse::<f64>() {
            Ok(v) if v > 0.0 && v <= 4096.0 => Some((v * 1e9).round() as u64),
            _ => {
                ctx.error_hint(
                    c.pos,
                    format!("`cpus` must be a positive number, found `{s}`"),
                    Some("for example `cpus: 0.5`".into()),
                );
                None
            }
        }
    });

    if let (Dialect::Drover, Some(list)) = (dialect, f.get("files")) {
        for item in sequence(ctx, list, "`files`").unwrap_or(&[]) {
            files.extend(super::compose::file_entry(ctx, item).unwrap_or_default());
        }
    }
    if let Dialect::Compose { data_dirs, .. } = dialect {
        for kind in ["secrets", "configs"] {
            if let Some(n) = f.get(kind) {
                files.extend(super::compose::service_contents(ctx, n, kind, data_dirs));
            }
        }
    }
    let mut options = options(ctx, &f);
    if let Dialect::Compose { .. } = dialect {
        host_access(ctx, &f, &mut options, &mut binds);
    }
    let mut joined = Vec::new();
    let mut external_networks = Vec::new();
    let mut addresses = BTreeMap::new();
    if let (Dialect::Compose { networks, .. }, Some(n)) = (dialect, f.get("networks")) {
        let read = super::compose::service_networks(ctx, n, networks);
        (options.aliases, joined, external_networks, addresses) =
            (read.aliases, read.joined, read.external, read.addresses);
    }
    if let (Dialect::Drover, Some(n)) = (dialect, f.get("external_networks")) {
        external_networks = words(ctx, n, "`external_networks`");
    }
    if let (Dialect::Drover, Some(n)) = (dialect, f.get("aliases")) {
        options.aliases = words(ctx, n, "`aliases`");
    }
    if let (Dialect::Drover, Some(n)) = (dialect, f.get("networks")) {
        joined = words(ctx, n, "`networks`");
        if let Some(bad) = joined.iter().find(|n| {
            !n.starts_with(|c: char| c.is_ascii_alphanumeric())
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        }) {
            ctx.error(n.pos, format!("`{bad}` is not a valid network name"));
        }
    }
    let network_mode = match f.get("network_mode") {
        Some(n) => network_mode(ctx, n, &f, &mut depends_on),
        None => NetworkMode::Stack,
    };
    Some(App {
        name,
        loc: ctx.loc(pos),
        image: image?,
        host,
        environment,
        volumes,
        binds,
        files,
        networks: joined,
        external_networks,
        network_mode,
        addresses,
        ports,
        healthcheck,
        // Compose's default is `no`; drover's own, `unless-stopped`.
        restart: restart.unwrap_or(if compose {
            Restart::No
        } else {
            Restart::UnlessStopped
        }),
        pull: pull.unwrap_or(Pull::Missing),
        depends_on,
        restart_with,
        links,
        command: cmd,
        entrypoint,
        working_dir,
        user,
        labels: app_labels,
        stop_signal,
        stop_grace_period_ns,
        memory,
        nano_cpus,
        options,
    })
}

/// What a Compose service may take of its host besides a path:
/// `privileged`, `pid: host` and `devices` (which, like a host path, pin
/// the app to its host). A drover Stack asks for none of them.
fn host_access(
    ctx: &mut Ctx,
    f: &Fields,
    o: &mut Options,
    binds: &mut Vec<At<crate::model::Bind>>,
) {
    if let Some(n) = f.get("privileged") {
        o.privileged =
            choice(ctx, n, "`privileged`", &[("true", true), ("false", false)]).unwrap_or(false);
        if o.privileged {
            ctx.note(
                n.pos,
                "runs privileged: every capability and device of its host, as in Compose",
            );
        }
    }
    if let Some(n) = f.get("pid") {
        if let Some(t) = text(ctx, n, "`pid`") {
            match t.expose() {
                "host" => {
                    ctx.note(
                        n.pos,
                        "sees and signals every process of its host (`pid: host`), as in Compose",
                    );
                    o.pid = Some("host".into());
                }
                "" => {}
                other => ctx.error_hint(
                    n.pos,
                    format!("drover does not support `pid: {other}`"),
                    Some(
                        "`pid: host` shares the host's processes; another app's are not shared"
                            .into(),
                    ),
                ),
            }
        }
    }
    let Some(list) = f.get("devices") else {
        return;
    };
    for item in sequence(ctx, list, "`devices`").unwrap_or(&[]) {
        let loc = ctx.loc(item.pos);
        let (source, target, permissions) = if let Value::Map(_) = item.value {
            let Some(d) = fields(ctx, item, "a device", &["source", "target", "permissions"])
            else {
                continue;
            };
            let get = |ctx: &mut Ctx, key: &str| {
                d.get(key)
                    .and_then(|n| text(ctx, n, &format!("`{key}`")))
                    .map(|t| t.expose().to_string())
            };
            let Some(source) = get(ctx, "source") else {
                ctx.error(item.pos, "a device has no `source`");
                continue;
            };
            let target = get(ctx, "target").unwrap_or_else(|| source.clone());
            (source, target, get(ctx, "permissions"))
        } else {
            let Some(t) = text(ctx, item, "a device") else {
                continue;
            };
            let mut parts = t.expose().splitn(3, ':').map(str::to_string);
            let source = parts.next().unwrap_or_default();
            let target = parts.next().unwrap_or_else(|| source.clone());
            (source, target, parts.next())
        };
        let permissions = permissions.unwrap_or_else(|| "rwm".into());
        if !source.starts_with('/') || !target.starts_with('/') {
            ctx.error_hint(
                item.pos,
                format!("device `{source}` is not an absolute path of the host"),
                Some("write `/dev/NAME[:/dev/NAME_IN_CONTAINER[:rwm]]`".into()),
            );
        } else if permissions.is_empty() || !permissions.chars().all(|c| "rwm".contains(c)) {
            ctx.error_hint(
                item.pos,
                format!("device permissions `{permissions}` are not of `r`, `w` and `m`"),
                None,
            );
        } else {
            ctx.note(
                item.pos,
                format!("uses the host device `{source}`: the app stays on its host, as with a host path"),
            );
            binds.push(At {
                value: crate::model::Bind {
                    host_path: source,
                    target,
                    read_only: false,
                    volume: false,
                    must_exist: false,
                    device: Some(permissions),
                    propagation: None,
                },
                loc,
            });
        }
    }
}

/// The container options of an app (see [`Options`]).
fn options(ctx: &mut Ctx, f: &Fields) -> Options {
    let mut o = Options::default();
    let word = |ctx: &mut Ctx, key: &str| {
        f.get(key)
            .and_then(|n| text(ctx, n, &format!("`{key}`")))
            .map(|t| t.expose().to_string())
    };
    o.hostname = word(ctx, "hostname");
    o.runtime = word(ctx, "runtime").filter(|r| !r.is_empty());
    if let Some(p) = f.get("platform") {
        // An empty platform (`${DOCKER_PLATFORM:-}`) is no platform.
        match text(ctx, p, "`platform`").map(|t| t.expose().trim().to_string()) {
            Some(t) if t.is_empty() => {}
            Some(t)
                if (1..=3).contains(&t.split('/').count())
                    && t.split('/').all(|part| {
                        !part.is_empty()
                            && part
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
                    }) =>
            {
                o.platform = Some(t)
            }
            Some(t) => ctx.error_hint(
                p.pos,
                format!("`{t}` is not a platform"),
                Some("write `OS[/ARCH[/VARIANT]]`, as in `linux/arm64/v8`".into()),
            ),
            None => {}
        }
    }
    o.domainname = word(ctx, "domainname");
    o.container_name = word(ctx, "container_name");
    if let (Some(name), Some(n)) = (&o.container_name, f.get("container_name")) {
        let ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            ctx.error(n.pos, format!("`{name}` is not a valid container name"));
        }
    }
    let flag = |ctx: &mut Ctx, key: &str| {
        f.get(key).and_then(|n| {
            choice(
                ctx,
                n,
                &format!("`{key}`"),
                &[("true", true), ("false", false)],
            )
        })
    };
    o.read_only = flag(ctx, "read_only").unwrap_or(false);
    o.tty = flag(ctx, "tty").unwrap_or(false);
    o.stdin_open = flag(ctx, "stdin_open").unwrap_or(false);
    o.init = flag(ctx, "init");
    let list = |ctx: &mut Ctx, key: &str| {
        f.get(key)
            .map(|n| words(ctx, n, &format!("`{key}`")))
            .unwrap_or_default()
    };
    o.cap_add = list(ctx, "cap_add");
    o.cap_drop = list(ctx, "cap_drop");
    o.security_opt = list(ctx, "security_opt");
    o.dns = list(ctx, "dns");
    o.dns_search = list(ctx, "dns_search");
    if let Some(n) = f.get("expose") {
        for item in sequence(ctx, n, "`expose`").unwrap_or(&[]) {
            let Some(t) = text(ctx, item, "an exposed port") else {
                continue;
            };
            match values::parse_expose(t.expose()) {
                Ok(ports) => o.expose.extend(ports),
                Err(msg) => ctx.error_hint(
                    item.pos,
                    msg,
                    Some("exposed ports are `PORT[/tcp|udp]` or a range `FROM-TO`".into()),
                ),
            }
        }
    }
    if let Some(n) = f.get("extra_hosts") {
        o.extra_hosts = extra_hosts(ctx, n);
    }
    if let Some(n) = f.get("tmpfs") {
        for t in words(ctx, n, "`tmpfs`") {
            let (path, opts) = t.split_once(':').unwrap_or((&t, ""));
            if !path.starts_with('/') {
                ctx.error(
                    n.pos,
                    format!("tmpfs mount point `{path}` must be an absolute path"),
                );
                continue;
            }
            o.tmpfs.insert(path.to_string(), opts.to_string());
        }
    }
    if let Some(n) = f.get("ulimits") {
        o.ulimits = ulimits(ctx, n);
    }
    if let Some(n) = f.get("sysctls") {
        o.sysctls = key_values(ctx, n, "`sysctls`");
    }
    if let Some(n) = f.get("logging") {
        if let Some(l) = fields(ctx, n, "`logging`", &["driver", "options"]) {
            let driver = l
                .get("driver")
                .and_then(|d| text(ctx, d, "`driver`"))
                .map_or_else(|| "json-file".to_string(), |t| t.expose().to_string());
            let options = l
                .get("options")
                .map(|o| key_values(ctx, o, "`options`"))
                .unwrap_or_default();
            o.logging = Some((driver, options));
        }
    }
    o.pids_limit = f.get("pids_limit").and_then(|n| {
        let t = text(ctx, n, "`pids_limit`")?;
        t.expose()
            .trim()
            .parse::<i64>()
            .map_err(|_| {
                ctx.error(
                    n.pos,
                    format!("`pids_limit` must be a whole number, found `{t}`"),
                )
            })
            .ok()
    });
    o.shm_size = f.get("shm_size").and_then(|m| {
        let s = text(ctx, m, "`shm_size`")?;
        parse_bytes(s.expose())
            .map_err(|e| ctx.error_hint(m.pos, e, Some("for example `256m`".into())))
            .ok()
    });
    o
}

/// A string or a list of strings, interpolated.
fn words(ctx: &mut Ctx, node: &Node, what: &str) -> Vec<String> {
    match &node.value {
        Value::Seq(items) => items
            .iter()
            .filter_map(|i| text(ctx, i, what))
            .map(|t| t.expose().to_string())
            .collect(),
        _ => text(ctx, node, what)
            .map(|t| vec![t.expose().to_string()])
            .unwrap_or_default(),
    }
}

/// A mapping of strings, or a list of `KEY=VALUE`, interpolated.
fn key_values(ctx: &mut Ctx, node: &Node, what: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match &node.value {
        Value::Seq(items) => {
            for item in items {
                let Some(t) = text(ctx, item, what) else {
                    continue;
                };
                match t.expose().split_once('=') {
                    Some((k, v)) => {
                        out.insert(k.trim().to_string(), v.trim().to_string());
                    }
                    None => ctx.error_hint(
                        item.pos,
                        format!("{what} entry `{t}` has no `=`"),
                        Some("write `KEY=VALUE`".into()),
                    ),
                }
            }
        }
        _ => {
            for (k, v) in mapping(ctx, node, what).unwrap_or(&[]) {
                if let (Some(k), Some(v)) = (string(ctx, k, "a key"), text(ctx, v, what)) {
                    out.insert(k, v.expose().to_string());
                }
            }
        }
    }
    out
}

/// `extra_hosts` as a list (`NAME:ADDRESS` or `NAME=ADDRESS`) or a mapping,
/// each as Docker takes it: `NAME:ADDRESS`.
fn extra_hosts(ctx: &mut Ctx, node: &Node) -> Vec<String> {
    let pairs: Vec<(String, String, Pos)> = match &node.value {
        Value::Seq(items) => items
            .iter()
            .filter_map(|i| {
                let t = text(ctx, i, "an `extra_hosts` entry")?;
                let s = t.expose();
                let split = s.split_once('=').or_else(|| s.split_once(':'));
                match split {
                    Some((h, a)) => Some((h.to_string(), a.to_string(), i.pos)),
                    None => {
                        ctx.error_hint(
                            i.pos,
                            format!("`extra_hosts` entry `{s}` names no address"),
                            Some("write `NAME:ADDRESS`, as in `db.local:10.0.0.5`".into()),
                        );
                        None
                    }
                }
            })
            .collect(),
        _ => key_values(ctx, node, "`extra_hosts`")
            .into_iter()
            .map(|(k, v)| (k, v, node.pos))
            .collect(),
    };
    let mut out = Vec::new();
    for (host, address, pos) in pairs {
        let address = address.trim_start_matches('[').trim_end_matches(']');
        if address != "host-gateway" && address.parse::<std::net::IpAddr>().is_err() {
            ctx.error(
                pos,
                format!("`{address}` in `extra_hosts` is not an IP address"),
            );
            continue;
        }
        out.push(format!("{host}:{address}"));
    }
    out
}

/// `ulimits: { nofile: { soft, hard }, nproc: 65535 }`.
fn ulimits(ctx: &mut Ctx, node: &Node) -> BTreeMap<String, (i64, i64)> {
    let mut out = BTreeMap::new();
    let number = |ctx: &mut Ctx, n: &Node, what: &str| {
        let t = text(ctx, n, what)?;
        t.expose()
            .trim()
            .parse::<i64>()
            .map_err(|_| ctx.error(n.pos, format!("{what} must be a whole number, found `{t}`")))
            .ok()
    };
    for (k, v) in mapping(ctx, node, "`ulimits`").unwrap_or(&[]) {
        let Some(name) = string(ctx, k, "a ulimit") else {
            continue;
        };
        let limit = if let Value::Map(_) = &v.value {
            let Some(f) = fields(ctx, v, &format!("ulimit `{name}`"), &["soft", "hard"]) else {
                continue;
            };
            let soft = f.get("soft").and_then(|n| number(ctx, n, "`soft`"));
            let hard = f.get("hard").and_then(|n| number(ctx, n, "`hard`"));
            match (soft, hard) {
                (Some(s), Some(h)) => (s, h),
                _ => {
                    ctx.error(v.pos, format!("ulimit `{name}` needs `soft` and `hard`"));
                    continue;
                }
            }
        } else {
            let Some(n) = number(ctx, v, &format!("ulimit `{name}`")) else {
                continue;
            };
            (n, n)
        };
        out.insert(name, limit);
    }
    out
}

pub(super) fn choice<T: Copy>(
    ctx: &mut Ctx,
    node: &Node,
    what: &str,
    options: &[(&str, T)],
) -> Option<T> {
    let t = text(ctx, node, what)?;
    if let Some((_, v)) = options.iter().find(|(name, _)| *name == t.expose()) {
        return Some(*v);
    }
    let s = t.to_string();
    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    ctx.error_hint(
        node.pos,
        format!(
            "{what} must be one of {}, found `{s}`",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        similar(&s, names.iter().copied()),
    );
    None
}

fn env_key_ok(key: &str) -> bool {
    !key.is_empty() && !key.contains('=') && !key.contains(char::is_whitespace)
}

/// `environment` as a mapping or a list of `KEY=VALUE`. In a Compose file,
/// `KEY` alone (or `KEY:` with no value) passes the variable from drover's
/// environment or `.env`, as a secret, and leaves it out when it is unset.
fn environment_entries(
    ctx: &mut Ctx,
    node: &Node,
    out: &mut BTreeMap<String, Text>,
    compose: bool,
) {
    fn pass(ctx: &mut Ctx, out: &mut BTreeMap<String, Text>, key: &str, pos: Pos) {
        if !env_key_ok(key) {
            ctx.error(pos, format!("`{key}` is not a valid variable name"));
        } else if let Some(v) = ctx.env.get(key) {
            out.insert(key.to_string(), Text::secret(v));
        }
    }
    match &node.value {
        Value::Seq(items) => {
            for item in items {
                let Some(raw) = string(ctx, item, "an `environment` entry") else {
                    continue;
                };
                if compose && !raw.contains('=') {
                    pass(ctx, out, &raw, item.pos);
                    continue;
                }
                let Some((key, value)) = raw.split_once('=') else {
                    ctx.error_hint(
                        item.pos,
                        format!("`environment` entry `{raw}` has no `=`"),
                        Some("write `KEY=VALUE`".into()),
                    );
                    continue;
                };
                if !env_key_ok(key) {
                    ctx.error(item.pos, format!("`{key}` is not a valid variable name"));
                    continue;
                }
                match ctx.interpolate(item.pos, value) {
                    Ok((v, used)) => {
                        out.insert(key.to_string(), Text::new(v, used));
                    }
                    Err(e) => ctx.error_hint(item.pos, format!("`{key}`: {}", e.message), e.hint),
                }
            }
        }
        _ => {
            for (k, v) in mapping(ctx, node, "`environment`").unwrap_or(&[]) {
                let Some(key) = string(ctx, k, "a variable name") else {
                    continue;
                };
                if !env_key_ok(&key) {
                    ctx.error(k.pos, format!("`{key}` is not a valid variable name"));
                    continue;
                }
                if v.value == Value::Null && compose {
                    pass(ctx, out, &key, k.pos);
                    continue;
                }
                if v.value == Value::Null {
                    ctx.error_hint(
                        v.pos,
                        format!("`{key}` has no value"),
                        Some(format!("write `{key}: \"\"` for empty, or `{key}: ${{{key}}}` to pass it from drover's environment")),
                    );
                    continue;
                }
                if let Some(value) = text(ctx, v, &format!("`{key}`")) {
                    out.insert(key, value);
                }
            }
        }
    }
}

fn env_files(ctx: &mut Ctx, node: &Node, out: &mut BTreeMap<String, Text>) {
    let items: Vec<&Node> = match &node.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![node],
    };
    for item in items {
        let Some(rel) = text(ctx, item, "an `env_file`") else {
            continue;
        };
        let rel = rel.expose().to_string();
        let path = ctx.file_dir.join(&rel);
        let real = path.canonicalize();
        // A path that resolves nowhere is judged as written, so that one
        // leading outside is refused whether or not its target exists.
        let inside = match &real {
            Ok(p) => p.starts_with(ctx.root),
            Err(_) => lexically_normal(&path).starts_with(ctx.root),
        };
        if !inside {
            ctx.error_hint(
                item.pos,
                format!("env_file `{rel}` leads outside the manifest directory"),
                Some("keep env files inside the directory drover reads".into()),
            );
            continue;
        }
        let real = match real {
            Ok(p) => p,
            Err(e) => {
                ctx.error(
                    item.pos,
                    format!("env_file `{rel}` cannot be read: {}", io_reason(&e)),
                );
                continue;
            }
        };
        let content = match read_limited(&real, MAX_ENV_FILE_BYTES) {
            Ok(c) => c,
            Err(reason) => {
                ctx.error(
                    item.pos,
                    format!("env_file `{rel}` cannot be read: {reason}"),
                );
                continue;
            }
        };
        let shown: Arc<str> = Arc::from(
            ctx.root_shown
                .join(real.strip_prefix(ctx.root).unwrap_or(&real))
                .display()
                .to_string(),
        );
        for (line, entry) in parse_env_file(&content) {
            match entry {
                Ok((k, v)) => {
                    out.insert(k, Text::secret(v));
                }
                // The line itself may hold a secret: the error names the
                // place but never shows the text.
                Err(msg) => ctx.diags.push(Diagnostic::new(
                    Loc::new(&shown, Pos { line, col: 1 }),
                    format!("env_file: {msg}"),
                )),
            }
        }
    }
}

/// The apps an app waits for, and those of them whose update restarts it
/// (`restart: true`).
fn depends_on(ctx: &mut Ctx, node: &Node) -> (Vec<(At<String>, Condition)>, Vec<String>) {
    let mut out = Vec::new();
    let mut restart_with = Vec::new();
    match &node.value {
        Value::Seq(items) => {
            for item in items {
                if let Some(t) = name_value(ctx, item, "app") {
                    out.push((t, Condition::Started));
                }
            }
        }
        _ => {
            for (k, v) in mapping(ctx, node, "`depends_on`").unwrap_or(&[]) {
                let Some(target) = name_value(ctx, k, "app") else {
                    continue;
                };
                let mut cond = Condition::Started;
                if v.value != Value::Null {
                    if let Some(f) = fields(ctx, v, "a `depends_on` entry", DEPENDS_ON_FIELDS) {
                        // Compose's `required: true` is what drover always
                        // does; `restart: true` restarts it when the other
                        // is updated: drover recreates it then.
                        if let Some(r) = f.get("required") {
                            if r.as_scalar() != Some("true") {
                                ctx.error_hint(r.pos, "an optional dependency (`required: false`) is not supported", Some("every app an app depends on is in its stack: remove it, or `required:`".into()));
                            }
                        }
                        if let Some(r) = f.get("restart") {
                            if choice(ctx, r, "`restart`", &[("true", true), ("false", false)])
                                == Some(true)
                            {
                                restart_with.push(target.value.clone());
                            }
                        }
                        if let Some(c) = f.get("condition") {
                            // Compose's spellings mean the same.
                            match choice(
                                ctx,
                                c,
                                "`condition`",
                                &[
                                    ("started", Condition::Started),
                                    ("healthy", Condition::Healthy),
                                    ("completed", Condition::Completed),
                                    ("service_started", Condition::Started),
                                    ("service_healthy", Condition::Healthy),
                                    ("service_completed_successfully", Condition::Completed),
                                ],
                            ) {
                                Some(c) => cond = c,
                                None => continue,
                            }
                        }
                    }
                }
                out.push((target, cond));
            }
        }
    }
    (out, restart_with)
}

fn command(ctx: &mut Ctx, node: &Node, what: &str) -> Option<Vec<Text>> {
    match &node.value {
        Value::Seq(items) => items.iter().map(|i| text(ctx, i, what)).collect(),
        _ => {
            let t = text(ctx, node, what)?;
            match shell_words::split(t.expose()) {
                Ok(words) => Some(
                    words
                        .into_iter()
                        .map(|w| Text::new(w, t.is_secret()))
                        .collect(),
                ),
                Err(_) => {
                    ctx.error_hint(
                        node.pos,
                        format!("{what} has an unbalanced quote"),
                        Some("write it as a list to avoid shell quoting".into()),
                    );
                    None
                }
            }
        }
    }
}

fn healthcheck(ctx: &mut Ctx, node: &Node) -> Option<Healthcheck> {
    let f = fields(ctx, node, "`healthcheck`", HEALTHCHECK_FIELDS)?;
    let disable = f
        .get("disable")
        .and_then(|d| choice(ctx, d, "`disable`", &[("true", true), ("false", false)]))
        .unwrap_or(false);
    let test = if disable {
        vec![Text::plain("NONE")]
    } else {
        match f.get("test") {
            // As in Compose: the image's own check, with the timings given.
            None => Vec::new(),
            Some(t) => match &t.value {
                Value::Seq(items) => {
                    let test: Vec<Text> = items
                        .iter()
                        .map(|i| text(ctx, i, "`test`"))
                        .collect::<Option<_>>()?;
                    let first = test.first().map(Text::expose).unwrap_or("");
                    if !["CMD", "CMD-SHELL", "NONE"].contains(&first) {
                        ctx.error_hint(
                            t.pos,
                            "`test` must start with `CMD`, `CMD-SHELL` or `NONE`",
                            Some("for example `[\"CMD\", \"pg_isready\"]`".into()),
                        );
                        return None;
                    }
                    test
                }
                _ => vec![Text::plain("CMD-SHELL"), text(ctx, t, "`test`")?],
            },
        }
    };
    let mut dur = |key: &str| {
        f.get(key)
            .and_then(|d| duration(ctx, d, &format!("`{key}`")))
    };
    let interval_ns = dur("interval");
    let timeout_ns = dur("timeout");
    let start_period_ns = dur("start_period");
    let retries = f.get("retries").and_then(|r| {
        let s = text(ctx, r, "`retries`")?;
        s.expose()
            .trim()
            .parse::<u32>()
            .map_err(|_| {
                ctx.error(
                    r.pos,
                    format!("`retries` must be a whole number, found `{s}`"),
                )
            })
            .ok()
    });
    Some(Healthcheck {
        test,
        interval_ns,
        timeout_ns,
        retries,
        start_period_ns,
    })
}

/// The message for a value that does not parse. Parsers quote the value, so
/// for one that came from `${VAR}` interpolation (a secret) the message is
/// `redacted`, which says what is wrong without showing it.
fn unless_secret(value: &Text, message: String, redacted: &str) -> String {
    if value.is_secret() {
        format!("{redacted} (its value comes from a variable and is not shown)")
    } else {
        message
    }
}

fn duration(ctx: &mut Ctx, node: &Node, what: &str) -> Option<u64> {
    let s = text(ctx, node, what)?;
    parse_duration(s.expose())
        .map_err(|e| {
            ctx.error_hint(
                node.pos,
                unless_secret(
                    &s,
                    format!("{what}: {e}"),
                    &format!("{what} is not a duration"),
                ),
                Some("durations are written like `5s`, `1m30s` or `500ms`".into()),
            )
        })
        .ok()
}
