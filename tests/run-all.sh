#!/usr/bin/env bash
# Runs every test of the project: formatting and lints, unit tests, and the end-to-end
# suites against the real binary with stock clients. Installs what it needs (idempotent)
# and leaves nothing running. Usage: bash tests/run-all.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "npm packages for the test clients (tests/js)"
if [ ! -d tests/js/node_modules ] || [ tests/js/package-lock.json -nt tests/js/node_modules/.package-lock.json ]; then
  npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

step "cargo test (unit and end-to-end)"
cargo test --all-targets
