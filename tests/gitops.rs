//! End-to-end tests of `drover controller --git`: a real Git server on
//! loopback (`git daemon`, and smart HTTP through `git http-backend` behind
//! lighttpd with a password), commits and pushes made with `git`, webhook
//! deliveries signed as GitHub, Gitea and GitLab sign them, notifications
//! caught by an HTTP listener in the test, and real engines for the hosts.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::git::{GitServer, Repo, PASSWORD, USER};
use support::*;

const LONG: Duration = Duration::from_secs(60);

fn stack(name: &str, version: u32) -> String {
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

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Hosts, a Git server, a repository holding the cluster and
/// `stack(name, 1)` (pushed), and a fixture that cleans the stack up.
fn setup(name: &str) -> Option<(std::sync::MutexGuard<'static, ()>, Fixture, GitServer, Repo)> {
    let (turn, hosts) = hosts()?;
    let f = Fixture::new(hosts, &[name]);
    let server = GitServer::start();
    let repo = server.repo(name);
    repo.write("cluster.yaml", &f.cluster_yaml());
    repo.write("stacks/app.yaml", &stack(name, 1));
    repo.commit_and_push("first");
    Some((turn, f, server, repo))
}

/// `revision` of `/healthz`.
fn revision(ctl: &Controller) -> serde_json::Value {
    ctl.health().1["revision"].clone()
}

/// An HTTP listener that answers 200 to every request and keeps the
/// bodies: the notifications a controller sends.
struct Listener {
    port: u16,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Listener {
    fn start() -> Listener {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&bodies);
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = l.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_ok() {
                    if let Ok(v) = serde_json::from_slice(&body) {
                        sink.lock().unwrap().push(v);
                    }
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Listener { port, bodies }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/events", self.port)
    }

    fn events(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().unwrap().clone()
    }

    /// The events of `kind` so far.
    fn of(&self, kind: &str) -> Vec<serde_json::Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == kind)
            .collect()
    }
}

/// `POST path` with `headers` and `body`; the status code.
fn post(port: u16, path: &str, headers: &[(&str, String)], body: &[u8]) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

const SECRET: &str = "hook-secret-5b1d";

/// A push event's headers, signed as `forge` signs it.
fn signed(forge: &str, body: &[u8], secret: &str) -> Vec<(&'static str, String)> {
    let hex = drover::git::hooks::sign(secret.as_bytes(), body);
    match forge {
        "github" => vec![
            ("X-GitHub-Event", "push".into()),
            ("X-Hub-Signature-256", format!("sha256={hex}")),
        ],
        "gitea" => vec![("X-Gitea-Event", "push".into()), ("X-Gitea-Signature", hex)],
        "gitlab" => vec![
            ("X-Gitlab-Event", "Push Hook".into()),
            ("X-Gitlab-Token", secret.into()),
        ],
        _ => unreachable!(),
    }
}

#[test]
fn pushes_over_authenticated_http_are_followed_and_the_revision_shows_everywhere() {
    let name = "git-http";
    let Some((_turn, f, server, repo)) = setup(name) else {
        return;
    };
    let web = format!("{name}-web");
    let state = tempfile::tempdir().unwrap();
    let workdir = state.path().to_str().unwrap();
    // The server's certificate authority, as a private one is trusted.
    let ca = server.ca();
    let ca = ca.to_str().unwrap();

    // Wrong credentials: named, never printed, and nothing is applied.
    let wrong = f.git_controller(
        &[
            "--git",
            &repo.https,
            "--interval",
            "1s",
            "--workdir",
            workdir,
        ],
        &[
            ("SSL_CERT_FILE", ca),
            ("DROVER_GIT_USERNAME", USER),
            ("DROVER_GIT_PASSWORD", "wrong-password-91c2"),
        ],
    );
    wait_until(LONG, "the fetch to fail", || {
        revision(&wrong)["fetch_error"].is_string()
    });
    let shown = revision(&wrong)["fetch_error"]
        .as_str()
        .unwrap()
        .to_string();
    eprintln!("with a wrong password: {shown}");
    assert!(
        shown.contains("credentials") || shown.contains("401") || shown.contains("auth"),
        "{shown}"
    );
    assert!(!shown.contains("wrong-password-91c2"), "{shown}");
    assert!(
        !wrong.log().contains("wrong-password-91c2"),
        "{}",
        wrong.log()
    );
    assert!(inspect(&f.hosts[0], &web, "{{.Id}}").is_none());
    drop(wrong);

    let listener = Listener::start();
    let ctl = f.git_controller(
        &[
            "--git",
            &repo.https,
            "--interval",
            "1s",
            "--workdir",
            workdir,
            "--notify",
            &listener.url(),
        ],
        &[
            ("SSL_CERT_FILE", ca),
            ("DROVER_GIT_USERNAME", USER),
            ("DROVER_GIT_PASSWORD", PASSWORD),
        ],
    );
    wait_until(LONG, "version 1 to run", || {
        runs_version(&f.hosts[0], &web, 1)
    });
    let second = repo.work.join("stacks/app.yaml");
    std::fs::write(&second, stack(name, 2)).unwrap();
    let sha = repo.commit_and_push("version 2");
    wait_until(LONG, "version 2 to run", || {
        runs_version(&f.hosts[0], &web, 2)
    });
    wait_until(LONG, "the revision to be applied", || {
        let r = revision(&ctl);
        r["applied"]["sha"] == sha.as_str() && r["latest"]["state"] == "applied"
    });
    let r = revision(&ctl);
    assert_eq!(r["applied"]["subject"], "version 2", "{r}");
    assert_eq!(r["branch"], "main", "{r}");
    assert!(!r.to_string().contains(PASSWORD), "{r}");
    assert_eq!(
        ctl.metric(&format!("drover_revision_info{{sha=\"{sha}\"}}")),
        Some(1.0),
        "{}",
        ctl.get("/metrics").unwrap().1
    );
    // Every host records it: `drover status` shows it from anywhere.
    let o = f.drover(&["status"]);
    let out = stdout(&o);
    assert!(
        out.contains(&format!("revision {} \"version 2\"", &sha[..12])),
        "{out}"
    );
    wait_until(LONG, "the notification", || {
        listener
            .of("revision-applied")
            .iter()
            .any(|e| e["revision"] == sha.as_str())
    });
    let all = serde_json::to_string(&listener.events()).unwrap();
    assert!(!all.contains(PASSWORD), "{all}");
    assert!(!ctl.log().contains(PASSWORD));
}

#[test]
fn a_signed_webhook_fetches_at_once_and_a_bad_signature_is_refused() {
    let name = "git-hook";
    let Some((_turn, f, _server, repo)) = setup(name) else {
        return;
    };
    let web = format!("{name}-web");
    let state = tempfile::tempdir().unwrap();
    // Polling once an hour: only a delivery makes it fetch.
    let ctl = f.git_controller(
        &[
            "--git",
            &repo.daemon,
            "--interval",
            "1h",
            "--workdir",
            state.path().to_str().unwrap(),
            "--webhook-secret-env",
            "HOOK_SECRET",
        ],
        &[("HOOK_SECRET", SECRET)],
    );
    wait_until(LONG, "version 1 to run", || {
        runs_version(&f.hosts[0], &web, 1)
    });
    let body = br#"{"ref":"refs/heads/main"}"#;
    // Unsigned, wrongly signed: refused, and nothing is fetched.
    assert_eq!(post(ctl.port, "/hooks/git", &[], body), 401);
    assert_eq!(
        post(
            ctl.port,
            "/hooks/git",
            &signed("github", body, "other"),
            body
        ),
        401
    );
    let mut took = Vec::new();
    for (v, forge) in (2..=7).zip(["github", "gitea", "gitlab"].iter().cycle()) {
        repo.write("stacks/app.yaml", &stack(name, v));
        repo.commit_and_push(&format!("version {v}"));
        let start = Instant::now();
        assert_eq!(
            post(ctl.port, "/hooks/git", &signed(forge, body, SECRET), body),
            202
        );
        wait_until(LONG, &format!("version {v} to run"), || {
            runs_version(&f.hosts[0], &web, v)
        });
        took.push(start.elapsed());
    }
    eprintln!(
        "push → running with a webhook: median {:?}, each {:?}",
        median(took.clone()),
        took
    );
    // A flood of deliveries is folded into few fetches.
    let fetches = |ctl: &Controller| ctl.log().matches("fetched").count();
    let before = fetches(&ctl);
    for _ in 0..30 {
        assert_eq!(
            post(
                ctl.port,
                "/hooks/git",
                &signed("github", body, SECRET),
                body
            ),
            202
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    let after = fetches(&ctl);
    eprintln!("30 deliveries: {} fetches", after - before);
    assert!(after - before <= 10, "{}", ctl.log());
    assert_eq!(
        ctl.metric("drover_webhook_deliveries_total{result=\"refused\"}"),
        Some(2.0),
        "{}",
        ctl.get("/metrics").unwrap().1
    );
}

#[test]
fn an_invalid_commit_stays_out_and_is_said_once_and_fixes_and_force_pushes_are_followed() {
    let name = "git-bad";
    let Some((_turn, f, _server, repo)) = setup(name) else {
        return;
    };
    let web = format!("{name}-web");
    let first = git_head(&repo);
    let state = tempfile::tempdir().unwrap();
    let listener = Listener::start();
    let ctl = f.git_controller(
        &[
            "--git",
            &repo.daemon,
            "--interval",
            "1s",
            "--workdir",
            state.path().to_str().unwrap(),
            "--notify",
            &listener.url(),
        ],
        &[],
    );
    wait_until(LONG, "version 1 to run", || {
        runs_version(&f.hosts[0], &web, 1)
    });

    // A YAML error: located in the repository, never applied, said once.
    repo.write(
        "stacks/app.yaml",
        &stack(name, 2).replace("host: node-a", "host: [node-a"),
    );
    let bad = repo.commit_and_push("broken");
    wait_until(LONG, "the commit to be found invalid", || {
        let r = revision(&ctl);
        r["latest"]["sha"] == bad.as_str() && r["latest"]["state"] == "invalid"
    });
    let r = revision(&ctl);
    let errors = r["latest"]["errors"].to_string();
    assert!(errors.contains("stacks/app.yaml:"), "{r}");
    assert_eq!(r["applied"]["sha"], first.as_str(), "{r}");
    std::thread::sleep(Duration::from_secs(4));
    assert!(runs_version(&f.hosts[0], &web, 1));
    assert_eq!(
        listener.of("revision-invalid").len(),
        1,
        "{:?}",
        listener.events()
    );

    // A symlink that leads out of the repository: a located error too.
    repo.write("stacks/app.yaml", &stack(name, 2));
    std::os::unix::fs::symlink("/etc/passwd", repo.work.join("stacks/outside.yaml")).unwrap();
    let linked = repo.commit_and_push("a link out");
    wait_until(LONG, "the link to be refused", || {
        let r = revision(&ctl);
        r["latest"]["sha"] == linked.as_str() && r["latest"]["state"] == "invalid"
    });
    let r = revision(&ctl);
    assert!(
        r["latest"]["errors"]
            .to_string()
            .contains("stacks/outside.yaml"),
        "{r}"
    );
    assert!(runs_version(&f.hosts[0], &web, 1));

    // The fix is applied.
    repo.remove("stacks/outside.yaml");
    let fixed = repo.commit_and_push("fixed");
    wait_until(LONG, "version 2 to run", || {
        runs_version(&f.hosts[0], &web, 2)
    });
    wait_until(LONG, "the fix to be applied", || {
        revision(&ctl)["applied"]["sha"] == fixed.as_str()
    });

    // A force-push back to the first commit is followed.
    repo.force_push(&first);
    wait_until(LONG, "version 1 to run again", || {
        runs_version(&f.hosts[0], &web, 1)
    });

    // A commit that removes every stack is applied, and said loudly.
    repo.remove("stacks/app.yaml");
    repo.commit_and_push("remove everything");
    wait_until(LONG, "the app to be removed", || {
        inspect(&f.hosts[0], &web, "{{.Id}}").is_none()
    });
    wait_until(LONG, "the loud notification", || {
        listener.events().iter().any(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("removes every stack"))
        })
    });
    assert!(ctl.log().contains("this commit removes every stack"));
}

/// A controller following `repo` through `git daemon`, fetching every
/// second, its clone in `state`.
fn following_the_daemon(f: &Fixture, repo: &Repo, state: &std::path::Path) -> Controller {
    f.git_controller(
        &[
            "--git",
            &repo.daemon,
            "--interval",
            "1s",
            "--workdir",
            state.to_str().unwrap(),
        ],
        &[],
    )
}

fn git_head(repo: &Repo) -> String {
    support::git::git(&repo.work, &["rev-parse", "HEAD"])
}

#[test]
fn with_the_git_server_down_the_last_good_revision_stays_and_it_catches_up() {
    let name = "git-down";
    let Some((_turn, f, mut server, repo)) = setup(name) else {
        return;
    };
    let web = format!("{name}-web");
    let first = git_head(&repo);
    let state = tempfile::tempdir().unwrap();
    let ctl = following_the_daemon(&f, &repo, state.path());
    wait_until(LONG, "version 1 to run", || {
        runs_version(&f.hosts[0], &web, 1)
    });
    server.stop_daemon();
    repo.write("stacks/app.yaml", &stack(name, 2));
    let second = repo.commit_and_push("version 2");
    wait_until(LONG, "the fetch error to show", || {
        revision(&ctl)["fetch_error"].is_string()
    });
    let r = revision(&ctl);
    assert_eq!(r["applied"]["sha"], first.as_str(), "{r}");
    assert!(
        ctl.metric("drover_git_fetch_failures_total").unwrap_or(0.0) >= 1.0,
        "{}",
        ctl.get("/metrics").unwrap().1
    );
    // The hosts are still kept: a removed container comes back.
    docker(&f.hosts[0], &["rm", "-f", &web]);
    wait_until(LONG, "the app to be healed", || {
        runs_version(&f.hosts[0], &web, 1)
    });
    server.start_daemon();
    wait_until(LONG, "version 2 to run", || {
        runs_version(&f.hosts[0], &web, 2)
    });
    wait_until(LONG, "the error to clear", || {
        let r = revision(&ctl);
        r["fetch_error"].is_null() && r["applied"]["sha"] == second.as_str()
    });
}

#[test]
fn two_controllers_follow_one_repository_and_the_survivor_carries_on() {
    let name = "git-pair";
    let Some((_turn, f, _server, repo)) = setup(name) else {
        return;
    };
    let web = format!("{name}-web");
    let (s1, s2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let start = |state: &tempfile::TempDir| {
        f.git_controller(
            &[
                "--git",
                &repo.daemon,
                "--interval",
                "1s",
                "--workdir",
                state.path().to_str().unwrap(),
            ],
            &[("DROVER_LEASE_TTL", "6")],
        )
    };
    let mut one = start(&s1);
    let two = start(&s2);
    wait_until(LONG, "version 1 to run", || {
        runs_version(&f.hosts[0], &web, 1)
    });
    for v in 2..=3 {
        repo.write("stacks/app.yaml", &stack(name, v));
        repo.commit_and_push(&format!("version {v}"));
        wait_until(LONG, &format!("version {v} to run"), || {
            runs_version(&f.hosts[0], &web, v)
        });
    }
    // Each change was made once, by one of them.
    let recreated = |c: &Controller| {
        c.metric("drover_actions_total{kind=\"container\",action=\"recreate\",result=\"done\"}")
            .unwrap_or(0.0)
    };
    assert_eq!(recreated(&one) + recreated(&two), 2.0);
    one.signal("KILL");
    one.wait_exit(Duration::from_secs(10));
    repo.write("stacks/app.yaml", &stack(name, 4));
    repo.commit_and_push("version 4");
    let took = wait_until(LONG, "version 4 to run", || {
        runs_version(&f.hosts[0], &web, 4)
    });
    eprintln!("one controller killed: the other applied the next commit in {took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[test]
fn a_revision_that_leaves_a_rollback_auto_stack_down_is_rolled_back_and_quarantined() {
    let name = "git-back";
    let Some((_turn, f, _server, repo)) = setup(name) else {
        return;
    };
    let web = format!("{name}-web");
    let guarded = |v: u32, command: &str| {
        stack(name, v)
            .replacen("apps:", "rollback: auto\napps:", 1)
            .replace(
                "command: ['sh', '-c', 'trap \"exit 0\" TERM; while :; do sleep 1 & wait $$!; done']",
                command,
            )
    };
    let good =
        "command: ['sh', '-c', 'trap \"exit 0\" TERM; while :; do sleep 1 & wait $$!; done']";
    repo.write("stacks/app.yaml", &guarded(1, good));
    let first = repo.commit_and_push("guarded");
    let state = tempfile::tempdir().unwrap();
    let listener = Listener::start();
    let ctl = f.git_controller(
        &[
            "--git",
            &repo.daemon,
            "--interval",
            "1s",
            "--workdir",
            state.path().to_str().unwrap(),
            "--dependency-timeout",
            "20",
            "--notify",
            &listener.url(),
        ],
        &[],
    );
    wait_until(LONG, "version 1 to be applied", || {
        runs_version(&f.hosts[0], &web, 1) && revision(&ctl)["applied"]["sha"] == first.as_str()
    });

    // Version 2 exits at once: the stack goes back to version 1.
    repo.write(
        "stacks/app.yaml",
        &guarded(2, "command: ['sh', '-c', 'exit 3']"),
    );
    let bad = repo.commit_and_push("version 2 exits");
    wait_until(LONG, "the commit to be quarantined", || {
        let r = revision(&ctl);
        r["latest"]["sha"] == bad.as_str() && r["latest"]["state"] == "quarantined"
    });
    wait_until(LONG, "version 1 to run again", || {
        runs_version(&f.hosts[0], &web, 1)
    });
    let r = revision(&ctl);
    assert_eq!(r["quarantined"][0]["stack"], name, "{r}");
    assert_eq!(r["quarantined"][0]["back_to"], first.as_str(), "{r}");
    assert!(
        r["quarantined"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("not running"),
        "{r}"
    );
    wait_until(LONG, "the rollback notification", || {
        listener
            .of("rollback")
            .iter()
            .any(|e| e["revision"] == bad.as_str() && e["stack"] == name)
    });
    // Not tried again.
    let recreated = |c: &Controller| {
        c.metric("drover_actions_total{kind=\"container\",action=\"recreate\",result=\"done\"}")
            .unwrap_or(0.0)
    };
    let before = recreated(&ctl);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(recreated(&ctl), before, "{}", ctl.log());
    assert!(runs_version(&f.hosts[0], &web, 1));

    // A newer commit clears the quarantine.
    repo.write("stacks/app.yaml", &guarded(3, good));
    let fixed = repo.commit_and_push("version 3");
    wait_until(LONG, "version 3 to run", || {
        runs_version(&f.hosts[0], &web, 3)
    });
    wait_until(LONG, "the fix to be applied", || {
        let r = revision(&ctl);
        r["latest"]["sha"] == fixed.as_str()
            && r["latest"]["state"] == "applied"
            && r["quarantined"].is_null()
    });
}

#[test]
fn a_repository_over_ssh_is_followed_with_a_key_and_an_unknown_host_key_is_refused() {
    let name = "git-ssh";
    let Some((_turn, f, server, repo)) = setup(name) else {
        return;
    };
    let web = format!("{name}-web");
    let ssh = server.start_ssh();
    let url = ssh.url(&server, &repo);
    let state = tempfile::tempdir().unwrap();
    let key = ssh.key.to_str().unwrap();
    // A known-hosts file without the server's key: refused, and said.
    let empty = state.path().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let stranger = f.git_controller(
        &[
            "--git",
            &url,
            "--interval",
            "1s",
            "--workdir",
            state.path().join("a").to_str().unwrap(),
            "--ssh-key",
            key,
            "--known-hosts",
            empty.to_str().unwrap(),
        ],
        &[],
    );
    wait_until(LONG, "the fetch to fail", || {
        revision(&stranger)["fetch_error"].is_string()
    });
    eprintln!("unknown host key: {}", revision(&stranger)["fetch_error"]);
    assert!(inspect(&f.hosts[0], &web, "{{.Id}}").is_none());
    drop(stranger);

    let ctl = f.git_controller(
        &[
            "--git",
            &url,
            "--interval",
            "1s",
            "--workdir",
            state.path().join("b").to_str().unwrap(),
            "--ssh-key",
            key,
            "--known-hosts",
            ssh.known_hosts.to_str().unwrap(),
        ],
        &[],
    );
    wait_until(LONG, "version 1 to run", || {
        runs_version(&f.hosts[0], &web, 1)
    });
    repo.write("stacks/app.yaml", &stack(name, 2));
    let sha = repo.commit_and_push("version 2");
    wait_until(LONG, "version 2 to run", || {
        runs_version(&f.hosts[0], &web, 2)
    });
    wait_until(LONG, "the revision to be applied", || {
        revision(&ctl)["applied"]["sha"] == sha.as_str()
    });
}

#[test]
fn a_commit_past_the_bounds_is_refused_and_the_revision_in_force_stays() {
    let name = "git-big";
    let Some((_turn, f, _server, repo)) = setup(name) else {
        return;
    };
    let web = format!("{name}-web");
    let first = git_head(&repo);
    let state = tempfile::tempdir().unwrap();
    let ctl = following_the_daemon(&f, &repo, state.path());
    wait_until(LONG, "version 1 to run", || {
        runs_version(&f.hosts[0], &web, 1)
    });
    let refused = |what: &str| {
        wait_until(LONG, &format!("{what} to be refused"), || {
            revision(&ctl)["fetch_error"]
                .as_str()
                .is_some_and(|e| e.contains(what))
        });
        let r = revision(&ctl);
        eprintln!("refused: {}", r["fetch_error"]);
        assert_eq!(r["applied"]["sha"], first.as_str(), "{r}");
        assert!(runs_version(&f.hosts[0], &web, 1));
    };
    // More entries than a tree may hold (files that are not manifests).
    let many = repo.work.join("many");
    std::fs::create_dir_all(&many).unwrap();
    for i in 0..20_001 {
        std::fs::write(many.join(format!("{i}.txt")), "x").unwrap();
    }
    repo.write("stacks/app.yaml", &stack(name, 2));
    repo.commit_and_push("too many files");
    refused("more than 20000 entries");
    // Folders nested deeper than a tree may.
    std::fs::remove_dir_all(&many).unwrap();
    let deep: String = (0..100).map(|i| format!("d{i}/")).collect();
    repo.write(&format!("{deep}note.txt"), "deep");
    repo.commit_and_push("too deep");
    refused("deeper than");
    // Back within the bounds: applied.
    std::fs::remove_dir_all(repo.work.join("d0")).unwrap();
    let fine = repo.commit_and_push("within bounds");
    wait_until(LONG, "version 2 to run", || {
        runs_version(&f.hosts[0], &web, 2)
    });
    wait_until(LONG, "the commit to be applied", || {
        let r = revision(&ctl);
        r["applied"]["sha"] == fine.as_str() && r["fetch_error"].is_null()
    });
}
