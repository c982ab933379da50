//! Writing the record of the Git commit last applied to a host
//! ([`crate::contract::revision`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::contract::labels::revision::{REVISION, SEQ};
use crate::contract::revision::Applied;
use crate::docker::{DockerApi, RecordSpec};
use crate::observed::Observed;

/// Records `applied` on each host of `hosts` that was read and holds
/// another commit, and removes the older records there. Failures are
/// logged: the next pass writes again.
pub async fn write(
    engines: &BTreeMap<String, Arc<dyn DockerApi>>,
    observed: &Observed,
    hosts: impl IntoIterator<Item = &str>,
    applied: &Applied,
) {
    let json = serde_json::to_string(applied).expect("serializes");
    for name in hosts {
        let (Some(api), Some(h)) = (engines.get(name), observed.hosts.get(name)) else {
            continue;
        };
        let current = h.revision.as_ref();
        if current.is_some_and(|r| r.applied.sha == applied.sha) {
            continue;
        }
        let seq = crate::onhost::records::next_seq(current.map_or(0, |r| r.seq));
        let spec = RecordSpec {
            name: crate::contract::names::revision(seq),
            labels: crate::contract::internal_labels([
                (REVISION, json.clone()),
                (SEQ, seq.to_string()),
            ]),
        };
        let older = current.map(|r| r.objects.clone()).unwrap_or_default();
        crate::onhost::records::supersede(api.as_ref(), &spec, &older, "the commit applied").await;
    }
}
