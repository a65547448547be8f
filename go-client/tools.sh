# Pinned build tools for go-client. Sourced by generate.sh and check.sh; not run directly.
#
# Every tool lands in go-client/.bin (git-ignored) and is reinstalled only when its pinned
# version changes, so sourcing this file and installing is cheap after the first
# run. Bump a version here, run ./generate.sh, and commit the regenerated code with it.

PROTOC_GEN_GO_VERSION=v1.36.12      # google.golang.org/protobuf/cmd/protoc-gen-go
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2   # google.golang.org/grpc/cmd/protoc-gen-go-grpc
GRPCURL_VERSION=v1.9.4              # github.com/fullstorydev/grpcurl/cmd/grpcurl
# buf is pinned in package.json / package-lock.json (npm @bufbuild/buf).

GO_CLIENT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS_BIN="$GO_CLIENT_DIR/.bin"
BUF="$GO_CLIENT_DIR/node_modules/.bin/buf"
# The API's proto tree. Overridable so the freshness check can be tried on a modified copy
# without touching the real one (e2e/generated_test.go does).
PROTO_DIR="$(cd "${PROTO_DIR:-$GO_CLIENT_DIR/../proto}" && pwd)"

# go_tool NAME PACKAGE VERSION: installs PACKAGE@VERSION into .bin unless that exact
# version is already there (a stamp file records what was installed).
go_tool() {
  local name=$1 pkg=$2 version=$3 stamp="$TOOLS_BIN/.$1.version"
  if [ -x "$TOOLS_BIN/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$pkg@$version" ]; then
    return 0
  fi
  echo "installing $pkg@$version into $TOOLS_BIN" >&2
  GOBIN="$TOOLS_BIN" go install "$pkg@$version" || return 1
  echo "$pkg@$version" >"$stamp"
}

# install_buf: npm ci into go-client/node_modules when the lockfile is newer than the install.
install_buf() {
  if [ ! -x "$BUF" ] || [ "$GO_CLIENT_DIR/package-lock.json" -nt "$GO_CLIENT_DIR/node_modules/.package-lock.json" ]; then
    echo "installing buf (npm ci in $GO_CLIENT_DIR)" >&2
    npm ci --prefix "$GO_CLIENT_DIR" --no-audit --no-fund --loglevel=error
  fi
}

# go_tools SPEC...: installs several "name pkg version" specs at once (in parallel: on a
# fresh machine compiling grpcurl dominates the run time).
go_tools() {
  local spec pids=() rc=0
  for spec in "$@"; do
    # shellcheck disable=SC2086 # spec is "name pkg version"
    go_tool $spec &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || rc=1
  done
  return "$rc"
}

GEN_GO="protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go $PROTOC_GEN_GO_VERSION"
GEN_GO_GRPC="protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc $PROTOC_GEN_GO_GRPC_VERSION"
GRPCURL="grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl $GRPCURL_VERSION"

# install_generators: what generate.sh needs.
install_generators() {
  install_buf
  go_tools "$GEN_GO" "$GEN_GO_GRPC"
}

# install_all_tools: what check.sh needs (the generators and grpcurl for the tests).
install_all_tools() {
  install_buf
  go_tools "$GEN_GO" "$GEN_GO_GRPC" "$GRPCURL"
}

# generate_into DIR: generates the Go code for $PROTO_DIR under DIR (DIR/socketbridgev1/...)
# with the pinned plugins, which come first on PATH so no other install can stand in.
generate_into() {
  local out=$1
  (
    cd "$GO_CLIENT_DIR"
    PATH="$TOOLS_BIN:$PATH" "$BUF" generate "$PROTO_DIR" --config buf.yaml --template buf.gen.yaml --output "$out"
  )
}

# check_generated: regenerates into a temporary directory and compares with the committed
# socketbridgev1/*.pb.go; prints what differs and returns 1 when the code is stale.
check_generated() {
  local tmp stale=0 f committed
  tmp=$(mktemp -d)
  generate_into "$tmp" || { rm -rf "$tmp"; return 1; }
  for f in "$tmp"/socketbridgev1/*.pb.go; do
    committed="$GO_CLIENT_DIR/socketbridgev1/$(basename "$f")"
    if [ ! -f "$committed" ]; then
      echo "missing: socketbridgev1/$(basename "$f")"
      stale=1
    elif ! diff -u --label "committed socketbridgev1/$(basename "$f")" --label "regenerated from $PROTO_DIR" \
      "$committed" "$f" >"$tmp/diff"; then
      echo "differs: socketbridgev1/$(basename "$f") (first 40 lines of the diff):"
      head -n 40 "$tmp/diff"
      stale=1
    fi
  done
  for f in "$GO_CLIENT_DIR"/socketbridgev1/*.pb.go; do
    if [ ! -f "$tmp/socketbridgev1/$(basename "$f")" ]; then
      echo "no longer generated: socketbridgev1/$(basename "$f")"
      stale=1
    fi
  done
  rm -rf "$tmp"
  if [ "$stale" = 1 ]; then
    echo "generated code is stale: run go-client/generate.sh and commit the result"
    return 1
  fi
  echo "socketbridgev1/*.pb.go match $PROTO_DIR"
}
