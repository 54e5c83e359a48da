# Shared by the platform benchmarks: start a release `cairn up` on free loopback ports with a
# fresh data directory, post complex-app-with-lb through the Stratos API with curl as Stratos'
# sample scripts do, and clean every process up on exit.
# Sourced, not run.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/bench/platform"
SAMPLES="${CAIRN_SAMPLES:-$(cd "$ROOT/.." && pwd)/shared/stratos-samples}"
BIN="${CAIRN_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/cairn}"
POLICY="application-policy-1"
# Every proxy port the samples used here declare; the offset moves them all onto free high ports.
PROXY_PORTS=(80 8222 8280 8281)
# `(collection file)` pairs, in the order of each sample's deploy script.
COMPLEX_ARTIFACTS=(
    autoscalingPolicies autoscaling-policies/autoscaling-policy-1.json
    networkPartitions network-partitions/mock/network-partition-1.json
    deploymentPolicies deployment-policies/deployment-policy-1.json
    cartridges cartridges/mock/stratos-lb.json
    cartridges cartridges/mock/tomcat.json
    cartridges cartridges/mock/tomcat1.json
    cartridges cartridges/mock/tomcat2.json
    cartridgeGroups cartridge-groups/group6c3.json
    cartridgeGroups cartridge-groups/group8c.json
    applicationPolicies application-policies/application-policy-1.json
    applications applications/nested/complex-app-with-lb/artifacts/application.json
)
SINGLE_ARTIFACTS=(
    autoscalingPolicies autoscaling-policies/autoscaling-policy-1.json
    networkPartitions network-partitions/mock/network-partition-1.json
    deploymentPolicies deployment-policies/deployment-policy-1.json
    cartridges cartridges/mock/php.json
    applicationPolicies application-policies/application-policy-1.json
    applications applications/simple/single-cartridge-app/artifacts/application.json
)

# Picks the sample the next post_artifacts and deploy use: `complex` or `single`.
use_sample() {
    case "$1" in
    complex) APP="complex-app-with-lb" ARTIFACTS=("${COMPLEX_ARTIFACTS[@]}") ;;
    single) APP="single-cartridge-app" ARTIFACTS=("${SINGLE_ARTIFACTS[@]}") ;;
    *) die "unknown sample $1" ;;
    esac
}
use_sample complex

# Set by start_cairn.
DATA=""
API=""
STRATOS=""
CAIRN_PID=""
PROXY_OFFSET=""
# Every data directory started here, for the exit trap.
STARTED_DIRS=()
STARTED_PIDS=()
SNAPSHOT=""

# `cargo build --release -p cairn` unless SKIP_BUILD is set.
build_release() {
    [ -z "${SKIP_BUILD:-}" ] || return 0
    echo "building cairn (release)"
    timeout 3600 cargo build --quiet --release -p cairn --manifest-path "$ROOT/Cargo.toml"
}

die() {
    echo "error: $*" >&2
    exit 1
}

need_binary() {
    [ -x "$BIN" ] || die "$BIN is missing: run cargo build --release -p cairn (or bench/platform/run.sh)"
    [ -d "$SAMPLES" ] || die "Stratos samples not found at $SAMPLES (set CAIRN_SAMPLES)"
    command -v python3 >/dev/null || die "python3 is needed"
    command -v curl >/dev/null || die "curl is needed"
    # A private copy: members run the executable `cairn up` runs, and a rebuild meanwhile
    # would replace it under them.
    SNAPSHOT="$(mktemp -d "${TMPDIR:-/tmp}/cairn-bench-bin-XXXXXX")"
    cp "$BIN" "$SNAPSHOT/cairn"
    BIN="$SNAPSHOT/cairn"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# An offset that puts every proxy port on a free port above 10000.
free_offset() {
    python3 - "${PROXY_PORTS[@]}" <<'PY'
import random, socket, sys
ports = [int(p) for p in sys.argv[1:]]
def free(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()
for _ in range(500):
    offset = random.randint(10000, 55000)
    if all(free(p + offset) for p in ports):
        print(offset)
        sys.exit(0)
sys.exit("no free proxy port offset")
PY
}

# `pid member-id` for every member process marked with this data directory.
member_pids() {
    local marker="CAIRN_DATA_DIR=$1" environ pid
    for environ in /proc/[0-9]*/environ; do
        pid="${environ#/proc/}"
        pid="${pid%/environ}"
        # Reading may fail for processes that exit meanwhile or belong to others.
        tr '\0' '\n' 2>/dev/null <"$environ" | awk -v marker="$marker" -v pid="$pid" '
            $0 == marker { mine = 1 }
            /^CAIRN_MEMBER_ID=/ { id = substr($0, 17) }
            END { if (mine && id != "") print pid, id }' || true
    done
}

kill_members_of() {
    local pid _id
    while read -r pid _id; do
        kill -9 -- "-$pid" 2>/dev/null || true
        kill -9 "$pid" 2>/dev/null || true
    done < <(member_pids "$1")
}

# Stops one `cairn up` (SIGTERM, then SIGKILL after 10 s) and whatever members it left.
stop_cairn_at() {
    local pid="$1" dir="$2" waited=0
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 100 ]; do
            sleep 0.1
            waited=$((waited + 1))
        done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    if [ -n "$dir" ]; then
        kill_members_of "$dir"
        [ -n "${KEEP_DATA:-}" ] || rm -rf "$dir"
    fi
}

cleanup_all() {
    local i
    for i in "${!STARTED_PIDS[@]}"; do
        stop_cairn_at "${STARTED_PIDS[$i]}" "${STARTED_DIRS[$i]}"
    done
    [ -z "$SNAPSHOT" ] || rm -rf "$SNAPSHOT"
}
trap cleanup_all EXIT
trap 'exit 130' INT TERM

stop_cairn() {
    stop_cairn_at "$CAIRN_PID" "$DATA"
}

# Starts `cairn up` on a fresh data directory; sets DATA, API, STRATOS, CAIRN_PID, PROXY_OFFSET.
start_cairn() {
    DATA="$(realpath "$(mktemp -d "${TMPDIR:-/tmp}/cairn-bench-XXXXXX")")"
    API="127.0.0.1:$(free_port)"
    STRATOS="127.0.0.1:$(free_port)"
    PROXY_OFFSET="$(free_offset)"
    CAIRN_LOG="${CAIRN_LOG:-info}" "$BIN" up --data-dir "$DATA" --listen "$API" --stratos-api "$STRATOS" \
        --proxy-port-offset "$PROXY_OFFSET" --stop-grace 2 >"$DATA/cairn.out" 2>&1 &
    CAIRN_PID=$!
    STARTED_PIDS+=("$CAIRN_PID")
    STARTED_DIRS+=("$DATA")
    local deadline=$((SECONDS + 20))
    until curl -s -o /dev/null -m 1 "http://$API/v1/applications" &&
        curl -s -k -o /dev/null -m 1 "https://$STRATOS/api/applications" -u admin:admin; do
        kill -0 "$CAIRN_PID" 2>/dev/null || die "cairn up exited: $(tail -20 "$DATA/cairn.out")"
        [ "$SECONDS" -lt "$deadline" ] || die "cairn up did not listen within 20 s: $(tail -20 "$DATA/cairn.out")"
        sleep 0.05
    done
}

# `curl` as Stratos' scripts call it; prints the HTTP status, the body goes to $DATA/last.json.
stratos() {
    local method="$1" path="$2" file="${3:-}" args=()
    [ -z "$file" ] || args=(-d "@$SAMPLES/$file")
    curl -sS -k -m 10 -u admin:admin -H "Content-Type: application/json" -X "$method" \
        -o "$DATA/last.json" -w '%{http_code}' "${args[@]}" "https://$STRATOS/api/$path"
}

post_artifacts() {
    local i code
    for ((i = 0; i < ${#ARTIFACTS[@]}; i += 2)); do
        code="$(stratos POST "${ARTIFACTS[$i]}" "${ARTIFACTS[$((i + 1))]}")"
        [ "$code" = 201 ] || die "POST ${ARTIFACTS[$i]} ${ARTIFACTS[$((i + 1))]}: HTTP $code $(cat "$DATA/last.json")"
    done
}

# Posts the artifacts, deploys, and waits (bounded) until the application is Active.
deploy_and_wait() {
    post_artifacts
    python3 "$HERE/clock.py" deploy --stratos "$STRATOS" --api "$API" --app "$APP" --policy "$POLICY" \
        --timeout 30 >/dev/null || die "deploy failed: $(tail -20 "$DATA/cairn.out")"
}

# The median of the numbers given, one decimal.
median() {
    [ "$#" -gt 0 ] || { echo "n/a"; return; }
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "n/a"; exit }
        if (NR % 2) printf "%.1f\n", v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Appends `figure|value|aim|verdict` to $RESULTS when the entry script collects them.
report() {
    [ -z "${RESULTS:-}" ] || printf '%s|%s|%s|%s\n' "$@" >>"$RESULTS"
}
