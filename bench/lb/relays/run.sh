#!/usr/bin/env bash
# Latency tail of Cairn's proxy, HAProxy and the minimal relays of this directory in front of
# the same backend, with every process placed by the kernel: which part of a proxy brings
# the tail. bench/README.md ("The tail under kernel placement") has the findings.
# Usage: bench/lb/relays/run.sh [seconds per run, default 4] [rounds, default 8]
set -euo pipefail

DURATION="${1:-4}"
ROUNDS="${2:-8}"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
# shellcheck source=bench/lb/lib.sh
source "$ROOT/bench/lb/lib.sh"

install_missing haproxy wrk python3
LB="$(build_lb_bench)"
echo "building the relays (release)"
CARGO_TARGET_DIR="$(target_dir)/relays" cargo build --quiet --release --manifest-path "$HERE/Cargo.toml"
RELAYS="$(target_dir)/relays/release/relays"
start_work

BACKEND="$(free_port)"
"$LB" backend "$BACKEND" & PIDS+=($!)
declare -A PORT
NAMES=(haproxy epoll epoll-pooled epoll-batched tokio httparse pooled burn hyper cairn)
for name in "${NAMES[@]}"; do PORT[$name]="$(free_port)"; done
"$LB" proxy "${PORT[cairn]}" "$BACKEND" & PIDS+=($!)
for mode in epoll epoll-pooled epoll-batched tokio httparse pooled burn hyper; do
    "$RELAYS" "$mode" "${PORT[$mode]}" "$BACKEND" & PIDS+=($!)
done
haproxy_config "$WORK/haproxy.cfg" "${PORT[haproxy]}" "$BACKEND" 1
haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 & PIDS+=($!)
for name in "${NAMES[@]}"; do wait_for_ports "${PORT[$name]}"; done

declare -A RPS P99
for round in $(seq "$ROUNDS"); do
    echo "round $round of $ROUNDS"
    for name in "${NAMES[@]}"; do
        out="$(wrk -t2 -c64 -d"${DURATION}s" --latency "http://127.0.0.1:${PORT[$name]}/")"
        RPS[$name]+="$(echo "$out" | awk '/^Requests\/sec/ { printf "%.0f", $2 }') "
        P99[$name]+="$(to_ms "$(echo "$out" | awk '$1 == "99%" { print $2 }')") "
    done
done
echo
echo "wrk -t2 -c64 -d${DURATION}s, medians of $ROUNDS interleaved rounds, placed by the kernel, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
printf '%-13s %11s %8s   %s\n' target requests/s 'p99 ms' 'p99 per round'
for name in "${NAMES[@]}"; do
    printf '%-13s %11s %8s   %s\n' "$name" \
        "$(echo "${RPS[$name]}" | tr ' ' '\n' | grep . | median %.0f)" \
        "$(echo "${P99[$name]}" | tr ' ' '\n' | grep . | median %.2f)" "${P99[$name]}"
done
