#!/usr/bin/env bash
# Autoscaling reaction on real processes: for each run a fresh `cairn up` and application (one
# cluster of the built-in workload, min 1, max 4, scaling on 2 requests in flight per member,
# default timing) takes a closed-loop load step through the load balancer; the figures are the
# time from the step to the first scale-up decision event and to the first new member's
# `active_at`. Prints figure, median, runs, aim and verdict.
# Usage: bench/autoscale/run.sh [runs, default 5]   (SKIP_BUILD=1 to use the binary already built)
set -euo pipefail
source "$(dirname "$0")/../platform/lib.sh"
AUTOSCALE="$ROOT/bench/autoscale"

RUNS="${1:-5}"
APP="autoscale-bench"
CLUSTER="web"
PROXY_PORT=8080
# The step: 12 requests of 500 ms kept going, six times what one member may hold.
CONCURRENCY=12
LATENCY_MS=500
LOAD_DURATION="${LOAD_DURATION:-5s}"
# After Active, a full window (10 s by default) of idle samples, so the step starts from rest.
SETTLE_S="${SETTLE_S:-11}"
[[ "$SETTLE_S" =~ ^[0-9]+$ ]] || die "SETTLE_S: expected whole seconds, got $SETTLE_S"
DECISION_AIM_MS=2000
# 2 s plus one 25 ms probe of the health check while the member starts.
ACTIVE_AIM_MS=2025

[[ "$RUNS" =~ ^[1-9][0-9]?$ ]] || die "runs: expected 1 to 99, got $RUNS"
PROXY_PORTS=("$PROXY_PORT")
build_release
need_binary

blueprint() {
    cat <<EOF
application: $APP
cartridges:
  $CLUSTER:
    ports:
      - port: 8000
        proxy_port: $PROXY_PORT
components:
  $CLUSTER:
    min: 1
    max: 4
autoscaling_policies:
  bench:
    requests_in_flight: 2
EOF
}

json_field() {
    python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"
}

decisions=()
actives=()
all_actives=()
failed=0
for run in $(seq 1 "$RUNS"); do
    start_cairn
    blueprint >"$DATA/$APP.yaml"
    code="$(curl -sS -m 10 -o "$DATA/last.json" -w '%{http_code}' -H 'Content-Type: application/yaml' \
        --data-binary "@$DATA/$APP.yaml" "http://$API/v1/blueprints?source=$APP.yaml")"
    [ "$code" = 201 ] || die "POST blueprint: HTTP $code $(cat "$DATA/last.json")"
    python3 "$AUTOSCALE/step.py" wait-active --api "$API" --app "$APP" --timeout 30 ||
        die "$APP not Active: $(tail -20 "$DATA/cairn.out")"
    # Plus a random part of a second: the engine's loops run once a second from the start of
    # `cairn up`, and a step always the same time after it would always land at the same phase.
    sleep "$SETTLE_S.$(printf '%03d' $((RANDOM % 1000)))"
    if ! line="$(timeout 60 python3 "$AUTOSCALE/step.py" step --api "$API" --app "$APP" \
        --cluster "$CLUSTER" --url "http://127.0.0.1:$((PROXY_PORT + PROXY_OFFSET))/" --bin "$BIN" \
        --concurrency "$CONCURRENCY" --latency-ms "$LATENCY_MS" --duration "$LOAD_DURATION")"; then
        echo "run $run: FAILED $line"
        failed=$((failed + 1))
    else
        echo "run $run: $line"
        decisions+=("$(json_field "$line" decision_ms)")
        actives+=("$(json_field "$line" active_ms)")
        all_actives+=("$(json_field "$line" last_new_active_ms)")
    fi
    [ -z "${SHOW_EVENTS:-}" ] || python3 "$HERE/clock.py" events --api "$API" --app "$APP"
    stop_cairn
done

verdict_of() {
    if [ "$failed" -gt 0 ]; then
        echo "MISSED: $failed of $RUNS runs without figures"
        return
    fi
    awk -v v="$1" -v aim="$2" 'BEGIN { print (v != "n/a" && v < aim) ? "met" : "MISSED" }'
}

runs_of() {
    local IFS=,
    echo "$*" | sed 's/,/, /g'
}

m_decision="$(median "${decisions[@]}")"
m_active="$(median "${actives[@]}")"
m_all="$(median "${all_actives[@]}")"
echo
echo "cairn $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)," \
    "load: --concurrency $CONCURRENCY --latency-ms $LATENCY_MS --duration $LOAD_DURATION"
{
    echo "figure|median|runs (ms)|aim|verdict"
    echo "load step to first scale-up decision|${m_decision} ms|$(runs_of "${decisions[@]}")|< ${DECISION_AIM_MS} ms|$(verdict_of "$m_decision" "$DECISION_AIM_MS")"
    echo "load step to first new member Active|${m_active} ms|$(runs_of "${actives[@]}")|< ${ACTIVE_AIM_MS} ms|$(verdict_of "$m_active" "$ACTIVE_AIM_MS")"
    echo "load step to every new member Active|${m_all} ms|$(runs_of "${all_actives[@]}")|-|-"
} | column -t -s '|'
[ "$failed" = 0 ]
