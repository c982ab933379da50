#!/usr/bin/env bash
# Push → changed container running with `drover controller --git`, beside
# the engine's own time to replace that container (the baseline: stop the
# old one, make and start the new one with the docker CLI), in one run.
# With a signed webhook (the controller polls once an hour) and with polling
# every INTERVAL. Then the idle controller's CPU and memory, alone and
# with its dashboard open (a page asks /api/dashboard every 2 s).
#
#   bench/gitops.sh                   # 10 pushes each way, 5 s polling
#   PUSHES=20 INTERVAL=10s IDLE=120 bench/gitops.sh
#   DROVER_BIN=target/release/drover bench/gitops.sh
#
# The Git server is `git daemon` on loopback; pushes are made with `git`.
set -euo pipefail
cd "$(dirname "$0")/.."
PUSHES=${PUSHES:-10}
INTERVAL=${INTERVAL:-5s}
IDLE=${IDLE:-60}
IMAGE=drover-test/busybox:1
. bench/move-lib.sh

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
listen=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
secret=bench-secret-$$
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.test
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.test
daemon=
ctl=
cleanup() {
    [ -n "$ctl" ] && kill "$ctl" 2>/dev/null && wait "$ctl" 2>/dev/null || true
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null || true
    remove_stack benchgit
    docker -H $A rm -f benchgit-baseline >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/repos/bench.git" "$work/clone"
git -C "$work/repos/bench.git" init -q --bare -b main
"$(git --exec-path)/git-daemon" --reuseaddr --export-all --listen=127.0.0.1 --port="$port" \
    --base-path="$work/repos" "$work/repos" >/dev/null 2>&1 &
daemon=$!
git -C "$work/clone" init -q -b main
git -C "$work/clone" remote add origin "$work/repos/bench.git"
write_cluster "$work/clone"
app() { # VERSION
    cat >"$work/clone/stack.yaml" <<EOF
kind: Stack
name: benchgit
apps:
  web:
    image: $IMAGE
    host: node-a
    pull: never
    restart: 'no'
    environment: { VERSION: '$1' }
    command: ['sh', '-c', 'trap "exit 0" TERM; while :; do sleep 1 & wait \$\$!; done']
    stop_grace_period: 1s
EOF
}
push() { # VERSION
    app "$1"
    git -C "$work/clone" add -A
    git -C "$work/clone" commit -q -m "version $1"
    git -C "$work/clone" push -q -f origin HEAD:main
}
runs() { # VERSION
    [ "$(docker -H $A inspect --format '{{.State.Running}} {{range .Config.Env}}{{.}} {{end}}' benchgit-web 2>/dev/null |
        grep -c " VERSION=$1 ")" = 1 ] && docker -H $A inspect --format '{{.State.Running}}' benchgit-web | grep -q true
}
until_runs() { # VERSION: seconds from now until it runs
    local t0 t1
    t0=$(date +%s.%N)
    until runs "$1"; do sleep 0.05; done
    t1=$(date +%s.%N)
    python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$t0" "$t1"
}
median() { python3 -c 'import sys,statistics; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.3f}")' "$@"; }
hook() {
    local body='{"ref":"refs/heads/main"}' sig
    sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$secret" | sed 's/^.* //')
    curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$listen/hooks/git" \
        -H 'X-GitHub-Event: push' -H "X-Hub-Signature-256: sha256=$sig" \
        -H 'Content-Type: application/json' --data "$body"
}
start_controller() { # INTERVAL
    rm -rf "$work/state"
    HOOK_SECRET=$secret "$DROVER_BIN" controller --listen "127.0.0.1:$listen" \
        --git "git://127.0.0.1:$port/bench.git" --interval "$1" --workdir "$work/state" \
        --webhook-secret-env HOOK_SECRET 2>"$work/controller.log" &
    ctl=$!
    until curl -s "http://127.0.0.1:$listen/livez" >/dev/null; do sleep 0.1; done
}
stop_controller() { kill "$ctl"; wait "$ctl" 2>/dev/null || true; ctl=; }

# The baseline: the engine replacing the same container, by the CLI.
base=()
docker -H $A run -d --name benchgit-baseline --stop-timeout 1 $IMAGE \
    sh -c 'trap "exit 0" TERM; while :; do sleep 1 & wait $$!; done' >/dev/null
for v in $(seq 1 "$PUSHES"); do
    t0=$(date +%s.%N)
    docker -H $A stop -t 1 benchgit-baseline >/dev/null
    docker -H $A rm benchgit-baseline >/dev/null
    docker -H $A run -d --name benchgit-baseline --stop-timeout 1 -e VERSION=$v $IMAGE \
        sh -c 'trap "exit 0" TERM; while :; do sleep 1 & wait $$!; done' >/dev/null
    base+=("$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$t0" "$(date +%s.%N)")")
done
docker -H $A rm -f benchgit-baseline >/dev/null

push 0
start_controller 1h
sleep 0.5; hook >/dev/null
until runs 0; do sleep 0.1; done
hooked=()
for v in $(seq 1 "$PUSHES"); do
    push "$v"
    code=$(hook)
    [ "$code" = 202 ] || { echo "webhook answered $code" >&2; exit 1; }
    hooked+=("$(until_runs "$v")")
    sleep 1
done
stop_controller

start_controller "$INTERVAL"
until runs "$PUSHES"; do sleep 0.1; done
polled=()
for v in $(seq $((PUSHES + 1)) $((2 * PUSHES))); do
    push "$v"
    polled+=("$(until_runs "$v")")
done

# Idle: the controller follows the remote and nothing changes.
sleep 5
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$ctl/stat"; }
t0=$(ticks)
sleep "$IDLE"
t1=$(ticks)
cpu=$(python3 -c "import sys; print(f'{100 * (int(sys.argv[2]) - int(sys.argv[1])) / int(sys.argv[3]) / int(sys.argv[4]):.2f}')" "$t0" "$t1" "$hz" "$IDLE")
rss=$(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$ctl/status")
hwm=$(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$ctl/status")
# The same with the dashboard open, as its page polls it.
(while :; do curl -s -o /dev/null "http://127.0.0.1:$listen/api/dashboard"; sleep 2; done) &
poller=$!
t0=$(ticks)
sleep "$IDLE"
t1=$(ticks)
kill "$poller"; wait "$poller" 2>/dev/null || true
cpu_dash=$(python3 -c "import sys; print(f'{100 * (int(sys.argv[2]) - int(sys.argv[1])) / int(sys.argv[3]) / int(sys.argv[4]):.2f}')" "$t0" "$t1" "$hz" "$IDLE")
rss_dash=$(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$ctl/status")
stop_controller

b=$(median "${base[@]}"); h=$(median "${hooked[@]}"); p=$(median "${polled[@]}")
printf '%s; %s pushes each; medians\n\n' "$("$DROVER_BIN" --version)" "$PUSHES"
printf '%-44s %8s s\n' "engine replacing the container (docker CLI)" "$b"
printf '%-44s %8s s   (%s s over the engine; target <= 1.5 s)\n' "push -> running, webhook" "$h" \
    "$(python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):.3f}')" "$h" "$b")"
printf '%-44s %8s s   (interval %s)\n' "push -> running, polling" "$p" "$INTERVAL"
printf '%-44s %8s\n' "webhook / engine" "$(python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}x')" "$h" "$b")"
printf '%-44s %8s %%   (target < 1 %%)\n' "idle CPU over ${IDLE}s, following the remote" "$cpu"
printf '%-44s %8s MB  (peak %s MB; target < 40 MB)\n' "idle RSS" "$rss" "$hwm"
printf '%-44s %8s %%   (target < 1 %%)\n' "idle CPU, dashboard open" "$cpu_dash"
printf '%-44s %8s MB  (target < 40 MB)\n' "idle RSS, dashboard open" "$rss_dash"
printf '\neach, webhook: %s\neach, polling: %s\n' "${hooked[*]}" "${polled[*]}"
