//! Fixtures the unit tests share.

use std::collections::BTreeMap;

use crate::apply::{Outcome, Report};
use crate::desired::Desired;

/// A Cluster of two hosts, `a` and `b`, that nothing reaches.
pub const TWO_HOSTS: &str = "kind: Cluster\nhosts:\n  a: { endpoint: 'tcp://127.0.0.1:1' }\n  b: { endpoint: 'tcp://127.0.0.1:2' }\n";

/// `stack` on [`TWO_HOSTS`], loaded and rendered.
pub fn desired_on_two_hosts(stack: &str) -> Desired {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), TWO_HOSTS).unwrap();
    std::fs::write(dir.path().join("s.yaml"), stack).unwrap();
    crate::desired::render(&crate::load::load(dir.path(), &BTreeMap::new()).unwrap())
}

/// The outcome of the action on the object `name`.
pub fn outcome_of<'r>(report: &'r Report, name: &str) -> &'r Outcome {
    &report
        .outcomes
        .iter()
        .find(|(a, _)| a.name == name)
        .unwrap_or_else(|| panic!("no action on `{name}`"))
        .1
}
