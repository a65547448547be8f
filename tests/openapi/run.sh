#!/usr/bin/env bash
# Schemathesis against the REST API's served OpenAPI document: generated requests (valid
# and invalid) must never get a 5xx, and every response must match the documented schema.
# Usage: bash tests/openapi/run.sh [path-to-socket-bridge-binary]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-${SOCKET_BRIDGE_BIN:-$root/target/debug/socket-bridge}}"
key="schemathesis-api-key-0123456789"
venv="$here/.venv"

if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis==4.32.5'
fi

log="$(mktemp)"
"$bin" --http-listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --set log.format=json \
  --set "grpc.api_keys=[\"$key\"]" --set http.rate_per_key_per_second=100000 --set http.burst_per_key=100000 \
  --set http.rate_per_ip_per_second=100000 --set http.burst_per_ip=100000 2>"$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$log"' EXIT

http=""
for _ in $(seq 1 100); do
  http="$(grep -o '"http":"[^"]*"' "$log" | head -1 | cut -d'"' -f4 || true)"
  [ -n "$http" ] && break
  sleep 0.1
done
[ -n "$http" ] || { echo "bridge did not start"; cat "$log"; exit 1; }

cd "$here"
"$venv/bin/st" run "http://$http/api/v1/openapi.json" \
  --header "Authorization: Bearer $key" \
  --checks all \
  --max-examples 40 \
  --seed 1 \
  --request-timeout 10 \
  --no-color
