//! Backups in restic-format repositories on real engines, a real S3 server
//! and Debian's `restic` as the independent reader (`docs/backups.md`):
//! what drover pushes, restic lists, checks and restores equal to the
//! volume; a restore and a recovery from a backup are checked by content;
//! a lost host's copy stays stale when it comes back; bad passwords and
//! stores change nothing and freeze nothing.

mod support;

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use support::*;

const PASSWORD: &str = "correct horse battery staple";

/// A stack `name` whose app on `host` mounts `data` and only waits.
fn sleeper(name: &str, host: &str, volume: &str) -> String {
    format!(
        "kind: Stack
name: {name}
volumes:
  data: {{ {volume} }}
apps:
  app:
    image: {IMAGE}
    host: {host}
    pull: never
    command: ['sh', '-c', 'trap \"exit 0\" TERM; while :; do sleep 1; done']
    volumes: ['data:/data']
    stop_grace_period: 1s
"
    )
}

/// The Cluster of `f` with one repository `offsite` at `url`.
fn with_repository(f: &Fixture, url: &str, env: &str) {
    let cluster = std::fs::read_to_string(f.path().join("cluster.yaml")).unwrap();
    f.write(
        "cluster.yaml",
        &format!(
            "{cluster}repositories:\n  offsite:\n    url: {url}\n    password: ${{REPO_PASSWORD}}\n{env}"
        ),
    );
}

/// A repository `offsite` in a directory of its own (kept while the guard
/// lives): the guard and the repository's path.
fn with_local_repository(f: &Fixture) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("repo").to_str().unwrap().to_string();
    with_repository(f, &url, "");
    (dir, url)
}

/// drover with the repository's secrets in its environment.
fn drover(f: &Fixture, args: &[&str], password: &str) -> std::process::Output {
    f.drover_with(
        args,
        &[
            ("REPO_PASSWORD", password),
            ("S3_KEY", "drover-test"),
            ("S3_SECRET", "drover-test-secret"),
        ],
    )
}

/// How many times an app on `host` was frozen since `since`.
fn pauses(host: &TestHost, since: &str) -> usize {
    events(host, since, &now())
        .iter()
        .filter(|(_, _, action, _)| action == "pause")
        .count()
}

/// drover with the repository's secrets, which must succeed: its output.
fn ok(f: &Fixture, args: &[&str]) -> String {
    let o = drover(f, args, PASSWORD);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
}

/// restic with the repository's password (and the S3 server's keys).
fn restic(repo: &str, args: &[&str]) -> std::process::Output {
    let o = Command::new("restic")
        .arg("-r")
        .arg(repo)
        .args(args)
        .env("RESTIC_PASSWORD", PASSWORD)
        .env("AWS_ACCESS_KEY_ID", "drover-test")
        .env("AWS_SECRET_ACCESS_KEY", "drover-test-secret")
        .env(
            "RESTIC_CACHE_DIR",
            std::env::temp_dir().join("drover-test-restic-cache"),
        )
        .output()
        .expect("restic is installed (scripts/test.sh installs it)");
    eprintln!(
        "$ restic {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Every entry under `dir` (a shell script's `find` from its root): path,
/// kind, mode, owner, size, mtime and hash, or a link's target.
const LISTING: &str = r#"cd "$1" && find . -mindepth 1 | sort | while IFS= read -r f; do
  if [ -L "$f" ]; then x="-> $(readlink "$f") $(stat -c '%u %g' "$f")"
  elif [ -d "$f" ]; then x="dir $(stat -c '%a %u %g' "$f")"
  else x="$(stat -c '%F %a %u %g %s %Y' "$f") $(md5sum < "$f" | cut -d' ' -f1)"; fi
  echo "$f $x"
done"#;

fn volume_listing(host: &TestHost, volume: &str) -> String {
    in_volume(host, volume, &LISTING.replace("\"$1\"", "/d"))
}

fn local_listing(dir: &Path) -> String {
    let o = Command::new("sh")
        .args(["-c", LISTING, "listing"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Files of several shapes, owners, modes and times, and a link.
fn fill(host: &TestHost, volume: &str) {
    in_volume(
        host,
        volume,
        "mkdir -p /d/sub/deep && echo one > /d/a && echo two > /d/sub/b && ln -s ../a /d/sub/link \
         && chmod 640 /d/a && chown 123:456 /d/sub/b && touch -d '2020-01-02 03:04:05' /d/sub/b \
         && head -c 3000000 /dev/urandom > /d/sub/deep/big \
         && for i in $(seq 1 200); do echo $i > /d/sub/deep/f$i; done",
    );
}

fn repo_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["config", "keys", "snapshots", "index", "data", "locks"] {
        let p = dir.join(sub);
        if p.is_file() {
            out.push(sub.to_string());
        } else if let Ok(rd) = std::fs::read_dir(&p) {
            for e in rd.flatten() {
                out.push(format!("{sub}/{}", e.file_name().to_string_lossy()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn what_drover_pushes_restic_lists_checks_and_restores_equal_to_the_volume() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["bkl", "bkl-staging"]);
    let (repo, url) = with_local_repository(&f);
    let url = url.as_str();
    f.write("stack.yaml", &sleeper("bkl", "node-a", ""));
    assert!(drover(&f, &["reconcile"], PASSWORD).status.success());
    let a = &f.hosts[0];
    fill(a, "bkl-data");

    let out = ok(
        &f,
        &[
            "volume", "snapshot", "bkl/data", "--name", "one", "--push", "offsite",
        ],
    );
    assert!(out.contains("made repository `offsite`"), "{out}");
    assert!(out.contains("froze the apps"), "{out}");
    // A second push of a volume that changed a little stores little.
    in_volume(a, "bkl-data", "echo three > /d/c");
    let out = ok(
        &f,
        &[
            "volume", "snapshot", "bkl/data", "--name", "two", "--push", "offsite",
        ],
    );
    assert!(!out.contains("made repository"), "{out}");
    let added = out
        .split(" added")
        .next()
        .unwrap()
        .rsplit(", ")
        .next()
        .unwrap()
        .to_string();
    assert!(
        added.ends_with(" B") || added.ends_with("KiB"),
        "a second push added {added}"
    );

    // restic itself lists drover's backups with their tags, checks the
    // repository, and restores what the volume held.
    let o = restic(url, &["snapshots", "--json"]);
    assert!(o.status.success());
    let snaps: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(snaps.len(), 2);
    for s in &snaps {
        let tags: Vec<&str> = s["tags"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t.as_str())
            .collect();
        for t in ["drover", "stack=bkl", "volume=data", "host=node-a"] {
            assert!(tags.contains(&t), "tag {t} missing: {tags:?}");
        }
        assert_eq!(s["hostname"], "node-a");
    }
    assert!(
        restic(url, &["check"]).status.success(),
        "restic check failed"
    );
    let out_dir = tempfile::tempdir().unwrap();
    let id = snaps.last().unwrap()["id"].as_str().unwrap().to_string();
    let o = restic(
        url,
        &["restore", &id, "--target", out_dir.path().to_str().unwrap()],
    );
    assert!(o.status.success());
    let volume_now = volume_listing(a, "bkl-data");
    assert_eq!(local_listing(&out_dir.path().join("data")), volume_now);

    // drover lists them beside the host's snapshots.
    let o = drover(
        &f,
        &["volume", "snapshots", "bkl/data", "--output", "json"],
        PASSWORD,
    );
    assert!(o.status.success());
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let backups: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r["repository"] == "offsite")
        .collect();
    assert_eq!(backups.len(), 2, "{rows:?}");
    assert_eq!(backups[1]["id"], id.as_str());

    // A restore from the repository is byte-identical to the backup and
    // keeps what it replaces.
    in_volume(
        a,
        "bkl-data",
        "rm /d/a && echo bad > /d/sub/b && echo new > /d/new",
    );
    let short = &id[..8];
    let out = ok(
        &f,
        &[
            "volume",
            "restore",
            "bkl/data",
            &format!("offsite:{short}"),
            "--yes",
        ],
    );
    assert!(out.contains("before-restore-"), "{}", out);
    assert_eq!(volume_listing(a, "bkl-data"), volume_now);
    assert!(running(a, "bkl-app"));

    // A staging stack made from the newest backup, on another host.
    f.write(
        "staging.yaml",
        &sleeper(
            "bkl-staging",
            "node-b",
            "from: { repository: offsite, stack: bkl, volume: data, snapshot: latest }",
        ),
    );
    let o = drover(&f, &["reconcile", "--dry-run"], PASSWORD);
    assert!(
        stdout(&o).contains("in repository `offsite`"),
        "{}",
        stdout(&o)
    );
    assert!(drover(&f, &["reconcile"], PASSWORD).status.success());
    assert_eq!(volume_listing(&f.hosts[1], "bkl-staging-data"), volume_now);
    assert!(running(&f.hosts[1], "bkl-staging-app"));
    std::fs::remove_file(f.path().join("staging.yaml")).unwrap();

    // A wrong password: a clear error, nothing written, nothing frozen.
    let before = repo_files(&repo.path().join("repo"));
    let since = now();
    let o = drover(
        &f,
        &[
            "volume", "snapshot", "bkl/data", "--name", "three", "--push", "offsite",
        ],
        "wrong",
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("password of repository `offsite` is wrong"),
        "{}",
        stderr(&o)
    );
    assert_eq!(repo_files(&repo.path().join("repo")), before);
    assert!(!stdout(&drover(&f, &["volume", "snapshots"], PASSWORD)).contains("three"));
    let events = events(a, &since, &now());
    assert!(
        !events.iter().any(|(_, _, action, _)| action == "pause"),
        "an app was frozen for a push that could not run"
    );
    // A backup of another volume is refused by name.
    let o = drover(
        &f,
        &["volume", "restore", "bkl/data", "offsite:00000000", "--yes"],
        PASSWORD,
    );
    assert!(!o.status.success());
}

/// A later backup reads only the folders its refresh of `last-backup`
/// changed and merges them with the backup before; restic checks the
/// repository and restores each backup equal to the volume. A deletion,
/// or a change at the volume's top, is read whole.
#[test]
fn a_later_backup_reads_only_the_changed_folders_and_restores_equal_to_the_volume() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["bki"]);
    let (_repo, url) = with_local_repository(&f);
    let url = url.as_str();
    f.write("stack.yaml", &sleeper("bki", "node-a", ""));
    assert!(drover(&f, &["reconcile"], PASSWORD).status.success());
    let a = &f.hosts[0];
    fill(a, "bki-data");
    let backup = || ok(&f, &["volume", "backup", "bki/data", "--to", "offsite"]);
    let equal_to_the_volume = |step: &str| {
        let out_dir = tempfile::tempdir().unwrap();
        assert!(
            restic(url, &["check"]).status.success(),
            "{step}: restic check failed"
        );
        let o = restic(
            url,
            &[
                "restore",
                "latest",
                "--target",
                out_dir.path().to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{step}");
        assert_eq!(
            local_listing(&out_dir.path().join("data")),
            volume_listing(a, "bki-data"),
            "{step}: the backup is not the volume"
        );
    };
    let whole = " files read, ";
    let partial = "only the changed folders read";

    // The first backup reads the snapshot as the copy fills it; its push
    // then reads only what changed after.
    let out = backup();
    assert!(
        out.contains(" files read as the copy filled the snapshot, "),
        "{out}"
    );
    // A file changed in place, a new folder, a folder's mode.
    in_volume(
        a,
        "bki-data",
        "echo changed > /d/sub/deep/f5 && mkdir /d/sub/new && echo n > /d/sub/new/x \
         && chmod 700 /d/sub/deep",
    );
    let out = backup();
    assert!(out.contains(partial), "{out}");
    equal_to_the_volume("changed folders");
    // Nothing changed.
    let out = backup();
    assert!(out.contains(partial), "{out}");
    equal_to_the_volume("nothing changed");
    // A file deleted: the whole snapshot is read (a merge keeps entries).
    in_volume(a, "bki-data", "rm /d/sub/deep/f7");
    let out = backup();
    assert!(out.contains(whole), "{out}");
    equal_to_the_volume("a file deleted");
    // A change at the top of the volume.
    in_volume(a, "bki-data", "echo top > /d/top");
    let out = backup();
    assert!(out.contains(whole), "{out}");
    equal_to_the_volume("a new file at the top");
    // Another change deeper down after that: partial again.
    in_volume(a, "bki-data", "echo again > /d/sub/new/x");
    let out = backup();
    assert!(out.contains(partial), "{out}");
    equal_to_the_volume("changed again");

    // Only drover's six backups are in the repository: no partial one.
    let o = restic(url, &["snapshots", "--json"]);
    let snaps: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(snaps.len(), 6, "{snaps:?}");
    assert!(snaps
        .iter()
        .all(|s| s["tags"].as_array().unwrap().iter().any(|t| t == "drover")));
}

/// A real S3 server: moto's (`moto_server`, from PyPI), with the bucket
/// `backups`; on loopback, where the hosts cannot reach it.
struct S3 {
    child: Child,
    addr: String,
    port: u16,
}

impl S3 {
    fn start() -> Option<S3> {
        S3::start_on("127.0.0.1", false)
    }

    /// On `addr`; with `auth`, every request after the bucket is made must
    /// be signed with a key the server knows (and it knows none).
    fn start_on(addr: &str, auth: bool) -> Option<S3> {
        let Ok(bin) = std::env::var("DROVER_S3_SERVER") else {
            assert!(
                std::env::var_os("DROVER_E2E_REQUIRED").is_none(),
                "DROVER_S3_SERVER is not set: scripts/test.sh installs moto's S3 server"
            );
            eprintln!("skipped: no S3 server (set DROVER_S3_SERVER to `moto_server`)");
            return None;
        };
        let port = std::net::TcpListener::bind((addr, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(bin);
        cmd.args(["-H", addr, "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if auth {
            // moto counts actions: the first (the bucket) goes unchecked.
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "1");
        }
        let child = cmd.spawn().expect("the S3 server starts");
        wait_until(Duration::from_secs(30), "the S3 server", || {
            std::net::TcpStream::connect((addr, port)).is_ok()
        });
        // The bucket, as an operator makes it.
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect((addr, port)).unwrap();
        write!(c, "PUT /backups HTTP/1.1\r\nHost: {addr}:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
        let mut reply = String::new();
        let _ = c.read_to_string(&mut reply);
        assert!(
            reply.starts_with("HTTP/1.1 200"),
            "cannot make the bucket: {reply}"
        );
        Some(S3 {
            child,
            addr: addr.to_string(),
            port,
        })
    }

    fn url(&self) -> String {
        format!("s3:http://{}:{}/backups/drover", self.addr, self.port)
    }
}

/// The address of drover's machine on the test hosts' network (their
/// gateway): the hosts reach a server there.
fn gateway(h: &TestHost) -> String {
    let (net, _) = h.address.rsplit_once('.').unwrap();
    format!("{net}.1")
}

const S3_ENV: &str =
    "    env:\n      AWS_ACCESS_KEY_ID: ${S3_KEY}\n      AWS_SECRET_ACCESS_KEY: ${S3_SECRET}\n";

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_volume_backed_up_on_schedule_to_s3_survives_the_loss_of_its_host_and_the_returning_host_never_writes(
) {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let Some(s3) = S3::start() else {
        return;
    };
    let f = Fixture::new(hosts, &["bks"]);
    let url = s3.url();
    with_repository(&f, &url, S3_ENV);
    f.write(
        "stack.yaml",
        &sleeper(
            "bks",
            "node-a",
            "backup: { to: offsite, every: 6h, keep: { last: 2 } }",
        ),
    );
    assert!(drover(&f, &["reconcile"], PASSWORD).status.success());
    let (a, b) = (&f.hosts[0], &f.hosts[1]);
    fill(a, "bks-data");
    let out = ok(&f, &["volume", "snapshot", "bks/data", "--push", "offsite"]);
    // The hosts cannot reach drover's loopback: the relay carries it.
    assert!(out.contains("through drover"), "{}", out);

    // Then the controller backs the volume up on its schedule: what the
    // recovery below brings back is what the schedule pushed (the file
    // written after the push by hand is in no other backup).
    in_volume(a, "bks-data", "echo scheduled > /d/scheduled");
    f.write(
        "stack.yaml",
        &sleeper(
            "bks",
            "node-a",
            "backup: { to: offsite, every: 2s, keep: { last: 2 } }",
        ),
    );
    let mut ctl = f.controller(
        &[],
        &[
            ("REPO_PASSWORD", PASSWORD),
            ("S3_KEY", "drover-test"),
            ("S3_SECRET", "drover-test-secret"),
        ],
    );
    let last_good = "drover_backup_last_success_timestamp_seconds{stack=\"bks\",volume=\"data\",repository=\"offsite\"}";
    wait_until(
        Duration::from_secs(120),
        "two scheduled backups to S3",
        || {
            ctl.metric(last_good).is_some()
                && ctl.log().matches("pushed a scheduled backup").count() >= 2
        },
    );
    ctl.signal("TERM");
    ctl.wait_exit(Duration::from_secs(30));
    let log = ctl.log();
    assert!(!log.contains(PASSWORD), "the password reached the log");
    let backed_up = volume_listing(a, "bks-data");
    assert!(backed_up.contains("./scheduled"), "{backed_up}");
    assert_eq!(
        inspect(a, "bks-app", "{{.State.Paused}}").as_deref(),
        Some("false"),
        "the controller left the app frozen"
    );
    assert!(
        restic(&url, &["check"]).status.success(),
        "restic check failed on S3"
    );

    // The host is lost; the manifests place the app on node-b.
    host_script("kill", "node-a");
    f.write(
        "stack.yaml",
        &sleeper(
            "bks",
            "node-b",
            "backup: { to: offsite, every: 6h, keep: { last: 2 } }",
        ),
    );
    let o = drover(&f, &["reconcile", "--dry-run"], PASSWORD);
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        said.contains("drover volume recover bks/data --from offsite"),
        "{said}"
    );
    let out = ok(
        &f,
        &[
            "volume",
            "recover",
            "bks/data",
            "--from",
            "offsite",
            "--dry-run",
        ],
    );
    assert!(out.contains("old"), "{}", out);
    ok(
        &f,
        &[
            "volume", "recover", "bks/data", "--from", "offsite", "--yes",
        ],
    );
    let o = drover(&f, &["reconcile"], PASSWORD);
    assert!(!stderr(&o).contains("error: volume"), "{}", stderr(&o));
    assert!(running(b, "bks-app"));
    assert_eq!(volume_listing(b, "bks-data"), backed_up);
    in_volume(b, "bks-data", "echo after > /d/after");

    // The old host comes back: its copy is stale, never used or started.
    host_script("start", "node-a");
    ok(&f, &["reconcile"]);
    assert!(!running(a, "bks-app"), "the returning host runs the app");
    assert!(running(b, "bks-app"));
    let ls = stdout(&drover(&f, &["volume", "ls"], PASSWORD));
    assert!(
        ls.contains("stale copy (recovered from a backup on node-b)"),
        "{ls}"
    );
    assert_eq!(in_volume(b, "bks-data", "cat /d/after"), "after");
    // A second recovery is refused: the volume has a current copy.
    let o = drover(
        &f,
        &[
            "volume", "recover", "bks/data", "--from", "offsite", "--yes",
        ],
        PASSWORD,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("that is a move"), "{}", stderr(&o));
    drop(s3);
}

#[test]
fn the_controller_pushes_backups_on_schedule_and_keeps_only_what_keep_says() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["bkc"]);
    let (_repo, url) = with_local_repository(&f);
    // A backup made by hand of another volume is never forgotten.
    f.write(
        "stack.yaml",
        &(sleeper(
            "bkc",
            "node-a",
            "backup: { to: offsite, every: 2s, keep: { last: 2 } }",
        ) + "---\nkind: Stack\nname: bkc-other\nvolumes:\n  data: { host: node-b }\n"),
    );
    assert!(drover(&f, &["reconcile"], PASSWORD).status.success());
    let (a, b) = (&f.hosts[0], &f.hosts[1]);
    fill(a, "bkc-data");
    in_volume(b, "bkc-other-data", "echo other > /d/x");
    ok(
        &f,
        &["volume", "snapshot", "bkc-other/data", "--push", "offsite"],
    );

    let mut ctl = f.controller(&[], &[("REPO_PASSWORD", PASSWORD)]);
    wait_until(Duration::from_secs(120), "three scheduled backups", || {
        ctl.metric("drover_backup_last_success_timestamp_seconds{stack=\"bkc\",volume=\"data\",repository=\"offsite\"}")
            .is_some()
            && ctl.log().matches("pushed a scheduled backup").count() >= 3
    });
    let added = ctl
        .metric(
            "drover_backup_added_bytes_total{stack=\"bkc\",volume=\"data\",repository=\"offsite\"}",
        )
        .expect("the bytes added are a metric");
    assert!(added > 3_000_000.0, "{added}");
    let (_, health) = ctl.health();
    assert_eq!(health["backups_overdue"], serde_json::json!([]), "{health}");
    // Retention runs after each push: wait for it to catch up.
    wait_until(
        Duration::from_secs(60),
        "the retention to forget past `keep`",
        || {
            let o = restic(&url, &["snapshots", "--json", "--tag", "stack=bkc"]);
            serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout).is_ok_and(|v| v.len() == 2)
        },
    );
    ctl.signal("TERM");
    ctl.wait_exit(Duration::from_secs(30));
    let o = restic(&url, &["snapshots", "--json"]);
    let snaps: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let of = |v: &str| {
        snaps
            .iter()
            .filter(|s| s["tags"].as_array().unwrap().iter().any(|t| t == v))
            .count()
    };
    assert_eq!(
        of("stack=bkc"),
        2,
        "keep: {{ last: 2 }} of the scheduled backups"
    );
    assert_eq!(
        of("stack=bkc-other"),
        1,
        "a backup of another volume was forgotten"
    );
    assert!(
        restic(&url, &["check"]).status.success(),
        "restic check after the prune"
    );
    // No app was left frozen.
    assert_eq!(
        inspect(a, "bkc-app", "{{.State.Paused}}").as_deref(),
        Some("false")
    );
    let log = ctl.log();
    assert!(!log.contains(PASSWORD), "the password reached the log");
}

#[test]
fn a_repository_made_anew_where_the_controller_pushes_is_opened_again_and_used() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["bkn"]);
    let (dir, url) = with_local_repository(&f);
    let anew = dir.path().join("anew");
    let old = dir.path().join("old");
    for repo in [url.as_str(), anew.to_str().unwrap()] {
        assert!(restic(repo, &["init"]).status.success());
    }
    f.write(
        "stack.yaml",
        &sleeper(
            "bkn",
            "node-a",
            "backup: { to: offsite, every: 5s, keep: { last: 5 } }",
        ),
    );
    assert!(drover(&f, &["reconcile"], PASSWORD).status.success());
    fill(&f.hosts[0], "bkn-data");
    let mut ctl = f.controller(&[], &[("REPO_PASSWORD", PASSWORD)]);
    wait_until(Duration::from_secs(120), "a scheduled backup", || {
        ctl.log().matches("pushed a scheduled backup").count() >= 1
    });
    // Between two pushes, another repository (another key, another ID)
    // takes the location of the one the controller keeps open.
    std::fs::rename(&url, &old).unwrap();
    std::fs::rename(&anew, &url).unwrap();
    wait_until(
        Duration::from_secs(120),
        "a scheduled backup in the new repository",
        || {
            let o = restic(&url, &["snapshots", "--json", "--tag", "stack=bkn"]);
            serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout).is_ok_and(|v| !v.is_empty())
        },
    );
    let log = ctl.log();
    assert!(
        log.contains("no longer opens with its key; opening it again"),
        "{log}"
    );
    ctl.signal("TERM");
    ctl.wait_exit(Duration::from_secs(30));
    assert!(
        !ctl.log().contains(PASSWORD),
        "the password reached the log"
    );
    assert!(restic(&url, &["check"]).status.success());
    // The repository that was moved away is as the controller left it.
    let o = restic(old.to_str().unwrap(), &["snapshots", "--json"]);
    let before: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(before.len(), 1, "one backup before the swap");
    assert!(restic(old.to_str().unwrap(), &["check"]).status.success());
}

#[test]
fn a_store_that_fills_up_or_a_drover_killed_mid_push_leaves_a_valid_repository_and_a_rerun_completes(
) {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["bkf"]);
    let store = tempfile::tempdir().unwrap();
    let mount = |size: &str, remount: bool| {
        let opts = if remount {
            format!("remount,size={size}")
        } else {
            format!("size={size}")
        };
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
            .arg(store.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    mount("1m", false);
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(store.path());
    let url = store.path().join("repo");
    let url = url.to_str().unwrap().to_string();
    with_repository(&f, &url, "");
    f.write("stack.yaml", &sleeper("bkf", "node-a", ""));
    assert!(drover(&f, &["reconcile"], PASSWORD).status.success());
    let a = &f.hosts[0];
    fill(a, "bkf-data");

    // The store fills up mid-upload.
    let o = drover(
        &f,
        &[
            "volume", "snapshot", "bkf/data", "--name", "full", "--push", "offsite",
        ],
        PASSWORD,
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("repository `offsite`"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        inspect(a, "bkf-app", "{{.State.Paused}}").as_deref(),
        Some("false")
    );
    assert!(
        restic(&url, &["check"]).status.success(),
        "restic check after the store filled up"
    );

    // drover killed while packs are on their way.
    mount("64m", true);
    let o = f.drover_with(
        &[
            "volume", "snapshot", "bkf/data", "--name", "killed", "--push", "offsite",
        ],
        &[
            ("REPO_PASSWORD", PASSWORD),
            ("DROVER_TEST_ABORT_AT", "pushing"),
        ],
    );
    assert!(!o.status.success());
    assert_eq!(
        inspect(a, "bkf-app", "{{.State.Paused}}").as_deref(),
        Some("false")
    );
    assert!(
        restic(&url, &["check"]).status.success(),
        "restic check after drover was killed"
    );
    let locks = std::fs::read_dir(store.path().join("repo/locks")).map_or(0, |d| d.count());
    assert_eq!(locks, 0, "lock files left in the repository");

    // A rerun completes, and restic restores what the volume holds.
    ok(
        &f,
        &[
            "volume", "snapshot", "bkf/data", "--name", "again", "--push", "offsite",
        ],
    );
    assert!(restic(&url, &["check"]).status.success());
    let out_dir = tempfile::tempdir().unwrap();
    assert!(restic(
        &url,
        &[
            "restore",
            "latest",
            "--target",
            out_dir.path().to_str().unwrap()
        ]
    )
    .status
    .success());
    assert_eq!(
        local_listing(&out_dir.path().join("data")),
        volume_listing(a, "bkf-data")
    );

    // A store that cannot be reached: named, and nothing frozen.
    let cluster = std::fs::read_to_string(f.path().join("cluster.yaml")).unwrap();
    f.write(
        "cluster.yaml",
        &cluster.replace(&url, "s3:http://127.0.0.1:9/backups"),
    );
    let since = now();
    let bad = drover(
        &f,
        &[
            "volume",
            "snapshot",
            "bkf/data",
            "--name",
            "unreached",
            "--push",
            "offsite",
        ],
        PASSWORD,
    );
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("repository `offsite`"),
        "{}",
        stderr(&bad)
    );
    assert_eq!(
        pauses(a, &since),
        0,
        "the app was frozen for a store that cannot be reached"
    );
    assert!(
        !stdout(&drover(&f, &["volume", "snapshots", "bkf/data"], PASSWORD)).contains("unreached")
    );
}

#[test]
fn a_recovery_is_refused_while_the_volume_can_be_read_and_from_another_volumes_backup() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["bkr", "bkr-other"]);
    let _repo = with_local_repository(&f);
    let other = "---\nkind: Stack\nname: bkr-other\nvolumes:\n  data: { host: node-b }\n";
    f.write("stack.yaml", &(sleeper("bkr", "node-a", "") + other));
    assert!(drover(&f, &["reconcile"], PASSWORD).status.success());
    fill(&f.hosts[0], "bkr-data");
    for v in ["bkr/data", "bkr-other/data"] {
        ok(&f, &["volume", "snapshot", v, "--push", "offsite"]);
    }
    let other_id = {
        let o = drover(
            &f,
            &["volume", "snapshots", "bkr-other/data", "--output", "json"],
            PASSWORD,
        );
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
        rows.iter().find(|r| r["repository"] == "offsite").unwrap()["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // The app moves to node-b in the manifests, but node-a can be read.
    f.write("stack.yaml", &(sleeper("bkr", "node-b", "") + other));
    let o = drover(
        &f,
        &[
            "volume", "recover", "bkr/data", "--from", "offsite", "--yes",
        ],
        PASSWORD,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("that is a move"), "{}", stderr(&o));
    let o = drover(
        &f,
        &[
            "volume",
            "recover",
            "bkr/data",
            "--from",
            &format!("offsite:{other_id}"),
            "--yes",
        ],
        PASSWORD,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not of `bkr/data`"), "{}", stderr(&o));
    assert!(text(&docker(&f.hosts[1], &["volume", "ls", "-q"]))
        .lines()
        .all(|l| l != "bkr-data"));
}

#[test]
fn a_host_that_reaches_the_store_backs_up_and_restores_straight_to_it() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let Some(s3) = S3::start_on(&gateway(&hosts[0]), false) else {
        return;
    };
    let f = Fixture::new(hosts, &["bkd"]);
    let url = s3.url();
    with_repository(&f, &url, S3_ENV);
    f.write("stack.yaml", &sleeper("bkd", "node-a", ""));
    assert!(drover(&f, &["reconcile"], PASSWORD).status.success());
    let a = &f.hosts[0];
    fill(a, "bkd-data");
    let old = "touch -d '2020-01-02 03:04:05' /d/same";
    in_volume(a, "bkd-data", &format!("echo aaaa > /d/same; {old}"));
    let out = ok(&f, &["volume", "backup", "bkd/data", "--to", "offsite"]);
    assert!(out.contains("straight from the host"), "{}", out);
    let backed_up = volume_listing(a, "bkd-data");
    assert!(restic(&url, &["check"]).status.success(), "restic check");
    // `--copy-via api` keeps to the relay, into the same repository. A file
    // rewritten with its size and mtime kept is pushed all the same.
    in_volume(
        a,
        "bkd-data",
        &format!("echo second > /d/second; echo bbbb > /d/same; {old}"),
    );
    let out = ok(
        &f,
        &[
            "volume",
            "backup",
            "bkd/data",
            "--to",
            "offsite",
            "--copy-via",
            "api",
        ],
    );
    assert!(out.contains("through drover"), "{}", out);
    assert!(restic(&url, &["check"]).status.success(), "restic check");
    let listed = stdout(&restic(&url, &["snapshots", "--json"]));
    assert_eq!(listed.matches("\"drover\"").count(), 2, "{listed}");
    let out_dir = tempfile::tempdir().unwrap();
    let target = out_dir.path().to_str().unwrap();
    assert!(restic(&url, &["restore", "latest", "--target", target])
        .status
        .success());
    assert_eq!(
        local_listing(&out_dir.path().join("data")),
        volume_listing(a, "bkd-data")
    );

    // A restore of the first backup, read straight from the store and
    // checked by content.
    let first = listed.split("\"id\":\"").nth(1).unwrap()[..8].to_string();
    ok(
        &f,
        &[
            "volume",
            "restore",
            "bkd/data",
            &format!("offsite:{first}"),
            "--yes",
        ],
    );
    assert_eq!(volume_listing(a, "bkd-data"), backed_up);
    assert!(running(a, "bkd-app"));
    drop(s3);
}

#[test]
fn a_store_that_refuses_the_credentials_is_named_and_nothing_is_frozen_or_written() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let Some(s3) = S3::start_on("127.0.0.1", true) else {
        return;
    };
    let f = Fixture::new(hosts, &["bkc"]);
    with_repository(&f, &s3.url(), S3_ENV);
    f.write("stack.yaml", &sleeper("bkc", "node-a", ""));
    assert!(drover(&f, &["reconcile"], PASSWORD).status.success());
    let a = &f.hosts[0];
    fill(a, "bkc-data");
    let since = now();
    for args in [
        &["volume", "backup", "bkc/data", "--to", "offsite"][..],
        &[
            "volume", "snapshot", "bkc/data", "--name", "x", "--push", "offsite",
        ][..],
    ] {
        let o = drover(&f, args, PASSWORD);
        assert!(!o.status.success());
        let said = stderr(&o);
        assert!(
            said.contains("repository `offsite` cannot be reached or refused access"),
            "{said}"
        );
        assert!(!said.contains("drover-test-secret"), "{said}");
    }
    assert_eq!(
        pauses(a, &since),
        0,
        "an app was frozen for a backup that could not be stored"
    );
    assert!(running(a, "bkc-app"));
    let vols = stdout(&docker(a, &["volume", "ls", "-q"]));
    assert!(!vols.contains("bkc-data."), "a snapshot was made: {vols}");
    drop(s3);
}
