"""The cache filter end to end (docs/filters/cache.md): lookup and store in the
memory tier, Cache-Status (RFC 9211), Age, HEAD, Vary, request directives,
conditional requests answered by the cache, invalidation by unsafe methods,
purge (admin API and the PURGE method), revalidation with a 304,
stale-if-error, and the metrics.

Whether a response came from the origin is told by X-Origin-Seq (the origin
numbers every response) and by the origin's request counter, never by
timing. Freshness is given in hours so that no test depends on the clock,
except the stale ones, which use max-age=0 (stale at once)."""

import json
import socket
import threading
import time

import pf
from pf import Conn, Origin, Pilotfish

CONFIG = """\
listen: "127.0.0.1:{{port}}"
workers: {{workers}}
admin: { listen: "127.0.0.1:{{admin_port}}"{{admin_extra}} }
access_log: { path: off }
upstreams:
  app:
    endpoints: ["127.0.0.1:{{origin_port}}"]
routes:
  - name: cached
    match: { prefix: "/" }
    upstream: app
    filters: [metrics, cache]
filters:
  cache: { {{cache}} }
"""

HOUR = "max-age%3D3600"


def start(cache="memory: 8MiB", workers=1, admin_extra=""):
    o = Origin()
    p = Pilotfish(CONFIG, origin=o, vars={"cache": cache, "workers": workers,
                                          "admin_extra": admin_extra})
    return o, p


def cc(value):
    """The query part that makes the origin send Cache-Control: value."""
    return "header=Cache-Control:" + value.replace("=", "%3D").replace(",", "%2C").replace(
        " ", "+")


def seq(r):
    return r.header("X-Origin-Seq")


def status_of(r):
    v = r.header("Cache-Status")
    assert v is not None, "no Cache-Status: %r" % r.headers
    return v


def assert_hit(r, what=""):
    assert r.status in (200, 206, 304), "%s: %r %r" % (what, r, r.body[:200])
    cs = status_of(r)
    assert cs.startswith("pilotfish; hit"), "%s: expected a hit, Cache-Status %r" % (what, cs)
    assert r.header("Age") is not None and r.header("Age").isdigit(), r.headers


def assert_miss(r, fwd="uri-miss", stored=True, what=""):
    cs = status_of(r)
    assert cs.startswith("pilotfish; fwd=%s" % fwd), "%s: expected fwd=%s, got %r" % (
        what, fwd, cs)
    assert ("; stored" in cs) == stored, "%s: stored expected %s: %r" % (what, stored, cs)


# ---- lookup and store ----

def test_cache_miss_then_hit():
    o, p = start()
    with o, p:
        t = "/a?size=3000&" + cc("max-age=3600")
        r1 = p.get(t)
        assert r1.status == 200 and len(r1.body) == 3000, r1
        assert_miss(r1)
        assert "fwd-status=200" in status_of(r1), status_of(r1)
        o.reset_stats()
        r2 = p.get(t)
        assert_hit(r2, "second GET")
        assert r2.body == r1.body, "hit body differs"
        assert seq(r2) == seq(r1), "hit carries the stored X-Origin-Seq"
        assert r2.header("Content-Length") == "3000", r2.headers
        ttl = int(status_of(r2).split("ttl=")[1])
        assert 3590 <= ttl <= 3600, status_of(r2)
        assert o.stats()["requests"] == 0, "a hit reached the origin"
        # HEAD is answered from the GET entry, without a body, with its length
        with p.conn() as c:
            h = c.request("HEAD", t)
        assert_hit(h, "HEAD")
        assert h.body == b"" and h.header("Content-Length") == "3000", (h, h.headers)
        m = p.metrics()
        assert m.get('pilotfish_cache_requests_total{result="hit"}') == 2, m
        assert m.get('pilotfish_cache_requests_total{result="miss"}') == 1, m
        assert m.get("pilotfish_cache_served_bytes_total") == 3000, m
        assert m.get("pilotfish_cache_objects") == 1, m
        assert m.get("pilotfish_cache_bytes", 0) >= 3000, m


def test_cache_not_storable_says_why():
    o, p = start()
    with o, p:
        for value, detail in (("no-store", "no-store"), ("private", "private")):
            t = "/ns?" + cc(value)
            r = p.get(t)
            assert_miss(r, stored=False, what=value)
            assert "detail=" in status_of(r), status_of(r)
            r = p.get(t)
            assert_miss(r, stored=False, what=value + " again")
        # no freshness information and default_ttl 0s: not stored
        r = p.get("/plain")
        assert_miss(r, stored=False, what="no freshness")
        assert_miss(p.get("/plain"), stored=False, what="no freshness again")
        # a POST is not handled by the cache
        with p.conn() as c:
            r = c.request("POST", "/p", body=b"x")
        assert status_of(r).startswith("pilotfish; fwd=bypass; fwd-status=200"), status_of(r)


def test_cache_too_big_is_not_stored():
    o, p = start("memory: 8MiB, max_object_size: 10KiB")
    with o, p:
        for framing in ("", "&chunked=1"):
            t = "/big?size=20000&" + cc("max-age=3600") + framing
            r1 = p.get(t)
            assert r1.status == 200 and len(r1.body) == 20000, r1
            r2 = p.get(t)
            assert not status_of(r2).startswith("pilotfish; hit"), (framing, status_of(r2))
            assert len(r2.body) == 20000 and seq(r2) != seq(r1)


def test_cache_hop_by_hop_and_set_cookie():
    o, p = start()
    with o, p:
        t = ("/h?" + cc("max-age=3600") + "&header=Set-Cookie:a%3Db&header=Connection:x-foo"
             "&header=X-Foo:1&header=Keep-Alive:timeout%3D5&chunked=1")
        p.get(t)
        r = p.get(t)
        assert_hit(r)
        assert r.header("Set-Cookie") == "a=b", r.headers
        assert r.header("X-Foo") is None and r.header("Keep-Alive") is None, r.headers
        assert r.header("Transfer-Encoding") is None, r.headers


def test_cache_vary():
    o, p = start()
    with o, p:
        t = "/v?" + cc("max-age=3600") + "&header=Vary:Accept-Language"
        en = p.get(t, headers={"Accept-Language": "en"})
        assert_miss(en)
        fr = p.get(t, headers={"Accept-Language": "fr"})
        assert_miss(fr, fwd="vary-miss")
        assert_hit(p.get(t, headers={"Accept-Language": "en"}), "en again")
        r = p.get(t, headers={"Accept-Language": "fr"})
        assert_hit(r, "fr again")
        assert seq(r) == seq(fr)
        # Vary: * never matches
        t2 = "/vs?" + cc("max-age=3600") + "&header=Vary:*"
        p.get(t2)
        assert not status_of(p.get(t2)).startswith("pilotfish; hit")


# ---- request directives ----

def test_cache_request_directives():
    o, p = start()
    with o, p:
        t = "/d?" + cc("max-age=3600")
        first = p.get(t)
        # no-cache: go to the origin (no validator here: a plain fetch)
        r = p.get(t, headers={"Cache-Control": "no-cache"})
        assert status_of(r).startswith("pilotfish; fwd=request"), status_of(r)
        assert seq(r) != seq(first)
        # min-fresh beyond what is left
        r = p.get(t, headers={"Cache-Control": "min-fresh=7200"})
        assert not status_of(r).startswith("pilotfish; hit"), status_of(r)
        assert_hit(p.get(t, headers={"Cache-Control": "min-fresh=60"}), "min-fresh=60")
        # only-if-cached: a hit when there is one, else 504
        assert_hit(p.get(t, headers={"Cache-Control": "only-if-cached"}), "only-if-cached")
        o.reset_stats()
        r = p.get("/nothing-here", headers={"Cache-Control": "only-if-cached"})
        assert r.status == 504, r
        assert o.stats()["requests"] == 0
        # max-stale lets a stale entry be served
        ts = "/st?" + cc("max-age=60") + "&header=Age:100"  # stored stale
        assert_miss(p.get(ts))
        assert not status_of(p.get(ts)).startswith("pilotfish; hit")
        r = p.get(ts, headers={"Cache-Control": "max-stale"})
        assert status_of(r).startswith("pilotfish; hit"), status_of(r)


def test_cache_conditional_requests_answered():
    o, p = start()
    with o, p:
        t = "/c?" + cc("max-age=3600") + "&header=ETag:%22v1%22" + \
            "&header=Last-Modified:Mon,+01+Jan+2024+00:00:00+GMT"
        p.get(t)
        o.reset_stats()
        r = p.get(t, headers={"If-None-Match": '"v1"'})
        assert r.status == 304 and r.body == b"", r
        assert r.header("ETag") == '"v1"', r.headers
        r = p.get(t, headers={"If-None-Match": 'W/"v1"'})
        assert r.status == 304, "weak comparison: %r" % r
        r = p.get(t, headers={"If-None-Match": '"v2"'})
        assert r.status == 200 and len(r.body) > 0, r
        r = p.get(t, headers={"If-Modified-Since": "Tue, 02 Jan 2024 00:00:00 GMT"})
        assert r.status == 304, r
        # If-None-Match takes precedence over If-Modified-Since
        r = p.get(t, headers={"If-None-Match": '"v2"',
                              "If-Modified-Since": "Tue, 02 Jan 2024 00:00:00 GMT"})
        assert r.status == 200, r
        assert o.stats()["requests"] == 0, "conditional requests reached the origin"


# ---- invalidation ----

def test_cache_unsafe_methods_invalidate():
    o, p = start()
    with o, p:
        t = "/inv?" + cc("max-age=3600")
        other = "/other?" + cc("max-age=3600")
        p.get(t)
        p.get(other)
        assert_hit(p.get(t))
        # a POST that succeeds invalidates its target URI ...
        with p.conn() as c:
            r = c.request("POST", t, body=b"x")
        assert r.status == 200
        assert_miss(p.get(t), what="after POST")
        # ... and a same-origin Location / Content-Location
        assert_hit(p.get(other))
        with p.conn() as c:
            r = c.request("DELETE", "/x?header=Location:" + other.replace("%", "%25").replace(
                "&", "%26").replace("=", "%3D").replace("?", "%3F"))
        assert r.status == 200
        assert_miss(p.get(other), what="after DELETE with Location")
        # an error response invalidates nothing; an unknown method does
        assert_hit(p.get(t))
        with p.conn() as c:
            c.request("PUT", t + "&status=500", body=b"x")
        with p.conn() as c:
            r = c.request("PUT", "/inv?status=500&" + cc("max-age=3600"), body=b"x")
        assert r.status == 500
        assert_hit(p.get(t), "after a failed PUT")
        with p.conn() as c:
            r = c.request("PROPPATCH", t)
        assert_miss(p.get(t), what="after an unknown method")


# ---- purge ----

def purge(p, body, token=None):
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = "Bearer " + token
    return p.admin("POST", "/cache/purge", headers=h, body=json.dumps(body).encode())


def test_cache_purge_admin():
    o, p = start()
    with o, p:
        host = "127.0.0.1"  # the Host the test client sends
        urls = ["/a/1?" + cc("max-age=3600") + "&header=Surrogate-Key:red+blue",
                "/a/2?" + cc("max-age=3600") + "&header=Surrogate-Key:blue",
                "/b/1?" + cc("max-age=3600") + "&header=Surrogate-Key:green"]
        for u in urls:
            p.get(u)
            assert_hit(p.get(u))
        r = purge(p, {"url": "http://%s%s" % (host, urls[2])})
        assert r.status == 200 and r.json() == {"purged": 1}, (r, r.body)
        assert_miss(p.get(urls[2]), what="purged by url")
        r = purge(p, {"tag": "blue"})
        assert r.json() == {"purged": 2}, r.body
        assert_miss(p.get(urls[0]), what="purged by tag")
        assert_miss(p.get(urls[1]), what="purged by tag")
        r = purge(p, {"prefix": "http://%s/a/" % host})
        assert r.json()["purged"] == 2, r.body  # /a/1 and /a/2, stored again above
        assert_hit(p.get(urls[2]))
        r = purge(p, {"nothing": 1})
        assert r.status == 400, r
        r = purge(p, {"url": "not a url"})
        assert r.status == 400, r


def test_cache_purge_needs_the_admin_token():
    o, p = start(admin_extra=", token: s3cret")
    with o, p:
        r = purge(p, {"tag": "x"})
        assert r.status == 401, r
        r = purge(p, {"tag": "x"}, token="s3cret")
        assert r.status == 200 and r.json() == {"purged": 0}, r


def test_cache_purge_method():
    o, p = start("purge_method: true")
    with o, p:
        t = "/pm?" + cc("max-age=3600")
        p.get(t)
        assert_hit(p.get(t))
        with p.conn() as c:
            r = c.request("PURGE", t)
        assert r.status == 200 and r.json() == {"purged": 1}, (r, r.body)
        assert_miss(p.get(t))
    o, p = start()  # purge_method: false: PURGE is just another (unknown) method
    with o, p:
        o.reset_stats()
        with p.conn() as c:
            c.request("PURGE", "/pm")
        assert o.stats()["requests"] == 1


# ---- revalidation, stale-if-error ----

def test_cache_revalidation_304_refreshes():
    o, p = start()
    with o, p:
        # Age: 100 with max-age=60: stored stale; the ETag makes it revalidatable
        t = "/rv?size=500&etag=v1&" + cc("max-age=60")
        first = p.get(t + "&header=Age:100")
        tt = t + "&header=Age:100"
        assert_miss(first)
        o.reset_stats()
        r = p.get(tt)
        assert r.status == 200 and r.body == first.body, r
        cs = status_of(r)
        assert cs.startswith("pilotfish; fwd=stale; fwd-status=304"), cs
        assert r.header("Content-Length") == "500", r.headers
        assert o.stats()["requests"] == 1
        # the 304's headers replaced the stored ones (a new X-Origin-Seq)
        assert seq(r) != seq(first), r.headers
        # a client's own matching conditional gets a 304 from the refreshed entry
        r = p.get(tt, headers={"If-None-Match": '"v1"'})
        assert r.status == 304 and r.body == b"", r
        m = p.metrics()
        assert m.get('pilotfish_cache_requests_total{result="revalidated"}') == 2, m


def test_cache_stale_if_error():
    o, p = start("stale_if_error: 1h")
    with o, p:
        t = "/sie?size=100&" + cc("max-age=60") + "&header=Age:100"
        first = p.get(t)
        assert_miss(first)
        o.stop()
        r = p.get(t)
        assert r.status == 200 and r.body == first.body, (r, r.body[:200])
        assert "detail=stale-if-error" in status_of(r), status_of(r)
    o, p = start()  # no stale_if_error: the error goes through
    with o, p:
        t = "/sie?size=100&" + cc("max-age=60") + "&header=Age:100"
        p.get(t)
        o.stop()
        r = p.get(t)
        assert r.status == 502, r
    o, p = start("stale_if_error: 1h")  # must-revalidate: never stale, 504
    with o, p:
        t = "/sie?size=100&" + cc("max-age=60, must-revalidate") + "&header=Age:100"
        p.get(t)
        o.stop()
        r = p.get(t)
        assert r.status == 504, r
        # a proper 504 error: the JSON body and the header agree with the status
        body = r.json()
        assert body["status"] == 504, r.body
        assert body["error"] == "upstream_connect_failed", r.body
        assert r.header("X-Pilotfish-Error") == "upstream_connect_failed", r.headers
        assert r.header("Content-Length") == str(len(r.body)), r.headers
        assert "detail=must-revalidate" in status_of(r), status_of(r)


def test_cache_status_key_only_with_debug_key():
    o, p = start("key: { include_headers: [X-Tenant] }")
    with o, p:
        t = "/dk?" + cc("max-age=3600")
        assert "key=" not in status_of(p.get(t)), "key= without debug_key"
        assert "key=" not in status_of(p.get(t)), "key= on a hit without debug_key"
    o, p = start("debug_key: true, key: { include_headers: [X-Tenant] }")
    with o, p:
        t = "/dk?" + cc("max-age=3600")
        # an sf-string (RFC 8941): \ and " escaped, the newline before the header as %0A
        want = 'key="http://127.0.0.1/dk?%s%%0AX-Tenant:a\\"b\\\\c"' % cc("max-age=3600")
        r = p.get(t, headers={"X-Tenant": 'a"b\\c'})
        assert_miss(r)
        assert status_of(r).endswith("; " + want), (status_of(r), want)
        r = p.get(t, headers={"X-Tenant": 'a"b\\c'})
        assert_hit(r)
        assert status_of(r).endswith("; " + want), (status_of(r), want)


@pf.timeout(240)
def test_cache_flood_of_distinct_keys_keeps_rss_bounded():
    """20,000 distinct small objects into memory: 4MiB: the store evicts, counts the
    evictions, and the process grows by at most what the store promises (125 % of memory)."""
    import helpers2 as h2
    memory_kib = 4096
    n, size = 20000, 300
    o, p = start("memory: 4MiB")
    with o, p:
        def fill(prefix, count):
            with p.conn(timeout=30) as c:
                for i in range(count):
                    r = c.request("GET", "/%s%d?size=%d&%s" % (prefix, i, size, cc("max-age=3600")))
                    assert r.status == 200 and len(r.body) == size, r
                    assert "; stored" in status_of(r), status_of(r)
        # the baseline: the process with its connections, pools and a few entries made
        fill("warm", 200)
        time.sleep(0.2)
        base = p.rss_kib()
        with h2.RssSampler(p, interval=0.02) as rss:
            fill("flood", n)
        m = p.metrics()
        objects = m.get("pilotfish_cache_objects")
        evicted = m.get("pilotfish_cache_evictions_total", 0)
        assert m.get("pilotfish_cache_bytes") <= memory_kib * 1024, m
        assert 0 < objects < n, m
        # every entry that is no longer there was evicted (nothing expires within the hour)
        assert evicted == n + 200 - objects, (evicted, objects)
        assert o.stats()["requests"] >= n
        if h2.is_sanitized(p.bin):
            return  # ASan's quarantine keeps freed memory: RSS means nothing there
        grew = max(rss.max_kib, p.rss_kib()) - base
        assert grew <= memory_kib * 5 // 4, "RSS grew %d KiB over a baseline of %d KiB while " \
            "%d objects went through memory: 4MiB (%d kept, %d evicted)" % (
                grew, base, n, objects, evicted)


# ---- stale-while-revalidate: served at once, refreshed once in the background ----

SWR = cc("max-age=1, stale-while-revalidate=30")


def wait_stale_hit(p, t, bound=100):
    """Ask until the entry has expired (max-age=1): the stale hit, which starts a refresh."""
    for _ in range(bound):
        r = p.get(t)
        if "detail=stale-while-revalidate" in status_of(r):
            return r
        assert_hit(r, "before expiry")
        time.sleep(0.05)
    raise AssertionError("the entry never went stale")


def wait_metric(p, name, want, bound=200):
    for _ in range(bound):
        got = p.metrics().get(name, 0)
        if got >= want:
            return got
        time.sleep(0.05)
    raise AssertionError("%s never reached %s: %r" % (name, want, p.metrics().get(name)))


REFRESHED = 'pilotfish_cache_background_refreshes_total{result="%s"}'


def test_cache_swr_serves_stale_and_refreshes_once():
    o, p = start()
    with o, p:
        t = "/swr?size=64&" + SWR
        first = p.get(t)
        assert_miss(first)
        o.reset_stats()
        r = wait_stale_hit(p, t)
        assert r.status == 200 and r.body == first.body and seq(r) == seq(first), r.headers
        cs = status_of(r)
        assert cs.startswith("pilotfish; hit; ttl="), cs
        assert int(cs.split("ttl=")[1].split(";")[0]) <= 0, cs  # stale: no freshness left
        assert wait_metric(p, REFRESHED % "updated", 1) == 1
        assert o.stats()["requests"] == 1
        r = p.get(t)
        assert_hit(r, "after the refresh")
        assert seq(r) != seq(first) and r.body == first.body, r.headers
        m = p.metrics()
        assert m.get('pilotfish_cache_requests_total{result="stale"}') == 1, m
        assert m.get(REFRESHED % "failed") == 0, m
        assert o.stats()["requests"] == 1


def test_cache_swr_refresh_revalidates_with_the_stored_etag():
    o, p = start()
    with o, p:
        t = "/swrv?size=64&etag=v1&" + SWR
        first = p.get(t)
        assert_miss(first)
        o.reset_stats()
        wait_stale_hit(p, t)
        assert wait_metric(p, REFRESHED % "revalidated", 1) == 1
        assert o.stats()["requests"] == 1
        r = p.get(t)
        assert_hit(r, "after the 304")
        assert r.body == first.body and seq(r) != seq(first), r.headers  # the 304's headers
        assert p.metrics().get(REFRESHED % "updated") == 0


def test_cache_swr_concurrent_stale_hits_refresh_once():
    o, p = start(workers=2)
    with o, p:
        # the refresh takes a second at the origin: the stale hits all see it under way
        t = "/swrc?size=64&delay=1000&" + SWR
        first = p.get(t)
        assert_miss(first)
        o.reset_stats()
        time.sleep(2.1)  # past max-age=1 whatever the rounding: the hits below are all stale
        n = 10
        barrier = threading.Barrier(n)
        got = [None] * n

        def read(i):
            barrier.wait()
            got[i] = p.get(t)

        ts = [threading.Thread(target=read, args=(i,)) for i in range(n)]
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        for r in got:
            assert r.status == 200 and r.body == first.body and seq(r) == seq(first), r
            assert "detail=stale-while-revalidate" in status_of(r), status_of(r)
        assert wait_metric(p, REFRESHED % "updated", 1) == 1
        assert o.stats()["requests"] == 1, o.stats()
        m = p.metrics()
        assert m.get(REFRESHED % "updated") == 1, m
        assert m.get('pilotfish_cache_requests_total{result="stale"}') == n, m


def test_cache_swr_refresh_error_keeps_stale_entry():
    o, p = start()
    with o, p:
        t = "/swre?size=64&" + SWR
        first = p.get(t)
        assert_miss(first)
        o.stop()
        r = wait_stale_hit(p, t)
        assert r.body == first.body and seq(r) == seq(first), r.headers
        wait_metric(p, REFRESHED % "failed", 1)
        r = p.get(t)
        assert r.status == 200 and r.body == first.body and seq(r) == seq(first), r.headers
        assert "detail=stale-while-revalidate" in status_of(r), status_of(r)
        assert p.metrics().get(REFRESHED % "updated") == 0


def test_cache_swr_refresh_in_flight_does_not_hold_up_exit():
    o, p = start()
    with o, p:
        t = "/swrx?size=64&" + SWR
        first = p.get(t)
        assert_miss(first)
        o.stop()
        # in the origin's place, a listener that takes the refresh and never answers
        hang = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        hang.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        hang.bind(("127.0.0.1", o.port))
        hang.listen(8)
        hang.settimeout(10)
        try:
            r = wait_stale_hit(p, t)
            assert r.body == first.body, r
            up, _ = hang.accept()  # the refresh is with the "upstream" now
            # neither the drain nor the exit waits for it (request_timeout is 30s, drain_timeout
            # 15s, and stop() kills after 10s): pilotfish ends it and exits cleanly
            assert p.stop() == 0
            up.close()
        finally:
            hang.close()


# ---- settings, reload, order with gzip ----

def test_cache_settings_errors_have_positions():
    o, p = start()
    with o, p:
        bad = CONFIG.replace("{{cache}}", "memory: 1MiB, max_object_size: 2MiB")
        rc, out = p.check_config(bad)
        assert rc != 0 and "cache.max_object_size: must not exceed memory" in out, out
        assert ":14:43:" in out, "no line:column: %s" % out
        rc, out = p.check_config(CONFIG.replace("{{cache}}", "memroy: 1MiB"))
        assert rc != 0 and "memroy" in out and ":14:" in out, out
        rc, out = p.check_config(CONFIG.replace(
            "{{cache}}", "key: { include_headers: [\"X Tenant\"] }"))
        assert rc != 0 and "not a header name" in out, out
        rc, out = p.check_config(CONFIG.replace(
            "{{cache}}", "redis: { db: 3 }"))
        assert rc != 0 and "address" in out, out
        rc, out = p.check_config(CONFIG.replace(
            "{{cache}}", "redis: { address: \"127.0.0.1\" }"))
        assert rc != 0 and "is not host:port or unix:/path" in out, out
        rc, out = p.check_config(CONFIG.replace(
            "{{cache}}", "redis: { address: \"127.0.0.1:6379\", timeout: 20ms }, "
            "key: { ignore_query: [utm_*] }, default_ttl: 10s, targeted_header: X-CC"))
        assert rc == 0, out


def admin_reload(p):
    r = p.admin("POST", "/reload")
    assert r.status == 200 and r.json()["result"] == "success", (r, r.body)


def test_cache_store_survives_reload_with_same_memory():
    o, p = start("memory: 8MiB")
    with o, p:
        t = "/rl?" + cc("max-age=3600")
        p.get(t)
        assert_hit(p.get(t))
        p.vars["cache"] = "memory: 8MiB, default_ttl: 5s"
        p.write_config(CONFIG)
        admin_reload(p)
        assert_hit(p.get(t), "after a reload keeping memory")
        p.vars["cache"] = "memory: 16MiB"
        p.write_config(CONFIG)
        admin_reload(p)
        assert_miss(p.get(t), what="after a reload changing memory")


def test_cache_stores_objects_up_to_max_object_size():
    # memory is split in shards: each must still hold an object of max_object_size
    o, p = start("memory: 8MiB, max_object_size: 2MiB")
    with o, p:
        t = "/large?size=1500000&" + cc("max-age=3600")
        assert_miss(p.get(t))
        r = p.get(t)
        assert_hit(r, "a 1.5 MB response with max_object_size 2MiB")
        assert len(r.body) == 1500000
        p.vars["cache"] = "memory: 8MiB, max_object_size: 4MiB"
        p.write_config(CONFIG)
        admin_reload(p)
        t = "/larger?size=3500000&" + cc("max-age=3600")
        p.get(t)
        assert_hit(p.get(t), "after a reload that raised max_object_size")


def test_cache_ignore_query_and_include_headers():
    o, p = start("key: { ignore_query: [utm_*], include_headers: [X-Tenant] }")
    with o, p:
        t = "/k?" + cc("max-age=3600")
        a = p.get(t + "&utm_source=x", headers={"X-Tenant": "a"})
        assert_miss(a)
        assert_hit(p.get(t + "&utm_medium=y", headers={"X-Tenant": "a"}), "utm_ ignored")
        assert_miss(p.get(t, headers={"X-Tenant": "b"}), what="another tenant")
        # a purge of the URL removes it for every tenant
        assert_hit(p.get(t, headers={"X-Tenant": "b"}), "tenant b stored")
        r = purge(p, {"url": "http://127.0.0.1" + t})
        assert r.status == 200 and r.json() == {"purged": 2}, (r, r.body)
        assert_miss(p.get(t, headers={"X-Tenant": "a"}), what="tenant a after the purge")


def test_cache_key_uses_the_absolute_form_authority():
    # "GET http://evil.test/x" with "Host: victim.test": the upstream is asked for
    # evil.test (RFC 9112 §3.2.2), so that is the key, never the Host header's
    o, p = start()
    with o, p:
        t = "/abs?" + cc("max-age=3600")
        with p.conn() as c:
            r = c.request("GET", "http://evil.test" + t, headers={"Host": "victim.test"})
        assert_miss(r)
        assert_miss(p.get(t, headers={"Host": "victim.test"}), what="victim.test")
        assert_hit(p.get(t, headers={"Host": "evil.test"}), "the target's authority")


GZIP_CONFIG = CONFIG.replace("filters: [metrics, cache]", "filters: [metrics, {{order}}]")


def test_cache_before_gzip_stores_the_compressed_variant():
    for order in ("cache, gzip", "gzip, cache"):
        o = Origin()
        p = Pilotfish(GZIP_CONFIG, origin=o, vars={"cache": "memory: 8MiB", "workers": 1,
                                                   "admin_extra": "", "order": order})
        with o, p:
            t = "/gz?size=5000&" + cc("max-age=3600")
            gz = {"Accept-Encoding": "gzip"}
            r1 = p.get(t, headers=gz)
            assert r1.header("Content-Encoding") == "gzip", (order, r1.headers)
            r2 = p.get(t, headers=gz)
            assert_hit(r2, order)
            assert r2.header("Content-Encoding") == "gzip", (order, r2.headers)
            plain = p.get(t)
            assert plain.header("Content-Encoding") is None and len(plain.body) == 5000
            if order == "cache, gzip":
                # one entry per encoding (gzip adds Vary: Accept-Encoding)
                assert status_of(plain).startswith("pilotfish; fwd=vary-miss"), status_of(plain)
            else:
                assert_hit(plain, "identity stored, gzip on the way out")


# ---- coalescing ----

def concurrent_gets(p, target, n, headers=None):
    """n GETs of target at once, each on its own connection; the responses."""
    conns = [p.conn(timeout=30) for _ in range(n)]
    out = [None] * n
    try:
        for c in conns:  # every request is sent before any is read
            c.send(pf.build_request("GET", target, headers=headers))

        def read(i):
            out[i] = conns[i].read_response()
        ts = [threading.Thread(target=read, args=(i,)) for i in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:
        for c in conns:
            c.close()
    return out


@pf.timeout(60)
def test_cache_coalesces_concurrent_misses():
    o, p = start("memory: 8MiB", workers=2)
    with o, p:
        o.reset_stats()
        # the origin answers after 1 s: every request arrives while the first is in flight
        t = "/co?size=2000&delay=1000&" + cc("max-age=3600")
        rs = concurrent_gets(p, t, 20)
        assert all(r is not None and r.status == 200 and len(r.body) == 2000 for r in rs), rs
        assert o.stats()["requests"] == 1, "expected 1 origin fetch, got %d" % (
            o.stats()["requests"])
        collapsed = [r for r in rs if "collapsed" in status_of(r)]
        assert len(collapsed) >= 1, [status_of(r) for r in rs]
        assert p.metrics().get("pilotfish_cache_coalesced_total") == len(collapsed)
        assert all(seq(r) == seq(rs[0]) for r in rs)


@pf.timeout(60)
def test_cache_coalesced_waiters_go_upstream_when_not_storable():
    o, p = start("memory: 8MiB")
    with o, p:
        o.reset_stats()
        t = "/co2?delay=500&" + cc("no-store")
        rs = concurrent_gets(p, t, 5)
        assert all(r.status == 200 for r in rs), rs
        assert o.stats()["requests"] == 5, o.stats()


@pf.timeout(60)
def test_cache_coalesce_lock_timeout():
    o, p = start("memory: 8MiB, lock_timeout: 100ms")
    with o, p:
        o.reset_stats()
        # the fetch takes 3 s, far past lock_timeout: the waiters go upstream themselves
        t = "/co3?delay=3000&" + cc("max-age=3600")
        rs = concurrent_gets(p, t, 4)
        assert all(r.status == 200 for r in rs), rs
        assert o.stats()["requests"] == 4, o.stats()
    o, p = start("memory: 8MiB, coalesce: false")
    with o, p:
        o.reset_stats()
        rs = concurrent_gets(p, "/co4?delay=500&" + cc("max-age=3600"), 4)
        assert o.stats()["requests"] == 4, o.stats()


# ---- the Redis tier ----

class Redis(pf.Process):
    """redis-server on a free loopback port, nothing saved; stopped by PID."""

    name = "redis-server"

    def __init__(self, port=None):
        super().__init__()
        self.port = port or pf.free_port()
        self.start()

    def start(self):
        import shutil
        exe = shutil.which("redis-server")
        if exe is None:
            raise pf.Skip("redis-server is not installed")
        self.spawn([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no"])
        pf.wait_port(self.port, proc=self)
        return self

    def command(self, *args):
        """One command over RESP; the raw reply bytes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            req = b"*%d\r\n" % len(args) + b"".join(
                b"$%d\r\n%s\r\n" % (len(a), a) for a in (x.encode() for x in args))
            s.sendall(req)
            return s.recv(65536)


def start_l2(redis, origin):
    extra = ', redis: { address: "127.0.0.1:%d", timeout: 200ms, key_prefix: "t:" }' % redis.port
    return Pilotfish(CONFIG, origin=origin, vars={"cache": "memory: 8MiB" + extra, "workers": 1,
                                                  "admin_extra": ""})


@pf.timeout(60)
def test_cache_l2_shared_by_two_processes():
    r = Redis()
    o = Origin()
    with r, o:
        a, b = start_l2(r, o), start_l2(r, o)
        with a, b:
            t = "/l2?size=1500&" + cc("max-age=3600") + "&header=Surrogate-Key:k1"
            first = a.get(t)
            assert_miss(first)
            # the write to Redis follows the response: wait for it, not for time
            pf.eventually(lambda: b"t:" in r.command("KEYS", "t:*"), timeout=10,
                          msg="the object written to Redis")
            o.reset_stats()
            got = b.get(t)  # B's memory misses, Redis has it: a hit, and B's memory is filled
            assert_hit(got, "L2 hit in the second process")
            assert got.body == first.body and seq(got) == seq(first)
            assert_hit(b.get(t), "then from B's memory")
            assert o.stats()["requests"] == 0
            m = b.metrics()
            assert m.get('pilotfish_cache_redis_lookups_total{result="hit"}') == 1, m
            # the one lookup B sent to Redis is timed; nothing failed
            assert m.get("pilotfish_cache_redis_duration_seconds_count") == 1, m
            assert m.get('pilotfish_cache_redis_duration_seconds_bucket{le="+Inf"}') == 1, m
            assert m.get("pilotfish_cache_redis_errors_total") == 0, m
            assert m.get("pilotfish_cache_redis_reconnects_total") == 0, m
            # purge by tag through A: Redis and A's memory (B's memory keeps its copy)
            rp = purge(a, {"tag": "k1"})
            assert rp.json() == {"purged": 1}, rp.body
            assert b"t:" not in r.command("KEYS", "t:http*"), r.command("KEYS", "t:*")
            assert_miss(a.get(t), what="A after the purge")
            # Redis goes away: requests only miss, none fails
            r.stop()
            for i in range(5):
                u = "/l2down%d?" % i + cc("max-age=3600")
                resp = a.get(u)
                assert resp.status == 200, resp
                assert_miss(resp)
            # and comes back: stored again (the client reconnects by itself)
            r.start()
            t2 = "/l2back?" + cc("max-age=3600")
            for _ in range(100):
                a.get(t2 + "&try=%d" % _)
                if b"l2back" in r.command("KEYS", "t:*"):
                    break
                time.sleep(0.1)
            assert b"l2back" in r.command("KEYS", "t:*"), "nothing stored after Redis came back"
            m = a.metrics()
            assert m.get("pilotfish_cache_redis_reconnects_total", 0) >= 1, m


@pf.timeout(60)
def test_cache_l2_vary_found_by_another_process():
    """B never saw the URL: it learns its Vary from Redis, then finds the variant there."""
    r = Redis()
    o = Origin()
    with r, o:
        a, b = start_l2(r, o), start_l2(r, o)
        with a, b:
            t = "/l2v?size=700&" + cc("max-age=3600") + "&header=Vary:Accept-Language"
            en = a.get(t, headers={"Accept-Language": "en"})
            assert_miss(en)
            fr = a.get(t, headers={"Accept-Language": "fr"})
            assert_miss(fr, fwd="vary-miss")
            # both variants and the Vary record: three keys for the URL
            pf.eventually(lambda: r.command("KEYS", "t:*l2v*").count(b"t:http") == 3,
                          timeout=10, msg="two variants and the Vary record in Redis")
            o.reset_stats()
            got = b.get(t, headers={"Accept-Language": "fr"})
            assert_hit(got, "fr from Redis in the second process")
            assert got.body == fr.body and seq(got) == seq(fr)
            got = b.get(t, headers={"Accept-Language": "en"})
            assert_hit(got, "en from Redis in the second process")
            assert seq(got) == seq(en)
            assert o.stats()["requests"] == 0, o.stats()
            # a variant nobody stored: a vary-miss that goes upstream
            de = b.get(t, headers={"Accept-Language": "de"})
            assert_miss(de, fwd="vary-miss")
            m = b.metrics()
            assert m.get('pilotfish_cache_redis_lookups_total{result="hit"}') == 2, m


def test_cache_range_hit_is_206():
    o, p = start()
    with o, p:
        t = "/rg?size=100&etag=r1&" + cc("max-age=3600")
        full = p.get(t).body
        r = p.get(t, headers={"Range": "bytes=10-19"})
        assert_hit(r, "range")
        assert r.status == 206 and r.body == full[10:20], (r, r.body)
        assert r.header("Content-Range") == "bytes 10-19/100", r.headers
        assert r.header("Content-Length") == "10", r.headers
        r = p.get(t, headers={"Range": "bytes=-5"})
        assert r.status == 206 and r.body == full[-5:], r
        r = p.get(t, headers={"Range": "bytes=90-"})
        assert r.status == 206 and r.body == full[90:] and \
            r.header("Content-Range") == "bytes 90-99/100", r
        r = p.get(t, headers={"Range": "bytes=200-300"})
        assert r.status == 416 and r.header("Content-Range") == "bytes */100", r
        # several ranges, or an If-Range that does not match: the whole response
        r = p.get(t, headers={"Range": "bytes=0-1,5-6"})
        assert r.status == 200 and r.body == full, r
        r = p.get(t, headers={"Range": "bytes=0-1", "If-Range": '"other"'})
        assert r.status == 200 and r.body == full, r
        r = p.get(t, headers={"Range": "bytes=0-1", "If-Range": '"r1"'})
        assert r.status == 206 and r.body == full[:2], r

