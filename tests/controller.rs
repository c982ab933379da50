//! End-to-end tests of `drover controller` against two real engines: it
//! converges on every edit, restores what is stopped or removed behind its
//! back (and stops doing so for an app that keeps dying), keeps the last
//! good spec while the directory is invalid, rides out an engine restart,
//! and stops cleanly on a signal.

mod support;

use std::time::{Duration, Instant};

use support::*;

const LONG: Duration = Duration::from_secs(60);

fn stack(name: &str, version: u32, extra: &str) -> String {
    format!(
        "kind: Stack
name: {name}
apps:
  web:
    image: {IMAGE}
    host: node-a
    pull: never
    restart: 'no'
    environment: {{ VERSION: '{version}' }}
    command: ['sh', '-c', 'trap \"exit 0\" TERM; while :; do sleep 1 & wait $$!; done']
    stop_grace_period: 1s
{side}{extra}",
        side = idle_app("side", "node-b")
    )
}

/// An app that sleeps until stopped, never restarted by Docker itself.
fn idle_app(app: &str, host: &str) -> String {
    format!(
        "  {app}:
    image: {IMAGE}
    host: {host}
    pull: never
    restart: 'no'
    command: ['sh', '-c', 'trap \"exit 0\" TERM; while :; do sleep 1; done']
    stop_grace_period: 1s
"
    )
}

/// Whether `container` runs on `host` with `VERSION=version`.
fn runs_version(host: &TestHost, container: &str, version: u32) -> bool {
    inspect(
        host,
        container,
        "{{.State.Running}} {{range .Config.Env}}{{.}} {{end}}",
    )
    .is_some_and(|s| s.starts_with("true ") && s.contains(&format!(" VERSION={version} ")))
}

fn is_running(host: &TestHost, container: &str) -> bool {
    inspect(host, container, "{{.State.Running}}").as_deref() == Some("true")
}

/// A turn on the hosts, a fixture with `stack(name, version, extra)` and a
/// controller on it, started with `args`, that has made the stack.
fn controlled(
    name: &str,
    version: u32,
    extra: &str,
    args: &[&str],
) -> Option<(std::sync::MutexGuard<'static, ()>, Fixture, Controller)> {
    let (turn, hosts) = hosts()?;
    let f = Fixture::new(hosts, &[name]);
    f.write("stack.yaml", &stack(name, version, extra));
    let ctl = f.controller(args, &[]);
    let (web, side) = (format!("{name}-web"), format!("{name}-side"));
    wait_until(LONG, "the stack to be created", || {
        runs_version(&f.hosts[0], &web, version) && is_running(&f.hosts[1], &side)
    });
    Some((turn, f, ctl))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn the_controller_converges_after_each_edit_and_reports_the_latency() {
    let name = "ctl-edit";
    let Some((_turn, f, ctl)) = controlled(name, 0, "", &[]) else {
        return;
    };
    let web = format!("{name}-web");
    let mut latencies = Vec::new();
    for v in 1..=10 {
        f.write("stack.yaml", &stack(name, v, ""));
        let took = wait_until(LONG, &format!("version {v} to run"), || {
            runs_version(&f.hosts[0], &web, v)
        });
        latencies.push(took);
    }
    eprintln!(
        "edit → running, over 10 edits: median {:?}, each {:?}",
        median(latencies.clone()),
        latencies
    );
    wait_until(LONG, "a pass that converged everything", || {
        ctl.health().0 == 200
    });
    assert_eq!(
        ctl.metric("drover_manifests_valid"),
        Some(1.0),
        "{}",
        ctl.log()
    );
    // A change in a hidden folder (`.git`) is not a change of the manifests.
    let mut before = ctl.passes();
    wait_until(LONG, "the passes to settle", || {
        std::thread::sleep(Duration::from_millis(1500));
        let now = ctl.passes();
        std::mem::replace(&mut before, now) == now
    });
    let recreated =
        ctl.metric("drover_actions_total{kind=\"container\",action=\"recreate\",result=\"done\"}");
    assert_eq!(recreated, Some(10.0), "{}", ctl.log());
    // No pass read a file half written (which would remove the app).
    let removed =
        ctl.metric("drover_actions_total{kind=\"container\",action=\"remove\",result=\"done\"}");
    assert_eq!(removed, None, "{}", ctl.log());
    std::fs::create_dir_all(f.path().join(".git")).unwrap();
    for i in 0..20 {
        f.write(".git/index", &i.to_string());
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ctl.passes(), before, "{}", ctl.log());
}

#[test]
fn the_controller_restores_a_killed_or_removed_container_and_throttles_a_crash_loop() {
    let name = "ctl-heal";
    let crash = "  crash:
    image: drover-test/busybox:1
    host: node-b
    pull: never
    restart: 'no'
    command: ['sh', '-c', 'sleep 1; exit 3']
";
    let Some((_turn, f, ctl)) = controlled(
        name,
        0,
        crash,
        &["--heal-limit", "3", "--heal-window", "10m"],
    ) else {
        return;
    };
    let (a, b) = (&f.hosts[0], &f.hosts[1]);
    let web = format!("{name}-web");

    let id = inspect(a, &web, "{{.Id}}").unwrap();
    docker(a, &["kill", &web]);
    wait_until(LONG, "the killed container to be started again", || {
        is_running(a, &web)
    });
    assert_eq!(
        inspect(a, &web, "{{.Id}}").unwrap(),
        id,
        "started, not made again"
    );

    docker(a, &["rm", "-f", &web]);
    wait_until(LONG, "the removed container to be made again", || {
        is_running(a, &web) && inspect(a, &web, "{{.Id}}").unwrap() != id
    });
    let heals = ctl.metric(&format!(
        "drover_heals_total{{stack=\"{name}\",app=\"web\"}}"
    ));
    assert_eq!(heals, Some(2.0), "{}", ctl.log());

    // The crashing app is started three times, then left alone.
    let throttled = format!("drover_heal_throttled{{stack=\"{name}\",app=\"crash\"}}");
    wait_until(LONG, "the crash loop to be throttled", || {
        ctl.metric(&throttled) == Some(1.0)
    });
    let (code, health) = ctl.health();
    let listed = &health["throttled"][0];
    assert_eq!(listed["app"], "crash", "{health}");
    assert_eq!(listed["restorations"], 3, "{health}");
    assert_eq!(code, 200, "a throttled app is the brake working: {health}");
    assert_eq!(
        ctl.metric(&format!(
            "drover_heals_total{{stack=\"{name}\",app=\"crash\"}}"
        )),
        Some(3.0)
    );
    let crash_name = format!("{name}-crash");
    let since = now();
    std::thread::sleep(Duration::from_secs(4));
    let starts: Vec<String> = writes(&events(b, &since, &now()), &crash_name)
        .into_iter()
        .filter(|w| w.contains(" start "))
        .collect();
    assert!(starts.is_empty(), "started while throttled: {starts:?}");
}

#[test]
fn an_invalid_directory_changes_nothing_and_the_last_good_spec_stays_in_force() {
    let name = "ctl-bad";
    let Some((_turn, f, ctl)) = controlled(name, 1, "", &[]) else {
        return;
    };
    let (a, b) = (&f.hosts[0], &f.hosts[1]);
    let web = format!("{name}-web");
    wait_until(LONG, "a ready controller", || ctl.health().0 == 200);

    let since = now();
    f.write(
        "broken.yaml",
        "kind: Stack\nname: other\napps:\n  x: [oops\n",
    );
    f.write("stack.yaml", &stack(name, 2, ""));
    wait_until(LONG, "/healthz to report the error", || {
        ctl.health().0 == 503
    });
    let (_, health) = ctl.health();
    let errors = health["manifests"]["errors"].to_string();
    assert!(errors.contains("broken.yaml:4:11"), "{health}");
    assert_eq!(health["manifests"]["valid"], false);
    assert!(
        health["reason"]
            .as_str()
            .unwrap()
            .contains("manifests are invalid"),
        "{health}"
    );
    assert_eq!(ctl.metric("drover_manifests_valid"), Some(0.0));
    assert!(
        ctl.log().contains("broken.yaml:4:11"),
        "the error is logged"
    );
    std::thread::sleep(Duration::from_secs(2));
    let changes: Vec<String> = [a, b]
        .iter()
        .flat_map(|h| writes(&events(h, &since, &now()), name))
        .collect();
    assert!(
        changes.is_empty(),
        "nothing changes while the directory is invalid: {changes:?}"
    );
    assert!(runs_version(a, &web, 1), "the edit is not applied");

    // Drift is still healed against the last good spec.
    docker(a, &["stop", "-t", "1", &web]);
    wait_until(LONG, "the stopped app to run again", || {
        runs_version(a, &web, 1)
    });

    // Fixed: the edit made meanwhile is applied.
    std::fs::remove_file(f.path().join("broken.yaml")).unwrap();
    wait_until(LONG, "the edit to be applied", || runs_version(a, &web, 2));
    wait_until(LONG, "/healthz to be ready again", || ctl.health().0 == 200);
    assert_eq!(ctl.metric("drover_manifests_valid"), Some(1.0));
}

#[test]
fn the_controller_rides_out_an_engine_restart_while_the_other_host_converges() {
    let name = "ctl-restart";
    let Some((_turn, f, mut ctl)) = controlled(name, 1, "", &["--resync", "5s"]) else {
        return;
    };
    let (a, b) = (&f.hosts[0], &f.hosts[1]);
    let (web, side) = (format!("{name}-web"), format!("{name}-side"));
    host_script("stop", "node-b");
    let down = Instant::now();
    wait_until(LONG, "/healthz to name the unreachable host", || {
        let (code, h) = ctl.health();
        code == 503 && h["hosts"]["node-b"]["reachable"] == false
    });
    // The other host keeps converging.
    f.write("stack.yaml", &stack(name, 2, ""));
    wait_until(LONG, "node-a to converge while node-b is down", || {
        runs_version(a, &web, 2)
    });
    let (_, h) = ctl.health();
    assert!(h["hosts"]["node-b"]["failures"].as_u64() >= Some(1), "{h}");
    assert!(ctl.child.try_wait().unwrap().is_none(), "still running");

    host_script("start", "node-b");
    eprintln!("node-b was down for {:?}", down.elapsed());
    // The engine's restart stopped `side` (restart: no): it is restored.
    let took = wait_until(LONG, "side to run again on node-b", || is_running(b, &side));
    eprintln!("restored {took:?} after node-b came back");
    wait_until(LONG, "a converged pass", || ctl.health().0 == 200);
    assert!(
        ctl.metric("drover_host_errors_total{host=\"node-b\"}") >= Some(1.0),
        "{}",
        ctl.log()
    );
}

#[test]
fn sigterm_stops_the_controller_cleanly_and_a_second_signal_at_once() {
    let name = "ctl-stop";
    let Some((_turn, f, mut ctl)) = controlled(name, 1, "", &[]) else {
        return;
    };
    wait_until(LONG, "a ready controller", || ctl.health().0 == 200);
    ctl.signal("TERM");
    let status = ctl.wait_exit(Duration::from_secs(20)).expect("it exits");
    assert_eq!(status.code(), Some(0), "{}", ctl.log());
    assert!(ctl.log().contains("controller stopped"), "{}", ctl.log());

    // Busy in a pass that waits for a dependency that never comes: the
    // first signal ends the wait, the step is skipped, exit 0.
    let waiting = "  sick:
    image: drover-test/busybox:1
    host: node-b
    pull: never
    command: ['sh', '-c', 'trap \"exit 0\" TERM; while :; do sleep 1; done']
    healthcheck: { test: ['CMD', 'false'], interval: 1s, retries: 1000 }
    stop_grace_period: 1s
  late:
    image: drover-test/busybox:1
    host: node-b
    pull: never
    depends_on: { sick: { condition: healthy } }
    command: ['sh', '-c', 'sleep 1000']
";
    // An app slow to stop: it ignores SIGTERM for its 30 s of grace.
    let stubborn = |round: u32| {
        format!(
            "  stubborn:
    image: {IMAGE}
    host: node-a
    pull: never
    environment: {{ ROUND: '{round}' }}
    command: ['sh', '-c', 'trap \"\" TERM; while :; do sleep 1; done']
    stop_grace_period: 30s
"
        )
    };
    f.write(
        "stack.yaml",
        &stack(name, 2, &format!("{waiting}{}", stubborn(1))),
    );
    let mut ctl = f.controller(&[], &[]);
    wait_until(LONG, "the wait for `sick` to begin", || {
        ctl.log().contains("name=ctl-stop-late")
    });
    std::thread::sleep(Duration::from_secs(1));
    let asked = Instant::now();
    ctl.signal("TERM");
    let status = ctl.wait_exit(Duration::from_secs(20)).expect("it exits");
    assert_eq!(status.code(), Some(0), "{}", ctl.log());
    assert!(asked.elapsed() < Duration::from_secs(10));
    assert!(ctl.log().contains("drover is stopping"), "{}", ctl.log());

    // Two signals: the first waits for the slow stop of a recreate under
    // way, the second does not wait for anything.
    f.write(
        "stack.yaml",
        &stack(name, 2, &format!("{waiting}{}", stubborn(2))),
    );
    let mut ctl = f.controller(&[], &[]);
    wait_until(LONG, "the recreate of `stubborn` to begin", || {
        ctl.log().lines().any(|l| {
            l.contains("step started") && l.contains("action=recreate name=ctl-stop-stubborn")
        })
    });
    ctl.signal("INT");
    wait_until(LONG, "the first signal to be taken", || {
        ctl.log()
            .contains("stopping once the current step has finished")
    });
    let asked = Instant::now();
    ctl.signal("INT");
    let status = ctl.wait_exit(Duration::from_secs(20)).expect("it exits");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(status.code(), Some(130), "{}", ctl.log());
}

/// The static binary the image is built from: `DROVER_IMAGE_BINARY`, or
/// one built for `x86_64-unknown-linux-gnu` (release first), relative to
/// the repository.
fn image_binary() -> Option<String> {
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    std::env::var("DROVER_IMAGE_BINARY")
        .ok()
        .into_iter()
        .chain(["release", "debug"].map(|p| format!("target/x86_64-unknown-linux-gnu/{p}/drover")))
        .find(|p| std::path::Path::new(repo).join(p).is_file())
}

#[test]
fn the_controller_image_runs_as_a_container_and_manages_a_second_host() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let Some(binary) = image_binary() else {
        assert!(
            std::env::var_os("DROVER_E2E_REQUIRED").is_none(),
            "no static drover binary for the image: scripts/test.sh builds one"
        );
        eprintln!("skipped: no static drover binary for the image");
        return;
    };
    let name = "ctl-image";
    let mut f = Fixture::new(hosts, &[name]);
    let (a, b) = (&f.hosts[0], &f.hosts[1]);
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let image = "drover-test/controller:1";
    let o = std::process::Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["-H", &a.endpoint, "build", "--target", "prebuilt"])
        .args([
            "--build-arg",
            &format!("BINARY={binary}"),
            "-t",
            image,
            repo,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "docker build: {}", stderr(&o));

    // The controller runs on node-a and manages node-b through its socket,
    // as the `docker run` line of docs/controller.md does with the host's own socket.
    let b_socket = b.endpoint.trim_start_matches("unix://").to_string();
    f.write(
        "cluster.yaml",
        &format!(
            "kind: Cluster\nhosts:\n  node-b: {{ endpoint: 'unix:///var/run/docker.sock', address: '{}' }}\n",
            b.address
        ),
    );
    f.write(
        "stack.yaml",
        &format!(
            "kind: Stack\nname: {name}\napps:\n{}",
            idle_app("app", "node-b")
        ),
    );
    let controller = format!("{name}-controller");
    f.extra_containers.push((0, controller.clone()));
    let manifests = format!("{}:/manifests:ro", f.path().display());
    let socket = format!("{b_socket}:/var/run/docker.sock");
    let o = docker(
        a,
        &[
            "run",
            "-d",
            "--name",
            &controller,
            "-p",
            "19090:9090",
            "-v",
            &manifests,
            "-v",
            &socket,
            image,
        ],
    );
    assert!(o.status.success(), "docker run: {}", stderr(&o));
    let logs = || {
        let o = docker(a, &["logs", &controller]);
        format!("{}{}", stdout(&o), stderr(&o))
    };
    let app = format!("{name}-app");
    wait_until(LONG, "the app on node-b", || is_running(b, &app));
    docker(b, &["kill", &app]);
    wait_until(LONG, "the killed app to be restored", || {
        is_running(b, &app)
    });

    // /healthz through the published port, at node-a's address.
    let (code, health) = http_get(&a.address, 19090, "/healthz").expect("/healthz answers");
    assert_eq!(code, 200, "{health}\n{}", logs());
    assert!(health.contains("\"ready\":true"), "{health}");

    let o = docker(a, &["stop", "-t", "30", &controller]);
    assert!(o.status.success());
    assert_eq!(
        inspect(a, &controller, "{{.State.ExitCode}}").as_deref(),
        Some("0"),
        "{}",
        logs()
    );
    assert!(logs().contains("controller stopped"), "{}", logs());
}

#[test]
fn a_controller_started_on_an_invalid_directory_applies_nothing_until_it_is_valid() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let name = "ctl-late";
    let f = Fixture::new(hosts, &[name]);
    f.write("stack.yaml", &stack(name, 1, "  oops: [\n"));
    let ctl = f.controller(&[], &[]);
    wait_until(LONG, "a first pass", || ctl.passes() >= 1);
    let (code, health) = ctl.health();
    assert_eq!(code, 503, "{health}");
    assert_eq!(health["manifests"]["in_force"], false, "{health}");
    assert!(
        health["manifests"]["errors"]
            .to_string()
            .contains("stack.yaml:"),
        "{health}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        inspect(&f.hosts[0], &format!("{name}-web"), "{{.Id}}").is_none(),
        "nothing is made from an invalid directory"
    );
    f.write("stack.yaml", &stack(name, 1, ""));
    wait_until(LONG, "the stack to be made once valid", || {
        runs_version(&f.hosts[0], &format!("{name}-web"), 1)
    });
    wait_until(LONG, "a ready controller", || ctl.health().0 == 200);
}
