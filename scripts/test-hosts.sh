#!/usr/bin/env bash
# Throwaway Docker hosts on this machine, for the demo and the end-to-end
# tests. Each host is its own dockerd in its own network namespace, joined to
# the others by a bridge, so hosts reach each other only through published
# ports at their own addresses — as separate machines would.
#
#   scripts/test-hosts.sh install        install docker.io, busybox-static, iproute2 (Debian)
#   scripts/test-hosts.sh up [N]         start node-a … (N hosts, default 2); idempotent
#   scripts/test-hosts.sh down           stop them all and remove their state
#   scripts/test-hosts.sh env [N]        print DROVER_TEST_HOSTS=… for the tests
#   scripts/test-hosts.sh stop NAME      stop one engine (SIGTERM), keeping its state
#   scripts/test-hosts.sh kill NAME      kill one engine (SIGKILL), keeping its state
#   scripts/test-hosts.sh freeze NAME    pause one engine (SIGSTOP): it stops answering
#   scripts/test-hosts.sh thaw NAME      let a frozen engine go on (SIGCONT)
#   scripts/test-hosts.sh start NAME     start it again (and start a new host:
#                                        DROVER_HOST_DATA_SIZE=300m gives it a
#                                        disk of that size, to fill up;
#                                        DROVER_HOST_TLS=DIR also serves
#                                        tcp://ADDRESS:2376 with --tlsverify)
#
# Host i (1-based) is named node-<letter>, has the address 10.77.0.(10+i),
# the socket /tmp/drover-hosts/node-<letter>.sock, and the test image
# drover-test/busybox:1 (imported from Debian's busybox-static; no registry).
# Must run as root.
set -euo pipefail

STATE=${DROVER_HOSTS_STATE:-/tmp/drover-hosts}
DATA=${DROVER_HOSTS_DATA:-/var/lib/drover-hosts}
BRIDGE=drover0
SUBNET_PREFIX=10.77.0
IMAGE=drover-test/busybox:1

name_of() { printf 'node-%s' "$(printf "\\x$(printf %x $((96 + $1)))")"; }

log() { printf 'test-hosts: %s\n' "$*" >&2; }

# A process that runs (a zombie nobody reaped yet does not).
alive() { [ -n "$1" ] && [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }

install() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  [ -x /bin/busybox ] || missing+=(busybox-static)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v nsenter >/dev/null || missing+=(util-linux)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v curl >/dev/null || missing+=(curl)
  # For the tests: certificates for a TLS engine, memory limits, FIFOs.
  command -v openssl >/dev/null || missing+=(openssl)
  command -v prlimit >/dev/null || missing+=(util-linux)
  command -v fallocate >/dev/null || missing+=(util-linux)
  # The independent reader of drover's backup repositories.
  command -v restic >/dev/null || missing+=(restic)
  # The Git servers the controller follows: git daemon, smart HTTP through
  # lighttpd and git-http-backend, and SSH.
  command -v git >/dev/null || missing+=(git)
  command -v lighttpd >/dev/null || missing+=(lighttpd)
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  # The browser that loads the controller's dashboard in the tests.
  command -v chromium >/dev/null || missing+=(chromium)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # A Docker CLI for humans and scripts; drover itself talks to the API.
  command -v docker >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-cli >/dev/null 2>&1 || true
}

bridge_up() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$SUBNET_PREFIX.1/24" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
}

host_up() {
  local i=$1 name ns addr sock veth
  name=$(name_of "$i")
  ns="drover-$name"
  addr="$SUBNET_PREFIX.$((10 + i))"
  sock="$STATE/$name.sock"
  veth="dv-$name"
  mkdir -p "$STATE" "$DATA/$name/data" "$DATA/$name/exec"
  # A small disk for this engine, to run it full (DROVER_HOST_DATA_SIZE=300m).
  if [ -n "${DROVER_HOST_DATA_SIZE:-}" ] && ! mountpoint -q "$DATA/$name/data"; then
    mount -t tmpfs -o "size=$DROVER_HOST_DATA_SIZE" "drover-$name" "$DATA/$name/data"
  fi

  if ! ip netns list | grep -w "$ns" >/dev/null; then
    ip netns add "$ns"
  fi
  ip netns exec "$ns" ip link set lo up
  if ! ip link show "$veth" >/dev/null 2>&1; then
    ip link add "$veth" type veth peer name eth0 netns "$ns"
  fi
  ip link set "$veth" master "$BRIDGE" up
  if ! ip netns exec "$ns" ip addr show eth0 | grep "$addr/" >/dev/null; then
    ip netns exec "$ns" ip addr add "$addr/24" dev eth0
  fi
  ip netns exec "$ns" ip link set eth0 up

  if [ -S "$sock" ] && docker -H "unix://$sock" version >/dev/null 2>&1; then
    log "$name is up at $addr ($sock)"
  else
    rm -f "$sock"
    # A pid file outliving its daemon would stop the new one.
    if [ -f "$STATE/$name.pid" ] && ! alive "$(cat "$STATE/$name.pid")"; then
      rm -f "$STATE/$name.pid"
    fi
    # `ip netns exec` would hide the cgroup mounts from dockerd: nsenter
    # enters only the network namespace.
    # Also on tcp://ADDRESS:2376 with TLS, client certificates required
    # (DROVER_HOST_TLS=DIR holding ca.pem, server-cert.pem, server-key.pem).
    local tls=()
    if [ -n "${DROVER_HOST_TLS:-}" ]; then
      tls=(-H "tcp://$addr:2376" --tlsverify --tlscacert "$DROVER_HOST_TLS/ca.pem"
        --tlscert "$DROVER_HOST_TLS/server-cert.pem" --tlskey "$DROVER_HOST_TLS/server-key.pem")
    fi
    nsenter --net="/var/run/netns/$ns" \
      dockerd --data-root "$DATA/$name/data" --exec-root "$DATA/$name/exec" \
      -H "unix://$sock" "${tls[@]}" --pidfile "$STATE/$name.pid" \
      --bip 172.31.$((200 + i)).1/24 --default-address-pool "base=172.30.$((i * 16)).0/20,size=24" \
      >"$STATE/$name.log" 2>&1 &
    local t=0
    until docker -H "unix://$sock" version >/dev/null 2>&1; do
      t=$((t + 1))
      if [ $t -gt 150 ]; then
        log "$name did not start; its log:"
        tail -20 "$STATE/$name.log" >&2
        exit 1
      fi
      sleep 0.2
    done
    log "$name started at $addr ($sock)"
  fi

  if ! docker -H "unix://$sock" image inspect "$IMAGE" >/dev/null 2>&1; then
    local root
    root=$(mktemp -d)
    mkdir -p "$root/bin" "$root/tmp" "$root/data" "$root/etc"
    cp /bin/busybox "$root/bin/busybox"
    for app in sh ls cat echo sleep nc httpd wget env test date mkdir rm cp mv touch seq sha256sum dd head tail wc sync true false kill ps grep sed \
      find stat md5sum readlink chmod chown ln printf xargs sort cut tr od du truncate awk expr; do
      ln -sf busybox "$root/bin/$app"
    done
    echo "root:x:0:0:root:/:/bin/sh" >"$root/etc/passwd"
    tar -C "$root" -c . | docker -H "unix://$sock" import \
      -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null
    rm -rf "$root"
    log "$name has $IMAGE"
  fi
}

host_down() {
  local name=$1 ns="drover-$1"
  if [ -f "$STATE/$name.pid" ]; then
    local pid
    pid=$(cat "$STATE/$name.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  # containerd-shims of the host's containers live on in its namespace.
  if ip netns list | grep -w "$ns" >/dev/null; then
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  fi
  ip link del "dv-$name" 2>/dev/null || true
  # Container mounts under the data root must go before the files can.
  { grep -o " $DATA/$name/[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "${DATA:?}/$name" "$STATE/$name.sock" "$STATE/$name.pid"
}

# Everything but `env` runs engines: as root.
if [ "${1:-}" != env ]; then
  . "$(dirname "$0")/as-root.sh"
fi

case "${1:-}" in
  install) install ;;
  up)
    n=${2:-2}
    install
    bridge_up
    for i in $(seq 1 "$n"); do host_up "$i"; done
    ;;
  down)
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^drover-node-' || true); do
      host_down "${ns#drover-}"
    done
    for f in "$STATE"/node-*.pid "$DATA"/node-*; do
      [ -e "$f" ] || continue
      name=$(basename "$f" .pid)
      host_down "$name"
    done
    rm -f "$STATE"/node-*.log
    ip link del "$BRIDGE" 2>/dev/null || true
    log "all test hosts are down"
    ;;
  stop)
    pid=$(cat "$STATE/${2:?name}.pid")
    kill "$pid"
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$STATE/$2.sock" "$STATE/$2.pid"
    log "$2 stopped"
    ;;
  kill)
    # A crash: SIGKILL, no shutdown; the engine's state stays as it was.
    # The engine's own containerd goes with it, as in a machine crash.
    pid=$(cat "$STATE/${2:?name}.pid")
    children=$(pgrep -P "$pid" || true)
    kill -9 "$pid" $children 2>/dev/null || true
    for p in $pid $children; do
      for _ in $(seq 100); do alive "$p" || break; sleep 0.1; done
    done
    # Its processes may linger as zombies here; the pid files must not
    # make the next engine wait for them.
    rm -f "$STATE/$2.sock" "$STATE/$2.pid" "$DATA/$2/exec/containerd/containerd.pid"
    log "$2 killed"
    ;;
  freeze | thaw)
    # A host that stops answering without closing anything (a machine that
    # lost power): its engine and the engine's containerd are paused.
    pid=$(cat "$STATE/${2:?name}.pid")
    sig=STOP
    [ "$1" = thaw ] && sig=CONT
    kill -s "$sig" "$pid" $(pgrep -P "$pid" || true)
    log "$2: $1"
    ;;
  start)
    i=$(( $(printf '%d' "'${2#node-}") - 96 ))
    bridge_up
    host_up "$i"
    ;;
  env)
    n=${2:-2}
    list=()
    for i in $(seq 1 "$n"); do
      name=$(name_of "$i")
      list+=("$name=unix://$STATE/$name.sock@$SUBNET_PREFIX.$((10 + i))")
    done
    (IFS=,; echo "DROVER_TEST_HOSTS=${list[*]}")
    ;;
  *)
    sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
