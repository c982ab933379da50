//! Showing a plan to people (a coloured diff, grouped into waves of steps
//! that may run in parallel) and to machines (one JSON object).

use std::fmt::Write;

use crate::plan::{Plan, Verb};

/// Whether to colour output written to a stream.
pub fn use_color(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

struct Palette {
    green: &'static str,
    yellow: &'static str,
    red: &'static str,
    cyan: &'static str,
    dim: &'static str,
    bold: &'static str,
    reset: &'static str,
}

impl Palette {
    fn new(color: bool) -> Palette {
        if color {
            Palette {
                green: "\x1b[32m",
                yellow: "\x1b[33m",
                red: "\x1b[31m",
                cyan: "\x1b[36m",
                dim: "\x1b[2m",
                bold: "\x1b[1m",
                reset: "\x1b[0m",
            }
        } else {
            Palette {
                green: "",
                yellow: "",
                red: "",
                cyan: "",
                dim: "",
                bold: "",
                reset: "",
            }
        }
    }
}

fn symbol(v: Verb) -> &'static str {
    match v {
        Verb::Create => "+",
        Verb::Recreate => "~",
        Verb::Start => ">",
        Verb::Stop => "■",
        Verb::Remove => "-",
        Verb::Relocate => "⇒",
    }
}

/// What a move holds and will cost, as the plan shows it: `1.0 GiB in
/// 17842 files; copy about 9.1s, apps down about 1.1s (from 2 earlier
/// moves)`.
pub fn move_cost(r: &crate::plan::Relocation) -> String {
    let mut size = r.bytes.map_or("size unknown".to_string(), human_bytes);
    if let Some(f) = r.files {
        size = format!("{size} in {f} files");
    }
    let Some(e) = &r.estimate else {
        return format!("{size}; no estimate: no earlier move on these hosts");
    };
    let ms = |v: u64| human_duration(std::time::Duration::from_millis(v));
    let parts: Vec<String> = [
        e.copy_ms.map(|v| format!("copy about {}", ms(v))),
        e.downtime_ms.map(|v| format!("apps down about {}", ms(v))),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        return format!("{size}; no estimate: earlier moves on these hosts measured too little");
    }
    let moves = if e.from_moves == 1 { "move" } else { "moves" };
    format!(
        "{size}; {} (from {} earlier {moves})",
        parts.join(", "),
        e.from_moves
    )
}

/// A duration as people write it: `850ms`, `4.2s`, `3m10s`.
pub fn human_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        let s = d.as_secs();
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The plan as a human diff.
pub fn plan_text(plan: &Plan, color: bool) -> String {
    let p = Palette::new(color);
    let mut out = String::new();
    if plan.actions.is_empty() {
        let _ = writeln!(
            out,
            "{}No changes.{} The hosts match the manifests.",
            p.green, p.reset
        );
    } else {
        let waves = plan.actions.iter().map(|a| a.wave).max().unwrap_or(0);
        let name_w = plan
            .actions
            .iter()
            .map(|a| a.name.chars().count())
            .max()
            .unwrap_or(0);
        let host_w = plan
            .actions
            .iter()
            .map(|a| a.host.chars().count())
            .max()
            .unwrap_or(0);
        for wave in 1..=waves {
            let steps: Vec<_> = plan.actions.iter().filter(|a| a.wave == wave).collect();
            if steps.is_empty() {
                continue;
            }
            let parallel = if steps.len() > 1 { ", in parallel" } else { "" };
            let _ = writeln!(out, "{}Step {wave} of {waves}{parallel}{}", p.bold, p.reset);
            for a in steps {
                let c = match a.action {
                    Verb::Create | Verb::Start => p.green,
                    Verb::Recreate | Verb::Stop => p.yellow,
                    Verb::Remove => p.red,
                    Verb::Relocate => p.cyan,
                };
                let mut reason = a.reason.clone();
                if let Some(r) = &a.relocation {
                    reason = format!("{} → {} ({}): {reason}", r.from, r.to, move_cost(r));
                }
                let _ = writeln!(
                    out,
                    "  {c}{} {:<8} {:<9} {:<name_w$}{}  {:<host_w$}  {}{reason}{}",
                    symbol(a.action),
                    a.action.to_string(),
                    a.kind.to_string(),
                    a.name,
                    p.reset,
                    a.host,
                    p.dim,
                    p.reset,
                );
            }
        }
        out.push('\n');
        let count = |v: Verb| plan.actions.iter().filter(|a| a.action == v).count();
        let _ = writeln!(
            out,
            "Plan: {} to create, {} to recreate, {} to start, {} to relocate, {} to remove.",
            count(Verb::Create),
            count(Verb::Recreate),
            count(Verb::Start),
            count(Verb::Relocate),
            count(Verb::Remove) + count(Verb::Stop),
        );
    }
    if !plan.orphans.is_empty() {
        let _ = writeln!(
            out,
            "\n{}Kept volume data (not deleted; see `drover volume ls`):{}",
            p.bold, p.reset
        );
        for o in &plan.orphans {
            let _ = writeln!(out, "  {} on {}: {}", o.name, o.host, o.reason);
        }
    }
    for w in &plan.warnings {
        let _ = writeln!(out, "{}warning:{} {w}", p.yellow, p.reset);
    }
    for e in &plan.errors {
        let _ = writeln!(out, "{}error:{} {e}", p.red, p.reset);
    }
    out
}

/// The version of the JSON a plan (and `drover diff`) is written in: it
/// changes only when a field changes meaning or goes away
/// (`schema/plan.schema.json`).
pub const FORMAT_VERSION: u32 = 1;

/// A plan or a diff with its `format_version` first.
#[derive(serde::Serialize)]
pub struct Versioned<'a, T: serde::Serialize> {
    pub format_version: u32,
    #[serde(flatten)]
    pub of: &'a T,
}

/// `of` as pretty JSON, with its `format_version`.
pub fn versioned_json<T: serde::Serialize>(of: &T) -> String {
    let v = Versioned {
        format_version: FORMAT_VERSION,
        of,
    };
    serde_json::to_string_pretty(&v).expect("serializes") + "\n"
}

/// The plan as a JSON value, with its `format_version`.
pub fn plan_value(plan: &Plan) -> serde_json::Value {
    serde_json::to_value(Versioned {
        format_version: FORMAT_VERSION,
        of: plan,
    })
    .expect("a plan serializes")
}

/// The plan as the JSON object of cli.md.
pub fn plan_json(plan: &Plan) -> String {
    versioned_json(plan)
}

/// More actions than this, and each host's are folded in a `<details>`
/// section of the markdown plan.
const FOLD_OVER: usize = 15;

/// Text for one cell of a markdown table: no `|` or line break ends it.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The plan as a pull-request comment: a summary line, then per host its
/// actions grouped by stack, each move with what it holds and will cost,
/// then kept data, warnings and errors. A large plan folds each host.
pub fn plan_markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let count = |v: Verb| plan.actions.iter().filter(|a| a.action == v).count();
    let moves: Vec<_> = plan
        .actions
        .iter()
        .filter_map(|a| a.relocation.as_ref().map(|r| (a, r)))
        .collect();
    let head = if plan.actions.is_empty() {
        "no changes: the hosts match the manifests".to_string()
    } else {
        let mut parts = vec![
            format!("{} to create", count(Verb::Create)),
            format!("{} to recreate", count(Verb::Recreate)),
            format!("{} to start", count(Verb::Start)),
            format!("{} to relocate", count(Verb::Relocate)),
            format!("{} to remove", count(Verb::Remove) + count(Verb::Stop)),
        ];
        parts.retain(|p| !p.starts_with("0 "));
        parts.join(", ")
    };
    let status = if !plan.errors.is_empty() {
        "❌"
    } else if plan.actions.is_empty() {
        "✅"
    } else {
        "📋"
    };
    let _ = writeln!(out, "### {status} drover plan: {head}\n");
    for e in &plan.errors {
        let _ = writeln!(out, "> **error:** {}", e.replace('\n', " "));
    }
    if !plan.errors.is_empty() {
        out.push('\n');
    }
    if !moves.is_empty() {
        let _ = writeln!(out, "**Data that moves**\n");
        for (a, r) in &moves {
            let apps = if r.apps.is_empty() {
                String::new()
            } else {
                format!(
                    "; stops and restarts {}",
                    r.apps
                        .iter()
                        .map(|x| format!("`{x}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let _ = writeln!(
                out,
                "- volume `{}` of stack `{}`: `{}` → `{}`, {}{apps}",
                a.name,
                a.stack,
                r.from,
                r.to,
                move_cost(r)
            );
        }
        out.push('\n');
    }
    let fold = plan.actions.len() > FOLD_OVER;
    let mut hosts: Vec<&str> = plan.actions.iter().map(|a| a.host.as_str()).collect();
    hosts.sort();
    hosts.dedup();
    for host in hosts {
        let here: Vec<_> = plan.actions.iter().filter(|a| a.host == host).collect();
        let n = here.len();
        let actions = if n == 1 { "action" } else { "actions" };
        if fold {
            let _ = writeln!(
                out,
                "<details><summary><code>{host}</code>: {n} {actions}</summary>\n"
            );
        } else {
            let _ = writeln!(out, "#### `{host}`: {n} {actions}\n");
        }
        let mut stacks: Vec<&str> = here.iter().map(|a| a.stack.as_str()).collect();
        stacks.sort();
        stacks.dedup();
        for stack in stacks {
            let _ = writeln!(out, "Stack `{stack}`\n");
            let _ = writeln!(out, "| | action | what | why |");
            let _ = writeln!(out, "| --- | --- | --- | --- |");
            for a in here.iter().filter(|a| a.stack == stack) {
                let mut why = a.reason.clone();
                if let Some(r) = &a.relocation {
                    why = format!("from `{}`: {why}", r.from);
                }
                let _ = writeln!(
                    out,
                    "| {} | {} | {} `{}` | {} |",
                    cell(symbol(a.action)),
                    a.action,
                    a.kind,
                    cell(&a.name),
                    cell(&why)
                );
            }
            out.push('\n');
        }
        if fold {
            let _ = writeln!(out, "</details>\n");
        }
    }
    if !plan.orphans.is_empty() {
        let _ = writeln!(
            out,
            "**Kept volume data** (not deleted; see `drover volume ls`)\n"
        );
        for o in &plan.orphans {
            let _ = writeln!(out, "- `{}` on `{}`: {}", o.name, o.host, o.reason);
        }
        out.push('\n');
    }
    for w in &plan.warnings {
        let _ = writeln!(out, "> **warning:** {}", w.replace('\n', " "));
    }
    out.trim_end().to_string() + "\n"
}

/// Lays out rows as left-aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let _ = write!(s, "{c:<w$}  ");
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

/// One app as `drover status` and the dashboard show it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct StatusRow {
    pub stack: String,
    pub app: String,
    pub host: String,
    pub state: String,
    pub health: String,
    /// `yes`, `no`, `unknown`, or why not.
    pub in_sync: String,
}

/// Every app of `desired`, and every managed app a host runs that the
/// manifests no longer place there, with its state in `observed`.
pub fn status_rows(
    desired: &crate::desired::Desired,
    observed: &crate::observed::Observed,
) -> Vec<StatusRow> {
    use crate::observed::Health;
    let health = |h: Option<Health>| match h {
        Some(Health::Healthy) => "healthy",
        Some(Health::Unhealthy) => "unhealthy",
        Some(Health::Starting) => "starting",
        None => "-",
    };
    let row = |stack: &str, app: &str, host: &str, state: String, h: &str, sync: &str| StatusRow {
        stack: stack.to_string(),
        app: app.to_string(),
        host: host.to_string(),
        state,
        health: h.to_string(),
        in_sync: sync.to_string(),
    };
    let mut rows = Vec::new();
    for (host, dh) in &desired.hosts {
        for c in dh.containers.values() {
            let (state, health, in_sync): (String, &str, &str) = match observed.hosts.get(host) {
                None => ("unknown (host unreadable)".into(), "-", "unknown"),
                Some(oh) => match oh.containers.iter().find(|o| o.name == c.name) {
                    None => ("missing".into(), "-", "no"),
                    Some(o) if !o.managed => {
                        ("name taken by an unmanaged container".into(), "-", "no")
                    }
                    Some(o) => {
                        let in_sync = o.spec_hash.as_deref() == Some(c.spec_hash.as_str())
                            && (o.state == crate::observed::ContainerState::Running
                                || c.is_done(o.state, o.exit_code));
                        let sync = if in_sync { "yes" } else { "no" };
                        (o.state.as_str().into(), health(o.health), sync)
                    }
                },
            };
            rows.push(row(&c.stack, &c.app, host, state, health, in_sync));
        }
    }
    for (host, oh) in &observed.hosts {
        for o in &oh.containers {
            let (Some(stack), Some(app), true, false) = (&o.stack, &o.app, o.managed, o.internal)
            else {
                continue;
            };
            let wanted_here = desired
                .hosts
                .get(host)
                .is_some_and(|h| h.containers.contains_key(&o.name));
            if !wanted_here {
                rows.push(row(
                    stack,
                    app,
                    host,
                    o.state.as_str().into(),
                    health(o.health),
                    "no (not placed here by the manifests)",
                ));
            }
        }
    }
    rows.sort();
    rows
}

/// `drover status`: [`status_rows`] as a table.
pub fn status_table(
    desired: &crate::desired::Desired,
    observed: &crate::observed::Observed,
) -> String {
    let rows: Vec<Vec<String>> = status_rows(desired, observed)
        .into_iter()
        .map(|r| vec![r.stack, r.app, r.host, r.state, r.health, r.in_sync])
        .collect();
    table(
        &["STACK", "APP", "HOST", "STATE", "HEALTH", "IN SYNC"],
        &rows,
    )
}

/// `drover volume ls`: managed volumes on every host that was read.
pub fn volume_table(
    desired: &crate::desired::Desired,
    observed: &crate::observed::Observed,
) -> String {
    let mut rows = Vec::new();
    for (host, oh) in &observed.hosts {
        for v in oh.volumes.iter().filter(|v| v.managed && !v.internal) {
            let (stack, volume) = (
                v.stack.clone().unwrap_or_default(),
                v.volume.clone().unwrap_or_default(),
            );
            if let Some(s) = &v.snapshot {
                let state = if s.complete() { "" } else { ", unfinished" };
                rows.push(vec![
                    v.name.clone(),
                    host.clone(),
                    s.of.split('/').next().unwrap_or_default().to_string(),
                    format!("snapshot `{}` of {}{state}", s.name, s.of),
                    if v.used_by.is_empty() {
                        "-".into()
                    } else {
                        v.used_by.join(",")
                    },
                    v.size_bytes.or(s.bytes).map_or("-".into(), human_bytes),
                ]);
                continue;
            }
            let wanted = desired.volume(&stack, &volume);
            let incoming = v
                .copy
                .as_ref()
                .filter(|r| r.role == crate::observed::CopyRole::Incoming);
            // A recovery elsewhere that replaced this copy.
            let epoch = v.copy.as_ref().map_or(0, |r| r.epoch);
            let recovered_on = observed.hosts.iter().find_map(|(h, other)| {
                other.volumes.iter().find_map(|o| {
                    let r = o.copy.as_ref()?;
                    (o.name == v.name && r.epoch > epoch && r.supersedes.contains(host))
                        .then(|| h.clone())
                })
            });
            let status = match (&v.retained_for, wanted) {
                (Some(to), _) => format!("retained copy (data moved to {to})"),
                (None, _) if recovered_on.is_some() => format!(
                    "stale copy (recovered from a backup on {}); never used",
                    recovered_on.unwrap_or_default()
                ),
                (None, _) if incoming.is_some() => format!(
                    "unfinished copy (a move from {} did not complete)",
                    incoming
                        .and_then(|r| r.peer.as_deref())
                        .unwrap_or("another host")
                ),
                (None, Some(w)) if w.host == *host => "current".to_string(),
                (None, Some(w)) => format!("current, to move to {}", w.host),
                (None, None) => "orphan (not in the manifests)".to_string(),
            };
            rows.push(vec![
                v.name.clone(),
                host.clone(),
                stack,
                status,
                if v.used_by.is_empty() {
                    "-".into()
                } else {
                    v.used_by.join(",")
                },
                v.size_bytes.map_or("-".into(), human_bytes),
            ]);
        }
    }
    rows.sort();
    table(
        &["NAME", "HOST", "STACK", "STATUS", "USED BY", "SIZE"],
        &rows,
    )
}
