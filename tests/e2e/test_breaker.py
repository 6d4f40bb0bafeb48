"""Circuit breakers (docs/configuration.md "circuit_breaker", docs/operations.md
"When an endpoint fails"), with two or three scripted origins: an origin
answering 503 is ejected while the others serve, tried again half-open and
closed once it recovers; a slow origin is ejected by slow_rate; the overflow
thresholds answer 503 overflow at once; max_ejection never empties a 2- or
3-endpoint upstream, and at 100 % every endpoint may open (503 circuit_open
with Retry-After); the state survives a reload for endpoints that remain and
starts fresh for one that leaves and comes back; a stale cached copy is served
instead of circuit_open; /upstreams, the metrics and one log line per change
say what happened.

Nothing here asserts on timing: each step waits for the event it needs
(bounded by a count of requests or a deadline) and the durations it took are
only reported, when PF_BREAKER_MEASURE=1, on stderr as "measure: ..." lines.
"""

import json
import os
import signal
import socket
import sys
import threading
import time

import pf
from pf import Conn, Origin, Pilotfish

import helpers2 as h2

BASE = h2.CONFIG_HEAD + "log_level: info\n"


def measure(what, **numbers):
    if os.environ.get("PF_BREAKER_MEASURE") == "1":
        sys.stderr.write("measure: %s %s\n" % (what, json.dumps(numbers, sort_keys=True)))


class Scripted:
    """A FakeOrigin whose answer (status, delay) the test changes at any time;
    every response names the origin in X-Origin."""

    def __init__(self, name, status=200, delay=0.0, headers=""):
        self.name = name
        self.status = status
        self.delay = delay
        self.headers = headers
        self.lock = threading.Lock()
        self.served = 0
        self.fake = h2.FakeOrigin(self._handle)

    def _handle(self, ci, ri, head, body):
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            self.served += 1
        text = ("%s\n" % self.name).encode()
        return ("HTTP/1.1 %d X\r\nContent-Length: %d\r\nX-Origin: %s\r\n%s\r\n"
                % (self.status, len(text), self.name, self.headers)).encode() + text

    @property
    def addr(self):
        return self.fake.addr

    def stop(self):
        self.fake.stop()


def breaker_config(origins, breaker, extra="", retries="attempts: 0"):
    """Retries are off unless asked for, so that every try is one client
    request and the failures a test counts are the breaker's."""
    return h2.config(extra=extra, head=BASE, endpoints=[o.addr for o in origins],
                     upstream_extra="circuit_breaker: {%s}\nretries: {%s}" % (breaker, retries))


def upstreams(p):
    r = p.admin("GET", "/upstreams")
    assert r.status == 200, r
    return r.json()


def endpoint_view(p, addr, upstream="app"):
    for up in upstreams(p)["upstreams"]:
        if up["name"] == upstream:
            for ep in up["endpoints"]:
                if ep["address"] == addr:
                    return ep
    raise AssertionError("%s not in /upstreams" % addr)


def state(p, addr):
    return endpoint_view(p, addr)["circuit"]["state"]


def metric(p, name, addr):
    return p.metrics().get('%s{upstream="app",endpoint="%s"}' % (name, addr))


def log_changes(p):
    """The breaker's log lines, parsed."""
    out = []
    for line in p.stderr_text().splitlines():
        if '"circuit breaker' in line:
            out.append(json.loads(line))
    return out


def ms_between(t0, t1):
    """Milliseconds from one /upstreams timestamp to another ("...T12:00:01.250Z")."""
    def ms(t):
        hh, mm, ss = t[11:-1].split(":")
        return round(((int(hh) * 60 + int(mm)) * 60 + float(ss)) * 1000)
    assert t0[:10] == t1[:10], (t0, t1)
    return ms(t1) - ms(t0)


def wait_for(cond, what, deadline=15.0, step=0.02):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(step)
    raise AssertionError("timed out waiting for " + what)


def stop_all(*origins):
    for o in origins:
        o.stop()


# ---- an origin answering 503 ----

@pf.timeout(60)
def test_breaker_503_origin_ejected_others_serve_then_recovers():
    a, b, c = Scripted("a", status=503), Scripted("b"), Scripted("c")
    p = Pilotfish(breaker_config([a, b, c], "consecutive_failures: 3, open_for: 1s, "
                                 "max_open_for: 4s"))
    try:
        with p:
            # until a opens: exactly consecutive_failures of its 503s reach clients
            t0 = time.monotonic()
            failed = sent = 0
            with p.conn() as conn:
                while state(p, a.addr) != "open":
                    assert sent < 30, "a never opened"
                    r = conn.request("GET", "/")
                    sent += 1
                    failed += r.status != 200
            t_eject = time.monotonic() - t0
            assert failed == 3, failed
            view = endpoint_view(p, a.addr)
            assert view["circuit"]["reason"] == "consecutive_failures=3", view
            assert view["circuit"]["since"] and view["circuit"]["retry_at"], view
            assert 0 <= view["circuit"]["retry_in_ms"] <= 1000, view
            assert metric(p, "pilotfish_upstream_circuit_state", a.addr) == 1
            assert metric(p, "pilotfish_upstream_circuit_opened_total", a.addr) == 1
            assert metric(p, "pilotfish_upstream_circuit_state", b.addr) == 0

            # while a stays broken: only its half-open trials fail, each re-opens it
            # (until its first trial has failed and re-opened it, for twice as long)
            served_a = a.served
            n_after = 0
            with p.conn() as conn:
                bad = 0
                while metric(p, "pilotfish_upstream_circuit_opened_total", a.addr) < 2:
                    assert n_after < 2000, "no half-open trial"
                    r = conn.request("GET", "/")
                    n_after += 1
                    if r.status != 200:
                        bad += 1
                        assert r.header("X-Origin") == "a", r
                    time.sleep(0.01)
            opened = metric(p, "pilotfish_upstream_circuit_opened_total", a.addr)
            reopened = endpoint_view(p, a.addr)["circuit"]
            assert reopened["reason"] == "half_open trial failed: status 503", reopened
            open_ms = ms_between(reopened["since"], reopened["retry_at"])
            assert 1800 - 1 <= open_ms <= 2000 + 1, reopened  # doubled, less <= 10 % jitter
            assert bad == a.served - served_a, (bad, a.served - served_a)
            assert bad == opened - 1, (bad, opened)

            # a recovers: the next trial closes it
            a.status = 200
            t1 = time.monotonic()
            with p.conn() as conn:
                for i in range(2000):
                    r = conn.request("GET", "/")
                    assert r.status == 200 or r.header("X-Origin") == "a", r
                    if state(p, a.addr) == "closed":
                        break
                    time.sleep(0.01)
            t_recover = time.monotonic() - t1
            assert state(p, a.addr) == "closed"
            assert metric(p, "pilotfish_upstream_circuit_state", a.addr) == 0
            view = endpoint_view(p, a.addr)
            assert view["circuit"]["reason"] == "half_open trials passed: 1", view
            assert view["circuit"]["retry_at"] is None, view
            # and it serves again
            seen = set()
            with p.conn() as conn:
                for _ in range(6):
                    seen.add(conn.request("GET", "/").header("X-Origin"))
            assert seen == {"a", "b", "c"}, seen

            lines = log_changes(p)
            first = lines[0]
            assert (first["upstream"], first["endpoint"], first["from"], first["to"],
                    first["reason"]) == ("app", a.addr, "closed", "open",
                                         "consecutive_failures=3"), first
            assert 0 <= first["retry_in_ms"] <= 1000 and first["level"] == "warn", first
            pairs = [(x["from"], x["to"]) for x in lines]
            assert ("open", "half_open") in pairs and pairs[-1] == ("half_open", "closed"), pairs
            assert all(x["endpoint"] == a.addr for x in lines), lines
            assert len(lines) == 2 * opened + 1, (len(lines), opened)  # to open, half_open, closed
            measure("503 origin", failed_before_eject=failed, requests_to_eject=sent,
                    eject_s=round(t_eject, 3), failed_trials=bad, requests_after=n_after,
                    recover_s=round(t_recover, 3), opened=opened)
    finally:
        stop_all(a, b, c)


# ---- a slow origin ----

@pf.timeout(60)
def test_breaker_slow_origin_ejected_by_slow_rate():
    # a sleeps longer than slow_call_duration, so each of its calls is slow on any
    # machine; slow_call_duration is wide (1s) so that b, which answers at once,
    # is not slow even on a loaded machine (a sanitizer build, other tests running)
    a, b = Scripted("a", delay=1.1), Scripted("b")
    p = Pilotfish(breaker_config([a, b], "consecutive_failures: 0, slow_call_duration: 1s, "
                                 "slow_rate: 50%, min_requests: 4, open_for: 30s"))
    try:
        with p:
            t0 = time.monotonic()
            slow = 0
            with p.conn() as conn:
                for i in range(40):
                    r = conn.request("GET", "/")
                    assert r.status == 200, r
                    slow += r.header("X-Origin") == "a"
                    if state(p, a.addr) == "open":
                        break
            t_eject = time.monotonic() - t0
            view = endpoint_view(p, a.addr)
            assert view["circuit"]["state"] == "open", view
            assert view["circuit"]["reason"].startswith("slow_rate=100% over 4 requests in 10s"), \
                view
            assert slow == 4, slow
            # now only b answers, fast
            with p.conn() as conn:
                for _ in range(10):
                    assert conn.request("GET", "/").header("X-Origin") == "b"
            b_view = endpoint_view(p, b.addr)
            assert b_view["circuit"]["state"] == "closed", b_view
            assert b_view["recent"]["requests"] >= 10 and b_view["recent"]["slow"] == 0, b_view
            lat = b_view["latency_ms"]  # reported, not timed: the order of the percentiles
            assert lat["p50"] <= lat["p90"] <= lat["p99"], b_view
            measure("slow origin", slow_requests_before_eject=slow, eject_s=round(t_eject, 3))
    finally:
        stop_all(a, b)


# ---- overflow ----

def _overflow(breaker, expect_code):
    with Origin() as o:
        p = Pilotfish(h2.config(head=BASE, upstream_extra="circuit_breaker: {%s}" % breaker),
                      origin=o)
        with p:
            with p.conn() as held:
                held.send(pf.build_request("GET", "/?delay=3000"))
                wait_for(lambda: endpoint_view(p, o.addr)["requests_active"] == 1,
                         "the first request to be in flight")
                t0 = time.monotonic()
                r = p.get("/")
                took = time.monotonic() - t0
                assert r.status == 503 and r.header("X-Pilotfish-Error") == expect_code, r
                assert r.json()["error"] == expect_code
                assert held.read_response().status == 200
            assert p.get("/").status == 200  # nothing in flight: served again
            m = p.metrics()
            assert m.get('pilotfish_errors_total{error="overflow"}') == 1, m
            measure("overflow " + breaker, answer_s=round(took, 3))


@pf.timeout(30)
def test_breaker_overflow_max_requests():
    _overflow("max_requests: 1", "overflow")


@pf.timeout(30)
def test_breaker_overflow_max_connections():
    _overflow("max_connections: 1", "overflow")


@pf.timeout(30)
def test_breaker_overflow_thresholds_parsed_and_shown():
    with Origin() as o:
        p = Pilotfish(h2.config(head=BASE, upstream_extra="circuit_breaker: {max_pending: 7, "
                                "max_retries: 2, max_requests: 9}"), origin=o)
        with p:
            code, out = p.check_config("upstreams:\n  app:\n    endpoints: [\"%s\"]\n"
                                       "    circuit_breaker: {max_retries: -1}\n" % o.addr)
            assert code != 0 and "max_retries" in out, out
            assert p.get("/").status == 200


@pf.timeout(60)
def test_breaker_503_origin_with_retries_clients_see_no_error():
    """The two together: a's 503s are retried on b or c (retries on 503 is the
    default), so no client sees an error, while a's breaker still counts every
    one of them and opens."""
    a, b, c = Scripted("a", status=503), Scripted("b"), Scripted("c")
    p = Pilotfish(breaker_config([a, b, c], "consecutive_failures: 3, open_for: 30s",
                                 retries="attempts: 2, on: [503]"))
    try:
        with p:
            t0 = time.monotonic()
            sent = 0
            with p.conn() as conn:
                while state(p, a.addr) != "open":
                    assert sent < 60, "a never opened"
                    r = conn.request("GET", "/")
                    sent += 1
                    assert r.status == 200 and r.header("X-Origin") in ("b", "c"), r
                t_eject = time.monotonic() - t0
                served_a = a.served
                for _ in range(30):
                    r = conn.request("GET", "/")
                    assert r.status == 200 and r.header("X-Origin") in ("b", "c"), r
            assert a.served == served_a, "an open endpoint got requests"
            retries = p.metrics().get('pilotfish_upstream_retries_total{upstream="app"}')
            assert retries == 3, retries
            measure("503 origin with retries", requests=sent + 30, failed=0, retries=retries,
                    eject_s=round(t_eject, 3))
    finally:
        stop_all(a, b, c)


@pf.timeout(40)
def test_breaker_passing_health_probe_closes_an_open_circuit_early():
    """With health checks, a passing probe closes an open circuit at once
    (long before open_for), and the endpoint serves again."""
    a, b = Scripted("a"), Scripted("b")
    p = Pilotfish(h2.config(head=BASE, endpoints=[a.addr, b.addr], upstream_extra=(
        "circuit_breaker: {consecutive_failures: 2, open_for: 60s}\n"
        "retries: {attempts: 0}\n"
        "health_check: {path: /, interval: 100ms, timeout: 100ms, unhealthy_threshold: 50}")))
    try:
        with p:
            # a in service by health first; then its answers (probes too) turn 503
            wait_for(lambda: p.get("/").header("X-Origin") == "a", "a serving")
            a.status = 503
            with p.conn() as conn:
                for _ in range(20):
                    if state(p, a.addr) == "open":
                        break
                    conn.request("GET", "/")
            assert state(p, a.addr) == "open"
            a.status = 200
            wait_for(lambda: state(p, a.addr) == "closed", "the probe closing a's circuit",
                     deadline=10.0)
            closed = [x for x in log_changes(p) if x["to"] == "closed" and x["from"] != "closed"]
            assert closed and closed[-1]["reason"] == "health_check passed", closed
            wait_for(lambda: p.get("/").header("X-Origin") == "a", "a serving again")
    finally:
        stop_all(a, b)


# ---- max_ejection ----

def _all_failing(n, cap, requests=40):
    origins = [Scripted(chr(ord("a") + i), status=503) for i in range(n)]
    breaker = "consecutive_failures: 2, open_for: 30s"
    if cap is not None:
        breaker += ", max_ejection: %s" % cap
    p = Pilotfish(breaker_config(origins, breaker))
    return origins, p


@pf.timeout(30)
def test_breaker_max_ejection_never_empties_two_or_three_endpoints():
    for n in (2, 3):
        origins, p = _all_failing(n, None)
        try:
            with p, p.conn() as conn:
                for _ in range(40):
                    r = conn.request("GET", "/")
                    # never circuit_open: the origins' own 503s
                    assert r.status == 503 and r.header("X-Origin") is not None, r
                states = [state(p, o.addr) for o in origins]
                assert states.count("open") == 1 and states.count("closed") == n - 1, states
                kept = [x for x in log_changes(p) if x["to"] == "closed" and x["from"] == "closed"]
                assert len(kept) == n - 1, kept  # once per endpoint kept in service
                assert kept[0]["msg"] == "circuit breaker kept closed by max_ejection", kept
        finally:
            stop_all(*origins)


@pf.timeout(30)
def test_breaker_all_open_at_100_percent_circuit_open_with_retry_after():
    for n in (1, 2):
        origins, p = _all_failing(n, "100%")
        try:
            with p, p.conn() as conn:
                for _ in range(2 * n):
                    assert conn.request("GET", "/").status == 503
                assert [state(p, o.addr) for o in origins] == ["open"] * n
                t0 = time.monotonic()
                r = conn.request("GET", "/")
                took = time.monotonic() - t0
                assert r.status == 503 and r.header("X-Pilotfish-Error") == "circuit_open", r
                assert r.json()["error"] == "circuit_open"
                assert r.header("X-Origin") is None
                retry = int(r.header("Retry-After"))
                left = min(endpoint_view(p, o.addr)["circuit"]["retry_in_ms"] for o in origins)
                assert 1 <= retry <= 30 and retry >= left / 1000.0 - 1, (retry, left)
                m = p.metrics()
                assert m.get('pilotfish_errors_total{error="circuit_open"}') == 1, m
                measure("all open", endpoints=n, answer_s=round(took, 4), retry_after=retry)
        finally:
            stop_all(*origins)


@pf.timeout(30)
def test_breaker_one_endpoint_stays_below_100_percent():
    origins, p = _all_failing(1, None)
    try:
        with p, p.conn() as conn:
            for _ in range(10):
                r = conn.request("GET", "/")
                assert r.status == 503 and r.header("X-Origin") == "a", r
            assert state(p, origins[0].addr) == "closed"
            assert endpoint_view(p, origins[0].addr)["circuit"]["consecutive_failures"] == 10
    finally:
        stop_all(*origins)


# ---- reloads ----

@pf.timeout(40)
def test_breaker_state_survives_sighup_and_starts_fresh_after_leaving():
    a, b = Scripted("a", status=503), Scripted("b")
    breaker = "consecutive_failures: 2, open_for: 60s"
    p = Pilotfish(breaker_config([a, b], breaker))
    try:
        with p:
            with p.conn() as conn:
                for _ in range(4):
                    conn.request("GET", "/")
            before = endpoint_view(p, a.addr)["circuit"]
            assert before["state"] == "open", before

            def reloads():
                return p.metrics().get('pilotfish_config_reloads_total{result="success"}', 0)

            n = reloads()
            # another setting changes, both endpoints stay: SIGHUP keeps a open
            p.write_config(breaker_config([a, b], breaker + ", half_open_requests: 2"))
            p.send_signal(signal.SIGHUP)
            wait_for(lambda: reloads() == n + 1, "the SIGHUP reload")
            after = endpoint_view(p, a.addr)["circuit"]
            assert after["state"] == "open" and after["opened_total"] == 1, after
            # the same instants: the views print a monotonic time against one anchor
            assert after["retry_at"] == before["retry_at"], (before, after)
            assert after["since"] == before["since"], (before, after)
            assert all(p.get("/").header("X-Origin") == "b" for _ in range(4))

            # a leaves, then comes back: fresh
            p.write_config(breaker_config([b], breaker))
            r = p.admin("POST", "/reload")
            assert r.json()["result"] == "success", r.body
            p.write_config(breaker_config([a, b], breaker))
            r = p.admin("POST", "/reload")
            assert r.json()["result"] == "success", r.body
            back = endpoint_view(p, a.addr)["circuit"]
            assert back["state"] == "closed" and back["opened_total"] == 0, back
            assert metric(p, "pilotfish_upstream_circuit_opened_total", a.addr) == 0
            assert "a" in {p.get("/").header("X-Origin") for _ in range(4)}
    finally:
        stop_all(a, b)


# ---- the cache ----

CACHE_EXTRA = """\
routes:
  - match: { prefix: / }
    upstream: app
    filters: [metrics, cache]
filters:
  cache: { stale_if_error: 60s }
"""


@pf.timeout(30)
def test_breaker_stale_copy_served_instead_of_circuit_open():
    a = Scripted("a", headers="Cache-Control: max-age=1\r\n")
    p = Pilotfish(breaker_config([a], "consecutive_failures: 1, open_for: 60s, "
                                 "max_ejection: 100%", extra=CACHE_EXTRA))
    try:
        with p:
            assert p.get("/page").status == 200
            time.sleep(2.1)  # past max-age=1 whatever the rounding: the copy is stale now
            a.status = 503
            served = a.served
            r = p.get("/page")  # a fails once: stale-if-error, and a opens
            assert r.status == 200 and r.body == b"a\n", r
            assert state(p, a.addr) == "open"
            r = p.get("/page")  # the circuit is open: no request to a, the stale copy
            assert a.served == served + 1
            assert r.status == 200 and r.body == b"a\n", r
            cs = r.header("Cache-Status")
            assert "detail=stale-if-error" in cs and "fwd-status=503" in cs, cs
            assert "circuit_open" in cs, cs
            assert r.header("X-Pilotfish-Error") is None and r.header("Retry-After") is None, r
            # without a cached copy: circuit_open
            r = p.get("/other")
            assert r.status == 503 and r.header("X-Pilotfish-Error") == "circuit_open", r
    finally:
        a.stop()


@pf.timeout(30)
def test_breaker_slow_upload_is_not_a_slow_call():
    """slow_call_duration counts from the end of a streamed request body: a
    client that uploads slowly does not eject a fast endpoint."""
    a, b = Scripted("a"), Scripted("b")
    p = Pilotfish(breaker_config([a, b], "consecutive_failures: 0, slow_call_duration: 250ms, "
                                 "slow_rate: 50%, min_requests: 2",
                                 extra="limits: { request_buffering: 0 }\n"))
    try:
        with p:
            for _ in range(4):  # two to each endpoint
                with p.conn() as c:
                    c.send_pieces(["POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n",
                                   "a", "b", "c", "d"], pause=0.15)
                    assert c.read_response().status == 200
            for o in (a, b):
                view = endpoint_view(p, o.addr)
                assert view["recent"]["requests"] == 2 and view["recent"]["slow"] == 0, view
                assert view["circuit"]["state"] == "closed", view
    finally:
        stop_all(a, b)


@pf.timeout(30)
def test_breaker_stale_pooled_connection_is_no_failure():
    """An origin that closes each connection after one response: every later
    request finds its pooled connection closed and is sent again at once on a
    fresh one. With consecutive_failures: 1 and max_ejection: 100%, counting
    that as a reset would open the circuit and answer 503 circuit_open."""
    def once_per_connection(conn, n, head, body):
        return h2.http_response(b"ok") if n == 0 else None

    with h2.FakeOrigin(once_per_connection) as a:
        p = Pilotfish(h2.config(head=BASE, endpoints=[a.addr], upstream_extra=(
            "circuit_breaker: {consecutive_failures: 1, max_ejection: 100%}\n"
            "retries: {attempts: 0}")))
        with p, p.conn() as conn:
            for i in range(4):
                r = conn.request("GET", "/s%d" % i)
                assert r.status == 200 and r.body == b"ok", (i, r)
            assert state(p, a.addr) == "closed"
            assert endpoint_view(p, a.addr)["circuit"]["consecutive_failures"] == 0
            assert a.connections == 4, a.connections


class _Dead:
    """An endpoint address nobody listens on."""

    def __init__(self):
        self.addr = "127.0.0.1:%d" % pf.free_port()


@pf.timeout(30)
def test_breaker_retry_the_circuit_refuses_gives_the_failed_try_answer():
    """One endpoint, consecutive_failures: 1, max_ejection: 100%, attempts 1:
    the failed try opens the circuit, so its retry cannot go. The client gets
    that try's answer: the origin's own 503 for a retried status (kept, not
    dropped), 502 upstream_connect_failed for a refused connect; not 503
    circuit_open. The next request, with the circuit open, gets circuit_open."""
    a = Scripted("a", status=503)
    try:
        p = Pilotfish(breaker_config([a], "consecutive_failures: 1, max_ejection: 100%",
                                     retries="attempts: 1, backoff: 1ms"))
        with p, p.conn() as conn:
            r = conn.request("GET", "/")
            assert r.status == 503 and r.header("X-Origin") == "a", r
            assert r.header("X-Pilotfish-Error") is None, r.headers
            assert state(p, a.addr) == "open"
            r = conn.request("GET", "/")
            assert r.status == 503 and r.header("X-Pilotfish-Error") == "circuit_open", r
        assert a.served == 1
    finally:
        a.stop()
    dead = _Dead()
    p = Pilotfish(breaker_config([dead], "consecutive_failures: 1, max_ejection: 100%",
                                 retries="attempts: 1, backoff: 1ms"))
    with p, p.conn() as conn:
        r = conn.request("GET", "/")
        assert r.status == 502 and r.header("X-Pilotfish-Error") == "upstream_connect_failed", r
        assert state(p, dead.addr) == "open"


@pf.timeout(40)
def test_breaker_trial_of_a_client_gone_frees_its_permit():
    """half_open_requests 1, open_for 2s: the trial request's client goes away
    before the response head; its permit goes back at once, so the next
    request is the new trial (200), not 503 circuit_open until open_for
    passes again."""
    a = Scripted("a", status=503)
    try:
        p = Pilotfish(breaker_config([a], "consecutive_failures: 1, max_ejection: 100%, "
                                          "open_for: 2s"))
        with p:
            assert p.get("/").status == 503
            assert state(p, a.addr) == "open"
            a.status, a.delay = 200, 5.0
            trial = None
            for _ in range(200):  # until a request is let through (it then hangs at a)
                s = socket.create_connection(("127.0.0.1", p.port))
                s.settimeout(0.5)
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                try:
                    got = s.recv(65536)
                except socket.timeout:
                    trial = s
                    break
                assert b" 503 " in got.split(b"\r\n")[0], got[:200]
                s.close()
                time.sleep(0.05)
            assert trial is not None, "no trial request was let through"
            assert state(p, a.addr) == "half_open"
            trial.close()  # the client goes away before the head
            wait_for(lambda: p.metrics().get("pilotfish_http_connections_active") == 0,
                     "the aborted trial's connection to close")
            a.delay = 0.0
            r = p.get("/")
            assert r.status == 200 and r.header("X-Origin") == "a", r
            assert state(p, a.addr) == "closed"
    finally:
        a.stop()
