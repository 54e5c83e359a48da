#!/usr/bin/env bash
# Resident memory of the `cairn up` process alone (members are separate processes and not
# counted), idle and with complex-app-with-lb deployed and Active after a settle.
# Usage: bench/platform/rss.sh [settle seconds, default 5]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SETTLE="${1:-5}"
AIM_KIB=$((30 * 1024))
need_binary

status_kib() {
    awk -v key="$2:" '$1 == key { print $2 }' "/proc/$1/status"
}

start_cairn
sleep 1
idle_kib="$(status_kib "$CAIRN_PID" VmRSS)"
deploy_and_wait
sleep "$SETTLE"
rss_kib="$(status_kib "$CAIRN_PID" VmRSS)"
hwm_kib="$(status_kib "$CAIRN_PID" VmHWM)"
threads="$(status_kib "$CAIRN_PID" Threads)"
members=0
members_kib=0
while read -r pid _id; do
    kib="$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)"
    members=$((members + 1))
    members_kib=$((members_kib + ${kib:-0}))
done < <(member_pids "$DATA")

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
echo "cairn up pid $CAIRN_PID: idle $(mib "$idle_kib") MiB; Active + ${SETTLE} s: VmRSS $(mib "$rss_kib") MiB, VmHWM $(mib "$hwm_kib") MiB, $threads threads"
echo "members (not counted): $members processes, $(mib "$members_kib") MiB together"
echo "smaps_rollup:"
grep -E '^(Rss|Pss|Pss_Anon|Pss_File|Anonymous|Shared_Clean|Private_Clean|Private_Dirty)' "/proc/$CAIRN_PID/smaps_rollup" | sed 's/^/  /'
verdict=$(awk -v v="$rss_kib" -v aim="$AIM_KIB" 'BEGIN { print (v < aim) ? "met" : "MISSED" }')
echo "control plane VmRSS with $APP Active: $(mib "$rss_kib") MiB; aim < 30 MiB: $verdict"
report "control plane VmRSS ($APP Active)" "$(mib "$rss_kib") MiB" "< 30 MiB" "$verdict"
report "control plane VmRSS idle" "$(mib "$idle_kib") MiB" "-" "-"
stop_cairn
