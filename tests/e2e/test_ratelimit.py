"""The ratelimit filter end to end (docs/filters/ratelimit.md): token bucket per key with 429
rate_limited + Retry-After, the keys (client_ip, header:NAME, global), one
limit per process whatever the number of workers, the bounded key table,
trusted_proxies with X-Forwarded-For, and the rejection counter on /metrics.

Timing never decides a result: the tests run at one request per hour (HOURLY),
so a burst of N admits exactly N and the next is refused however slow the
machine is, and Retry-After is checked against bounds computed from the time
the test measured. The one refill test (waiting Retry-After is enough) only
has one-sided margins. Refill arithmetic is unit-tested with an injected clock
(tests/unit/test_ratelimit.c)."""

import math
import os
import socket
import threading
import time

import pf
from pf import Conn, Origin, Pilotfish

CONFIG = """\
listen: "127.0.0.1:{{port}}"
workers: {{workers}}
admin: { listen: "127.0.0.1:{{admin_port}}" }
access_log: { path: off }
upstreams:
  app:
    endpoints: ["127.0.0.1:{{origin_port}}"]
routes:
  - name: limited
    match: { prefix: "/limited/" }
    upstream: app
    filters: [metrics, ratelimit]
  - name: limited2
    match: { prefix: "/limited2/" }
    upstream: app
    filters: [metrics, ratelimit]
  - name: free
    match: { prefix: "/" }
    upstream: app
    filters: [metrics]
filters:
  ratelimit: { requests_per_second: {{rate}}, burst: {{burst}}{{extra}} }
"""


# One token per hour: the time between two requests never refills a bucket.
HOURLY = "0.000277777777777778"
HOUR = 3600


def start(rate=HOURLY, burst=5, extra="", workers=1):
    o = Origin()
    p = Pilotfish(CONFIG, origin=o, vars={"rate": rate, "burst": burst,
                                          "extra": (", " + extra) if extra else "",
                                          "workers": workers})
    return o, p


def conn_from(src, port, timeout=10.0):
    """A client connection to 127.0.0.1:port from source address src (127.0.0.0/8)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c = Conn.__new__(Conn)
    c.sock, c.port, c.buf, c.eof = s, port, b"", False
    return c


def get(p, target="/limited/", headers=None, src="127.0.0.1"):
    """One request on a fresh connection from src."""
    with conn_from(src, p.port) as c:
        return c.request("GET", target, headers=headers)


def assert_admitted(r, what=""):
    assert r.status == 200, "expected 200 (admitted)%s, got %r %r" % (
        " (%s)" % what if what else "", r, r.body[:200])
    assert r.header("X-Origin-Seq") is not None, "200 not from the origin: %r" % r.headers


def assert_limited(r, what=""):
    """A 429 the rate limiter made; returns Retry-After in seconds."""
    where = " (%s)" % what if what else ""
    assert r.status == 429, "expected 429%s, got %r %r" % (where, r, r.body[:200])
    assert r.header("X-Pilotfish-Error") == "rate_limited", r.headers
    assert r.header("X-Origin-Seq") is None, "429 came from the origin? %r" % r.headers
    assert (r.header("Content-Type") or "").startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body, dict) and body.get("error") == "rate_limited", body
    ra = r.header("Retry-After")
    assert ra is not None and ra.isdigit(), "Retry-After missing or not whole seconds%s: %r" % (
        where, r.headers)
    assert int(ra) >= 1, "Retry-After %s < 1" % ra
    return int(ra)


def burst_then_limited(p, n, target="/limited/", headers=None, src="127.0.0.1", what=""):
    """n requests pass, the next one gets 429; returns its Retry-After."""
    for i in range(n):
        assert_admitted(get(p, target, headers, src), "%s request %d of the burst" % (what, i + 1))
    return assert_limited(get(p, target, headers, src), "%s request %d" % (what, n + 1))


def assert_hourly_retry_after(ra, since, what=""):
    """Retry-After of an empty HOURLY bucket whose last token went at or after
    `since` (monotonic): the whole hour, minus the seconds gone since then."""
    gone = time.monotonic() - since
    assert HOUR - math.ceil(gone) - 1 <= ra <= HOUR, \
        "Retry-After %d%s, expected %d minus the %.1fs since the bucket emptied" % (
            ra, " (%s)" % what if what else "", HOUR, gone)


# ---- the bucket ----

def test_ratelimit_burst_then_429():
    o, p = start()
    with o, p:
        o.reset_stats()
        t0 = time.monotonic()
        with Conn(p.port) as c:  # keep-alive: the 5 pass, the sixth is refused
            for i in range(5):
                assert_admitted(c.request("GET", "/limited/?n=%d" % i), "request %d" % (i + 1))
            ra = assert_limited(c.request("GET", "/limited/?n=5"), "sixth request")
        assert_hourly_retry_after(ra, t0, "sixth request")
        assert o.stats()["requests"] == 5, "the refused request reached the origin"
        # other routes are not limited
        for _ in range(10):
            assert_admitted(get(p, "/free/"), "route without ratelimit")
        # refused requests cost nothing: hammering does not push the next token back
        for i in range(10):
            ra2 = assert_limited(get(p), "refused request %d" % (i + 1))
            assert ra2 <= ra, "Retry-After grew from %d to %d: a refused request took a " \
                "token" % (ra, ra2)
        assert o.stats()["requests"] == 15, "a refused request reached the origin"


def test_ratelimit_retry_after_counts_down():
    o, p = start(burst=2)
    with o, p:
        t0 = time.monotonic()
        ra = burst_then_limited(p, 2)
        assert_hourly_retry_after(ra, t0)
        time.sleep(1.2)
        ra2 = assert_limited(get(p))
        assert ra2 <= ra - 1, "Retry-After did not count down: %d then %d 1.2s later" % (ra, ra2)
        assert_hourly_retry_after(ra2, t0, "1.2s later")


def refused_after_admitted(p, interval, what):
    """Take the one token of a burst-1 bucket, then ask again until refused; a
    second 200 is allowed only when `interval` passed between sending the
    admitted request and the answer to the next (a token could be back).
    Returns Retry-After."""
    for _ in range(5):
        t0 = time.monotonic()
        assert_admitted(get(p), what)
        r = get(p)
        if r.status == 200:
            took = time.monotonic() - t0
            assert took >= interval, "two requests admitted %.2fs apart, one token per %gs " \
                "(%s)" % (took, interval, what)
            time.sleep(interval)  # the bucket is full again
            continue
        return assert_limited(r, what)
    raise AssertionError("never refused (%s): the machine is far too slow" % what)


@pf.timeout(40)
def test_ratelimit_waiting_retry_after_is_enough():
    """The refill, end to end, with one-sided margins only: Retry-After never
    exceeds the token interval, and after waiting it a request is admitted."""
    o, p = start(rate=0.5, burst=1)
    with o, p:
        for what in ("first wait", "second wait"):
            ra = refused_after_admitted(p, 2.0, what)
            assert ra <= 2, "Retry-After %d, one token per 2s (%s)" % (ra, what)
            time.sleep(ra)
            assert_admitted(get(p), "after waiting Retry-After=%d (%s)" % (ra, what))
            time.sleep(2.0)  # a full bucket again, whatever that request did


def test_ratelimit_429_keeps_the_connection_in_sync():
    """A refused request's body is never read as the next request; after a 429
    the connection either serves the next request correctly or is closed."""
    o, p = start(burst=1)
    with o, p:
        t0 = time.monotonic()
        assert_admitted(get(p))
        o.reset_stats()
        inner = b"GET /free/?body=SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n"
        served = 0
        for what, body in (("GET", None), ("POST Content-Length", inner),
                           ("POST chunked", [inner])):
            with Conn(p.port, timeout=5) as c:
                r = c.request("GET" if body is None else "POST", "/limited/", body=body)
                ra = assert_limited(r, what)
                assert_hourly_retry_after(ra, t0, what)
                closes = "close" in (r.header("Connection") or "").lower()
                try:
                    r2 = c.request("GET", "/free/?body=next")
                except (pf.ConnectionClosed, ConnectionResetError, BrokenPipeError):
                    assert closes, "%s: connection dropped after a 429 without " \
                        "Connection: close" % what
                    continue
                assert not closes, "%s: answered after Connection: close" % what
                assert r2.status == 200 and r2.body == b"next", (what, r2, r2.body)
                served += 1
        # the origin saw the "next" requests only, never the body-borne one
        assert o.stats()["requests"] == served, (o.stats(), served)


# ---- keys ----

def test_ratelimit_key_client_ip():
    o, p = start()
    with o, p:
        burst_then_limited(p, 5, src="127.0.0.1", what="127.0.0.1")
        burst_then_limited(p, 5, src="127.0.0.2", what="127.0.0.2")
        # a client cannot pick its key with X-Forwarded-For (no trusted_proxies)
        for i in range(5):
            assert_admitted(get(p, headers={"X-Forwarded-For": "198.51.100.%d" % i},
                                src="127.0.0.3"))
        assert_limited(get(p, headers={"X-Forwarded-For": "198.51.100.99"}, src="127.0.0.3"),
                       "X-Forwarded-For from an untrusted peer must not change the key")
        assert_limited(get(p, src="127.0.0.1"))


def test_ratelimit_key_header():
    o, p = start(extra="key: 'header:X-User'")
    with o, p:
        burst_then_limited(p, 5, headers={"X-User": "alice"}, what="alice")
        burst_then_limited(p, 5, headers={"X-User": "bob"}, what="bob")
        # same user from another address: same bucket; header name is case-insensitive
        assert_limited(get(p, headers={"x-user": "alice"}, src="127.0.0.2"), "alice again")
        # values are compared exactly
        assert_admitted(get(p, headers={"X-User": "Alice"}), "Alice is not alice")
        # absent and empty share one bucket
        for i in range(5):
            assert_admitted(get(p), "no X-User, request %d" % (i + 1))
        assert_limited(get(p, headers={"X-User": ""}), "empty X-User after 5 without the header")
        # the first X-User header counts
        assert_limited(get(p, headers=[("X-User", "bob"), ("X-User", "carol")]), "bob, carol")


def test_ratelimit_key_global():
    o, p = start(extra="key: global")
    with o, p:
        assert_admitted(get(p, src="127.0.0.1"))
        assert_admitted(get(p, src="127.0.0.2"))
        assert_admitted(get(p, "/limited2/", src="127.0.0.3"))
        assert_admitted(get(p, headers={"X-User": "x"}))
        assert_admitted(get(p, src="127.0.0.4"))
        assert_limited(get(p, src="127.0.0.5"), "sixth request, from a new address")
        assert_limited(get(p, "/limited2/", src="127.0.0.6"), "global spans every route")
        assert_admitted(get(p, "/free/"), "a route without the filter")


# ---- one limit per process ----

def thread_ticks(pid):
    """{tid: utime+stime} of every thread of pid."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[tid] = int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            pass
    return out


def hammer(p, total, threads=16, target="/limited/"):
    """total requests from parallel clients, each on a new connection (so the
    kernel spreads them over the workers). Returns (admitted, refused, others)."""
    lock = threading.Lock()
    res = {"ok": 0, "429": 0, "other": [], "left": total}

    def worker():
        while True:
            with lock:
                if res["left"] == 0:
                    return
                res["left"] -= 1
            try:
                with Conn(p.port, timeout=10) as c:
                    st = c.request("GET", target).status
            except Exception as e:  # noqa: BLE001 -- reported below
                st = repr(e)
            with lock:
                if st == 200:
                    res["ok"] += 1
                elif st == 429:
                    res["429"] += 1
                else:
                    res["other"].append(st)

    ts = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return res["ok"], res["429"], res["other"]


@pf.timeout(90)
def test_ratelimit_one_limit_for_the_process_with_two_workers():
    burst, total = 20, 2000
    for extra in ("", "key: global"):
        o, p = start(burst=burst, extra=extra, workers=2)
        with o, p:
            key = 'pilotfish_ratelimit_rejected_total{route="limited"}'
            m0 = p.metrics().get(key, 0.0)
            before = thread_ticks(p.pid)
            ok, refused, other = hammer(p, total)
            after = thread_ticks(p.pid)
            m1 = p.metrics().get(key, 0.0)
            what = "key %s" % (extra or "client_ip")
            assert not other, "%s: unexpected answers: %r" % (what, other[:5])
            busy = sorted((after.get(t, 0) - before.get(t, 0) for t in after), reverse=True)
            # both workers must have served, or the test proves nothing
            assert len(busy) >= 2 and busy[1] > 0, \
                "%s: only one thread of pilotfish did work (%r)" % (what, busy)
            assert ok == burst, "%s: %d of %d admitted with 2 workers; one process-wide " \
                "bucket of %d admits exactly %d (per-worker buckets would admit up to %d)" % (
                    what, ok, total, burst, burst, 2 * burst)
            assert refused == total - burst, (what, ok, refused)
            assert m1 - m0 == refused, "%s: %s grew by %d, %d requests were refused" % (
                what, key, m1 - m0, refused)


# ---- bounded key table ----

@pf.timeout(90)
def test_ratelimit_max_keys_flood_keeps_working():
    o, p = start(extra="key: 'header:X-User', max_keys: 100")
    with o, p:
        with Conn(p.port) as c:
            for i in range(1000):
                r = c.request("GET", "/limited/", headers={"X-User": "warm-%d" % i})
                assert_admitted(r, "new key %d of 1000 starts with a full bucket" % i)
        time.sleep(0.2)
        rss0 = p.rss_kib()
        for rnd in range(3):
            with Conn(p.port) as c:
                for i in range(1000):
                    r = c.request("GET", "/limited/",
                                  headers={"X-User": "flood-%d-%d-%s" % (rnd, i, "x" * (i % 200))})
                    assert_admitted(r, "flood round %d key %d" % (rnd, i))
        rss1 = p.rss_kib()
        assert rss1 - rss0 < 2048, "RSS grew %d KiB (%d -> %d) over 3000 distinct keys with " \
            "max_keys 100" % (rss1 - rss0, rss0, rss1)
        # the limiter still limits: a busy key right after the flood
        burst_then_limited(p, 5, headers={"X-User": "victim"}, what="after the flood")
        # and a key that keeps being used survives a flood of one-off keys
        # (it is never the least recently used one)
        with Conn(p.port) as c:
            for i in range(300):
                c.request("GET", "/limited/", headers={"X-User": "oneoff-%d" % i})
                if i % 10 == 0:
                    r = c.request("GET", "/limited/", headers={"X-User": "victim"})
                    assert_limited(r, "victim's empty bucket evicted by one-off keys (i=%d)" % i)


# ---- behind proxies ----

def test_ratelimit_trusted_proxies_x_forwarded_for():
    o, p = start(extra="trusted_proxies: [127.0.0.1, '10.0.0.0/8']")
    with o, p:
        xff = lambda v: {"X-Forwarded-For": v}  # noqa: E731
        # from a trusted peer, the client address in X-Forwarded-For is the key
        burst_then_limited(p, 5, headers=xff("203.0.113.5"), what="203.0.113.5")
        assert_admitted(get(p, headers=xff("203.0.113.6")), "another client behind the proxy")
        # with a port, or in a chain of trusted proxies, the same client
        assert_limited(get(p, headers=xff("203.0.113.5:4711")), "203.0.113.5 with a port")
        assert_limited(get(p, headers=xff("203.0.113.5, 10.1.2.3")), "behind 10.1.2.3 (trusted)")
        assert_limited(get(p, headers=xff("192.0.2.77, 203.0.113.5")),
                       "the rightmost untrusted address decides, not the leftmost")
        # several headers: the last one is read first
        assert_limited(get(p, headers=[("X-Forwarded-For", "192.0.2.1"),
                                       ("X-Forwarded-For", "203.0.113.5")]), "two headers")
        # IPv6 with brackets
        burst_then_limited(p, 5, headers=xff("[2001:db8::1]:443"), what="[2001:db8::1]:443")
        assert_limited(get(p, headers=xff("2001:db8:0::1")), "same IPv6 address, other spelling")
        # an untrusted peer's X-Forwarded-For is ignored: the peer is the key
        for i in range(5):
            assert_admitted(get(p, headers=xff("198.51.100.%d" % i), src="127.0.0.2"))
        assert_limited(get(p, headers=xff("198.51.100.200"), src="127.0.0.2"),
                       "spoofed X-Forwarded-For from 127.0.0.2")
        # a malformed element stops the walk at the last trusted hop (the peer)
        for i in range(5):
            assert_admitted(get(p, headers=xff("unknown")), "'unknown' %d counts under 127.0.0.1"
                            % (i + 1))
        assert_limited(get(p), "127.0.0.1 itself, after 5 requests with X-Forwarded-For: unknown")
        assert_limited(get(p, headers=xff("203.0.113.99, garbage")),
                       "garbage right of a client address: counted under the peer")


# ---- metrics ----

def test_ratelimit_rejected_total_counts_the_429s():
    o, p = start()
    with o, p:
        m0 = p.metrics()
        refused = {"limited": 0, "limited2": 0}
        # buckets are per key, not per route: limited2 is asked from another address
        for route, n, src in (("limited", 12, "127.0.0.1"), ("limited2", 8, "127.0.0.2")):
            for _ in range(n):
                r = get(p, "/%s/" % route, src=src)
                if r.status == 429:
                    refused[route] += 1
                else:
                    assert_admitted(r)
        assert refused == {"limited": 7, "limited2": 3}, refused
        # the same client on the other route shares its bucket
        assert_limited(get(p, "/limited2/", src="127.0.0.1"), "127.0.0.1 on limited2")
        refused["limited2"] += 1
        m1 = p.metrics()

        def d(key):
            return m1.get(key, 0.0) - m0.get(key, 0.0)

        for route, n in refused.items():
            key = 'pilotfish_ratelimit_rejected_total{route="%s"}' % route
            assert d(key) == n, "%s grew by %s, expected %d" % (key, d(key), n)
        assert d('pilotfish_errors_total{error="rate_limited"}') == 11, \
            m1.get('pilotfish_errors_total{error="rate_limited"}')
        assert d('pilotfish_http_requests_total{route="limited",upstream="app",method="GET",'
                 'code="429"}') == 7, [k for k in m1 if "429" in k]
        assert 'pilotfish_ratelimit_rejected_total{route="free"}' not in m1 or \
            d('pilotfish_ratelimit_rejected_total{route="free"}') == 0


def test_ratelimit_bad_settings_rejected():
    o, p = start()
    with o, p:
        for bad in ("requests_per_second: 0", "requests_per_second: -5", "burst: 0",
                    "key: 'cookie:sid'", "key: 'header:'", "max_keys: 0",
                    "trusted_proxies: ['10.0.0.0/33']", "trusted_proxies: [unknown]",
                    "colour: blue"):
            text = CONFIG.replace("{{rate}}, burst: {{burst}}{{extra}}", "1, " + bad) \
                if not bad.startswith(("requests_per_second", "burst")) else \
                CONFIG.replace("requests_per_second: {{rate}}, burst: {{burst}}{{extra}}", bad)
            rc, out = p.check_config(text)
            assert rc == 1, "ratelimit %s accepted: %s" % (bad, out)
            assert "ratelimit" in out or "colour" in out, (bad, out)
