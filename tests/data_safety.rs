//! The data-safety cases of `docs/threat-model.md` that need real engines:
//! copy records found by identity and surviving the prunes an operator
//! runs, lost records never read as "no move", an emptied manifest
//! directory, names drover does not own, other writers of a moving volume.

mod support;

use support::*;

/// The copy record of every copy of `volume`: host -> the record's JSON.
fn records(f: &Fixture, volume: &str) -> Vec<(String, serde_json::Value)> {
    let o = f.drover(&["observe"]);
    let obs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut out = Vec::new();
    for (host, h) in obs["hosts"].as_object().unwrap() {
        for v in h["volumes"].as_array().unwrap() {
            if v["name"] == volume {
                out.push((host.clone(), v["copy"].clone()));
            }
        }
    }
    out
}

fn role_on(f: &Fixture, volume: &str, host: &str) -> String {
    records(f, volume)
        .into_iter()
        .find(|(h, _)| h == host)
        .map(|(_, r)| r["role"].as_str().unwrap_or("none").to_string())
        .unwrap_or_else(|| "no copy".into())
}

/// An app writing a counter into `data` (and mounting `extra` volumes too).
fn writer(name: &str, host: &str, volumes: &[&str]) -> String {
    let decl: String = volumes.iter().map(|v| format!("  {v}: {{}}\n")).collect();
    let mounts: Vec<String> = volumes.iter().map(|v| format!("'{v}:/{v}'")).collect();
    format!(
        "kind: Stack
name: {name}
volumes:
{decl}apps:
  app:
    image: {IMAGE}
    host: {host}
    pull: never
    command: ['sh', '-c', 'trap \"exit 0\" TERM; i=0; while :; do i=$$((i+1)); echo $$i >> /data/log; sleep 0.05; done']
    volumes: [{}]
    stop_grace_period: 2s
",
        mounts.join(", ")
    )
}

/// Test hosts and a fixture running the writer stack `name` on node-a with
/// `volumes`; `None` without test hosts.
fn deployed(name: &str, volumes: &[&str]) -> Option<(std::sync::MutexGuard<'static, ()>, Fixture)> {
    let (turn, hosts) = hosts()?;
    let f = Fixture::new(hosts, &[name]);
    f.write("stack.yaml", &writer(name, "node-a", volumes));
    f.reconcile();
    Some((turn, f))
}

/// Moves the writer stack `name` to node-b with drover killed as the app is
/// about to stop: the copy made, the app still running on node-a.
fn interrupt_move_at_stop(f: &Fixture, name: &str) {
    f.write("stack.yaml", &writer(name, "node-b", &["data"]));
    let o = f.drover_with(&["reconcile"], &[("DROVER_TEST_ABORT_AT", "stop")]);
    assert!(!o.status.success());
}

fn put(f: &Fixture, host: usize, container: &str, script: &str) {
    let o = docker(&f.hosts[host], &["exec", container, "sh", "-c", script]);
    assert!(o.status.success(), "{script}: {}", stderr(&o));
}

/// Removes every copy record on a host by hand, whatever object holds it.
fn remove_records(h: &TestHost) {
    let filter = "label=drover.copy-of";
    for id in text(&docker(h, &["ps", "-aq", "--filter", filter])).lines() {
        docker(h, &["rm", "-f", id]);
    }
    for v in text(&docker(h, &["volume", "ls", "-q", "--filter", filter])).lines() {
        docker(h, &["volume", "rm", v]);
    }
}

#[test]
fn the_records_of_a_volume_whose_name_extends_another_survive_their_move() {
    let name = "ds-twins";
    let Some((_turn, f)) = deployed(name, &["data", "data-old"]) else {
        return;
    };
    let app = format!("{name}-app");
    put(&f, 0, &app, "echo old > /data-old/kept");
    f.write("stack.yaml", &writer(name, "node-b", &["data", "data-old"]));
    f.reconcile();
    for v in ["data", "data-old"] {
        let vol = format!("{name}-{v}");
        assert_eq!(role_on(&f, &vol, "node-b"), "current", "{vol}");
        assert_eq!(role_on(&f, &vol, "node-a"), "retained", "{vol}");
    }
    // And back again: node-b's writes come along, for both volumes.
    put(&f, 1, &app, "echo new > /data-old/kept");
    f.write("stack.yaml", &writer(name, "node-a", &["data", "data-old"]));
    f.reconcile();
    assert_eq!(
        in_volume(&f.hosts[0], &format!("{name}-data-old"), "cat /d/kept"),
        "new"
    );
    for v in ["data", "data-old"] {
        let vol = format!("{name}-{v}");
        assert_eq!(role_on(&f, &vol, "node-a"), "current", "{vol}");
        assert_eq!(role_on(&f, &vol, "node-b"), "retained", "{vol}");
    }
    // Deleting one copy leaves the records of the other volume alone.
    let rm = f.drover(&[
        "volume",
        "rm",
        "--host",
        "node-b",
        &format!("{name}-data"),
        "--yes",
    ]);
    assert!(rm.status.success());
    assert_eq!(
        role_on(&f, &format!("{name}-data-old"), "node-b"),
        "retained"
    );
}

#[test]
fn pruning_stopped_containers_after_an_interrupted_move_keeps_its_records() {
    let name = "ds-prune";
    let Some((_turn, f)) = deployed(name, &["data"]) else {
        return;
    };
    let app = format!("{name}-app");
    let vol = format!("{name}-data");
    put(
        &f,
        0,
        &app,
        "dd if=/dev/urandom of=/data/fixed bs=1M count=4 2>/dev/null",
    );
    interrupt_move_at_stop(&f, name);
    assert!(running(&f.hosts[0], &app));
    // What an operator runs to free space.
    for h in &f.hosts {
        let o = docker(h, &["container", "prune", "-f"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let o = docker(h, &["system", "prune", "-f"]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_eq!(role_on(&f, &vol, "node-a"), "current");
    assert_eq!(role_on(&f, &vol, "node-b"), "incoming");
    // The move resumes from the records: every write made up to the stop is
    // on node-b, and node-a's copy is kept as retained.
    let o = f.drover(&["reconcile"]);
    assert!(o.status.success());
    assert!(
        stdout(&o).contains(&format!("relocate volume    {vol}")),
        "{}",
        stdout(&o)
    );
    assert!(running(&f.hosts[1], &app) && !running(&f.hosts[0], &app));
    let kept = in_volume(&f.hosts[0], &vol, "wc -c < /d/log");
    assert_eq!(
        in_volume(
            &f.hosts[1],
            &vol,
            &format!("head -c {kept} /d/log | md5sum")
        ),
        in_volume(&f.hosts[0], &vol, "md5sum < /d/log")
    );
    assert_eq!(
        in_volume(&f.hosts[1], &vol, "md5sum < /d/fixed"),
        in_volume(&f.hosts[0], &vol, "md5sum < /d/fixed")
    );
    assert_eq!(role_on(&f, &vol, "node-b"), "current");
    assert_eq!(role_on(&f, &vol, "node-a"), "retained");
}

#[test]
fn two_copies_whose_records_are_gone_are_blocked_until_one_is_adopted() {
    let name = "ds-lost";
    let Some((_turn, f)) = deployed(name, &["data"]) else {
        return;
    };
    let app = format!("{name}-app");
    let vol = format!("{name}-data");
    interrupt_move_at_stop(&f, name);
    // Every record lost, as a `docker volume prune` of old engines or a
    // hand-made mistake would lose them.
    for h in &f.hosts {
        remove_records(h);
    }
    let dry = f.drover(&["reconcile", "--dry-run"]);
    assert_eq!(dry.status.code(), Some(1), "{}", stdout(&dry));
    let err = stdout(&dry) + &stderr(&dry);
    assert!(
        err.contains(&vol)
            && err.contains("node-a")
            && err.contains("node-b")
            && err.contains("drover volume adopt"),
        "{err}"
    );
    let o = f.drover(&["reconcile"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        running(&f.hosts[0], &app),
        "the app stays where it ran, on its data"
    );
    assert!(!running(&f.hosts[1], &app));
    // The operator checks and chooses node-a's copy: the move runs again
    // from it, and the copy on node-b is kept.
    let adopt = f.drover(&["volume", "adopt", "--host", "node-a", &vol]);
    assert!(adopt.status.success(), "{}", stderr(&adopt));
    assert_eq!(role_on(&f, &vol, "node-a"), "current");
    assert_eq!(role_on(&f, &vol, "node-b"), "retained");
    f.reconcile();
    assert!(running(&f.hosts[1], &app) && !running(&f.hosts[0], &app));
    assert_eq!(role_on(&f, &vol, "node-b"), "current");
    let again = f.drover(&["reconcile", "--dry-run", "--detailed-exitcode"]);
    assert_eq!(again.status.code(), Some(0));
}

#[test]
fn an_emptied_directory_removes_nothing_unless_asked() {
    let name = "ds-empty";
    let Some((_turn, f)) = deployed(name, &["data"]) else {
        return;
    };
    let app = format!("{name}-app");
    std::fs::remove_file(f.path().join("stack.yaml")).unwrap();
    for args in [&["reconcile", "--dry-run"][..], &["reconcile"][..]] {
        let o = f.drover(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let said = stdout(&o) + &stderr(&o);
        assert!(said.contains("--allow-empty"), "{said}");
    }
    assert!(running(&f.hosts[0], &app));

    // The controller never empties the hosts from a directory that became
    // empty under it.
    f.write("stack.yaml", &writer(name, "node-a", &["data"]));
    let c = f.controller(&["--resync", "1s"], &[]);
    wait_until(std::time::Duration::from_secs(30), "a first pass", || {
        c.passes() >= 1
    });
    std::fs::remove_file(f.path().join("stack.yaml")).unwrap();
    wait_until(
        std::time::Duration::from_secs(30),
        "the guard in /healthz",
        || {
            let (code, h) = c.health();
            code == 503 && h.to_string().contains("--allow-empty")
        },
    );
    let passes = c.passes();
    wait_until(
        std::time::Duration::from_secs(30),
        "two more passes",
        || c.passes() >= passes + 2,
    );
    assert!(running(&f.hosts[0], &app));
    drop(c);

    // Asked for, it removes the containers and keeps the volume.
    let o = f.drover(&["reconcile", "--allow-empty"]);
    assert!(o.status.success());
    assert!(!running(&f.hosts[0], &app));
    assert!(
        docker(&f.hosts[0], &["volume", "inspect", &format!("{name}-data")])
            .status
            .success()
    );
}

#[test]
fn a_moved_app_never_replaces_a_container_drover_does_not_manage() {
    let name = "ds-foreign";
    let Some((_turn, mut f)) = deployed(name, &["data"]) else {
        return;
    };
    let app = format!("{name}-app");
    f.extra_containers.push((1, app.clone()));
    let made = docker(&f.hosts[1], &["create", "--name", &app, IMAGE, "true"]);
    assert!(made.status.success());
    let id = text(&made);
    f.write("stack.yaml", &writer(name, "node-b", &["data"]));
    let o = f.drover(&["reconcile"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!("`{app}`")) && stderr(&o).contains("not manage"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        inspect(&f.hosts[1], &app, "{{.Id}}").as_deref(),
        Some(id.as_str()),
        "the foreign container is untouched"
    );
    assert!(running(&f.hosts[0], &app));
}

/// Runs `drover helper ARGS` in a helper container with `input` on stdin.
fn in_helper(h: &TestHost, helper: &str, args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut c = std::process::Command::new("docker")
        .args(["-H", &h.endpoint, "exec", "-i", helper, "/drover", "helper"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(input).unwrap();
    c.wait_with_output().unwrap()
}

#[test]
fn a_hostile_stream_never_writes_outside_the_target_volume() {
    let name = "ds-escape";
    let Some((_turn, f)) = deployed(name, &["data"]) else {
        return;
    };
    f.write("stack.yaml", &writer(name, "node-b", &["data"]));
    // Killed as the copy starts: both helpers are left running.
    let o = f.drover_with(&["reconcile"], &[("DROVER_TEST_ABORT_AT", "copy")]);
    assert!(!o.status.success());
    let helper = format!("drover-move-{name}-data");
    let b = &f.hosts[1];
    assert!(running(b, &helper));
    // A symlink to the helper's own root, then a file through it: the
    // binary that runs the next verification.
    let entry = |path: &str, kind: &str, size: u64, target: &str| {
        format!(
            "{{\"path\":\"{path}\",\"kind\":\"{kind}\",\"mode\":493,\"uid\":0,\"gid\":0,\"size\":{size},\"mtime_ns\":0,\"ctime_ns\":0,\"ino\":0{target}}}\n"
        )
    };
    let stream = entry("a", "symlink", 0, ",\"target\":\"/\"")
        + &entry("a/drover", "file", 3, "")
        + "pwn{\"end\":2}\n";
    let out = in_helper(b, &helper, &["unpack"], stream.as_bytes());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused path `a/drover`"), "{err}");
    let out = in_helper(
        b,
        &helper,
        &["delete"],
        b"/drover\n../../drover\na/drover\n",
    );
    assert!(!out.status.success());
    // Nothing of the helper's own file system changed, and it could not
    // have: it is read-only, with no privilege to gain.
    let diff = text(&docker(b, &["diff", &helper]));
    assert!(diff.is_empty(), "{diff}");
    assert_eq!(
        inspect(b, &helper, "{{.HostConfig.ReadonlyRootfs}}").as_deref(),
        Some("true")
    );
    // The move then completes from what the volume holds.
    f.reconcile();
    assert!(running(b, &format!("{name}-app")));
}

#[test]
fn another_writer_of_the_volume_stops_the_move_and_the_engine_never_restarts_the_old_app() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let name = "ds-writers";
    let mut f = Fixture::new(hosts, &[name]);
    let always = |host: &str| {
        writer(name, host, &["data"]).replace(
            "    stop_grace_period: 2s\n",
            "    stop_grace_period: 2s\n    restart: always\n",
        )
    };
    f.write("stack.yaml", &always("node-a"));
    f.reconcile();
    let app = format!("{name}-app");
    let intruder = format!("{name}-intruder");
    f.extra_containers.push((0, intruder.clone()));
    let a = &f.hosts[0];
    let run = docker(
        a,
        &[
            "run",
            "-d",
            "--name",
            &intruder,
            "--restart",
            "always",
            "-v",
            &format!("{name}-data:/d"),
            IMAGE,
            "sh",
            "-c",
            "trap exit TERM; while :; do sleep 1; done",
        ],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    f.write("stack.yaml", &always("node-b"));
    let refused = |f: &Fixture, what: &str| {
        let o = f.drover(&["reconcile"]);
        assert_eq!(o.status.code(), Some(1));
        let said = stdout(&o) + &stderr(&o);
        assert!(
            said.contains(&format!(
                "container `{intruder}` on `node-a` also mounts volume `{name}-data`"
            )) && said.contains(what),
            "{said}"
        );
        assert!(
            running(&f.hosts[0], &app),
            "the app runs on its source again"
        );
        assert_eq!(
            inspect(&f.hosts[0], &app, "{{.HostConfig.RestartPolicy.Name}}").as_deref(),
            Some("always"),
            "its restart policy is given back"
        );
    };
    refused(&f, "is running");
    // Stopped, but the engine would start it again whenever it restarts.
    assert!(docker(a, &["stop", &intruder]).status.success());
    refused(&f, "restart: always");
    assert!(docker(a, &["rm", "-f", &intruder]).status.success());

    // Killed after the switch: the old container is stopped, and an
    // engine restart on the source does not bring it back.
    let o = f.drover_with(&["reconcile"], &[("DROVER_TEST_ABORT_AT", "start")]);
    assert!(!o.status.success());
    assert_eq!(
        inspect(a, &app, "{{.HostConfig.RestartPolicy.Name}}").as_deref(),
        Some("no")
    );
    host_script("stop", "node-a");
    host_script("start", "node-a");
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(!running(&f.hosts[0], &app));
    f.reconcile();
    assert!(running(&f.hosts[1], &app) && !running(&f.hosts[0], &app));
}

#[test]
fn an_app_renamed_as_it_moves_is_gone_before_the_last_copy() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let name = "ds-rename";
    let f = Fixture::new(hosts, &[name]);
    // The old app goes on writing for 6 s after it is told to stop.
    let stubborn = writer(name, "node-a", &["data"])
        .replace("trap \\\"exit 0\\\" TERM", "trap \\\"\\\" TERM")
        .replace("stop_grace_period: 2s", "stop_grace_period: 6s");
    assert_ne!(stubborn, writer(name, "node-a", &["data"]));
    f.write("stack.yaml", &stubborn);
    f.reconcile();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let renamed = writer(name, "node-b", &["data"]).replace("\n  app:\n", "\n  app2:\n");
    f.write("stack.yaml", &renamed);
    let o = f.drover(&["reconcile"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(inspect(&f.hosts[0], &format!("{name}-app"), "{{.Id}}").is_none());
    assert!(running(&f.hosts[1], &format!("{name}-app2")));
    // Every line the old app wrote is on node-b.
    let vol = format!("{name}-data");
    let kept = in_volume(&f.hosts[0], &vol, "wc -c < /d/log");
    assert_eq!(
        in_volume(
            &f.hosts[1],
            &vol,
            &format!("head -c {kept} /d/log | md5sum")
        ),
        in_volume(&f.hosts[0], &vol, "md5sum < /d/log")
    );
}

#[test]
fn a_target_that_stops_answering_with_the_app_stopped_rolls_back_in_bounded_time() {
    use std::io::BufRead;
    let name = "ds-frozen";
    let Some((_turn, f)) = deployed(name, &["data"]) else {
        return;
    };
    let app = format!("{name}-app");
    f.write("stack.yaml", &writer(name, "node-b", &["data"]));
    let mut child = f
        .command(&["reconcile"])
        .env("DROVER_LOG", "drover=info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    // As soon as the app is being stopped, node-b's engine freezes.
    let mut frozen_at = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let stop = line.contains("phase=stop") || line.contains("phase=\"stop\"");
        if line.contains("relocation progress") && stop {
            host_script("freeze", "node-b");
            frozen_at = Some(std::time::Instant::now());
            break;
        }
    }
    let frozen_at = frozen_at.expect("the move reached its stop");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    let took = frozen_at.elapsed();
    host_script("thaw", "node-b");
    eprintln!(
        "{}\nthe move ended {took:?} after the target froze",
        rest.join("\n")
    );
    assert!(!status.success());
    assert!(
        took < std::time::Duration::from_secs(60),
        "the move ended {took:?} after the target froze"
    );
    assert!(
        rest.iter()
            .any(|l| l.contains("`node-b` stopped answering")),
        "{rest:?}"
    );
    assert!(
        running(&f.hosts[0], &app),
        "the app runs on its source again"
    );
    // Once the target answers again, the move completes.
    f.reconcile();
    assert!(running(&f.hosts[1], &app) && !running(&f.hosts[0], &app));
}

#[test]
fn a_host_removed_from_the_cluster_with_its_data_is_read_and_nothing_is_made_empty() {
    let name = "ds-left";
    let Some((_turn, f)) = deployed(name, &["data"]) else {
        return;
    };
    let app = format!("{name}-app");
    let vol = format!("{name}-data");
    put(&f, 0, &app, "echo precious > /data/keep");
    // node-a leaves the Cluster in the same change that moves the app.
    let b = &f.hosts[1];
    f.write(
        "cluster.yaml",
        &format!(
            "kind: Cluster\nhosts:\n  node-b: {{ endpoint: '{}', address: '{}' }}\n",
            b.endpoint, b.address
        ),
    );
    f.write("stack.yaml", &writer(name, "node-b", &["data"]));
    let o = f.drover(&["reconcile"]);
    assert_eq!(o.status.code(), Some(1));
    let said = stdout(&o) + &stderr(&o);
    assert!(
        said.contains(&format!(
            "volume `{vol}` has a copy on `node-a`, which is no longer in the Cluster"
        )),
        "{said}"
    );
    assert!(
        !docker(b, &["volume", "inspect", &vol]).status.success(),
        "no empty copy is made on node-b"
    );
    assert!(!running(b, &app));
    assert!(running(&f.hosts[0], &app), "node-a is left as it was");
    // The former host is shown by observe, under `former`.
    let obs: serde_json::Value = serde_json::from_slice(&f.drover(&["observe"]).stdout).unwrap();
    assert!(obs["former"]["node-a"].is_object(), "{obs}");
    // Back in the Cluster, the data moves.
    f.write(
        "cluster.yaml",
        &format!(
            "kind: Cluster\nhosts:\n  node-a: {{ endpoint: '{}', address: '{}' }}\n  node-b: {{ endpoint: '{}', address: '{}' }}\n",
            f.hosts[0].endpoint, f.hosts[0].address, b.endpoint, b.address
        ),
    );
    f.reconcile();
    assert_eq!(in_volume(b, &vol, "cat /d/keep"), "precious");
    assert!(running(b, &app));
}

#[test]
fn a_host_holding_objects_of_a_newer_drover_is_not_read_and_nothing_is_changed() {
    let Some((_turn, f)) = deployed("newer", &["data"]) else {
        return;
    };
    // A record a later drover made, in a format this one does not know.
    let made = docker(
        &f.hosts[0],
        &[
            "volume",
            "create",
            "--label",
            "drover.managed=true",
            "--label",
            "drover.internal=true",
            "--label",
            "drover.contract=2",
            "--label",
            "drover.stack=newer",
            "drover-future-newer",
        ],
    );
    assert!(made.status.success());
    f.write("stack.yaml", &writer("newer", "node-b", &["data"]));
    let o = f.drover(&["reconcile"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o)
            .contains("made by a newer drover (on-host contract version 2; this drover knows 1)"),
        "{}",
        stderr(&o)
    );
    // The app was not moved: the data stays where it was, in use.
    assert!(running(&f.hosts[0], "newer-app"));
    assert!(inspect(&f.hosts[1], "newer-data", "{{.Name}}").is_none());
}
