#!/usr/bin/env bash
# A volume of many small files: how fast it moves, against the
# `docker cp SRC:/data - | docker cp - DST:/` pipe on the same files, and
# the peak memory of drover and of its helpers, neither of which may grow
# with the number of entries (both scans are merged as they stream in). A
# report, not a test.
#
#   bench/relocate-files.sh 20000      # files in the volume (default 20000)
#   bench/relocate-files.sh 1000000    # the memory target: under 100 MB each
#   KEEP_LOG=move.log bench/relocate-files.sh   # keep the move's debug log
#   SETTLE=0 bench/relocate-files.sh   # move right after filling (default 40 s later)
#
# Needs root and the test hosts (`scripts/test-hosts.sh up 2`, started here
# if needed); builds the release binary unless DROVER_BIN is set. Uses the
# stack `benchmany` only, and removes it at the end. The files (a few bytes
# each, in 100 folders) are written straight into the volume's folder on
# node-a. The page cache is dropped before the pipe and before the move.
# Figures: the pipe's time; drover's whole move (direct path) and its bulk
# copy, each with files a second; the downtime; drover's peak RSS (GNU
# time) and the helpers' (the largest RSS of any `drover helper` process,
# sampled every 0.2 s).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
. bench/move-lib.sh
dir=$(mktemp -d)
trap 'kill "$sampler" 2>/dev/null || true; remove_stack benchmany; rm -rf "$dir"' EXIT
sampler=
remove_stack benchmany
write_cluster "$dir"
write_stack "$dir" benchmany node-a
"$DROVER_BIN" reconcile "$dir" >/dev/null
data=$(docker -H $A volume inspect --format '{{.Mountpoint}}' benchmany-data)
python3 - "$data" "$N" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for d in range(100):
    os.makedirs(f"{root}/d{d}", exist_ok=True)
for i in range(n):
    with open(f"{root}/d{i % 100}/file-with-a-longish-name-{i}", "w") as f:
        f.write(f"{i}\n")
PY
# Older than the racy window (35 s), as a volume's files mostly are.
sleep "${SETTLE:-40}"
# The baseline: the same files, by the docker cp pipe into a fresh volume.
docker -H $B rm -f benchmany-cp >/dev/null 2>&1 || true
docker -H $B volume rm -f benchmany-cp >/dev/null 2>&1 || true
docker -H $B create --name benchmany-cp -v benchmany-cp:/data drover-test/busybox:1 true >/dev/null
drop_caches
s=$(date +%s.%N)
docker -H $A cp benchmany-app:/data - | docker -H $B cp - benchmany-cp:/
sync
pipe=$(python3 -c "print(f'{$(date +%s.%N) - $s:.3f}')")
docker -H $B rm -f benchmany-cp >/dev/null
docker -H $B volume rm -f benchmany-cp >/dev/null
write_stack "$dir" benchmany node-b
(
    peak=0
    while :; do
        for r in $(ps -eo rss=,args= | awk '/[d]rover helper/ {print $1}'); do
            [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" >"$dir/helper-peak"
        done
        sleep 0.2
    done
) &
sampler=$!
log=${KEEP_LOG:-$dir/move.log}
drop_caches
DROVER_LOG=drover=debug /usr/bin/time -f "%M" -o "$dir/rss" \
    "$DROVER_BIN" reconcile "$dir" --log-format json >"$dir/out" 2>"$log"
kill "$sampler" 2>/dev/null || true
grep -q 'done    relocate' "$dir/out" || { cat "$dir/out"; exit 1; }
move=$(sed -n 's/.*done    relocate.*) \([0-9.]*\)s.*$/\1/p' "$dir/out")
down=$(sed -n 's/.*apps down \([0-9.]*\)s.*$/\1/p' "$dir/out")
copy=$(copy_seconds "$log")
rate() { python3 -c "print(f'{$N / $1:.0f}')"; }
printf 'files=%s\n' "$N"
printf '  docker cp | docker cp      %8s s   %7s files/s\n' "$pipe" "$(rate "$pipe")"
printf '  drover whole move          %8s s   %7s files/s   (%.2fx the pipe)\n' "$move" "$(rate "$move")" "$(python3 -c "print($pipe/$move)")"
printf '  drover bulk copy           %8s s   %7s files/s\n' "$copy" "$(rate "$copy")"
printf '  drover downtime            %8s s\n' "${down:-?}"
printf '  drover_peak_rss=%s KiB helper_peak_rss=%s KiB (sampled)\n' "$(cat "$dir/rss")" "$(cat "$dir/helper-peak" 2>/dev/null || echo '?')"
