"""Coalesced requests served while the leader's response streams in
(docs/filters/cache.md, "Coalescing").

The origin here is a small Python server that the test steps through: it
holds the response head until `head` is set, then sends the head and the
first part of the body, and holds the rest until `release` is set. So a
test can check that the waiters already got the first part while the origin
still holds the end: an ordering of events, never a timing. Every read has
a socket timeout only as a bound against a hang."""

import email.utils
import socket
import struct
import threading

import pf
from helpers2 import ThreadedOrigin
from pf import ConnectionClosed, Pilotfish

CONFIG = """\
listen: "127.0.0.1:{{port}}"
workers: 2
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
  cache: { memory: 8MiB, max_object_size: 64KiB, lock_timeout: 30s }
"""

PART = 4000  # bytes of the first part
BOUND = 10   # seconds: a bound against a hang, never a timing assertion


class HoldingOrigin(ThreadedOrigin):
    """One response per connection, sent in steps the test releases.

    mode "length": Content-Length: 2*PART, PART bytes, hold, PART more.
    mode "grow":   chunked, PART bytes, hold, then 100 KiB more (past a
                   64 KiB max_object_size) and the last chunk.
    mode "cut":    Content-Length: 2*PART, PART bytes, hold, then close.
    mode "grow-hold": as "grow", but holds the last chunk until `end` is set.
    """

    def __init__(self, mode, extra=""):
        self.mode = mode
        self.extra = extra  # more response fields, each ending in CRLF
        self.head = threading.Event()
        self.release = threading.Event()
        self.end = threading.Event()
        self.upstream_closed = threading.Event()
        self.got_request = threading.Event()
        self.rest_sent = threading.Event()  # the origin sent what it held (or closed)
        self.lock = threading.Lock()
        self.requests = 0
        self.listen()

    def _serve(self, s):
        try:
            buf = self.read_head(s)
            if buf is None:
                return
            ranged = b"\r\nrange:" in buf.lower()
            with self.lock:
                self.requests += 1
            self.got_request.set()
            self.head.wait(BOUND)
            body = bytes((97 + i % 26) for i in range(2 * PART))
            cc = "Cache-Control: max-age=3600\r\nConnection: close\r\n" + self.extra
            if self.mode.startswith("grow"):
                s.sendall(("HTTP/1.1 200 OK\r\n%sTransfer-Encoding: chunked\r\n\r\n" % cc).encode()
                          + b"%x\r\n" % PART + body[:PART] + b"\r\n")
            else:
                st = "206 Partial Content" if ranged else "200 OK"
                if ranged:  # a range of a resource twice as long
                    cc += "Content-Range: bytes 0-%d/%d\r\n" % (2 * PART - 1, 4 * PART)
                s.sendall(("HTTP/1.1 %s\r\n%sContent-Length: %d\r\n\r\n" % (st, cc, 2 * PART))
                          .encode() + body[:PART])
            self.release.wait(3 * BOUND)  # longer than any read: a missing event fails the test
            self.rest_sent.set()
            if self.mode == "length":
                s.sendall(body[PART:])
            elif self.mode.startswith("grow"):
                for _ in range(25):
                    s.sendall(b"1000\r\n" + b"x" * 4096 + b"\r\n")
                if self.mode == "grow-hold":
                    self._hold_end(s)
                s.sendall(b"0\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
        except OSError:
            self.upstream_closed.set()  # pilotfish closed it while this sent
        finally:
            s.close()

    def _hold_end(self, s):
        """Until `end` is set; sets `upstream_closed` when pilotfish closes the connection."""
        s.settimeout(0.05)
        for _ in range(int(3 * BOUND / 0.05)):
            if self.end.is_set():
                break
            try:
                if not s.recv(65536):
                    self.upstream_closed.set()
                    return
            except socket.timeout:
                continue
            except OSError:
                self.upstream_closed.set()
                return
        s.settimeout(None)

    def close(self):
        self.head.set()
        self.release.set()
        self.end.set()
        self.sock.close()


class Reader:
    """A response read step by step: the head, then body bytes as they come."""

    def __init__(self, conn):
        self.c = conn
        head = conn.read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        self.status = int(head[0].split()[1])
        self.headers = {}
        self.lines = head[1:]  # every field line, duplicates kept
        for line in head[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                self.headers[k.strip().lower()] = v.strip()
        self.chunked = self.headers.get("transfer-encoding") == "chunked"
        self.length = int(self.headers.get("content-length", "-1"))
        self.body = b""
        self.complete = False

    def _step(self):
        if self.chunked:
            size = int(self.c.read_line().split(b";")[0], 16)
            if size == 0:
                self.c.read_line()
                self.complete = True
                return
            self.body += self.c.read_exact(size)
            self.c.read_exact(2)
            return
        if len(self.body) == self.length:
            self.complete = True
            return
        if not self.c.buf:
            self.c._fill()
        take = min(len(self.c.buf), self.length - len(self.body))
        self.body += self.c.buf[:take]
        self.c.buf = self.c.buf[take:]

    def read_at_least(self, n):
        while len(self.body) < n and not self.complete:
            self._step()

    def read_all(self):
        """The rest of the body; False when the connection ended before its framing did."""
        try:
            while not self.complete:
                self._step()
        except (ConnectionClosed, ConnectionResetError):
            return False
        return True


def start(mode, extra=""):
    o = HoldingOrigin(mode, extra)
    p = Pilotfish(CONFIG, origin=o)
    return o, p


def send_get(p, target):
    c = p.conn(timeout=BOUND)
    c.send(pf.build_request("GET", target))
    return c


def expected(n):
    return bytes((97 + i % 26) for i in range(n))


def open_flight(p, o, target, before=5, after=4):
    """The leader's request, `before` waiters sent before the origin's head, `after` sent once
    the leader's client has the first part; every waiter has its head and first part."""
    leader = send_get(p, target)
    assert o.got_request.wait(BOUND), "the origin got no request"
    conns = [send_get(p, target) for _ in range(before)]
    o.head.set()
    lr = Reader(leader)
    lr.read_at_least(PART)
    conns += [send_get(p, target) for _ in range(after)]
    readers = []
    for c in conns:
        r = Reader(c)
        r.read_at_least(PART)  # while the origin still holds the rest
        readers.append(r)
    assert not o.rest_sent.is_set(), "the waiters got the first part only once the origin ended"
    return leader, lr, conns, readers


@pf.timeout(90)
def test_cache_waiters_stream_before_the_origin_finishes():
    o, p = start("length")
    with o, p:
        target = "/s1"
        leader, lr, conns, readers = open_flight(p, o, target)
        for r in readers:
            assert r.status == 200 and r.body[:PART] == expected(PART)
            assert "collapsed" in r.headers.get("cache-status", ""), r.headers
            assert r.headers.get("content-length") == str(2 * PART), r.headers
            assert r.headers.get("age", "").isdigit(), r.headers
        assert "collapsed" not in lr.headers.get("cache-status", "")
        o.release.set()
        assert lr.read_all() and lr.body == expected(2 * PART)
        for r in readers:
            assert r.read_all(), "a waiter's response was cut"
            assert r.body == expected(2 * PART)
        for c in conns + [leader]:
            c.close()
        assert o.requests == 1, "expected 1 origin fetch, got %d" % o.requests
        r = p.get(target)
        assert r.status == 200 and r.body == expected(2 * PART)
        assert r.header("Cache-Status").startswith("pilotfish; hit"), r.headers
        assert o.requests == 1
        assert p.metrics().get("pilotfish_cache_coalesced_total") == 9


@pf.timeout(90)
def test_cache_waiters_cut_when_the_object_grows_too_big():
    o, p = start("grow")
    with o, p:
        target = "/s2"
        leader, lr, conns, readers = open_flight(p, o, target, before=3, after=2)
        o.release.set()
        # the leader's own client gets the whole response: it is passed through, not stored
        assert lr.read_all() and len(lr.body) == PART + 25 * 4096
        for r in readers:
            assert not r.read_all(), "a waiter got a complete framing around a partial body"
            assert len(r.body) < PART + 25 * 4096
        for c in conns + [leader]:
            c.close()
        assert o.requests == 1
        r = p.get(target)  # nothing was stored
        assert o.requests == 2
        assert "pilotfish; hit" not in (r.header("Cache-Status") or ""), r.headers


@pf.timeout(90)
def test_cache_waiters_cut_when_the_upstream_fails_mid_body():
    o, p = start("cut")
    with o, p:
        target = "/s3"
        leader, lr, conns, readers = open_flight(p, o, target, before=3, after=2)
        o.release.set()
        assert not lr.read_all()
        for r in readers:
            assert not r.read_all(), "a waiter got a complete framing around a partial body"
            assert len(r.body) < 2 * PART
        for c in conns + [leader]:
            c.close()
        assert o.requests == 1


def wait_coalesced(p, n):
    """Wait until n requests have joined a flight as waiters (counted as they start waiting)."""
    for _ in range(400):
        if p.metrics().get("pilotfish_cache_coalesced_total") == n:
            return
        threading.Event().wait(0.05)
    raise AssertionError("pilotfish_cache_coalesced_total never reached %d" % n)


def wait_connections(p, n):
    for _ in range(400):
        if p.metrics().get("pilotfish_http_connections_active") == n:
            return
        threading.Event().wait(0.05)
    raise AssertionError("pilotfish_http_connections_active never reached %d" % n)


@pf.timeout(90)
def test_cache_leader_client_abort_keeps_fetching_for_the_waiters():
    """Decision: the fetch goes on without the leader's client, so the waiters get the whole
    response and the entry is stored."""
    o, p = start("length")
    with o, p:
        target = "/s4"
        leader, lr, conns, readers = open_flight(p, o, target)
        # the leader's client goes away (RST) while the origin holds the rest
        leader.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        leader.close()
        wait_connections(p, len(conns))
        o.release.set()
        for r in readers:
            assert r.read_all(), "a waiter's response was cut"
            assert r.body == expected(2 * PART)
        for c in conns:
            c.close()
        assert o.requests == 1
        r = p.get(target)
        assert r.header("Cache-Status").startswith("pilotfish; hit"), r.headers
        assert r.body == expected(2 * PART) and o.requests == 1


def field_count(r, name):
    return sum(1 for line in r.lines if line.split(":", 1)[0].strip().lower() == name)


@pf.timeout(90)
def test_cache_waiters_get_no_withheld_fields():
    """A field that a qualified private= / no-cache= names is the leader's own: a waiter gets it
    no more than a later hit does."""
    extra = ('Cache-Control: private="Set-Cookie", no-cache="X-Secret"\r\n'
             "Set-Cookie: sid=leader\r\nX-Secret: s3\r\nX-Public: p\r\n")
    o, p = start("length", extra)
    with o, p:
        leader, lr, conns, readers = open_flight(p, o, "/w1", before=2, after=1)
        assert lr.headers.get("set-cookie") == "sid=leader", lr.headers
        for r in readers:
            assert "collapsed" in r.headers.get("cache-status", ""), r.headers
            assert r.headers.get("x-public") == "p", r.headers
            assert "set-cookie" not in r.headers, r.headers
            assert "x-secret" not in r.headers, r.headers
        o.release.set()
        for c in conns + [leader]:
            c.close()


@pf.timeout(90)
def test_cache_abandoned_object_is_not_handed_to_new_requests():
    """Once the object grew past max_object_size, a request that comes while the leader's body
    still streams goes upstream itself: it is not joined to the dead object (a 502)."""
    o, p = start("grow-hold")
    with o, p:
        target = "/a1"
        leader, lr, conns, readers = open_flight(p, o, target, before=2, after=1)
        o.release.set()
        for r in readers:
            assert not r.read_all(), "a waiter got a complete framing around a partial body"
        lr.read_at_least(PART + 25 * 4096)  # the origin holds its last chunk
        late = send_get(p, target)
        r = Reader(late)
        assert r.status == 200, (r.status, r.headers)
        assert "collapsed" not in r.headers.get("cache-status", ""), r.headers
        o.end.set()
        assert r.read_all() and len(r.body) == PART + 25 * 4096
        assert lr.read_all()
        assert o.requests == 2
        for c in conns + [leader, late]:
            c.close()


@pf.timeout(90)
def test_cache_waiters_get_one_date():
    """A waiter's head is the stored one: the origin's Date, not pilotfish's as well."""
    extra = "Date: %s\r\n" % email.utils.formatdate(usegmt=True)
    o, p = start("length", extra)
    with o, p:
        leader, lr, conns, readers = open_flight(p, o, "/d1", before=2, after=1)
        for r in readers:
            assert "collapsed" in r.headers.get("cache-status", ""), r.headers
            assert field_count(r, "date") == 1, r.lines
        o.release.set()
        for c in conns + [leader]:
            c.close()


@pf.timeout(90)
def test_cache_http10_waiter_not_collapsed_without_length():
    """Without a Content-Length an HTTP/1.0 client's body ends with the connection, where a cut
    looks like the end: such a request goes upstream itself."""
    o, p = start("grow")
    with o, p:
        target = "/h1"
        leader = send_get(p, target)
        assert o.got_request.wait(BOUND), "the origin got no request"
        old = p.conn(timeout=BOUND)
        old.send(pf.build_request("GET", target, version="1.0"))
        o.head.set()
        r = Reader(old)
        assert "fwd=" in r.headers.get("cache-status", ""), r.headers  # its own fetch
        o.release.set()
        lr = Reader(leader)
        assert lr.read_all() and len(lr.body) == PART + 25 * 4096
        assert o.requests == 2
        for c in (leader, old):
            c.close()


def wait_requests(o, n):
    for _ in range(400):
        if o.requests >= n:
            return
        threading.Event().wait(0.05)
    raise AssertionError("the origin got %d requests, never %d" % (o.requests, n))


@pf.timeout(90)
def test_cache_range_request_does_not_lead():
    """A Range request's 206 is never stored: it does not take the key's flight, so a plain request
    that comes meanwhile fetches (and stores) the response itself rather than wait for nothing."""
    o, p = start("length")
    with o, p:
        target = "/r1"
        ranged = p.conn(timeout=BOUND)
        ranged.send(pf.build_request("GET", target, headers={"Range": "bytes=0-7999"}))
        assert o.got_request.wait(BOUND), "the origin got no request"
        plain = send_get(p, target)
        wait_requests(o, 2)  # the plain request did not wait behind the ranged one
        o.head.set()
        o.release.set()
        rr, pr = Reader(ranged), Reader(plain)
        assert rr.status == 206 and rr.read_all()
        assert pr.status == 200 and pr.read_all() and pr.body == expected(2 * PART)
        assert "collapsed" not in pr.headers.get("cache-status", ""), pr.headers
        for c in (ranged, plain):
            c.close()
        r = p.get(target)
        assert r.header("Cache-Status").startswith("pilotfish; hit"), r.headers
        assert o.requests == 2


@pf.timeout(90)
def test_cache_detached_fetch_stops_when_the_object_is_abandoned():
    """A fetch that goes on for the store after its client left stops once the body grew past
    max_object_size: nothing is stored and nobody waits for it."""
    o, p = start("grow-hold")
    with o, p:
        leader = send_get(p, "/k1")
        o.head.set()
        Reader(leader).read_at_least(PART)
        leader.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        leader.close()
        wait_connections(p, 0)
        o.release.set()  # 100 KiB more, past max_object_size, then the origin holds its end
        assert o.upstream_closed.wait(BOUND), "the detached fetch went on with no reason"


@pf.timeout(90)
def test_cache_leader_gone_before_its_head_one_waiter_leads():
    """The leader's client goes away before the response head (nothing to keep fetching for): the
    waiters do not all go upstream at once; one of them fetches for the others."""
    o, p = start("length")
    with o, p:
        target = "/l1"
        leader = send_get(p, target)
        assert o.got_request.wait(BOUND), "the origin got no request"
        conns = [send_get(p, target) for _ in range(3)]
        wait_coalesced(p, 3)  # all three wait for the leader's fetch
        leader.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        leader.close()
        wait_requests(o, 2)  # the new leader's fetch
        o.head.set()
        o.release.set()
        for c in conns:
            r = Reader(c)
            assert r.status == 200 and r.read_all() and r.body == expected(2 * PART)
            c.close()
        assert o.requests == 2, "expected 2 origin fetches, got %d" % o.requests


@pf.timeout(90)
def test_cache_one_off_url_gets_no_hit_for_miss_marker():
    """A response that is not stored marks the URL only when requests waited for it: a one-off
    URL's next concurrent requests still coalesce (the first fetches, the other waits)."""
    o, p = start("length", "Cache-Control: no-store\r\n")
    with o, p:
        target = "/m1"
        o.head.set()
        o.release.set()
        assert p.get(target).status == 200  # alone: not stored, nobody waited
        o.head.clear()
        o.release.clear()
        a = send_get(p, target)
        wait_requests(o, 2)
        b = send_get(p, target)
        wait_coalesced(p, 1)  # b waits for a's fetch
        o.head.set()
        rb = Reader(b)  # woken by a's response (not stored), then fetched itself
        assert "collapsed" in rb.headers.get("cache-status", ""), rb.headers
        o.release.set()
        ra = Reader(a)
        assert ra.read_all() and rb.read_all()
        for c in (a, b):
            c.close()
