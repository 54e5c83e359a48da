#!/usr/bin/env bash
# Requests per second and latency of Cairn's proxy next to HAProxy and nginx, all on one
# thread (PROXY_THREADS=N: N threads, worker processes for nginx), in front of the same backend
# on loopback.
# Usage: bench/lb/run.sh [seconds per run, default 5] [rounds, default 5]
# Each placement measures at saturation (wrk as fast as it can) and at a paced load (PACE_MS,
# default 2, between a response and the next request on each connection).
# KEEP_WORK=1 keeps the temporary directory with the HAProxy and nginx configs and logs.
# Runs twice: first with each proxy on the last core and wrk and the backend on the others
# (PIN=1), then with every process placed by the kernel (PIN=0); PIN=1 or PIN=0 runs only
# that one. bench/README.md says why both.
set -euo pipefail

DURATION="${1:-5}"
ROUNDS="${2:-5}"
WARMUP=2
CONNECTIONS=64
THREADS=2
PROXY_THREADS="${PROXY_THREADS:-1}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=bench/lb/lib.sh
source "$ROOT/bench/lb/lib.sh"
if [ -z "${PIN:-}" ]; then
    PIN=1 "$0" "$@"
    echo
    PIN=0 "$0" "$@"
    exit
fi
CORES="$(nproc)"
if [ "$PIN" != 0 ] && [ "$CORES" -ge 2 ]; then
    PROXY_CPUS="$((CORES - 1))"
    LOAD_CPUS="0"
    [ "$CORES" -gt 2 ] && LOAD_CPUS="0-$((CORES - 2))"
    PROXY_ON=(taskset -c "$PROXY_CPUS")
    LOAD_ON=(taskset -c "$LOAD_CPUS")
    PLACEMENT="proxies on cpu $PROXY_CPUS, wrk and backend on cpu $LOAD_CPUS"
else
    PROXY_ON=()
    LOAD_ON=()
    PLACEMENT="placed by the kernel"
fi

install_missing haproxy nginx wrk python3
BIN="$(build_lb_bench)"

start_work

BACKEND_PORT="$(free_port)"
CAIRN_PORT="$(free_port)"
HAPROXY_PORT="$(free_port)"
NGINX_PORT="$(free_port)"

"${LOAD_ON[@]}" "$BIN" backend "$BACKEND_PORT" & PIDS+=($!)
"${PROXY_ON[@]}" "$BIN" proxy "$CAIRN_PORT" "$BACKEND_PORT" "$PROXY_THREADS" & PIDS+=($!)

haproxy_config "$WORK/haproxy.cfg" "$HAPROXY_PORT" "$BACKEND_PORT" "$PROXY_THREADS"
"${PROXY_ON[@]}" haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 & PIDS+=($!)

mkdir -p "$WORK/nginx"
cat >"$WORK/nginx.conf" <<CFG
worker_processes $PROXY_THREADS;
daemon off;
master_process $([ "$PROXY_THREADS" -gt 1 ] && echo on || echo off);
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    upstream backend {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 128;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
}
CFG
"${PROXY_ON[@]}" nginx -p "$WORK/nginx" -c "$WORK/nginx.conf" & PIDS+=($!)

wait_for_ports "$BACKEND_PORT" "$CAIRN_PORT" "$HAPROXY_PORT" "$NGINX_PORT"

# CPU time (user + system, in clock ticks) a process and its children (nginx's workers) have
# used so far.
cpu_ticks() {
    # shellcheck disable=SC2046 # one word per child
    cat "/proc/$1/stat" $(pgrep -P "$1" | sed 's|.*|/proc/&/stat|') | awk '{ t += $14 + $15 } END { print t }'
}
TICKS_PER_SEC="$(getconf CLK_TCK)"

declare -A PORT=([direct]="$BACKEND_PORT" [cairn]="$CAIRN_PORT" [haproxy]="$HAPROXY_PORT" [nginx]="$NGINX_PORT")
declare -A PID=([direct]="${PIDS[0]}" [cairn]="${PIDS[1]}" [haproxy]="${PIDS[2]}" [nginx]="${PIDS[3]}")
declare -A RPS P50 P99 CPU
# Paced load: each connection waits PACE_MS after a response before its next request, so every
# target serves about the same requests/s, below saturation, and latencies compare at equal load.
PACE_MS="${PACE_MS:-2}"
printf 'function delay()\n    return %s\nend\n' "$PACE_MS" >"$WORK/pace.lua"
declare -A LOAD_ARGS=([saturated]="" [paced]="-s $WORK/pace.lua")
# One wrk run against a target under a load ("saturated" or "paced"); appends its figures to
# that target's lists for that load.
measure() {
    local name="$1" load="$2" key="$2/$1" out before after requests
    before="$(cpu_ticks "${PID[$name]}")"
    # shellcheck disable=SC2086 # the load's arguments are words
    out="$("${LOAD_ON[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency ${LOAD_ARGS[$load]} "http://127.0.0.1:${PORT[$name]}/")"
    after="$(cpu_ticks "${PID[$name]}")"
    if echo "$out" | grep -q 'Non-2xx\|Socket errors'; then
        echo "$name: errors during the run:"
        echo "$out" | grep 'Non-2xx\|Socket errors'
    fi
    requests="$(echo "$out" | awk '/requests in/ { print $1 }')"
    RPS[$key]+="$(echo "$out" | awk '/^Requests\/sec/ { printf "%.0f", $2 }') "
    P50[$key]+="$(to_ms "$(echo "$out" | awk '$1 == "50%" { print $2 }')") "
    P99[$key]+="$(to_ms "$(echo "$out" | awk '$1 == "99%" { print $2 }')") "
    CPU[$key]+="$(awk -v t=$((after - before)) -v hz="$TICKS_PER_SEC" -v r="$requests" 'BEGIN { printf "%.2f", t / hz * 1e6 / r }') "
}

NAMES=(direct cairn haproxy nginx)
PROXIES=(cairn haproxy nginx)
LOADS=(saturated paced)
for name in "${NAMES[@]}"; do
    "${LOAD_ON[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "http://127.0.0.1:${PORT[$name]}/" >/dev/null
done
# Rounds interleave the proxies, each round starting with the next one, so a slow patch of
# the machine and the order of the runs hurt all of them alike.
for load in "${LOADS[@]}"; do
    measure direct "$load"
    for round in $(seq "$ROUNDS"); do
        echo "$load round $round of $ROUNDS"
        for i in "${!PROXIES[@]}"; do
            measure "${PROXIES[$(((i + round - 1) % ${#PROXIES[@]}))]}" "$load"
        done
    done
done

for load in "${LOADS[@]}"; do
    echo
    echo "$load: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency${LOAD_ARGS[$load]:+ (each connection pausing $PACE_MS ms between requests)}; medians of $ROUNDS interleaved rounds; $CORES cores, proxies on $PROXY_THREADS thread(s), $PLACEMENT; $(date -u +%Y-%m-%d)"
    printf '%-8s %12s %9s %9s %14s\n' target 'requests/s' 'p50 ms' 'p99 ms' 'cpu us/request'
    declare -A MEDIAN_RPS=()
    for name in "${NAMES[@]}"; do
        key="$load/$name"
        MEDIAN_RPS[$name]="$(echo "${RPS[$key]}" | tr ' ' '\n' | grep . | median %.0f)"
        printf '%-8s %12s %9s %9s %14s\n' "$name" "${MEDIAN_RPS[$name]}" \
            "$(echo "${P50[$key]}" | tr ' ' '\n' | grep . | median %.2f)" \
            "$(echo "${P99[$key]}" | tr ' ' '\n' | grep . | median %.2f)" \
            "$(echo "${CPU[$key]}" | tr ' ' '\n' | grep . | median %.2f)"
    done
    echo "(cpu us/request: CPU time of that process alone, with nginx's workers; for direct, the backend's)"
    for name in "${PROXIES[@]}"; do
        printf 'p99 ms per round, %-8s %s\n' "$name" "${P99[$load/$name]}"
    done
    # Rounds pair up measurements taken seconds apart, so this compares them under the same load.
    paste <(echo "${P99[$load/cairn]}" | tr ' ' '\n' | grep .) <(echo "${P99[$load/haproxy]}" | tr ' ' '\n' | grep .) |
        awk '$1 <= $2 { at_most++ } END { printf "rounds with cairn p99 <= haproxy p99: %d of %d\n", at_most, NR }'
    awk -v c="${MEDIAN_RPS[cairn]}" -v h="${MEDIAN_RPS[haproxy]}" -v n="${MEDIAN_RPS[nginx]}" \
        'BEGIN { printf "requests/s ratio: cairn / haproxy %.2f, cairn / nginx %.2f\n", c / h, c / n }'
done
