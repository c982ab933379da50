#!/usr/bin/env bash
# Fuzzes the manifest loader, validator and planner with cargo-fuzz
# (libFuzzer) for SECONDS (default 600), seeded from the examples and the
# invalid fixtures. A crash is copied to tests/fixtures/fuzz/, where the
# `fuzz_regressions` test replays it on every test run.
#
#   scripts/fuzz.sh [SECONDS]
#
# Needs a nightly toolchain (`rustup toolchain install nightly`); installs
# cargo-fuzz when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

corpus=fuzz/corpus/manifests
mkdir -p "$corpus" tests/fixtures/fuzz

# One seed per directory: its files packed as drover::fuzzing reads them.
pack() { # DIR OUT
    local dir=$1 out=$2 first=1
    : >"$out"
    while IFS= read -r f; do
        [ $first = 1 ] || printf '\n#%%%%\n' >>"$out"
        first=0
        printf '#file: %s\n' "${f#"$dir"/}" >>"$out"
        cat "$f" >>"$out"
    done < <(find "$dir" -type f \( -name '*.yaml' -o -name '*.yml' -o -name '*.env' \) | sort)
}
pack examples/stacks "$corpus/seed-examples"
for f in examples/stacks/*.yaml; do
    pack_one="$corpus/seed-example-$(basename "$f" .yaml)"
    { printf '#file: cluster.yaml\n'; cat examples/stacks/cluster.yaml;
      printf '\n#%%%%\n#file: secrets/wordpress.env\n'; cat examples/stacks/secrets/wordpress.env;
      printf '\n#%%%%\n#file: %s\n' "$(basename "$f")"; cat "$f"; } >"$pack_one"
done
for d in tests/fixtures/invalid/*/; do
    pack "${d%/}" "$corpus/seed-invalid-$(basename "$d")"
done
cp tests/fixtures/fuzz/* "$corpus/" 2>/dev/null || true

dir=$(mktemp -d /dev/shm/drover-fuzz.XXXXXX)
trap 'rm -rf "$dir"' EXIT
status=0
# Leak checks are off: the loader's parser threads leave glibc's 32-byte
# thread-exit record, which LeakSanitizer reports as a leak at every
# thread. Memory over time is the soak benchmark's to watch.
DROVER_FUZZ_DIR=$dir cargo +nightly fuzz run manifests "$corpus" -- \
    -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
    -detect_leaks=0 -print_final_stats=1 || status=$?

# New findings only: an artifact is moved, so a later run does not keep it
# again under its old name.
for crash in fuzz/artifacts/manifests/*; do
    [ -f "$crash" ] || continue
    mv "$crash" tests/fixtures/fuzz/
    echo "kept $(basename "$crash") in tests/fixtures/fuzz/ (rename it after what it shows)"
done
exit $status
