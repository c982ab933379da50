#!/usr/bin/env bash
# drover's main job on a fresh machine: start two throwaway Docker hosts
# (network namespaces on this machine, no registry needed), reconcile the
# guestbook stack across them, change it, and move its data to the other
# host and back; snapshot and restore its data, and back it up into a
# restic-format repository; then run the controller,
# which heals drift and applies an edit by itself, and last follows a Git
# repository: a push is applied and its commit shown. Needs root and Debian's packages (installed here).
# The hosts stay up afterwards; `scripts/test-hosts.sh down` removes them.
set -euo pipefail
. "$(dirname "$0")/as-root.sh"
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

printf '\n# a consistent snapshot while the store writes (frozen only for its last pass), and a way back\n'
step drover volume snapshot "$dir" guestbook/entries --name demo
step drover volume snapshots "$dir"
kept=$(lines node-a)
docker -H unix:///tmp/drover-hosts/node-a.sock exec guestbook-store sh -c 'echo oops > /data/book.txt'
printf '\nthe guestbook lost its lines (%s left); restore the snapshot:\n' "$(lines node-a)"
step drover volume restore "$dir" guestbook/entries demo --yes
printf '\nthe guestbook has its %s lines back and goes on: %s lines\n' "$kept" "$(lines node-a)"

printf '\n# a copy away from the hosts: a backup in a repository in restic'"'"'s format\n'
export DROVER_REPO_PASSWORD=demo-password
cat >> "$dir/cluster.yaml" <<EOF
repositories:
  offsite:
    url: $work/backups
    password: \${DROVER_REPO_PASSWORD}
EOF
step drover volume snapshot "$dir" guestbook/entries --name pushed --push offsite
step drover volume snapshots "$dir" guestbook/entries
if command -v restic >/dev/null; then
  printf '\n# restic itself reads it\n'
  RESTIC_PASSWORD=$DROVER_REPO_PASSWORD step restic -r "$work/backups" snapshots --tag drover
fi

printf '\n# the controller does all of this by itself, all the time\n'
printf '$ drover controller %s --listen 127.0.0.1:9090 &\n' "$dir"
drover controller "$dir" --listen 127.0.0.1:9090 2> "$work/controller.log" &
ctl=$!
trap 'kill -TERM $ctl 2>/dev/null || true; wait $ctl 2>/dev/null || true; rm -rf "$work"' EXIT
until curl -sf 127.0.0.1:9090/healthz >/dev/null; do sleep 0.5; done
node_b="docker -H unix:///tmp/drover-hosts/node-b.sock"
printf '\n# remove the reader behind its back: the controller makes it again\n'
old=$($node_b inspect -f '{{.Id}}' guestbook-reader)
$node_b rm -f guestbook-reader >/dev/null
until now=$($node_b inspect -f '{{.State.Running}} {{.Id}}' guestbook-reader 2>/dev/null) \
  && [ "${now%% *}" = true ] && [ "${now#* }" != "$old" ]; do sleep 0.2; done
echo "guestbook-reader runs again on node-b"
printf '\n# edit a manifest: the controller applies it\n'
sed -i 's/EVERY: "5"/EVERY: "2"/' "$dir/guestbook.yaml"
until $node_b inspect -f '{{range .Config.Env}}{{println .}}{{end}}' guestbook-reader 2>/dev/null | grep -qx 'EVERY=2'; do sleep 0.2; done
echo "guestbook-reader now runs with EVERY=2"
sleep 1
step curl -s 127.0.0.1:9090/healthz
echo
printf '\n$ curl -s 127.0.0.1:9090/metrics | grep -E "^drover_(passes|heals|manifests_valid)"\n'
curl -s 127.0.0.1:9090/metrics | grep -E "^drover_(passes|heals|manifests_valid)" || true
kill -TERM "$ctl"; wait "$ctl" || true
printf '\nthe controller logged:\n'
grep -E "planned|pass finished" "$work/controller.log" | tail -6 | cut -c1-200

printf '\n# or let the controller follow a Git repository itself\n'
export GIT_AUTHOR_NAME=demo GIT_AUTHOR_EMAIL=demo@example.test GIT_COMMITTER_NAME=demo GIT_COMMITTER_EMAIL=demo@example.test
git init -q --bare -b main "$work/manifests.git"
git -C "$dir" init -q -b main
git -C "$dir" add -A
git -C "$dir" commit -q -m "the guestbook"
git -C "$dir" push -q "$work/manifests.git" HEAD:main
printf '$ drover controller --git %s --interval 2s --listen 127.0.0.1:9090 &\n' "$work/manifests.git"
drover controller --git "$work/manifests.git" --interval 2s --workdir "$work/git-state" \
  --listen 127.0.0.1:9090 2> "$work/controller.log" &
ctl=$!
until curl -sf 127.0.0.1:9090/healthz 2>/dev/null | grep -q '"state":"applied"'; do sleep 0.5; done
printf '\n# commit and push an edit: the controller fetches and applies it\n'
sed -i 's/EVERY: "2"/EVERY: "4"/' "$dir/guestbook.yaml"
git -C "$dir" commit -q -am "reader: every 4 s"
git -C "$dir" push -q "$work/manifests.git" HEAD:main
sha=$(git -C "$dir" rev-parse HEAD)
until $node_b inspect -f '{{range .Config.Env}}{{println .}}{{end}}' guestbook-reader 2>/dev/null | grep -qx 'EVERY=4'; do sleep 0.2; done
until curl -sf 127.0.0.1:9090/healthz | grep -q "\"applied\":{\"sha\":\"$sha\""; do sleep 0.2; done
echo "guestbook-reader now runs with EVERY=4, from commit ${sha:0:12}"
printf '\n$ curl -s 127.0.0.1:9090/healthz | jq .revision\n'
curl -s 127.0.0.1:9090/healthz | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["revision"], indent=2))'
kill -TERM "$ctl"; wait "$ctl" || true
step drover status "$dir"

printf '\nThe hosts are still up: try `%s status %s`, or remove them with `scripts/test-hosts.sh down`.\n' "$drover" "examples/demo"
