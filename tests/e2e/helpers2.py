"""Extra helpers for the e2e tests (smuggling, limits, upstream, streaming, ops).

Python 3 standard library only; builds on pf.py without changing it.

    raw_exchange(port, data)   send raw bytes, read one response, report whether
                               the connection was closed afterwards
    assert_error_reply(...)    a proxy-made error: status, JSON {"error"},
                               X-Pilotfish-Error, Connection: close
    FakeOrigin                 a tiny scripted TCP server in a thread (for cases
                               pf-origin cannot play: a keep-alive connection that
                               dies when the next request arrives)
    ThreadedOrigin             base of the cache tests' scripted origins: a
                               listening socket, a thread per connection
    FullBacklogListener        a listening socket whose accept queue is full, so
                               connect() to it hangs (SYNs are dropped)
    RssSampler                 samples a process's VmRSS in a thread
    config(...)                pilotfish YAML with the usual placeholders
    read_json_lines(path)      parsed JSON lines of a file
"""

import json
import os
import socket
import threading
import time

import pf
from pf import Conn, ConnectionClosed

# ---- configuration ----

CONFIG_HEAD = """\
listen: "127.0.0.1:{{port}}"
workers: 1
admin: { listen: "127.0.0.1:{{admin_port}}" }
access_log: { path: off }
"""


def config(extra="", upstream_extra="", endpoints=None, head=CONFIG_HEAD):
    """A config with one upstream 'app'. extra: more top-level YAML (e.g. a
    'limits:' block); upstream_extra: more keys under upstreams.app (indented
    by 4); endpoints: list of endpoint strings (default the origin)."""
    eps = endpoints or ["127.0.0.1:{{origin_port}}"]
    text = head + extra
    if text and not text.endswith("\n"):
        text += "\n"
    text += "upstreams:\n  app:\n    endpoints: [%s]\n" % ", ".join('"%s"' % e for e in eps)
    for line in upstream_extra.strip("\n").splitlines():
        text += "    " + line + "\n"
    return text


# ---- raw exchanges ----

def connection_tokens(resp):
    return {t.strip().lower() for v in resp.header_all("Connection") for t in v.split(",")
            if t.strip()}


class NoResponse(AssertionError):
    pass


def raw_exchange(port, data, wait_close=2.0, timeout=3.0, method="GET", pieces=None):
    """Send data (bytes, or pieces: a list of writes with short pauses), read one
    response. Returns (response or None, closed, conn_leftover_bytes).
    response None: the connection was closed without an answer.
    closed: the peer closed the connection within wait_close after the response.
    Raises NoResponse (an AssertionError) when nothing came within timeout."""
    c = Conn(port, timeout=timeout)
    try:
        try:
            if pieces is not None:
                c.send_pieces(pieces)
            else:
                c.send(data)
        except OSError:
            pass  # the proxy may have answered and closed before all was written
        try:
            r = c.read_response(method)
        except (ConnectionClosed, ConnectionResetError):
            return None, True, c.buf
        except socket.timeout:
            raise NoResponse("no response within %.1fs, connection still open (got %r)"
                             % (timeout, c.buf[:200]))
        closed = c.is_closed(wait_close)
        if not closed and c.buf:
            # more bytes followed the response: read them out to show them
            leftover = c.buf
            return r, False, leftover
        return r, closed, c.buf
    finally:
        c.close()


def origin_settled(o, p, timeout=10.0):
    """The origin's stats once nothing is in transit between pilotfish and it:
    pilotfish has no upstream connection carrying a request, and the origin
    has exactly the connections pilotfish keeps idle in its pools open. (A
    connection pilotfish closed stays open at the origin until the origin has
    read, and counted, every request on it.) Call it once the client side is
    done, e.g. pilotfish closed the connection: any upstream connection opened
    before that is accepted by the origin before this query's, so it is seen.
    Use it instead of sleeping before asserting that a request did not reach
    the origin. Fails after timeout (a connection that never settles)."""
    last = {}

    def settled():
        m = p.metrics()
        active = sum(v for k, v in m.items()
                     if k.startswith("pilotfish_upstream_connections_active{"))
        idle = sum(v for k, v in m.items()
                   if k.startswith("pilotfish_upstream_connections_idle{"))
        st = o.stats()
        last.update(st, pilotfish_active=active, pilotfish_idle=idle)
        return st if active == 0 and st["active"] == idle else None

    try:
        return pf.eventually(settled, timeout=timeout, interval=0.02,
                             msg="pilotfish and the origin settled")
    except AssertionError:
        raise AssertionError("traffic between pilotfish and the origin did not settle "
                             "within %.0fs: %r" % (timeout, last))


def assert_error_reply(r, status, code=None, closed=None, what=""):
    """r is a proxy-made error reply: status, JSON body with "error",
    X-Pilotfish-Error (== code when given), Connection: close; and when
    closed is given, that the connection was closed."""
    where = (" (%s)" % what) if what else ""
    assert r is not None, "no response at all, the connection was just closed%s" % where
    assert r.status == status, "expected %d, got %r%s; head:\n%s" % (
        status, r, where, r.raw_head.decode("latin-1", "replace"))
    assert "close" in connection_tokens(r), "%d without Connection: close%s: %r" % (
        status, where, r.headers)
    err = r.header("X-Pilotfish-Error")
    assert err, "%d without X-Pilotfish-Error%s: %r" % (status, where, r.headers)
    try:
        body = r.json()
    except ValueError:
        raise AssertionError("%d body is not JSON%s: %r" % (status, where, r.body[:200]))
    assert isinstance(body, dict) and body.get("error"), \
        "%d JSON body without 'error'%s: %r" % (status, where, body)
    assert body["error"] == err, "body error %r != X-Pilotfish-Error %r%s" % (
        body["error"], err, where)
    if code is not None:
        assert err == code, "expected error %r, got %r%s" % (code, err, where)
    if closed is not None:
        assert closed, "connection not closed after %d%s" % (status, where)
    return body


# ---- a scripted origin in a thread ----

class ThreadedOrigin:
    """A listening socket on 127.0.0.1 (self.port) whose every connection runs self._serve(sock)
    in a thread of its own. Subclasses set their state, call listen(), and write _serve."""

    def listen(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    @staticmethod
    def read_head(s):
        """The bytes read up to the end of a request head; None if the peer closed first."""
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = s.recv(65536)
            if not d:
                return None
            buf += d
        return buf

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FakeOrigin:
    """A TCP server on 127.0.0.1:<free port>, one thread per connection.

    handler(conn_index, request_index, head_bytes, body_bytes) returns the
    raw response bytes to send, or None to close the connection without an
    answer (RST when rst=True). Requests are parsed just enough: head up to
    CRLFCRLF, then Content-Length or chunked body.
    """

    def __init__(self, handler, rst=False):
        self.handler = handler
        self.rst = rst
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.connections = 0
        self.requests = []  # (conn_index, request_index, head) in arrival order
        self.stopped = False
        self.conns = []
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def _accept_loop(self):
        while not self.stopped:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                idx = self.connections
                self.connections += 1
                self.conns.append(s)
            threading.Thread(target=self._serve, args=(s, idx), daemon=True).start()

    @staticmethod
    def _read_request(s, buf):
        while b"\r\n\r\n" not in buf:
            d = s.recv(65536)
            if not d:
                return None, buf
            buf += d
        i = buf.index(b"\r\n\r\n") + 4
        head, buf = buf[:i], buf[i:]
        lower = head.lower()
        body = b""
        if b"transfer-encoding: chunked" in lower:
            while True:
                while b"\r\n" not in buf:
                    d = s.recv(65536)
                    if not d:
                        return None, buf
                    buf += d
                line, buf = buf.split(b"\r\n", 1)
                n = int(line.split(b";")[0], 16)
                while len(buf) < n + 2:
                    d = s.recv(65536)
                    if not d:
                        return None, buf
                    buf += d
                body += buf[:n]
                buf = buf[n + 2:]
                if n == 0:
                    break
        else:
            n = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    n = int(line.split(b":", 1)[1])
            while len(buf) < n:
                d = s.recv(65536)
                if not d:
                    return None, buf
                buf += d
            body, buf = buf[:n], buf[n:]
        return (head, body), buf

    def _serve(self, s, idx):
        buf = b""
        n = 0
        try:
            while True:
                req, buf = self._read_request(s, buf)
                if req is None:
                    break
                head, body = req
                with self.lock:
                    self.requests.append((idx, n, head))
                out = self.handler(idx, n, head, body)
                n += 1
                if out is None:
                    if self.rst:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    break
                s.sendall(out)
        except OSError:
            pass
        finally:
            try:
                s.close()
            except OSError:
                pass

    def stop(self):
        self.stopped = True
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            for s in self.conns:
                try:
                    s.close()
                except OSError:
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def http_response(body=b"ok", status=200, extra=b""):
    return (b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s\r\n" % (status, len(body), extra)) + body


class FullBacklogListener:
    """A socket listening with backlog 0 whose accept queue is filled by a few
    connections that are never accepted: further SYNs are dropped by Linux, so
    a connect() to it neither succeeds nor fails until the caller gives up."""

    def __init__(self, fill=4):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fillers = []
        for _ in range(fill):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.setblocking(False)
            try:
                c.connect(("127.0.0.1", self.port))
            except (BlockingIOError, OSError):
                pass
            self.fillers.append(c)
        time.sleep(0.1)

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def connect_hangs(self, wait=0.5):
        """Check that a new connect() does not complete within wait seconds."""
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.settimeout(wait)
        try:
            c.connect(("127.0.0.1", self.port))
            return False
        except socket.timeout:
            return True
        except OSError:
            return False
        finally:
            c.close()

    def close(self):
        for c in self.fillers:
            c.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- memory ----

_sanitized = {}


def is_sanitized(binary):
    """True when `binary -V` reports a sanitizer build (its RSS is not meaningful:
    ASan keeps freed memory in quarantine)."""
    if binary not in _sanitized:
        import subprocess
        try:
            out = subprocess.run([binary, "-V"], capture_output=True, timeout=10).stdout
        except OSError:
            out = b""
        _sanitized[binary] = b"sanitize" in out
    return _sanitized[binary]


class RssSampler:
    """Samples proc.rss_kib() every interval seconds in a thread; .max_kib."""

    def __init__(self, proc, interval=0.005):
        self.proc = proc
        self.interval = interval
        self.max_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                v = self.proc.rss_kib()
            except (OSError, RuntimeError):
                return
            self.max_kib = max(self.max_kib, v)
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(2)


# ---- files ----

def read_json_lines(path):
    """Parsed JSON lines of path (missing file: []); non-JSON lines raise."""
    try:
        with open(path, "rb") as f:
            data = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return []
    out = []
    for line in data.splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                raise AssertionError("not a JSON line in %s: %r" % (path, line[:300]))
    return out


def wait_file_lines(path, n, timeout=5.0):
    """Wait until path holds at least n JSON lines; return them."""
    return pf.eventually(lambda: (lambda ls: ls if len(ls) >= n else None)(
        read_json_lines(path)), timeout=timeout, msg="%d JSON lines in %s" % (n, path))


def admin(p, method, target, headers=None, body=None):
    """An admin request with explicit headers (pf.Pilotfish.admin without body defaults)."""
    with Conn(p.admin_port) as c:
        return c.request(method, target, headers=headers, body=body)


def unix_path(tag):
    """A short unix socket path (sun_path is limited to 107 bytes)."""
    return "/tmp/pf-e2e-%d-%s-%d.sock" % (os.getpid(), tag, int(time.monotonic() * 1000) % 100000)
