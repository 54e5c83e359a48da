#!/usr/bin/env bash
# Time from the deploy request to Active for complex-app-with-lb on the process runtime.
# Each run starts a fresh `cairn up` on a fresh data directory, posts the artifacts with curl
# through the Stratos API, then times POST .../deploy/application-policy-1 until the native
# API shows the application Active (polled every 10 ms). The members' own created/active
# times give a second figure: deploy request to the last member's active_at.
# Usage: bench/platform/deploy.sh [runs, default 5]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

RUNS="${1:-5}"
AIM_MS=2000
need_binary

observed=()
last_active=()
for run in $(seq 1 "$RUNS"); do
    start_cairn
    post_artifacts
    line="$(timeout 40 python3 "$HERE/clock.py" deploy --stratos "$STRATOS" --api "$API" \
        --app "$APP" --policy "$POLICY" --timeout 30)" || die "run $run: $(tail -20 "$DATA/cairn.out")"
    echo "run $run: $line"
    observed+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["observed_ms"])' "$line")")
    last_active+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["last_active_ms"])' "$line")")
    if [ -n "${SHOW_EVENTS:-}" ]; then
        python3 "$HERE/clock.py" events --api "$API" --app "$APP"
    fi
    stop_cairn
done

median_observed="$(median "${observed[@]}")"
median_members="$(median "${last_active[@]}")"
verdict=$(awk -v v="$median_observed" -v aim="$AIM_MS" 'BEGIN { print (v < aim) ? "met" : "MISSED" }')
echo "deploy to Active, median of $RUNS: ${median_observed} ms observed (10 ms polling), ${median_members} ms to the last member's active_at; aim < ${AIM_MS} ms: $verdict"
report "deploy $APP to Active (observed)" "${median_observed} ms" "< ${AIM_MS} ms" "$verdict"
report "deploy $APP to last member active_at" "${median_members} ms" "< ${AIM_MS} ms" \
    "$(awk -v v="$median_members" -v aim="$AIM_MS" 'BEGIN { print (v < aim) ? "met" : "MISSED" }')"
