"""The monitoring pack in k8s/monitoring/ (docs/operations.md, "Monitoring"):

- promtool accepts the rules, and their unit tests pass (every alert fires
  when it should and stays silent when it should not);
- the PrometheusRule holds exactly the rules of the plain file;
- every alert has a severity, a summary and a runbook_url whose file exists
  in docs/runbooks/;
- the rules and the Grafana dashboard are valid and use only metrics
  pilotfish exports (the names in the code), or the rules' own recordings.
"""

import glob
import json
import os
import re
import shutil
import subprocess

import yaml

import pf
import test_docs

MON = os.path.join(pf.ROOT, "k8s", "monitoring")
RULES = os.path.join(MON, "pilotfish-rules.yaml")
PROMRULE = os.path.join(MON, "pilotfish-prometheusrule.yaml")
GRAFANA = os.path.join(MON, "grafana-dashboard.json")
RUNBOOK_BASE = "https://pilotfish.example/docs/runbooks/"


def promtool():
    path = shutil.which("promtool")
    if not path:
        raise pf.Skip("SKIPPED: no promtool (apt-get install prometheus); the alert rules "
                      "were not checked")
    return path


def test_monitoring_promtool_check_rules():
    for path in (RULES, PROMRULE):
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        assert doc, path
    r = subprocess.run([promtool(), "check", "rules", RULES], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_monitoring_promtool_unit_tests_cover_every_alert():
    tests = os.path.join(MON, "tests", "pilotfish-rules.test.yaml")
    r = subprocess.run([promtool(), "test", "rules", tests], capture_output=True, text=True,
                       timeout=120, cwd=os.path.dirname(tests))
    assert r.returncode == 0, r.stdout + r.stderr
    with open(tests, encoding="utf-8") as f:
        cases = yaml.safe_load(f)["tests"]
    # each alert: a case where it fires (next to series that must not make it fire), and
    # one where nothing may fire (below the threshold, or not for long enough)
    fires, silent = set(), set()
    for case in cases:
        for t in case.get("alert_rule_test", []):
            (fires if t.get("exp_alerts") else silent).add(t["alertname"])
    names = set(alert_names())
    assert names - fires == set(), "alerts never shown firing: %s" % (names - fires)
    assert names - silent == set(), "alerts never shown silent: %s" % (names - silent)


def rule_groups(path=RULES):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)["groups"]


def alert_names():
    return [r["alert"] for g in rule_groups() for r in g["rules"] if "alert" in r]


def test_monitoring_prometheusrule_is_the_plain_rules():
    with open(PROMRULE, encoding="utf-8") as f:
        pr = yaml.safe_load(f)
    assert pr["apiVersion"] == "monitoring.coreos.com/v1" and pr["kind"] == "PrometheusRule", pr
    assert pr["metadata"]["name"], pr["metadata"]
    assert pr["spec"]["groups"] == rule_groups(), "the PrometheusRule differs from " + RULES


def test_monitoring_every_alert_has_a_runbook():
    runbooks = os.path.join(pf.ROOT, "docs", "runbooks")
    expected = {"PilotfishRouteHigh5xxShare", "PilotfishRouteLatencyP95High",
                "PilotfishUpstreamCircuitOpen", "PilotfishUpstreamNoHealthyEndpoint",
                "PilotfishUpstreamPoolNearLimit", "PilotfishConfigReloadFailed",
                "PilotfishRateLimitRejectionsSurging", "PilotfishCacheHitRatioCollapse",
                "PilotfishSLOAvailabilityBurnFast", "PilotfishSLOAvailabilityBurnSlow",
                "PilotfishSLOLatencyBurnFast", "PilotfishSLOLatencyBurnSlow"}
    assert set(alert_names()) == expected, set(alert_names()) ^ expected
    used = set()
    for g in rule_groups():
        for r in g["rules"]:
            if "alert" not in r:
                continue
            assert r["labels"]["severity"] in ("page", "critical", "warning", "ticket"), r
            ann = r["annotations"]
            assert ann.get("summary") and ann.get("description"), r["alert"]
            url = ann["runbook_url"]
            assert url.startswith(RUNBOOK_BASE), (r["alert"], url)
            name = url[len(RUNBOOK_BASE):]
            path = os.path.join(runbooks, name)
            assert os.path.isfile(path), (r["alert"], path)
            text = open(path, encoding="utf-8").read()
            assert r["alert"] in text, "%s does not name %s" % (name, r["alert"])
            for part in ("## Meaning", "## Confirm", "## Act"):
                assert part in text, "%s has no '%s' section" % (name, part)
            assert "/upstreams" in text and "/metrics" in text and "log" in text.lower(), name
            used.add(name)
    files = {os.path.basename(p) for p in glob.glob(os.path.join(runbooks, "*.md"))}
    assert files - used <= {"README.md"}, "runbooks no alert uses: %s" % (files - used - {"README.md"})


# ---- metric names against the code ----

IDENT = re.compile(r"\b((?:pilotfish|process)_[a-z_]+|pilotfish:[a-z_:0-9]+)")


def exported():
    """The metric names pilotfish exports: those in the code."""
    code = test_docs.code_text(pf.ROOT)
    return set(test_docs.metric_names_in_code(code))


def unknown_metrics(exprs, known, recorded):
    """Names used in the PromQL exprs that are neither exported nor recorded."""
    bad = set()
    for e in exprs:
        for name in IDENT.findall(e):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name in recorded:
                continue
            if name not in known and base not in known:
                bad.add(name)
    return bad


def rule_exprs():
    exprs, recorded = [], set()
    for g in rule_groups():
        for r in g["rules"]:
            exprs.append(r["expr"])
            if "record" in r:
                recorded.add(r["record"])
    return exprs, recorded


def test_monitoring_rules_use_only_exported_metrics():
    exprs, recorded = rule_exprs()
    bad = unknown_metrics(exprs, exported(), recorded)
    assert not bad, "the rules use metrics pilotfish does not export: %s" % sorted(bad)


def grafana_exprs(dash):
    exprs = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            exprs.append(t["expr"])
        for inner in p.get("panels", []):
            exprs.extend(t["expr"] for t in inner.get("targets", []))
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        exprs.append(q["query"] if isinstance(q, dict) else q or "")
    return exprs


def test_monitoring_grafana_dashboard_uses_only_exported_metrics():
    with open(GRAFANA, encoding="utf-8") as f:
        dash = json.load(f)
    assert dash["title"] and dash["uid"] and isinstance(dash["panels"], list), dash.keys()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    exprs = grafana_exprs(dash)
    assert len([e for e in exprs if e]) >= 20, len(exprs)
    bad = unknown_metrics(exprs, exported(), set())
    assert not bad, "the dashboard uses metrics pilotfish does not export: %s" % sorted(bad)
    # the families a sidecar's on-call looks at first are all there
    text = "\n".join(exprs)
    for name in ("pilotfish_http_requests_total", "pilotfish_http_request_duration_seconds_bucket",
                 "pilotfish_upstream_requests_total", "pilotfish_cache_requests_total",
                 "pilotfish_slo_objective", "pilotfish_slo_latency_good_total"):
        assert name in text, name


def test_monitoring_metric_check_can_fail():
    known = {"pilotfish_http_requests_total", "pilotfish_http_request_duration_seconds"}
    exprs = ['rate(pilotfish_http_requests_total[5m]) + pilotfish_http_request_duration_seconds_bucket',
             'pilotfish:x:ratio > 1', 'rate(pilotfish_http_requests_totl[5m])',
             'process_made_up_bytes']
    assert unknown_metrics(exprs, known, {"pilotfish:x:ratio"}) == {
        "pilotfish_http_requests_totl", "process_made_up_bytes"}
