#!/bin/sh
# make run: the demo origin on 127.0.0.1:3000 and pilotfish on :8080 in front
# of it, until Ctrl-C (both run in their own session, so that only this
# script signals them: one SIGTERM each, a clean drain).
#   usage: tests/origin/run-demo.sh BIN ORIGIN [CONFIG]
set -u
BIN=${1:?usage: run-demo.sh BIN ORIGIN [CONFIG]}
ORIGIN=${2:?usage: run-demo.sh BIN ORIGIN [CONFIG]}
CONF=${3:-conf/pilotfish.yaml}
origin_pid=""
pf_pid=""

stop() {
    trap - INT TERM
    [ -n "$pf_pid" ] && kill -TERM "$pf_pid" 2>/dev/null
    [ -n "$origin_pid" ] && kill -TERM "$origin_pid" 2>/dev/null
    [ -n "$pf_pid" ] && wait "$pf_pid" 2>/dev/null
    [ -n "$origin_pid" ] && wait "$origin_pid" 2>/dev/null
    echo "stopped"
    exit "${1:-0}"
}
trap 'stop 0' INT TERM

setsid "$ORIGIN" --listen 127.0.0.1:3000 &
origin_pid=$!
setsid "$BIN" -c "$CONF" &
pf_pid=$!

# wait until both answer (or one of them died: port in use, bad config)
i=0
until curl -s -o /dev/null http://127.0.0.1:3000/ && curl -s -o /dev/null http://127.0.0.1:9901/health; do
    if ! kill -0 "$origin_pid" 2>/dev/null || ! kill -0 "$pf_pid" 2>/dev/null; then
        echo "run-demo: pilotfish or the origin failed to start" >&2
        stop 1
    fi
    i=$((i + 1))
    if [ "$i" -ge 100 ]; then
        echo "run-demo: still not answering after 10s" >&2
        stop 1
    fi
    sleep 0.1
done

cat <<MSG

pilotfish is listening on :8080 in front of the demo origin on 127.0.0.1:3000.
Try:
  curl -i localhost:8080/
  curl -i 'localhost:8080/?size=5000&chunked=1'              # query parameters script the origin
  curl -s localhost:8080/echo                                # what the origin received
  curl -s --compressed -i 'localhost:8080/?size=5000'        # gzip filter
  curl -s localhost:9901/metrics | grep pilotfish_http       # admin API: /ready /config /metrics
Ctrl-C stops both.

MSG

# both run in the background, so Ctrl-C reaches this shell's trap; exit when either stops
while kill -0 "$origin_pid" 2>/dev/null && kill -0 "$pf_pid" 2>/dev/null; do
    sleep 1 &
    wait $! 2>/dev/null
done
echo "run-demo: a process exited" >&2
stop 1
