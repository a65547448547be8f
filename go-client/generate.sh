#!/usr/bin/env bash
# Regenerates socketbridgev1/ from ../proto/socketbridge/v1/bridge.proto with the pinned
# generators (see tools.sh). Run it after every proto change and commit the result;
# check.sh fails when the committed code differs from what this produces.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"
install_generators

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
generate_into "$tmp"
# Replace every generated file (code for a removed proto file disappears too); the
# hand-written doc.go next to them stays.
rm -f "$GO_CLIENT_DIR"/socketbridgev1/*.pb.go
cp "$tmp"/socketbridgev1/*.pb.go "$GO_CLIENT_DIR/socketbridgev1/"
echo "generated $(cd "$GO_CLIENT_DIR" && ls socketbridgev1/*.pb.go | tr '\n' ' ')"
