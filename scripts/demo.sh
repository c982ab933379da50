#!/usr/bin/env bash
# A tour of drover on the example stacks, with no Docker host needed:
# validate, draw the graph, plan a fresh cluster, then plan moving the
# metrics database from node-a to node-b against the saved state of a
# running cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
drover=target/release/drover

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step "$drover" validate examples/stacks
step "$drover" graph examples/stacks --format mermaid
step "$drover" reconcile examples/stacks --dry-run --observed examples/observed/empty.json

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r examples/stacks "$work/stacks"
sed -i '/^  tsdb:$/,/^  [a-z]/ s/host: node-a/host: node-b/' "$work/stacks/metrics.yaml"
printf '\n# metrics.yaml now places the tsdb app on node-b:\n'
diff -u examples/stacks/metrics.yaml "$work/stacks/metrics.yaml" || true
step "$drover" reconcile "$work/stacks" --dry-run --observed examples/observed/running.json
