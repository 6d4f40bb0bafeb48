"""Deadlines: upstreams.*.request_timeout is an absolute deadline for the
response head (interim responses and a dripping head do not extend it),
then a between-reads timeout for the body; limits.body_timeout bounds a
whole request body; limits.request_buffering reads small bodies before an
upstream connection is taken."""

import socket
import time

import pf
from pf import Conn, Origin, Pilotfish

import helpers2 as h2


def assert_error(r, status, code):
    assert r.status == status, "expected %d %s, got %r: %r" % (status, code, r, r.body[:300])
    assert r.header("X-Pilotfish-Error") == code, (r, r.header("X-Pilotfish-Error"))


# ---- request_timeout: a deadline for the head ----

@pf.timeout(30)
def test_deadline_interim_responses_do_not_extend_request_timeout():
    """An upstream that sends 100 Continue every 400 ms for 10 s before its 200:
    with request_timeout 1s the client gets 504 long before the 200 would come
    (10 s: far enough from 1 s for a loaded machine)."""
    o = Origin()
    p = Pilotfish(h2.config(upstream_extra="request_timeout: 1s"), origin=o)
    with o, p, p.conn(timeout=15) as c:
        t0 = time.monotonic()
        r = c.request("GET", "/?interim=25&interim_delay=400")
        took = time.monotonic() - t0
        assert_error(r, 504, "upstream_timeout")
        assert took < 8, "504 after %.1fs: the interim responses extended the deadline" % took


@pf.timeout(30)
def test_deadline_dripping_head_does_not_extend_request_timeout():
    """A response head written one byte every 150 ms (about 9 s in all): with
    request_timeout 1s the client gets 504, not the 200."""
    o = Origin()
    p = Pilotfish(h2.config(upstream_extra="request_timeout: 1s"), origin=o)
    with o, p, p.conn(timeout=15) as c:
        t0 = time.monotonic()
        r = c.request("GET", "/?drip=150")
        took = time.monotonic() - t0
        assert_error(r, 504, "upstream_timeout")
        assert took < 7, "504 after %.1fs: the dripping head extended the deadline" % took
        # the same response from a patient configuration arrives whole
        p2 = Pilotfish(h2.config(upstream_extra="request_timeout: 20s"), origin=o)
        with p2, p2.conn(timeout=20) as c2:
            r = c2.request("GET", "/?drip=20")
            assert r.status == 200 and r.body == b"hello", r


@pf.timeout(30)
def test_deadline_body_gaps_use_request_timeout_between_reads():
    """After the head, request_timeout bounds each silence, not the whole body:
    a body in 15 pieces 300 ms apart (4.5 s) passes with request_timeout 2s
    (2 s: a silence of 300 ms stays below it on a loaded machine)."""
    o = Origin()
    p = Pilotfish(h2.config(upstream_extra="request_timeout: 2s"), origin=o)
    with o, p, p.conn(timeout=15) as c:
        r = c.request("GET", "/?size=150&chunk=10&chunk_delay=300")
        assert r.status == 200 and r.body == pf.pattern(150), r


# ---- limits.body_timeout ----

@pf.timeout(30)
def test_deadline_body_timeout_408_for_a_trickling_body():
    """A body trickled a byte every 200 ms never stays silent for idle_timeout
    (10s), but body_timeout 1s ends it with 408 long before its 20 s."""
    o = Origin()
    p = Pilotfish(h2.config("limits:\n  body_timeout: 1s\n  idle_timeout: 10s\n"), origin=o)
    with o, p, p.conn(timeout=15) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        t0 = time.monotonic()
        c.settimeout(0.2)
        r = None
        for _ in range(100):  # at most 100 bytes: the whole body
            try:
                c.send(b"x")
            except OSError:
                break  # closed after the 408
            try:
                r = c.read_response()
                break
            except socket.timeout:
                continue
        took = time.monotonic() - t0
        assert r is not None, "no answer to a body trickled for %.1fs" % took
        assert_error(r, 408, "request_timeout")
        assert took < 8, "408 after %.1fs with body_timeout 1s" % took


# ---- limits.request_buffering ----

def origin_active(o):
    return o.stats()["active"]


def stays_zero(o, seconds=0.6):
    """The origin has no connection open from now on for about seconds."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if origin_active(o) != 0:
            return False
        time.sleep(0.05)
    return True


@pf.timeout(30)
def test_deadline_small_body_buffered_before_connecting():
    """A slow client with a small body (Content-Length 1000, half sent) holds no
    upstream connection; once the body is in, it goes upstream whole."""
    o = Origin()
    with o:
        p = Pilotfish(h2.config(), origin=o)
        with p, p.conn(timeout=10) as c:
            body = pf.pattern(1000)
            c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" +
                   body[:500])
            assert stays_zero(o), "an upstream connection opened for a half-sent 1000-byte body"
            c.send(body[500:])
            r = c.read_response()
            assert r.status == 200, r
            j = r.json()
            assert j["body_length"] == 1000 and j["body_fnv1a64"] == pf.fnv1a64(body), j
        # chunked, under the limit: buffered too (a fresh pilotfish: no pooled connection)
        pf.eventually(lambda: origin_active(o) == 0, msg="the pooled connection closed")
        p = Pilotfish(h2.config(), origin=o)
        with p, p.conn(timeout=10) as c:
            c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\nhello\r\n")
            assert stays_zero(o), "an upstream connection opened for a small chunked body"
            c.send(b"6\r\n world\r\n0\r\n\r\n")
            r = c.read_response()
            assert r.status == 200 and r.json()["body"] == "hello world", (r, r.body[:300])


@pf.timeout(30)
def test_deadline_large_or_unbuffered_bodies_stream():
    """A Content-Length over request_buffering, a chunked body that passes it,
    and any body with request_buffering 0 go upstream as they arrive."""
    o = Origin()
    with o:
        p = Pilotfish(h2.config("limits:\n  request_buffering: 1KiB\n"), origin=o)
        with p:
            with p.conn(timeout=10) as c:
                c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n" +
                       b"a" * 10)
                pf.eventually(lambda: origin_active(o) == 1,
                              msg="upstream connection for 2000 bytes")
                c.send(b"a" * 1990)
                assert c.read_response().json()["body_length"] == 2000
            with p.conn(timeout=10) as c:
                c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"600\r\n" + b"b" * 0x600 + b"\r\n")
                pf.eventually(lambda: origin_active(o) == 1, msg="upstream connection past 1KiB")
                c.send(b"600\r\n" + b"b" * 0x600 + b"\r\n0\r\n\r\n")
                assert c.read_response().json()["body_length"] == 0xc00
        p0 = Pilotfish(h2.config("limits:\n  request_buffering: 0\n"), origin=o)
        with p0, p0.conn(timeout=10) as c:
            c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            pf.eventually(lambda: origin_active(o) == 1, msg="upstream connection, buffering off")
            c.send(b"defghij")
            assert c.read_response().json()["body"] == "abcdefghij"
