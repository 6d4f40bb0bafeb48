"""Request and response parsing at the edges (RFC 9110, RFC 9112, RFC 3986):
HTTP/1.0 with Transfer-Encoding, Connection naming Host, invalid Host and
target bytes, header names with underscores, upstream status codes and
transfer codings, and a bad chunk in the same read as the response head.

A FakeOrigin (helpers2.py) records the request heads it receives, so each
test can say exactly what reached the upstream."""

import pf
from pf import Pilotfish

import helpers2 as h2

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


def ok_origin():
    return h2.FakeOrigin(lambda conn, n, head, body: h2.http_response(b"ok"))


def heads(fo):
    return [h for _, _, h in fo.requests]


def header_lines(head):
    """(lower-case name, value) of every header line of a raw request head."""
    out = []
    for line in head.split(b"\r\n")[1:]:
        if b":" in line:
            k, v = line.split(b":", 1)
            out.append((k.strip().lower(), v.strip()))
    return out


def test_parse_http10_transfer_encoding_is_served_then_closed():
    """RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing: the
    request is served and the connection closed after it, whatever
    Connection says; nothing behind the body is read as a request."""
    with ok_origin() as fo:
        p = Pilotfish(h2.config(endpoints=[fo.addr]))
        with p:
            data = (b"POST /a HTTP/1.0\r\nConnection: keep-alive\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + SMUGGLED)
            r, closed, leftover = h2.raw_exchange(p.port, data)
            assert r is not None and r.status == 200, r
            assert "close" in h2.connection_tokens(r), r.headers
            assert closed and not leftover, (closed, leftover[:200])
            assert [h.split(b" ")[1] for h in heads(fo)] == [b"/a"], heads(fo)


def test_parse_connection_cannot_remove_host_or_forwarding_headers():
    with ok_origin() as fo:
        p = Pilotfish(h2.config(endpoints=[fo.addr]))
        with p, p.conn() as c:
            r = c.request("GET", "/a", host="a.example", headers=[
                ("Connection", "Host, X-Request-Id, traceparent, X-Forwarded-For, X-Drop"),
                ("X-Drop", "1"), ("X-Request-Id", "rid-1")])
            assert r.status == 200, r
        hl = header_lines(heads(fo)[0])
        names = [k for k, _ in hl]
        assert (b"host", b"a.example") in hl, hl
        assert (b"x-request-id", b"rid-1") in hl, hl
        assert b"traceparent" in names and b"x-forwarded-for" in names, hl
        assert (b"x-forwarded-host", b"a.example") in hl, hl
        assert b"x-drop" not in names and b"connection" not in names, hl


def test_parse_response_connection_cannot_remove_content_length():
    resp = b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 2\r\n\r\nok"
    with h2.FakeOrigin(lambda conn, n, head, body: resp) as fo:
        p = Pilotfish(h2.config(endpoints=[fo.addr]))
        with p, p.conn(timeout=3) as c:
            for _ in range(2):
                r = c.request("GET", "/a")
                assert r.status == 200 and r.body == b"ok", r
                assert r.header("Content-Length") == "2", r.headers


def test_parse_invalid_host_is_400_and_never_forwarded():
    # "b%2Eexample": matched as written, but an upstream may decode it
    bad = [b"a b", b"a/b@c", b"a\xffb", b"user@host", b"u:p@host", b"host:8o", b"[::1",
           b"a%zz", b"b%2Eexample", b"a%41"]
    with ok_origin() as fo:
        p = Pilotfish(h2.config(endpoints=[fo.addr]))
        with p:
            problems = []
            reqs = [b"GET /a HTTP/1.1\r\nHost: " + host + b"\r\n\r\n" for host in bad]
            # absolute form ("a/b@c" there is host "a" and a path)
            reqs += [b"GET http://" + host + b"/a HTTP/1.1\r\nHost: x\r\n\r\n"
                     for host in bad if b"/" not in host]
            for req in reqs:
                try:
                    r, closed, _ = h2.raw_exchange(p.port, req)
                    h2.assert_error_reply(r, 400, "bad_request", closed=closed)
                except AssertionError as e:
                    problems.append("%r: %s" % (req, e))
            assert not problems, "\n".join(problems)
            assert heads(fo) == [], heads(fo)
            assert p.get("/ok", headers=[("Host", "good.example:8080")]).status == 200


def test_parse_invalid_target_bytes_are_400():
    bad = [b"/a\tb", b"/a\x0cb", b"/a\xffb", b"/a\x01b", b"/a#frag", b"/a?q#f", b"/a%zz",
           b"/a%"]
    with ok_origin() as fo:
        p = Pilotfish(h2.config(endpoints=[fo.addr]))
        with p:
            problems = []
            for target in bad:
                req = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n"
                try:
                    r, closed, _ = h2.raw_exchange(p.port, req)
                    h2.assert_error_reply(r, 400, "bad_request", closed=closed)
                except AssertionError as e:
                    problems.append("%r: %s" % (target, e))
            assert not problems, "\n".join(problems)
            assert heads(fo) == [], heads(fo)


def _underscore_request(p):
    with p.conn() as c:
        return c.request("POST", "/a", body=b"hello", headers=[
            ("Content_Length", "0"), ("Transfer_Encoding", "chunked"), ("X_Custom", "1")])


def test_parse_underscore_header_names_dropped_by_default():
    with ok_origin() as fo:
        p = Pilotfish(h2.config(endpoints=[fo.addr]))
        with p:
            assert _underscore_request(p).status == 200
        names = [k for k, _ in header_lines(heads(fo)[0])]
        assert not [n for n in names if b"_" in n], names


def test_parse_underscore_header_names_allowed_except_framing_lookalikes():
    with ok_origin() as fo:
        p = Pilotfish(h2.config("underscores_in_headers: allow\n", endpoints=[fo.addr]))
        with p:
            assert _underscore_request(p).status == 200
        names = [k for k, _ in header_lines(heads(fo)[0])]
        assert [n for n in names if b"_" in n] == [b"x_custom"], names


def test_parse_underscore_header_names_rejected_when_told():
    with ok_origin() as fo:
        p = Pilotfish(h2.config("underscores_in_headers: reject\n", endpoints=[fo.addr]))
        with p:
            r, closed, _ = h2.raw_exchange(
                p.port, b"GET /a HTTP/1.1\r\nHost: x\r\nX_Custom: 1\r\n\r\n")
            h2.assert_error_reply(r, 400, "bad_request", closed=closed)
            assert heads(fo) == []


def test_parse_ratelimit_header_key_with_underscore_needs_allow():
    """header:X_Tenant never sees its header unless underscores_in_headers is
    allow (drop removes it, reject refuses the request): every request would
    share one bucket, so pilotfish -t refuses it, saying where and why."""
    rl = "filters:\n  ratelimit:\n    key: header:X_Tenant\n"
    eps = ["127.0.0.1:9"]
    p = Pilotfish(h2.config(rl, endpoints=eps), start=False)
    for extra in ["", "underscores_in_headers: drop\n", "underscores_in_headers: reject\n"]:
        text = h2.config(extra + rl, endpoints=eps)
        lineno = text.splitlines().index("    key: header:X_Tenant") + 1
        rc, out = p.check_config(text)
        assert rc != 0, (extra, out)
        assert ":%d:10: ratelimit.key: header names with '_'" % lineno in out, (extra, out)
    for ok in ["underscores_in_headers: allow\n" + rl,
               "filters:\n  ratelimit:\n    key: header:X-Tenant\n"]:
        rc, out = p.check_config(h2.config(ok, endpoints=eps))
        assert rc == 0, (ok, out)


def _fixed_origin_502(resp, code="upstream_bad_response"):
    with h2.FakeOrigin(lambda conn, n, head, body: resp) as fo:
        p = Pilotfish(h2.config(endpoints=[fo.addr]))
        with p:
            with p.conn(timeout=3) as c:
                c.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
                try:
                    r = c.read_response()
                except pf.ConnectionClosed:
                    r = None
            assert r is not None, "no response at all (%r)" % resp[:40]
            assert r.status == 502, (r, resp[:40])
            assert r.header("X-Pilotfish-Error") == code, r.headers
            assert r.json()["error"] == code, r.body


def test_parse_upstream_status_outside_100_599_is_502():
    for status in (b"000", b"042", b"600", b"999"):
        _fixed_origin_502(b"HTTP/1.1 " + status + b" X\r\nContent-Length: 2\r\n\r\nok")


def test_parse_upstream_transfer_coding_other_than_chunked_is_502():
    """pilotfish never sends TE upstream, so a transfer coding other than
    chunked was not asked for, and cannot be passed on (Transfer-Encoding is
    hop-by-hop): 502, never the coded bytes re-chunked as if plain."""
    _fixed_origin_502(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8bxyz")
    _fixed_origin_502(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                      b"3\r\n\x1f\x8bx\r\n0\r\n\r\n")
    # chunked twice (RFC 9112 6.1), in one field or two: never relayed as content
    _fixed_origin_502(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"
                      b"7\r\n2\r\nok\r\n\r\n0\r\n\r\n")
    _fixed_origin_502(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")


def test_parse_bad_chunk_in_the_same_read_as_the_head_is_a_502():
    """Nothing of the response reached the client yet: a 502, not an empty reply."""
    _fixed_origin_502(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX")
    _fixed_origin_502(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"2\r\nok\r\nzz\r\n")


def test_parse_good_upstream_responses_still_pass():
    resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    with h2.FakeOrigin(lambda conn, n, head, body: resp) as fo:
        p = Pilotfish(h2.config(endpoints=[fo.addr]))
        with p:
            r = p.get("/a")
            assert r.status == 200 and r.body == b"ok", r
