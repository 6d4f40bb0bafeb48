"""pf-origin itself: the test origin must do exactly what its query string says."""

import os
import socket
import tempfile
import time

import pf
from pf import Conn, Origin


def test_origin_default_body():
    with Origin() as o:
        r = o.get("/")
        assert r.status == 200, r
        assert r.body == b"hello from pf-origin\n", r.body
        assert r.framing == "length" and r.header("Content-Length") == "21"
        assert r.header("Content-Type") == "text/plain"
        assert r.header("X-Origin-Seq") is not None


def test_origin_status_size_type_headers():
    with Origin() as o:
        r = o.get("/any/path?status=404&size=1000&type=application/x-test"
                  "&header=X-A:1&header=X-B%3A%20two+words")
        assert r.status == 404 and r.reason == "Not Found", r
        assert r.body == pf.pattern(1000)
        assert r.header("Content-Type") == "application/x-test"
        assert r.header("X-A") == "1" and r.header("X-B") == "two words", r.headers
        r = o.get("/?status=201&body=hi%20there&type=")
        assert r.status == 201 and r.body == b"hi there"
        assert r.header("Content-Type") is None


def test_origin_chunked_pieces():
    with Origin() as o:
        r = o.get("/?chunked=1&size=100000&chunk=1000")
        assert r.framing == "chunked", r
        assert r.header("Content-Length") is None
        assert r.body == pf.pattern(100000)
        assert r.chunk_sizes == [1000] * 100, r.chunk_sizes[:5]


def test_origin_large_body_keeps_connection():
    with Origin() as o, Conn(o.port) as c:
        r = c.request("GET", "/?size=%d" % (20 << 20))
        assert len(r.body) == 20 << 20 and r.body == pf.pattern(20 << 20)
        r = c.request("GET", "/?chunked=1&size=%d" % (3 << 20))
        assert r.body == pf.pattern(3 << 20)
        assert c.request("GET", "/").status == 200


def test_origin_close_delimited():
    with Origin() as o, Conn(o.port) as c:
        r = c.request("GET", "/?close=1&size=5000")
        assert r.framing == "close", r
        assert r.header("Connection") == "close"
        assert r.body == pf.pattern(5000)


def test_origin_head_and_no_body_statuses():
    with Origin() as o, Conn(o.port) as c:
        r = c.request("HEAD", "/?size=10")
        assert r.status == 200 and r.body == b"" and r.header("Content-Length") == "10", r
        r = c.request("HEAD", "/?chunked=1&size=10")
        assert r.header("Transfer-Encoding") == "chunked" and r.body == b""
        for status in (204, 304):
            c.send_request("GET", "/?status=%d&size=10" % status)
            r = c.read_response()
            assert r.status == status
            assert r.header("Content-Length") is None and r.header("Transfer-Encoding") is None
        # nothing stray after those: the next response parses
        assert c.request("GET", "/?body=next").body == b"next"
        assert not c.buf


def test_origin_pipelining():
    with Origin() as o, Conn(o.port) as c:
        c.send(b"".join(pf.build_request("GET", "/?body=%d&delay=%d" % (i, 30 - 10 * i))
                        for i in range(3)))
        bodies = [c.read_response().body for _ in range(3)]
        assert bodies == [b"0", b"1", b"2"], bodies


def test_origin_http10():
    with Origin() as o:
        with Conn(o.port) as c:
            r = c.request("GET", "/", version="1.0")
            assert r.header("Connection") == "close" and c.is_closed()
        with Conn(o.port) as c:
            r = c.request("GET", "/", headers={"Connection": "keep-alive"}, version="1.0")
            assert r.header("Connection").lower() == "keep-alive"
            r = c.request("GET", "/?chunked=1&size=100", headers={"Connection": "keep-alive"},
                          version="1.0")
            assert r.framing == "close" and r.body == pf.pattern(100), r
        with Conn(o.port) as c:
            r = c.request("GET", "/", headers={"Connection": "close"})
            assert r.header("Connection") == "close" and c.is_closed()


def test_origin_echo_json():
    with Origin() as o, Conn(o.port) as c:
        r = c.request("POST", "/echo?a=1&b=x%20y", headers=[("X-Test", "v1"), ("x-test", "v2")],
                      body=b"hello world")
        assert r.status == 200 and r.header("Content-Type") == "application/json"
        e = r.json()
        assert e["method"] == "POST" and e["path"] == "/echo" and e["query"] == "a=1&b=x%20y"
        assert e["url"] == "/echo?a=1&b=x%20y" and e["http_version"] == "1.1"
        assert e["peer"] == "127.0.0.1"
        assert ["X-Test", "v1"] in e["headers"] and ["x-test", "v2"] in e["headers"], e
        assert e["body_length"] == 11 and e["body"] == "hello world"
        assert e["body_fnv1a64"] == pf.fnv1a64(b"hello world")
        # chunked request body; echo on another path via echo=1 and /x/echo
        e = c.request("PUT", "/x/echo", body=[b"ab", b"cde"]).json()
        assert e["body"] == "abcde" and e["path"] == "/x/echo"
        big = os.urandom(100000)
        e = c.request("POST", "/other?echo=1", body=big).json()
        assert e["body_length"] == 100000 and "body" not in e
        assert e["body_fnv1a64"] == pf.fnv1a64(big)


@pf.timeout(60)
def test_origin_echo_raw_streams_byte_exact():
    data = os.urandom(8 << 20)
    with Origin() as o:
        r = pf.echo_raw(o.port, data)
        assert r.status == 200 and r.framing == "chunked"
        assert len(r.body) == len(data) and r.body == data
        r = pf.echo_raw(o.port, data[:1 << 20], chunked=True, piece=1000)
        assert r.body == data[:1 << 20]


def test_origin_split_request_line():
    with Origin() as o, Conn(o.port) as c:
        c.send_pieces(["GE", "T /a", "bc?echo=1 HTTP/1.1\r\nHo", "st: x\r\n", "X-Y: 1\r", "\n\r\n"])
        e = c.read_response().json()
        assert e["path"] == "/abc" and e["method"] == "GET", e
        assert ["Host", "x"] in e["headers"] and ["X-Y", "1"] in e["headers"]


def test_origin_stats():
    with Origin() as o:
        o.reset_stats()
        conns = [Conn(o.port) for _ in range(3)]
        for i, c in enumerate(conns):
            for _ in range(i + 1):
                assert c.request("GET", "/").status == 200
        s = o.stats()
        assert s == {"connections": 3, "active": 3, "requests": 6}, s
        for c in conns:
            c.close()
        pf.eventually(lambda: o.stats()["active"] == 0, msg="active == 0")
        assert o.reset_stats() == {"connections": 0, "active": 0, "requests": 0}


def test_origin_expect_100_continue():
    with Origin() as o, Conn(o.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
               b"Content-Length: 5\r\n\r\n")
        r = c.read_response(skip_interim=False)
        assert r.status == 100, r
        c.send(b"hello")
        r = c.read_response()
        assert r.status == 200 and r.json()["body"] == "hello"
        c.send(b"POST /echo?expect=ignore HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
               b"Content-Length: 5\r\n\r\n")
        assert not c.is_closed(0.3) and c.buf == b"", c.buf
        c.send(b"hello")
        r = c.read_response()
        assert r.status == 200 and r.interim == []


def test_origin_delays():
    with Origin() as o, Conn(o.port) as c:
        t0 = time.monotonic()
        r = c.request("GET", "/?delay=300")
        assert r.status == 200 and time.monotonic() - t0 >= 0.29
        t0 = time.monotonic()
        r = c.request("GET", "/?size=30&chunk=10&chunk_delay=100&chunked=1")
        assert time.monotonic() - t0 >= 0.19
        assert r.body == pf.pattern(30) and r.chunk_sizes == [10, 10, 10]


def test_origin_reset():
    with Origin() as o, Conn(o.port) as c:
        c.send_request("GET", "/?reset=1")
        try:
            data = c.sock.recv(100)
        except ConnectionResetError:
            data = None
        assert data is None, data


def test_origin_partial():
    with Origin() as o, Conn(o.port) as c:
        c.send_request("GET", "/?partial=10&size=100")
        data = b""
        reset = False
        try:
            while True:
                d = c.sock.recv(1000)
                if not d:
                    break
                data += d
        except ConnectionResetError:
            reset = True
        assert reset, data
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"Content-Length: 100\r\n" in head and body == pf.pattern(10), data


def test_origin_hang_bad_lf():
    with Origin() as o:
        with Conn(o.port) as c:
            c.send_request("GET", "/?hang=1")
            assert not c.is_closed(0.5)
        with Conn(o.port) as c:
            c.send_request("GET", "/?bad=1")
            data = c.read_to_eof()
            assert data and not data.startswith(b"HTTP/"), data
        with Conn(o.port) as c:
            r = c.request("GET", "/?lf=1&body=x")
            assert r.bare_lf and r.body == b"x" and r.status == 200
            assert b"\r" not in r.raw_head


def test_origin_bad_request_gets_400():
    with Origin() as o, Conn(o.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
        r = c.read_response()
        assert r.status == 400 and c.is_closed()


def test_origin_unix_socket():
    path = os.path.join(tempfile.mkdtemp(prefix="pf-e2e-"), "origin.sock")
    with Origin(extra_listen=["unix:" + path]) as o:
        with Conn(unix=path) as c:
            e = c.request("GET", "/echo").json()
            assert e["peer"] == "unix"
        assert o.get("/").status == 200
    assert not os.path.exists(path)


def test_origin_sigterm_exits_0():
    o = Origin()
    with Conn(o.port) as c:
        c.request("GET", "/")
        assert o.stop() == 0
    try:
        socket.create_connection(("127.0.0.1", o.port), timeout=1).close()
        raise AssertionError("still listening after SIGTERM")
    except ConnectionRefusedError:
        pass


def test_origin_many_pipelined_requests():
    with Origin() as o, Conn(o.port) as c:
        n = 2000
        c.send(pf.build_request("GET", "/?size=3") * n)
        for _ in range(n):
            assert c.read_response().body == b"abc"
        assert o.stats()["requests"] == n
