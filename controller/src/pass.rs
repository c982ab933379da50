//! One reconcile pass: plan → take the leases → read the hosts again →
//! plan again → apply → record the Cluster's members → release. `drover
//! reconcile` and every pass of `drover controller` run it; only what they
//! show and how they go on differ.
//!
//! The pass is two calls, so that a caller can look at (and, for the
//! controller's heal brake, trim) the plan made under the leases before
//! anything is written:
//!
//! ```text
//! let mut planned = pass.plan(observed);            // pure
//! pass.lock(&mut planned, conns, …).await?;          // leases, re-read, re-plan
//! let applied = pass.apply(planned, conns, …).await; // write, record, release
//! ```

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::apply::{ApplyOptions, Executor, Outcome, Report, Reporter};
use crate::desired::Desired;
use crate::docker::hosts::{observe_former, Connections};
use crate::model::Spec;
use crate::observed::Observed;
use crate::onhost::lease::{take_and_observe, Holder, Leases, Taking};
use crate::onhost::membership;
use crate::plan::{self, Plan};

/// What a pass works from: the spec, its rendering and the planner's
/// options.
pub struct Pass<'a> {
    pub spec: &'a Spec,
    pub desired: Arc<Desired>,
    pub opts: plan::Options,
}

/// A plan and the state it was made from; under the leases once
/// [`Pass::lock`] took them (dropping it unapplied lets them run out: pass
/// it to [`Pass::apply`], which releases them).
pub struct Planned {
    pub observed: Observed,
    pub plan: Plan,
    leases: Option<Leases>,
}

impl Planned {
    /// Whether the hosts are held for this pass.
    pub fn locked(&self) -> bool {
        self.leases.is_some()
    }
}

/// What applying did.
pub struct Applied {
    pub plan: Plan,
    pub report: Report,
    /// Leases lost on the way, one line per host: the pass stopped
    /// starting steps there.
    pub lost: Vec<String>,
}

impl Applied {
    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.report.count(f)
    }
}

impl Pass<'_> {
    /// Plans against `observed`; nothing is read or written.
    pub fn plan(&self, observed: Observed) -> Planned {
        let plan = plan::plan(&self.desired, &observed, self.opts);
        Planned {
            observed,
            plan,
            leases: None,
        }
    }

    /// Whether a plan writes anything: changes, or the record of the
    /// Cluster's members that a host lacks.
    pub fn writes(&self, planned: &Planned) -> bool {
        !planned.plan.actions.is_empty()
            || membership::wanted(self.spec, &planned.observed).is_some()
            || planned
                .observed
                .hosts
                .values()
                .any(|h| !h.frozen.is_empty() || !h.restores.is_empty())
    }

    /// Takes the lease of every host, reads them again and plans anew:
    /// another drover may have been at work since `planned` was made. A
    /// plan that writes nothing is returned as it is. `Err` names the drover
    /// that holds a lease ([`Taking::Busy`]); then no lease is held and
    /// nothing was done.
    pub async fn lock(
        &self,
        planned: &mut Planned,
        conns: &mut Connections,
        holder: &Arc<Holder>,
        stop: &CancellationToken,
    ) -> Result<(), Taking> {
        if !self.writes(planned) {
            return Ok(());
        }
        let (leases, mut observed) = take_and_observe(conns, holder, stop).await?;
        // What a drover that stopped left half done: frozen apps, restores.
        if crate::data::snapshot::recover(conns, &self.desired, &observed).await {
            observed = crate::docker::hosts::observe_all(conns).await;
        }
        observe_former(self.spec, &mut observed).await;
        *planned = Planned {
            leases: Some(leases),
            ..self.plan(observed)
        };
        Ok(())
    }

    /// Applies the plan (under its leases, which stop the steps when one is
    /// lost), records the Cluster's members if no lease was lost, and
    /// releases the leases. Without leases, nothing is written.
    pub async fn apply(
        &self,
        planned: Planned,
        conns: &Connections,
        opts: ApplyOptions,
        reporter: Arc<dyn Reporter>,
    ) -> Applied {
        let Planned {
            observed,
            plan,
            leases,
        } = planned;
        let Some(leases) = leases else {
            return Applied {
                plan,
                report: Report::default(),
                lost: Vec::new(),
            };
        };
        let report = if plan.actions.is_empty() {
            Report::default()
        } else {
            Executor::new(conns.engines.clone(), Arc::clone(&self.desired), opts)
                .stop_when(leases.lost())
                .apply(&plan, reporter)
                .await
        };
        let lost = leases.lost_reasons();
        // (Not when a lease was lost: a host stopped answering.)
        if lost.is_empty() {
            let changed = report.count(|o| matches!(o, Outcome::Done | Outcome::Failed(_))) > 0;
            membership::record_after(self.spec, conns, &observed, changed).await;
        }
        leases.release().await;
        Applied { plan, report, lost }
    }
}

/// How long a host may take to count its volumes for [`size_moves`].
const SIZING_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Sizes the moves of a plan: a `relocate` action whose size the records
/// do not tell gets the source engine's count, and its copy time estimated
/// from it. Nothing is written; a host that does not answer in time leaves
/// the size unknown.
pub async fn size_moves(planned: &mut Planned, conns: &Connections) {
    let mut sources: Vec<String> = planned
        .plan
        .actions
        .iter()
        .filter_map(|a| a.relocation.as_ref())
        .filter(|r| r.bytes.is_none())
        .map(|r| r.from.clone())
        .collect();
    sources.sort();
    sources.dedup();
    let asks = sources.iter().filter_map(|h| {
        let api = conns.engines.get(h)?;
        Some(async move {
            let sizes = tokio::time::timeout(SIZING_WAIT, api.volume_sizes()).await;
            match sizes {
                Ok(Ok(s)) => Some((h.clone(), s)),
                Ok(Err(e)) => {
                    tracing::warn!(host = %h, error = %e, "the sizes of the volumes to move are not known");
                    None
                }
                Err(_) => {
                    tracing::warn!(host = %h, "the engine did not count its volumes within 30 s: the sizes of the volumes to move are not known");
                    None
                }
            }
        })
    });
    let sizes: std::collections::BTreeMap<String, _> = futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect();
    for a in &mut planned.plan.actions {
        let Some(r) = a.relocation.as_mut().filter(|r| r.bytes.is_none()) else {
            continue;
        };
        if let Some(b) = sizes.get(&r.from).and_then(|s| s.get(&a.name)) {
            r.bytes = Some(*b);
            r.estimate = plan::estimate(&planned.observed, &r.from, &r.to, r.bytes);
        }
    }
}
