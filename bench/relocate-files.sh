#!/usr/bin/env bash
# Peak memory while moving a volume of many small files, of drover and of
# its helpers: neither may grow with the number of entries (both scans are
# merged as they stream in). A report, not a test.
#
#   bench/relocate-files.sh 20000      # files in the volume (default 20000)
#   bench/relocate-files.sh 1000000    # the target: under 100 MB each
#   KEEP_LOG=move.log bench/relocate-files.sh   # keep the move's debug log
#
# Needs root and the test hosts (`scripts/test-hosts.sh up 2`, started here
# if needed); builds the release binary unless DROVER_BIN is set. Uses the
# stack `benchmany` only, and removes it at the end. The files (a few bytes
# each, in 100 folders) are written straight into the volume's folder on
# node-a. drover's peak RSS is GNU time's; the helpers' is the largest RSS
# of any `drover helper` process, sampled every 0.2 s.
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
if [ -n "${KEEP_LOG:-}" ]; then
    # The move's JSON log, with each pass's scans, goes to $KEEP_LOG.
    DROVER_LOG=drover=debug /usr/bin/time -f "files=$N wall=%e s drover_peak_rss=%M KiB" -o "$dir/time" \
        "$DROVER_BIN" reconcile "$dir" --log-format json 2>"$KEEP_LOG" | grep -E "done    relocate"
    cat "$dir/time"
else
    /usr/bin/time -f "files=$N wall=%e s drover_peak_rss=%M KiB" "$DROVER_BIN" reconcile "$dir" 2>&1 | grep -E "peak_rss|done    relocate"
fi
kill "$sampler" 2>/dev/null || true
echo "helper_peak_rss=$(cat "$dir/helper-peak" 2>/dev/null || echo '?') KiB (sampled)"
