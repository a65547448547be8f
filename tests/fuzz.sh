#!/usr/bin/env bash
# Runs the property-based fuzz targets (tests/fuzz.rs) for about SECONDS seconds each
# round, repeating with fresh seeds until the time is up. Usage: bash tests/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
end=$(( $(date +%s) + seconds ))
cargo test --release --test fuzz --no-run --quiet
round=0
while [ "$(date +%s)" -lt "$end" ]; do
  round=$((round + 1))
  PROPTEST_CASES=5000 cargo test --release --quiet --test fuzz -- --test-threads 2 >/dev/null
  echo "round $round: 5000 cases per target, no failure"
done
