"""Limits with real statuses (docs/configuration.md "limits",
docs/operations.md): 431, 414, 413, 408 each with Connection: close, a JSON body with
"error" and X-Pilotfish-Error; keep-alive idle timeout; max_connections pauses
accepting instead of refusing or crashing."""

import socket
import time

import pf
from pf import Conn, Origin, Pilotfish

import helpers2 as h2


def start(limits="", upstream_extra=""):
    o = Origin()
    extra = ("limits:\n" + "".join("  %s\n" % l for l in limits.strip().splitlines())) \
        if limits.strip() else ""
    return o, Pilotfish(h2.config(extra, upstream_extra), origin=o)


def origin_requests(o, p):
    """Requests the origin answered, once nothing is in transit to it."""
    return h2.origin_settled(o, p)["requests"]


# ---- 431 ----

def test_limits_431_head_over_max_header_size():
    o, p = start("max_header_size: 4KiB")
    with o, p:
        # under the limit: served
        with p.conn() as c:
            r = c.request("GET", "/", headers=[("Host", "x"), ("X-Pad", "a" * 3000)])
            assert r.status == 200, r
        # one big header over the limit
        raw = pf.build_request("GET", "/", headers=[("Host", "x"), ("X-Big", "a" * 5000)])
        r, closed, _ = h2.raw_exchange(p.port, raw)
        h2.assert_error_reply(r, 431, closed=closed, what="one 5000-byte header")
        # many small headers adding up over the limit
        raw = pf.build_request("GET", "/", headers=[("Host", "x")] +
                               [("X-H%02d" % i, "b" * 200) for i in range(30)])
        r, closed, _ = h2.raw_exchange(p.port, raw)
        h2.assert_error_reply(r, 431, closed=closed, what="30 headers of 200 bytes")
        # the head arriving in small pieces
        pieces = [raw[i:i + 500] for i in range(0, len(raw), 500)]
        r, closed, _ = h2.raw_exchange(p.port, None, pieces=pieces)
        h2.assert_error_reply(r, 431, closed=closed, what="head in 500-byte pieces")
        assert origin_requests(o, p) == 1, "an over-limit head reached the origin"


def test_limits_431_too_many_headers():
    o, p = start()
    with o, p:
        # 100 header fields (the default max_headers), Host included: served
        hdrs = [("Host", "x")] + [("X-N%03d" % i, "v") for i in range(99)]
        with p.conn() as c:
            r = c.request("GET", "/", headers=hdrs)
            assert r.status == 200, "100 headers refused: %r" % r
        # 101
        hdrs = [("Host", "x")] + [("X-N%03d" % i, "v") for i in range(100)]
        r, closed, _ = h2.raw_exchange(p.port, pf.build_request("GET", "/", headers=hdrs))
        h2.assert_error_reply(r, 431, closed=closed, what="101 headers")
        assert origin_requests(o, p) == 1


def test_limits_431_max_headers_configurable():
    o, p = start("max_headers: 10")
    with o, p:
        hdrs = [("Host", "x")] + [("X-N%d" % i, "v") for i in range(10)]
        r, closed, _ = h2.raw_exchange(p.port, pf.build_request("GET", "/", headers=hdrs))
        h2.assert_error_reply(r, 431, closed=closed, what="11 headers with max_headers 10")


# ---- 414 ----

def test_limits_414_uri_over_default_8k():
    o, p = start()
    with o, p:
        ok = "/?body=ok&pad=" + "a" * (8000 - 14)
        with p.conn() as c:
            r = c.request("GET", ok)
            assert r.status == 200 and r.body == b"ok", "an 8000-byte URI was refused: %r" % r
        long = "/" + "a" * 9000
        r, closed, _ = h2.raw_exchange(p.port, pf.build_request("GET", long))
        h2.assert_error_reply(r, 414, closed=closed, what="9001-byte URI")
        # the URI split across reads
        raw = pf.build_request("GET", "/?" + "b" * 10000)
        r, closed, _ = h2.raw_exchange(p.port, None,
                                       pieces=[raw[i:i + 3000] for i in range(0, len(raw), 3000)])
        h2.assert_error_reply(r, 414, closed=closed, what="10002-byte URI in pieces")
        assert origin_requests(o, p) == 1


def test_limits_414_max_uri_size_configurable():
    o, p = start("max_uri_size: 1KiB")
    with o, p:
        r, closed, _ = h2.raw_exchange(p.port, pf.build_request("GET", "/" + "c" * 2000))
        h2.assert_error_reply(r, 414, closed=closed, what="2001-byte URI, max_uri_size 1KiB")


# ---- 413 ----

def test_limits_413_content_length_over_max_body_size():
    o, p = start("max_body_size: 1KiB")
    with o, p:
        with p.conn() as c:
            e = c.request("POST", "/echo", body=b"x" * 1024).json()
            assert e["body_length"] == 1024, "a body of exactly max_body_size refused: %r" % e
        raw = pf.build_request("POST", "/echo", body=b"y" * 2000)
        r, closed, _ = h2.raw_exchange(p.port, raw, method="POST")
        h2.assert_error_reply(r, 413, closed=closed, what="Content-Length 2000")
        # the head alone is enough to refuse: no body sent at all
        raw = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n"
        r, closed, _ = h2.raw_exchange(p.port, raw, method="POST")
        h2.assert_error_reply(r, 413, closed=closed, what="Content-Length 1e8, body not sent")
        assert origin_requests(o, p) == 1, "an over-limit request reached the origin"


def test_limits_413_chunked_body_over_max_body_size():
    o, p = start("max_body_size: 1KiB")
    with o, p:
        with p.conn() as c:
            e = c.request("POST", "/echo", body=[b"x" * 500, b"y" * 524]).json()
            assert e["body_length"] == 1024, e
        raw = pf.build_request("POST", "/echo", body=[b"z" * 600, b"w" * 600])
        r, closed, _ = h2.raw_exchange(p.port, raw, method="POST")
        h2.assert_error_reply(r, 413, closed=closed, what="chunked 1200 bytes")
        # a chunked body that never ends but passes the limit
        c = Conn(p.port, timeout=5)
        try:
            c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(4):
                c.send(b"200\r\n" + b"q" * 512 + b"\r\n")
            r = c.read_response("POST")
            h2.assert_error_reply(r, 413, closed=c.is_closed(2.0), what="unterminated chunked")
        finally:
            c.close()
        assert origin_requests(o, p) == 1, "an over-limit request was answered by the origin"


# ---- 408 and idle ----

def test_limits_408_head_not_complete_within_header_timeout():
    o, p = start("header_timeout: 1s")
    with o, p:
        c = Conn(p.port, timeout=5)
        try:
            t0 = time.monotonic()
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n")  # half a head
            r = c.read_response()
            took = time.monotonic() - t0
            h2.assert_error_reply(r, 408, closed=c.is_closed(2.0), what="half a head")
            # below the client's 5 s wait with room for a loaded machine
            assert 0.8 <= took <= 4.5, "408 after %.2fs with header_timeout 1s" % took
        finally:
            c.close()
        assert origin_requests(o, p) == 0


def test_limits_408_slowloris_trickle_does_not_extend_header_timeout():
    o, p = start("header_timeout: 1s")
    with o, p:
        c = Conn(p.port, timeout=6)
        try:
            t0 = time.monotonic()
            head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40
            got = None
            for b in head:  # one byte every 100 ms: 4+ s for the whole head
                try:
                    c.send(bytes([b]))
                except OSError:
                    break
                if c.is_closed(0.1) or c.buf:
                    break
            got = c.read_response() if not c.eof else None
            took = time.monotonic() - t0
            h2.assert_error_reply(got, 408, closed=c.is_closed(2.0), what="trickled head")
            # the whole head takes 7 s or more: a timeout per read would let it through
            assert took <= 5.5, "408 only after %.2fs: the timeout is per read, not per head" \
                % took
        finally:
            c.close()


def test_limits_idle_keepalive_closed_after_idle_timeout():
    o, p = start("idle_timeout: 1s")
    with o, p, p.conn() as c:
        t0 = time.monotonic()
        assert c.request("GET", "/").status == 200
        assert not c.is_closed(0.5), "closed well before idle_timeout"
        assert c.is_closed(6.0), "idle keep-alive connection still open %.1fs after the " \
            "response with idle_timeout 1s" % (time.monotonic() - t0)
        assert c.buf == b"", "bytes sent on idle close: %r" % c.buf


def test_limits_idle_timeout_is_reset_by_each_request():
    # 4 pauses of 1 s: more than idle_timeout in total, each 2 s short of it
    # (a slow machine only lengthens a pause by its scheduling delay)
    o, p = start("idle_timeout: 3s")
    with o, p, p.conn() as c:
        for _ in range(4):
            assert c.request("GET", "/").status == 200
            time.sleep(1.0)
        assert c.request("GET", "/").status == 200


# ---- max_connections ----

@pf.timeout(40)
def test_limits_max_connections_pauses_accept():
    o, p = start("max_connections: 4")
    with o, p:
        conns = [Conn(p.port, timeout=5) for _ in range(4)]
        try:
            for c in conns:
                assert c.request("GET", "/").status == 200
            # the 5th: the kernel completes the handshake, pilotfish must not serve it yet
            fifth = Conn(p.port, timeout=5)
            conns.append(fifth)
            fifth.send_request("GET", "/?body=fifth")
            fifth.settimeout(1.5)
            try:
                data = fifth.sock.recv(65536)
            except socket.timeout:
                data = None
            assert data is None, "5th connection over max_connections 4 got %r" % (data[:200],) \
                if data else "5th connection was closed (refused) instead of waiting"
            fifth.settimeout(5)
            # the first four still work
            assert conns[1].request("GET", "/").status == 200
            # one closes: the 5th is accepted and served
            conns[0].close()
            r = fifth.read_response()
            assert r.status == 200 and r.body == b"fifth", r
            assert p.running(), "pilotfish died"
            # and it stays at the limit: still four served at once
            assert all(c.request("GET", "/").status == 200 for c in conns[1:])
        finally:
            for c in conns:
                c.close()
        # all closed: new connections are served again
        assert pf.eventually(lambda: p.get("/").status == 200, timeout=5)
        assert p.running()


def test_limits_many_connections_over_limit_no_crash():
    o, p = start("max_connections: 4")
    with o, p:
        socks = []
        try:
            for _ in range(50):
                s = socket.create_connection(("127.0.0.1", p.port), timeout=2)
                socks.append(s)
        except OSError:
            pass
        time.sleep(0.3)
        assert p.running(), "pilotfish died with 50 connections and max_connections 4"
        for s in socks:
            s.close()
        assert pf.eventually(lambda: p.get("/").status == 200, timeout=10)
