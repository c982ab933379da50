//! Snapshots, restores and clones on real engines (`docs/snapshots.md`):
//! a snapshot of a volume being written is a prefix of what the writer
//! acknowledged, restores and clones equal their snapshot, a drover killed
//! while an app is frozen never leaves it frozen, and bad requests change
//! nothing.

mod support;

use std::time::Duration;

use support::*;

/// A stack `name` whose app appends numbered, fsynced records to
/// `/data/log` and counts them in `/data/ack` once each is on disk (the
/// count replaced by a rename, so that it is never seen half written).
fn appender(name: &str, host: &str, extra: &str) -> String {
    format!(
        "kind: Stack
name: {name}
volumes:
  data: {{ {extra} }}
apps:
  app:
    image: {IMAGE}
    host: {host}
    pull: never
    command: ['sh', '-c', 'trap \"exit 0\" TERM; i=0; while :; do i=$$((i+1)); echo \"record $$i end\" >> /data/log; sync; echo $$i > /data/ack.new; mv /data/ack.new /data/ack; done']
    volumes: ['data:/data']
    stop_grace_period: 2s
"
    )
}

/// A stack `name` whose app on node-a mounts `data` and only waits, with
/// `extra` lines for the app.
fn sleeper(name: &str, extra: &str) -> String {
    format!(
        "kind: Stack
name: {name}
volumes:
  data: {{}}
apps:
  app:
    image: {IMAGE}
    host: node-a
    pull: never
    command: ['sh', '-c', 'trap \"exit 0\" TERM; while :; do sleep 1; done']
    volumes: ['data:/data']
    stop_grace_period: 1s
{extra}"
    )
}

/// A listing with times: path, kind, mode, owner, size, mtime, hash or
/// link target, of every entry.
fn full_listing(host: &TestHost, volume: &str) -> String {
    in_volume(
        host,
        volume,
        r#"cd /d && find . | sort | while IFS= read -r f; do
  if [ -L "$f" ]; then x="-> $(readlink "$f") $(stat -c '%u %g' "$f")"
  elif [ -d "$f" ]; then x="dir $(stat -c '%a %u %g' "$f")"
  else x="$(stat -c '%F %a %u %g %s %Y' "$f") $(md5sum < "$f")"; fi
  echo "$f $x"
done"#,
    )
}

fn snapshots_json(f: &Fixture) -> Vec<serde_json::Value> {
    let o = f.drover(&["volume", "snapshots", "--output", "json"]);
    assert!(o.status.success());
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The Docker volume of the snapshot a restore of `volume` kept its
/// content in.
fn kept_before_restore(f: &Fixture, volume: &str) -> String {
    let before = snapshots_json(f)
        .into_iter()
        .find(|s| s["name"].as_str().unwrap().starts_with("before-restore-"))
        .expect("the replaced content is kept as a snapshot");
    format!("{volume}.{}", before["name"].as_str().unwrap())
}

fn paused(host: &TestHost, container: &str) -> bool {
    inspect(host, container, "{{.State.Paused}}").as_deref() == Some("true")
}

#[test]
fn a_snapshot_of_a_volume_being_written_holds_a_prefix_of_the_acknowledged_records() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["snapw"]);
    f.write("stack.yaml", &appender("snapw", "node-a", ""));
    f.reconcile();
    let a = &f.hosts[0];
    wait_until(Duration::from_secs(30), "records", || {
        in_volume(a, "snapw-data", "cat /d/ack 2>/dev/null || echo 0")
            .parse::<u64>()
            .unwrap_or(0)
            > 20
    });
    for n in 1..=3 {
        let name = format!("s{n}");
        let o = f.drover(&["volume", "snapshot", "snapw/data", "--name", &name]);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains(&format!("took snapshot `{name}`")), "{out}");
        assert!(out.contains("froze the apps"), "{out}");
        let acked: u64 = in_volume(a, "snapw-data", "cat /d/ack").parse().unwrap();
        let log = in_volume(a, &format!("snapw-data.{name}"), "cat /d/log");
        let lines: Vec<&str> = log.lines().collect();
        assert!(!lines.is_empty());
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(
                *l,
                format!("record {} end", i + 1),
                "snapshot {name}: a gap or a torn record"
            );
        }
        // Everything acknowledged before it was frozen is in it, and
        // nothing the writer had not yet written.
        let snap_ack: u64 = in_volume(a, &format!("snapw-data.{name}"), "cat /d/ack")
            .parse()
            .unwrap_or(0);
        assert!(
            lines.len() as u64 >= snap_ack,
            "an acknowledged record is missing"
        );
        assert!(snap_ack <= acked);
        assert!(running(a, "snapw-app") && !paused(a, "snapw-app"));
    }
    let listed = snapshots_json(&f);
    let names: Vec<&str> = listed.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["s1", "s2", "s3"]);
    for s in &listed {
        assert_eq!(s["host"], "node-a");
        assert_eq!(s["state"], "complete");
        assert!(s["bytes"].as_u64().unwrap() > 0);
        assert!(s["held_ms"].as_u64().is_some());
    }
    // Snapshots are neither orphans nor pruned.
    let ls = stdout(&f.drover(&["volume", "ls"]));
    assert!(ls.contains("snapshot `s1` of snapw/data"), "{ls}");
    let o = f.drover(&["reconcile", "--prune-volumes"]);
    assert!(o.status.success());
    assert_eq!(snapshots_json(&f).len(), 3);
    // A stop snapshot stops and starts the app.
    let o = f.drover(&[
        "volume",
        "snapshot",
        "snapw/data",
        "--name",
        "cold",
        "--consistency",
        "stop",
    ]);
    assert!(stdout(&o).contains("stopped the apps"), "{}", stdout(&o));
    assert!(running(a, "snapw-app"));
}

#[test]
fn a_restore_and_a_clone_are_byte_identical_to_their_snapshot_and_lose_nothing() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["snapr", "snapc"]);
    let other = "---\nkind: Stack\nname: snapc\nvolumes:\n  data: { host: node-b }\n";
    f.write(
        "stack.yaml",
        &(sleeper(
            "snapr",
            "    healthcheck: { test: ['CMD', 'true'], interval: 1s }\n",
        ) + other),
    );
    f.reconcile();
    let (a, b) = (&f.hosts[0], &f.hosts[1]);
    in_volume(
        a,
        "snapr-data",
        "mkdir -p /d/sub/deep && echo one > /d/a && echo two > /d/sub/b && ln -s ../a /d/sub/link \
         && chmod 640 /d/a && chown 123:456 /d/sub/b && touch -d '2020-01-02 03:04:05' /d/sub/b \
         && head -c 3000000 /dev/urandom > /d/sub/deep/big",
    );
    let o = f.drover(&["volume", "snapshot", "snapr/data", "--name", "good"]);
    assert!(o.status.success());
    let good = full_listing(a, "snapr-data.good");
    assert_eq!(good, full_listing(a, "snapr-data"));
    // The data goes bad.
    in_volume(
        a,
        "snapr-data",
        "rm /d/a && echo bad > /d/sub/b && echo new > /d/new",
    );
    let bad = full_listing(a, "snapr-data");

    let o = f.drover(&["volume", "restore", "snapr/data", "good", "--dry-run"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("stop snapr-app"), "{}", stdout(&o));
    assert_eq!(
        full_listing(a, "snapr-data"),
        bad,
        "a dry run changed the data"
    );
    let o = f.drover(&["volume", "restore", "snapr/data", "good"]);
    assert!(
        !o.status.success(),
        "a restore without a terminal needs --yes"
    );
    let o = f.drover(&["volume", "restore", "snapr/data", "good", "--yes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(full_listing(a, "snapr-data"), good);
    assert!(running(a, "snapr-app"));
    // What was replaced is kept.
    let kept = kept_before_restore(&f, "snapr-data");
    assert_eq!(full_listing(a, &kept), bad);

    // A clone of the snapshot onto the other host, and one of the live
    // volume (frozen for its last pass) beside it.
    let o = f.drover(&[
        "volume",
        "clone",
        "snapr/data@good",
        "snapc/fresh",
        "--host",
        "node-b",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(full_listing(b, "snapc-fresh"), good);
    let o = f.drover(&[
        "volume",
        "clone",
        "snapr/data",
        "snapc/live",
        "--host",
        "node-a",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("froze the apps"), "{}", stdout(&o));
    assert_eq!(full_listing(a, "snapc-live"), good);
    // A clone never overwrites: `snapc/data` exists (made by reconcile).
    let o = f.drover(&["volume", "clone", "snapr/data@good", "snapc/data"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("never overwrites"), "{}", stderr(&o));
    assert_eq!(in_volume(b, "snapc-data", "ls -A /d"), "");
    // A snapshot is deleted only by `volume rm`, its record with it.
    let o = f.drover(&[
        "volume",
        "rm",
        "--host",
        "node-a",
        "snapr-data.good",
        "--yes",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(snapshots_json(&f).iter().all(|s| s["name"] != "good"));
}

#[test]
fn a_drover_killed_while_an_app_is_frozen_never_leaves_it_frozen() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["snapk"]);
    f.write("stack.yaml", &appender("snapk", "node-a", ""));
    f.reconcile();
    let a = &f.hosts[0];
    // Killed with no controller: the next command lets it go.
    let o = f.drover_with(
        &["volume", "snapshot", "snapk/data", "--name", "k1"],
        &[("DROVER_TEST_ABORT_AT", "frozen")],
    );
    assert!(!o.status.success());
    assert!(paused(a, "snapk-app"), "the test hook fires while frozen");
    let o = f.drover(&["reconcile"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(running(a, "snapk-app") && !paused(a, "snapk-app"));
    // The unfinished snapshot is never listed as one to use.
    assert!(snapshots_json(&f)
        .iter()
        .all(|s| s["name"] != "k1" || s["state"] == "unfinished"));
    let o = f.drover(&["volume", "restore", "snapk/data", "k1", "--yes"]);
    assert!(!o.status.success());
    // And under a controller, at once.
    let ctl = f.controller(&[], &[]);
    let o = f.drover_with(
        &["volume", "snapshot", "snapk/data", "--name", "k2"],
        &[("DROVER_TEST_ABORT_AT", "frozen")],
    );
    assert!(!o.status.success());
    let took = wait_until(
        Duration::from_secs(10),
        "the controller to unfreeze the app",
        || !paused(a, "snapk-app"),
    );
    eprintln!("unfrozen {took:?} after drover was killed");
    assert!(running(a, "snapk-app"));
    drop(ctl);
    // A rerun of the same name finishes the snapshot.
    let o = f.drover(&["volume", "snapshot", "snapk/data", "--name", "k2"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn bad_snapshot_requests_are_named_and_change_nothing() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["snapb"]);
    f.write("stack.yaml", &appender("snapb", "node-a", ""));
    f.reconcile();
    let cases: &[(&[&str], &str)] = &[
        (
            &["volume", "snapshot", "snapb/data", "--name", "Bad_Name"],
            "not a valid snapshot name",
        ),
        (
            &["volume", "snapshot", "snapb/nope"],
            "has no volume `nope`",
        ),
        (&["volume", "snapshot", "other/data"], "no stack `other`"),
        (
            &["volume", "restore", "snapb/data", "missing", "--yes"],
            "no snapshot `missing`",
        ),
        (
            &[
                "volume",
                "clone",
                "snapb/data@missing",
                "snapb/copy",
                "--host",
                "node-b",
            ],
            "no snapshot `missing`",
        ),
    ];
    for (args, said) in cases {
        let o = f.drover(args);
        assert!(!o.status.success(), "{args:?}");
        assert!(stderr(&o).contains(said), "{args:?}: {}", stderr(&o));
    }
    assert!(snapshots_json(&f).is_empty());
    assert!(running(&f.hosts[0], "snapb-app") && !paused(&f.hosts[0], "snapb-app"));
    // A volume whose app the manifests now place on another host is not
    // restored or snapshotted where it is, nor where it is not yet.
    f.write("stack.yaml", &appender("snapb", "node-b", ""));
    for args in [
        &["volume", "restore", "snapb/data", "any", "--yes"][..],
        &["volume", "snapshot", "snapb/data"][..],
    ] {
        let o = f.drover(args);
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("is on `node-a` and the manifests place it on `node-b`"),
            "{}",
            stderr(&o)
        );
    }
    assert!(running(&f.hosts[0], "snapb-app"));
    assert!(inspect(&f.hosts[1], "snapb-copy", "{{.Name}}").is_none());
}

#[test]
fn a_staging_stack_with_from_gets_the_snapshot_once_and_is_never_overwritten() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["snapp", "snaps"]);
    let prod = appender("snapp", "node-a", "");
    let staging = format!(
        "kind: Stack
name: snaps
volumes:
  data: {{ from: {{ stack: snapp, volume: data, snapshot: latest }} }}
apps:
  app:
    image: {IMAGE}
    host: node-b
    pull: never
    command: ['sh', '-c', 'trap \"exit 0\" TERM; while :; do sleep 1; done']
    volumes: ['data:/data']
    stop_grace_period: 1s
"
    );
    f.write("stack.yaml", &prod);
    f.reconcile();
    // Without a snapshot, staging is not made (never empty), and the plan
    // says why, where `from:` is written.
    f.write("staging.yaml", &staging);
    let o = f.drover(&["reconcile"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("staging.yaml:4:") && err.contains("there is none"),
        "{err}"
    );
    assert!(inspect(&f.hosts[1], "snaps-data", "{{.Name}}").is_none());
    assert!(inspect(&f.hosts[1], "snaps-app", "{{.Name}}").is_none());

    let o = f.drover(&["volume", "snapshot", "snapp/data", "--name", "nightly"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let want = full_listing(&f.hosts[0], "snapp-data.nightly");
    let o = f.drover(&["reconcile", "--dry-run"]);
    assert!(
        stdout(&o).contains("made from snapp/data@nightly on `node-a`"),
        "{}",
        stdout(&o)
    );
    f.reconcile();
    assert_eq!(full_listing(&f.hosts[1], "snaps-data"), want);
    assert!(running(&f.hosts[1], "snaps-app"));
    // A newer snapshot does not touch a volume that exists.
    in_volume(&f.hosts[1], "snaps-data", "echo staging > /d/mine");
    let o = f.drover(&["volume", "snapshot", "snapp/data", "--name", "later"]);
    assert!(o.status.success());
    let o = f.drover(&["reconcile"]);
    assert!(o.status.success());
    assert_eq!(
        in_volume(&f.hosts[1], "snaps-data", "cat /d/mine"),
        "staging"
    );

    // Moving the volume leaves its snapshots where they are (copies), and
    // the list says where each is.
    f.write("stack.yaml", &appender("snapp", "node-b", ""));
    f.reconcile();
    assert!(running(&f.hosts[1], "snapp-app"));
    let listed = snapshots_json(&f);
    assert!(listed
        .iter()
        .any(|s| s["name"] == "nightly" && s["host"] == "node-a"));

    // A `from:` naming what is not in the manifests is a located error.
    f.write(
        "staging.yaml",
        &staging.replace("stack: snapp", "stack: nope"),
    );
    let o = f.drover(&["validate"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("staging.yaml:4:") && stderr(&o).contains("stack `nope`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_controller_takes_scheduled_snapshots_and_keeps_only_the_newest() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["snapt"]);
    f.write(
        "stack.yaml",
        &appender("snapt", "node-a", "snapshots: { every: 2s, keep: 2 }"),
    );
    f.reconcile();
    // One taken by hand is never pruned by the schedule.
    let o = f.drover(&["volume", "snapshot", "snapt/data", "--name", "mine"]);
    assert!(o.status.success());
    let ctl = f.controller(&[], &[]);
    let scheduled = |f: &Fixture| {
        snapshots_json(f)
            .into_iter()
            .filter(|s| s["name"] != "mine")
            .count()
    };
    // Names are the UTC second: at least three scheduled ones have been
    // taken once the third name differs from the first two.
    let mut names = std::collections::BTreeSet::new();
    wait_until(Duration::from_secs(90), "three scheduled snapshots", || {
        for s in snapshots_json(&f) {
            names.insert(s["name"].as_str().unwrap().to_string());
        }
        names.len() >= 4
    });
    wait_until(
        Duration::from_secs(30),
        "the schedule to prune past `keep`",
        || scheduled(&f) <= 2,
    );
    assert!(snapshots_json(&f).iter().any(|s| s["name"] == "mine"));
    let last = ctl
        .metric("drover_snapshot_last_success_timestamp_seconds{stack=\"snapt\",volume=\"data\"}")
        .expect("the time of the last snapshot is a metric");
    assert!(last > 1.7e9, "{last}");
    let (_, health) = ctl.health();
    assert_eq!(
        health["snapshots_overdue"],
        serde_json::json!([]),
        "{health}"
    );
    assert!(running(&f.hosts[0], "snapt-app") && !paused(&f.hosts[0], "snapt-app"));
}

#[test]
fn a_restore_keeps_every_record_its_app_wrote_until_it_stopped() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["snapw"]);
    // The app appends a record every 20 ms, and says each on its output;
    // each start says so first.
    f.write(
        "stack.yaml",
        &format!(
            "kind: Stack
name: snapw
volumes:
  data: {{}}
apps:
  app:
    image: {IMAGE}
    host: node-a
    pull: never
    command: ['sh', '-c', 'trap \"exit 0\" TERM; echo start; i=0; while :; do i=$$((i+1)); echo \"record $$i\" >> /data/log; echo $$i; sleep 0.02; done']
    volumes: ['data:/data']
    stop_grace_period: 2s
"
        ),
    );
    f.reconcile();
    let a = &f.hosts[0];
    std::thread::sleep(Duration::from_secs(1));
    let o = f.drover(&["volume", "snapshot", "snapw/data", "--name", "early"]);
    assert!(o.status.success(), "{}", stderr(&o));
    in_volume(a, "snapw-data", "head -c 20000000 /dev/urandom > /d/bulk");
    // The restore copies the content it replaces while the app still
    // writes, then what changed once it has stopped.
    let o = f.drover(&["volume", "restore", "snapw/data", "early", "--yes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = text(&docker(a, &["logs", "snapw-app"]));
    let first_run: Vec<&str> = out.lines().skip(1).take_while(|l| *l != "start").collect();
    let last = first_run.last().expect("the app wrote records").to_string();
    let kept = kept_before_restore(&f, "snapw-data");
    assert_eq!(
        in_volume(
            a,
            &kept,
            "wc -l < /d/log; tail -n 1 /d/log; test -f /d/bulk && echo bulk"
        ),
        format!("{last}\nrecord {last}\nbulk"),
        "the kept content holds every record up to the app's stop"
    );
}

#[test]
fn a_restore_interrupted_midway_is_finished_by_the_next_reconcile_and_its_app_waits() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["snapi"]);
    f.write("stack.yaml", &sleeper("snapi", ""));
    f.reconcile();
    let a = &f.hosts[0];
    in_volume(
        a,
        "snapi-data",
        "seq 1 5000 > /d/good && mkdir /d/dir && echo x > /d/dir/x",
    );
    assert!(f
        .drover(&["volume", "snapshot", "snapi/data", "--name", "good"])
        .status
        .success());
    let good = full_listing(a, "snapi-data.good");
    in_volume(a, "snapi-data", "rm -r /d/dir && echo bad > /d/good");
    let o = f.drover_with(
        &["volume", "restore", "snapi/data", "good", "--yes"],
        &[("DROVER_TEST_ABORT_AT", "restore-copy")],
    );
    assert!(!o.status.success());
    // Half done: the app waits, and says why.
    assert!(!running(a, "snapi-app"));
    let o = f.drover(&["reconcile", "--dry-run"]);
    assert!(
        stdout(&o).contains("restore of volume `snapi-data`")
            || stderr(&o).contains("restore of volume `snapi-data`"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(!running(a, "snapi-app"));
    // The next reconcile finishes it, and only then starts the app.
    let o = f.drover(&["reconcile"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(full_listing(a, "snapi-data"), good);
    assert!(running(a, "snapi-app"));
    assert!(snapshots_json(&f)
        .iter()
        .any(|s| s["name"].as_str().unwrap().starts_with("before-restore-")));
}

#[test]
fn a_full_disk_mid_snapshot_discards_it_and_the_app_goes_on() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let (c, disk) = small_disk_host();
    let filler = format!("{disk}/filler-snapshot");
    let _ = std::fs::remove_file(&filler);
    let a = hosts.into_iter().next().unwrap();
    let f = Fixture::new(vec![a, c], &["snapf"]);
    f.write("stack.yaml", &appender("snapf", "node-b", ""));
    f.reconcile();
    let c = &f.hosts[1];
    in_volume(
        c,
        "snapf-data",
        "dd if=/dev/urandom of=/d/blob bs=1M count=48 2>/dev/null",
    );
    // A first snapshot brings the helper image; then the disk is filled
    // to within 16 MiB.
    assert!(f
        .drover(&["volume", "snapshot", "snapf/data", "--name", "first"])
        .status
        .success());
    let o = f.drover(&[
        "volume",
        "rm",
        "--host",
        "node-b",
        "snapf-data.first",
        "--yes",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    fill_disk(disk, &filler, 16 << 20);
    let before = full_listing(c, "snapf-data");
    let o = f.drover(&["volume", "snapshot", "snapf/data", "--name", "full"]);
    let _ = std::fs::remove_file(&filler);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("No space left on device") && stderr(&o).contains("discarded"),
        "{}",
        stderr(&o)
    );
    assert!(snapshots_json(&f).is_empty(), "the snapshot was discarded");
    assert!(inspect(c, "snapf-data.full", "{{.Name}}").is_none());
    assert!(running(c, "snapf-app") && !paused(c, "snapf-app"));
    // (The app appends while the listing is made: compare all but the log.)
    let strip = |l: String| {
        l.lines()
            .filter(|x| !x.contains("./log") && !x.contains("./ack"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(full_listing(c, "snapf-data")), strip(before));
    // With space again, it works.
    let o = f.drover(&["volume", "snapshot", "snapf/data", "--name", "full"]);
    assert!(o.status.success(), "{}", stderr(&o));
}
