#!/usr/bin/env bash
# Dashboard end-to-end test: Debian's Chromium, driven by playwright-core, logs in to
# /dashboard of the real bridge while stock socket.io-client sockets connect, emit and
# disconnect. Saves tests/artifacts/dashboard.png (and dashboard-light.png,
# dashboard-bridge.log).
# Usage: bash tests/dashboard/run.sh
# Env: SOCKET_BRIDGE_BIN (binary, default target/debug/socket-bridge), CHROMIUM_BIN
#      (default /usr/bin/chromium), BRIDGE_LOG=1 (echo the bridge's log),
#      DASHBOARD_PAGE_FROM_SOURCE=1 (serve src/http/dashboard.html from disk, not the
#      copy embedded in the binary).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"

. "$root/tests/lib.sh"
require_bridge_bin

ensure_chromium

npm_ci "$here"

mkdir -p "$root/tests/artifacts"

# The bridge and Chromium are children of the node test process, which stops them. The
# trap covers an interrupted run: it ends the process group of the runner we started,
# and nothing else.
runner=""
cleanup() {
  if [ -n "$runner" ] && kill -0 "$runner" 2>/dev/null; then
    kill -TERM -- "-$runner" 2>/dev/null || kill -TERM "$runner" 2>/dev/null || true
  fi
}
trap cleanup EXIT INT TERM

set -m
node --test --test-force-exit --test-concurrency=1 --test-timeout=120000 --test-reporter=spec dashboard.test.mjs &
runner=$!
set +m
wait "$runner"
