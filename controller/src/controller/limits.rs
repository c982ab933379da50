//! The controller's two brakes, as pure bookkeeping over instants:
//! [`Backoff`] spaces out retries of a host that failed (exponential, with
//! jitter, reset by a success), and [`HealLimit`] caps how often one app is
//! restored within a window, so a crash-looping app cannot spin the
//! controller.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Exponential backoff with jitter for one host.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<String>,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            failures: 0,
            retry_at: None,
            last_error: None,
        }
    }

    /// Records a failure; returns the delay before the next try: `base ·
    /// 2^(n-1)`, capped at `max`, scaled by `jitter` (a factor drawn from
    /// [0.8, 1.2) by the caller, so that hosts do not retry in step).
    pub fn failed(&mut self, now: Instant, error: String, jitter: f64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = self.failures.saturating_sub(1).min(20);
        let raw = self.base.saturating_mul(1u32 << exp).min(self.max);
        let delay = raw.mul_f64(jitter.clamp(0.5, 1.5));
        self.retry_at = Some(now + delay);
        self.last_error = Some(error);
        delay
    }

    /// A success forgets every earlier failure.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
        self.last_error = None;
    }

    /// Whether the host may be tried at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|t| now >= t)
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }
}

/// A jitter factor in [0.8, 1.2).
pub fn jitter() -> f64 {
    0.8 + fastrand::f64() * 0.4
}

/// An app, as `(stack, app)`.
pub type AppKey = (String, String);

/// At most `limit` restorations of one app within `window`.
#[derive(Debug, Clone)]
pub struct HealLimit {
    limit: usize,
    window: Duration,
    heals: BTreeMap<AppKey, VecDeque<Instant>>,
}

impl HealLimit {
    pub fn new(limit: usize, window: Duration) -> HealLimit {
        HealLimit {
            limit: limit.max(1),
            window,
            heals: BTreeMap::new(),
        }
    }

    fn forget_old(&mut self, now: Instant) {
        let window = self.window;
        self.heals.retain(|_, times| {
            while times
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= window)
            {
                times.pop_front();
            }
            !times.is_empty()
        });
    }

    /// `None` when the app may be restored now, else when it may again.
    pub fn blocked_until(&mut self, app: &AppKey, now: Instant) -> Option<Instant> {
        self.forget_old(now);
        let times = self.heals.get(app)?;
        (times.len() >= self.limit).then(|| times[times.len() - self.limit] + self.window)
    }

    pub fn record(&mut self, app: AppKey, now: Instant) {
        self.heals.entry(app).or_default().push_back(now);
    }

    /// Restorations of the app within the window.
    pub fn count(&self, app: &AppKey) -> usize {
        self.heals.get(app).map_or(0, VecDeque::len)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets_on_success() {
        let now = Instant::now();
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let delays: Vec<u64> = (0..6)
            .map(|_| b.failed(now, "down".into(), 1.0).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert!(!b.ready(now));
        assert!(b.ready(now + Duration::from_secs(10)));
        assert_eq!(b.last_error(), Some("down"));
        b.succeeded();
        assert!(b.ready(now));
        assert_eq!(b.failed(now, "down".into(), 1.0), Duration::from_secs(1));
    }

    #[test]
    fn backoff_jitter_spreads_the_delay() {
        let now = Instant::now();
        let mut b = Backoff::new(Duration::from_secs(4), Duration::from_secs(60));
        let d = b.failed(now, "x".into(), 1.2);
        assert_eq!(d, Duration::from_millis(4800));
        for _ in 0..100 {
            let j = jitter();
            assert!((0.8..1.2).contains(&j));
        }
    }

    #[test]
    fn heal_limit_blocks_an_app_after_its_quota_until_the_window_moves() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut l = HealLimit::new(3, s(60));
        let app: AppKey = ("shop".into(), "web".into());
        let other: AppKey = ("shop".into(), "db".into());
        for i in 0..3 {
            assert_eq!(l.blocked_until(&app, t0 + s(i * 10)), None);
            l.record(app.clone(), t0 + s(i * 10));
        }
        assert_eq!(l.blocked_until(&app, t0 + s(30)), Some(t0 + s(60)));
        assert_eq!(l.blocked_until(&other, t0 + s(30)), None);
        // The first restoration leaves the window: one more is allowed.
        assert_eq!(l.blocked_until(&app, t0 + s(60)), None);
        assert_eq!(l.count(&app), 2);
    }
}
