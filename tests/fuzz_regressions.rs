//! Inputs the fuzzer (`scripts/fuzz.sh`) once broke drover with, replayed
//! through the same checks (`drover::fuzzing::check`): no panic, every error
//! located in a file that exists, no secret shown, a valid directory planned
//! to convergence.

use std::path::PathBuf;

#[test]
fn every_input_the_fuzzer_kept_passes_the_fuzzers_checks() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/fuzz");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let input = std::fs::read(&path).unwrap();
        let work = tempfile::tempdir().unwrap();
        eprintln!("{}", path.display());
        drover::fuzzing::check(&input, &work.path().join("m"));
        n += 1;
    }
    assert!(n > 0, "no inputs in {}", dir.display());
}
