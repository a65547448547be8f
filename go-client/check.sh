#!/usr/bin/env bash
# Every check of the Go side, as CI runs it: pinned tools, buf lint of the proto, the
# generated code is what the proto produces, gofmt, go vet, tidy modules, then the tests
# (which start the real bridge binary and stock Socket.IO clients in Node).
#
# Needs: Go, Node.js with npm, the socket-bridge binary (default ../target/debug, or
# $SOCKET_BRIDGE_BIN) and the npm packages of ../tests/js (installed here if missing).
# Idempotent; installs only what is missing or out of date. Usage: go-client/check.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"
cd "$GO_CLIENT_DIR"
REPO_DIR="$(cd .. && pwd)"
EXAMPLE_DIR="$REPO_DIR/examples/go-chat"

step() { printf '\n==> go-client: %s\n' "$*"; }
failed=0
fail() { printf 'FAILED: %s\n' "$*" >&2; failed=1; }

step "pinned tools (buf, protoc-gen-go, protoc-gen-go-grpc, grpcurl)"
install_all_tools
if [ ! -d "$REPO_DIR/tests/js/node_modules" ] || [ "$REPO_DIR/tests/js/package-lock.json" -nt "$REPO_DIR/tests/js/node_modules/.package-lock.json" ]; then
  npm ci --prefix "$REPO_DIR/tests/js" --no-audit --no-fund --loglevel=error
fi

step "buf lint $PROTO_DIR (STANDARD rules)"
"$BUF" lint "$PROTO_DIR" --config buf.yaml || fail "buf lint"

step "generated code is up to date with the proto"
check_generated || fail "generated code is stale"

step "gofmt"
unformatted=$(find "$GO_CLIENT_DIR" "$EXAMPLE_DIR" -name '*.go' -not -path '*/node_modules/*' -not -path '*/.bin/*' -print0 | xargs -0 gofmt -l)
if [ -n "$unformatted" ]; then
  echo "$unformatted"
  fail "gofmt: run gofmt -w on the files above"
fi

step "go vet, go mod tidy (go-client and examples/go-chat)"
for dir in "$GO_CLIENT_DIR" "$EXAMPLE_DIR"; do
  (cd "$dir" && go vet ./...) || fail "go vet in $dir"
  (cd "$dir" && go mod tidy -diff) || fail "go.mod/go.sum in $dir are not tidy: run go mod tidy there"
done

if [ "$failed" != 0 ]; then
  echo "go-client checks failed; tests not run" >&2
  exit 1
fi

step "go test ./... (real bridge: ${SOCKET_BRIDGE_BIN:-../target/debug/socket-bridge})"
go test -race -count=1 -timeout 4m ./...
