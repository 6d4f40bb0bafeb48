"""Response bodies moved with splice(2) (upstream socket -> pipe -> client
socket) when no filter reads them, and the copying path they fall back to.
Every test runs in both modes, set in the configuration: splice on (`splice:
{responses: true}`, bodies from 64 KiB, as requests) and off (both
directions), and checks which one moved the body with the pilotfish_splice_*
counters. A reload switches it for the requests that start afterwards."""

import gzip
import hashlib
import json
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
    request_timeout: 1s
"""

# the `splice:` section of each mode, appended to a configuration
MODES = {
    "on": "splice: { requests: true, min_request_size: 64KiB, responses: true, "
          "min_response_size: 64KiB }\n",
    "off": "splice: { requests: false, responses: false }\n",
}


def start(mode):
    o = Origin()
    p = Pilotfish(CONFIG + MODES[mode], origin=o)
    assert p.get("/?size=100000").status == 200  # warm up: pools, arenas, a pipe
    return o, p


def spliced(p):
    m = p.metrics()
    return (m["pilotfish_splice_responses_total"], m["pilotfish_splice_bytes_total"])


def check_spliced(p, mode, before, responses):
    """When on, responses more bodies went with splice; none ever when off."""
    now = spliced(p)
    if mode == "off":
        assert now == (0, 0), "splice used while off: %r" % (now,)
    else:
        assert now[0] == before[0] + responses, "spliced responses %r -> %r, want +%d" % (
            before, now, responses)
        if responses > 0:
            assert now[1] > before[1], now


def read_head(c):
    head = c.read_until(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    return lines[0], {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip()
                      for l in lines[1:] if ":" in l}


def read_sha(c, n):
    """Read n body bytes (what is buffered first): (bytes read, sha256 hex)."""
    take = c.buf[:n]
    c.buf = c.buf[n:]
    h = hashlib.sha256(take)
    got = len(take)
    while got < n:
        d = c.sock.recv(min(1 << 20, n - got))
        if not d:
            break
        h.update(d)
        got += len(d)
    return got, h.hexdigest()


def access_lines(p, n):
    path = os.path.join(p.dir, "access.log")

    def ready():
        if not os.path.exists(path):
            return None
        with open(path) as f:
            lines = [json.loads(l) for l in f if l.strip()]
        return lines if len(lines) >= n else None

    return pf.eventually(ready, msg="%d access log lines" % n)


def both(fn):
    """Register test_splice<fn name>_on and _off: fn run in each mode."""
    for mode in MODES:
        def test(mode=mode):
            fn(mode)

        test.__name__ = "test_splice%s_%s" % (fn.__name__, mode)
        test.__doc__ = fn.__doc__
        test.timeout = getattr(fn, "timeout", 30)
        globals()[test.__name__] = test
    return fn


@pf.timeout(120)
def _big_response(mode):
    """50 MiB byte-exact (sha256), twice on one client connection; the upstream
    connection is reused (exactly Content-Length bytes were moved), and the
    access log counts every byte."""
    size = 50 * MiB
    want = hashlib.sha256(pf.pattern(size)).hexdigest()
    o, p = start(mode)
    with o, p:
        before = spliced(p)
        o.reset_stats()
        with Conn(p.port, timeout=60) as c:
            for _ in range(2):
                c.send_request("GET", "/?size=%d" % size)
                status, hdrs = read_head(c)
                assert status.startswith("HTTP/1.1 200 "), status
                assert hdrs["content-length"] == str(size), hdrs
                got, sha = read_sha(c, size)
                assert got == size, "body cut at %d of %d bytes" % (got, size)
                assert sha == want, "body differs"
            assert c.request("GET", "/?body=next").body == b"next"  # still in sync
        check_spliced(p, mode, before, 2)
        st = o.stats()
        assert st["connections"] == 0, "upstream connection not reused: %r" % st  # the warm-up's
        logs = access_lines(p, 4)
        big = [l for l in logs if l.get("status") == 200 and l["bytes_out"] > size]
        assert len(big) == 2, logs
        for l in big:
            assert size < l["bytes_out"] < size + 1024, l


both(_big_response)


@pf.timeout(120)
def _slow_reader(mode):
    """A client that stalls, then reads slowly: pilotfish stops reading the
    upstream (its RSS stays bounded) and the body still arrives whole."""
    size = 50 * MiB
    want = hashlib.sha256(pf.pattern(size)).hexdigest()
    o, p = start(mode)
    with o, p:
        before = spliced(p)
        idle = p.rss_kib()
        with h2.RssSampler(p) as rss, Conn(p.port, timeout=30) as c:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
            c.send_request("GET", "/?size=%d" % size)
            read_head(c)
            time.sleep(1.0)
            h = hashlib.sha256(c.buf)
            got = len(c.buf)
            c.buf = b""
            while got < size:
                d = c.sock.recv(min(65536, size - got))
                if not d:
                    break
                h.update(d)
                got += len(d)
                time.sleep(0.002)
            assert got == size, "body cut at %d of %d bytes" % (got, size)
            assert h.hexdigest() == want
        check_spliced(p, mode, before, 1)
        assert rss.samples >= 5
        if not h2.is_sanitized(p.bin):
            assert rss.max_kib - idle < RSS_BUDGET_KIB, (idle, rss.max_kib)


both(_slow_reader)


@pf.timeout(60)
def _client_abort(mode):
    """The client goes away mid-body: the upstream connection is closed (not
    pooled with a body half-read), the pipe too, and no descriptor is left."""
    size = 50 * MiB
    o, p = start(mode)
    with o, p:
        fds = p.open_fds()
        before = spliced(p)
        for _ in range(3):
            o.reset_stats()
            c = Conn(p.port, timeout=10)
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            c.send_request("GET", "/?size=%d" % size)
            read_head(c)
            assert read_sha(c, MiB)[0] == MiB
            c.close()
            pf.eventually(lambda: o.stats()["active"] == 0, msg="upstream connection closed")
        check_spliced(p, mode, before, 3)
        try:
            # a wide bound: a loaded machine under the sanitizers can be slow to close
            pf.eventually(lambda: p.open_fds() <= fds, timeout=20.0,
                          msg="descriptors back to %d" % fds)
        except AssertionError:
            d = "/proc/%d/fd" % p.proc.pid
            raise AssertionError("descriptors left: %r" % sorted(
                os.readlink(os.path.join(d, f)) for f in os.listdir(d)))
        r = p.get("/?size=300000")
        assert r.status == 200 and r.body == pf.pattern(300000)
        m = p.metrics()
        assert m['pilotfish_errors_total{error="upstream_reset"}'] == 0, m


both(_client_abort)


@pf.timeout(60)
def _upstream_reset(mode):
    """The upstream resets mid-body: the client connection is cut, never a
    complete framing around a truncated body."""
    size = 4 * MiB
    o, p = start(mode)
    with o, p:
        before = spliced(p)
        with Conn(p.port, timeout=10) as c:
            c.send_request("GET", "/?size=%d&partial=%d" % (size, size // 2))
            status, hdrs = read_head(c)
            assert status.startswith("HTTP/1.1 200 "), status
            assert hdrs["content-length"] == str(size)
            body = c.read_to_eof()
            assert len(body) < size, "a whole body around a reset: %d bytes" % len(body)
            assert body == pf.pattern(len(body)), "bytes out of order"
        check_spliced(p, mode, before, 1)
        m = p.metrics()
        assert m['pilotfish_errors_total{error="upstream_reset"}'] == 1, m
        assert p.get("/?body=after").body == b"after"


both(_upstream_reset)


@pf.timeout(60)
def _stalled_upstream(mode):
    """request_timeout bounds each gap between body reads: an upstream that
    stops mid-body cuts the client connection."""
    size = 2 * MiB
    o, p = start(mode)
    with o, p:
        with Conn(p.port, timeout=20) as c:
            c.send_request("GET", "/?size=%d&chunk=%d&chunk_delay=5000" % (size, 512 * 1024))
            status, hdrs = read_head(c)
            assert hdrs["content-length"] == str(size)
            t0 = time.monotonic()
            body = c.read_to_eof()
            assert len(body) < size, len(body)
            assert time.monotonic() - t0 < 4.5, "cut only after the origin's delay"
        m = p.metrics()
        assert m['pilotfish_errors_total{error="upstream_timeout"}'] == 1, m


both(_stalled_upstream)


def _gzip_needs_body(mode):
    """gzip reads a compressible body: that response is copied, not spliced;
    the next one without Accept-Encoding is spliced again."""
    size = MiB
    o, p = start(mode)
    with o, p:
        before = spliced(p)
        r = p.get("/?size=%d" % size, headers={"Accept-Encoding": "gzip"})
        assert r.status == 200 and r.header("Content-Encoding") == "gzip", r
        assert gzip.decompress(r.body) == pf.pattern(size)
        check_spliced(p, mode, before, 0)
        r = p.get("/?size=%d" % size)
        assert r.header("Content-Encoding") is None and r.body == pf.pattern(size)
        check_spliced(p, mode, before, 1)


both(_gzip_needs_body)


def _small_body(mode):
    """Bodies under 64 KiB stay on the copying path."""
    o, p = start(mode)
    with o, p:
        before = spliced(p)
        r = p.get("/?size=%d" % (64 * 1024 - 1))
        assert r.body == pf.pattern(64 * 1024 - 1)
        check_spliced(p, mode, before, 0)


both(_small_body)


def _http10_close_delimited(mode):
    """A close-delimited body to an HTTP/1.0 client goes with splice up to the
    upstream's close; to an HTTP/1.1 client it is re-chunked (copied)."""
    size = 5 * MiB
    o, p = start(mode)
    with o, p:
        before = spliced(p)
        with Conn(p.port, timeout=20) as c:
            c.send_request("GET", "/?close=1&size=%d" % size, version="1.0")
            status, hdrs = read_head(c)
            assert status.startswith("HTTP/1.0 200 "), status
            assert "content-length" not in hdrs and "transfer-encoding" not in hdrs, hdrs
            body = c.read_to_eof()
            assert len(body) == size and body == pf.pattern(size), len(body)
        check_spliced(p, mode, before, 1)
        r = p.get("/?close=1&size=%d" % size)
        assert r.framing == "chunked" and r.body == pf.pattern(size)
        check_spliced(p, mode, before, 1)


both(_http10_close_delimited)


# ---- the mode follows the configuration: reload ----

def admin_reload(p):
    r = p.admin("POST", "/reload")
    assert r.status == 200 and r.json()["result"] == "success", (r, r.body)


def test_splice_reload_turns_responses_on_and_off():
    """A reload switches response splice on, then off, for the requests that
    start afterwards, on a client connection kept alive across both
    (pilotfish_splice_responses_total)."""
    size = MiB
    o = Origin()
    p = Pilotfish(CONFIG + MODES["off"], origin=o)
    with o, p, Conn(p.port, timeout=20) as c:

        def fetch():
            """One response on c: whether it was spliced."""
            n = spliced(p)[0]
            r = c.request("GET", "/?size=%d" % size)
            assert r.status == 200 and r.body == pf.pattern(size), r.status
            return spliced(p)[0] == n + 1

        for mode, want in (("off", False), ("on", True), ("off", False)):
            if mode == "on" or spliced(p)[0] > 0:
                p.write_config(CONFIG + MODES[mode])
                admin_reload(p)
            # the worker takes the new snapshot from its mailbox: wait for the first request under it
            pf.eventually(lambda: fetch() == want, timeout=10, msg="splice %s after reload" % mode)
            for _ in range(3):
                assert fetch() == want, "splice not %s after reload" % mode


def test_splice_reload_keeps_what_a_request_started_with():
    """A request in flight across a reload keeps the splice setting it
    started with: held at the upstream while splice is turned off (then on),
    its response is still spliced (then copied) while new requests already
    follow the new setting."""
    body = pf.pattern(MiB)
    release = {"/hold-on": threading.Event(), "/hold-off": threading.Event()}

    def handler(conn_idx, req_idx, head, req_body):
        target = head.split(b" ")[1].decode()
        if target in release:
            release[target].wait(30)
        return h2.http_response(body)

    with h2.FakeOrigin(handler) as f:
        p = Pilotfish(CONFIG + MODES["on"], vars={"origin_port": f.port})
        with p:
            for was, now in (("on", "off"), ("off", "on")):
                held = Conn(p.port, timeout=20)
                held.send_request("GET", "/hold-" + was)
                pf.eventually(lambda: any(b"/hold-" + was.encode() in r[2] for r in f.requests),
                              msg="the held request at the upstream")
                p.write_config(CONFIG + MODES[now])
                admin_reload(p)

                def probe():
                    n = spliced(p)[0]
                    assert p.get("/probe").body == body
                    return (spliced(p)[0] > n) == (now == "on")

                pf.eventually(probe, timeout=10, msg="new requests under splice %s" % now)
                n = spliced(p)[0]
                release["/hold-" + was].set()
                r = held.read_response("GET")
                held.close()
                assert r.status == 200 and r.body == body, r.status
                assert spliced(p)[0] == n + (1 if was == "on" else 0), \
                    "the held response did not keep splice %s" % was
