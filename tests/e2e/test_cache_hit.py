"""The head of a cache hit, field by field (docs/filters/cache.md): a hit
replays the stored fields as they were (borrowed from the stored object, not
rebuilt), with one Date (the stored one), one Content-Length, an Age and a
Cache-Status, for GET, HEAD, the client's own conditional (304) and Range
(206), and with gzip after the cache. Freshness is an hour: no test here
depends on the clock."""

import email.utils
import gzip
import urllib.parse

import pf
from pf import Origin, Pilotfish

CONFIG = """\
listen: "127.0.0.1:{{port}}"
workers: 1
admin: { listen: "127.0.0.1:{{admin_port}}" }
access_log: { path: off }
upstreams:
  app:
    endpoints: ["127.0.0.1:{{origin_port}}"]
routes:
  - name: cached
    match: { prefix: "/" }
    upstream: app
    filters: [{{filters}}]
filters:
  cache: { memory: 8MiB }
"""

HOUR = "header=Cache-Control:max-age%3D3600"


def start(filters="metrics, cache"):
    o = Origin()
    return o, Pilotfish(CONFIG, origin=o, vars={"filters": filters})


def names(r):
    return [k.lower() for k, _ in r.headers]


def fields(r, skip=("age", "cache-status", "content-length")):
    return [(k.lower(), v) for k, v in r.headers if k.lower() not in skip]


def test_cache_hit_replays_the_stored_fields_once_each():
    o, p = start()
    with o, p:
        date = urllib.parse.quote(email.utils.formatdate(usegmt=True))
        t = ("/h1?size=300&%s&header=X-A:1&header=Set-Cookie:s%%3D1&header=Date:%s"
             "&header=Connection:X-Hop&header=X-Hop:secret&etag=e1" % (HOUR, date))
        miss = p.get(t)
        hit = p.get(t)
        assert hit.header("Cache-Status").startswith("pilotfish; hit"), hit.headers
        assert hit.header("X-Origin-Seq") == miss.header("X-Origin-Seq")
        assert hit.body == miss.body and len(hit.body) == 300
        for name in ("date", "content-length", "age", "cache-status", "etag", "x-a",
                     "set-cookie", "cache-control"):
            assert names(hit).count(name) == 1, (name, hit.headers)
        assert hit.header("Date") == miss.header("Date")  # the stored one, not the hit's time
        assert hit.header("Content-Length") == "300"
        assert hit.header("Age").isdigit()
        assert "x-hop" not in names(hit) and "transfer-encoding" not in names(hit)
        # the rest is the stored head, in order, as the miss had it (its Connection aside)
        want = [f for f in fields(miss) if f[0] != "connection"]
        assert fields(hit) == want, (hit.headers, miss.headers)


def test_cache_hit_replays_the_date_pilotfish_added():
    """The origin sends no Date: the miss carries the one pilotfish added (RFC 9110 §6.6.1),
    stored with the response, so the hit replays that same Date, once."""
    o, p = start()
    with o, p:
        t = "/hd?size=10&%s" % HOUR
        miss = p.get(t)
        hit = p.get(t)
        assert hit.header("Cache-Status").startswith("pilotfish; hit"), hit.headers
        assert names(miss).count("date") == 1, miss.headers
        assert names(hit).count("date") == 1, hit.headers
        assert hit.header("Date") == miss.header("Date")


def test_cache_hit_head_304_and_range_heads():
    o, p = start()
    with o, p:
        t = "/h2?size=1000&%s&etag=e2" % HOUR
        p.get(t)
        with p.conn() as c:
            r = c.request("HEAD", t)
        assert r.status == 200 and r.body == b"", r
        assert r.header("Content-Length") == "1000" and names(r).count("content-length") == 1
        assert r.header("Cache-Status").startswith("pilotfish; hit")
        r = p.get(t, headers=[("If-None-Match", '"e2"')])
        assert r.status == 304 and r.body == b"", r
        assert r.header("ETag") == '"e2"' and r.header("Age").isdigit()
        assert r.header("Cache-Status").startswith("pilotfish; hit")
        r = p.get(t, headers=[("Range", "bytes=10-19")])
        assert r.status == 206, r
        assert r.header("Content-Range") == "bytes 10-19/1000"
        assert r.header("Content-Length") == "10" and names(r).count("content-length") == 1
        assert names(r).count("content-range") == 1
        assert r.body == bytes((97 + i % 26) for i in range(10, 20))


def test_cache_hit_through_gzip_after_the_cache():
    o, p = start("metrics, gzip, cache")
    with o, p:
        t = "/h3?size=5000&type=text/plain&%s" % HOUR
        p.get(t)
        r = p.get(t, headers=[("Accept-Encoding", "gzip")])
        assert r.header("Cache-Status").startswith("pilotfish; hit"), r.headers
        assert r.header("Content-Encoding") == "gzip", r.headers
        assert names(r).count("content-length") <= 1
        assert gzip.decompress(r.body) == bytes((97 + i % 26) for i in range(5000))
        plain = p.get(t)
        assert plain.header("Content-Encoding") is None and len(plain.body) == 5000
        assert plain.header("Content-Length") == "5000"


def test_cache_pragma_no_cache_only_without_cache_control():
    o, p = start()
    with o, p:
        t = "/h4?%s&etag=e4" % HOUR
        p.get(t)
        o.reset_stats()
        r = p.get(t, headers=[("Pragma", "no-cache")])
        assert r.header("Cache-Status").startswith("pilotfish; fwd=request"), r.headers
        assert o.stats()["requests"] == 1
        # RFC 9111 §5.4: with Cache-Control, Pragma is ignored
        r = p.get(t, headers=[("Pragma", "no-cache"), ("Cache-Control", "max-stale=1")])
        assert r.header("Cache-Status").startswith("pilotfish; hit"), r.headers
        assert o.stats()["requests"] == 1
