"""Operating pilotfish (docs/operations.md):
command line, startup errors, admin API and its token, reload (signal and
admin, valid, invalid, under load, listeners), drain and shutdown, access log
and its reopening, request ids and trace context."""

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pf
from pf import Conn, Origin, Pilotfish

import helpers2 as h2

TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

LOG_HEAD = """\
listen: "127.0.0.1:{{port}}"
workers: 1
admin: { listen: "127.0.0.1:{{admin_port}}" }
access_log: { path: "{{dir}}/access.log" }
"""

ACCESS_FIELDS = ["ts", "request_id", "trace_id", "client", "method", "path", "status",
                 "bytes_in", "bytes_out", "duration_ms", "upstream", "endpoint", "upstream_ms",
                 "error"]


def stderr_json_lines(p, since=0):
    """(JSON lines of pilotfish's stderr after byte offset since, non-JSON lines)."""
    text = p.stderr_text()[since:]
    good, bad = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            good.append(json.loads(line))
        except ValueError:
            bad.append(line)
    return good, bad


def wait_exit(p, timeout):
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


# ---- command line ----

def test_ops_check_config_ok_and_errors():
    p = Pilotfish(h2.config(endpoints=["127.0.0.1:3000"]), start=False)
    rc, out = p.check_config()
    assert rc == 0, (rc, out)
    assert "configuration OK" in out, out
    bad = h2.config(endpoints=["127.0.0.1:3000"], upstream_extra="bogus_key: 1") + \
        "limits:\n  max_heders: 10\n"
    rc, out = p.check_config(bad)
    assert rc == 1, (rc, out)
    path = os.path.join(p.dir, "check.yaml")
    lines = [l for l in out.splitlines() if l.strip()]
    errs = [l for l in lines if re.match(r"^%s:\d+:\d+: " % re.escape(path), l) or
            re.match(r"^[^:]*check\.yaml:\d+:\d+: ", l)]
    assert len(errs) >= 2, "expected FILE:LINE:COL: for both unknown keys, got:\n%s" % out
    assert any("bogus_key" in l for l in errs) and any("max_heders" in l for l in errs), out
    # line numbers point at the keys
    text = open(path).read().splitlines()
    for l in errs:
        m = re.search(r"check\.yaml:(\d+):(\d+): ", l)
        ln, col = int(m.group(1)), int(m.group(2))
        key = "bogus_key" if "bogus_key" in l else "max_heders"
        assert key in text[ln - 1], "%s: line %d is %r" % (l, ln, text[ln - 1])
        assert text[ln - 1].index(key) == col - 1, "%s: column of %r" % (l, text[ln - 1])
    assert "configuration OK" not in out


def test_ops_check_config_syntax_error_and_missing_file():
    p = Pilotfish(start=False, vars={"origin_port": 3000})
    rc, out = p.check_config("upstreams: [\n  app\n")
    assert rc == 1 and re.search(r"check\.yaml:\d+:\d+: ", out), (rc, out)
    r = subprocess.run([p.bin, "-t", "-c", os.path.join(p.dir, "nope.yaml")],
                       capture_output=True, timeout=10)
    assert r.returncode == 1, r
    assert b"nope.yaml" in r.stdout + r.stderr, r


def test_ops_version():
    bin_ = Pilotfish(start=False, vars={"origin_port": 3000}).bin
    r = subprocess.run([bin_, "-V"], capture_output=True, timeout=10)
    assert r.returncode == 0, r
    out = r.stdout.decode()
    assert re.match(r"^pilotfish \S+", out), out
    for lib in ("libevent", "http-parser", "libyaml", "zlib", "hiredis"):
        assert lib in out, "%s missing from -V:\n%s" % (lib, out)


def _startup_fails(p, what):
    p.start(wait=False)
    rc = wait_exit(p, 10)
    assert rc is not None, "pilotfish still running with %s" % what
    assert rc == 1, "exit status %r with %s" % (rc, what)
    lines = [l for l in (p.stderr_text() + p.stdout_text()).splitlines() if l.strip()]
    assert lines, "no reason printed for %s" % what
    return lines


def test_ops_startup_listen_port_in_use():
    o = Origin()
    with o, socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        p = Pilotfish(origin=o, vars={"port": port}, start=False)
        lines = _startup_fails(p, "the listen port in use")
        assert len(lines) == 1, "expected a one-line reason, got %d lines:\n%s" % (
            len(lines), "\n".join(lines))
        assert str(port) in lines[0] and re.search(r"in use", lines[0], re.I), lines[0]
        # the admin port in use too
        p2 = Pilotfish(origin=o, vars={"admin_port": port}, start=False)
        lines = _startup_fails(p2, "the admin port in use")
        assert len(lines) == 1, "expected a one-line reason, got:\n%s" % "\n".join(lines)
        assert str(port) in lines[0], lines[0]


def test_ops_startup_missing_config_file():
    p = Pilotfish(start=False, vars={"origin_port": 3000})
    p.spawn([p.bin, "-c", os.path.join(p.dir, "missing.yaml")])
    rc = wait_exit(p, 10)
    assert rc == 1, rc
    lines = [l for l in p.stderr_text().splitlines() if l.strip()]
    assert len(lines) == 1 and "missing.yaml" in lines[0], lines


# ---- admin ----

def test_ops_admin_health_live_ready_drain():
    o = Origin()
    p = Pilotfish(origin=o)
    with o, p:
        for path in ("/health", "/live"):
            r = p.admin("GET", path)
            assert r.status == 200, (path, r)
            assert r.json() == {"status": "ok"}, (path, r.body)
        r = p.admin("GET", "/ready")
        assert r.status == 200, r
        r = p.admin("POST", "/drain")
        assert 200 <= r.status < 300, r
        r = p.admin("GET", "/ready")
        assert r.status == 503, "/ready after POST /drain: %r" % r
        r.json()  # reasons as JSON
        assert p.admin("GET", "/live").status == 200  # still alive
        assert p.running()


def test_ops_admin_config_redacts_token():
    token = "s3cr3t-T0ken-xyz"
    o = Origin()
    head = h2.CONFIG_HEAD.replace('admin: { listen: "127.0.0.1:{{admin_port}}" }',
                                  'admin: { listen: "127.0.0.1:{{admin_port}}", token: "%s" }'
                                  % token)
    p = Pilotfish(h2.config(head=head), origin=o)
    with o, p:
        r = p.admin("GET", "/config")
        assert r.status == 200, r
        assert token.encode() not in r.body, "token in GET /config: %r" % r.body[:500]
        cfg = r.json()
        assert "upstreams" in json.dumps(cfg), cfg


def test_ops_admin_post_without_token_from_loopback_allowed():
    o = Origin()
    p = Pilotfish(origin=o)
    with o, p:
        r = h2.admin(p, "POST", "/reload")
        assert r.status == 200, "POST /reload from loopback, no token configured: %r %r" % (
            r, r.body)
        assert r.json().get("result") == "success", r.body


def test_ops_admin_token_required_for_post():
    token = "tok-12345"
    o = Origin()
    head = h2.CONFIG_HEAD.replace('admin: { listen: "127.0.0.1:{{admin_port}}" }',
                                  'admin: { listen: "127.0.0.1:{{admin_port}}", token: "%s" }'
                                  % token)
    p = Pilotfish(h2.config(head=head), origin=o)
    with o, p:
        r = h2.admin(p, "POST", "/reload")
        assert r.status == 401, "POST /reload without token: %r" % r
        r = h2.admin(p, "POST", "/reload", headers={"Authorization": "Bearer wrong"})
        assert r.status == 401, "POST /reload with a wrong token: %r" % r
        r = h2.admin(p, "POST", "/reload", headers={"Authorization": "Bearer " + token + "x"})
        assert r.status == 401, "POST /reload with a token prefix match: %r" % r
        r = h2.admin(p, "POST", "/drain", headers={"Authorization": "Basic " + token})
        assert r.status == 401, r
        assert p.admin("GET", "/ready").status == 200, "an unauthorized /drain drained"
        r = h2.admin(p, "POST", "/reload", headers={"Authorization": "Bearer " + token})
        assert r.status == 200, "POST /reload with the token: %r %r" % (r, r.body)
        assert r.json()["result"] == "success"
        # GETs need no token
        assert p.admin("GET", "/health").status == 200


def test_ops_admin_token_checked_before_the_body():
    """An unauthorized POST is answered 401 on its head alone: the body (announced,
    never sent) is not waited for, and Expect: 100-continue gets no 100."""
    token = "tok-67890"
    o = Origin()
    head = h2.CONFIG_HEAD.replace('admin: { listen: "127.0.0.1:{{admin_port}}" }',
                                  'admin: { listen: "127.0.0.1:{{admin_port}}", token: "%s" }'
                                  % token)
    p = Pilotfish(h2.config(head=head), origin=o)
    with o, p:
        for extra in ["", "Expect: 100-continue\r\n"]:
            with Conn(p.admin_port, timeout=5.0) as c:
                c.send(("POST /reload HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer nope\r\n"
                        "Content-Length: 500000\r\n%s\r\n" % extra).encode())
                r = c.read_response(skip_interim=False)
                assert r.status == 401, "unauthorized POST with an unsent body: %r" % r
                assert c.is_closed(), "the connection stays open with an unread body"
        # an authorized POST with a body is still read and answered
        r = h2.admin(p, "POST", "/reload", headers={"Authorization": "Bearer " + token,
                                                     "Content-Type": "text/plain"}, body=b"x" * 100)
        assert r.status == 200, r


# ---- reload ----

def test_ops_reload_switches_upstream():
    o1, o2 = Origin(), Origin()
    p = Pilotfish(origin=o1, vars={"o2": o2.port})
    with o1, o2, p:
        assert p.get("/").status == 200
        assert o1.stats()["requests"] == 1
        p.write_config(h2.config(endpoints=["127.0.0.1:{{o2}}"]))
        p.reload()

        def went_to_o2():
            return p.get("/").status == 200 and o2.stats()["requests"] > 0

        pf.eventually(went_to_o2, timeout=5, msg="requests reach the new origin after SIGHUP")
        n1 = o1.stats()["requests"]
        for _ in range(5):
            assert p.get("/").status == 200
        assert o1.stats()["requests"] == n1, "requests still reach the old origin"


def test_ops_reload_invalid_keeps_old_config():
    o = Origin()
    p = Pilotfish(origin=o)
    with o, p:
        assert p.get("/").status == 200
        since = len(p.stderr_text())
        with open(p.config_path, "w") as f:
            f.write("upstreams: [\n  app: {\n")
        p.reload()
        # the reload is done when its error is logged
        pf.eventually(lambda: any(l.get("level") == "error"
                                  for l in stderr_json_lines(p, since)[0]),
                      timeout=10, msg="an error logged for an invalid reload")
        assert p.running()
        for _ in range(3):
            r = p.get("/?body=old")
            assert r.status == 200 and r.body == b"old", r
        good, bad = stderr_json_lines(p, since)
        assert not bad, "non-JSON lines on stderr: %r" % bad
        errors = [l for l in good if l.get("level") == "error"]
        assert any("pilotfish.yaml:" in l.get("msg", "") for l in errors), \
            "no FILE:LINE:COL in the reload errors: %r" % errors
        r = h2.admin(p, "POST", "/reload")
        body = r.json()
        assert body.get("result") == "failure", body
        assert r.status != 200, "a failed reload answered 200"
        assert p.get("/").status == 200
        # a valid file again: reload works
        p.write_config(pf.BASIC_CONFIG)
        r = h2.admin(p, "POST", "/reload")
        assert r.status == 200 and r.json()["result"] == "success", r.body


def test_ops_reload_unknown_key_keeps_old_config():
    o = Origin()
    p = Pilotfish(origin=o)
    with o, p:
        p.write_config(h2.config(extra="bogus: 1\n", endpoints=["127.0.0.1:1"]))
        r = h2.admin(p, "POST", "/reload")
        body = r.json()
        assert body.get("result") == "failure", body
        assert any("bogus" in e for e in body.get("errors", [])), body
        assert p.get("/").status == 200, "the bad file's endpoint was used"


def _reload_under_load(cfg_a, cfg_b, both_origins_used):
    """8 keep-alive client threads for ~3 s while the config alternates between
    cfg_a and cfg_b with a SIGHUP every ~100 ms (20 reloads): every response
    must be a 200 with this request's own body."""
    o1, o2 = Origin(), Origin()
    p = Pilotfish(cfg_a, vars={"o1": o1.port, "o2": o2.port})
    with o1, o2, p:
        stop = threading.Event()
        failures = []
        counts = [0] * 8
        lock = threading.Lock()

        def client(i):
            n = 0
            c = None
            try:
                while not stop.is_set():
                    body = "t%d-%d" % (i, n)
                    try:
                        if c is None:
                            c = Conn(p.port, timeout=10)
                        r = c.request("GET", "/?body=" + body)
                    except Exception as e:  # noqa: B902
                        with lock:
                            failures.append("thread %d request %d: %r" % (i, n, e))
                        if c is not None:
                            c.close()
                        c = None
                        n += 1
                        time.sleep(0.05)
                        continue
                    if r.status != 200 or r.body != body.encode():
                        with lock:
                            failures.append("thread %d request %d (body %s): %r %r %r" % (
                                i, n, body, r, r.body[:100], r.headers))
                    if "close" in h2.connection_tokens(r):
                        c.close()
                        c = None
                    n += 1
                    counts[i] = n
            finally:
                if c is not None:
                    c.close()

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        for k in range(20):
            p.write_config(cfg_b if k % 2 == 0 else cfg_a)
            p.reload()
            time.sleep(0.1)
        time.sleep(0.7)
        stop.set()
        for t in threads:
            t.join(15)
        total = sum(counts)
        assert p.running(), "pilotfish died during reloads under load (exit status %r%s), " \
            "%d client errors of %d requests, first: %r%s" % (
                p.returncode, ", SIGSEGV" if p.returncode == -signal.SIGSEGV else "",
                len(failures), total, failures[:2], p.describe_output(300))
        assert not failures, "%d of %d requests failed during 20 reloads:\n%s" % (
            len(failures), total, "\n".join(failures[:20]))
        assert total > 200, "only %d requests in ~3 s" % total
        if both_origins_used:
            assert o1.stats()["requests"] > 0 and o2.stats()["requests"] > 0, \
                "reloads did not take effect: %r %r" % (o1.stats(), o2.stats())
        good, bad = stderr_json_lines(p)
        assert not [l for l in good if l.get("level") == "error"], good


@pf.timeout(60)
def test_ops_reload_under_load_zero_failures():
    """Each reload moves the upstream to the other origin (a new endpoint the
    first time), so in-flight and pooled connections of both coexist."""
    _reload_under_load(h2.config(endpoints=["127.0.0.1:{{o1}}"]),
                       h2.config(endpoints=["127.0.0.1:{{o2}}"],
                                 upstream_extra="pool: { idle_timeout: 5s }"), True)


@pf.timeout(60)
def test_ops_reload_under_load_same_endpoints_zero_failures():
    """The same, with reloads that change a setting but not the endpoints."""
    _reload_under_load(h2.config(endpoints=["127.0.0.1:{{o1}}"]),
                       h2.config(endpoints=["127.0.0.1:{{o1}}"],
                                 upstream_extra="pool: { idle_timeout: 5s }"), False)


def test_ops_reload_new_endpoint_with_pooled_connections():
    """Deterministic form of the reload race: a pooled connection to o1, a reload
    whose upstream is a new endpoint o2 (used once), a reload back to o1, then
    two concurrent requests: each must get its own response (one upstream
    connection must never serve two transactions)."""
    o1, o2 = Origin(), Origin()
    cfg1 = h2.config(endpoints=["127.0.0.1:{{o1}}"])
    cfg2 = h2.config(endpoints=["127.0.0.1:{{o2}}"])
    p = Pilotfish(cfg1, vars={"o1": o1.port, "o2": o2.port})
    with o1, o2, p:
        assert p.get("/?body=warm").body == b"warm"  # one idle pooled connection to o1
        for cfg, want in ((cfg2, o2), (cfg1, o1)):
            p.write_config(cfg)
            r = h2.admin(p, "POST", "/reload")
            assert r.status == 200, r.body
            before = want.stats()["requests"]
            r = p.get("/?body=probe")
            assert r.status == 200 and r.body == b"probe", r
            assert want.stats()["requests"] == before + 1, "reload not applied"
        result = {}

        def slow():
            try:
                result["x"] = p.get("/?delay=600&body=x-slow")
            except Exception as e:  # noqa: B902
                result["x"] = e

        x_before = o1.stats()["requests"]
        t = threading.Thread(target=slow, daemon=True)
        t.start()
        # X holds the pooled connection (its request is at o1) when Y asks
        pf.eventually(lambda: o1.stats()["requests"] > x_before, timeout=10,
                      msg="the slow request at o1")
        try:
            ry = p.get("/?body=y-fast")
        except Exception as e:  # noqa: B902
            ry = e
        t.join(5)
        rx = result.get("x")
        got = (getattr(rx, "body", rx), getattr(ry, "body", ry))
        assert got == (b"x-slow", b"y-fast"), "responses crossed between two clients: " \
            "client X (asked x-slow) got %r, client Y (asked y-fast) got %r; pilotfish %s" % (
                got[0], got[1], "running" if p.running() else "exited %r" % p.returncode)
        assert p.running()


def test_ops_reload_adds_and_removes_listen_address():
    o = Origin()
    port2 = pf.free_port()
    head1 = h2.CONFIG_HEAD.replace("workers: 1", "workers: 2")
    head2 = head1.replace('listen: "127.0.0.1:{{port}}"',
                          'listen: ["127.0.0.1:{{port}}", "127.0.0.1:{{port2}}"]')
    p = Pilotfish(h2.config(head=head1), origin=o, vars={"port2": port2})
    with o, p:
        with Conn(p.port) as keep:  # a client connection across the reloads
            assert keep.request("GET", "/").status == 200

            def refused(port):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        return False
                except OSError:
                    return True

            assert refused(port2)
            p.write_config(h2.config(head=head2))
            r = h2.admin(p, "POST", "/reload")
            assert r.status == 200, r.body
            pf.eventually(lambda: not refused(port2), timeout=3, msg="new listen address open")
            for _ in range(4):  # both workers' sockets
                r = pf.get(port2, "/?body=two")
                assert r.status == 200 and r.body == b"two", r
            assert keep.request("GET", "/").status == 200
            p.write_config(h2.config(head=head1))
            r = h2.admin(p, "POST", "/reload")
            assert r.status == 200, r.body
            pf.eventually(lambda: refused(port2), timeout=3,
                          msg="removed listen address closed (connect refused)")
            assert keep.request("GET", "/").status == 200, "a live connection was dropped"
            assert p.get("/").status == 200


# ---- drain and shutdown ----

@pf.timeout(40)
def test_ops_sigterm_lets_inflight_request_finish():
    o = Origin()
    p = Pilotfish(origin=o)
    with o, p:
        result = {}

        def slow():
            try:
                with p.conn(timeout=15) as c:
                    result["r"] = c.request("GET", "/?delay=2000&body=slow")
            except Exception as e:  # noqa: B902
                result["e"] = e

        t = threading.Thread(target=slow, daemon=True)
        t.start()
        pf.eventually(lambda: o.stats()["requests"] >= 1, timeout=10,
                      msg="the request is at the origin")
        t_sig = time.monotonic()
        p.send_signal(signal.SIGTERM)
        pf.eventually(lambda: "draining:" in p.stderr_text(), timeout=10,
                      msg="the drain begun (logged) after SIGTERM")
        # a new connection after drain began: refused, closed, or answered with close,
        # and promptly so (not left hanging until the process exits)
        outcome = None
        t0 = time.monotonic()
        try:
            with Conn(p.port, timeout=1.0) as c:
                c.send_request("GET", "/?body=late")
                r = c.read_response()
                outcome = "response %d %r" % (r.status, r.headers)
                assert "close" in h2.connection_tokens(r), \
                    "a new connection during drain answered without Connection: close: %r" % r
        except (ConnectionRefusedError, pf.ConnectionClosed, ConnectionResetError) as e:
            outcome = "refused/closed: %r" % e
        except socket.timeout:
            outcome = "timeout"
        hung = time.monotonic() - t0
        t.join(10)
        assert "r" in result, "in-flight request failed during drain: %r" % result.get("e")
        r = result["r"]
        assert r.status == 200 and r.body == b"slow", r
        rc = wait_exit(p, 10)
        took = time.monotonic() - t_sig
        assert rc == 0, "exit status %r after SIGTERM%s" % (rc, p.describe_output())
        # the request in flight takes 2 s; drain_timeout (15 s) would be the hang
        assert took < 10, "exited %.1fs after SIGTERM" % took
        assert outcome != "timeout", "a new connection after SIGTERM was neither refused nor " \
            "answered within %.1fs (left in the accept queue)" % hung


@pf.timeout(40)
def test_ops_drain_delay_keeps_serving_with_ready_503():
    o = Origin()
    # 5 s: room for the checks below on a loaded machine (a sanitizer build)
    p = Pilotfish(h2.config(extra="drain_delay: 5s\n"), origin=o)
    with o, p:
        assert p.admin("GET", "/ready").status == 200
        t_sig = time.monotonic()
        p.send_signal(signal.SIGTERM)
        r = pf.eventually(lambda: (lambda r: r if r.status == 503 else None)(
            p.admin("GET", "/ready")), timeout=2, msg="/ready 503 after SIGTERM")
        # still accepting and serving during the delay, new connections included
        for i in range(5):
            try:
                r = p.get("/?body=d%d" % i)
            except OSError as e:
                raise AssertionError(
                    "request %d during drain_delay 5s, %.2fs after SIGTERM: %r; pilotfish %s"
                    % (i, time.monotonic() - t_sig, e, "running" if p.running() else
                       "already exited with status %r" % p.returncode))
            assert r.status == 200 and r.body == b"d%d" % i, r
            time.sleep(0.1)
        assert time.monotonic() - t_sig < 5.0, "the checks took too long to prove anything"
        assert p.running()
        rc = wait_exit(p, 15)
        took = time.monotonic() - t_sig
        assert rc == 0, rc
        assert took >= 4.9, "exited after %.2fs, before drain_delay 5s" % took


@pf.timeout(40)
def test_ops_second_sigterm_exits_at_once():
    o = Origin()
    p = Pilotfish(origin=o)
    with o, p:
        c = p.conn(timeout=20)
        c.send_request("GET", "/?delay=10000")
        pf.eventually(lambda: o.stats()["requests"] == 1, timeout=5,
                      msg="the request is at the origin")
        p.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert p.running(), "exited before the in-flight request finished"
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        rc = wait_exit(p, 5)
        assert rc is not None, "still running 5 s after a second SIGTERM (the in-flight " \
            "request would take 10 s)"
        c.close()


def test_ops_quitquitquit_exits_0():
    o = Origin()
    p = Pilotfish(origin=o)
    with o, p:
        assert p.get("/").status == 200
        r = p.admin("POST", "/quitquitquit")
        assert 200 <= r.status < 300, r
        rc = wait_exit(p, 10)
        assert rc == 0, "exit status %r after POST /quitquitquit%s" % (rc, p.describe_output())


def test_ops_sigint_drains_and_exits_0():
    o = Origin()
    p = Pilotfish(origin=o)
    with o, p:
        assert p.get("/").status == 200
        p.send_signal(signal.SIGINT)
        assert wait_exit(p, 10) == 0


# ---- access log, request id, trace context ----

def test_ops_access_log_fields():
    o = Origin()
    p = Pilotfish(h2.config(head=LOG_HEAD), origin=o)
    log = os.path.join(p.dir, "access.log")
    with o, p:
        with p.conn() as c:
            r = c.request("POST", "/echo?x=1", body=b"hello",
                          headers=[("Host", "x"), ("X-Request-Id", "rid-1")])
            assert r.status == 200
            r = c.request("GET", "/?reset=1", headers=[("Host", "x"), ("X-Request-Id", "rid-2")])
            assert r.status == 502
        lines = h2.wait_file_lines(log, 2)
        by_id = {l.get("request_id"): l for l in lines}
        assert "rid-1" in by_id and "rid-2" in by_id, lines
        for l in lines:
            missing = [f for f in ACCESS_FIELDS if f not in l]
            assert not missing, "access log line without %r: %r" % (missing, l)
        a = by_id["rid-1"]
        assert a["method"] == "POST" and a["path"].startswith("/echo"), a
        assert a["status"] == 200 and a["client"] == "127.0.0.1", a
        assert a["bytes_in"] >= 5 and a["bytes_out"] > 0, a
        assert isinstance(a["duration_ms"], (int, float)) and a["duration_ms"] >= 0, a
        assert a["upstream"] == "app" and a["endpoint"] == o.addr, a
        assert isinstance(a["upstream_ms"], (int, float)), a
        assert a["error"] in (None, ""), a
        assert re.match(r"^[0-9a-f]{32}$", a["trace_id"]), a
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", a["ts"]), a
        b = by_id["rid-2"]
        assert b["status"] == 502 and b["error"] == "upstream_reset", b


def test_ops_access_log_lines_are_valid_utf8_json():
    """Raw bytes from the request (0xff, a cut UTF-8 sequence, a UTF-8
    surrogate) are escaped: every line decodes as UTF-8 and parses as JSON."""
    o = Origin()
    p = Pilotfish(h2.config(head=LOG_HEAD), origin=o)
    log = os.path.join(p.dir, "access.log")
    with o, p:
        # a path with 0xff may be refused, but header values may hold obs-text
        for target, rid in [(b"/x", b"id-\xff\xfe"), (b"/y", b"id-\xc3\xa9-\xc3-\xed\xa0\x80"),
                            (b"/a\xffb", b"id-path")]:
            data = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nX-Request-Id: " + rid + \
                b"\r\nConnection: close\r\n\r\n"
            h2.raw_exchange(p.port, data)
        pf.eventually(lambda: len(open(log, "rb").read().splitlines()) >= 3
                      if os.path.exists(log) else False, msg="3 access log lines")
        raw = open(log, "rb").read()
    lines = [l for l in raw.splitlines() if l.strip()]
    assert len(lines) >= 3, raw
    for line in lines:
        text = line.decode("utf-8")  # strict: raises on invalid UTF-8
        rec = json.loads(text)
        assert rec["request_id"].startswith("id-"), rec
    ids = [json.loads(l)["request_id"] for l in lines]
    assert "id-\u00ff\u00fe" in ids, ids
    # the valid sequence (é) is kept; the cut one and the surrogate are escaped byte by byte
    assert "id-\u00e9-\u00c3-\u00ed\u00a0\u0080" in ids, ids


def test_ops_access_log_reopen_on_sigusr1():
    o = Origin()
    p = Pilotfish(h2.config(head=LOG_HEAD), origin=o)
    log = os.path.join(p.dir, "access.log")
    rotated = log + ".1"
    with o, p:
        assert p.get("/", headers={"Host": "x", "X-Request-Id": "before"}).status == 200
        h2.wait_file_lines(log, 1)
        os.rename(log, rotated)
        assert p.get("/", headers={"Host": "x", "X-Request-Id": "renamed"}).status == 200
        h2.wait_file_lines(rotated, 2)  # still writing to the renamed file
        p.send_signal(signal.SIGUSR1)
        # reopened: the writer creates the file under its name again
        pf.eventually(lambda: os.path.exists(log), timeout=10, msg="access log reopened")
        for i in range(3):
            assert p.get("/", headers={"Host": "x", "X-Request-Id": "after-%d" % i}).status == 200
        new = h2.wait_file_lines(log, 3)
        assert [l["request_id"] for l in new] == ["after-0", "after-1", "after-2"], new
        old = h2.read_json_lines(rotated)
        assert [l["request_id"] for l in old] == ["before", "renamed"], old


def test_ops_x_request_id_passes_through():
    o = Origin()
    p = Pilotfish(h2.config(head=LOG_HEAD), origin=o)
    with o, p:
        r = p.get("/echo", headers={"Host": "x", "X-Request-Id": "abc-123-def"})
        e = r.json()
        assert pf.echo_headers(e, "X-Request-Id") == ["abc-123-def"], e["headers"]
        r = p.get("/echo")
        gen = pf.echo_headers(r.json(), "X-Request-Id")
        assert len(gen) == 1 and gen[0] and gen[0] != "abc-123-def", gen
        lines = h2.wait_file_lines(os.path.join(p.dir, "access.log"), 2)
        assert [l["request_id"] for l in lines] == ["abc-123-def", gen[0]], lines


def test_ops_traceparent_continued():
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    o = Origin()
    p = Pilotfish(h2.config(head=LOG_HEAD), origin=o)
    with o, p:
        for flags, parent in (("01", "00f067aa0ba902b7"), ("00", "b7ad6b7169203331")):
            tp_in = "00-%s-%s-%s" % (trace, parent, flags)
            e = p.get("/echo", headers={"Host": "x", "traceparent": tp_in}).json()
            tps = pf.echo_headers(e, "traceparent")
            assert len(tps) == 1, e["headers"]
            m = TRACEPARENT.match(tps[0])
            assert m, "bad traceparent %r" % tps[0]
            assert m.group(1) == "00", tps[0]
            assert m.group(2) == trace, "trace-id not kept: %s -> %s" % (tp_in, tps[0])
            assert m.group(4) == flags, "flags not kept: %s -> %s" % (tp_in, tps[0])
            assert m.group(3) not in (parent, "0" * 16), "parent id not changed: %s" % tps[0]
        lines = h2.wait_file_lines(os.path.join(p.dir, "access.log"), 2)
        assert all(l["trace_id"] == trace for l in lines), lines
