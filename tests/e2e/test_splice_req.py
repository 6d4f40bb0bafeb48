"""Request bodies moved with splice(2) (client socket -> pipe -> upstream
socket), and the copying path they fall back to. No filter reads a request
body (the filter interface has no hook for one), so every Content-Length body
of at least 64 KiB that streams upstream is spliced; chunked bodies, bodies
read whole under limits.request_buffering and bodies kept for a retry are
copied. Every test runs in both modes, set in the configuration: splice on
(`splice: {requests: true, min_request_size: 64KiB}`, as responses) and off
(both directions), and checks which one moved the body with the
pilotfish_splice_request* counters. The defaults (requests from 1 MiB) are
checked on their own."""

import hashlib
import os
import socket
import threading
import time

import pf
from pf import Conn, Origin, Pilotfish

import helpers2 as h2

MiB = 1 << 20
RSS_BUDGET_KIB = 24 * 1024  # as test_streaming: far less than the body

CONFIG = pf.BASIC_CONFIG.replace(
    "access_log: { path: off }", 'access_log: { path: "{{dir}}/access.log", format: json }') + """\
    request_timeout: 2s
"""

RETRIES = 'pilotfish_upstream_retries_total{upstream="app"}'
# the `splice:` section of each mode, appended to a configuration
MODES = {
    "on": "splice: { requests: true, min_request_size: 64KiB, responses: true, "
          "min_response_size: 64KiB }\n",
    "off": "splice: { requests: false, responses: false }\n",
}

_fnv = {}


def fnv_of_pattern(n):
    """pf.fnv1a64(pf.pattern(n)), computed once per size (seconds for 50 MiB)."""
    if n not in _fnv:
        _fnv[n] = pf.fnv1a64(pf.pattern(n))
    return _fnv[n]


def start(mode, config=CONFIG):
    o = Origin()
    p = Pilotfish(config + MODES[mode], origin=o)
    assert p.get("/?size=100").status == 200  # warm up: pools, arenas
    return o, p


def spliced(p):
    m = p.metrics()
    return (m["pilotfish_splice_requests_total"], m["pilotfish_splice_request_bytes_total"])


def check_spliced(p, mode, before, bodies, nbytes=None):
    """When on, bodies more request bodies went with splice (nbytes of them
    when given); none ever when off."""
    now = spliced(p)
    if mode == "off":
        assert now == (0, 0), "splice used while off: %r" % (now,)
        return
    assert now[0] == before[0] + bodies, "spliced bodies %r -> %r, want +%d" % (
        before, now, bodies)
    if nbytes is not None:
        assert now[1] == before[1] + nbytes, (before, now, nbytes)


def send_body(sock, data, errors, piece=MiB):
    mv = memoryview(data)
    try:
        for i in range(0, len(data), piece):
            sock.sendall(mv[i:i + piece])
    except OSError as e:
        errors.append(e)


def post_head(target, size, extra=b""):
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n" % (
        target.encode(), size, extra)


def both(fn):
    """Register test_splice_req<fn name>_on and _off: fn run in each mode."""
    for mode in MODES:
        def test(mode=mode):
            fn(mode)

        test.__name__ = "test_splice_req%s_%s" % (fn.__name__, mode)
        test.__doc__ = fn.__doc__
        test.timeout = getattr(fn, "timeout", 30)
        globals()[test.__name__] = test
    return fn


@pf.timeout(120)
def _big_upload(mode):
    """50 MiB byte-exact at the origin (length and FNV-1a 64 of what it read),
    twice on one client connection, then a GET on it: the body ended exactly
    at Content-Length, the upstream connection is reused, and the access log
    counts every byte."""
    size = 50 * MiB
    data = pf.pattern(size)
    want = fnv_of_pattern(size)
    o, p = start(mode)
    with o, p:
        before = spliced(p)
        o.reset_stats()
        with Conn(p.port, timeout=60) as c:
            for _ in range(2):
                errors = []
                c.sock.sendall(post_head("/echo", size))
                t = threading.Thread(target=send_body, args=(c.sock, data, errors), daemon=True)
                t.start()
                r = c.read_response("POST")
                t.join(30)
                assert not errors, errors
                assert r.status == 200, r
                e = r.json()
                assert e["body_length"] == size, e["body_length"]
                assert e["body_fnv1a64"] == want, "the origin got another body"
            assert c.request("GET", "/?body=next").body == b"next"  # still in sync
        # the first piece is read with the head (copied), the rest is spliced
        check_spliced(p, mode, before, 2)
        if mode == "on":
            assert spliced(p)[1] - before[1] > 2 * (size - MiB), spliced(p)
        assert o.stats()["connections"] == 0, "upstream connection not reused: %r" % o.stats()
        logs = pf.eventually(lambda: (lambda l: l if len(l) >= 4 else None)(
            h2.read_json_lines(os.path.join(p.dir, "access.log"))), msg="4 log lines")
        big = [l for l in logs if l["bytes_in"] > size]
        assert len(big) == 2, logs
        for l in big:
            assert size < l["bytes_in"] < size + 1024, l


both(_big_upload)


@pf.timeout(120)
def _slow_upstream_reader(mode):
    """Upload 50 MiB to an origin that echoes it back, and read the echo
    slowly: the origin stops reading, so pilotfish must stop reading the
    client (RSS bounded); every byte still arrives, in order."""
    size = 50 * MiB
    data = pf.pattern(size)
    o, p = start(mode)
    with o, p:
        before = spliced(p)
        idle = p.rss_kib()
        errors = []
        with h2.RssSampler(p) as rss, Conn(p.port, timeout=60) as c:
            c.sock.sendall(post_head("/echo?raw=1", size))
            t = threading.Thread(target=send_body, args=(c.sock, data, errors), daemon=True)
            t.start()
            head = c.read_until(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), head
            time.sleep(1.0)
            h = hashlib.sha256()
            got = 0
            while True:
                n = int(c.read_until(b"\r\n").split(b";")[0], 16)
                if n == 0:
                    c.read_until(b"\r\n")
                    break
                h.update(c.read_exact(n))
                got += n
                c.read_exact(2)
                if len(c.buf) < 65536:
                    time.sleep(0.002)
            t.join(10)
            assert not errors, errors
            assert got == size, got
            assert h.hexdigest() == hashlib.sha256(data).hexdigest(), "echo differs"
        check_spliced(p, mode, before, 1)
        assert rss.samples >= 5
        if not h2.is_sanitized(p.bin):
            assert rss.max_kib - idle < RSS_BUDGET_KIB, (idle, rss.max_kib)


both(_slow_upstream_reader)


@pf.timeout(60)
def _client_abort(mode):
    """The client goes away mid-body: the upstream connection is closed (never
    pooled with a body half-sent), the pipe too, and no descriptor is left."""
    size = 50 * MiB
    o, p = start(mode)
    with o, p:
        # one whole upload first: the worker's pool keeps its (empty) pipe
        r = pf.request(p.port, "POST", "/echo", body=pf.pattern(MiB))
        assert r.status == 200 and r.json()["body_length"] == MiB, r
        fds = p.open_fds()
        before = spliced(p)
        for _ in range(3):
            o.reset_stats()
            c = Conn(p.port, timeout=10)
            c.sock.sendall(post_head("/echo", size))
            c.sock.sendall(pf.pattern(2 * MiB))
            pf.eventually(lambda: o.stats()["active"] == 1, msg="upstream connection open")
            c.close()
            pf.eventually(lambda: o.stats()["active"] == 0, msg="upstream connection closed")
        check_spliced(p, mode, before, 3)
        pf.eventually(lambda: p.open_fds() <= fds, msg="descriptors back to %d" % fds)
        r = pf.request(p.port, "POST", "/echo", body=pf.pattern(300000))
        assert r.status == 200 and r.json()["body_length"] == 300000, r
        m = p.metrics()
        assert m['pilotfish_errors_total{error="upstream_reset"}'] == 0, m


both(_client_abort)


@pf.timeout(60)
def _upstream_reset(mode):
    """The upstream resets mid-body, before any response: 502, counted as
    upstream_reset, never retried (the body streamed: it cannot be sent
    again), and the next upload works."""
    size = 8 * MiB
    o, p = start(mode)
    with o, p:
        before = spliced(p)
        o.reset_stats()
        errors = []
        with Conn(p.port, timeout=10) as c:
            c.sock.sendall(post_head("/echo?reset_body=%d" % (2 * MiB), size))
            t = threading.Thread(target=send_body, args=(c.sock, pf.pattern(size), errors),
                                 daemon=True)
            t.start()
            r = c.read_response("POST")
            assert r.status == 502, r
            t.join(10)
        check_spliced(p, mode, before, 1)
        m = p.metrics()
        assert m['pilotfish_errors_total{error="upstream_reset"}'] == 1, m
        assert m[RETRIES] == 0, "retried: %r" % m[RETRIES]
        r = pf.request(p.port, "POST", "/echo", body=pf.pattern(MiB))
        assert r.status == 200 and r.json()["body_length"] == MiB, r


both(_upstream_reset)


RETRY_CONFIG = CONFIG + """\
    retries: { attempts: 2, on: [reset, connect_failure], backoff: 1ms }
"""


@pf.timeout(60)
def _retry_kept_body(mode):
    """A body small enough to be kept for a retry (retries.max_buffered_body,
    64 KiB, with limits.request_buffering turned off) is copied, not spliced,
    and is sent again when the first try is reset once it is all in; a bigger
    one is spliced and answered 502 without a retry."""
    config = RETRY_CONFIG.replace("workers: 1\n", "workers: 1\nlimits: { request_buffering: 0 }\n")
    o, p = start(mode, config)
    with o, p:
        before = spliced(p)
        r = pf.request(p.port, "POST", "/echo?reset=1", body=pf.pattern(64 * 1024))
        assert r.status == 502, r  # the origin resets every try of this target
        retries = p.metrics()[RETRIES]
        assert retries >= 2, "not retried: %r" % retries
        check_spliced(p, mode, before, 0)
        errors = []
        with Conn(p.port, timeout=10) as c:
            c.sock.sendall(post_head("/echo?reset=1", 4 * MiB))
            t = threading.Thread(target=send_body, args=(c.sock, pf.pattern(4 * MiB), errors),
                                 daemon=True)
            t.start()
            assert c.read_response("POST").status == 502
            t.join(10)
        assert p.metrics()[RETRIES] == retries, "a streamed body was retried"
        check_spliced(p, mode, before, 1)


both(_retry_kept_body)


def _chunked_copied(mode):
    """A chunked request body is copied (its framing is re-made), byte-exact."""
    size = 5 * MiB
    data = os.urandom(size)
    o, p = start(mode)
    with o, p:
        before = spliced(p)
        r = pf.echo_raw(p.port, data, chunked=True, piece=100000, timeout=30)
        assert r.status == 200 and r.body == data, (r.status, len(r.body))
        check_spliced(p, mode, before, 0)


both(_chunked_copied)


def _small_bodies_copied(mode):
    """Bodies up to limits.request_buffering (64 KiB) are read before an
    upstream connection is taken, as ever; with buffering off, bodies under
    64 KiB are still copied."""
    config = CONFIG.replace("workers: 1\n", "workers: 1\nlimits: { request_buffering: 0 }\n")
    for cfg, size in ((CONFIG, 64 * 1024), (config, 64 * 1024 - 1)):
        o, p = start(mode, cfg)
        with o, p:
            before = spliced(p)
            r = pf.request(p.port, "POST", "/echo", body=pf.pattern(size))
            assert r.status == 200 and r.json()["body_length"] == size, r
            check_spliced(p, mode, before, 0)


both(_small_bodies_copied)


def _buffering_first(mode):
    """A body within limits.request_buffering that trickles in holds no
    upstream connection until it is whole; the next, bigger one streams."""
    o, p = start(mode)
    with o, p:
        o.reset_stats()
        before = spliced(p)
        with Conn(p.port, timeout=10) as c:
            c.sock.sendall(post_head("/echo", 60000))
            c.sock.sendall(pf.pattern(30000))
            time.sleep(0.3)
            assert o.stats()["connections"] == 0, "connected before the body was in"
            c.sock.sendall(pf.pattern(30000, 30000))
            r = c.read_response("POST")
            assert r.status == 200 and r.json()["body_fnv1a64"] == fnv_of_pattern(60000), r
            check_spliced(p, mode, before, 0)
            c.sock.sendall(post_head("/echo", 3 * MiB) + pf.pattern(3 * MiB))
            r = c.read_response("POST")
            assert r.status == 200 and r.json()["body_fnv1a64"] == fnv_of_pattern(3 * MiB), r
        check_spliced(p, mode, before, 1)


both(_buffering_first)


def _expect_continue(mode):
    """Expect: 100-continue: the 100 comes before any body byte is sent, then
    the body goes (with splice when on) and the answer follows."""
    size = 3 * MiB
    o, p = start(mode)
    with o, p:
        before = spliced(p)
        with Conn(p.port, timeout=10) as c:
            c.sock.sendall(post_head("/echo", size, b"Expect: 100-continue\r\n"))
            assert c.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 100 "), "no 100 Continue"
            c.sock.sendall(pf.pattern(size))
            r = c.read_response("POST")
            assert r.status == 200 and r.json()["body_fnv1a64"] == fnv_of_pattern(size), r
        check_spliced(p, mode, before, 1)


both(_expect_continue)


BODY_TIMEOUT_CONFIG = CONFIG.replace(
    "workers: 1\n", "workers: 1\nlimits: { body_timeout: 1s, idle_timeout: 10s }\n")


@pf.timeout(30)
def _body_timeout(mode):
    """limits.body_timeout holds for a spliced body: a client that stops
    sending mid-body gets 408 (idle_timeout is far longer), and the upstream
    connection is closed."""
    o, p = start(mode, BODY_TIMEOUT_CONFIG)
    with o, p:
        before = spliced(p)
        with Conn(p.port, timeout=10) as c:
            c.sock.sendall(post_head("/echo", 4 * MiB))
            c.sock.sendall(pf.pattern(MiB))
            r = c.read_response("POST")
            assert r.status == 408, r
        check_spliced(p, mode, before, 1)
        pf.eventually(lambda: o.stats()["active"] == 0, msg="upstream connection closed")
        m = p.metrics()
        assert m['pilotfish_errors_total{error="request_timeout"}'] == 1, m


both(_body_timeout)


def _too_large(mode):
    """limits.max_body_size: a Content-Length over it is refused (413) before
    any body byte is read, splice or not."""
    config = CONFIG.replace("workers: 1\n", "workers: 1\nlimits: { max_body_size: 1MiB }\n")
    o, p = start(mode, config)
    with o, p:
        before = spliced(p)
        with Conn(p.port, timeout=10) as c:
            c.sock.sendall(post_head("/echo", 2 * MiB))
            assert c.read_response("POST").status == 413
        check_spliced(p, mode, before, 0)
        assert o.stats()["requests"] == 1  # the warm-up's


both(_too_large)


def _pipelined_after_body(mode):
    """A request pipelined right behind a spliced body (one stream of bytes
    from the client) is read as the next request: the body ends exactly at
    Content-Length."""
    size = 3 * MiB
    o, p = start(mode)
    with o, p:
        before = spliced(p)
        with Conn(p.port, timeout=20) as c:
            stream = post_head("/echo", size) + pf.pattern(size) + \
                b"GET /?body=second HTTP/1.1\r\nHost: x\r\n\r\n"
            errors = []
            t = threading.Thread(target=send_body, args=(c.sock, stream, errors), daemon=True)
            t.start()
            r = c.read_response("POST")
            assert r.status == 200 and r.json()["body_fnv1a64"] == fnv_of_pattern(size), r
            r = c.read_response("GET")
            assert r.status == 200 and r.body == b"second", r
            t.join(10)
            assert not errors, errors
        check_spliced(p, mode, before, 1)


both(_pipelined_after_body)


@pf.timeout(30)
def _upstream_stops_reading(mode):
    """An upstream that stops taking the body (it echoes it, and the client
    reads nothing back): once the body waits for it, request_timeout (2s)
    bounds the wait; the response has started, so the client connection is
    cut, and it is counted as upstream_timeout."""
    size = 50 * MiB
    o, p = start(mode)
    with o, p:
        before = spliced(p)
        c = Conn(p.port, timeout=15)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        errors = []
        c.sock.sendall(post_head("/echo?raw=1", size))
        t = threading.Thread(target=send_body, args=(c.sock, pf.pattern(size), errors),
                             daemon=True)
        t.start()
        m = pf.eventually(lambda: (lambda m: m if m[
            'pilotfish_errors_total{error="upstream_timeout"}'] == 1 else None)(p.metrics()),
            timeout=10, msg="upstream_timeout counted")
        assert m['pilotfish_errors_total{error="upstream_reset"}'] == 0, m
        try:
            c.read_to_eof()  # the echo's head and what fitted, then the cut
        except OSError:
            pass  # reset: a cut as well
        c.close()
        t.join(15)
        check_spliced(p, mode, before, 1)
        pf.eventually(lambda: o.stats()["active"] == 0, msg="upstream connection closed")


both(_upstream_stops_reading)


def _unix_upstream(mode):
    """An upstream on a unix socket takes a spliced body as a TCP one does."""
    size = 5 * MiB
    sock = "/tmp/pf-test-splice-req-%d.sock" % os.getpid()
    o = Origin(extra_listen=["unix:" + sock])
    config = CONFIG.replace('["127.0.0.1:{{origin_port}}"]', '["unix:%s"]' % sock)
    p = Pilotfish(config + MODES[mode], origin=o)
    with o, p:
        before = spliced(p)
        r = pf.request(p.port, "POST", "/echo", body=pf.pattern(size))
        assert r.status == 200 and r.json()["body_fnv1a64"] == fnv_of_pattern(size), r
        check_spliced(p, mode, before, 1)


both(_unix_upstream)


def test_splice_req_defaults():
    """Without a `splice:` section request bodies from 1 MiB are spliced and
    smaller ones copied (limits.request_buffering off, so both stream), and
    no response body is spliced."""
    config = CONFIG.replace("workers: 1\n", "workers: 1\nlimits: { request_buffering: 0 }\n")
    o = Origin()
    p = Pilotfish(config, origin=o)
    with o, p:
        before = spliced(p)
        for size in (MiB - 1, MiB):
            r = pf.request(p.port, "POST", "/echo", body=pf.pattern(size))
            assert r.status == 200 and r.json()["body_fnv1a64"] == fnv_of_pattern(size), r
        check_spliced(p, "on", before, 1)
        r = p.get("/?size=%d" % (4 * MiB))
        assert r.status == 200 and r.body == pf.pattern(4 * MiB)
        assert p.metrics()["pilotfish_splice_responses_total"] == 0
