#!/usr/bin/env bash
# CPU per request of pilotfish with splice on and off, by REQUEST body size
# (uploads: POST with a Content-Length body, a short answer). pilotfish (one
# worker, default filter chain, no access log) pinned to PROXY_CPU; the origin
# and wrk to LOAD_CPU. Each size is measured REPEAT times per mode, alternating
# modes; the lowest CPU µs/req of each is reported (the least disturbed run),
# with the user / sys split of that run and the spread (lowest-highest).
# Bodies up to limits.request_buffering (64 KiB) are read before connecting
# and never spliced; the sizes start above it. Mode on is `splice: {requests:
# true, min_request_size: 1}` (every size that streams spliced), off is
# `splice: {requests: false}`. Fixed ports from BASE_PORT.
#
#   SIZES ["102400 262144 1048576 4194304"]  DURATION [4]  WARMUP [1]
#   REPEAT [3]  CONNS [16]  PROXY_CPU [0]  LOAD_CPU [1]  BASE_PORT [18800]
#   PILOTFISH_BIN [bin/pilotfish]  ORIGIN_BIN [bin/pf-origin]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIZES=${SIZES:-"102400 262144 1048576 4194304"}
DURATION=${DURATION:-4}
WARMUP=${WARMUP:-1}
REPEAT=${REPEAT:-3}
CONNS=${CONNS:-16}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BASE_PORT=${BASE_PORT:-18800}
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

wait_port() {
    for _ in $(seq 100); do
        (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    return 1
}

# user and system clock ticks of a process
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }

OPORT=$BASE_PORT
taskset -c "$LOAD_CPU" "$ORIGIN_BIN" --listen "127.0.0.1:$OPORT" >"$TMP/origin.log" 2>&1 &
PIDS+=($!)
wait_port "$OPORT"

# start_pf MODE N: a fresh pilotfish with request splice MODE (on|off) on BASE_PORT+1+N;
# sets PF_PID, PF_PORT
start_pf() {
    local requests=false
    [[ $1 == on ]] && requests=true
    PF_PORT=$((BASE_PORT + 1 + $2 % 90))
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
splice: { requests: $requests, min_request_size: 1 }
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

# measure SIZE: prints "total user sys" CPU µs per request of the pilotfish at PF_PID
measure() {
    local url="http://127.0.0.1:$PF_PORT/?body=ok" t0 t1 n
    cat >"$TMP/post.lua" <<LUA
wrk.method = "POST"
wrk.body = string.rep("x", $1)
LUA
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" -s "$TMP/post.lua" "$url" >/dev/null
    read -r u0 s0 < <(cpu_ticks "$PF_PID")
    n=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$TMP/post.lua" "$url" |
        awk '/requests in/ {print $1}')
    read -r u1 s1 < <(cpu_ticks "$PF_PID")
    awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v n="$n" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { k = n > 0 ? 1e6 / hz / n : 0; printf "%.2f %.2f %.2f\n", (u + s) * k, u * k, s * k }'
}

declare -A best worst split
run=0
for ((r = 0; r < REPEAT; r++)); do
    for mode in on off; do
        start_pf "$mode" "$run"
        run=$((run + 1))
        for size in $SIZES; do
            read -r v u s < <(measure "$size")
            k="$mode,$size"
            if [[ -z ${best[$k]:-} ]] || awk -v a="$v" -v b="${best[$k]}" 'BEGIN{exit !(a < b)}'; then
                best[$k]=$v
                split[$k]="$u / $s"
            fi
            if [[ -z ${worst[$k]:-} ]] || awk -v a="$v" -v b="${worst[$k]}" 'BEGIN{exit !(a > b)}'; then
                worst[$k]=$v
            fi
        done
        stop_pf
    done
done

printf '| body bytes | on: CPU µs/req (user / sys) | range | off: CPU µs/req (user / sys) | range | on/off |\n'
printf '|---:|---:|---:|---:|---:|---:|\n'
for size in $SIZES; do
    on=${best[on,$size]} off=${best[off,$size]}
    awk -v s="$size" -v a="$on" -v b="$off" -v su="${split[on,$size]}" -v sf="${split[off,$size]}" \
        -v wa="${worst[on,$size]}" -v wb="${worst[off,$size]}" \
        'BEGIN { printf "| %d | %.2f (%s) | %.2f–%.2f | %.2f (%s) | %.2f–%.2f | %.2f |\n",
                 s, a, su, a, wa, b, sf, b, wb, (b > 0 ? a / b : 0) }'
done
