//! What the end-to-end test files share: the test hosts, a manifest
//! directory that cleans up after itself, the docker CLI and engine events.
//!
//! `scripts/test-hosts.sh up 2` starts the engines and `scripts/test.sh`
//! passes them in `DROVER_TEST_HOSTS` (`name=unix:///sock@address,…`). When
//! it is unset the tests say so and pass, unless `DROVER_E2E_REQUIRED` is
//! set (as CI does), when they fail.

#![allow(dead_code)]

pub mod git;

use std::path::Path;
use std::process::{Command, Output};

pub const IMAGE: &str = "drover-test/busybox:1";

/// drover acts on whole hosts: a directory without another test's stack
/// would remove it. The tests take turns (test files run one after another).
static HOSTS_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub struct TestHost {
    pub name: String,
    pub endpoint: String,
    pub address: String,
}

/// The first two test hosts, named `node-a` and `node-b` in the manifests
/// whatever their names in `DROVER_TEST_HOSTS`.
pub fn hosts() -> Option<(std::sync::MutexGuard<'static, ()>, Vec<TestHost>)> {
    let Ok(spec) = std::env::var("DROVER_TEST_HOSTS") else {
        assert!(
            std::env::var_os("DROVER_E2E_REQUIRED").is_none(),
            "DROVER_TEST_HOSTS is not set: start hosts with scripts/test-hosts.sh"
        );
        eprintln!("skipped: no test hosts (run scripts/test.sh, or scripts/test-hosts.sh up 2 and set DROVER_TEST_HOSTS)");
        return None;
    };
    let list: Vec<TestHost> = spec
        .split(',')
        .filter_map(|h| {
            let (name, rest) = h.split_once('=')?;
            let (endpoint, address) = rest.split_once('@')?;
            Some(TestHost {
                name: name.into(),
                endpoint: endpoint.into(),
                address: address.into(),
            })
        })
        .collect();
    assert!(
        list.len() >= 2,
        "the end-to-end tests need two hosts: {spec}"
    );
    let list = list
        .into_iter()
        .take(2)
        .zip(["node-a", "node-b"])
        .map(|(h, name)| TestHost {
            name: name.into(),
            ..h
        })
        .collect();
    let guard = HOSTS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    Some((guard, list))
}

/// Runs the docker CLI against one host.
pub fn docker(host: &TestHost, args: &[&str]) -> Output {
    Command::new("docker")
        .arg("-H")
        .arg(&host.endpoint)
        .args(args)
        .output()
        .expect("the docker CLI runs")
}

pub fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

pub fn inspect(host: &TestHost, name: &str, format: &str) -> Option<String> {
    let o = docker(host, &["inspect", "--format", format, name]);
    o.status.success().then(|| text(&o))
}

/// A manifest directory and everything its stacks make, removed on drop.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub hosts: Vec<TestHost>,
    pub stacks: Vec<String>,
    pub extra_containers: Vec<(usize, String)>,
}

impl Fixture {
    pub fn new(hosts: Vec<TestHost>, stacks: &[&str]) -> Fixture {
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
            hosts,
            stacks: stacks.iter().map(|s| s.to_string()).collect(),
            extra_containers: Vec::new(),
        };
        f.cleanup();
        let mut cluster = String::from("kind: Cluster\nhosts:\n");
        for h in &f.hosts {
            cluster.push_str(&format!(
                "  {}: {{ endpoint: '{}', address: '{}' }}\n",
                h.name, h.endpoint, h.address
            ));
        }
        f.write("cluster.yaml", &cluster);
        f
    }

    pub fn write(&self, file: &str, content: &str) {
        std::fs::write(self.dir.path().join(file), content).unwrap();
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `drover ARGS` with the directory put after the (sub)command
    /// (`reconcile DIR`, `volume rm DIR`), ready to run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut full: Vec<&str> = args.to_vec();
        let at = if args.first() == Some(&"volume") {
            2
        } else {
            1
        };
        full.insert(at, self.path().to_str().unwrap());
        let mut c = Command::new(env!("CARGO_BIN_EXE_drover"));
        c.args(&full).env("NO_COLOR", "1").env("DROVER_LOG", "warn");
        c
    }

    pub fn drover(&self, args: &[&str]) -> Output {
        self.drover_with(args, &[])
    }

    /// Runs drover with extra environment variables.
    pub fn drover_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        eprintln!(
            "$ {} drover {}\n{}{}",
            env.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            args.join(" "),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    pub fn reconcile(&self) -> Output {
        let o = self.drover(&["reconcile"]);
        assert!(o.status.success(), "reconcile failed");
        o
    }

    pub fn cleanup(&self) {
        for h in &self.hosts {
            for s in &self.stacks {
                let filter = format!("label=drover.stack={s}");
                let ids = text(&docker(h, &["ps", "-aq", "--filter", &filter]));
                for id in ids.lines() {
                    docker(h, &["rm", "-f", id]);
                }
                let vols = text(&docker(h, &["volume", "ls", "-q", "--filter", &filter]));
                for v in vols.lines() {
                    docker(h, &["volume", "rm", "-f", v]);
                }
                docker(h, &["network", "rm", &format!("drover-{s}")]);
                let nets = text(&docker(h, &["network", "ls", "-q", "--filter", &filter]));
                for n in nets.lines() {
                    docker(h, &["network", "rm", n]);
                }
                // Snapshots carry no stack label, and records are drover's.
                let all = text(&docker(h, &["volume", "ls", "-q"]));
                for v in all.lines() {
                    let snapshot = v.starts_with(&format!("{s}-")) && v.contains('.');
                    let record = ["snapshot", "freeze", "restore", "seed"]
                        .iter()
                        .any(|k| v.starts_with(&format!("drover-{k}-{s}-")));
                    if snapshot || record {
                        docker(h, &["volume", "rm", "-f", v]);
                    }
                }
            }
        }
        // A lease left by a drover a test killed.
        for h in &self.hosts {
            docker(h, &["rm", "-f", "drover-lease"]);
        }
        for (h, name) in &self.extra_containers {
            docker(&self.hosts[*h], &["rm", "-f", name]);
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.cleanup();
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Docker's clock, as `docker events --since` takes it.
pub fn now() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}.{:09}", t.as_secs(), t.subsec_nanos())
}

/// Events of one host between two instants: `(time_nano, type, action, name)`.
pub fn events(host: &TestHost, since: &str, until: &str) -> Vec<(i64, String, String, String)> {
    let o = docker(
        host,
        &[
            "events",
            "--since",
            since,
            "--until",
            until,
            "--format",
            "{{json .}}",
        ],
    );
    text(&o)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            (
                v["timeNano"].as_i64().unwrap_or(0),
                v["Type"].as_str().unwrap_or("").to_string(),
                v["Action"].as_str().unwrap_or("").to_string(),
                v["Actor"]["Attributes"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

/// Events that change something (health checks run `exec`s and report
/// `health_status`; those are the engine's, not drover's).
pub fn writes(evs: &[(i64, String, String, String)], stack: &str) -> Vec<String> {
    evs.iter()
        .filter(|(_, _, action, name)| {
            !action.starts_with("exec_")
                && !action.starts_with("health_status")
                && (name.starts_with(stack) || name.contains(stack))
        })
        .map(|(_, t, a, n)| format!("{t} {a} {n}"))
        .collect()
}

/// Waits until `f` holds, polling every 50 ms; panics naming `what` after
/// `timeout`. Returns how long it took.
pub fn wait_until(
    timeout: std::time::Duration,
    what: &str,
    mut f: impl FnMut() -> bool,
) -> std::time::Duration {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    start.elapsed()
}

/// A `drover controller` running on a fixture's directory, with
/// `--listen` on a free loopback port. Stopped (SIGTERM) on drop; its log
/// is printed when the test failed.
pub struct Controller {
    pub child: std::process::Child,
    pub port: u16,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Fixture {
    /// `drover controller --listen … ARGS DIR`, started and listening.
    pub fn controller(&self, args: &[&str], env: &[(&str, &str)]) -> Controller {
        self.spawn_controller(args, env, true)
    }

    /// `drover controller --listen … ARGS` without the directory: the
    /// controller follows a Git remote given in `args`.
    pub fn git_controller(&self, args: &[&str], env: &[(&str, &str)]) -> Controller {
        self.spawn_controller(args, env, false)
    }

    /// The cluster document this fixture wrote.
    pub fn cluster_yaml(&self) -> String {
        std::fs::read_to_string(self.path().join("cluster.yaml")).unwrap()
    }

    fn spawn_controller(&self, args: &[&str], env: &[(&str, &str)], dir: bool) -> Controller {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let mut full = vec!["controller", "--listen", &listen];
        full.extend_from_slice(args);
        let mut c = if dir {
            self.command(&full)
        } else {
            let mut c = Command::new(env!("CARGO_BIN_EXE_drover"));
            c.args(&full).env("NO_COLOR", "1");
            c
        };
        c.env("DROVER_LOG", "drover=debug");
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut l = sink.lock().unwrap_or_else(|p| p.into_inner());
                l.push_str(&line);
                l.push('\n');
            }
        });
        let ctl = Controller { child, port, log };
        wait_until(
            std::time::Duration::from_secs(30),
            "the controller to listen",
            || ctl.get("/livez").is_some(),
        );
        ctl
    }
}

/// `GET path` from `host:port` over HTTP/1.0: the status code and body, or
/// `None` when nothing answers.
pub fn http_get(host: &str, port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect((host, port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((code, body.to_string()))
}

impl Controller {
    /// `GET path` from the controller.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get("127.0.0.1", self.port, path)
    }

    /// `/healthz` as JSON, with its status code.
    pub fn health(&self) -> (u16, serde_json::Value) {
        let (code, body) = self.get("/healthz").expect("/healthz answers");
        (code, serde_json::from_str(&body).expect("/healthz is JSON"))
    }

    /// The value of one sample of `/metrics` (`name{labels}` as printed), or
    /// `None` when it is absent.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    }

    /// The passes finished so far.
    pub fn passes(&self) -> u64 {
        self.health().1["passes"].as_u64().unwrap_or(0)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn signal(&self, sig: &str) {
        let o = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .output()
            .unwrap();
        assert!(o.status.success(), "kill -{sig}: {}", stderr(&o));
    }

    /// Waits for the process to exit; `None` if it did not within `timeout`.
    pub fn wait_exit(&mut self, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        let start = std::time::Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .output();
            if self.wait_exit(std::time::Duration::from_secs(30)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("--- controller log ---\n{}", self.log());
        }
    }
}

/// Runs a shell script in a throwaway container with `mount` (`-v`), its
/// output kept out of the engine's logs.
fn run_with(host: &TestHost, mount: &str, script: &str) -> String {
    let o = docker(
        host,
        &[
            "run",
            "--rm",
            "--log-driver",
            "none",
            "-v",
            mount,
            IMAGE,
            "sh",
            "-c",
            script,
        ],
    );
    assert!(o.status.success(), "{script}: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A listing of a volume from a throwaway container: path, type, mode,
/// owner, size, and a content hash or symlink target for every entry.
pub fn listing(host: &TestHost, volume: &str) -> String {
    const SCRIPT: &str = r#"cd /d && find . | sort | while IFS= read -r f; do
  if [ -L "$f" ]; then x="-> $(readlink "$f") $(stat -c '%u %g' "$f")"
  elif [ -d "$f" ]; then x="dir $(stat -c '%a %u %g' "$f")"
  else x="$(stat -c '%F %a %u %g %s' "$f") $(md5sum < "$f")"; fi
  echo "$f $x"
done"#;
    run_with(host, &format!("{volume}:/d:ro"), SCRIPT)
}

/// Runs a shell command in a throwaway container with the volume at /d.
pub fn in_volume(host: &TestHost, volume: &str, script: &str) -> String {
    run_with(host, &format!("{volume}:/d"), script)
        .trim()
        .to_string()
}

/// Two apps that take a few seconds to apply: `db` on node-a is healthy
/// only after 3 s, and `dependent` on node-b waits for it (YAML under a
/// Stack's `apps:`).
pub fn slow_apps(dependent: &str) -> String {
    format!(
        "  db:
    image: {IMAGE}
    host: node-a
    command: ['sh', '-c', 'sleep 3; touch /tmp/up; trap exit TERM; while :; do sleep 1; done']
    healthcheck: {{ test: ['CMD', 'test', '-f', '/tmp/up'], interval: 1s, retries: 30 }}
    stop_grace_period: 1s
  {dependent}:
    image: {IMAGE}
    host: node-b
    depends_on: {{ db: {{ condition: healthy }} }}
    command: ['sh', '-c', 'trap exit TERM; while :; do sleep 1; done']
    stop_grace_period: 1s
"
    )
}

pub fn running(host: &TestHost, container: &str) -> bool {
    inspect(host, container, "{{.State.Running}}").as_deref() == Some("true")
}

/// `scripts/test-hosts.sh WHAT NAME` (`stop`, `kill`, `start`): an engine
/// stopped, crashed or started again under a test.
pub fn host_script(what: &str, name: &str) {
    host_script_with(what, name, &[]);
}

/// `host_script` with environment variables for the script
/// (`DROVER_HOST_DATA_SIZE`, `DROVER_HOST_TLS`).
pub fn host_script_with(what: &str, name: &str, env: &[(&str, &std::ffi::OsStr)]) {
    let o = host_script_output(what, name, env);
    assert!(o.status.success(), "{what} {name}: {}", stderr(&o));
}

/// `scripts/test-hosts.sh WHAT NAME`, whatever its outcome.
pub fn host_script_output(what: &str, name: &str, env: &[(&str, &std::ffi::OsStr)]) -> Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/test-hosts.sh");
    let mut c = Command::new(script);
    c.args([what, &engine_name(name)]);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// The engine a test's `node-a` or `node-b` is: the first or second of
/// `DROVER_TEST_HOSTS` (see [`hosts`]); other names are engines' own.
fn engine_name(name: &str) -> String {
    let index = match name {
        "node-a" => 0,
        "node-b" => 1,
        _ => return name.to_string(),
    };
    std::env::var("DROVER_TEST_HOSTS")
        .ok()
        .and_then(|spec| {
            spec.split(',')
                .nth(index)
                .and_then(|h| h.split_once('='))
                .map(|(n, _)| n.to_string())
        })
        .unwrap_or_else(|| name.to_string())
}

/// node-c: an engine on a small disk of its own (room for the helper image
/// and about 200 MiB), started for a test, playing `node-b`; and the path
/// of its disk.
pub fn small_disk_host() -> (TestHost, &'static str) {
    let bin = std::fs::metadata(env!("CARGO_BIN_EXE_drover"))
        .unwrap()
        .len();
    let size = format!("{}m", ((2 * bin) >> 20) + 200);
    host_script_with(
        "start",
        "node-c",
        &[("DROVER_HOST_DATA_SIZE", size.as_ref())],
    );
    let c = TestHost {
        name: "node-b".into(),
        endpoint: "unix:///tmp/drover-hosts/node-c.sock".into(),
        address: "10.77.0.13".into(),
    };
    (c, "/var/lib/drover-hosts/node-c/data")
}

/// The bytes left on the file system of `path`.
pub fn available(path: &str) -> u64 {
    let o = Command::new("df")
        .args(["--output=avail", "-B1", path])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df prints the space left")
}

/// Fills the file system of `disk` with the file `filler` to within
/// `left` bytes.
pub fn fill_disk(disk: &str, filler: &str, left: u64) {
    let fill = available(disk).saturating_sub(left);
    let o = Command::new("fallocate")
        .args(["-l", &fill.to_string(), filler])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A CA, a server certificate for `ip` and a client certificate, as
/// `ca.pem`, `server-cert.pem`, `server-key.pem`, `cert.pem`, `key.pem`;
/// and a second CA with its own client pair (`other-*.pem`).
pub fn make_certificates(dir: &Path, ip: &str) {
    let script = format!(
        r#"set -e
ca() {{ openssl genrsa -out "$1-key.pem" 2048; openssl req -x509 -new -key "$1-key.pem" -days 2 -subj "/CN=$1" -out "$1.pem"; }}
sign() {{ # NAME CA EXT
  openssl genrsa -out "$1-key.pem" 2048
  openssl req -new -key "$1-key.pem" -subj "/CN=$1" -out "$1.csr"
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2-key.pem" -CAcreateserial -days 2 -extfile "$1.ext" -out "$1-cert.pem"
}}
ca ca; ca other
sign server ca "subjectAltName=IP:{ip}
extendedKeyUsage=serverAuth"
sign client ca "extendedKeyUsage=clientAuth"
sign other-client other "extendedKeyUsage=clientAuth"
mv client-cert.pem cert.pem; mv client-key.pem key.pem
"#
    );
    let o = Command::new("sh")
        .args(["-c", &script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "openssl: {}", stderr(&o));
}
