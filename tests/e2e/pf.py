"""Helpers for pilotfish's end-to-end tests (Python 3 standard library only).

Processes:
    Origin()        bin/pf-origin on a free port (env ORIGIN_BIN)
    Pilotfish(cfg)  bin/pilotfish -c <tmp>/pilotfish.yaml (env PILOTFISH_BIN)
Both are context managers, are stopped by PID, and are also stopped at exit.
Their stderr is scanned for sanitizer reports whenever they stop (see
"sanitizer reports" below): run.py fails the test that started them.

Raw HTTP (no http.client: it hides framing):
    Conn(port)                 a socket with a read buffer
    Conn.request(...)          send one request, read one response
    send_pieces(sock, pieces)  several writes with short sleeps in between
    Response                   status, headers list, body, framing details
"""

import atexit
import json
import os
import re
import signal
import random
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BASIC_CONFIG = """\
listen: "127.0.0.1:{{port}}"
workers: 1
admin: { listen: "127.0.0.1:{{admin_port}}" }
access_log: { path: off }
upstreams:
  app:
    endpoints: ["127.0.0.1:{{origin_port}}"]
"""


class Skip(Exception):
    """Raise to skip a test (run.py prints it as 'skip')."""


def timeout(seconds):
    """Decorator: this test's hard timeout in seconds (run.py's default is 30)."""

    def set_timeout(fn):
        fn.timeout = seconds
        return fn

    return set_timeout


def _bin(env, default):
    path = os.environ.get(env) or default
    if os.path.isabs(path):
        return path
    if os.path.exists(path):
        return os.path.abspath(path)
    return os.path.join(ROOT, path)


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


_port_rng = random.Random(os.getpid() ^ int(time.time() * 1000))


def free_port():
    """A port on 127.0.0.1 that was free a moment ago, picked below the
    ephemeral range: a port the kernel may hand out as the source port of some
    outgoing connection could be taken again before the test binds it."""
    lo, _ = _ephemeral_range()
    for _ in range(200):
        port = _port_rng.randint(max(1024, lo - 12000), lo - 1)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, host="127.0.0.1", timeout=10.0, proc=None):
    """Wait until host:port accepts a connection; fail early if proc exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("%s exited with status %s before listening on %s:%d%s"
                               % (proc.name, proc.returncode, host, port, proc.describe_output()))
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("nothing accepts on %s:%d after %.1fs" % (host, port, timeout))
            time.sleep(0.02)


# ---- sanitizer reports ----
#
# A sanitizer build (make SANITIZE=1) prints its reports on stderr and goes on
# (UBSan) or exits (ASan, and LeakSanitizer at exit) with SANITIZER_EXITCODE.
# Neither need break the test that provoked it, so every Pilotfish and Origin
# is checked when it stops: new stderr is scanned for a report, and its exit
# status compared with SANITIZER_EXITCODE; what is found is kept in _reports,
# and run.py fails the test with it. A process killed with SIGKILL has no leak
# check, but what it printed before is still scanned.

SANITIZER_EXITCODE = 23  # pilotfish and pf-origin never exit with it themselves
SANITIZER_DIR = os.path.join(ROOT, "tests", "e2e", "sanitizer")

_SANITIZER_RE = re.compile(r"ERROR: (?:Address|Leak)Sanitizer|: runtime error: |"
                           r"SUMMARY: (?:Address|UndefinedBehavior|Leak)Sanitizer|"
                           r"LeakSanitizer has encountered a fatal error")
_reports = []  # (what, first line, excerpt) found since the test started


def _add_options(var, options):
    """Put options in front of env var (a colon list): later ones win, so what the
    caller set already overrides these defaults."""
    old = os.environ.get(var, "")
    os.environ[var] = options + (":" + old if old else "")


def _sanitizer_env():
    """Defaults for every sanitizer build a test starts (inherited by the children):
    reports on stderr (no log_path), a distinct exit status, the stricter ASan
    checks that cost little here (a pointer to a callback's stack frame used
    after it returned; string functions reading past the terminating NUL),
    stacks for UBSan, keep going after a UBSan report so one run shows them
    all, and the narrow suppressions in SANITIZER_DIR (each with the reason it
    is there). The sanitizers share the options common to them (log_path,
    exitcode, ...): the last of ASAN_, LSAN_, UBSAN_OPTIONS to set one wins."""
    supp = lambda name: os.path.join(SANITIZER_DIR, name)  # noqa: E731
    _add_options("ASAN_OPTIONS", "exitcode=%d:detect_leaks=1:detect_stack_use_after_return=1:"
                 "strict_string_checks=1" % SANITIZER_EXITCODE)
    _add_options("LSAN_OPTIONS", "suppressions=%s:print_suppressions=0" % supp("lsan.supp"))
    _add_options("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=0:suppressions=%s"
                 % supp("ubsan.supp"))


_sanitizer_env()


def find_sanitizer_report(text, lines=30):
    """(first line, excerpt) of the first sanitizer report in text, or None. The
    excerpt starts at the report's "====" rule (when there is one) and holds up
    to `lines` lines."""
    m = _SANITIZER_RE.search(text)
    if m is None:
        return None
    all_lines = text.split("\n")
    at = text.count("\n", 0, m.start())
    start = at
    for j in (at - 1, at - 2):
        if j >= 0 and all_lines[j].startswith("====="):
            start = j
            break
    return all_lines[at].strip(), "\n".join(all_lines[start:start + lines])


def check_sanitizer_output(what, text, status=None):
    """Record a sanitizer report in text (the stderr of `what`), or an exit status
    that says there was one; the test that runs this fails (run.py)."""
    found = find_sanitizer_report(text)
    if found is None and status == SANITIZER_EXITCODE:
        found = ("exit status %d (a sanitizer's) without a report on stderr" % status,
                 text[-2000:])
    if found is not None:
        _reports.append((what, found[0], found[1]))


def sanitizer_reports():
    """[(what, first line, excerpt)] recorded in this test so far."""
    return list(_reports)


# ---- processes ----

_live = []  # every started, not yet stopped Process


def _record_pid(pid):
    """Tell run.py which PIDs to stop should the test be killed."""
    path = os.environ.get("PF_E2E_PIDFILE")
    if path:
        with open(path, "a") as f:
            f.write("%d\n" % pid)


class Process:
    """A child process with stdout and stderr captured to files in a temp dir."""

    name = "process"
    sanitized = False  # scan stderr for sanitizer reports when it stops

    def __init__(self):
        self.proc = None
        self.checked_to = 0  # stderr bytes scanned for sanitizer reports
        self.dir = tempfile.mkdtemp(prefix="pf-e2e-")
        self.stdout_path = os.path.join(self.dir, "stdout")
        self.stderr_path = os.path.join(self.dir, "stderr")

    @property
    def pid(self):
        return self.proc.pid

    @property
    def returncode(self):
        return self.proc.returncode if self.proc else None

    def spawn(self, argv, env=None):
        full_env = dict(os.environ)
        full_env.update(env or {})
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         env=full_env, cwd=ROOT)
        _live.append(self)
        _record_pid(self.proc.pid)

    def poll(self):
        return self.proc.poll()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        if self.running():
            os.kill(self.proc.pid, sig)

    def stop(self, timeout=10.0, sig=signal.SIGTERM):
        """Send sig (SIGTERM), wait up to timeout, then SIGKILL. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            except ProcessLookupError:
                pass
        if self in _live:
            _live.remove(self)
        self.check_sanitizer()
        return self.proc.returncode

    def kill(self):
        return self.stop(sig=signal.SIGKILL)

    def wait(self, timeout=None):
        rc = self.proc.wait(timeout)
        self.check_sanitizer()
        return rc

    def check_sanitizer(self):
        """Once the process has ended: scan what it wrote to stderr since the last
        check (it may be started again) and its exit status; see "sanitizer
        reports" above."""
        if not self.sanitized or self.proc is None or self.proc.poll() is None:
            return
        with open(self.stderr_path, "rb") as f:
            f.seek(self.checked_to)
            data = f.read()
        self.checked_to += len(data)
        if data or self.proc.returncode == SANITIZER_EXITCODE:
            check_sanitizer_output("%s (pid %d)" % (self.name, self.proc.pid),
                                   data.decode("utf-8", "replace"), self.proc.returncode)

    def stdout_text(self):
        with open(self.stdout_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stderr_text(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def describe_output(self, limit=1500):
        text = self.stderr_text()[-limit:]
        return ("; stderr:\n" + text) if text.strip() else ""

    def rss_kib(self):
        """Resident set size from /proc/PID/status, in KiB."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS for pid %d" % self.proc.pid)

    def open_fds(self):
        return len(os.listdir("/proc/%d/fd" % self.proc.pid))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def stop_all():
    """Stop every process this test started (by PID), newest first. A sanitizer
    build gets longer: its leak check at exit takes a while."""
    for p in reversed(list(_live)):
        try:
            p.stop(timeout=15 if p.sanitized else 5)
        except Exception:
            pass


atexit.register(stop_all)


class Origin(Process):
    """bin/pf-origin on 127.0.0.1:<free port>; extra --listen addresses may be given."""

    name = "pf-origin"
    sanitized = True

    def __init__(self, port=None, extra_listen=(), start=True, env=None):
        super().__init__()
        self.port = port or free_port()
        self.extra_listen = list(extra_listen)
        self.env = env or {}
        self.bin = _bin("ORIGIN_BIN", "bin/pf-origin")
        if start:
            self.start()

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def start(self):
        argv = [self.bin, "--listen", self.addr]
        for a in self.extra_listen:
            argv += ["--listen", a]
        self.spawn(argv, env=self.env)
        wait_port(self.port, proc=self)
        return self

    def get(self, target, headers=None):
        """One request straight to the origin on a fresh connection."""
        with Conn(self.port) as c:
            return c.request("GET", target, headers=headers)

    def stats(self):
        """{"connections", "active", "requests"}, not counting this query."""
        return self.get("/__stats").json()

    def reset_stats(self):
        return self.get("/__reset_stats").json()


class Pilotfish(Process):
    """pilotfish with a YAML config written to a temp dir.

    In the config text, {{name}} is replaced by vars[name]; {{port}} and
    {{admin_port}} get free ports unless given, {{origin_port}} is the
    origin's port when origin= is given, {{dir}} is the temp dir.
    """

    name = "pilotfish"
    sanitized = True

    def __init__(self, config=BASIC_CONFIG, origin=None, vars=None, env=None, args=(),
                 start=True, wait=True):
        super().__init__()
        self.vars = {"port": free_port(), "admin_port": free_port(), "dir": self.dir}
        if origin is not None:
            self.vars["origin_port"] = origin.port
        self.vars.update(vars or {})
        self.port = int(self.vars["port"])
        self.admin_port = int(self.vars["admin_port"])
        self.env = env or {}
        self.args = list(args)
        self.bin = _bin("PILOTFISH_BIN", "bin/pilotfish")
        self.config_path = os.path.join(self.dir, "pilotfish.yaml")
        self.write_config(config)
        if start:
            self.start(wait=wait)

    def render(self, text):
        def sub(m):
            key = m.group(1)
            if key not in self.vars:
                raise KeyError("config uses {{%s}} but no value was given" % key)
            return str(self.vars[key])

        return re.sub(r"\{\{(\w+)\}\}", sub, text)

    def write_config(self, text):
        """(Re)write the config file; call reload() to apply it."""
        self.config_text = self.render(text)
        with open(self.config_path, "w") as f:
            f.write(self.config_text)

    def start(self, wait=True):
        self.spawn([self.bin, "-c", self.config_path] + self.args, env=self.env)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=10.0):
        wait_port(self.port, timeout=timeout, proc=self)
        wait_port(self.admin_port, timeout=timeout, proc=self)

    def reload(self):
        self.send_signal(signal.SIGHUP)

    def check_config(self, text=None):
        """pilotfish -t: (exit status, output)."""
        path = self.config_path
        if text is not None:
            path = os.path.join(self.dir, "check.yaml")
            with open(path, "w") as f:
                f.write(self.render(text))
        r = subprocess.run([self.bin, "-t", "-c", path], capture_output=True, timeout=10,
                           cwd=ROOT)
        check_sanitizer_output("pilotfish -t", r.stderr.decode("utf-8", "replace"),
                               r.returncode)
        return r.returncode, (r.stdout + r.stderr).decode("utf-8", "replace")

    def conn(self, timeout=10.0):
        return Conn(self.port, timeout=timeout)

    def get(self, target, headers=None, **kw):
        """One request through the proxy on a fresh connection."""
        with self.conn() as c:
            return c.request("GET", target, headers=headers, **kw)

    def admin(self, method, target, headers=None, body=None):
        with Conn(self.admin_port) as c:
            return c.request(method, target, headers=headers, body=body)

    def metrics(self):
        """Prometheus samples as {'name{labels}': value}."""
        out = {}
        for line in self.admin("GET", "/metrics").text().splitlines():
            if not line or line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                pass
        return out


# ---- raw HTTP ----

class Response:
    """One parsed HTTP response."""

    def __init__(self):
        self.version = ""     # "HTTP/1.1"
        self.status = 0
        self.reason = ""
        self.headers = []     # [(name, value)] in order, as received
        self.body = b""
        self.trailers = []    # [(name, value)] after a chunked body
        self.framing = ""     # "length", "chunked", "close" or "none"
        self.chunk_sizes = [] # sizes of the chunks of a chunked body
        self.bare_lf = False  # the head used bare LF line ends
        self.raw_head = b""
        self.interim = []     # 1xx responses read before this one

    def header(self, name, default=None):
        """First value of header name (case-insensitive)."""
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def has_header(self, name):
        return self.header(name) is not None

    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<Response %d %s, %d headers, %d body bytes, %s>" % (
            self.status, self.reason, len(self.headers), len(self.body), self.framing)


class ConnectionClosed(Exception):
    pass


def build_request(method, target, headers=None, body=None, version="1.1", host=None):
    """Request bytes. Adds Host (unless given or host is False) and Content-Length
    for a bytes body unless Transfer-Encoding or Content-Length is given; a body
    that is a list of bytes is sent chunked (one chunk each)."""
    headers = list(headers.items() if isinstance(headers, dict) else headers or [])
    names = {k.lower() for k, _ in headers}
    if "host" not in names and host is not False:
        headers.insert(0, ("Host", host or "127.0.0.1"))
    payload = b""
    if isinstance(body, (list, tuple)):
        if "transfer-encoding" not in names:
            headers.append(("Transfer-Encoding", "chunked"))
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in body if p) + b"0\r\n\r\n"
    elif body is not None:
        if isinstance(body, str):
            body = body.encode()
        if "content-length" not in names and "transfer-encoding" not in names:
            headers.append(("Content-Length", str(len(body))))
        payload = body
    head = "%s %s HTTP/%s\r\n" % (method, target, version)
    head += "".join("%s: %s\r\n" % (k, v) for k, v in headers)
    return head.encode("latin-1") + b"\r\n" + payload


class Conn:
    """A client connection: a socket plus a read buffer (for pipelining)."""

    def __init__(self, port=None, host="127.0.0.1", timeout=10.0, unix=None):
        if unix:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(unix)
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = port
        self.buf = b""
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def settimeout(self, t):
        self.sock.settimeout(t)

    # -- writing --

    def send(self, data):
        self.sock.sendall(data)

    def send_pieces(self, pieces, pause=0.05):
        send_pieces(self.sock, pieces, pause)

    def send_request(self, method, target, headers=None, body=None, version="1.1", host=None):
        self.send(build_request(method, target, headers, body, version, host))

    # -- reading --

    def _fill(self):
        if self.eof:
            raise ConnectionClosed("connection closed by peer")
        data = self.sock.recv(262144)
        if not data:
            self.eof = True
            raise ConnectionClosed("connection closed by peer")
        self.buf += data

    def read_until(self, sep, limit=1 << 20):
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out, self.buf = self.buf[:i + len(sep)], self.buf[i + len(sep):]
                return out
            if len(self.buf) > limit:
                raise ValueError("no %r within %d bytes" % (sep, limit))
            self._fill()

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_to_eof(self):
        try:
            while True:
                self._fill()
        except ConnectionClosed:
            pass
        out, self.buf = self.buf, b""
        return out

    def read_line(self):
        return self.read_until(b"\n")

    def is_closed(self, wait=0.5):
        """True if the peer closed the connection (EOF or reset) within wait seconds."""
        if self.buf:
            return False
        old = self.sock.gettimeout()
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(1)
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        finally:
            self.sock.settimeout(old)
        if data:
            self.buf += data
            return False
        self.eof = True
        return True

    def _read_head(self):
        while True:
            a, b = self.buf.find(b"\r\n\r\n"), self.buf.find(b"\n\n")
            ends = [(i, n) for i, n in ((a, 4), (b, 2)) if i >= 0]
            if ends:
                i, n = min(ends)
                head, self.buf = self.buf[:i + n], self.buf[i + n:]
                return head
            if len(self.buf) > (1 << 20):
                raise ValueError("response head over 1 MiB")
            self._fill()

    def read_response(self, method="GET", skip_interim=True):
        """Read one response; framing per RFC 9112 6.3. 1xx responses are kept in
        .interim of the final one (or returned alone when skip_interim is False)."""
        interim = []
        while True:
            r = self._read_one(method)
            if 100 <= r.status < 200 and r.status != 101 and skip_interim:
                interim.append(r)
                continue
            r.interim = interim
            return r

    def _read_one(self, method):
        r = Response()
        head = self._read_head()
        r.raw_head = head
        r.bare_lf = b"\r\n" not in head
        lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
        m = re.match(r"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
        if not m:
            raise ValueError("bad status line %r" % lines[0])
        r.version, r.status, r.reason = m.group(1), int(m.group(2)), m.group(3) or ""
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError("bad header line %r" % line)
            r.headers.append((name, value.strip(" \t")))
        self._read_body(r, method)
        return r

    def _read_body(self, r, method):
        te = ",".join(r.header_all("Transfer-Encoding")).lower()
        cl = r.header_all("Content-Length")
        if method == "HEAD" or 100 <= r.status < 200 or r.status in (204, 304):
            r.framing = "none"
        elif te:
            if te.replace(" ", "").split(",")[-1] != "chunked":
                raise ValueError("Transfer-Encoding %r without final chunked" % te)
            r.framing = "chunked"
            self._read_chunked(r)
        elif cl:
            if len(set(cl)) != 1 or not cl[0].isdigit():
                raise ValueError("bad Content-Length %r" % cl)
            r.framing = "length"
            r.body = self.read_exact(int(cl[0]))
        else:
            r.framing = "close"
            r.body = self.read_to_eof()

    def _read_chunked(self, r):
        parts = []
        while True:
            line = self.read_until(b"\r\n")
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                break
            parts.append(self.read_exact(size))
            r.chunk_sizes.append(size)
            if self.read_exact(2) != b"\r\n":
                raise ValueError("chunk not followed by CRLF")
        while True:
            line = self.read_until(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.decode("latin-1").partition(":")
            r.trailers.append((name, value.strip()))
        r.body = b"".join(parts)

    def request(self, method, target, headers=None, body=None, version="1.1", host=None):
        """Send one request and read its response (keep-alive client)."""
        self.send_request(method, target, headers, body, version, host)
        return self.read_response(method)


def echo_raw(port, data, target="/echo?raw=1", chunked=False, piece=65536, timeout=60.0):
    """POST data to target (pf-origin streams it back) while reading the answer in
    parallel, so neither side's buffers need to hold it all. Returns the Response."""
    import threading
    with Conn(port, timeout=timeout) as c:
        if chunked:
            head = b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        else:
            head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"%d" % len(data) \
                + b"\r\n\r\n"
        head = head.replace(b"%s", target.encode(), 1)
        errors = []

        def writer():
            try:
                c.sock.sendall(head)
                for i in range(0, len(data), piece):
                    p = data[i:i + piece]
                    c.sock.sendall(b"%x\r\n%s\r\n" % (len(p), p) if chunked else p)
                if chunked:
                    c.sock.sendall(b"0\r\n\r\n")
            except OSError as e:
                errors.append(e)

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        r = c.read_response("POST")
        t.join(timeout)
        if errors:
            raise AssertionError("sending the body failed: %r" % errors[0])
        return r


def send_pieces(sock, pieces, pause=0.05):
    """Write each piece separately with a short pause, so they arrive in separate reads."""
    for i, p in enumerate(pieces):
        if i:
            time.sleep(pause)
        sock.sendall(p.encode("latin-1") if isinstance(p, str) else p)


def request(port, method, target, headers=None, body=None, version="1.1", timeout=10.0):
    """One request on a fresh connection, closed afterwards."""
    with Conn(port, timeout=timeout) as c:
        return c.request(method, target, headers=headers, body=body, version=version)


def get(port, target, headers=None, **kw):
    return request(port, "GET", target, headers=headers, **kw)


def pattern(n, offset=0):
    """The body pf-origin sends for size=n: byte i = 'a' + i % 26."""
    alphabet = b"abcdefghijklmnopqrstuvwxyz"
    start = offset % 26
    reps = (start + n) // 26 + 1
    return (alphabet * reps)[start:start + n]


def fnv1a64(data):
    """The checksum pf-origin's /echo reports as body_fnv1a64."""
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def echo_headers(echo, name):
    """Values of header name (case-insensitive) in an /echo JSON answer."""
    name = name.lower()
    return [v for k, v in echo["headers"] if k.lower() == name]


def eventually(fn, timeout=5.0, interval=0.05, msg="condition"):
    """Poll fn() until it returns a true value; return it, or fail after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("%s not met within %.1fs (last: %r)" % (msg, timeout, last))
