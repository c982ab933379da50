//! What the end-to-end test files share: the test hosts, a manifest
//! directory that cleans up after itself, the docker CLI and engine events.
//!
//! `scripts/test-hosts.sh up 2` starts the engines and `scripts/test.sh`
//! passes them in `DROVER_TEST_HOSTS` (`name=unix:///sock@address,…`). When
//! it is unset the tests say so and pass, unless `DROVER_E2E_REQUIRED` is
//! set (as CI does), when they fail.

#![allow(dead_code)]

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
            }
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
