#!/usr/bin/env bash
# How long drover's snapshots take and how long they freeze the app, beside
# a plain copy of the same volume with `cp -a` in a throwaway container (what
# stopping the app and copying by hand costs: the whole copy is downtime).
# For each shape and size: a first snapshot, then RUNS snapshots each with
# 1 MiB changed since the one before. Cold page cache before every run.
#
#   bench/snapshot.sh                         # 256 MiB and 1 GiB, both shapes, 3 runs
#   SIZES=1024 SHAPES=small RUNS=5 bench/snapshot.sh
#   DROVER_BIN=target/release/drover bench/snapshot.sh
#
# Shapes as bench/relocate.sh: `large` (a few hundred files, most bytes in
# 1-16 MiB files) and `small` (17,842 files a GiB, most of them 4 KiB).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES:-"256 1024"}
SHAPES=${SHAPES:-"large small"}
RUNS=${RUNS:-3}
IMAGE=drover-test/busybox:1
export DROVER_LOG=${DROVER_LOG:-warn}
. bench/move-lib.sh

work=$(mktemp -d)
write_cluster "$work"
write_stack "$work" benchsnap node-a
cleanup() {
    remove_stack benchsnap
    docker -H $A volume ls -q | grep -E '^(benchsnap-|drover-(snapshot|freeze)-benchsnap-)' |
        xargs -r docker -H $A volume rm -f >/dev/null || true
}
trap 'cleanup; rm -rf "$work"' EXIT

held_ms() {
    "$DROVER_BIN" volume snapshots "$work" benchsnap/data --output json |
        python3 -c 'import json,sys; print(next(s["held_ms"] for s in json.load(sys.stdin) if s["name"] == sys.argv[1]) / 1000)' "$1"
}

printf 'drover %s; page cache dropped before every run; %s runs per figure\n\n' "$("$DROVER_BIN" --version)" "$RUNS"
printf '%-6s %6s %7s | %10s %10s %9s | %9s | %12s %12s\n' shape MiB files "first (s)" "next (s)" "froze (s)" "cp -a (s)" "next/cp -a" "froze/cp -a"
for SHAPE in $SHAPES; do
for size in $SIZES; do
    cleanup
    "$DROVER_BIN" reconcile "$work" >/dev/null 2>&1
    files=$(fill $A benchsnap-app "$size" | cut -d' ' -f1)
    sleep "${SETTLE:-10}"
    drop_caches
    t0=$(date +%s.%N)
    "$DROVER_BIN" volume snapshot "$work" benchsnap/data --name first >/dev/null
    first=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$t0" "$(date +%s.%N)")
    nexts=(); frozen=(); cps=()
    for run in $(seq 1 "$RUNS"); do
        docker -H $A exec benchsnap-app dd if=/dev/urandom of=/data/d0/change$run bs=1024 count=1024 2>/dev/null
        drop_caches
        t0=$(date +%s.%N)
        "$DROVER_BIN" volume snapshot "$work" benchsnap/data --name "r$run" >/dev/null
        nexts+=("$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$t0" "$(date +%s.%N)")")
        frozen+=("$(held_ms "r$run")")
        docker -H $A volume create benchsnap-cpdst >/dev/null
        drop_caches
        t0=$(date +%s.%N)
        docker -H $A run --rm -v benchsnap-data:/src:ro -v benchsnap-cpdst:/dst $IMAGE cp -a /src/. /dst/
        cps+=("$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$t0" "$(date +%s.%N)")")
        docker -H $A volume rm -f benchsnap-cpdst >/dev/null
    done
    n=$(median "${nexts[@]}"); f=$(median "${frozen[@]}"); c=$(median "${cps[@]}")
    printf '%-6s %6s %7s | %10s %10s %9s | %9s | %11.2fx %11.3fx\n' "$SHAPE" "$size" "$files" "$first" "$n" "$f" "$c" \
        "$(python3 -c "import sys; print(float(sys.argv[1]) / float(sys.argv[2]))" "$n" "$c")" \
        "$(python3 -c "import sys; print(float(sys.argv[1]) / float(sys.argv[2]))" "$f" "$c")"
    echo "  runs: next ${nexts[*]}; froze ${frozen[*]}; cp -a ${cps[*]}"
done
done
