//! `--git URL`: the controller follows a branch itself. A task of its own
//! fetches the branch every `--interval` and at once when a webhook says
//! so (deliveries that come during a fetch are folded into the next one);
//! each new commit is written out as a whole tree, then handed to the pass
//! loop. A fetch that fails backs off and keeps the last good revision in
//! force.

use std::sync::atomic::AtomicBool;

use tokio::sync::Notify;

use super::*;
use crate::git::{self, Revision, Tree};

/// Where the manifests come from with `--git`.
#[derive(Debug, Clone)]
pub struct GitSource {
    pub remote: git::Remote,
    /// A fetch at least this often.
    pub interval: Duration,
    /// The webhook secret (`--webhook-secret-env`); without one,
    /// `/hooks/git` is off.
    pub webhook_secret: Option<String>,
}

/// What a revision's state is, as `/healthz` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RevisionState {
    #[default]
    Applying,
    Applied,
    Invalid,
    Failed,
    Quarantined,
}

/// The newest commit of the branch and how far it got.
#[derive(Debug, Clone, Serialize)]
pub struct Latest {
    pub sha: String,
    pub subject: String,
    pub state: RevisionState,
    /// Its manifests' errors (`file:line:col: message`) when `invalid`;
    /// the stacks rolled back when `quarantined`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// `/healthz`'s `revision`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RevisionStatus {
    /// The remote, without credentials, and the branch followed.
    pub remote: String,
    pub branch: String,
    /// The commit in force: the last one applied.
    pub applied: Option<Revision>,
    pub latest: Option<Latest>,
    /// Unix time of the last fetch that worked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetched: Option<f64>,
    /// Why the last fetch failed, while it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetch_error: Option<String>,
    /// The `rollback: auto` stacks held at an older revision.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<super::rollback::Quarantine>,
}

/// Between the fetch task, the webhook and the pass loop.
#[derive(Default)]
pub struct Follow {
    /// The newest tree written.
    tree: Mutex<Option<Tree>>,
    /// A webhook delivery asks for a fetch.
    pub wake: Notify,
    /// The webhook's secret, when it is on.
    pub secret: Option<Vec<u8>>,
}

impl Follow {
    pub fn new(secret: Option<String>) -> Follow {
        Follow {
            secret: secret.filter(|s| !s.is_empty()).map(String::into_bytes),
            ..Follow::default()
        }
    }

    pub fn latest(&self) -> Option<Tree> {
        self.tree.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, tree: Tree) {
        *self.tree.lock().unwrap_or_else(|p| p.into_inner()) = Some(tree);
    }
}

/// Fetches until `stop`, handing each new commit to the pass loop through
/// `follow` and `trigger`.
pub async fn fetch_loop(
    source: GitSource,
    follow: Arc<Follow>,
    shared: Arc<Shared>,
    trigger: Trigger,
    stop: CancellationToken,
) {
    let remote = Arc::new(source.remote);
    let mut backoff = Backoff::new(
        Duration::from_secs(1),
        source
            .interval
            .max(Duration::from_secs(30))
            .min(Duration::from_secs(300)),
    );
    let mut first = true;
    loop {
        let interrupt = Arc::new(AtomicBool::new(false));
        let r = Arc::clone(&remote);
        let flag = Arc::clone(&interrupt);
        let fetched = tokio::task::spawn_blocking(move || {
            let rev = r.fetch(&flag)?;
            r.checkout(&rev.sha)
        });
        // A fetch that hangs is stopped: its time is bounded.
        let fetched = tokio::select! {
            r = fetched => r.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())),
            _ = tokio::time::sleep(FETCH_LIMIT) => {
                interrupt.store(true, std::sync::atomic::Ordering::SeqCst);
                Err(format!("the fetch took longer than {}s and was stopped", FETCH_LIMIT.as_secs()))
            }
            _ = stop.cancelled() => {
                interrupt.store(true, std::sync::atomic::Ordering::SeqCst);
                return;
            }
        };
        let mut wait = source.interval;
        match fetched {
            Ok(tree) => {
                tracing::debug!(sha = %tree.revision.sha, "fetched");
                backoff.succeeded();
                let new = follow
                    .latest()
                    .is_none_or(|t| t.revision.sha != tree.revision.sha);
                shared.update(|s| {
                    let r = s.revision.get_or_insert_with(Default::default);
                    r.fetched = Some(unix_now());
                    r.fetch_error = None;
                });
                if new {
                    tracing::info!(sha = %tree.revision.sha, subject = %tree.revision.subject, "a new commit");
                    follow.set(tree);
                    trigger.fire();
                }
            }
            Err(e) => {
                shared.metrics.git_fetch_failures.inc();
                wait = backoff
                    .failed(Instant::now(), e.clone(), jitter())
                    .min(source.interval.max(Duration::from_secs(1)));
                tracing::warn!(error = %e, retry_in = ?wait, "the Git remote could not be fetched; the revision in force stays");
                shared.update(|s| {
                    let r = s.revision.get_or_insert_with(Default::default);
                    r.fetch_error = Some(e.clone());
                });
                if first && follow.latest().is_none() {
                    // A restart while the server is down: the commit the
                    // last fetch brought is there to enforce.
                    let r = Arc::clone(&remote);
                    if let Ok(Ok(tree)) =
                        tokio::task::spawn_blocking(move || r.checkout_local()).await
                    {
                        tracing::info!(sha = %tree.revision.sha, "enforcing the commit fetched before the restart");
                        follow.set(tree);
                    }
                    trigger.fire();
                }
            }
        }
        first = false;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = follow.wake.notified() => {}
        }
    }
}

/// The longest one fetch may take.
const FETCH_LIMIT: Duration = Duration::from_secs(300);
