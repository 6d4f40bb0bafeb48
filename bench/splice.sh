#!/usr/bin/env bash
# CPU per request of pilotfish with splice on and off, by response body size:
# where splice starts to pay (splice.min_response_size). pilotfish (one
# worker, default filter chain, no access log) pinned to PROXY_CPU; the origin
# and wrk to LOAD_CPU. Each size is measured REPEAT times per mode, alternating
# modes; the lowest CPU µs/req of each is reported (the least disturbed run).
# Mode on is `splice: {responses: true, min_response_size: 1}` (every size
# spliced), off is `splice: {responses: false}`.
#
#   SIZES ["16384 65536 102400 262144 1048576"]  DURATION [4]  WARMUP [1]
#   REPEAT [3]  CONNS [16]  PROXY_CPU [0]  LOAD_CPU [1]
#   PILOTFISH_BIN [bin/pilotfish]  ORIGIN_BIN [bin/pf-origin]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIZES=${SIZES:-"16384 65536 102400 262144 1048576"}
DURATION=${DURATION:-4}
WARMUP=${WARMUP:-1}
REPEAT=${REPEAT:-3}
CONNS=${CONNS:-16}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PILOTFISH_BIN=${PILOTFISH_BIN:-$ROOT/bin/pilotfish}
ORIGIN_BIN=${ORIGIN_BIN:-$ROOT/bin/pf-origin}
TMP=$(mktemp -d)
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
    for _ in $(seq 100); do
        (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    return 1
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

OPORT=$(free_port)
taskset -c "$LOAD_CPU" "$ORIGIN_BIN" --listen "127.0.0.1:$OPORT" >"$TMP/origin.log" 2>&1 &
PIDS+=($!)
wait_port "$OPORT"

# start_pf MODE: a fresh pilotfish with response splice MODE (on|off); sets PF_PID, PF_PORT
start_pf() {
    local responses=false
    [[ $1 == on ]] && responses=true
    PF_PORT=$(free_port)
    cat >"$TMP/pf.yaml" <<YAML
listen: "127.0.0.1:$PF_PORT"
workers: 1
access_log: { path: "off" }
log_level: warn
upstreams:
  app:
    endpoints: ["127.0.0.1:$OPORT"]
    pool: { max_idle: 64 }
routes:
  - match: { prefix: "/" }
    upstream: app
splice: { responses: $responses, min_response_size: 1 }
YAML
    taskset -c "$PROXY_CPU" "$PILOTFISH_BIN" -c "$TMP/pf.yaml" \
        >"$TMP/pf-$1.log" 2>&1 &
    PF_PID=$!
    PIDS+=("$PF_PID")
    wait_port "$PF_PORT"
}

stop_pf() {
    kill "$PF_PID"
    wait "$PF_PID" 2>/dev/null || true
}

# measure SIZE: prints CPU µs per request of the pilotfish at PF_PID
measure() {
    local url="http://127.0.0.1:$PF_PORT/?size=$1" t0 t1 n
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "$url" >/dev/null
    t0=$(cpu_ticks "$PF_PID")
    n=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" "$url" |
        awk '/requests in/ {print $1}')
    t1=$(cpu_ticks "$PF_PID")
    awk -v t=$((t1 - t0)) -v n="$n" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%.2f\n", (n > 0 ? t * 1e6 / hz / n : 0) }'
}

declare -A best
for ((r = 0; r < REPEAT; r++)); do
    for mode in on off; do
        start_pf "$mode"
        for size in $SIZES; do
            v=$(measure "$size")
            k="$mode,$size"
            if [[ -z ${best[$k]:-} ]] || awk -v a="$v" -v b="${best[$k]}" 'BEGIN{exit !(a < b)}'; then
                best[$k]=$v
            fi
        done
        stop_pf
    done
done

printf '| body bytes | splice on: CPU µs/req | off | on/off |\n|---:|---:|---:|---:|\n'
for size in $SIZES; do
    on=${best[on,$size]} off=${best[off,$size]}
    awk -v s="$size" -v a="$on" -v b="$off" \
        'BEGIN { printf "| %d | %.2f | %.2f | %.2f |\n", s, a, b, (b > 0 ? a / b : 0) }'
done
