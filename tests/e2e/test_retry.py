"""Retries (upstreams.NAME.retries): a retried status never reaches the client
while another endpoint serves, connect failures go to the other endpoint,
which requests may be sent again (idempotent, or a body kept within
max_buffered_body), per_try_timeout, the tried mask over several attempts,
the budget under a retry storm, and `attempts` in the access log.

Each scenario prints the retries it spent (run.py -v shows them)."""

import os
import threading
import time

import pf
from pf import Conn, Origin, Pilotfish

import helpers2 as h2

RETRIES = 'pilotfish_upstream_retries_total{upstream="app"}'
REFUSED = 'pilotfish_upstream_retries_budget_exceeded_total{upstream="app"}'
UPREQ = 'pilotfish_upstream_requests_total{upstream="app",endpoint="%s",code="%s"}'


def _config(endpoints, retries, extra="", upstream_extra="", workers=1):
    """One upstream 'app' with retries: {...} and an access log file."""
    head = h2.CONFIG_HEAD.replace("access_log: { path: off }",
                                  'access_log: { path: "{{dir}}/access.log" }')
    head = head.replace("workers: 1\n", "workers: %d\n" % workers)
    return h2.config(extra, "retries: {%s}\n%s" % (retries, upstream_extra), endpoints, head)


def _log(p, n):
    """The first n access log lines (waits for them: the writer is a thread)."""
    path = os.path.join(p.dir, "access.log")
    return pf.eventually(lambda: (lambda l: l if len(l) >= n else None)(h2.read_json_lines(path)),
                         msg="%d access log lines" % n)[:n]


def _settled(p, check):
    """Metrics once check(samples) holds (the last counts land as each tx is freed)."""
    last = {}

    def ok():
        last.clear()
        last.update(p.metrics())
        return check(last)

    try:
        pf.eventually(ok, msg="metrics settle")
    except AssertionError:
        raise AssertionError("metrics did not settle: %r" % {
            k: v for k, v in last.items() if "upstream" in k})
    return last


def _always(status, body=b"down"):
    return lambda conn, n, head, b: h2.http_response(body, status=status)


def test_retry_503_is_served_by_another_endpoint():
    """A answers every request with 503, B with 200; round robin, the default
    retries (attempts 1, on ... 503): every client gets B's 200, A's 503 body
    never reaches a client, and the access log says 2 attempts for each
    request that met A first."""
    n = 40
    o = Origin()
    with o, h2.FakeOrigin(_always(503, b"A is down")) as a:
        p = Pilotfish(_config([a.addr, "127.0.0.1:{{origin_port}}"], "backoff: 1ms, min_per_second: 1000"),
                      origin=o)
        with p:
            for i in range(n):
                r = p.get("/r%d?body=fromB" % i)
                assert r.status == 200 and r.body == b"fromB", (i, r, r.body[:100])
            hits_a = len(a.requests)
            m = _settled(p, lambda m: m.get(RETRIES, 0) == hits_a)
            lines = _log(p, n)
    assert hits_a >= 1, "round robin never picked A: nothing was retried"
    assert m[UPREQ % (a.addr, "503")] == hits_a, m
    assert m.get(REFUSED, 0) == 0, m
    attempts = [l["attempts"] for l in lines]
    assert set(attempts) <= {1, 2}, attempts
    assert attempts.count(2) == hits_a, (attempts, hits_a)
    assert all(l["status"] == 200 and l["endpoint"] == "127.0.0.1:%d" % o.port for l in lines)
    print("503 on A, %d requests: %d retries spent, %d failed" % (n, hits_a, 0))


def test_retry_exhausted_gives_the_last_answer():
    """One endpoint answering 503, attempts 2: three tries, then the client gets
    that 503 as the origin sent it (not a proxy error); the access log says 3."""
    with h2.FakeOrigin(_always(503, b"busy")) as a:
        p = Pilotfish(_config([a.addr], "attempts: 2, backoff: 1ms"))
        with p:
            r = p.get("/x")
            assert r.status == 503 and r.body == b"busy", (r, r.body[:100])
            assert r.header("X-Pilotfish-Error") is None, r.headers
            assert len(a.requests) == 3, a.requests
            _settled(p, lambda m: m.get(RETRIES, 0) == 2)
            assert _log(p, 1)[0]["attempts"] == 3


def test_retry_connect_failure_goes_to_the_other_endpoint():
    """A port nobody listens on and a live origin: every request gets 200, each
    connect failure is retried on the live endpoint."""
    n = 40
    dead = pf.free_port()
    o = Origin()
    with o:
        p = Pilotfish(_config(["127.0.0.1:%d" % dead, "127.0.0.1:{{origin_port}}"],
                              "backoff: 1ms, min_per_second: 1000"), origin=o)
        with p:
            for i in range(n):
                r = p.get("/r%d" % i)
                assert r.status == 200, (i, r, r.body[:200])
            m = _settled(p, lambda m: m.get(RETRIES, 0) > 0 and m.get(RETRIES) == m.get(
                UPREQ % ("127.0.0.1:%d" % dead, "upstream_connect_failed"), -1))
            lines = _log(p, n)
    assert sum(l["attempts"] for l in lines) == n + m[RETRIES], (lines[:3], m[RETRIES])
    print("connect refused on A, %d requests: %d retries spent, 0 failed" % (n, m[RETRIES]))


def test_retry_tried_mask_spans_every_attempt():
    """Three endpoints, two refusing connections, balance random, attempts 2:
    every request reaches the live one, so no retry went back to an endpoint
    it had already tried (a mask of the last endpoint only would)."""
    n = 60
    d1, d2 = pf.free_port(), pf.free_port()
    o = Origin()
    with o:
        p = Pilotfish(_config(["127.0.0.1:%d" % d1, "127.0.0.1:%d" % d2,
                               "127.0.0.1:{{origin_port}}"], "attempts: 2, backoff: 1ms, min_per_second: 1000",
                              upstream_extra="balance: random"), origin=o)
        with p:
            for i in range(n):
                r = p.get("/r%d" % i)
                assert r.status == 200, (i, r, r.body[:200])
            lines = _log(p, n)
    assert max(l["attempts"] for l in lines) <= 3
    assert any(l["attempts"] == 3 for l in lines), "no request met both dead endpoints"


class _FailNext:
    """A FakeOrigin handler: the request after each arm() is cut with RST before
    any answer; the others get 200. Keeps each request's body."""

    def __init__(self):
        self.fail = False
        self.bodies = []

    def arm(self):
        self.fail = True
        self.bodies = []

    def __call__(self, conn, n, head, body):
        self.bodies.append((head.split(b" ", 1)[0], body))
        if self.fail:
            self.fail = False
            return None
        return h2.http_response(b"ok")


def _post(p, body, method="POST"):
    with p.conn() as c:
        return c.request(method, "/p", body=body)


def test_retry_non_idempotent_only_with_a_kept_body():
    """An upstream reset after the request arrived: a GET is retried; a POST is
    retried only when its whole body was kept (within max_buffered_body: read
    before connecting, or copied while it streamed), and goes again byte for
    byte; a bigger one, or a POST without a body, gets the 502."""
    h = _FailNext()
    with h2.FakeOrigin(h, rst=True) as a:
        p = Pilotfish(_config([a.addr], "max_buffered_body: 1KiB, backoff: 1ms",
                              extra="limits:\n  request_buffering: 100\n"))
        with p:
            h.arm()
            assert p.get("/g").status == 200
            assert len(h.bodies) == 2
            small = b"s" * 50  # read before connecting (request_buffering 100)
            h.arm()
            r = _post(p, small)
            assert r.status == 200, r
            assert h.bodies == [(b"POST", small), (b"POST", small)], h.bodies
            streamed = bytes(range(256)) * 3  # 768 bytes: streams, copied within 1KiB
            h.arm()
            r = _post(p, streamed)
            assert r.status == 200, r
            assert h.bodies == [(b"POST", streamed), (b"POST", streamed)], len(h.bodies)
            big = b"b" * 2000  # over max_buffered_body: not kept
            h.arm()
            r = _post(p, big)
            assert r.status == 502 and r.header("X-Pilotfish-Error") == "upstream_reset", r
            assert len(h.bodies) == 1
            h.arm()
            r = _post(p, None)  # no body, not idempotent
            assert r.status == 502, r
            assert len(h.bodies) == 1
            h.arm()
            r = _post(p, big, method="PUT")  # idempotent, but the body is gone
            assert r.status == 502, r
            assert len(h.bodies) == 1
            _settled(p, lambda m: m.get(RETRIES, 0) == 3)
            lines = _log(p, 6)
    assert [l["attempts"] for l in lines] == [2, 2, 2, 1, 1, 1], lines


def test_retry_max_buffered_body_zero_keeps_no_body():
    """max_buffered_body 0: a POST with a small body is not sent twice."""
    h = _FailNext()
    with h2.FakeOrigin(h, rst=True) as a:
        p = Pilotfish(_config([a.addr], "max_buffered_body: 0, backoff: 1ms"))
        with p:
            h.arm()
            assert _post(p, b"payload").status == 502
            assert len(h.bodies) == 1
            h.arm()
            assert p.get("/g").status == 200  # a GET still is


def test_retry_per_try_timeout():
    """A never answers, B does; request_timeout 30s, per_try_timeout 300ms, on
    [timeout]: each request that meets A is answered by B, long before
    request_timeout (the client gives up after 10s); with A alone, both tries
    time out: 504."""
    hold = threading.Event()

    def never(conn, n, head, body):
        hold.wait(60)
        return None

    o = Origin()
    with o, h2.FakeOrigin(never) as a:
        p = Pilotfish(_config([a.addr, "127.0.0.1:{{origin_port}}"],
                              "on: [timeout], per_try_timeout: 300ms, backoff: 1ms",
                              upstream_extra="request_timeout: 30s"), origin=o)
        try:
            with p:
                for i in range(6):
                    with Conn(p.port, timeout=10) as c:
                        r = c.request("GET", "/r%d?body=B" % i)
                    assert r.status == 200 and r.body == b"B", (i, r)
                m = _settled(p, lambda m: m.get(UPREQ % (a.addr, "upstream_timeout"), 0) >= 1)
                assert m[RETRIES] == m[UPREQ % (a.addr, "upstream_timeout")], m
                print("per_try_timeout: %d retries spent, 0 failed" % m[RETRIES])
            p = Pilotfish(_config([a.addr], "on: [timeout], per_try_timeout: 300ms",
                                  upstream_extra="request_timeout: 30s"))
            with p, Conn(p.port, timeout=10) as c:
                r = c.request("GET", "/alone")
                assert r.status == 504 and r.header("X-Pilotfish-Error") == "upstream_timeout", r
                assert _log(p, 1)[0]["attempts"] == 2
        finally:
            hold.set()


@pf.timeout(60)
def test_retry_storm_is_capped_by_the_budget():
    """Every endpoint answers 503 after 300 ms; 40 clients at once on two
    workers (one budget for both), attempts 3, budget 20%, min_per_second 2. Without a budget that is 120 retries; with it
    the retries in flight stay within 20% of the requests in flight (plus 2 a
    second), and the retries not made are counted."""
    n, attempts = 40, 3
    gate = threading.Barrier(n, timeout=20)

    def slow503(conn, k, head, body):
        threading.Event().wait(0.3)
        return h2.http_response(b"down", status=503)

    with h2.FakeOrigin(slow503) as a, h2.FakeOrigin(slow503) as b:
        p = Pilotfish(_config([a.addr, b.addr],
                              "attempts: %d, budget: 20%%, min_per_second: 2, backoff: 1ms"
                              % attempts, workers=2))
        statuses = []
        lock = threading.Lock()

        def client(i):
            with Conn(p.port, timeout=30) as c:
                gate.wait()
                r = c.request("GET", "/s%d" % i)
            with lock:
                statuses.append(r.status)

        with p:
            threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(40)
            assert statuses == [503] * n, statuses
            m = _settled(p, lambda m: m.get(RETRIES, 0) + n == len(a.requests) + len(b.requests))
            lines = _log(p, n)
        spent, refused = m[RETRIES], m.get(REFUSED, 0)
        assert sum(l["attempts"] for l in lines) == n + spent
        # each request ends after its attempts, or at its first refused retry
        assert refused == sum(1 for l in lines if l["attempts"] <= attempts), (refused, lines)
        assert refused > 0, "the budget refused nothing"
        assert spent < n, "retries spent %d: not capped (without a budget: %d)" % (
            spent, n * attempts)
        print("retry storm, %d clients x %d attempts: %d retries spent, %d refused by the "
              "budget, %d requests failed" % (n, attempts, spent, refused, n))


@pf.timeout(60)
def test_retry_background_refresh_not_retried_after_its_head():
    """A stale-while-revalidate refresh (a request with no client) whose
    response head came and whose body then stops: request_timeout ends it,
    and it is not retried (on: [timeout]), since its head already went to the
    cache; the origin sees the first fetch and the refresh, nothing more."""
    lock = threading.Lock()
    count = [0]
    cc = b"Cache-Control: max-age=1, stale-while-revalidate=30\r\n"

    def answer(conn, n, head, body):
        with lock:
            i = count[0]
            count[0] += 1
        if i == 1:  # the refresh: a head, 5 of 64 bytes, then silence
            return b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n" + cc + b"\r\nhello"
        return h2.http_response(b"x" * 64, extra=cc)

    cache = ("routes:\n  - name: c\n    match: { prefix: \"/\" }\n    upstream: app\n"
             "    filters: [cache]\nfilters:\n  cache: { memory: 8MiB }\n")
    with h2.FakeOrigin(answer) as a:
        p = Pilotfish(_config([a.addr], "on: [timeout], backoff: 1ms", extra=cache,
                              upstream_extra="request_timeout: 300ms"))
        with p:
            assert p.get("/swr").status == 200
            for _ in range(100):  # until the entry is stale: that hit starts the refresh
                r = p.get("/swr")
                assert r.status == 200 and r.body == b"x" * 64, r
                if count[0] >= 2:
                    break
                time.sleep(0.05)
            m = _settled(p, lambda m: m.get(
                'pilotfish_cache_background_refreshes_total{result="failed"}', 0) +
                m.get('pilotfish_cache_background_refreshes_total{result="updated"}', 0) >= 1)
            assert m.get('pilotfish_cache_background_refreshes_total{result="failed"}') == 1, m
            assert m.get(RETRIES, 0) == 0, m
            assert count[0] == 2, a.requests


def test_retry_connect_failing_at_once_goes_to_the_other_endpoint():
    """A unix socket path with no listener (the connect fails at once, inside
    the call) and a live origin, round robin, the default retries: the
    failure is retried like any connect failure, and every request gets 200."""
    n = 20
    dead = "unix:/tmp/pf-test-retry-missing-%d.sock" % os.getpid()
    o = Origin()
    with o:
        p = Pilotfish(_config([dead, "127.0.0.1:{{origin_port}}"],
                              "backoff: 1ms, min_per_second: 1000"), origin=o)
        with p:
            for i in range(n):
                r = p.get("/u%d" % i)
                assert r.status == 200, (i, r, r.body[:200])
            m = _settled(p, lambda m: m.get(RETRIES, 0) > 0 and m.get(RETRIES) == m.get(
                UPREQ % (dead, "upstream_connect_failed"), -1))
    print("unix socket missing, %d requests: %d retries spent, 0 failed" % (n, m[RETRIES]))
