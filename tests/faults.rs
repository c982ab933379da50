//! Faults during apply, on real engines: an engine killed mid-apply and
//! down for a whole pass, and a target host whose disk fills up during a
//! volume move. Each ends in a clear state with nothing lost, and the next
//! pass converges once the fault is gone. (A never-healthy dependency and a
//! missing image are in `e2e.rs`; an engine stopped mid-copy, in
//! `relocation.rs`.)

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::*;

#[test]
fn an_engine_killed_mid_apply_and_down_for_a_pass_loses_nothing_and_the_next_pass_converges() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let name = "fault-kill";
    let f = Fixture::new(hosts, &[name]);
    let keep = format!(
        "kind: Stack
name: {name}
volumes:
  kept: {{}}
apps:
  keep:
    image: {IMAGE}
    host: node-b
    volumes: ['kept:/data']
    command: ['sh', '-c', 'trap exit TERM; while :; do sleep 1; done']
    stop_grace_period: 1s
"
    );
    f.write("stack.yaml", &keep);
    f.reconcile();
    let (a, b) = (&f.hosts[0], &f.hosts[1]);
    in_volume(b, "fault-kill-kept", "echo precious > /d/marker");

    // db on node-a takes 3 s to be healthy; web on node-b waits for it.
    f.write("stack.yaml", &format!("{keep}{}", slow_apps("web")));
    let child = f
        .command(&["reconcile"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), "db to be made on node-a", || {
        inspect(a, "fault-kill-db", "{{.Id}}").is_some()
    });
    host_script("kill", "node-b");
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    eprintln!("--- the reconcile node-b died under\n{}{err}", stdout(&o));
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("node-b"), "the error names the host: {err}");

    // A whole pass with node-b down: named, node-a converges, nothing on
    // node-a is removed.
    let o = f.drover(&["reconcile"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("host `node-b` could not be read"),
        "{}",
        stderr(&o)
    );
    assert!(running(a, "fault-kill-db"));

    host_script("start", "node-b");
    let o = f.drover(&["reconcile"]);
    assert!(o.status.success(), "converges once node-b is back");
    assert!(running(b, "fault-kill-web"));
    assert!(running(b, "fault-kill-keep"));
    assert_eq!(in_volume(b, "fault-kill-kept", "cat /d/marker"), "precious");
    let o = f.drover(&["reconcile", "--dry-run", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "in sync");
}

/// The space left on the file system holding `path`, in bytes.
#[test]
fn a_target_disk_that_fills_up_mid_move_leaves_the_app_and_its_data_on_the_source() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let (c, disk) = small_disk_host();
    let filler = format!("{disk}/filler");
    let _ = std::fs::remove_file(&filler);
    let a = hosts.into_iter().next().unwrap();
    let name = "fault-full";
    let f = Fixture::new(vec![a, c], &[name]);
    let stack = |tiny: &str, bulk: &str| {
        format!(
            "kind: Stack
name: {name}
volumes:
  small: {{}}
  big: {{}}
apps:
  tiny:
    image: {IMAGE}
    host: {tiny}
    volumes: ['small:/data']
    command: ['sh', '-c', 'trap exit TERM; while :; do sleep 1; done']
    stop_grace_period: 1s
  bulk:
    image: {IMAGE}
    host: {bulk}
    volumes: ['big:/data']
    command: ['sh', '-c', 'trap exit TERM; while :; do sleep 1; done']
    stop_grace_period: 1s
"
        )
    };
    f.write("stack.yaml", &stack("node-a", "node-a"));
    f.reconcile();
    let (a, c) = (&f.hosts[0], &f.hosts[1]);
    in_volume(a, "fault-full-small", "echo hello > /d/hello");
    in_volume(
        a,
        "fault-full-big",
        "dd if=/dev/urandom of=/d/blob bs=1M count=64 2>/dev/null; mkdir /d/more; seq 100000 > /d/more/numbers",
    );
    let before = listing(a, "fault-full-big");

    // A first move brings the helper image to node-c; then its disk is
    // filled to within 16 MiB.
    f.write("stack.yaml", &stack("node-b", "node-a"));
    f.reconcile();
    fill_disk(disk, &filler, 16 << 20);

    f.write("stack.yaml", &stack("node-b", "node-b"));
    let o = f.drover(&["reconcile"]);
    assert_eq!(o.status.code(), Some(1), "the move fails");
    let err = stderr(&o) + &stdout(&o);
    assert!(
        err.contains("No space left on device"),
        "the reason is given: {err}"
    );
    assert!(running(a, "fault-full-bulk"), "the app runs on its source");
    assert!(!running(c, "fault-full-bulk"));
    assert_eq!(
        listing(a, "fault-full-big"),
        before,
        "the source is untouched"
    );
    let o = f.drover(&["reconcile", "--dry-run"]);
    assert!(stdout(&o).contains("relocate"), "the move is still to do");

    // Space again: the next pass moves it, verified.
    std::fs::remove_file(&filler).unwrap();
    let o = f.drover(&["reconcile"]);
    assert!(o.status.success(), "the move completes once there is space");
    assert!(running(c, "fault-full-bulk"));
    assert!(!running(a, "fault-full-bulk"));
    assert_eq!(listing(c, "fault-full-big"), before);
    assert!(
        docker(a, &["volume", "inspect", "fault-full-big"])
            .status
            .success(),
        "the old copy is kept"
    );
}
