//! The controller's triggers: changes in the manifest directory and the
//! Docker events of every host. A watcher only fires the [`Trigger`]; it
//! never tells the pass why.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;

use super::limits::{jitter, Backoff};
use super::schedule::Trigger;
use crate::docker::Engine;
use crate::model::Host;

/// Whether a file event can change what the directory loads into: hidden
/// files and folders (`.git` above all) are skipped by the loader, and
/// reads are not changes.
pub fn is_manifest_change(dir: &Path, kind: &EventKind, paths: &[PathBuf]) -> bool {
    let changes = matches!(
        kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
    );
    let visible = |p: &PathBuf| {
        let rel = p.strip_prefix(dir).unwrap_or(p);
        !rel.components().any(|c| match c {
            Component::Normal(n) => n.to_string_lossy().starts_with('.'),
            _ => false,
        })
    };
    changes && (paths.is_empty() || paths.iter().any(visible))
}

/// The newest modification time under `dir` (itself, and every file and
/// folder but hidden ones): a folder's time moves when an entry is added,
/// removed or renamed, a file's when it is written. Unreadable entries are
/// passed over; the loader reports them.
pub fn newest_change(dir: &Path) -> Option<std::time::SystemTime> {
    fn walk(path: &Path, depth: usize, newest: &mut Option<std::time::SystemTime>) {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return;
        };
        if let Ok(t) = meta.modified() {
            if newest.is_none_or(|n| t > n) {
                *newest = Some(t);
            }
        }
        if !meta.is_dir() || depth > 64 {
            return;
        }
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().starts_with('.') {
                walk(&e.path(), depth + 1, newest);
            }
        }
    }
    let mut newest = None;
    walk(dir, 0, &mut newest);
    newest
}

/// Watches `dir` recursively; keep the returned watcher alive.
pub fn watch_dir(dir: &Path, trigger: Trigger) -> Result<notify::RecommendedWatcher, String> {
    let root =
        std::fs::canonicalize(dir).map_err(|e| format!("cannot watch `{}`: {e}", dir.display()))?;
    let base = root.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        match res {
            Ok(ev) if is_manifest_change(&base, &ev.kind, &ev.paths) => {
                tracing::debug!(paths = ?ev.paths, "manifests changed");
                trigger.fire_files();
            }
            Ok(_) => {}
            Err(e) => {
                // Events may have been lost: look again.
                tracing::warn!(error = %e, "watching the manifest directory");
                trigger.fire_files();
            }
        }
    })
    .map_err(|e| format!("cannot watch `{}`: {e}", dir.display()))?;
    watcher
        .watch(&root, RecursiveMode::Recursive)
        .map_err(|e| format!("cannot watch `{}`: {e}", dir.display()))?;
    Ok(watcher)
}

/// Follows one host's Docker events until `stop`, firing `trigger` on each
/// relevant one. A lost connection fires too (a pass then sees the host as
/// unreachable) and is retried with backoff; getting it back fires again,
/// since anything may have happened meanwhile (an engine restart stops
/// every container).
pub async fn watch_host(host: Host, trigger: Trigger, stop: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        let failure = match Engine::connect(&host).await {
            Err(e) => e.to_string(),
            Ok(engine) => {
                if backoff.failures() > 0 {
                    tracing::info!(host = %host.name, "engine reachable again");
                    trigger.fire();
                }
                backoff.succeeded();
                let mut events = engine.watch();
                let reason = loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        ev = events.next() => match ev {
                            None => break "the event stream ended".to_string(),
                            Some(Err(e)) => break e.to_string(),
                            Some(Ok(e)) => {
                                tracing::debug!(host = %host.name, kind = %e.kind, action = %e.action, name = %e.name, "engine event");
                                trigger.fire();
                            }
                        }
                    }
                };
                tracing::warn!(host = %host.name, error = %reason, "lost the engine's events");
                trigger.fire();
                reason
            }
        };
        let delay = backoff.failed(std::time::Instant::now(), failure, jitter());
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, CreateKind, ModifyKind};

    #[test]
    fn the_newest_change_sees_writes_and_removals_but_not_hidden_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/a.yaml"), "x").unwrap();
        let first = newest_change(d.path()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::create_dir(d.path().join(".git")).unwrap();
        std::fs::write(d.path().join(".git/index"), "y").unwrap();
        // Making `.git` touched the folder itself; its contents do not count.
        let with_git = newest_change(d.path()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(d.path().join(".git/index"), "z").unwrap();
        assert_eq!(newest_change(d.path()).unwrap(), with_git);
        std::fs::remove_file(d.path().join("sub/a.yaml")).unwrap();
        assert!(newest_change(d.path()).unwrap() > first);
    }

    #[test]
    fn changes_to_manifests_count_and_reads_and_hidden_files_do_not() {
        let dir = Path::new("/m");
        let p = |s: &str| vec![PathBuf::from(s)];
        let modify = EventKind::Modify(ModifyKind::Any);
        assert!(is_manifest_change(dir, &modify, &p("/m/shop.yaml")));
        assert!(is_manifest_change(
            dir,
            &EventKind::Create(CreateKind::File),
            &p("/m/sub/x.yml")
        ));
        assert!(!is_manifest_change(dir, &modify, &p("/m/.git/index")));
        assert!(!is_manifest_change(dir, &modify, &p("/m/.hidden.yaml")));
        assert!(!is_manifest_change(
            dir,
            &EventKind::Access(AccessKind::Any),
            &p("/m/shop.yaml")
        ));
    }
}
