//! Security end to end: TLS to a real `--tlsverify` engine with certificates
//! made here, the warning for plain TCP, secrets that never show in any
//! output, and nothing drover makes being privileged or mounting a host
//! path.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

#[test]
fn a_tls_engine_is_managed_with_its_certificates_and_refused_without_the_right_ones() {
    let Some((_turn, _hosts)) = hosts() else {
        return;
    };
    // node-d: an engine that also listens on tcp://10.77.0.14:2376 and
    // takes only clients with a certificate of its CA.
    let certs = tempfile::tempdir().unwrap();
    let ip = "10.77.0.14";
    make_certificates(certs.path(), ip);
    host_script_output("stop", "node-d", &[]);
    host_script_with(
        "start",
        "node-d",
        &[("DROVER_HOST_TLS", certs.path().as_os_str())],
    );
    let unix = TestHost {
        name: "secure".into(),
        endpoint: "unix:///tmp/drover-hosts/node-d.sock".into(),
        address: ip.into(),
    };
    let f = Fixture::new(vec![unix], &["tls"]);
    let cluster = |ca: &str, cert: &str, key: &str| {
        let c = certs.path().display();
        format!(
            "kind: Cluster\nhosts:\n  secure:\n    endpoint: tcp://{ip}:2376\n    address: {ip}\n    tls: {{ ca: {c}/{ca}, cert: {c}/{cert}, key: {c}/{key} }}\n"
        )
    };
    f.write(
        "stack.yaml",
        &format!(
            "kind: Stack\nname: tls\napps:\n  web:\n    image: {IMAGE}\n    host: secure\n    command: ['sleep', '300']\n"
        ),
    );

    // Without the right certificates: refused, named, nothing made.
    f.write(
        "cluster.yaml",
        &cluster("other.pem", "other-client-cert.pem", "other-client-key.pem"),
    );
    let o = f.drover(&["reconcile"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("host `secure` cannot be reached at tcp://10.77.0.14:2376"),
        "{}",
        stderr(&o)
    );
    f.write(
        "cluster.yaml",
        &format!(
            "kind: Cluster\nhosts:\n  secure: {{ endpoint: 'tcp://{ip}:2376', address: '{ip}' }}\n"
        ),
    );
    let o = f.drover(&["reconcile"]);
    assert_eq!(o.status.code(), Some(1), "plain HTTP to a TLS port fails");
    assert!(
        stderr(&o).contains("plain TCP to a remote Docker host"),
        "and warns"
    );
    assert!(inspect(&f.hosts[0], "tls-web", "{{.Id}}").is_none());

    // The engine's certificate is trusted by the system (here through
    // SSL_CERT_FILE) but not signed by the CA the Cluster names: refused.
    f.write("cluster.yaml", &cluster("other.pem", "cert.pem", "key.pem"));
    let system_ca = certs.path().join("ca.pem");
    let o = f.drover_with(
        &["reconcile"],
        &[("SSL_CERT_FILE", system_ca.to_str().unwrap())],
    );
    assert_eq!(o.status.code(), Some(1), "only the Cluster's CA counts");
    assert!(
        stderr(&o).contains("host `secure` cannot be reached"),
        "{}",
        stderr(&o)
    );
    assert!(inspect(&f.hosts[0], "tls-web", "{{.Id}}").is_none());
    // A FIFO (or a device) as a TLS file is refused at once, never waited on.
    let fifo = certs.path().join("fifo.pem");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    f.write("cluster.yaml", &cluster("fifo.pem", "cert.pem", "key.pem"));
    let o = f.drover(&["reconcile", "--dry-run"]);
    assert_eq!(o.status.code(), Some(1));
    let said = stdout(&o) + &stderr(&o);
    assert!(said.contains("is not a regular file"), "{said}");

    // With them: managed like any host, and no warning.
    f.write("cluster.yaml", &cluster("ca.pem", "cert.pem", "key.pem"));
    let o = f.drover(&["reconcile"]);
    assert!(o.status.success());
    assert!(!stderr(&o).contains("plain TCP"), "{}", stderr(&o));
    assert_eq!(
        inspect(&f.hosts[0], "tls-web", "{{.State.Status}}").as_deref(),
        Some("running")
    );
    let o = f.drover(&["reconcile", "--dry-run", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "in sync over TLS");
    host_script_output("stop", "node-d", &[]);
}

#[test]
fn plain_tcp_to_another_machine_warns_and_loopback_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let run = |endpoint: &str| {
        std::fs::write(
            dir.path().join("cluster.yaml"),
            format!(
                "kind: Cluster\nhosts:\n  far: {{ endpoint: '{endpoint}', address: 10.77.0.99 }}\n"
            ),
        )
        .unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["reconcile", "--dry-run"])
            .arg(dir.path())
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        stderr(&o)
    };
    // Nothing listens on either: the warning comes before the attempt.
    let far = run("tcp://10.77.0.99:2375");
    assert!(
        far.contains("plain TCP to a remote Docker host: anyone on the network can read and control it; use TLS"),
        "{far}"
    );
    assert!(far.contains("far"), "{far}");
    assert!(!run("tcp://127.0.0.1:1").contains("plain TCP"));
}

const CANARY_VAR: &str = "canary-var-7f3e9a1c";
const CANARY_FILE: &str = "canary-file-5b2d80e4";

/// Everything a command printed, for grepping.
fn all_output(o: &std::process::Output) -> String {
    stdout(o) + &stderr(o)
}

#[test]
fn secrets_never_appear_in_plans_logs_metrics_errors_status_or_observe() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["sec"]);
    std::fs::create_dir_all(f.path().join("secrets")).unwrap();
    f.write("secrets/api.env", &format!("API_KEY={CANARY_FILE}\n"));
    let stack = |extra: &str| {
        format!(
            "kind: Stack
name: sec
apps:
  api:
    image: {IMAGE}
    host: node-a
    env_file: [secrets/api.env]
    environment: {{ PASSWORD: '${{DB_PASSWORD}}', MODE: plain }}
    command: ['sh', '-c', 'trap exit TERM; while :; do sleep 1; done']
    stop_grace_period: 1s
{extra}"
        )
    };
    f.write("stack.yaml", &stack(""));
    let secret = [("DB_PASSWORD", CANARY_VAR), ("DROVER_LOG", "drover=debug")];
    let changed = [
        ("DB_PASSWORD", "canary-var-changed-1d9c"),
        ("DROVER_LOG", "drover=debug"),
    ];
    let mut seen = Vec::new();
    let mut run = |args: &[&str], env: &[(&str, &str)]| {
        let o = f.drover_with(args, env);
        seen.push((args.join(" "), all_output(&o)));
        o
    };
    run(&["reconcile", "--dry-run"], &secret);
    run(&["reconcile", "--dry-run", "--output", "json"], &secret);
    run(&["reconcile", "--log-format", "json"], &secret);
    run(&["observe", "--output", "json"], &secret);
    run(&["status"], &secret);
    run(&["volume", "ls"], &secret);
    run(&["graph"], &secret);
    // A changed secret: the plan says a secret changed, not what to.
    let o = run(&["reconcile", "--dry-run"], &changed);
    assert!(
        stdout(&o).contains("a secret value changed"),
        "{}",
        stdout(&o)
    );
    run(&["reconcile", "--output", "json"], &changed);
    // Errors about values from variables do not show them.
    f.write("bad.yaml", &format!("kind: Stack\nname: sec2\napps:\n  x:\n    image: {IMAGE}\n    host: node-a\n    ports: ['${{DB_PASSWORD}}:80']\n    memory: ${{DB_PASSWORD}}\n"));
    let o = run(&["validate"], &secret);
    assert_eq!(o.status.code(), Some(1));
    run(&["reconcile", "--dry-run"], &secret);
    std::fs::remove_file(f.path().join("bad.yaml")).unwrap();

    // The controller: its log, /metrics and /healthz, through a change.
    let ctl = f.controller(&["--resync", "300s"], &secret);
    wait_until(
        Duration::from_secs(30),
        "the controller to converge",
        || ctl.health().0 == 200,
    );
    docker(&f.hosts[0], &["stop", "sec-api"]);
    wait_until(
        Duration::from_secs(30),
        "the controller to restore sec-api",
        || running(&f.hosts[0], "sec-api"),
    );
    seen.push(("/metrics".into(), ctl.get("/metrics").unwrap().1));
    seen.push(("/healthz".into(), ctl.get("/healthz").unwrap().1));
    seen.push(("controller log".into(), ctl.log()));
    drop(ctl);

    // The labels drover writes carry digests, not values.
    let labels = inspect(&f.hosts[0], "sec-api", "{{json .Config.Labels}}").unwrap();
    seen.push(("labels".into(), labels));
    let env = inspect(&f.hosts[0], "sec-api", "{{json .Config.Env}}").unwrap();
    assert!(
        env.contains(CANARY_VAR) && env.contains(CANARY_FILE),
        "the app gets them: {env}"
    );

    for (what, text) in &seen {
        for canary in [CANARY_VAR, CANARY_FILE, "canary-var-changed-1d9c"] {
            assert!(!text.contains(canary), "`{what}` shows a secret:\n{text}");
        }
    }
    assert!(
        seen.iter().any(|(_, t)| t.contains("PASSWORD")),
        "names are shown"
    );
}

/// The labels of a container, as JSON.
fn labels_of(h: &TestHost, name: &str) -> serde_json::Value {
    serde_json::from_str(&inspect(h, name, "{{json .Config.Labels}}").unwrap()).unwrap()
}

/// One field's digest from a container's `drover.spec-fields`.
fn field_digest(labels: &serde_json::Value, field: &str) -> String {
    drover::desired::decode_field_digests(labels["drover.spec-fields"].as_str().unwrap())
        .remove(field)
        .unwrap_or_default()
}

/// A host's key for secret digests, from its key volume.
fn host_key(h: &TestHost) -> Option<String> {
    let o = docker(
        h,
        &[
            "volume",
            "inspect",
            "--format",
            "{{index .Labels \"drover.secret-key\"}}",
            drover::contract::hostkey::VOLUME,
        ],
    );
    o.status.success().then(|| text(&o))
}

#[test]
fn secret_digests_are_keyed_by_each_host_and_no_snapshot_holds_the_key() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["keyed"]);
    let stack = |host: &str| {
        format!(
            "kind: Stack
name: keyed
apps:
  api:
    image: {IMAGE}
    host: {host}
    environment: {{ PASSWORD: '${{DB_PASSWORD}}' }}
    command: ['sh', '-c', 'trap exit TERM; while :; do sleep 1; done']
    stop_grace_period: 1s
"
        )
    };
    let mut outputs = Vec::new();
    let mut run = |args: &[&str], password: &str| {
        let o = f.drover_with(args, &[("DB_PASSWORD", password)]);
        outputs.push(all_output(&o));
        o
    };
    f.write("stack.yaml", &stack("node-a"));
    assert!(run(&["reconcile"], "hunter2").status.success());
    let first = labels_of(&f.hosts[0], "keyed-api");
    let o = run(&["reconcile"], "hunter3");
    assert!(
        stdout(&o).contains("a secret value changed (environment `PASSWORD`)"),
        "{}",
        stdout(&o)
    );
    let second = labels_of(&f.hosts[0], "keyed-api");
    // The spec hash does not depend on the password; its digest is keyed.
    assert_eq!(first["drover.spec-hash"], second["drover.spec-hash"]);
    let (d1, d2) = (
        field_digest(&first, "env.PASSWORD"),
        field_digest(&second, "env.PASSWORD"),
    );
    assert!(
        d1.starts_with('k') && d2.starts_with('k') && d1 != d2,
        "{d1} {d2}"
    );
    let key_a = host_key(&f.hosts[0]).expect("node-a has a key");
    let key = drover::contract::hostkey::HostKey::from_hex(&key_a).expect("a well-formed key");
    assert_eq!(key.digest("env.PASSWORD", "hunter3"), d2);

    // A snapshot says only that there is a key; planning against it
    // compares no secret value, and says so.
    let o = run(&["observe", "--output", "json"], "hunter3");
    let snapshot = stdout(&o);
    assert!(
        snapshot.contains("\"secret_key\": \"withheld\""),
        "{snapshot}"
    );
    let snap = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(snap.path(), &snapshot).unwrap();
    let o = run(
        &[
            "reconcile",
            "--dry-run",
            "--observed",
            snap.path().to_str().unwrap(),
        ],
        "hunter4",
    );
    assert!(
        stdout(&o).contains("No changes") && all_output(&o).contains("are not compared"),
        "{}",
        all_output(&o)
    );

    // Another host keys the same value differently.
    f.write("stack.yaml", &stack("node-b"));
    assert!(run(&["reconcile"], "hunter3").status.success());
    let third = labels_of(&f.hosts[1], "keyed-api");
    assert_ne!(field_digest(&third, "env.PASSWORD"), d2);
    let key_b = host_key(&f.hosts[1]).expect("node-b has a key");
    assert_ne!(key_a, key_b);

    // The key volume removed: the app is made again under a new key, once.
    assert!(docker(
        &f.hosts[1],
        &["volume", "rm", drover::contract::hostkey::VOLUME]
    )
    .status
    .success());
    let o = run(&["reconcile"], "hunter3");
    assert!(
        stdout(&o).contains("the host's key (volume `drover-secret-key`) is gone"),
        "{}",
        stdout(&o)
    );
    assert_ne!(host_key(&f.hosts[1]).unwrap(), key_b);
    let o = run(&["reconcile", "--dry-run"], "hunter3");
    assert!(stdout(&o).contains("No changes"), "{}", stdout(&o));

    for text in &outputs {
        for k in [&key_a, &key_b] {
            assert!(!text.contains(k.as_str()), "an output shows a key:\n{text}");
        }
        assert!(
            !text.contains("hunter"),
            "an output shows a secret:\n{text}"
        );
    }
}

/// What makes a container powerful on its host, from `docker inspect`.
fn powers(h: &TestHost, id: &str) -> String {
    inspect(
        h,
        id,
        "{{.Name}} privileged={{.HostConfig.Privileged}} binds={{.HostConfig.Binds}} caps={{.HostConfig.CapAdd}} drop={{.HostConfig.CapDrop}} ro={{.HostConfig.ReadonlyRootfs}} sec={{.HostConfig.SecurityOpt}} net={{.HostConfig.NetworkMode}} pid={{.HostConfig.PidMode}} ipc={{.HostConfig.IpcMode}} devices={{.HostConfig.Devices}} mounts={{range .Mounts}}{{.Type}}:{{.Name}} {{end}}",
    )
    .unwrap_or_default()
}

fn assert_harmless(line: &str) {
    assert!(line.contains("privileged=false"), "{line}");
    assert!(line.contains("binds=[]"), "{line}");
    // Capabilities added back only after dropping all, and only of
    // Docker's default set: what a helper needs to read and write files.
    let caps = line
        .split("caps=[")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .unwrap_or_default();
    for cap in caps.split_whitespace() {
        assert!(
            ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"].contains(&cap),
            "{line}"
        );
    }
    if line.starts_with("/drover-move-") {
        assert!(line.contains("drop=[ALL]"), "{line}");
        assert!(line.contains("ro=true"), "{line}");
        assert!(line.contains("sec=[no-new-privileges]"), "{line}");
    } else {
        assert!(caps.is_empty(), "{line}");
    }
    assert!(
        !line.contains("net=host") && !line.contains("pid=host"),
        "{line}"
    );
    assert!(!line.contains("ipc=host"), "{line}");
    assert!(line.contains("devices=[]"), "{line}");
    assert!(!line.contains("bind:"), "{line}");
}

#[test]
fn nothing_drover_makes_is_privileged_or_mounts_a_host_path() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["priv"]);
    let stack = |host: &str| {
        format!(
            "kind: Stack
name: priv
volumes:
  data: {{}}
apps:
  app:
    image: {IMAGE}
    host: {host}
    volumes: ['data:/data']
    command: ['sh', '-c', 'trap exit TERM; while :; do sleep 1; done']
    stop_grace_period: 1s
"
        )
    };
    f.write("stack.yaml", &stack("node-a"));
    f.reconcile();
    in_volume(
        &f.hosts[0],
        "priv-data",
        "dd if=/dev/zero of=/d/blob bs=1M count=16 2>/dev/null",
    );

    // A slow move: its helpers, markers and leases are looked at while
    // they exist.
    f.write("stack.yaml", &stack("node-b"));
    let mut child = f
        .command(&["reconcile"])
        .env("DROVER_TEST_THROTTLE", "4000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut looked = std::collections::BTreeSet::new();
    while child.try_wait().unwrap().is_none() {
        for h in &f.hosts {
            let ids = text(&docker(
                h,
                &["ps", "-aq", "--filter", "label=drover.internal=true"],
            ));
            for id in ids.lines() {
                let line = powers(h, id);
                if line.is_empty() {
                    continue; // gone meanwhile
                }
                assert_harmless(&line);
                looked.insert(line.split_whitespace().next().unwrap_or("").to_string());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(child.wait().unwrap().success());
    eprintln!("looked at: {looked:?}");
    assert!(looked.contains("/drover-lease"), "{looked:?}");
    assert!(
        looked.iter().any(|n| n.starts_with("/drover-move-")),
        "{looked:?}"
    );
    for h in &f.hosts {
        let ids = text(&docker(
            h,
            &["ps", "-aq", "--filter", "label=drover.managed=true"],
        ));
        for id in ids.lines() {
            assert_harmless(&powers(h, id));
        }
    }
    let app = powers(&f.hosts[1], "priv-app");
    assert!(app.contains("mounts=volume:priv-data"), "{app}");
}

#[test]
fn secrets_never_appear_in_pull_errors_trace_logs_or_healthz() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["sec2"]);
    // An image named by a variable, on a registry that refuses at once
    // (loopback: nothing leaves the machine); an app whose failing health
    // check prints a secret; one that waits for it.
    const IMAGE_CANARY: &str = "canary-image-4e1f";
    const HEALTH_CANARY: &str = "canary-health-9a8b";
    let stack = format!(
        "kind: Stack
name: sec2
apps:
  sick:
    image: {IMAGE}
    host: node-a
    environment: {{ PASSWORD: '${{DB_PASSWORD}}' }}
    command: ['sh', '-c', 'trap exit TERM; while :; do sleep 1; done']
    healthcheck: {{ test: ['CMD', 'sh', '-c', 'echo {HEALTH_CANARY}; exit 1'], interval: 1s, retries: 1 }}
    stop_grace_period: 1s
  waiter:
    image: {IMAGE}
    host: node-a
    depends_on: {{ sick: {{ condition: healthy }} }}
    command: ['sh', '-c', 'trap exit TERM; while :; do sleep 1; done']
    stop_grace_period: 1s
"
    );
    f.write("stack.yaml", &stack);
    let env = [("DB_PASSWORD", CANARY_VAR), ("DROVER_LOG", "trace")];
    let o = f.drover_with(&["reconcile", "--dependency-timeout", "4"], &env);
    let traced = all_output(&o);
    assert!(!traced.contains(CANARY_VAR), "the trace log shows a secret");
    assert!(
        traced.contains(HEALTH_CANARY),
        "the health output is in the log"
    );

    f.write(
        "image.yaml",
        "kind: Stack\nname: sec2-img\napps:\n  app:\n    image: '127.0.0.1:1/${SECRET_IMAGE}'\n    host: node-a\n    pull: missing\n",
    );
    let mut f = f;
    f.stacks.push("sec2-img".into());
    let env = [
        ("DB_PASSWORD", CANARY_VAR),
        ("SECRET_IMAGE", &format!("{IMAGE_CANARY}:1") as &str),
        ("DROVER_LOG", "trace"),
    ];
    let o = f.drover_with(&["reconcile", "--dependency-timeout", "4"], &env);
    assert_eq!(o.status.code(), Some(1));
    let said = all_output(&o);
    assert!(said.contains("cannot be pulled"), "{said}");
    assert!(
        !said.contains(IMAGE_CANARY),
        "a pull error shows the secret image: {said}"
    );
    std::fs::remove_file(f.path().join("image.yaml")).unwrap();

    let c = f.controller(
        &["--dependency-timeout", "4", "--resync", "1s"],
        &[("DB_PASSWORD", CANARY_VAR)],
    );
    wait_until(Duration::from_secs(60), "a failed pass", || {
        let (code, h) = c.health();
        code == 503 && h.to_string().contains("waited")
    });
    let (_, h) = c.health();
    assert!(!h.to_string().contains(HEALTH_CANARY), "/healthz: {h}");
    assert!(c.log().contains(HEALTH_CANARY), "the log keeps it");
}
