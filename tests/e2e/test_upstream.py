"""Upstream side (docs/configuration.md "upstreams", docs/operations.md):
error statuses with their codes, timeouts, connection pooling and its idle
timeout, the transparent retry of idempotent requests on a dead pooled
connection, round robin, unix sockets both ways."""

import os
import time

import pf
from pf import Conn, Origin, Pilotfish

import helpers2 as h2


def assert_proxy_error(r, status, code):
    assert r.status == status, "expected %d %s, got %r: %r" % (status, code, r, r.body[:300])
    assert r.header("X-Pilotfish-Error") == code, \
        "X-Pilotfish-Error %r, expected %r" % (r.header("X-Pilotfish-Error"), code)
    body = r.json()
    assert body.get("error") == code, body
    assert r.header("X-Origin-Seq") is None, "an origin header in a proxy-made error"
    return body


# ---- errors ----

def test_upstream_connect_refused_502():
    dead = pf.free_port()  # nothing listens there
    p = Pilotfish(h2.config(endpoints=["127.0.0.1:%d" % dead]))
    with p, p.conn() as c:
        t0 = time.monotonic()
        r = c.request("GET", "/")
        assert_proxy_error(r, 502, "upstream_connect_failed")
        assert time.monotonic() - t0 < 2.0
        # the client connection survives a 502 (keep-alive)
        r = c.request("GET", "/")
        assert_proxy_error(r, 502, "upstream_connect_failed")


def test_upstream_reset_502():
    o = Origin()
    p = Pilotfish(origin=o)
    with o, p, p.conn() as c:
        r = c.request("GET", "/?reset=1")
        assert_proxy_error(r, 502, "upstream_reset")
        assert c.request("GET", "/").status == 200


def test_upstream_bad_response_502():
    o = Origin()
    p = Pilotfish(origin=o)
    with o, p, p.conn() as c:
        r = c.request("GET", "/?bad=1")
        assert_proxy_error(r, 502, "upstream_bad_response")
        assert c.request("GET", "/").status == 200


def test_upstream_cut_body_is_a_cut_for_the_client():
    """partial=N: head + N bytes then RST: the client must not see a complete
    response (Content-Length kept, connection cut)."""
    o = Origin()
    p = Pilotfish(origin=o)
    with o, p, p.conn() as c:
        c.send_request("GET", "/?size=100000&partial=5000")
        try:
            r = c.read_response()
        except (pf.ConnectionClosed, ConnectionResetError):
            r = None
        assert r is None, "a cut upstream body reached the client as complete: %r" % r


def test_upstream_request_timeout_504():
    o = Origin()
    p = Pilotfish(h2.config(upstream_extra="request_timeout: 1s"), origin=o)
    with o, p, p.conn() as c:
        t0 = time.monotonic()
        r = c.request("GET", "/?delay=10000")  # far from 1 s: a loaded machine blurs nothing
        took = time.monotonic() - t0
        assert_proxy_error(r, 504, "upstream_timeout")
        assert 0.8 <= took < 9, "504 after %.2fs with request_timeout 1s" % took
        r = c.request("GET", "/?body=after")
        assert r.status == 200 and r.body == b"after", r


def test_upstream_hang_504():
    o = Origin()
    p = Pilotfish(h2.config(upstream_extra="request_timeout: 1s"), origin=o)
    with o, p:
        r = p.get("/?hang=1")
        assert_proxy_error(r, 504, "upstream_timeout")


def test_upstream_connect_timeout():
    """An endpoint whose accept queue is full: SYNs are dropped, connect() hangs.
    connect_timeout (300ms) must answer long before request_timeout (10s)."""
    with h2.FullBacklogListener() as lst:
        if not lst.connect_hangs(0.5):
            raise pf.Skip("cannot make connect() hang on this kernel (accept queue full)")
        p = Pilotfish(h2.config(endpoints=[lst.addr],
                                upstream_extra="connect_timeout: 300ms\nrequest_timeout: 10s"))
        with p, p.conn(timeout=15) as c:
            t0 = time.monotonic()
            r = c.request("GET", "/")
            took = time.monotonic() - t0
            assert r.status in (502, 504), r
            code = r.header("X-Pilotfish-Error")
            assert code in ("upstream_connect_failed", "upstream_timeout"), code
            assert r.json()["error"] == code
            # below request_timeout (10s) with room for a loaded machine
            assert took < 8, "connect_timeout 300ms, answered after %.2fs (%d %s)" % (
                took, r.status, code)


# ---- pooling ----

def test_upstream_keepalive_pool_reuse():
    o = Origin()
    p = Pilotfish(origin=o)
    with o, p:
        o.reset_stats()
        with p.conn() as c:
            for i in range(100):
                r = c.request("GET", "/?body=r%d" % i)
                assert r.status == 200 and r.body == b"r%d" % i, (i, r)
        s = o.stats()
        assert s["requests"] == 100, s
        assert s["connections"] <= 4, "100 sequential keep-alive requests used %d upstream " \
            "connections" % s["connections"]
        # also across client connections
        o.reset_stats()
        for i in range(20):
            assert p.get("/").status == 200
        s = o.stats()
        assert s["connections"] <= 4, "20 client connections used %d upstream connections" % \
            s["connections"]


def test_upstream_pool_idle_timeout_closes_idle_connections():
    o = Origin()
    p = Pilotfish(h2.config(upstream_extra="pool: { idle_timeout: 1s }"), origin=o)
    with o, p:
        o.reset_stats()
        with p.conn() as c:
            assert c.request("GET", "/").status == 200
        s = o.stats()
        assert s["active"] >= 1, "no pooled upstream connection after a request: %r" % s
        t0 = time.monotonic()
        pf.eventually(lambda: o.stats()["active"] == 0, timeout=4,
                      msg="idle upstream connection closed after pool.idle_timeout 1s")
        took = time.monotonic() - t0
        assert took >= 0.5, "pooled connection closed after only %.2fs" % took


def test_upstream_pool_max_idle_zero_closes_after_each_request():
    o = Origin()
    p = Pilotfish(h2.config(upstream_extra="pool: { max_idle: 0 }"), origin=o)
    with o, p:
        o.reset_stats()
        with p.conn() as c:
            for _ in range(5):
                assert c.request("GET", "/").status == 200
        s = o.stats()
        assert s["connections"] == 5, "max_idle 0 still pooled: %r" % s


# ---- retry of idempotent requests on a dead pooled connection ----

def _keepalive_then_die():
    """A FakeOrigin whose connections answer their first request with keep-alive
    and close, unanswered, at the second one: the pooled connection is dead
    exactly when the proxy reuses it."""
    def handler(conn, n, head, body):
        if n == 0:
            return h2.http_response(b"conn%d" % conn)
        return None
    return handler


def _retry_case(rst):
    with h2.FakeOrigin(_keepalive_then_die(), rst=rst) as fo:
        # max_buffered_body 0: no body is kept for a retry
        p = Pilotfish(h2.config(endpoints=[fo.addr], upstream_extra="retries: {max_buffered_body: 0}"))
        with p:
            r = p.get("/first")
            assert r.status == 200 and r.body == b"conn0", r
            time.sleep(0.1)
            # GET: the reused connection dies; retried once on a fresh one
            r = p.get("/second")
            assert r.status == 200, "GET on a dead pooled connection (%s) not retried: %r %r" % (
                "RST" if rst else "FIN", r, r.body[:200])
            assert r.body == b"conn1", r.body
            time.sleep(0.1)
            # POST with a body: not retried, 502
            with p.conn() as c:
                r = c.request("POST", "/post", body=b"payload")
            assert r.status == 502, "POST with a body on a dead pooled connection: %r (a POST " \
                "must not be retried)" % r
            assert r.header("X-Pilotfish-Error") == "upstream_reset", r.headers
            posts = [h for _, _, h in fo.requests if h.startswith(b"POST")]
            assert len(posts) == 1, "the POST reached the origin %d times" % len(posts)


def test_upstream_retry_get_on_dead_pooled_connection_fin():
    _retry_case(rst=False)


def test_upstream_retry_get_on_dead_pooled_connection_rst():
    _retry_case(rst=True)


def test_upstream_retry_goes_to_an_endpoint_not_tried():
    """Two endpoints, balance random: A answers the first request of each
    connection and closes at the second (its pooled connections are dead when
    reused); B answers everything. Every retry after a dead A connection must
    go to B, the endpoint not tried yet (a retry to A would open a fresh
    connection there)."""
    arrivals = []  # (origin, conn, request index), in arrival order (one client at a time)

    def origin(name, keep):
        def handler(conn, n, head, body):
            arrivals.append((name, conn, n))
            if n == 0 or keep:
                return h2.http_response(name.encode())
            return None
        return handler

    with h2.FakeOrigin(origin("A", keep=False)) as a, h2.FakeOrigin(origin("B", keep=True)) as b:
        p = Pilotfish(h2.config(endpoints=[a.addr, b.addr], upstream_extra="balance: random"))
        with p:
            for i in range(100):
                r = p.get("/r%d" % i)
                assert r.status == 200 and r.body in (b"A", b"B"), (i, r, r.body[:200])
    dead = [i for i, (name, _, n) in enumerate(arrivals) if name == "A" and n > 0]
    assert len(dead) >= 3, "too few reuses of a dead A connection to tell: %r" % arrivals
    for i in dead:
        assert arrivals[i + 1][0] == "B", \
            "the retry after a dead A connection went to A again: %r" % arrivals[i:i + 2]


def test_upstream_origin_restart_between_requests():
    """Restart the origin on the same port: the pooled connection is dead; a GET
    still gets 200."""
    o = Origin()
    p = Pilotfish(origin=o)
    with p:
        assert p.get("/").status == 200
        port = o.port
        o.stop()
        o2 = Origin(port=port)
        with o2:
            r = p.get("/?body=again")
            assert r.status == 200 and r.body == b"again", r
            with p.conn() as c:
                e = c.request("POST", "/echo", body=b"abc").json()
                assert e["body"] == "abc", e


# ---- balancing ----

def test_upstream_round_robin_two_origins():
    o1, o2 = Origin(), Origin()
    cfg = h2.config(endpoints=["127.0.0.1:{{o1}}", "127.0.0.1:{{o2}}"],
                    upstream_extra="balance: round_robin")
    p = Pilotfish(cfg, vars={"o1": o1.port, "o2": o2.port})
    with o1, o2, p:
        with p.conn() as c:
            for _ in range(20):
                assert c.request("GET", "/").status == 200
        n1, n2 = o1.stats()["requests"], o2.stats()["requests"]
        assert n1 + n2 == 20, (n1, n2)
        assert n1 == 10 and n2 == 10, "round_robin over 2 origins: %d / %d" % (n1, n2)


# ---- unix sockets ----

def test_upstream_unix_endpoint():
    path = h2.unix_path("origin")
    o = Origin(extra_listen=["unix:" + path])
    try:
        p = Pilotfish(h2.config(endpoints=["unix:" + path]))
        with o, p:
            o.reset_stats()
            with p.conn() as c:
                r = c.request("GET", "/?size=1000")
                assert r.status == 200 and r.body == pf.pattern(1000), r
                e = c.request("GET", "/echo").json()
                assert e["peer"] == "unix", "not over the unix socket: %r" % e["peer"]
                e = c.request("POST", "/echo", body=b"x" * 100000).json()
                assert e["body_length"] == 100000, e
            assert o.stats()["requests"] == 3
    finally:
        if os.path.exists(path):
            os.unlink(path)


def test_upstream_unix_listener():
    path = h2.unix_path("pf")
    o = Origin()
    head = h2.CONFIG_HEAD.replace('listen: "127.0.0.1:{{port}}"',
                                  'listen: ["127.0.0.1:{{port}}", "unix:%s"]' % path)
    p = Pilotfish(h2.config(head=head), origin=o)
    try:
        with o, p:
            pf.eventually(lambda: os.path.exists(path), timeout=3, msg="unix socket created")
            with Conn(unix=path) as c:
                r = c.request("GET", "/?body=via-unix")
                assert r.status == 200 and r.body == b"via-unix", r
                r = c.request("GET", "/echo")
                e = r.json()
                xff = pf.echo_headers(e, "X-Forwarded-For")
                assert len(xff) == 1, e["headers"]
            assert p.get("/").status == 200  # TCP listener still works
    finally:
        if os.path.exists(path):
            os.unlink(path)
