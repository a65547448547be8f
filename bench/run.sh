#!/usr/bin/env bash
# Runs the socket-bridge benchmark suite end to end and rewrites BENCHMARKS.md with the
# plots under bench/results/.
#
#   bash bench/run.sh            full suite: 3 runs per server, tiers 1k/5k/10k/19k (~15 min)
#   bash bench/run.sh --quick    smoke: 1 run, tiers 1k/5k, short windows (~3 min after builds)
#
# BRIDGE_SRC=/path/to/a/checkout measures socket-bridge built from that tree instead of
# this one (e.g. a `git worktree` of another commit or of an experiment).
#
# Any other arguments go to `loadgen suite` (e.g. --servers bridge,sioxide, --runs 5,
# --bridge-set key=value). Needs Rust, Node.js 20 with npm, taskset (util-linux) and two
# cores: servers run on core 0, the generator on core 1. Loopback only; every phase is
# bounded in time and count.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
cd "$ROOT"

SECONDS=0
log() { printf '[bench %4ss] %s\n' "$SECONDS" "$*" >&2; }

if [ "$(nproc)" -lt 2 ]; then
  echo "bench/run.sh needs at least 2 cores (server and generator get one each)" >&2
  exit 1
fi
command -v taskset >/dev/null || { echo "taskset (util-linux) is required" >&2; exit 1; }

log "installing the Node peer's packages (npm ci, lockfile)"
(cd "$BENCH/node-peer" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

BRIDGE_SRC="${BRIDGE_SRC:-$ROOT}"
log "building socket-bridge (release) from $BRIDGE_SRC into bench/target/bridge"
cargo build --release --quiet --target-dir "$BENCH/target/bridge" --manifest-path "$BRIDGE_SRC/Cargo.toml"

log "building the load generator and the socketioxide peer (release)"
cargo build --release --quiet --manifest-path "$BENCH/Cargo.toml"

COMMIT="$(git -C "$BRIDGE_SRC" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git -C "$BRIDGE_SRC" status --porcelain -- src Cargo.toml Cargo.lock build.rs proto 2>/dev/null)" ]; then
  COMMIT="$COMMIT+dirty"
fi

log "running the suite (commit $COMMIT)"
taskset -c 1 "$BENCH/target/release/loadgen" suite \
  --bridge-bin "$BENCH/target/bridge/release/socket-bridge" \
  --sioxide-bin "$BENCH/target/release/sioxide-peer" \
  --node-dir "$BENCH/node-peer" \
  --out "$BENCH/results" \
  --md "$ROOT/BENCHMARKS.md" \
  --commit "$COMMIT" \
  "$@"

log "done: BENCHMARKS.md and bench/results/*.svg"
