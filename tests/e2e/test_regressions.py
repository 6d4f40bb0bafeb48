"""Regression tests for recent fixes (commit b37b791 and around):

- pipelined client input is bounded: a connection whose current request is
  slow cannot make pilotfish buffer everything the client keeps sending;
- upstream request_timeout counts from the end of the request, so an upload
  that takes longer than request_timeout succeeds -- yet an upload that
  stalls must still end (it does not since that change: see
  test_regress_stalled_upload_is_not_held_forever);
- a request pipelined after an admin request with a body is answered;
- a reload moves the admin listener (admin.listen) and changes
  limits.max_connections for new connections;
- a SIGHUP sent as soon as the listen port accepts is a reload (the signal
  handlers are in place before the listeners open);
- `workers: auto` follows the CPU affinity mask; `workers: N` starts N.

Each test is bounded in time, uses loopback only, and stops what it starts
by PID (pf.py)."""

import os
import re
import signal
import socket
import threading
import time

import pf
from pf import Conn, Origin, Pilotfish

import helpers2 as h2

MiB = 1 << 20


def refused(port, timeout=1.0):
    """True when a TCP connect to 127.0.0.1:port is refused."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def log_count(p, text):
    """How many lines of pilotfish's stderr contain text."""
    return sum(1 for line in p.stderr_text().splitlines() if text in line)


def wait_reloaded(p, before, timeout=20.0):
    """Wait for one more 'configuration reloaded' log line than before."""
    pf.eventually(lambda: not p.running() or log_count(p, "configuration reloaded") > before,
                  timeout=timeout, msg="'configuration reloaded' logged after SIGHUP")
    assert p.running(), "pilotfish exited (status %s) instead of reloading%s" % (
        p.proc.returncode, p.describe_output(600))
    assert log_count(p, "configuration reloaded") > before, p.describe_output(600)


def no_answer_within(c, wait):
    """The connection got nothing (no bytes, no close) within wait seconds."""
    c.settimeout(wait)
    try:
        data = c.sock.recv(65536)
    except socket.timeout:
        return True, None
    finally:
        c.settimeout(10)
    if data:
        c.buf += data
    return False, data


# ---- 1. pipelined input is bounded ----

PIPELINE_BYTES = 50 * MiB
PIPELINE_RSS_BUDGET_KIB = 32 * 1024


@pf.timeout(90)
def test_regress_pipelined_input_is_bounded_while_a_request_is_slow():
    """One connection: GET /?delay=3000, then ~50 MiB of small pipelined GETs
    written as fast as the socket takes them. pilotfish must stop reading the
    connection (its RSS stays below idle + 32 MiB), and once the slow response
    is ready it arrives, followed by the pipelined ones in order."""
    o = Origin()
    p = Pilotfish(h2.config(), origin=o)
    with o, p:
        # warm up: a first request, an arena, a pooled upstream connection
        with p.conn() as c:
            for _ in range(3):
                assert c.request("GET", "/?body=warm").status == 200
        time.sleep(0.3)
        idle = p.rss_kib()
        small = b"GET /?body=k HTTP/1.1\r\nHost: x\r\n\r\n"
        batch = small * (65536 // len(small))
        state = {"sent": 0, "blocked": False, "error": None}
        c = Conn(p.port, timeout=10)
        try:
            with h2.RssSampler(p) as rss:
                c.send(b"GET /?delay=3000&body=slow HTTP/1.1\r\nHost: x\r\n\r\n")
                t0 = time.monotonic()

                def writer():
                    s = c.sock
                    s.settimeout(2.0)  # a write blocked for more than 2 s: stop
                    try:
                        while state["sent"] < PIPELINE_BYTES:
                            mv = memoryview(batch)
                            while mv:
                                n = s.send(mv)
                                mv = mv[n:]
                                state["sent"] += n
                    except socket.timeout:
                        state["blocked"] = True
                    except OSError as e:
                        state["error"] = e

                t = threading.Thread(target=writer, daemon=True)
                t.start()
                t.join(60)
                assert not t.is_alive(), "the writer did not finish within 60 s"
                wrote = time.monotonic() - t0
                assert state["error"] is None, \
                    "writing the pipelined requests failed after %d bytes: %r" % (
                        state["sent"], state["error"])
                c.settimeout(15)
                r = c.read_response()
                took = time.monotonic() - t0
                assert r.status == 200 and r.body == b"slow", \
                    "the delayed (first) request's response: %r %r" % (r, r.body[:200])
                assert took >= 2.5, "the delayed response came after %.2fs (< 3 s delay)" % took
                # some of the pipelined ones, in order
                for i in range(200):
                    r = c.read_response()
                    assert r.status == 200 and r.body == b"k", \
                        "pipelined response #%d: %r %r" % (i + 1, r, r.body[:200])
                time.sleep(0.3)
        finally:
            c.close()
        assert p.running(), "pilotfish died (exit status %r)%s" % (p.returncode,
                                                                  p.describe_output())
        assert rss.samples > 10, "too few RSS samples: %d" % rss.samples
        if not h2.is_sanitized(p.bin):
            grew = rss.max_kib - idle
            assert grew < PIPELINE_RSS_BUDGET_KIB, \
                "RSS grew %d KiB over idle %d KiB (max %d KiB) while one connection " \
                "pipelined %.1f MiB behind a slow request (writer %s after %.1fs)" % (
                    grew, idle, rss.max_kib, state["sent"] / MiB,
                    "blocked" if state["blocked"] else "finished", wrote)
        # the connection's leftovers are gone with it; the proxy still serves
        assert pf.eventually(lambda: p.get("/?body=after").body == b"after", timeout=10)


# ---- 2. request_timeout counts from the end of the request ----

@pf.timeout(60)
def test_regress_upload_longer_than_request_timeout_succeeds():
    """request_timeout 1s; a 2 MiB body uploaded in pieces over ~2.5 s to /echo
    (which answers only after the whole body): 200 with the right body, with
    Content-Length and chunked. request_timeout still applies after the
    request: a 2 s delayed answer is a 504."""
    o = Origin()
    p = Pilotfish(h2.config(upstream_extra="request_timeout: 1s"), origin=o)
    size = 2 * MiB
    data = os.urandom(size)
    want_fnv = pf.fnv1a64(data)
    pieces = 25  # one every 0.1 s: 2.5 s in all, no gap near 1 s
    step = (size + pieces - 1) // pieces
    with o, p, p.conn(timeout=20) as c:
        for chunked in (False, True):
            what = "chunked" if chunked else "Content-Length"
            if chunked:
                c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            else:
                c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
            t0 = time.monotonic()
            try:
                for i in range(0, size, step):
                    time.sleep(0.1)
                    piece = data[i:i + step]
                    c.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                if chunked:
                    c.send(b"0\r\n\r\n")
            except OSError as e:
                # pilotfish answered early and closed: show what it said
                took = time.monotonic() - t0
                try:
                    c.settimeout(2)
                    early = c.read_response("POST")
                    said = "%r %s %r" % (early, early.header("X-Pilotfish-Error"), early.body[:200])
                except Exception as e2:  # noqa: B902
                    said = "no response (%r)" % e2
                raise AssertionError("a %s upload with request_timeout 1s was cut after %.2fs "
                                     "(%r); pilotfish answered: %s" % (what, took, e, said))
            uploaded = time.monotonic() - t0
            assert uploaded > 2.0, "the upload took only %.2fs" % uploaded
            r = c.read_response("POST")
            assert r.status == 200, \
                "a %s upload of %.1fs with request_timeout 1s: %r %s %r" % (
                    what, uploaded, r, r.header("X-Pilotfish-Error"), r.body[:200])
            e = r.json()
            assert e["body_length"] == size, "%s: the origin got %d of %d bytes" % (
                what, e["body_length"], size)
            assert e["body_fnv1a64"] == want_fnv, "%s: the origin got another body" % what
        # the timeout is in force: measured from the end of the request. The origin
        # answers after 10 s, far from the 1 s timeout, so that a loaded machine cannot
        # blur the two; the 504 itself is the proof, the time only has to be below 10 s
        t0 = time.monotonic()
        r = c.request("GET", "/?delay=10000")
        took = time.monotonic() - t0
        assert r.status == 504 and r.header("X-Pilotfish-Error") == "upstream_timeout", \
            "GET /?delay=10000 with request_timeout 1s: %r %r" % (r, r.body[:200])
        assert 0.8 <= took < 9, "504 after %.2fs, want about 1 s" % took


@pf.timeout(40)
def test_regress_stalled_upload_is_not_held_forever():
    """The other side of the previous test: an upload that stops making
    progress must still end. With every timeout at 1 s (header_timeout,
    idle_timeout, request_timeout), a POST that announces 100 bytes and sends
    10 must get an error (408/504) or a closed connection within a few
    seconds, not hold a client and an upstream connection indefinitely
    (docs/configuration.md, limits: "a stalled upload ends with the upstream's
    request_timeout (504)")."""
    o = Origin()
    cfg = h2.config("limits:\n  header_timeout: 1s\n  idle_timeout: 1s\n",
                    upstream_extra="request_timeout: 1s")
    p = Pilotfish(cfg, origin=o)
    with o, p:
        for target in ("/echo", "/echo?raw=1"):
            with Conn(p.port, timeout=6) as c:
                c.send(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
                       b"0123456789" % target.encode())
                t0 = time.monotonic()
                got = b""
                try:
                    while True:
                        d = c.sock.recv(65536)
                        if not d:
                            break
                        got += d
                except ConnectionResetError:
                    pass
                except socket.timeout:
                    raise AssertionError(
                        "POST %s stalled after 10 of 100 body bytes: the connection is still "
                        "open after %.1fs (with header_timeout, idle_timeout and "
                        "request_timeout all 1s); received so far: %r" % (
                            target, time.monotonic() - t0, got[:300]))
                # closed: with a 408/504, or cut after a raw echo's 200 head, or silently
                status = got[9:12]
                assert not got or status in (b"408", b"504", b"200"), \
                    "POST %s stalled: %r" % (target, got[:300])
        assert p.running()


# ---- 3. a request pipelined after an admin request with a body ----

def test_regress_admin_pipelined_after_request_with_body():
    o = Origin()
    p = Pilotfish(h2.config(), origin=o)
    with o, p:
        # in one write
        with Conn(p.admin_port, timeout=5) as c:
            c.send(b"POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
                   b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            r1 = c.read_response("POST")
            assert r1.status == 200, "POST /reload with a body: %r %r" % (r1, r1.body)
            assert r1.json().get("result") == "success", r1.body
            try:
                r2 = c.read_response()
            except (socket.timeout, pf.ConnectionClosed) as e:
                raise AssertionError("GET /health pipelined after POST /reload (with a body) "
                                     "on the admin port got no response: %r" % e)
            assert r2.status == 200 and r2.json() == {"status": "ok"}, (r2, r2.body)
            # the connection is still usable
            r3 = c.request("GET", "/live")
            assert r3.status == 200, r3
        # the body and the next request arriving together in a later write
        with Conn(p.admin_port, timeout=5) as c:
            c.send_pieces([b"POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n",
                           b"{}GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                           b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n"])
            r1 = c.read_response("POST")
            assert r1.status == 200, (r1, r1.body)
            try:
                r2 = c.read_response()
                r3 = c.read_response()
            except (socket.timeout, pf.ConnectionClosed) as e:
                raise AssertionError("requests pipelined after POST /reload (body in a later "
                                     "write) got no response: %r" % e)
            assert r2.status == 200 and r2.json() == {"status": "ok"}, (r2, r2.body)
            assert r3.status == 200 and r3.json() == {"status": "ready"}, (r3, r3.body)
        assert p.running()


# ---- 4. reload: admin.listen and limits.max_connections ----

def test_regress_reload_moves_admin_listener():
    o = Origin()
    p = Pilotfish(h2.config(), origin=o)
    with o, p:
        old = p.admin_port
        text = h2.config()
        for new in (pf.free_port(), old):  # move it, then back
            before = log_count(p, "configuration reloaded")
            prev = p.admin_port
            p.vars["admin_port"] = new
            p.write_config(text)
            p.reload()
            wait_reloaded(p, before)
            pf.eventually(lambda: not refused(new), timeout=5,
                          msg="the new admin address 127.0.0.1:%d accepts" % new)
            p.admin_port = new
            r = p.admin("GET", "/health")
            assert r.status == 200 and r.json() == {"status": "ok"}, (r, r.body)
            r = p.admin("GET", "/config")
            assert r.status == 200, r
            assert "127.0.0.1:%d" % new in r.text(), "GET /config: %r" % r.body[:400]
            assert pf.eventually(lambda: refused(prev), timeout=5,
                                 msg="the old admin address 127.0.0.1:%d refuses" % prev)
            assert p.get("/").status == 200  # the proxy listener is untouched
        assert p.running()


def sighup_caught(pid):
    """True when pid has a handler for SIGHUP (bit 0 of SigCgt in /proc/PID/status)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)) != 0
    return False


def test_regress_sighup_as_soon_as_the_port_accepts_is_a_reload():
    """A SIGHUP sent the moment the listen port accepts is a reload: the
    signal handlers are in place before any listener opens, so a reload
    right after start never meets SIGHUP's default action (the end of the
    process). Five starts, each signalled at its first accepted connection."""
    o = Origin()
    with o:
        for _ in range(5):
            p = Pilotfish(h2.config(), origin=o, wait=False)
            with p:
                deadline = time.monotonic() + 20
                while True:
                    assert p.running(), "pilotfish exited at start" + p.describe_output()
                    assert time.monotonic() < deadline, "nothing accepts on %d" % p.port
                    try:
                        socket.create_connection(("127.0.0.1", p.port), timeout=1).close()
                        break
                    except OSError:
                        time.sleep(0.001)
                caught = sighup_caught(p.proc.pid)
                p.reload()
                assert caught, "the listen port accepts before SIGHUP has its handler"
                wait_reloaded(p, 0)
                assert p.running()
                p.wait_ready()
                assert p.get("/").status == 200


def test_regress_failed_reload_applies_nothing():
    """A reload whose admin address cannot be bound fails whole: the new
    listen address it also asked for is not opened, the old ones stay."""
    o = Origin()
    extra = pf.free_port()
    p = Pilotfish(h2.config(), origin=o)
    with o, p, socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        text = h2.config(head='listen: ["127.0.0.1:{{port}}", "127.0.0.1:%d"]\n'
                              'workers: 1\nadmin: { listen: "127.0.0.1:%d" }\n'
                              'access_log: { path: off }\n' % (extra, taken))
        p.write_config(text)
        r = p.admin("POST", "/reload")
        assert r.status == 400 and r.json()["result"] == "failure", (r, r.body)
        assert refused(extra), "a failed reload opened the new listen address %d" % extra
        assert p.get("/").status == 200
        assert p.admin("GET", "/health").status == 200


def limits_config(n):
    return h2.config("limits:\n  max_connections: %d\n" % n)


@pf.timeout(60)
def test_regress_reload_changes_max_connections():
    """workers 1, max_connections 2: a 3rd connection waits; a reload to 4 lets
    it and a 4th in, a 5th waits; a reload back to 2 holds new connections
    until fewer than 2 are open."""
    o = Origin()
    p = Pilotfish(limits_config(2), origin=o)
    conns = []

    def new_conn(tag):
        c = Conn(p.port, timeout=10)
        conns.append(c)
        c.send_request("GET", "/?body=" + tag)
        return c

    def served(c, tag, what):
        c.settimeout(5)
        try:
            r = c.read_response()
        except (socket.timeout, pf.ConnectionClosed) as e:
            raise AssertionError("%s: no answer (%r)" % (what, e))
        assert r.status == 200 and r.body == tag.encode(), (what, r, r.body[:200])

    def waits(c, what):
        ok, data = no_answer_within(c, 1.2)
        assert ok, "%s: %s" % (what, "answered %r" % data[:200] if data
                               else "closed instead of waiting in the backlog")

    with o, p:
        try:
            a, b = new_conn("a"), new_conn("b")
            served(a, "a", "1st connection")
            served(b, "b", "2nd connection")
            c3 = new_conn("c3")
            waits(c3, "3rd connection with max_connections 2")

            before = log_count(p, "configuration reloaded")
            p.write_config(limits_config(4))
            p.reload()
            wait_reloaded(p, before)
            served(c3, "c3", "the waiting 3rd connection after a reload to max_connections 4")
            c4 = new_conn("c4")
            served(c4, "c4", "4th connection with max_connections 4")
            c5 = new_conn("c5")
            waits(c5, "5th connection with max_connections 4")
            a.close()
            served(c5, "c5", "the waiting 5th connection after one of 4 closed")
            # now b, c3, c4, c5 are open: back to 2
            before = log_count(p, "configuration reloaded")
            p.write_config(limits_config(2))
            p.reload()
            wait_reloaded(p, before)
            # the worker has taken the new limit once it answers after the reload
            # (the reload mails the worker before it logs)
            r = c5.request("GET", "/?body=synced")
            assert r.status == 200 and r.body == b"synced", r
            c6 = new_conn("c6")
            waits(c6, "a new connection with 4 open after a reload to max_connections 2")
            b.close()
            c3.close()
            waits(c6, "a new connection with 2 open and max_connections 2")
            c4.close()
            served(c6, "c6", "the waiting connection once 1 of max 2 was open")
            # the open ones keep working
            r = c5.request("GET", "/?body=still")
            assert r.status == 200 and r.body == b"still", r
        finally:
            for c in conns:
                c.close()
        assert p.running()


# ---- 5. workers ----

def cgroup_cpus():
    """The CPU quota, rounded up, as pilotfish reads it (0: none)."""
    q = period = 0
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            parts = f.read().split()
        if parts and parts[0] != "max":
            q, period = int(parts[0]), int(parts[1])
    except (OSError, ValueError, IndexError):
        try:
            with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
                q = int(f.read().split()[0])
            with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
                period = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            q = period = 0
    if q <= 0 or period <= 0:
        return 0
    return (q + period - 1) // period


def expected_auto(cpus):
    quota = cgroup_cpus()
    n = cpus if not quota or quota >= cpus else quota
    return max(1, n)


STARTED = re.compile(r"started: (\d+) workers")


def started_workers(p):
    def find():
        m = STARTED.search(p.stderr_text())
        return int(m.group(1)) if m else None

    return pf.eventually(find, timeout=5, msg="the 'started: N workers' log line")


def run_workers(o, workers, pin=None):
    """Start pilotfish with `workers: workers` (pinned to CPU pin with taskset
    when given), check it serves, return (workers logged, threads - workers)."""
    head = h2.CONFIG_HEAD.replace("workers: 1", "workers: %s" % workers)
    p = Pilotfish(h2.config(head=head), origin=o, start=False)
    argv = [p.bin, "-c", p.config_path]
    if pin is not None:
        argv = ["taskset", "-c", str(pin)] + argv
    p.spawn(argv, env=p.env)
    with p:
        p.wait_ready()
        for _ in range(4):
            assert p.get("/?body=w").body == b"w"
        n = started_workers(p)
        threads = len(os.listdir("/proc/%d/task" % p.pid))
        if pin is not None:
            allowed = os.sched_getaffinity(p.pid)
            assert allowed == {pin}, "taskset did not pin pilotfish: %r" % allowed
        return n, threads - n


def test_regress_workers_auto_follows_affinity_and_fixed_count():
    if not os.path.exists("/usr/bin/taskset") and not os.path.exists("/bin/taskset"):
        raise pf.Skip("taskset not installed")
    cpus = os.sched_getaffinity(0)
    o = Origin()
    with o:
        pin = min(cpus)
        n, other1 = run_workers(o, "auto", pin=pin)
        assert n == 1, "workers: auto under taskset -c %d started %d workers, want 1" % (pin, n)
        n, other2 = run_workers(o, "auto")
        want = expected_auto(len(cpus))
        assert n == want, "workers: auto with %d CPUs in the affinity mask (cgroup quota %s) " \
            "started %d workers, want %d" % (len(cpus), cgroup_cpus() or "none", n, want)
        n, other3 = run_workers(o, 3)
        assert n == 3, "workers: 3 started %d workers" % n
        # the logged count is the real thread count (other threads do not vary)
        assert other1 == other2 == other3, \
            "threads besides the workers differ: %d, %d, %d" % (other1, other2, other3)
