//! Hostile manifest directories: each is rejected with a located error,
//! within a memory limit (the process runs under `prlimit --as`), and
//! nothing is read outside the directory or waited on for ever. How long
//! each took is printed, never asserted (this machine is noisy).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Address space drover gets for one `validate`: far above what a 4 MiB
/// manifest needs, far below what an unbounded expansion would take.
const MEMORY_LIMIT: &str = "1073741824"; // 1 GiB

/// `drover validate DIR` under the memory limit, killed if it runs past
/// `timeout` (a hang is a failure, not a slow run): exit code and stderr.
fn validate(dir: &Path, what: &str) -> (Option<i32>, String) {
    let start = Instant::now();
    let child = Command::new("prlimit")
        .arg(format!("--as={MEMORY_LIMIT}"))
        .arg(env!("CARGO_BIN_EXE_drover"))
        .arg("validate")
        .arg(dir)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("prlimit (util-linux) runs");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let timeout = Duration::from_secs(120);
    let Ok(o) = rx.recv_timeout(timeout) else {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        panic!("{what}: still running after {timeout:?}");
    };
    let o = o.unwrap();
    assert!(
        o.stderr.len() < 64 << 10,
        "{what}: {} bytes of errors for one problem",
        o.stderr.len()
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    eprintln!(
        "{what}: exit {:?} in {:?}\n{}",
        o.status.code(),
        start.elapsed(),
        err.lines().next().unwrap_or("")
    );
    (o.status.code(), err)
}

fn dir_with(files: &[(&str, Vec<u8>)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, body) in files {
        let path = d.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, body).unwrap();
    }
    d
}

fn rejected(dir: &Path, what: &str, file: &str, message: &str) {
    let (code, err) = validate(dir, what);
    assert_eq!(
        code,
        Some(1),
        "{what}: exit 1 for an invalid directory\n{err}"
    );
    // `file` is `name.yaml:LINE:` or `name.yaml:LINE:COL` or `name.yaml:`.
    let located = err.lines().any(|l| {
        l.split_once(": error: ").is_some_and(|(at, _)| {
            at.ends_with(file.trim_end_matches(':')) || at.contains(&format!("/{file}"))
        }) && l.contains(message)
    });
    assert!(
        located,
        "{what}: `{file}…: error: … {message}` expected\n{err}"
    );
    assert!(!err.contains("panicked"), "{what}: {err}");
}

const STACK_HEAD: &str = "kind: Stack\nname: s\napps:\n  a:\n    image: busybox\n";

#[test]
fn a_huge_file_is_refused_before_it_is_read_whole() {
    let mut body = STACK_HEAD.as_bytes().to_vec();
    body.extend(std::iter::repeat_n(b'#', 64 << 20));
    let d = dir_with(&[("huge.yaml", body)]);
    rejected(
        d.path(),
        "64 MiB file",
        "huge.yaml:1:1",
        "manifest is larger than 4 MiB",
    );
}

#[test]
fn deep_nesting_is_refused() {
    let mut body = b"kind: Stack\nname: s\nx: ".to_vec();
    body.extend(std::iter::repeat_n(b'[', 1_000_000));
    let d = dir_with(&[("deep.yaml", body)]);
    rejected(
        d.path(),
        "a million `[`",
        "deep.yaml:3:",
        "nesting deeper than 64 levels",
    );

    let mut body = b"kind: Stack\nname: s\nx:\n".to_vec();
    body.extend("- ".repeat(1_000_000).as_bytes());
    let d = dir_with(&[("dashes.yaml", body)]);
    rejected(
        d.path(),
        "a million `- `",
        "dashes.yaml:4:",
        "nesting deeper than 64 levels",
    );

    let mut body = b"kind: Stack\nname: s\n".to_vec();
    for i in 0..10_000 {
        body.extend(format!("{}k{i}:\n", " ".repeat(i % 2000)).as_bytes());
    }
    let d = dir_with(&[("indent.yaml", body)]);
    let (code, err) = validate(d.path(), "10,000 indented keys");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("indent.yaml:"), "{err}");
}

#[test]
fn billion_laughs_is_refused() {
    let mut body = String::from(
        "kind: Stack\nname: s\nx0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..12 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        body.push_str(&format!("x{i}: &a{i} [{refs}]\n"));
    }
    let d = dir_with(&[("lol.yaml", body.into_bytes())]);
    rejected(d.path(), "10^12 nodes by alias", "lol.yaml:", "aliases");
}

#[test]
fn thousands_of_documents_are_bounded() {
    // Many small stacks in one file are read (each is checked).
    let mut body = String::new();
    for i in 0..5_000 {
        body.push_str(&format!("---\nkind: Stack\nname: s{i}\n"));
    }
    let d = dir_with(&[("many.yaml", body.into_bytes())]);
    let (code, err) = validate(d.path(), "5,000 stacks in one file");
    assert_eq!(code, Some(0), "{err}");
    // More documents than a file may hold: refused at the first one over.
    let body = "---\n".repeat(200_000);
    let d = dir_with(&[("empty.yaml", body.into_bytes())]);
    rejected(
        d.path(),
        "200,000 empty documents",
        "empty.yaml:",
        "documents",
    );
}

#[test]
fn non_utf8_bytes_are_located() {
    let mut body = STACK_HEAD.as_bytes().to_vec();
    body.extend(b"    command: ['caf\xe9']\n");
    let d = dir_with(&[("latin1.yaml", body)]);
    rejected(
        d.path(),
        "a Latin-1 byte",
        "latin1.yaml:6:",
        "not valid UTF-8",
    );
}

#[test]
fn nothing_outside_the_directory_is_read() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(
        outside.path().join("secret.yaml"),
        "kind: Stack\nname: stolen\n",
    )
    .unwrap();
    fs::write(outside.path().join("secret.env"), "TOKEN=stolen\n").unwrap();

    // A manifest symlink that leads out, and one to a device.
    let d = dir_with(&[]);
    std::os::unix::fs::symlink(
        outside.path().join("secret.yaml"),
        d.path().join("link.yaml"),
    )
    .unwrap();
    rejected(
        d.path(),
        "a manifest symlink out",
        "link.yaml:1:1",
        "leads outside the manifest directory",
    );
    let d = dir_with(&[]);
    std::os::unix::fs::symlink("/dev/zero", d.path().join("zero.yaml")).unwrap();
    rejected(
        d.path(),
        "a manifest symlink to /dev/zero",
        "zero.yaml:1:1",
        "leads outside the manifest directory",
    );

    // A folder of stacks that is a symlink out: refused, never skipped in
    // silence (its stacks would be removed from the hosts).
    let d = dir_with(&[]);
    std::os::unix::fs::symlink(outside.path(), d.path().join("stacks")).unwrap();
    rejected(
        d.path(),
        "a folder symlink out",
        "stacks:1:1",
        "folder is a symlink that leads outside the manifest directory",
    );
    // One that stays inside is read.
    let d = dir_with(&[]);
    fs::create_dir_all(d.path().join("real")).unwrap();
    fs::write(d.path().join("real/s.yaml"), STACK_HEAD).unwrap();
    std::os::unix::fs::symlink("real", d.path().join("linked")).unwrap();
    let (code, err) = validate(d.path(), "a folder symlink inside");
    assert_eq!(code, Some(0), "{err}");

    // env_file at /etc/shadow, through `..`, or by a symlink out.
    for (what, path) in [
        ("/etc/shadow", "/etc/shadow".to_string()),
        ("`..`", "../../../../../../etc/shadow".to_string()),
        ("a symlink", "secrets/link.env".to_string()),
    ] {
        let stack = format!("{STACK_HEAD}    env_file: ['{path}']\n");
        let d = dir_with(&[("stack.yaml", stack.into_bytes())]);
        fs::create_dir_all(d.path().join("secrets")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.env"),
            d.path().join("secrets/link.env"),
        )
        .unwrap();
        rejected(
            d.path(),
            &format!("env_file {what}"),
            "stack.yaml:6:",
            "outside",
        );
    }
}

#[test]
fn a_fifo_is_never_waited_on() {
    let mkfifo = |p: &Path| {
        let o = Command::new("mkfifo").arg(p).output().unwrap();
        assert!(o.status.success());
    };
    // A FIFO named like a manifest is not a manifest.
    let d = dir_with(&[("stack.yaml", STACK_HEAD.as_bytes().to_vec())]);
    mkfifo(&d.path().join("pipe.yaml"));
    let (code, err) = validate(d.path(), "a FIFO among the manifests");
    assert_eq!(code, Some(0), "{err}");
    // A FIFO as an env_file is refused, not read.
    let stack = format!("{STACK_HEAD}    env_file: ['pipe.env']\n");
    let d = dir_with(&[("stack.yaml", stack.into_bytes())]);
    mkfifo(&d.path().join("pipe.env"));
    rejected(
        d.path(),
        "a FIFO as env_file",
        "stack.yaml:6:",
        "not a regular file",
    );
}

#[test]
fn a_manifest_file_name_that_is_not_utf8_is_an_error_not_skipped() {
    use std::os::unix::ffi::OsStrExt;
    let d = dir_with(&[(
        "cluster.yaml",
        b"kind: Cluster\nhosts: { a: {} }\n".to_vec(),
    )]);
    let name = std::ffi::OsStr::from_bytes(b"st\xffck.yaml");
    fs::write(d.path().join(name), b"kind: Stack\nname: s\n").unwrap();
    let (code, err) = validate(d.path(), "a non-UTF-8 file name");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("manifest file name is not valid UTF-8"),
        "{err}"
    );
}
