//! Plans for the example stacks (snapshots) and for the change semantics of
//! manifests.md, one scenario per test.

use std::collections::BTreeMap;
use std::path::Path;

use drover::desired::{render, Desired};
use drover::load::load;
use drover::observed::{
    ContainerState, CopyRecord, CopyRole, MoveCost, MovePhase, Observed, ObservedContainer,
    ObservedHost, ObservedVolume,
};
use drover::output::{plan_json, plan_text};
use drover::plan::{plan, simulate, Kind, Options, Plan, Verb};

const CLUSTER: &str = "kind: Cluster
hosts:
  node-a: { endpoint: 'tcp://10.77.0.11:2375' }
  node-b: { endpoint: 'tcp://10.77.0.12:2375' }
";

const CLUSTER3: &str = "kind: Cluster
hosts:
  node-a: { endpoint: 'tcp://10.77.0.11:2375' }
  node-b: { endpoint: 'tcp://10.77.0.12:2375' }
  node-c: { endpoint: 'tcp://10.77.0.13:2375' }
";

fn env() -> BTreeMap<String, String> {
    BTreeMap::from([("DB_PASSWORD".to_string(), "CANARY-SECRET-42".to_string())])
}

/// Loads a directory made of `files` and renders it.
fn desired(files: &[(&str, &str)]) -> Desired {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    match load(dir.path(), &env()) {
        Ok(spec) => render(&spec),
        Err(e) => panic!("fixture does not load: {e}"),
    }
}

fn empty(hosts: &[&str]) -> Observed {
    Observed {
        hosts: hosts
            .iter()
            .map(|h| (h.to_string(), ObservedHost::default()))
            .collect(),
        unreachable: BTreeMap::new(),
        ..Default::default()
    }
}

/// The hosts after `desired` was applied from scratch.
fn applied(d: &Desired) -> Observed {
    let start = empty(&d.hosts.keys().map(String::as_str).collect::<Vec<_>>());
    let p = plan(d, &start, Options::default());
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    simulate(d, &start, &p)
}

fn replan_is_empty(d: &Desired, observed: &Observed, p: &Plan) {
    let after = simulate(d, observed, p);
    let again = plan(d, &after, Options::default());
    assert!(
        again.actions.is_empty(),
        "not converged: {}",
        plan_text(&again, false)
    );
}

/// Nothing of blog's database and its volume is planned, and an error says
/// `why`.
fn assert_db_blocked(p: &Plan, why: &str) {
    assert!(
        p.actions
            .iter()
            .all(|a| a.name != "blog-pgdata" && a.name != "blog-db"),
        "{}",
        plan_text(p, false)
    );
    assert!(p.errors.iter().any(|e| e.contains(why)), "{:?}", p.errors);
}

fn find<'a>(p: &'a Plan, action: Verb, name: &str) -> &'a drover::plan::Action {
    p.actions
        .iter()
        .find(|a| a.action == action && a.name == name)
        .unwrap_or_else(|| panic!("no {action} of {name} in\n{}", plan_text(p, false)))
}

fn examples() -> Desired {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/stacks");
    render(&load(&dir, &BTreeMap::new()).expect("examples are valid"))
}

#[test]
fn example_stacks_plan_from_an_empty_cluster() {
    let d = examples();
    let observed = empty(&["node-a", "node-b"]);
    let p = plan(&d, &observed, Options::default());
    insta::assert_snapshot!("examples_text", plan_text(&p, false));
    insta::assert_snapshot!("examples_json", plan_json(&p));
    replan_is_empty(&d, &observed, &p);
}

#[test]
fn example_stacks_are_in_sync_once_applied() {
    let d = examples();
    let p = plan(&d, &applied(&d), Options::default());
    assert!(p.in_sync);
    assert_eq!(
        plan_text(&p, false),
        "No changes. The hosts match the manifests.\n"
    );
}

const BLOG: &str = "kind: Stack
name: blog
volumes: { pgdata: {} }
apps:
  db:
    image: postgres:16
    host: node-a
    environment: { POSTGRES_PASSWORD: '${DB_PASSWORD}', MODE: fast }
    volumes: ['pgdata:/var/lib/postgresql/data']
    ports: ['5432:5432']
  web:
    image: ghost:5
    host: node-b
    depends_on: { db: { condition: healthy } }
    links: [db]
    ports: ['80:2368']
";

fn blog(edit: impl Fn(String) -> String) -> Desired {
    desired(&[
        ("cluster.yaml", CLUSTER),
        ("blog.yaml", &edit(BLOG.to_string())),
    ])
}

#[test]
fn an_environment_change_recreates_only_that_app_and_names_the_variable() {
    let before = blog(|s| s);
    let observed = applied(&before);
    let after = blog(|s| s.replace("MODE: fast", "MODE: safe"));
    let p = plan(&after, &observed, Options::default());
    assert_eq!(p.actions.len(), 1, "{}", plan_text(&p, false));
    let a = find(&p, Verb::Recreate, "blog-db");
    assert_eq!(a.reason, "environment `MODE` changed");
    replan_is_empty(&after, &observed, &p);
}

#[test]
fn an_image_change_names_both_images() {
    let observed = applied(&blog(|s| s));
    let p = plan(
        &blog(|s| s.replace("ghost:5", "ghost:6")),
        &observed,
        Options::default(),
    );
    assert_eq!(
        find(&p, Verb::Recreate, "blog-web").reason,
        "image `ghost:5` → `ghost:6`"
    );
}

#[test]
fn a_secret_change_recreates_without_showing_the_value() {
    let before = blog(|s| s);
    let observed = applied(&before);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), CLUSTER).unwrap();
    std::fs::write(dir.path().join("b.yaml"), BLOG).unwrap();
    let other = BTreeMap::from([("DB_PASSWORD".to_string(), "CANARY-SECRET-43".to_string())]);
    let after = render(&load(dir.path(), &other).unwrap());
    let p = plan(&after, &observed, Options::default());
    let a = find(&p, Verb::Recreate, "blog-db");
    assert_eq!(
        a.reason,
        "a secret value changed (environment `POSTGRES_PASSWORD`)"
    );
    let shown = plan_json(&p) + &plan_text(&p, false) + &serde_json::to_string(&observed).unwrap();
    assert!(!shown.contains("CANARY-SECRET"), "a secret leaked: {shown}");
}

fn blog_with_password(password: &str) -> Desired {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), CLUSTER).unwrap();
    std::fs::write(dir.path().join("b.yaml"), BLOG).unwrap();
    let env = BTreeMap::from([("DB_PASSWORD".to_string(), password.to_string())]);
    render(&load(dir.path(), &env).unwrap())
}

#[test]
fn no_label_holds_an_unkeyed_function_of_a_secret_and_a_snapshot_compares_none() {
    use drover::contract::hostkey::{HostKey, SecretKey};
    let (before, after) = (blog_with_password("hunter2"), blog_with_password("hunter3"));
    let db = |d: &Desired| d.hosts["node-a"].containers["blog-db"].clone();
    // The spec hash and the unkeyed digests are the same for any password:
    // a guess cannot be checked against them.
    assert_eq!(db(&before).spec_hash, db(&after).spec_hash);
    assert_eq!(db(&before).field_digests, db(&after).field_digests);
    let (k1, k2) = (HostKey::fixed(1), HostKey::fixed(2));
    let on = |k: &HostKey| db(&before).keyed_digests(Some(k))["env.POSTGRES_PASSWORD"].clone();
    assert_ne!(on(&k1), on(&k2), "each host keys its own digests");

    let observed = applied(&before);
    let key = |o: &mut Observed, k: SecretKey| {
        o.hosts.get_mut("node-a").unwrap().secret_key = k;
    };
    // From a snapshot (no key): secret values are not compared, and the
    // plan says so.
    let mut snapshot = observed.clone();
    key(&mut snapshot, SecretKey::Withheld);
    let p = plan(&after, &snapshot, Options::default());
    assert!(p.actions.is_empty(), "{}", plan_text(&p, false));
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("secret values on `node-a` are not compared")),
        "{:?}",
        p.warnings
    );
    // The key volume was removed: the containers are made again under a
    // new key, and the plan says why.
    let mut keyless = observed.clone();
    key(&mut keyless, SecretKey::Absent);
    let p = plan(&before, &keyless, Options::default());
    assert!(
        find(&p, Verb::Recreate, "blog-db")
            .reason
            .contains("the host's key (volume `drover-secret-key`) is gone"),
        "{}",
        plan_text(&p, false)
    );
    replan_is_empty(&before, &keyless, &p);
    // Made when secrets went into the hash unkeyed: once, with its reason.
    let mut legacy = observed.clone();
    for c in &mut legacy.hosts.get_mut("node-a").unwrap().containers {
        for d in c.spec_fields.values_mut().filter(|d| d.starts_with('k')) {
            *d = "secret".into();
        }
    }
    let p = plan(&before, &legacy, Options::default());
    assert_eq!(
        find(&p, Verb::Recreate, "blog-db").reason,
        "its secret values are recorded under the host's key from now on (once per container)"
    );
    // A non-secret change next to an unchanged secret names that field.
    let changed = blog(|s| s.replace("MODE: fast", "MODE: safe"));
    let p = plan(&changed, &applied(&blog(|s| s)), Options::default());
    assert_eq!(
        find(&p, Verb::Recreate, "blog-db").reason,
        "environment `MODE` changed"
    );
    let p = plan(&changed, &observed, Options::default());
    assert_eq!(
        find(&p, Verb::Recreate, "blog-db").reason,
        "environment `MODE` changed; a secret value changed (environment `POSTGRES_PASSWORD`)"
    );
}

#[test]
fn fields_that_do_not_reach_the_container_recreate_nothing() {
    let observed = applied(&blog(|s| s));
    let after = blog(|s| {
        s.replace(
            "depends_on: { db: { condition: healthy } }",
            "depends_on: [db]\n    pull: always",
        )
    });
    let p = plan(&after, &observed, Options::default());
    assert!(p.in_sync, "{}", plan_text(&p, false));
}

#[test]
fn a_stopped_container_is_started() {
    let d = blog(|s| s);
    let mut observed = applied(&d);
    let c = observed
        .hosts
        .get_mut("node-b")
        .unwrap()
        .containers
        .iter_mut()
        .find(|c| c.name == "blog-web")
        .unwrap();
    c.state = ContainerState::Exited;
    let p = plan(&d, &observed, Options::default());
    assert_eq!(p.actions.len(), 1);
    assert_eq!(
        find(&p, Verb::Start, "blog-web").reason,
        "container is exited"
    );
}

#[test]
fn a_removed_app_is_removed_and_its_dependents_first() {
    let observed = applied(&blog(|s| s));
    let only_volume = "kind: Stack\nname: blog\nvolumes: { pgdata: { host: node-a } }\n";
    let d = desired(&[("cluster.yaml", CLUSTER), ("blog.yaml", only_volume)]);
    // No app is left at all: refused unless allowed.
    let refused = plan(&d, &observed, Options::default());
    assert!(refused.actions.is_empty());
    assert!(
        refused.errors[0].contains(
            "would remove all 2 app container(s) drover manages on `node-a` and `node-b`"
        ) && refused.errors[0].contains("--allow-empty"),
        "{:?}",
        refused.errors
    );
    let allowed = Options {
        allow_empty: true,
        ..Options::default()
    };
    let p = plan(&d, &observed, allowed);
    let web = find(&p, Verb::Remove, "blog-web");
    let db = find(&p, Verb::Remove, "blog-db");
    assert!(
        db.after.contains(&web.id),
        "db must wait for web: {:?}",
        db.after
    );
    assert!(db.wave > web.wave);
    // Both networks go, after the containers on their host.
    let net_a = p
        .actions
        .iter()
        .find(|a| a.kind == Kind::Network && a.host == "node-a")
        .unwrap();
    assert_eq!(net_a.action, Verb::Remove);
    assert!(net_a.after.contains(&db.id));
    replan_is_empty(&d, &observed, &p);
}

#[test]
fn a_volume_removed_from_the_spec_is_kept_as_an_orphan() {
    let observed = applied(&blog(|s| s));
    let d = desired(&[
        ("cluster.yaml", CLUSTER),
        ("other.yaml", "kind: Stack\nname: other\n"),
    ]);
    let p = plan(&d, &observed, Options::default());
    assert!(
        p.actions.iter().all(|a| a.kind != Kind::Volume),
        "{}",
        plan_text(&p, false)
    );
    assert_eq!(p.orphans.len(), 1);
    assert_eq!(p.orphans[0].name, "blog-pgdata");
    assert_eq!(
        p.orphans[0].reason,
        "stack `blog` is no longer in the manifests"
    );

    let pruned = plan(
        &d,
        &observed,
        Options {
            prune_volumes: true,
            allow_empty: true,
        },
    );
    let rm = find(&pruned, Verb::Remove, "blog-pgdata");
    assert!(rm.after.contains(&"node-a/container/blog-db".to_string()));
}

#[test]
fn moving_an_app_with_a_volume_is_one_relocation() {
    let mut observed = applied(&blog(|s| s));
    for v in &mut observed.hosts.get_mut("node-a").unwrap().volumes {
        v.size_bytes = Some(1 << 30);
    }
    let after = blog(|s| s.replacen("host: node-a", "host: node-b", 1));
    let p = plan(&after, &observed, Options::default());
    let r = find(&p, Verb::Relocate, "blog-pgdata");
    let facts = r.relocation.as_ref().unwrap();
    assert_eq!(
        (facts.from.as_str(), facts.to.as_str(), facts.bytes),
        ("node-a", "node-b", Some(1 << 30))
    );
    assert_eq!(facts.apps, vec!["db".to_string()]);
    assert_eq!(facts.estimate, None, "no move was ever made on these hosts");
    assert!(
        plan_text(&p, false).contains("(1.0 GiB; no estimate: no earlier move on these hosts)"),
        "{}",
        plan_text(&p, false)
    );
    // The moved app has no actions of its own.
    assert!(
        p.actions.iter().all(|a| a.name != "blog-db"),
        "{}",
        plan_text(&p, false)
    );
    // The linking app gets the new address after the move.
    let web = find(&p, Verb::Recreate, "blog-web");
    assert!(
        web.reason.contains("environment `DB_HOST` changed"),
        "{}",
        web.reason
    );
    assert!(web.after.contains(&r.id));
    // The old host's network goes once the move is done.
    let net = p
        .actions
        .iter()
        .find(|a| a.kind == Kind::Network && a.host == "node-a")
        .unwrap();
    assert!(net.after.contains(&r.id));
    let json = plan_json(&p);
    assert!(json.contains("\"from\": \"node-a\"") && json.contains("\"bytes\": 1073741824"));

    let done = simulate(&after, &observed, &p);
    let again = plan(&after, &done, Options::default());
    assert!(again.in_sync, "{}", plan_text(&again, false));
    assert_eq!(
        again.orphans[0].reason,
        "copy retained after the move to `node-b`"
    );
}

#[test]
fn moving_back_builds_on_the_retained_copy_and_does_not_report_it() {
    let start = blog(|s| s);
    let moved = blog(|s| s.replacen("host: node-a", "host: node-b", 1));
    let o1 = applied(&start);
    let o2 = simulate(&moved, &o1, &plan(&moved, &o1, Options::default()));
    let back = plan(&start, &o2, Options::default());
    let r = find(&back, Verb::Relocate, "blog-pgdata");
    assert_eq!(r.relocation.as_ref().unwrap().from, "node-b");
    assert!(
        back.orphans.iter().all(|o| o.host != "node-a"),
        "{:?}",
        back.orphans
    );
}

#[test]
fn moving_a_stateless_app_creates_before_it_removes() {
    let observed = applied(&blog(|s| s));
    let after = blog(|s| s.replace("host: node-b", "host: node-a"));
    let p = plan(&after, &observed, Options::default());
    let create = p
        .actions
        .iter()
        .find(|a| a.action == Verb::Create && a.name == "blog-web")
        .unwrap();
    assert_eq!(create.reason, "app moved from `node-b`");
    let rm = find(&p, Verb::Remove, "blog-web");
    assert!(rm.after.contains(&create.id));
    replan_is_empty(&after, &observed, &p);
}

#[test]
fn an_unreadable_host_gets_no_actions_and_is_named() {
    let d = blog(|s| s);
    let mut observed = empty(&["node-b"]);
    observed
        .unreachable
        .insert("node-a".into(), "connection refused".into());
    let p = plan(&d, &observed, Options::default());
    assert!(p.actions.iter().all(|a| a.host != "node-a"));
    assert_eq!(
        p.errors[0],
        "host `node-a` could not be read: connection refused; nothing that involves it is planned"
    );
    // web waits for db, which cannot be brought up: web is skipped too.
    assert!(
        p.actions.iter().all(|a| a.name != "blog-web"),
        "{}",
        plan_text(&p, false)
    );
}

#[test]
fn a_move_from_an_unreadable_host_is_not_started_from_an_empty_volume() {
    let observed = applied(&blog(|s| s));
    let after = blog(|s| s.replacen("host: node-a", "host: node-b", 1));
    let mut partial = observed.clone();
    partial.hosts.remove("node-a");
    let p = plan(&after, &partial, Options::default());
    assert!(
        p.actions
            .iter()
            .all(|a| a.name != "blog-pgdata" && a.name != "blog-db"),
        "{}",
        plan_text(&p, false)
    );
    assert!(
        p.errors
            .iter()
            .any(|e| e.contains("will not create an empty copy")),
        "{:?}",
        p.errors
    );
    // Nothing is removed on the readable host either.
    assert!(p.actions.iter().all(|a| a.action != Verb::Remove));
}

#[test]
fn an_unmanaged_container_with_the_same_name_is_untouched_and_reported() {
    let d = blog(|s| s);
    let mut observed = empty(&["node-a", "node-b"]);
    observed
        .hosts
        .get_mut("node-b")
        .unwrap()
        .containers
        .push(ObservedContainer {
            name: "blog-web".into(),
            id: String::new(),
            managed: false,
            internal: false,
            stack: None,
            app: None,
            image: "nginx".into(),
            state: ContainerState::Running,
            health: None,
            exit_code: None,
            spec_hash: None,
            spec_fields: BTreeMap::new(),
            depends_on: Vec::new(),
            ports: Vec::new(),
        });
    let p = plan(&d, &observed, Options::default());
    assert!(p.actions.iter().all(|a| a.name != "blog-web"));
    assert!(
        p.errors[0].contains("taken by a container drover does not manage"),
        "{:?}",
        p.errors
    );
}

#[test]
fn two_current_copies_of_a_volume_are_never_guessed_between() {
    let moved = blog(|s| s.replacen("host: node-a", "host: node-b", 1));
    let mut observed = applied(&blog(|s| s));
    observed
        .hosts
        .get_mut("node-b")
        .unwrap()
        .volumes
        .push(ObservedVolume {
            name: "blog-pgdata".into(),
            managed: true,
            internal: false,
            stack: Some("blog".into()),
            volume: Some("pgdata".into()),
            driver: "local".into(),
            size_bytes: None,
            used_by: Vec::new(),
            retained_for: Some("node-c".into()),
            copy: None,
            moved_from: None,
            snapshot: None,
        });
    // A retained copy on the target does not count as current: one move.
    let p = plan(&moved, &observed, Options::default());
    find(&p, Verb::Relocate, "blog-pgdata");
    // Two current copies: even the one in place is not taken on a guess;
    // the user is told how to choose, and nothing of the volume is planned.
    let b = observed.hosts.get_mut("node-b").unwrap();
    let stray = b
        .volumes
        .iter_mut()
        .find(|v| v.name == "blog-pgdata")
        .unwrap();
    stray.retained_for = None;
    let p = plan(&blog(|s| s), &observed, Options::default());
    assert!(
        p.errors
            .iter()
            .any(|e| e.contains("current copies on `node-a` and `node-b`")
                && e.contains("drover volume adopt --host HOST blog-pgdata")),
        "{:?}",
        p.errors
    );
    assert!(
        p.orphans.is_empty(),
        "a current copy is never an orphan: {:?}",
        p.orphans
    );
}

/// blog's pgdata with records on both hosts: node-a's copy says `a`, and
/// node-b holds a copy that says `b`.
fn with_records(a: CopyRecord, b: CopyRecord) -> Observed {
    let mut observed = applied(&blog(|s| s));
    let hosts = &mut observed.hosts;
    let mut copy = hosts["node-a"]
        .volumes
        .iter()
        .find(|v| v.name == "blog-pgdata")
        .unwrap()
        .clone();
    hosts
        .get_mut("node-a")
        .unwrap()
        .volumes
        .iter_mut()
        .find(|v| v.name == "blog-pgdata")
        .unwrap()
        .copy = Some(a);
    copy.used_by.clear();
    copy.copy = Some(b);
    hosts.get_mut("node-b").unwrap().volumes.push(copy);
    observed
}

fn record(
    role: CopyRole,
    epoch: u64,
    peer: Option<&str>,
    to: Option<&str>,
    phase: Option<MovePhase>,
) -> CopyRecord {
    CopyRecord {
        role,
        epoch,
        peer: peer.map(String::from),
        moving_to: to.map(String::from),
        phase,
        bytes: None,
        cost: None,
        supersedes: Vec::new(),
    }
}

#[test]
fn a_copy_a_recovery_replaced_is_stale_and_the_recovered_one_is_current() {
    let recovered = CopyRecord {
        supersedes: vec!["node-a".into()],
        ..record(CopyRole::Current, 1003, None, None, None)
    };
    for old in [
        Some(record(CopyRole::Current, 3, None, None, None)),
        // A copy never moved has no record: it counts as stale all the same.
        None,
    ] {
        let mut observed = with_records(
            record(CopyRole::Current, 3, None, None, None),
            recovered.clone(),
        );
        for v in &mut observed.hosts.get_mut("node-a").unwrap().volumes {
            if v.name == "blog-pgdata" {
                v.copy = old.clone();
            }
        }
        // Placed on node-b, where it was recovered: nothing moves, nothing
        // is blocked.
        let on_b = blog(|s| s.replacen("host: node-a", "host: node-b", 1));
        let p = plan(&on_b, &observed, Options::default());
        assert!(
            p.actions.iter().all(|a| a.action != Verb::Relocate) && p.errors.is_empty(),
            "{}",
            plan_text(&p, false)
        );
        // Placed back on node-a: the recovered data moves there; the stale
        // copy is never taken for current.
        let p = plan(&blog(|s| s), &observed, Options::default());
        let r = find(&p, Verb::Relocate, "blog-pgdata")
            .relocation
            .clone()
            .unwrap();
        assert_eq!((r.from.as_str(), r.to.as_str()), ("node-b", "node-a"));
    }
}

/// blog's pgdata halfway through a move from node-a to node-b.
fn mid_move(phase: MovePhase) -> Observed {
    with_records(
        record(CopyRole::Current, 3, None, Some("node-b"), Some(phase)),
        record(CopyRole::Incoming, 4, Some("node-a"), None, None),
    )
}

/// Blog applied, its database's volume (1 GiB) on node-a since a move
/// from node-b that sent 256 MiB/s, kept the app down 1.2 s and counted
/// 1500 files.
fn blog_moved_before() -> Observed {
    let mut observed = applied(&blog(|s| s));
    for v in &mut observed.hosts.get_mut("node-a").unwrap().volumes {
        v.size_bytes = Some(1 << 30);
        v.copy = Some(CopyRecord {
            cost: Some(MoveCost {
                files: Some(1500),
                rate: Some(256 << 20),
                downtime_ms: Some(1200),
            }),
            ..record(CopyRole::Current, 2, None, None, None)
        });
        v.moved_from = Some("node-b".into());
    }
    observed
}

#[test]
fn a_relocation_is_estimated_from_the_moves_recorded_on_its_hosts() {
    let observed = blog_moved_before();
    let after = blog(|s| s.replacen("host: node-a", "host: node-b", 1));
    let p = plan(&after, &observed, Options::default());
    let r = find(&p, Verb::Relocate, "blog-pgdata");
    let facts = r.relocation.as_ref().unwrap();
    assert_eq!(facts.files, Some(1500));
    let e = facts.estimate.as_ref().unwrap();
    assert_eq!((e.copy_ms, e.downtime_ms), (Some(4000), Some(1200)));
    let text = plan_text(&p, false);
    assert!(
        text.contains(
            "(1.0 GiB in 1500 files; copy about 4.0s, apps down about 1.2s (from 1 earlier move))"
        ),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&plan_json(&p)).unwrap();
    let action = json["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "relocate")
        .unwrap();
    assert_eq!(action["estimate"]["copy_ms"], 4000);
    assert_eq!(action["files"], 1500);
}

#[test]
fn an_interrupted_copy_is_resumed_or_left_and_never_taken_as_current() {
    let observed = mid_move(MovePhase::Copy);
    // Still wanted on node-b: the move starts again from node-a.
    let moved = blog(|s| s.replacen("host: node-a", "host: node-b", 1));
    let p = plan(&moved, &observed, Options::default());
    let r = find(&p, Verb::Relocate, "blog-pgdata")
        .relocation
        .clone()
        .unwrap();
    assert_eq!((r.from.as_str(), r.to.as_str()), ("node-a", "node-b"));
    // Wanted back on node-a: nothing moves, and the unfinished copy is named.
    let p = plan(&blog(|s| s), &observed, Options::default());
    assert!(p.in_sync, "{}", plan_text(&p, false));
    assert!(
        p.orphans.iter().any(|o| o.host == "node-b"
            && o.reason == "unfinished copy from an interrupted move from `node-a`"),
        "{:?}",
        p.orphans
    );
    // Only an unfinished copy left: never used as current data.
    let mut lost = observed.clone();
    lost.hosts
        .get_mut("node-a")
        .unwrap()
        .volumes
        .retain(|v| v.name != "blog-pgdata");
    let p = plan(&moved, &lost, Options::default());
    assert!(p
        .actions
        .iter()
        .all(|a| a.name != "blog-pgdata" && a.name != "blog-db"));
    assert!(
        p.errors
            .iter()
            .any(|e| e.contains("only an unfinished copy")
                || e.contains("unfinished copy from an interrupted move")),
        "{:?}",
        p.errors
    );
}

#[test]
fn a_move_past_its_switch_is_finished_before_anything_else() {
    let observed = mid_move(MovePhase::Switch);
    let moved = blog(|s| s.replacen("host: node-a", "host: node-b", 1));
    let p = plan(&moved, &observed, Options::default());
    let a = find(&p, Verb::Relocate, "blog-pgdata");
    assert!(
        a.reason.contains("interrupted after the switch"),
        "{}",
        a.reason
    );
    // Wanted elsewhere meanwhile: the data is not moved on a guess.
    let p = plan(&blog(|s| s), &observed, Options::default());
    assert!(p
        .actions
        .iter()
        .all(|a| a.name != "blog-pgdata" && a.name != "blog-db"));
    assert!(
        p.errors
            .iter()
            .any(|e| e.contains("set the app's host back to `node-b`")),
        "{:?}",
        p.errors
    );
    // The target cannot be read: the app may run there, so it starts nowhere.
    let mut unreadable = observed.clone();
    unreadable.hosts.remove("node-b");
    unreadable
        .unreachable
        .insert("node-b".into(), "down".into());
    let p = plan(&blog(|s| s), &unreadable, Options::default());
    assert!(
        p.actions.iter().all(|a| a.name != "blog-db"),
        "{}",
        plan_text(&p, false)
    );
    assert!(
        p.errors
            .iter()
            .any(|e| e.contains("the app is started nowhere")),
        "{:?}",
        p.errors
    );
}

#[test]
fn a_switch_record_that_outlived_its_move_is_not_finished_again() {
    // The source was down when the move committed: its record still says
    // `switch → node-b`, but node-b's copy is current (epoch 4).
    let committed = with_records(
        record(
            CopyRole::Current,
            3,
            None,
            Some("node-b"),
            Some(MovePhase::Switch),
        ),
        record(CopyRole::Current, 4, None, None, None),
    );
    let moved = blog(|s| s.replacen("host: node-a", "host: node-b", 1));
    let p = plan(&moved, &committed, Options::default());
    assert!(
        p.actions.iter().all(|a| a.name != "blog-pgdata"),
        "nothing to finish: {}",
        plan_text(&p, false)
    );
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    // The app has since moved on to node-c: node-b's copy is retained
    // (epoch 4), node-c holds epoch 5. The stale switch on node-a neither
    // finishes a move onto node-b nor asks to place the app back there.
    let mut third = committed.clone();
    let mut c_copy = third.hosts["node-b"]
        .volumes
        .iter()
        .find(|v| v.name == "blog-pgdata")
        .unwrap()
        .clone();
    c_copy.copy = Some(record(CopyRole::Current, 5, None, None, None));
    third
        .hosts
        .get_mut("node-b")
        .unwrap()
        .volumes
        .iter_mut()
        .find(|v| v.name == "blog-pgdata")
        .unwrap()
        .copy = Some(record(CopyRole::Retained, 4, Some("node-c"), None, None));
    third
        .hosts
        .entry("node-c".into())
        .or_default()
        .volumes
        .push(c_copy);
    let on_c = desired(&[
        ("cluster.yaml", CLUSTER3),
        (
            "blog.yaml",
            &BLOG.replacen("host: node-a", "host: node-c", 1),
        ),
    ]);
    let p = plan(&on_c, &third, Options::default());
    assert!(
        p.errors.iter().all(|e| !e.contains("back to `node-b`")),
        "{:?}",
        p.errors
    );
    assert!(
        p.actions.iter().all(|a| a.name != "blog-pgdata"),
        "node-c holds the data: {}",
        plan_text(&p, false)
    );
}

#[test]
fn a_copy_without_its_record_next_to_recorded_ones_decides_nothing() {
    // node-a's record was pruned; node-b holds the incoming copy a move
    // made: node-a's copy may be older than what ran on node-b.
    let mut observed = mid_move(MovePhase::Copy);
    for v in &mut observed.hosts.get_mut("node-a").unwrap().volumes {
        v.copy = None;
    }
    let moved = blog(|s| s.replacen("host: node-a", "host: node-b", 1));
    for d in [moved, blog(|s| s)] {
        let p = plan(&d, &observed, Options::default());
        assert_db_blocked(
            &p,
            "copy records of volume `blog-pgdata` are missing on `node-a`",
        );
        assert_db_blocked(&p, "drover volume adopt --host HOST blog-pgdata");
    }
    // A lone copy a move made, its record gone, is not taken either.
    let mut lone = applied(&blog(|s| s));
    for v in &mut lone.hosts.get_mut("node-a").unwrap().volumes {
        v.moved_from = Some("node-b".into());
    }
    let p = plan(&blog(|s| s), &lone, Options::default());
    assert!(
        p.errors
            .iter()
            .any(|e| e.contains("its only copy, on `node-a`, was made by a move")),
        "{:?}",
        p.errors
    );
}

#[test]
fn an_app_stopped_by_a_move_runs_on_its_old_host_while_the_new_one_is_unreadable() {
    let mut observed = applied(&blog(|s| s));
    for c in &mut observed.hosts.get_mut("node-a").unwrap().containers {
        if c.name == "blog-db" {
            c.state = ContainerState::Exited;
        }
    }
    observed.hosts.remove("node-b");
    observed.unreachable.insert("node-b".into(), "down".into());
    let moved = blog(|s| s.replacen("host: node-a", "host: node-b", 1));
    let p = plan(&moved, &observed, Options::default());
    let a = find(&p, Verb::Start, "blog-db");
    assert_eq!(a.host, "node-a");
    assert!(
        a.reason.contains("until it can move to `node-b`"),
        "{}",
        a.reason
    );
    let after = simulate(&moved, &observed, &p);
    assert!(after.hosts["node-a"]
        .containers
        .iter()
        .any(|c| c.name == "blog-db" && c.state == ContainerState::Running));
}

#[test]
fn a_helper_left_by_an_interrupted_move_is_removed_unless_a_move_replaces_it() {
    let mut observed = applied(&blog(|s| s));
    observed
        .hosts
        .get_mut("node-a")
        .unwrap()
        .containers
        .push(ObservedContainer {
            name: "drover-move-blog-pgdata".into(),
            id: String::new(),
            managed: true,
            internal: true,
            stack: Some("blog".into()),
            app: None,
            image: "drover-helper:0123".into(),
            state: ContainerState::Running,
            health: None,
            exit_code: None,
            spec_hash: None,
            spec_fields: BTreeMap::new(),
            depends_on: Vec::new(),
            ports: Vec::new(),
        });
    let p = plan(&blog(|s| s), &observed, Options::default());
    let a = find(&p, Verb::Remove, "drover-move-blog-pgdata");
    assert_eq!(a.reason, "helper left behind by an interrupted volume move");
    replan_is_empty(&blog(|s| s), &observed, &p);
    let moved = blog(|s| s.replacen("host: node-a", "host: node-b", 1));
    let p = plan(&moved, &observed, Options::default());
    find(&p, Verb::Relocate, "blog-pgdata");
    assert!(p
        .actions
        .iter()
        .all(|a| a.name != "drover-move-blog-pgdata"));
}

#[test]
fn the_volumes_of_one_app_move_together_in_its_first_move() {
    let stack = |host: &str| {
        format!(
            "kind: Stack
name: two
volumes: {{ a: {{}}, b: {{}}, c: {{}} }}
apps:
  db: {{ image: img, host: {host}, volumes: ['a:/a', 'b:/b', 'c:/c'] }}
"
        )
    };
    let d = desired(&[("c.yaml", CLUSTER), ("s.yaml", &stack("node-a"))]);
    let observed = applied(&d);
    let moved = desired(&[("c.yaml", CLUSTER), ("s.yaml", &stack("node-b"))]);
    let p = plan(&moved, &observed, Options::default());
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let first = find(&p, Verb::Relocate, "two-a");
    assert!(first.after.is_empty(), "{:?}", first.after);
    for v in ["two-b", "two-c"] {
        let a = find(&p, Verb::Relocate, v);
        assert!(
            a.after.contains(&first.id),
            "{v} waits for {}: {:?}",
            first.id,
            a.after
        );
    }
    replan_is_empty(&moved, &observed, &p);
}

#[test]
fn of_two_current_copies_the_higher_epoch_wins() {
    let observed = with_records(
        record(CopyRole::Current, 1, None, None, None),
        record(CopyRole::Current, 2, None, None, None),
    );
    let p = plan(&blog(|s| s), &observed, Options::default());
    let r = find(&p, Verb::Relocate, "blog-pgdata")
        .relocation
        .clone()
        .unwrap();
    assert_eq!(r.from, "node-b");
}

#[test]
fn planning_is_deterministic_whatever_the_order_of_observed_objects() {
    let d = examples();
    let mut observed = applied(&d);
    let p1 = plan(&d, &empty(&["node-a", "node-b"]), Options::default());
    let p2 = plan(&d, &empty(&["node-a", "node-b"]), Options::default());
    assert_eq!(plan_json(&p1), plan_json(&p2));
    for h in observed.hosts.values_mut() {
        h.containers.reverse();
        h.volumes.reverse();
        for c in &mut h.containers {
            c.state = ContainerState::Exited;
        }
    }
    let a = plan(&d, &observed, Options::default());
    for h in observed.hosts.values_mut() {
        h.containers.reverse();
    }
    let b = plan(&d, &observed, Options::default());
    assert_eq!(plan_json(&a), plan_json(&b));
}

/// `examples/observed/running.json` is the state of the two example hosts
/// once the examples are applied; the demo plans changes against it.
/// `DROVER_BLESS=1 cargo test --test plans` rewrites it.
#[test]
fn the_committed_running_state_matches_the_examples() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/observed/running.json");
    let json = serde_json::to_string_pretty(&applied(&examples())).unwrap() + "\n";
    if std::env::var_os("DROVER_BLESS").is_some() {
        std::fs::write(&path, &json).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == json,
        "{} is stale: rerun with DROVER_BLESS=1",
        path.display()
    );
}

#[test]
fn a_volume_on_a_host_that_left_the_cluster_is_never_made_anew() {
    // blog's data lives on node-c, which the Cluster no longer names.
    let mut observed = applied(&blog(|s| s));
    let copy = observed.hosts["node-a"]
        .volumes
        .iter()
        .find(|v| v.name == "blog-pgdata")
        .unwrap()
        .clone();
    for h in observed.hosts.values_mut() {
        h.volumes.retain(|v| v.name != "blog-pgdata");
        h.containers.retain(|c| c.name != "blog-db");
    }
    let mut former = ObservedHost::default();
    former.volumes.push(copy);
    observed.former.insert("node-c".into(), former);
    let p = plan(&blog(|s| s), &observed, Options::default());
    assert_db_blocked(
        &p,
        "has a copy on `node-c`, which is no longer in the Cluster",
    );
    // A former host that cannot be read and held it when last read: not
    // made either.
    observed.former.clear();
    observed
        .former_unreachable
        .insert("node-c".into(), "down".into());
    let recorded = |volumes: &[&str]| drover::observed::Membership {
        seq: 1,
        hosts: vec![drover::observed::KnownHost {
            name: "node-c".into(),
            endpoint: "tcp://10.77.0.13:2375".into(),
            address: String::new(),
            tls: None,
            volumes: volumes.iter().map(|v| v.to_string()).collect(),
        }],
        objects: Vec::new(),
    };
    // One that never held it (it left before the volume was made) blocks
    // nothing.
    observed.hosts.get_mut("node-a").unwrap().membership = Some(recorded(&["other-data"]));
    let p = plan(&blog(|s| s), &observed, Options::default());
    assert!(
        p.actions.iter().any(|a| a.name == "blog-pgdata"),
        "{}",
        plan_text(&p, false)
    );
    observed.hosts.get_mut("node-a").unwrap().membership = Some(recorded(&["blog-pgdata"]));
    let p = plan(&blog(|s| s), &observed, Options::default());
    assert!(p.actions.iter().all(|a| a.name != "blog-pgdata"));
    assert!(
        p.errors
            .iter()
            .any(|e| e.contains("`node-c` (no longer in the Cluster)")),
        "{:?}",
        p.errors
    );
}

/// A plan for review: one with a move (its size, files, estimate), a
/// recreate for a changed secret (named, never shown), a start, kept data
/// and an error, as markdown and as versioned JSON.
#[test]
fn a_plan_for_review_in_markdown_names_moves_and_secrets_never_their_values() {
    let observed = blog_moved_before();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), CLUSTER).unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        BLOG.replacen("host: node-a", "host: node-b", 1)
            .replace("ghost:5", "ghost:6"),
    )
    .unwrap();
    let other = BTreeMap::from([("DB_PASSWORD".to_string(), "CANARY-SECRET-43".to_string())]);
    let after = render(&load(dir.path(), &other).unwrap());
    let mut p = plan(&after, &observed, Options::default());
    // And, as another stack's change would be, a secret that changes.
    let secret = plan(
        &blog_with_password("CANARY-SECRET-44"),
        &applied(&blog(|s| s)),
        Options::default(),
    );
    p.actions.extend(secret.actions.into_iter().map(|mut a| {
        a.stack = "shop".into();
        a
    }));
    p.warnings
        .push("host `node-c` is being changed by another drover".into());
    p.errors.push("host `node-d` could not be read".into());
    let md = drover::output::plan_markdown(&p);
    assert!(!md.contains("CANARY-SECRET"), "a secret leaked: {md}");
    insta::assert_snapshot!("review_markdown", md);

    let json: serde_json::Value = serde_json::from_str(&plan_json(&p)).unwrap();
    assert_eq!(json["format_version"], 1);
    assert_schema_describes(&drover::load::schema::plan_schema(), &json);
}

/// A large plan folds each host's actions; an empty one says so in a line.
#[test]
fn a_large_plan_in_markdown_folds_each_host_and_an_empty_one_is_a_line() {
    let d = examples();
    let p = plan(&d, &empty(&["node-a", "node-b"]), Options::default());
    assert!(p.actions.len() > 15);
    let md = drover::output::plan_markdown(&p);
    assert_eq!(md.matches("<details>").count(), 2, "{md}");
    assert!(md.starts_with("### 📋 drover plan: "), "{md}");
    let observed = applied(&d);
    let none = plan(&d, &observed, Options::default());
    assert_eq!(
        drover::output::plan_markdown(&none),
        "### ✅ drover plan: no changes: the hosts match the manifests\n"
    );
}

/// Every key of `value` (a JSON plan or diff) is a property the committed
/// schema names, and every property the schema requires is there.
pub fn assert_schema_describes(schema: &str, value: &serde_json::Value) {
    let schema: serde_json::Value = serde_json::from_str(schema).unwrap();
    fn resolve<'s>(
        schema: &'s serde_json::Value,
        node: &'s serde_json::Value,
    ) -> &'s serde_json::Value {
        if let Some(r) = node["$ref"].as_str() {
            let name = r.trim_start_matches("#/$defs/");
            return resolve(schema, &schema["$defs"][name]);
        }
        if let Some(any) = node["anyOf"].as_array() {
            if let Some(obj) = any
                .iter()
                .find(|n| n.get("$ref").is_some() || n["type"] == "object")
            {
                return resolve(schema, obj);
            }
        }
        node
    }
    fn walk(schema: &serde_json::Value, node: &serde_json::Value, v: &serde_json::Value, at: &str) {
        let node = resolve(schema, node);
        match v {
            serde_json::Value::Object(map) => {
                let props = node["properties"].as_object();
                for (k, child) in map {
                    let Some(p) = props.and_then(|p| p.get(k)) else {
                        panic!("`{at}.{k}` is not in the schema");
                    };
                    walk(schema, p, child, &format!("{at}.{k}"));
                }
                for r in node["required"].as_array().into_iter().flatten() {
                    assert!(map.contains_key(r.as_str().unwrap()), "`{at}` lacks `{r}`");
                }
            }
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(schema, &node["items"], item, &format!("{at}[{i}]"));
                }
            }
            _ => {}
        }
    }
    walk(&schema, &schema, value, "");
}

#[test]
fn the_committed_plan_and_diff_schemas_are_what_drover_prints() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (file, text) in [
        (
            "schema/plan.schema.json",
            drover::load::schema::plan_schema(),
        ),
        (
            "schema/diff.schema.json",
            drover::load::schema::diff_schema(),
        ),
    ] {
        let committed = std::fs::read_to_string(repo.join(file)).unwrap();
        assert_eq!(
            committed, text,
            "{file} is stale: run `cargo run -- schema plan|diff`"
        );
    }
}

/// A Compose service that uses a device of its host is pinned to that host,
/// as one that mounts a host path is: a plan that would move it is a
/// located error, and it stays.
#[test]
fn an_app_with_a_host_device_stays_on_its_host() {
    let compose = |host: &str| {
        format!("x-drover: {{ host: {host} }}\nservices:\n  radio:\n    image: radio:1\n    devices: [\"/dev/ttyUSB0\"]\n")
    };
    let d = desired(&[
        ("cluster.yaml", CLUSTER),
        ("radio/compose.yaml", &compose("node-a")),
    ]);
    let c = &d.hosts["node-a"].containers["radio-radio"];
    assert_eq!(c.binds[0].device.as_deref(), Some("rwm"));
    let observed = applied(&d);
    let moved = desired(&[
        ("cluster.yaml", CLUSTER),
        ("radio/compose.yaml", &compose("node-b")),
    ]);
    let p = plan(&moved, &observed, Options::default());
    assert!(
        p.errors.iter().any(|e| e.contains("radio/compose.yaml:5:")
            && e.contains("app `radio/radio` uses the host device `/dev/ttyUSB0` of `node-a`, so it stays there")),
        "{:?}",
        p.errors
    );
    assert!(
        p.actions.iter().all(|a| a.name != "radio-radio"),
        "{}",
        plan_text(&p, false)
    );
}

/// Compose's `depends_on: { X: { restart: true } }`: an update of X
/// restarts the app, even on another host; without it the app is left
/// alone.
#[test]
fn an_app_that_restarts_with_its_dependency_is_recreated_with_it() {
    let compose = |image: &str, restart: bool| {
        format!(
            "services:\n  db:\n    image: {image}\n    x-drover: {{ host: node-b }}\n  web:\n    image: web:1\n    x-drover: {{ host: node-a }}\n    depends_on:\n      db: {{ condition: service_started, restart: {restart} }}\n  worker:\n    image: worker:1\n    x-drover: {{ host: node-a }}\n    depends_on: [db]\n"
        )
    };
    for restart in [true, false] {
        let d = desired(&[
            ("cluster.yaml", CLUSTER),
            ("shop/compose.yaml", &compose("db:1", restart)),
        ]);
        let observed = applied(&d);
        let changed = desired(&[
            ("cluster.yaml", CLUSTER),
            ("shop/compose.yaml", &compose("db:2", restart)),
        ]);
        let p = plan(&changed, &observed, Options::default());
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        find(&p, Verb::Recreate, "shop-db");
        let web = p
            .actions
            .iter()
            .find(|a| a.action == Verb::Recreate && a.name == "shop-web");
        assert_eq!(web.is_some(), restart, "{}", plan_text(&p, false));
        if let Some(web) = web {
            assert!(web.reason.contains("`restart: true`"), "{}", web.reason);
        }
        assert!(
            p.actions.iter().all(|a| a.name != "shop-worker"),
            "{}",
            plan_text(&p, false)
        );
        replan_is_empty(&changed, &observed, &p);
    }
}

/// A stack's network with a subnet is made with it, converges once made,
/// and one found with other settings is never changed in place: its apps
/// there are skipped and the plan says what to do.
#[test]
fn a_network_of_other_settings_than_the_files_is_named_and_its_apps_skipped() {
    let compose = |subnet: &str| {
        format!(
            "services:\n  dns:\n    image: x\n    networks:\n      dns-net: {{ ipv4_address: {subnet}.2 }}\nnetworks:\n  dns-net:\n    ipam: {{ config: [{{ subnet: {subnet}.0/24 }}] }}\n"
        )
    };
    let d = desired(&[("dns/compose.yaml", &compose("172.20.0"))]);
    let observed = applied(&d);
    let p = plan(&d, &observed, Options::default());
    assert!(p.actions.is_empty(), "{}", plan_text(&p, false));

    let moved = desired(&[("dns/compose.yaml", &compose("172.21.0"))]);
    let p = plan(&moved, &observed, Options::default());
    assert!(
        p.errors.iter().any(|e| e.contains(
            "network `drover-dns-dns-net` on `local` was made with other settings than stack `dns` gives it now"
        ) && e.contains("172.21.0.0/24")),
        "{:?}",
        p.errors
    );
    assert!(
        p.actions.iter().all(|a| a.name != "dns-dns"),
        "{}",
        plan_text(&p, false)
    );
}
