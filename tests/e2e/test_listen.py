"""Listening and accepting: a second pilotfish on an address in use exits 1
(TCP and unix:), limits.max_connections is one budget shared by the workers,
the open files limit leaves room for upstream connections, and the listen
backlog is limits.backlog."""

import os
import re
import shutil
import socket
import subprocess

import pf
from pf import Conn, Origin, Pilotfish

import helpers2 as h2


def wait_exit(p, timeout):
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def head(workers, listen='"127.0.0.1:{{port}}"'):
    return ("listen: %s\nworkers: %d\nadmin: { listen: \"127.0.0.1:{{admin_port}}\" }\n"
            "access_log: { path: off }\n" % (listen, workers))


def assert_second_fails(first, second_cfg, origin, what):
    p2 = Pilotfish(second_cfg, origin=origin, vars={"port": first.port}, start=False)
    p2.start(wait=False)
    rc = wait_exit(p2, 10)
    assert rc is not None, "a second pilotfish on %s kept running" % what
    assert rc == 1, "second pilotfish on %s: exit status %r" % (what, rc)
    lines = [l for l in p2.stderr_text().splitlines() if l.strip()]
    assert len(lines) == 1 and re.search(r"in use", lines[0], re.I), lines
    return lines[0]


@pf.timeout(60)
def test_listen_second_instance_on_same_port_exits_1():
    """Two pilotfish on one TCP port: the second (same user, same options) exits 1
    with one line, and every request still reaches the first."""
    o1, o2 = Origin(), Origin()
    with o1, o2:
        p1 = Pilotfish(h2.config(head=head(2)), origin=o1)
        with p1:
            line = assert_second_fails(p1, h2.config(head=head(2)), o2, "the same port")
            assert str(p1.port) in line, line
            o1.reset_stats()
            for _ in range(100):  # new connections: each may be hashed anywhere
                assert p1.get("/").status == 200
            assert o1.stats()["requests"] == 100, o1.stats()
            assert p1.running()


@pf.timeout(60)
def test_listen_second_instance_on_same_unix_socket_exits_1():
    """A unix: socket somebody accepts on is in use (a second pilotfish must not
    unlink it and take the path); a socket file left by a dead process is not."""
    path = h2.unix_path("dup")
    listen = '["127.0.0.1:{{port}}", "unix:%s"]' % path
    o = Origin()
    with o:
        p1 = Pilotfish(h2.config(head=head(2, listen)), origin=o)
        with p1:
            second = h2.config(head=head(1, '"unix:%s"' % path))
            assert_second_fails(p1, second, o, "the same unix socket")
            for _ in range(20):
                with Conn(unix=path, timeout=5) as c:
                    assert c.request("GET", "/").status == 200
        # p1 is gone; the socket file it may leave does not stop a new instance
        p3 = Pilotfish(second, origin=o, start=False)
        p3.start(wait=False)
        pf.eventually(lambda: os.path.exists(path) and p3.running(), timeout=10,
                      msg="a new pilotfish on a stale unix socket")
        with p3:
            def served():
                try:
                    with Conn(unix=path, timeout=5) as c:
                        return c.request("GET", "/").status == 200
                except OSError:
                    return False
            pf.eventually(served, timeout=10, msg="served on the reused unix socket")
    if os.path.exists(path):
        os.unlink(path)


@pf.timeout(60)
def test_listen_reload_with_address_in_use_fails():
    """A reload that adds an address another pilotfish listens on fails; the
    running configuration keeps serving."""
    o = Origin()
    with o:
        other = Pilotfish(h2.config(head=head(1)), origin=o)
        with other:
            p = Pilotfish(h2.config(head=head(2)), origin=o)
            with p:
                listen = '["127.0.0.1:{{port}}", "127.0.0.1:%d"]' % other.port
                p.write_config(h2.config(head=head(2, listen)))
                r = p.admin("POST", "/reload")
                assert r.status == 400 and r.json()["result"] == "failure", (r, r.body)
                assert p.get("/").status == 200
                o.reset_stats()
                for _ in range(50):
                    assert other.get("/").status == 200
                assert o.stats()["requests"] == 50


def no_answer_within(c, seconds):
    c.settimeout(seconds)
    try:
        c.sock.recv(65536)
    except socket.timeout:
        return True
    return False  # answered, or closed


@pf.timeout(90)
def test_listen_max_connections_shared_by_workers():
    """workers 2, max_connections 20: 20 connections are served at once however
    the kernel spreads them over the workers (per-worker shares of 10 failed
    whenever one worker got more than 10), and the 21st waits until one closes.
    Three rounds, so a lucky even spread cannot pass by chance."""
    o = Origin()
    limit = 20
    with o:
        p = Pilotfish(h2.config("limits:\n  max_connections: %d\n" % limit, head=head(2)),
                      origin=o)
        with p:
            for rnd in range(3):
                conns = []
                try:
                    for i in range(limit):
                        c = Conn(p.port, timeout=5)
                        conns.append(c)
                        r = c.request("GET", "/?body=r%dc%d" % (rnd, i))
                        assert r.status == 200, (rnd, i, r)
                    if rnd == 0:
                        extra = Conn(p.port, timeout=5)
                        conns.append(extra)
                        extra.send_request("GET", "/?body=extra")
                        assert no_answer_within(extra, 1.0), \
                            "connection %d answered over max_connections %d" % (limit + 1, limit)
                        conns[0].close()
                        extra.settimeout(5)
                        r = extra.read_response()
                        assert r.status == 200 and r.body == b"extra", r
                finally:
                    for c in conns:
                        c.close()
                # all closed: wait until pilotfish has seen it (the budget is back)
                pf.eventually(lambda: p.get("/").status == 200, timeout=5)


@pf.timeout(60)
def test_listen_open_files_limit_leaves_room_for_upstreams():
    """With 64 open files, the client connections pilotfish accepts all get their
    upstream connection: no 502 (before, 32 clients were allowed, and their
    upstream connects failed with EMFILE)."""
    if shutil.which("prlimit") is None:
        raise pf.Skip("prlimit not available")
    o = Origin()
    with o:
        p = Pilotfish(h2.config(head=head(1)), origin=o, start=False)
        p.spawn(["prlimit", "--nofile=64:64", p.bin, "-c", p.config_path])
        p.wait_ready()
        with p:
            conns = []
            try:
                for i in range(40):
                    c = Conn(p.port, timeout=10)
                    conns.append(c)
                    c.send_request("GET", "/?delay=1500&body=c%d" % i)
                statuses = []
                for c in conns:
                    c.settimeout(15)
                    r = c.read_response()
                    statuses.append(r.status)
                    c.close()
            finally:
                for c in conns:
                    c.close()
            assert statuses.count(200) == 40, statuses
            assert p.running()
            assert re.search(r"open files limit 64: max_connections 10000 lowered to \d+",
                             p.stderr_text()), p.stderr_text()


def test_listen_backlog_setting():
    """limits.backlog reaches listen() (libevent's default of 128 used to
    replace it); ss shows it as the listening socket's Send-Q."""
    if shutil.which("ss") is None:
        raise pf.Skip("ss not available")
    try:
        somax = int(open("/proc/sys/net/core/somaxconn").read())
    except (OSError, ValueError):
        somax = 4096
    want = min(1000, somax)
    o = Origin()
    with o:
        p = Pilotfish(h2.config("limits:\n  backlog: %d\n" % want, head=head(1)), origin=o)
        with p:
            out = subprocess.run(["ss", "-ltnH", "sport = :%d" % p.port], capture_output=True,
                                 timeout=10).stdout.decode()
            rows = [l.split() for l in out.splitlines() if l.strip()]
            assert rows, out
            assert all(int(r[2]) == want for r in rows), out
            out = subprocess.run(["ss", "-ltnH", "sport = :%d" % p.admin_port],
                                 capture_output=True, timeout=10).stdout.decode()
            rows = [l.split() for l in out.splitlines() if l.strip()]
            assert rows and int(rows[0][2]) == want, out
