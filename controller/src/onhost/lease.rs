//! Keeping two drovers apart. Before anything changes on a host, drover
//! takes the host's lease: a container named [`NAME`] that is never
//! started, labelled with who holds it and until when. The engine's unique
//! container names make taking it atomic: of two drovers that try at once,
//! one makes it and the other is told the name is taken.
//!
//! A holder extends its lease while it works (every third of the lease's
//! time, by writing the new end time into the lease object) and removes it
//! when done. A lease whose end has passed belongs to a drover that died: it
//! is removed by its id — so of two drovers that find it stale only one
//! removes it — and taken anew. A holder that cannot extend its lease in
//! time, or finds it gone, stops starting steps.
//!
//! Times are Unix seconds of the clock of the machine drover runs on:
//! machines that run drover against the same hosts must agree on the time
//! to well within the lease's length (NTP does).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::contract::labels::{CONTRACT, INTERNAL};
use crate::docker::hosts::{observe_all, Connections};
use crate::docker::{DockerApi, LeaseRecord};
use crate::observed::Observed;

pub use crate::contract::labels::lease::{COMMAND, EXPIRES, HOLDER, PROCESS, SINCE};
pub use crate::contract::names::LEASE as NAME;

/// How long a lease lasts unless extended; `DROVER_LEASE_TTL` (seconds)
/// sets another.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// Seconds since the Unix epoch, by this machine's clock.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// This process as a lease holder.
#[derive(Debug, Clone)]
pub struct Holder {
    pub id: String,
    pub command: String,
    pub ttl: Duration,
    /// `boot id/pid namespace`, when they can be read.
    pub space: Option<String>,
}

/// This process's `boot id/pid namespace`.
fn process_space() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!("{}/{}", boot.trim(), ns.display()))
}

/// A process's start time (clock ticks since boot) and whether it is a
/// zombie, from `/proc/PID/stat`; `None` if it cannot be read.
fn start_of(pid: u32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from
    // the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((fields.get(19)?.parse().ok()?, fields.first() == Some(&"Z")))
}

/// Whether `/proc` hides other users' processes (`hidepid`): a process
/// missing from it may still run.
fn proc_hides_processes(mountinfo: &str) -> bool {
    mountinfo.lines().any(|l| {
        let mut halves = l.splitn(2, " - ");
        let (ours, theirs) = (halves.next().unwrap_or(""), halves.next().unwrap_or(""));
        ours.split_whitespace().nth(4) == Some("/proc")
            && theirs.split_whitespace().nth(2).is_some_and(|opts| {
                opts.split(',').any(|o| {
                    o.strip_prefix("hidepid=")
                        .is_some_and(|v| v != "0" && v != "off")
                })
            })
    })
}

/// Whether the lease's holder ran in this process space and is gone: its
/// pid runs a process started at another time (the pid was reused), is a
/// zombie, or is absent while `/proc` shows every process. Whatever the
/// process is called: a renamed binary is still the holder.
fn holder_is_gone(l: &LeaseRecord, space: Option<&str>) -> bool {
    let Some(space) = space else {
        return false;
    };
    let Some(label) = l.labels.get(PROCESS) else {
        return false;
    };
    let Some((rest, started)) = label.rsplit_once('/') else {
        return false;
    };
    let Some((their_space, pid)) = rest.rsplit_once('/') else {
        return false;
    };
    let (Ok(pid), Ok(started)) = (pid.parse::<u32>(), started.parse::<u64>()) else {
        return false; // an older drover's label: only time tells
    };
    if their_space != space {
        return false;
    }
    match start_of(pid) {
        Some((t, zombie)) => zombie || t != started,
        None => {
            let hidden = std::fs::read_to_string("/proc/self/mountinfo")
                .map_or(true, |m| proc_hides_processes(&m));
            !hidden && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        }
    }
}

impl Holder {
    /// A new holder for `command`, with the lease time of
    /// `DROVER_LEASE_TTL` or [`DEFAULT_TTL`].
    pub fn new(command: &str) -> Holder {
        let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".into());
        let ttl = std::env::var("DROVER_LEASE_TTL")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map_or(DEFAULT_TTL, Duration::from_secs);
        Holder {
            id: format!("{machine}/{}/{:08x}", std::process::id(), fastrand::u32(..)),
            command: command.to_string(),
            ttl,
            space: process_space(),
        }
    }

    fn labels(&self, now: u64) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            (INTERNAL.to_string(), "true".to_string()),
            (CONTRACT.to_string(), crate::contract::VERSION.to_string()),
            (HOLDER.to_string(), self.id.clone()),
            (COMMAND.to_string(), self.command.clone()),
            (SINCE.to_string(), now.to_string()),
            (EXPIRES.to_string(), (now + self.ttl.as_secs()).to_string()),
        ]);
        let me = std::process::id();
        if let (Some(space), Some((started, _))) = (&self.space, start_of(me)) {
            labels.insert(PROCESS.to_string(), format!("{space}/{me}/{started}"));
        }
        labels
    }
}

/// When a lease ends: the later of its first end and its last extension.
pub fn expires(l: &LeaseRecord) -> u64 {
    let first = l.labels.get(EXPIRES).and_then(|s| s.parse().ok());
    first.max(l.renewed_until).unwrap_or(0)
}

/// Who holds a lease, for messages: `drover controller (pid 12 on box)`.
pub fn describe(l: &LeaseRecord, now: u64) -> String {
    let label = |k: &str| l.labels.get(k).map_or("?", String::as_str);
    let mut holder = label(HOLDER).splitn(3, '/');
    let (machine, pid) = (holder.next().unwrap_or("?"), holder.next().unwrap_or("?"));
    let since = label(SINCE).parse::<u64>().map_or(String::new(), |s| {
        format!(", for {}s", now.saturating_sub(s))
    });
    format!(
        "`drover {}` (pid {pid} on {machine}{since}; its lease ends in {}s unless renewed)",
        label(COMMAND),
        expires(l).saturating_sub(now)
    )
}

/// Why a lease was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Taking {
    /// Another drover holds it.
    #[error("{0}")]
    Busy(String),
    /// The host failed while it was taken.
    #[error("{0}")]
    Failed(String),
}

/// Takes the lease of one host: the id of the lease object, or why not.
pub async fn take(api: &dyn DockerApi, holder: &Holder) -> Result<String, Taking> {
    let host = api.host().to_string();
    let engine = |e: crate::docker::EngineError| Taking::Failed(e.to_string());
    // Each round either takes the lease, finds a live holder, removes a
    // stale lease, or finds the name taken by a lease not yet readable
    // (Docker reserves the name before the container exists; its first
    // creation can take a while, importing the image).
    for round in 0..20u64 {
        let now = unix_now();
        if let Some(id) = api
            .create_lease(NAME, &holder.labels(now))
            .await
            .map_err(engine)?
        {
            tracing::debug!(host = %host, "lease taken");
            return Ok(id);
        }
        let Some(current) = api.read_lease(NAME).await.map_err(engine)? else {
            // Being made, or released meanwhile.
            tokio::time::sleep(Duration::from_millis(50 * (round + 1).min(6))).await;
            continue;
        };
        if current.labels.get(HOLDER) == Some(&holder.id) {
            return Ok(current.id);
        }
        let gone = holder_is_gone(&current, holder.space.as_deref());
        if expires(&current) > now && !gone {
            return Err(Taking::Busy(format!(
                "host `{host}` is being changed by another drover: {}; nothing was changed",
                describe(&current, now)
            )));
        }
        tracing::warn!(host = %host, holder = %describe(&current, now), "taking over a lease whose holder is gone (it stopped without releasing it)");
        api.remove_lease(&current.id).await.map_err(engine)?;
    }
    Err(Taking::Busy(format!(
        "host `{host}`: the lease changed hands while it was being taken; nothing was changed"
    )))
}

/// Removes the lease object `id` taken with [`take`]; a failure is logged
/// (the lease runs out by itself).
pub async fn release(api: &dyn DockerApi, id: &str) {
    // A host that stopped answering is not waited for.
    match tokio::time::timeout(RELEASE_WAIT, api.remove_lease(id)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(host = %api.host(), error = %e, "could not release the lease; it runs out by itself");
        }
        Err(_) => {
            tracing::warn!(host = %api.host(), "no answer to the release of the lease; it runs out by itself");
        }
    }
}

/// How long giving a lease back may take.
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// The leases this process holds, kept extended until released.
pub struct Leases {
    held: Vec<(Arc<dyn DockerApi>, String)>,
    lost: CancellationToken,
    reasons: Arc<Mutex<Vec<String>>>,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl Leases {
    /// Takes the lease of every connected host, one after another in name
    /// order, so that of two drovers starting together one gets them all. A
    /// host that fails while its lease is taken moves from `conns.engines`
    /// to `conns.unreachable`. When another drover holds a lease, the ones
    /// taken are given back and the reason is returned: nothing may change
    /// anywhere. The token from [`Leases::lost`] is a child of `parent`.
    pub async fn take(
        conns: &mut Connections,
        holder: &Arc<Holder>,
        parent: &CancellationToken,
    ) -> Result<Leases, Taking> {
        let mut leases = Leases {
            held: Vec::new(),
            lost: parent.child_token(),
            reasons: Arc::new(Mutex::new(Vec::new())),
            renewer: None,
        };
        for (name, api) in conns.engines.clone() {
            match take(api.as_ref(), holder).await {
                Ok(id) => leases.held.push((api, id)),
                Err(busy @ Taking::Busy(_)) => {
                    leases.release().await;
                    return Err(busy);
                }
                Err(Taking::Failed(reason)) => {
                    tracing::warn!(host = %name, %reason, "host left alone");
                    conns.engines.remove(&name);
                    conns.unreachable.insert(name, reason);
                }
            }
        }
        if !leases.held.is_empty() {
            leases.renewer = Some(tokio::spawn(renew(
                leases.held.clone(),
                holder.ttl,
                leases.lost.clone(),
                Arc::clone(&leases.reasons),
            )));
        }
        Ok(leases)
    }

    /// Cancelled when the parent is, or when a lease is lost: no step may
    /// start after that.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Why leases were lost, one line per host.
    pub fn lost_reasons(&self) -> Vec<String> {
        self.reasons
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops extending and removes every lease still held.
    pub async fn release(mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        let tasks: Vec<_> = std::mem::take(&mut self.held)
            .into_iter()
            .map(|(api, id)| tokio::spawn(async move { release(api.as_ref(), &id).await }))
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Drop for Leases {
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
    }
}

/// Extends every lease every third of `ttl` until aborted, all hosts at
/// once, each answer awaited a sixth of `ttl` at most (one hung engine
/// delays no other). A lease found gone, or not confirmed extended while
/// another try could still be answered before it ends, is lost: `lost` is
/// cancelled, so no further step starts well before another drover could
/// take it.
async fn renew(
    held: Vec<(Arc<dyn DockerApi>, String)>,
    ttl: Duration,
    lost: CancellationToken,
    reasons: Arc<Mutex<Vec<String>>>,
) {
    use tokio::time::Instant;
    let mut until: Vec<Instant> = vec![Instant::now() + ttl; held.len()];
    let every = (ttl / 3).max(Duration::from_millis(300));
    let wait = (ttl / 6).max(Duration::from_millis(200));
    loop {
        tokio::time::sleep(every).await;
        let sent = Instant::now();
        let next = unix_now() + ttl.as_secs();
        let answers = futures_util::future::join_all(held.iter().map(|(api, id)| async move {
            match tokio::time::timeout(wait, api.renew_lease(id, next)).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {}s", wait.as_secs_f64())),
            }
        }))
        .await;
        let now = Instant::now();
        for (i, ((api, _), answer)) in held.iter().zip(answers).enumerate() {
            let problem = match answer {
                Ok(true) => {
                    until[i] = sent + ttl;
                    None
                }
                Ok(false) => Some(format!(
                    "host `{}`: the lease was taken by another drover; no further step was started",
                    api.host()
                )),
                // No time for another try to be answered before it ends.
                Err(e) if until[i].saturating_duration_since(now) <= every + wait => Some(format!(
                    "host `{}`: the lease could not be extended in time ({e}); no further step was started",
                    api.host()
                )),
                Err(e) => {
                    tracing::warn!(host = %api.host(), error = %e, "could not extend the lease; trying again");
                    None
                }
            };
            if let Some(p) = problem {
                tracing::error!(reason = %p, "lease lost");
                reasons.lock().unwrap_or_else(|p| p.into_inner()).push(p);
                lost.cancel();
                return;
            }
        }
    }
}

/// Takes the leases of the connected hosts and reads every host again under
/// them: what another drover did before the lease was taken is seen.
pub async fn take_and_observe(
    conns: &mut Connections,
    holder: &Arc<Holder>,
    parent: &CancellationToken,
) -> Result<(Leases, Observed), Taking> {
    let leases = Leases::take(conns, holder, parent).await?;
    let observed = observe_all(conns).await;
    Ok((leases, observed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::fake::FakeDocker;
    use crate::observed::ObservedHost;

    fn holder(id: &str) -> Holder {
        Holder {
            id: id.into(),
            command: "reconcile".into(),
            ttl: Duration::from_secs(60),
            space: Some("boot/pid:[1]".into()),
        }
    }

    #[tokio::test]
    async fn a_live_lease_of_a_process_gone_from_this_machine_is_taken_at_once() {
        let me = Holder::new("reconcile");
        let space = me.space.clone().expect("linux has a boot id");
        let mine = std::process::id();
        let (started, _) = start_of(mine).unwrap();
        let held = |process: String| async move {
            let host = FakeDocker::new("a", ObservedHost::default());
            let mut labels = holder("m/1/x").labels(unix_now());
            labels.insert(PROCESS.into(), process);
            let old = host.create_lease(NAME, &labels).await.unwrap().unwrap();
            let taken = take(&host, &Holder::new("reconcile")).await;
            taken.map_or(true, |id| id == old)
        };
        // A pid above the kernel's limit never runs.
        assert!(!held(format!("{space}/4194305/1")).await);
        // This pid, started at another time: the pid was reused.
        assert!(!held(format!("{space}/{mine}/{}", started + 1)).await);
        // A live process holds, whatever its binary is called: pid 1 is
        // no drover, and this test binary is not named plain `drover`.
        let (init, _) = start_of(1).unwrap();
        assert!(held(format!("{space}/1/{init}")).await);
        assert!(held(format!("{space}/{mine}/{started}")).await);
        // Elsewhere (another boot or pid namespace), or an older label
        // without a start time: only time tells.
        assert!(held("other-boot/pid:[1]/4194305/1".into()).await);
        assert!(held(format!("{space}/4194305")).await);
    }

    #[test]
    fn a_proc_mounted_with_hidepid_is_never_read_as_absence() {
        let plain = "22 28 0:20 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n";
        let hidden = "22 28 0:20 / /proc rw,nosuid shared:12 - proc proc rw,hidepid=invisible\n";
        let off = "22 28 0:20 / /proc rw shared:12 - proc proc rw,hidepid=0\n";
        assert!(!proc_hides_processes(plain));
        assert!(proc_hides_processes(hidden));
        assert!(!proc_hides_processes(off));
    }

    #[tokio::test(start_paused = true)]
    async fn one_hung_engine_delays_no_other_renewal_and_stops_further_steps_in_time() {
        let a = Arc::new(FakeDocker::new("a", ObservedHost::default()));
        let b = Arc::new(FakeDocker::new("b", ObservedHost::default()));
        let mut conns = Connections::default();
        conns.engines.insert("a".into(), a.clone());
        conns.engines.insert("b".into(), b.clone());
        let me = Arc::new(Holder {
            ttl: Duration::from_secs(60),
            ..holder("m/1/x")
        });
        let leases = Leases::take(&mut conns, &me, &CancellationToken::new())
            .await
            .unwrap();
        a.hang_renewals();
        let start = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(60), leases.lost().cancelled())
            .await
            .expect("the loss is noticed before the lease ends");
        let after = start.elapsed();
        assert!(after < Duration::from_secs(55), "{after:?}");
        assert!(leases.lost_reasons()[0].contains("host `a`"));
        // node b was extended meanwhile, not held up behind a.
        let renewed = b.read_lease(NAME).await.unwrap().unwrap().renewed_until;
        assert!(renewed.is_some(), "b was renewed");
    }

    #[tokio::test]
    async fn the_first_taker_holds_and_the_second_is_told_who() {
        let host = FakeDocker::new("a", ObservedHost::default());
        let id = take(&host, &holder("m/1/x")).await.unwrap();
        let err = take(&host, &holder("m/2/y")).await.unwrap_err().to_string();
        assert!(
            err.contains("host `a` is being changed by another drover"),
            "{err}"
        );
        assert!(err.contains("`drover reconcile` (pid 1 on m"), "{err}");
        // The holder itself takes it again without waiting.
        assert_eq!(take(&host, &holder("m/1/x")).await.unwrap(), id);
    }

    #[tokio::test]
    async fn a_lease_that_ran_out_is_removed_by_id_and_taken() {
        let host = FakeDocker::new("a", ObservedHost::default());
        let mut stale = holder("m/1/x").labels(unix_now() - 100);
        stale.insert(EXPIRES.into(), (unix_now() - 40).to_string());
        let old = host.create_lease(NAME, &stale).await.unwrap().unwrap();
        let id = take(&host, &holder("m/2/y")).await.unwrap();
        assert_ne!(id, old);
        assert!(host.calls().contains(&format!("lease remove {old}")));
    }

    #[tokio::test]
    async fn a_renewed_lease_is_live_past_its_first_end() {
        let host = FakeDocker::new("a", ObservedHost::default());
        let mut labels = holder("m/1/x").labels(unix_now() - 100);
        labels.insert(EXPIRES.into(), (unix_now() - 40).to_string());
        let id = host.create_lease(NAME, &labels).await.unwrap().unwrap();
        host.renew_lease(&id, unix_now() + 30).await.unwrap();
        assert!(take(&host, &holder("m/2/y")).await.is_err());
    }

    #[tokio::test]
    async fn one_busy_host_gives_back_every_lease_taken_and_names_its_holder() {
        let a = Arc::new(FakeDocker::new("a", ObservedHost::default()));
        let b = Arc::new(FakeDocker::new("b", ObservedHost::default()));
        take(b.as_ref(), &holder("other/9/z")).await.unwrap();
        let mut conns = Connections::default();
        conns.engines.insert("a".into(), a.clone());
        conns.engines.insert("b".into(), b.clone());
        let me = Arc::new(holder("m/1/x"));
        let err = Leases::take(&mut conns, &me, &CancellationToken::new())
            .await
            .err()
            .unwrap();
        assert!(matches!(err, Taking::Busy(_)), "{err}");
        let err = err.to_string();
        assert!(
            err.contains("host `b`") && err.contains("pid 9 on other"),
            "{err}"
        );
        assert!(a.read_lease(NAME).await.unwrap().is_none(), "given back");
        assert!(
            b.read_lease(NAME).await.unwrap().is_some(),
            "another's lease is kept"
        );
    }

    #[tokio::test]
    async fn leases_are_held_until_released_and_a_failing_host_is_left_out() {
        let a = Arc::new(FakeDocker::new("a", ObservedHost::default()));
        let b = Arc::new(FakeDocker::new("b", ObservedHost::default()));
        b.fail("lease create drover-lease");
        let mut conns = Connections::default();
        conns.engines.insert("a".into(), a.clone());
        conns.engines.insert("b".into(), b.clone());
        let me = Arc::new(holder("m/1/x"));
        let leases = Leases::take(&mut conns, &me, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(conns.engines.keys().collect::<Vec<_>>(), ["a"]);
        assert!(conns.unreachable["b"].contains("scripted failure"));
        assert!(a.read_lease(NAME).await.unwrap().is_some());
        leases.release().await;
        assert!(a.read_lease(NAME).await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_taken_away_stops_further_steps() {
        let a = Arc::new(FakeDocker::new("a", ObservedHost::default()));
        let mut conns = Connections::default();
        conns.engines.insert("a".into(), a.clone());
        let me = Arc::new(Holder {
            ttl: Duration::from_secs(3),
            ..holder("m/1/x")
        });
        let leases = Leases::take(&mut conns, &me, &CancellationToken::new())
            .await
            .unwrap();
        let id = a.read_lease(NAME).await.unwrap().unwrap().id;
        a.remove_lease(&id).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), leases.lost().cancelled())
            .await
            .expect("the loss is noticed");
        assert!(leases.lost_reasons()[0].contains("taken by another drover"));
    }
}
