//! Times the helper's own steps over a folder, without Docker: a scan with
//! hashes, a pack of every file, and an unpack of that stream into an empty
//! folder. `cargo run --release --example helper_files -- SRC DST`.

use std::io::BufRead;
use std::path::Path;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (src, dst) = (Path::new(&args[1]), Path::new(&args[2]));
    let state = tempfile_dir();
    let t = Instant::now();
    let mut listing = Vec::new();
    drover::helper::scan_out(src, &state.join("src.json"), true, false, &mut listing).unwrap();
    let scan = t.elapsed();
    let paths: Vec<u8> = listing
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .filter_map(|v| v.get("path").and_then(|p| p.as_str()).map(str::to_string))
        .flat_map(|p| (p + "\n").into_bytes())
        .collect();
    let files = paths.iter().filter(|b| **b == b'\n').count();
    let t = Instant::now();
    let mut stream = Vec::new();
    drover::helper::pack(src, &state.join("pack.json"), &paths[..], &mut stream).unwrap();
    let pack = t.elapsed();
    std::fs::create_dir_all(dst).unwrap();
    let t = Instant::now();
    let mut out = Vec::new();
    drover::helper::unpack(dst, &state.join("dst.json"), &stream[..], &mut out).unwrap();
    let unpack = t.elapsed();
    let rate = |d: std::time::Duration| files as f64 / d.as_secs_f64();
    println!("{files} entries, {} MiB stream", stream.len() >> 20);
    println!(
        "scan --hash {:>8.3} s {:>9.0} entries/s",
        scan.as_secs_f64(),
        rate(scan)
    );
    println!(
        "pack        {:>8.3} s {:>9.0} entries/s",
        pack.as_secs_f64(),
        rate(pack)
    );
    println!(
        "unpack      {:>8.3} s {:>9.0} entries/s",
        unpack.as_secs_f64(),
        rate(unpack)
    );
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("drover-helper-files-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
