//! The guarantees of a move (`docs/relocation.md`), on fake hosts whose
//! volumes are folders and whose helpers run in-process: no root, no
//! Docker. The same guarantees are tested on real engines in
//! `tests/relocation.rs` and `tests/data_safety.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::apply::{ApplyOptions, Executor, Outcome, Report, Reporter};
use crate::desired::Desired;
use crate::docker::fake::FakeDocker;
use crate::docker::DockerApi;
use crate::observed::{ContainerState, CopyRole, Observed, ObservedHost};
use crate::plan::{authority, plan, Action, Authority, Options, Verb};

/// The stack `m`: one app writing into volume `data`, on `host`.
fn desired(host: &str) -> Desired {
    crate::testing::desired_on_two_hosts(&format!(
        "kind: Stack\nname: m\nvolumes: {{ data: {{}} }}\napps:\n  app: {{ image: img, host: {host}, volumes: ['data:/data'], stop_grace_period: 1s }}\n"
    ))
}

struct NoReport;
impl Reporter for NoReport {
    fn started(&self, _: &Action) {}
    fn finished(&self, _: &Action, _: &Outcome, _: Duration) {}
}

/// Two hosts with disks, the app deployed on `a` with a few files.
struct Hosts {
    _disks: (tempfile::TempDir, tempfile::TempDir),
    a: Arc<FakeDocker>,
    b: Arc<FakeDocker>,
}

impl Hosts {
    async fn deployed() -> Hosts {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let host = || ObservedHost {
            images: vec!["img".into()],
            ..ObservedHost::default()
        };
        let h = Hosts {
            a: Arc::new(FakeDocker::with_disk("a", host(), da.path())),
            b: Arc::new(FakeDocker::with_disk("b", host(), db.path())),
            _disks: (da, db),
        };
        assert!(h.apply(desired("a")).await.all_done());
        let data = h.a.volume_path("m-data");
        std::fs::create_dir_all(data.join("sub/deeper")).unwrap();
        std::fs::write(data.join("hello.txt"), "hello\n").unwrap();
        std::fs::write(data.join("sub/deeper/big.bin"), vec![7u8; 300_000]).unwrap();
        std::os::unix::fs::symlink("hello.txt", data.join("link")).unwrap();
        h
    }

    fn observed(&self) -> Observed {
        Observed {
            hosts: BTreeMap::from([
                ("a".to_string(), self.a.state()),
                ("b".to_string(), self.b.state()),
            ]),
            ..Default::default()
        }
    }

    async fn apply(&self, d: Desired) -> Report {
        let p = plan(&d, &self.observed(), Options::default());
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let engines: BTreeMap<String, Arc<dyn DockerApi>> = BTreeMap::from([
            ("a".to_string(), Arc::clone(&self.a) as Arc<dyn DockerApi>),
            ("b".to_string(), Arc::clone(&self.b) as Arc<dyn DockerApi>),
        ]);
        let opts = ApplyOptions {
            direct_copy: false,
            poll: Duration::from_millis(20),
            dependency_timeout: Duration::from_secs(5),
            ..ApplyOptions::default()
        };
        Executor::new(engines, Arc::new(d), opts)
            .apply(&p, Arc::new(NoReport))
            .await
    }

    /// Which copy the records make current.
    fn authority(&self) -> Authority {
        let o = self.observed();
        let copies: Vec<(&str, &crate::observed::ObservedVolume)> = o
            .hosts
            .iter()
            .flat_map(|(h, oh)| {
                oh.volumes
                    .iter()
                    .filter(|v| v.name == "m-data")
                    .map(move |v| (h.as_str(), v))
            })
            .collect();
        authority("m-data", &copies, &BTreeSet::new())
    }

    fn running(&self, host: &FakeDocker) -> bool {
        host.state()
            .containers
            .iter()
            .any(|c| c.name == "m-app" && c.state == ContainerState::Running)
    }

    fn role_on(&self, host: &FakeDocker) -> Option<CopyRole> {
        host.state()
            .volumes
            .iter()
            .find(|v| v.name == "m-data")
            .and_then(|v| v.copy.as_ref().map(|r| r.role))
    }
}

/// Every path below `root` with its kind, mode and content.
fn tree(root: &Path) -> BTreeMap<String, (String, u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let entry = if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                ("link".into(), 0, t.display().to_string().into_bytes())
            } else if m.is_dir() {
                todo.push(p.clone());
                ("dir".into(), m.permissions().mode(), Vec::new())
            } else {
                (
                    "file".into(),
                    m.permissions().mode(),
                    std::fs::read(&p).unwrap(),
                )
            };
            out.insert(rel, entry);
        }
    }
    out
}

#[tokio::test]
async fn a_move_copies_every_file_exactly_and_keeps_the_old_copy() {
    let h = Hosts::deployed().await;
    let before = tree(&h.a.volume_path("m-data"));
    let report = h.apply(desired("b")).await;
    assert!(report.all_done(), "{:?}", report.outcomes);
    assert!(report
        .outcomes
        .iter()
        .any(|(a, _)| a.action == Verb::Relocate));
    assert_eq!(tree(&h.b.volume_path("m-data")), before);
    // The old copy is kept, recorded as retained; the app runs on b only.
    assert_eq!(tree(&h.a.volume_path("m-data")), before);
    assert_eq!(h.role_on(&h.a), Some(CopyRole::Retained));
    assert_eq!(h.authority(), Authority::On("b".into()));
    assert!(h.running(&h.b) && !h.running(&h.a));
    // Nothing left to do.
    let again = plan(&desired("b"), &h.observed(), Options::default());
    assert!(again.actions.is_empty(), "{:?}", again.actions);
}

#[tokio::test]
async fn an_app_that_cannot_start_on_the_target_is_rolled_back_to_its_source() {
    let h = Hosts::deployed().await;
    h.b.fail("start m-app");
    let report = h.apply(desired("b")).await;
    assert!(
        report
            .outcomes
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Failed(_))),
        "{:?}",
        report.outcomes
    );
    assert!(h.running(&h.a), "the app runs on its source again");
    assert_eq!(h.authority(), Authority::On("a".into()));
    assert_eq!(tree(&h.a.volume_path("m-data")).len(), 5);
}

#[tokio::test]
async fn the_check_after_the_stop_reads_again_only_what_the_delta_sent() {
    let only = |c: &String| c.contains("helper scan") && c.ends_with("--only");
    // A quiet app: the delta finds nothing to send and is the check.
    let h = Hosts::deployed().await;
    assert!(h.apply(desired("b")).await.all_done());
    for host in [&h.a, &h.b] {
        assert!(!host.calls().iter().any(only), "{:?}", host.calls());
    }
    // An app that writes as it stops: what the delta sent is checked on
    // both sides, and the copy has it.
    let h = Hosts::deployed().await;
    let source = h.a.volume_path("m-data");
    h.a.on("stop m-app", move || {
        std::fs::write(source.join("last.txt"), "written at the stop\n").unwrap();
    });
    assert!(h.apply(desired("b")).await.all_done());
    for host in [&h.a, &h.b] {
        let checks = host.calls().iter().filter(|c| only(c)).count();
        assert_eq!(checks, 1, "{:?}", host.calls());
    }
    assert_eq!(
        std::fs::read(h.b.volume_path("m-data").join("last.txt")).unwrap(),
        b"written at the stop\n"
    );
}

#[tokio::test]
async fn a_copy_that_does_not_match_after_the_stop_rolls_the_move_back() {
    let h = Hosts::deployed().await;
    // The app writes as it stops, so the delta sends `hello.txt`; the copy
    // of it changes between the delta and its verification.
    let source = h.a.volume_path("m-data");
    h.a.on("stop m-app", move || {
        std::fs::write(source.join("hello.txt"), "bye\n").unwrap();
    });
    let target = h.b.volume_path("m-data");
    h.b.on(
        "exec drover-move-m-data /drover helper scan --hash --only",
        move || std::fs::write(target.join("hello.txt"), "HELLO\n").unwrap(),
    );
    let report = h.apply(desired("b")).await;
    let failed = report.failures();
    assert!(
        failed
            .iter()
            .any(|e| e.contains("does not match the source")),
        "{failed:?}"
    );
    assert!(
        h.running(&h.a) && !h.running(&h.b),
        "the app stays on its source"
    );
    assert_eq!(h.authority(), Authority::On("a".into()));
    assert_eq!(
        std::fs::read(h.a.volume_path("m-data").join("hello.txt")).unwrap(),
        b"bye\n"
    );
}

#[tokio::test]
async fn a_move_stopped_dead_at_any_point_resumes_and_finishes_with_the_same_data() {
    // Where drover dies: during the first copy (the app still runs),
    // while the app stops, and after the switch (the app starting on b).
    let source = Authority::On("a".into());
    let finishing = Authority::Finishing {
        from: "a".into(),
        to: "b".into(),
    };
    for (on_b, call, then) in [
        (
            true,
            "exec drover-move-m-data /drover helper unpack",
            &source,
        ),
        (false, "stop m-app", &source),
        (true, "start m-app", &finishing),
    ] {
        let h = Hosts::deployed().await;
        let before = tree(&h.a.volume_path("m-data"));
        let host = if on_b { &h.b } else { &h.a };
        host.hang(call);
        let died = tokio::time::timeout(Duration::from_secs(3), h.apply(desired("b"))).await;
        assert!(died.is_err(), "`{call}` was to hang");
        host.unhang();
        // Before the switch the source holds the data; after it, the move
        // must be finished. Never a tie or a guess.
        assert_eq!(&h.authority(), then, "after dying at `{call}`");
        if *then == source {
            assert!(
                h.running(&h.a),
                "the app still runs on its source after `{call}`"
            );
        }
        let report = h.apply(desired("b")).await;
        assert!(report.all_done(), "after `{call}`: {:?}", report.outcomes);
        assert_eq!(tree(&h.b.volume_path("m-data")), before, "after `{call}`");
        assert_eq!(h.authority(), Authority::On("b".into()), "after `{call}`");
        assert!(h.running(&h.b) && !h.running(&h.a), "after `{call}`");
    }
}

#[tokio::test]
async fn hard_links_stay_one_file_after_a_move_and_its_way_back() {
    use std::os::unix::fs::MetadataExt;
    let h = Hosts::deployed().await;
    let data = h.a.volume_path("m-data");
    std::fs::hard_link(data.join("hello.txt"), data.join("sub/again.txt")).unwrap();
    std::fs::hard_link(data.join("hello.txt"), data.join("sub/deeper/third.txt")).unwrap();
    let linked = |root: &Path| {
        let m: Vec<_> = ["hello.txt", "sub/again.txt", "sub/deeper/third.txt"]
            .iter()
            .map(|p| std::fs::metadata(root.join(p)).unwrap())
            .collect();
        m.iter().all(|x| x.ino() == m[0].ino() && x.nlink() == 3)
    };
    assert!(h.apply(desired("b")).await.all_done());
    assert!(
        linked(&h.b.volume_path("m-data")),
        "one file, three names, on b"
    );
    assert_eq!(tree(&h.b.volume_path("m-data")), tree(&data));
    // Back onto the retained copy, after the content changed on b.
    std::fs::write(h.b.volume_path("m-data").join("sub/again.txt"), "changed\n").unwrap();
    let report = h.apply(desired("a")).await;
    assert!(report.all_done(), "{:?}", report.outcomes);
    assert!(linked(&data), "still one file on a");
    assert_eq!(std::fs::read(data.join("hello.txt")).unwrap(), b"changed\n");
}

#[tokio::test]
async fn a_sparse_file_stays_sparse_after_a_move() {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;
    let h = Hosts::deployed().await;
    let data = h.a.volume_path("m-data");
    let mut f = std::fs::File::create(data.join("disk.img")).unwrap();
    f.set_len(64 << 20).unwrap();
    for at in [0u64, 1 << 20, (64 << 20) - 4096] {
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[0xab; 4096]).unwrap();
    }
    drop(f);
    let blocks = |root: &Path| std::fs::metadata(root.join("disk.img")).unwrap().blocks();
    let source = blocks(&data);
    assert!(
        source * 512 < 1 << 20,
        "the test file system keeps holes: {source}"
    );
    assert!(h.apply(desired("b")).await.all_done());
    let copy = blocks(&h.b.volume_path("m-data"));
    assert!(
        copy <= source + source / 10 + 8,
        "allocated blocks: {copy} in the copy, {source} on the source"
    );
    assert_eq!(tree(&h.b.volume_path("m-data")), tree(&data));
}

#[tokio::test]
async fn extended_attributes_and_acls_are_copied_and_verified() {
    let h = Hosts::deployed().await;
    let data = h.a.volume_path("m-data");
    let file = data.join("hello.txt");
    xattr::set(&file, "user.origin", b"mail\x00store").unwrap();
    xattr::set(data.join("sub"), "user.kind", b"folder").unwrap();
    // A POSIX ACL (version 2): owner rw, user 1234 r, group r, mask r, other none.
    let acl = crate::helper::scan::posix_acl(&[
        (1, 6, u32::MAX),
        (2, 4, 1234),
        (4, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ]);
    xattr::set(&file, "system.posix_acl_access", &acl).unwrap();
    assert!(h.apply(desired("b")).await.all_done());
    let copy = h.b.volume_path("m-data");
    let get = |p: &Path, n: &str| xattr::get(p, n).unwrap();
    assert_eq!(
        get(&copy.join("hello.txt"), "user.origin").as_deref(),
        Some(&b"mail\x00store"[..])
    );
    assert_eq!(
        get(&copy.join("sub"), "user.kind").as_deref(),
        Some(&b"folder"[..])
    );
    assert_eq!(
        get(&copy.join("hello.txt"), "system.posix_acl_access"),
        get(&file, "system.posix_acl_access")
    );
    assert_eq!(tree(&copy), tree(&data));
}

/// The stack `m` as in [`desired`], its volume with a downtime budget.
fn desired_with_budget(host: &str, budget: &str) -> Desired {
    crate::testing::desired_on_two_hosts(&format!(
        "kind: Stack\nname: m\nvolumes: {{ data: {{ max_downtime: {budget} }} }}\napps:\n  app: {{ image: img, host: {host}, volumes: ['data:/data'], stop_grace_period: 1s }}\n"
    ))
}

#[tokio::test]
async fn a_downtime_budget_that_fits_is_met_and_the_move_finishes() {
    let h = Hosts::deployed().await;
    let before = tree(&h.a.volume_path("m-data"));
    let report = h.apply(desired_with_budget("b", "30s")).await;
    assert!(report.all_done(), "{:?}", report.outcomes);
    assert_eq!(tree(&h.b.volume_path("m-data")), before);
    assert!(h.running(&h.b) && !h.running(&h.a));
}

#[tokio::test]
async fn a_volume_changing_faster_than_its_budget_fails_the_move_without_stopping_the_app() {
    let h = Hosts::deployed().await;
    // The app writes while each scan of the source runs, and every scan of
    // the target takes 30 ms: no pass can fit 10 ms.
    let data = h.a.volume_path("m-data");
    let n = std::sync::atomic::AtomicU64::new(0);
    h.a.on(
        "exec drover-move-m-data /drover helper scan --hash",
        move || {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            std::fs::write(data.join(format!("log-{i}")), vec![1u8; 10_000]).unwrap();
        },
    );
    h.b.on("exec drover-move-m-data /drover helper scan --hash", || {
        std::thread::sleep(Duration::from_millis(30))
    });
    let report = h.apply(desired_with_budget("b", "10ms")).await;
    let failed = report.failures();
    assert_eq!(failed.len(), 1, "{:?}", report.outcomes);
    assert!(
        failed[0].contains("changes faster than its `max_downtime` of 10ms")
            && failed[0].contains("the apps were not stopped"),
        "{}",
        failed[0]
    );
    assert!(h.running(&h.a), "the app still runs on its source");
    assert!(
        !h.a.calls().iter().any(|c| c == "stop m-app"),
        "the app was never stopped: {:?}",
        h.a.calls()
    );
    assert_eq!(h.authority(), Authority::On("a".into()));
}
