"""Message heads as pilotfish reads them (proxy/h1parse.c), beyond the
framing cases of test_smuggling: what a malformed response head from the
upstream becomes (502, or cleaned as RFC 9112 allows), and a request field
value that is a single control character."""

import pf
from pf import Pilotfish

import helpers2 as h2

BASE = h2.CONFIG_HEAD + "log_level: error\n"


def canned(head):
    """A FakeOrigin handler answering every request with head + "hello"."""
    def handler(conn, n, req_head, body):
        return head + b"hello"
    return handler


def proxy_for(fo):
    return Pilotfish(h2.config(head=BASE, endpoints=[fo.addr],
                               upstream_extra="retries: {attempts: 0}"))


def test_heads_malformed_response_heads_are_502():
    cases = [
        (b"HTTP/1.1 200 OK\r\nX A: v\r\nContent-Length: 5\r\n\r\n", "space inside a name"),
        (b"HTTP/1.1 200 OK\r\n X-A: v\r\nContent-Length: 5\r\n\r\n", "fold after the status line"),
        (b"HTTP/1.1 200 OK\r\nX-A: \x00\r\nContent-Length: 5\r\n\r\n", "NUL as the value"),
        (b"HTTP/1.1 200 OK\r\nX-A: a\x7fb\r\nContent-Length: 5\r\n\r\n", "DEL in a value"),
        (b"HTTP/1.1 200 O\rK\r\nContent-Length: 5\r\n\r\n", "bare CR in the reason"),
        (b"HXYZ/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "not HTTP/"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
         "two Content-Lengths"),
    ]
    for head, what in cases:
        with h2.FakeOrigin(canned(head)) as fo:
            p = proxy_for(fo)
            with p:
                r = p.get("/x")
                assert r.status == 502, (what, r)
                assert r.header("X-Pilotfish-Error") == "upstream_bad_response", (what, r)


def test_heads_response_heads_cleaned_as_rfc_9112_allows():
    """Whitespace before a colon is removed (§5.1), obs-fold is joined into
    the value, bare LF line ends are read: the response is passed on."""
    cases = [
        (b"HTTP/1.1 200 OK\r\nX-A : v\r\nContent-Length: 5\r\n\r\n", "X-A", "v"),
        (b"HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 5\r\n\r\n", "X-A", "one two"),
        (b"HTTP/1.1 200 OK\nX-A: lf\nContent-Length: 5\n\n", "X-A", "lf"),
    ]
    for head, name, value in cases:
        with h2.FakeOrigin(canned(head)) as fo:
            p = proxy_for(fo)
            with p:
                r = p.get("/x")
                assert r.status == 200 and r.body == b"hello", (head, r)
                assert [k for k, _ in r.headers if k.strip().lower() == "x-a"] == [name], r.headers
                assert r.header(name) == value, (head, r.headers)


def test_heads_request_value_of_one_control_character_is_400():
    """A value that is a single control character (http-parser let the first
    byte of a value through unchecked) is refused like any other."""
    o = pf.Origin()
    p = Pilotfish(h2.config(head=BASE), origin=o)
    with o, p:
        for ch in (b"\x00", b"\x01", b"\x1f", b"\x7f"):
            r, closed, _ = h2.raw_exchange(p.port, b"GET / HTTP/1.1\r\nHost: a\r\nX: " + ch +
                                           b"\r\n\r\n")
            assert r is not None and r.status == 400 and closed, (ch, r)
        r = p.get("/?size=3")
        assert r.status == 200, r
