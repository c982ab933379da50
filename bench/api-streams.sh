#!/usr/bin/env bash
# What the Docker API path can carry on this machine, without drover: 1 GiB
# of random data from a container on node-a to one on node-b
#   - through one `exec` stream on each engine (`docker exec cat |
#     docker exec -i … cat > file`, the way drover's API path goes),
#   - through two such pairs at once, 512 MiB each,
#   - through the engines' archive endpoints (`docker cp | docker cp`, the
#     baseline of bench/relocate.sh).
# A report, not a test. Needs root and the test hosts
# (`scripts/test-hosts.sh up 2`). RUNS (default 3) runs; the page cache is
# left warm, so that only the streams are measured.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
A=unix:///tmp/drover-hosts/node-a.sock
B=unix:///tmp/drover-hosts/node-b.sock
IMAGE=drover-test/busybox:1
cleanup() {
    docker -H $A rm -f bench-streams-src >/dev/null 2>&1 || true
    docker -H $B rm -f bench-streams-dst >/dev/null 2>&1 || true
    docker -H $A volume rm -f bench-streams-src >/dev/null 2>&1 || true
    docker -H $B volume rm -f bench-streams-dst >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup
docker -H $A run -d --name bench-streams-src -v bench-streams-src:/data $IMAGE sleep 100000 >/dev/null
docker -H $B run -d --name bench-streams-dst -v bench-streams-dst:/data $IMAGE sleep 100000 >/dev/null
docker -H $A exec bench-streams-src sh -c 'head -c 536870912 /dev/urandom > /data/h1;
    head -c 536870912 /dev/urandom > /data/h2; cat /data/h1 /data/h2 > /data/big'
now() { date +%s.%N; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }
stream() {
    docker -H $A exec bench-streams-src cat "/data/$1" |
        docker -H $B exec -i bench-streams-dst sh -c "cat > /data/$1"
}
ones=(); twos=(); pipes=()
for _ in $(seq "$RUNS"); do
    t0=$(now); stream big; t1=$(now)
    stream h1 & stream h2 & wait; t2=$(now)
    docker -H $A cp bench-streams-src:/data/big - | docker -H $B cp - bench-streams-dst:/data/
    t3=$(now)
    ones+=("$(secs "$t0" "$t1")"); twos+=("$(secs "$t1" "$t2")"); pipes+=("$(secs "$t2" "$t3")")
done
median() { python3 -c 'import sys,statistics; print(f"{statistics.median(map(float,sys.argv[1:])):.2f}")' "$@"; }
printf '1 GiB, medians of %s runs (warm cache)\n' "$RUNS"
printf '  one exec stream on each engine   %s s   runs: %s\n' "$(median "${ones[@]}")" "${ones[*]}"
printf '  two exec streams at once         %s s   runs: %s\n' "$(median "${twos[@]}")" "${twos[*]}"
printf '  docker cp | docker cp (archive)  %s s   runs: %s\n' "$(median "${pipes[@]}")" "${pipes[*]}"
