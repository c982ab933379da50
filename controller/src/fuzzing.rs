//! The checks the fuzzer (`fuzz/`) and its regression tests run on one
//! input. An input is a small directory packed into bytes: parts separated
//! by a line `#%%`, each part a file named by an optional first line
//! `#file: NAME` (else `mN.yaml`). Names are kept inside the directory.
//!
//! [`check`] writes the files, loads the directory and panics if drover
//! breaks a promise: a panic anywhere, an error that does not point at a real
//! place, or a valid directory that cannot be rendered, drawn and planned.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::load::{load, LoadError};
use crate::observed::{Observed, ObservedHost};

/// The value of `${SECRET_VAR}`. Values from variables are secret, but one
/// that is a valid name becomes a Docker object's name and is shown as
/// such; this one is no valid name, port or mount, so it may never be shown.
pub const CANARY: &str = "Fuzz Canary 9f3b";

/// The line that separates two files of an input.
pub const SEPARATOR: &str = "\n#%%\n";

/// The files an input stands for, with names safe to join to a directory.
pub fn files(input: &[u8]) -> Vec<(PathBuf, Vec<u8>)> {
    let text = input;
    let sep = SEPARATOR.as_bytes();
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.windows(sep.len()).position(|w| w == sep) {
        parts.push(&rest[..i]);
        rest = &rest[i + sep.len()..];
        if parts.len() == 7 {
            break;
        }
    }
    parts.push(rest);
    parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            let default = PathBuf::from(format!("m{i}.yaml"));
            let Some(header) = part.strip_prefix(b"#file: ") else {
                return (default, part.to_vec());
            };
            let end = header
                .iter()
                .position(|b| *b == b'\n')
                .unwrap_or(header.len());
            let name = String::from_utf8_lossy(&header[..end]).into_owned();
            let body = header.get(end + 1..).unwrap_or_default().to_vec();
            (safe_name(&name).unwrap_or(default), body)
        })
        .collect()
}

/// A relative name of at most three plain components.
fn safe_name(name: &str) -> Option<PathBuf> {
    let parts: Vec<&str> = name.split('/').collect();
    let plain = |p: &&str| {
        !p.is_empty()
            && *p != "."
            && *p != ".."
            && p.len() <= 40
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    (parts.len() <= 3 && parts.iter().all(plain)).then(|| parts.iter().collect())
}

/// The environment every input is loaded with.
pub fn env() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("SECRET_VAR".to_string(), CANARY.to_string()),
        ("TAG".to_string(), "1.2".to_string()),
        ("EMPTY".to_string(), String::new()),
    ])
}

/// Writes the input's files into `dir` (emptied first) and checks drover's
/// promises on it; panics on a broken one.
pub fn check(input: &[u8], dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("cannot make the fuzz directory");
    let mut written = Vec::new();
    for (name, body) in files(input) {
        let path = dir.join(&name);
        if let Some(parent) = path.parent() {
            if std::fs::create_dir_all(parent).is_err() {
                continue;
            }
        }
        if std::fs::write(&path, &body).is_ok() {
            written.push(path);
        }
    }
    let env = env();
    match load(dir, &env) {
        Ok(spec) => {
            let desired = crate::desired::render(&spec);
            let _ = crate::load::graph::render(&spec, crate::load::graph::Format::Dot);
            let _ = crate::load::graph::render(&spec, crate::load::graph::Format::Mermaid);
            let observed = Observed {
                hosts: desired
                    .hosts
                    .keys()
                    .map(|h| (h.clone(), ObservedHost::default()))
                    .collect(),
                unreachable: BTreeMap::new(),
                ..Default::default()
            };
            let plan = crate::plan::plan(&desired, &observed, Default::default());
            let after = crate::plan::simulate(&desired, &observed, &plan);
            let again = crate::plan::plan(&desired, &after, Default::default());
            assert!(
                again.actions.is_empty(),
                "a plan carried out leaves more to do: {:?}",
                again.actions
            );
        }
        Err(LoadError::Dir { path, reason }) => {
            panic!("the directory {path} could not be read: {reason}")
        }
        Err(LoadError::Invalid(diags)) => {
            assert!(!diags.0.is_empty(), "invalid without a reason");
            for d in &diags.0 {
                let file = Path::new(&*d.loc.file);
                assert!(
                    file.starts_with(dir),
                    "{d} names a file outside the directory"
                );
                assert!(
                    d.loc.pos.line >= 1 && d.loc.pos.col >= 1,
                    "{d} has a zero line or column"
                );
                if let Ok(text) = std::fs::read_to_string(file) {
                    let lines = text.split('\n').count();
                    assert!(
                        d.loc.pos.line as usize <= lines + 1,
                        "{d} is past the end of its file ({lines} lines)"
                    );
                }
                let shown = d.to_string();
                assert!(!shown.contains(CANARY), "a secret value is shown: {shown}");
            }
            let text = diags.render(false);
            assert!(!text.contains(CANARY), "a secret value is shown: {text}");
            let _ = diags.render(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_split_into_named_files_that_stay_inside() {
        let f = files(b"a: 1\n#%%\n#file: secrets/x.env\nK=V\n#%%\n#file: ../../etc/x\nb");
        assert_eq!(f[0], (PathBuf::from("m0.yaml"), b"a: 1".to_vec()));
        assert_eq!(f[1], (PathBuf::from("secrets/x.env"), b"K=V".to_vec()));
        assert_eq!(f[2], (PathBuf::from("m2.yaml"), b"b".to_vec()));
    }
}
