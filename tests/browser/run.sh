#!/usr/bin/env bash
# Browser end-to-end tests: Debian's Chromium (installed here if missing) driven by npm
# playwright-core, a test page with the stock socket.io-client bundle, the real bridge and a
# gRPC backend. Screenshots go to tests/artifacts/.
# Usage: bash tests/browser/run.sh
# Env: SOCKET_BRIDGE_BIN, CHROMIUM_BIN (default /usr/bin/chromium), ARTIFACTS_DIR,
#      KNOWN_BRIDGE_BUGS=todo (known bridge bugs are reported as todo instead of failing).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"

. "$root/tests/lib.sh"
require_bridge_bin

ensure_chromium
npm_ci "$here"                   # playwright-core, socket.io-client (the page's bundle)
npm_ci "$root/tests/conformance" # shared bridge/backend helpers and their gRPC packages

export ARTIFACTS_DIR="${ARTIFACTS_DIR:-$root/tests/artifacts}"
mkdir -p "$ARTIFACTS_DIR"

runner=""
cleanup() {
  if [ -n "$runner" ] && kill -0 "$runner" 2>/dev/null; then
    kill -TERM -- "-$runner" 2>/dev/null || kill -TERM "$runner" 2>/dev/null || true
  fi
}
trap cleanup EXIT INT TERM

set -m
node --test --test-force-exit --test-timeout=120000 --test-reporter=spec browser.test.mjs &
runner=$!
set +m
wait "$runner"
