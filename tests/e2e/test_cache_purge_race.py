"""A purge or an invalidation that lands while a response is being fetched
(docs/filters/cache.md, "Purge"): the response goes to its client, but is
not stored, in memory or in Redis, so the purge is not undone.

The origin here is a small Python server that holds the first GET until
the test releases it, after the purge was answered: an ordering of events,
never a timing. Every read has a socket timeout only as a bound against a
hang."""

import json
import socket
import threading

import pf
from helpers2 import ThreadedOrigin
from pf import Pilotfish
from test_cache import Redis, assert_hit, assert_miss

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
    filters: [metrics, cache]
filters:
  cache: { memory: 8MiB, purge_method: true{{redis}} }
"""

BOUND = 10  # seconds: a bound against a hang, never a timing assertion
HOST = "127.0.0.1"  # the Host the test client sends


class HoldOrigin(ThreadedOrigin):
    """One response per connection. The first GET is answered once `release` is set; every
    other request at once. GETs: 200, max-age=3600, Surrogate-Key: red, body "v<n>" (n counts
    the GETs); other methods: 200 "ok", not cacheable."""

    def __init__(self):
        self.release = threading.Event()
        self.got_first = threading.Event()
        self.lock = threading.Lock()
        self.gets = 0
        self.listen()

    def _serve(self, s):
        try:
            buf = self.read_head(s)
            if buf is None:
                return
            if not buf.startswith(b"GET "):
                body, cc = b"ok", "no-store"
            else:
                with self.lock:
                    self.gets += 1
                    n = self.gets
                if n == 1:
                    self.got_first.set()
                    self.release.wait(3 * BOUND)
                body, cc = b"v%d" % n, "max-age=3600"
            s.sendall(("HTTP/1.1 200 OK\r\nCache-Control: %s\r\nSurrogate-Key: red\r\n"
                       "Connection: close\r\nContent-Length: %d\r\n\r\n" % (cc, len(body)))
                      .encode() + body)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
        except OSError:
            pass
        finally:
            s.close()

    def close(self):
        self.release.set()
        self.sock.close()


def admin_purge(p, body):
    r = p.admin("POST", "/cache/purge", headers={"Content-Type": "application/json"},
                body=json.dumps(body).encode())
    assert r.status == 200, (r, r.body)


def purge_url(p, t):
    admin_purge(p, {"url": "http://%s%s" % (HOST, t)})


def purge_prefix(p, t):
    admin_purge(p, {"prefix": "http://%s/r/" % HOST})


def purge_tag(p, t):
    admin_purge(p, {"tag": "red"})


def purge_method(p, t):
    with p.conn() as c:
        r = c.request("PURGE", t)
    assert r.status == 200, r


def invalidate_post(p, t):
    with p.conn() as c:
        r = c.request("POST", t, body=b"x")
    assert r.status == 200 and r.body == b"ok", (r, r.body)


def in_flight(p, o, t, during):
    """GET t while the origin holds it, run during(p, t), release: the response still reaches
    its client (v1)."""
    c = p.conn(timeout=BOUND)
    c.send(pf.build_request("GET", t))
    assert o.got_first.wait(BOUND), "the origin got no request"
    if during is not None:
        during(p, t)
    o.release.set()
    r = c.read_response()
    c.close()
    assert r.status == 200 and r.body == b"v1", (r, r.body)
    return r


def check_not_stored(during):
    o = HoldOrigin()
    with o:
        p = Pilotfish(CONFIG, origin=o, vars={"redis": ""})
        with p:
            t = "/r/x"
            in_flight(p, o, t, during)
            r = p.get(t)
            assert_miss(r, what="purged (%s) while fetched: not stored" % during.__name__)
            assert r.body == b"v2", r.body
            assert_hit(p.get(t), "the next fetch is stored as usual")


def test_cache_purge_url_during_fetch_not_stored():
    check_not_stored(purge_url)


def test_cache_purge_prefix_during_fetch_not_stored():
    check_not_stored(purge_prefix)


def test_cache_purge_tag_during_fetch_not_stored():
    check_not_stored(purge_tag)


def test_cache_purge_method_during_fetch_not_stored():
    check_not_stored(purge_method)


def test_cache_invalidation_during_fetch_not_stored():
    check_not_stored(invalidate_post)


def test_cache_fetch_without_purge_is_stored():
    """The control: the same sequence without a purge stores the held response."""
    o = HoldOrigin()
    with o:
        p = Pilotfish(CONFIG, origin=o, vars={"redis": ""})
        with p:
            in_flight(p, o, "/r/x", None)
            r = p.get("/r/x")
            assert_hit(r)
            assert r.body == b"v1", r.body


def redis_keys(redis):
    return redis.command("KEYS", "t:*")


@pf.timeout(60)
def test_cache_purge_during_fetch_not_written_to_redis():
    redis = Redis()
    o = HoldOrigin()
    with redis, o:
        extra = ', redis: { address: "127.0.0.1:%d", timeout: 200ms, key_prefix: "t:" }' % (
            redis.port)
        p = Pilotfish(CONFIG, origin=o, vars={"redis": extra})
        with p:
            in_flight(p, o, "/r/x", purge_url)
            # a later response on the same worker (one Redis connection, commands in order):
            # once its write is in Redis, the held response's write would be too
            assert_miss(p.get("/r/other"))
            for _ in range(200):
                keys = redis_keys(redis)
                if b"/r/other" in keys:
                    break
                threading.Event().wait(0.05)
            assert b"/r/other" in keys, keys
            assert b"/r/x" not in keys, keys


@pf.timeout(60)
def test_cache_request_after_purge_does_not_join_the_flight_before_it():
    """A request that comes after a purge of the key does not wait for the fetch that began
    before the purge (its response is the purged one): it leads a fetch of its own, which is
    stored; the held fetch still answers its client and is not stored. lock_timeout is long, so
    a request that joined the held fetch would still be waiting when its socket read gives up."""
    o = HoldOrigin()
    with o:
        p = Pilotfish(CONFIG, origin=o, vars={"redis": ", lock_timeout: 60s"})
        with p:
            t = "/r/x"
            c = p.conn(timeout=BOUND)
            c.send(pf.build_request("GET", t))
            assert o.got_first.wait(BOUND), "the origin got no request"
            purge_url(p, t)
            with p.conn(timeout=BOUND) as c2:
                r = c2.request("GET", t)  # answered while the first GET is still held
            assert r.status == 200 and r.body == b"v2", (r, r.body)
            assert "collapsed" not in (r.header("cache-status") or ""), r.headers
            o.release.set()
            r = c.read_response()
            c.close()
            assert r.status == 200 and r.body == b"v1", (r, r.body)
            r = p.get(t)
            assert_hit(r, "the fetch after the purge was stored")
            assert r.body == b"v2", r.body
            assert o.gets == 2, o.gets


class HoldRedis:
    """A TCP relay in front of Redis. Once `hold` is set, a connection that sends a SET has it,
    and everything after it, kept back until release(): the write of a fetch is made to land
    after a purge's deletes, which the admin API sends on connections of its own."""

    SET = b"$3\r\nSET\r\n"  # a SET command in RESP

    def __init__(self, redis_port):
        self.redis_port = redis_port
        self.lock = threading.Lock()
        self.hold = False
        self.held = []  # [(socket, bytes)] in the order they came
        self.holding = set()  # client sockets whose bytes are being kept back
        self.got_set = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.redis_port), timeout=BOUND)
            u.settimeout(None)
            threading.Thread(target=self._up, args=(c, u), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c), daemon=True).start()

    def _up(self, c, u):
        while True:
            try:
                d = c.recv(65536)
            except OSError:
                d = b""
            with self.lock:
                if d and self.hold and (c in self.holding or self.SET in d):
                    self.holding.add(c)
                    self.held.append((u, d))
                    self.got_set.set()
                    continue
            if not d:
                break
            try:
                u.sendall(d)
            except OSError:
                break
        u.close()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        b.close()

    def release(self):
        with self.lock:
            for u, d in self.held:
                u.sendall(d)
            self.held = []
            self.holding = set()
            self.hold = False

    def close(self):
        self.sock.close()


@pf.timeout(60)
def test_cache_redis_write_that_lands_after_the_purge_is_deleted_again():
    """A fetch stored in memory just before a purge writes to Redis on its worker's connection;
    the purge deletes on another. The write is held back until the purge was answered, so it
    lands after the purge's DEL: once its reply is in, the key's generation has moved, and the
    write is deleted again (counted)."""
    redis = Redis()
    o = HoldOrigin()
    o.release.set()  # the origin answers at once here
    with redis, o:
        relay = HoldRedis(redis.port)
        extra = ', redis: { address: "127.0.0.1:%d", timeout: 200ms, key_prefix: "t:" }' % (
            relay.port)
        p = Pilotfish(CONFIG, origin=o, vars={"redis": extra})
        try:
            with p:
                relay.hold = True
                assert_miss(p.get("/r/x"))  # stored in memory; its SET is held by the relay
                assert relay.got_set.wait(BOUND), "no write to Redis"
                purge_url(p, "/r/x")
                relay.release()
                pf.eventually(lambda: p.metrics().get(
                    "pilotfish_cache_redis_undone_writes_total") == 1, timeout=BOUND,
                    msg="the late write deleted again")
                pf.eventually(lambda: b"/r/x" not in redis_keys(redis), timeout=BOUND,
                              msg="Redis without the purged object")
                # and memory: what a lookup may have copied back from Redis is gone too
                r = p.get("/r/x")
                assert_miss(r)
                assert r.body == b"v2", r.body
        finally:
            relay.close()


def purge_other_prefix(p, t):
    admin_purge(p, {"prefix": "http://%s/other/" % HOST})


def purge_other_tag(p, t):
    admin_purge(p, {"tag": "blue"})


def check_stored(during):
    o = HoldOrigin()
    with o:
        p = Pilotfish(CONFIG, origin=o, vars={"redis": ""})
        with p:
            in_flight(p, o, "/r/x", during)
            r = p.get("/r/x")
            assert_hit(r, "a purge (%s) that does not cover it: stored" % during.__name__)
            assert r.body == b"v1", r.body


def test_cache_prefix_purge_of_another_url_during_fetch_does_not_stop_its_store():
    check_stored(purge_other_prefix)


def test_cache_tag_purge_of_another_tag_during_fetch_does_not_stop_its_store():
    check_stored(purge_other_tag)
