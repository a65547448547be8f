#!/usr/bin/env bash
# Protocol conformance suite: Engine.IO v4 / Socket.IO v5 cases run against the real
# socket-bridge binary (with a gRPC backend on its Events stream) and against the reference
# Node.js Socket.IO server (npm socket.io, pinned), with the same expectations.
# Usage: bash tests/conformance/run.sh [test files...]
# Env: SOCKET_BRIDGE_BIN (binary, default target/debug/socket-bridge),
#      CONFORMANCE_TARGETS (default "bridge,reference"),
#      KNOWN_BRIDGE_BUGS=todo (report known bridge bugs as todo instead of failing).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"

. "$root/tests/lib.sh"
require_bridge_bin

npm_ci "$here"

# Every server a case starts is a child of the node test process; the harness stops them
# after each file. The trap covers an interrupted run: it kills the whole process group of
# the test runner we started, and nothing else.
runner=""
cleanup() {
  if [ -n "$runner" ] && kill -0 "$runner" 2>/dev/null; then
    kill -TERM -- "-$runner" 2>/dev/null || kill -TERM "$runner" 2>/dev/null || true
  fi
}
trap cleanup EXIT INT TERM

if [ "$#" -gt 0 ]; then files=("$@"); else files=(*.test.mjs); fi
# One file at a time: the heartbeat and timeout cases measure timings.
set -m
node --test --test-force-exit --test-concurrency=1 --test-timeout=60000 --test-reporter=spec "${files[@]}" &
runner=$!
set +m
wait "$runner"
