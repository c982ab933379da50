#!/usr/bin/env bash
# Moving a volume between two local engines: drover against the baseline
# `docker cp SRC:/data - | docker cp - DST:/` pipe, and `cp -a` on the same
# disk as the physical reference, side by side in one run. A report, not a
# test: timings never fail it.
#
#   bench/relocate.sh                      # 256 MiB and 1 GiB, 3 runs each, both shapes
#   SIZES="64" RUNS=1 bench/relocate.sh    # sizes in MiB
#   SHAPES=small bench/relocate.sh         # one shape only
#   DROVER_BIN=/path/to/drover bench/relocate.sh
#   KEEP_LOGS=DIR bench/relocate.sh       # keep each move's JSON log there
#   SETTLE=0 bench/relocate.sh             # move right after filling (default: 40 s later)
#
# Two shapes of volume for every size:
#   large   files of mixed sizes (1 KiB to 16 MiB, in 20 directories);
#   small   mostly small files, as a mail store or a database cluster holds:
#           per GiB 2 x 256 MiB, 48 x 4 MiB, 384 x 512 KiB, 1,024 x 64 KiB
#           and 16,384 x 4 KiB (17,842 files), in 64 directories.
# Each run drops the page cache first. Figures:
#   copy       drover's bulk copy phase (app still running), from its logs,
#              against the whole docker cp pipe and against cp -a; drover
#              runs twice: `direct` (helper to helper over the hosts'
#              network, the default when hosts reach each other) and `api`
#              (`--copy-via api`: every byte through the Docker API and drover);
#   move       drover's whole relocate step (copy, stop, delta, verify,
#              start, wait, records);
#   downtime   `die` of the app on the source → `start` on the target, from
#              both engines' events, with 1 MiB written into the volume
#              after the move began;
#   peak RSS   of the drover process (GNU time).
# Targets: the whole move >= 2.5x the docker cp pipe on the direct path and
# >= 1.2x on the API path, the direct bulk copy >= 0.7x cp -a, 20,000 small
# files a second; downtime < 1 s and independent of the size; peak RSS under
# 100 MB.
#
# Needs root and the test hosts (`scripts/test-hosts.sh up 2`, started here
# if needed). Uses the stack `benchmove` only, and removes it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"256 1024"}
SHAPES=${SHAPES:-"large small"}
RUNS=${RUNS:-3}
STACK=benchmove
IMAGE=drover-test/busybox:1
DATA_ROOT=${DROVER_HOSTS_DATA:-/var/lib/drover-hosts}
. bench/move-lib.sh

work=$(mktemp -d)
dir="$work/stacks"
mkdir -p "$dir"
write_cluster "$dir"
stack() { write_stack "$dir" "$STACK" "$1"; }

cleanup() {
    remove_stack "$STACK"
    for h in $A $B; do
        docker -H "$h" rm -f benchmove-cp-src benchmove-cp-dst >/dev/null 2>&1 || true
        docker -H "$h" volume rm -f benchmove-cp >/dev/null 2>&1 || true
    done
    rm -rf "$DATA_ROOT/benchmove-cp"
}
trap 'cleanup; rm -rf "$work"' EXIT
cleanup

downtime() {
    python3 - "$1" "$2" "$3" "$4" <<'EOF'
import json, subprocess, sys
since, until, src, dst = sys.argv[1:]
def ev(host, action):
    out = subprocess.run(["docker", "-H", host, "events", "--since", since, "--until", until,
        "--filter", "container=benchmove-app", "--filter", "event=" + action, "--format", "{{json .}}"],
        capture_output=True, text=True).stdout
    return [json.loads(l)["timeNano"] for l in out.splitlines() if l.strip()]
die, start = ev(src, "die"), ev(dst, "start")
print(f"{(max(start) - min(die)) / 1e9:.3f}" if die and start else "nan")
EOF
}

printf 'drover %s; page cache dropped before every run; %s runs per figure\n\n' "$("$DROVER_BIN" --version)" "$RUNS"
for SHAPE in $SHAPES; do
for size in $SIZES; do
    bytes=$((size * 1024 * 1024))
    # Baselines: the same data in a plain volume, moved by docker cp and cp -a.
    docker -H $A volume create benchmove-cp >/dev/null
    docker -H $A run -d --name benchmove-cp-src -v benchmove-cp:/data $IMAGE sleep 1000000 >/dev/null
    files=$(fill $A benchmove-cp-src "$size")
    docker -H $A stop -t 0 benchmove-cp-src >/dev/null
    src_dir="$DATA_ROOT/node-a/data/volumes/benchmove-cp/_data"
    dockercp=(); cpa=()
    for _ in $(seq "$RUNS"); do
        docker -H $B rm -f benchmove-cp-dst >/dev/null 2>&1 || true
        docker -H $B volume rm -f benchmove-cp >/dev/null 2>&1 || true
        docker -H $B create --name benchmove-cp-dst -v benchmove-cp:/data $IMAGE true >/dev/null
        drop_caches
        s=$(date +%s.%N)
        docker -H $A cp benchmove-cp-src:/data - | docker -H $B cp - benchmove-cp-dst:/
        sync
        dockercp+=("$(python3 -c "print($(date +%s.%N) - $s)")")
        rm -rf "$DATA_ROOT/benchmove-cp"
        drop_caches
        s=$(date +%s.%N)
        cp -a "$src_dir" "$DATA_ROOT/benchmove-cp"
        sync
        cpa+=("$(python3 -c "print($(date +%s.%N) - $s)")")
    done
    docker -H $A rm -f benchmove-cp-src >/dev/null
    docker -H $B rm -f benchmove-cp-dst >/dev/null
    docker -H $A volume rm -f benchmove-cp >/dev/null
    docker -H $B volume rm -f benchmove-cp >/dev/null

    printf '== %s MiB, %s files (%s)\n' "$size" "$SHAPE" "$files"
    m_dc=$(median "${dockercp[@]}"); m_cp=$(median "${cpa[@]}")
    printf '  %-38s %8s s   %7.0f MiB/s   runs: %s\n' "cp -a (same disk)" "$m_cp" "$(python3 -c "print($size/$m_cp)")" "${cpa[*]}"
    printf '  %-38s %8s s   %7.0f MiB/s   runs: %s\n' "docker cp | docker cp" "$m_dc" "$(python3 -c "print($size/$m_dc)")" "${dockercp[*]}"

    # drover: back and forth, each time onto a host without a retained copy.
    stack node-a
    "$DROVER_BIN" reconcile "$dir" >/dev/null
    fill $A benchmove-app "$size" >/dev/null
    # A volume's data is older than the racy window (35 s: a hash is reused
    # only for files unchanged for that long) save what the app changes
    # meanwhile; SETTLE=0 moves right after the fill.
    sleep "${SETTLE:-40}"
    from=node-a; to=node-b; fh=$A; th=$B
    for via in direct api; do
        copy=(); move=(); down=(); rss=()
        for _ in $(seq "$RUNS"); do
            stack $to
            drop_caches
            since=$(date +%s.%N)
            # 1 MiB written into the volume once the move has begun.
            ( for _ in $(seq 200); do
                  docker -H $fh ps -q --filter name=drover-move- | grep -q . && break; sleep 0.05
              done
              docker -H $fh exec benchmove-app dd if=/dev/urandom of=/data/changed-$RANDOM bs=1M count=1 2>/dev/null ) &
            args=(); [ $via = api ] && args=(--copy-via api)
            /usr/bin/time -f '%M' -o "$work/rss" env DROVER_LOG="${DROVER_LOG:-drover=info}" \
                "$DROVER_BIN" reconcile "$dir" --log-format json "${args[@]}" >"$work/out" 2>"$work/log"
            wait
            until=$(date +%s.%N)
            grep -q 'done    relocate' "$work/out" || { cat "$work/out" "$work/log"; exit 1; }
            if [ $via = direct ] && grep -q 'direct path between the helpers failed' "$work/log"; then
                echo "the direct path failed:"; grep 'direct path' "$work/log"; exit 1
            fi
            [ -n "${KEEP_LOGS:-}" ] && cp "$work/log" "$KEEP_LOGS/$SHAPE-$size-$via.log"
            copy+=("$(copy_seconds "$work/log")")
            move+=("$(sed -n 's/.*done    relocate.*) \([0-9.]*\)s.*$/\1/p' "$work/out")")
            down+=("$(downtime "$since" "$until" "$fh" "$th")")
            rss+=("$(( $(cat "$work/rss") / 1024 ))")
            # The retained copy goes, so the next move copies everything again.
            "$DROVER_BIN" volume rm "$dir" --host $from --yes "$STACK-data" >/dev/null
            tmp=$from; from=$to; to=$tmp; tmp=$fh; fh=$th; th=$tmp
        done
        m_copy=$(median "${copy[@]}"); m_move=$(median "${move[@]}"); m_down=$(median "${down[@]}"); m_rss=$(median "${rss[@]}")
        printf '  %-38s %8s s   %7.0f MiB/s   runs: %s\n' "drover ($via) bulk copy, app running" "$m_copy" "$(python3 -c "print($size/$m_copy)")" "${copy[*]}"
        printf '  %-38s %8s s                   runs: %s\n' "drover ($via) whole move" "$m_move" "${move[*]}"
        printf '  %-38s %8s s                   runs: %s\n' "drover ($via) downtime, 1 MiB changed" "$m_down" "${down[*]}"
        printf '  %-38s %8s MB                  runs: %s\n' "drover ($via) peak RSS" "$m_rss" "${rss[*]}"
        printf '  drover (%s) bulk copy vs docker cp pipe: %.2fx; vs cp -a: %.2fx\n' \
            "$via" "$(python3 -c "print($m_dc/$m_copy)")" "$(python3 -c "print($m_cp/$m_copy)")"
        printf '  drover (%s) whole move vs docker cp pipe: %.2fx; %.0f files/s\n' \
            "$via" "$(python3 -c "print($m_dc/$m_move)")" "$(python3 -c "print(${files%% *}/$m_move)")"
    done
    echo
    cleanup
done
done
