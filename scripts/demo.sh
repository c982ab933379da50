#!/usr/bin/env bash
# drover's main job on a fresh machine: start two throwaway Docker hosts
# (network namespaces on this machine, no registry needed), reconcile the
# guestbook stack across them, change it, and move its data to the other
# host and back. Needs root and Debian's packages (installed here).
# The hosts stay up afterwards; `scripts/test-hosts.sh down` removes them.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

scripts/test-hosts.sh up 2
cargo build --release --quiet
drover=target/release/drover
export PATH="$PWD/target/release:$PATH"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r examples/demo "$work/stacks"
dir="$work/stacks"

step drover validate "$dir"
step drover reconcile "$dir" --dry-run
step drover reconcile "$dir"
step drover status "$dir"
sleep 4
printf '\nthe reader on node-b sees %s lines written on node-a\n' \
  "$(docker -H unix:///tmp/drover-hosts/node-b.sock exec guestbook-reader cat /tmp/count)"

printf '\n# a second run has nothing to do:\n'
step drover reconcile "$dir"

printf '\n# change the reader'"'"'s environment: only the reader is recreated\n'
sed -i 's/EVERY: "3"/EVERY: "5"/' "$dir/guestbook.yaml"
step drover reconcile "$dir"

printf '\n# stop the store behind drover'"'"'s back: the next run starts it again\n'
docker -H unix:///tmp/drover-hosts/node-a.sock stop -t 1 guestbook-store >/dev/null
step drover reconcile "$dir"

lines() { docker -H "unix:///tmp/drover-hosts/$1.sock" exec guestbook-store wc -l /data/book.txt | cut -d' ' -f1; }
printf '\n# place the store on node-b: its volume moves with it\n'
sed -i '0,/host: node-a/s//host: node-b/' "$dir/guestbook.yaml"
step drover reconcile "$dir" --dry-run
before=$(lines node-a)
step drover reconcile "$dir"
sleep 3
printf '\nthe guestbook had %s lines on node-a; on node-b it goes on: %s lines\n' "$before" "$(lines node-b)"
step drover volume ls "$dir"

printf '\n# and back to node-a: only what changed since travels\n'
sed -i '0,/host: node-b/s//host: node-a/' "$dir/guestbook.yaml"
step drover reconcile "$dir"
step drover status "$dir"

printf '\nThe hosts are still up: try `%s status %s`, or remove them with `scripts/test-hosts.sh down`.\n' "$drover" "examples/demo"
