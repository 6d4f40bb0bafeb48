"""pilotfish inject (docs/deployment.md): a corpus of manifests in tests/e2e/k8s/
(multi-container pods, named and numbered ports, existing initContainers,
CronJobs, Lists, odd indentation, anchors and merge keys), checked structurally
(everything but the sidecar is as it was, key order and value types
included), with strict checks of the pod spec (known container keys, port
names, probe ports), for idempotence, offline against the Kubernetes schemas
(kubernetes-models, when installed: make k8s-deps) and for clear errors."""

import copy
import json
import os
import re
import shutil
import subprocess

try:
    import yaml
except ImportError:  # python3-yaml: make deps installs it
    yaml = None

import pf

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "k8s")
ROOT = os.path.dirname(os.path.dirname(HERE))

# file -> inject options
CASES = {
    "deployment.yaml": ["--port", "http"],
    "multi.yaml": [],
    "cronjob.yaml": [],
    "list.yaml": [],
    "pod-anchors.yaml": ["--port", "http"],
    "replicasets.yaml": ["--port", "web", "--legacy-sidecar"],
}

POD_PATHS = {
    "Pod": ["spec"],
    "Deployment": ["spec", "template", "spec"],
    "StatefulSet": ["spec", "template", "spec"],
    "DaemonSet": ["spec", "template", "spec"],
    "ReplicaSet": ["spec", "template", "spec"],
    "ReplicationController": ["spec", "template", "spec"],
    "Job": ["spec", "template", "spec"],
    "CronJob": ["spec", "jobTemplate", "spec", "template", "spec"],
}

# the fields of core/v1 Container (Kubernetes 1.31)
CONTAINER_KEYS = {
    "name", "image", "command", "args", "workingDir", "ports", "envFrom", "env", "resources",
    "resizePolicy", "restartPolicy", "volumeMounts", "volumeDevices", "livenessProbe",
    "readinessProbe", "startupProbe", "lifecycle", "terminationMessagePath",
    "terminationMessagePolicy", "imagePullPolicy", "securityContext", "stdin", "stdinOnce", "tty",
}
PORT_KEYS = {"name", "containerPort", "protocol", "hostPort", "hostIP"}
PROBE_KEYS = {"exec", "httpGet", "tcpSocket", "grpc", "initialDelaySeconds", "timeoutSeconds",
              "periodSeconds", "successThreshold", "failureThreshold",
              "terminationGracePeriodSeconds"}
IANA_SVC_NAME = re.compile(r"^(?=.{1,15}$)(?=.*[a-z])[a-z0-9]+(-[a-z0-9]+)*$")


def inject(args, stdin=None):
    r = subprocess.run([pf._bin("PILOTFISH_BIN", "bin/pilotfish"), "inject"] + args,
                       input=stdin, capture_output=True, timeout=20, cwd=ROOT)
    pf.check_sanitizer_output("pilotfish inject", r.stderr.decode(), r.returncode)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def ordered(x):
    """JSON text that keeps key order and value types: what 'unchanged' means here."""
    return json.dumps(x, sort_keys=False)


def dig(obj, path):
    for k in path:
        obj = obj.get(k) if isinstance(obj, dict) else None
    return obj


def pod_specs(obj):
    """(path, pod spec) of every workload in obj, Lists included."""
    if obj.get("kind", "").endswith("List"):
        for item in obj.get("items", []):
            yield from pod_specs(item)
    elif obj.get("kind") in POD_PATHS:
        yield obj, POD_PATHS[obj["kind"]]


def sidecar(spec):
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            if c.get("name") == "pilotfish":
                return key, c
    return None, None


def check_pod(spec, legacy, grace_min):
    """Strict checks of an injected pod spec."""
    where, pfc = sidecar(spec)
    assert pfc is not None, "no pilotfish container"
    if legacy:
        assert where == "containers" and spec["containers"][0] is pfc, "legacy: not first"
        assert pfc["lifecycle"]["preStop"]["exec"]["command"], pfc
        assert "restartPolicy" not in pfc
    else:
        assert where == "initContainers" and spec["initContainers"][-1] is pfc
        assert pfc["restartPolicy"] == "Always" and pfc["startupProbe"]["httpGet"]["path"] == "/live"
    sc = pfc["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert pfc["resources"]["requests"]["cpu"] and pfc["resources"]["limits"]["memory"]
    assert {"name": "pilotfish-config", "mountPath": "/etc/pilotfish", "readOnly": True} in \
        pfc["volumeMounts"]
    vols = {v["name"]: v for v in spec["volumes"]}
    assert "configMap" in vols["pilotfish-config"]
    assert spec["terminationGracePeriodSeconds"] >= grace_min
    names, port_names = set(), set()
    for c in (spec.get("initContainers") or []) + spec["containers"]:
        assert set(c) <= CONTAINER_KEYS, "unknown container keys %s" % (set(c) - CONTAINER_KEYS)
        assert c["name"] not in names, "container name twice: " + c["name"]
        names.add(c["name"])
        own = set()
        for p in c.get("ports") or []:
            assert set(p) <= PORT_KEYS and isinstance(p["containerPort"], int), p
            if "name" in p:
                assert IANA_SVC_NAME.match(p["name"]), "bad port name " + p["name"]
                assert p["name"] not in port_names, "port name twice: " + p["name"]
                port_names.add(p["name"])
                own.add(p["name"])
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if probe in c:
                assert set(c[probe]) <= PROBE_KEYS, c[probe]
                for kind in ("httpGet", "tcpSocket"):
                    port = c[probe].get(kind, {}).get("port")
                    assert not isinstance(port, str) or port in own, \
                        "%s of %s names port %s it does not have" % (probe, c["name"], port)
    for v in spec["volumes"]:
        assert [x["name"] for x in spec["volumes"]].count(v["name"]) == 1


def undo(spec_in, spec_out, port):
    """spec_out with the injection taken back out, to compare with spec_in."""
    s = copy.deepcopy(spec_out)
    where, pfc = sidecar(s)
    s[where].remove(pfc)
    if where not in spec_in and not s[where]:
        del s[where]
    s["volumes"] = [v for v in s["volumes"] if v["name"] != "pilotfish-config"]
    if "volumes" not in spec_in and not s["volumes"]:
        del s["volumes"]
    if "terminationGracePeriodSeconds" in spec_in:
        assert s["terminationGracePeriodSeconds"] >= spec_in["terminationGracePeriodSeconds"]
        s["terminationGracePeriodSeconds"] = spec_in["terminationGracePeriodSeconds"]
    else:
        del s["terminationGracePeriodSeconds"]
    if port:
        text = ordered(s).replace('"app-%s"' % port, '"%s"' % port)
        s = json.loads(text)
    return s


def check_case(name, args):
    with open(os.path.join(CORPUS, name)) as f:
        text = f.read()
    rc, out, err = inject(args + [os.path.join(CORPUS, name)])
    assert rc == 0, err
    docs_in = [d for d in yaml.safe_load_all(text) if d is not None]
    docs_out = list(yaml.safe_load_all(out))
    assert len(docs_out) == len(docs_in), (len(docs_in), len(docs_out))
    port = args[args.index("--port") + 1] if "--port" in args else None
    pods = 0
    for d_in, d_out in zip(docs_in, docs_out):
        ins, outs = list(pod_specs(d_in)), list(pod_specs(d_out))
        restored = copy.deepcopy(d_out)
        for (o_in, path), (o_out, _) in zip(ins, outs):
            spec_out = dig(o_out, path)
            check_pod(spec_out, "--legacy-sidecar" in args, 15)
            back = undo(dig(o_in, path), spec_out, port)
            assert ordered(back) == ordered(dig(o_in, path)), \
                "%s: pod spec changed:\n%s\n%s" % (name, ordered(back), ordered(dig(o_in, path)))
            pods += 1
        # everything outside the pod specs: compare with the specs swapped back in
        for (o_in, path), (o_r, _) in zip(ins, list(pod_specs(restored))):
            dig(o_r, path[:-1])[path[-1]] = dig(o_in, path)
        assert ordered(restored) == ordered(d_in), "%s: outside the pod spec changed" % name
    assert pods > 0
    # idempotent: injecting the output again gives it back byte for byte
    rc, again, err = inject(args + ["-"], stdin=out.encode())
    assert rc == 0 and again == out, "%s: not idempotent: %s" % (name, err)
    return out


def test_corpus_structure():
    for name, args in CASES.items():
        check_case(name, args)


def test_corpus_named_port_takeover():
    out = check_case("deployment.yaml", ["--port", "http"])
    d, svc = list(yaml.safe_load_all(out))
    spec = d["spec"]["template"]["spec"]
    app = spec["containers"][0]
    assert app["ports"][0] == {"name": "app-http", "containerPort": 3000}
    assert app["readinessProbe"]["httpGet"]["port"] == "app-http"
    pfc = spec["initContainers"][0]
    assert {"name": "http", "containerPort": 8080} in pfc["ports"]
    # the Service is untouched and its targetPort now names pilotfish's port
    assert svc["spec"]["ports"][0]["targetPort"] == "http"


def test_stdin_multiple_files_and_list():
    names = ["multi.yaml", "cronjob.yaml", "list.yaml"]
    rc, out, err = inject([os.path.join(CORPUS, n) for n in names])
    assert rc == 0, err
    docs = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in docs] == ["StatefulSet", "CronJob", "List"]
    kinds = [i["kind"] for i in docs[2]["items"]]
    assert kinds == ["DaemonSet", "ConfigMap", "Job", "Deployment", "Deployment"]
    assert docs[2]["items"][1]["data"] == {"key": "0123", "yes": "no",
                                           "text": "line one\n  line two\n"}
    with open(os.path.join(CORPUS, "multi.yaml"), "rb") as f:
        rc2, out2, _ = inject([], stdin=f.read())
    assert rc2 == 0 and list(yaml.safe_load_all(out2))[0] == docs[0]


def test_existing_init_containers_and_grace():
    out = check_case("multi.yaml", [])
    spec = yaml.safe_load(out)["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["migrate", "pilotfish"]
    assert spec["terminationGracePeriodSeconds"] == 15      # 10 raised to the drain time
    assert [v["name"] for v in spec["volumes"]] == ["data", "pilotfish-config"]
    rs = list(yaml.safe_load_all(check_case("replicasets.yaml",
                                            ["--port", "web", "--legacy-sidecar"])))
    assert rs[0]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 120  # kept
    assert rs[0]["spec"]["template"]["spec"]["containers"][0]["name"] == "pilotfish"


def test_config_emits_config_map(tmpdir=None):
    p = pf.Pilotfish(config="""\
listen: "0.0.0.0:8081"
probes: {listen: "0.0.0.0:9999"}
drain_delay: 10s
drain_timeout: 50s
upstreams: {app: {endpoints: ["127.0.0.1:3000"]}}
""", start=False)
    rc, out, err = inject(["--config", p.config_path, "--config-map", "pf-web",
                           os.path.join(CORPUS, "deployment.yaml")])
    assert rc == 0, err
    docs = list(yaml.safe_load_all(out))
    cm = docs[-1]
    assert cm["kind"] == "ConfigMap" and cm["metadata"] == {"name": "pf-web", "namespace": "shop"}
    assert cm["data"]["pilotfish.yaml"] == p.config_text
    spec = docs[0]["spec"]["template"]["spec"]
    pfc = spec["initContainers"][0]
    assert [x["containerPort"] for x in pfc["ports"]] == [8081, 9999]
    assert spec["terminationGracePeriodSeconds"] == 60
    assert spec["volumes"][-1]["configMap"]["name"] == "pf-web"
    # idempotent with the ConfigMap in the input: not emitted twice
    rc, again, err = inject(["--config", p.config_path, "--config-map", "pf-web", "-"],
                            stdin=out.encode())
    assert rc == 0 and again == out, err
    # a configuration without probes.listen cannot be probed by a kubelet
    p.write_config('upstreams: {app: {endpoints: ["127.0.0.1:3000"]}}\n')
    rc, out, err = inject(["--config", p.config_path, os.path.join(CORPUS, "multi.yaml")])
    assert rc == 1 and out == "" and "probes.listen" in err, err


def test_errors_exit_1_and_write_nothing():
    cases = [
        ("kind: Deployment\nspec: [\n", "not YAML"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n", "no pod template"),
        ("- a\n- b\n", "not a Kubernetes object"),
        ("kind: Deployment\nmetadata: {name: x}\nspec: {}\n", "no pod template"),
    ]
    for text, want in cases:
        rc, out, err = inject([], stdin=text.encode())
        assert rc == 1 and out == "" and want in err, (text, err)
        assert err.count("\n") == 1, err
    # a port name that is not there: the names that are
    rc, out, err = inject(["--port", "grpc", os.path.join(CORPUS, "deployment.yaml")])
    assert rc == 1 and out == "" and "no container port named 'grpc'" in err, err
    assert "(named ports: http)" in err and "deployment.yaml:2: Deployment/web" in err, err
    # the second workload fails: nothing of the first one is written either
    rc, out, err = inject(["--port", "http", os.path.join(CORPUS, "deployment.yaml"),
                           os.path.join(CORPUS, "multi.yaml")])
    assert rc == 1 and out == "" and "multi.yaml:2: StatefulSet/db-front" in err, err
    # pilotfish's port taken by the app
    rc, out, err = inject(["--proxy-port", "3000", os.path.join(CORPUS, "multi.yaml")])
    assert rc == 1 and out == "" and "3000" in err, err
    rc, out, err = inject(["--bogus"])
    assert rc == 1 and "usage" in err
    rc, out, err = inject(["/nonexistent.yaml"])
    assert rc == 1 and out == "" and "cannot read /nonexistent.yaml" in err


def node_models():
    """(node, NODE_PATH) when kubernetes-models can be loaded, else raise Skip."""
    node = shutil.which("node")
    paths = [os.environ.get("PF_K8S_MODELS", ""), os.path.join(ROOT, "build/node/node_modules")]
    for p in paths:
        if node and p and os.path.isdir(os.path.join(p, "kubernetes-models")):
            return node, p
    raise pf.Skip("SKIPPED: kubernetes-models not installed (make k8s-deps): no schema check")


def validate(docs):
    node, path = node_models()
    r = subprocess.run([node, os.path.join(HERE, "k8s_validate.js")],
                       input=json.dumps(docs).encode(), capture_output=True, timeout=60,
                       env=dict(os.environ, NODE_PATH=path))
    return r.returncode, r.stdout.decode() + r.stderr.decode()


@pf.timeout(90)
def test_schema_validation_offline():
    docs = []
    for name, args in CASES.items():
        rc, out, err = inject(args + [os.path.join(CORPUS, name)])
        assert rc == 0, err
        docs += [d for d in yaml.safe_load_all(out)]
    rc, msg = validate(docs)
    assert rc == 0, msg
    # the validator does fail on a bad object (so that the pass above means something)
    bad = copy.deepcopy(docs[0])
    bad["spec"]["template"]["spec"]["initContainers"][0]["ports"][0]["containerPort"] = "x"
    rc, msg = validate([bad])
    assert rc == 1 and "containerPort" in msg, msg


def test_strict_checks_catch_mistakes():
    """check_pod itself fails on what the schema validator lets through."""
    rc, out, err = inject(["--port", "http", os.path.join(CORPUS, "deployment.yaml")])
    spec = list(yaml.safe_load_all(out))[0]["spec"]["template"]["spec"]
    check_pod(spec, False, 15)
    for breakit in (lambda s: s["initContainers"][0].update(bogus=1),
                    lambda s: s["containers"][0]["ports"][0].update(name="http"),
                    lambda s: s["containers"][0]["readinessProbe"]["httpGet"].update(port="http"),
                    lambda s: s["initContainers"][0]["ports"][0].update(name="much-too-long-name"),
                    lambda s: s.update(terminationGracePeriodSeconds=5)):
        s = copy.deepcopy(spec)
        breakit(s)
        try:
            check_pod(s, False, 15)
        except AssertionError:
            continue
        raise AssertionError("check_pod missed a broken spec")


def _needs_yaml(fn):
    def skip():
        raise pf.Skip("SKIPPED: PyYAML (python3-yaml) is not installed")

    skip.__name__ = fn.__name__
    return skip


if yaml is None:
    for _name, _fn in list(globals().items()):
        if _name.startswith("test_") and callable(_fn):
            globals()[_name] = _needs_yaml(_fn)
