//! Compose's meaning where drover reads what Compose reads: interpolation,
//! `.env`, healthchecks, YAML as Compose's reader takes it, and hints that
//! never turn a Compose field into a drover field of another meaning.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use support::*;

use drover::load::{load, LoadError};
use drover::model::Spec;

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn loaded(files: &[(&str, &str)], vars: &[(&str, &str)]) -> Spec {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), files);
    match load(dir.path(), &env(vars)) {
        Ok(spec) => spec,
        Err(e) => panic!("{e}"),
    }
}

fn errors(files: &[(&str, &str)], vars: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), files);
    match load(dir.path(), &env(vars)) {
        Ok(_) => panic!("loaded without errors"),
        Err(LoadError::Invalid(d)) => d
            .render(false)
            .replace(&format!("{}/", dir.path().display()), ""),
        Err(e) => panic!("{e}"),
    }
}

fn env_of<'s>(spec: &'s Spec, stack: &str, app: &str, key: &str) -> &'s drover::model::Text {
    &spec.stacks[stack].apps[app].environment[key]
}

const ONE_APP: &str = "kind: Stack\nname: shop\napps:\n  web:\n    image: nginx\n";

#[test]
fn nested_defaults_expand_as_in_compose() {
    let spec = loaded(
        &[(
            "shop.yaml",
            &format!("{ONE_APP}    environment:\n      URL: ${{A:-x${{B:-y}}z}}\n      SET: ${{A:-${{C}}}}\n"),
        )],
        &[("C", "from-env")],
    );
    assert_eq!(env_of(&spec, "shop", "web", "URL").expose(), "xyz");
    // A default written in the file is no secret; a value from the
    // environment is.
    assert!(!env_of(&spec, "shop", "web", "URL").is_secret());
    assert_eq!(env_of(&spec, "shop", "web", "SET").expose(), "from-env");
    assert!(env_of(&spec, "shop", "web", "SET").is_secret());
}

#[test]
fn an_unset_variable_is_an_empty_string_in_compose_and_an_error_in_a_stack() {
    let compose = "services:\n  web:\n    image: nginx\n    environment:\n      - TOKEN=$TOKEN\n      - URL=http://${HOST}/x\n    user: \"${UID}\"\n";
    let spec = loaded(&[("shop/compose.yaml", compose)], &[("UID", "1000")]);
    let web = &spec.stacks["shop"].apps["web"];
    assert_eq!(web.environment["TOKEN"].expose(), "");
    assert_eq!(web.environment["URL"].expose(), "http:///x");
    assert_eq!(web.user.as_ref().map(|u| u.expose()), Some("1000"));
    // Said once per variable, where it is first used, as Compose warns.
    let notes: Vec<String> = spec.notes.iter().map(|n| n.to_string()).collect();
    let token: Vec<_> = notes.iter().filter(|n| n.contains("`TOKEN`")).collect();
    assert_eq!(token.len(), 1, "{notes:?}");
    assert!(
        token[0].contains("shop/compose.yaml:5:9")
            && token[0].contains("is not set: an empty string is used, as Compose does"),
        "{notes:?}"
    );
    assert!(notes.iter().any(|n| n.contains("`HOST`")), "{notes:?}");
    // A required one stays an error, in Compose too.
    let required =
        "services:\n  web:\n    image: nginx\n    environment: [\"PW=${PW:?set a password}\"]\n";
    let shown = errors(&[("shop/compose.yaml", required)], &[]);
    assert!(
        shown.contains("variable `PW` is required: set a password"),
        "{shown}"
    );
    // A drover Stack refuses an unset variable, as before.
    let stack = format!("{ONE_APP}    environment: {{ TOKEN: $TOKEN }}\n");
    let shown = errors(&[("shop.yaml", &stack)], &[]);
    assert!(shown.contains("variable `TOKEN` is not set"), "{shown}");
}

#[test]
fn build_beside_an_image_runs_the_image_and_host_access_is_read() {
    let compose = "services:\n  web:\n    image: shop/web:1\n    build: ./web\n    privileged: true\n    pid: host\n    runtime: runc\n    devices: [\"/dev/fuse\", { source: /dev/null, target: /dev/nothing, permissions: r }]\n  bare:\n    build: .\n";
    let shown = errors(&[("shop/compose.yaml", compose)], &[]);
    assert!(
        shown.contains(
            "shop/compose.yaml:10:5: error: drover does not support `build` (in service `bare`)"
        ),
        "{shown}"
    );
    assert!(shown.contains("build and push the image"), "{shown}");
    assert!(!shown.contains("`web`"), "{shown}");
    let spec = loaded(
        &[(
            "shop/compose.yaml",
            &compose.replace("  bare:\n    build: .\n", ""),
        )],
        &[],
    );
    let web = &spec.stacks["shop"].apps["web"];
    assert!(web.options.privileged);
    assert_eq!(web.options.pid.as_deref(), Some("host"));
    assert_eq!(web.options.runtime.as_deref(), Some("runc"));
    let devices: Vec<_> = web
        .binds
        .iter()
        .map(|b| {
            (
                b.value.host_path.as_str(),
                b.value.target.as_str(),
                b.value.device.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        devices,
        [
            ("/dev/fuse", "/dev/fuse", Some("rwm")),
            ("/dev/null", "/dev/nothing", Some("r"))
        ]
    );
    assert!(
        spec.notes.iter().any(|n| n
            .to_string()
            .contains("drover does not build images: service `web` runs its `image`")),
        "{:?}",
        spec.notes
    );
    let bad = "services:\n  web:\n    image: nginx\n    pid: service:db\n    devices: [\"fuse\", \"/dev/fuse:/dev/fuse:rwx\"]\n    platform: linux/\n";
    let shown = errors(&[("shop/compose.yaml", bad)], &[]);
    for expected in [
        "shop/compose.yaml:4:10: error: drover does not support `pid: service:db`",
        "shop/compose.yaml:5:15: error: device `fuse` is not an absolute path of the host",
        "shop/compose.yaml:5:23: error: device permissions `rwx` are not of `r`, `w` and `m`",
        "shop/compose.yaml:6:15: error: `linux/` is not a platform",
    ] {
        assert!(shown.contains(expected), "no `{expected}` in:\n{shown}");
    }
}

#[test]
fn a_binds_propagation_is_read_only_for_a_host_path_and_an_empty_restart_is_no() {
    let compose = "services:\n  node:\n    image: x\n    restart: ${POLICY}\n    volumes:\n      - /:/host:ro,rslave\n      - { type: bind, source: /mnt, target: /mnt, bind: { propagation: rshared } }\n";
    let spec = loaded(&[("mon/compose.yaml", compose)], &[]);
    let node = &spec.stacks["mon"].apps["node"];
    let binds: Vec<_> = node
        .binds
        .iter()
        .map(|b| (b.value.read_only, b.value.propagation.as_deref()))
        .collect();
    assert_eq!(binds, [(true, Some("rslave")), (false, Some("rshared"))]);
    assert_eq!(node.restart, drover::model::Restart::No);
    let bad = "services:\n  node:\n    image: x\n    volumes:\n      - ./data:/data:rslave\n      - /a:/a:rslave,rshared\n      - logs:/logs:rslave\n      - { type: bind, source: /b, target: /b, bind: { propagation: slaved } }\nvolumes:\n  logs: {}\n";
    let shown = errors(&[("mon/compose.yaml", bad)], &[]);
    for expected in [
        "mon/compose.yaml:5:9: error: propagation `rslave` applies to a path of the host, and `./data` is not one",
        "mon/compose.yaml:6:9: error: mount `/a:/a:rslave,rshared` names two propagations",
        "mon/compose.yaml:7:9: error: propagation `rslave` applies to a path of the host, and `logs:/logs:rslave` mounts a volume",
        "mon/compose.yaml:8:68: error: `propagation` must be one of `private`, `rprivate`, `shared`, `rshared`, `slave`, `rslave`, found `slaved`",
    ] {
        assert!(shown.contains(expected), "no `{expected}` in:\n{shown}");
    }
}

#[test]
fn deploy_takes_one_replicated_container_and_names_swarms_own_fields() {
    let compose = "services:\n  loki:\n    image: x\n    deploy:\n      mode: replicated\n      replicas: 1\n      resources: { limits: { memory: 512m } }\n";
    let spec = loaded(&[("logs/compose.yaml", compose)], &[]);
    assert_eq!(spec.stacks["logs"].apps["loki"].memory, Some(512 << 20));
    let bad = "services:\n  loki:\n    image: x\n    deploy:\n      mode: global\n      placement: { constraints: [node.role==manager] }\n      restart_policy: { condition: on-failure }\n      update_config: { parallelism: 1 }\n      modes: x\n      resources: { reservations: { memory: 1g } }\n";
    let shown = errors(&[("logs/compose.yaml", bad)], &[]);
    for expected in [
        "logs/compose.yaml:5:13: error: drover does not support `deploy.mode: global`: it runs one container per service, on the service's host",
        "logs/compose.yaml:6:7: error: drover does not support `deploy.placement`, which is Docker Swarm's",
        "drover places a service with `x-drover: { host: … }`",
        "logs/compose.yaml:7:7: error: drover does not support `deploy.restart_policy`, which is Docker Swarm's",
        "write the service's `restart:`",
        "logs/compose.yaml:8:7: error: drover does not support `deploy.update_config`, which is Docker Swarm's",
        "logs/compose.yaml:9:7: error: unknown field `modes` in `deploy`",
        "logs/compose.yaml:10:20: error: drover does not support `deploy.resources.reservations`",
    ] {
        assert!(shown.contains(expected), "no `{expected}` in:\n{shown}");
    }
}

#[test]
fn replicas_run_a_container_each_that_answers_to_the_service_name() {
    let compose = "services:\n  api:\n    image: x\n    deploy: { replicas: 3 }\n    ports: [\"8080\"]\n  web:\n    image: y\n    depends_on: { api: { condition: service_started, restart: true } }\n    links: [api]\n  worker:\n    image: z\n    scale: 2\n    network_mode: service:api\n";
    let spec = loaded(&[("shop/compose.yaml", compose)], &[]);
    let apps = &spec.stacks["shop"].apps;
    let names: Vec<_> = apps.keys().cloned().collect();
    assert_eq!(
        names,
        ["api-1", "api-2", "api-3", "web", "worker-1", "worker-2"]
    );
    assert_eq!(apps["api-2"].options.aliases, ["api"]);
    let waits: Vec<_> = apps["web"]
        .depends_on
        .iter()
        .map(|(t, _)| t.value.as_str())
        .collect();
    assert_eq!(waits, ["api-1", "api-2", "api-3"]);
    assert_eq!(apps["web"].restart_with, ["api-1", "api-2", "api-3"]);
    assert!(
        matches!(&apps["worker-2"].network_mode, drover::model::NetworkMode::App(t) if t.value == "api-1")
    );

    let bad = "services:\n  api:\n    image: x\n    container_name: the-api\n    ports: [\"8080:80\"]\n    deploy: { replicas: 2 }\n  api-2:\n    image: x\n  none:\n    image: x\n    scale: 0\n  both:\n    image: x\n    scale: 2\n    deploy: { replicas: 3 }\n";
    let shown = errors(&[("shop/compose.yaml", bad)], &[]);
    for expected in [
        "shop/compose.yaml:4:5: error: a service of several containers cannot name its container",
        "shop/compose.yaml:5:13: error: a service of several containers cannot publish the host's port 8080: only one container can",
        "publish the container's port alone (`\"80\"`)",
        "shop/compose.yaml:2:3: error: service `api` runs 2 containers, named `api-1` to `api-2` as Compose names them, and `api-2` is another service",
        "shop/compose.yaml:11:12: error: `scale` is 0: the service would run no container",
        "shop/compose.yaml:14:12: error: `scale: 2` differs from `deploy.replicas: 3`",
    ] {
        assert!(shown.contains(expected), "no `{expected}` in:\n{shown}");
    }
}

#[test]
fn what_is_wrong_is_said_where_it_is_and_not_again_where_it_is_named() {
    let bad = "services:\n  backend:\n    build: .\n  web:\n    image: x\n    depends_on: [backend]\n    network_mode: service:backend\n    secrets: [db-password]\nsecrets:\n  db-password:\n    file: db/password.txt\n";
    let shown = errors(&[("shop/compose.yaml", bad)], &[]);
    assert!(
        shown.contains(
            "shop/compose.yaml:3:5: error: drover does not support `build` (in service `backend`)"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("shop/compose.yaml:11:11: error: `db/password.txt` cannot be read"),
        "{shown}"
    );
    assert!(shown.contains("2 errors in the manifests"), "{shown}");
}

#[test]
fn networks_take_subnets_and_internal_and_services_fixed_addresses() {
    let compose = "services:\n  dns:\n    image: x\n    networks:\n      dns-net: { ipv4_address: 172.20.0.2 }\n  web:\n    image: y\n    networks: [dns-net, default]\nnetworks:\n  dns-net:\n    internal: true\n    ipam:\n      config:\n        - subnet: 172.20.0.0/24\n          gateway: 172.20.0.1\n          ip_range: 172.20.0.128/25\n";
    let spec = loaded(&[("dns/compose.yaml", compose)], &[]);
    let stack = &spec.stacks["dns"];
    let settings = &stack.networks["dns-net"];
    assert!(settings.internal);
    assert_eq!(settings.subnets[0].subnet, "172.20.0.0/24");
    assert_eq!(settings.subnets[0].gateway.as_deref(), Some("172.20.0.1"));
    assert_eq!(
        stack.apps["dns"].addresses["dns-net"].value.to_string(),
        "172.20.0.2"
    );
    assert!(!stack.networks.contains_key("default"));
    let desired = drover::desired::render(&spec);
    let host = desired.hosts.values().next().unwrap();
    let net = &host.networks["drover-dns-dns-net"];
    assert!(net.settings.internal);
    assert!(
        net.config().is_some_and(|c| c.contains("172.20.0.0/24")),
        "{net:?}"
    );
    assert_eq!(host.networks["drover-dns"].config(), None);
    let dns = host.containers.values().find(|c| c.app == "dns").unwrap();
    assert_eq!(dns.addresses["drover-dns-dns-net"], "172.20.0.2");

    let bad = "services:\n  a:\n    image: x\n    networks:\n      n: { ipv4_address: 10.0.0.2 }\n      plain: { ipv4_address: 172.21.0.2 }\n      outside: { ipv4_address: 10.1.0.2 }\n  b:\n    image: x\n    networks:\n      n: { ipv4_address: 10.0.0.2 }\n  c:\n    image: x\n    scale: 2\n    networks:\n      n: { ipv4_address: 10.0.0.3 }\nnetworks:\n  n:\n    ipam: { config: [{ subnet: 10.0.0.0/24, gateway: 10.9.0.1 }] }\n  plain: {}\n  outside: { external: true }\n  odd:\n    ipam: { driver: custom, config: [{ subnet: fd00::/64 }] }\n";
    let shown = errors(&[("dns/compose.yaml", bad)], &[]);
    for expected in [
        "dns/compose.yaml:6:30: error: a fixed address needs a subnet of network `plain`, and it has none",
        "dns/compose.yaml:7:32: error: drover does not give fixed addresses on external network `outside`",
        "dns/compose.yaml:11:26: error: `10.0.0.2` on network `n` is app `a`'s address already",
        "dns/compose.yaml:15:5: error: a service of several containers cannot have a fixed address",
        "dns/compose.yaml:19:54: error: `gateway: 10.9.0.1` is not in the subnet `10.0.0.0/24`",
        "dns/compose.yaml:23:21: error: IPAM driver `custom` is not supported",
        "dns/compose.yaml:23:48: error: `fd00::/64` is not an IPv4 subnet",
    ] {
        assert!(shown.contains(expected), "no `{expected}` in:\n{shown}");
    }
    assert!(shown.contains("7 errors"), "{shown}");
}

#[test]
fn service_names_take_dots_and_capitals_as_compose_does() {
    let compose = "services:\n  wazuh.manager:\n    image: x\n  initContainer:\n    image: x\n    links: [wazuh.manager]\n";
    let spec = loaded(&[("siem/compose.yaml", compose)], &[]);
    let apps: Vec<_> = spec.stacks["siem"].apps.keys().cloned().collect();
    assert_eq!(apps, ["initContainer", "wazuh.manager"]);
    let shown = errors(
        &[("siem/compose.yaml", "services:\n  .hidden:\n    image: x\n")],
        &[],
    );
    assert!(
        shown.contains("siem/compose.yaml:2:3: error: `.hidden` is not a valid service name"),
        "{shown}"
    );
}

#[test]
fn a_dot_env_beside_the_manifest_is_read_and_the_environment_wins() {
    let text = format!(
        "{ONE_APP}    environment:\n      TAG: ${{TAG:-written-default}}\n      MODE: ${{MODE:-dev}}\n"
    );
    let files = [
        ("shop/shop.yaml", text.as_str()),
        (
            "shop/.env",
            "# the user's values\nTAG=from-dot-env\nMODE=from-dot-env\n",
        ),
    ];
    let spec = loaded(&files, &[("MODE", "from-environment")]);
    let tag = env_of(&spec, "shop", "web", "TAG");
    assert_eq!(tag.expose(), "from-dot-env");
    assert!(tag.is_secret(), "values from .env are secret");
    assert_eq!(
        env_of(&spec, "shop", "web", "MODE").expose(),
        "from-environment"
    );

    // A malformed line is located, never shown.
    let shown = errors(
        &[
            ("shop/shop.yaml", text.as_str()),
            ("shop/.env", "TAG=ok\nhunter2 secret line\n"),
        ],
        &[],
    );
    assert!(
        shown.contains("shop/.env:2:1: error: `.env`: expected"),
        "{shown}"
    );
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn a_healthcheck_that_is_not_disabled_keeps_the_images_test() {
    let spec = loaded(
        &[(
            "shop.yaml",
            &format!("{ONE_APP}    healthcheck: {{ disable: false, interval: $EVERY, retries: $RETRIES }}\n"),
        )],
        &[("EVERY", "7s"), ("RETRIES", "4")],
    );
    let h = spec.stacks["shop"].apps["web"].healthcheck.clone().unwrap();
    assert!(h.test.is_empty(), "the image's test is kept: {h:?}");
    assert!(
        !h.is_enabled(),
        "whether it reports health is the image's say"
    );
    assert_eq!(h.interval_ns, Some(7_000_000_000));
    assert_eq!(h.retries, Some(4));
}

#[test]
fn a_dollar_that_starts_no_variable_is_kept_as_compose_keeps_it() {
    let spec = loaded(
        &[(
            "shop.yaml",
            &format!(
                "{ONE_APP}    command: [\"sh\", \"-c\", \"echo $(date) | grep -E '^x.*$'\"]\n"
            ),
        )],
        &[],
    );
    let cmd = spec.stacks["shop"].apps["web"].command.clone().unwrap();
    assert_eq!(cmd[2].expose(), "echo $(date) | grep -E '^x.*$'");
}

#[test]
fn a_compose_field_is_never_hinted_as_a_drover_field_of_another_meaning() {
    let shown = errors(
        &[(
            "shop.yaml",
            &format!("{ONE_APP}    privileged: true\n    userns_mod: host\n"),
        )],
        &[],
    );
    assert!(
        shown.contains("app `web` does not take Compose's field `privileged`"),
        "{shown}"
    );
    assert!(
        shown.contains("it looks like Compose's `userns_mode`"),
        "{shown}"
    );
    assert!(!shown.contains("a similar name exists"), "{shown}");
}

#[test]
fn a_mount_from_a_default_written_in_the_file_says_what_is_wrong() {
    let shown = errors(
        &[(
            "shop.yaml",
            &format!("{ONE_APP}    volumes: [\"${{DATA:-/srv/shop}}:/data\"]\n"),
        )],
        &[],
    );
    assert!(shown.contains("`/srv/shop` is a host path"), "{shown}");
    assert!(!shown.contains("comes from a variable"), "{shown}");
}

#[test]
fn yaml_that_compose_reads_is_read() {
    // Extension fields with anchors, merge keys, and flow sequences closed
    // less indented than their block.
    let text = "kind: Stack\nname: shop\nx-check: &check\n  interval: 10s\n  retries: 3\napps:\n  web:\n    image: nginx\n    healthcheck:\n      <<: *check\n      retries: 5\n      test: [\n          \"CMD-SHELL\",\n          \"true\",\n  ]\n    command:\n      [\n        \"run\",\n]\n";
    let spec = loaded(&[("shop.yaml", text)], &[]);
    let web = &spec.stacks["shop"].apps["web"];
    let h = web.healthcheck.clone().unwrap();
    assert_eq!(h.interval_ns, Some(10_000_000_000));
    assert_eq!(
        h.retries,
        Some(5),
        "what the mapping says wins over the merge"
    );
    assert_eq!(h.test.len(), 2);
    assert_eq!(web.command.clone().unwrap()[0].expose(), "run");
}

const CLUSTER: &str = "kind: Cluster\nhosts:\n  node-a: { endpoint: 'tcp://127.0.0.1:1' }\n  node-b: { endpoint: 'tcp://127.0.0.1:2' }\n";

const SHOP: &str = r#"x-drover:
  host: node-a
x-common: &common
  restart: unless-stopped
services:
  db:
    <<: *common
    image: postgres:16
    environment:
      - POSTGRES_PASSWORD
      - POSTGRES_DB=shop
      - NOT_SET_ANYWHERE
    volumes:
      - pgdata:/var/lib/postgresql/data
      - type: volume
        source: backups
        target: /backups
        read_only: true
    healthcheck:
      test: ["CMD-SHELL", "pg_isready"]
      interval: 5s
    ulimits:
      nofile: { soft: 1024, hard: 2048 }
  web_app:
    image: nginx:1.27
    container_name: shop-web
    hostname: web
    depends_on:
      db:
        condition: service_healthy
    ports:
      - target: 80
        published: 8080
    expose: ["9000"]
    deploy:
      resources:
        limits: { memory: 256m, cpus: "0.5" }
    x-drover: { host: node-b }
  debug:
    image: busybox
    profiles: [debug]
volumes:
  pgdata:
    x-drover: { max_downtime: 5s }
  backups: {}
"#;

fn shop_files<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut files = vec![
        ("cluster.yaml", CLUSTER),
        ("my_shop/compose.yaml", SHOP),
        ("my_shop/.env", "POSTGRES_PASSWORD=s3cret\n"),
        // The stack's own files, not manifests.
        ("my_shop/prometheus.yml", "scrape_configs: []\n"),
        ("my_shop/config/app.yaml", "not: [a manifest\n"),
    ];
    files.extend_from_slice(extra);
    files
}

#[test]
fn a_compose_file_is_a_stack_with_compose_meaning() {
    let spec = loaded(&shop_files(&[]), &[]);
    let stack = &spec.stacks["my-shop"];
    assert_eq!(stack.apps.keys().collect::<Vec<_>>(), ["db", "web_app"]);
    let db = &stack.apps["db"];
    assert_eq!(db.host(), "node-a");
    assert_eq!(db.restart.as_str(), "unless-stopped");
    let pw = &db.environment["POSTGRES_PASSWORD"];
    assert_eq!(pw.expose(), "s3cret");
    assert!(pw.is_secret());
    assert!(!db.environment.contains_key("NOT_SET_ANYWHERE"));
    assert_eq!(db.environment["POSTGRES_DB"].expose(), "shop");
    let mounts: Vec<_> = db
        .volumes
        .iter()
        .map(|m| {
            (
                m.value.volume.as_str(),
                m.value.target.as_str(),
                m.value.read_only,
            )
        })
        .collect();
    assert_eq!(
        mounts,
        [
            ("pgdata", "/var/lib/postgresql/data", false),
            ("backups", "/backups", true)
        ]
    );
    assert_eq!(db.options.ulimits["nofile"], (1024, 2048));

    let web = &stack.apps["web_app"];
    assert_eq!(web.host(), "node-b");
    assert_eq!(web.restart.as_str(), "no", "Compose's default");
    assert_eq!(
        (web.ports[0].value.host, web.ports[0].value.container),
        (8080, 80)
    );
    assert_eq!(web.options.expose, ["9000/tcp"]);
    assert_eq!(web.options.hostname.as_deref(), Some("web"));
    assert_eq!(web.options.container_name.as_deref(), Some("shop-web"));
    assert_eq!(web.memory, Some(256 << 20));
    assert_eq!(web.nano_cpus, Some(500_000_000));
    assert_eq!(web.depends_on[0].0.value, "db");
    assert_eq!(stack.volumes["pgdata"].max_downtime_ns, Some(5_000_000_000));

    // A profile turns a service on.
    let spec = loaded(&shop_files(&[]), &[("COMPOSE_PROFILES", "debug")]);
    assert!(spec.stacks["my-shop"].apps.contains_key("debug"));
}

#[test]
fn the_override_file_is_merged_and_its_errors_name_it() {
    let over = "services:\n  web_app:\n    environment:\n      MODE: dev\n    expose: [\"9001\"]\n";
    let spec = loaded(&shop_files(&[("my_shop/compose.override.yaml", over)]), &[]);
    let web = &spec.stacks["my-shop"].apps["web_app"];
    assert_eq!(web.environment["MODE"].expose(), "dev");
    assert_eq!(web.options.expose, ["9000/tcp", "9001/tcp"]);

    let bad = "services:\n  web_app:\n    ipc: host\n";
    let shown = errors(&shop_files(&[("my_shop/compose.override.yaml", bad)]), &[]);
    assert!(
        shown.contains("my_shop/compose.override.yaml:3:5: error: drover does not support `ipc` (in service `web_app`)"),
        "{shown}"
    );
    assert!(shown.contains("3 |     ipc: host"), "{shown}");
}

#[test]
fn a_drover_stack_ships_files_beside_it_and_names_aliases() {
    let text = format!(
        "{ONE_APP}    files: [\"./conf/site.conf:/etc/nginx/conf.d/site.conf:ro\", \"./html:/usr/share/nginx/html\"]\n    aliases: [www]\n"
    );
    let spec = loaded(
        &[
            ("shop/shop.yaml", text.as_str()),
            ("shop/conf/site.conf", "server {}\n"),
            ("shop/html/index.html", "<p>hi</p>\n"),
            ("shop/html/img/logo.svg", "<svg/>\n"),
        ],
        &[],
    );
    let web = &spec.stacks["shop"].apps["web"];
    let files: Vec<(&str, u32)> = web
        .files
        .iter()
        .map(|f| (f.target.as_str(), f.mode))
        .collect();
    assert_eq!(
        files,
        [
            ("/etc/nginx/conf.d/site.conf", 0o444),
            ("/usr/share/nginx/html/img/logo.svg", 0o644),
            ("/usr/share/nginx/html/index.html", 0o644),
        ]
    );
    assert_eq!(web.options.aliases, ["www"]);
    // A host path or a file outside the directory is refused, located.
    let bad = format!("{ONE_APP}    files: [\"/etc/passwd:/x\", \"../outside:/y\"]\n");
    let shown = errors(&[("shop/shop.yaml", bad.as_str())], &[]);
    assert!(
        shown
            .contains("shop/shop.yaml:6:13: error: `/etc/passwd` is not in the manifest directory"),
        "{shown}"
    );
    assert!(shown.contains("`../outside`"), "{shown}");
}

#[test]
fn a_drover_manifest_in_a_compose_folder_is_never_ignored_in_silence() {
    let shown = errors(
        &[
            ("compose.yaml", "services:\n  web: { image: nginx }\n"),
            ("stacks/blog.yaml", "kind: Stack\nname: blog\napps: {}\n"),
            ("config/app.yaml", "kind: Something\n"),
        ],
        &[],
    );
    assert!(
        shown.contains(
            "stacks/blog.yaml:1:1: error: a drover manifest in the folder of the Compose file"
        ),
        "{shown}"
    );
    assert!(!shown.contains("config/app.yaml"), "{shown}");
}

#[test]
fn what_drover_does_not_do_is_named_where_it_is_written() {
    let text = "name: shop\nservices:\n  web:\n    image: nginx\n    ipc: host\n    network_mode: container:db\n    volumes: [\"~/www:/usr/share/nginx/html\"]\n    ports: [\"80\"]\n    deploy: { mode: global }\nnetworks:\n  front: { external: true, driver: overlay }\nvolumes:\n  data: { external: true, labels: [a=b] }\n";
    let shown = errors(&[("shop/compose.yaml", text)], &[]);
    for expected in [
        "shop/compose.yaml:5:5: error: drover does not support `ipc`",
        "shop/compose.yaml:6:19: error: drover does not support `network_mode: container:db`",
        "shop/compose.yaml:7:15: error: `~/www` is in a home folder",
        "shop/compose.yaml:9:21: error: drover does not support `deploy.mode: global`",
        "shop/compose.yaml:11:36: error: `driver` cannot be set on external network `front`",
        "shop/compose.yaml:13:35: error: `labels` cannot be set on external volume `data`",
    ] {
        assert!(shown.contains(expected), "no `{expected}` in:\n{shown}");
    }
}

/// Every case folder of the corpus of real Compose files.
fn corpus() -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/compose-corpus");
    let mut cases = Vec::new();
    for source in std::fs::read_dir(&root).unwrap() {
        let source = source.unwrap().path();
        if source.is_dir() {
            for case in std::fs::read_dir(&source).unwrap() {
                cases.push(case.unwrap().path());
            }
        }
    }
    cases.sort();
    cases
}

/// The real Compose files of `tests/fixtures/compose-corpus/` (see its
/// SOURCES.md): each validates as it is, or fails with errors each located
/// in a file of its folder. What each does is kept in a snapshot, and the
/// share that validates is printed and may not fall.
#[test]
fn real_compose_files_validate_or_say_where_and_why_not() {
    let cases = corpus();
    let mut summary = String::new();
    let mut valid = 0;
    for case in &cases {
        let name = case
            .strip_prefix(case.parent().unwrap().parent().unwrap())
            .unwrap()
            .display()
            .to_string();
        match load(case, &env(&[])) {
            Ok(spec) => {
                valid += 1;
                let apps: usize = spec.stacks.values().map(|s| s.apps.len()).sum();
                assert!(apps > 0, "{name} was read as no app at all");
                summary.push_str(&format!("{name}: valid, {apps} apps\n"));
            }
            Err(LoadError::Invalid(d)) => {
                let mut kinds: Vec<String> = Vec::new();
                for e in &d.0 {
                    let file = Path::new(&*e.loc.file);
                    assert!(
                        file.starts_with(case) && file.exists(),
                        "{e} is not placed in {name}"
                    );
                    assert!(e.loc.pos.line >= 1 && e.loc.pos.col >= 1, "{e}");
                    let kind = format!(
                        "{}:{}: {}",
                        file.file_name().unwrap().to_string_lossy(),
                        e.loc.pos.line,
                        e.message
                    );
                    if !kinds.contains(&kind) {
                        kinds.push(kind);
                    }
                }
                summary.push_str(&format!("{name}: {} errors\n", d.0.len()));
                for k in kinds.iter().take(4) {
                    summary.push_str(&format!("    {k}\n"));
                }
            }
            Err(e) => panic!("{name}: {e}"),
        }
    }
    let share = valid as f64 / cases.len() as f64;
    summary.push_str(&format!(
        "{valid} of {} valid as they are ({:.0} %)\n",
        cases.len(),
        share * 100.0
    ));
    eprintln!("{summary}");
    insta::assert_snapshot!("corpus", summary);
    assert!(
        valid >= 18,
        "fewer real files validate than before: {valid}"
    );
}

/// What `docker compose config` says these files run, written down: the
/// containers drover renders from them are the same.
#[test]
fn real_files_render_the_containers_compose_would() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/compose-corpus");
    let spec = load(&root.join("awesome-compose/wordpress-mysql"), &env(&[])).unwrap();
    let d = drover::desired::render(&spec);
    let host = &d.hosts["local"];
    let db = &host.containers["wordpress-mysql-db"];
    assert_eq!(db.image.expose(), "mariadb:10.6.4-focal");
    let words = |l: &Option<Vec<drover::model::Text>>| -> Vec<String> {
        l.iter().flatten().map(|t| t.expose().to_string()).collect()
    };
    assert_eq!(
        words(&db.command),
        ["--default-authentication-plugin=mysql_native_password"]
    );
    assert_eq!(db.env["MYSQL_DATABASE"].expose(), "wordpress");
    assert_eq!(db.options.expose, ["3306/tcp", "33060/tcp"]);
    assert_eq!(db.restart.as_str(), "always");
    assert_eq!(
        (db.mounts[0].source.as_str(), db.mounts[0].target.as_str()),
        ("wordpress-mysql-db_data", "/var/lib/mysql")
    );
    let wp = &host.containers["wordpress-mysql-wordpress"];
    assert_eq!((wp.ports[0].host, wp.ports[0].container), (80, 80));
    assert_eq!(wp.env["WORDPRESS_DB_HOST"].expose(), "db");
    assert!(wp.aliases.contains(&"wordpress".to_string()));

    let spec = load(&root.join("umami/main"), &env(&[])).unwrap();
    let d = drover::desired::render(&spec);
    let db = &d.hosts["local"].containers["main-db"];
    let test: Vec<&str> = db
        .healthcheck
        .as_ref()
        .unwrap()
        .test
        .iter()
        .map(|t| t.expose())
        .collect();
    assert_eq!(
        test,
        [
            "CMD-SHELL",
            "pg_isready -U ${POSTGRES_USER} -d ${POSTGRES_DB}"
        ]
    );
    let app = &d.hosts["local"].containers["main-umami"];
    assert_eq!(app.options.init, Some(true));
    assert_eq!(
        app.depends_on,
        [("db".to_string(), drover::model::Condition::Healthy)]
    );
    assert_eq!(app.restart.as_str(), "always");
}

/// A Compose stack on two real engines: a data directory, a file of the
/// repository, a healthcheck dependency, two networks with an alias,
/// container options; an edit of the file recreates only its app, and a
/// service moved to the other host takes its data along; a service that
/// mounts a host path stays where it is.
#[test]
fn a_compose_stack_runs_on_two_hosts_is_edited_and_moves_with_its_data() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["shop"]);
    let (a, b) = (&f.hosts[0], &f.hosts[1]);
    let dir = f.path().join("shop");
    // The platform the test image was made for, as Compose's `platform`.
    let platform = text(&docker(
        a,
        &[
            "image",
            "inspect",
            "--format",
            "{{.Os}}/{{.Architecture}}",
            IMAGE,
        ],
    ));
    let compose = |db_host: &str, agent_host: &str| {
        format!(
            r#"name: shop
x-drover: {{ host: {a} }}
x-idle: &idle
  image: {IMAGE}
  pull_policy: never
  stop_grace_period: 1s
services:
  db:
    <<: *idle
    command: ["sh", "-c", "[ -f /data/first ] || date +%s%N > /data/first; touch /data/ready; trap 'exit 0' TERM; while :; do date >> /data/log; sleep 1; done"]
    volumes: ["./db-data:/data"]
    healthcheck: {{ test: ["CMD", "test", "-f", "/data/ready"], interval: 1s, retries: 30 }}
    networks:
      back: {{ ipv4_address: 10.213.7.10 }}
    x-drover: {{ host: {db_host} }}
  worker:
    <<: *idle
    command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
    platform: {platform}
    deploy: {{ replicas: 2 }}
    networks:
      back: {{ aliases: [jobs] }}
  web:
    <<: *idle
    command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
    hostname: shop-front
    extra_hosts: ["upstream.test:10.77.0.99"]
    cap_drop: [NET_RAW]
    tmpfs: ["/scratch"]
    ulimits: {{ nofile: {{ soft: 1000, hard: 2000 }} }}
    volumes: ["./site/greeting.txt:/etc/shop/greeting.txt:ro"]
    depends_on: {{ db: {{ condition: service_healthy }} }}
    networks: [front, back]
    x-drover: {{ host: {b} }}
  web.follower:
    <<: *idle
    command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
    depends_on: {{ web: {{ condition: service_started, restart: true }} }}
  agent:
    <<: *idle
    command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
    volumes: ["/etc/hostname:/host-hostname:ro", "/tmp:/host-tmp:ro,rprivate"]
    pid: host
    runtime: runc
    devices: ["/dev/null:/dev/drover-null"]
    networks: [front]
    x-drover: {{ host: {agent_host} }}
networks:
  front: {{}}
  back:
    internal: true
    ipam: {{ config: [{{ subnet: 10.213.7.0/24 }}] }}
"#,
            a = a.name,
            b = b.name,
        )
    };
    std::fs::create_dir_all(dir.join("site")).unwrap();
    std::fs::write(dir.join("site/greeting.txt"), "hello\n").unwrap();
    std::fs::write(dir.join("compose.yaml"), compose(&a.name, &a.name)).unwrap();

    let v = f.drover(&["validate"]);
    assert!(v.status.success());
    assert!(stderr(&v).contains("is a data directory"), "{}", stderr(&v));
    f.reconcile();
    for (host, c) in [
        (a, "shop-db"),
        (a, "shop-worker-1"),
        (a, "shop-worker-2"),
        (b, "shop-web"),
        (a, "shop-agent"),
    ] {
        assert!(running(host, c), "{c} runs on {}", host.name);
    }
    let exec = |host: &TestHost, c: &str, cmd: &[&str]| {
        let mut args = vec!["exec", c];
        args.extend_from_slice(cmd);
        text(&docker(host, &args))
    };
    // The file of the repository, the options, the alias on its network.
    assert_eq!(
        exec(b, "shop-web", &["cat", "/etc/shop/greeting.txt"]),
        "hello"
    );
    assert_eq!(exec(b, "shop-web", &["cat", "/etc/hostname"]), "shop-front");
    assert!(exec(b, "shop-web", &["cat", "/etc/hosts"]).contains("upstream.test"));
    // The main process's limits (an exec'd shell's may be raised to the
    // hard limit by the engine's runtime).
    let limits = exec(b, "shop-web", &["cat", "/proc/1/limits"]);
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "));
    assert_eq!(
        nofile.as_deref(),
        Some("Max open files 1000 2000 files"),
        "{limits}"
    );
    assert!(exec(b, "shop-web", &["cat", "/proc/mounts"]).contains("/scratch"));
    // What a service may take of its host, as Compose gives it
    // (`privileged` too, which these engines cannot start here: see the
    // engine's unit test of the request).
    assert_eq!(
        inspect(
            a,
            "shop-agent",
            "{{.HostConfig.PidMode}} {{.HostConfig.Runtime}}"
        )
        .as_deref(),
        Some("host runc")
    );
    assert_eq!(
        inspect(
            a,
            "shop-agent",
            "{{range .Mounts}}{{if eq .Destination \"/host-tmp\"}}{{.Propagation}} {{.RW}}{{end}}{{end}}"
        )
        .as_deref(),
        Some("rprivate false"),
        "a bind's propagation reaches the engine"
    );
    assert!(
        docker(a, &["exec", "shop-agent", "test", "-c", "/dev/drover-null"])
            .status
            .success(),
        "the host's device is in the container"
    );
    assert_ne!(
        exec(a, "shop-agent", &["cat", "/proc/1/comm"]),
        "sh",
        "the host's processes are seen"
    );
    assert_eq!(
        inspect(b, "shop-web", "{{.HostConfig.Privileged}}").as_deref(),
        Some("false")
    );
    assert_eq!(
        inspect(b, "shop-web", "{{.HostConfig.CapDrop}}").as_deref(),
        Some("[NET_RAW]")
    );
    let reaches = |from: &str, to: &str| {
        docker(
            a,
            &["exec", from, "busybox", "ping", "-c", "1", "-W", "2", to],
        )
        .status
        .success()
    };
    assert!(
        reaches("shop-db", "jobs"),
        "the alias `jobs` answers on `back`"
    );
    // The subnet, `internal` and the fixed address reach the engine.
    let back = docker(
        a,
        &[
            "network",
            "inspect",
            "--format",
            "{{.Internal}} {{range .IPAM.Config}}{{.Subnet}}{{end}}",
            "drover-shop-back",
        ],
    );
    assert_eq!(text(&back), "true 10.213.7.0/24");
    assert_eq!(
        inspect(
            a,
            "shop-db",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        )
        .as_deref(),
        Some("10.213.7.10")
    );
    assert!(
        reaches("shop-worker-1", "10.213.7.10"),
        "the fixed address answers"
    );
    assert!(
        reaches("shop-db", "worker"),
        "each of the two containers of `worker` answers to its name"
    );
    assert!(
        !reaches("shop-agent", "jobs"),
        "`front` is kept apart from `back`"
    );
    assert!(
        !reaches("shop-agent", "db"),
        "`front` is kept apart from `back`"
    );
    assert_eq!(
        inspect(a, "shop-db", "{{.Mounts}}").map(|m| m.contains("shop-db-data")),
        Some(true)
    );
    let first = exec(a, "shop-db", &["cat", "/data/first"]);
    let ids = |which: &[(&TestHost, &str)]| -> Vec<String> {
        which
            .iter()
            .map(|(h, c)| inspect(h, c, "{{.Id}}").unwrap_or_default())
            .collect()
    };
    let before = ids(&[
        (a, "shop-db"),
        (a, "shop-worker-1"),
        (b, "shop-web"),
        (a, "shop-web.follower"),
    ]);

    // Editing the file recreates only the app that mounts it.
    std::fs::write(dir.join("site/greeting.txt"), "hello again\n").unwrap();
    let plan = f.drover(&["reconcile", "--dry-run"]);
    assert!(stdout(&plan).contains("shop-web"), "{}", stdout(&plan));
    f.reconcile();
    let after = ids(&[
        (a, "shop-db"),
        (a, "shop-worker-1"),
        (b, "shop-web"),
        (a, "shop-web.follower"),
    ]);
    assert_eq!(before[..2], after[..2], "db and worker are left alone");
    assert_ne!(before[2], after[2], "web is made again");
    assert_ne!(
        before[3], after[3],
        "and the app that restarts with it (`restart: true`), on the other host"
    );
    assert!(running(a, "shop-web.follower"));
    assert_eq!(
        exec(b, "shop-web", &["cat", "/etc/shop/greeting.txt"]),
        "hello again"
    );

    // The database moves to node-b with its data directory.
    std::fs::write(dir.join("compose.yaml"), compose(&b.name, &a.name)).unwrap();
    f.reconcile();
    wait_until(Duration::from_secs(60), "db to run on node-b", || {
        running(b, "shop-db")
    });
    assert!(!running(a, "shop-db"));
    assert_eq!(
        exec(b, "shop-db", &["cat", "/data/first"]),
        first,
        "the data came along"
    );
    assert_eq!(
        inspect(
            b,
            "shop-db",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        )
        .as_deref(),
        Some("10.213.7.10"),
        "its fixed address came along"
    );

    // A service that mounts a host path is not moved: said, and kept.
    std::fs::write(dir.join("compose.yaml"), compose(&b.name, &b.name)).unwrap();
    let o = f.drover(&["reconcile"]);
    assert!(!o.status.success(), "a plan with an error fails");
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        said.contains("mounts the host path `/etc/hostname`"),
        "{said}"
    );
    assert!(
        said.contains("shop/compose.yaml:"),
        "the error is located: {said}"
    );
    assert!(
        running(a, "shop-agent"),
        "the pinned app stays where it was"
    );
    assert!(inspect(b, "shop-agent", "{{.Id}}").is_none());
}

/// Copies what a converted stack needs from a Compose file's folder into
/// `to`: its env files, and the files and folders `stack` names (`./x`).
/// Its other files were the Compose stack's own; beside a drover Stack,
/// a YAML file among them would be read as a manifest.
fn copy_beside(from: &Path, to: &Path, stack: &str) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let named = stack == "./" || stack.contains(&format!("./{name}"));
        if e.file_type().unwrap().is_dir() {
            if named {
                copy_beside(&e.path(), &to.join(&name), "./");
            } else if name == "env" {
                copy_beside(&e.path(), &to.join(&name), stack);
            }
        } else if named
            || name.ends_with(".env")
            || !(name.ends_with(".yaml") || name.ends_with(".yml"))
        {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

/// Each container's spec hash, by name: what drover makes of a directory.
fn made(spec: &drover::model::Spec) -> BTreeMap<String, String> {
    drover::desired::render(spec)
        .hosts
        .values()
        .flat_map(|h| h.containers.values())
        .map(|c| (c.name.clone(), c.spec_hash.clone()))
        .collect()
}

/// `drover convert` writes a drover Stack that makes the very containers
/// the Compose file makes (the same spec hashes), for the test's stack and
/// every file of the corpus that validates and has no form a drover Stack
/// cannot hold (a host path).
#[test]
fn convert_writes_a_stack_that_makes_the_same_containers() {
    let shop = tempfile::tempdir().unwrap();
    write(
        shop.path(),
        &shop_files(&[(
            "my_shop/compose.override.yaml",
            "services:\n  web_app:\n    environment: [MODE=dev]\n",
        )]),
    );
    let mut cases: Vec<(std::path::PathBuf, Vec<(&str, &str)>)> = vec![(
        shop.path().join("my_shop"),
        vec![("POSTGRES_PASSWORD", "from-env")],
    )];
    cases.extend(corpus().into_iter().map(|c| (c, Vec::new())));
    let mut converted = 0;
    for (case, vars) in cases {
        let Some(file) = drover::load::compose::FILE_NAMES
            .iter()
            .map(|n| case.join(n))
            .find(|p| p.is_file())
        else {
            continue;
        };
        let Ok(text) = drover::load::convert(&file, &env(&vars)) else {
            continue;
        };
        let root = case
            .ancestors()
            .find(|d| d.join("cluster.yaml").is_file())
            .unwrap_or(&case);
        let compose = load(root, &env(&vars)).unwrap();
        let out = tempfile::tempdir().unwrap();
        let folder = out.path().join("stack");
        copy_beside(&case, &folder, &text);
        if root != case {
            std::fs::copy(root.join("cluster.yaml"), out.path().join("cluster.yaml")).unwrap();
        }
        std::fs::write(folder.join("stack.yaml"), &text).unwrap();
        let stack = match load(out.path(), &env(&vars)) {
            Ok(s) => s,
            Err(e) => panic!(
                "{}: the converted stack does not load: {e}\n{text}",
                case.display()
            ),
        };
        assert_eq!(made(&compose), made(&stack), "{}:\n{text}", case.display());
        converted += 1;
    }
    eprintln!("{converted} Compose files converted, each making the same containers");
    assert!(converted >= 30, "{converted}");
}

#[test]
fn convert_on_the_command_line_prints_the_stack_or_says_what_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &shop_files(&[]));
    let run = |file: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["convert", file.to_str().unwrap()])
            .env("POSTGRES_PASSWORD", "from-env")
            .output()
            .unwrap()
    };
    let o = run(&dir.path().join("my_shop/compose.yaml"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.starts_with("kind: Stack\nname: my-shop\n"), "{text}");
    assert!(
        text.contains("POSTGRES_PASSWORD: \"${POSTGRES_PASSWORD}\""),
        "the reference is kept: {text}"
    );
    assert!(!text.contains("from-env"), "{text}");

    write(
        dir.path(),
        &[("pinned/compose.yaml", "x-drover: { host: node-a }\nservices:\n  agent:\n    image: busybox\n    volumes: [\"/var/run/docker.sock:/var/run/docker.sock\"]\n")],
    );
    let o = run(&dir.path().join("pinned/compose.yaml"));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("mounts the host path `/var/run/docker.sock`: a drover Stack cannot"),
        "{err}"
    );
}

#[test]
fn network_modes_and_external_networks_are_read_with_composes_meaning() {
    let spec = loaded(
        &[(
            "app/compose.yaml",
            "services:\n  web:\n    image: nginx\n    networks: [default, proxy]\n  side:\n    image: busybox\n    network_mode: service:web\n  probe:\n    image: busybox\n    network_mode: host\n  quiet:\n    image: busybox\n    network_mode: none\nnetworks:\n  proxy:\n    external: true\n    name: edge-proxy\n",
        )],
        &[],
    );
    let app = &spec.stacks["app"].apps;
    assert_eq!(app["web"].networks, ["default"]);
    assert_eq!(app["web"].external_networks, ["edge-proxy"]);
    assert!(
        matches!(&app["side"].network_mode, drover::model::NetworkMode::App(t) if t.value == "web")
    );
    assert!(
        app["side"].depends_on.iter().any(|(t, _)| t.value == "web"),
        "a service that shares another's network waits for it"
    );
    let d = drover::desired::render(&spec);
    let local = &d.hosts["local"];
    assert_eq!(local.containers["app-side"].network, "container:app-web");
    assert_eq!(local.containers["app-probe"].network, "host");
    assert_eq!(local.containers["app-quiet"].network, "none");
    assert!(local.containers["app-probe"].aliases.is_empty());
    assert!(local.networks["edge-proxy"].external, "made outside drover");
    assert!(!local.networks["drover-app"].external);

    // Recreating the app whose network is shared recreates the sharer.
    let mut edited = spec.clone();
    edited
        .stacks
        .get_mut("app")
        .unwrap()
        .apps
        .get_mut("web")
        .unwrap()
        .image = drover::model::Text::plain("nginx:2");
    let e = drover::desired::render(&edited);
    assert_ne!(
        e.hosts["local"].containers["app-side"].spec_hash,
        local.containers["app-side"].spec_hash
    );
    assert_eq!(
        e.hosts["local"].containers["app-probe"].spec_hash,
        local.containers["app-probe"].spec_hash
    );
}

#[test]
fn what_docker_refuses_beside_a_network_mode_is_a_located_error() {
    let e = errors(
        &[(
            "app/compose.yaml",
            "services:\n  web:\n    image: nginx\n  side:\n    image: busybox\n    network_mode: service:web\n    ports: [\"80:80\"]\n    hostname: side\n  probe:\n    image: busybox\n    network_mode: host\n    ports: [\"81:81\"]\n  odd:\n    image: busybox\n    network_mode: container:web\n  gone:\n    image: busybox\n    network_mode: service:nowhere\n",
        )],
        &[],
    );
    for needle in [
        "compose.yaml:7:12: error: `ports` cannot be used with `network_mode: service:web`",
        "compose.yaml:8:15: error: `hostname` cannot be used with `network_mode: service:web`",
        "compose.yaml:12:12: error: `ports` cannot be used with `network_mode: host`",
        "it listens on the host's own ports",
        "compose.yaml:15:19: error: drover does not support `network_mode: container:web`",
        "app `nowhere` is not in stack `app`",
    ] {
        assert!(e.contains(needle), "{needle} in:\n{e}");
    }
    // A shared network stack is on one host.
    let e = errors(
        &[
            ("cluster.yaml", "kind: Cluster\nhosts:\n  a: { endpoint: unix:///a.sock }\n  b: { endpoint: unix:///b.sock }\n"),
            (
                "app/compose.yaml",
                "x-drover: { host: a }\nservices:\n  web:\n    image: nginx\n  side:\n    image: busybox\n    network_mode: service:web\n    x-drover: { host: b }\n",
            ),
        ],
        &[],
    );
    assert!(
        e.contains("app `side` on `b` shares the network of `web` on `a`"),
        "{e}"
    );
}

#[test]
fn a_job_another_service_waits_for_is_done_once_it_exits_with_zero() {
    let spec = loaded(
        &[(
            "app/compose.yaml",
            "services:\n  migrate:\n    image: busybox\n  web:\n    image: nginx\n    depends_on:\n      migrate: { condition: service_completed_successfully }\n",
        )],
        &[],
    );
    let d = drover::desired::render(&spec);
    let c = &d.hosts["local"].containers;
    assert!(c["app-migrate"].job);
    assert!(!c["app-web"].job);
    assert_eq!(
        c["app-web"].depends_on,
        [("migrate".to_string(), drover::model::Condition::Completed)]
    );
    use drover::observed::ContainerState;
    assert!(c["app-migrate"].is_done(ContainerState::Exited, Some(0)));
    assert!(!c["app-migrate"].is_done(ContainerState::Exited, Some(1)));
    assert!(!c["app-web"].is_done(ContainerState::Exited, Some(0)));
    assert_eq!(
        drover::docker::exit_code_from_status("Exited (3) 2 minutes ago"),
        Some(3)
    );
}

/// Compose's other network stacks, a network made outside the stack, and a
/// job the app waits for, on a real engine.
#[test]
fn network_modes_external_networks_and_jobs_run_as_in_compose() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["modes"]);
    let a = &f.hosts[0];
    let proxy = "drover-test-edge";
    let kept = "drover-test-edge-data";
    let named = "drover-test-named";
    docker(a, &["network", "rm", proxy]);
    docker(a, &["volume", "rm", kept, named]);
    let dir = f.path().join("modes");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("compose.yaml"),
        format!(
            r#"x-drover: {{ host: {a} }}
x-idle: &idle
  image: {IMAGE}
  pull_policy: never
  stop_grace_period: 1s
  command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
services:
  init:
    image: {IMAGE}
    pull_policy: never
    command: ["sh", "-c", "echo ready > /shared/done"]
    volumes: ["shared:/shared"]
  app:
    <<: *idle
    command: ["sh", "-c", "test -f /shared/done || exit 3; trap 'exit 0' TERM; while :; do sleep 1; done"]
    volumes: ["shared:/shared"]
    depends_on: {{ init: {{ condition: service_completed_successfully }} }}
    networks: [default, edge]
  side:
    <<: *idle
    network_mode: service:app
  probe:
    <<: *idle
    network_mode: host
    volumes: ["edge_data:/edge:ro"]
  quiet:
    <<: *idle
    network_mode: none
    volumes: ["named:/n"]
  plain:
    <<: *idle
    network_mode: bridge
    ports: ["7", {{ target: 9, protocol: udp }}]
volumes:
  shared: {{}}
  edge_data: {{ external: true, name: {kept} }}
  named: {{ name: {named} }}
networks:
  edge:
    external: true
    name: {proxy}
"#,
            a = a.name
        ),
    )
    .unwrap();

    // The external network and volume are not there yet: said, and the
    // apps that use them skipped; Docker never makes the volume empty.
    let o = f.drover(&["reconcile"]);
    assert!(!o.status.success());
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        said.contains(&format!(
            "network `{proxy}` is external to stack `modes` and does not exist on `{}`",
            a.name
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "compose.yaml:25:15: volume `{kept}` is external to stack `modes` and does not exist on `{}`",
            a.name
        )),
        "{said}"
    );
    assert!(inspect(a, "modes-app", "{{.Id}}").is_none());
    assert!(inspect(a, "modes-probe", "{{.Id}}").is_none());
    assert!(!docker(a, &["volume", "inspect", kept]).status.success());

    assert!(docker(a, &["network", "create", proxy]).status.success());
    assert!(docker(a, &["volume", "create", kept]).status.success());
    let fill = format!("{kept}:/v");
    let filled = docker(
        a,
        &[
            "run",
            "--rm",
            "-v",
            &fill,
            IMAGE,
            "sh",
            "-c",
            "echo kept > /v/f",
        ],
    );
    assert!(filled.status.success());
    f.reconcile();
    assert_eq!(
        inspect(a, "modes-init", "{{.State.Status}} {{.State.ExitCode}}").as_deref(),
        Some("exited 0")
    );
    assert!(running(a, "modes-app"));
    let nets = inspect(
        a,
        "modes-app",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
    )
    .unwrap();
    assert!(
        nets.contains(proxy) && nets.contains("drover-modes"),
        "{nets}"
    );
    let app_id = inspect(a, "modes-app", "{{.Id}}").unwrap();
    assert_eq!(
        inspect(a, "modes-side", "{{.HostConfig.NetworkMode}}"),
        Some(format!("container:{app_id}"))
    );
    assert_eq!(
        inspect(a, "modes-probe", "{{.HostConfig.NetworkMode}}").as_deref(),
        Some("host")
    );
    assert_eq!(
        inspect(a, "modes-quiet", "{{.HostConfig.NetworkMode}}").as_deref(),
        Some("none")
    );
    assert_eq!(
        inspect(a, "modes-plain", "{{.HostConfig.NetworkMode}}").as_deref(),
        Some("bridge")
    );
    // A port without a host port is published on a free one, as in Compose.
    let ports = text(&docker(a, &["port", "modes-plain"]));
    assert!(
        ports.contains("7/tcp -> 0.0.0.0:") && ports.contains("9/udp -> 0.0.0.0:"),
        "{ports}"
    );
    assert!(
        inspect(a, "modes-quiet", "{{range .Mounts}}{{.Name}} {{end}}")
            .unwrap()
            .contains(named),
        "a volume with a `name:` is mounted by it"
    );
    for c in ["modes-side", "modes-probe", "modes-quiet", "modes-plain"] {
        assert!(running(a, c), "{c} runs");
    }
    assert_eq!(
        text(&docker(a, &["exec", "modes-probe", "cat", "/edge/f"])),
        "kept"
    );

    // The job that ran is done, not down: nothing to do, it is not rerun.
    let started = inspect(a, "modes-init", "{{.State.StartedAt}}");
    let o = f.drover(&["reconcile", "--dry-run", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "in sync: {}", stdout(&o));
    f.reconcile();
    assert_eq!(inspect(a, "modes-init", "{{.State.StartedAt}}"), started);

    f.cleanup();
    assert!(
        docker(a, &["network", "inspect", proxy]).status.success(),
        "drover never removes a network it did not make"
    );
    assert!(
        docker(a, &["volume", "inspect", kept]).status.success(),
        "nor a volume"
    );
    assert!(
        docker(a, &["volume", "inspect", named]).status.success(),
        "nor one it did not name"
    );
    docker(a, &["network", "rm", proxy]);
    docker(a, &["volume", "rm", kept, named]);
}

#[test]
fn a_port_without_a_host_port_is_published_on_a_free_one() {
    let spec = loaded(
        &[(
            "app/compose.yaml",
            "services:\n  web:\n    image: nginx\n    ports: [\"80\", \"127.0.0.1::81\", { target: 82, host_ip: 127.0.0.1 }, { target: 83, published: 8083 }]\n",
        )],
        &[],
    );
    let ports: Vec<(String, u16, u16)> = spec.stacks["app"].apps["web"]
        .ports
        .iter()
        .map(|p| (p.value.ip.clone(), p.value.host, p.value.container))
        .collect();
    assert_eq!(
        ports,
        [
            (String::new(), 0, 80),
            ("127.0.0.1".to_string(), 0, 81),
            ("127.0.0.1".to_string(), 0, 82),
            (String::new(), 8083, 83)
        ]
    );
}
