//! `drover diff`: what one spec changes against another, with no host and
//! no network: stacks, apps and volumes added or removed, the fields of
//! each app that change (a secret's name, never its value), and the apps
//! and volumes whose host changes, which is data that will move.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde::Serialize;

use crate::contract::hostkey::HostKey;
use crate::contract::labels;
use crate::desired::{ContainerSpec, Desired, VolumeSpec, SECRET_DIGEST};

/// What an app or a volume becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    Changed,
}

/// One app added, removed or changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct AppChange {
    pub stack: String,
    pub app: String,
    pub change: Change,
    /// Its host: the new one, or the one it had for a removed app.
    pub host: String,
    /// The host it leaves, when it changes host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_host: Option<String>,
    /// What changes, as the plan says it: "image `a` → `b`", "environment
    /// `X` changed", "a secret value changed (environment `Y`)".
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

/// One volume added, removed, changed or moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct VolumeChange {
    pub stack: String,
    pub volume: String,
    pub change: Change,
    pub host: String,
    /// The host its data moves from: set when the volume will move.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_host: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

/// What the spec of the working tree changes against a base revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct SpecDiff {
    /// The revision compared against, as given (`origin/main`).
    pub base: String,
    /// Its commit.
    pub base_commit: String,
    pub stacks_added: Vec<String>,
    pub stacks_removed: Vec<String>,
    pub apps: Vec<AppChange>,
    pub volumes: Vec<VolumeChange>,
}

impl SpecDiff {
    pub fn is_empty(&self) -> bool {
        self.stacks_added.is_empty()
            && self.stacks_removed.is_empty()
            && self.apps.is_empty()
            && self.volumes.is_empty()
    }

    /// The volumes whose data moves to another host.
    pub fn moves(&self) -> impl Iterator<Item = &VolumeChange> {
        self.volumes.iter().filter(|v| v.from_host.is_some())
    }
}

/// Every container of `d`, by (stack, app).
fn containers(d: &Desired) -> BTreeMap<(&str, &str), &ContainerSpec> {
    d.hosts
        .values()
        .flat_map(|h| h.containers.values())
        .map(|c| ((c.stack.as_str(), c.app.as_str()), c))
        .collect()
}

fn volumes(d: &Desired) -> BTreeMap<(&str, &str), &VolumeSpec> {
    d.hosts
        .values()
        .flat_map(|h| h.volumes.values())
        .map(|v| ((v.stack.as_str(), v.volume.as_str()), v))
        .collect()
}

/// What changes between two renders of a container, field by field. Both
/// are digested under one key made for the comparison, so that a secret
/// value is compared without being shown, or kept.
fn app_fields(old: &ContainerSpec, new: &ContainerSpec, key: &HostKey) -> Vec<String> {
    let (a, b) = (old.keyed_digests(Some(key)), new.keyed_digests(Some(key)));
    let secret =
        |c: &ContainerSpec, k: &str| c.field_digests.get(k).is_some_and(|d| d == SECRET_DIGEST);
    let mut out = Vec::new();
    let mut secrets = Vec::new();
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in names {
        // What follows from another app's change is said of that app.
        let derived = [labels::NETWORK_OF, labels::RESTARTS_WITH]
            .iter()
            .any(|l| k.strip_prefix("label.") == Some(l));
        if a.get(k) == b.get(k) || derived {
            continue;
        }
        let what = crate::plan::describe_field(k);
        if secret(old, k) || secret(new, k) {
            secrets.push(what);
            continue;
        }
        out.push(match (a.get(k), b.get(k)) {
            (Some(_), Some(_)) if k == "image" => {
                format!("image `{}` → `{}`", old.image.expose(), new.image.expose())
            }
            (Some(_), Some(_)) => format!("{what} changed"),
            (None, _) => format!("{what} added"),
            (_, None) => format!("{what} removed"),
        });
    }
    if !secrets.is_empty() {
        out.push(format!("a secret value changed ({})", secrets.join(", ")));
    }
    out
}

/// What changes in a volume's settings, its host aside.
fn volume_fields(old: &VolumeSpec, new: &VolumeSpec) -> Vec<String> {
    let as_map = |v: &VolumeSpec| match serde_json::to_value(v) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let (a, b) = (as_map(old), as_map(new));
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    names
        .into_iter()
        .filter(|k| !matches!(k.as_str(), "name" | "stack" | "volume" | "host"))
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("`{k}` changed"))
        .collect()
}

/// One object (an app or a volume) added, removed or changed.
struct Found<'a> {
    stack: &'a str,
    name: &'a str,
    change: Change,
    host: &'a str,
    from_host: Option<&'a str>,
    fields: Vec<String>,
}

/// The objects of `new` added or changed (on another host, or in a field
/// `fields` names) against `old`, and those of `old` removed.
fn changes<'a, T>(
    old: &BTreeMap<(&'a str, &'a str), &'a T>,
    new: &BTreeMap<(&'a str, &'a str), &'a T>,
    host: impl Fn(&'a T) -> &'a str,
    fields: impl Fn(&T, &T) -> Vec<String>,
) -> Vec<Found<'a>> {
    let mut out = Vec::new();
    for (&(stack, name), &n) in new {
        let (change, from_host, fields) = match old.get(&(stack, name)) {
            None => (Change::Added, None, Vec::new()),
            Some(&o) => {
                let fields = fields(o, n);
                let moved = host(o) != host(n);
                if !moved && fields.is_empty() {
                    continue;
                }
                (Change::Changed, moved.then(|| host(o)), fields)
            }
        };
        out.push(Found {
            stack,
            name,
            change,
            host: host(n),
            from_host,
            fields,
        });
    }
    for (&(stack, name), &o) in old {
        if !new.contains_key(&(stack, name)) {
            out.push(Found {
                stack,
                name,
                change: Change::Removed,
                host: host(o),
                from_host: None,
                fields: Vec::new(),
            });
        }
    }
    out
}

/// What `new` changes against `old`, the spec at `base` (commit
/// `base_commit`).
pub fn compare(old: &Desired, new: &Desired, base: &str, base_commit: &str) -> SpecDiff {
    // A key of this comparison's own: digests of secret values under it
    // are compared here and never leave the process.
    let key = HostKey::random().unwrap_or_else(|_| HostKey::fixed(7));
    let mut apps: Vec<AppChange> = changes(
        &containers(old),
        &containers(new),
        |c| &c.host,
        |o, c| app_fields(o, c, &key),
    )
    .into_iter()
    .map(|f| AppChange {
        stack: f.stack.into(),
        app: f.name.into(),
        change: f.change,
        host: f.host.into(),
        from_host: f.from_host.map(Into::into),
        fields: f.fields,
    })
    .collect();
    let mut vols: Vec<VolumeChange> =
        changes(&volumes(old), &volumes(new), |v| &v.host, volume_fields)
            .into_iter()
            .map(|f| VolumeChange {
                stack: f.stack.into(),
                volume: f.name.into(),
                change: f.change,
                host: f.host.into(),
                from_host: f.from_host.map(Into::into),
                fields: f.fields,
            })
            .collect();
    let order = |s: &str, n: &str, c: Change| (s.to_string(), n.to_string(), c);
    apps.sort_by_key(|x| order(&x.stack, &x.app, x.change));
    vols.sort_by_key(|x| order(&x.stack, &x.volume, x.change));
    SpecDiff {
        base: base.to_string(),
        base_commit: base_commit.to_string(),
        stacks_added: new.stacks.difference(&old.stacks).cloned().collect(),
        stacks_removed: old.stacks.difference(&new.stacks).cloned().collect(),
        apps,
        volumes: vols,
    }
}

/// The diff as JSON, with the plan's `format_version`.
pub fn to_json(d: &SpecDiff) -> String {
    crate::output::versioned_json(d)
}

fn summary(d: &SpecDiff) -> String {
    let count = |c: Change| d.apps.iter().filter(|a| a.change == c).count();
    let moves = d.moves().count();
    let mut parts = vec![
        format!("{} apps added", count(Change::Added)),
        format!("{} changed", count(Change::Changed)),
        format!("{} removed", count(Change::Removed)),
    ];
    if moves > 0 {
        parts.push(format!(
            "{moves} {} of data moving",
            if moves == 1 { "volume" } else { "volumes" }
        ));
    }
    parts.join(", ")
}

/// One line of an app's change, for text and markdown.
fn app_line(a: &AppChange, code: &dyn Fn(&str) -> String) -> String {
    let name = code(&format!("{}/{}", a.stack, a.app));
    let mut line = match (a.change, &a.from_host) {
        (Change::Added, _) => format!("+ app {name} on {}", code(&a.host)),
        (Change::Removed, _) => format!("- app {name} from {}", code(&a.host)),
        (Change::Changed, Some(from)) => {
            format!(
                "~ app {name}: moves from {} to {}",
                code(from),
                code(&a.host)
            )
        }
        (Change::Changed, None) => format!("~ app {name} on {}", code(&a.host)),
    };
    if !a.fields.is_empty() {
        let _ = write!(line, ": {}", a.fields.join("; "));
    }
    line
}

fn volume_line(v: &VolumeChange, code: &dyn Fn(&str) -> String) -> String {
    let name = code(&format!("{}/{}", v.stack, v.volume));
    let mut line = match (v.change, &v.from_host) {
        (Change::Added, _) => format!("+ volume {name} on {}", code(&v.host)),
        (Change::Removed, _) => format!(
            "- volume {name} on {} (its data is kept: only `drover volume rm` deletes it)",
            code(&v.host)
        ),
        (Change::Changed, Some(from)) => format!(
            "⇒ volume {name}: its data moves from {} to {}",
            code(from),
            code(&v.host)
        ),
        (Change::Changed, None) => format!("~ volume {name} on {}", code(&v.host)),
    };
    if !v.fields.is_empty() {
        let _ = write!(line, ": {}", v.fields.join("; "));
    }
    line
}

/// The diff for people.
pub fn to_text(d: &SpecDiff) -> String {
    let short = &d.base_commit[..d.base_commit.len().min(12)];
    if d.is_empty() {
        return format!("No changes against {} ({short}).\n", d.base);
    }
    let plain = |s: &str| s.to_string();
    let mut out = format!("Against {} ({short}): {}.\n\n", d.base, summary(d));
    for s in &d.stacks_added {
        let _ = writeln!(out, "+ stack {s}");
    }
    for s in &d.stacks_removed {
        let _ = writeln!(out, "- stack {s}");
    }
    for a in &d.apps {
        let _ = writeln!(out, "{}", app_line(a, &plain));
    }
    for v in &d.volumes {
        let _ = writeln!(out, "{}", volume_line(v, &plain));
    }
    out
}

/// The diff as a pull-request comment.
pub fn to_markdown(d: &SpecDiff) -> String {
    let short = &d.base_commit[..d.base_commit.len().min(12)];
    let code = |s: &str| format!("`{s}`");
    if d.is_empty() {
        return format!(
            "### ✅ drover diff: no changes against `{}` (`{short}`)\n",
            d.base
        );
    }
    let mut out = format!(
        "### 📋 drover diff against `{}` (`{short}`): {}\n\n",
        d.base,
        summary(d)
    );
    let moves: Vec<_> = d.moves().collect();
    if !moves.is_empty() {
        let _ = writeln!(out, "**Data that moves**\n");
        for v in moves {
            let line = volume_line(v, &code);
            let _ = writeln!(out, "- 🚚 {}", line.trim_start_matches("⇒ "));
        }
        out.push('\n');
    }
    let lines: Vec<String> = d
        .stacks_added
        .iter()
        .map(|s| format!("+ stack `{s}`"))
        .chain(d.stacks_removed.iter().map(|s| format!("- stack `{s}`")))
        .chain(d.apps.iter().map(|a| app_line(a, &code)))
        .chain(
            d.volumes
                .iter()
                .filter(|v| v.from_host.is_none())
                .map(|v| volume_line(v, &code)),
        )
        .collect();
    let fold = lines.len() > 15;
    if fold {
        let _ = writeln!(out, "<details><summary>{} changes</summary>\n", lines.len());
    }
    for l in &lines {
        // The text's marks, as a reader of a comment sees them at a glance.
        let (mark, rest) = l.split_once(' ').unwrap_or(("", l));
        let mark = match mark {
            "+" => "➕",
            "-" => "➖",
            "~" => "✏️",
            other => other,
        };
        let _ = writeln!(out, "- {mark} {rest}");
    }
    if fold {
        let _ = writeln!(out, "\n</details>");
    }
    out.trim_end().to_string() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOP: &str = "kind: Stack\nname: shop\nvolumes:\n  data: {}\napps:\n  db:\n    image: postgres\n    host: a\n    volumes: [\"data:/d\"]\n  web:\n    image: nginx\n    host: b\n    depends_on: [db]\n";
    use crate::testing::desired_on_two_hosts;

    #[test]
    fn the_same_spec_has_no_changes() {
        let d = desired_on_two_hosts(SHOP);
        let diff = compare(&d, &d, "HEAD", "0123456789abcdef");
        assert!(diff.is_empty());
        assert_eq!(to_text(&diff), "No changes against HEAD (0123456789ab).\n");
    }
}
