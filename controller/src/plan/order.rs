//! Ordering: the actions of a plan in steps, each after what it waits for.

use super::*;

impl<'a> Planner<'a> {
    pub(super) fn finish(mut self) -> Plan {
        for a in &mut self.actions {
            a.after.sort();
            a.after.dedup();
        }
        let index: HashMap<String, usize> = self
            .actions
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i))
            .collect();
        let mut waves = vec![0usize; self.actions.len()];
        for i in 0..self.actions.len() {
            wave_of(i, &self.actions, &index, &mut waves, &mut Vec::new());
        }
        for (a, w) in self.actions.iter_mut().zip(waves) {
            a.wave = w;
        }
        self.actions.sort_by(|a, b| {
            (a.wave, &a.host, a.kind, &a.name, a.action)
                .cmp(&(b.wave, &b.host, b.kind, &b.name, b.action))
        });
        self.orphans
            .sort_by(|a, b| (&a.host, &a.name).cmp(&(&b.host, &b.name)));
        self.warnings.sort();
        self.warnings.dedup();
        // Errors keep the order they were found in: a host's error comes
        // before what it causes.
        let mut seen = BTreeSet::new();
        self.errors.retain(|e| seen.insert(e.clone()));
        Plan {
            in_sync: self.actions.is_empty(),
            actions: self.actions,
            orphans: self.orphans,
            warnings: self.warnings,
            errors: self.errors,
        }
    }
}

fn wave_of(
    i: usize,
    actions: &[Action],
    index: &HashMap<String, usize>,
    waves: &mut [usize],
    path: &mut Vec<usize>,
) -> usize {
    if waves[i] > 0 {
        return waves[i];
    }
    if path.contains(&i) {
        return 0; // cannot happen for an acyclic app graph; never loop
    }
    path.push(i);
    let mut w = 0;
    for dep in &actions[i].after {
        if let Some(&j) = index.get(dep) {
            w = w.max(wave_of(j, actions, index, waves, path));
        }
    }
    path.pop();
    waves[i] = w + 1;
    waves[i]
}
