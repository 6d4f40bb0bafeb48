#!/bin/bash
# Instructions per request of a pilotfish binary under callgrind (deterministic,
# unlike timing on a shared machine): usage and method in bench/README.md.
#
#   bench/callgrind.sh [BIN...]        default bin/pilotfish
#
# Environment: SIZE (response bytes, default 1024), N_LO / N_HI (request
# counts of the two runs, default 800 / 4000), CONNS (keep-alive connections,
# default 8), ORIGIN_BIN (default bin/pf-origin), PORT (first of three ports,
# default 18600), KEEP (a directory to keep the callgrind outputs in),
# CACHE=1 (cache hits: route filters [cache], the origin's response carries
# Cache-Control: max-age=3600, so every request but the first is a hit).
set -eu

SIZE=${SIZE:-1024}
N_LO=${N_LO:-800}
N_HI=${N_HI:-4000}
CONNS=${CONNS:-8}
ORIGIN_BIN=${ORIGIN_BIN:-bin/pf-origin}
PORT=${PORT:-18600}
OP=$PORT PP=$((PORT + 1)) AP=$((PORT + 2))
CACHE=${CACHE:-0}
FILTERS='[]' QUERY='' FCFG=''
if [ "$CACHE" = 1 ]; then
    FILTERS='[cache]'
    FCFG='filters: { cache: { memory: 64MiB } }'
    QUERY='&header=Cache-Control:%20max-age%3D3600'
fi
[ $# -gt 0 ] || set -- bin/pilotfish

command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 2; }
[ -x "$ORIGIN_BIN" ] || { echo "no origin at $ORIGIN_BIN (make all)" >&2; exit 2; }

TMP=$(mktemp -d)
OPID= VPID=
cleanup() {
    [ -n "$VPID" ] && kill -KILL "$VPID" 2>/dev/null
    [ -n "$OPID" ] && kill -TERM "$OPID" 2>/dev/null
    [ -n "$OPID" ] && wait "$OPID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

cat >"$TMP/cfg.yaml" <<Y
listen: "127.0.0.1:$PP"
workers: 1
admin: { listen: "127.0.0.1:$AP" }
access_log: { path: "off" }
log_level: warn
upstreams:
  app:
    endpoints: ["127.0.0.1:$OP"]
    pool: { max_idle: 64 }
routes:
  - match: { prefix: "/" }
    upstream: app
    filters: $FILTERS
$FCFG
Y

"$ORIGIN_BIN" --listen "127.0.0.1:$OP" >/dev/null 2>&1 &
OPID=$!

# Keep-alive GETs on CONNS connections, one request in flight on each.
drive() {
    python3 - "$PP" "$1" "$SIZE" "$CONNS" "$QUERY" <<'P'
import socket, sys, time
port, n, size, nconn = (int(a) for a in sys.argv[1:5])
query = sys.argv[5].encode()
for _ in range(300):
    try:
        socket.create_connection(("127.0.0.1", port)).close()
        break
    except OSError:
        time.sleep(0.1)
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(nconn)]
req = b"GET /?size=%d%s HTTP/1.1\r\nHost: x\r\n\r\n" % (size, query)
def read_response(s, buf):
    while True:
        i = buf.find(b"\r\n\r\n")
        if i >= 0:
            head = buf[:i].decode("latin-1").lower()
            if not head.startswith("http/1.1 200"):
                sys.exit("unexpected response: " + head.split("\r\n")[0])
            cl = int(head.split("content-length:")[1].split("\r\n")[0])
            if len(buf) >= i + 4 + cl:
                return buf[i + 4 + cl:]
        d = s.recv(1 << 20)
        if not d:
            sys.exit("connection closed")
        buf += d
bufs = [b""] * nconn
for _ in range(n // nconn):
    for s in socks:
        s.sendall(req)
    for j, s in enumerate(socks):
        bufs[j] = read_response(s, bufs[j])
P
}

# Total Ir of one run of BIN serving N requests (start-up and exit included).
total_ir() {
    local bin=$1 n=$2 out="$TMP/cg.out"
    rm -f "$out"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" -c "$TMP/cfg.yaml" \
        >"$TMP/pf.log" 2>&1 &
    VPID=$!
    drive "$n"
    kill -TERM "$VPID"
    wait "$VPID" || true
    VPID=
    [ -n "${KEEP:-}" ] && cp "$out" "$KEEP/callgrind.$(basename "$bin").$SIZE.$n$([ "$CACHE" = 1 ] && echo .hit)"
    awk '/^(summary|totals):/ { print $2; exit }' "$out"
}

printf "%-40s %10s %12s %12s\n" binary "size$([ "$CACHE" = 1 ] && echo ' hit')" "Ir(N=$N_HI)" "Ir/request"
for bin in "$@"; do
    lo=$(total_ir "$bin" "$N_LO")
    hi=$(total_ir "$bin" "$N_HI")
    printf "%-40s %10s %12s %12s\n" "$bin" "$SIZE" "$hi" $(((hi - lo) / (N_HI - N_LO)))
done
