#!/usr/bin/env bash
# drover's peak memory while moving a volume of many small files: memory
# grows with the number of entries (the scans of both sides are held), not
# with their size. A report, not a test.
#
#   bench/relocate-files.sh 20000      # files in the volume (default 20000)
#
# Needs root and the test hosts (`scripts/test-hosts.sh up 2`, started here
# if needed); builds the release binary unless DROVER_BIN is set. Uses the
# stack `benchmany` only, and removes it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
. bench/move-lib.sh
dir=$(mktemp -d)
trap 'remove_stack benchmany; rm -rf "$dir"' EXIT
remove_stack benchmany
write_cluster "$dir"
write_stack "$dir" benchmany node-a
"$DROVER_BIN" reconcile "$dir" >/dev/null
docker -H $A exec benchmany-app sh -c 'for d in $(seq 0 99); do mkdir -p /data/d$d; done; i=0; while [ $i -lt '"$N"' ]; do echo $i > /data/d$((i%100))/file-with-a-longish-name-$i; i=$((i+1)); done'
write_stack "$dir" benchmany node-b
/usr/bin/time -f "files=$N wall=%e s peak_rss=%M KiB" "$DROVER_BIN" reconcile "$dir" 2>&1 | grep -E "peak_rss|done    relocate"
