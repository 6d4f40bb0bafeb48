"""The container image (Dockerfile), built and run for real when this machine
can: buildah (no daemon, chroot isolation) and the Debian 12 base images in
local storage (make image-base makes them from Debian's packages, without a
registry). Otherwise each test says why it is skipped.

Several runs may share this machine's buildah storage (other checkouts
running their tests at the same time): the image tag and the container names
carry the PID of this run, each test removes its container by name in a
finally, and the image is removed at the end of the run that built it, so
that no run uses, replaces or removes another run's image or container."""

import atexit
import json
import os
import shutil
import subprocess
import tempfile
import time

import pf

ROOT = pf.ROOT
RUN = os.getpid()  # run.py's PID: the module is loaded before the tests fork
TAG = "localhost/pilotfish:e2e-%d" % RUN
BUILT = os.path.join(tempfile.gettempdir(), "pf-image-%d.built" % RUN)


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
    open(BUILT, "w").close()  # before the build: a build cut short leaves a tag too
    sh(["buildah", "bud", "--isolation=chroot", "--pull=never", "--format", "docker",
        "--layers=false", "-t", TAG, ROOT], timeout=900)


def remove_image():
    sh(["buildah", "rmi", "-f", TAG], check=False)
    if os.path.exists(BUILT):
        os.unlink(BUILT)


@atexit.register
def _remove_image_at_exit():
    """The image this run built, when the test that removes it did not run
    (a filter, a failure before it): run.py's process only, not a test's."""
    if os.getpid() == RUN and os.path.exists(BUILT):
        remove_image()


class Container:
    def __init__(self, what):
        self.name = "pilotfish-e2e-%d-%s" % (RUN, what)
        sh(["buildah", "rm", self.name], check=False)  # left by a run killed with this PID
        sh(["buildah", "from", "--pull=never", "--name", self.name, TAG])

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
    c = Container("run")
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
    c = Container("serve")
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
