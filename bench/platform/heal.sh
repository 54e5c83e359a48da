#!/usr/bin/env bash
# Time from a member's death (kill -9 of its pid, found through /proc environ CAIRN_MEMBER_ID)
# to its replacement being Active, polled every 10 ms on the native API. Two cases:
#  - single-cartridge-app (no termination behaviour): the member alone is replaced;
#  - complex-app-with-lb: every group says terminate-all, so one member's death restarts its
#    group instances up to the application, and the figure is the time until the killed
#    cluster has an Active replacement and the application is Active again.
# Each case: one `cairn up`, one deploy, then RUNS kills of the cluster's current member; at the
# end the member processes must match the members in the runtime view.
# Usage: bench/platform/heal.sh [runs, default 5]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

RUNS="${1:-5}"
# Under 1 s plus the default Stratos health check interval of 1000 ms.
AIM_MS=2000
PER_RUN_TIMEOUT=10
need_binary

verdict_of() {
    awk -v v="$1" -v aim="$AIM_MS" 'BEGIN { print (v != "n/a" && v < aim) ? "met" : "MISSED" }'
}

# heal_case SAMPLE CLUSTER: prints each run, then reports the medians. A run that does not
# heal within PER_RUN_TIMEOUT counts as hung; the next run gets a fresh `cairn up`.
heal_case() {
    local sample="$1" cluster="$2" observed=() app_active=() line run hung=0 fresh=1
    use_sample "$sample"
    for run in $(seq 1 "$RUNS"); do
        if [ "$fresh" = 1 ]; then
            start_cairn
            deploy_and_wait
            sleep 1
            fresh=0
        fi
        if ! line="$(timeout $((PER_RUN_TIMEOUT + 10)) python3 "$HERE/clock.py" heal --api "$API" \
            --data-dir "$DATA" --app "$APP" --cluster "$cluster" --timeout "$PER_RUN_TIMEOUT")"; then
            echo "run $run: HUNG $line"
            [ -z "${SHOW_EVENTS:-}" ] || python3 "$HERE/clock.py" events --api "$API" --app "$APP"
            hung=$((hung + 1))
            stop_cairn
            fresh=1
            continue
        fi
        echo "run $run: $line"
        observed+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["observed_ms"])' "$line")")
        app_active+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["app_active_ms"])' "$line")")
        # Let the stops of what was replaced finish before the next kill.
        sleep 1
    done
    local strays=""
    if [ "$fresh" = 0 ]; then
        # A member stopped while it was still starting must not leave its process behind.
        sleep 3
        local processes in_view
        processes="$(member_pids "$DATA" | wc -l)"
        in_view="$(python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); from clock import Native, members
print(len(members(Native(sys.argv[2]).view(sys.argv[3]) or {})))' "$HERE" "$API" "$APP")"
        echo "after the kills: $processes member processes, $in_view members in the runtime view"
        [ "$processes" = "$in_view" ] || strays="; $processes member processes for $in_view members"
        stop_cairn
    fi
    local what="heal $APP ($cluster): kill -9 to replacement Active"
    local m_observed m_app healed=$((RUNS - hung)) v_observed v_app
    m_observed="$(median "${observed[@]}")"
    m_app="$(median "${app_active[@]}")"
    v_observed="$(verdict_of "$m_observed")"
    v_app="$(verdict_of "$m_app")"
    if [ "$hung" -gt 0 ]; then
        v_observed="MISSED: $hung of $RUNS hung > ${PER_RUN_TIMEOUT} s"
        v_app="$v_observed"
    fi
    if [ -n "$strays" ]; then
        v_observed="MISSED$strays"
        v_app="$v_observed"
    fi
    echo "$what, median of the $healed of $RUNS that healed: ${m_observed} ms; application Active again: ${m_app} ms; aim < ${AIM_MS} ms: $v_observed"
    report "$what" "${m_observed} ms" "< ${AIM_MS} ms" "$v_observed"
    report "heal $APP: kill -9 to application Active" "${m_app} ms" "< ${AIM_MS} ms" "$v_app"
}

heal_case single my-php
heal_case complex my-tomcat1-group9
