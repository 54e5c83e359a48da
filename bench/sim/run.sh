#!/usr/bin/env bash
# Cairn's predictive autoscaler against the Kubernetes HPA's rules, replayed offline on the
# NASA-HTTP July 1995 trace (x100) with `cairn simulate`: demand-exceeded seconds, member-
# seconds, scaling actions, and simulated seconds per wall second.
# Usage: bench/sim/run.sh [rounds for the speed figure, default 3]
# OUT=DIR keeps the JSON reports and SVG charts there (default: a temporary directory).
set -euo pipefail

ROUNDS="${1:-3}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
TRACE="${TRACE:-$ROOT/../shared/traces/nasa-jul1995-60s.csv}"
BLUEPRINT="$ROOT/bench/sim/nasa.yaml"
MODEL=(--scale 100 --capacity 10 --service-time 1s --start-delay 10s)

command -v jq >/dev/null 2>&1 || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null
}

echo "building cairn (release)"
cargo build --quiet --release -p cairn --manifest-path "$ROOT/Cargo.toml"
BIN="$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/cairn"

OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"

# name, from, to: days 1-2 (diurnal), and day 13 (the month's largest spike, then an outage
# and the traffic coming back).
WINDOWS=("diurnal 0 2d" "spike 12d 13d")

printf '%-8s %-16s %10s %14s %8s %8s %6s %12s\n' window policy exceeded_s member_s actions started peak sim_s/wall_s
for window in "${WINDOWS[@]}"; do
    read -r name from to <<<"$window"
    best=""
    for round in $(seq "$ROUNDS"); do
        report="$OUT/$name.$round.json"
        "$BIN" simulate "$BLUEPRINT" --trace "$TRACE" "${MODEL[@]}" --from "$from" --to "$to" \
            --svg "$OUT/$name.svg" --output json >"$report"
        best="$best $report"
    done
    # Totals are the same every round (the replay is deterministic); speed is the best round's.
    jq -s -r '
        (.[0].policies | map(.policy)) as $names
        | $names[] as $p
        | [.[] | .policies[] | select(.policy == $p)] as $runs
        | $runs[0] as $r
        | [$r.policy, $r.demand_exceeded_s, $r.member_seconds, $r.scaling_actions,
           $r.members_started, $r.peak_members,
           ([$runs[].simulated_s_per_wall_s] | max | floor)]
        | @tsv' $best |
        while IFS=$'\t' read -r policy exceeded members actions started peak speed; do
            printf '%-8s %-16s %10s %14s %8s %8s %6s %12s\n' "$name" "$policy" "$exceeded" "$members" "$actions" "$started" "$peak" "$speed"
        done
done
echo "reports and charts: $OUT"
