#!/usr/bin/env bash
# Python client test: python-socketio (PyPI, pinned) against the real bridge, with a Node
# harness (harness.mjs) that starts the bridge and a gRPC backend.
# Usage: bash tests/python/run.sh [pytest args...]
# Env: SOCKET_BRIDGE_BIN, KNOWN_BRIDGE_BUGS=todo (known bridge bugs become xfail).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"

. "$root/tests/lib.sh"
require_bridge_bin

# The harness uses the shared bridge/backend helpers of tests/conformance and their npm packages.
conf="$root/tests/conformance"
npm_ci "$conf"

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
