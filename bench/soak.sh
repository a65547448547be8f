#!/usr/bin/env bash
# The soak: one socket-bridge (release build) holding N clients for D seconds
# under sustained pushes and client events with acks, every message counted.
#
#   bash bench/soak.sh                                  10,000 clients, 600 s (~11 min after builds)
#   bash bench/soak.sh --duration 60 --clients 10000    what tests/soak-ci.sh runs
#
#   --duration S     seconds of load (default 600)
#   --clients N      connected clients, user u<i> each with its own JWT (default 10000)
#   --push-rate R    gRPC Push calls per second, open loop (default 2000; 1 in 200 goes to a
#                    room: 4 rooms of N/4 members)
#   --event-rate R   client events with ack callbacks per second, open loop (default 2000)
# Any other arguments go to `loadgen soak` (e.g. --room-every 100, --rooms 8, --drain 10,
# --bridge-set key=value, --label NAME, --out DIR).
#
# Exit status 0 when nothing was lost, duplicated or misrouted, the bridge's RSS grew less
# than 5% after the warm-up (first 20% of the run, at least 20 s), and its log has no ERROR
# line; 1 otherwise (2: could not run). The bridge's RSS takes a one-time step of about
# 5 KB per client once each client has received about 30 messages (about 12 s at these
# defaults; see RELIABILITY.md "Soak"): with lower rates or more rooms, lengthen the run so
# the step stays inside the warm-up.
#
# The JSON result goes to bench/results/soak/<label>.json (default label
# soak-<clients>-<duration>s), the bridge's logs to bench/results/soak/raw/.
#
# SOAK_BRIDGE_BIN=path soaks that prebuilt binary (no build).
# BRIDGE_SRC=/path/to/a/checkout soaks socket-bridge built from that tree instead of this one
# (BRIDGE_COMMIT=hash names it in the result when that tree is not a git checkout).
# Needs Rust, taskset (util-linux) and two cores: the bridge runs on core 0, the generator
# (clients and backend) on core 1; an open-files limit above N + 500 for one process.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
cd "$ROOT"

SECONDS=0
log() { printf '[soak %4ss] %s\n' "$SECONDS" "$*" >&2; }

duration=600
clients=10000
push_rate=2000
event_rate=2000
label=""
out="$BENCH/results/soak"
rest=()
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    --push-rate) push_rate="$2"; shift 2 ;;
    --event-rate) event_rate="$2"; shift 2 ;;
    --label) label="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) rest+=("$1"); shift ;;
  esac
done
label="${label:-soak-$clients-${duration}s}"

if [ "$(nproc)" -lt 2 ]; then
  echo "bench/soak.sh needs at least 2 cores (bridge and generator get one each)" >&2
  exit 2
fi
command -v taskset >/dev/null || { echo "taskset (util-linux) is required" >&2; exit 2; }
hard="$(ulimit -Hn)"
if [ "$hard" != unlimited ] && [ "$hard" -lt $((clients + 500)) ]; then
  echo "the open-files hard limit ($hard) is too low for $clients clients (needs $((clients + 500)))" >&2
  exit 2
fi

BRIDGE_SRC="${BRIDGE_SRC:-$ROOT}"
if [ -n "${SOAK_BRIDGE_BIN:-}" ]; then
  # A binary built already (the test command's debug build: a release build would add
  # minutes to CI for no extra coverage of the code).
  BRIDGE_BIN="$SOAK_BRIDGE_BIN"
  log "soaking the prebuilt $BRIDGE_BIN"
else
  BRIDGE_BIN="$BENCH/target/bridge/release/socket-bridge"
  log "building socket-bridge (release) from $BRIDGE_SRC into bench/target/bridge"
  cargo build --release --quiet --target-dir "$BENCH/target/bridge" --manifest-path "$BRIDGE_SRC/Cargo.toml"
fi

log "building the load generator (release)"
cargo build --release --quiet --manifest-path "$BENCH/Cargo.toml" --bin loadgen

COMMIT="$(git -C "$BRIDGE_SRC" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git -C "$BRIDGE_SRC" status --porcelain -- src Cargo.toml Cargo.lock build.rs proto 2>/dev/null)" ]; then
  COMMIT="$COMMIT+dirty"
fi
# A BRIDGE_SRC outside git (e.g. `git archive` of a commit) can name its commit.
COMMIT="${BRIDGE_COMMIT:-$COMMIT}"

log "soaking (commit $COMMIT): $clients clients, ${duration}s, $push_rate pushes/s, $event_rate events/s"
status=0
taskset -c 1 "$BENCH/target/release/loadgen" soak \
  --bridge-bin "$BRIDGE_BIN" \
  --clients "$clients" \
  --duration "$duration" \
  --push-rate "$push_rate" \
  --event-rate "$event_rate" \
  --out "$out" \
  --label "$label" \
  --commit "$COMMIT" \
  ${rest[@]+"${rest[@]}"} || status=$?

log "done (exit $status): $out/$label.json"
exit "$status"
