#!/usr/bin/env bash
# Soak: runs `drover controller` against the test hosts for a while with a
# manifest change every few seconds, and records its memory (RSS) and CPU.
#
#   bench/soak.sh                            30 minutes, a change every 10 s
#   DURATION=300 INTERVAL=5 bench/soak.sh    shorter
#
# Phases: converge, then IDLE seconds with no change (idle RSS and CPU),
# then DURATION seconds with a change every INTERVAL seconds, then IDLE
# seconds again. Prints the idle figures of both idle phases, the churn
# figures, and the growth of RSS (end idle vs start idle, and the slope over
# the churn). Samples go to $OUT/samples.csv (seconds, phase, rss_kb,
# cpu_seconds). Timings here are reports, never pass/fail.
#
# DROVER=path picks the binary (default: a release build of this checkout).
# It runs on test hosts 3 and 4 of scripts/test-hosts.sh (started when
# needed; root), named node-a and node-b in its manifests.
set -euo pipefail
. "$(dirname "$0")/../scripts/as-root.sh"
cd "$(dirname "$0")/.."

DURATION=${DURATION:-1800}
INTERVAL=${INTERVAL:-10}
IDLE=${IDLE:-120}
SAMPLE=${SAMPLE:-5}
PORT=${PORT:-19191}
OUT=${OUT:-$(mktemp -d /tmp/drover-soak.XXXX)}

if [ -z "${DROVER:-}" ]; then
  cargo build --release --locked -p drover >&2
  DROVER=target/release/drover
fi
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
# Hosts 3 and 4 (node-c, node-d), so that the end-to-end tests may use
# node-a and node-b meanwhile: a directory owns its hosts.
scripts/test-hosts.sh up 4 >&2
SOCK_A=/tmp/drover-hosts/node-c.sock
SOCK_B=/tmp/drover-hosts/node-d.sock

DIR=$OUT/manifests
mkdir -p "$DIR"
cat > "$DIR/cluster.yaml" <<EOF
kind: Cluster
hosts:
  node-a: { endpoint: 'unix://$SOCK_A', address: 10.77.0.13 }
  node-b: { endpoint: 'unix://$SOCK_B', address: 10.77.0.14 }
EOF
stack() {
  cat <<EOF
kind: Stack
name: soak
volumes:
  data: {}
apps:
  store:
    image: drover-test/busybox:1
    host: node-a
    pull: never
    command: ['sh', '-c', 'trap "exit 0" TERM; echo ok > /data/ready; exec httpd -f -p 8080 -h /data']
    volumes: ['data:/data']
    ports: ['18901:8080']
    healthcheck: { test: ['CMD', 'test', '-f', '/data/ready'], interval: 5s, retries: 10 }
    stop_grace_period: 1s
  worker:
    image: drover-test/busybox:1
    host: node-b
    pull: never
    depends_on: { store: { condition: healthy } }
    links: [store]
    environment: { ROUND: '$1' }
    command: ['sh', '-c', 'trap "exit 0" TERM; while :; do sleep 1; done']
    stop_grace_period: 1s
  idle:
    image: drover-test/busybox:1
    host: node-b
    pull: never
    command: ['sh', '-c', 'trap "exit 0" TERM; while :; do sleep 1; done']
    stop_grace_period: 1s
EOF
}
stack 0 > "$DIR/soak.yaml"

DROVER_LOG=${DROVER_LOG:-warn} "$DROVER" controller "$DIR" --listen "127.0.0.1:$PORT" \
  2> "$OUT/controller.log" &
PID=$!
cleanup() {
  kill -TERM "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  for sock in "unix://$SOCK_A" "unix://$SOCK_B"; do
    docker -H "$sock" rm -f $(docker -H "$sock" ps -aq --filter label=drover.stack=soak) >/dev/null 2>&1 || true
    docker -H "$sock" network rm drover-soak >/dev/null 2>&1 || true
  done
  docker -H "unix://$SOCK_A" volume rm soak-data >/dev/null 2>&1 || true
}
trap cleanup EXIT

TICK=$(getconf CLK_TCK)
START=$(date +%s.%N)
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$PID/status"; }
cpu_s() { awk -v t="$TICK" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$PID/stat"; }
sample() { # phase
  printf '%s,%s,%s,%s\n' "$(awk -v a="$(date +%s.%N)" -v b="$START" 'BEGIN { printf "%.1f", a - b }')" \
    "$1" "$(rss_kb)" "$(cpu_s)" >> "$OUT/samples.csv"
}
echo "seconds,phase,rss_kb,cpu_seconds" > "$OUT/samples.csv"

# Converged: /healthz says ready.
for _ in $(seq 1 120); do
  curl -sf "127.0.0.1:$PORT/healthz" >/dev/null && break
  sleep 1
done
curl -sf "127.0.0.1:$PORT/healthz" >/dev/null || { echo "soak: the controller did not converge" >&2; exit 1; }

idle() { # phase
  local end=$(( $(date +%s) + IDLE ))
  while [ "$(date +%s)" -lt "$end" ]; do sample "$1"; sleep "$SAMPLE"; done
  sample "$1"
}

echo "soak: idle for ${IDLE}s" >&2
idle idle-start
echo "soak: a change every ${INTERVAL}s for ${DURATION}s" >&2
end=$(( $(date +%s) + DURATION ))
round=0
next_sample=0
while [ "$(date +%s)" -lt "$end" ]; do
  round=$((round + 1))
  stack "$round" > "$DIR/soak.yaml.tmp" && mv "$DIR/soak.yaml.tmp" "$DIR/soak.yaml"
  for _ in $(seq 1 "$INTERVAL"); do
    if [ "$(date +%s)" -ge "$next_sample" ]; then
      sample churn
      next_sample=$(( $(date +%s) + SAMPLE ))
    fi
    sleep 1
  done
done
# Let the last change settle before the second idle phase.
sleep 10
echo "soak: idle for ${IDLE}s" >&2
idle idle-end

# The last round is what runs.
worker_round=$(docker -H "unix://$SOCK_B" inspect soak-worker \
  --format '{{range .Config.Env}}{{println .}}{{end}}' | sed -n 's/^ROUND=//p')
curl -s "127.0.0.1:$PORT/metrics" > "$OUT/metrics.txt"

awk -F, -v rounds="$round" -v worker="$worker_round" '
  NR == 1 { next }
  {
    t[$2, ++n[$2]] = $1; r[$2, n[$2]] = $3; c[$2, n[$2]] = $4
    if ($3 > max) max = $3
  }
  function med(p,   i, j, k, tmp, a) {
    k = n[p]; for (i = 1; i <= k; i++) a[i] = r[p, i]
    for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { tmp = a[i]; a[i] = a[j]; a[j] = tmp }
    return a[int((k + 1) / 2)]
  }
  function cpu(p) { return 100 * (c[p, n[p]] - c[p, 1]) / (t[p, n[p]] - t[p, 1]) }
  END {
    # Slope of RSS over the churn, by least squares, in KB per hour.
    p = "churn"; k = n[p]
    for (i = 1; i <= k; i++) { sx += t[p, i]; sy += r[p, i] }
    mx = sx / k; my = sy / k
    for (i = 1; i <= k; i++) { num += (t[p, i] - mx) * (r[p, i] - my); den += (t[p, i] - mx) ^ 2 }
    slope = den > 0 ? num / den * 3600 : 0
    printf "rounds of changes        %d (the worker runs round %s)\n", rounds, worker
    printf "idle at start            RSS %.1f MB (median), CPU %.3f%% of a core\n", med("idle-start") / 1024, cpu("idle-start")
    printf "under churn              RSS %.1f MB (median), CPU %.2f%% of a core\n", med("churn") / 1024, cpu("churn")
    printf "idle at end              RSS %.1f MB (median), CPU %.3f%% of a core\n", med("idle-end") / 1024, cpu("idle-end")
    printf "peak RSS                 %.1f MB\n", max / 1024
    printf "growth                   %+.1f MB idle end vs idle start; %+.2f MB/hour under churn (least squares)\n", (med("idle-end") - med("idle-start")) / 1024, slope / 1024
  }' "$OUT/samples.csv" | tee "$OUT/report.txt"
grep -E '^drover_passes_total|^drover_actions_total' "$OUT/metrics.txt" || true
echo "samples: $OUT/samples.csv" >&2
