"""Streaming and backpressure (request and response bodies are
streamed, never buffered whole, with backpressure both ways): large bodies arrive byte-exact while pilotfish's memory stays bounded."""

import hashlib
import os
import socket
import threading
import time

import pf
from pf import Conn, Origin, Pilotfish

import helpers2 as h2

MiB = 1 << 20
# pilotfish may grow this much over its idle RSS while moving 50 MiB: far less
# than the body, far more than its 256 KiB watermarks and a few arenas
RSS_BUDGET_KIB = 24 * 1024


def start():
    o = Origin()
    p = Pilotfish(origin=o)
    # warm up: first request, pools, arenas
    assert p.get("/?size=100000").status == 200
    with p.conn() as c:
        c.request("POST", "/echo?raw=1", body=os.urandom(200000))
    time.sleep(0.2)
    return o, p


def check_rss(p, rss, idle, what):
    """RSS growth within RSS_BUDGET_KIB (not checked for sanitizer builds)."""
    grew = rss.max_kib - idle
    assert rss.samples >= 5, "too few RSS samples: %d" % rss.samples
    if h2.is_sanitized(p.bin):
        return
    assert grew < RSS_BUDGET_KIB, "RSS grew %d KiB over idle %d KiB (max %d KiB) while %s" % (
        grew, idle, rss.max_kib, what)


def expected_sha(n):
    return hashlib.sha256(pf.pattern(n)).hexdigest()


@pf.timeout(120)
def test_streaming_50mib_response_slow_reader():
    size = 50 * MiB
    want = expected_sha(size)
    o, p = start()
    with o, p:
        idle = p.rss_kib()
        with h2.RssSampler(p) as rss, Conn(p.port, timeout=30) as c:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
            c.send_request("GET", "/?size=%d" % size)
            head = c.read_until(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), head
            lines = head.decode("latin-1").lower().split("\r\n")
            cl = [l.split(":", 1)[1].strip() for l in lines if l.startswith("content-length:")]
            assert cl == [str(size)], "expected Content-Length %d kept: %r" % (size, head)
            # stall first: a proxy without backpressure would swallow it all now
            time.sleep(1.0)
            h = hashlib.sha256()
            got = len(c.buf)
            h.update(c.buf)
            c.buf = b""
            t0 = time.monotonic()
            while got < size:
                d = c.sock.recv(min(65536, size - got))
                if not d:
                    break
                h.update(d)
                got += len(d)
                time.sleep(0.005)
                assert time.monotonic() - t0 < 90, "too slow: %d bytes" % got
            assert got == size, "body cut at %d of %d bytes" % (got, size)
            assert h.hexdigest() == want, "body differs from the origin's pattern"
            assert c.request("GET", "/?body=next").body == b"next"  # still in sync
        check_rss(p, rss, idle, "streaming 50 MiB to a slow reader")


@pf.timeout(120)
def test_streaming_50mib_request_body_echoed():
    data = os.urandom(50 * MiB)
    o, p = start()
    with o, p:
        idle = p.rss_kib()
        with h2.RssSampler(p) as rss:
            r = pf.echo_raw(p.port, data, timeout=90)
        assert r.status == 200, r
        assert len(r.body) == len(data), "echoed %d of %d bytes" % (len(r.body), len(data))
        assert r.body == data, "echoed body differs"
        check_rss(p, rss, idle, "echoing 50 MiB")


@pf.timeout(120)
def test_streaming_50mib_upload_slow_reader_of_echo():
    """Upload 50 MiB while reading the echo slowly: the request side must also be
    throttled (the upstream's output buffer full -> stop reading the client)."""
    size = 50 * MiB
    data = pf.pattern(size)
    o, p = start()
    with o, p:
        idle = p.rss_kib()
        errors = []
        with h2.RssSampler(p) as rss, Conn(p.port, timeout=60) as c:
            def writer():
                try:
                    c.sock.sendall(b"POST /echo?raw=1 HTTP/1.1\r\nHost: x\r\nContent-Length: %d"
                                   b"\r\n\r\n" % size)
                    mv = memoryview(data)
                    for i in range(0, size, 1 << 20):
                        c.sock.sendall(mv[i:i + (1 << 20)])
                except OSError as e:
                    errors.append(e)

            t = threading.Thread(target=writer, daemon=True)
            t.start()
            head = c.read_until(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), head
            time.sleep(1.0)
            # read the chunked echo slowly
            h = hashlib.sha256()
            got = 0
            t0 = time.monotonic()
            while True:
                line = c.read_until(b"\r\n")
                n = int(line.split(b";")[0], 16)
                if n == 0:
                    c.read_until(b"\r\n")
                    break
                chunk = c.read_exact(n)
                h.update(chunk)
                got += n
                c.read_exact(2)
                if len(c.buf) < 65536:
                    time.sleep(0.002)
                assert time.monotonic() - t0 < 90, "too slow: %d bytes" % got
            t.join(10)
            assert not errors, errors
            assert got == size, got
            assert h.hexdigest() == hashlib.sha256(data).hexdigest(), "echo differs"
        check_rss(p, rss, idle, "uploading 50 MiB and reading its echo slowly")


@pf.timeout(60)
def test_streaming_chunked_upload_10mib_odd_chunks():
    size = 10 * MiB
    data = os.urandom(size)
    sizes = [1, 7, 4093, 65537, 333, 100003, 17, 2, 8191, 250001]
    o, p = start()
    with o, p, Conn(p.port, timeout=30) as c:
        errors = []

        def writer():
            try:
                c.sock.sendall(b"POST /echo?raw=1 HTTP/1.1\r\nHost: x\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n")
                i = k = 0
                while i < size:
                    n = min(sizes[k % len(sizes)], size - i)
                    frame = b"%x\r\n" % n + data[i:i + n] + b"\r\n"
                    # split each frame at an odd place, sometimes inside the size line
                    cut = (k * 7919) % len(frame)
                    c.sock.sendall(frame[:cut])
                    c.sock.sendall(frame[cut:])
                    i += n
                    k += 1
                c.sock.sendall(b"0\r\n\r\n")
            except OSError as e:
                errors.append(e)

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        r = c.read_response("POST")
        t.join(20)
        assert not errors, errors
        assert r.status == 200, r
        assert len(r.body) == size, "echoed %d of %d" % (len(r.body), size)
        assert r.body == data, "echoed body differs"
        # the same through /echo: what the origin saw, framed as pilotfish chose
        small = data[:300001]
        e = c.request("POST", "/echo", body=[small[i:i + 9999] for i in
                                              range(0, len(small), 9999)]).json()
        assert e["body_length"] == len(small), e
        assert e["body_fnv1a64"] == pf.fnv1a64(small), e


def test_streaming_close_delimited_origin_to_http11_client_is_chunked():
    o, p = start()
    with o, p, p.conn(timeout=30) as c:
        size = 5 * MiB
        r = c.request("GET", "/?close=1&size=%d" % size)
        assert r.status == 200, r
        assert r.framing == "chunked", "close-delimited upstream body to an HTTP/1.1 client " \
            "must be chunked, got %s" % r.framing
        assert r.header("Content-Length") is None
        assert len(r.body) == size and r.body == pf.pattern(size), len(r.body)
        # slow pieces too
        r = c.request("GET", "/?close=1&size=3000&chunk=500&chunk_delay=30")
        assert r.framing == "chunked" and r.body == pf.pattern(3000), r
        # the client connection is kept
        r = c.request("GET", "/?body=still")
        assert r.status == 200 and r.body == b"still", r
        assert not c.is_closed(0.2)
