//! Reading a manifest directory: every `*.yaml`/`*.yml` under it, sorted by
//! path, hidden entries skipped, nothing outside it followed; then every
//! document parsed and validated. The whole directory is checked before
//! anything may act on it.

pub mod compose;
pub mod convert;
pub mod decode;
pub mod files;
pub mod graph;
pub mod interpolate;
pub mod schema;
pub mod validate;
pub mod values;
pub mod yaml;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diag::Pos;
use crate::diag::{Diagnostic, Diagnostics, Loc};
use crate::load::decode::{Ctx, Document, Parsed};
use crate::load::files::io_reason;
use crate::load::interpolate::{Env, WithDotEnv};
use crate::load::yaml::Limits;
use crate::model::Spec;

/// The largest manifest file drover reads.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read manifest directory `{path}`: {reason}")]
    Dir { path: String, reason: String },
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// Loads and validates the directory `dir`.
pub fn load(dir: &Path, env: &dyn Env) -> Result<Spec, LoadError> {
    let mut diags = Vec::new();
    let mut parsed = parse_dir(dir, env, &mut diags)?;
    let sources = std::mem::take(&mut parsed.sources);
    let mut spec = crate::load::validate::validate(parsed, &mut diags);
    for d in diags.iter_mut().chain(spec.notes.iter_mut()) {
        if d.source_line.is_none() {
            if let Some(src) = sources.get(&d.loc.file) {
                *d = d.clone().with_source(src);
            }
        }
    }
    if diags.is_empty() {
        Ok(spec)
    } else {
        Err(LoadError::Invalid(Diagnostics::sorted(diags)))
    }
}

/// `drover convert FILE`: the Compose file `file`, loaded with its folder
/// as the loader reads it (so it must be valid), written out as a drover
/// Stack manifest. A form a drover Stack cannot hold is the error.
pub fn convert(file: &Path, env: &dyn Env) -> Result<String, LoadError> {
    let shown = file.display().to_string();
    let dir_error = |reason: String| LoadError::Dir {
        path: shown.clone(),
        reason,
    };
    if !compose::is_compose_file(file) {
        return Err(dir_error(format!(
            "not a Compose file: its name is not one of {}",
            compose::FILE_NAMES.join(", ")
        )));
    }
    let folder = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let real = folder
        .canonicalize()
        .map_err(|e| dir_error(io_reason(&e)))?;
    // Loaded with the Cluster that names its hosts: that of the nearest
    // folder above it that holds one, else the folder alone.
    let with_cluster = real.ancestors().skip(1).take(4).find(|d| {
        std::fs::read_dir(d).is_ok_and(|entries| {
            entries.filter_map(|e| e.ok()).any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                is_manifest(&name)
                    && files::read_limited(&e.path(), MAX_FILE_BYTES)
                        .is_ok_and(|t| t.lines().any(|l| l.trim_end() == "kind: Cluster"))
            })
        })
    });
    let spec = load(with_cluster.unwrap_or(&real), env)?;
    let read = |path: &Path| -> Result<yaml::Node, LoadError> {
        let text = read_manifest(path).map_err(|(_, m)| dir_error(m))?;
        yaml::parse_documents(&text, Limits::default())
            .map_err(|e| dir_error(e.message))?
            .pop()
            .ok_or_else(|| dir_error("an empty Compose file".into()))
    };
    let mut node = read(&real.join(file.file_name().unwrap_or_default()))?;
    if let Some(over) = compose::OVERRIDE_NAMES
        .iter()
        .map(|n| real.join(n))
        .find(|p| p.is_file())
    {
        node = compose::merge(node, read(&over)?);
    }
    // What was read from a file of this folder.
    let here = |file: &str| {
        Path::new(file)
            .parent()
            .and_then(|p| p.canonicalize().ok())
            .as_deref()
            == Some(real.as_path())
    };
    let stack = spec
        .stacks
        .values()
        .find(|s| here(&s.loc.file))
        .ok_or_else(|| dir_error("no stack was read from it".into()))?;
    // A variable that is not set is an empty string in Compose and an
    // error in a drover Stack: written `${NAME:-}` there, it means the same.
    let blanked: Vec<&str> = spec
        .notes
        .iter()
        .filter(|n| here(&n.loc.file))
        .filter_map(decode::blanked_variable)
        .collect();
    convert::stack_yaml(&node, stack, &real)
        .map(|text| interpolate::default_to_empty(&text, &blanked))
        .map_err(|e| dir_error(e.0.join("; ")))
}

/// Parses every manifest under `dir`, collecting problems in `diags`.
pub fn parse_dir(
    dir: &Path,
    env: &dyn Env,
    diags: &mut Vec<Diagnostic>,
) -> Result<Parsed, LoadError> {
    let root = dir.canonicalize().map_err(|e| LoadError::Dir {
        path: dir.display().to_string(),
        reason: io_reason(&e),
    })?;
    if !root.is_dir() {
        return Err(LoadError::Dir {
            path: dir.display().to_string(),
            reason: "not a directory".into(),
        });
    }
    let mut files = Vec::new();
    walk(
        &root,
        &root,
        Path::new(""),
        &mut HashSet::new(),
        &mut files,
        dir,
        diags,
    )?;
    files.sort();
    let mut dot_envs = DotEnvs::new();
    for rel in &files {
        let folder = root.join(rel);
        let folder = folder.parent().unwrap_or(&root).to_path_buf();
        if let std::collections::hash_map::Entry::Vacant(e) = dot_envs.entry(folder) {
            let vars = dot_env(dir, &root, e.key(), diags);
            e.insert(vars);
        }
    }

    // Files are read and parsed on a few threads; the results are merged in
    // path order, so the outcome does not depend on the threads.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(files.len().max(1));
    let chunk = files.len().div_ceil(threads).max(1);
    let results: Vec<FileResult> = std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                let root = &root;
                let dot_envs = &dot_envs;
                scope.spawn(move || {
                    part.iter()
                        .map(|rel| parse_file(dir, root, rel, env, dot_envs))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a parser thread panicked"))
            .collect()
    });

    // A file an app ships is the app's, not a manifest (a drover Stack's
    // `files:` may name a `prometheus.yml` beside it).
    let shipped: Vec<(PathBuf, PathBuf)> = results
        .iter()
        .flat_map(|r| r.shipped.iter().map(|s| (s.clone(), r.path.clone())))
        .collect();
    let mut parsed = Parsed::default();
    for r in results {
        if shipped
            .iter()
            .any(|(s, by)| r.path.starts_with(s) && *by != r.path)
        {
            continue;
        }
        diags.extend(r.diags);
        parsed.notes.extend(r.notes);
        for doc in r.docs {
            match doc {
                Document::Stack(s) => parsed.stacks.push(s),
                Document::Cluster {
                    hosts,
                    repositories,
                    kind_loc,
                } => {
                    if let Some((_, first)) = &parsed.cluster {
                        let mut d = Diagnostic::new(
                            kind_loc.clone(),
                            format!("a second Cluster document; the first is at {first}"),
                        )
                        .with_hint(Some(
                            "a directory describes one cluster: merge the hosts into one document"
                                .into(),
                        ));
                        if let Some(src) = &r.src {
                            d = d.with_source(src);
                        }
                        diags.push(d);
                    } else {
                        parsed.cluster = Some((hosts, kind_loc));
                        parsed.repositories = repositories;
                    }
                }
            }
        }
        if let Some(src) = r.src {
            parsed.sources.insert(r.shown, src);
        }
        if let Some((shown, src)) = r.overlay {
            parsed.sources.insert(shown, src);
        }
    }
    Ok(parsed)
}

/// What one manifest file holds, or what is wrong with it.
struct FileResult {
    shown: Arc<str>,
    /// The file's real path.
    path: PathBuf,
    src: Option<String>,
    notes: Vec<Diagnostic>,
    shipped: Vec<PathBuf>,
    /// A Compose override file read with it, by its shown path.
    overlay: Option<(Arc<str>, String)>,
    docs: Vec<Document>,
    diags: Vec<Diagnostic>,
}

/// The variables of each folder's `.env`, by the folder's real path.
type DotEnvs = HashMap<PathBuf, std::collections::BTreeMap<String, String>>;

fn parse_file(
    dir: &Path,
    root: &Path,
    rel: &Path,
    env: &dyn Env,
    dot_envs: &DotEnvs,
) -> FileResult {
    let shown: Arc<str> = Arc::from(dir.join(rel).display().to_string());
    let path = root.join(rel);
    let mut out = FileResult {
        shown: Arc::clone(&shown),
        src: None,
        overlay: None,
        notes: Vec::new(),
        shipped: Vec::new(),
        path: path.clone(),
        docs: Vec::new(),
        diags: Vec::new(),
    };
    let src = match read_manifest(&path) {
        Ok(s) => s,
        Err((pos, msg)) => {
            out.diags.push(Diagnostic::new(Loc::new(&shown, pos), msg));
            return out;
        }
    };
    let file_dir = path.parent().unwrap_or(root).to_path_buf();
    let env = WithDotEnv {
        process: env,
        file: dot_envs.get(&file_dir).cloned().unwrap_or_default(),
    };
    if compose::is_compose_file(rel) {
        parse_compose(&mut out, &src, &path, root, dir, &env);
        out.src = Some(src);
        return out;
    }
    match yaml::parse_documents(&src, Limits::default()) {
        Ok(nodes) => {
            let mut ctx = Ctx {
                file: Arc::clone(&shown),
                src: &src,
                file_dir,
                root,
                root_shown: dir,
                env: &env,
                diags: &mut out.diags,
                notes: &mut out.notes,
                shipped: &mut out.shipped,
                overlay: None,
            };
            out.docs = nodes
                .iter()
                .filter_map(|n| decode::document(&mut ctx, n))
                .collect();
        }
        Err(e) => out.diags.push(
            Diagnostic::new(
                Loc::new(&shown, e.pos),
                format!("invalid YAML: {}", e.message),
            )
            .with_hint(e.hint)
            .with_source(&src),
        ),
    }
    out.src = Some(src);
    out
}

/// A Compose file, with its override file merged in, as one Stack.
fn parse_compose(
    out: &mut FileResult,
    src: &str,
    path: &Path,
    root: &Path,
    dir: &Path,
    env: &dyn Env,
) {
    let folder = path.parent().unwrap_or(root);
    let one = |out: &mut FileResult, shown: &Arc<str>, text: &str| -> Option<yaml::Node> {
        match yaml::parse_documents(text, Limits::default()) {
            Ok(mut nodes) => {
                if nodes.len() > 1 {
                    let pos = nodes[1].pos;
                    out.diags.push(
                        Diagnostic::new(Loc::new(shown, pos), "a Compose file holds one document")
                            .with_hint(Some(
                                "put each stack in a Compose file of its own folder".into(),
                            ))
                            .with_source(text),
                    );
                    return None;
                }
                nodes.pop()
            }
            Err(e) => {
                out.diags.push(
                    Diagnostic::new(
                        Loc::new(shown, e.pos),
                        format!("invalid YAML: {}", e.message),
                    )
                    .with_hint(e.hint)
                    .with_source(text),
                );
                None
            }
        }
    };
    let shown = Arc::clone(&out.shown);
    let Some(mut node) = one(out, &shown, src) else {
        return;
    };
    let override_file = compose::OVERRIDE_NAMES
        .iter()
        .map(|n| folder.join(n))
        .find(|p| p.is_file());
    if let Some(over_path) = override_file {
        let rel = over_path.strip_prefix(root).unwrap_or(&over_path);
        let over_shown: Arc<str> = Arc::from(dir.join(rel).display().to_string());
        match read_manifest(&over_path) {
            Err((pos, msg)) => out
                .diags
                .push(Diagnostic::new(Loc::new(&over_shown, pos), msg)),
            Ok(text) => {
                if let Some(mut over) = one(out, &over_shown, &text) {
                    shift_lines(&mut over, decode::OVERRIDE_LINES);
                    node = compose::merge(node, over);
                }
                out.overlay = Some((over_shown, text));
            }
        }
    }
    let folder_name = folder
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut diags = Vec::new();
    let mut notes = Vec::new();
    let mut shipped = Vec::new();
    let stack = {
        let mut ctx = Ctx {
            file: Arc::clone(&out.shown),
            src,
            file_dir: folder.to_path_buf(),
            root,
            root_shown: dir,
            env,
            diags: &mut diags,
            notes: &mut notes,
            shipped: &mut shipped,
            overlay: out
                .overlay
                .as_ref()
                .map(|(f, t)| (Arc::clone(f), t.as_str())),
        };
        compose::stack(&mut ctx, &node, &folder_name)
    };
    out.diags.extend(diags);
    out.notes.extend(notes);
    out.shipped.extend(shipped);
    out.docs.extend(stack.map(Document::Stack));
}

/// Moves every node of a tree `by` lines down.
fn shift_lines(node: &mut yaml::Node, by: u32) {
    node.pos.line = node.pos.line.saturating_add(by);
    match &mut node.value {
        yaml::Value::Seq(items) => items.iter_mut().for_each(|n| shift_lines(n, by)),
        yaml::Value::Map(entries) => {
            for (k, v) in entries {
                shift_lines(k, by);
                shift_lines(v, by);
            }
        }
        _ => {}
    }
}

/// The variables of the `.env` file in `file_dir`, if there is one, for
/// interpolation as in Compose. A line that is not `KEY=VALUE` is located
/// but never shown: it may hold a secret.
fn dot_env(
    dir: &Path,
    root: &Path,
    file_dir: &Path,
    diags: &mut Vec<Diagnostic>,
) -> std::collections::BTreeMap<String, String> {
    let mut vars = std::collections::BTreeMap::new();
    let path = file_dir.join(".env");
    let Ok(meta) = std::fs::symlink_metadata(&path) else {
        return vars;
    };
    let rel = path.strip_prefix(root).unwrap_or(&path);
    let shown: Arc<str> = Arc::from(dir.join(rel).display().to_string());
    let start = Loc::new(&shown, Pos { line: 1, col: 1 });
    let inside = path.canonicalize().is_ok_and(|p| p.starts_with(root));
    if meta.file_type().is_symlink() && !inside {
        diags.push(Diagnostic::new(
            start,
            "`.env` is a symlink that leads outside the manifest directory (or nowhere)",
        ));
        return vars;
    }
    let text = match crate::load::files::read_limited(&path, files::MAX_ENV_FILE_BYTES) {
        Ok(t) => t,
        Err(reason) => {
            diags.push(Diagnostic::new(
                start,
                format!("`.env` cannot be read: {reason}"),
            ));
            return vars;
        }
    };
    for (line, entry) in interpolate::parse_env_file(&text) {
        match entry {
            Ok((k, v)) => {
                vars.insert(k, v);
            }
            Err(msg) => diags.push(Diagnostic::new(
                Loc::new(&shown, Pos { line, col: 1 }),
                format!("`.env`: {msg}"),
            )),
        }
    }
    vars
}

/// Reads a manifest, or says where it goes wrong (size, encoding).
fn read_manifest(path: &Path) -> Result<String, (Pos, String)> {
    use std::io::Read;
    let start = Pos { line: 1, col: 1 };
    let file = crate::load::files::open_nonblocking(path)
        .map_err(|e| (start, format!("cannot read: {}", io_reason(&e))))?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err((start, "manifest is not a regular file".to_string()));
    }
    // Sized up front: `Take` hides the file's length from `read_to_end`,
    // which would otherwise grow the buffer from a few bytes.
    let size = file
        .metadata()
        .map_or(0, |m| m.len().min(MAX_FILE_BYTES + 1));
    let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| (start, format!("cannot read: {}", io_reason(&e))))?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err((
            start,
            format!("manifest is larger than {} MiB", MAX_FILE_BYTES >> 20),
        ));
    }
    let text = String::from_utf8(buf).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let text = String::from_utf8_lossy(good);
        (
            Pos::of_offset(&text, text.len()),
            "manifest is not valid UTF-8".to_string(),
        )
    })?;
    // YAML counts a lone carriage return as a line break, editors and
    // drover's messages do not: such a file would be misplaced in every
    // message about it.
    if let Some(at) = text
        .match_indices('\r')
        .map(|(i, _)| i)
        .find(|i| text.as_bytes().get(i + 1) != Some(&b'\n'))
    {
        return Err((
            Pos::of_offset(&text, at),
            "a carriage return without a line feed: save the file with LF (or CRLF) line endings"
                .to_string(),
        ));
    }
    Ok(text)
}

/// The YAML files below a Compose file's folder that are drover manifests
/// (a line `kind: Stack` or `kind: Cluster`), looked for a few folders deep.
fn drover_manifests_below(dir: &Path, depth: usize) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(kind) = e.file_type() else { continue };
        if name.starts_with('.') || kind.is_symlink() {
            continue;
        }
        if kind.is_dir() && depth < 4 {
            found.extend(drover_manifests_below(&e.path(), depth + 1));
        } else if kind.is_file()
            && is_manifest(&name)
            && !compose::FILE_NAMES.contains(&name.as_str())
        {
            let text =
                crate::load::files::read_limited(&e.path(), MAX_FILE_BYTES).unwrap_or_default();
            let drover = text
                .lines()
                .any(|l| matches!(l.trim_end(), "kind: Stack" | "kind: Cluster"));
            if drover {
                found.push(e.path());
            }
        }
    }
    found
}

fn is_manifest(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}

/// Collects manifest paths relative to `root`. Symlinks are followed only
/// while they stay inside `root`; a manifest that leads outside is an error.
fn walk(
    root: &Path,
    real_dir: &Path,
    rel_dir: &Path,
    seen: &mut HashSet<PathBuf>,
    out: &mut Vec<PathBuf>,
    shown_root: &Path,
    diags: &mut Vec<Diagnostic>,
) -> Result<(), LoadError> {
    if !seen.insert(real_dir.to_path_buf()) {
        return Ok(());
    }
    let entries = std::fs::read_dir(real_dir).map_err(|e| LoadError::Dir {
        path: shown_root.join(rel_dir).display().to_string(),
        reason: io_reason(&e),
    })?;
    let mut names: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    names.sort();
    // A folder with a Compose file is that stack's folder: the file is its
    // manifest, the rest (YAML included) the stack's own files.
    if let Some(file) = compose::file_in(names.iter().filter_map(|n| n.to_str())) {
        out.push(rel_dir.join(file));
        // A drover manifest in there would be read as nothing at all, and
        // its stacks removed from the hosts: never in silence.
        for hidden in drover_manifests_below(real_dir, 0) {
            let rel = hidden.strip_prefix(real_dir).unwrap_or(&hidden);
            let shown: Arc<str> =
                Arc::from(shown_root.join(rel_dir).join(rel).display().to_string());
            diags.push(
                Diagnostic::new(
                    Loc::new(&shown, Pos { line: 1, col: 1 }),
                    format!(
                        "a drover manifest in the folder of the Compose file `{}`, whose files are its own: it is not read",
                        shown_root.join(rel_dir).join(file).display()
                    ),
                )
                .with_hint(Some(
                    "move the Compose file into a folder of its own (its folder names its stack)".into(),
                )),
            );
        }
        return Ok(());
    }
    for name in names {
        let Some(name_str) = name.to_str() else {
            // Never skipped in silence: it may be a manifest.
            let lossy = name.to_string_lossy();
            let hidden = lossy.starts_with('.');
            let manifest_like = lossy.ends_with(".yaml") || lossy.ends_with(".yml");
            if !hidden && manifest_like {
                let shown: Arc<str> =
                    Arc::from(shown_root.join(rel_dir.join(&name)).display().to_string());
                diags.push(Diagnostic::new(
                    Loc::new(&shown, Pos { line: 1, col: 1 }),
                    "manifest file name is not valid UTF-8; rename the file".to_string(),
                ));
            }
            continue;
        };
        if name_str.starts_with('.') {
            continue;
        }
        let rel = rel_dir.join(&name);
        let path = real_dir.join(&name);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(_) => continue,
        };
        if meta.is_dir() {
            walk(root, &path, &rel, seen, out, shown_root, diags)?;
            continue;
        }
        if meta.file_type().is_symlink() {
            let target = path.canonicalize();
            let inside = target.as_ref().is_ok_and(|t| t.starts_with(root));
            match target {
                Ok(t) if inside && t.is_dir() => {
                    walk(root, &t, &rel, seen, out, shown_root, diags)?;
                }
                Ok(t) if inside && t.is_file() && is_manifest(name_str) => out.push(rel),
                Ok(t) if t.is_dir() => {
                    // Skipped in silence, its stacks would be removed.
                    let shown: Arc<str> = Arc::from(shown_root.join(&rel).display().to_string());
                    diags.push(Diagnostic::new(
                        Loc::new(&shown, Pos { line: 1, col: 1 }),
                        "folder is a symlink that leads outside the manifest directory; its manifests are not read (copy them in, or link the files one by one)".to_string(),
                    ));
                }
                _ if is_manifest(name_str) => {
                    let shown: Arc<str> = Arc::from(shown_root.join(&rel).display().to_string());
                    diags.push(Diagnostic::new(
                        Loc::new(&shown, Pos { line: 1, col: 1 }),
                        if inside {
                            "manifest is a symlink to something that is not a file".to_string()
                        } else {
                            "manifest is a symlink that leads outside the manifest directory (or nowhere)".to_string()
                        },
                    ));
                }
                _ => {}
            }
            continue;
        }
        if meta.is_file() && is_manifest(name_str) {
            out.push(rel);
        }
    }
    Ok(())
}
