"""Routing: prefix, host and method matching, first match wins, 404 no_route,
and dot segments (plain or encoded) that must not carry a request out of the
route it appears to be under."""

import pf
from pf import Origin, Pilotfish

import helpers2 as h2

ROUTES = h2.CONFIG_HEAD + """\
upstreams:
  a:
    endpoints: ["127.0.0.1:{{o1}}"]
  b:
    endpoints: ["127.0.0.1:{{o2}}"]
routes:
  - name: api-get
    match: { prefix: "/api/", methods: [GET, HEAD] }
    upstream: a
    filters: []
  - name: api-host
    match: { prefix: "/api/", host: "b.example" }
    upstream: b
    filters: []
  - name: public
    match: { prefix: "/public/" }
    upstream: b
    filters: []
"""


def _start():
    o1, o2 = Origin(), Origin()
    p = Pilotfish(ROUTES, vars={"o1": o1.port, "o2": o2.port})
    return o1, o2, p


def _which(p, o1, o2, method, target, host="x"):
    """(status, 'a' | 'b' | None): which origin answered."""
    before = (o1.stats()["requests"], o2.stats()["requests"])
    with p.conn() as c:
        r = c.request(method, target, host=host)
    after = (o1.stats()["requests"], o2.stats()["requests"])
    if after[0] > before[0]:
        return r.status, "a"
    if after[1] > before[1]:
        return r.status, "b"
    return r.status, None


def test_routing_prefix_method_host_first_match_wins():
    o1, o2, p = _start()
    with o1, o2, p:
        assert _which(p, o1, o2, "GET", "/api/x") == (200, "a")
        # POST is not in api-get's methods: api-host matches on the host only
        assert _which(p, o1, o2, "POST", "/api/x", host="b.example") == (200, "b")
        # host matching ignores the port and case
        assert _which(p, o1, o2, "POST", "/api/x", host="B.Example:8080") == (200, "b")
        # GET matches api-get first, whatever the host
        assert _which(p, o1, o2, "GET", "/api/x", host="b.example") == (200, "a")
        assert _which(p, o1, o2, "GET", "/public/y") == (200, "b")


def test_routing_no_route_is_404_json():
    o1, o2, p = _start()
    with o1, o2, p:
        with p.conn() as c:
            r = c.request("POST", "/api/x", host="other")
        assert r.status == 404, r
        assert r.header("X-Pilotfish-Error") == "no_route", r.headers
        assert b'"error":"no_route"' in r.body, r.body
        assert _which(p, o1, o2, "GET", "/elsewhere")[0] == 404


def test_routing_dot_segments_cannot_leave_a_route():
    """"/public/../api/x" is "/api/x": it must be routed (and filtered) as
    such, never as the /public/ route it starts with -- also when the dots or
    the slash are percent-encoded, which an upstream may decode."""
    o1, o2, p = _start()
    with o1, o2, p:
        for target in ["/public/../api/x", "/public/%2e%2e/api/x", "/public/%2E%2E/api/x",
                       "/public/..%2fapi/x", "/public/..%5capi/x", "/public/./../api/x",
                       "/public//../api/x", "/public/x//..//../api/x"]:
            # GET: routed to api-get (origin a), not to public (origin b)
            assert _which(p, o1, o2, "GET", target) == (200, "a"), target
            # POST: no route matches /api/x for host x
            assert _which(p, o1, o2, "POST", target)[0] == 404, target
        # dot segments that stay inside the route
        assert _which(p, o1, o2, "GET", "/public/a/../b") == (200, "b")
        assert _which(p, o1, o2, "GET", "/public/./b") == (200, "b")
        assert _which(p, o1, o2, "GET", "/public/a/..") == (200, "b")


def test_routing_normalised_target_forwarded_by_default():
    """normalize_path: forward (the default): the upstream gets the path the
    route matched, so it cannot read the request as another path; the query
    is forwarded as received."""
    o1, o2, p = _start()
    with o1, o2, p:
        for target, want in [("/public/a/../echo?x=%2e", "/public/echo?x=%2e"),
                             ("/public/%65cho", "/public/echo"),
                             ("/public;p=1//x/..%2Fecho", "/public;p=1/echo"),
                             ("/public/echo?a=%2561", "/public/echo?a=%2561")]:
            with p.conn() as c:
                r = c.request("GET", target)
            assert r.status == 200, (target, r)
            assert r.json()["url"] == want, (target, r.json()["url"])


def test_routing_match_only_forwards_the_target_as_received():
    o = Origin()
    p = Pilotfish(h2.CONFIG_HEAD + """\
upstreams:
  app:
    endpoints: ["127.0.0.1:{{origin_port}}"]
routes:
  - match: { prefix: "/" }
    normalize_path: match_only
    filters: []
""", origin=o)
    with o, p, p.conn() as c:
        r = c.request("GET", "/a/../echo?x=%2e")
        assert r.status == 200, r
        assert r.json()["url"] == "/a/../echo?x=%2e", r.json()


def _refused(p, o, target):
    """target gets 400 bad_request and never reaches origin o."""
    before = o.stats()["requests"]
    with p.conn() as c:
        r = c.request("GET", target)
    assert r.status == 400 and r.header("X-Pilotfish-Error") == "bad_request", (target, r)
    assert o.stats()["requests"] == before, target


def test_routing_nul_and_overlong_utf8_in_the_path_are_400():
    """%00 has no place in a path, and %C0/%C1 only start overlong UTF-8
    forms ("%C0%AE" is '.', "%C0%AF" '/' to a lenient decoder): refused,
    whatever normalize_path says. The query is not checked."""
    o1, o2, p = _start()
    with o1, o2, p:
        for target in ["/public/a%00", "/public/%00/x", "/public/%C0%AE%C0%AE/api/x",
                       "/public/..%c0%afapi/x", "/public/%C1%81", "/public/%E0%80%AE%E0%80%AE/a"]:
            _refused(p, o2, target)
        with p.conn() as c:
            r = c.request("GET", "/public/echo?x=%00")
        assert r.status == 200 and r.json()["url"] == "/public/echo?x=%00", r


def test_routing_match_only_refuses_params_with_dot_segments():
    """match_only forwards the target as received, and upstreams disagree on
    ";params" next to dot segments: "/api/..;x/y" is "/y" here but a path
    under /api/ where ';' is plain; "/x/;a/../admin/z" is "/x/admin/z" here
    but "/admin/z" where params are removed first. Such targets are 400."""
    o = Origin()
    p = Pilotfish(h2.CONFIG_HEAD + """\
upstreams:
  app:
    endpoints: ["127.0.0.1:{{origin_port}}"]
routes:
  - match: { prefix: "/" }
    normalize_path: match_only
    filters: []
""", origin=o)
    with o, p:
        for target in ["/api/..;x/y", "/x/;a/../admin/z", "/api;%2f../x", "/a/.;p/echo",
                       "/;x/admin/echo"]:
            _refused(p, o, target)
        for target in ["/api;v=1/echo", "/a/./echo?q=1"]:
            with p.conn() as c:
                r = c.request("GET", target)
            assert r.status == 200 and r.json()["url"] == target, (target, r)


def test_routing_forward_sends_what_was_matched_with_params_and_dots():
    """normalize_path: forward: the same targets are forwarded as the path
    the route matched, so no upstream can read them otherwise."""
    o1, o2, p = _start()
    with o1, o2, p:
        for target, want in [("/api/..;x/public/echo", "/public/echo"),
                             ("/public/x/;a/../echo", "/public/x/echo"),
                             ("/api;%2f../public/echo", "/public/echo")]:
            with p.conn() as c:
                r = c.request("GET", target)
            assert r.status == 200, (target, r)
            assert r.json()["url"] == want, (target, r.json()["url"])


LIMITED = h2.CONFIG_HEAD + """\
upstreams:
  app:
    endpoints: ["127.0.0.1:{{origin_port}}"]
routes:
  - name: api
    match: { prefix: "/api/"{{match_extra}} }
    filters: [ratelimit]
  - name: rest
    match: { prefix: "/" }
    filters: []
filters:
  ratelimit: { requests_per_second: 0.001, burst: 1, key: global }
"""


def _limited_then(cases, match_extra=""):
    """A /api/ route with a rate limit (burst 1) and a / route without: once
    /api/a is limited, each (target, status) must get status without reaching
    the upstream through /."""
    o = Origin()
    p = Pilotfish(LIMITED, origin=o, vars={"match_extra": match_extra})
    with o, p:
        assert p.get("/api/a").status == 200
        assert p.get("/api/a").status == 429
        problems = []
        for target, want in cases:
            before = o.stats()["requests"]
            with p.conn() as c:
                r = c.request("GET", target)
            if r.status != want or o.stats()["requests"] != before:
                problems.append("%s: %d (origin saw %d)" % (
                    target, r.status, o.stats()["requests"] - before))
        assert not problems, "\n".join(problems)
        assert p.get("/other").status == 200


def test_routing_encoding_and_params_cannot_bypass_a_route_filter():
    _limited_then([("/%61pi/a", 429), ("/%61%70%69/a", 429), ("/api;x/a", 429),
                   ("/x/..;/api/a", 429), ("/%2561pi/a", 400), ("/api%252fa", 400),
                   ("/%25%36%31pi/a", 400), ("/;x/api/a", 429), ("/;/api/a", 429)])


def test_routing_case_insensitive_route_cannot_be_bypassed_by_case():
    _limited_then([("/API/a", 429), ("/Api;v=1/a", 429), ("/%41pi/a", 429)],
                  match_extra=", case_insensitive: true")


def test_routing_prefix_must_be_written_normalised():
    o = Origin()
    p = Pilotfish(h2.CONFIG_HEAD + """\
upstreams:
  app:
    endpoints: ["127.0.0.1:{{origin_port}}"]
routes:
  - match: { prefix: "/%61pi/" }
""", origin=o, start=False)
    with o:
        rc, out = p.check_config()
        assert rc != 0 and "write it as '/api/'" in out, (rc, out)


def test_routing_absolute_form_target():
    """"GET http://b.example/api/x": the authority replaces the Host header
    (RFC 9112 3.2.2) for routing and upstream; the upstream gets origin form."""
    o1, o2, p = _start()
    with o1, o2, p:
        with p.conn() as c:
            r = c.request("POST", "http://b.example/api/echo?q=1", host="ignored")
        assert r.status == 200, r
        j = r.json()
        assert j["url"] == "/api/echo?q=1", j
        hosts = [v for k, v in j["headers"] if k.lower() == "host"]
        assert hosts == ["b.example"], j["headers"]
        with p.conn() as c:
            r = c.request("GET", "http://x@evil/api/x", host="x")
        assert r.status == 400, r


def test_routing_options_star_goes_to_the_root_route():
    o = Origin()
    p = Pilotfish(h2.config(), origin=o)
    with o, p:
        before = o.stats()["requests"]
        with p.conn() as c:
            r = c.request("OPTIONS", "*")
        assert r.status == 200, r
        assert o.stats()["requests"] == before + 1


def test_routing_options_to_an_authority_is_options_star():
    """RFC 9112 3.2.4: "OPTIONS http://host" (no path, no query) reaches the
    origin as "OPTIONS *"; with a query, or another method, the path is "/"."""
    heads = []

    def answer(conn, n, head, body):
        heads.append(head.split(b"\r\n")[0])
        return h2.http_response(b"ok")
    with h2.FakeOrigin(answer) as fo:
        p = Pilotfish(h2.config(endpoints=[fo.addr]))
        with p:
            for target in ["http://a.example", "http://a.example:8080", "http://a.example?q"]:
                with p.conn() as c:
                    assert c.request("OPTIONS", target).status == 200, target
            with p.conn() as c:
                assert c.request("GET", "http://a.example").status == 200
    assert heads == [b"OPTIONS * HTTP/1.1", b"OPTIONS * HTTP/1.1", b"OPTIONS /?q HTTP/1.1",
                     b"GET / HTTP/1.1"], heads


def test_routing_forwarded_for_lines_are_joined():
    o1, o2, p = _start()
    with o1, o2, p:
        with p.conn() as c:
            r = c.request("GET", "/public/echo",
                          headers=[("X-Forwarded-For", "10.0.0.1"),
                                   ("X-Forwarded-For", "10.0.0.2, 10.0.0.3")])
        xff = [v for k, v in r.json()["headers"] if k.lower() == "x-forwarded-for"]
        assert xff == ["10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"], xff
