"""The harness's sanitizer check (pf.py, run.py) can fail a test.

Each case runs a small test function through run.run_one, the way run.py runs
every test (a forked child), and looks at the result it reports: a process
whose stderr holds a sanitizer report fails the test that started it, even
when the test itself passed; a clean one does not. The cases with a real
report need a sanitizer build (make test SANITIZE=1): pf-origin is told by
PF_ORIGIN_SELFTEST to leak, or to overflow an int, at start.
"""

import os
import sys

import pf
from pf import Origin, Pilotfish

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import run  # noqa: E402


def run_as_test(fn, limit=60):
    """run.run_one(fn) without disturbing this test's own PID file."""
    saved = os.environ.get("PF_E2E_PIDFILE")
    try:
        return run.run_one(fn, limit, False)
    finally:
        if saved is None:
            os.environ.pop("PF_E2E_PIDFILE", None)
        else:
            os.environ["PF_E2E_PIDFILE"] = saved


def origin_is_sanitized():
    with open(pf._bin("ORIGIN_BIN", "bin/pf-origin"), "rb") as f:
        return b"__asan_init" in f.read()


def require_sanitizer_build():
    if not origin_is_sanitized():
        raise pf.Skip("pf-origin is not a sanitizer build (make test SANITIZE=1)")


class FakeReporter(pf.Process):
    """A process that prints a canned sanitizer report and waits to be stopped."""

    name = "fake-reporter"
    sanitized = True

    def __init__(self, report):
        super().__init__()
        self.spawn(["sh", "-c", "printf '%s' \"$1\" >&2; exec sleep 60", "sh", report])


ASAN_REPORT = ("=================================================================\n"
               "==4242==ERROR: AddressSanitizer: heap-use-after-free on address 0x6020\n"
               "READ of size 8 at 0x6020 thread T1\n"
               "    #0 0x55 in conn_free proxy/conn.c:42\n")


def test_sanitizer_check_fails_on_a_report_in_stderr():
    # Any build: the scan itself, on a canned report from a process stopped at teardown.
    def body():
        p = FakeReporter(ASAN_REPORT)
        pf.eventually(lambda: "conn.c:42" in p.stderr_text(), msg="the report printed")

    res = run_as_test(body)
    assert res["status"] == "fail", res
    assert "heap-use-after-free" in res["reason"], res["reason"]
    assert "fake-reporter" in res["reason"], res["reason"]
    assert "conn_free proxy/conn.c:42" in res["detail"], res["detail"]


def test_sanitizer_check_fails_on_the_sanitizer_exit_status():
    # Any build: exit status 23 with nothing on stderr (a report that went elsewhere).
    def body():
        p = FakeReporter("")
        p.stop()
        p.spawn(["sh", "-c", "exit %d" % pf.SANITIZER_EXITCODE])
        p.wait(10)

    res = run_as_test(body)
    assert res["status"] == "fail", res
    assert "exit status %d" % pf.SANITIZER_EXITCODE in res["reason"], res["reason"]


def test_sanitizer_check_passes_a_clean_origin():
    def body():
        with Origin() as o:
            assert o.get("/").status == 200

    res = run_as_test(body)
    assert res["status"] == "ok", res


def test_sanitizer_check_catches_a_leak_at_exit():
    require_sanitizer_build()

    def body():
        with Origin(env={"PF_ORIGIN_SELFTEST": "leak"}) as o:
            assert o.get("/").status == 200

    res = run_as_test(body)
    assert res["status"] == "fail", res
    assert "ERROR: LeakSanitizer: detected memory leaks" in res["reason"], res["reason"]
    assert "selftest" in res["detail"], res["detail"]


def test_sanitizer_check_catches_a_leak_of_a_process_left_running():
    # The test does not stop the origin: the teardown does, then checks it.
    require_sanitizer_build()

    def body():
        o = Origin(env={"PF_ORIGIN_SELFTEST": "leak"})
        assert o.get("/").status == 200

    res = run_as_test(body)
    assert res["status"] == "fail", res
    assert "LeakSanitizer" in res["reason"], res["reason"]


def test_sanitizer_check_catches_ubsan_that_does_not_stop_the_process():
    require_sanitizer_build()

    def body():
        with Origin(env={"PF_ORIGIN_SELFTEST": "ubsan"}) as o:
            for _ in range(3):
                assert o.get("/").status == 200

    res = run_as_test(body)
    assert res["status"] == "fail", res
    assert "runtime error: signed integer overflow" in res["reason"], res["reason"]
    assert "selftest" in res["detail"], res["detail"]


def test_sanitizer_check_covers_a_pilotfish_that_exits_by_itself():
    # A Pilotfish whose binary is the leaking pf-origin: it rejects "-c" and
    # exits at once (bad usage, 2), the test only waits for it, and the leak
    # reported at that exit still fails the test.
    require_sanitizer_build()

    def body():
        p = Pilotfish(vars={"origin_port": 1}, env={"PF_ORIGIN_SELFTEST": "leak"},
                      start=False)
        p.bin = pf._bin("ORIGIN_BIN", "bin/pf-origin")
        p.start(wait=False)
        assert p.wait(20) == pf.SANITIZER_EXITCODE

    res = run_as_test(body)
    assert res["status"] == "fail", res
    assert res["reason"].startswith("sanitizer report from pilotfish (pid "), res["reason"]
    assert "LeakSanitizer" in res["reason"], res["reason"]
