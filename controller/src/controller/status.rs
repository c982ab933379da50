//! What the controller reports: its status after each pass, shared with
//! `/healthz` and `/metrics`.

use super::*;

/// What `/healthz` shows: the controller's status after its last pass.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// The last pass converged every host and the directory is valid.
    pub ready: bool,
    /// Why not, when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub manifests: ManifestStatus,
    pub passes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_pass: Option<PassSummary>,
    /// Unix time of the last pass that converged every host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success: Option<f64>,
    pub hosts: BTreeMap<String, HostStatus>,
    /// Apps whose restorations are paused by the rate limit.
    pub throttled: Vec<Throttled>,
    /// Volumes whose scheduled snapshot is late.
    pub snapshots_overdue: Vec<super::snapshots::Overdue>,
    /// Volumes whose scheduled backup is late.
    pub backups_overdue: Vec<super::backups::Overdue>,
    /// With `--git`: the commit applied and the newest one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<super::follow::RevisionStatus>,
    pub stopping: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ManifestStatus {
    pub valid: bool,
    /// Every problem, one `file:line:column: message` per entry.
    pub errors: Vec<String>,
    /// Whether a valid spec was ever loaded (and is in force).
    pub in_force: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PassSummary {
    pub number: u64,
    /// Unix time the pass finished.
    pub finished: f64,
    pub duration_seconds: f64,
    pub ok: bool,
    pub done: usize,
    pub failed: usize,
    pub skipped: usize,
    pub throttled: usize,
    /// What went wrong, one line each.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct HostStatus {
    pub reachable: bool,
    /// Failures in a row.
    pub failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix time of the next try, while backing off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Throttled {
    pub stack: String,
    pub app: String,
    /// Restorations within the window.
    pub restorations: usize,
    pub limit: usize,
    pub window_seconds: u64,
    /// Unix time from which the app may be restored again.
    pub until: f64,
}

/// What the HTTP side reads.
pub struct Shared {
    status: Mutex<Status>,
    /// What the dashboard shows besides the status.
    view: Mutex<super::dashboard::View>,
    pub metrics: Metrics,
    /// With `--git`: what `/hooks/git` wakes.
    pub follow: Option<Arc<super::follow::Follow>>,
    /// With `--dashboard-auth-env`: the base64 of `user:password` the
    /// dashboard asks for.
    pub dashboard_auth: Option<String>,
}

impl Shared {
    pub fn new(follow: Option<Arc<super::follow::Follow>>) -> Shared {
        Shared {
            follow,
            view: Mutex::new(super::dashboard::View::default()),
            dashboard_auth: None,
            status: Mutex::new(Status {
                reason: Some("no pass has finished yet".into()),
                ..Status::default()
            }),
            metrics: Metrics::new(),
        }
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn view(&self) -> super::dashboard::View {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn update_view(&self, f: impl FnOnce(&mut super::dashboard::View)) {
        f(&mut self.view.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

impl Default for Shared {
    fn default() -> Self {
        Shared::new(None)
    }
}

pub(super) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// An instant of the monotonic clock as Unix time, for people.
pub(super) fn unix_at(t: Instant) -> f64 {
    let now = Instant::now();
    if t >= now {
        unix_now() + (t - now).as_secs_f64()
    } else {
        unix_now() - (now - t).as_secs_f64()
    }
}
