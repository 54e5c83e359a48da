#!/usr/bin/env bash
# Builds the release `cairn` and runs the platform benchmarks: deploy to Active, heal after
# kill -9, and the control plane's resident memory; prints figure, value, aim and verdict.
# Usage: bench/platform/run.sh   (SKIP_BUILD=1 to use the binary already built; HEAL_RUNS=N for
# N kills per heal case instead of 5)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

build_release

RESULTS="$(mktemp)"
export RESULTS
trap 'rm -f "$RESULTS"; cleanup_all' EXIT
failed=0
for bench in deploy heal rss; do
    echo
    echo "== $bench"
    args=()
    [ "$bench" != heal ] || args=("${HEAL_RUNS:-5}")
    timeout 600 "$HERE/$bench.sh" "${args[@]}" || { echo "$bench.sh failed"; failed=1; }
done

echo
echo "cairn $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
{
    echo "figure|value|aim|verdict"
    cat "$RESULTS"
} | column -t -s '|'
exit "$failed"
