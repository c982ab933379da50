//! The `drover` binary as users run it: exit codes, output formats, the
//! committed schema and the examples.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn drover(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(args)
        .current_dir(repo())
        .env_remove("BLOG_DB_PASSWORD")
        .env_remove("GRAFANA_ADMIN_PASSWORD")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write_observed(json: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), json).unwrap();
    f
}

#[test]
fn the_committed_schema_is_what_drover_schema_prints() {
    let o = drover(&["schema"]);
    assert!(o.status.success());
    let committed = std::fs::read_to_string(repo().join("schema/drover.schema.json")).unwrap();
    assert_eq!(
        stdout(&o),
        committed,
        "schema/drover.schema.json is stale: run `cargo run -- schema > schema/drover.schema.json`"
    );
}

#[test]
fn the_committed_compose_schema_is_what_drover_schema_compose_prints() {
    let o = drover(&["schema", "compose"]);
    assert!(o.status.success());
    let committed = std::fs::read_to_string(repo().join("schema/compose.schema.json")).unwrap();
    assert_eq!(
        stdout(&o),
        committed,
        "schema/compose.schema.json is stale: run `cargo run -- schema compose > schema/compose.schema.json`"
    );
}

#[test]
fn every_example_validates_and_names_the_schema_on_its_first_line() {
    let o = drover(&["validate", "examples/stacks"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "examples/stacks: valid (4 stacks, 9 apps, 2 hosts)\n"
    );
    for entry in std::fs::read_dir(repo().join("examples/stacks")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.starts_with(
                    "# yaml-language-server: $schema=../../schema/drover.schema.json\n"
                ),
                "{} lacks the schema line",
                path.display()
            );
        }
    }
}

#[test]
fn an_invalid_directory_exits_1_with_located_errors_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "kind: Stack\nname: x\napps:\n  web: { imgae: nginx }\n",
    )
    .unwrap();
    let o = drover(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).is_empty());
    let err = stderr(&o);
    assert!(
        err.contains("a.yaml:4:3: error: app `web` has no `image`"),
        "{err}"
    );
    assert!(
        err.contains("a.yaml:4:10: error: unknown field `imgae` in app `web`"),
        "{err}"
    );
    assert!(err.contains("a similar name exists: `image`"), "{err}");
    assert!(
        err.contains("2 errors in the manifests; nothing was changed"),
        "{err}"
    );
}

#[test]
fn a_missing_directory_is_a_one_line_error() {
    let o = drover(&["validate", "no/such/dir"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "error: cannot read manifest directory `no/such/dir`: no such file or directory\n"
    );
}

#[test]
fn dry_run_exit_codes_follow_terraform_with_detailed_exitcode() {
    let empty = write_observed(r#"{"hosts": {"node-a": {}, "node-b": {}}}"#);
    let path = empty.path().to_str().unwrap();
    let plain = drover(&[
        "reconcile",
        "examples/stacks",
        "--dry-run",
        "--observed",
        path,
    ]);
    assert_eq!(plain.status.code(), Some(0), "{}", stderr(&plain));
    assert!(stdout(&plain).contains("Plan: 23 to create"));
    let detailed = drover(&[
        "reconcile",
        "examples/stacks",
        "--dry-run",
        "--observed",
        path,
        "--detailed-exitcode",
    ]);
    assert_eq!(detailed.status.code(), Some(2));

    // Save the state the plan leads to, then plan again: in sync.
    let json = drover(&[
        "reconcile",
        "examples/stacks",
        "--dry-run",
        "--observed",
        path,
        "--output",
        "json",
    ]);
    let plan: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(plan["in_sync"], false);
    assert_eq!(plan["actions"].as_array().unwrap().len(), 23);
    assert_eq!(plan["actions"][0]["kind"], "volume");
}

#[test]
fn dry_run_with_an_unreachable_host_exits_1_naming_it() {
    let observed = write_observed(
        r#"{"hosts": {"node-b": {}}, "unreachable": {"node-a": "connection refused"}}"#,
    );
    let o = drover(&[
        "reconcile",
        "examples/stacks",
        "--dry-run",
        "--observed",
        observed.path().to_str().unwrap(),
        "--detailed-exitcode",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains("error: host `node-a` could not be read: connection refused"),
        "{out}"
    );
    assert!(
        !out.contains(" node-a  "),
        "no action may touch node-a:\n{out}"
    );
}

#[test]
fn a_broken_observed_file_is_located() {
    let observed = write_observed("{\"hosts\": {\"node-a\": {\"containers\": 3}}}");
    let path = observed.path().to_str().unwrap();
    let o = drover(&[
        "reconcile",
        "examples/stacks",
        "--dry-run",
        "--observed",
        path,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with(&format!("error: {path}:1:")),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_live_dry_run_with_no_reachable_host_exits_1_naming_each() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.yaml"),
        "kind: Cluster\nhosts:\n  gone: { endpoint: 'unix:///nonexistent/docker.sock' }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("s.yaml"),
        "kind: Stack\nname: s\napps:\n  a: { image: x, host: gone }\n",
    )
    .unwrap();
    let o = drover(&["reconcile", dir.path().to_str().unwrap(), "--dry-run"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains("error: host `gone` could not be read: host `gone` cannot be reached"),
        "{out}"
    );
    assert!(!out.contains("+ create"), "{out}");
}

#[test]
fn graph_draws_dot_and_mermaid() {
    let dot = drover(&["graph", "examples/stacks"]);
    assert!(dot.status.success());
    insta::assert_snapshot!("graph_dot", stdout(&dot));
    let mermaid = drover(&["graph", "examples/stacks", "--format", "mermaid"]);
    assert!(mermaid.status.success());
    insta::assert_snapshot!("graph_mermaid", stdout(&mermaid));
}

/// The properties a schema object names, sorted.
fn props(v: &serde_json::Value) -> Vec<String> {
    let mut keys: Vec<String> = v["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

fn sorted(l: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = l.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// The schema describes exactly the fields the loader accepts.
#[test]
fn schema_fields_match_the_loader() {
    use drover::load::decode::*;
    let schema: serde_json::Value =
        serde_json::from_str(&drover::load::schema::manifest_schema()).unwrap();
    let defs = &schema["$defs"];
    assert_eq!(props(&schema["oneOf"][0]), sorted(CLUSTER_FIELDS));
    assert_eq!(props(&schema["oneOf"][1]), sorted(STACK_FIELDS));
    assert_eq!(props(&defs["Host"]), sorted(HOST_FIELDS));
    assert_eq!(props(&defs["Tls"]), sorted(TLS_FIELDS));
    assert_eq!(props(&defs["Volume"]), sorted(VOLUME_FIELDS));
    let app: Vec<&str> = APP_FIELDS.iter().chain(OPTION_FIELDS).copied().collect();
    assert_eq!(props(&defs["App"]), sorted(&app));
    assert_eq!(props(&defs["Healthcheck"]), sorted(HEALTHCHECK_FIELDS));
    assert_eq!(props(&defs["DependsOnEntry"]), sorted(DEPENDS_ON_FIELDS));
}

#[test]
fn text_plans_are_coloured_only_when_asked() {
    let d = drover::desired::render(
        &drover::load::load(
            &repo().join("examples/stacks"),
            &std::collections::BTreeMap::new(),
        )
        .unwrap(),
    );
    let observed: drover::observed::Observed =
        serde_json::from_str(r#"{"hosts": {"node-a": {}, "node-b": {}}}"#).unwrap();
    let p = drover::plan::plan(&d, &observed, drover::plan::Options::default());
    assert!(drover::output::plan_text(&p, true).contains("\x1b[32m"));
    assert!(!drover::output::plan_text(&p, false).contains('\x1b'));
    // Piped output (as here) is never coloured.
    let empty = write_observed(r#"{"hosts": {"node-a": {}, "node-b": {}}}"#);
    let o = drover(&[
        "reconcile",
        "examples/stacks",
        "--dry-run",
        "--observed",
        empty.path().to_str().unwrap(),
    ]);
    assert!(!stdout(&o).contains('\x1b'));
}

/// On a machine with no `sudo` the root-only scripts say to run them as
/// root; they never fail on a missing `sudo`. Runs as an unprivileged
/// user, so it needs root to start (as CI runs).
#[test]
fn the_scripts_say_to_run_as_root_where_there_is_no_sudo() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("not root: cannot run the scripts as another user");
        return;
    }
    // A PATH with the shell's tools and no sudo.
    let bin = tempfile::tempdir().unwrap();
    for tool in ["bash", "id", "dirname", "basename"] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap();
        std::os::unix::fs::symlink(found, bin.path().join(tool)).unwrap();
    }
    for script in ["scripts/demo.sh", "scripts/test-hosts.sh", "bench/soak.sh"] {
        let o = Command::new("/usr/bin/setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "bash"])
            .arg(repo().join(script))
            .arg("up")
            .env_clear()
            .env("PATH", bin.path())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{script}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("needs root; run it as root (sudo is not installed)"),
            "{script}: {}",
            stderr(&o)
        );
    }
}

/// The Compose schema describes exactly the fields the loader takes from a
/// Compose file, and allows `x-` fields.
#[test]
fn compose_schema_fields_match_the_loader() {
    use drover::load::decode::{OPTION_FIELDS, SERVICE_FIELDS};
    let schema: serde_json::Value =
        serde_json::from_str(&drover::load::schema::compose_schema()).unwrap();
    let top: Vec<&str> = drover::load::compose::TOP_FIELDS
        .iter()
        .copied()
        .filter(|f| *f != "include") // refused with a located error
        .collect();
    assert_eq!(props(&schema), sorted(&top));
    let service: Vec<&str> = SERVICE_FIELDS
        .iter()
        .chain(OPTION_FIELDS)
        .copied()
        .collect();
    let defs = &schema["$defs"];
    assert_eq!(props(&defs["Service"]), sorted(&service));
    assert_eq!(
        defs["Service"]["patternProperties"]["^x-"],
        serde_json::json!({})
    );
    assert_eq!(defs["Service"]["additionalProperties"], false);
}
