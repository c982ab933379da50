//! The manifest loader, validator and planner on arbitrary directories:
//! see `drover::fuzzing` for the input format and what is checked.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::var_os("DROVER_FUZZ_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        base.join(format!("drover-fuzz-{}", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    drover::fuzzing::check(data, dir());
});
