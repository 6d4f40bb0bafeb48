"""Active health checks and balancing (docs/configuration.md "health_check",
"Balancing"; docs/operations.md "When an endpoint fails"): an origin stopped
is marked unhealthy and gets no traffic, then comes back; all unhealthy with
panic true and false; /ready before the first passing probe; state kept over
a reload; unix endpoints; weights; least_request and a slow origin; ring_hash
on a header.

Waits are for events (a metric, a status) within generous bounds, never
assertions on how long something took. The scenario of a stopped origin
prints what it measured (time to mark unhealthy, time to recover, requests
failed meanwhile); with PF_E2E_MEASURE=FILE it also appends them to FILE as
a JSON line."""

import json
import os
import threading
import time

import pf
from pf import Origin, Pilotfish

import helpers2 as h2


def health_config(endpoints, check, extra="", workers=1):
    head = h2.CONFIG_HEAD.replace("workers: 1", "workers: %d" % workers)
    return h2.config(endpoints=endpoints, head=head,
                     upstream_extra="%s\nhealth_check: {%s}" % (extra, check))


def healthy(p, addr):
    return p.metrics().get('pilotfish_upstream_endpoint_healthy{upstream="app",endpoint="%s"}'
                           % addr)


def wait_for(what, fn, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.01)
    raise AssertionError("timed out waiting for " + what)


def served(p, addr):
    """pilotfish_upstream_requests_total of endpoint addr, every status."""
    total = 0
    for k, v in p.metrics().items():
        if k.startswith("pilotfish_upstream_requests_total{") and 'endpoint="%s"' % addr in k:
            total += v
    return total


def measure(record):
    print("measured: " + json.dumps(record))
    path = os.environ.get("PF_E2E_MEASURE")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


def log_lines(p):
    out = []
    for line in p.stderr_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


# ---- readiness ----

@pf.timeout(40)
def test_ready_is_503_with_reasons_until_a_probe_passes():
    """The probe takes 2 s to pass: until then /ready says why, and requests
    get 503 no_healthy_upstream (no endpoint gets traffic before a pass, panic
    or not)."""
    o = Origin()
    p = Pilotfish(health_config([o.addr], "path: \"/?delay=2000\", interval: 5s, timeout: 4s"))
    with o, p:
        r = p.admin("GET", "/ready")
        assert r.status == 503, r
        reasons = r.json()["reasons"]
        assert any("upstream app: no healthy endpoint" in x and "not yet passed a probe" in x
                   for x in reasons), reasons
        r = p.get("/")
        assert r.status == 503 and r.header("X-Pilotfish-Error") == "no_healthy_upstream", r
        wait_for("/ready 200", lambda: p.admin("GET", "/ready").status == 200)
        assert p.get("/").status == 200
        assert healthy(p, o.addr) == 1


# ---- an endpoint dies and comes back ----

class Load:
    """A client thread sending GET / in a loop, counting answers by status."""

    def __init__(self, p):
        self.p = p
        self.stop = False
        self.ok = 0
        self.failed = 0
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop:
            try:
                status = self.p.get("/").status
            except Exception:
                status = 0
            with self.lock:
                if status == 200:
                    self.ok += 1
                else:
                    self.failed += 1

    def counts(self):
        with self.lock:
            return self.ok, self.failed

    def end(self):
        self.stop = True
        self.t.join(10)


@pf.timeout(60)
def test_stopped_origin_is_ejected_then_recovers():
    a, b, c = Origin(), Origin(), Origin()
    interval, fall, rise = 0.2, 3, 2
    p = Pilotfish(health_config(
        [a.addr, b.addr, c.addr],
        "path: /__stats, interval: 200ms, timeout: 100ms, unhealthy_threshold: %d, "
        "healthy_threshold: %d" % (fall, rise), workers=2))
    with a, b, c, p:
        for o in (a, b, c):
            wait_for("healthy " + o.addr, lambda o=o: healthy(p, o.addr) == 1)
        load = Load(p)
        wait_for("some load", lambda: load.counts()[0] > 20)
        ok0, failed0 = load.counts()
        t0 = time.monotonic()
        b.stop()
        wait_for("unhealthy", lambda: healthy(p, b.addr) == 0)
        t_eject = time.monotonic() - t0
        ok1, failed1 = load.counts()
        # unhealthy: no traffic, every request answered by the others
        before = served(p, b.addr)
        wait_for("more load", lambda: load.counts()[0] > ok1 + 50)
        ok2, failed2 = load.counts()
        assert served(p, b.addr) == before
        assert failed2 == failed1, "requests failed after the endpoint was marked unhealthy"
        # back: healthy after `rise` passing probes, then traffic again
        t1 = time.monotonic()
        b2 = Origin(port=b.port)
        with b2:
            wait_for("healthy again", lambda: healthy(p, b.addr) == 1)
            t_recover = time.monotonic() - t1
            wait_for("traffic again", lambda: served(p, b.addr) > before)
            load.end()
        ok3, failed3 = load.counts()
        lines = log_lines(p)
        down = [x for x in lines if x.get("event") == "health" and x.get("new") == "unhealthy"]
        up = [x for x in lines if x.get("event") == "health" and x.get("old") == "unhealthy"]
        assert len(down) == 1 and down[0]["endpoint"] == b.addr and down[0]["old"] == "healthy"
        assert "%d failures, last: connect refused" % fall in down[0]["reason"], down[0]
        assert len(up) == 1 and up[0]["new"] == "healthy" and up[0]["endpoint"] == b.addr
        assert failed3 == failed2
        measure({"scenario": "origin stopped, 3 endpoints, interval 200ms, fall 3, rise 2",
                 "time_to_unhealthy_s": round(t_eject, 3),
                 "bound_unhealthy_threshold_x_interval_plus_timeout_s": fall * interval + 0.1,
                 "time_to_recover_s": round(t_recover, 3),
                 "requests_failed_while_dying": failed1 - failed0,
                 "requests_ok_while_dying": ok1 - ok0,
                 "requests_total": ok3 + failed3})


# ---- every endpoint unhealthy ----

@pf.timeout(40)
def test_all_unhealthy_panic_true_spreads_over_all():
    """The health endpoint is broken (500) but the service works: panic
    spreads requests over every endpoint, counted and logged once."""
    a, b = Origin(), Origin()
    p = Pilotfish(health_config([a.addr, b.addr], "path: \"/?status=500\", interval: 100ms, "
                                "timeout: 100ms, unhealthy_threshold: 2"))
    with a, b, p:
        wait_for("both unhealthy", lambda: all(
            healthy(p, o.addr) == 0 and
            p.metrics().get('pilotfish_health_checks_total{upstream="app",endpoint="%s",'
                            'result="fail"}' % o.addr, 0) >= 2 for o in (a, b)))
        wait_for("panic", lambda: p.get("/").status == 200)
        for _ in range(40):
            assert p.get("/").status == 200
        assert served(p, a.addr) > 5 and served(p, b.addr) > 5
        assert p.metrics()['pilotfish_upstream_panic_requests_total{upstream="app"}'] >= 40
        assert p.admin("GET", "/ready").status == 503
        panics = [x for x in log_lines(p) if "no healthy endpoint" in x.get("msg", "")]
        assert len(panics) == 1, panics


@pf.timeout(40)
def test_all_unhealthy_panic_false_is_503():
    a, b = Origin(), Origin()
    p = Pilotfish(health_config([a.addr, b.addr], "path: /__stats, interval: 100ms, "
                                "timeout: 100ms, unhealthy_threshold: 2, panic: false"))
    with a, b, p:
        wait_for("healthy", lambda: p.get("/").status == 200)
        a.stop()
        b.stop()
        wait_for("503", lambda: p.get("/").header("X-Pilotfish-Error") == "no_healthy_upstream")
        r = p.get("/")
        assert r.status == 503 and r.json()["error"] == "no_healthy_upstream", r
        m = p.metrics()
        assert m['pilotfish_errors_total{error="no_healthy_upstream"}'] >= 2
        r = p.admin("GET", "/ready")
        assert r.status == 503 and "connect refused" in " ".join(r.json()["reasons"]), r


# ---- reload, unix ----

@pf.timeout(40)
def test_reload_keeps_health_of_endpoints_that_remain():
    """A slow probe (1.5 s to pass) makes a reset visible: after a reload
    that adds an endpoint, the old one is still healthy at once, the new one
    is not until its own probe passes."""
    a, b = Origin(), Origin()
    check = "path: \"/?delay=1500\", interval: 3s, timeout: 2s"
    p = Pilotfish(health_config([a.addr], check))
    with a, b, p:
        wait_for("healthy", lambda: healthy(p, a.addr) == 1)
        p.write_config(health_config([a.addr, b.addr], check))
        p.reload()
        wait_for("reloaded", lambda: p.metrics().get(
            'pilotfish_config_reloads_total{result="success"}', 0) >= 1)
        assert healthy(p, a.addr) == 1
        assert healthy(p, b.addr) == 0
        for _ in range(10):
            assert p.get("/").status == 200
        assert served(p, b.addr) == 0
        wait_for("new endpoint healthy", lambda: healthy(p, b.addr) == 1)


def test_unix_endpoint_is_probed():
    path = h2.unix_path("hc")
    o = Origin(extra_listen=["unix:" + path])
    p = Pilotfish(health_config(["unix:" + path], "path: /__stats, interval: 100ms"))
    with o, p:
        wait_for("healthy", lambda: healthy(p, "unix:" + path) == 1)
        assert p.get("/").status == 200
        assert p.metrics()['pilotfish_health_checks_total{upstream="app",endpoint="unix:%s",'
                           'result="pass"}' % path] >= 1


# ---- balancing ----

def origin_requests(origins):
    return [o.stats()["requests"] for o in origins]


@pf.timeout(60)
def test_weights_hold_within_5_percent():
    origins = [Origin(), Origin(), Origin()]
    weights = [1, 2, 5]
    eps = ", ".join('{address: "%s", weight: %d}' % (o.addr, w) for o, w in zip(origins, weights))
    n = 1600
    for balance in ("round_robin", "random", "least_request"):
        cfg = h2.CONFIG_HEAD + ("upstreams:\n  app:\n    endpoints: [%s]\n    balance: %s\n"
                                % (eps, balance))
        p = Pilotfish(cfg)
        with p, p.conn() as c:
            for o in origins:
                o.reset_stats()
            for _ in range(n):
                assert c.request("GET", "/").status == 200
            got = origin_requests(origins)
            assert sum(got) == n, got
            for g, w in zip(got, weights):
                share, want = g / n, w / sum(weights)
                assert abs(share - want) < 0.05, (balance, got)
    for o in origins:
        o.stop()


@pf.timeout(60)
def test_least_request_prefers_the_faster_origin():
    """8 clients at once; one origin answers after 100 ms: least_request
    sends it a small share, round robin half."""
    fast = Origin()
    slow = h2.FakeOrigin(lambda ci, ri, head, body: (time.sleep(0.1), h2.http_response())[1])
    shares = {}
    for balance in ("least_request", "round_robin"):
        cfg = h2.CONFIG_HEAD + ("upstreams:\n  app:\n    endpoints: [\"%s\", \"%s\"]\n"
                                "    balance: %s\n" % (fast.addr, slow.addr, balance))
        p = Pilotfish(cfg)
        with p:
            fast.reset_stats()
            before = len(slow.requests)

            def client():
                with p.conn() as c:
                    for _ in range(25):
                        assert c.request("GET", "/").status == 200

            ts = [threading.Thread(target=client) for _ in range(8)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(30)
            f, s = fast.stats()["requests"], len(slow.requests) - before
            assert f + s == 200, (f, s)
            shares[balance] = s / 200
    measure({"scenario": "8 clients, one origin 100 ms slower", "slow_share": shares})
    assert shares["least_request"] < 0.25, shares
    assert shares["round_robin"] > 0.4, shares
    fast.stop()


@pf.timeout(60)
def test_ring_hash_on_a_header_keeps_a_key_on_one_endpoint():
    origins = [Origin(), Origin(), Origin()]
    cfg = h2.CONFIG_HEAD.replace("workers: 1", "workers: 2") + (
        "upstreams:\n  app:\n    endpoints: [%s]\n    balance: ring_hash\n"
        "    hash_on: header:X-User\n" % ", ".join('"%s"' % o.addr for o in origins))
    p = Pilotfish(cfg)
    used = set()
    with p:
        for user in range(20):
            for o in origins:
                o.reset_stats()
            for _ in range(5):
                assert p.get("/", headers=[("X-User", "user-%d" % user)]).status == 200
            got = origin_requests(origins)
            assert sorted(got) == [0, 0, 5], (user, got)
            used.add(got.index(5))
    assert len(used) > 1, used  # keys spread over the endpoints
    for o in origins:
        o.stop()
