//! The controller's Git remote: a bare clone of one branch kept up to date
//! with a shallow fetch, and each commit's manifest folder written out as a
//! whole new tree before anything reads it (a half-fetched or half-written
//! tree is never loaded).
//!
//! Pure Rust (gitoxide): no `git` binary is needed. HTTPS credentials come
//! from the environment and are handed to the transport only when the
//! server asks; SSH uses the `ssh` program with the key and known-hosts
//! file given. No credential is ever part of a message.

pub mod hooks;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use gix::bstr::ByteSlice;

/// At most this many entries are written for one commit's manifest folder…
pub const MAX_ENTRIES: usize = 20_000;
/// …and at most this many bytes…
pub const MAX_BYTES: u64 = 256 << 20;
/// …in folders nested at most this deep.
pub const MAX_DEPTH: usize = 32;

/// How to reach the remote.
#[derive(Clone, Default)]
pub struct Auth {
    /// HTTP(S) user name and password or token.
    pub basic: Option<(String, String)>,
    /// SSH private key file.
    pub ssh_key: Option<PathBuf>,
    /// SSH known-hosts file: the server's key must be in it.
    pub known_hosts: Option<PathBuf>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("basic", &self.basic.as_ref().map(|(u, _)| (u, "…")))
            .field("ssh_key", &self.ssh_key)
            .field("known_hosts", &self.known_hosts)
            .finish()
    }
}

impl Auth {
    /// From `DROVER_GIT_TOKEN`, or `DROVER_GIT_USERNAME` and
    /// `DROVER_GIT_PASSWORD`; a token goes with the user name given, or
    /// `x-access-token` (what GitHub, Gitea and GitLab accept).
    pub fn from_env(ssh_key: Option<PathBuf>, known_hosts: Option<PathBuf>) -> Auth {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        let user = var("DROVER_GIT_USERNAME");
        let basic = match (var("DROVER_GIT_TOKEN"), var("DROVER_GIT_PASSWORD")) {
            (Some(token), _) => Some((user.unwrap_or_else(|| "x-access-token".into()), token)),
            (None, Some(pw)) => Some((user.unwrap_or_default(), pw)),
            (None, None) => None,
        };
        Auth {
            basic,
            ssh_key,
            known_hosts,
        }
    }

    fn secrets(&self) -> Vec<&str> {
        self.basic
            .iter()
            .map(|(_, p)| p.as_str())
            .filter(|p| p.len() >= 3)
            .collect()
    }
}

/// The branch of a remote that the controller follows.
#[derive(Debug, Clone)]
pub struct Remote {
    pub url: String,
    pub branch: String,
    /// The manifest folder inside the repository ("" for its root).
    pub path: PathBuf,
    /// drover's own folder: the bare clone and the trees.
    pub workdir: PathBuf,
    pub auth: Auth,
}

/// A commit, as the controller shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Revision {
    pub sha: String,
    pub subject: String,
    pub author: String,
    /// Commit time, Unix seconds.
    pub time: i64,
}

impl Revision {
    pub fn short(&self) -> &str {
        &self.sha[..self.sha.len().min(12)]
    }
}

/// A commit's manifest folder, written out.
#[derive(Debug, Clone)]
pub struct Tree {
    pub revision: Revision,
    /// The manifest folder (`--path`) inside the written tree.
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot fetch `{branch}` from `{url}`: {reason}")]
    Fetch {
        url: String,
        branch: String,
        reason: String,
    },
    #[error("branch `{branch}` does not exist at `{url}`")]
    NoBranch { url: String, branch: String },
    #[error("commit {sha}: {reason}")]
    Tree { sha: String, reason: String },
    #[error("the Git work folder `{path}`: {reason}")]
    Workdir { path: String, reason: String },
}

/// `url` without a user name or password in it.
pub fn shown_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let sep = if rest.contains('/') { "/" } else { "" };
            format!("{scheme}://{host}{sep}{path}")
        }
        None => url.to_string(),
    }
}

impl Remote {
    fn bare(&self) -> PathBuf {
        self.workdir.join("repo.git")
    }

    fn trees(&self) -> PathBuf {
        self.workdir.join("trees")
    }

    fn tracking(&self) -> String {
        format!("refs/remotes/origin/{}", self.branch)
    }

    fn shown(&self) -> String {
        shown_url(&self.url)
    }

    /// A message without any secret of ours in it.
    fn clean(&self, message: String) -> String {
        let mut m = message;
        for s in self.auth.secrets() {
            m = m.replace(s, "***");
        }
        // A URL in a message loses its user information.
        m.split(' ')
            .map(|w| {
                if w.contains("://") {
                    shown_url(w)
                } else {
                    w.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A fetch error with the whole chain of its causes (gitoxide's outer
    /// errors say little: "Transport handshake failed").
    fn fetch_failed(&self, e: &dyn std::error::Error) -> GitError {
        let mut reason = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            let more = s.to_string();
            if !reason.contains(&more) {
                reason.push_str(": ");
                reason.push_str(&more);
            }
            source = s.source();
        }
        if self.ssh_command().is_some() && reason.contains("failed to fill whole buffer") {
            // ssh closed the connection; its own words went to stderr.
            reason.push_str(
                " (ssh closed the connection: is the server's key in --known-hosts, and \
                 --ssh-key one it accepts? ssh's message is in the log)",
            );
        }
        self.fetch_error(reason)
    }

    fn fetch_error(&self, reason: impl std::fmt::Display) -> GitError {
        GitError::Fetch {
            url: self.shown(),
            branch: self.branch.clone(),
            reason: self.clean(reason.to_string()),
        }
    }

    fn open(&self) -> Result<gix::Repository, GitError> {
        let bare = self.bare();
        let workdir = |reason: String| GitError::Workdir {
            path: bare.display().to_string(),
            reason,
        };
        let mut overrides = Vec::new();
        if let Some(cmd) = self.ssh_command() {
            overrides.push(format!("core.sshCommand={cmd}"));
        }
        // Never ask a terminal or a credential helper: the credentials are
        // ours alone.
        overrides.push("credential.helper=".into());
        let options = || gix::open::Options::isolated().config_overrides(overrides.clone());
        if !bare.join("HEAD").exists() {
            std::fs::create_dir_all(&self.workdir).map_err(|e| workdir(e.to_string()))?;
            let _ = std::fs::remove_dir_all(&bare);
            gix::ThreadSafeRepository::init_opts(
                &bare,
                gix::create::Kind::Bare,
                gix::create::Options::default(),
                options(),
            )
            .map_err(|e| workdir(e.to_string()))?;
        }
        gix::open_opts(&bare, options()).map_err(|e| workdir(e.to_string()))
    }

    fn ssh_command(&self) -> Option<String> {
        if self.auth.ssh_key.is_none() && self.auth.known_hosts.is_none() {
            return None;
        }
        let q = |p: &Path| shell_words::quote(&p.display().to_string()).into_owned();
        let mut cmd = String::from("ssh -o BatchMode=yes");
        if let Some(k) = &self.auth.ssh_key {
            cmd += &format!(" -o IdentitiesOnly=yes -i {}", q(k));
        }
        if let Some(k) = &self.auth.known_hosts {
            cmd += &format!(
                " -o StrictHostKeyChecking=yes -o UserKnownHostsFile={}",
                q(k)
            );
        }
        Some(cmd)
    }

    /// Fetches the branch's newest commit (history one commit deep: only
    /// what is needed) and returns it. A force-pushed branch is followed.
    /// Blocking: run it on a thread of its own. `interrupt` stops it.
    pub fn fetch(&self, interrupt: &AtomicBool) -> Result<Revision, GitError> {
        let repo = self.open()?;
        let spec = format!("+refs/heads/{}:{}", self.branch, self.tracking());
        let remote = repo
            .remote_at(self.url.as_str())
            .map_err(|e| self.fetch_failed(&e))?
            .with_fetch_tags(gix::remote::fetch::Tags::None)
            .with_refspecs([spec.as_str()], gix::remote::Direction::Fetch)
            .map_err(|e| self.fetch_failed(&e))?;
        let basic = self.auth.basic.clone();
        let connection = remote
            .connect(gix::remote::Direction::Fetch)
            .map_err(|e| self.fetch_failed(&e))?
            .with_credentials(move |action| {
                use gix::credentials::helper::Action;
                match (action, &basic) {
                    (Action::Get(ctx), Some((username, password))) => {
                        Ok(Some(gix::credentials::protocol::Outcome {
                            credentials: gix::sec::identity::Credentials::UsernamePassword {
                                username: username.clone(),
                                password: password.clone(),
                                oauth_refresh_token: None,
                            },
                            next: ctx.into(),
                        }))
                    }
                    _ => Ok(None),
                }
            });
        let prepared = connection
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(|e| self.fetch_failed(&e))?;
        if prepared.ref_map().mappings.is_empty() {
            return Err(GitError::NoBranch {
                url: self.shown(),
                branch: self.branch.clone(),
            });
        }
        prepared
            .with_shallow(gix::remote::fetch::Shallow::DepthAtRemote(
                NonZeroU32::new(1).expect("one"),
            ))
            .receive(gix::progress::Discard, interrupt)
            .map_err(|e| self.fetch_failed(&e))?;
        // A fresh look at the references the fetch wrote.
        let repo = self.open()?;
        let mut tip =
            repo.find_reference(self.tracking().as_str())
                .map_err(|_| GitError::NoBranch {
                    url: self.shown(),
                    branch: self.branch.clone(),
                })?;
        let id = tip
            .peel_to_id()
            .map_err(|e| self.fetch_failed(&e))?
            .detach();
        revision(&repo, id).map_err(|reason| GitError::Tree {
            sha: id.to_string(),
            reason,
        })
    }

    /// The commit the last fetch brought, written out: what a controller
    /// restarted while the remote is down enforces.
    pub fn checkout_local(&self) -> Result<Tree, GitError> {
        let sha = {
            let repo = self.open()?;
            let mut tip =
                repo.find_reference(self.tracking().as_str())
                    .map_err(|_| GitError::NoBranch {
                        url: self.shown(),
                        branch: self.branch.clone(),
                    })?;
            let id = tip.peel_to_id().map_err(|e| self.fetch_failed(&e))?;
            id.to_string()
        };
        self.checkout(&sha)
    }

    /// Writes the manifest folder of commit `sha` as a tree of its own (once:
    /// a tree already written is used as it is) and returns it.
    pub fn checkout(&self, sha: &str) -> Result<Tree, GitError> {
        let tree_error = |reason: String| GitError::Tree {
            sha: sha.to_string(),
            reason,
        };
        let repo = self.open()?;
        let id = gix::ObjectId::from_hex(sha.as_bytes()).map_err(|e| tree_error(e.to_string()))?;
        let revision = revision(&repo, id).map_err(tree_error)?;
        let dest = self.trees().join(sha);
        let dir = dest.join(&self.path);
        if dest.is_dir() {
            return Ok(Tree { revision, dir });
        }
        let commit = repo
            .find_commit(id)
            .map_err(|e| tree_error(e.to_string()))?;
        let root = commit.tree().map_err(|e| tree_error(e.to_string()))?;
        let folder = if self.path.as_os_str().is_empty() {
            root
        } else {
            let entry = root
                .lookup_entry_by_path(&self.path)
                .map_err(|e| tree_error(e.to_string()))?
                .filter(|e| e.mode().is_tree())
                .ok_or_else(|| {
                    tree_error(format!(
                        "has no folder `{}` (the manifest path)",
                        self.path.display()
                    ))
                })?;
            repo.find_tree(entry.object_id())
                .map_err(|e| tree_error(e.to_string()))?
        };
        let tmp = self.trees().join(format!(".{sha}.partial"));
        let _ = std::fs::remove_dir_all(&tmp);
        let target = tmp.join(&self.path);
        std::fs::create_dir_all(&target).map_err(|e| tree_error(e.to_string()))?;
        let mut budget = Budget::default();
        write_tree(&repo, &folder, &target, &mut budget).map_err(|e| {
            let _ = std::fs::remove_dir_all(&tmp);
            tree_error(e)
        })?;
        std::fs::rename(&tmp, &dest).map_err(|e| tree_error(e.to_string()))?;
        Ok(Tree { revision, dir })
    }

    /// Removes the written trees but those of `keep`.
    pub fn prune(&self, keep: &[&str]) {
        let Ok(entries) = std::fs::read_dir(self.trees()) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !keep.contains(&name.as_str()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// The path of a file of the written tree as the repository names it:
    /// `clusters/prod/app.yaml`, not the work folder's.
    pub fn repo_path(&self, tree: &Tree, shown: &str) -> String {
        let prefix = tree.dir.display().to_string();
        match shown.strip_prefix(&prefix) {
            Some(rest) => {
                let rest = rest.trim_start_matches('/');
                let p = self.path.join(rest);
                p.display().to_string()
            }
            None => shown.to_string(),
        }
    }
}

fn revision(repo: &gix::Repository, id: gix::ObjectId) -> Result<Revision, String> {
    let commit = repo.find_commit(id).map_err(|e| e.to_string())?;
    let subject = commit
        .message()
        .map(|m| m.summary().to_str_lossy().into_owned())
        .unwrap_or_default();
    let author = commit
        .author()
        .map(|a| {
            let a = a.trim();
            format!("{} <{}>", a.name.to_str_lossy(), a.email.to_str_lossy())
        })
        .unwrap_or_default();
    let time = commit.time().map(|t| t.seconds).unwrap_or_default();
    Ok(Revision {
        sha: id.to_string(),
        subject,
        author,
        time,
    })
}

#[derive(Default)]
struct Budget {
    entries: usize,
    bytes: u64,
    depth: usize,
}

/// A name of a tree entry that is safe to write: one path component.
fn safe_name(name: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(name).ok()?;
    let bad = s.is_empty()
        || s == "."
        || s == ".."
        || s.contains('/')
        || s.contains('\0')
        || s.eq_ignore_ascii_case(".git");
    (!bad).then_some(s)
}

fn write_tree(
    repo: &gix::Repository,
    tree: &gix::Tree<'_>,
    into: &Path,
    budget: &mut Budget,
) -> Result<(), String> {
    use gix::objs::tree::EntryKind;
    use std::os::unix::fs::PermissionsExt;
    for entry in tree.iter() {
        let entry = entry.map_err(|e| e.to_string())?;
        let raw = entry.filename();
        let name = safe_name(raw)
            .ok_or_else(|| format!("holds an entry with a name that cannot be written: {raw:?}"))?;
        budget.entries += 1;
        if budget.entries > MAX_ENTRIES {
            return Err(format!(
                "the manifest folder holds more than {MAX_ENTRIES} entries"
            ));
        }
        let path = into.join(name);
        match entry.kind() {
            EntryKind::Tree => {
                if budget.depth >= MAX_DEPTH {
                    return Err(format!(
                        "the manifest folder nests folders deeper than {MAX_DEPTH}"
                    ));
                }
                let sub = repo.find_tree(entry.oid()).map_err(|e| e.to_string())?;
                std::fs::create_dir(&path).map_err(|e| e.to_string())?;
                budget.depth += 1;
                write_tree(repo, &sub, &path, budget)?;
                budget.depth -= 1;
            }
            EntryKind::Blob | EntryKind::BlobExecutable | EntryKind::Link => {
                let blob = repo.find_blob(entry.oid()).map_err(|e| e.to_string())?;
                budget.bytes += blob.data.len() as u64;
                if budget.bytes > MAX_BYTES {
                    return Err(format!(
                        "the manifest folder holds more than {} MiB",
                        MAX_BYTES >> 20
                    ));
                }
                if entry.kind() == EntryKind::Link {
                    // Written as the link it is: the loader refuses one that
                    // leads outside the manifest folder, with its location.
                    let target = std::ffi::OsStr::from_bytes(&blob.data);
                    std::os::unix::fs::symlink(target, &path).map_err(|e| e.to_string())?;
                } else {
                    std::fs::write(&path, &blob.data).map_err(|e| e.to_string())?;
                    let mode = if entry.kind() == EntryKind::BlobExecutable {
                        0o755
                    } else {
                        0o644
                    };
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                        .map_err(|e| e.to_string())?;
                }
            }
            // A submodule is not fetched: its folder stays empty.
            EntryKind::Commit => {
                std::fs::create_dir(&path).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

use std::os::unix::ffi::OsStrExt;

/// The manifest folder `dir` (in a Git work tree) as it was at revision
/// `rev` (`origin/main`, `HEAD~1`, a commit), written under `into`: the
/// folder written, and the commit's id. Read from the local repository
/// alone: no network.
pub fn write_revision(dir: &Path, rev: &str, into: &Path) -> Result<(PathBuf, String), String> {
    let repo = gix::discover(dir)
        .map_err(|e| format!("`{}` is not in a Git repository: {e}", dir.display()))?;
    let top = repo
        .workdir()
        .ok_or_else(|| format!("the repository of `{}` has no work tree", dir.display()))?;
    let canonical = |p: &Path| {
        p.canonicalize()
            .map_err(|e| format!("`{}`: {e}", p.display()))
    };
    let rel = canonical(dir)?
        .strip_prefix(canonical(top)?)
        .map(Path::to_path_buf)
        .map_err(|_| format!("`{}` is outside its repository's work tree", dir.display()))?;
    let commit = repo
        .rev_parse_single(rev)
        .map_err(|e| format!("`{rev}` names no revision of the repository: {e}"))?
        .object()
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| format!("`{rev}` is not a commit: {e}"))?;
    let sha = commit.id.to_string();
    let root = commit.tree().map_err(|e| e.to_string())?;
    let folder = if rel.as_os_str().is_empty() {
        Some(root)
    } else {
        root.lookup_entry_by_path(&rel)
            .map_err(|e| e.to_string())?
            .filter(|e| e.mode().is_tree())
            .map(|e| repo.find_tree(e.object_id()))
            .transpose()
            .map_err(|e| e.to_string())?
    };
    let target = into.join(&rel);
    std::fs::create_dir_all(&target).map_err(|e| e.to_string())?;
    // A folder that did not exist then held no manifests.
    if let Some(folder) = folder {
        write_tree(&repo, &folder, &target, &mut Budget::default())
            .map_err(|e| format!("revision `{rev}`: {e}"))?;
    }
    Ok((target, sha))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shown_url_carries_no_credentials() {
        assert_eq!(
            shown_url("https://me:s3cret@git.example.com/ops/m.git"),
            "https://git.example.com/ops/m.git"
        );
        assert_eq!(
            shown_url("http://127.0.0.1:9418/r.git"),
            "http://127.0.0.1:9418/r.git"
        );
        assert_eq!(shown_url("git@host:ops/m.git"), "git@host:ops/m.git");
    }

    #[test]
    fn only_single_path_components_are_written() {
        assert_eq!(safe_name(b"app.yaml"), Some("app.yaml"));
        for bad in [&b".."[..], b".", b"", b"a/b", b".GIT", b"a\0"] {
            assert_eq!(safe_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_secret_never_reaches_a_message() {
        let r = Remote {
            url: "https://u:tok123@h/r.git".into(),
            branch: "main".into(),
            path: PathBuf::new(),
            workdir: PathBuf::from("/nonexistent"),
            auth: Auth {
                basic: Some(("u".into(), "tok123".into())),
                ..Auth::default()
            },
        };
        let e = r.fetch_error("denied for https://u:tok123@h/r.git with tok123");
        let s = e.to_string();
        assert!(!s.contains("tok123"), "{s}");
        assert!(s.contains("https://h/r.git"), "{s}");
    }
}
