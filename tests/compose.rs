//! Compose's meaning where drover reads what Compose reads: interpolation,
//! `.env`, healthchecks, YAML as Compose's reader takes it, and hints that
//! never turn a Compose field into a drover field of another meaning.

use std::collections::BTreeMap;
use std::path::Path;

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
            &format!("{ONE_APP}    runtime: runsc\n    platfrom: linux/amd64\n"),
        )],
        &[],
    );
    assert!(
        shown.contains("app `web` does not take Compose's field `runtime`"),
        "{shown}"
    );
    assert!(
        shown.contains("it looks like Compose's `platform`"),
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
