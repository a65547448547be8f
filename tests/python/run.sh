#!/usr/bin/env bash
# Python client test: python-socketio (PyPI, pinned) against the real bridge, with a Node
# harness (harness.mjs) that starts the bridge and a gRPC backend.
# Usage: bash tests/python/run.sh [pytest args...]
# Env: SOCKET_BRIDGE_BIN, KNOWN_BRIDGE_BUGS=todo (known bridge bugs become xfail).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"

export SOCKET_BRIDGE_BIN="${SOCKET_BRIDGE_BIN:-$root/target/debug/socket-bridge}"
if [ ! -x "$SOCKET_BRIDGE_BIN" ]; then
  echo "socket-bridge binary not found at $SOCKET_BRIDGE_BIN (build it first, or set SOCKET_BRIDGE_BIN)" >&2
  exit 1
fi

# The harness uses the shared bridge/backend helpers of tests/conformance and their npm packages.
conf="$root/tests/conformance"
if [ ! -f "$conf/node_modules/.package-lock.json" ] || [ "$conf/package-lock.json" -nt "$conf/node_modules/.package-lock.json" ]; then
  npm ci --prefix "$conf" --no-audit --no-fund --loglevel=error
fi

# A venv with the pinned packages, reinstalled only when requirements.txt changes.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
want="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [ "$(cat .venv/.requirements.sha256 2>/dev/null || true)" != "$want" ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
  echo "$want" > .venv/.requirements.sha256
fi

runner=""
cleanup() {
  if [ -n "$runner" ] && kill -0 "$runner" 2>/dev/null; then
    kill -TERM -- "-$runner" 2>/dev/null || kill -TERM "$runner" 2>/dev/null || true
  fi
}
trap cleanup EXIT INT TERM

set -m
timeout 300 .venv/bin/python -m pytest -v -p no:cacheprovider "${@:-test_python_client.py}" &
runner=$!
set +m
wait "$runner"
