//! Turning triggers into passes. Every trigger (a file, an engine event,
//! the resync timer, a retry) only marks the cluster dirty; the controller
//! loop asks [`Trigger::next`] when to run the next pass. Triggers that
//! arrive close together are folded into one pass (a `git pull` touching
//! fifty files is one pass), and passes never overlap: the loop runs them
//! one after another, and a trigger during a pass schedules the next one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A cheap handle that any watcher may fire.
#[derive(Clone, Default)]
pub struct Trigger {
    inner: Arc<Inner>,
}

struct Inner {
    dirty: AtomicBool,
    notify: Notify,
    /// When the last trigger came.
    last: Mutex<Instant>,
    /// When the manifest files last changed, and how many changes so far.
    files: Mutex<(Instant, u64)>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            dirty: AtomicBool::new(false),
            notify: Notify::new(),
            last: Mutex::new(Instant::now()),
            files: Mutex::new((Instant::now(), 0)),
        }
    }
}

/// Why [`Trigger::next`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A pass is due.
    Pass,
    /// Shutting down: no more passes.
    Stop,
}

/// How triggers are folded together.
#[derive(Debug, Clone, Copy)]
pub struct Debounce {
    /// A pass starts once no trigger came for this long…
    pub quiet: Duration,
    /// …or this long after the first one, whichever comes first.
    pub max: Duration,
}

impl Trigger {
    /// Asks for a pass.
    pub fn fire(&self) {
        *self.inner.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.inner.dirty.store(true, Ordering::SeqCst);
        self.inner.notify.notify_one();
    }

    /// Asks for a pass because the manifest files changed.
    pub fn fire_files(&self) {
        {
            let mut files = self.inner.files.lock().unwrap_or_else(|p| p.into_inner());
            files.0 = Instant::now();
            files.1 += 1;
        }
        self.fire();
    }

    /// Waits until the files have not changed for `quiet` (a pass that
    /// another trigger started must not read a file half written); returns
    /// the count of changes so far, to tell whether more came during a read.
    pub async fn files_settled(&self, quiet: Duration) -> u64 {
        loop {
            let (at, count) = *self.inner.files.lock().unwrap_or_else(|p| p.into_inner());
            let settled = at + quiet;
            if Instant::now() >= settled {
                return count;
            }
            tokio::time::sleep_until(settled).await;
        }
    }

    /// The count of file changes so far.
    pub fn file_changes(&self) -> u64 {
        self.inner.files.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    fn last(&self) -> Instant {
        *self.inner.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until a pass is due: a trigger (debounced), or `deadline` (the
    /// resync timer, a retry), whichever comes first; or until `stop`.
    pub async fn next(
        &self,
        deadline: Instant,
        debounce: Debounce,
        stop: &CancellationToken,
    ) -> Wake {
        // A wake-up without a trigger behind it (a permit left from a
        // trigger that an earlier pass already took in) waits on.
        while !self.inner.dirty.swap(false, Ordering::SeqCst) {
            tokio::select! {
                _ = stop.cancelled() => return Wake::Stop,
                _ = tokio::time::sleep_until(deadline) => return Wake::Pass,
                _ = self.inner.notify.notified() => {}
            }
        }
        let first = Instant::now();
        loop {
            let quiet_at = self.last() + debounce.quiet;
            let latest = first + debounce.max;
            let until = quiet_at.min(latest);
            if Instant::now() >= until {
                break;
            }
            tokio::select! {
                _ = stop.cancelled() => return Wake::Stop,
                _ = tokio::time::sleep_until(until) => {}
            }
        }
        // Triggers that came while waiting are part of this pass.
        self.inner.dirty.store(false, Ordering::SeqCst);
        Wake::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBOUNCE: Debounce = Debounce {
        quiet: Duration::from_millis(500),
        max: Duration::from_secs(5),
    };

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[tokio::test(start_paused = true)]
    async fn fifty_triggers_in_a_burst_make_one_pass() {
        let t = Trigger::default();
        let stop = CancellationToken::new();
        let firing = {
            let t = t.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    t.fire();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let start = Instant::now();
        assert_eq!(t.next(far(), DEBOUNCE, &stop).await, Wake::Pass);
        // One pass, once the burst (1 s) has been quiet for 500 ms.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1480), "{took:?}");
        assert!(took < Duration::from_millis(1600), "{took:?}");
        firing.await.unwrap();
        // Nothing is left over: the next wake is the deadline.
        let deadline = Instant::now() + Duration::from_secs(60);
        assert_eq!(t.next(deadline, DEBOUNCE, &stop).await, Wake::Pass);
        assert!(Instant::now() >= deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_of_triggers_still_gets_a_pass_within_the_maximum() {
        let t = Trigger::default();
        let stop = CancellationToken::new();
        let firing = {
            let t = t.clone();
            tokio::spawn(async move {
                for _ in 0..100 {
                    t.fire();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let start = Instant::now();
        assert_eq!(t.next(far(), DEBOUNCE, &stop).await, Wake::Pass);
        assert!(start.elapsed() <= Duration::from_millis(5100));
        firing.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_trigger_during_a_pass_schedules_the_next_one() {
        let t = Trigger::default();
        let stop = CancellationToken::new();
        t.fire();
        assert_eq!(t.next(far(), DEBOUNCE, &stop).await, Wake::Pass);
        // "During the pass":
        t.fire();
        let start = Instant::now();
        assert_eq!(t.next(far(), DEBOUNCE, &stop).await, Wake::Pass);
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_trigger_waits_only_the_quiet_time() {
        let t = Trigger::default();
        let stop = CancellationToken::new();
        t.fire();
        t.fire();
        let start = Instant::now();
        assert_eq!(t.next(far(), DEBOUNCE, &stop).await, Wake::Pass);
        assert!(
            start.elapsed() <= Duration::from_millis(510),
            "{:?}",
            start.elapsed()
        );
        // The second fire left a wake-up behind: it is not a pass.
        let deadline = Instant::now() + Duration::from_secs(60);
        assert_eq!(t.next(deadline, DEBOUNCE, &stop).await, Wake::Pass);
        assert!(Instant::now() >= deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn reading_waits_until_the_files_have_been_quiet() {
        let t = Trigger::default();
        let quiet = Duration::from_millis(300);
        assert_eq!(t.files_settled(quiet).await, 0);
        t.fire_files();
        let start = Instant::now();
        tokio::time::sleep(Duration::from_millis(100)).await;
        t.fire_files();
        assert_eq!(t.files_settled(quiet).await, 2);
        assert!(start.elapsed() >= Duration::from_millis(400));
        // Other triggers do not hold a read back.
        t.fire();
        let again = Instant::now();
        assert_eq!(t.files_settled(quiet).await, 2);
        assert_eq!(again.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_ends_the_wait() {
        let t = Trigger::default();
        let stop = CancellationToken::new();
        stop.cancel();
        assert_eq!(t.next(far(), DEBOUNCE, &stop).await, Wake::Stop);
    }
}
