//! `drover diff --base REF`: the manifests of a real Git repository, made
//! and committed with the `git` command line, compared with no host and no
//! network: several commits, a renamed file, an app that changes host (so
//! its volume moves), a changed secret (named, never shown), and the
//! versioned JSON checked against its committed schema.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::git::git;

fn diff(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("diff")
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        // No host may be asked: every endpoint is unreachable.
        .env("DOCKER_HOST", "tcp://192.0.2.1:9")
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const CLUSTER: &str = "kind: Cluster
hosts:
  node-a: { endpoint: 'tcp://192.0.2.11:2375' }
  node-b: { endpoint: 'tcp://192.0.2.12:2375' }
";

const SHOP: &str = "kind: Stack
name: shop
volumes:
  pgdata: {}
apps:
  db:
    image: postgres:16
    host: node-a
    env_file: [db.env]
    volumes: [\"pgdata:/var/lib/postgresql/data\"]
  web:
    image: nginx:1.27
    host: node-b
    depends_on: [db]
";

/// A repository with the manifests under `clusters/prod/`, three commits.
fn repository() -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path();
    let m = root.join("clusters/prod");
    std::fs::create_dir_all(&m).unwrap();
    git(root, &["init", "-q", "-b", "main"]);
    std::fs::write(m.join("cluster.yaml"), CLUSTER).unwrap();
    std::fs::write(m.join("shop.yaml"), SHOP).unwrap();
    std::fs::write(m.join("db.env"), "POSTGRES_PASSWORD=CANARY-SECRET-1\n").unwrap();
    git(root, &["add", "-A"]);
    git(root, &["commit", "-qm", "shop"]);
    // Second: a renamed file, nothing else.
    git(
        root,
        &["mv", "clusters/prod/shop.yaml", "clusters/prod/apps.yaml"],
    );
    git(root, &["commit", "-qm", "rename"]);
    // Third: another stack.
    std::fs::write(
        m.join("tools.yaml"),
        "kind: Stack\nname: tools\napps:\n  cron:\n    image: busybox\n    host: node-a\n",
    )
    .unwrap();
    git(root, &["add", "-A"]);
    git(root, &["commit", "-qm", "tools"]);
    repo
}

#[test]
fn diff_compares_the_working_tree_with_a_revision_and_never_shows_a_secret() {
    let repo = repository();
    let m = repo.path().join("clusters/prod");

    // The rename changed nothing; the third commit added a stack.
    let o = diff(&m, &["--base", "HEAD~1", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(out(&o).contains("+ stack tools"), "{}", out(&o));
    assert!(
        out(&o).contains("+ app tools/cron on node-a"),
        "{}",
        out(&o)
    );
    let o = diff(&m, &["--base", "HEAD", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        out(&o).starts_with("No changes against HEAD ("),
        "{}",
        out(&o)
    );
    // From the repository's root folder too, a folder deeper down.
    let o = diff(&m, &["--base", "HEAD~2", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2));

    // The working tree: the database moves, web's image and the secret
    // change, tools is gone.
    let apps = std::fs::read_to_string(m.join("apps.yaml")).unwrap();
    std::fs::write(
        m.join("apps.yaml"),
        apps.replacen("host: node-a", "host: node-b", 1)
            .replace("nginx:1.27", "nginx:1.28"),
    )
    .unwrap();
    std::fs::write(m.join("db.env"), "POSTGRES_PASSWORD=CANARY-SECRET-2\n").unwrap();
    std::fs::remove_file(m.join("tools.yaml")).unwrap();

    let o = diff(&m, &["--base", "main"]);
    assert!(o.status.success());
    let text = out(&o);
    for line in [
        "- stack tools",
        "~ app shop/db: moves from node-a to node-b: a secret value changed (environment `POSTGRES_PASSWORD`)",
        "~ app shop/web on node-b: image `nginx:1.27` → `nginx:1.28`",
        "- app tools/cron from node-a",
        "⇒ volume shop/pgdata: its data moves from node-a to node-b",
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }

    let md = out(&diff(&m, &["--base", "main", "--output", "markdown"]));
    assert!(
        md.starts_with("### 📋 drover diff against `main` ("),
        "{md}"
    );
    assert!(
        md.contains("**Data that moves**\n\n- 🚚 volume `shop/pgdata`: its data moves from `node-a` to `node-b`"),
        "{md}"
    );

    let json = out(&diff(&m, &["--base", "main", "--output", "json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["base"], "main");
    assert_eq!(v["base_commit"].as_str().map(str::len), Some(40));
    let moved = v["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["volume"] == "pgdata")
        .unwrap();
    assert_eq!(
        (&moved["from_host"], &moved["host"]),
        (&"node-a".into(), &"node-b".into())
    );
    let schema: serde_json::Value =
        serde_json::from_str(&drover::load::schema::diff_schema()).unwrap();
    for key in v.as_object().unwrap().keys() {
        assert!(
            schema["properties"].get(key).is_some(),
            "`{key}` is not in the schema"
        );
    }

    for shown in [&text, &md, &json] {
        assert!(
            !shown.contains("CANARY-SECRET"),
            "a secret leaked:\n{shown}"
        );
    }
}

#[test]
fn diff_says_what_is_wrong_with_a_revision_or_a_folder() {
    let repo = repository();
    let m = repo.path().join("clusters/prod");
    let o = diff(&m, &["--base", "no-such-branch"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("`no-such-branch` names no revision"), "{err}");

    // A base whose manifests are invalid is named as `REF:path`.
    std::fs::write(
        m.join("bad.yaml"),
        "kind: Stack\nname: bad\napps:\n  x: { imgae: a }\n",
    )
    .unwrap();
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-qm", "bad"]);
    std::fs::remove_file(m.join("bad.yaml")).unwrap();
    let o = diff(&m, &["--base", "HEAD"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("HEAD:clusters/prod/bad.yaml:4:8"), "{err}");

    // Outside any repository.
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(elsewhere.path().join("cluster.yaml"), CLUSTER).unwrap();
    let o = diff(elsewhere.path(), &["--base", "HEAD"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is not in a Git repository"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
