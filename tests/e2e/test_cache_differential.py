"""Differential test of the cache: the same scripted request sequences
through pilotfish's cache filter and through nginx's proxy_cache (the
reference), each in front of its own pf-origin. For every request of a
sequence the test compares what matters: the status, whether the origin was
contacted (its request counter), and the body.

Only cases where RFC 9111 is unambiguous and nginx is known to follow it are
compared (each case says what the RFC requires, and that is asserted too, so
the two cannot agree on a wrong answer). Left out, because nginx (1.22, the
Debian 12 package) deviates from the RFC there, or the RFC leaves a choice:

- Invalidation after an unsafe method (RFC 9111 §4.4: a POST, PUT or DELETE
  with a non-error response invalidates the target URI): nginx keeps
  serving the stored response (checked: GET, POST, GET is a hit in nginx).
- Authorization (§3.5: a response to a request with Authorization is stored
  only with public, s-maxage or must-revalidate): nginx ignores the
  request's Authorization and stores the response (checked).
- Request directives (§5.2.1: no-cache, max-age, min-fresh, max-stale,
  only-if-cached): nginx ignores them (checked: a request's no-cache is a hit).
- Age of the stored response (§4.2.3: the origin's Age counts against the
  freshness lifetime): nginx ignores Age (checked: max-age=100 with Age: 200
  is a hit).
- Set-Cookie (§3: a response with Set-Cookie may be stored): nginx does not
  store it (checked; the RFC allows both, so the outcomes may differ).
- Response no-cache (§5.2.2.4: may be stored, must be revalidated): nginx
  does not store it; both contact the origin every time, but nginx sends an
  unconditional request where the RFC cache revalidates.
- Heuristic freshness (§4.2.2): optional; nginx has none without
  proxy_cache_valid.
- Several variants of one URL at once (Vary, §4.1): a cache may keep only
  the last one stored, so only sequences whose outcome does not depend on
  that are compared.
- stale-while-revalidate / stale-if-error (RFC 5861): nginx honours them
  only with proxy_cache_use_stale / background_update settings, and serves
  stale on its own terms.

The test skips (loudly: run.py prints "skip") only when nginx is not
installed; `make test` installs it (the Makefile's DEBS)."""

import email.utils
import os
import shutil
import tempfile
import time
import urllib.parse

import pf
from pf import Conn, Origin, Pilotfish

CONFIG = """\
listen: "127.0.0.1:{{port}}"
workers: 1
admin: { listen: "127.0.0.1:{{admin_port}}" }
access_log: { path: off }
upstreams:
  app:
    endpoints: ["127.0.0.1:{{origin_port}}"]
routes:
  - name: cached
    match: { prefix: "/" }
    upstream: app
    filters: [cache]
filters:
  cache: { memory: 8MiB }
"""

NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
pid %(dir)s/nginx.pid;
error_log %(dir)s/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %(dir)s/client_body;
    proxy_temp_path       %(dir)s/proxy_temp;
    fastcgi_temp_path     %(dir)s/fastcgi_temp;
    uwsgi_temp_path       %(dir)s/uwsgi_temp;
    scgi_temp_path        %(dir)s/scgi_temp;
    proxy_cache_path %(dir)s/cache levels=1 keys_zone=ref:1m;
    server {
        listen 127.0.0.1:%(port)d;
        location / {
            proxy_pass http://127.0.0.1:%(origin_port)d;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache ref;
            # revalidate a stale entry with its validators (RFC 9111 §4.3.1)
            proxy_cache_revalidate on;
        }
    }
}
"""


class Nginx(pf.Process):
    """nginx with proxy_cache on a free port, its files in a temp dir; stopped by PID."""

    name = "nginx"

    def __init__(self, origin):
        super().__init__()
        self.port = pf.free_port()
        # the workers may run as nobody: they must be able to write the cache
        os.chmod(self.dir, 0o777)
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF % {"dir": self.dir, "port": self.port,
                                  "origin_port": origin.port})
        self.spawn([NGINX, "-e", os.path.join(self.dir, "error.log"), "-p", self.dir,
                    "-c", conf])
        pf.wait_port(self.port, proc=self)

    def conn(self, timeout=10.0):
        return Conn(self.port, timeout=timeout)


NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                   else None)


def need_nginx():
    if NGINX is None:
        raise pf.Skip("REFERENCE MISSING: nginx is not installed (make test installs it: "
                      "apt-get install nginx); the differential cache test did not run")


def q(**kw):
    """The origin's query string: header=Name:Value pairs and the other knobs."""
    parts = []
    for k, v in kw.items():
        if k == "headers":
            for h in v:
                parts.append("header=" + urllib.parse.quote(h, safe=":"))
        else:
            parts.append("%s=%s" % (k, urllib.parse.quote(str(v), safe="")))
    return "&".join(parts)


def http_date(offset):
    return email.utils.formatdate(time.time() + offset, usegmt=True)


# Each case: (name, [(method, target, headers, expected (status, origin contacted))]).
# Targets are made unique per case by the runner (a path prefix), so cases never share keys.
def cases():
    hour = ["Cache-Control: max-age=3600"]
    return [
        ("max-age fresh: stored, then a hit", [
            ("GET", "/a?" + q(size=300, headers=hour), [], (200, True)),
            ("GET", "/a?" + q(size=300, headers=hour), [], (200, False)),
        ]),
        ("max-age=0: stale at once, the origin every time", [
            ("GET", "/a?" + q(size=300, headers=["Cache-Control: max-age=0"]), [], (200, True)),
            ("GET", "/a?" + q(size=300, headers=["Cache-Control: max-age=0"]), [], (200, True)),
        ]),
        ("s-maxage wins over max-age=0 in a shared cache", [
            ("GET", "/a?" + q(headers=["Cache-Control: max-age=0, s-maxage=3600"]), [],
             (200, True)),
            ("GET", "/a?" + q(headers=["Cache-Control: max-age=0, s-maxage=3600"]), [],
             (200, False)),
        ]),
        ("Expires in the future: fresh", [
            ("GET", "/e?" + q(headers=["Expires: " + http_date(3600)]), [], (200, True)),
            ("GET", "/e?" + q(headers=["Expires: " + http_date(3600)]), [], (200, False)),
        ]),
        ("Expires in the past: stale", [
            ("GET", "/e?" + q(headers=["Expires: " + http_date(-3600)]), [], (200, True)),
            ("GET", "/e?" + q(headers=["Expires: " + http_date(-3600)]), [], (200, True)),
        ]),
        ("max-age wins over an Expires in the past", [
            ("GET", "/e?" + q(headers=hour + ["Expires: " + http_date(-3600)]), [], (200, True)),
            ("GET", "/e?" + q(headers=hour + ["Expires: " + http_date(-3600)]), [], (200, False)),
        ]),
        ("no-store: never stored", [
            ("GET", "/n?" + q(headers=["Cache-Control: no-store, max-age=3600"]), [], (200, True)),
            ("GET", "/n?" + q(headers=["Cache-Control: no-store, max-age=3600"]), [], (200, True)),
        ]),
        ("private: not stored by a shared cache", [
            ("GET", "/p?" + q(headers=["Cache-Control: private, max-age=3600"]), [], (200, True)),
            ("GET", "/p?" + q(headers=["Cache-Control: private, max-age=3600"]), [], (200, True)),
        ]),
        ("Vary: a variant is stored and matched by the request header", [
            ("GET", "/v?" + q(headers=hour + ["Vary: Accept-Language"]),
             [("Accept-Language", "en")], (200, True)),
            ("GET", "/v?" + q(headers=hour + ["Vary: Accept-Language"]),
             [("Accept-Language", "en")], (200, False)),
            ("GET", "/v?" + q(headers=hour + ["Vary: Accept-Language"]),
             [("Accept-Language", "fr")], (200, True)),
            ("GET", "/v?" + q(headers=hour + ["Vary: Accept-Language"]),
             [("Accept-Language", "fr")], (200, False)),
        ]),
        ("Vary: * never matches", [
            ("GET", "/v?" + q(headers=hour + ["Vary: *"]), [], (200, True)),
            ("GET", "/v?" + q(headers=hour + ["Vary: *"]), [], (200, True)),
        ]),
        ("Authorization with public: stored", [
            ("GET", "/u?" + q(headers=["Cache-Control: public, max-age=3600"]),
             [("Authorization", "Bearer x")], (200, True)),
            ("GET", "/u?" + q(headers=["Cache-Control: public, max-age=3600"]),
             [("Authorization", "Bearer x")], (200, False)),
        ]),
        ("304 revalidation: a stale entry with an ETag is served after a 304", [
            ("GET", "/r?" + q(etag="v1", size=500, headers=["Cache-Control: max-age=0"]), [],
             (200, True)),
            ("GET", "/r?" + q(etag="v1", size=500, headers=["Cache-Control: max-age=0"]), [],
             (200, True)),
        ]),
        ("a client's If-None-Match answered 304 from a fresh entry", [
            ("GET", "/c?" + q(etag="v2", headers=hour), [], (200, True)),
            ("GET", "/c?" + q(etag="v2", headers=hour), [("If-None-Match", '"v2"')],
             (304, False)),
        ]),
        ("HEAD answered from the entry a GET stored", [
            ("GET", "/h?" + q(size=200, headers=hour), [], (200, True)),
            ("HEAD", "/h?" + q(size=200, headers=hour), [], (200, False)),
        ]),
        ("a Range of a stored response: 206 from the cache", [
            ("GET", "/g?" + q(size=1000, headers=hour + ["Accept-Ranges: bytes"]), [],
             (200, True)),
            ("GET", "/g?" + q(size=1000, headers=hour + ["Accept-Ranges: bytes"]),
             [("Range", "bytes=10-19")],
             (206, False)),
        ]),
        ("POST is forwarded, never answered from the cache", [
            ("POST", "/o?" + q(headers=hour), [("Content-Length", "0")], (200, True)),
            ("POST", "/o?" + q(headers=hour), [("Content-Length", "0")], (200, True)),
        ]),
        ("404 with max-age: stored", [
            ("GET", "/m?" + q(status=404, headers=hour), [], (404, True)),
            ("GET", "/m?" + q(status=404, headers=hour), [], (404, False)),
        ]),
    ]


def run(proxy_conn, origin, steps, prefix):
    """Run one sequence; [(status, origin contacted, body)] per request."""
    out = []
    for method, target, headers, _ in steps:
        before = origin.stats()["requests"]
        with proxy_conn() as c:
            r = c.request(method, prefix + target, headers=headers)
        after = origin.stats()["requests"]
        out.append((r.status, after > before, r.body))
    return out


@pf.timeout(120)
def test_cache_differential_against_nginx_proxy_cache():
    need_nginx()
    o1, o2 = Origin(), Origin()
    with o1, o2:
        p = Pilotfish(CONFIG, origin=o1)
        with p:
            n = Nginx(o2)
            with n:
                failures = []
                for i, (name, steps) in enumerate(cases()):
                    prefix = "/case%d" % i
                    ours = run(p.conn, o1, steps, prefix)
                    ref = run(n.conn, o2, steps, prefix)
                    want = [s[3] for s in steps]
                    got_ours = [(s, c) for s, c, _ in ours]
                    got_ref = [(s, c) for s, c, _ in ref]
                    if ours != ref:
                        failures.append("%s: pilotfish %r, nginx %r" % (name, got_ours, got_ref))
                    if got_ours != want:
                        failures.append("%s: pilotfish %r, the RFC %r" % (name, got_ours, want))
                    if got_ref != want:
                        failures.append("%s: nginx %r, the RFC %r (not a case where the "
                                        "reference follows the RFC?)" % (name, got_ref, want))
                assert not failures, "\n".join(failures)

