"""The container image (Dockerfile), built and run for real when this machine
can: buildah (no daemon, chroot isolation) and the Debian 12 base images in
local storage (make image-base makes them from Debian's packages, without a
registry). Otherwise each test says why it is skipped."""

import json
import os
import shutil
import subprocess
import tempfile
import time

import pf

ROOT = pf.ROOT
TAG = "localhost/pilotfish:e2e"


def sh(argv, timeout=120, check=True):
    r = subprocess.run(argv, capture_output=True, timeout=timeout, cwd=ROOT)
    out, err = r.stdout.decode(), r.stderr.decode()
    if check:
        assert r.returncode == 0, "%s: %s" % (" ".join(argv), err[-2000:])
    return r.returncode, out, err


def need_builder():
    if shutil.which("buildah") is None:
        raise pf.Skip("SKIPPED: buildah not installed: the image was not built "
                      "(test_deploy checks the Dockerfile against ldd)")
    for base in ("docker.io/library/debian:12", "docker.io/library/debian:12-slim"):
        rc, _, _ = sh(["buildah", "inspect", "--type", "image", base], check=False)
        if rc != 0:
            raise pf.Skip("SKIPPED: no local %s image (make image-base): the image was not "
                          "built" % base)


def build(reuse=False):
    """Build the image from the tree (about a minute), without keeping layers
    around; reuse: take the one the previous test built, when it is there."""
    if reuse and sh(["buildah", "inspect", "--type", "image", TAG], check=False)[0] == 0:
        return
    sh(["buildah", "bud", "--isolation=chroot", "--pull=never", "--format", "docker",
        "--layers=false", "-t", TAG, ROOT], timeout=900)


def remove_image():
    sh(["buildah", "rmi", "-f", TAG], check=False)


class Container:
    def __init__(self):
        _, out, _ = sh(["buildah", "from", "--pull=never", TAG])
        self.name = out.strip().splitlines()[-1]

    def run(self, args, volumes=(), timeout=60, check=True):
        argv = ["buildah", "run", "--isolation", "chroot"]
        for v in volumes:
            argv += ["-v", v]
        return sh(argv + [self.name, "--"] + args, timeout=timeout, check=check)

    def remove(self):
        sh(["buildah", "rm", self.name], check=False)


@pf.timeout(900)
def test_image_builds_and_runs():
    need_builder()
    build()
    _, out, _ = sh(["buildah", "inspect", "--type", "image", TAG])
    conf = json.loads(out)["Docker"]["config"]
    assert conf["Entrypoint"] == ["pilotfish"] and conf["User"] == "65532:65532", conf
    assert conf["Healthcheck"]["Test"][0] == "CMD", conf.get("Healthcheck")
    c = Container()
    try:
        _, out, _ = c.run(["pilotfish", "-V"])
        assert out.startswith("pilotfish "), out
        _, out, _ = c.run(["id", "-u"])
        assert out.strip() == "65532"
        _, out, _ = c.run(["pilotfish", "-t"])       # $PILOTFISH_CONFIG, the example
        assert out == "configuration OK\n"
        _, out, _ = c.run(["ldd", "/usr/bin/pilotfish"])
        assert "not found" not in out, out
    finally:
        c.remove()


@pf.timeout(900)
def test_image_serves_and_healthcheck_passes():
    """pilotfish in the image, on this host's network (chroot isolation): it
    proxies, and the image's own HEALTHCHECK command passes inside it."""
    need_builder()
    build(reuse=True)
    origin = pf.Origin()
    port, admin = pf.free_port(), pf.free_port()
    d = tempfile.mkdtemp(prefix="pf-image-")
    os.chmod(d, 0o755)
    with open(os.path.join(d, "p.yaml"), "w") as f:
        f.write('listen: "127.0.0.1:%d"\nworkers: 1\nadmin: {listen: "127.0.0.1:%d"}\n'
                'upstreams: {app: {endpoints: ["127.0.0.1:%d"]}}\n' % (port, admin, origin.port))
    os.chmod(os.path.join(d, "p.yaml"), 0o644)
    c = Container()
    proc = pf.Process()
    try:
        proc.spawn(["buildah", "run", "--isolation", "chroot", "-v", d + ":/cfg:ro", c.name,
                    "--", "pilotfish", "-c", "/cfg/p.yaml"])
        pf.wait_port(admin, timeout=60, proc=proc)
        with pf.Conn(port) as conn:
            assert conn.request("GET", "/hello").status == 200
        _, out, _ = sh(["buildah", "inspect", "--type", "image", TAG])
        test = json.loads(out)["Docker"]["config"]["Healthcheck"]["Test"]
        cmd = [a.replace("9901", str(admin)) for a in test[1:]]
        rc, _, err = c.run(cmd, check=False)
        assert rc == 0, err
        with pf.Conn(admin) as conn:
            assert conn.request("POST", "/quitquitquit").status == 202
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.running():
            proc.stop()
        c.remove()
        remove_image()
        shutil.rmtree(d)
