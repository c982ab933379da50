//! Property tests of the planner over random directories: dependency order
//! holds, applying a plan then planning again gives an empty plan, and
//! planning is deterministic.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use drover::desired::{render, Desired};
use drover::load::load;
use drover::observed::{ContainerState, Observed, ObservedHost};
use drover::output::{plan_json, plan_text};
use drover::plan::{plan, simulate, Kind, Options, Plan, Verb};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct GenApp {
    host: usize,
    /// Bit i: depends on app i of the same stack (only lower indices).
    deps: u8,
    healthy: bool,
    links: u8,
    volume: bool,
    port: bool,
    env: u8,
    image: u8,
}

#[derive(Debug, Clone)]
struct GenSpec {
    hosts: usize,
    stacks: Vec<Vec<GenApp>>,
}

fn app() -> impl Strategy<Value = GenApp> {
    (
        0..3usize,
        any::<u8>(),
        any::<bool>(),
        any::<u8>(),
        any::<bool>(),
        any::<bool>(),
        0..3u8,
        0..2u8,
    )
        .prop_map(
            |(host, deps, healthy, links, volume, port, env, image)| GenApp {
                host,
                deps,
                healthy,
                links,
                volume,
                port,
                env,
                image,
            },
        )
}

fn spec() -> impl Strategy<Value = GenSpec> {
    (
        1..=3usize,
        prop::collection::vec(prop::collection::vec(app(), 1..=5), 1..=3),
    )
        .prop_map(|(hosts, stacks)| GenSpec { hosts, stacks })
}

/// The directory's YAML: one Cluster file and one file per stack.
fn files(g: &GenSpec) -> Vec<(String, String)> {
    let mut cluster = String::from("kind: Cluster\nhosts:\n");
    for h in 0..g.hosts {
        let _ = writeln!(
            cluster,
            "  h{h}: {{ endpoint: 'tcp://10.77.0.{}:2375' }}",
            11 + h
        );
    }
    let mut out = vec![("cluster.yaml".to_string(), cluster)];
    let mut port = 10_000;
    for (si, apps) in g.stacks.iter().enumerate() {
        let host = |a: &GenApp| a.host % g.hosts;
        // A link to another host needs a published port on the target.
        let needs_port: Vec<bool> = (0..apps.len())
            .map(|t| {
                apps[t].port
                    || apps
                        .iter()
                        .enumerate()
                        .any(|(i, a)| i > t && a.links & (1 << t) != 0 && host(a) != host(&apps[t]))
            })
            .collect();
        let mut y = format!("kind: Stack\nname: s{si}\nvolumes:\n");
        for (i, a) in apps.iter().enumerate() {
            if a.volume {
                let _ = writeln!(y, "  v{i}: {{}}");
            }
        }
        y.push_str("apps:\n");
        for (i, a) in apps.iter().enumerate() {
            let _ = writeln!(
                y,
                "  a{i}:\n    image: img{}:1\n    host: h{}",
                a.image,
                host(a)
            );
            let _ = writeln!(y, "    environment: {{ LEVEL: '{}' }}", a.env);
            let deps: Vec<usize> = (0..i).filter(|t| a.deps & (1 << t) != 0).collect();
            if !deps.is_empty() {
                y.push_str("    depends_on:\n");
                for t in deps {
                    let c = if a.healthy { "healthy" } else { "started" };
                    let _ = writeln!(y, "      a{t}: {{ condition: {c} }}");
                }
            }
            let links: Vec<String> = (0..i)
                .filter(|t| a.links & (1 << t) != 0)
                .map(|t| format!("a{t}"))
                .collect();
            if !links.is_empty() {
                let _ = writeln!(y, "    links: [{}]", links.join(", "));
            }
            if a.volume {
                let _ = writeln!(y, "    volumes: ['v{i}:/data']");
            }
            if needs_port[i] {
                port += 1;
                let _ = writeln!(y, "    ports: ['{port}:80']");
            }
        }
        out.push((format!("stacks/s{si}.yaml"), y));
    }
    out
}

fn desired(g: &GenSpec) -> Desired {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files(g) {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    match load(dir.path(), &BTreeMap::new()) {
        Ok(spec) => render(&spec),
        Err(e) => panic!("generated directory is invalid: {e}\n{:#?}", files(g)),
    }
}

fn empty(d: &Desired, hosts: usize) -> Observed {
    Observed {
        hosts: (0..hosts.max(d.hosts.len()))
            .map(|h| (format!("h{h}"), ObservedHost::default()))
            .collect(),
        unreachable: BTreeMap::new(),
        ..Default::default()
    }
}

/// Every `after` names an earlier wave, and every app action waits for the
/// actions of the apps it depends on or links to.
fn check_order(d: &Desired, p: &Plan) -> Result<(), TestCaseError> {
    let by_id: HashMap<&str, &drover::plan::Action> =
        p.actions.iter().map(|a| (a.id.as_str(), a)).collect();
    for a in &p.actions {
        for dep in &a.after {
            let before = by_id.get(dep.as_str());
            prop_assert!(before.is_some(), "{} waits for a missing {dep}", a.id);
            prop_assert!(before.unwrap().wave < a.wave, "{} is not after {dep}", a.id);
        }
    }
    // (stack, app) -> ids of the actions that bring it up.
    let mut up: HashMap<(String, String), Vec<&str>> = HashMap::new();
    for a in &p.actions {
        if let Some(r) = &a.relocation {
            for app in &r.apps {
                up.entry((a.stack.clone(), app.clone()))
                    .or_default()
                    .push(&a.id);
            }
        } else if a.kind == Kind::Container && a.action != Verb::Remove {
            let c = d.hosts[&a.host]
                .containers
                .get(&a.name)
                .expect("an app's container");
            up.entry((c.stack.clone(), c.app.clone()))
                .or_default()
                .push(&a.id);
        }
    }
    for ((stack, app), ids) in &up {
        let c = d.container(stack, app).unwrap();
        for target in c.depends_on.iter().map(|(t, _)| t).chain(&c.links) {
            for dep_id in up
                .get(&(stack.clone(), target.clone()))
                .into_iter()
                .flatten()
            {
                for id in ids {
                    if id != dep_id {
                        prop_assert!(
                            by_id[id].after.iter().any(|x| x == dep_id),
                            "{id} does not wait for {dep_id}\n{}",
                            plan_text(p, false)
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

fn converges(d: &Desired, observed: &Observed) -> Result<(), TestCaseError> {
    let p = plan(d, observed, Options::default());
    prop_assert!(p.errors.is_empty(), "{:?}", p.errors);
    check_order(d, &p)?;
    prop_assert_eq!(
        plan_json(&p),
        plan_json(&plan(d, observed, Options::default()))
    );
    let after = simulate(d, observed, &p);
    let again = plan(d, &after, Options::default());
    prop_assert!(
        again.actions.is_empty(),
        "not converged:\n{}\nafter:\n{}",
        plan_text(&again, false),
        plan_text(&p, false)
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_plan_from_scratch_is_ordered_and_converges(g in spec()) {
        let d = desired(&g);
        converges(&d, &empty(&d, g.hosts))?;
    }

    #[test]
    fn a_plan_from_another_spec_is_ordered_and_converges(a in spec(), b in spec()) {
        let hosts = a.hosts.max(b.hosts);
        let (a, b) = (GenSpec { hosts, ..a }, GenSpec { hosts, ..b });
        let (da, db) = (desired(&a), desired(&b));
        let start = empty(&da, hosts);
        let observed = simulate(&da, &start, &plan(&da, &start, Options::default()));
        converges(&db, &observed)?;
    }

    #[test]
    fn drift_is_healed(g in spec(), kill in any::<u64>(), stop in any::<u64>()) {
        let d = desired(&g);
        let start = empty(&d, g.hosts);
        let mut observed = simulate(&d, &start, &plan(&d, &start, Options::default()));
        for (i, h) in observed.hosts.values_mut().enumerate() {
            let mut n = 0;
            h.containers.retain(|_| { n += 1; kill & (1 << ((n + i * 8) % 64)) == 0 });
            for (j, c) in h.containers.iter_mut().enumerate() {
                if stop & (1 << ((j + i * 8) % 64)) != 0 {
                    c.state = ContainerState::Exited;
                }
            }
        }
        converges(&d, &observed)?;
    }

    #[test]
    fn planning_ignores_the_order_of_observed_objects(a in spec(), b in spec()) {
        let hosts = a.hosts.max(b.hosts);
        let (a, b) = (GenSpec { hosts, ..a }, GenSpec { hosts, ..b });
        let (da, db) = (desired(&a), desired(&b));
        let start = empty(&da, hosts);
        let mut observed = simulate(&da, &start, &plan(&da, &start, Options::default()));
        let first = plan_json(&plan(&db, &observed, Options::default()));
        for h in observed.hosts.values_mut() {
            h.containers.reverse();
            h.volumes.reverse();
            h.networks.reverse();
        }
        prop_assert_eq!(first, plan_json(&plan(&db, &observed, Options::default())));
    }
}
