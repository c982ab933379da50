//! The dependency graph of a directory: apps, their volumes and networks,
//! and the `depends_on` / `links` edges between apps. Finds cycles (naming
//! every member, in order) and draws the graph as DOT or Mermaid.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::model::{names, Condition, Spec, Stack};

/// An app, named by its stack and its own name.
pub type AppId = (String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    DependsOn(Condition),
    Link,
}

/// Apps and the edges from each app to what it needs.
pub struct AppGraph {
    pub graph: DiGraph<AppId, Edge>,
    pub index: HashMap<AppId, NodeIndex>,
}

impl AppGraph {
    /// Builds the graph; references to apps that do not exist are left out
    /// (validation reports them).
    pub fn new<'a>(stacks: impl IntoIterator<Item = &'a Stack>) -> AppGraph {
        let mut graph = DiGraph::new();
        let mut index = HashMap::new();
        let stacks: Vec<&Stack> = stacks.into_iter().collect();
        for s in &stacks {
            for a in s.apps.keys() {
                let id = (s.name.clone(), a.clone());
                index.insert(id.clone(), graph.add_node(id));
            }
        }
        for s in &stacks {
            for app in s.apps.values() {
                let from = index[&(s.name.clone(), app.name.clone())];
                let edges = app
                    .depends_on
                    .iter()
                    .map(|(t, c)| (t, Edge::DependsOn(*c)))
                    .chain(app.links.iter().map(|t| (t, Edge::Link)));
                for (target, edge) in edges {
                    if let Some(&to) = index.get(&(s.name.clone(), target.value.clone())) {
                        graph.add_edge(from, to, edge);
                    }
                }
            }
        }
        AppGraph { graph, index }
    }

    /// Every cycle, each as its members in order starting from the smallest,
    /// one cycle per strongly connected component.
    pub fn cycles(&self) -> Vec<Vec<AppId>> {
        let mut out = Vec::new();
        for scc in tarjan_scc(&self.graph) {
            let self_loop = scc.len() == 1 && self.graph.contains_edge(scc[0], scc[0]);
            if scc.len() < 2 && !self_loop {
                continue;
            }
            let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
            let start = *scc
                .iter()
                .min_by_key(|n| &self.graph[**n])
                .expect("non-empty component");
            out.push(
                self.shortest_cycle(start, &members)
                    .into_iter()
                    .map(|n| self.graph[n].clone())
                    .collect(),
            );
        }
        out.sort();
        out
    }

    fn shortest_cycle(&self, start: NodeIndex, members: &BTreeSet<NodeIndex>) -> Vec<NodeIndex> {
        let mut prev: HashMap<NodeIndex, NodeIndex> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(n) = queue.pop_front() {
            let mut next: Vec<NodeIndex> = self
                .graph
                .edges(n)
                .map(|e| e.target())
                .filter(|t| members.contains(t))
                .collect();
            next.sort_by_key(|t| &self.graph[*t]);
            for t in next {
                if t == start {
                    let mut path = vec![n];
                    let mut cur = n;
                    while cur != start {
                        cur = prev[&cur];
                        path.push(cur);
                    }
                    path.reverse();
                    return path;
                }
                if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(t) {
                    e.insert(n);
                    queue.push_back(t);
                }
            }
        }
        vec![start]
    }
}

/// How to draw the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Dot,
    Mermaid,
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Draws the whole directory: one cluster per stack, apps labelled with
/// their host, volumes, per-host networks, and every edge.
pub fn render(spec: &Spec, format: Format) -> String {
    let mut out = String::new();
    let mut networks: BTreeMap<(String, String), ()> = BTreeMap::new();
    match format {
        Format::Dot => {
            out.push_str("digraph drover {\n  rankdir=LR;\n  node [fontname=\"sans-serif\"];\n");
            for s in spec.stacks.values() {
                let _ = writeln!(
                    out,
                    "  subgraph {} {{",
                    quote(&format!("cluster_{}", s.name))
                );
                let _ = writeln!(out, "    label={};", quote(&format!("stack {}", s.name)));
                for a in s.apps.values() {
                    let _ = writeln!(
                        out,
                        "    {} [shape=box, label={}];",
                        quote(&format!("app:{}/{}", s.name, a.name)),
                        quote(&format!("{}\\n@ {}", a.name, a.host()))
                    );
                    networks.insert((s.name.clone(), a.host().to_string()), ());
                }
                for v in s.volumes.keys() {
                    let host = spec.volume_host(s, v).unwrap_or("?");
                    let _ = writeln!(
                        out,
                        "    {} [shape=cylinder, label={}];",
                        quote(&format!("volume:{}/{}", s.name, v)),
                        quote(&format!("{v}\\n@ {host}"))
                    );
                }
                for ((stack, host), ()) in networks.range((s.name.clone(), String::new())..) {
                    if stack != &s.name {
                        break;
                    }
                    let _ = writeln!(
                        out,
                        "    {} [shape=ellipse, style=dashed, label={}];",
                        quote(&format!("network:{stack}@{host}")),
                        quote(&format!("{}\\n@ {host}", names::network(stack)))
                    );
                }
                out.push_str("  }\n");
            }
            for s in spec.stacks.values() {
                for a in s.apps.values() {
                    let from = quote(&format!("app:{}/{}", s.name, a.name));
                    for (t, c) in &a.depends_on {
                        let label = match c {
                            Condition::Started => "depends_on",
                            Condition::Healthy => "depends_on (healthy)",
                            Condition::Completed => "depends_on (completed)",
                        };
                        let _ = writeln!(
                            out,
                            "  {from} -> {} [label={}];",
                            quote(&format!("app:{}/{}", s.name, t.value)),
                            quote(label)
                        );
                    }
                    for t in &a.links {
                        let _ = writeln!(
                            out,
                            "  {from} -> {} [style=dashed, label=\"link\"];",
                            quote(&format!("app:{}/{}", s.name, t.value))
                        );
                    }
                    for m in &a.volumes {
                        let _ = writeln!(
                            out,
                            "  {from} -> {} [style=dotted, label={}];",
                            quote(&format!("volume:{}/{}", s.name, m.value.volume)),
                            quote(&m.value.target)
                        );
                    }
                    let _ = writeln!(
                        out,
                        "  {from} -> {} [style=dotted, arrowhead=none];",
                        quote(&format!("network:{}@{}", s.name, a.host()))
                    );
                }
            }
            out.push_str("}\n");
        }
        Format::Mermaid => {
            // Mermaid ids must be plain words.
            let id = |kind: &str, a: &str, b: &str| {
                format!("{kind}_{}_{}", a.replace('-', "_"), b.replace('-', "_"))
            };
            out.push_str("flowchart LR\n");
            for s in spec.stacks.values() {
                let _ = writeln!(
                    out,
                    "  subgraph stack_{}[\"stack {}\"]",
                    s.name.replace('-', "_"),
                    s.name
                );
                let mut hosts = BTreeSet::new();
                for a in s.apps.values() {
                    let _ = writeln!(
                        out,
                        "    {}[\"{}<br/>@ {}\"]",
                        id("app", &s.name, &a.name),
                        a.name,
                        a.host()
                    );
                    hosts.insert(a.host().to_string());
                }
                for v in s.volumes.keys() {
                    let host = spec.volume_host(s, v).unwrap_or("?");
                    let _ = writeln!(out, "    {}[(\"{v}<br/>@ {host}\")]", id("vol", &s.name, v));
                }
                for h in &hosts {
                    let _ = writeln!(
                        out,
                        "    {}([\"{}<br/>@ {h}\"])",
                        id("net", &s.name, h),
                        names::network(&s.name)
                    );
                }
                out.push_str("  end\n");
            }
            for s in spec.stacks.values() {
                for a in s.apps.values() {
                    let from = id("app", &s.name, &a.name);
                    for (t, c) in &a.depends_on {
                        let label = match c {
                            Condition::Started => "depends_on",
                            Condition::Healthy => "depends_on healthy",
                            Condition::Completed => "depends_on completed",
                        };
                        let _ = writeln!(
                            out,
                            "  {from} -->|{label}| {}",
                            id("app", &s.name, &t.value)
                        );
                    }
                    for t in &a.links {
                        let _ =
                            writeln!(out, "  {from} -.->|link| {}", id("app", &s.name, &t.value));
                    }
                    for m in &a.volumes {
                        let _ = writeln!(
                            out,
                            "  {from} -.-|{}| {}",
                            m.value.target,
                            id("vol", &s.name, &m.value.volume)
                        );
                    }
                    let _ = writeln!(out, "  {from} --- {}", id("net", &s.name, a.host()));
                }
            }
        }
    }
    out
}
