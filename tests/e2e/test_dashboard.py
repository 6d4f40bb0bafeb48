"""The admin index, 405s, GET /stats and GET /dashboard (docs/operations.md).

The dashboard is loaded in a real headless browser (Debian's chromium): the
page must run without console errors and show the numbers /metrics shows.
Without chromium the browser tests are skipped, and say so.

PF_DASHBOARD_SCREENSHOT=FILE makes test_dashboard_screenshot write its
picture there (docs/images/dashboard.png is made that way).
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile

import pf
from pf import Origin, Pilotfish

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
  - name: cached
    match: { prefix: "/cached/" }
    upstream: app
    filters: [metrics, cache]
  - name: dead
    match: { prefix: "/dead/" }
    upstream: dead
  - name: api
    match: { prefix: "/api/" }
    upstream: app
    slo: { availability: 99.9%, latency: { threshold: 300ms, target: 99% } }
filters:
  cache: { memory: 8MiB }
"""

SAMPLE = re.compile(r'^([a-z_]+)(?:\{(.*)\})? (\S+)$')


def start():
    o = Origin()
    p = Pilotfish(CONFIG, origin=o, vars={"dead_port": pf.free_port()})
    return o, p


def traffic(p):
    """Known traffic: 7 api 200s, 2 api 503s, 3 dead 502s, a miss and 3 hits, a 404."""
    for _ in range(7):
        assert p.get("/api/ok").status == 200
    for _ in range(2):
        assert p.get("/api/fail?status=503").status == 503
    for _ in range(3):
        assert p.get("/dead/x").status == 502
    for _ in range(4):
        r = p.get("/cached/a?size=3000&header=Cache-Control:max-age%3D600")
        assert r.status == 200, r
    assert p.admin("GET", "/nowhere").status == 404


def parse_metrics(text):
    """{(name, labels text): value} of every sample."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, line
        out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def total(samples, name, **labels):
    t = 0.0
    for (n, lab), v in samples.items():
        if n != name:
            continue
        if all(('%s="%s"' % (k, val) in lab) if not callable(val) else
               val(re.search(r'%s="([^"]*)"' % k, lab).group(1)) for k, val in labels.items()):
            t += v
    return t


# ---- the admin API without a browser ----

def test_dashboard_admin_index_lists_endpoints_and_405_has_allow():
    o, p = start()
    with o, p:
        r = p.admin("GET", "/")
        assert r.status == 200 and r.header("Content-Type") == "application/json", r
        eps = {e["path"]: e["methods"] for e in r.json()["endpoints"]}
        for path in ("/", "/dashboard", "/stats", "/health", "/live", "/ready", "/metrics",
                     "/config"):
            assert eps.get(path) == "GET, HEAD", (path, eps)
        for path in ("/reload", "/drain", "/quitquitquit", "/cache/purge"):
            assert eps.get(path) == "POST", (path, eps)
        # a GET endpoint asked with POST, DELETE, PUT: 405 and what it takes
        for method, path in (("POST", "/metrics"), ("DELETE", "/ready"), ("PUT", "/"),
                             ("POST", "/dashboard")):
            r = p.admin(method, path)
            assert r.status == 405 and r.header("Allow") == "GET, HEAD", (method, path, r)
        # a POST endpoint asked with GET or HEAD: 405, nothing done
        for method, path in (("GET", "/drain"), ("HEAD", "/quitquitquit"), ("GET", "/reload"),
                             ("GET", "/cache/purge")):
            r = p.admin(method, path)
            assert r.status == 405 and r.header("Allow") == "POST", (method, path, r)
        assert p.admin("GET", "/ready").status == 200, "a GET /drain drained"
        # unknown paths stay 404 whatever the method
        for method in ("GET", "POST", "DELETE"):
            assert p.admin(method, "/nope").status == 404, method


def test_dashboard_stats_json_has_every_metrics_sample():
    o, p = start()
    with o, p:
        traffic(p)
        metrics = parse_metrics(p.admin("GET", "/metrics").text())
        r = p.admin("GET", "/stats")
        assert r.status == 200 and r.header("Content-Type") == "application/json", r
        j = r.json()
        assert isinstance(j["time"], (int, float)) and j["time"] > 1.5e9, j["time"]
        got = {}
        for name, labels, value in j["samples"]:
            lab = ",".join('%s="%s"' % (k, v) for k, v in labels.items())
            got[(name, lab)] = value
        # the same series; counters of the finished traffic have the same values
        assert set(got) == set(metrics), set(got) ^ set(metrics)
        for key, v in metrics.items():
            if key[0].startswith("pilotfish_http_requests_total") or \
               key[0].startswith("pilotfish_cache_requests_total") or \
               key[0].startswith("pilotfish_upstream_requests_total"):
                assert got[key] == v, (key, got[key], v)
        assert got[("pilotfish_slo_objective", 'route="api",slo="availability"')] == 0.999


# ---- the browser ----

def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise pf.Skip("SKIPPED: no chromium on this machine (apt-get install chromium); "
                  "the dashboard was not checked in a browser")


def browse(url, *extra, timeout=60):
    """(DOM after the scripts ran, console error lines) of url in headless chromium."""
    with tempfile.TemporaryDirectory() as profile:
        argv = [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--disable-extensions", "--user-data-dir=" + profile,
                "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]
        proc = subprocess.Popen(argv + list(extra) + [url], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        pf._record_pid(proc.pid)
        try:
            out, err = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the group this test started
                proc.wait()
    console = [line for line in err.splitlines()
               if ":CONSOLE" in line or "Uncaught" in line or "console" in line.lower()]
    return out, console


def shown(dom):
    """{data-k: text} of every cell the page filled."""
    return dict(re.findall(r'data-k="([^"]+)"[^>]*>([^<]*)<', dom))


def page_errors(dom):
    m = re.search(r'id="errors" data-errors="(\d+)">([^<]*)<', dom)
    assert m, "no #errors element: the page did not load"
    return int(m.group(1)), m.group(2)


@pf.timeout(120)
def test_dashboard_in_chromium_shows_what_metrics_shows():
    chromium()
    o, p = start()
    with o, p:
        traffic(p)
        m = parse_metrics(p.admin("GET", "/metrics").text())
        dom, console = browse("http://127.0.0.1:%d/dashboard" % p.admin_port, "--dump-dom")
    assert not console, "console errors:\n" + "\n".join(console)
    n, text = page_errors(dom)
    assert n == 0, text
    k = shown(dom)
    req = "pilotfish_http_requests_total"
    for route in ("api", "dead", "cached"):
        assert k["route/%s/requests" % route] == "%d" % total(m, req, route=route), (route, k)
        for c in "2345":
            want = total(m, req, route=route, code=lambda v, c=c: v.startswith(c))
            assert k["route/%s/%sxx" % (route, c)] == "%d" % want, (route, c, k)
    assert k["route/api/requests"] == "9" and k["route/api/5xx"] == "2", k
    assert k["route/dead/5xx"] == "3", k
    assert k["route/api/5xx_share"] == "22.22%", k  # 2 of 9, the page's only sample
    assert "99.90% available" in k["route/api/slo"], k["route/api/slo"]
    up = "pilotfish_upstream_requests_total"
    assert k["upstream/app/attempts"] == "%d" % total(m, up, upstream="app"), k
    assert k["upstream/dead/failed"] == "%d" % total(m, up, upstream="dead"), k
    assert k["cache/hit"] == "%d" % total(m, "pilotfish_cache_requests_total", result="hit"), k
    assert k["cache/hit"] == "3" and k["cache/miss"] == "1", k
    assert k["cache/hit_ratio"] == "75.00%", k
    assert k["error/upstream_connect_failed"] == "%d" % total(
        m, "pilotfish_errors_total", error="upstream_connect_failed"), k
    ep = "endpoint/app/127.0.0.1:%d/" % o.port
    assert k[ep + "state"] == "circuit closed", k  # from /upstreams; no health checks
    assert k[ep + "attempts"] == "%d" % total(m, up, upstream="app"), k


@pf.timeout(120)
def test_dashboard_browser_check_can_fail():
    """A page with a script error is caught both ways: the console and #errors."""
    chromium()
    page = ('<div id="errors" data-errors="0"></div><script>'
            'window.addEventListener("error", function (e) {'
            ' var d = document.getElementById("errors");'
            ' d.setAttribute("data-errors", "1"); d.textContent = e.message; });'
            'console.error("boom"); nosuchfunction();</script>')
    with tempfile.NamedTemporaryFile("w", suffix=".html", delete=False) as f:
        f.write(page)
    try:
        dom, console = browse("file://" + f.name, "--dump-dom")
    finally:
        os.unlink(f.name)
    assert console, "the console error was not seen"
    assert page_errors(dom)[0] == 1, dom


@pf.timeout(120)
def test_dashboard_screenshot():
    """The page renders to a picture (PF_DASHBOARD_SCREENSHOT keeps it)."""
    chromium()
    o, p = start()
    with o, p:
        traffic(p)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.environ.get("PF_DASHBOARD_SCREENSHOT") or os.path.join(tmp, "d.png")
            _, console = browse("http://127.0.0.1:%d/dashboard" % p.admin_port,
                                "--screenshot=" + os.path.abspath(path),
                                "--window-size=1280,900", "--hide-scrollbars")
            with open(path, "rb") as f:
                head = f.read(8)
            assert head == b"\x89PNG\r\n\x1a\n", head
            assert os.path.getsize(path) > 10000, os.path.getsize(path)
    assert not console, console


# ---- routes[].slo in /metrics ----

SLO_CONFIG = """\
listen: "127.0.0.1:{{port}}"
admin: { listen: "127.0.0.1:{{admin_port}}" }
access_log: { path: off }
upstreams:
  app: { endpoints: ["127.0.0.1:{{origin_port}}"] }
routes:
  - name: plain
    match: { prefix: "/plain/" }
    upstream: app
  - name: api
    match: { prefix: "/" }
    upstream: app
    slo: { availability: 99.5%, latency: { threshold: 1s, target: 90% } }
"""


def test_dashboard_slo_metrics_count_requests_within_the_threshold():
    """3 fast requests and 1 the origin holds 1.1 s: 4 counted, 3 good; the
    objectives are gauges; a route without slo: has no SLO series."""
    with Origin() as o, Pilotfish(SLO_CONFIG, origin=o) as p:
        for _ in range(3):
            assert p.get("/fast").status == 200
        assert p.get("/slow?delay=1100").status == 200
        assert p.get("/plain/x").status == 200
        m = parse_metrics(p.admin("GET", "/metrics").text())
        assert m[("pilotfish_slo_latency_requests_total", 'route="api"')] == 4, m
        assert m[("pilotfish_slo_latency_good_total", 'route="api"')] == 3, m
        assert m[("pilotfish_slo_objective", 'route="api",slo="availability"')] == 0.995
        assert m[("pilotfish_slo_objective", 'route="api",slo="latency"')] == 0.9
        assert m[("pilotfish_slo_latency_threshold_seconds", 'route="api"')] == 1
        assert not [k for k in m if k[0].startswith("pilotfish_slo") and "plain" in k[1]], m
        # a reload that drops the slo: the gauges go, the counters stay
        with open(p.config_path, "w") as f:
            f.write(p.render(SLO_CONFIG.replace(
                "    slo: { availability: 99.5%, latency: { threshold: 1s, target: 90% } }\n", "")))
        r = p.admin("POST", "/reload")
        assert r.status == 200, r.text()
        m = parse_metrics(p.admin("GET", "/metrics").text())
        assert not [k for k in m if k[0] == "pilotfish_slo_objective"], m
        assert m[("pilotfish_slo_latency_requests_total", 'route="api"')] == 4, m
