# Shared by the load balancer benchmarks: sourced, not run. Expects ROOT (the repository).

# Installs with apt-get whichever of the given tools is missing.
install_missing() {
    local missing=() tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    export PATH="$PATH:/usr/sbin"
}

# The workspace's target directory.
target_dir() {
    cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" \
        | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p'
}

# Builds the benchmark's backend and Cairn's proxy (crates/lb/examples/lb_bench.rs) and prints
# the binary's path.
build_lb_bench() {
    echo "building lb_bench (release)" >&2
    cargo build --quiet --release -p cairn-lb --example lb_bench --manifest-path "$ROOT/Cargo.toml"
    echo "$(target_dir)/release/examples/lb_bench"
}

# Makes a temporary directory WORK and a list PIDS of processes the script starts; at exit the
# processes are stopped and the directory removed (KEEP_WORK=1 keeps it).
start_work() {
    WORK="$(mktemp -d)"
    PIDS=()
    trap stop_work EXIT
}

stop_work() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Writes to $1 an HAProxy config proxying port $2 to the backend on port $3 with $4 threads,
# keeping backend connections alive and adding X-Forwarded-For, as Cairn does.
haproxy_config() {
    cat >"$1" <<CFG
global
    nbthread $4
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    option forwardfor
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend bench
    bind 127.0.0.1:$2
    default_backend backend
backend backend
    http-reuse always
    server backend 127.0.0.1:$3
CFG
}

# Waits until each given port answers HTTP; fails naming the first that does not.
wait_for_ports() {
    local port
    for port in "$@"; do
        for _ in $(seq 50); do
            curl -fs "http://127.0.0.1:$port/" >/dev/null 2>&1 && break
            sleep 0.1
        done
        curl -fs "http://127.0.0.1:$port/" >/dev/null || { echo "nothing answers on port $port"; return 1; }
    done
}

# Converts wrk's latency ("812.00us", "1.20ms", "2.00s") to milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000
        printf "%.2f", n }'
}

# The median of the numbers on stdin, printed with the printf format $1.
median() {
    sort -n | awk -v format="$1" '{ v[NR] = $1 }
        END { printf format, (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
