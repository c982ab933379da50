//! Two drovers at once: the host lease keeps them from acting on the same
//! hosts, and a lease left by a killed drover runs out. Real engines; see
//! `support` for the test hosts.

mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A stack that takes a few seconds to apply: `db` is healthy only after
/// 3 s and `api` waits for it.
fn slow_stack(f: &Fixture, name: &str) {
    f.write(
        "stack.yaml",
        &format!("kind: Stack\nname: {name}\napps:\n{}", slow_apps("api")),
    );
}

fn spawn(f: &Fixture, env: &[(&str, &str)]) -> Child {
    let mut c = f.command(&["reconcile"]);
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(c: Child) -> (Option<i32>, String, String) {
    let o = c.wait_with_output().unwrap();
    let (out, err) = (stdout(&o), stderr(&o));
    eprintln!("--- exit {:?}\n{out}{err}", o.status.code());
    (o.status.code(), out, err)
}

fn lease_holder(h: &TestHost) -> Option<String> {
    inspect(
        h,
        "drover-lease",
        "{{index .Config.Labels \"drover.lease.holder\"}}",
    )
}

fn creates(f: &Fixture, since: &str, stack: &str) -> Vec<String> {
    let until = now();
    f.hosts
        .iter()
        .flat_map(|h| writes(&events(h, since, &until), stack))
        .filter(|w| w.starts_with("container create"))
        .collect()
}

#[test]
fn two_reconciles_started_together_never_both_act_and_the_loser_names_the_winner() {
    let Some((_guard, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["lease-race"]);
    slow_stack(&f, "lease-race");
    let since = now();
    let (a, b) = (spawn(&f, &[]), spawn(&f, &[]));
    let (pa, pb) = (a.id(), b.id());
    let results = [finish(a), finish(b)];

    // Exactly one applied the plan; the other changed nothing and said who
    // was at work (or, had it come after, found nothing to do).
    let applied: Vec<_> = results
        .iter()
        .filter(|(_, out, _)| out.contains("Applied:"))
        .collect();
    assert_eq!(applied.len(), 1, "one reconcile applies");
    assert_eq!(applied[0].0, Some(0));
    let winner = if results[0].1.contains("Applied:") {
        pa
    } else {
        pb
    };
    for (code, out, err) in &results {
        if out.contains("Applied:") {
            continue;
        }
        assert_eq!(*code, Some(1), "the other one fails");
        assert!(
            err.contains("is being changed by another drover: `drover reconcile` (pid ")
                && err.contains(&format!("(pid {winner} on ")),
            "the other names the winner: {err}"
        );
        assert!(err.contains("nothing was changed"), "{err}");
    }
    // Each container was made once, and no lease is left.
    let mut made = creates(&f, &since, "lease-race");
    made.sort();
    assert_eq!(
        made,
        [
            "container create lease-race-api",
            "container create lease-race-db"
        ]
    );
    for h in &f.hosts {
        assert_eq!(lease_holder(h), None, "the lease on {} is released", h.name);
    }
}

#[test]
fn a_lease_left_by_a_dead_drover_is_taken_over_at_once_here_and_after_it_runs_out_elsewhere() {
    let Some((_guard, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["lease-stale"]);
    slow_stack(&f, "lease-stale");
    let mut a = spawn(&f, &[]);
    let pid = a.id();
    wait_until(
        Duration::from_secs(20),
        "the first reconcile to hold node-b",
        || lease_holder(&f.hosts[1]).is_some(),
    );
    // Killed while it holds both leases: nothing releases them. Its process
    // is gone from this machine, so the next reconcile takes over at once.
    a.kill().unwrap();
    a.wait().unwrap();
    assert!(lease_holder(&f.hosts[0]).is_some_and(|h| h.contains(&format!("/{pid}/"))));
    let o = f.drover(&["reconcile"]);
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("taking over a lease whose holder is gone"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        inspect(&f.hosts[1], "lease-stale-api", "{{.State.Running}}").as_deref(),
        Some("true")
    );

    // A drover on another machine died holding node-a's lease: only its
    // end frees it. Until then nothing changes, and the holder is named.
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 4;
    let made = docker(
        &f.hosts[0],
        &[
            "create",
            "--name",
            "drover-lease",
            "--label",
            "drover.internal=true",
            "--label",
            "drover.lease.holder=elsewhere/4242/0badc0de",
            "--label",
            "drover.lease.command=controller",
            "--label",
            &format!("drover.lease.expires={expires}"),
            "--label",
            "drover.lease.process=other-boot/pid:[1]/4242",
            "drover-lease:1",
            "/lease",
        ],
    );
    assert!(made.status.success(), "{}", stderr(&made));
    docker(&f.hosts[1], &["stop", "lease-stale-api"]);
    let o = f.drover(&["reconcile"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("host `node-a` is being changed by another drover: `drover controller` (pid 4242 on elsewhere"),
        "{err}"
    );
    assert_eq!(
        inspect(&f.hosts[1], "lease-stale-api", "{{.State.Running}}").as_deref(),
        Some("false"),
        "nothing changed on node-b either"
    );
    let start = Instant::now();
    loop {
        let o = f.drover(&["reconcile"]);
        if o.status.success() {
            assert!(stderr(&o).contains("taking over a lease"), "{}", stderr(&o));
            break;
        }
        assert!(stderr(&o).contains("being changed by another drover"));
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the stale lease never ran out"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        inspect(&f.hosts[1], "lease-stale-api", "{{.State.Running}}").as_deref(),
        Some("true")
    );
    for h in &f.hosts {
        assert_eq!(lease_holder(h), None);
    }
}

#[test]
fn a_reconcile_during_a_controller_pass_changes_nothing_and_names_the_controller() {
    let Some((_guard, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["lease-ctl"]);
    slow_stack(&f, "lease-ctl");
    let ctl = f.controller(&["--resync", "300s"], &[]);
    wait_until(
        Duration::from_secs(20),
        "the controller to take the leases",
        || lease_holder(&f.hosts[0]).is_some(),
    );
    // A dry run meanwhile plans, and says the plan may soon be stale.
    let o = f.drover(&["reconcile", "--dry-run", "--output", "json"]);
    assert!(o.status.success());
    let plan: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(
        plan["warnings"].as_array().unwrap().iter().any(|w| w
            .as_str()
            .unwrap()
            .contains("host `node-a` is being changed by another drover")),
        "{plan}"
    );
    let o = f.drover(&["reconcile"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("being changed by another drover: `drover controller` (pid ")
            && err.contains(&format!("(pid {} on ", ctl.child.id())),
        "{err}"
    );
    wait_until(
        Duration::from_secs(30),
        "the controller to converge",
        || ctl.health().0 == 200,
    );
    for h in &f.hosts {
        assert_eq!(lease_holder(h), None, "released after the pass");
    }
    let o = f.drover(&["reconcile"]);
    assert!(o.status.success());
    assert!(!stdout(&o).contains("Applied:"), "nothing left to do");
}
