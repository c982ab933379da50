#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, snapshot, property and CLI
# tests, hostile inputs and the fuzzer's kept inputs, and the end-to-end
# tests against throwaway Docker hosts (two, plus one on a small disk and
# one serving TLS that the tests start themselves). The fuzzer itself runs
# apart: scripts/fuzz.sh.
#
# As root (as CI runs it) it installs what the hosts need, starts them with
# scripts/test-hosts.sh, runs everything, and stops them again (set
# DROVER_KEEP_HOSTS=1 to keep them). Without root the end-to-end tests are
# skipped, loudly. Exits non-zero on the first failure.
set -euo pipefail
static=()
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check
clippy() {
  cargo clippy --workspace --all-targets --locked "${static[@]}" -- -D warnings
}
if [ "$(id -u)" != 0 ]; then
  echo "== cargo clippy -D warnings"
  clippy
fi

if [ "$(id -u)" = 0 ]; then
  echo "== starting two fresh Docker test hosts"
  if [ -z "${DROVER_KEEP_HOSTS:-}" ]; then
    # Engines and data left by an earlier run are not trusted.
    scripts/test-hosts.sh down
  fi
  scripts/test-hosts.sh up 2
  if [ -z "${DROVER_KEEP_HOSTS:-}" ]; then
    trap 'scripts/test-hosts.sh down' EXIT
  fi
  eval "export $(scripts/test-hosts.sh env 2)"
  export DROVER_E2E_REQUIRED=1
  # The controller image is tested too: it packages a static binary (a
  # debug build here, to save the time of an optimised one). The tests are
  # built the same way, so that the dependencies are compiled once.
  echo "== static build for the image"
  export RUSTFLAGS="-C target-feature=+crt-static" RUSTDOCFLAGS="-C target-feature=+crt-static"
  static=(--target x86_64-unknown-linux-gnu)
  cargo build --locked "${static[@]}" -p drover --bin drover
  export DROVER_IMAGE_BINARY=target/x86_64-unknown-linux-gnu/debug/drover
  # A real S3 server for the backup tests: moto's, from PyPI, in a venv
  # of its own (the tests start it on loopback).
  echo "== an S3 server for the backup tests"
  if [ ! -x target/s3-server/bin/moto_server ]; then
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
    fi
    python3 -m venv target/s3-server
    target/s3-server/bin/pip install -q 'moto[server]==5.1.*'
  fi
  export DROVER_S3_SERVER=$PWD/target/s3-server/bin/moto_server
else
  echo "== not root: the end-to-end tests will be skipped"
fi

echo "== cargo test"
# Snapshots are compared, never written, here.
export CI=true INSTA_UPDATE=no
if [ "$(id -u)" != 0 ]; then
  exec cargo test --workspace --locked
fi

# With hosts, the end-to-end test binaries run in two groups at once, each
# on a pair of engines of its own (the tests call theirs node-a and
# node-b whatever the engines' names): most of their time is spent
# waiting on the engines, not on the two cores. The first group has the
# tests that start node-c and node-d or name node-a's address.
scripts/test-hosts.sh start node-e
scripts/test-hosts.sh start node-f
cargo test --workspace --locked "${static[@]}" --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["name"], m["executable"])
' > target/test-binaries
# clippy runs beside the end-to-end tests, which mostly wait on the
# engines; with the same flags and target as the build, it reuses the
# build's proc macros and build scripts.
echo "== cargo clippy -D warnings (beside the tests; its output comes last)"
(renice -n 10 "$BASHPID" >/dev/null; clippy) > target/clippy.log 2>&1 &
clippy_pid=$!
second_group=" data_safety backups gitops controller compose "
run_group() {
  local status=0 name exe
  while read -r name exe; do
    case "$second_group" in *" $name "*) [ "$1" = second ] || continue ;; *) [ "$1" = first ] || continue ;; esac
    echo "     Running $name ($exe)"
    (cd controller && "$exe") || status=1
  done < target/test-binaries
  return $status
}
second_env="node-e=unix:///tmp/drover-hosts/node-e.sock@10.77.0.15,node-f=unix:///tmp/drover-hosts/node-f.sock@10.77.0.16"
DROVER_TEST_HOSTS=$second_env run_group second > target/test-second.log 2>&1 &
second_pid=$!
first=0
run_group first || first=1
second=0
wait "$second_pid" || second=1
echo "== the second group of end-to-end tests"
cat target/test-second.log
lint=0
wait "$clippy_pid" || lint=1
echo "== cargo clippy -D warnings"
cat target/clippy.log
if [ "$lint" != 0 ]; then
  echo "== clippy found warnings"
  exit 1
fi
if [ "$first" != 0 ] || [ "$second" != 0 ]; then
  echo "== some tests failed"
  exit 1
fi
cargo test --workspace --locked "${static[@]}" --doc
