"""The cache filter's correctness fixes end to end (docs/filters/cache.md):
what the upstream is sent (ignored query parameters, a background refresh's
credentials), the key (every line of an include_headers field), stale
serving under a request no-cache, the qualified no-cache= / private= forms,
the hit-for-miss marker, the 304 the cache generates, and the Redis tier
(invalidation of every variant, refreshes that look in Redis first, purges
that reach the memory of other processes).

As in test_cache.py, whether a response came from the origin is told by
X-Origin-Seq and the origin's request counter, never by timing."""

import json
import time

import pf
from pf import Conn, Pilotfish
from test_cache import (CONFIG, Redis, assert_hit, assert_miss, cc, purge, seq, start,
                        status_of)


def echo_json(r):
    return json.loads(r.body.decode())


# ---- 4a: ignored query parameters are not sent upstream ----

def test_cache_fix_ignored_query_not_forwarded():
    o, p = start("key: { ignore_query: [utm_*] }")
    with o, p:
        r = p.get("/echo?a=1&utm_source=x&" + cc("max-age=3600") + "&utm_medium=y")
        assert_miss(r)
        q = echo_json(r)["query"]
        assert "utm_" not in q and "a=1" in q, q
        # the key and the upstream agree: the next request is a hit whatever its utm_ values
        assert_hit(p.get("/echo?a=1&utm_source=z&" + cc("max-age=3600")))
        # a no-store request is not stored: it goes upstream as it is
        r = p.get("/echo?utm_source=q&" + cc("max-age=3600"),
                  headers={"Cache-Control": "no-store"})
        assert "utm_source=q" in echo_json(r)["query"], r.body


# ---- 4d: include_headers takes every field line ----

def test_cache_fix_include_headers_joins_every_line():
    o, p = start("key: { include_headers: [X-Tenant] }")
    with o, p:
        t = "/inc?" + cc("max-age=3600")
        assert_miss(p.get(t, headers=[("X-Tenant", "a")]))
        r = p.get(t, headers=[("X-Tenant", "a"), ("X-Tenant", "b")])
        assert_miss(r, what="a second X-Tenant line is another key")
        assert_hit(p.get(t, headers=[("X-Tenant", "a"), ("X-Tenant", "b")]), "same two lines")
        assert_hit(p.get(t, headers=[("X-Tenant", "a")]), "one line")


# ---- 4e: a request no-cache is never answered stale when the origin fails ----

def test_cache_fix_request_no_cache_gets_the_error():
    o, p = start("stale_if_error: 1h")
    with o, p:
        t = "/nc?size=10&" + cc("max-age=3600")
        assert_miss(p.get(t))
        o.stop()
        assert_hit(p.get(t), "fresh, no validation asked")
        r = p.get(t, headers={"Cache-Control": "no-cache"})
        assert r.status == 502, (r, status_of(r))
        assert "stale-if-error" not in status_of(r), status_of(r)
        r = p.get(t, headers={"Pragma": "no-cache"})
        assert r.status == 502, (r, status_of(r))


# ---- 4h: Set-Cookie is stored, unless a qualified no-cache= / private= names it ----

def test_cache_fix_qualified_private_and_no_cache_fields():
    o, p = start()
    with o, p:
        plain = "/sc?" + cc("max-age=3600") + "&header=Set-Cookie:a%3Db"
        p.get(plain)
        r = p.get(plain)
        assert_hit(r)
        assert r.header("Set-Cookie") == "a=b", r.headers
        for i, directive in enumerate(['private="Set-Cookie"', 'no-cache="Set-Cookie, X-A"']):
            t = ("/sc%d?" % i + cc("max-age=3600, " + directive) +
                 "&header=Set-Cookie:a%3Db&header=X-A:1&header=X-B:2")
            first = p.get(t)
            assert_miss(first)
            assert first.header("Set-Cookie") == "a=b", first.headers  # the fetch keeps it
            r = p.get(t)
            assert_hit(r, directive)
            assert r.header("Set-Cookie") is None, (directive, r.headers)
            assert r.header("X-B") == "2", r.headers
            assert (r.header("X-A") is None) == (i == 1), (directive, r.headers)


# ---- a 304 does not bring back a field that a qualified no-cache= / private= withholds ----

def test_cache_fix_304_merge_keeps_withheld_fields_out():
    o, p = start()
    with o, p:
        for i, directive in enumerate(['private="X-Secret"', 'no-cache="X-Secret"']):
            # max-age=0: every later request revalidates, and the 304 carries X-Secret too
            t = ("/w304_%d?etag=v1&" % i + cc("max-age=0, " + directive) +
                 "&header=X-Secret:s&header=X-Other:o")
            first = p.get(t)
            assert_miss(first)
            assert first.header("X-Secret") == "s", first.headers  # the fetch keeps it
            for _ in range(2):
                r = p.get(t)
                assert r.status == 200 and "fwd-status=304" in status_of(r), (r, status_of(r))
                assert r.header("X-Secret") is None, (directive, r.headers)
                assert r.header("X-Other") == "o", r.headers


# ---- 4g: the 304 the cache generates has the 200's Vary, ETag, Cache-Control ----

def test_cache_fix_generated_304_has_the_200s_headers():
    from test_cache import GZIP_CONFIG
    for order in ("cache, gzip", "gzip, cache"):
        o = pf.Origin()
        p = Pilotfish(GZIP_CONFIG, origin=o, vars={"cache": "memory: 8MiB", "workers": 1,
                                                   "admin_extra": "", "order": order})
        with o, p:
            t = ("/g304?size=5000&etag=v1&" + cc("max-age=3600") +
                 "&header=Content-Location:/g304&header=Expires:Thu,+01+Dec+2094+16:00:00+GMT")
            gz = {"Accept-Encoding": "gzip"}
            full = p.get(t, headers=gz)
            assert full.status == 200 and full.header("Content-Encoding") == "gzip", full.headers
            etag = full.header("ETag")
            r = p.get(t, headers={"Accept-Encoding": "gzip", "If-None-Match": etag})
            assert r.status == 304, (order, r, r.headers)
            assert_hit(r, order)
            for name in ("ETag", "Vary", "Cache-Control", "Expires", "Content-Location", "Date"):
                assert r.header(name) == full.header(name), (order, name, r.headers, full.headers)


# ---- 4f: hit-for-miss ----

@pf.timeout(60)
def test_cache_fix_hit_for_miss_lets_requests_go_in_parallel():
    from test_cache import concurrent_gets
    o, p = start("memory: 8MiB")
    with o, p:
        t = "/hfm?delay=400&" + cc("private, max-age=60")
        first = concurrent_gets(p, t, 4)
        assert all(r.status == 200 for r in first), first
        # the leader's response was not storable: the key is marked; the next requests all go
        # upstream at once, none waits behind another's fetch
        o.reset_stats()
        rs = concurrent_gets(p, t, 4)
        assert all(r.status == 200 for r in rs), rs
        assert not any("collapsed" in status_of(r) for r in rs), [status_of(r) for r in rs]
        assert o.stats()["requests"] == 4, o.stats()
        # another key is not marked: its concurrent misses still coalesce
        rs = concurrent_gets(p, "/hfm2?delay=1000&" + cc("max-age=60"), 4)
        assert any("collapsed" in status_of(r) for r in rs), [status_of(r) for r in rs]


# ---- 1: invalidation removes every variant of a URL from Redis ----

def start_l2(redis, origin, extra=""):
    cache = ('memory: 8MiB, redis: { address: "127.0.0.1:%d", timeout: 200ms, '
             'key_prefix: "t:" }%s' % (redis.port, extra))
    return Pilotfish(CONFIG, origin=origin, vars={"cache": cache, "workers": 1,
                                                  "admin_extra": ""})


def redis_keys(r, pattern):
    return r.command("KEYS", pattern).count(b"t:http")


@pf.timeout(60)
def test_cache_fix_invalidation_removes_every_variant_from_redis():
    r = Redis()
    o = pf.Origin()
    with r, o:
        a, b = start_l2(r, o), start_l2(r, o)
        with a, b:
            t = "/iv?size=300&" + cc("max-age=3600") + "&header=Vary:Accept-Language"
            assert_miss(a.get(t, headers={"Accept-Language": "en"}))
            assert_miss(a.get(t, headers={"Accept-Language": "fr"}), fwd="vary-miss")
            pf.eventually(lambda: redis_keys(r, "t:*iv*") == 3, timeout=10,
                          msg="two variants and the Vary record in Redis")
            # B learns the URL's Vary from Redis (and holds en, not fr)
            assert_hit(b.get(t, headers={"Accept-Language": "en"}), "en from Redis")
            with a.conn() as c:
                resp = c.request("POST", t, body=b"x")
            assert resp.status == 200, resp
            pf.eventually(lambda: redis_keys(r, "t:*iv*") == 0, timeout=10,
                          msg="every variant of the URL gone from Redis: %r" % (
                              r.command("KEYS", "t:*"),))
            # B still knows the Vary: its fr lookup goes to Redis, which has nothing left
            # (the invalidation also reached B's memory through the purge bus: a uri-miss then)
            got = b.get(t, headers={"Accept-Language": "fr"})
            assert status_of(got).startswith("pilotfish; fwd="), status_of(got)


# ---- 3: a purge reaches the memory of every process sharing the Redis ----

def wait_subscribers(r, n):
    pf.eventually(lambda: (b":%d\r\n" % n) in r.command("PUBSUB", "NUMSUB", "t:purge"),
                  timeout=10, msg="%d subscribers on t:purge" % n)


def eventually_miss(p, t, what):
    """Ask until the answer is a miss (the purge message arrived): hits until then."""
    def missed():
        r = p.get(t)
        assert r.status == 200, r
        return status_of(r).startswith("pilotfish; fwd=")
    pf.eventually(missed, timeout=10, msg=what)


@pf.timeout(90)
def test_cache_fix_purge_reaches_other_processes():
    r = Redis()
    o = pf.Origin()
    with r, o:
        a = start_l2(r, o, ", purge_method: true")
        b = start_l2(r, o, ", purge_method: true")
        with a, b:
            wait_subscribers(r, 2)
            t = "/bus?size=200&" + cc("max-age=3600") + "&header=Surrogate-Key:k3"
            assert_miss(a.get(t))
            pf.eventually(lambda: redis_keys(r, "t:*bus*") == 1, timeout=10,
                          msg="the object in Redis")
            assert_hit(b.get(t), "B from Redis")
            assert_hit(b.get(t), "B from its memory")
            # the admin purge by URL on A clears B's memory too
            rp = purge(a, {"url": "http://127.0.0.1" + t})
            assert rp.status == 200 and rp.json() == {"purged": 1}, rp.body
            eventually_miss(b, t, "B's copy purged by A's admin purge")
            # the PURGE method on B clears A's memory
            pf.eventually(lambda: redis_keys(r, "t:*bus*") == 1, timeout=10,
                          msg="B's new copy in Redis")
            assert_hit(a.get(t), "A from Redis")
            with b.conn() as c:
                resp = c.request("PURGE", t)
            assert resp.status == 200 and resp.json() == {"purged": 1}, (resp, resp.body)
            eventually_miss(a, t, "A's copy purged by B's PURGE")
            # a purge by tag on B clears A's memory (A stored it again just now)
            assert_hit(a.get(t), "A's new copy")
            rp = purge(b, {"tag": "k3"})
            assert rp.status == 200, rp.body
            eventually_miss(a, t, "A's copy purged by B's tag purge")
            # and by prefix
            assert_hit(a.get(t), "A's new copy again")
            rp = purge(b, {"prefix": "http://127.0.0.1/bus"})
            assert rp.status == 200, rp.body
            eventually_miss(a, t, "A's copy purged by B's prefix purge")
            # Redis down: the local purge still works and says how many it removed here
            assert_hit(a.get(t), "A's copy, before Redis goes")
            r.stop()
            rp = purge(a, {"url": "http://127.0.0.1" + t})
            assert rp.status == 200 and rp.json() == {"purged": 1}, rp.body
            resp = a.get(t)
            assert resp.status == 200, resp
            assert_miss(resp, what="A after a purge with Redis down")


# ---- 2: a background refresh asks Redis first, and carries no credentials ----

SWR = cc("max-age=1, stale-while-revalidate=30")
REFRESHED = 'pilotfish_cache_background_refreshes_total{result="%s"}'


def wait_stale_hit(p, t, headers=None, bound=200):
    for _ in range(bound):
        r = p.get(t, headers=headers)
        if "detail=stale-while-revalidate" in status_of(r):
            return r
        assert_hit(r, "before expiry")
        time.sleep(0.05)
    raise AssertionError("the entry never went stale")


def wait_metric(p, name, want, bound=200):
    for _ in range(bound):
        if p.metrics().get(name, 0) >= want:
            return
        time.sleep(0.05)
    raise AssertionError("%s never reached %s: %r" % (name, want, p.metrics().get(name)))


def test_cache_fix_refresh_carries_no_credentials():
    o, p = start()
    with o, p:
        t = "/echo?r=1&" + SWR
        creds = {"Authorization": "Bearer secret", "Cookie": "sid=1",
                 "Proxy-Authorization": "Basic eA==", "X-Keep": "yes"}
        first = p.get(t)
        assert_miss(first)
        wait_stale_hit(p, t, headers=creds)
        wait_metric(p, REFRESHED % "updated", 1)
        r = p.get(t)
        assert_hit(r, "the refreshed entry")
        assert seq(r) != seq(first), r.headers
        sent = {k.lower() for k, _ in echo_json(r)["headers"]}
        assert "x-keep" in sent, sent
        assert not sent & {"authorization", "cookie", "proxy-authorization"}, sent
        # an entry that varies on Cookie is refreshed with the Cookie of its variant
        t = "/echo?r=2&" + SWR + "&header=Vary:Cookie"
        assert_miss(p.get(t, headers={"Cookie": "v=1"}))
        wait_stale_hit(p, t, headers={"Cookie": "v=1", "Authorization": "Bearer x"})
        wait_metric(p, REFRESHED % "updated", 2)
        r = p.get(t, headers={"Cookie": "v=1"})
        assert_hit(r, "the refreshed variant")
        sent = dict((k.lower(), v) for k, v in echo_json(r)["headers"])
        assert sent.get("cookie") == "v=1" and "authorization" not in sent, sent


@pf.timeout(60)
def test_cache_fix_refresh_takes_a_fresher_copy_from_redis():
    r = Redis()
    o = pf.Origin()
    with r, o:
        a, b = start_l2(r, o), start_l2(r, o)
        with a, b:
            t = "/rf?size=100&" + cc("max-age=2, stale-while-revalidate=60")
            first = a.get(t)
            assert_miss(first)
            pf.eventually(lambda: redis_keys(r, "t:*rf*") == 1, timeout=10,
                          msg="the object in Redis")
            assert_hit(b.get(t), "B from Redis")
            # both go stale; A refreshes first (its refresh goes upstream: Redis is stale too)
            wait_stale_hit(a, t)
            wait_metric(a, REFRESHED % "updated", 1)
            newer = a.get(t)
            assert_hit(newer, "A's refreshed entry")
            assert seq(newer) != seq(first)
            # B's stale hit: its refresh finds A's fresh copy in Redis and does not go upstream
            o.reset_stats()
            stale = wait_stale_hit(b, t)
            assert seq(stale) == seq(first)
            wait_metric(b, REFRESHED % "redis", 1)
            got = b.get(t)
            assert_hit(got, "B's entry from Redis")
            assert seq(got) == seq(newer), (got.headers, newer.headers)
            assert o.stats()["requests"] == 0, o.stats()
            assert b.metrics().get(REFRESHED % "updated", 0) == 0
