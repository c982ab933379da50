# Shared by bench/relocate.sh and bench/relocate-files.sh (sourced): the two
# test hosts, a manifest directory naming them, and a one-app stack whose
# app mounts the volume `data`.
A=unix:///tmp/drover-hosts/node-a.sock
B=unix:///tmp/drover-hosts/node-b.sock

command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
scripts/test-hosts.sh up 2 >/dev/null 2>&1
if [ -z "${DROVER_BIN:-}" ]; then
    cargo build --release --quiet -p drover
    DROVER_BIN=target/release/drover
fi

# write_cluster DIR
write_cluster() {
    cat >"$1/cluster.yaml" <<EOF
kind: Cluster
hosts:
  node-a: { endpoint: '$A', address: 10.77.0.11 }
  node-b: { endpoint: '$B', address: 10.77.0.12 }
EOF
}

# write_stack DIR NAME HOST: the app `app` of stack NAME on HOST
write_stack() {
    cat >"$1/stack.yaml" <<EOF
kind: Stack
name: $2
volumes:
  data: {}
apps:
  app:
    image: drover-test/busybox:1
    host: $3
    pull: never
    command: ['sh', '-c', 'trap "exit 0" TERM; sleep 1000000 & wait']
    volumes: ['data:/data']
    stop_grace_period: 2s
EOF
}

# remove_stack NAME: everything of the stack on both hosts, data included
remove_stack() {
    for h in $A $B; do
        docker -H "$h" ps -aq --filter "label=drover.stack=$1" | xargs -r docker -H "$h" rm -f >/dev/null
        docker -H "$h" volume ls -q --filter "label=drover.stack=$1" | xargs -r docker -H "$h" volume rm -f >/dev/null
        docker -H "$h" network rm "drover-$1" >/dev/null 2>&1 || true
    done
}

# Fills the volume of `docker -H $1` mounted in container $2 with $3 MiB
# of shape $SHAPE.
fill() {
    if [ "$SHAPE" = small ]; then fill_small "$@"; else fill_large "$@"; fi
}

fill_small() {
    docker -H "$1" exec "$2" sh -c '
        scale='"$3"'; i=0
        for d in $(seq 0 63); do mkdir -p /data/d$d; done
        head -c 262144 /dev/urandom >/tmp/block
        # count x KiB, per GiB; scaled to the size asked for.
        for spec in 2:262144 48:4096 384:512 1024:64 16384:4; do
            n=$(( ${spec%%:*} * scale / 1024 )); [ $n -lt 1 ] && n=1
            kb=${spec##*:}
            j=0
            while [ $j -lt $n ]; do
                f=/data/d$((i % 64))/f$i
                if [ $kb -le 256 ]; then head -c $((kb * 1024)) /tmp/block >$f
                else dd if=/dev/urandom of=$f bs=1024 count=$kb 2>/dev/null; fi
                i=$((i + 1)); j=$((j + 1))
            done
        done
        rm -f /tmp/block
        echo "$i files"'
}

fill_large() {
    docker -H "$1" exec "$2" sh -c '
        want=$(( '"$3"' * 1024 )); total=0; i=0
        for d in $(seq 0 19); do mkdir -p /data/d$d; done
        while [ $total -lt $want ]; do
            for kb in 1 1 1 4 16 64 256 1024 4096 16384; do
                [ $total -ge $want ] && break
                [ $kb -gt $((want - total)) ] && kb=$((want - total))
                dd if=/dev/urandom of=/data/d$((i % 20))/f$i bs=1024 count=$kb 2>/dev/null
                total=$((total + kb)); i=$((i + 1))
            done
        done
        echo "$i files"'
}

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.argv[1:]]; print(f"{statistics.median(v):.3f}")' "$@"; }

# Seconds between the first and last JSON log line matching the phases.
copy_seconds() {
    python3 - "$1" <<'EOF'
import json, sys, datetime
t = {}
for line in open(sys.argv[1]):
    try:
        v = json.loads(line)
    except ValueError:
        continue
    f = v.get("fields", {})
    if f.get("message") != "relocation progress":
        continue
    ts = datetime.datetime.fromisoformat(v["timestamp"].replace("Z", "+00:00")).timestamp()
    t.setdefault(f["phase"], ts)
print(f"{t['stop'] - t['copy']:.3f}")
EOF
}
