//! The controller's Prometheus metrics (OpenMetrics text at `/metrics`).
//! Label values are names drover already shows (hosts, stacks, apps,
//! actions), never a secret.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub kind: String,
    pub action: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostLabel {
    pub host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    pub stack: String,
    pub app: String,
}

impl AppLabels {
    pub fn of((stack, app): &(String, String)) -> AppLabels {
        AppLabels {
            stack: stack.clone(),
            app: app.clone(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VolumeLabels {
    pub stack: String,
    pub volume: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackupLabels {
    pub stack: String,
    pub volume: String,
    pub repository: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShaLabel {
    pub sha: String,
}

pub struct Metrics {
    registry: Registry,
    pub revision_info: Family<ShaLabel, Gauge>,
    pub revision_applied: Gauge<f64, AtomicU64>,
    pub git_fetch_failures: Counter,
    pub webhooks: Family<ResultLabel, Counter>,
    pub notifications: Family<ResultLabel, Counter>,
    pub passes: Family<ResultLabel, Counter>,
    pub pass_duration: Histogram,
    pub actions: Family<ActionLabels, Counter>,
    pub host_errors: Family<HostLabel, Counter>,
    pub last_success: Gauge<f64, AtomicU64>,
    pub manifests_valid: Gauge,
    pub relocation_bytes: Counter,
    pub relocation_duration: Histogram,
    pub relocation_downtime: Histogram,
    pub heals: Family<AppLabels, Counter>,
    pub heal_throttled: Family<AppLabels, Gauge>,
    pub snapshot_last: Family<VolumeLabels, Gauge<f64, AtomicU64>>,
    pub snapshot_failures: Family<VolumeLabels, Counter>,
    pub snapshot_held: Histogram,
    pub backup_last: Family<BackupLabels, Gauge<f64, AtomicU64>>,
    pub backup_added: Family<BackupLabels, Counter>,
    pub backup_failures: Family<BackupLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("drover");
        let m = Metrics {
            registry: Registry::default(),
            revision_info: Family::default(),
            revision_applied: Gauge::default(),
            git_fetch_failures: Counter::default(),
            webhooks: Family::default(),
            notifications: Family::default(),
            passes: Family::default(),
            pass_duration: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            actions: Family::default(),
            host_errors: Family::default(),
            last_success: Gauge::default(),
            manifests_valid: Gauge::default(),
            relocation_bytes: Counter::default(),
            relocation_duration: Histogram::new(exponential_buckets(0.5, 2.0, 12)),
            relocation_downtime: Histogram::new(exponential_buckets(0.125, 2.0, 12)),
            heals: Family::default(),
            heal_throttled: Family::default(),
            snapshot_last: Family::default(),
            snapshot_failures: Family::default(),
            snapshot_held: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            backup_last: Family::default(),
            backup_added: Family::default(),
            backup_failures: Family::default(),
        };
        registry.register(
            "passes",
            "Reconcile passes, by result (ok or failed)",
            m.passes.clone(),
        );
        registry.register_with_unit(
            "pass_duration",
            "How long a reconcile pass took",
            Unit::Seconds,
            m.pass_duration.clone(),
        );
        registry.register(
            "actions",
            "Plan actions carried out, by kind, action and result (done, failed, skipped, throttled)",
            m.actions.clone(),
        );
        registry.register(
            "host_errors",
            "Passes in which a host could not be read or an action on it failed",
            m.host_errors.clone(),
        );
        registry.register_with_unit(
            "last_successful_pass_timestamp",
            "When the last pass that converged every host finished (Unix time)",
            Unit::Seconds,
            m.last_success.clone(),
        );
        registry.register(
            "manifests_valid",
            "1 when the manifest directory is valid, 0 while the last good spec stays in force",
            m.manifests_valid.clone(),
        );
        registry.register_with_unit(
            "relocation",
            "Volume data sent by completed moves",
            Unit::Bytes,
            m.relocation_bytes.clone(),
        );
        registry.register_with_unit(
            "relocation_duration",
            "How long a volume move took, downtime included",
            Unit::Seconds,
            m.relocation_duration.clone(),
        );
        registry.register_with_unit(
            "relocation_downtime",
            "How long a volume move kept its apps down: from the stop on the source to the start on the target",
            Unit::Seconds,
            m.relocation_downtime.clone(),
        );
        registry.register(
            "heals",
            "Apps restored after being stopped or removed out of band",
            m.heals.clone(),
        );
        registry.register(
            "heal_throttled",
            "1 while an app has used up its restorations for the window and is left as it is",
            m.heal_throttled.clone(),
        );
        registry.register_with_unit(
            "snapshot_last_success_timestamp",
            "When the newest complete snapshot of a volume was taken (Unix time), per volume with `snapshots:`",
            Unit::Seconds,
            m.snapshot_last.clone(),
        );
        registry.register(
            "snapshot_failures",
            "Scheduled snapshots that failed, per volume",
            m.snapshot_failures.clone(),
        );
        registry.register_with_unit(
            "snapshot_freeze",
            "How long a scheduled snapshot froze (or stopped) the apps of its volume",
            Unit::Seconds,
            m.snapshot_held.clone(),
        );
        registry.register_with_unit(
            "backup_last_success_timestamp",
            "When the newest good backup of a volume was stored (Unix time), per volume and repository",
            Unit::Seconds,
            m.backup_last.clone(),
        );
        registry.register_with_unit(
            "backup_added",
            "Bytes scheduled backups added to their repository (after deduplication and compression)",
            Unit::Bytes,
            m.backup_added.clone(),
        );
        registry.register(
            "backup_failures",
            "Scheduled backups that failed, per volume and repository",
            m.backup_failures.clone(),
        );
        registry.register(
            "revision_info",
            "1 for the Git commit the controller has applied (with --git)",
            m.revision_info.clone(),
        );
        registry.register_with_unit(
            "revision_applied_timestamp",
            "When the controller last applied a new Git commit (Unix time)",
            Unit::Seconds,
            m.revision_applied.clone(),
        );
        registry.register(
            "git_fetch_failures",
            "Fetches of the Git remote that failed",
            m.git_fetch_failures.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Deliveries to /hooks/git, by result (accepted or refused)",
            m.webhooks.clone(),
        );
        registry.register(
            "notifications",
            "Notifications, by result (sent, failed after its retries, dropped when too many waited)",
            m.notifications.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Marks `sha` as the revision applied, alone.
    pub fn set_revision(&self, sha: &str, previous: Option<&str>) {
        if let Some(p) = previous.filter(|p| *p != sha) {
            self.revision_info.remove(&ShaLabel { sha: p.into() });
        }
        self.revision_info
            .get_or_create(&ShaLabel { sha: sha.into() })
            .set(1);
    }

    pub fn count(&self, family: &Family<ResultLabel, Counter>, result: &str) {
        family
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    pub fn action(&self, kind: &str, action: &str, result: &str) {
        self.actions
            .get_or_create(&ActionLabels {
                kind: kind.into(),
                action: action.into(),
                result: result.into(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_encoded_with_the_drover_prefix() {
        let m = Metrics::new();
        m.passes
            .get_or_create(&ResultLabel {
                result: "ok".into(),
            })
            .inc();
        m.action("container", "create", "done");
        m.manifests_valid.set(1);
        m.relocation_bytes.inc_by(1024);
        let text = m.encode();
        for line in [
            "drover_passes_total{result=\"ok\"} 1",
            "drover_actions_total{kind=\"container\",action=\"create\",result=\"done\"} 1",
            "drover_manifests_valid 1",
            "drover_relocation_bytes_total 1024",
            "# TYPE drover_pass_duration_seconds histogram",
            "# TYPE drover_last_successful_pass_timestamp_seconds gauge",
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
    }
}
