//! Generates a large, realistic manifest directory and a matching observed
//! state with a little drift, for benchmarking `validate` and `reconcile
//! --dry-run` at scale (see `bench/plan.sh`).
//!
//! ```text
//! cargo run --release --example synth -- OUT_DIR --hosts 50 --stacks 1000 \
//!     --apps 10 --volumes 1 --drift 0.01 --seed 1
//! ```
//!
//! Writes `OUT_DIR/manifests/` (a `cluster.yaml` and one file per stack
//! under a few subdirectories) and `OUT_DIR/observed.json`: the state the
//! hosts would have once the manifests were applied to empty hosts, with a
//! `--drift` fraction of the apps perturbed (spec hash changed, stopped,
//! removed), plus a few managed containers of apps no longer in the spec and
//! a few orphaned managed volumes. The output depends on the arguments only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use drover::load::interpolate::ProcessEnv;
use drover::load::{load, LoadError};
use drover::observed::{
    ContainerState, Observed, ObservedContainer, ObservedHost, ObservedNetwork, ObservedVolume,
};
use drover::{desired, plan};

const USAGE: &str = "usage: synth OUT_DIR [--hosts N] [--stacks N] [--apps N] [--volumes N] [--drift FRACTION] [--seed N]";

/// Subdirectories the stack files are spread over.
const GROUPS: &[&str] = &[
    "platform",
    "data",
    "web",
    "internal/tools",
    "internal/batch",
];

const ROLES: &[&str] = &[
    "db",
    "cache",
    "api",
    "web",
    "worker",
    "scheduler",
    "search",
    "queue",
    "auth",
    "proxy",
    "metrics",
    "mailer",
];

/// Image per role; the version is picked per app.
const IMAGES: &[&str] = &[
    "postgres",
    "redis",
    "ghcr.io/example/api",
    "nginx",
    "ghcr.io/example/worker",
    "ghcr.io/example/scheduler",
    "opensearchproject/opensearch",
    "rabbitmq",
    "ghcr.io/example/auth",
    "traefik",
    "prom/prometheus",
    "ghcr.io/example/mailer",
];

struct Args {
    out: PathBuf,
    hosts: usize,
    stacks: usize,
    apps: usize,
    volumes: usize,
    drift: f64,
    seed: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        out: PathBuf::new(),
        hosts: 50,
        stacks: 1000,
        apps: 10,
        volumes: 1,
        drift: 0.01,
        seed: 1,
    };
    let mut out = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "-h" || a == "--help" {
            return Err(USAGE.into());
        }
        if !a.starts_with("--") {
            if out.replace(PathBuf::from(&a)).is_some() {
                return Err(format!("unexpected argument `{a}`\n{USAGE}"));
            }
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| format!("`{a}` needs a value\n{USAGE}"))?;
        let bad = |_| format!("invalid value `{value}` for `{a}`");
        match a.as_str() {
            "--hosts" => args.hosts = value.parse().map_err(bad)?,
            "--stacks" => args.stacks = value.parse().map_err(bad)?,
            "--apps" => args.apps = value.parse().map_err(bad)?,
            "--volumes" => args.volumes = value.parse().map_err(bad)?,
            "--drift" => {
                args.drift = value
                    .parse()
                    .map_err(|_| format!("invalid value `{value}` for `{a}`"))?
            }
            "--seed" => args.seed = value.parse().map_err(bad)?,
            _ => return Err(format!("unknown option `{a}`\n{USAGE}")),
        }
    }
    args.out = out.ok_or_else(|| USAGE.to_string())?;
    if args.hosts == 0 || args.hosts > 60_000 || args.apps == 0 {
        return Err("--hosts must be 1..=60000 and --apps at least 1".into());
    }
    if !(0.0..=1.0).contains(&args.drift) {
        return Err("--drift is a fraction between 0 and 1".into());
    }
    Ok(args)
}

/// SplitMix64: small, deterministic, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

fn host_name(i: usize) -> String {
    format!("node-{:02}", i + 1)
}

fn host_ip(i: usize) -> String {
    format!("10.77.{}.{}", i / 250, i % 250 + 1)
}

fn app_name(j: usize) -> String {
    let role = ROLES[j % ROLES.len()];
    match j / ROLES.len() {
        0 => role.to_string(),
        n => format!("{role}-{}", n + 1),
    }
}

fn cluster_yaml(hosts: usize) -> String {
    let mut s =
        String::from("# Generated by `cargo run --example synth`.\nkind: Cluster\nhosts:\n");
    for i in 0..hosts {
        let ip = host_ip(i);
        let _ = write!(
            s,
            "  {}:\n    endpoint: tcp://{ip}:2375\n    address: {ip}\n    labels: {{ zone: rack-{}, tier: {} }}\n",
            host_name(i),
            i % 5 + 1,
            if i % 3 == 0 { "ssd" } else { "hdd" },
        );
    }
    s
}

/// One stack's manifest. `next_port` is the next free published port per host.
fn stack_yaml(rng: &mut Rng, a: &Args, index: usize, next_port: &mut [u16]) -> String {
    let name = format!("stack-{:04}", index + 1);
    let env_prefix = name.to_ascii_uppercase().replace('-', "_");
    // The stack's apps spread over 1-3 distinct hosts.
    let spread = (1 + rng.below(3)).min(a.hosts);
    let mut hosts: Vec<usize> = Vec::with_capacity(spread);
    while hosts.len() < spread {
        let h = rng.below(a.hosts);
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    let placement: Vec<usize> = (0..a.apps).map(|j| hosts[j % spread]).collect();

    let mut s = format!("# Generated by `cargo run --example synth`.\nkind: Stack\nname: {name}\n");
    if a.volumes > 0 {
        s.push_str("volumes:\n");
        for j in 0..a.apps {
            for k in 0..a.volumes {
                let _ = writeln!(s, "  {}-data-{}: {{}}", app_name(j), k + 1);
            }
        }
    }
    s.push_str("apps:\n");
    for (j, &host) in placement.iter().enumerate() {
        let app = app_name(j);
        let role = j % ROLES.len();
        let _ = write!(
            s,
            "  {app}:\n    image: {}:{}.{}\n    host: {}\n",
            IMAGES[role],
            1 + rng.below(9),
            rng.below(20),
            host_name(host)
        );
        // A chain inside the stack: each app may wait for and link to an
        // earlier one, so the graph stays acyclic.
        if j > 0 && rng.chance(0.6) {
            let target = app_name(if rng.chance(0.7) { j - 1 } else { rng.below(j) });
            if rng.chance(0.5) {
                let _ = write!(
                    s,
                    "    depends_on:\n      {target}: {{ condition: healthy }}\n"
                );
            } else {
                let _ = writeln!(s, "    depends_on: [{target}]");
            }
            if rng.chance(0.6) {
                let _ = writeln!(s, "    links: [{target}]");
            }
        }
        s.push_str("    environment:\n");
        let _ = writeln!(s, "      APP_NAME: {app}");
        let _ = writeln!(
            s,
            "      LOG_LEVEL: {}",
            ["info", "debug", "warn"][rng.below(3)]
        );
        let _ = writeln!(s, "      WORKERS: \"{}\"", 1 + rng.below(16));
        let _ = writeln!(
            s,
            "      {}_PASSWORD: ${{{env_prefix}_{}_PASSWORD:-pw-{:08x}}}",
            app.to_ascii_uppercase().replace('-', "_"),
            app.to_ascii_uppercase().replace('-', "_"),
            rng.next() as u32
        );
        let _ = writeln!(s, "      REGION: ${{DROVER_SYNTH_REGION:-eu-west-1}}");
        if a.volumes > 0 {
            s.push_str("    volumes:\n");
            for k in 0..a.volumes {
                let _ = writeln!(
                    s,
                    "      - \"{app}-data-{}:/var/lib/{app}/{}\"",
                    k + 1,
                    k + 1
                );
            }
        }
        // Every app publishes a port, so a link from another host resolves;
        // ports are unique per host across the whole directory.
        let port = next_port[host];
        next_port[host] = port.saturating_add(1);
        let _ = writeln!(s, "    ports: [\"{port}:{}\"]", 8000 + role);
        if rng.chance(0.5) {
            let _ = write!(
                s,
                "    healthcheck:\n      test: [\"CMD\", \"curl\", \"-fsS\", \"http://localhost:{}/health\"]\n      interval: {}s\n      timeout: 3s\n      retries: {}\n",
                8000 + role,
                5 + rng.below(26),
                3 + rng.below(3)
            );
        }
        if rng.chance(0.3) {
            let _ = writeln!(
                s,
                "    restart: {}",
                ["always", "on-failure", "unless-stopped"][rng.below(3)]
            );
        }
        if rng.chance(0.3) {
            let _ = writeln!(s, "    memory: {}m", 128 << rng.below(5));
        }
        if rng.chance(0.2) {
            let _ = writeln!(s, "    cpus: {}", ["0.5", "1", "1.5", "2"][rng.below(4)]);
        }
        if rng.chance(0.2) {
            let _ = writeln!(
                s,
                "    command: [\"--port\", \"{}\", \"--log-format\", \"json\"]",
                8000 + role
            );
        }
        if rng.chance(0.2) {
            let _ = writeln!(
                s,
                "    labels: {{ team: team-{}, tier: backend }}",
                rng.below(8)
            );
        }
    }
    s
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}

/// What the drift changed, for the summary.
#[derive(Default)]
struct Drift {
    changed: usize,
    stopped: usize,
    removed: usize,
    extra_containers: usize,
    orphan_volumes: usize,
}

impl Drift {
    fn total(&self) -> usize {
        self.changed + self.stopped + self.removed + self.extra_containers + self.orphan_volumes
    }
}

/// Perturbs `observed` deterministically: a `fraction` of the app
/// containers are changed, stopped or removed; a few managed containers and
/// volumes that the spec no longer has are added.
fn perturb(observed: &mut Observed, rng: &mut Rng, fraction: f64) -> Drift {
    let mut drift = Drift::default();
    let mut all: Vec<(String, usize)> = observed
        .hosts
        .iter()
        .flat_map(|(h, oh)| (0..oh.containers.len()).map(move |i| (h.clone(), i)))
        .collect();
    let n = ((all.len() as f64) * fraction).round() as usize;
    // A partial Fisher-Yates shuffle picks `n` distinct containers.
    for i in 0..n.min(all.len()) {
        let j = i + rng.below(all.len() - i);
        all.swap(i, j);
    }
    let mut picked: Vec<(String, usize, usize)> = all
        .into_iter()
        .take(n)
        .enumerate()
        .map(|(k, (h, i))| (h, i, k))
        .collect();
    // Removal shifts indices: handle each host's picks from the highest index down.
    picked.sort_by(|a, b| (&a.0, b.1).cmp(&(&b.0, a.1)));
    for (host, i, k) in picked {
        let containers = &mut observed
            .hosts
            .get_mut(&host)
            .expect("picked from this host")
            .containers;
        match k % 10 {
            // 40%: the config changed since it was made (an older image, an
            // edited variable).
            0..=3 => {
                let c = &mut containers[i];
                c.spec_hash = Some(format!(
                    "{:032x}",
                    (u128::from(rng.next()) << 64) | u128::from(rng.next())
                ));
                if k % 2 == 0 {
                    c.image = format!("{}-previous", c.image);
                    c.spec_fields
                        .insert("image".into(), format!("{:016x}", rng.next()));
                } else {
                    c.spec_fields
                        .insert("env.LOG_LEVEL".into(), format!("{:016x}", rng.next()));
                }
                drift.changed += 1;
            }
            // 30%: stopped.
            4..=6 => {
                containers[i].state = ContainerState::Exited;
                containers[i].health = None;
                drift.stopped += 1;
            }
            // 30%: gone.
            _ => {
                containers.remove(i);
                drift.removed += 1;
            }
        }
    }

    // Managed objects the spec no longer has: a tenth (at least one) as many
    // containers as drifted apps, half as many volumes.
    let extra = if fraction > 0.0 { (n / 10).max(1) } else { 0 };
    let hosts: Vec<String> = observed.hosts.keys().cloned().collect();
    if hosts.is_empty() {
        return drift;
    }
    for e in 0..extra {
        let host = &hosts[rng.below(hosts.len())];
        let oh = observed.hosts.get_mut(host).expect("a host of the list");
        // Every other one belongs to a stack that was deleted altogether,
        // which leaves its network behind too.
        let stack = if e % 2 == 0 {
            match oh
                .containers
                .get(rng.below(oh.containers.len().max(1)))
                .and_then(|c| c.stack.clone())
            {
                Some(s) => s,
                None => format!("retired-{:03}", e + 1),
            }
        } else {
            format!("retired-{:03}", e + 1)
        };
        if stack.starts_with("retired-") {
            oh.networks.push(ObservedNetwork {
                name: format!("drover-{stack}"),
                managed: true,
                internal: false,
                stack: Some(stack.clone()),
                config: None,
            });
        }
        let app = format!("legacy-{}", e + 1);
        oh.containers.push(ObservedContainer {
            name: format!("{stack}-{app}"),
            id: format!("{:016x}{:016x}", rng.next(), rng.next()),
            managed: true,
            internal: false,
            stack: Some(stack),
            app: Some(app),
            image: "ghcr.io/example/legacy:0.9".into(),
            state: ContainerState::Running,
            health: None,
            exit_code: None,
            spec_hash: Some(format!("{:016x}{:016x}", rng.next(), rng.next())),
            spec_fields: BTreeMap::new(),
            depends_on: Vec::new(),
            ports: Vec::new(),
        });
        drift.extra_containers += 1;
    }
    let orphans = if fraction > 0.0 { (n / 20).max(1) } else { 0 };
    for o in 0..orphans {
        let host = &hosts[rng.below(hosts.len())];
        let oh = observed.hosts.get_mut(host).expect("a host of the list");
        let stack = oh
            .volumes
            .get(rng.below(oh.volumes.len().max(1)))
            .and_then(|v| v.stack.clone())
            .unwrap_or_else(|| format!("retired-{:03}", o + 1));
        let volume = format!("old-data-{}", o + 1);
        oh.volumes.push(ObservedVolume {
            name: format!("{stack}-{volume}"),
            managed: true,
            internal: false,
            stack: Some(stack),
            volume: Some(volume),
            driver: "local".into(),
            size_bytes: Some(rng.next() % (10 << 30)),
            used_by: Vec::new(),
            retained_for: None,
            copy: None,
            moved_from: None,
            snapshot: None,
        });
        drift.orphan_volumes += 1;
    }
    drift
}

fn run(a: &Args) -> Result<String, String> {
    let mut rng = Rng(a.seed);
    let manifests = a.out.join("manifests");
    if manifests.exists() {
        std::fs::remove_dir_all(&manifests)
            .map_err(|e| format!("cannot clear `{}`: {e}", manifests.display()))?;
    }
    write_file(&manifests.join("cluster.yaml"), &cluster_yaml(a.hosts))?;
    let mut next_port = vec![10_000u16; a.hosts];
    for i in 0..a.stacks {
        let text = stack_yaml(&mut rng, a, i, &mut next_port);
        if next_port.contains(&u16::MAX) {
            return Err("too many apps per host: published ports ran out".into());
        }
        let group = GROUPS[i % GROUPS.len()];
        write_file(
            &manifests
                .join(group)
                .join(format!("stack-{:04}.yaml", i + 1)),
            &text,
        )?;
    }

    let spec = load(&manifests, &ProcessEnv).map_err(|e| match e {
        LoadError::Invalid(d) => {
            format!("the generated manifests are invalid:\n{}", d.render(false))
        }
        other => other.to_string(),
    })?;
    let desired = desired::render(&spec);
    let empty = Observed {
        hosts: spec
            .hosts
            .keys()
            .map(|h| (h.clone(), ObservedHost::default()))
            .collect(),
        unreachable: BTreeMap::new(),
        ..Default::default()
    };
    let first = plan::plan(&desired, &empty, plan::Options::default());
    if !first.errors.is_empty() {
        return Err(format!(
            "planning against empty hosts failed: {}",
            first.errors.join("; ")
        ));
    }
    let mut observed = plan::simulate(&desired, &empty, &first);
    let drift = perturb(&mut observed, &mut rng, a.drift);

    let path = a.out.join("observed.json");
    let file = std::fs::File::create(&path)
        .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    serde_json::to_writer(&mut w, &observed).map_err(|e| e.to_string())?;
    w.write_all(b"\n")
        .and_then(|()| w.flush())
        .map_err(|e| e.to_string())?;

    let apps: usize = spec.stacks.values().map(|s| s.apps.len()).sum();
    let volumes: usize = spec.stacks.values().map(|s| s.volumes.len()).sum();
    Ok(format!(
        "{}: {} stacks, {apps} apps, {} hosts, {volumes} volumes, {} drifted objects ({} changed, {} stopped, {} removed, {} extra containers, {} orphaned volumes)",
        a.out.display(),
        spec.stacks.len(),
        spec.hosts.len(),
        drift.total(),
        drift.changed,
        drift.stopped,
        drift.removed,
        drift.extra_containers,
        drift.orphan_volumes,
    ))
}

fn main() -> ExitCode {
    let result = parse_args().and_then(|a| run(&a));
    match result {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("synth: {e}");
            ExitCode::FAILURE
        }
    }
}
