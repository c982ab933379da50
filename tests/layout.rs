//! The crate's shape: its top-level modules (a file or a folder under
//! `controller/src/`) depend on each other without a cycle, so each layer
//! can be read, and changed, knowing only the layers below it. Test-only
//! code (`#[cfg(test)]` modules, `testing.rs`, `relocate/on_fakes.rs`) may
//! reach upwards and is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Top-level module -> the top-level modules it uses.
fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let top = |p: &Path| {
        let rel = p.strip_prefix(src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        first.trim_end_matches(".rs").to_string()
    };
    let modules: BTreeSet<String> = files.iter().map(|p| top(p)).collect();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(src).unwrap().to_string_lossy().to_string();
        if ["main.rs", "lib.rs", "testing.rs", "relocate/on_fakes.rs"].contains(&rel.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let from = top(f);
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // A doc link names a module; it is no dependency.
            let line_start = code[..i].rfind('\n').map_or(0, |n| n + 1);
            let doc = code[line_start..i].trim_start().starts_with("//");
            if !doc && name != from && modules.contains(&name) {
                out.entry(from.clone()).or_default().insert(name);
            }
        }
    }
    out
}

/// A cycle through `at`, if there is one.
fn cycle(
    g: &BTreeMap<String, BTreeSet<String>>,
    at: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(i) = path.iter().position(|p| p == at) {
        let mut c = path[i..].to_vec();
        c.push(at.to_string());
        return Some(c);
    }
    if !done.insert(at.to_string()) {
        return None;
    }
    path.push(at.to_string());
    for next in g.get(at).into_iter().flatten() {
        if let Some(c) = cycle(g, next, path, done) {
            return Some(c);
        }
    }
    path.pop();
    None
}

#[test]
fn the_top_level_modules_depend_on_each_other_without_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = edges(&src);
    assert!(
        g.contains_key("plan") && g["plan"].contains("desired"),
        "{g:?}"
    );
    for start in g.keys() {
        let mut done = BTreeSet::new();
        if let Some(c) = cycle(&g, start, &mut Vec::new(), &mut done) {
            panic!("module cycle: {}", c.join(" → "));
        }
    }
    // The on-host contract is the bottom layer: it uses nothing else.
    assert!(!g.contains_key("contract"), "{:?}", g.get("contract"));
}
