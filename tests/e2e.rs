//! End-to-end tests against real Docker engines, several hosts at once
//! (see `support` for how the hosts are found). Each test uses its own stack
//! names and ports, and removes what it made.

mod support;

use std::time::Duration;

use support::*;

fn basic_stack(name: &str, port: u16, web_env: &str) -> String {
    format!(
        "kind: Stack
name: {name}
volumes:
  data: {{}}
apps:
  db:
    image: {IMAGE}
    host: node-a
    pull: never
    command: ['sh', '-c', 'echo ok > /data/ready; exec httpd -f -p 8080 -h /data']
    volumes: ['data:/data']
    ports: ['{port}:8080']
    healthcheck: {{ test: ['CMD', 'test', '-f', '/data/ready'], interval: 1s, retries: 30 }}
    stop_grace_period: 1s
  web:
    image: {IMAGE}
    host: node-b
    pull: never
    depends_on: {{ db: {{ condition: healthy }} }}
    links: [db]
    environment: {{ MODE: '{web_env}' }}
    command: ['sh', '-c', 'trap exit TERM; while :; do sleep 1; done']
    stop_grace_period: 1s
"
    )
}

#[test]
fn reconcile_creates_a_stack_across_two_hosts_and_a_second_run_changes_nothing() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["e2e-basic"]);
    f.write("stack.yaml", &basic_stack("e2e-basic", 18101, "one"));
    let (a, b) = (&f.hosts[0], &f.hosts[1]);

    let out = stdout(&f.reconcile());
    assert!(
        out.contains("Applied: 5 done, 0 failed, 0 skipped."),
        "{out}"
    );
    assert_eq!(
        inspect(a, "e2e-basic-db", "{{.State.Status}}").as_deref(),
        Some("running")
    );
    assert_eq!(
        inspect(b, "e2e-basic-web", "{{.State.Status}}").as_deref(),
        Some("running")
    );
    assert_eq!(
        inspect(
            a,
            "e2e-basic-db",
            "{{index .Config.Labels \"drover.managed\"}}"
        )
        .as_deref(),
        Some("true")
    );

    // Cross-host link variables: node-a's address and the published port,
    // and they really lead to the app.
    let env = text(&docker(b, &["exec", "e2e-basic-web", "env"]));
    assert!(env.contains(&format!("DB_HOST={}", a.address)), "{env}");
    assert!(env.contains("DB_PORT=18101"), "{env}");
    let got = text(&docker(
        b,
        &[
            "exec",
            "e2e-basic-web",
            "wget",
            "-qO-",
            &format!("http://{}:18101/ready", a.address),
        ],
    ));
    assert_eq!(got, "ok");

    // A second run: nothing to do, and nothing written on either host.
    let since = now();
    let again = f.drover(&["reconcile"]);
    assert!(again.status.success());
    assert!(stdout(&again).contains("No changes."), "{}", stdout(&again));
    std::thread::sleep(Duration::from_millis(300));
    let until = now();
    for h in &f.hosts {
        let w = writes(&events(h, &since, &until), "e2e-basic");
        assert!(w.is_empty(), "the second run wrote on {}: {w:?}", h.name);
    }
    let dry = f.drover(&["reconcile", "--dry-run", "--detailed-exitcode"]);
    assert_eq!(dry.status.code(), Some(0));

    // observe and status show it.
    let obs: serde_json::Value = serde_json::from_slice(&f.drover(&["observe"]).stdout).unwrap();
    let db = obs["hosts"]["node-a"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "e2e-basic-db")
        .unwrap()
        .clone();
    assert_eq!(db["managed"], true);
    assert_eq!(db["app"], "db");
    assert_eq!(db["health"], "healthy");
    let status = stdout(&f.drover(&["status"]));
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("e2e-basic") && l.contains("db") && l.ends_with("yes")),
        "{status}"
    );
}

#[test]
fn a_stopped_container_is_started_and_a_changed_environment_recreates_only_that_app() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["e2e-change"]);
    f.write("stack.yaml", &basic_stack("e2e-change", 18102, "one"));
    f.reconcile();
    let (a, b) = (&f.hosts[0], &f.hosts[1]);

    docker(b, &["stop", "-t", "1", "e2e-change-web"]);
    let dry = stdout(&f.drover(&["reconcile", "--dry-run"]));
    assert!(dry.contains("start    container e2e-change-web"), "{dry}");
    assert!(dry.contains("container is exited"), "{dry}");
    f.reconcile();
    assert_eq!(
        inspect(b, "e2e-change-web", "{{.State.Status}}").as_deref(),
        Some("running")
    );

    let db_id = inspect(a, "e2e-change-db", "{{.Id}}").unwrap();
    let web_id = inspect(b, "e2e-change-web", "{{.Id}}").unwrap();
    f.write("stack.yaml", &basic_stack("e2e-change", 18102, "two"));
    let out = stdout(&f.reconcile());
    assert!(out.contains("environment `MODE` changed"), "{out}");
    assert_eq!(
        inspect(a, "e2e-change-db", "{{.Id}}").unwrap(),
        db_id,
        "db must be left alone"
    );
    assert_ne!(
        inspect(b, "e2e-change-web", "{{.Id}}").unwrap(),
        web_id,
        "web must be recreated"
    );
    let env = text(&docker(b, &["exec", "e2e-change-web", "env"]));
    assert!(env.contains("MODE=two"), "{env}");
}

#[test]
fn a_removed_app_goes_and_a_removed_volume_keeps_its_data_until_volume_rm() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["e2e-rm"]);
    f.write("stack.yaml", &basic_stack("e2e-rm", 18103, "one"));
    f.reconcile();
    let a = &f.hosts[0];
    docker(
        a,
        &[
            "exec",
            "e2e-rm-db",
            "sh",
            "-c",
            "echo precious > /data/keep",
        ],
    );

    // In use: `volume rm` refuses.
    let refused = f.drover(&["volume", "rm", "--host", "node-a", "e2e-rm-data", "--yes"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("in use by e2e-rm-db"),
        "{}",
        stderr(&refused)
    );

    // Every app goes: refused unless asked for (an emptied directory).
    f.write("stack.yaml", "kind: Stack\nname: e2e-rm\n");
    assert_eq!(f.drover(&["reconcile"]).status.code(), Some(1));
    assert!(inspect(a, "e2e-rm-db", "{{.Id}}").is_some());
    let emptied = f.drover(&["reconcile", "--allow-empty"]);
    assert!(emptied.status.success());
    let out = stdout(&emptied);
    assert!(out.contains("remove   container e2e-rm-db"), "{out}");
    assert!(
        out.contains("e2e-rm-data on node-a: volume `data` is no longer in stack `e2e-rm`"),
        "{out}"
    );
    assert!(
        inspect(a, "e2e-rm-db", "{{.Id}}").is_none(),
        "the container must be gone"
    );
    assert!(inspect(&f.hosts[1], "e2e-rm-web", "{{.Id}}").is_none());

    // The data is still there.
    let kept = docker(
        a,
        &[
            "run",
            "--rm",
            "-v",
            "e2e-rm-data:/d",
            IMAGE,
            "cat",
            "/d/keep",
        ],
    );
    assert_eq!(text(&kept), "precious");
    let ls = stdout(&f.drover(&["volume", "ls"]));
    assert!(
        ls.lines()
            .any(|l| l.starts_with("e2e-rm-data") && l.contains("orphan")),
        "{ls}"
    );

    // Only an explicit command deletes it.
    let rm = f.drover(&["volume", "rm", "--host", "node-a", "e2e-rm-data", "--yes"]);
    assert!(rm.status.success(), "{}", stderr(&rm));
    assert!(!docker(a, &["volume", "inspect", "e2e-rm-data"])
        .status
        .success());
}

#[test]
fn an_unmanaged_container_with_a_drover_name_is_untouched_and_reported() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let mut f = Fixture::new(hosts, &["e2e-unm"]);
    f.extra_containers.push((1, "e2e-unm-web".into()));
    let b = &f.hosts[1];
    let run = docker(
        b,
        &["run", "-d", "--name", "e2e-unm-web", IMAGE, "sleep", "300"],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let id = inspect(b, "e2e-unm-web", "{{.Id}}").unwrap();
    f.write(
        "stack.yaml",
        &format!(
            "kind: Stack\nname: e2e-unm\napps:\n  web:\n    image: {IMAGE}\n    host: node-b\n    command: ['sleep', '300']\n  other:\n    image: {IMAGE}\n    host: node-b\n    command: ['sleep', '300']\n"
        ),
    );
    let o = f.drover(&["reconcile"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("container name `e2e-unm-web` on `node-b` is taken by a container drover does not manage"), "{}", stderr(&o));
    let b = &f.hosts[1];
    assert_eq!(inspect(b, "e2e-unm-web", "{{.Id}}").unwrap(), id);
    assert_eq!(
        inspect(b, "e2e-unm-web", "{{.State.Status}}").as_deref(),
        Some("running")
    );
    assert_eq!(
        inspect(
            b,
            "e2e-unm-web",
            "{{index .Config.Labels \"drover.managed\"}}"
        )
        .as_deref(),
        Some("")
    );
    // The rest of the stack still converges.
    assert_eq!(
        inspect(b, "e2e-unm-other", "{{.State.Status}}").as_deref(),
        Some("running")
    );
}

#[test]
fn depends_on_order_and_health_gating_show_in_docker_events() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["e2e-order"]);
    f.write(
        "stack.yaml",
        &format!(
            "kind: Stack
name: e2e-order
apps:
  db:
    image: {IMAGE}
    host: node-a
    command: ['sh', '-c', 'sleep 2; touch /tmp/up; trap exit TERM; while :; do sleep 1; done']
    healthcheck: {{ test: ['CMD', 'test', '-f', '/tmp/up'], interval: 1s, retries: 30 }}
  cache:
    image: {IMAGE}
    host: node-b
    command: ['sh', '-c', 'trap exit TERM; while :; do sleep 1; done']
  api:
    image: {IMAGE}
    host: node-b
    depends_on:
      db: {{ condition: healthy }}
      cache: {{ condition: started }}
    command: ['sh', '-c', 'trap exit TERM; while :; do sleep 1; done']
"
        ),
    );
    let since = now();
    f.reconcile();
    let until = now();
    let (a, b) = (&f.hosts[0], &f.hosts[1]);
    let ea = events(a, &since, &until);
    let eb = events(b, &since, &until);
    let at = |evs: &[(i64, String, String, String)], action: &str, name: &str| {
        evs.iter()
            .find(|(_, t, ac, n)| t == "container" && ac.starts_with(action) && n == name)
            .map(|(t, ..)| *t)
            .unwrap_or_else(|| panic!("no `{action}` event for {name}: {evs:?}"))
    };
    let db_healthy = at(&ea, "health_status: healthy", "e2e-order-db");
    let cache_start = at(&eb, "start", "e2e-order-cache");
    let api_create = at(&eb, "create", "e2e-order-api");
    let api_start = at(&eb, "start", "e2e-order-api");
    assert!(
        api_create > db_healthy,
        "api was created before db was healthy"
    );
    assert!(
        api_start > db_healthy && api_start > cache_start,
        "api started too early"
    );
}

#[test]
fn an_unhealthy_dependency_fails_with_its_last_health_output_and_the_next_pass_converges_once_it_is_healthy(
) {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["e2e-sick"]);
    f.write(
        "stack.yaml",
        &format!(
            "kind: Stack
name: e2e-sick
apps:
  db:
    image: {IMAGE}
    host: node-a
    command: ['sleep', '300']
    healthcheck: {{ test: ['CMD-SHELL', 'test -f /tmp/ok || {{ echo not ready yet; exit 1; }}'], interval: 1s, retries: 1 }}
  web:
    image: {IMAGE}
    host: node-a
    depends_on: {{ db: {{ condition: healthy }} }}
    command: ['sleep', '300']
"
        ),
    );
    let o = f.drover(&["reconcile", "--dependency-timeout", "4"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("app `web` waited 4s for `db` to be healthy, but it is running, unhealthy; last health output: not ready yet"), "{err}");
    assert!(
        inspect(&f.hosts[0], "e2e-sick-web", "{{.Id}}").is_none(),
        "web must not be created"
    );
    // The fault goes: db becomes healthy. The next pass makes web.
    docker(&f.hosts[0], &["exec", "e2e-sick-db", "touch", "/tmp/ok"]);
    wait_until(Duration::from_secs(20), "db to be healthy", || {
        inspect(&f.hosts[0], "e2e-sick-db", "{{.State.Health.Status}}").as_deref()
            == Some("healthy")
    });
    f.reconcile();
    assert_eq!(
        inspect(&f.hosts[0], "e2e-sick-web", "{{.State.Status}}").as_deref(),
        Some("running")
    );
}

#[test]
fn an_unreachable_host_is_named_and_nothing_that_depends_on_it_changes() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["e2e-down"]);
    let cluster = std::fs::read_to_string(f.path().join("cluster.yaml")).unwrap()
        + "  node-x: { endpoint: 'unix:///tmp/drover-hosts/absent.sock', address: '127.0.0.1' }\n";
    f.write("cluster.yaml", &cluster);
    f.write(
        "stack.yaml",
        &format!(
            "kind: Stack
name: e2e-down
apps:
  far:
    image: {IMAGE}
    host: node-x
    ports: ['18104:80']
  near:
    image: {IMAGE}
    host: node-a
    links: [far]
    command: ['sleep', '300']
  alone:
    image: {IMAGE}
    host: node-a
    command: ['sleep', '300']
"
        ),
    );
    let dry = f.drover(&["reconcile", "--dry-run"]);
    assert_eq!(dry.status.code(), Some(1));
    let o = f.drover(&["reconcile"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("error: host `node-x` could not be read: host `node-x` cannot be reached at unix:///tmp/drover-hosts/absent.sock"), "{err}");
    assert!(
        err.contains("app `e2e-down/near` on `node-a` is skipped: it waits for `far`"),
        "{err}"
    );
    let a = &f.hosts[0];
    assert!(inspect(a, "e2e-down-near", "{{.Id}}").is_none());
    assert_eq!(
        inspect(a, "e2e-down-alone", "{{.State.Status}}").as_deref(),
        Some("running")
    );
}

#[test]
fn a_missing_image_stops_its_host_before_anything_changes_there_until_it_is_loaded() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["e2e-img"]);
    f.write(
        "stack.yaml",
        &format!(
            "kind: Stack
name: e2e-img
volumes:
  v: {{}}
apps:
  good:
    image: {IMAGE}
    host: node-a
    volumes: ['v:/v']
    command: ['sleep', '300']
  bad:
    image: drover-test/absent:1
    host: node-a
    pull: never
    command: ['sleep', '300']
  other:
    image: {IMAGE}
    host: node-b
    command: ['sleep', '300']
"
        ),
    );
    let o = f.drover(&["reconcile"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains(
            "image `drover-test/absent:1` is not on `node-a` and `pull: never` forbids pulling it"
        ),
        "{out}"
    );
    let a = &f.hosts[0];
    assert!(inspect(a, "e2e-img-good", "{{.Id}}").is_none());
    assert!(
        !docker(a, &["volume", "inspect", "e2e-img-v"])
            .status
            .success(),
        "nothing may change on node-a"
    );
    assert_eq!(
        inspect(&f.hosts[1], "e2e-img-other", "{{.State.Status}}").as_deref(),
        Some("running")
    );
    // The image is loaded onto node-a: the next pass converges.
    assert!(docker(a, &["tag", IMAGE, "drover-test/absent:1"])
        .status
        .success());
    f.reconcile();
    assert_eq!(
        inspect(a, "e2e-img-good", "{{.State.Status}}").as_deref(),
        Some("running")
    );
    assert!(inspect(a, "e2e-img-bad", "{{.Id}}").is_some());
    docker(a, &["rmi", "drover-test/absent:1"]);
}
