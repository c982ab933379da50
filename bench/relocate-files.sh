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
A=unix:///tmp/drover-hosts/node-a.sock
B=unix:///tmp/drover-hosts/node-b.sock
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
scripts/test-hosts.sh up 2 >/dev/null 2>&1
if [ -z "${DROVER_BIN:-}" ]; then
    cargo build --release --quiet -p drover
    DROVER_BIN=target/release/drover
fi
dir=$(mktemp -d)
cleanup() {
    for h in $A $B; do
        docker -H $h ps -aq --filter label=drover.stack=benchmany | xargs -r docker -H $h rm -f >/dev/null
        docker -H $h volume ls -q --filter label=drover.stack=benchmany | xargs -r docker -H $h volume rm -f >/dev/null
        docker -H $h network rm drover-benchmany >/dev/null 2>&1 || true
    done
    rm -rf "$dir"
}
trap cleanup EXIT
cleanup; mkdir -p "$dir"
cat >"$dir/cluster.yaml" <<E2
kind: Cluster
hosts:
  node-a: { endpoint: '$A', address: 10.77.0.11 }
  node-b: { endpoint: '$B', address: 10.77.0.12 }
E2
stack() {
    cat >"$dir/stack.yaml" <<E3
kind: Stack
name: benchmany
volumes:
  data: {}
apps:
  app:
    image: drover-test/busybox:1
    host: $1
    pull: never
    command: ['sh', '-c', 'trap "exit 0" TERM; sleep 1000000 & wait']
    volumes: ['data:/data']
    stop_grace_period: 2s
E3
}
stack node-a
"$DROVER_BIN" reconcile "$dir" >/dev/null
docker -H $A exec benchmany-app sh -c 'for d in $(seq 0 99); do mkdir -p /data/d$d; done; i=0; while [ $i -lt '"$N"' ]; do echo $i > /data/d$((i%100))/file-with-a-longish-name-$i; i=$((i+1)); done'
stack node-b
/usr/bin/time -f "files=$N wall=%e s peak_rss=%M KiB" "$DROVER_BIN" reconcile "$dir" 2>&1 | grep -E "peak_rss|done    relocate"
