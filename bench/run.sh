#!/usr/bin/env bash
# bench/run.sh - pilotfish against nginx and HAProxy (and, for the cache-hit
# cases, nginx proxy_cache and Varnish), each with one worker in front of the
# same origin (bin/pf-origin), all on 127.0.0.1.
#
# For every proxy and case: start the proxy (fresh, config rendered from
# bench/<proxy> template), check one response, warm up, run
#   wrk -t$THREADS -c$CONNS -d${DURATION}s --latency
# and read the proxy's CPU time (/proc/PID/stat, whole process tree) before and
# after. Prints a Markdown table and writes it to bench/results-latest.md.
#
# Environment (defaults in brackets):
#   DURATION   measured run, seconds [10]       WARMUP   warm-up, seconds [2]
#   CONNS      wrk connections [32]             THREADS  wrk threads [1]
#   REPEAT     measured runs per proxy and case; the one least disturbed by
#              other load on the proxy's CPU is reported [1]
#   PROXIES    subset of "pilotfish nginx haproxy varnish" [all four]
#   CASES      subset of the case table below [1k 100k]
#   PROXY_CPU  CPU the proxy is pinned to [0]   LOAD_CPU CPU for wrk + origin [1]
#   PILOTFISH_BIN [bin/pilotfish]  ORIGIN_BIN [bin/pf-origin]
#   NGINX_BIN [nginx]  HAPROXY_BIN [haproxy]  WRK_BIN [wrk]
#   STORE_N    objects stored by the store-1k case [10000]
#   NGINX_SENDFILE  nginx's sendfile in the hit-* cases, on or off [on]
#   VARNISHD_BIN [varnishd]
#   OUT        Markdown output [bench/results-latest.md]
#   KEEP_TMP=1 keep the temp dir (configs, logs, raw wrk output)
#
# Only 127.0.0.1 is ever contacted. Every process is stopped by PID.

set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true # bash 5.2: '&' literal in ${x//a/b}
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
REPEAT=${REPEAT:-1}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1}
PROXIES=${PROXIES:-pilotfish nginx haproxy varnish}
CASES=${CASES:-1k 100k idle}
IDLE_CONNS=${IDLE_CONNS:-10000}
STRACE_SECS=${STRACE_SECS:-3}
IDLE_NOTE=""
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PILOTFISH_BIN=${PILOTFISH_BIN:-$ROOT/bin/pilotfish}
ORIGIN_BIN=${ORIGIN_BIN:-$ROOT/bin/pf-origin}
NGINX_BIN=${NGINX_BIN:-nginx}
HAPROXY_BIN=${HAPROXY_BIN:-haproxy}
VARNISHD_BIN=${VARNISHD_BIN:-varnishd}
STORE_N=${STORE_N:-10000}
NGINX_SENDFILE=${NGINX_SENDFILE:-on}
WRK_BIN=${WRK_BIN:-wrk}
OUT=${OUT:-$BENCH/results-latest.md}
KEEP_TMP=${KEEP_TMP:-0}

START_TIMEOUT=10 # seconds for a process to accept on its port
STOP_TIMEOUT=5   # seconds between SIGTERM and SIGKILL

# ---------------------------------------------------------------------------
# Case table. To add a case (e.g. "100k+gzip"): append its name to ALL_CASES
# and fill, keyed by that name:
#   CASE_PATH          path+query requested through the proxy (origin answers
#                      any path; ?size=N gives an N-byte body)
#   CASE_HEADERS       extra request headers, one "Name: value" per line
#                      (given to wrk with -H and to the sanity check)
#   CASE_BYTES         expected body length in the sanity check ("" = any)
#   CASE_EXPECT        extended regex one response header line must match
#                      in the sanity check ("" = none), e.g. '^content-encoding: gzip'
#   CASE_DECODED       "1": the sanity check also decodes the body (curl
#                      --compressed) and compares it byte for byte with what
#                      the origin sends for CASE_PATH; the encoded size is
#                      reported in the notes ("" = no such check)
#   CASE_SNIPPET_<p>   text pasted verbatim at @CASE_SNIPPET@ in the config
#                      template of proxy <p> ("" = nothing):
#                        nginx     inside `location /` of bench/nginx.conf.in
#                        haproxy   inside `frontend fe` of bench/haproxy.cfg.in
#                        pilotfish top level of bench/pilotfish.yaml.in (filter
#                                  settings: `filters: {gzip: {...}}`)
#   CASE_FILTERS_pilotfish  the route's filter list in pilotfish.yaml.in
#                      ("" = no `filters:` key: pilotfish's default chain,
#                      [metrics, gzip], as a user who names no filters runs it)
# A proxy with no snippet for a case that needs one would measure the wrong
# thing: give every proxy a snippet (or CASE_SKIP_<p>[case]=reason).
# ---------------------------------------------------------------------------
ALL_CASES=(1k 100k)
declare -A CASE_PATH=([1k]='/?size=1024' [100k]='/?size=102400')
declare -A CASE_HEADERS=([1k]='' [100k]='')
declare -A CASE_BYTES=([1k]=1024 [100k]=102400)
declare -A CASE_EXPECT=([1k]='' [100k]='')
declare -A CASE_DECODED=([1k]='' [100k]='')
# shellcheck disable=SC2034 # read through namerefs (start_proxy, case_skip)
declare -A CASE_SNIPPET_pilotfish=() CASE_SNIPPET_nginx=() CASE_SNIPPET_haproxy=()
# shellcheck disable=SC2034
declare -A CASE_FILTERS_pilotfish=()
# shellcheck disable=SC2034
declare -A CASE_SKIP_pilotfish=() CASE_SKIP_nginx=() CASE_SKIP_haproxy=() CASE_SKIP_varnish=()
# shellcheck disable=SC2034
declare -A CASE_SNIPPET_varnish=() CASE_HTTP_nginx=() CASE_HIT=() CASE_STORE=()

# 100k+gzip: the 100k body as text/plain (listed by every proxy), client sends
# Accept-Encoding: gzip, each proxy compresses on the fly. Level in each:
#   pilotfish  zlib level 6 (filters.gzip level: 6, min_length: 1000,
#              types: [text/plain]); the route names no filters, so it runs
#              the default chain [metrics, gzip], as in every plain row
#   nginx      zlib level 6 (gzip_comp_level 6; gzip_min_length 1000;
#              gzip_types text/plain; gzip_proxied any: compress even for
#              requests that carry Via, i.e. came through another proxy;
#              wrk sends none, so it only rules that case out)
#   haproxy    NOT zlib: the Debian build compresses with libslz (haproxy -vv:
#              "+SLZ -ZLIB", "Built with libslz for stateless compression").
#              libslz has a single compression mode; HAProxy passes it
#              !!tune.comp.maxlevel (default maxlevel 1), so "level" is 1 and
#              cannot be raised. Its output is larger (1343 bytes against
#              zlib's 308 for this body) and its CPU per byte far lower than
#              zlib at any level: read its row as "what HAProxy does", not
#              as the same work.
# pf-origin's body repeats a 26-byte pattern, so deflate finds 258-byte matches
# throughout: the case measures per-response gzip overhead and zlib on very
# redundant input (102400 -> 308 bytes), not typical HTML or JSON.
# Both nginx and pilotfish shrink the deflate window and memLevel to fit a
# known Content-Length (ngx_http_gzip_filter_memory; docs/filters/gzip.md).
ALL_CASES+=('100k+gzip')
CASE_PATH['100k+gzip']='/?size=102400&type=text/plain'
CASE_HEADERS['100k+gzip']='Accept-Encoding: gzip'
CASE_BYTES['100k+gzip']='' # the encoded size differs by proxy (reported in the notes)
CASE_EXPECT['100k+gzip']='^content-encoding: *gzip'
CASE_DECODED['100k+gzip']=1
# shellcheck disable=SC2034 # read through namerefs (start_proxy)
CASE_SNIPPET_pilotfish['100k+gzip']='filters: { gzip: { level: 6, min_length: 1000, types: [text/plain] } }'
# shellcheck disable=SC2034
CASE_SNIPPET_nginx['100k+gzip']='gzip on; gzip_comp_level 6; gzip_min_length 1000; gzip_types text/plain; gzip_proxied any;'
# shellcheck disable=SC2034
CASE_SNIPPET_haproxy['100k+gzip']='filter compression
    compression algo gzip
    compression type text/plain'

# Cache hits: hit-1k, hit-100k, hit-1k+gzip, hit-100k+gzip. The origin marks
# the response cacheable for all three caches (Cache-Control: max-age=3600,
# sent by pf-origin's header= option); the sanity check's request stores it,
# the warm-up and the measured runs are hits (checked: the origin's request
# counter must not move during the measured runs). pilotfish runs the cache
# filter, nginx proxy_cache, Varnish its default (malloc) storage; HAProxy is
# not part of these rows.
#   plain  pilotfish route [cache]; nginx proxy_cache with a keys_zone and a
#          cache path in the temp dir, sendfile $NGINX_SENDFILE (default on,
#          as in Debian's stock nginx.conf: a hit's body is a file; it halves
#          nginx's CPU per 100 KiB hit); Varnish as it comes
#   +gzip  the client sends Accept-Encoding: gzip. pilotfish [cache, gzip]:
#          gzip is next to the upstream, so the cache stores the compressed
#          variant once and hits are served without compressing
#          (docs/filters/cache.md, "Order with gzip"); Varnish
#          beresp.do_gzip = true compresses once before storing (gzip_level 6
#          by default) and serves the stored gzip to gzip clients; nginx
#          stores what the origin sent (identity) and its gzip filter
#          compresses every hit (level 6): that is how nginx works, it has
#          no way to store the compressed variant of a proxied response
CC_MAXAGE='header=Cache-Control:%20max-age%3D3600'
GZIP_PF='gzip: { level: 6, min_length: 1000, types: [text/plain] }'
CACHE_PF='cache: { memory: 256MiB, max_object_size: 1MiB }'
NGINX_CACHE_HTTP='proxy_cache_path @DIR@/cache levels=1:2 keys_zone=bench:16m max_size=1g inactive=1h use_temp_path=off;'
NGINX_CACHE_LOC="proxy_cache bench; sendfile $NGINX_SENDFILE;"
NGINX_GZIP='gzip on; gzip_comp_level 6; gzip_min_length 1000; gzip_types text/plain; gzip_proxied any;'
# shellcheck disable=SC2034 # read through namerefs (start_proxy, case_skip)
for c in hit-1k hit-100k hit-1k+gzip hit-100k+gzip; do
    ALL_CASES+=("$c")
    size=1024
    [[ $c == hit-100k* ]] && size=102400
    CASE_PATH[$c]="/?size=$size&type=text/plain&$CC_MAXAGE"
    CASE_HIT[$c]=1
    CASE_HTTP_nginx[$c]=$NGINX_CACHE_HTTP
    CASE_SKIP_haproxy[$c]='the cache rows compare pilotfish, nginx proxy_cache and Varnish'
    if [[ $c == *+gzip ]]; then
        CASE_HEADERS[$c]='Accept-Encoding: gzip'
        CASE_BYTES[$c]=''
        CASE_EXPECT[$c]='^content-encoding: *gzip'
        CASE_DECODED[$c]=1
        CASE_FILTERS_pilotfish[$c]='[cache, gzip]'
        CASE_SNIPPET_pilotfish[$c]="filters: { $CACHE_PF, $GZIP_PF }"
        CASE_SNIPPET_nginx[$c]="$NGINX_CACHE_LOC $NGINX_GZIP"
        CASE_SNIPPET_varnish[$c]='set beresp.do_gzip = true;'
    else
        CASE_HEADERS[$c]=''
        CASE_BYTES[$c]=$size
        CASE_EXPECT[$c]=''
        CASE_DECODED[$c]=''
        CASE_FILTERS_pilotfish[$c]='[cache]'
        CASE_SNIPPET_pilotfish[$c]="filters: { $CACHE_PF }"
        CASE_SNIPPET_nginx[$c]=$NGINX_CACHE_LOC
        CASE_SNIPPET_varnish[$c]=''
    fi
done
# The plain proxying cases are not Varnish's job (it caches by default).
# shellcheck disable=SC2034
for c in 1k 100k 100k+gzip; do
    CASE_SKIP_varnish[$c]='a cache; only the hit-* and store-1k cases'
done

# store-1k: no wrk run. Memory per stored object: the proxy gets one request
# (stored), its RSS is read, then STORE_N distinct 1 KiB cacheable URLs
# (&k=1..STORE_N) are requested one after the other on one connection, and the
# RSS is read again. Every one must have reached the origin (STORE_N origin
# requests) and a sample of them must then be hits (no origin request).
# nginx keeps bodies in files (page cache, not its RSS) and its keys in a
# shared zone allocated at start, so its RSS says little: not run.
ALL_CASES+=(store-1k)
CASE_PATH[store-1k]="/?size=1024&type=text/plain&$CC_MAXAGE"
CASE_HEADERS[store-1k]=''
CASE_BYTES[store-1k]=1024
CASE_EXPECT[store-1k]=''
CASE_DECODED[store-1k]=''
CASE_STORE[store-1k]=1
CASE_FILTERS_pilotfish[store-1k]='[cache]'
# shellcheck disable=SC2034 # read through namerefs (start_proxy, case_skip)
CASE_SNIPPET_pilotfish[store-1k]="filters: { $CACHE_PF }"
# shellcheck disable=SC2034
CASE_SNIPPET_varnish[store-1k]=''
# shellcheck disable=SC2034
CASE_SKIP_nginx[store-1k]='bodies in files and keys in a zone allocated at start: RSS does not show them'
# shellcheck disable=SC2034
CASE_SKIP_haproxy[store-1k]='the cache rows compare pilotfish, nginx proxy_cache and Varnish'

# idle: no wrk run. Memory per idle keep-alive client connection: the proxy's
# RSS is read, IDLE_CONNS connections are opened (bench/idle_clients.py), each
# sends one 1 KiB request, reads the response and stays open, idle; the RSS is
# read again while they are all open (checked with ss). The proxies are
# started with room for them: nginx worker_connections, HAProxy maxconn,
# pilotfish limits.max_connections (and the script raises its open files
# limit, which the proxies inherit). nginx allocates its connection and event
# structures for all worker_connections at start, so its "before" already
# holds them (about 400 bytes per connection slot, touched at start).
ALL_CASES+=(idle)
CASE_PATH[idle]='/?size=1024'
CASE_HEADERS[idle]=''
CASE_BYTES[idle]=1024
CASE_EXPECT[idle]=''
CASE_DECODED[idle]=''
declare -A CASE_IDLE=([idle]=1)
# shellcheck disable=SC2034
CASE_SKIP_varnish[idle]='the idle row compares the three proxies'

ALL_PROXIES=(pilotfish nginx haproxy varnish)

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
log() { printf '[bench] %s\n' "$*" >&2; }
die() {
    printf '[bench] error: %s\n' "$*" >&2
    exit 1
}

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

in_list() { # word list...
    local w=$1 x
    shift
    for x in "$@"; do [[ $x == "$w" ]] && return 0; done
    return 1
}

# resolve a command name or path to an executable path, or return 1
find_bin() {
    local b=$1
    if [[ $b == */* ]]; then
        [[ -x $b && -f $b ]] && printf '%s\n' "$b" && return 0
        return 1
    fi
    command -v "$b" 2>/dev/null || return 1
}

# render TEMPLATE OUT KEY=VALUE...: replace every @KEY@ with VALUE
render() {
    local tpl=$1 out=$2 text kv k v
    shift 2
    [[ -r $tpl ]] || die "template $tpl not found"
    text=$(<"$tpl")
    for kv in "$@"; do
        k=${kv%%=*}
        v=${kv#*=}
        text=${text//"@$k@"/"$v"}
    done
    if [[ $text =~ @[A-Z_]+@ ]]; then
        die "placeholder ${BASH_REMATCH[0]} left unfilled in $tpl"
    fi
    printf '%s\n' "$text" >"$out"
}

# a TCP port on 127.0.0.1 that nothing uses, below the ephemeral range (so that
# wrk's and the proxies' outgoing connections cannot take it meanwhile)
USED_PORTS=" "
free_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000))
        [[ $USED_PORTS == *" $p "* ]] && continue
        if command -v ss >/dev/null; then
            [[ -z $(ss -Htan "( sport = :$p )" 2>/dev/null) ]] || continue
        fi
        # refused connect = nobody listens
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then continue; fi
        USED_PORTS+="$p "
        printf '%s\n' "$p"
        return 0
    done
    die "no free port found"
}

# wait_port PORT PID: until 127.0.0.1:PORT accepts; fails if PID exits or after
# START_TIMEOUT seconds
wait_port() {
    local port=$1 pid=$2 i
    for ((i = 0; i < START_TIMEOUT * 20; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    return 1
}

# descendants PID: PID and every descendant (nginx master + worker, ...)
descendants() {
    local root=$1 f line rest pid ppid
    local -A kids=()
    local -a fields queue
    for f in /proc/[0-9]*/stat; do
        { read -r line <"$f"; } 2>/dev/null || continue
        pid=${f#/proc/}
        pid=${pid%/stat}
        rest=${line##*) } # comm may hold spaces and ')': cut at the last ')'
        read -r -a fields <<<"$rest"
        ppid=${fields[1]}
        kids[$ppid]+=" $pid"
    done
    queue=("$root")
    while ((${#queue[@]})); do
        pid=${queue[0]}
        queue=("${queue[@]:1}")
        [[ -d /proc/$pid ]] || continue
        printf '%s\n' "$pid"
        # shellcheck disable=SC2206
        if [[ -n ${kids[$pid]:-} ]]; then queue+=(${kids[$pid]}); fi
    done
}

# proc_stat PID: "utime stime minflt" summed over the process tree: utime and
# stime (fields 14, 15 of /proc/PID/stat) plus cutime and cstime (16, 17:
# children already reaped, so a worker that exits mid-run is still counted),
# in clock ticks; minflt + cminflt (fields 10, 11), minor page faults
proc_stat() {
    local user=0 sys=0 flt=0 pid line rest
    local -a fields
    for pid in $(descendants "$1"); do
        { read -r line <"/proc/$pid/stat"; } 2>/dev/null || continue
        rest=${line##*) }
        read -r -a fields <<<"$rest"
        # fields[0] is field 3 (state): field N is fields[N-3]
        user=$((user + fields[11] + fields[13]))
        sys=$((sys + fields[12] + fields[14]))
        flt=$((flt + fields[7] + fields[8]))
    done
    printf '%s %s %s\n' "$user" "$sys" "$flt"
}

# rss_kib PID: VmRSS summed over the process tree, KiB
rss_kib() {
    local total=0 pid v
    for pid in $(descendants "$1"); do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        total=$((total + ${v:-0}))
    done
    printf '%s\n' "$total"
}

# cpu_busy N: busy ticks of CPU N since boot (user nice system irq softirq steal
# from /proc/stat; idle and iowait left out)
cpu_busy() {
    awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat
}

# PIDs we started and must stop (top of each tree)
ORIGIN_PID=""
PROXY_PID=""
WRK_PID=""
STRACE_PID=""
IDLE_PID=""

# stop_tree PID: SIGTERM to the top, wait, then SIGKILL whatever of the tree
# (collected before the TERM) is still alive. By PID only.
stop_tree() {
    local root=$1 i alive pid
    [[ -n $root ]] || return 0
    local -a tree
    mapfile -t tree < <(descendants "$root")
    kill -TERM "$root" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT * 20; i++)); do
        alive=0
        for pid in "${tree[@]}"; do
            if kill -0 "$pid" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; then
                alive=1
                break
            fi
        done
        ((alive)) || break
        sleep 0.05
    done
    for pid in "${tree[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait "$root" 2>/dev/null || true
}

TMP=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_tree "$WRK_PID"
    stop_tree "$STRACE_PID"
    stop_tree "$IDLE_PID"
    stop_tree "$PROXY_PID"
    stop_tree "$ORIGIN_PID"
    if [[ -n $TMP && -d $TMP ]]; then
        if [[ $KEEP_TMP == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_bg CPU LOG CMD...: run CMD pinned to CPU, output to LOG; sets BG_PID.
# Background jobs of a non-interactive shell ignore SIGINT; the trap stops them.
start_bg() {
    local cpu=$1 logf=$2
    shift 2
    taskset -c "$cpu" "$@" </dev/null >"$logf" 2>&1 &
    BG_PID=$!
}

# convert a wrk duration ("412.00us", "1.20ms", "1.02s", "1.50m") to ms
to_ms() {
    awk -v d="$1" 'BEGIN {
        n = d + 0; u = d; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        else if (u != "ms") { print "?"; exit }
        printf "%.3f\n", n }'
}

# ---------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------
[[ $NGINX_SENDFILE == on || $NGINX_SENDFILE == off ]] || die "NGINX_SENDFILE must be on or off"
for v in DURATION WARMUP REPEAT CONNS THREADS PROXY_CPU LOAD_CPU STORE_N IDLE_CONNS STRACE_SECS; do
    is_uint "${!v}" || die "$v must be a non-negative integer (got '${!v}')"
done
((DURATION > 0 && REPEAT > 0 && CONNS > 0 && THREADS > 0 && STORE_N > 0)) || die "DURATION, REPEAT, CONNS, THREADS and STORE_N must be > 0"
((CONNS >= THREADS)) || die "CONNS must be >= THREADS"
for p in $PROXIES; do in_list "$p" "${ALL_PROXIES[@]}" || die "unknown proxy '$p' (known: ${ALL_PROXIES[*]})"; done
for c in $CASES; do in_list "$c" "${ALL_CASES[@]}" || die "unknown case '$c' (known: ${ALL_CASES[*]})"; done
[[ -n ${PROXIES// /} ]] || die "PROXIES is empty"
[[ -n ${CASES// /} ]] || die "CASES is empty"

[[ $(uname -s) == Linux ]] || die "Linux only (/proc accounting, taskset)"
command -v taskset >/dev/null || die "taskset not found (apt-get install util-linux)"
WRK=$(find_bin "$WRK_BIN") || die "wrk not found ('$WRK_BIN'); install it: apt-get install -y wrk (or: make bench)"
ORIGIN=$(find_bin "$ORIGIN_BIN") || die "origin '$ORIGIN_BIN' not found or not executable; build it with: make"
CURL=$(command -v curl || true)
[[ -n $CURL ]] || log "curl not found: skipping the per-case response check"
STRACE=$(command -v strace || true)
if [[ -z $STRACE ]]; then log "strace not found: no syscalls/req column (apt-get install -y strace)"; fi
if [[ " $CASES " == *" idle "* ]]; then
    ((IDLE_CONNS > 0)) || die "IDLE_CONNS must be > 0 for the idle case"
    command -v python3 >/dev/null || die "the idle case needs python3"
    # room for IDLE_CONNS clients, as many upstream connections, and slack;
    # the proxies and the idle clients inherit it (raising the hard limit
    # needs root: otherwise the soft one goes up to the hard one)
    want=$((2 * IDLE_CONNS + 2200))
    hard=$(ulimit -Hn)
    if [[ $hard != unlimited ]] && ((hard < want)); then ulimit -Hn "$want" 2>/dev/null || true; fi
    hard=$(ulimit -Hn)
    if [[ $hard != unlimited ]] && ((hard < want)); then
        # pilotfish keeps one descriptor per client connection in reserve for
        # its upstream connection: fit the case into what the limit allows
        ((hard > 2400)) || die "the idle case needs more open files than the hard limit $hard"
        IDLE_NOTE="IDLE_CONNS lowered from $IDLE_CONNS to $(((hard - 2200) / 2)): the hard open files limit is $hard (raising it needs CAP_SYS_RESOURCE) and each proxy needs room for a client and an upstream descriptor per connection"
        IDLE_CONNS=$(((hard - 2200) / 2))
        log "$IDLE_NOTE"
        want=$hard
    fi
    ulimit -Sn "$want"
fi

NCPU=$(nproc)
for v in PROXY_CPU LOAD_CPU; do
    ((${!v} < NCPU)) || die "$v=${!v} but this machine has $NCPU CPU(s) (0..$((NCPU - 1)))"
done
if ((PROXY_CPU == LOAD_CPU)); then
    log "warning: proxy and load share CPU $PROXY_CPU; throughput numbers mean little (CPU us/req still does)"
fi
CLK_TCK=$(getconf CLK_TCK)

# which proxies can run
declare -A PROXY_BIN=() SKIPPED=()
for p in $PROXIES; do
    case $p in
    pilotfish) b=$PILOTFISH_BIN hint="build it with: make" ;;
    nginx) b=$NGINX_BIN hint="install it: apt-get install -y nginx (or: make bench)" ;;
    haproxy) b=$HAPROXY_BIN hint="install it: apt-get install -y haproxy (or: make bench)" ;;
    varnish) b=$VARNISHD_BIN hint="install it: apt-get install -y varnish (or: make bench)" ;;
    esac
    if path=$(find_bin "$b"); then
        PROXY_BIN[$p]=$path
    else
        SKIPPED[$p]="'$b' not found; $hint"
        log "skipping $p: ${SKIPPED[$p]}"
    fi
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/pf-bench.XXXXXX")
chmod 755 "$TMP" # nginx workers may run as another user

proxy_version() {
    case $1 in
    nginx) "${PROXY_BIN[nginx]}" -v 2>&1 | sed -n 's|^nginx version: ||p' | head -1 ;;
    haproxy) "${PROXY_BIN[haproxy]}" -v 2>/dev/null | awk 'NR == 1 {print $1, $3}' ;;
    varnish) "${PROXY_BIN[varnish]}" -V 2>&1 | sed -n 's|.*(varnish-\([^ ]*\).*|Varnish \1|p' | head -1 ;;
    pilotfish) printf 'pilotfish %s\n' "$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '(no commit)')" ;;
    esac
}

# ---------------------------------------------------------------------------
# origin
# ---------------------------------------------------------------------------
ORIGIN_PORT=$(free_port)
start_bg "$LOAD_CPU" "$TMP/origin.log" "$ORIGIN" --listen "127.0.0.1:$ORIGIN_PORT"
ORIGIN_PID=$BG_PID
if ! wait_port "$ORIGIN_PORT" "$ORIGIN_PID"; then
    tail -n 20 "$TMP/origin.log" >&2 || true
    die "origin $ORIGIN did not accept on 127.0.0.1:$ORIGIN_PORT within ${START_TIMEOUT}s"
fi
log "origin $ORIGIN on 127.0.0.1:$ORIGIN_PORT (pid $ORIGIN_PID, CPU $LOAD_CPU)"

# ---------------------------------------------------------------------------
# proxies
# ---------------------------------------------------------------------------
# start_proxy NAME CASE DIR PORT: render its config, start it pinned; sets PROXY_PID
start_proxy() {
    local p=$1 c=$2 dir=$3 port=$4 snippet admin filters conns=4096
    local -n snippets="CASE_SNIPPET_$p"
    snippet=${snippets[$c]:-}
    # room for the idle case's connections (and as many upstream ones)
    if [[ -n ${CASE_IDLE[$c]:-} ]]; then conns=$((IDLE_CONNS + 1024)); fi
    case $p in
    nginx)
        # HTTP_SNIPPET first: it may hold @DIR@
        render "$BENCH/nginx.conf.in" "$dir/nginx.conf" HTTP_SNIPPET="${CASE_HTTP_nginx[$c]:-}" \
            DIR="$dir" PORT="$port" ORIGIN_PORT="$ORIGIN_PORT" CASE_SNIPPET="$snippet" \
            CONNS="$conns" NOFILE="$(ulimit -n)"
        start_bg "$PROXY_CPU" "$dir/stderr.log" "${PROXY_BIN[nginx]}" \
            -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf"
        ;;
    haproxy)
        render "$BENCH/haproxy.cfg.in" "$dir/haproxy.cfg" DIR="$dir" PORT="$port" \
            ORIGIN_PORT="$ORIGIN_PORT" CASE_SNIPPET="$snippet" CONNS="$conns"
        start_bg "$PROXY_CPU" "$dir/stderr.log" "${PROXY_BIN[haproxy]}" -db -f "$dir/haproxy.cfg"
        ;;
    varnish)
        # foreground (-F), working dir in the temp dir, no management port,
        # no privilege separation (-j none: the temp dir belongs to us), one
        # thread pool (its default is 2, one per CPU: both would be pinned
        # to the one proxy CPU anyway), 256 MiB of malloc storage
        render "$BENCH/varnish.vcl.in" "$dir/varnish.vcl" ORIGIN_PORT="$ORIGIN_PORT" \
            CASE_SNIPPET="$snippet"
        start_bg "$PROXY_CPU" "$dir/stderr.log" "${PROXY_BIN[varnish]}" -F -j none \
            -n "$dir/varnish" -a "127.0.0.1:$port" -T none -f "$dir/varnish.vcl" \
            -s malloc,256m -p thread_pools=1
        ;;
    pilotfish)
        admin=$(free_port)
        filters='    # no filters: key: the default chain [metrics, gzip]'
        if [[ -n ${CASE_FILTERS_pilotfish[$c]:-} ]]; then
            filters="    filters: ${CASE_FILTERS_pilotfish[$c]}"
        fi
        render "$BENCH/pilotfish.yaml.in" "$dir/pilotfish.yaml" DIR="$dir" PORT="$port" \
            ADMIN_PORT="$admin" ORIGIN_PORT="$ORIGIN_PORT" CASE_SNIPPET="$snippet" \
            FILTERS="$filters" CONNS="$conns"
        start_bg "$PROXY_CPU" "$dir/stderr.log" "${PROXY_BIN[pilotfish]}" -c "$dir/pilotfish.yaml"
        ;;
    esac
    PROXY_PID=$BG_PID
}

# check_response URL CASE: one request; status 200, body length, header regex
check_response() {
    local url=$1 c=$2 line code size want
    local -a hdr=()
    [[ -n $CURL ]] || return 0
    while IFS= read -r line; do if [[ -n $line ]]; then hdr+=(-H "$line"); fi; done <<<"${CASE_HEADERS[$c]}"
    if ! line=$("$CURL" -sS --noproxy '*' --max-time 5 -o /dev/null -D "$TMP/check.headers" \
        -w '%{http_code} %{size_download}' "${hdr[@]}" "$url" 2>&1); then
        CHECK_ERR="request failed: $line"
        return 1
    fi
    read -r code size <<<"$line"
    [[ $code == 200 ]] || { CHECK_ERR="status $code"; return 1; }
    want=${CASE_BYTES[$c]}
    if [[ -n $want && $size != "$want" ]]; then
        CHECK_ERR="body is $size bytes, expected $want"
        return 1
    fi
    if [[ -n ${CASE_EXPECT[$c]} ]] && ! tr -d '\r' <"$TMP/check.headers" | grep -qiE "${CASE_EXPECT[$c]}"; then
        CHECK_ERR="no response header matches /${CASE_EXPECT[$c]}/"
        return 1
    fi
    CHECK_WIRE=""
    if [[ -n ${CASE_DECODED[$c]:-} ]]; then
        # decoded, the body must be the origin's, byte for byte
        if ! line=$("$CURL" -sS --noproxy '*' --max-time 5 -o "$TMP/check.origin" \
            "http://127.0.0.1:$ORIGIN_PORT${CASE_PATH[$c]}" 2>&1); then
            CHECK_ERR="reference request to the origin failed: $line"
            return 1
        fi
        if ! line=$("$CURL" -sS --noproxy '*' --max-time 5 --compressed -o "$TMP/check.decoded" \
            "${hdr[@]}" "$url" 2>&1); then
            CHECK_ERR="decoding the body failed: $line"
            return 1
        fi
        if ! cmp -s "$TMP/check.origin" "$TMP/check.decoded"; then
            CHECK_ERR="decoded body ($(wc -c <"$TMP/check.decoded") bytes) differs from the origin's ($(wc -c <"$TMP/check.origin") bytes)"
            return 1
        fi
        CHECK_WIRE="$size encoded bytes per response, decoding to the origin's $(wc -c <"$TMP/check.origin") bytes"
    fi
}

# run_wrk URL CASE SECONDS OUTFILE: wrk pinned to LOAD_CPU, bounded by timeout
run_wrk() {
    local url=$1 c=$2 secs=$3 out=$4 line rc=0
    local -a hdr=()
    while IFS= read -r line; do if [[ -n $line ]]; then hdr+=(-H "$line"); fi; done <<<"${CASE_HEADERS[$c]}"
    timeout -k 5 $((secs + 30)) taskset -c "$LOAD_CPU" "$WRK" -t"$THREADS" -c"$CONNS" \
        -d"${secs}s" --timeout 5s --latency "${hdr[@]}" "$url" </dev/null >"$out" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || rc=$?
    WRK_PID=""
    return "$rc"
}

# case_skip PROXY CASE: prints CASE_SKIP_<proxy>[case] (empty: run it)
case_skip() {
    local -n skips="CASE_SKIP_$1"
    printf '%s' "${skips[$2]:-}"
}

# measure_once URL CASE OUTFILE: one measured wrk run against PROXY_PID. Sets
# M_ERR ("" = fine) and M_REQS M_RPS M_P50 M_P99 (ms) M_CPU M_USER M_SYS
# (us/req) M_FLT (minor faults/req) M_UTIL (%) M_OTHER (% of PROXY_CPU busy
# outside the proxy) M_NON2XX M_SOCKERR.
measure_once() {
    local url=$1 c=$2 out=$3 t0 t1 b0 b1 w0 w1 wrk_rc=0 p50 p99 u0 u1 s0 s1 f0 f1
    M_ERR=""
    read -r u0 s0 f0 < <(proc_stat "$PROXY_PID")
    t0=$((u0 + s0))
    b0=$(cpu_busy "$PROXY_CPU")
    w0=$(date +%s%N)
    run_wrk "$url" "$c" "$DURATION" "$out" || wrk_rc=$?
    w1=$(date +%s%N)
    b1=$(cpu_busy "$PROXY_CPU")
    read -r u1 s1 f1 < <(proc_stat "$PROXY_PID")
    t1=$((u1 + s1))
    if ((wrk_rc != 0)); then
        M_ERR="wrk failed: exit status $wrk_rc"
        return 0
    fi
    # wrk --latency output
    M_REQS=$(awk '/ requests in / {print $1; exit}' "$out")
    M_RPS=$(awk '/^Requests\/sec:/ {printf "%.0f", $2; exit}' "$out")
    p50=$(awk '$1 == "50%" {print $2; exit}' "$out")
    p99=$(awk '$1 == "99%" {print $2; exit}' "$out")
    M_NON2XX=$(awk '/Non-2xx or 3xx responses:/ {print $NF; exit}' "$out")
    M_SOCKERR=$(awk '/Socket errors:/ {sub(/.*Socket errors: */, ""); print; exit}' "$out")
    if [[ -z $M_REQS || -z $M_RPS || -z $p50 || -z $p99 ]] || ((M_REQS == 0)); then
        M_ERR="no result: could not read wrk's output (or 0 requests)"
        return 0
    fi
    M_P50=$(to_ms "$p50")
    M_P99=$(to_ms "$p99")
    M_CPU=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$M_REQS" \
        'BEGIN {printf "%.2f", d / hz * 1e6 / n}')
    M_USER=$(awk -v d=$((u1 - u0)) -v hz="$CLK_TCK" -v n="$M_REQS" \
        'BEGIN {printf "%.2f", d / hz * 1e6 / n}')
    M_SYS=$(awk -v d=$((s1 - s0)) -v hz="$CLK_TCK" -v n="$M_REQS" \
        'BEGIN {printf "%.2f", d / hz * 1e6 / n}')
    M_FLT=$(awk -v d=$((f1 - f0)) -v n="$M_REQS" 'BEGIN {printf "%.4f", d / n}')
    M_UTIL=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v ns=$((w1 - w0)) \
        'BEGIN {printf "%.0f", d / hz / (ns / 1e9) * 100}')
    # CPU time spent on the proxy's CPU by anything but the proxy (other
    # processes, interrupts): a sign of a noisy machine
    M_OTHER=$(awk -v b=$((b1 - b0 - (t1 - t0))) -v hz="$CLK_TCK" -v ns=$((w1 - w0)) \
        'BEGIN {v = b / hz / (ns / 1e9) * 100; printf "%.0f", v < 0 ? 0 : v}')
}

# strace_run URL CASE DIR: a short side run (STRACE_SECS of wrk) with
# `strace -c -f` attached to every thread of PROXY_PID's tree. Sets T_CALLS
# (syscalls per request) and T_MM (madvise/mmap/munmap/brk calls in the run);
# both "" when strace is missing or failed. strace slows the proxy down, so
# only the counts are used, never the times.
strace_run() {
    local url=$1 c=$2 dir=$3 pid t reqs total mm i
    local -a targets=()
    T_CALLS="" T_MM=""
    [[ -n $STRACE && $STRACE_SECS -gt 0 ]] || return 0
    for pid in $(descendants "$PROXY_PID"); do
        for t in /proc/"$pid"/task/*; do targets+=(-p "${t##*/}"); done
    done
    "$STRACE" -c -f -qq -o "$dir/strace.txt" "${targets[@]}" </dev/null >/dev/null 2>&1 &
    STRACE_PID=$!
    # attached when every thread shows a tracer
    for ((i = 0; i < 100; i++)); do
        grep -q "^TracerPid:[[:space:]]*$STRACE_PID\$" "/proc/$PROXY_PID/status" 2>/dev/null && break
        sleep 0.05
    done
    sleep 0.2
    run_wrk "$url" "$c" "$STRACE_SECS" "$dir/wrk-strace.txt" || true
    kill -INT "$STRACE_PID" 2>/dev/null || true
    wait "$STRACE_PID" 2>/dev/null || true
    STRACE_PID=""
    reqs=$(awk '/ requests in / {print $1; exit}' "$dir/wrk-strace.txt" 2>/dev/null || true)
    [[ -s $dir/strace.txt && -n $reqs && $reqs -gt 0 ]] || return 0
    # columns: % time, seconds, usecs/call, calls, [errors], syscall
    total=$(awk '$NF == "total" {print $4; exit}' "$dir/strace.txt")
    mm=$(awk '$NF ~ /^(madvise|mmap|munmap|brk|mremap)$/ {printf "%s%s %s", sep, $NF, $4; sep = ", "}' \
        "$dir/strace.txt")
    [[ -n $total ]] || return 0
    T_CALLS=$(awk -v t="$total" -v n="$reqs" 'BEGIN {printf "%.2f", t / n}')
    T_MM="${mm:-none} in $reqs requests"
}

# origin_requests: the origin's answered-request counter (/__stats; that
# request is not counted), "" when it cannot be read
origin_requests() {
    [[ -n $CURL ]] || return 0
    "$CURL" -sS --noproxy '*' --max-time 5 "http://127.0.0.1:$ORIGIN_PORT/__stats" 2>/dev/null |
        sed -n 's/.*"requests": *\([0-9]*\).*/\1/p'
}

# store_objects URL KEY: the store-1k case against PROXY_PID (see the case
# table). Sets S_BEFORE S_AFTER (RSS KiB) and S_SECS[KEY] S_RSS[KEY];
# STORE_ERR on failure.
store_objects() {
    local url=$1 key=$2 o0 o1 b a t0 t1 codes bad
    STORE_ERR=""
    [[ -n $CURL ]] || { STORE_ERR="needs curl"; return 1; }
    sleep 1 # let start-up allocations settle
    b=$(rss_kib "$PROXY_PID")
    o0=$(origin_requests)
    t0=$(date +%s%N)
    # one connection, requests one after the other: curl's URL globbing
    codes=$("$CURL" -sS --noproxy '*' --max-time 600 -o /dev/null -w '%{http_code}\n' \
        "$url&k=[1-$STORE_N]" 2>&1 | sort | uniq -c | tr -s ' ' | tr '\n' ';')
    t1=$(date +%s%N)
    o1=$(origin_requests)
    sleep 1
    a=$(rss_kib "$PROXY_PID")
    log "${key/|/ }: $STORE_N URLs: statuses (count code) $codes origin requests $((o1 - o0))"
    if [[ $codes != " $STORE_N 200;" ]]; then
        STORE_ERR="statuses (count code): $codes"
        return 1
    fi
    if ((o1 - o0 != STORE_N)); then
        STORE_ERR="the origin answered $((o1 - o0)) of the $STORE_N requests (expected all: distinct URLs)"
        return 1
    fi
    # a sample must now be hits
    "$CURL" -sS --noproxy '*' --max-time 60 -o /dev/null "$url&k=[1-100]" >/dev/null 2>&1 || true
    bad=$(($(origin_requests) - o1))
    if ((bad != 0)); then
        STORE_ERR="$bad of 100 stored URLs asked again reached the origin: not all stored"
        return 1
    fi
    S_RSS[$key]=$(awk -v b="$b" -v a="$a" -v n="$STORE_N" \
        'BEGIN {printf "%.1f|%.1f|%.0f", b / 1024, a / 1024, (a - b) * 1024 / n}')
    S_SECS[$key]=$(awk -v d=$((t1 - t0)) 'BEGIN {printf "%.1f", d / 1e9}')
    log "${key/|/ }: RSS $b KiB before, $a KiB after: $(((a - b) * 1024 / STORE_N)) bytes per object"
}

# idle_conns URL KEY: the idle case (see the case table) against PROXY_PID.
# Sets I_RSS[KEY] ("before|after|bytes per connection"); IDLE_ERR on failure.
idle_conns() {
    local url=$1 key=$2 port b a i est
    IDLE_ERR=""
    port=${url#http://127.0.0.1:}
    port=${port%%/*}
    # warm-up: one batch of the clients below (100 requests in flight), closed
    if ! python3 - "$port" 100 "$TMP/idle.warm" "${url#http://127.0.0.1:"$port"}" 0 \
        <"$BENCH/idle_clients.py" >"$TMP/idle.log" 2>&1; then
        IDLE_ERR="the warm-up clients failed: $(tail -n 1 "$TMP/idle.log" 2>/dev/null)"
        return 1
    fi
    sleep 2 # let the closes and start-up allocations settle
    b=$(rss_kib "$PROXY_PID")
    rm -f "$TMP/idle.ready"
    python3 - "$port" "$IDLE_CONNS" "$TMP/idle.ready" "${url#http://127.0.0.1:"$port"}" \
        <"$BENCH/idle_clients.py" >"$TMP/idle.log" 2>&1 &
    IDLE_PID=$!
    for ((i = 0; i < 1200; i++)); do
        [[ -f $TMP/idle.ready ]] && break
        kill -0 "$IDLE_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [[ ! -f $TMP/idle.ready ]]; then
        IDLE_ERR="the idle clients did not get ready: $(tail -n 1 "$TMP/idle.log" 2>/dev/null)"
        stop_tree "$IDLE_PID"
        IDLE_PID=""
        return 1
    fi
    sleep 2 # let the proxy settle (deferred frees, timers)
    a=$(rss_kib "$PROXY_PID")
    est=$(ss -Htn state established "( sport = :$port )" 2>/dev/null | wc -l)
    stop_tree "$IDLE_PID"
    IDLE_PID=""
    log "${key/|/ }: $IDLE_CONNS idle connections ($est established on the proxy's side):" \
        "RSS $b KiB before, $a KiB after"
    if ((est < IDLE_CONNS)); then
        IDLE_ERR="only $est of $IDLE_CONNS connections were still open when RSS was read"
        return 1
    fi
    I_RSS[$key]=$(awk -v b="$b" -v a="$a" -v n="$IDLE_CONNS" \
        'BEGIN {printf "%.1f|%.1f|%.0f", b / 1024, a / 1024, (a - b) * 1024 / n}')
}

declare -A R_RPS=() R_P50=() R_P99=() R_CPU=() R_RSS=() R_UTIL=() R_NOTE=() S_RSS=() S_SECS=()
declare -A R_USER=() R_SYS=() R_FLT=() R_RANGE=() R_CALLS=() I_RSS=()
ROWS=()
STORE_ROWS=()
IDLE_ROWS=()
if [[ -n $IDLE_NOTE ]]; then NOTES+=("$IDLE_NOTE"); fi
NOTES=()
FAILED=0

for p in $PROXIES; do
    [[ -n ${SKIPPED[$p]:-} ]] && continue
    for c in $CASES; do
        key="$p|$c"
        why=$(case_skip "$p" "$c")
        if [[ -n $why ]]; then
            NOTES+=("$p $c: skipped: $why")
            continue
        fi
        dir="$TMP/$p-$c"
        dir=${dir//+/_}
        mkdir -p "$dir"
        chmod 755 "$dir"
        port=$(free_port)
        url="http://127.0.0.1:$port${CASE_PATH[$c]}"
        if [[ -n ${CASE_STORE[$c]:-} ]]; then
            STORE_ROWS+=("$key")
        elif [[ -n ${CASE_IDLE[$c]:-} ]]; then
            IDLE_ROWS+=("$key")
        else
            ROWS+=("$key")
        fi

        start_proxy "$p" "$c" "$dir" "$port"
        if ! wait_port "$port" "$PROXY_PID"; then
            if kill -0 "$PROXY_PID" 2>/dev/null; then
                why="did not accept on 127.0.0.1:$port within ${START_TIMEOUT}s"
            else
                rc=0
                wait "$PROXY_PID" || rc=$?
                why="exited at start (status $rc)"
            fi
            log "$p $c: $why; its output:"
            cat "$dir/stderr.log" "$dir/error.log" 2>/dev/null | tail -n 20 >&2 || true
            last=$(cat "$dir/stderr.log" "$dir/error.log" 2>/dev/null | grep -v '^[[:space:]]*$' | tail -n 1 || true)
            R_NOTE[$key]="did not start"
            NOTES+=("$p $c: $why${last:+: $last}")
            FAILED=1
            stop_tree "$PROXY_PID"
            PROXY_PID=""
            continue
        fi
        CHECK_ERR=""
        CHECK_WIRE=""
        if ! check_response "$url" "$c"; then
            log "$p $c: bad response: $CHECK_ERR"
            R_NOTE[$key]="bad response"
            FAILED=1
            NOTES+=("$p $c: bad response: $CHECK_ERR")
            stop_tree "$PROXY_PID"
            PROXY_PID=""
            continue
        fi

        if [[ -n $CHECK_WIRE ]]; then
            log "$p $c: $CHECK_WIRE"
            NOTES+=("$p $c: $CHECK_WIRE")
        fi
        if [[ -n ${CASE_STORE[$c]:-} ]]; then
            if ! store_objects "$url" "$key"; then
                R_NOTE[$key]="failed"
                NOTES+=("$p $c: $STORE_ERR")
                FAILED=1
            fi
            stop_tree "$PROXY_PID"
            PROXY_PID=""
            continue
        fi
        if [[ -n ${CASE_IDLE[$c]:-} ]]; then
            if ! idle_conns "$url" "$key"; then
                R_NOTE[$key]="failed"
                NOTES+=("$p $c: $IDLE_ERR")
                FAILED=1
            fi
            stop_tree "$PROXY_PID"
            PROXY_PID=""
            continue
        fi
        log "$p $c: pid $PROXY_PID on 127.0.0.1:$port (CPU $PROXY_CPU); warm-up ${WARMUP}s"
        if ((WARMUP > 0)); then run_wrk "$url" "$c" "$WARMUP" "$dir/warmup.txt" || true; fi

        best=""
        lo="" hi=""
        o0=$(origin_requests)
        for ((rep = 1; rep <= REPEAT; rep++)); do
            tag=""
            if ((REPEAT > 1)); then tag=" [$rep/$REPEAT]"; fi
            log "$p $c$tag: measuring ${DURATION}s: wrk -t$THREADS -c$CONNS;" \
                "CPU of pids $(descendants "$PROXY_PID" | tr '\n' ' ')"
            measure_once "$url" "$c" "$dir/wrk-$rep.txt"
            if [[ -n $M_ERR ]]; then
                if [[ -f $dir/wrk-$rep.txt ]]; then sed 's/^/    /' "$dir/wrk-$rep.txt" >&2; fi
                break
            fi
            log "$p $c$tag: $M_RPS req/s, p50 $M_P50 ms, p99 $M_P99 ms, $M_CPU CPU us/req" \
                "(user $M_USER, sys $M_SYS; $M_FLT minor faults/req;" \
                "$M_UTIL% of a CPU; CPU $PROXY_CPU ${M_OTHER}% busy otherwise)"
            lo=$(awk -v a="$lo" -v b="$M_CPU" 'BEGIN {print (a == "" || b + 0 < a + 0) ? b : a}')
            hi=$(awk -v a="$hi" -v b="$M_CPU" 'BEGIN {print (a == "" || b + 0 > a + 0) ? b : a}')
            # keep the run least disturbed by the rest of the machine
            if [[ -z $best ]] || ((M_OTHER < best)); then
                best=$M_OTHER
                R_RPS[$key]=$M_RPS R_P50[$key]=$M_P50 R_P99[$key]=$M_P99
                R_CPU[$key]=$M_CPU R_UTIL[$key]=$M_UTIL B_NON2XX=$M_NON2XX B_SOCKERR=$M_SOCKERR
                R_USER[$key]=$M_USER R_SYS[$key]=$M_SYS R_FLT[$key]=$M_FLT
            fi
            kill -0 "$PROXY_PID" 2>/dev/null || break
        done
        R_RANGE[$key]="$lo–$hi"
        if [[ -z $M_ERR ]] && kill -0 "$PROXY_PID" 2>/dev/null; then
            strace_run "$url" "$c" "$dir"
            if [[ -n $T_CALLS ]]; then
                R_CALLS[$key]=$T_CALLS
                log "$p $c: strace -c -f, ${STRACE_SECS}s: $T_CALLS syscalls/req; memory syscalls: $T_MM"
                NOTES+=("$p $c: strace side run (${STRACE_SECS}s): madvise/mmap/munmap/brk/mremap calls: $T_MM")
            fi
        fi
        o1=$(origin_requests)
        if [[ -n ${CASE_HIT[$c]:-} ]]; then
            if [[ -z $o0 || -z $o1 ]]; then
                NOTES+=("$p $c: could not read the origin's request counter: hits not verified")
            elif ((o1 != o0)); then
                NOTES+=("$p $c: **not all hits**: the origin answered $((o1 - o0)) requests during the measured runs")
                FAILED=1
            else
                log "$p $c: all hits (the origin answered 0 requests during the measured runs)"
            fi
        fi
        rss=$(rss_kib "$PROXY_PID")
        alive=1
        kill -0 "$PROXY_PID" 2>/dev/null || alive=0
        stop_tree "$PROXY_PID"
        PROXY_PID=""
        ((alive)) || NOTES+=("$p $c: the proxy exited during the run")

        if [[ -n $M_ERR ]]; then
            unset "R_RPS[$key]" "R_P50[$key]" "R_P99[$key]" "R_CPU[$key]" "R_UTIL[$key]"
            R_NOTE[$key]=${M_ERR%%:*}
            NOTES+=("$p $c: $M_ERR")
            FAILED=1
            continue
        fi
        if [[ -n $B_NON2XX ]]; then NOTES+=("$p $c: $B_NON2XX non-2xx/3xx responses"); fi
        if [[ -n $B_SOCKERR ]]; then NOTES+=("$p $c: socket errors: $B_SOCKERR"); fi
        if ((best >= 10)); then
            NOTES+=("$p $c: CPU $PROXY_CPU was ${best}% busy outside the proxy (other processes, interrupts): numbers are noisy")
        fi
        R_RSS[$key]=$(awk -v k="$rss" 'BEGIN {printf "%.1f", k / 1024}')
        if ((REPEAT > 1)); then
            log "$p $c: kept the run with CPU $PROXY_CPU ${best}% busy otherwise; RSS ${R_RSS[$key]} MiB"
        else
            log "$p $c: RSS ${R_RSS[$key]} MiB"
        fi
    done
done

# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------
cpu_model=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
versions=""
for p in $PROXIES; do
    if [[ -n ${PROXY_BIN[$p]:-} ]]; then versions+="${versions:+, }$(proxy_version "$p")"; fi
done

# shellcheck disable=SC2016 # backquotes are Markdown
report() {
    printf '## bench/run.sh: pilotfish and others (%s)\n\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
    printf -- '- machine: %s CPUs (`nproc`), %s, kernel %s\n' "$NCPU" "${cpu_model:-unknown CPU}" "$(uname -r)"
    printf -- '- proxies: %s; one worker each, pinned to CPU %s\n' "${versions:-none}" "$PROXY_CPU"
    printf -- '- load: `wrk -t%s -c%s -d%ss --latency` after a %ss warm-up%s; wrk and the origin (%s) pinned to CPU %s\n' \
        "$THREADS" "$CONNS" "$DURATION" "$WARMUP" \
        "$( ((REPEAT > 1)) && echo ", best of $REPEAT runs by least other load on CPU $PROXY_CPU")" \
        "${ORIGIN#"$ROOT"/}" "$LOAD_CPU"
    # shellcheck disable=SC2086 # PROXIES is a list
    if in_list nginx $PROXIES && [[ " $CASES" == *" hit-"* ]]; then
        printf -- '- nginx in the hit-* cases: sendfile %s\n' "$NGINX_SENDFILE"
    fi
    printf -- '- pilotfish: routes with no `filters:` key run its default chain [metrics, gzip] (the cache rows name theirs), access log off like the others\n'
    printf -- '- CPU µs/req: proxy process tree utime+stime over the measured run / requests (user / sys: the two parts)%s; CPU %%: the same over wall time\n' \
        "$( ((REPEAT > 1)) && echo "; range: lowest–highest of the $REPEAT runs")"
    printf -- '- faults/req: minor page faults (minflt) of the tree over the measured run / requests; syscalls/req: `strace -c -f` attached for a separate %ss wrk run\n\n' "$STRACE_SECS"
    printf '| proxy | case | req/s | p50 (ms) | p99 (ms) | CPU µs/req | user / sys | range | faults/req | syscalls/req | RSS MiB | proxy CPU %% |\n'
    printf '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
    local key p c
    for key in "${ROWS[@]}"; do
        p=${key%%|*}
        c=${key#*|}
        if [[ -n ${R_CPU[$key]:-} ]]; then
            printf '| %s | %s | %s | %s | %s | %s | %s / %s | %s | %s | %s | %s | %s |\n' "$p" "$c" \
                "${R_RPS[$key]}" "${R_P50[$key]}" "${R_P99[$key]}" "${R_CPU[$key]}" \
                "${R_USER[$key]}" "${R_SYS[$key]}" "${R_RANGE[$key]:-}" "${R_FLT[$key]}" \
                "${R_CALLS[$key]:-}" "${R_RSS[$key]}" "${R_UTIL[$key]}"
        else
            printf '| %s | %s | %s | | | | | | | | | |\n' "$p" "$c" "${R_NOTE[$key]:-failed}"
        fi
    done
    for p in $PROXIES; do
        if [[ -n ${SKIPPED[$p]:-} ]]; then printf '| %s | %s | not run | | | | | | | | | |\n' "$p" "$CASES"; fi
    done

    local lines="" other r
    for c in $CASES; do
        [[ -n ${R_CPU["pilotfish|$c"]:-} ]] || continue
        for other in nginx haproxy varnish; do
            [[ -n ${R_CPU["$other|$c"]:-} ]] || continue
            r=$(awk -v a="${R_CPU["pilotfish|$c"]}" -v b="${R_CPU["$other|$c"]}" \
                'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}')
            lines+="| $c | pilotfish/$other | ${R_CPU["pilotfish|$c"]} / ${R_CPU["$other|$c"]} | **$r** |"$'\n'
        done
    done
    if [[ -n $lines ]]; then
        printf '\nCPU µs/req ratios (< 1: pilotfish uses less CPU per request):\n\n'
        printf '| case | proxies | CPU µs/req | ratio |\n|---|---|---:|---:|\n%s' "$lines"
    fi
    if ((${#STORE_ROWS[@]})); then
        printf '\nMemory per stored object (%s distinct 1 KiB responses, RSS of the process tree before and after):\n\n' "$STORE_N"
        printf '| proxy | RSS before MiB | RSS after MiB | MiB per 10,000 objects | bytes per object | fill time (s) |\n'
        printf '|---|---:|---:|---:|---:|---:|\n'
        local b a per
        for key in "${STORE_ROWS[@]}"; do
            if [[ -n ${S_RSS[$key]:-} ]]; then
                IFS='|' read -r b a per <<<"${S_RSS[$key]}"
                printf '| %s | %s | %s | %s | %s | %s |\n' "${key%%|*}" "$b" "$a" \
                    "$(awk -v x="$per" 'BEGIN {printf "%.1f", x * 10000 / 1048576}')" "$per" "${S_SECS[$key]}"
            else
                printf '| %s | %s | | | | |\n' "${key%%|*}" "${R_NOTE[$key]:-failed}"
            fi
        done
    fi
    if ((${#IDLE_ROWS[@]})); then
        printf '\nMemory per idle keep-alive client connection (%s connections, each after one 1 KiB request; RSS of the process tree before and after):\n\n' "$IDLE_CONNS"
        printf '| proxy | RSS before MiB | RSS after MiB | bytes per connection |\n|---|---:|---:|---:|\n'
        local ib ia iper
        for key in "${IDLE_ROWS[@]}"; do
            if [[ -n ${I_RSS[$key]:-} ]]; then
                IFS='|' read -r ib ia iper <<<"${I_RSS[$key]}"
                printf '| %s | %s | %s | %s |\n' "${key%%|*}" "$ib" "$ia" "$iper"
            else
                printf '| %s | %s | | |\n' "${key%%|*}" "${R_NOTE[$key]:-failed}"
            fi
        done
    fi
    for p in $PROXIES; do
        if [[ -n ${SKIPPED[$p]:-} ]]; then NOTES=("$p: not run: ${SKIPPED[$p]}" "${NOTES[@]}"); fi
    done
    if ((${#NOTES[@]})); then
        printf '\nNotes:\n\n'
        local n
        for n in "${NOTES[@]}"; do printf -- '- %s\n' "$n"; done
    fi
}

report_text=$(report)
printf '\n%s\n' "$report_text"
printf '%s\n' "$report_text" >"$OUT"
log "written to ${OUT#"$ROOT"/}"
((FAILED == 0)) || die "some runs failed (see Notes)"
