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

export SOCKET_BRIDGE_BIN="${SOCKET_BRIDGE_BIN:-$root/target/debug/socket-bridge}"
if [ ! -x "$SOCKET_BRIDGE_BIN" ]; then
  echo "socket-bridge binary not found at $SOCKET_BRIDGE_BIN (build it first, or set SOCKET_BRIDGE_BIN)" >&2
  exit 1
fi

# Chromium from Debian, never a downloaded browser build.
export CHROMIUM_BIN="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM_BIN" ]; then
  sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y chromium
fi

npm_ci() { # $1 = folder with package.json + package-lock.json
  if [ ! -f "$1/node_modules/.package-lock.json" ] || [ "$1/package-lock.json" -nt "$1/node_modules/.package-lock.json" ]; then
    npm ci --prefix "$1" --no-audit --no-fund --loglevel=error
  fi
}
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
