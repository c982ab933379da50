//! `rollback: auto`: a stack that a new revision leaves with an app not
//! running (or unhealthy) within the dependency timeout goes back to how it
//! was at its last healthy revision, and the new revision is quarantined for
//! that stack — not tried again — until a newer commit. Only the stack's
//! definition goes back: data is never rolled back (a move that finished
//! stays; one that failed undid itself).

use super::*;
use crate::model::{Rollback, Stack};
use crate::observed::{ContainerState, Health};

/// A stack held at an older revision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quarantine {
    pub stack: String,
    /// The revision quarantined for the stack.
    pub sha: String,
    /// The revision the stack went back to.
    pub back_to: String,
    /// What was wrong with it.
    pub reason: String,
}

impl Quarantine {
    pub fn line(&self) -> String {
        format!(
            "stack `{}` rolled back to {}: {}",
            self.stack,
            short(&self.back_to),
            self.reason
        )
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// What the controller knows for rollbacks.
#[derive(Debug, Default)]
pub struct Rollbacks {
    /// Each `rollback: auto` stack as it was at the last revision where
    /// every app of it ran (and was healthy).
    healthy: BTreeMap<String, (String, Stack)>,
    pub quarantined: BTreeMap<String, Quarantine>,
}

impl Rollbacks {
    /// The spec to enforce at revision `sha`: each stack quarantined at
    /// `sha` as it was at its last healthy revision. A quarantine of any
    /// other commit is lifted (a newer commit clears it).
    pub fn spec(&mut self, spec: Arc<Spec>, sha: &str) -> Arc<Spec> {
        self.quarantined.retain(|_, q| q.sha == sha);
        if self.quarantined.is_empty() {
            return spec;
        }
        let mut held = (*spec).clone();
        for name in self.quarantined.keys() {
            if let Some((_, old)) = self.healthy.get(name) {
                held.stacks.insert(name.clone(), old.clone());
            }
        }
        Arc::new(held)
    }

    /// Notes that `stack` of `spec` is healthy at `sha`.
    pub fn healthy_at(&mut self, spec: &Spec, stack: &str, sha: &str) {
        if self.quarantined.contains_key(stack) {
            return;
        }
        if let Some(s) = spec.stacks.get(stack) {
            self.healthy
                .insert(stack.to_string(), (sha.to_string(), s.clone()));
        }
    }

    /// Quarantines `sha` for `stack` when an older healthy revision of it
    /// differs from what `spec` says (going back to the same definition
    /// would change nothing).
    pub fn quarantine(
        &mut self,
        spec: &Spec,
        stack: &str,
        sha: &str,
        reason: String,
    ) -> Option<Quarantine> {
        let (back_to, old) = self.healthy.get(stack)?;
        if back_to == sha || spec.stacks.get(stack) == Some(old) {
            return None;
        }
        let q = Quarantine {
            stack: stack.to_string(),
            sha: sha.to_string(),
            back_to: back_to.clone(),
            reason,
        };
        self.quarantined.insert(stack.to_string(), q.clone());
        Some(q)
    }

    pub fn lines(&self) -> Vec<String> {
        self.quarantined.values().map(Quarantine::line).collect()
    }
}

/// The `rollback: auto` stacks of `spec`.
pub fn guarded(spec: &Spec) -> BTreeSet<String> {
    spec.stacks
        .values()
        .filter(|s| s.rollback == Rollback::Auto)
        .map(|s| s.name.clone())
        .collect()
}

/// How one app's container is doing: `Ok(true)` ready, `Ok(false)` not
/// yet, `Err` failed for good.
fn state_of(observed: &Observed, c: &desired::ContainerSpec) -> Result<bool, String> {
    let Some(h) = observed.hosts.get(&c.host) else {
        return Ok(false);
    };
    let Some(o) = h.containers.iter().find(|o| o.name == c.name) else {
        return Ok(false);
    };
    let checked = c.healthcheck.as_ref().is_some_and(|h| h.is_enabled());
    if c.is_done(o.state, o.exit_code) {
        return Ok(true);
    }
    match (o.state, o.health) {
        (ContainerState::Exited | ContainerState::Dead, _) => Err(format!(
            "app `{}` on `{}` is not running ({})",
            c.app,
            c.host,
            o.state.as_str()
        )),
        (_, Some(Health::Unhealthy)) => {
            Err(format!("app `{}` on `{}` is unhealthy", c.app, c.host))
        }
        (ContainerState::Running, Some(Health::Healthy)) => Ok(true),
        (ContainerState::Running, _) => Ok(!checked),
        _ => Ok(false),
    }
}

/// How `stack` is doing in `observed`: `Ok(true)` when every app of it
/// runs (and is healthy), `Ok(false)` when one is not ready yet, `Err` with
/// what is wrong for good.
fn judge(desired: &Desired, observed: &Observed, stack: &str) -> Result<bool, String> {
    let mut ready = true;
    for h in desired.hosts.values() {
        for c in h.containers.values().filter(|c| c.stack == stack) {
            ready &= state_of(observed, c)?;
        }
    }
    Ok(ready)
}

/// Whether every app of `stack` runs (and is healthy) in `observed`.
pub fn is_healthy(desired: &Desired, observed: &Observed, stack: &str) -> bool {
    judge(desired, observed, stack) == Ok(true)
}

/// How long a stack's apps must keep running (and healthy) to pass.
const STEADY: Duration = Duration::from_secs(3);

/// Waits up to `timeout` for every app of `stacks` to run (and be
/// healthy) for a few seconds on end; what is wrong with each stack that
/// does not.
pub async fn wait_healthy(
    desired: &Desired,
    stacks: BTreeSet<String>,
    conns: &crate::docker::hosts::Connections,
    timeout: Duration,
    stop: &CancellationToken,
) -> BTreeMap<String, String> {
    let deadline = Instant::now() + timeout;
    // Running once is not enough: an app that exits a moment after it
    // started must be seen doing so.
    let steady = STEADY.min(timeout);
    let mut pending = stacks;
    let mut ready_since: BTreeMap<String, Instant> = BTreeMap::new();
    let mut bad = BTreeMap::new();
    while !pending.is_empty() {
        let observed = crate::docker::hosts::observe_all(conns).await;
        let now = Instant::now();
        pending.retain(|s| match judge(desired, &observed, s) {
            Ok(true) => now.duration_since(*ready_since.entry(s.clone()).or_insert(now)) < steady,
            Ok(false) => {
                ready_since.remove(s);
                true
            }
            Err(why) => {
                bad.insert(s.clone(), why);
                false
            }
        });
        if pending.is_empty() || stop.is_cancelled() {
            break;
        }
        if Instant::now() >= deadline {
            for s in std::mem::take(&mut pending) {
                bad.insert(
                    s,
                    format!(
                        "its apps were not all running and healthy within {}s",
                        timeout.as_secs()
                    ),
                );
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Rollback;

    fn spec(version: &str) -> Spec {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("s.yaml"),
            format!(
                "kind: Stack\nname: s\nrollback: auto\napps:\n  web: {{ image: 'busybox:{version}' }}\n"
            ),
        )
        .unwrap();
        crate::load::load(dir.path(), &crate::load::interpolate::ProcessEnv).unwrap()
    }

    #[test]
    fn a_quarantine_holds_the_stack_at_its_healthy_revision_until_a_newer_commit() {
        let (good, bad) = (Arc::new(spec("1")), Arc::new(spec("2")));
        assert_eq!(good.stacks["s"].rollback, Rollback::Auto);
        let mut r = Rollbacks::default();
        // Nothing healthy known: nothing to go back to.
        assert!(r.quarantine(&bad, "s", "b", "down".into()).is_none());
        r.healthy_at(&good, "s", "a");
        // The same definition: going back would change nothing.
        assert!(r.quarantine(&good, "s", "b", "down".into()).is_none());
        let q = r.quarantine(&bad, "s", "b", "down".into()).unwrap();
        assert_eq!(q.back_to, "a");
        assert_eq!(r.spec(Arc::clone(&bad), "b").stacks["s"], good.stacks["s"]);
        // Healthy while held: still the old definition that is known good.
        r.healthy_at(&good, "s", "b");
        assert!(r.lines()[0].contains("rolled back to a"));
        // A newer commit lifts it.
        assert_eq!(r.spec(Arc::clone(&bad), "c").stacks["s"], bad.stacks["s"]);
        assert!(r.quarantined.is_empty());
    }
}
