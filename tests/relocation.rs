//! Volume relocation end to end, against two real engines: each guarantee
//! of `relocation.md` (no loss, never two writers, the old copy kept, short
//! downtime, crash-safe and resumable, Docker API only) has a test here.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;

/// One app `app` writing a counter to `/data/log` every 20 ms, with the
/// volume `data`, on `host`.
fn writer_stack(name: &str, host: &str, extra: &str) -> String {
    format!(
        "kind: Stack
name: {name}
volumes:
  data: {{}}
apps:
  app:
    image: {IMAGE}
    host: {host}
    pull: never
    command: ['sh', '-c', 'trap \"exit 0\" TERM; i=0; while :; do i=$$((i+1)); echo $$i >> /data/log; sleep 0.02; done']
    volumes: ['data:/data']
    stop_grace_period: 2s
{extra}"
    )
}

/// Where the app's container runs: the indexes of the hosts.
fn running_on(f: &Fixture, container: &str) -> Vec<usize> {
    (0..f.hosts.len())
        .filter(|i| running(&f.hosts[*i], container))
        .collect()
}

/// The periods a container ran on each host, from both engines' events,
/// never overlapping: returns the downtimes (ms) between a stop on one host
/// and the start on the other.
fn assert_one_writer(f: &Fixture, container: &str, since: &str) -> Vec<f64> {
    let until = now();
    let mut evs: Vec<(i64, usize, String)> = Vec::new();
    for (i, h) in f.hosts.iter().enumerate() {
        for (t, typ, action, name) in events(h, since, &until) {
            if typ == "container" && name == container && (action == "start" || action == "die") {
                evs.push((t, i, action));
            }
        }
    }
    evs.sort();
    let mut up: Vec<bool> = vec![false; f.hosts.len()];
    let mut last_die: Option<(i64, usize)> = None;
    let mut downtimes = Vec::new();
    for (t, i, action) in &evs {
        if action == "start" {
            up[*i] = true;
            assert!(
                up.iter().filter(|u| **u).count() <= 1,
                "`{container}` ran on two hosts at once: {evs:?}"
            );
            if let Some((d, j)) = last_die {
                if j != *i {
                    downtimes.push((t - d) as f64 / 1e6);
                }
            }
        } else {
            up[*i] = false;
            last_die = Some((*t, *i));
        }
    }
    downtimes
}

fn set_host(f: &Fixture, name: &str, host: &str, extra: &str) {
    f.write("stack.yaml", &writer_stack(name, host, extra));
}

/// Checks after a move to `to`: the app runs there alone, a second run has
/// nothing to do, the file written before the stop is a prefix of the
/// current one, and the fixed data is unchanged.
fn assert_moved(f: &Fixture, name: &str, to: usize, fixed_md5: &str) {
    let app = format!("{name}-app");
    let vol = format!("{name}-data");
    assert_eq!(
        running_on(f, &app),
        vec![to],
        "`{app}` must run on one host"
    );
    let again = f.drover(&["reconcile", "--dry-run", "--detailed-exitcode"]);
    assert_eq!(again.status.code(), Some(0), "nothing left to do");
    let h = &f.hosts[to];
    assert_eq!(in_volume(h, &vol, "md5sum < /d/fixed"), fixed_md5);
    let from = 1 - to;
    // The copy kept on the other host holds the log as it was at the stop.
    let kept = in_volume(&f.hosts[from], &vol, "wc -c < /d/log");
    let now = in_volume(h, &vol, &format!("head -c {kept} /d/log | md5sum"));
    let old = in_volume(&f.hosts[from], &vol, "md5sum < /d/log");
    assert_eq!(
        now, old,
        "every write made before the stop is on the target"
    );
}

fn setup_writer(f: &Fixture, name: &str, megabytes: u32) -> String {
    set_host(f, name, "node-a", "");
    f.reconcile();
    let a = &f.hosts[0];
    let o = docker(
        a,
        &[
            "exec",
            &format!("{name}-app"),
            "sh",
            "-c",
            &format!("dd if=/dev/urandom of=/data/fixed bs=1M count={megabytes} 2>/dev/null; md5sum < /data/fixed"),
        ],
    );
    assert!(o.status.success());
    text(&o)
}

/// A turn on the hosts and a fixture running the writer stack `name` on
/// node-a with `megabytes` of fixed data; `None` without test hosts. Returns
/// the fixed data's md5 too.
fn writer_fixture(
    name: &str,
    megabytes: u32,
) -> Option<(std::sync::MutexGuard<'static, ()>, Fixture, String)> {
    let (turn, hosts) = hosts()?;
    let f = Fixture::new(hosts, &[name]);
    let fixed = setup_writer(&f, name, megabytes);
    Some((turn, f, fixed))
}

#[test]
fn a_volume_of_mixed_files_moves_exactly_and_the_old_copy_is_kept() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let name = "e2e-mix";
    let f = Fixture::new(hosts, &[name]);
    let stack = |host: &str| {
        format!(
            "kind: Stack
name: {name}
volumes:
  data: {{}}
apps:
  keeper:
    image: {IMAGE}
    host: {host}
    pull: never
    command: ['sh', '-c', 'trap \"exit 0\" TERM; while :; do sleep 1; done']
    volumes: ['data:/data']
    ports: ['18210:8080']
    stop_grace_period: 1s
  peer:
    image: {IMAGE}
    host: node-b
    pull: never
    depends_on: [keeper]
    links: [keeper]
    command: ['sh', '-c', 'trap \"exit 0\" TERM; while :; do sleep 1; done']
    stop_grace_period: 1s
"
        )
    };
    f.write("stack.yaml", &stack("node-a"));
    f.reconcile();
    let fill = r#"set -e
cd /data
mkdir -p a/b/c 'dir with space' deep/1/2/3/4/5/6/7/8
i=1; while [ $i -le 40 ]; do dd if=/dev/urandom of=a/f$i bs=1k count=$((i*i)) 2>/dev/null; i=$((i+1)); done
dd if=/dev/urandom of=a/b/c/big bs=1M count=6 2>/dev/null
: > empty
printf x > 'dir with space/ünïcödé ✓'
printf y > "$(printf 'odd\377name')"
printf z > ./-dash; printf q > 'back\slash'; printf w > deep/1/2/3/4/5/6/7/8/leaf
ln -s a/f1 link; ln -s /nonexistent dangling; ln -s ../.. a/up
chmod 600 a/f2; chmod 4755 a/f3; chmod 1777 a/b; chmod 750 /data; chmod 0 a/f5
chown 1234:5678 a/f4; chown -h 42:43 link; chown 7:8 'dir with space'
"#;
    let o = docker(
        &f.hosts[0],
        &["exec", &format!("{name}-keeper"), "sh", "-c", fill],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let vol = format!("{name}-data");
    let before = listing(&f.hosts[0], &vol);
    assert!(before.lines().count() > 50, "{before}");

    let env = |f: &Fixture| {
        inspect(&f.hosts[1], &format!("{name}-peer"), "{{json .Config.Env}}").unwrap()
    };
    assert!(env(&f).contains("KEEPER_HOST=10.77.0.11"), "{}", env(&f));
    let since = now();
    f.write("stack.yaml", &stack("node-b"));
    let plan = stdout(&f.drover(&["reconcile", "--dry-run"]));
    assert!(
        plan.contains(&format!("relocate volume    {vol}")),
        "{plan}"
    );
    assert!(plan.contains("node-a → node-b"), "{plan}");
    // Every byte through the Docker API (the other tests take the direct path).
    let moved = f.drover(&["reconcile", "--copy-via", "api"]);
    assert!(moved.status.success());
    let out = stdout(&moved);
    assert!(
        out.contains(&format!("done    relocate volume    {vol} on node-b")),
        "{out}"
    );

    assert_eq!(listing(&f.hosts[1], &vol), before, "the copy differs");
    // The app that links to the moved one has its new address, and was
    // started only after the moved app started on its new host.
    assert!(env(&f).contains("\"KEEPER_HOST=keeper\""), "{}", env(&f));
    let evs = events(&f.hosts[1], &since, &now());
    let start = |c: &str| {
        evs.iter()
            .filter(|(_, t, a, n)| t == "container" && a == "start" && n == c)
            .map(|(t, ..)| *t)
            .next_back()
            .unwrap_or_else(|| panic!("no start of {c}: {evs:?}"))
    };
    assert!(start("e2e-mix-keeper") < start("e2e-mix-peer"));
    assert_eq!(
        listing(&f.hosts[0], &vol),
        before,
        "the old copy was changed"
    );
    assert_eq!(running_on(&f, &format!("{name}-keeper")), vec![1]);
    let ls = stdout(&f.drover(&["volume", "ls"]));
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&vol) && l.contains("node-a") && l.contains("retained")),
        "{ls}"
    );
    // No helper is left behind, and only one record per copy (a volume).
    let records = |h: &TestHost| {
        let filter = format!("label=drover.copy-of={vol}");
        text(&docker(h, &["volume", "ls", "-q", "--filter", &filter]))
    };
    for h in &f.hosts {
        let names = text(&docker(h, &["ps", "-a", "--format", "{{.Names}}"]));
        assert!(!names.contains("drover-move-"), "{names}");
        assert!(!names.contains("drover-copy-"), "{names}");
        assert_eq!(records(h).lines().count(), 1, "{}", records(h));
    }
    // The size verified by the move is known from then on.
    f.write("stack.yaml", &stack("node-a"));
    let back = stdout(&f.drover(&["reconcile", "--dry-run"]));
    assert!(
        back.contains("node-b → node-a (") && !back.contains("size unknown"),
        "{back}"
    );
    f.write("stack.yaml", &stack("node-b"));
    // Only an explicit command deletes the old copy, and never the current one.
    let current = f.drover(&["volume", "rm", "--host", "node-b", &vol, "--yes"]);
    assert_eq!(current.status.code(), Some(1));
    let old = f.drover(&["volume", "rm", "--host", "node-a", &vol, "--yes"]);
    assert!(old.status.success(), "{}", stderr(&old));
    assert_eq!(records(&f.hosts[0]), "", "the records go with the copy");
    let plan = f.drover(&["reconcile", "--dry-run", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(0));
}

#[test]
fn writes_during_the_copy_arrive_and_the_app_never_runs_twice_and_moving_back_reads_and_sends_only_the_change(
) {
    let name = "e2e-wr";
    let Some((_turn, f, fixed)) = writer_fixture(name, 120) else {
        return;
    };
    let vol = format!("{name}-data");
    let app = format!("{name}-app");
    let since = now();
    let lines_at_start: u64 = in_volume(&f.hosts[0], &vol, "wc -l < /d/log")
        .parse()
        .unwrap();

    set_host(&f, name, "node-b", "");
    // Slow enough that the writer goes on during the bulk copy.
    let out = f.drover_with(&["reconcile"], &[("DROVER_TEST_THROTTLE", "100000000")]);
    assert!(out.status.success());
    assert!(
        !stderr(&out).contains("direct path between the helpers failed"),
        "the hosts reach each other: the direct path must work"
    );
    assert_moved(&f, name, 1, &fixed);
    let lines_at_stop: u64 = in_volume(&f.hosts[0], &vol, "wc -l < /d/log")
        .parse()
        .unwrap();
    assert!(
        lines_at_stop > lines_at_start + 10,
        "the app kept writing during the copy ({lines_at_start} → {lines_at_stop} lines)"
    );

    // Back to node-a, where the retained copy is: only the change travels.
    std::thread::sleep(Duration::from_millis(500));
    set_host(&f, name, "node-a", "");
    let back = f.drover_with(
        &["reconcile", "--log-format", "json"],
        &[("DROVER_LOG", "drover=debug")],
    );
    assert!(back.status.success());
    let logged: Vec<serde_json::Value> = stderr(&back)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect();
    let sent: u64 = logged
        .iter()
        .filter(|v| v["fields"]["message"] == "relocation progress")
        .filter_map(|v| v["fields"]["total"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(
        sent < 2 << 20,
        "moving back onto the retained copy sent {sent} bytes, more than what changed"
    );
    // The new helper on node-b took over the record the unpack there kept:
    // it read only what the app changed, not the 120 MiB it had written.
    let read: Vec<u64> = logged
        .iter()
        .filter(|v| v["fields"]["message"] == "scanned both sides")
        .filter_map(|v| v["fields"]["read_src"].as_u64())
        .collect();
    assert!(!read.is_empty(), "no pass was logged");
    assert!(
        read.iter().all(|r| *r < 16 << 20),
        "moving back read {read:?} bytes on the source, more than what changed"
    );
    for h in &f.hosts {
        let labels = inspect(h, "drover-hash-records", "{{json .Labels}}").unwrap_or_default();
        assert!(labels.contains("\"drover.internal\":\"true\""), "{labels}");
    }
    assert_moved(&f, name, 0, &fixed);
    let downtimes = assert_one_writer(&f, &app, &since);
    assert_eq!(downtimes.len(), 2, "{downtimes:?}");
    eprintln!("downtime (stop on one host → start on the other): {downtimes:?} ms");
}

#[test]
fn killed_at_every_phase_a_rerun_finishes_the_move_with_one_writer() {
    let name = "e2e-kill";
    let Some((_turn, f, fixed)) = writer_fixture(name, 8) else {
        return;
    };
    let app = format!("{name}-app");
    let since = now();
    let phases = [
        "prepare", "copy", "stop", "delta", "verify", "switch", "start", "wait", "commit", "retire",
    ];
    let mut at = 0;
    for phase in phases {
        let to = 1 - at;
        set_host(&f, name, &f.hosts[to].name.clone(), "");
        let killed = f.drover_with(&["reconcile"], &[("DROVER_TEST_ABORT_AT", phase)]);
        assert_eq!(killed.status.code(), None, "drover must die at `{phase}`");
        assert!(
            running_on(&f, &app).len() <= 1,
            "two writers after a kill at `{phase}`"
        );
        let rerun = f.drover(&["reconcile"]);
        assert!(
            rerun.status.success(),
            "the rerun after a kill at `{phase}` failed"
        );
        assert_moved(&f, name, to, &fixed);
        at = to;
    }
    // And at random moments.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("random kills, seed {seed}");
    let mut x = seed | 1;
    for _ in 0..3 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = Duration::from_millis(300 + x % 2500);
        let to = 1 - at;
        set_host(&f, name, &f.hosts[to].name.clone(), "");
        let mut child = f
            .command(&["reconcile"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        eprintln!("killed after {delay:?}");
        let rerun = f.drover(&["reconcile"]);
        assert!(
            rerun.status.success(),
            "the rerun after a kill at {delay:?} failed"
        );
        assert_moved(&f, name, to, &fixed);
        at = to;
    }
    assert_one_writer(&f, &app, &since);
}

#[test]
fn a_copy_that_does_not_verify_is_rolled_back_and_the_app_runs_on_its_source() {
    let name = "e2e-bad";
    let Some((_turn, f, fixed)) = writer_fixture(name, 2) else {
        return;
    };
    let app = format!("{name}-app");
    set_host(&f, name, "node-b", "");
    let o = f.drover_with(&["reconcile"], &[("DROVER_TEST_DAMAGE_COPY", "fixed")]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("does not match the source"), "{out}");
    assert!(out.contains("`fixed` is missing from the copy"), "{out}");
    assert_eq!(running_on(&f, &app), vec![0], "back on its source");
    let vol = format!("{name}-data");
    assert_eq!(in_volume(&f.hosts[0], &vol, "md5sum < /d/fixed"), fixed);
    // The unfinished copy is kept, named, and never taken as current.
    let ls = stdout(&f.drover(&["volume", "ls"]));
    assert!(ls.contains("unfinished copy"), "{ls}");
    f.reconcile();
    assert_moved(&f, name, 1, &fixed);
}

#[test]
fn an_app_that_is_not_healthy_on_the_target_is_rolled_back() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let name = "e2e-sick";
    let mut f = Fixture::new(hosts, &[name]);
    // The same image name, but on node-b it carries /poison: the app's
    // healthcheck fails there only.
    let image = "e2e-sick/busybox:1";
    docker(&f.hosts[0], &["tag", IMAGE, image]);
    let b = &f.hosts[1];
    docker(b, &["rm", "-f", "e2e-sick-build"]);
    docker(
        b,
        &["run", "--name", "e2e-sick-build", IMAGE, "touch", "/poison"],
    );
    docker(b, &["commit", "e2e-sick-build", image]);
    f.extra_containers.push((1, "e2e-sick-build".into()));
    let stack = |host: &str| {
        format!(
            "kind: Stack
name: {name}
volumes:
  data: {{}}
apps:
  app:
    image: {image}
    host: {host}
    pull: never
    command: ['sh', '-c', 'trap \"exit 0\" TERM; echo hi > /data/hello; while :; do sleep 1; done']
    volumes: ['data:/data']
    healthcheck: {{ test: ['CMD', 'sh', '-c', 'test ! -f /poison'], interval: 1s, retries: 2 }}
    stop_grace_period: 1s
"
        )
    };
    f.write("stack.yaml", &stack("node-a"));
    f.reconcile();
    f.write("stack.yaml", &stack("node-b"));
    let o = f.drover(&["reconcile", "--dependency-timeout", "30"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains("did not become ready on `node-b` (it is running, unhealthy"),
        "{out}"
    );
    assert!(out.contains("runs on `node-a` again"), "{out}");
    let app = format!("{name}-app");
    assert_eq!(running_on(&f, &app), vec![0]);
    assert!(
        inspect(&f.hosts[1], &app, "{{.Id}}").is_none(),
        "removed from node-b"
    );
    // node-a's copy is still the current one.
    let plan = stdout(&f.drover(&["reconcile", "--dry-run"]));
    assert!(plan.contains("node-a → node-b"), "{plan}");
    docker(&f.hosts[0], &["rmi", image]);
    docker(&f.hosts[1], &["rm", "-f", "e2e-sick-build"]);
    docker(&f.hosts[1], &["rmi", image]);
}

#[test]
fn the_target_engine_stopping_mid_copy_leaves_the_app_on_its_source_until_it_is_back() {
    let name = "e2e-down";
    let Some((_turn, f, fixed)) = writer_fixture(name, 64) else {
        return;
    };
    let app = format!("{name}-app");
    set_host(&f, name, "node-b", "");
    let mut child = f
        .command(&["reconcile", "--log-format", "json"])
        .env("DROVER_LOG", "drover=info")
        .env("DROVER_TEST_THROTTLE", "8000000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = BufReader::new(child.stderr.take().unwrap());
    let started = Instant::now();
    let mut stopped = false;
    for line in err.lines().map_while(Result::ok) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        let f = &v["fields"];
        if !stopped && f["phase"] == "copy" && f["done"].as_u64().unwrap_or(0) > 0 {
            eprintln!("stopping node-b {:?} into the move", started.elapsed());
            host_script("stop", "node-b");
            stopped = true;
        }
    }
    let status = child.wait().unwrap();
    let restart = || {
        host_script("start", "node-b");
    };
    if !stopped {
        restart();
        panic!("the copy never reported progress");
    }
    let out = String::from_utf8_lossy(
        &std::io::Read::bytes(child.stdout.take().unwrap())
            .map_while(Result::ok)
            .collect::<Vec<u8>>(),
    )
    .into_owned();
    let on_a = running(&f.hosts[0], &app);
    restart();
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        on_a,
        "the app must run on node-a while node-b is down: {out}"
    );
    let vol = format!("{name}-data");
    assert_eq!(in_volume(&f.hosts[0], &vol, "md5sum < /d/fixed"), fixed);
    // node-b is back: the next reconcile completes the move.
    f.reconcile();
    assert_moved(&f, name, 1, &fixed);

    // drover dies with the app stopped, then the target goes down: the
    // next reconcile runs the app on its source again, and moves it once
    // the target is back.
    set_host(&f, name, "node-a", "");
    let killed = f.drover_with(&["reconcile"], &[("DROVER_TEST_ABORT_AT", "delta")]);
    assert_eq!(killed.status.code(), None);
    assert!(
        running_on(&f, &app).is_empty(),
        "stopped for the final copy"
    );
    host_script("stop", "node-a");
    let during = f.drover(&["reconcile"]);
    let on_b = running(&f.hosts[1], &app);
    host_script("start", "node-a");
    assert_eq!(during.status.code(), Some(1));
    assert!(
        stdout(&during).contains("it runs here until it can move to `node-a`"),
        "{}",
        stdout(&during)
    );
    assert!(on_b, "the app must run on node-b while node-a is down");
    f.reconcile();
    assert_moved(&f, name, 0, &fixed);
}

#[test]
fn when_the_hosts_cannot_reach_each_other_the_data_goes_through_the_api() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let name = "e2e-api";
    let f = Fixture::new(hosts, &[name]);
    // node-b's address leads nowhere: its helper cannot be reached.
    let cluster = format!(
        "kind: Cluster\nhosts:\n  node-a: {{ endpoint: '{}', address: '{}' }}\n  node-b: {{ endpoint: '{}', address: '10.77.0.99' }}\n",
        f.hosts[0].endpoint, f.hosts[0].address, f.hosts[1].endpoint
    );
    f.write("cluster.yaml", &cluster);
    let fixed = setup_writer(&f, name, 4);
    set_host(&f, name, "node-b", "");
    let o = f.drover(&["reconcile"]);
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("the direct path between the helpers failed"),
        "{}",
        stderr(&o)
    );
    assert_moved(&f, name, 1, &fixed);
}

#[test]
fn an_app_with_two_volumes_moves_with_both_and_a_kill_after_the_switch_finishes_forward() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let name = "e2e-two";
    let f = Fixture::new(hosts, &[name]);
    let stack = |host: &str| {
        format!(
            "kind: Stack
name: {name}
volumes:
  data: {{}}
  logs: {{}}
apps:
  app:
    image: {IMAGE}
    host: {host}
    pull: never
    command: ['sh', '-c', 'trap \"exit 0\" TERM; i=0; while :; do i=$$((i+1)); echo $$i >> /data/log; echo $$i >> /logs/log; sleep 0.02; done']
    volumes: ['data:/data', 'logs:/logs']
    stop_grace_period: 2s
  tail:
    image: {IMAGE}
    host: {host}
    pull: never
    command: ['sh', '-c', 'trap \"exit 0\" TERM; while :; do sleep 1; done']
    volumes: ['logs:/logs:ro']
    stop_grace_period: 1s
"
        )
    };
    f.write("stack.yaml", &stack("node-a"));
    f.reconcile();
    let app = format!("{name}-app");
    let o = docker(
        &f.hosts[0],
        &["exec", &app, "sh", "-c", "dd if=/dev/urandom of=/data/fixed bs=1M count=3 2>/dev/null; dd if=/dev/urandom of=/logs/fixed bs=1M count=2 2>/dev/null"],
    );
    assert!(o.status.success());
    let sums = |h: &TestHost| {
        ["data", "logs"].map(|v| in_volume(h, &format!("{name}-{v}"), "md5sum < /d/fixed"))
    };
    let fixed = sums(&f.hosts[0]);
    let since = now();

    f.write("stack.yaml", &stack("node-b"));
    let plan = stdout(&f.drover(&["reconcile", "--dry-run"]));
    assert!(
        plan.contains(&format!("relocate volume    {name}-data")),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("relocate volume    {name}-logs")),
        "{plan}"
    );
    f.reconcile();
    assert_eq!(running_on(&f, &app), vec![1]);
    // The app that mounts only one of the volumes moves with them.
    assert_eq!(running_on(&f, &format!("{name}-tail")), vec![1]);
    assert_eq!(sums(&f.hosts[1]), fixed);

    // Back, killed once both switches are recorded: the rerun finishes.
    f.write("stack.yaml", &stack("node-a"));
    let killed = f.drover_with(&["reconcile"], &[("DROVER_TEST_ABORT_AT", "start")]);
    assert_eq!(killed.status.code(), None);
    let rerun = f.drover(&["reconcile"]);
    assert!(rerun.status.success());
    assert!(
        stdout(&rerun).contains("interrupted after the switch"),
        "{}",
        stdout(&rerun)
    );
    assert_eq!(running_on(&f, &app), vec![0]);
    assert_eq!(running_on(&f, &format!("{name}-tail")), vec![0]);
    assert_eq!(sums(&f.hosts[0]), fixed);
    for v in ["data", "logs"] {
        let vol = format!("{name}-{v}");
        let kept = in_volume(&f.hosts[1], &vol, "wc -c < /d/log");
        let now = in_volume(
            &f.hosts[0],
            &vol,
            &format!("head -c {kept} /d/log | md5sum"),
        );
        assert_eq!(
            now,
            in_volume(&f.hosts[1], &vol, "md5sum < /d/log"),
            "{vol}"
        );
    }
    let again = f.drover(&["reconcile", "--dry-run", "--detailed-exitcode"]);
    assert_eq!(again.status.code(), Some(0));
    assert_one_writer(&f, &app, &since);
}

#[test]
fn a_controller_stopped_mid_copy_leaves_the_app_on_its_source_and_the_next_one_finishes_the_move() {
    let name = "e2e-ctlstop";
    let Some((_turn, f, fixed)) = writer_fixture(name, 64) else {
        return;
    };
    let app = format!("{name}-app");
    let since = now();
    set_host(&f, name, "node-b", "");
    // 64 MiB at 8 MB/s: the copy takes about eight seconds.
    let mut ctl = f.controller(&[], &[("DROVER_TEST_THROTTLE", "8000000")]);
    wait_until(Duration::from_secs(60), "the copy to be under way", || {
        ctl.log().lines().any(|l| {
            l.contains("relocation progress")
                && l.contains("phase=\"copy\"")
                && !l.contains(" done=0 ")
        })
    });
    let asked = Instant::now();
    ctl.signal("TERM");
    let status = ctl
        .wait_exit(Duration::from_secs(30))
        .expect("the controller exits");
    assert_eq!(status.code(), Some(0), "{}", ctl.log());
    eprintln!("stopped {:?} after SIGTERM", asked.elapsed());
    assert!(
        ctl.log().contains(drover::relocate::STOPPED),
        "{}",
        ctl.log()
    );
    assert_eq!(running_on(&f, &app), vec![0], "the app runs on its source");
    for h in &f.hosts {
        let helpers = text(&docker(h, &["ps", "-aq", "--filter", "name=drover-move-"]));
        assert!(helpers.is_empty(), "no helper is left behind on {}", h.name);
    }

    // The next controller resumes the move and finishes it.
    let ctl = f.controller(&[], &[]);
    wait_until(Duration::from_secs(120), "the move to finish", || {
        running_on(&f, &app) == vec![1] && ctl.health().0 == 200
    });
    assert_moved(&f, name, 1, &fixed);
    assert_one_writer(&f, &app, &since);
    let bytes = ctl.metric("drover_relocation_bytes_total").unwrap_or(0.0);
    assert!(bytes > 0.0, "{}", ctl.log());
    assert_eq!(
        ctl.metric("drover_relocation_duration_seconds_count"),
        Some(1.0)
    );
    assert_eq!(
        ctl.metric("drover_actions_total{kind=\"volume\",action=\"relocate\",result=\"done\"}"),
        Some(1.0)
    );
}

#[test]
fn hard_links_sparse_files_and_extended_attributes_survive_a_move_on_both_paths() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let name = "e2e-links";
    let f = Fixture::new(hosts, &[name]);
    f.write("stack.yaml", &writer_stack(name, "node-a", ""));
    f.reconcile();
    let vol = format!("{name}-data");
    let made = in_volume(
        &f.hosts[0],
        &vol,
        "mkdir -p /d/sub && dd if=/dev/urandom of=/d/one bs=1k count=300 2>/dev/null && ln /d/one /d/two && ln /d/one /d/sub/three \
         && dd if=/dev/urandom of=/d/disk.img bs=4k count=1 2>/dev/null && dd if=/dev/urandom of=/d/disk.img bs=4k count=1 seek=16383 conv=notrunc 2>/dev/null \
         && echo ok",
    );
    assert_eq!(made, "ok");
    // An attribute of the app's and an ACL, set from outside (the test
    // image has no setfattr).
    let mountpoint = |h: &TestHost| {
        std::path::PathBuf::from(text(&docker(
            h,
            &["volume", "inspect", "--format", "{{.Mountpoint}}", &vol],
        )))
    };
    let one = mountpoint(&f.hosts[0]).join("one");
    xattr::set(&one, "user.origin", b"mail\x00store").unwrap();
    let acl = drover::helper::scan::posix_acl(&[
        (1, 6, u32::MAX),
        (2, 4, 1234),
        (4, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ]);
    xattr::set(&one, "system.posix_acl_access", &acl).unwrap();
    let attrs = |h: &TestHost| {
        let p = mountpoint(h).join("sub/three");
        (
            xattr::get(&p, "user.origin").unwrap(),
            xattr::get(&p, "system.posix_acl_access").unwrap(),
        )
    };
    let attrs_before = attrs(&f.hosts[0]);
    assert!(attrs_before.0.is_some() && attrs_before.1.is_some());
    // Whether the three names are one file, its link count and content;
    // the sparse file's content and whether it is under 1 MiB on disk.
    let links = |h: &TestHost| {
        in_volume(
            h,
            &vol,
            "stat -c '%i %h' /d/one /d/two /d/sub/three | sort -u | wc -l; stat -c %h /d/one; md5sum < /d/sub/three; \
             md5sum < /d/disk.img; stat -c %s /d/disk.img; [ $(stat -c %b /d/disk.img) -lt 2048 ] && echo sparse",
        )
    };
    let before = links(&f.hosts[0]);
    assert!(
        before.starts_with("1\n3\n") && before.ends_with("67108864\nsparse"),
        "{before}"
    );
    // The direct path, then back over the API path.
    set_host(&f, name, "node-b", "");
    f.reconcile();
    assert_eq!(links(&f.hosts[1]), before, "on node-b");
    assert_eq!(attrs(&f.hosts[1]), attrs_before, "on node-b");
    f.write("stack.yaml", &writer_stack(name, "node-a", ""));
    let o = f.drover(&["reconcile", "--copy-via", "api"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(links(&f.hosts[0]), before, "back on node-a");
    assert_eq!(attrs(&f.hosts[0]), attrs_before, "back on node-a");
}

/// The stack `name`: one app running `script` over volume `data`, which
/// may keep the app down for `budget` while it moves.
fn budget_stack(name: &str, host: &str, budget: &str, script: &str) -> String {
    format!(
        "kind: Stack
name: {name}
volumes:
  data: {{ max_downtime: {budget} }}
apps:
  app:
    image: {IMAGE}
    host: {host}
    pull: never
    command: ['sh', '-c', 'trap \"exit 0\" TERM; {script}']
    volumes: ['data:/data']
    stop_grace_period: 2s
"
    )
}

#[test]
fn a_downtime_budget_that_fits_is_honoured_and_the_downtime_is_reported() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let name = "e2e-budget";
    let f = Fixture::new(hosts, &[name]);
    let writer = "i=0; while :; do i=$$((i+1)); echo $$i >> /data/log; sleep 0.02; done";
    f.write("stack.yaml", &budget_stack(name, "node-a", "20s", writer));
    f.reconcile();
    in_volume(
        &f.hosts[0],
        &format!("{name}-data"),
        "dd if=/dev/urandom of=/d/fixed bs=1M count=32 2>/dev/null",
    );
    let since = now();
    f.write("stack.yaml", &budget_stack(name, "node-b", "20s", writer));
    // The engine counts a volume never moved; nothing measured a move yet.
    let plan = text(&f.drover(&["reconcile", "--dry-run"]));
    assert!(
        plan.contains("node-a → node-b (32.0 MiB; no estimate: no earlier move on these hosts)"),
        "{plan}"
    );
    let o = f.drover(&["reconcile"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(text(&o).contains("apps down "), "{}", text(&o));
    let app = format!("{name}-app");
    assert_eq!(running_on(&f, &app), vec![1]);
    let downtimes = assert_one_writer(&f, &app, &since);
    assert_eq!(downtimes.len(), 1, "{downtimes:?}");
    assert!(
        downtimes[0] < 20_000.0,
        "the apps were down {} ms, over the 20 s budget",
        downtimes[0]
    );
    // The move back is estimated from this one.
    f.write("stack.yaml", &budget_stack(name, "node-a", "20s", writer));
    let plan = text(&f.drover(&["reconcile", "--dry-run"]));
    assert!(
        plan.contains(" files; copy about ")
            && plan.contains(", apps down about ")
            && plan.contains("earlier move"),
        "{plan}"
    );
}

#[test]
fn a_volume_changing_faster_than_its_budget_is_not_moved_and_its_app_never_stops() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let name = "e2e-churn";
    let f = Fixture::new(hosts, &[name]);
    // Rewrites 8 MiB of new data without pause: no pass can copy and check
    // what changed within 50 ms.
    let churn = "while :; do dd if=/dev/urandom of=/data/churn bs=1M count=8 2>/dev/null; done";
    f.write("stack.yaml", &budget_stack(name, "node-a", "50ms", churn));
    f.reconcile();
    let since = now();
    f.write("stack.yaml", &budget_stack(name, "node-b", "50ms", churn));
    let o = f.drover(&["reconcile"]);
    assert!(!o.status.success(), "the move must fail");
    let out = format!("{}{}", text(&o), stderr(&o));
    assert!(
        out.contains("changes faster than its `max_downtime` of 50ms")
            && out.contains("the apps were not stopped"),
        "{out}"
    );
    let app = format!("{name}-app");
    assert_eq!(running_on(&f, &app), vec![0], "the app runs on its source");
    let until = now();
    let died: Vec<_> = events(&f.hosts[0], &since, &until)
        .into_iter()
        .filter(|(_, typ, action, n)| typ == "container" && n == &app && action == "die")
        .collect();
    assert!(died.is_empty(), "the app was stopped: {died:?}");
    // The records still make node-a's copy the one to use.
    let again = f.drover(&["reconcile", "--dry-run"]);
    assert!(text(&again).contains("relocate"), "{}", text(&again));
}
