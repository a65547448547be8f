#!/usr/bin/env bash
# Interop suite: third-party Socket.IO clients on websocket, polling and their default
# transport, each against the real socket-bridge binary (with a gRPC backend) and against
# the stock Node.js Socket.IO 4.8 server, with the same expectations (scenario.mjs).
#   Java  io.socket:socket.io-client 2.1.2   (Maven Central; Debian's JDK 17 and Maven)
#   Rust  rust_socketio 0.6.0, async         (crates.io; rust/ is its own Cargo project)
#   Go    github.com/zishang520/socket.io/clients/socket/v3 3.0.6 (Go module proxy)
# Each client is built once into target/interop-cache and rebuilt only when its sources
# change, so a rerun starts at once.
# Usage: bash tests/interop/run.sh
# Env: SOCKET_BRIDGE_BIN (default target/debug/socket-bridge), INTEROP_CLIENTS (default
#      "java,rust,go"), INTEROP_TRANSPORTS (default "websocket,polling,default").
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"

. "$root/tests/lib.sh"
require_bridge_bin

# The servers: the conformance suite's bridge and backend helpers, and socket.io 4.8.
npm_ci "$root/tests/conformance"
npm_ci "$here"

cache="$root/target/interop-cache"
mkdir -p "$cache"

# A digest of a folder's sources, so a client is rebuilt only when they change.
digest() {
  find "$@" -type f -not -path '*/target/*' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
}

echo "interop: Java client (Maven)"
java_out="$cache/java"
want="$(digest java)"
if [ "$(cat "$java_out/.sources.sha256" 2>/dev/null || true)" != "$want" ]; then
  mvn -q -B -f java/pom.xml -Dmaven.repo.local="$cache/m2" -Dinterop.build.dir="$java_out/build" \
    compile dependency:build-classpath -Dmdep.outputFile="$java_out/classpath.txt"
  echo "$want" >"$java_out/.sources.sha256"
fi
export INTEROP_BIN_JAVA="[\"java\",\"-XX:TieredStopAtLevel=1\",\"-cp\",\"$java_out/build/classes:$(cat "$java_out/classpath.txt")\",\"interop.JavaClient\"]"

echo "interop: Rust client (cargo)"
CARGO_TARGET_DIR="$cache/rust" cargo build --quiet --locked --manifest-path rust/Cargo.toml
(cd rust && cargo fmt --check)
export INTEROP_BIN_RUST="[\"$cache/rust/debug/interop-rust-client\"]"

echo "interop: Go client (go build)"
(
  cd go
  unformatted="$(gofmt -l .)"
  if [ -n "$unformatted" ]; then echo "gofmt: $unformatted" >&2; exit 1; fi
  GOFLAGS=-mod=readonly go vet ./...
  GOFLAGS=-mod=readonly go build -o "$cache/go/go-client" .
)
export INTEROP_BIN_GO="[\"$cache/go/go-client\"]"

# The suite and every server and client it starts are one process group; the trap ends it
# if the run is interrupted.
runner=""
cleanup() {
  if [ -n "$runner" ] && kill -0 "$runner" 2>/dev/null; then
    kill -TERM -- "-$runner" 2>/dev/null || kill -TERM "$runner" 2>/dev/null || true
  fi
}
trap cleanup EXIT INT TERM

set -m
timeout 600 node suite.mjs &
runner=$!
set +m
wait "$runner"
