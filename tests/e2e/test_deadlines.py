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
    """An upstream that sends 100 Continue every 400 ms for 4 s before its 200:
    with request_timeout 1s the client gets 504 long before the 200 would come."""
    o = Origin()
    p = Pilotfish(h2.config(upstream_extra="request_timeout: 1s"), origin=o)
    with o, p, p.conn(timeout=15) as c:
        t0 = time.monotonic()
        r = c.request("GET", "/?interim=10&interim_delay=400")
        took = time.monotonic() - t0
        assert_error(r, 504, "upstream_timeout")
        assert took < 3.5, "504 after %.1fs: the interim responses extended the deadline" % took


@pf.timeout(30)
def test_deadline_dripping_head_does_not_extend_request_timeout():
    """A response head written one byte every 100 ms (about 6 s in all): with
    request_timeout 1s the client gets 504, not the 200."""
    o = Origin()
    p = Pilotfish(h2.config(upstream_extra="request_timeout: 1s"), origin=o)
    with o, p, p.conn(timeout=15) as c:
        t0 = time.monotonic()
        r = c.request("GET", "/?drip=100")
        took = time.monotonic() - t0
        assert_error(r, 504, "upstream_timeout")
        assert took < 4.5, "504 after %.1fs: the dripping head extended the deadline" % took
        # the same response from a patient configuration arrives whole
        p2 = Pilotfish(h2.config(upstream_extra="request_timeout: 20s"), origin=o)
        with p2, p2.conn(timeout=20) as c2:
            r = c2.request("GET", "/?drip=20")
            assert r.status == 200 and r.body == b"hello", r


@pf.timeout(30)
def test_deadline_body_gaps_use_request_timeout_between_reads():
    """After the head, request_timeout bounds each silence, not the whole body:
    a body in 10 pieces 300 ms apart (3 s) passes with request_timeout 1s."""
    o = Origin()
    p = Pilotfish(h2.config(upstream_extra="request_timeout: 1s"), origin=o)
    with o, p, p.conn(timeout=15) as c:
        r = c.request("GET", "/?size=100&chunk=10&chunk_delay=300")
        assert r.status == 200 and r.body == pf.pattern(100), r
