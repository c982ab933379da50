//! The heal brake: which actions restore an app stopped or removed out of
//! band, and how many restorations an app gets in a window.

use super::*;

impl Controller {
    pub(super) fn remember_running(&mut self, desired: &Desired, observed: &Observed) {
        // Only what the spec still asks for is worth remembering.
        self.seen.retain(|(host, name, hash)| {
            desired
                .hosts
                .get(host)
                .and_then(|h| h.containers.get(name))
                .is_some_and(|c| c.spec_hash == *hash)
        });
        for (host, h) in &observed.hosts {
            let Some(want) = desired.hosts.get(host) else {
                continue;
            };
            for c in h.containers.iter().filter(|c| c.managed && !c.internal) {
                if let (Some(w), Some(hash)) = (want.containers.get(&c.name), &c.spec_hash) {
                    if *hash == w.spec_hash {
                        self.seen
                            .insert((host.clone(), c.name.clone(), hash.clone()));
                    }
                }
            }
        }
    }

    /// Takes out of the plan the restorations of apps over their limit (and
    /// what waits for them); records the others. Returns how many were
    /// held back.
    pub(super) fn limit_heals(&mut self, desired: &Desired, plan: &mut Plan) -> usize {
        let now = Instant::now();
        let mut held = BTreeSet::new();
        let mut throttled: BTreeMap<AppKey, Instant> = BTreeMap::new();
        let mut allowed = Vec::new();
        for a in &plan.actions {
            let Some(app) = self.restoration(desired, a) else {
                continue;
            };
            match self.heals.blocked_until(&app, now) {
                Some(until) => {
                    held.insert(a.id.clone());
                    throttled.insert(app, until);
                }
                None => allowed.push(app),
            }
        }
        for app in allowed {
            tracing::info!(stack = %app.0, app = %app.1, "restoring an app changed out of band");
            let revision = self.in_force.as_ref().map(|r| r.sha.clone());
            self.notifier.send(
                super::notify::Event::new(
                    super::notify::Kind::Heal,
                    revision.as_deref(),
                    format!("restoring `{}/{}`, changed out of band", app.0, app.1),
                )
                .on(Some(&app.0), Some(&app.1), None),
            );
            self.shared
                .metrics
                .heals
                .get_or_create(&AppLabels::of(&app))
                .inc();
            self.heals.record(app, now);
        }
        let dropped = drop_with_dependents(plan, &held);
        for a in &dropped {
            self.shared
                .metrics
                .action(&a.kind.to_string(), &a.action.to_string(), "throttled");
        }
        let keys: BTreeSet<AppKey> = throttled.keys().cloned().collect();
        for app in self.throttled_before.difference(&keys) {
            self.shared
                .metrics
                .heal_throttled
                .get_or_create(&AppLabels::of(app))
                .set(0);
        }
        let list: Vec<Throttled> = throttled
            .iter()
            .map(|(app, until)| {
                tracing::warn!(stack = %app.0, app = %app.1, "restorations paused: the app was restored too often");
                self.shared
                    .metrics
                    .heal_throttled
                    .get_or_create(&AppLabels::of(app))
                    .set(1);
                Throttled {
                    stack: app.0.clone(),
                    app: app.1.clone(),
                    restorations: self.heals.count(app),
                    limit: self.heals.limit(),
                    window_seconds: self.heals.window().as_secs(),
                    until: unix_at(*until),
                }
            })
            .collect();
        self.throttled_before = keys;
        self.shared.update(|s| s.throttled = list);
        dropped.len()
    }

    /// The app an action restores, if it puts back a container that was
    /// stopped or removed out of band: a `start`, or a `create` of a
    /// container seen running with the same spec before.
    pub(super) fn restoration(&self, desired: &Desired, a: &Action) -> Option<AppKey> {
        if a.kind != Kind::Container {
            return None;
        }
        let c = desired.hosts.get(&a.host)?.containers.get(&a.name)?;
        let restores = match a.action {
            Verb::Start => true,
            Verb::Create => {
                self.seen
                    .contains(&(a.host.clone(), a.name.clone(), c.spec_hash.clone()))
            }
            _ => false,
        };
        restores.then(|| (c.stack.clone(), c.app.clone()))
    }
}

/// Removes the actions `held` and everything that waits for them; returns
/// what was removed.
pub fn drop_with_dependents(plan: &mut Plan, held: &BTreeSet<String>) -> Vec<Action> {
    let mut gone: BTreeSet<String> = held.clone();
    loop {
        let before = gone.len();
        for a in &plan.actions {
            if a.after.iter().any(|d| gone.contains(d)) {
                gone.insert(a.id.clone());
            }
        }
        if gone.len() == before {
            break;
        }
    }
    let (dropped, kept): (Vec<Action>, Vec<Action>) = std::mem::take(&mut plan.actions)
        .into_iter()
        .partition(|a| gone.contains(&a.id));
    plan.actions = kept;
    plan.in_sync = plan.actions.is_empty();
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Verb;

    fn action(id: &str, after: &[&str]) -> Action {
        Action {
            id: id.into(),
            host: "a".into(),
            kind: Kind::Container,
            action: Verb::Create,
            stack: "s".into(),
            name: id.into(),
            reason: String::new(),
            after: after.iter().map(|s| s.to_string()).collect(),
            relocation: None,
            wave: 0,
        }
    }

    #[test]
    fn a_held_action_takes_everything_that_waits_for_it_along() {
        let mut plan = Plan {
            actions: vec![
                action("db", &[]),
                action("web", &["db"]),
                action("proxy", &["web"]),
                action("other", &[]),
            ],
            ..Plan::default()
        };
        let held = BTreeSet::from(["db".to_string()]);
        let dropped: Vec<String> = drop_with_dependents(&mut plan, &held)
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(dropped, ["db", "web", "proxy"]);
        assert_eq!(plan.actions.len(), 1);
        assert_eq!(plan.actions[0].id, "other");
        assert!(!plan.in_sync);
    }
}
