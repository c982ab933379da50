#!/usr/bin/env bash
# Backups beside restic, in one run, to the same S3 server on loopback
# (moto's, `moto_server`, started here): for each shape of volume,
#   - the first backup of the volume: drover's `volume backup` (its snapshot
#     `last-backup` made, read into the repository as the copy fills it,
#     then pushed) and the push after the copy, beside `restic backup` of
#     the same files on this machine;
#   - a second backup with 1 MiB changed: time, and what it added;
#   - a restore of the whole volume: drover's pull of the backup to the
#     host (restored and read back against the backup), beside
#     `restic restore` of restic's backup into a directory here;
#   - how long the app was frozen per backup.
# The volume settles SETTLE seconds (default 40) after it is filled, as a
# volume's data is older than the 35 s racy window save what the app
# changes (as in bench/relocate.sh): a file hashed within that window of
# its last change is read again by the next backup.
# Cold page cache before every timed step; medians of RUNS (drover goes
# first in odd runs, restic in even ones: keep RUNS even). The server
# listens on S3_HOST: on loopback (the default) the hosts cannot reach it
# and drover relays the data; on the hosts' gateway (`S3_HOST=10.77.0.1`)
# they push and restore straight to it.
#
#   bench/backup.sh                         # 1 GiB, both shapes, 2 runs
#   S3_HOST=10.77.0.1 bench/backup.sh       # the direct path
#   SIZE=256 SHAPES=small RUNS=1 bench/backup.sh
#   DROVER_BIN=target/release/drover bench/backup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-1024}
SHAPES=${SHAPES:-"large small"}
RUNS=${RUNS:-2}
export DROVER_LOG=${DROVER_LOG:-warn}
. bench/move-lib.sh
command -v restic >/dev/null || { apt-get update -qq && apt-get install -y -qq restic >/dev/null; }
S3=${DROVER_S3_SERVER:-$(command -v moto_server || true)}
if [ -z "$S3" ]; then
    python3 -m venv target/s3-server && target/s3-server/bin/pip install -q 'moto[server]==5.1.*'
    S3=target/s3-server/bin/moto_server
fi

work=$(mktemp -d)
S3_HOST=${S3_HOST:-127.0.0.1}
port=$(python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$S3_HOST")
"$S3" -H "$S3_HOST" -p "$port" >/dev/null 2>&1 &
s3pid=$!
cleanup() {
    remove_stack benchbk
    docker -H $A volume ls -q | grep -E '^benchbk-' | xargs -r docker -H $A volume rm -f >/dev/null || true
}
trap 'cleanup; kill $s3pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://$S3_HOST:$port/" && break; sleep 0.2; done
curl -s -X PUT "http://$S3_HOST:$port/bench" >/dev/null
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench RESTIC_PASSWORD=bench-password
export REPO_PASSWORD=$RESTIC_PASSWORD RESTIC_CACHE_DIR=$work/restic-cache

secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$2"; }
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }
# The figure after `label` in drover's output: "… 1.2s" → seconds.
# A duration as drover prints it (`850ms`, `4.2s`, `1m5s`) after `after`.
dur_after() { python3 -c '
import re,sys
m=re.search(re.escape(sys.argv[1]) + r"((?:[0-9.]+(?:ms|h|m|s))+)", sys.stdin.read())
unit={"ms":0.001,"s":1,"m":60,"h":3600}
print(sum(float(v)*unit[u] for v,u in re.findall(r"([0-9.]+)(ms|h|m|s)", m.group(1))))' "$1"; }
# The push's duration ends its line, after the way it went.
pushed_s() { sed 's/added, .*, \([0-9.][0-9.hms]*\)$/added, \1/' | dur_after "added, "; }
via() { grep -o 'straight from the host\|through drover' | head -1; }
added() { sed -n 's/.*, \([^,]*\) added,.*/\1/p'; }
froze() { sed -n 's/.*froze the apps \([0-9.]*[a-z]*\).*/\1/p'; }

# The timed steps, in pairs. Whichever of a pair runs first after the
# volume is filled takes longer on this machine (the S3 server's writes
# cost it two to three times the CPU then: bench/README.md), so drover goes
# first in odd runs and restic in even ones, and an even RUNS gives both
# orders the same weight.
pair() { if [ $((run % 2)) = 1 ]; then "$1"; "$2"; else "$2"; "$1"; fi; }
drover_first() {
    drop_caches; t0=$(date +%s.%N)
    out=$("$DROVER_BIN" volume backup "$work" benchbk/data --to bench)
    firsts+=("$(secs "$t0" "$(date +%s.%N)")"); pushes+=("$(pushed_s <<<"$out")"); way=$(via <<<"$out")
}
restic_first() {
    drop_caches; t0=$(date +%s.%N)
    restic -r "$rrepo" backup --host node-a "$mp" >/dev/null
    restics+=("$(secs "$t0" "$(date +%s.%N)")")
}
drover_second() {
    drop_caches; t0=$(date +%s.%N)
    out=$("$DROVER_BIN" volume backup "$work" benchbk/data --to bench)
    seconds+=("$(secs "$t0" "$(date +%s.%N)")"); adds+=("$(added <<<"$out")"); froz+=("$(froze <<<"$out")")
}
restic_second() {
    drop_caches; t0=$(date +%s.%N)
    rout=$(restic -r "$rrepo" backup --host node-a "$mp")
    rseconds+=("$(secs "$t0" "$(date +%s.%N)")")
    radds+=("$(sed -n 's/^Added to the repo[a-z]*: \(.*\)/\1/p' <<<"$rout" | sed 's/ (.*//')")
}
# Restore: drover brings its newest backup to the host as a snapshot.
drover_restore() {
    drop_caches
    "$DROVER_BIN" volume restore "$work" benchbk/data bench:latest --yes >"$work/restore.txt"
    pulls+=("$(dur_after "checked against the backup, " <"$work/restore.txt")")
}
restic_restore() {
    rm -rf "$work/restored"; drop_caches; t0=$(date +%s.%N)
    restic -r "$rrepo" restore latest --target "$work/restored" >/dev/null
    rrestores+=("$(secs "$t0" "$(date +%s.%N)")")
    rm -rf "$work/restored"
}

# The helper image is imported on a host once per drover binary, not per
# backup: a snapshot of the empty volume imports it before anything is timed.
write_cluster "$work"
write_stack "$work" benchbk node-a
"$DROVER_BIN" reconcile "$work" >/dev/null 2>&1
"$DROVER_BIN" volume snapshot "$work" benchbk/data --name warm >/dev/null

printf 'drover %s, %s; one S3 server (moto) on %s; page cache dropped before every timed step; %s runs\n\n' \
    "$("$DROVER_BIN" --version)" "$(restic version | cut -d' ' -f1-2)" "$S3_HOST" "$RUNS"
for SHAPE in $SHAPES; do
    firsts=(); pushes=(); restics=(); seconds=(); rseconds=(); adds=(); radds=(); froz=(); pulls=(); rrestores=()
    for run in $(seq 1 "$RUNS"); do
        cleanup
        repo="s3:http://$S3_HOST:$port/bench/drover-$SHAPE-$run"
        rrepo="s3:http://$S3_HOST:$port/bench/restic-$SHAPE-$run"
        write_cluster "$work"
        cat >>"$work/cluster.yaml" <<EOF
repositories:
  bench:
    url: $repo
    password: \${REPO_PASSWORD}
    env: { AWS_ACCESS_KEY_ID: bench, AWS_SECRET_ACCESS_KEY: bench }
EOF
        write_stack "$work" benchbk node-a
        "$DROVER_BIN" reconcile "$work" >/dev/null 2>&1
        files=$(fill $A benchbk-app "$SIZE" | cut -d' ' -f1)
        mp=$(docker -H $A volume inspect -f '{{.Mountpoint}}' benchbk-data)
        sleep "${SETTLE:-40}"
        # Both repositories are made before anything is timed (drover opens
        # a repository `restic init` made; its first push would make it).
        restic -r "$rrepo" init >/dev/null 2>&1
        restic -r "$repo" init >/dev/null 2>&1
        pair drover_first restic_first
        # 1 MiB changed.
        docker -H $A exec benchbk-app dd if=/dev/urandom of=/data/d0/change bs=1024 count=1024 2>/dev/null
        pair drover_second restic_second
        pair drover_restore restic_restore
    done
    f=$(median "${firsts[@]}"); p=$(median "${pushes[@]}"); r=$(median "${restics[@]}")
    s=$(median "${seconds[@]}"); rs=$(median "${rseconds[@]}")
    pl=$(median "${pulls[@]}"); rr=$(median "${rrestores[@]}")
    echo "$SHAPE, $SIZE MiB in $files files (pushed $way):"
    printf '  first backup: drover %ss (push after the copy %ss), restic %ss: drover/restic throughput %sx\n' \
        "$f" "$p" "$r" "$(ratio "$r" "$f")"
    printf '  second, 1 MiB changed: drover %ss = %s of its first; added %s (restic: %ss, added %s); froze %s\n' \
        "$s" "$(python3 -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2]):.0%}')" "$s" "$f")" \
        "${adds[*]}" "$rs" "${radds[*]}" "${froz[*]}"
    printf '  restore: drover %ss, restic %ss: drover/restic throughput %sx\n' "$pl" "$rr" "$(ratio "$rr" "$pl")"
    echo "  runs: first ${firsts[*]}; push ${pushes[*]}; restic ${restics[*]}; second ${seconds[*]}; restore ${pulls[*]}; restic restore ${rrestores[*]}"
done
