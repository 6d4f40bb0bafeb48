"""End-to-end basics of the proxy (docs/operations.md):
framing, keep-alive, pipelining, forwarded headers, tracing, hop-by-hop, 100-continue."""

import os
import re
import time

import pf
from pf import Conn, Origin, Pilotfish

TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
HOP_BY_HOP = ["keep-alive", "te", "upgrade", "proxy-connection", "trailer", "transfer-encoding"]


def start():
    o = Origin()
    return o, Pilotfish(origin=o)


def echo_through(p, method="GET", target="/echo", headers=None, body=None):
    with p.conn() as c:
        r = c.request(method, target, headers=headers, body=body)
    assert r.status == 200, r
    return r.json()


def one(echo, name):
    values = pf.echo_headers(echo, name)
    assert len(values) == 1, "%s: %r in %r" % (name, values, echo["headers"])
    return values[0]


def connection_tokens(headers_values):
    return {t.strip().lower() for v in headers_values for t in v.split(",") if t.strip()}


def test_proxy_get_returns_origin_body():
    o, p = start()
    with o, p:
        r = p.get("/")
        assert r.status == 200, r
        assert r.body == b"hello from pf-origin\n"
        assert r.header("X-Origin-Seq") is not None
        assert o.stats()["requests"] == 1, "the request did not reach the origin"


def test_proxy_keeps_content_length():
    o, p = start()
    with o, p, p.conn() as c:
        r = c.request("GET", "/?size=1000")
        assert r.framing == "length" and r.header("Content-Length") == "1000", r
        assert r.body == pf.pattern(1000)
        r = c.request("GET", "/?size=0")
        assert r.status == 200 and r.body == b""


def test_proxy_keepalive_reuses_upstream_connections():
    o, p = start()
    with o, p:
        p.get("/")  # warm up
        o.reset_stats()
        with p.conn() as c:
            for i in range(100):
                r = c.request("GET", "/?size=%d" % (i % 7))
                assert r.status == 200 and r.body == pf.pattern(i % 7), (i, r)
        s = o.stats()
        assert s["requests"] == 100, s
        assert s["connections"] <= 4, "100 keep-alive requests used %d upstream connections" % \
            s["connections"]


def test_proxy_split_request_line_arrives_intact():
    o, p = start()
    with o, p, p.conn() as c:
        c.send_pieces(["GE", "T /a", "bc?echo=1 HTTP/1.1\r\nHo", "st: x\r\n", "\r\n"])
        r = c.read_response()
        assert r.status == 200, r
        e = r.json()
        assert e["method"] == "GET" and e["path"] == "/abc" and e["query"] == "echo=1", e
        c.send_pieces([b"GET /def", b"gh?echo=1 HTTP/1.1\r\nHost: x\r\nX-Sp", b"lit: a",
                       b"b\r\n\r\n"], pause=0.1)
        e = c.read_response().json()
        assert e["path"] == "/defgh" and one(e, "X-Split") == "ab", e


def test_proxy_chunked_origin_to_http11_client_is_chunked():
    o, p = start()
    with o, p, p.conn() as c:
        r = c.request("GET", "/?chunked=1&size=100000&chunk=7000")
        assert r.framing == "chunked", r
        assert r.header("Content-Length") is None
        assert r.body == pf.pattern(100000)
        assert c.request("GET", "/").body == b"hello from pf-origin\n"  # still usable


def test_proxy_close_delimited_origin_to_http11_client_is_chunked():
    o, p = start()
    with o, p, p.conn() as c:
        r = c.request("GET", "/?close=1&size=50000")
        assert r.framing == "chunked", r
        assert r.body == pf.pattern(50000)
        r = c.request("GET", "/?close=1&size=10&chunk=3&chunk_delay=20")
        assert r.framing == "chunked" and r.body == pf.pattern(10), r
        assert c.request("GET", "/").status == 200  # the client connection survived


def test_proxy_http10_client_gets_close_delimited_body():
    o, p = start()
    with o, p:
        for target in ("/?chunked=1&size=30000&chunk=1000", "/?close=1&size=30000"):
            with p.conn() as c:
                r = c.request("GET", target, version="1.0")
                assert r.status == 200, r
                assert r.header("Transfer-Encoding") is None, "chunked sent to HTTP/1.0: %r" % r
                assert r.framing in ("close", "length"), r
                assert r.body == pf.pattern(30000)
                assert c.is_closed(2.0), "HTTP/1.0 client without keep-alive: must be closed"


def test_proxy_http10_client_without_keepalive_is_closed():
    o, p = start()
    with o, p, p.conn() as c:
        r = c.request("GET", "/?size=100", version="1.0")
        assert r.status == 200 and r.body == pf.pattern(100), r
        assert c.is_closed(2.0)


def test_proxy_connection_close_from_client_is_honoured():
    o, p = start()
    with o, p, p.conn() as c:
        r = c.request("GET", "/", headers={"Connection": "close"})
        assert r.status == 200
        assert "close" in connection_tokens(r.header_all("Connection")), r.headers
        assert c.is_closed(2.0)


def test_proxy_head_has_no_body():
    o, p = start()
    with o, p, p.conn() as c:
        for target in ("/?size=100", "/?chunked=1&size=100", "/?close=1&size=100"):
            r = c.request("HEAD", target)
            assert r.status == 200, (target, r)
            assert r.body == b""
            # a stray body would be read as the next response's head
            r = c.request("GET", "/?body=after-head")
            assert r.status == 200 and r.body == b"after-head", (target, r)
        r = c.request("HEAD", "/?size=100")
        cl = r.header("Content-Length")
        assert cl in (None, "100"), "HEAD Content-Length %r" % cl


def test_proxy_204_and_304_have_no_body():
    o, p = start()
    with o, p, p.conn() as c:
        for status in (204, 304):
            r = c.request("GET", "/?status=%d" % status)
            assert r.status == status, r
            assert r.header("Content-Length") is None, "%d with Content-Length" % status
            assert r.header("Transfer-Encoding") is None, "%d with Transfer-Encoding" % status
            r = c.request("GET", "/?body=after-%d" % status)
            assert r.status == 200 and r.body == b"after-%d" % status, r
        assert not c.buf and not c.is_closed(0.2)


def test_proxy_pipelining_three_in_one_write():
    o, p = start()
    with o, p, p.conn() as c:
        # the first answer is the slowest: order must still be kept
        c.send(b"".join(pf.build_request("GET", "/?body=%s&delay=%d" % (b, d))
                        for b, d in (("one", 200), ("two", 50), ("three", 0))))
        bodies = [c.read_response().body for _ in range(3)]
        assert bodies == [b"one", b"two", b"three"], bodies
        assert c.request("GET", "/?body=four").body == b"four"


def test_proxy_post_bodies_are_reframed():
    o, p = start()
    with o, p, p.conn() as c:
        e = c.request("POST", "/echo", body=b"hello world").json()
        assert e["body"] == "hello world" and e["body_length"] == 11, e
        e = c.request("POST", "/echo", body=[b"hel", b"lo ", b"world"]).json()
        assert e["body"] == "hello world", e
        cl, te = pf.echo_headers(e, "Content-Length"), pf.echo_headers(e, "Transfer-Encoding")
        assert len(cl) + len(te) == 1, "upstream framing CL=%r TE=%r" % (cl, te)
        data = os.urandom(300000)
        e = c.request("PUT", "/echo", body=data).json()
        assert e["body_length"] == len(data) and e["body_fnv1a64"] == pf.fnv1a64(data), e


@pf.timeout(90)
def test_proxy_large_body_round_trip_streams():
    o, p = start()
    with o, p:
        data = os.urandom(32 << 20)
        r = pf.echo_raw(p.port, data, timeout=60)
        assert r.status == 200, r
        assert len(r.body) == len(data) and r.body == data
        r = pf.echo_raw(p.port, data[:4 << 20], chunked=True, piece=10000, timeout=60)
        assert r.body == data[:4 << 20]


def test_proxy_sets_forwarded_headers_and_request_id():
    o, p = start()
    with o, p:
        e = echo_through(p, headers=[("Host", "example.test:8080")])
        assert one(e, "X-Forwarded-For") == "127.0.0.1", e["headers"]
        assert one(e, "X-Forwarded-Proto") == "http"
        assert one(e, "X-Forwarded-Host") == "example.test:8080"
        rid = one(e, "X-Request-Id")
        assert rid.strip(), "empty X-Request-Id"
        e2 = echo_through(p)
        assert one(e2, "X-Request-Id") != rid, "X-Request-Id reused"

        e = echo_through(p, headers=[("Host", "x"), ("X-Forwarded-For", "203.0.113.7"),
                                     ("X-Request-Id", "req-123")])
        xff = [a.strip() for a in one(e, "X-Forwarded-For").split(",")]
        assert xff == ["203.0.113.7", "127.0.0.1"], xff
        assert one(e, "X-Request-Id") == "req-123"


def test_proxy_starts_traceparent():
    o, p = start()
    with o, p:
        for hdrs in ([], [("traceparent", "not-a-valid-traceparent")]):
            e = echo_through(p, headers=[("Host", "x")] + hdrs)
            tp = one(e, "traceparent")
            m = TRACEPARENT.match(tp)
            assert m, "bad traceparent %r" % tp
            assert m.group(1) == "00" and m.group(2) != "0" * 32 and m.group(3) != "0" * 16, tp


def test_proxy_continues_traceparent_with_new_span():
    trace, span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    o, p = start()
    with o, p:
        e = echo_through(p, headers={"traceparent": "00-%s-%s-01" % (trace, span)})
        tp = one(e, "traceparent")
        m = TRACEPARENT.match(tp)
        assert m, "bad traceparent %r" % tp
        assert m.group(2) == trace, "trace-id not continued: %r" % tp
        assert m.group(3) not in (span, "0" * 16), "span id not renewed: %r" % tp


def test_proxy_drops_hop_by_hop_request_headers():
    o, p = start()
    with o, p:
        e = echo_through(p, headers=[
            ("Host", "x"),
            ("Connection", "keep-alive, X-Hop-Req"),
            ("X-Hop-Req", "secret"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Upgrade", "h2c"),
            ("Proxy-Connection", "keep-alive"),
            ("Trailer", "X-Checksum"),
            ("X-Keep-Me", "yes"),
        ])
        names = {k.lower() for k, _ in e["headers"]}
        for h in HOP_BY_HOP + ["x-hop-req"]:
            assert h not in names, "%s forwarded upstream: %r" % (h, e["headers"])
        assert "x-hop-req" not in connection_tokens(pf.echo_headers(e, "Connection"))
        assert one(e, "X-Keep-Me") == "yes"


def test_proxy_drops_hop_by_hop_response_headers():
    o, p = start()
    with o, p, p.conn() as c:
        r = c.request("GET", "/?header=Connection:X-Hop-Resp&header=X-Hop-Resp:1"
                      "&header=Keep-Alive:timeout%3D5&header=Proxy-Connection:keep-alive"
                      "&header=Upgrade:h2c&header=Trailer:X-T&header=X-Keep-Resp:1")
        assert r.status == 200, r
        names = {k.lower() for k, _ in r.headers}
        for h in ["keep-alive", "upgrade", "proxy-connection", "trailer", "x-hop-resp"]:
            assert h not in names, "%s forwarded to the client: %r" % (h, r.headers)
        assert "x-hop-resp" not in connection_tokens(r.header_all("Connection"))
        assert r.header("X-Keep-Resp") == "1"
        assert c.request("GET", "/").status == 200


IMF_FIXDATE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} "
                         r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
                         r"\d{2}:\d{2}:\d{2} GMT$")


def test_proxy_adds_date_when_the_origin_has_none():
    """RFC 9110 §6.6.1: pf-origin sends no Date; pilotfish adds one (and only one), to every
    status; an origin's own Date is forwarded as it is."""
    o, p = start()
    with o, p, p.conn() as c:
        for target in ["/", "/?status=404", "/?status=503", "/?status=204", "/?chunked=1"]:
            r = c.request("GET", target)
            dates = r.header_all("Date")
            assert len(dates) == 1 and IMF_FIXDATE.match(dates[0]), (target, r.headers)
        own = "Sun, 06 Nov 1994 08:49:37 GMT"
        r = c.request("GET", "/?header=Date:" + own.replace(" ", "+"))
        assert r.header_all("Date") == [own], r.headers


def test_proxy_expect_100_continue():
    o, p = start()
    with o, p, p.conn() as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
               b"Content-Length: 11\r\n\r\n")
        c.settimeout(5)
        r = c.read_response(skip_interim=False)
        assert r.status == 100, "expected 100 Continue before the body, got %r" % r
        c.send(b"hello world")
        r = c.read_response("POST")
        assert r.status == 200, r
        e = r.json()
        assert e["body"] == "hello world" and e["body_length"] == 11, e
        assert c.request("GET", "/").status == 200


def test_proxy_stops_on_sigterm_with_exit_0():
    o, p = start()
    with o, p:
        assert p.get("/").status == 200
        t0 = time.monotonic()
        assert p.stop(timeout=20) == 0, p.stderr_text()[-2000:]
        assert time.monotonic() - t0 < 15
