#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, snapshot, property and CLI
# tests. Run from anywhere; exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
# Snapshots are compared, never written, here.
CI=true INSTA_UPDATE=no cargo test --workspace --locked
