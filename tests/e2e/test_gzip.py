"""The gzip filter end to end (docs/filters/gzip.md): byte-exact round trips through streaming deflate for
every body size and way the origin delivers it, the framing the client gets,
each rule that keeps a response uncompressed, the header rewrites (Vary,
ETag, Content-Length, Accept-Ranges), the settings, and the byte counters on
/metrics."""

import random
import socket
import struct
import threading
import time
import zlib
from urllib.parse import quote

import pf
from pf import Conn, Origin, Pilotfish

MiB = 1 << 20

CONFIG = """\
listen: "127.0.0.1:{{port}}"
workers: 1
admin: { listen: "127.0.0.1:{{admin_port}}" }
access_log: { path: off }
upstreams:
  app:
    endpoints: ["127.0.0.1:{{origin_port}}"]
routes:
  - name: gz
    match: { prefix: "/gz/" }
    upstream: app
    filters: [gzip]
  - name: plain
    match: { prefix: "/plain/" }
    upstream: app
    filters: []
  - name: default
    match: { prefix: "/" }
    upstream: app
{{filters}}"""

AE = {"Accept-Encoding": "gzip"}


def start(filters="", origin=None):
    o = origin or Origin()
    p = Pilotfish(CONFIG, origin=o, vars={"filters": filters})
    return o, p


def gunzip(body, what=""):
    """Decompress one complete gzip member; fail on a truncated stream or trailing bytes."""
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(body) + d.flush()
    except zlib.error as e:
        raise AssertionError("not a valid gzip stream%s (%d bytes, starts %r): %s"
                             % (what, len(body), body[:16], e))
    assert d.eof, "gzip stream truncated%s (%d bytes, ends %r)" % (what, len(body), body[-16:])
    assert d.unused_data == b"", "%d bytes after the gzip stream%s" % (len(d.unused_data), what)
    return out


def is_gzip(r):
    ce = [v.strip().lower() for v in r.header_all("Content-Encoding")]
    return ce == ["gzip"]


def assert_compressed(r, want, what=""):
    where = " (%s)" % what if what else ""
    assert r.status == 200 or r.status >= 300, r
    assert is_gzip(r), "expected Content-Encoding: gzip%s, got %r" % (where, r.headers)
    assert r.header("Content-Length") is None, \
        "Content-Length kept on a gzip response%s: %r" % (where, r.headers)
    got = gunzip(r.body, where)
    if got != want:
        i = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]),
                 min(len(got), len(want)))
        raise AssertionError("decompressed body differs%s: %d bytes, expected %d; first "
                             "difference at byte %d" % (where, len(got), len(want), i))
    return got


def assert_plain(r, want, what="", cl=True):
    """Not compressed: no Content-Encoding added, body exactly as the origin sent it."""
    where = " (%s)" % what if what else ""
    assert not is_gzip(r), "compressed although it must not be%s: %r" % (where, r.headers)
    assert r.body == want, "body changed%s: %d bytes, expected %d" % (where, len(r.body), len(want))
    if cl:
        assert r.header("Content-Length") == str(len(want)), \
            "Content-Length not kept%s: %r" % (where, r.headers)


def vary_tokens(r):
    return [t.strip().lower() for v in r.header_all("Vary") for t in v.split(",") if t.strip()]


# ---- round trips ----

def delivery_variants(size):
    """(query suffix, description) of each way the origin can deliver size bytes."""
    out = []
    for framing, q in (("Content-Length", ""), ("chunked", "&chunked=1"), ("close", "&close=1")):
        pieces = [("1-byte pieces", "&chunk=1")] if size <= 1000 else []
        pieces += [("777-byte pieces", "&chunk=777"), ("large pieces", "")]
        for desc, cq in pieces:
            out.append((q + cq, "%d bytes, %s, %s" % (size, framing, desc)))
    return out


@pf.timeout(240)
def test_gzip_round_trip_every_size_and_delivery():
    # min_length 0: every response below is compressed, whatever its length
    o, p = start("filters: { gzip: { min_length: 0 } }")
    with o, p:
        for size in (0, 1, 999, 1000, 65536, 10 * MiB):
            want = pf.pattern(size)
            with Conn(p.port, timeout=60) as c:
                for q, what in delivery_variants(size):
                    r = c.request("GET", "/gz/?size=%d%s" % (size, q), headers=AE)
                    assert r.status == 200, "%s: %r" % (what, r)
                    assert_compressed(r, want, what)
                    assert r.framing == "chunked", \
                        "%s: HTTP/1.1 client expected a chunked gzip body, got %s" % (
                            what, r.framing)
                    if size >= 65536:
                        assert len(r.body) < size // 10, \
                            "%s: %d gzip bytes for a periodic body" % (what, len(r.body))


@pf.timeout(180)
def test_gzip_round_trip_10mib_varied_text_streamed():
    """10 MiB of text with a real vocabulary, streamed back by /echo?raw=1 in the
    pieces it arrives in: deflate has actual work, output spans many flushes."""
    rnd = random.Random(7)
    words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 11)))
             for _ in range(3000)]
    parts, n = [], 0
    while n < 10 * MiB:
        w = rnd.choice(words) + (b"\n" if rnd.random() < 0.08 else b" ")
        parts.append(w)
        n += len(w)
    data = b"".join(parts)[:10 * MiB]
    # a few incompressible stretches too
    data = data[:3 * MiB] + rnd.randbytes(300000) + data[3 * MiB + 300000:]
    o, p = start()
    with o, p:
        with Conn(p.port, timeout=60) as c:
            head = ("POST /gz/echo?raw=1&type=text/plain HTTP/1.1\r\nHost: x\r\n"
                    "Accept-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(data)).encode()
            errors = []

            def writer():
                try:
                    c.sock.sendall(head)
                    for i in range(0, len(data), 50000):
                        c.sock.sendall(data[i:i + 50000])
                except OSError as e:
                    errors.append(e)

            t = threading.Thread(target=writer, daemon=True)
            t.start()
            r = c.read_response("POST")
            t.join(30)
            assert not errors, errors
            assert r.status == 200, r
            assert_compressed(r, data, "10 MiB varied text via /echo?raw=1")
            assert r.framing == "chunked", r.framing
            assert len(r.body) < len(data), (len(r.body), len(data))
            # the connection is still in sync
            r2 = c.request("GET", "/gz/?size=2000", headers=AE)
            assert_compressed(r2, pf.pattern(2000), "next request on the connection")


def test_gzip_http11_chunked_keepalive_http10_close_delimited():
    o, p = start()
    with o, p:
        want = pf.pattern(5000)
        with Conn(p.port) as c:
            for i in range(3):
                r = c.request("GET", "/gz/?size=5000", headers=AE)
                assert_compressed(r, want, "HTTP/1.1 request %d" % i)
                assert r.framing == "chunked", r
                assert r.header("Transfer-Encoding", "").lower() == "chunked", r.headers
        for q in ("", "&chunked=1", "&close=1"):
            with Conn(p.port) as c:
                r = c.request("GET", "/gz/?size=5000" + q, headers=AE, version="1.0")
                assert r.framing == "close", \
                    "HTTP/1.0 client, origin %r: expected a close-delimited gzip body, got %s: %r" \
                    % (q or "Content-Length", r.framing, r.headers)
                assert r.header("Transfer-Encoding") is None, r.headers
                assert_compressed(r, want, "HTTP/1.0 client, origin %r" % q)
                assert c.eof or c.is_closed(2.0), \
                    "connection left open after a close-delimited body"
        # HTTP/1.0 client asking for keep-alive: a gzip body of unknown length
        # can only be ended by closing
        with Conn(p.port) as c:
            r = c.request("GET", "/gz/?size=5000", headers={"Accept-Encoding": "gzip",
                                                             "Connection": "keep-alive"},
                          version="1.0")
            assert r.framing == "close", (r.framing, r.headers)
            assert_compressed(r, want, "HTTP/1.0 keep-alive client")


def test_gzip_default_chain_compresses():
    """The default chain [metrics, gzip] (route without filters:) compresses."""
    o = Origin()
    p = Pilotfish(origin=o)  # pf.BASIC_CONFIG: no routes, no filters
    with o, p:
        r = p.get("/?size=4000", headers=AE)
        assert_compressed(r, pf.pattern(4000), "default chain")
        r = p.get("/?size=4000")
        assert_plain(r, pf.pattern(4000), "default chain, no Accept-Encoding")


def test_gzip_route_without_gzip_does_not_compress():
    o, p = start()
    with o, p:
        assert_plain(p.get("/plain/?size=4000", headers=AE), pf.pattern(4000), "filters: []")


def test_gzip_pipelined_requests_stay_in_order():
    o, p = start()
    with o, p, Conn(p.port) as c:
        sizes = [3000, 10, 70000, 1200, 0, 5000]
        reqs = b"".join(
            pf.build_request("GET", "/gz/?size=%d&chunk=777%s" % (n, "&chunked=1" if i % 2 else ""),
                             headers=AE) for i, n in enumerate(sizes))
        c.send(reqs)
        for i, n in enumerate(sizes):
            r = c.read_response()
            if i % 2 or n >= 1000:
                assert_compressed(r, pf.pattern(n), "pipelined #%d (%d bytes)" % (i, n))
            else:
                assert_plain(r, pf.pattern(n), "pipelined #%d (%d bytes)" % (i, n))


def test_gzip_streams_head_before_the_body_ends():
    """Streaming: the head (and, for data deflate cannot hold back, body bytes)
    reach the client while the origin is still sending."""
    o, p = start()
    with o, p, Conn(p.port) as c:
        t0 = time.monotonic()
        c.send_request("GET", "/gz/?size=300000&chunked=1&chunk=50000&chunk_delay=400",
                       headers=AE)
        head = c.read_until(b"\r\n\r\n")
        t_head = time.monotonic() - t0
        assert t_head < 1.0, "response head came after %.2fs: held until the body ended " \
            "(origin takes 2s)" % t_head
        c.buf = head + c.buf  # parse the whole response now
        r = c.read_response()
        assert time.monotonic() - t0 > 1.5, "origin delays not applied?"
        assert_compressed(r, pf.pattern(300000), "slow chunked origin")
    # incompressible data: gzip output must flow while the upload still goes on
    o, p = start()
    with o, p, Conn(p.port, timeout=20) as c:
        data = random.Random(5).randbytes(4 * MiB)
        c.send(b"POST /gz/echo?raw=1&type=text/plain HTTP/1.1\r\nHost: x\r\n"
               b"Accept-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(data))
        c.send(data[:2 * MiB])
        head = c.read_until(b"\r\n\r\n")
        assert b"content-encoding: gzip" in head.lower(), head
        deadline = time.monotonic() + 5
        while len(c.buf) < 1 * MiB and time.monotonic() < deadline:
            c._fill()
        assert len(c.buf) >= 1 * MiB, "only %d gzip bytes after 2 MiB of a 4 MiB body were " \
            "sent: the compressed body is not streamed" % len(c.buf)
        c.send(data[2 * MiB:])
        c.buf = head + c.buf
        r = c.read_response("POST")
        assert_compressed(r, data, "4 MiB incompressible via /echo?raw=1")


@pf.timeout(120)
def test_gzip_memory_bounded_with_slow_reader():
    """An 80 MiB incompressible body gzipped for a reader that stalls: backpressure
    holds, pilotfish does not buffer the (compressed) body."""
    import helpers2 as h2
    size = 80 * MiB
    data = random.Random(9).randbytes(size)
    o, p = start()
    with o, p:
        # warm up
        assert_compressed(p.get("/gz/?size=100000", headers=AE), pf.pattern(100000))
        time.sleep(0.2)
        idle = p.rss_kib()
        with h2.RssSampler(p) as rss, Conn(p.port, timeout=60) as c:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
            errors = []
            sent = [0]

            def writer():
                try:
                    c.sock.sendall(b"POST /gz/echo?raw=1&type=text/plain HTTP/1.1\r\nHost: x\r\n"
                                   b"Accept-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % size)
                    for i in range(0, size, 65536):
                        c.sock.sendall(data[i:i + 65536])
                        sent[0] = i + 65536
                except OSError as e:
                    errors.append(e)

            t = threading.Thread(target=writer, daemon=True)
            t.start()
            time.sleep(1.5)  # stall: nothing read yet
            # loopback socket buffers on the three hops can hold ~35 MiB by themselves
            assert sent[0] < size * 3 // 4, "the whole upload (%d bytes) was accepted while the " \
                "client read nothing: no backpressure through gzip" % sent[0]
            r = c.read_response("POST")
            t.join(30)
            assert not errors, errors
        assert_compressed(r, data, "80 MiB incompressible, slow reader")
        grew = rss.max_kib - idle
        assert grew < 24 * 1024, "RSS grew %d KiB over idle %d KiB while gzipping 80 MiB " \
            "to a stalled reader" % (grew, idle)


def test_gzip_upstream_cut_mid_body_is_a_cut_for_the_client():
    """The origin dies mid-body: the client must not get a complete-looking
    response (final chunk and a gzip trailer over a truncated body)."""
    o, p = start()
    with o, p:
        for q in ("size=100000&partial=50000", "size=300000&chunked=1&chunk=1000&partial=50000",
                  "size=100000&partial=0"):
            with Conn(p.port, timeout=10) as c:
                c.send_request("GET", "/gz/?" + q, headers=AE)
                try:
                    r = c.read_response()
                except (pf.ConnectionClosed, ConnectionResetError):
                    r = None
                if r is not None:
                    assert r.status == 502 or not is_gzip(r), \
                        "origin cut after 50000 bytes (%s), yet the client got a complete " \
                        "response: %r %r" % (q, r, r.headers)
                    if r.status != 502:
                        d = zlib.decompressobj(wbits=31)
                        d.decompress(r.body)
                        assert not d.eof, "truncated body (%s) ends with a valid gzip trailer" % q
        assert_compressed(p.get("/gz/?size=5000", headers=AE), pf.pattern(5000), "afterwards")


def upstream_active(p):
    return sum(v for k, v in p.metrics().items()
               if k.startswith("pilotfish_upstream_connections_active"))


@pf.timeout(90)
def test_gzip_client_abort_mid_body():
    """Clients that go away in the middle of a gzip body (FIN or RST): the
    deflate state goes with the transaction; nothing leaks or breaks (see also
    the sanitizer run). The first round sets the high-water mark; further
    rounds must not grow memory."""
    o, p = start()
    with o, p:
        assert_compressed(p.get("/gz/?size=100000", headers=AE), pf.pattern(100000))

        def round_of_aborts():
            for i in range(40):
                c = Conn(p.port, timeout=10)
                c.send_request("GET", "/gz/?size=%d&chunk=65536&chunk_delay=5%s"
                               % (4 * MiB, "&chunked=1" if i % 2 else ""), headers=AE)
                c.read_until(b"\r\n\r\n")
                if i % 4 == 0:
                    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                c.close()
            # transactions whose client left end with the upstream response at the latest
            pf.eventually(lambda: upstream_active(p) == 0, timeout=20,
                          msg="every aborted transaction finished")
            pf.eventually(lambda: p.metrics().get("pilotfish_http_connections_active", 0) == 0,
                          timeout=5, msg="client connections closed after the aborts")
            time.sleep(0.3)
            return p.rss_kib()

        rss1 = round_of_aborts()
        rss = [round_of_aborts() for _ in range(3)]
        grew = max(rss) - rss1
        assert grew < 4096, "RSS kept growing over rounds of 40 aborted gzip responses: " \
            "%d KiB after the first round, then %r" % (rss1, rss)
        for _ in range(3):
            assert_compressed(p.get("/gz/?size=70000", headers=AE), pf.pattern(70000),
                              "after aborts")


# ---- when it compresses ----

def test_gzip_accept_encoding_rules():
    o, p = start()
    with o, p:
        want = pf.pattern(3000)
        cases = [
            # (Accept-Encoding header values, compressed?)
            ([], False),
            ([""], False),
            (["gzip"], True),
            (["GZip"], True),
            (["x-gzip"], True),
            (["gzip;q=0"], False),
            (["gzip ; q=0"], False),
            (["gzip;Q=0"], False),
            (["gzip; q=0.000"], False),
            (["gzip;q=0.001"], True),
            (["deflate, gzip;q=0.5, br"], True),
            (["*"], True),
            (["*;q=0.5"], True),
            (["*;q=0"], False),
            (["*, gzip;q=0"], False),
            (["gzip;q=0, *"], False),
            (["identity"], False),
            (["identity, deflate, br"], False),
            (["br", "gzip"], True),       # every Accept-Encoding header counts
            (["gzip;q=abc"], False),      # unreadable weight counts as 0
            (["gzip;q=1.5"], False),
        ]
        with Conn(p.port) as c:
            for values, yes in cases:
                hdrs = [("Accept-Encoding", v) for v in values]
                r = c.request("GET", "/gz/?size=3000", headers=hdrs)
                what = "Accept-Encoding %r" % values
                if yes:
                    assert_compressed(r, want, what)
                else:
                    assert_plain(r, want, what)
                # compressible response: Vary either way (gzip_vary)
                assert "accept-encoding" in vary_tokens(r), "%s: no Vary: %r" % (what, r.headers)


def test_gzip_content_type_rules():
    o, p = start()
    with o, p:
        want = pf.pattern(3000)
        with Conn(p.port) as c:
            for t in ("text/html", "text/plain", "text/css", "text/xml", "application/json",
                      "application/javascript", "application/xml", "image/svg+xml",
                      "text/html; charset=utf-8", "TEXT/HTML", "application/json;charset=UTF-8",
                      " text/css ; q=1"):
                r = c.request("GET", "/gz/?size=3000&type=" + quote(t, safe=""), headers=AE)
                assert r.header("Content-Type", "").strip().lower().startswith(
                    t.strip().lower().split(";")[0].strip()), (t, r.headers)
                assert_compressed(r, want, "type %r" % t)
            for t in ("image/png", "application/octet-stream", "text/csv", "text/htmlx",
                      "application/json-seq", ""):
                r = c.request("GET", "/gz/?size=3000&type=" + t, headers=AE)
                assert_plain(r, want, "type %r" % t)
                assert "accept-encoding" not in vary_tokens(r), \
                    "never-compressed type %r got Vary: %r" % (t, r.headers)


def test_gzip_min_length_known_and_unknown():
    o, p = start()  # default min_length 1000
    with o, p, Conn(p.port) as c:
        for size in (0, 1, 999):
            want = pf.pattern(size)
            r = c.request("GET", "/gz/?size=%d" % size, headers=AE)
            assert_plain(r, want, "Content-Length %d below min_length 1000" % size)
            assert "accept-encoding" not in vary_tokens(r), r.headers
            for q in ("&chunked=1", "&close=1"):
                r = c.request("GET", "/gz/?size=%d%s" % (size, q), headers=AE)
                assert_compressed(r, want, "%d bytes of unknown length (%s)" % (size, q))
        for size in (1000, 1001):
            r = c.request("GET", "/gz/?size=%d" % size, headers=AE)
            assert_compressed(r, pf.pattern(size), "Content-Length %d >= min_length" % size)


def test_gzip_existing_content_encoding_untouched():
    o, p = start()
    with o, p, Conn(p.port) as c:
        want = pf.pattern(3000)
        for ce in ("br", "gzip", "deflate", "x-custom"):
            r = c.request("GET", "/gz/?size=3000&header=Content-Encoding:" + ce, headers=AE)
            assert r.header_all("Content-Encoding") == [ce], (ce, r.headers)
            assert r.body == want and r.header("Content-Length") == "3000", (ce, r)
            assert "accept-encoding" not in vary_tokens(r), (ce, r.headers)
        # identity is no coding at all: compressed
        r = c.request("GET", "/gz/?size=3000&header=Content-Encoding:identity", headers=AE)
        assert_compressed(r, want, "Content-Encoding: identity")


def test_gzip_no_transform_untouched():
    o, p = start()
    with o, p, Conn(p.port) as c:
        want = pf.pattern(3000)
        for cc in ("no-transform", "public, no-transform", "max-age=60,No-Transform"):
            r = c.request("GET", "/gz/?size=3000&header=Cache-Control:" + cc.replace(" ", "%20"),
                          headers=AE)
            assert_plain(r, want, "Cache-Control: %s" % cc)
            assert "accept-encoding" not in vary_tokens(r), (cc, r.headers)
        r = c.request("GET", "/gz/?size=3000&header=Cache-Control:max-age%3D60", headers=AE)
        assert_compressed(r, want, "Cache-Control: max-age=60")


def test_gzip_partial_content_untouched():
    o, p = start()
    with o, p, Conn(p.port) as c:
        r = c.request("GET", "/gz/?status=206&size=3000&header=Content-Range:bytes%200-2999/9000",
                      headers=AE)
        assert r.status == 206, r
        assert_plain(r, pf.pattern(3000), "206")
        assert r.header("Content-Range") == "bytes 0-2999/9000", r.headers


def test_gzip_head_not_compressed():
    o, p = start()
    with o, p, Conn(p.port) as c:
        r = c.request("HEAD", "/gz/?size=3000", headers=AE)
        assert r.status == 200 and r.body == b"", r
        assert not is_gzip(r), "HEAD answered with Content-Encoding: gzip: %r" % r.headers
        assert r.header("Content-Length") == "3000", \
            "HEAD must keep the identity Content-Length: %r" % r.headers
        assert "accept-encoding" in vary_tokens(r), "HEAD without Vary: %r" % r.headers
        # the connection is in sync after the bodiless answer
        r = c.request("GET", "/gz/?size=3000", headers=AE)
        assert_compressed(r, pf.pattern(3000), "GET after HEAD")


def test_gzip_bodiless_statuses_untouched():
    o, p = start()
    with o, p, Conn(p.port) as c:
        for st in (204, 304):
            r = c.request("GET", "/gz/?status=%d&header=ETag:%%22v1%%22" % st, headers=AE)
            assert r.status == st, r
            assert r.body == b"", r
            assert not is_gzip(r), "%d got Content-Encoding: %r" % (st, r.headers)
            assert r.header("ETag") == '"v1"', "%d: ETag changed: %r" % (st, r.headers)
            assert "accept-encoding" not in vary_tokens(r), (st, r.headers)
        # errors with a body are compressed like any response
        for st in (404, 500):
            r = c.request("GET", "/gz/?status=%d&size=3000" % st, headers=AE)
            assert r.status == st, r
            assert_compressed(r, pf.pattern(3000), "status %d" % st)
        # still in sync
        r = c.request("GET", "/gz/?size=3000", headers=AE)
        assert_compressed(r, pf.pattern(3000), "after 204/304")


# ---- header rewrites ----

def test_gzip_vary_added_and_merged():
    o, p = start()
    with o, p, Conn(p.port) as c:
        want = pf.pattern(3000)
        r = c.request("GET", "/gz/?size=3000", headers=AE)
        assert_compressed(r, want)
        assert r.header_all("Vary") == ["Accept-Encoding"], r.headers

        r = c.request("GET", "/gz/?size=3000&header=Vary:Cookie", headers=AE)
        assert_compressed(r, want, "Vary: Cookie")
        assert len(r.header_all("Vary")) == 1, "Vary not merged: %r" % r.headers
        assert vary_tokens(r) == ["cookie", "accept-encoding"], r.headers

        r = c.request("GET", "/gz/?size=3000&header=Vary:Cookie&header=Vary:User-Agent",
                      headers=AE)
        assert_compressed(r, want, "two Vary headers")
        assert len(r.header_all("Vary")) == 1, "Vary headers not merged: %r" % r.headers
        assert vary_tokens(r) == ["cookie", "user-agent", "accept-encoding"], r.headers

        for v in ("accept-encoding", "Cookie,%20Accept-Encoding", "*"):
            r = c.request("GET", "/gz/?size=3000&header=Vary:" + v, headers=AE)
            assert_compressed(r, want, "Vary: %s" % v)
            assert len(vary_tokens(r)) == len(v.split(",")), \
                "Vary %r changed to %r" % (v, r.header_all("Vary"))

        # not accepted but compressible: Vary still added, merged the same way
        r = c.request("GET", "/gz/?size=3000&header=Vary:Cookie")
        assert_plain(r, want, "no Accept-Encoding, Vary: Cookie")
        assert vary_tokens(r) == ["cookie", "accept-encoding"], r.headers


def test_gzip_etag_weakened():
    o, p = start()
    with o, p, Conn(p.port) as c:
        want = pf.pattern(3000)
        r = c.request("GET", "/gz/?size=3000&header=ETag:%22abc%22", headers=AE)
        assert_compressed(r, want, "strong ETag")
        assert r.header_all("ETag") == ['W/"abc"'], r.headers
        r = c.request("GET", "/gz/?size=3000&header=ETag:W/%22abc%22", headers=AE)
        assert_compressed(r, want, "weak ETag")
        assert r.header_all("ETag") == ['W/"abc"'], r.headers
        r = c.request("GET", "/gz/?size=3000&header=ETag:abc", headers=AE)
        assert_compressed(r, want, "malformed ETag")
        assert r.header("ETag") is None, "malformed ETag kept on a gzip response: %r" % r.headers
        # not compressed: the ETag stays strong
        r = c.request("GET", "/gz/?size=3000&header=ETag:%22abc%22")
        assert_plain(r, want, "strong ETag, no Accept-Encoding")
        assert r.header_all("ETag") == ['"abc"'], r.headers


def test_gzip_drops_content_length_and_accept_ranges():
    o, p = start()
    with o, p, Conn(p.port) as c:
        r = c.request("GET", "/gz/?size=3000&header=Accept-Ranges:bytes", headers=AE)
        assert_compressed(r, pf.pattern(3000))
        assert r.header("Content-Length") is None and r.header("Accept-Ranges") is None, r.headers
        r = c.request("GET", "/gz/?size=3000&header=Accept-Ranges:bytes")
        assert_plain(r, pf.pattern(3000))
        assert r.header("Accept-Ranges") == "bytes", r.headers


# ---- settings ----

def gzip_xfl(body):
    """The gzip header's XFL byte: zlib writes 4 for level 1, 2 for level 9, 0 otherwise."""
    assert body[:3] == b"\x1f\x8b\x08", body[:10]
    return body[8]


def sample_text(n):
    rnd = random.Random(3)
    words = [b"lorem", b"ipsum", b"dolor", b"sit", b"amet", b"consectetur", b"adipiscing",
             b"elit", b"sed", b"do", b"eiusmod", b"tempor", b"incididunt", b"labore"]
    out = bytearray()
    while len(out) < n:
        out += rnd.choice(words) + b" " + str(rnd.randint(0, 99999)).encode() + b" "
    return bytes(out[:n])


def echo_gz(c, data, ctype="text/plain"):
    """POST data to /gz/echo?raw=1 (streamed back with the given type), gzip accepted."""
    r = c.request("POST", "/gz/echo?raw=1&type=" + ctype, headers=AE, body=data)
    assert r.status == 200, r
    return r


def test_gzip_settings_level_min_length_types():
    text = sample_text(200000)
    o, p = start("filters: { gzip: { level: 1, min_length: 10, types: [text/plain] } }")
    with o, p, Conn(p.port) as c:
        r = echo_gz(c, text)
        assert_compressed(r, text, "level 1")
        assert gzip_xfl(r.body) == 4, "level 1 expected (XFL 4), XFL is %d" % gzip_xfl(r.body)
        size_l1 = len(r.body)
        # min_length 10
        assert_plain(c.request("GET", "/gz/?size=9", headers=AE), pf.pattern(9), "CL 9 < 10")
        assert_compressed(c.request("GET", "/gz/?size=10", headers=AE), pf.pattern(10), "CL 10")
        # types: the list replaces the defaults
        assert_compressed(c.request("GET", "/gz/?size=3000&type=text/plain", headers=AE),
                          pf.pattern(3000), "text/plain listed")
        for t in ("text/html", "application/json"):
            assert_plain(c.request("GET", "/gz/?size=3000&type=" + t, headers=AE),
                         pf.pattern(3000), "%s no longer listed" % t)

    o, p = start("filters: { gzip: { level: 9 } }")
    with o, p, Conn(p.port) as c:
        r = echo_gz(c, text)
        assert_compressed(r, text, "level 9")
        assert gzip_xfl(r.body) == 2, "level 9 expected (XFL 2), XFL is %d" % gzip_xfl(r.body)
        assert len(r.body) < size_l1, "level 9 (%d bytes) not smaller than level 1 (%d)" % (
            len(r.body), size_l1)

    o, p = start()  # default level 6
    with o, p, Conn(p.port) as c:
        r = echo_gz(c, text)
        assert_compressed(r, text, "default level")
        assert gzip_xfl(r.body) == 0, "level 6 expected (XFL 0), XFL is %d" % gzip_xfl(r.body)
        # each level agrees with what zlib makes of the same text at that level
        ref6 = len(zlib.compress(text, 6))
        assert abs(len(r.body) - ref6) < ref6 * 0.05 + 64, (len(r.body), ref6)


def test_gzip_types_wildcards_and_empty_list():
    o, p = start('filters: { gzip: { types: ["text/*", application/json] } }')
    with o, p, Conn(p.port) as c:
        for t in ("text/csv", "text/html", "application/json"):
            assert_compressed(c.request("GET", "/gz/?size=3000&type=" + t, headers=AE),
                              pf.pattern(3000), t)
        assert_plain(c.request("GET", "/gz/?size=3000&type=image/svg%2Bxml", headers=AE),
                     pf.pattern(3000), "image/svg+xml not listed")
    o, p = start("filters: { gzip: { types: [] } }")
    with o, p, Conn(p.port) as c:
        assert_plain(c.request("GET", "/gz/?size=3000", headers=AE), pf.pattern(3000),
                     "types: [] turns compression off")


def test_gzip_bad_settings_rejected():
    o, p = start()
    with o, p:
        for bad in ("level: 0", "level: 10", "types: [html]",
                    'types: ["text/html; charset=utf-8"]', "window: 8", "mem_level: 10",
                    "min_length: lots", "colour: blue"):
            rc, out = p.check_config(CONFIG.replace("{{filters}}", "filters: { gzip: { %s } }"
                                                    % bad))
            assert rc == 1, "gzip %s accepted: %s" % (bad, out)
            assert "gzip" in out or "colour" in out, (bad, out)


# ---- metrics ----

def gzip_counters(p):
    m = p.metrics()
    return m.get("pilotfish_gzip_bytes_in_total", 0.0), m.get("pilotfish_gzip_bytes_out_total", 0.0)


def test_gzip_metrics_count_bytes_in_and_out():
    o, p = start()
    with o, p:
        in0, out0 = gzip_counters(p)
        sum_in = sum_out = 0
        with Conn(p.port) as c:
            for size, q in ((3000, ""), (70000, "&chunk=777"), (5000, "&chunked=1"),
                            (1 * MiB, "&close=1"), (0, "&chunked=1")):
                r = c.request("GET", "/gz/?size=%d%s" % (size, q), headers=AE)
                assert_compressed(r, pf.pattern(size), "size %d" % size)
                sum_in += size
                sum_out += len(r.body)
            # not compressed: counts nothing
            c.request("GET", "/gz/?size=3000")
            c.request("GET", "/gz/?size=3000&type=image/png", headers=AE)
            c.request("GET", "/plain/?size=3000", headers=AE)
        in1, out1 = pf.eventually(lambda: (lambda v: v if v[0] - in0 >= sum_in else None)(
            gzip_counters(p)), timeout=3, msg="gzip counters updated")
        assert in1 - in0 == sum_in, "bytes_in grew by %d, expected %d" % (in1 - in0, sum_in)
        assert out1 - out0 == sum_out, "bytes_out grew by %d, expected %d (the gzip bytes sent)" \
            % (out1 - out0, sum_out)
        time.sleep(0.1)
        assert gzip_counters(p) == (in1, out1)
