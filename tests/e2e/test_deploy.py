"""Deploying and operating pilotfish (docs/deployment.md): the command line
(long options, -t -, did you mean), the probes listener, sd_notify under a
service manager, make install and the systemd unit, make deb, the Dockerfile
(its runtime libraries against ldd, its HEALTHCHECK command run for real) and
the Kubernetes examples in k8s/ (kubectl kustomize, in sync with inject)."""

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

try:
    import yaml
except ImportError:  # python3-yaml: make deps installs it
    yaml = None

import pf
from pf import Conn, Pilotfish

import test_inject as ti

ROOT = pf.ROOT
BIN = pf._bin("PILOTFISH_BIN", "bin/pilotfish")
SAN = ["SANITIZE=1"] if BIN.endswith("-san") else []

PROBES = """\
listen: "127.0.0.1:{{port}}"
workers: 1
admin: { listen: "127.0.0.1:{{admin_port}}" }
probes: { listen: "127.0.0.1:{{probes_port}}" }
drain_delay: {{drain_delay}}
upstreams: { app: { endpoints: ["127.0.0.1:1"] } }
"""


def run(argv, stdin=None, env=None, timeout=60):
    r = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, cwd=ROOT,
                       env=dict(os.environ, **(env or {})))
    if argv[0] == BIN:
        pf.check_sanitizer_output(" ".join(argv[:2]), r.stderr.decode(), r.returncode)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


# ---- command line ----

def test_cli_long_options_and_stdin():
    rc, out, err = run([BIN, "--help"])
    assert rc == 0 and "--config FILE" in out and "inject" in out and err == ""
    rc, out, _ = run([BIN, "--version"])
    assert rc == 0 and out.startswith("pilotfish ") and "libyaml" in out
    rc, out, err = run([BIN, "--test", "--config=conf/pilotfish.yaml"])
    assert rc == 0 and out == "configuration OK\n", err
    rc, out, err = run([BIN, "-t", "conf/pilotfish.yaml"])
    assert rc == 0 and out == "configuration OK\n", err
    with open(os.path.join(ROOT, "conf/pilotfish.yaml"), "rb") as f:
        rc, out, err = run([BIN, "-t", "-"], stdin=f.read())
    assert rc == 0 and out == "configuration OK\n", err
    rc, out, err = run([BIN, "-t", "-"], stdin=b"listne: \":1\"\nupstreams: {a: {endpoints: "
                                                 b"[\"127.0.0.1:1\"]}}\n")
    assert rc == 1 and err == ("stdin:1:1: unknown key 'listne' at the top level "
                               "(did you mean 'listen'?)\n"), err
    rc, out, err = run([BIN, "--bogus"])
    assert rc == 1 and "unrecognized option" in err and "usage" in err
    rc, out, err = run([BIN, "-c", "-"])
    assert rc == 1 and "only with -t" in err
    rc, out, err = run([BIN, "extra"])
    assert rc == 1 and "unexpected argument 'extra'" in err


# ---- probes listener ----

def probe(port, method, target):
    with Conn(port) as c:
        return c.request(method, target)


def test_probes_listener_read_only():
    p = Pilotfish(config=PROBES, vars={"probes_port": pf.free_port(), "drain_delay": "0s"})
    pp = int(p.vars["probes_port"])
    pf.wait_port(pp, proc=p)
    for path in ("/live", "/ready", "/health", "/live?x=1"):
        r = probe(pp, "GET", path)
        assert r.status == 200, (path, r.status)
    r = probe(pp, "GET", "/metrics")
    assert r.status == 200 and "pilotfish_" in r.text()
    assert probe(pp, "HEAD", "/ready").status == 200
    for path in ("/config", "/", "/upstreams", "/reload"):
        assert probe(pp, "GET", path).status == 404, path
    for path in ("/reload", "/drain", "/quitquitquit", "/live"):
        r = probe(pp, "POST", path)
        assert r.status == 405 and r.header("allow") == "GET, HEAD", (path, r.status)
    # none of them did anything: still serving, not draining
    assert p.running() and probe(pp, "GET", "/ready").status == 200
    # the admin API keeps everything
    assert p.admin("GET", "/config").status == 200
    conf = json.loads(p.admin("GET", "/config").text())
    assert conf["probes"] == {"listen": "127.0.0.1:%d" % pp}


def test_probes_listener_reload_and_drain():
    p = Pilotfish(config=PROBES, vars={"probes_port": pf.free_port(), "drain_delay": "30s"})
    old = int(p.vars["probes_port"])
    pf.wait_port(old, proc=p)
    new = pf.free_port()
    p.vars["probes_port"] = new
    p.write_config(PROBES)
    assert p.admin("POST", "/reload").status == 200
    assert probe(new, "GET", "/live").status == 200
    try:
        socket.create_connection(("127.0.0.1", old), timeout=2).close()
        raise AssertionError("the old probes address still accepts")
    except ConnectionRefusedError:
        pass
    # turned off by a reload ("" is off), then on again
    p.write_config(PROBES.replace('probes: { listen: "127.0.0.1:{{probes_port}}" }',
                                  'probes: { listen: "" }'))
    assert p.admin("POST", "/reload").status == 200
    try:
        socket.create_connection(("127.0.0.1", new), timeout=2).close()
        raise AssertionError("probes.listen \"\" still accepts")
    except ConnectionRefusedError:
        pass
    p.write_config(PROBES)
    assert p.admin("POST", "/reload").status == 200
    assert probe(new, "GET", "/live").status == 200
    # SIGTERM: during drain_delay the kubelet sees /ready 503 on the probes port
    p.send_signal(signal.SIGTERM)
    for _ in range(200):
        r = probe(new, "GET", "/ready")
        if r.status == 503:
            break
        time.sleep(0.02)
    assert r.status == 503 and probe(new, "GET", "/live").status == 200
    p.stop(sig=signal.SIGKILL)


def test_probes_off_by_default():
    rc, out, err = run([BIN, "-t", "-"], stdin=b"probes: {listen: \"\"}\nupstreams: {a: "
                                                 b"{endpoints: [\"127.0.0.1:1\"]}}\n")
    assert rc == 0, err
    rc, out, err = run([BIN, "-t", "-"], stdin=b"probes: {listen: \"nonsense:x\"}\nupstreams: "
                                                 b"{a: {endpoints: [\"127.0.0.1:1\"]}}\n")
    assert rc == 1 and "probes.listen" in err, err
    p = Pilotfish(vars={"origin_port": 1})
    conf = json.loads(p.admin("GET", "/config").text())
    assert conf["probes"] == {"listen": ""}


# ---- sd_notify ----

def recv_state(sock, want, limit=100):
    """The next datagrams until one starts with want (bounded by count, each waits)."""
    got = []
    for _ in range(limit):
        msg = sock.recv(4096).decode()
        got.append(msg)
        if msg.startswith(want):
            return msg
    raise AssertionError("no %s in %s" % (want, got))


def test_sd_notify_ready_reload_stopping():
    d = tempfile.mkdtemp(prefix="pf-notify-")
    path = os.path.join(d, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    try:
        p = Pilotfish(env={"NOTIFY_SOCKET": path}, vars={"origin_port": 1})
        assert recv_state(sock, "READY=1", 1) == "READY=1"
        p.reload()
        msg = recv_state(sock, "RELOADING=1", 1)
        assert re.match(r"^RELOADING=1\nMONOTONIC_USEC=\d+$", msg), msg
        assert recv_state(sock, "READY=1", 1) == "READY=1"
        # a failed reload also ends with READY=1 (the old configuration runs on)
        p.write_config("bogus: 1\n")
        p.reload()
        recv_state(sock, "RELOADING=1", 1)
        assert recv_state(sock, "READY=1", 1) == "READY=1"
        p.send_signal(signal.SIGTERM)
        assert recv_state(sock, "STOPPING=1", 1) == "STOPPING=1"
        assert p.wait(timeout=20) == 0
    finally:
        sock.close()
        shutil.rmtree(d)


# ---- make install, the systemd unit, make deb ----

def durations(conf):
    def secs(v):
        m = re.match(r"^(\d+)(ms|s|m|h)$", str(v))
        return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]

    return secs(conf.get("drain_delay", "0s")) + secs(conf.get("drain_timeout", "15s"))


def unit_values(text):
    out = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out.setdefault(k, []).append(v)
    return out


@pf.timeout(240)
def test_make_install_and_unit():
    d = tempfile.mkdtemp(prefix="pf-install-")
    try:
        rc, out, err = run(["make", "-s", "install", "DESTDIR=" + d, "PREFIX=/usr"] + SAN,
                           timeout=200)
        assert rc == 0, err
        for f in ("usr/sbin/pilotfish", "usr/share/man/man8/pilotfish.8",
                  "usr/share/man/man5/pilotfish.yaml.5", "etc/pilotfish/pilotfish.yaml",
                  "usr/lib/systemd/system/pilotfish.service",
                  "usr/share/doc/pilotfish/examples/pilotfish.yaml"):
            assert os.path.exists(os.path.join(d, f)), f
        rc, out, _ = run([os.path.join(d, "usr/sbin/pilotfish"), "-V"])
        assert rc == 0 and out.startswith("pilotfish ")
        if shutil.which("groff"):
            for page in ("usr/share/man/man8/pilotfish.8", "usr/share/man/man5/pilotfish.yaml.5"):
                rc, out, err = run(["groff", "-ww", "-man", "-z", os.path.join(d, page)])
                assert rc == 0 and err == "", (page, err)
        # an existing configuration is kept
        with open(os.path.join(d, "etc/pilotfish/pilotfish.yaml"), "w") as f:
            f.write("# mine\n")
        rc, out, err = run(["make", "-s", "install", "DESTDIR=" + d, "PREFIX=/usr"] + SAN,
                           timeout=200)
        assert rc == 0 and open(os.path.join(d, "etc/pilotfish/pilotfish.yaml")).read() == \
            "# mine\n"
        unit_path = os.path.join(d, "usr/lib/systemd/system/pilotfish.service")
        text = open(unit_path).read()
        v = unit_values(text)
        assert v["Type"] == ["notify"] and v["KillSignal"] == ["SIGTERM"]
        assert v["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
        assert v["ExecStart"] == ["/usr/sbin/pilotfish -c ${PILOTFISH_CONFIG}"]
        for k, want in (("DynamicUser", "yes"), ("ProtectSystem", "strict"),
                        ("NoNewPrivileges", "yes"),
                        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE")):
            assert v[k] == [want], k
        with open(os.path.join(ROOT, "conf/pilotfish.yaml")) as f:
            need = durations(yaml.safe_load(f))
        stop = int(v["TimeoutStopSec"][0].rstrip("s"))
        assert stop > need, (stop, need)
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise pf.Skip("SKIPPED: systemd-analyze not installed: the unit was not verified")
        # verify needs the binary where ExecStart says: point it into DESTDIR
        check = os.path.join(d, "pilotfish.service")
        with open(check, "w") as f:
            f.write(text.replace("/usr/sbin/pilotfish", os.path.join(d, "usr/sbin/pilotfish")))
        rc, out, err = run([analyze, "verify", "--man=no", check])
        assert rc == 0 and err.strip() == "", err
        with open(check, "w") as f:
            f.write(text.replace("Type=notify", "Type=notifyy"))
        rc, out, err = run([analyze, "verify", "--man=no", check])
        assert "notifyy" in err, err  # the check does look at the file
    finally:
        shutil.rmtree(d)


@pf.timeout(240)
def test_make_deb():
    d = tempfile.mkdtemp(prefix="pf-deb-")
    try:
        rc, out, err = run(["make", "-s", "deb", "DEB_OUT=" + d, "DEB_STAGE=" + d + "/stage"] +
                           SAN, timeout=200)
        assert rc == 0, err
        debs = glob.glob(os.path.join(d, "pilotfish_*.deb"))
        assert len(debs) == 1, debs
        rc, info, err = run(["dpkg-deb", "-I", debs[0]])
        assert rc == 0, err
        fields = dict(re.findall(r"^ (\w[\w-]*): (.*)$", info, re.M))
        assert fields["Package"] == "pilotfish" and re.match(r"^\d", fields["Version"])
        deps = {x.strip().split(" ")[0] for x in fields["Depends"].split(",")}
        assert ldd_packages() <= deps, (ldd_packages(), deps)
        assert "conffiles" in info and "postinst" in info
        rc, listing, _ = run(["dpkg-deb", "-c", debs[0]])
        for f in ("./usr/sbin/pilotfish", "./lib/systemd/system/pilotfish.service",
                  "./usr/share/man/man8/pilotfish.8.gz", "./usr/share/man/man5/pilotfish.yaml.5.gz",
                  "./etc/pilotfish/pilotfish.yaml"):
            assert re.search(r" %s$" % re.escape(f), listing, re.M), f
        root = os.path.join(d, "root")
        rc, _, err = run(["dpkg-deb", "-x", debs[0], root])
        assert rc == 0, err
        rc, out, err = run([os.path.join(root, "usr/sbin/pilotfish"), "-V"])
        assert rc == 0 and out.startswith("pilotfish "), err
        rc, out, err = run([os.path.join(root, "usr/sbin/pilotfish"), "-t",
                            os.path.join(root, "etc/pilotfish/pilotfish.yaml")])
        assert rc == 0, err
        rc, conff, _ = run(["dpkg-deb", "-f", debs[0], "Package"])
        assert conff.strip() == "pilotfish"
    finally:
        shutil.rmtree(d)


# ---- the image ----

def ldd_packages(binary=BIN):
    """The Debian packages of the shared libraries binary links (libc6 aside for the image)."""
    rc, out, _ = run(["ldd", binary])
    pkgs = set()
    for m in re.finditer(r"=> (/\S+)", out):
        lib = os.path.realpath(m.group(1))
        rc, owner, _ = run(["dpkg", "-S", lib])
        if rc != 0:
            rc, owner, _ = run(["dpkg", "-S", m.group(1)])
        pkgs.add(owner.split(":")[0])
    # the sanitizer's own runtime libraries are not the product's
    return {p for p in pkgs if not re.match(r"^lib(asan|ubsan|gcc-s|stdc\+\+)", p)}


def dockerfile():
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        text = f.read()
    return text, re.sub(r"\\\n", " ", text)


def test_dockerfile_runtime_libraries_match_ldd():
    text, joined = dockerfile()
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", text, re.M)
    assert len(stages) == 2 and stages[0][0] == "debian:12", stages
    assert stages[1][0] == "debian:12-slim", stages
    runtime = joined[joined.index("FROM debian:12-slim"):]
    m = re.search(r"apt-get install -y --no-install-recommends ([^&]+)&&", runtime)
    listed = set(m.group(1).split())
    want = ldd_packages() - {"libc6"}  # in the base image
    assert listed == want, "Dockerfile installs %s, the binary links %s" % (listed, want)
    assert re.search(r'^ENTRYPOINT \["pilotfish"\]$', text, re.M)
    assert re.search(r"^USER 65532:65532$", text, re.M)
    assert "COPY conf/pilotfish.yaml /etc/pilotfish/pilotfish.yaml" in text
    assert re.search(r"^HEALTHCHECK ", text, re.M)
    with open(os.path.join(ROOT, ".dockerignore")) as f:
        ignored = f.read().split()
    assert "build/" in ignored and "bin/" in ignored
    # building and running it: test_image.py


def test_dockerfile_healthcheck_command():
    """The HEALTHCHECK's command, run here against a real pilotfish (admin port swapped)."""
    _, joined = dockerfile()
    m = re.search(r"HEALTHCHECK .*? CMD (\[.*\])", joined)
    cmd = json.loads(m.group(1))
    assert "/dev/tcp/127.0.0.1/9901" in cmd[-1]
    p = Pilotfish(vars={"origin_port": 1})
    ok = cmd[:-1] + [cmd[-1].replace("9901", str(p.admin_port))]
    rc, _, err = run(ok, timeout=10)
    assert rc == 0, err
    bad = cmd[:-1] + [cmd[-1].replace("9901", str(pf.free_port()))]
    rc, _, _ = run(bad, timeout=10)
    assert rc != 0


# ---- k8s/ ----

def kustomize(path):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise pf.Skip("SKIPPED: kubectl not installed: k8s/ was not rendered")
    rc, out, err = run([kubectl, "kustomize", os.path.join(ROOT, path)], timeout=60)
    assert rc == 0, err
    return [d for d in yaml.safe_load_all(out) if d]


def test_k8s_example_in_sync_with_inject():
    src = os.path.join(ROOT, "k8s/example/demo-app.in.yaml")
    rc, out, err = run([BIN, "inject", "--port", "http", "--config", "k8s/example/pilotfish.yaml",
                        "--config-map", "pilotfish-demo", src])
    assert rc == 0, err
    with open(os.path.join(ROOT, "k8s/example/demo-app.yaml")) as f:
        committed = "".join(l for l in f if not l.startswith("#"))
    assert committed == out, "k8s/example/demo-app.yaml is stale: regenerate it (see its header)"


def test_k8s_component_sidecar_matches_inject():
    rc, out, err = run([BIN, "inject", "--config", "k8s/components/pilotfish/pilotfish.yaml", "-"],
                       stdin=b"kind: Deployment\nmetadata: {name: x}\nspec: {template: {spec: "
                             b"{containers: [{name: app, image: app}]}}}\n")
    assert rc == 0, err
    spec = list(yaml.safe_load_all(out))[0]["spec"]["template"]["spec"]
    with open(os.path.join(ROOT, "k8s/components/pilotfish/sidecar.yaml")) as f:
        patch = yaml.safe_load(f)["spec"]["template"]["spec"]
    assert patch["initContainers"] == spec["initContainers"]
    assert patch["volumes"] == spec["volumes"]
    assert patch["terminationGracePeriodSeconds"] == spec["terminationGracePeriodSeconds"]


@pf.timeout(120)
def test_k8s_kustomize_renders():
    docs = kustomize("k8s/example")
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "Deployment", "Namespace", "PodDisruptionBudget", "Service"]
    dep = [d for d in docs if d["kind"] == "Deployment"][0]
    spec = dep["spec"]["template"]["spec"]
    ti.check_pod(spec, False, 25)
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "9902"
    cm = [d for d in docs if d["kind"] == "ConfigMap"][0]
    assert spec["volumes"][-1]["configMap"]["name"] == cm["metadata"]["name"]
    rc, out, err = run([BIN, "-t", "-"], stdin=cm["data"]["pilotfish.yaml"].encode())
    assert rc == 0, err
    svc = [d for d in docs if d["kind"] == "Service"][0]
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    assert {"name": "http", "containerPort": 8080} in spec["initContainers"][0]["ports"]
    comp = kustomize("k8s/example-component")
    dep = [d for d in comp if d["kind"] == "Deployment"][0]
    spec = dep["spec"]["template"]["spec"]
    ti.check_pod(spec, False, 25)
    cm = [d for d in comp if d["kind"] == "ConfigMap"][0]
    assert re.match(r"^pilotfish-\w+$", cm["metadata"]["name"])  # a hash: changes roll
    assert spec["volumes"][-1]["configMap"]["name"] == cm["metadata"]["name"]
    rc, msg = ti.validate(docs + comp)
    assert rc == 0, msg


def _needs_yaml(fn):
    def skip():
        raise pf.Skip("SKIPPED: PyYAML (python3-yaml) is not installed")

    skip.__name__ = fn.__name__
    return skip


if yaml is None:
    for _name, _fn in list(globals().items()):
        if _name.startswith("test_") and callable(_fn):
            globals()[_name] = _needs_yaml(_fn)
