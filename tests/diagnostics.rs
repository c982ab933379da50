//! What users see when their manifests are wrong.
//!
//! Every directory under `tests/fixtures/invalid/` is a small manifest
//! directory with one kind of mistake (or, for `several-errors-at-once`,
//! many). Each is loaded and its rendered diagnostics are compared with a
//! snapshot under `tests/snapshots/`, so a change to a message, a line or a
//! column shows up in review. A few fixtures need something Git keeps badly
//! (a symlink leading outside, bytes that are not UTF-8); those are copied
//! into a temporary directory and finished there before loading.
//!
//! The property test at the end mutates the valid examples of
//! `examples/stacks/` at random and checks that loading never panics and
//! that every diagnostic points at a real place.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use drover::diag::Diagnostics;
use drover::load::{load, LoadError};
use proptest::prelude::*;
use proptest::sample::Index;

/// The canary behind `${SECRET_VAR}` in the `secret-values-are-never-shown`
/// fixture; its env file holds the other one.
const SECRET_VAR_CANARY: &str = "CANARY-SECRET-5678";
const ENV_FILE_CANARY: &str = "CANARY-SECRET-1234";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the controller crate sits in the repository")
        .to_path_buf()
}

fn fixtures_dir() -> PathBuf {
    repo_root().join("tests/fixtures/invalid")
}

/// The controller's environment for every fixture: `${SECRET_VAR}` is set,
/// nothing else is.
fn fixture_env() -> BTreeMap<String, String> {
    BTreeMap::from([("SECRET_VAR".to_string(), SECRET_VAR_CANARY.to_string())])
}

/// Copies a directory tree (regular files and directories only).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A fixture directory ready to load: either the committed directory, or a
/// copy in a temporary directory finished by a setup step.
struct Prepared {
    /// The directory that holds the case directory; stripped from output.
    base: PathBuf,
    case_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

type Setup = fn(base: &Path, case_dir: &Path);

fn prepare(case: &str, setup: Option<Setup>) -> Prepared {
    let committed = fixtures_dir().join(case);
    assert!(
        committed.is_dir(),
        "missing fixture directory {}",
        committed.display()
    );
    match setup {
        None => Prepared {
            base: fixtures_dir(),
            case_dir: committed,
            _temp: None,
        },
        Some(setup) => {
            let temp = tempfile::tempdir().unwrap();
            let base = temp.path().to_path_buf();
            let case_dir = base.join(case);
            copy_tree(&committed, &case_dir);
            setup(&base, &case_dir);
            Prepared {
                base,
                case_dir,
                _temp: Some(temp),
            }
        }
    }
}

/// Loads a fixture that must be invalid and returns its diagnostics, after
/// checking what every diagnostic must have: a place in a file that exists
/// under the directory, 1-based, and a message in lower case.
fn load_invalid(prepared: &Prepared) -> Diagnostics {
    let diags = match load(&prepared.case_dir, &fixture_env()) {
        Ok(_) => panic!("{} loaded without errors", prepared.case_dir.display()),
        Err(LoadError::Dir { path, reason }) => panic!("cannot read {path}: {reason}"),
        Err(LoadError::Invalid(d)) => d,
    };
    assert!(!diags.0.is_empty());
    for d in &diags.0 {
        let file = Path::new(&*d.loc.file);
        assert!(
            file.starts_with(&prepared.case_dir),
            "{d} names a file outside the fixture"
        );
        assert!(file.exists(), "{d} names a file that does not exist");
        assert!(
            d.loc.pos.line >= 1 && d.loc.pos.col >= 1,
            "{d} is not 1-based"
        );
        assert!(
            !d.message.starts_with(|c: char| c.is_uppercase()),
            "{d}: messages start in lower case"
        );
    }
    diags
}

/// The text users see, with the machine-specific prefix of every path
/// removed so that paths read `case/file.yaml`.
fn rendered(prepared: &Prepared, diags: &Diagnostics) -> String {
    let prefix = format!("{}/", prepared.base.display());
    diags.render(false).replace(&prefix, "")
}

fn check_fixture(case: &str, setup: Option<Setup>) {
    let prepared = prepare(case, setup);
    let diags = load_invalid(&prepared);
    let text = rendered(&prepared, &diags);
    for d in &diags.0 {
        let shown = format!(
            "{}:{}:{}: error: ",
            &d.loc.file, d.loc.pos.line, d.loc.pos.col
        );
        assert!(
            diags.render(false).contains(&shown),
            "the report shows no `{shown}`"
        );
    }
    insta::assert_snapshot!(case, text);
}

/// One test per fixture, named as a sentence, plus the list of every case
/// so that a fixture directory without a test is noticed.
macro_rules! fixture_tests {
    ($($test:ident: $case:literal $(=> $setup:expr)?;)*) => {
        const CASES: &[&str] = &[$($case),*];
        $(
            #[test]
            fn $test() {
                let setup: Option<Setup> = None $(.or(Some($setup as Setup)))?;
                check_fixture($case, setup);
            }
        )*
    };
}

fixture_tests! {
    a_yaml_syntax_error_points_at_the_offending_colon: "yaml-syntax-error";
    an_unclosed_flow_sequence_is_a_located_yaml_error: "unclosed-flow-sequence";
    ports_given_as_a_mapping_are_a_type_error_at_the_value: "ports-given-as-a-mapping";
    an_unknown_field_points_at_the_key_and_suggests_the_near_miss: "unknown-field-near-miss";
    an_unknown_kind_points_at_the_kind_and_suggests_the_near_miss: "unknown-kind";
    a_document_without_kind_is_an_error: "missing-kind";
    an_unknown_host_points_at_the_host_and_suggests_the_near_miss: "unknown-host";
    an_undeclared_volume_points_at_the_mount: "undeclared-volume";
    a_dependency_cycle_across_three_apps_names_the_whole_cycle: "dependency-cycle";
    an_app_that_depends_on_itself_is_a_cycle: "self-dependency";
    a_volume_mounted_by_apps_on_two_hosts_is_an_error: "volume-on-two-hosts";
    a_host_port_published_twice_on_one_host_across_stacks_is_an_error: "duplicate-host-port";
    a_name_with_capitals_and_underscores_is_refused_with_a_fix: "bad-name";
    a_cross_host_link_to_an_app_without_ports_is_an_error: "cross-host-link-without-port";
    a_stack_name_used_in_two_files_is_an_error: "duplicate-stack-name";
    an_env_file_escaping_through_dotdot_is_refused: "env-file-escapes-with-dotdot";
    an_env_file_symlink_leading_outside_is_refused: "env-file-symlink-outside" => link_env_file_outside;
    an_unset_variable_without_default_is_named: "unset-variable";
    a_second_cluster_document_is_an_error_naming_the_first: "two-cluster-documents";
    a_duplicate_key_points_at_the_second_key: "duplicate-key";
    a_bad_duration_points_at_the_value: "bad-duration";
    a_zero_or_malformed_max_downtime_points_at_the_value: "bad-max-downtime";
    bad_port_strings_point_at_each_value: "bad-port-string";
    an_app_without_host_is_an_error_when_a_cluster_exists: "app-without-host";
    several_errors_in_two_files_are_reported_at_once: "several-errors-at-once";
    a_file_that_is_not_utf8_points_at_the_first_bad_byte: "non-utf8-file" => write_latin1_manifest;
    errors_about_secret_values_do_not_show_them: "secret-values-are-never-shown";
    compose_fields_in_a_drover_stack_are_named_never_taken_for_others: "compose-fields-in-a-drover-stack";
    a_host_path_mount_is_refused: "host-path-mount";
    an_empty_value_points_at_its_key: "empty-values";
    two_stacks_whose_names_join_to_the_same_object_name_are_an_error: "object-name-clash";
    a_stack_name_that_would_name_drovers_own_objects_is_refused: "reserved-stack-name";
    repositories_and_backups_are_checked_where_written: "bad-repository";
}

/// `secrets/mysql.env` becomes an absolute symlink to a file outside the
/// manifest directory.
fn link_env_file_outside(base: &Path, case_dir: &Path) {
    let outside = base.join("outside.env");
    fs::write(&outside, "MYSQL_ROOT_PASSWORD=from-outside\n").unwrap();
    fs::create_dir_all(case_dir.join("secrets")).unwrap();
    std::os::unix::fs::symlink(&outside, case_dir.join("secrets/mysql.env")).unwrap();
}

/// A manifest saved as Latin-1: the `é` of `café` is the single byte 0xE9.
fn write_latin1_manifest(_base: &Path, case_dir: &Path) {
    let mut bytes = b"kind: Stack\nname: cafe\napps:\n  menu:\n    image: nginx:1.27\n    host: node-b\n    labels:\n      title: Caf"
        .to_vec();
    bytes.push(0xE9);
    bytes.extend_from_slice(b" du coin\n");
    fs::write(case_dir.join("cafe.yaml"), bytes).unwrap();
}

#[test]
fn every_fixture_directory_has_a_test() {
    let mut on_disk: Vec<String> = fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut tested: Vec<String> = CASES.iter().map(|c| c.to_string()).collect();
    tested.sort();
    assert_eq!(on_disk, tested);
}

#[test]
fn secret_values_never_appear_in_any_form_of_the_report() {
    let prepared = prepare("secret-values-are-never-shown", None);
    let diags = load_invalid(&prepared);
    let forms = [
        diags.render(false),
        diags.render(true),
        diags.to_string(),
        format!("{diags:?}"),
    ];
    for form in forms {
        assert!(
            !form.contains(SECRET_VAR_CANARY),
            "interpolated secret shown:\n{form}"
        );
        assert!(
            !form.contains(ENV_FILE_CANARY),
            "env file secret shown:\n{form}"
        );
    }
    // The errors are still there, located: the broken env file line, and
    // every field whose interpolated value is wrong.
    let text = rendered(&prepared, &diags);
    assert!(text.contains("secret-values-are-never-shown/secrets/api.env:3:1: error:"));
    for line in 8..=11 {
        assert!(
            text.contains(&format!("secret-values-are-never-shown/api.yaml:{line}:")),
            "no error on line {line}:\n{text}"
        );
    }
}

#[test]
fn all_errors_of_a_directory_are_reported_in_one_run() {
    let prepared = prepare("several-errors-at-once", None);
    let diags = load_invalid(&prepared);
    let files: std::collections::BTreeSet<&str> = diags.0.iter().map(|d| &*d.loc.file).collect();
    assert_eq!(
        files.len(),
        2,
        "errors in both files:\n{}",
        diags.render(false)
    );
    assert!(
        diags.0.len() >= 8,
        "every error, not the first:\n{}",
        diags.render(false)
    );
    assert!(diags.render(false).ends_with(&format!(
        "{} errors in the manifests; nothing was changed\n",
        diags.0.len()
    )));
}

// ---------------------------------------------------------------------------
// Robustness: random damage to valid manifests never panics the loader, and
// every diagnostic points at a real place.

fn examples_dir() -> PathBuf {
    repo_root().join("examples/stacks")
}

/// Every file of `examples/stacks/`, relative to it, sorted.
fn example_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let rel = rel.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                walk(&entry.path(), &rel, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(&examples_dir(), Path::new(""), &mut out);
    out.sort();
    out
}

/// Lines as YAML counts them: ended by `\r\n`, `\r` or `\n`.
fn yaml_lines(text: &str) -> Vec<&str> {
    text.split('\n')
        .flat_map(|l| l.strip_suffix('\r').unwrap_or(l).split('\r'))
        .collect()
}

const YAML_PUNCTUATION: &[&str] = &[
    ":", "[", "]", "{", "}", "-", "&", "*", "!", "|", ">", "'", "\"", "#", ",", "?", "%", "@", "`",
    "---", "...", ": ", "- ", "&a ", "*a", "!!str ", "${", "$", "\t", "\n", "\r\n", "  ",
];

#[derive(Debug, Clone)]
enum Mutation {
    DeleteRange { at: Index, len: usize },
    Insert { at: Index, text: String },
    DuplicateLine { line: Index },
    SwapLines { a: Index, b: Index },
    Indent { line: Index, spaces: usize },
    Dedent { line: Index, spaces: usize },
}

fn inserted_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(YAML_PUNCTUATION).prop_map(str::to_string),
        prop::collection::vec(prop::char::range(' ', '~'), 1..6)
            .prop_map(|c| c.into_iter().collect()),
        prop::collection::vec(any::<char>(), 1..4).prop_map(|c| c.into_iter().collect()),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1usize..40).prop_map(|(at, len)| Mutation::DeleteRange { at, len }),
        (any::<Index>(), inserted_text()).prop_map(|(at, text)| Mutation::Insert { at, text }),
        any::<Index>().prop_map(|line| Mutation::DuplicateLine { line }),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
        (any::<Index>(), 1usize..5).prop_map(|(line, spaces)| Mutation::Indent { line, spaces }),
        (any::<Index>(), 1usize..5).prop_map(|(line, spaces)| Mutation::Dedent { line, spaces }),
    ]
}

/// Applies a mutation to raw bytes: a deletion may split a UTF-8 character,
/// which exercises the encoding check too.
fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    fn split_lines(bytes: &[u8]) -> Vec<Vec<u8>> {
        bytes
            .split_inclusive(|b| *b == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    }
    match m {
        Mutation::DeleteRange { at, len } => {
            if !bytes.is_empty() {
                let start = at.index(bytes.len());
                let end = (start + len).min(bytes.len());
                bytes.drain(start..end);
            }
        }
        Mutation::Insert { at, text } => {
            let pos = at.index(bytes.len() + 1);
            bytes.splice(pos..pos, text.bytes());
        }
        Mutation::DuplicateLine { line } => {
            let mut lines = split_lines(bytes);
            if !lines.is_empty() {
                let i = line.index(lines.len());
                let copy = lines[i].clone();
                lines.insert(i, copy);
                *bytes = lines.concat();
            }
        }
        Mutation::SwapLines { a, b } => {
            let mut lines = split_lines(bytes);
            if !lines.is_empty() {
                let (a, b) = (a.index(lines.len()), b.index(lines.len()));
                lines.swap(a, b);
                *bytes = lines.concat();
            }
        }
        Mutation::Indent { line, spaces } => {
            let mut lines = split_lines(bytes);
            if !lines.is_empty() {
                let i = line.index(lines.len());
                lines[i].splice(0..0, std::iter::repeat_n(b' ', *spaces));
                *bytes = lines.concat();
            }
        }
        Mutation::Dedent { line, spaces } => {
            let mut lines = split_lines(bytes);
            if !lines.is_empty() {
                let i = line.index(lines.len());
                let n = lines[i]
                    .iter()
                    .take(*spaces)
                    .take_while(|b| **b == b' ')
                    .count();
                lines[i].drain(..n);
                *bytes = lines.concat();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn damaged_examples_never_panic_and_every_diagnostic_points_at_a_real_place(
        file in any::<Index>(),
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let files = example_files();
        let rel = &files[file.index(files.len())];
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("stacks");
        copy_tree(&examples_dir(), &dir);
        let mut bytes = fs::read(dir.join(rel)).unwrap();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        fs::write(dir.join(rel), &bytes).unwrap();

        match load(&dir, &BTreeMap::<String, String>::new()) {
            Ok(_) => {}
            Err(LoadError::Dir { path, reason }) => {
                prop_assert!(false, "cannot read {path}: {reason}");
            }
            Err(LoadError::Invalid(diags)) => {
                prop_assert!(!diags.0.is_empty());
                for d in &diags.0 {
                    let file = Path::new(&*d.loc.file);
                    prop_assert!(file.starts_with(&dir), "{d} names a file outside the directory");
                    prop_assert!(file.exists(), "{d} names a file that does not exist");
                    prop_assert!(d.loc.pos.line >= 1, "{d} has line 0");
                    prop_assert!(d.loc.pos.col >= 1, "{d} has column 0");
                    // Where the file can be read, the place is in its text:
                    // on a line that was written, at most just after its end.
                    if let Ok(text) = fs::read_to_string(file) {
                        let lines = yaml_lines(text.trim_end());
                        let line = lines.get(d.loc.pos.line as usize - 1);
                        prop_assert!(line.is_some(), "{d} is past the last line");
                        let len = line.map_or(0, |l| l.chars().count());
                        prop_assert!(
                            d.loc.pos.col as usize <= len + 1,
                            "{d} is past the end of its line"
                        );
                    }
                }
                // Rendering never panics either, with or without colour.
                let _ = diags.render(false);
                let _ = diags.render(true);
            }
        }
    }
}
