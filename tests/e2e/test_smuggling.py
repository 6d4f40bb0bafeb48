"""Request smuggling and strict framing (docs/operations.md, "Request
framing"): every ambiguous or malformed request head or chunked body is
refused with 400 + Connection: close, the connection is closed, and the origin
never sees a request -- neither the bad one nor a request smuggled behind it."""

import socket

import pf
from pf import Conn, ConnectionClosed, Origin, Pilotfish

import helpers2 as h2

# a request pipelined right behind each bad one: if the proxy read the bad
# request's framing differently from a strict parser, this would reach the origin
SMUGGLED = b"GET /smuggled?echo=1 HTTP/1.1\r\nHost: x\r\n\r\n"


def start():
    o = Origin()
    return o, Pilotfish(origin=o)


def refused_cases(cases, smuggle=True):
    """Run each (name, raw request) on a fresh connection against one origin +
    pilotfish; collect every deviation from "400, Connection: close, JSON error,
    connection closed, origin untouched"; fail listing them all."""
    o, p = start()
    problems = []
    with o, p:
        for name, raw in cases:
            data = raw + (SMUGGLED if smuggle else b"")
            before = o.stats()["requests"]
            try:
                r, closed, leftover = h2.raw_exchange(p.port, data)
                h2.assert_error_reply(r, 400, closed=closed, what=name)
                assert not leftover, "bytes after the 400 (%s): %r" % (name, leftover[:200])
            except AssertionError as e:
                problems.append("%s: %s" % (name, e))
            try:
                after = h2.origin_settled(o, p)["requests"]
            except AssertionError as e:
                problems.append("%s: %s" % (name, e))
                continue
            if after != before:
                problems.append("%s: the origin answered %d request(s) (bad or smuggled)"
                                % (name, after - before))
        # the proxy still works after all that
        r = p.get("/")
        if r.status != 200:
            problems.append("proxy broken afterwards: %r" % r)
    assert not problems, "\n".join(problems)


def post(headers, body=b""):
    """POST /echo with literal header lines (no Host added automatically)."""
    return (b"POST /echo HTTP/1.1\r\nHost: x\r\n" + b"".join(h + b"\r\n" for h in headers)
            + b"\r\n" + body)


def test_smuggling_cl_and_te():
    refused_cases([
        ("CL then TE", post([b"Content-Length: 5", b"Transfer-Encoding: chunked"],
                            b"0\r\n\r\n")),
        ("TE then CL", post([b"Transfer-Encoding: chunked", b"Content-Length: 5"],
                            b"0\r\n\r\n")),
        ("CL:0 + TE", post([b"Content-Length: 0", b"Transfer-Encoding: chunked"],
                           b"0\r\n\r\n")),
    ])


def test_smuggling_two_content_lengths():
    refused_cases([
        ("differing CLs 5/6", post([b"Content-Length: 5", b"Content-Length: 6"], b"hello!")),
        ("differing CLs 6/5", post([b"Content-Length: 6", b"Content-Length: 5"], b"hello!")),
        ("CL list '5, 6'", post([b"Content-Length: 5, 6"], b"hello!")),
    ])


def test_smuggling_two_identical_content_lengths_refused_too():
    refused_cases([
        ("identical CLs", post([b"Content-Length: 5", b"Content-Length: 5"], b"hello")),
        ("CL list '5, 5'", post([b"Content-Length: 5, 5"], b"hello")),
    ])


def test_smuggling_invalid_content_length():
    refused_cases([
        ("CL non-digits", post([b"Content-Length: 5x"], b"hello")),
        ("CL hex", post([b"Content-Length: 0x5"], b"hello")),
        ("CL plus sign", post([b"Content-Length: +5"], b"hello")),
        ("CL negative", post([b"Content-Length: -1"], b"hello")),
        ("CL empty", post([b"Content-Length: "], b"hello")),
        ("CL with inner space", post([b"Content-Length: 1 2"], b"hello")),
        ("CL huge (30 digits)", post([b"Content-Length: 999999999999999999999999999999"],
                                     b"hello")),
        ("CL 2^64", post([b"Content-Length: 18446744073709551616"], b"hello")),
    ])


def test_smuggling_invalid_transfer_encoding():
    refused_cases([
        ("TE gzip, chunked", post([b"Transfer-Encoding: gzip, chunked"], b"0\r\n\r\n")),
        ("TE chunked, identity", post([b"Transfer-Encoding: chunked, identity"], b"0\r\n\r\n")),
        ("TE xchunked", post([b"Transfer-Encoding: xchunked"], b"0\r\n\r\n")),
        ("TE chunked twice", post([b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"],
                                  b"0\r\n\r\n")),
        ("TE twice, differing", post([b"Transfer-Encoding: identity",
                                      b"Transfer-Encoding: chunked"], b"0\r\n\r\n")),
        ("TE identity", post([b"Transfer-Encoding: identity"], b"hello")),
        ("TE chunked;ext", post([b"Transfer-Encoding: chunked;foo=bar"], b"0\r\n\r\n")),
    ])


def test_smuggling_whitespace_before_colon():
    refused_cases([
        ("space before colon (TE)", post([b"Transfer-Encoding : chunked"], b"0\r\n\r\n")),
        ("space before colon (CL)", post([b"Content-Length : 5"], b"hello")),
        ("tab before colon", post([b"X-Foo\t: bar"])),
        ("space before colon (Host)", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n"),
    ])


def test_smuggling_te_with_space_before_colon_cannot_smuggle():
    """The classic desync: 'Transfer-Encoding : chunked' must not be read as
    chunked by one side and as no body by the other. The chunk's payload is a
    chunked terminator plus a whole request; it must never reach the origin."""
    o, p = start()
    with o, p:
        inner = b"0\r\n\r\nGET /smuggled?echo=1 HTTP/1.1\r\nHost: x\r\n\r\n"
        raw = (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n"
               + b"%x\r\n%s\r\n0\r\n\r\n" % (len(inner), inner))
        try:
            r, closed, _ = h2.raw_exchange(p.port, raw)
        except h2.NoResponse as e:
            r, closed = None, "no response: %s" % e
        n = h2.origin_settled(o, p)["requests"]
        assert n == 0, "the origin answered %d request(s) (smuggled GET /smuggled got through); " \
            "client got %r" % (n, r)
        h2.assert_error_reply(r, 400, closed=closed)


def test_smuggling_obs_fold():
    refused_cases([
        ("obs-fold with space", post([b"X-Foo: a", b" b"])),
        ("obs-fold with tab", post([b"X-Foo: a", b"\tb"])),
        ("obs-fold continuing TE", post([b"Transfer-Encoding: gzip,", b" chunked"],
                                        b"0\r\n\r\n")),
    ])


def test_smuggling_bare_lf():
    refused_cases([
        ("bare LF everywhere", b"GET / HTTP/1.1\nHost: x\n\n"),
        ("bare LF after request line", b"GET / HTTP/1.1\nHost: x\r\n\r\n"),
        ("bare LF after a header", b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n"),
        ("bare LF ending the head", b"GET / HTTP/1.1\r\nHost: x\r\n\n"),
        ("bare CR in a header", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\rc\r\n\r\n"),
    ])


def test_smuggling_invalid_chunk_size():
    refused_cases([
        ("chunk size zz", post([b"Transfer-Encoding: chunked"], b"zz\r\nhello\r\n0\r\n\r\n")),
        ("chunk size -1", post([b"Transfer-Encoding: chunked"], b"-1\r\nhello\r\n0\r\n\r\n")),
        ("chunk size overflow", post([b"Transfer-Encoding: chunked"],
                                     b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n")),
        ("chunk size 2^64", post([b"Transfer-Encoding: chunked"],
                                 b"10000000000000000\r\nhello\r\n0\r\n\r\n")),
        ("chunk without CRLF after data", post([b"Transfer-Encoding: chunked"],
                                               b"5\r\nhelloXX0\r\n\r\n")),
    ])


def test_smuggling_bad_request_line_version():
    refused_cases([
        ("version HTTP/1.x", b"GET / HTTP/1.x\r\nHost: x\r\n\r\n"),
        ("version HTTP/11", b"GET / HTTP/11\r\nHost: x\r\n\r\n"),
        ("version HTTP/1.1.1", b"GET / HTTP/1.1.1\r\nHost: x\r\n\r\n"),
        ("protocol HTXP/1.1", b"GET / HTXP/1.1\r\nHost: x\r\n\r\n"),
        ("lowercase http/1.1", b"GET / http/1.1\r\nHost: x\r\n\r\n"),
        ("no version", b"GET / \r\nHost: x\r\n\r\n"),
    ])


def test_smuggling_unsupported_major_version_not_forwarded():
    """HTTP/2.0 or 3.1 in an HTTP/1 request line: 400 or 505, closed, never forwarded."""
    o, p = start()
    problems = []
    with o, p:
        for v in (b"2.0", b"3.1", b"0.9"):
            try:
                r, closed, _ = h2.raw_exchange(p.port, b"GET / HTTP/" + v
                                               + b"\r\nHost: x\r\n\r\n" + SMUGGLED)
            except h2.NoResponse as e:
                problems.append("HTTP/%s: %s" % (v.decode(), e))
                continue
            if r is None or r.status not in (400, 505) or not closed:
                problems.append("HTTP/%s: got %r, closed=%s (want 400 or 505 and close)"
                                % (v.decode(), r, closed))
        n = h2.origin_settled(o, p)["requests"]
        if n:
            problems.append("the origin answered %d request(s)" % n)
    assert not problems, "\n".join(problems)


def test_smuggling_missing_host_http11():
    refused_cases([
        ("no Host, HTTP/1.1", b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n"),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ])


def test_smuggling_missing_host_http10_allowed():
    o, p = start()
    with o, p, Conn(p.port) as c:
        c.send(b"GET /?body=ten HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.body == b"ten", r


def test_smuggling_pipelined_body_is_exactly_content_length():
    """POST with CL: 5 whose body looks like a chunked terminator followed by a
    second request: the 5 bytes are the body, the rest is a separate request."""
    o, p = start()
    with o, p, Conn(p.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
               b"0\r\n\r\n"
               b"GET /admin?echo=1 HTTP/1.1\r\nHost: x\r\nX-Second: 1\r\n\r\n")
        r1 = c.read_response("POST")
        assert r1.status == 200, r1
        e1 = r1.json()
        assert e1["method"] == "POST" and e1["path"] == "/echo", e1
        assert e1["body_length"] == 5 and e1["body"] == "0\r\n\r\n", e1
        assert pf.echo_headers(e1, "Content-Length") == ["5"], e1["headers"]
        assert not pf.echo_headers(e1, "Transfer-Encoding"), e1["headers"]
        r2 = c.read_response()
        assert r2.status == 200, r2
        e2 = r2.json()
        assert e2["method"] == "GET" and e2["path"] == "/admin", e2
        assert pf.echo_headers(e2, "X-Second") == ["1"], e2["headers"]
        assert e2["body_length"] == 0, e2
        assert not c.is_closed(0.2)
        s = o.stats()
        assert s["requests"] == 2, s


def test_smuggling_pipelined_chunked_body_then_request():
    """A chunked body ends exactly at its last chunk; what follows is the next request."""
    o, p = start()
    with o, p, Conn(p.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n0\r\n\r\n"
               b"GET /second?echo=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        e1 = c.read_response("POST").json()
        assert e1["body"] == "hello" and e1["body_length"] == 5, e1
        e2 = c.read_response().json()
        assert e2["path"] == "/second" and e2["method"] == "GET", e2
        assert o.stats()["requests"] == 2


# ---- a transaction that ends before (or while) its body is read ----
#
# An early answer (413, 429, 401, an upstream failure) says Connection: close
# when the request body was not read whole. Whatever follows in the input --
# the rest of the body, or a request pipelined behind it -- must then never be
# parsed: neither forwarded to the origin nor answered to the client.

# a complete request inside a body: a body left unread must not be taken for it
INNER = b"GET /smuggled?echo=1 HTTP/1.1\r\nHost: x\r\n\r\n"


def post_cl(target, body, extra=b""):
    return (b"POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n"
            % (target, extra, len(body)) + body)


def post_chunked(target, chunks, extra=b""):
    data = b"".join(b"%x\r\n%s\r\n" % (len(ch), ch) for ch in chunks) + b"0\r\n\r\n"
    return b"POST %s HTTP/1.1\r\nHost: x\r\n%sTransfer-Encoding: chunked\r\n\r\n" % (
        target, extra) + data


def one_answer_then_close(port, data, statuses, what, pieces=None):
    """Send data (one write, or pieces), read one final response; it must be one
    of statuses with Connection: close, and the connection must then close with
    nothing more answered. Returns the problem found, or None."""
    c = Conn(port, timeout=5.0)
    try:
        try:
            if pieces is not None:
                c.send_pieces(pieces)
            else:
                c.send(data)
        except OSError:
            pass  # answered and closed before everything was written
        try:
            r = c.read_response("POST")
        except (ConnectionClosed, ConnectionResetError):
            return "%s: closed without an answer" % what
        except socket.timeout:
            return "%s: no answer within 5s" % what
        if r.status not in statuses:
            return "%s: expected %r, got %r" % (what, statuses, r)
        if "close" not in h2.connection_tokens(r):
            return "%s: %d without Connection: close: %r" % (what, r.status, r.headers)
        if not c.is_closed(3.0):
            return "%s: more after the %d (or not closed): %r" % (what, r.status, c.buf[:300])
        return None
    finally:
        c.close()


def check_cases(o, p, cases, port=None, expected_origin=0):
    """Run each (name, statuses, data-or-pieces) case; the origin must have answered
    expected_origin requests in all (the smuggled ones never reach it)."""
    problems = []
    for name, statuses, data in cases:
        pieces = data if isinstance(data, list) else None
        err = one_answer_then_close(port or p.port, None if pieces else data, statuses, name,
                                    pieces=pieces)
        if err:
            problems.append(err)
        n = h2.origin_settled(o, p)["requests"]
        if n != expected_origin:
            problems.append("%s: the origin answered %d request(s), expected %d"
                            % (name, n, expected_origin))
            expected_origin = n
    assert not problems, "\n".join(problems)


def test_smuggling_413_with_unread_body_parses_nothing_after():
    o = Origin()
    p = Pilotfish(h2.config("limits:\n  max_body_size: 1KiB\n"), origin=o)
    big = INNER * 60  # over 1 KiB, made of requests
    with o, p:
        check_cases(o, p, [
            ("413 CL, body of requests", (413,), post_cl(b"/echo", big)),
            ("413 CL, body + pipelined", (413,), post_cl(b"/echo", big) + INNER),
            ("413 CL, Expect: 100-continue", (413,),
             post_cl(b"/echo", big, b"Expect: 100-continue\r\n") + INNER),
            ("413 chunked, chunk of requests", (413,), post_chunked(b"/echo", [big]) + INNER),
            ("413 chunked, many chunks", (413,), post_chunked(b"/echo", [INNER] * 60) + INNER),
            ("413 chunked, split writes", (413,),
             [post_chunked(b"/echo", [big])[:90], post_chunked(b"/echo", [big])[90:700],
              post_chunked(b"/echo", [big])[700:] + INNER]),
            ("413 CL, split writes", (413,),
             [post_cl(b"/echo", big)[:70], post_cl(b"/echo", big)[70:] + INNER]),
        ])
        assert p.get("/").status == 200


def test_smuggling_429_with_unread_body_parses_nothing_after():
    o = Origin()
    p = Pilotfish(h2.config("""\
routes:
  - match: { prefix: "/limited/" }
    upstream: app
    filters: [ratelimit]
  - match: { prefix: "/" }
    upstream: app
    filters: []
filters:
  ratelimit: { requests_per_second: 0.000277777777777778, burst: 1 }
"""), origin=o)
    with o, p:
        assert p.get("/limited/first").status == 200  # the only token
        check_cases(o, p, [
            ("429 CL body with a request", (429,), post_cl(b"/limited/x", INNER)),
            ("429 CL body + pipelined", (429,), post_cl(b"/limited/x", INNER) + INNER),
            ("429 Expect: 100-continue", (429,),
             post_cl(b"/limited/x", INNER, b"Expect: 100-continue\r\n") + INNER),
            ("429 chunked body with a request", (429,),
             post_chunked(b"/limited/x", [INNER, INNER]) + INNER),
            ("429 split writes", (429,),
             [post_cl(b"/limited/x", INNER * 3)[:60], post_cl(b"/limited/x", INNER * 3)[60:]
              + INNER]),
        ], expected_origin=1)


def test_smuggling_admin_401_with_unread_body_answers_nothing_after():
    o = Origin()
    head = h2.CONFIG_HEAD.replace('admin: { listen: "127.0.0.1:{{admin_port}}" }',
                                  'admin: { listen: "127.0.0.1:{{admin_port}}", token: "t0k" }')
    p = Pilotfish(h2.config(head=head), origin=o)
    inner = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    with o, p:
        check_cases(o, p, [
            ("401 CL body with a request", (401,), post_cl(b"/reload", inner)),
            ("401 CL body + pipelined", (401,), post_cl(b"/reload", inner) + inner),
            ("401 chunked body with a request", (401,),
             post_chunked(b"/drain", [inner]) + inner),
            ("401 Expect: 100-continue", (401,),
             post_cl(b"/reload", inner, b"Expect: 100-continue\r\n") + inner),
        ], port=p.admin_port)
        assert p.admin("GET", "/ready").status == 200, "an unauthorized /drain drained"


def test_smuggling_upstream_failure_while_body_is_read():
    """request_buffering reads a small chunked body first; when it passes the limit
    the upstream connection is taken from inside the body's de-framing. If that
    fails at once (a unix endpoint nobody listens on), the transaction ends
    there with a 502 + Connection: close while the body is only partly handed
    over: nothing after it (the rest of the body, a pipelined request to a
    working route) may be parsed or forwarded."""
    o = Origin()
    dead = h2.unix_path("dead")
    p = Pilotfish(h2.config("limits:\n  request_buffering: 1KiB\n") + """\
  dead:
    endpoints: ["unix:%s"]
routes:
  - match: { prefix: "/dead/" }
    upstream: dead
    filters: []
  - match: { prefix: "/" }
    upstream: app
    filters: []
""" % dead, origin=o)
    big = INNER * 60
    with o, p:
        full = post_chunked(b"/dead/x", [big])
        check_cases(o, p, [
            ("chunked body + pipelined", (502, 503), full + INNER),
            ("chunked, body of requests in chunks", (502, 503),
             post_chunked(b"/dead/x", [INNER] * 60) + INNER),
            ("chunked, the rest of the body is requests", (502, 503),
             post_chunked(b"/dead/x", [big, INNER, INNER]) + INNER),
            ("chunked, split writes", (502, 503),
             [full[:100], full[100:800], full[800:] + INNER]),
            ("chunked, second write is requests", (502, 503),
             [post_chunked(b"/dead/x", [big])[:-5], b"0\r\n\r\n" + INNER * 3]),
        ])
        assert p.get("/").status == 200


def test_smuggling_close_response_ends_a_pipeline():
    """A request the client itself ends with Connection: close, with a request
    pipelined behind it: the second is never answered nor forwarded."""
    o = Origin()
    p = Pilotfish(h2.config(), origin=o)
    with o, p:
        problems = []
        for i, (name, data) in enumerate([
                ("GET close + pipelined",
                 b"GET /?echo=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + INNER),
                ("POST close + pipelined", post_cl(b"/echo", INNER, b"Connection: close\r\n")
                 + INNER),
                ("chunked POST close + pipelined",
                 post_chunked(b"/echo", [INNER], b"Connection: close\r\n") + INNER)]):
            err = one_answer_then_close(p.port, data, (200,), name)
            if err:
                problems.append(err)
            n = h2.origin_settled(o, p)["requests"]
            if n != i + 1:
                problems.append("%s: the origin answered %d request(s), expected %d"
                                % (name, n, i + 1))
        assert not problems, "\n".join(problems)
