#!/usr/bin/env bash
# Builds the release `cairn` and runs the platform benchmarks: deploy to Active, heal after
# kill -9, and the control plane's resident memory; prints figure, value, aim and verdict.
# Usage: bench/platform/run.sh   (SKIP_BUILD=1 to use the binary already built)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

if [ -z "${SKIP_BUILD:-}" ]; then
    echo "building cairn (release)"
    timeout 3600 cargo build --quiet --release -p cairn --manifest-path "$ROOT/Cargo.toml"
fi

RESULTS="$(mktemp)"
export RESULTS
trap 'rm -f "$RESULTS"' EXIT
failed=0
for bench in deploy heal rss; do
    echo
    echo "== $bench"
    timeout 300 "$HERE/$bench.sh" || { echo "$bench.sh failed"; failed=1; }
done

echo
echo "cairn $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
{
    echo "figure|value|aim|verdict"
    cat "$RESULTS"
} | column -t -s '|'
exit "$failed"
