"""Access log fields host, user_agent, protocol, upstream_status, attempts, and
the text format (docs/operations.md, "Access log")."""

import os
import re

import pf
from pf import Origin, Pilotfish

import helpers2 as h2

HEAD = """\
listen: "127.0.0.1:{{port}}"
workers: 1
admin: { listen: "127.0.0.1:{{admin_port}}" }
access_log: { path: "{{dir}}/access.log", format: %s }
routes:
  - { name: cached, match: { prefix: "/cached/" }, upstream: app, filters: [metrics, cache] }
  - { name: app, match: { prefix: "/" }, upstream: app }
filters:
  cache: { memory: 1MiB }
"""

HEAD_NOCACHE = """\
listen: "127.0.0.1:{{port}}"
workers: 1
admin: { listen: "127.0.0.1:{{admin_port}}" }
access_log: { path: "{{dir}}/access.log", format: %s }
"""

TEXT = re.compile(
    r'^(?P<client>\S+) - - \[(?P<time>\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000)\] '
    r'"(?P<method>\S+) (?P<path>\S+) (?P<protocol>\S+)" (?P<status>\d+) (?P<bytes>\d+) '
    r'"(?P<referer>[^"]*)" "(?P<ua>[^"]*)" host="(?P<host>[^"]*)" route="(?P<route>[^"]*)" '
    r'upstream="(?P<upstream>[^"]*)" endpoint="(?P<endpoint>[^"]*)" '
    r'upstream_status=(?P<upstream_status>\d+|-) attempts=(?P<attempts>\d+) '
    r'duration_ms=(?P<duration>\d+\.\d{3}) request_id="(?P<rid>[^"]*)" error="(?P<error>[^"]*)"$')


def requests(p):
    with p.conn() as c:
        r = c.request("GET", "/ok", headers=[("Host", "shop.example"), ("X-Request-Id", "r-ok"),
                                             ("User-Agent", 'agent "q" \\ 1'),
                                             ("Referer", "https://shop.example/")])
        assert r.status == 200, r
        r = c.request("GET", "/x?reset=1", headers=[("Host", "shop.example"),
                                                   ("X-Request-Id", "r-reset")])
        assert r.status == 502, r
        for rid in ("r-miss", "r-hit"):
            r = c.request("GET", "/cached/a?header=Cache-Control:max-age%3D600",
                          headers=[("Host", "shop.example"), ("X-Request-Id", rid)])
            assert r.status == 200, r
    # HTTP/1.0, no Host, no User-Agent
    with p.conn() as c:
        r = c.request("GET", "/old", headers=[("X-Request-Id", "r-10")], version="1.0", host=False)
        assert r.status == 200, r


def test_accesslog_json_new_fields():
    o = Origin()
    p = Pilotfish(HEAD % "json" + h2.config(head=""), origin=o)
    log = os.path.join(p.dir, "access.log")
    with o, p:
        requests(p)
        lines = h2.wait_file_lines(log, 5)
    by = {l["request_id"]: l for l in lines}
    ok = by["r-ok"]
    assert ok["host"] == "shop.example" and ok["user_agent"] == 'agent "q" \\ 1', ok
    assert ok["protocol"] == "HTTP/1.1" and ok["upstream_status"] == 200, ok
    assert ok["attempts"] == 1, ok
    reset = by["r-reset"]
    assert reset["status"] == 502 and reset["upstream_status"] is None, reset
    # sent on the connection /ok left in the pool: the reset is retried once on a fresh
    # one, which resets too, and then once by the default retries policy (on: reset)
    assert reset["attempts"] == 3 and reset["error"] == "upstream_reset", reset
    assert by["r-miss"]["attempts"] == 1 and by["r-miss"]["upstream_status"] == 200, by["r-miss"]
    hit = by["r-hit"]
    assert hit["status"] == 200 and hit["attempts"] == 0, hit
    assert hit["upstream_status"] is None and hit["endpoint"] == "", hit
    # a hit makes its ids only for the log line (no upstream request needs them): a trace id too
    assert re.fullmatch(r"[0-9a-f]{32}", hit["trace_id"]), hit
    old = by["r-10"]
    assert old["protocol"] == "HTTP/1.0" and old["host"] == "" and old["user_agent"] == "", old


def test_accesslog_attempts_counts_a_retry():
    """A GET on a pooled connection the upstream closed is retried: attempts 2."""
    def handler(conn, n, head, body):
        return h2.http_response(b"conn%d" % conn) if n == 0 else None

    with h2.FakeOrigin(handler) as fo:
        p = Pilotfish(h2.config(head=HEAD_NOCACHE % "json", endpoints=[fo.addr]))
        log = os.path.join(p.dir, "access.log")
        with p:
            assert p.get("/first", headers={"X-Request-Id": "a1"}).status == 200
            r = p.get("/second", headers={"X-Request-Id": "a2"})
            assert r.status == 200 and r.body == b"conn1", r
            lines = h2.wait_file_lines(log, 2)
    by = {l["request_id"]: l for l in lines}
    assert by["a1"]["attempts"] == 1, by["a1"]
    assert by["a2"]["attempts"] == 2 and by["a2"]["upstream_status"] == 200, by["a2"]


def text_lines(log, n):
    def ready():
        if not os.path.exists(log):
            return None
        ls = [l for l in open(log, "rb").read().decode("utf-8").split("\n") if l]
        return ls if len(ls) >= n else None
    return pf.eventually(ready, timeout=5.0, msg="%d lines in %s" % (n, log))


def test_accesslog_text_format():
    o = Origin()
    p = Pilotfish(HEAD % "text" + h2.config(head=""), origin=o)
    log = os.path.join(p.dir, "access.log")
    with o, p:
        requests(p)
        lines = text_lines(log, 5)
    parsed = []
    for line in lines:
        m = TEXT.match(line)
        assert m, "not a text access log line: %r" % line
        parsed.append(m.groupdict())
    by = {m["rid"]: m for m in parsed}
    ok = by["r-ok"]
    assert ok["client"] == "127.0.0.1" and ok["method"] == "GET" and ok["path"] == "/ok", ok
    assert ok["protocol"] == "HTTP/1.1" and ok["status"] == "200" and int(ok["bytes"]) > 0, ok
    assert ok["referer"] == "https://shop.example/", ok
    # '"' and '\' escaped as nginx does
    assert ok["ua"] == r"agent \x22q\x22 \x5C 1", ok
    assert ok["host"] == "shop.example" and ok["route"] == "app" and ok["upstream"] == "app", ok
    assert ok["endpoint"] == o.addr and ok["upstream_status"] == "200", ok
    assert ok["attempts"] == "1" and ok["error"] == "-", ok
    reset = by["r-reset"]
    assert reset["status"] == "502" and reset["upstream_status"] == "-", reset
    assert reset["error"] == "upstream_reset" and reset["referer"] == "-", reset
    hit = by["r-hit"]
    assert hit["attempts"] == "0" and hit["upstream_status"] == "-" and hit["route"] == "cached", hit
    old = by["r-10"]
    assert old["protocol"] == "HTTP/1.0" and old["host"] == "-" and old["ua"] == "-", old


def test_accesslog_format_is_checked():
    p = Pilotfish(h2.config(head=HEAD_NOCACHE % "xml", endpoints=["127.0.0.1:1"]), start=False)
    rc, out = p.check_config()
    assert rc != 0 and "access_log.format: expected json or text" in out, (rc, out)
    for fmt in ("json", "text"):
        p = Pilotfish(h2.config(head=HEAD_NOCACHE % fmt, endpoints=["127.0.0.1:1"]), start=False)
        assert p.check_config()[0] == 0, fmt
