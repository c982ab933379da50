#!/usr/bin/env bash
# drover against Debian's docker-compose (1.29, Python) on the same Docker
# engine, with the same workload: APPS apps, each with its own named volume,
# image drover-test/busybox:1 (local, never pulled), a command that stops at
# once on SIGTERM, and a stop grace period of 2 s for both tools. A report,
# not a test: timings never fail it.
#
#   bench/compose.sh                   # 5 runs of each scenario and tool
#   RUNS=3 APPS=20 bench/compose.sh    # fewer runs, smaller workload
#   DROVER_ARGS="--parallel 16" bench/compose.sh
#   DROVER_BIN=/path/to/drover bench/compose.sh   # skip the build, use this binary
#   KEEP=1 bench/compose.sh            # keep the work dir (manifests, logs)
#
# Scenarios, each measured RUNS times; the tools alternate, and only one
# tool's objects exist on the engine at a time:
#   cold      nothing exists: volumes, network and containers made and started
#   no-op     the same again, nothing changed
#   recreate  an environment variable of every app changed: all recreated
# Targets (drover / compose, medians): cold <= 0.5x, no-op <= 0.2x.
#
# Needs the test hosts (`scripts/test-hosts.sh up 2`) and docker-compose
# (`apt-get install -y docker-compose`). Uses node-a only (NODE=node-b for the
# other). Everything it makes carries the project/stack name PROJECT (default
# `bench`), and it removes exactly that, by label, before, between and after
# runs.
#
# Caution: `drover reconcile` makes the host match the directory, which holds
# only this stack: it would remove other stacks' drover-managed containers on
# the node. Before every drover run the script plans with --dry-run and stops
# if the plan touches any other stack.
set -euo pipefail

RUNS=${RUNS:-5}
APPS=${APPS:-50}
PROJECT=${PROJECT:-bench}
NODE=${NODE:-node-a}
DROVER_ARGS=${DROVER_ARGS:-}
IMAGE="drover-test/busybox:1"
GRACE=2s
# `sleep` as PID 1 ignores SIGTERM (a stop would wait the whole grace
# period); a shell loop around `sleep 1` takes up to 1 s. A shell waiting
# on a background sleep runs its trap at once.
CMD_JSON='["sh", "-c", "trap '"'"'exit 0'"'"' TERM; sleep 1000000 & wait"]'
TARGET_COLD=0.5
TARGET_NOOP=0.2

if [[ ! $PROJECT =~ ^bench[a-z0-9]*$ ]]; then
    echo "PROJECT must be \`bench\` followed by [a-z0-9]* (got \`$PROJECT\`)" >&2
    exit 2
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
sock=/tmp/drover-hosts/$NODE.sock
export DOCKER_HOST=unix://$sock # for docker and docker-compose

echo "== how this was run"
echo "command:  ${RUNS:+RUNS=$RUNS} APPS=$APPS PROJECT=$PROJECT NODE=$NODE${DROVER_ARGS:+ DROVER_ARGS=\"$DROVER_ARGS\"}${DROVER_BIN:+ DROVER_BIN=$DROVER_BIN} $0 $*"
echo "date:     $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, $(uname -r)"

for tool in docker docker-compose python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "$tool is missing (docker-compose: apt-get install -y docker-compose)" >&2
        exit 1
    fi
done
if ! docker version >/dev/null 2>&1; then
    echo "no Docker engine at $DOCKER_HOST: run scripts/test-hosts.sh up 2" >&2
    exit 1
fi
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE is not on $NODE: run scripts/test-hosts.sh up 2" >&2
    exit 1
fi

# Removes every container, volume and network of the benchmark, of both tools.
# Docker 20.10 now and then keeps counting an endpoint of a removed container
# ("network … has active endpoints", moby/moby#42119; only a restart of the
# engine clears it): such a network is retried, then left with a warning,
# once. The tool that owns it reuses it, so its later cold runs make no
# network.
declare -A stuck_networks
cleanup_objects() {
    local filter ids id try
    for filter in "label=com.docker.compose.project=$PROJECT" "label=drover.stack=$PROJECT"; do
        # Word splitting wanted: one id per word.
        ids=$(docker ps -aq --filter "$filter")
        # shellcheck disable=SC2086
        [[ -z $ids ]] || docker rm -f $ids >/dev/null
        ids=$(docker volume ls -q --filter "$filter")
        # shellcheck disable=SC2086
        [[ -z $ids ]] || docker volume rm $ids >/dev/null
        for id in $(docker network ls -q --filter "$filter"); do
            [[ -z ${stuck_networks[$id]:-} ]] || continue
            for try in 1 2 3 4 5 6; do
                docker network rm "$id" >/dev/null 2>&1 && break
                if ((try == 6)); then
                    stuck_networks[$id]=1
                    echo "  warning: network $(docker network inspect -f '{{.Name}}' "$id") on $NODE cannot be removed (the engine still counts an endpoint); left in place" >&2
                fi
                sleep 0.5
            done
        done
    done
}

work=
finish() {
    local rc=$?
    trap - EXIT INT TERM
    cleanup_objects || echo "cleanup failed: remove objects labelled $PROJECT on $NODE by hand" >&2
    if [[ -n $work && -n "${KEEP:-}" ]]; then
        echo "kept $work"
    elif [[ -n $work ]]; then
        rm -rf "$work"
    fi
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

work=$(mktemp -d "${TMPDIR:-/tmp}/drover-bench-compose.XXXXXX")
log=$work/log

if [[ -z "${DROVER_BIN:-}" ]]; then
    echo "== building (release)"
    cargo build --release --quiet -p drover --bin drover
    DROVER_BIN=$root/target/release/drover
fi
# A copy, so that a rebuild during the run cannot change what is measured.
cp "$DROVER_BIN" "$work/drover"
drover=$work/drover

echo "drover:   $("$drover" --version) ($DROVER_BIN)${DROVER_ARGS:+ with $DROVER_ARGS}"
echo "compose:  $(docker-compose version --short) (COMPOSE_PARALLEL_LIMIT=${COMPOSE_PARALLEL_LIMIT:-64 (default)})"
echo "engine:   $NODE, Docker $(docker version --format '{{.Server.Version}}, API {{.Server.APIVersion}}') at $DOCKER_HOST"
echo "workload: $APPS apps x 1 volume, $IMAGE, stop grace $GRACE, $RUNS runs per scenario and tool"


# write_specs GENERATION: the drover manifests and the compose file, from
# one loop, with GENERATION in every app's environment.
write_specs() {
    local gen=$1 i
    mkdir -p "$work/manifests" "$work/compose"
    {
        echo "kind: Cluster"
        echo "hosts:"
        echo "  $NODE:"
        echo "    endpoint: unix://$sock"
        echo "---"
        echo "kind: Stack"
        echo "name: $PROJECT"
        echo "volumes:"
        for ((i = 1; i <= APPS; i++)); do echo "  data$i: {}"; done
        echo "apps:"
    } >"$work/manifests/bench.yaml"
    {
        echo "services:"
    } >"$work/compose/docker-compose.yml"
    for ((i = 1; i <= APPS; i++)); do
        # Shared by both tools.
        local common="    image: $IMAGE
    command: $CMD_JSON
    stop_grace_period: $GRACE
    restart: unless-stopped
    environment:
      GENERATION: \"$gen\"
    volumes: [\"data$i:/data\"]"
        printf '  app%d:\n%s\n    host: %s\n    pull: never\n' "$i" "$common" "$NODE" >>"$work/manifests/bench.yaml"
        # compose 1.29 accepts `pull_policy` but ignores it; it does not pull
        # an image that is present anyway.
        printf '  app%d:\n%s\n    pull_policy: never\n' "$i" "$common" >>"$work/compose/docker-compose.yml"
    done
    {
        echo "volumes:"
        for ((i = 1; i <= APPS; i++)); do echo "  data$i: {}"; done
    } >>"$work/compose/docker-compose.yml"
}

# Stops the benchmark if drover's plan would touch anything but this stack.
drover_guard() {
    "$drover" reconcile "$work/manifests" --dry-run --output json >"$work/plan.json" 2>>"$log"
    python3 - "$work/plan.json" "$PROJECT" <<'EOF'
import json, sys
plan = json.load(open(sys.argv[1]))
other = [a for a in plan["actions"] if a["stack"] != sys.argv[2]]
if other:
    for a in other:
        print(f"  {a['action']} {a['kind']} {a['name']} ({a['reason']})", file=sys.stderr)
    sys.exit(f"drover would change objects of other stacks on the node (above); not running")
EOF
}

run_drover() {
    # shellcheck disable=SC2086
    "$drover" reconcile "$work/manifests" $DROVER_ARGS
}
run_compose() {
    docker-compose -f "$work/compose/docker-compose.yml" -p "$PROJECT" up -d
}

# ids TOOL: the sorted ids of the tool's running containers.
ids() {
    local filter
    case $1 in
        drover) filter="label=drover.stack=$PROJECT" ;;
        compose) filter="label=com.docker.compose.project=$PROJECT" ;;
    esac
    docker ps -q --no-trunc --filter "$filter" --filter status=running | sort
}

# measure TOOL SCENARIO: runs the tool once, timed; checks the result
# (APPS containers running; none, or all, replaced as the scenario says).
declare -A times
measure() {
    local tool=$1 scenario=$2 before after start end took kept
    [[ $tool == drover ]] && drover_guard
    before=$(ids "$tool")
    echo "--- $tool $scenario" >>"$log"
    start=$(date +%s.%N)
    if ! "run_$tool" >>"$log" 2>&1; then
        echo "$tool failed ($scenario); the end of its output:" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
    end=$(date +%s.%N)
    took=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", e - s }')
    after=$(ids "$tool")
    if [[ $(printf '%s' "$after" | grep -c .) -ne $APPS ]]; then
        echo "$tool $scenario: $(printf '%s' "$after" | grep -c .) containers running, expected $APPS" >&2
        exit 1
    fi
    kept=$(comm -12 <(printf '%s\n' "$before") <(printf '%s\n' "$after") | grep -c . || true)
    case $scenario in
        no-op) [[ $kept -eq $APPS ]] || { echo "$tool no-op replaced $((APPS - kept)) containers" >&2; exit 1; } ;;
        *) [[ $kept -eq 0 ]] || { echo "$tool $scenario kept $kept containers" >&2; exit 1; } ;;
    esac
    times[$tool/$scenario]+="$took "
    printf '  %-7s %-8s %7ss\n' "$tool" "$scenario" "$took"
}

median() { # median "T1 T2 …"
    # shellcheck disable=SC2086
    printf '%s\n' $1 | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) printf "%.3f", a[(NR + 1) / 2]; else printf "%.3f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

echo "== leftovers of earlier runs"
cleanup_objects
generation=0
for ((run = 1; run <= RUNS; run++)); do
    echo "== run $run of $RUNS"
    # Alternate which tool goes first.
    if ((run % 2)); then order="drover compose"; else order="compose drover"; fi
    for tool in $order; do
        cleanup_objects
        write_specs $((generation++))
        measure "$tool" cold
        measure "$tool" no-op
        write_specs $((generation++))
        measure "$tool" recreate
        cleanup_objects
    done
done

echo
echo "== medians of $RUNS runs, $APPS apps, $NODE"
printf '%-10s %10s %11s %15s %8s %5s\n' scenario "drover (s)" "compose (s)" "drover/compose" target met
for scenario in cold no-op recreate; do
    d=$(median "${times[drover/$scenario]}")
    c=$(median "${times[compose/$scenario]}")
    ratio=$(awk -v d="$d" -v c="$c" 'BEGIN { printf "%.3f", d / c }')
    case $scenario in
        cold) target=$TARGET_COLD ;;
        no-op) target=$TARGET_NOOP ;;
        *) target= ;;
    esac
    if [[ -n $target ]]; then
        met=$(awk -v r="$ratio" -v t="$target" 'BEGIN { print (r <= t) ? "yes" : "NO" }')
        target="<= ${target}x"
    else
        target="-" met="-"
    fi
    printf '%-10s %10s %11s %14sx %8s %5s\n' "$scenario" "$d" "$c" "$ratio" "$target" "$met"
done
for scenario in cold no-op recreate; do
    echo "  $scenario: drover ${times[drover/$scenario]}| compose ${times[compose/$scenario]}"
done
