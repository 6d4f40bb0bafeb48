"""State that outlives a configuration snapshot (docs/HACKING.md, "Snapshots"
and "Endpoints"): rate-limit buckets survive a reload that keeps their
settings and start afresh when the settings change; endpoints are freed once
no configuration in use lists them and no connection is open to them, so a
cluster whose pod addresses rotate can reload forever with flat memory.

The rate-limit tests use 1 request per hour with a burst of 3: the 4th
request is refused whatever the speed of the machine. The rotation test does
PF_ROTATE_RELOADS reloads (default 10,000, with 100 new addresses each: far
beyond the 4096 endpoints pilotfish keeps at once; about 8 s on the release
build) with traffic every 10th."""

import os
import pf
import helpers2 as h2
from pf import Origin, Pilotfish

PER_HOUR = 1.0 / 3600

RL_CONFIG = """\
listen: "127.0.0.1:{{port}}"
workers: 2
admin: { listen: "127.0.0.1:{{admin_port}}" }
access_log: { path: off }
log_level: {{log_level}}
upstreams:
  app:
    endpoints: ["127.0.0.1:{{origin_port}}"]
routes:
  - name: limited
    match: { prefix: "/limited/" }
    upstream: app
    filters: [ratelimit]
  - name: free
    match: { prefix: "/" }
    upstream: app
filters:
  ratelimit: { requests_per_second: {{rate}}, burst: {{burst}} }
"""


def rl_config(p, rate=PER_HOUR, burst=3, log_level="info"):
    p.vars.update({"rate": repr(rate), "burst": burst, "log_level": log_level})
    p.write_config(RL_CONFIG)


def reload_ok(p):
    r = h2.admin(p, "POST", "/reload")
    assert r.status == 200 and r.json()["result"] == "success", "reload: %r %r" % (r, r.body)


def statuses(p, n, target="/limited/a"):
    return [p.get(target).status for _ in range(n)]


def test_state_ratelimit_buckets_survive_reload_with_same_settings():
    with Origin() as o:
        p = Pilotfish(RL_CONFIG, origin=o, vars={"rate": repr(PER_HOUR), "burst": 3,
                                                 "log_level": "info"})
        with p:
            assert statuses(p, 4) == [200, 200, 200, 429]
            # another setting changes (log_level), the bucket's do not
            rl_config(p, log_level="warn")
            reload_ok(p)
            assert statuses(p, 2) == [429, 429], "the drained bucket was refilled by a reload"
            reload_ok(p)  # the very same file
            assert statuses(p, 1) == [429]
            assert p.get("/free").status == 200


def test_state_ratelimit_buckets_start_fresh_when_settings_change():
    with Origin() as o:
        p = Pilotfish(RL_CONFIG, origin=o, vars={"rate": repr(PER_HOUR), "burst": 3,
                                                 "log_level": "info"})
        with p:
            assert statuses(p, 4) == [200, 200, 200, 429]
            rl_config(p, burst=4)
            reload_ok(p)
            assert statuses(p, 5) == [200, 200, 200, 200, 429], "burst changed: a new bucket"
            rl_config(p, rate=2 * PER_HOUR, burst=4)
            reload_ok(p)
            assert statuses(p, 5) == [200, 200, 200, 200, 429], "rate changed: a new bucket"


# ---- endpoints ----

ROT_CONFIG_HEAD = """\
listen: "127.0.0.1:{{port}}"
workers: 2
admin: { listen: "127.0.0.1:{{admin_port}}" }
access_log: { path: off }
upstreams:
  app:
    endpoints: ["127.0.0.1:{{origin_port}}"]
  rot:
    connect_timeout: 1s
    endpoints:
"""

ROT_CONFIG_TAIL = """\
routes:
  - name: rot
    match: { prefix: "/rot/" }
    upstream: rot
  - name: app
    match: { prefix: "/" }
    upstream: app
"""

PER_RELOAD = 100


def rot_config(p, k):
    """Reload k's file: the origin plus PER_RELOAD addresses never used before (closed ports)."""
    lines = ['      - "127.0.0.1:%d"' % p.vars["origin_port"]]
    for i in range(PER_RELOAD):
        n = k * PER_RELOAD + i
        lines.append('      - "127.%d.%d.%d:9"' % (1 + (n >> 16) % 250, (n >> 8) & 0xff, n & 0xff))
    p.write_config(ROT_CONFIG_HEAD + "\n".join(lines) + "\n" + ROT_CONFIG_TAIL)


def endpoints(p):
    return p.metrics().get("pilotfish_upstream_endpoints")


@pf.timeout(150)
def test_state_endpoint_rotation_keeps_count_and_rss_flat():
    reloads = int(os.environ.get("PF_ROTATE_RELOADS", "10000"))
    with Origin() as o:
        p = Pilotfish(ROT_CONFIG_HEAD + '      - "127.0.0.1:{{origin_port}}"\n' + ROT_CONFIG_TAIL,
                      origin=o)
        with p:
            rss_warm = None
            for k in range(reloads):
                rot_config(p, k)
                reload_ok(p)
                if k % 10 == 0:
                    # traffic: the origin through both upstreams, and failed connects
                    # that make connections and metric series for rotating endpoints
                    assert p.get("/").status == 200
                    for _ in range(3):
                        assert p.get("/rot/x").status in (200, 502)
                if k == reloads // 5:
                    rss_warm = p.rss_kib()
            # the last file lists 102 endpoints; older snapshots and their idle
            # connections go within a sweep (1 s)
            pf.eventually(lambda: endpoints(p) == 102, 5.0,
                          msg="pilotfish_upstream_endpoints back to 102")
            rss_end = p.rss_kib()
            sanitized = h2.is_sanitized(p.bin)
            slack = 64 * 1024 if sanitized else 16 * 1024
            assert rss_end <= rss_warm + slack, \
                "RSS grew from %d KiB (after %d reloads) to %d KiB (after %d)" % (
                    rss_warm, reloads // 5, rss_end, reloads)
            series = [k for k in p.metrics() if k.startswith("pilotfish_upstream_requests_total")]
            assert len(series) <= 2 * (PER_RELOAD + 2) * 3, \
                "%d upstream series kept for gone endpoints" % len(series)
            m = p.metrics()
            assert m.get('pilotfish_config_reloads_total{result="failure"}') == 0


def test_state_failed_reload_names_the_endpoint_and_frees_its_slots():
    with Origin() as o:
        p = Pilotfish(ROT_CONFIG_HEAD + '      - "127.0.0.1:{{origin_port}}"\n' + ROT_CONFIG_TAIL,
                      origin=o)
        with p:
            before = endpoints(p)
            addrs = ['      - "127.2.%d.%d:9"' % (n >> 8, n & 0xff) for n in range(4100)]
            p.write_config(ROT_CONFIG_HEAD + "\n".join(addrs) + "\n" + ROT_CONFIG_TAIL)
            r = h2.admin(p, "POST", "/reload")
            assert r.status != 200, "a reload of 4100 endpoints succeeded: %r" % r.body
            errors = r.json()["errors"]
            assert any("upstream rot: endpoint 127.2.15.254:9: too many endpoints" in e
                       for e in errors), errors
            assert endpoints(p) == before, "a failed reload kept endpoints"
            # the slots it took are free again: 4000 new ones fit next to the running ones
            p.write_config(ROT_CONFIG_HEAD + "\n".join(addrs[100:4100]) + "\n" + ROT_CONFIG_TAIL)
            reload_ok(p)
            assert p.get("/").status == 200
