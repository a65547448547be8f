#!/usr/bin/env bash
# Runs the socket-bridge benchmark suite end to end and rewrites BENCHMARKS.md with the
# plots under bench/results/.
#
#   bash bench/run.sh            full suite: 3 runs of every server and scenario, tiers
#                                1k/5k/10k/19k, decided connects, the cluster (see README
#                                "Benchmarks" for the duration)
#   bash bench/run.sh --quick    smoke: 1 run, tiers 1k/5k, short windows
#
# BRIDGE_SRC=/path/to/a/checkout measures socket-bridge built from that tree instead of
# this one (e.g. a `git worktree` of another commit or of an experiment).
#
# BENCH_OUT=DIR writes results.json, the plots and the report (DIR/BENCHMARKS.md) there
# instead, leaving bench/results/ and BENCHMARKS.md alone: for partial runs.
#
# Any other arguments go to `loadgen suite`: --servers bridge,sioxide,node,node-forward,floor,
# --scenarios fanout,latency,rtt,auth,cluster, --runs N, --tiers 1000,19000,
# --rtt-rates 20000,40000, --latency-rates 2000,5000, --cluster-instances 1,3,6,
# --cluster-topologies single,cluster, --auth-modes dev,jwt,backend, --bridge-set key=value.
# Only the client event round trips against socket-bridge and bare socketioxide:
#
#   BENCH_OUT=/tmp/rtt bash bench/run.sh --servers bridge,sioxide --scenarios rtt --tiers 1000,19000
#
# Needs Rust, Node.js 20 with npm, redis-server (cluster scenario), taskset (util-linux) and
# two cores: servers run on core 0, the generator on core 1. Loopback only; every phase is
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

log "building the load generator, the socketioxide peer and the floor peer (release)"
cargo build --release --quiet --manifest-path "$BENCH/Cargo.toml"

if ! command -v redis-server >/dev/null && { [[ " $* " != *" --scenarios "* ]] || [[ " $* " == *cluster* ]]; }; then
  echo "redis-server is required for the cluster scenario (apt-get install redis-server), or pass --scenarios without cluster" >&2
  exit 1
fi

COMMIT="$(git -C "$BRIDGE_SRC" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git -C "$BRIDGE_SRC" status --porcelain -- src Cargo.toml Cargo.lock build.rs proto 2>/dev/null)" ]; then
  COMMIT="$COMMIT+dirty"
fi

OUT="${BENCH_OUT:-$BENCH/results}"
MD="$ROOT/BENCHMARKS.md"
if [ -n "${BENCH_OUT:-}" ]; then
  MD="$OUT/BENCHMARKS.md"
  # The hand-written analysis goes into every report.
  mkdir -p "$OUT" && cp "$BENCH/results/ANALYSIS.md" "$OUT/ANALYSIS.md"
fi

log "running the suite (commit $COMMIT)"
taskset -c 1 "$BENCH/target/release/loadgen" suite \
  --bridge-bin "$BENCH/target/bridge/release/socket-bridge" \
  --sioxide-bin "$BENCH/target/release/sioxide-peer" \
  --floor-bin "$BENCH/target/release/floor-peer" \
  --node-dir "$BENCH/node-peer" \
  --out "$OUT" \
  --md "$MD" \
  --commit "$COMMIT" \
  "$@"

log "done: $MD and $OUT/*.svg"
