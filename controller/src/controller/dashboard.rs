//! The dashboard at `/` (with `--listen`): the cluster at a glance, read
//! only. The page is one file with no external asset; it asks
//! `/api/dashboard` every two seconds. What it shows is what `/healthz`
//! shows, plus each app's state, the hosts' API versions, the work in
//! progress, recent actions and the dependency graph — never a secret value
//! (an image named by a variable is shown as such).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;

use serde::Serialize;

use crate::desired::Desired;
use crate::output::StatusRow;

/// The most recent actions kept.
const EVENTS: usize = 60;
/// …and passes.
const PASSES: usize = 10;

/// The page, served as it is.
pub const PAGE: &str = include_str!("dashboard.html");

#[derive(Debug, Clone, Default, Serialize)]
pub struct View {
    /// Unix time of the last change of this view.
    pub updated: f64,
    pub hosts: Vec<HostView>,
    pub apps: Vec<AppView>,
    /// Moves, snapshots and backups under way.
    pub work: Vec<WorkView>,
    /// Recent actions, newest first.
    pub events: VecDeque<EventView>,
    /// Recent passes, newest first.
    pub passes: VecDeque<super::status::PassSummary>,
    /// The dependency graph of the spec in force, as SVG.
    pub graph: String,
    /// `false` when the dashboard is served beyond loopback without a
    /// password: the page says so.
    pub protected: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostView {
    pub name: String,
    pub reachable: bool,
    /// The Engine API version agreed with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppView {
    #[serde(flatten)]
    pub row: StatusRow,
    /// The image, or `(from a variable)` when it is secret.
    pub image: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkView {
    pub id: String,
    pub what: String,
    /// `copy`, `delta`, `verify`, … for a move.
    pub phase: String,
    pub done: u64,
    /// 0 when the total is not known (the bar is then indeterminate).
    pub total: u64,
    pub started: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub at: f64,
    /// `done`, `failed` or `skipped`.
    pub outcome: String,
    pub text: String,
}

impl View {
    /// After a pass: the apps as the hosts hold them, the hosts, and the
    /// graph of the spec in force.
    pub fn refresh(
        &mut self,
        desired: &Desired,
        rows: Vec<StatusRow>,
        hosts: Vec<HostView>,
        now: f64,
    ) {
        let images: BTreeMap<(&str, &str), String> = desired
            .hosts
            .values()
            .flat_map(|h| h.containers.values())
            .map(|c| {
                let image = if c.image.is_secret() {
                    "(from a variable)".to_string()
                } else {
                    c.image.expose().to_string()
                };
                ((c.stack.as_str(), c.app.as_str()), image)
            })
            .collect();
        self.apps = rows
            .into_iter()
            .map(|row| AppView {
                image: images
                    .get(&(row.stack.as_str(), row.app.as_str()))
                    .cloned()
                    .unwrap_or_default(),
                row,
            })
            .collect();
        self.hosts = hosts;
        self.graph = graph_svg(desired);
        self.updated = now;
    }

    pub fn event(&mut self, outcome: &str, text: String, now: f64) {
        self.events.push_front(EventView {
            at: now,
            outcome: outcome.to_string(),
            text,
        });
        self.events.truncate(EVENTS);
        self.updated = now;
    }

    pub fn pass(&mut self, p: super::status::PassSummary) {
        self.updated = p.finished;
        self.passes.push_front(p);
        self.passes.truncate(PASSES);
    }

    pub fn work(&mut self, w: WorkView) {
        match self.work.iter_mut().find(|x| x.id == w.id) {
            Some(x) => {
                let started = x.started;
                *x = WorkView { started, ..w };
            }
            None => self.work.push(w),
        }
    }

    pub fn done(&mut self, id: &str) {
        self.work.retain(|w| w.id != id);
    }
}

/// Work shown on the dashboard until this is dropped.
pub struct AtWork {
    shared: std::sync::Arc<super::Shared>,
    id: String,
}

impl AtWork {
    pub fn new(shared: std::sync::Arc<super::Shared>, w: WorkView) -> AtWork {
        let id = w.id.clone();
        shared.update_view(|v| v.work(w));
        AtWork { shared, id }
    }
}

impl Drop for AtWork {
    fn drop(&mut self) {
        self.shared.update_view(|v| v.done(&self.id));
    }
}

/// Text for SVG.
fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const BOX_W: usize = 170;
const BOX_H: usize = 46;
const GAP_X: usize = 60;
const GAP_Y: usize = 18;

/// The apps of each stack as boxes (name, host, volumes), in columns by
/// how deep their `depends_on` goes, with an arrow to each app they wait
/// for; stacks one below the other.
pub fn graph_svg(desired: &Desired) -> String {
    let mut stacks: BTreeMap<&str, Vec<&crate::desired::ContainerSpec>> = BTreeMap::new();
    for c in desired.hosts.values().flat_map(|h| h.containers.values()) {
        stacks.entry(c.stack.as_str()).or_default().push(c);
    }
    let mut body = String::new();
    let mut y = 10;
    let mut width = 300;
    for (stack, mut apps) in stacks {
        apps.sort_by(|a, b| a.app.cmp(&b.app));
        // Depth: 0 for an app that waits for none.
        let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
        for _ in 0..apps.len() {
            for c in &apps {
                let d = c
                    .depends_on
                    .iter()
                    .filter_map(|(t, _)| depth.get(t.as_str()).map(|d| d + 1))
                    .max()
                    .unwrap_or(0);
                depth.insert(c.app.as_str(), d);
            }
        }
        let _ = writeln!(
            body,
            r#"<text x="10" y="{}" class="stack">stack {}</text>"#,
            y + 14,
            xml(stack)
        );
        y += 24;
        let mut rows: BTreeMap<usize, usize> = BTreeMap::new();
        let mut at: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for c in &apps {
            let col = depth[c.app.as_str()];
            let row = rows.entry(col).or_default();
            let pos = (10 + col * (BOX_W + GAP_X), y + *row * (BOX_H + GAP_Y));
            *row += 1;
            at.insert(c.app.as_str(), pos);
        }
        for c in &apps {
            let (x, yy) = at[c.app.as_str()];
            let volumes: Vec<&str> = c.mounts.iter().map(|m| m.volume.as_str()).collect();
            let detail = if volumes.is_empty() {
                format!("on {}", c.host)
            } else {
                format!("on {} · {}", c.host, volumes.join(", "))
            };
            let _ = writeln!(
                body,
                r#"<g class="app" data-app="{s}/{a}"><rect x="{x}" y="{yy}" width="{BOX_W}" height="{BOX_H}" rx="6"/><text x="{tx}" y="{ty}" class="name">{a}</text><text x="{tx}" y="{dy}" class="detail">{d}</text></g>"#,
                s = xml(stack),
                a = xml(&c.app),
                tx = x + 8,
                ty = yy + 19,
                dy = yy + 36,
                d = xml(&detail),
            );
            for (t, _) in &c.depends_on {
                if let Some(&(tx, ty)) = at.get(t.as_str()) {
                    let _ = writeln!(
                        body,
                        r#"<line x1="{}" y1="{}" x2="{}" y2="{}" marker-end="url(#arrow)"/>"#,
                        x,
                        yy + BOX_H / 2,
                        tx + BOX_W,
                        ty + BOX_H / 2
                    );
                }
            }
            width = width.max(x + BOX_W + 10);
        }
        let tallest = rows.values().copied().max().unwrap_or(0);
        y += tallest * (BOX_H + GAP_Y) + 10;
    }
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" viewBox="0 0 {width} {y}" role="img" aria-label="dependency graph"><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>{body}</svg>"#
    )
}

/// Whether a request carries the password: `Authorization: Basic …` equal
/// to `expected` (the base64 of `user:password`), compared in constant
/// time.
pub fn authorized(header: Option<&str>, expected: &str) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix("Basic ")) else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The base64 of `user:password`, as a browser sends it.
pub fn basic_credentials(user_password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(user_password)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOP: &str = "kind: Stack\nname: shop\nvolumes:\n  data: {}\napps:\n  db:\n    image: postgres\n    host: a\n    volumes: [\"data:/d\"]\n  web:\n    image: nginx\n    host: b\n    depends_on: [db]\n";

    #[test]
    fn the_password_is_checked_whole() {
        let expected = basic_credentials("ops:s3cret");
        assert!(authorized(Some(&format!("Basic {expected}")), &expected));
        assert!(!authorized(Some("Basic b3BzOnMzY3JldA"), &expected));
        assert!(!authorized(Some(&format!("Bearer {expected}")), &expected));
        assert!(!authorized(None, &expected));
    }

    #[test]
    fn the_graph_draws_each_app_and_each_wait() {
        let d = crate::testing::desired_on_two_hosts(SHOP);
        let svg = graph_svg(&d);
        let apps = d.hosts.values().map(|h| h.containers.len()).sum::<usize>();
        assert_eq!(svg.matches("class=\"app\"").count(), apps);
        let waits = d
            .hosts
            .values()
            .flat_map(|h| h.containers.values())
            .map(|c| c.depends_on.len())
            .sum::<usize>();
        assert_eq!(svg.matches("<line ").count(), waits);
    }
}
