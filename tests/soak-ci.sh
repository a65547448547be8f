#!/usr/bin/env bash
# The soak's CI version (the 10-minute one is `bash bench/soak.sh`):
# 10,000 clients for 60 s against the release build, 2,000 gRPC pushes/s (1 in 200 to a room
# of 2,500) and 2,000 client events/s with acks, every message counted. Fails on any lost,
# duplicated or misrouted message, RSS growth of 5% or more after the 20 s warm-up, or an
# ERROR line in the bridge's log. Builds what it needs (release, into bench/target like
# bench/run.sh); needs 2 cores and an open-files limit of at least 10,500.
#
# Result: tests/artifacts/soak-ci/soak-ci.json, the bridge's logs in tests/artifacts/soak-ci/raw/.
# Extra arguments go to bench/soak.sh (e.g. --duration 120).
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash bench/soak.sh --clients 10000 --duration 60 --push-rate 2000 --event-rate 2000 \
  --label soak-ci --out "$PWD/tests/artifacts/soak-ci" "$@"
