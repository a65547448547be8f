#!/usr/bin/env bash
# Runs every test of the project: formatting and lints, unit tests, and the end-to-end
# suites against the real binary with stock clients. Installs what it needs (idempotent)
# and leaves nothing running. Usage: bash tests/run-all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
. tests/lib.sh

steps=0
step() { steps=$((steps + 1)); printf '\n==> %s\n' "$*"; }

# A clean checkout builds every crate once, so cargo's incremental caches only cost disk
# (measured on a clean clone: 1.2 GB of target/debug/incremental beside 2.1 GB of deps for
# `cargo build` and `cargo test --all-targets`). Disk is what a CI machine may be short of, so
# the run leaves them off unless the caller chose otherwise.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# What the whole run writes: about 2.3 GB for clippy, the debug build and its tests, 1.5 GB
# for the release builds (bridge and load generator), 0.9 GB for the interop clients and
# deployment tools, plus the system packages. Shown first, so a run that stops on a full disk says so.
report_disk() {
  df -h --output=avail,target "$root" "${TMPDIR:-/tmp}" 2>/dev/null | sed 's/^/  disk: /' || true
}
report_disk
trap 'echo "run-all: step $steps failed"; report_disk' ERR

step "system packages (Debian): promtool, chromium, redis-server, nginx, JDK and Maven; podman, debootstrap, systemd-analyze for tests/deploy"
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium)
# tests/interop builds its Java client with Maven.
command -v javac >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
# tests/cluster.rs starts its own redis-server and nginx processes on free ports, and Redis
# Clusters joined with redis-cli (Debian's redis-tools, which redis-server depends on).
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
apt_install "${missing[@]}"

step "npm packages for the test clients (tests/js)"
npm_ci tests/js

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

step "cargo build (what the README's start command, cargo run, builds)"
# cargo test unifies dev-dependency features into the build, so `cargo run` (run by a test,
# exactly as the README says) needs this plain build to start without recompiling.
cargo build

rm -rf target/test-logs
step "cargo test (unit and end-to-end)"
cargo test --all-targets

step "Go client: buf lint, generated-code freshness, gofmt, go vet, go test (grpcurl commands of the README)"
bash go-client/check.sh

step "REST API against its OpenAPI document (schemathesis)"
bash tests/openapi/run.sh target/debug/socket-bridge

# Six conformance cases, one Python case and two interop cases expect behaviour that needs
# changes inside socketioxide/engineioxide (first ping timing, socket id = Engine.IO sid,
# closing the transport on a bad placeholder, python-socketio's refused polling connect
# waiting for the next ping because of the early first ping, the reason a backend sees when
# a client drops its connection). They run and are reported as "todo"/"xfail", never counted
# as passing; see README "Known differences from the reference server".
export KNOWN_BRIDGE_BUGS=todo
export SOCKET_BRIDGE_BIN="$PWD/target/debug/socket-bridge"

step "Socket.IO / Engine.IO protocol conformance (bridge and reference server)"
bash tests/conformance/run.sh

step "browser end to end (Debian Chromium, stock socket.io-client)"
bash tests/browser/run.sh

step "Python client (python-socketio)"
bash tests/python/run.sh

step "third-party clients: Java, Rust and Go on every transport, bridge and reference server"
bash tests/interop/run.sh

step "dashboard in Chromium"
bash tests/dashboard/run.sh

step "soak, CI version: 10,000 clients, 60 s of pushes and acked events (release build)"
bash tests/soak-ci.sh

step "deployment: container image, Helm chart, systemd unit (tests/deploy/run.sh)"
# The soak step built the release binary; the image is built from it. helm, ghz, the schema
# package and the debootstrap base are installed once into target/deploy-cache.
DEPLOY_BRIDGE_BIN="$PWD/bench/target/bridge/release/socket-bridge" bash tests/deploy/run.sh

step "no credential in any log line of the whole run"
# Every bridge the tests started left its log in target/test-logs. The tests' API keys,
# JWT secret and signed tokens (base64url of '{"alg":"HS…' starts "eyJhbGciOiJIUz") must
# appear in none of them, nor any Authorization value.
if grep -rlE 'test-api-key-0123456789|second-api-key-0123456789|wrong-key|not-the-key|test-jwt-secret|eyJhbGciOiJIUz|Bearer ' target/test-logs; then
  echo "credentials found in the logs above"; exit 1
fi
echo "$(ls target/test-logs | wc -l) bridge logs scanned, no credentials"

report_disk
# Every step above exits non-zero on failure (set -e), so reaching here means all passed.
echo
echo "run-all: $steps passed, 0 failed"
