"""Metrics end to end (docs/metrics.md): GET /metrics
counts every request exactly once (upstream answers, the proxy's own 404 and
502, 429s of the rate limiter, client aborts), histograms agree with the
counters, promtool accepts the exposition, and counts survive a reload."""

import re
import shutil
import socket
import subprocess
import time

import pf
from pf import Conn, Origin, Pilotfish

CONFIG = """\
listen: "127.0.0.1:{{port}}"
workers: 2
admin: { listen: "127.0.0.1:{{admin_port}}" }
access_log: { path: off }
upstreams:
  app:
    endpoints: ["127.0.0.1:{{origin_port}}"]
  dead:
    endpoints: ["127.0.0.1:{{dead_port}}"]
routes:
  - name: limited
    match: { prefix: "/limited/" }
    upstream: app
    filters: [metrics, ratelimit]
  - name: dead
    match: { prefix: "/dead/" }
    upstream: dead
  - name: 'we"ird\\route'
    match: { prefix: "/weird/" }
    upstream: app
  - name: api
    match: { prefix: "/api/" }
    upstream: app
filters:
  ratelimit: { requests_per_second: 0.001, burst: 2, key: global }
"""

REQ = 'pilotfish_http_requests_total{route="%s",upstream="%s",method="%s",code="%s"}'
DUR = 'pilotfish_http_request_duration_seconds_%s{route="%s"%s}'
UPREQ = 'pilotfish_upstream_requests_total{upstream="%s",endpoint="%s",code="%s"}'


def start(config=CONFIG, workers=None):
    o = Origin()
    text = config if workers is None else config.replace("workers: 2", "workers: %d" % workers)
    p = Pilotfish(text, origin=o, vars={"dead_port": pf.free_port()})
    return o, p


def scrape(p):
    r = p.admin("GET", "/metrics")
    assert r.status == 200, r
    assert r.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8", r.headers
    return r.text()


def samples(text):
    """{'name{labels}': value} of an exposition (label values may hold spaces)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out


def delta(after, before, key):
    return after.get(key, 0.0) - before.get(key, 0.0)


def family_total(s, prefix):
    return sum(v for k, v in s.items() if k.startswith(prefix))


def settle(p, check, timeout=5.0):
    """Scrape until check(samples) holds: the last counts land as the tx is freed."""
    last = {}

    def ok():
        nonlocal last
        last = samples(scrape(p))
        return check(last)

    try:
        pf.eventually(ok, timeout=timeout, msg="metrics settle")
    except AssertionError:
        raise AssertionError("metrics did not settle; last scrape: %r" % {
            k: v for k, v in last.items() if k.startswith("pilotfish_http_requests_total")})
    return last


def send_mix(p):
    """The traffic of the counting tests; returns {series: requests sent}."""
    sent = {}

    def expect(key, n=1):
        sent[key] = sent.get(key, 0) + n

    with p.conn() as c:
        for i in range(10):
            assert c.request("GET", "/api/x?size=%d" % i).status == 200
        expect(REQ % ("api", "app", "GET", "200"), 10)
        for _ in range(3):
            assert c.request("POST", "/api/x", body=b"hello").status == 200
        expect(REQ % ("api", "app", "POST", "200"), 3)
        for _ in range(4):
            assert c.request("GET", "/api/x?status=404").status == 404
        expect(REQ % ("api", "app", "GET", "404"), 4)
        assert c.request("DELETE", "/api/x?status=503").status == 503
        expect(REQ % ("api", "app", "DELETE", "503"))
        assert c.request("PROPFIND", "/api/x").status == 200
        expect(REQ % ("api", "app", "OTHER", "200"))
    for _ in range(3):  # the proxy's own 502 (nothing listens on the dead port)
        r = p.get("/dead/x")
        assert r.status == 502 and r.header("X-Pilotfish-Error") == "upstream_connect_failed", r
    expect(REQ % ("dead", "dead", "GET", "502"), 3)
    for _ in range(2):  # no route: the proxy's own 404, counted under route=""
        r = p.get("/nowhere")
        assert r.status == 404 and r.header("X-Pilotfish-Error") == "no_route", r
    expect(REQ % ("", "", "GET", "404"), 2)
    codes = [p.get("/limited/x").status for _ in range(6)]
    assert codes == [200, 200, 429, 429, 429, 429], codes
    expect(REQ % ("limited", "app", "GET", "200"), 2)
    expect(REQ % ("limited", "app", "GET", "429"), 4)
    assert p.get("/weird/x").status == 200
    expect(REQ % ('we\\"ird\\\\route', "app", "GET", "200"))
    return sent


def test_metrics_count_every_request_exactly_once():
    o, p = start()
    with o, p:
        before = samples(scrape(p))
        sent = send_mix(p)
        total = sum(sent.values())
        after = settle(p, lambda s: family_total(s, "pilotfish_http_requests_total{") -
                       family_total(before, "pilotfish_http_requests_total{") >= total)
        for key, n in sent.items():
            assert delta(after, before, key) == n, "%s: +%s, sent %d" % (
                key, delta(after, before, key), n)
        grew = family_total(after, "pilotfish_http_requests_total{") - \
            family_total(before, "pilotfish_http_requests_total{")
        assert grew == total, "requests_total grew by %s for %d requests" % (grew, total)
        assert delta(after, before, 'pilotfish_errors_total{error="rate_limited"}') == 4
        assert delta(after, before, 'pilotfish_errors_total{error="upstream_connect_failed"}') == 3
        assert delta(after, before, 'pilotfish_errors_total{error="no_route"}') == 2
        assert delta(after, before, 'pilotfish_ratelimit_rejected_total{route="limited"}') == 4


def test_metrics_admin_scrapes_are_not_counted():
    o, p = start()
    with o, p:
        assert p.get("/api/x").status == 200
        first = settle(p, lambda s: family_total(s, "pilotfish_http_requests_total{") == 1)
        for _ in range(5):
            scrape(p)
        again = samples(scrape(p))
        assert family_total(again, "pilotfish_http_requests_total{") == \
            family_total(first, "pilotfish_http_requests_total{")


def test_metrics_histogram_count_equals_requests():
    o, p = start()
    with o, p:
        send_mix(p)
        with p.conn() as c:
            for _ in range(3):
                assert c.request("GET", "/api/slow?delay=40").status == 200
        s = settle(p, lambda s: s.get(REQ % ("api", "app", "GET", "200"), 0) == 13)
        routes = {m.group(1) for k in s
                  for m in [re.match(r'pilotfish_http_requests_total\{route="((?:[^"\\]|\\.)*)"',
                                     k)] if m}
        assert {"api", "limited", "dead", ""} <= routes, routes
        for route in routes:
            n = sum(v for k, v in s.items()
                    if k.startswith('pilotfish_http_requests_total{route="%s",' % route))
            assert s[DUR % ("count", route, "")] == n, route
            assert s[DUR % ("bucket", route, ',le="+Inf"')] == n, route
            prefix = re.escape((DUR % ("bucket", route, ""))[:-1])
            les = [(float(m.group(1)), v) for k, v in s.items()
                   for m in [re.match(prefix + r',le="([^"]+)"\}$', k)] if m]
            les.sort()
            assert [x for x, _ in les][:3] == [0.0005, 0.001, 0.0025], les
            counts = [v for _, v in les]
            assert counts == sorted(counts), "buckets not cumulative for %r: %r" % (route, les)
            assert s[DUR % ("sum", route, "")] >= 0
        # the three 40 ms requests are above le=0.025, and the sum shows them
        assert s[DUR % ("bucket", "api", ',le="0.025"')] <= s[DUR % ("count", "api", "")] - 3
        assert s[DUR % ("sum", "api", "")] >= 0.12
        up = s['pilotfish_upstream_request_duration_seconds_count{upstream="app"}']
        assert up == family_total(s, 'pilotfish_upstream_requests_total{upstream="app",')


def test_metrics_promtool_accepts_the_scrape():
    promtool = shutil.which("promtool")
    if promtool is None:
        raise pf.Skip("promtool not installed (apt-get install prometheus, or make deps)")
    o, p = start()
    with o, p:
        send_mix(p)
        text = scrape(p)
        r = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=20)
        assert r.returncode == 0, "promtool: %s\n%s" % (
            (r.stdout + r.stderr).decode(errors="replace"), text[:2000])
        # HELP and TYPE once per family
        types = [l.split()[2] for l in text.splitlines() if l.startswith("# TYPE ")]
        assert len(types) == len(set(types)), types
        for family in ("pilotfish_http_requests_total", "pilotfish_http_request_duration_seconds",
                       "pilotfish_http_connections_active", "pilotfish_upstream_requests_total",
                       "pilotfish_upstream_request_duration_seconds",
                       "pilotfish_upstream_connections_active",
                       "pilotfish_upstream_connections_idle", "pilotfish_upstream_retries_total",
                       "pilotfish_errors_total", "pilotfish_gzip_bytes_in_total",
                       "pilotfish_gzip_bytes_out_total", "pilotfish_ratelimit_rejected_total",
                       "pilotfish_config_reloads_total",
                       "pilotfish_config_last_reload_success_timestamp_seconds",
                       "pilotfish_build_info", "process_resident_memory_bytes",
                       "process_cpu_seconds_total", "process_open_fds"):
            assert family in types, family


def test_metrics_upstream_attempts_errors_and_retries():
    o, p = start(workers=1)
    ep = "127.0.0.1:%d" % o.port
    with o, p, p.conn() as c:
        # a fresh upstream connection that resets: retried once (the default retries:
        # attempts 1, on reset), the retry resets too
        r = c.request("GET", "/api/x?reset=1")
        assert r.status == 502 and r.header("X-Pilotfish-Error") == "upstream_reset", r
        assert c.request("GET", "/api/x").status == 200  # leaves a pooled connection
        # a pooled connection that resets: retried at once on a fresh one, which resets too,
        # then once more by the policy
        r = c.request("GET", "/api/x?reset=1")
        assert r.status == 502, r
        assert c.request("GET", "/api/x?status=404").status == 404
        assert p.get("/dead/x").status == 502  # connect refused, retried once
        s = settle(p, lambda s: s.get(UPREQ % ("app", ep, "404"), 0) == 1)
        assert s[UPREQ % ("app", ep, "upstream_reset")] == 5, s
        assert s[UPREQ % ("app", ep, "200")] == 1
        assert s['pilotfish_upstream_retries_total{upstream="app"}'] == 3
        assert s['pilotfish_upstream_retries_total{upstream="dead"}'] == 1
        dead = p.vars["dead_port"]
        assert s[UPREQ % ("dead", "127.0.0.1:%d" % dead, "upstream_connect_failed")] == 2
        assert s['pilotfish_upstream_request_duration_seconds_count{upstream="app"}'] == 7
        assert s['pilotfish_errors_total{error="upstream_reset"}'] == 2
        # the client sees one request per 502, whatever the attempts
        assert s[REQ % ("api", "app", "GET", "502")] == 2


def test_metrics_connection_gauges():
    o, p = start(workers=1)
    ep = "127.0.0.1:%d" % o.port
    with o, p:
        with p.conn() as c1, p.conn() as c2:
            assert c1.request("GET", "/api/x").status == 200
            assert c2.request("GET", "/api/x").status == 200
            s = samples(scrape(p))
            assert s["pilotfish_http_connections_active"] == 2, s
            assert s['pilotfish_upstream_connections_idle{upstream="app",endpoint="%s"}' % ep] >= 1
            assert s['pilotfish_upstream_connections_active{upstream="app",endpoint="%s"}'
                     % ep] == 0
        s = settle(p, lambda s: s["pilotfish_http_connections_active"] == 0)
        assert s["process_open_fds"] > 0 and s["process_resident_memory_bytes"] > 0
        assert s['pilotfish_build_info{version="%s"}' % _version(p)] == 1


def _version(p):
    text = scrape(p)
    m = re.search(r'^pilotfish_build_info\{version="([^"]*)"\} 1$', text, re.M)
    assert m, text[:500]
    return m.group(1)


def test_metrics_client_abort_counts_499():
    o, p = start(workers=1)
    with o, p:
        c = Conn(p.port)
        c.send_request("GET", "/api/x?delay=10000")
        # the request is at the origin (counted when read, answered 10 s later)
        pf.eventually(lambda: o.stats()["requests"] == 1, timeout=10,
                      msg="the request reached the origin")
        # RST on close: the proxy notices at once
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()
        settle(p, lambda s: s.get(REQ % ("api", "app", "GET", "499"), 0) == 1)


def test_metrics_counts_survive_reload_and_reloads_are_counted():
    o, p = start()
    with o, p:
        for _ in range(4):
            assert p.get("/api/x").status == 200
        settle(p, lambda s: s.get(REQ % ("api", "app", "GET", "200"), 0) == 4)
        before = samples(scrape(p))
        p.write_config(CONFIG.replace("burst: 2", "burst: 3"))
        p.reload()
        s = settle(p, lambda s: s.get('pilotfish_config_reloads_total{result="success"}') == 1)
        assert s[REQ % ("api", "app", "GET", "200")] == 4
        assert s['pilotfish_config_last_reload_success_timestamp_seconds'] >= \
            before['pilotfish_config_last_reload_success_timestamp_seconds']
        assert p.get("/api/x").status == 200
        settle(p, lambda s: s.get(REQ % ("api", "app", "GET", "200"), 0) == 5)
        p.write_config("upstreams: [oops\n")
        p.reload()
        s = settle(p, lambda s: s.get('pilotfish_config_reloads_total{result="failure"}') == 1)
        assert s['pilotfish_config_reloads_total{result="success"}'] == 1
        assert s[REQ % ("api", "app", "GET", "200")] == 5


def test_metrics_buckets_setting():
    cfg = CONFIG + "metrics:\n  buckets: [0.001, 50ms, 2]\n"
    o, p = start(cfg)
    with o, p:
        assert p.get("/api/x").status == 200
        s = settle(p, lambda s: s.get(DUR % ("count", "api", ""), 0) == 1)
        les = sorted(m.group(1) for k in s
                     for m in [re.match(r'pilotfish_http_request_duration_seconds_bucket'
                                        r'\{route="api",le="([^"]+)"\}$', k)] if m)
        assert les == ["+Inf", "0.001", "0.05", "2"], les
        rc, out = p.check_config(CONFIG + "metrics:\n  buckets: [0.5, 0.1]\n")
        assert rc == 1 and "metrics.buckets: must be strictly increasing" in out, out
