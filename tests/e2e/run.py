#!/usr/bin/env python3
"""Run pilotfish's end-to-end tests.

    python3 tests/e2e/run.py [-v] [-x] [-l] [--timeout S] [SUBSTRING...]

Discovers tests/e2e/test_*.py and runs every function named test_* whose
"file::name" contains one of the SUBSTRINGs (all when none are given). Each
test runs in a forked child with a hard timeout (default 30 s, env
PF_E2E_TIMEOUT, per test @pf.timeout(S)); processes a test started are stopped
by PID even when the child has to be killed. Prints one line per test and
ends with "N passed, N failed"; exits 1 if any failed.

    -v   on failure, also print the traceback and the pilotfish/origin stderr
    -x   stop at the first failure
    -l   list the tests, run nothing

A test also fails when a pilotfish or pf-origin it started printed a
sanitizer report (make test SANITIZE=1): pf.py scans their stderr when they
stop, and the report's first lines are printed with the failure.

Env: PILOTFISH_BIN (default bin/pilotfish), ORIGIN_BIN (default bin/pf-origin).
"""

import importlib.util
import inspect
import json
import os
import signal
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import pf  # noqa: E402


class TestTimeout(Exception):
    pass


def discover():
    tests = []
    for fname in sorted(os.listdir(HERE)):
        if not (fname.startswith("test_") and fname.endswith(".py")):
            continue
        name = fname[:-3]
        spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, fname))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        fns = [f for n, f in vars(mod).items()
               if n.startswith("test_") and inspect.isfunction(f) and f.__module__ == name]
        fns.sort(key=lambda f: f.__code__.co_firstlineno)
        tests += [(fname, f) for f in fns]
    return tests


def failure_reason(exc):
    """One line: exception, message, and the innermost line of a test file."""
    where = ""
    for fs in traceback.extract_tb(exc.__traceback__):
        if os.path.basename(fs.filename).startswith("test_"):
            where = " [%s:%d]" % (os.path.basename(fs.filename), fs.lineno)
    msg = str(exc).strip().replace("\n", " | ")
    if len(msg) > 400:
        msg = msg[:400] + "..."
    return "%s%s%s" % (type(exc).__name__, ": " + msg if msg else "", where)


def child(fn, limit, wfd, verbose):
    """In the forked child: run fn, report {"status", "reason", "detail"} on wfd."""
    def on_alarm(signum, frame):
        raise TestTimeout("timed out after %ss" % limit)

    def on_term(signum, frame):
        raise TestTimeout("stopped by the runner")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(int(limit))
    result = {"status": "ok", "reason": "", "detail": ""}
    try:
        fn()
    except pf.Skip as e:
        result = {"status": "skip", "reason": str(e), "detail": ""}
    except BaseException as e:  # noqa: B902 -- report everything, even SystemExit
        detail = ""
        if verbose:
            detail = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            for p in list(pf._live):
                try:
                    detail += "--- %s (pid %d) stderr:\n%s" % (p.name, p.pid,
                                                               p.stderr_text()[-3000:])
                except Exception:
                    pass
        result = {"status": "fail", "reason": failure_reason(e), "detail": detail[-40000:]}
    finally:
        signal.alarm(0)
        try:
            pf.stop_all()
        except BaseException:
            pass
    result = add_sanitizer_reports(result, pf.sanitizer_reports())
    os.write(wfd, json.dumps(result).encode())
    os.close(wfd)


def add_sanitizer_reports(result, reports):
    """The result of a test whose processes printed sanitizer reports: failed, with
    the first report in the reason and the start of each in the detail."""
    if not reports:
        return result
    what, first, _ = reports[0]
    reason = "sanitizer report from %s: %s" % (what, first)
    if len(reports) > 1:
        reason += " (and %d more)" % (len(reports) - 1)
    if result["status"] == "fail":
        reason = "%s; and %s" % (result["reason"], reason)
    detail = "".join("--- sanitizer report from %s:\n%s\n" % (w, excerpt)
                     for w, _, excerpt in reports[:4])
    return {"status": "fail", "reason": reason, "detail": detail + result["detail"]}


def read_all(fd):
    chunks = []
    while True:
        data = os.read(fd, 65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def kill_recorded(pidfile):
    """Stop what a killed test left running: the PIDs pf.py recorded."""
    try:
        with open(pidfile) as f:
            pids = [int(x) for x in f.read().split()]
    except OSError:
        return
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, os.WNOHANG)
        except (ProcessLookupError, ChildProcessError):
            pass


def run_one(fn, limit, verbose):
    """Fork, run fn in the child, enforce the hard timeout. Returns the result dict."""
    rfd, wfd = os.pipe()
    fd, pidfile = tempfile.mkstemp(prefix="pf-e2e-pids-")
    os.close(fd)
    os.environ["PF_E2E_PIDFILE"] = pidfile
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        code = 0
        try:
            child(fn, limit, wfd, verbose)
        except BaseException:
            code = 1
        os._exit(code)
    os.close(wfd)
    deadline = time.monotonic() + limit + 15  # the child's own alarm fires first
    status = None
    while status is None:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            status = -1
            break
        time.sleep(0.02)
    data = read_all(rfd)
    os.close(rfd)
    kill_recorded(pidfile)
    try:
        os.unlink(pidfile)
    except OSError:
        pass
    if data:
        return json.loads(data)
    reason = "killed after %ss hard timeout" % limit if status == -1 else \
        "test process died (wait status %s)" % status
    return {"status": "fail", "reason": reason, "detail": ""}


def parse_args(argv):
    opts = {"verbose": False, "exitfirst": False, "list": False,
            "timeout": float(os.environ.get("PF_E2E_TIMEOUT", "30")), "filters": []}
    it = iter(argv)
    for a in it:
        if a == "-v":
            opts["verbose"] = True
        elif a == "-x":
            opts["exitfirst"] = True
        elif a == "-l":
            opts["list"] = True
        elif a == "--timeout":
            opts["timeout"] = float(next(it))
        elif a in ("-h", "--help"):
            print(__doc__)
            sys.exit(0)
        else:
            opts["filters"].append(a)
    return opts


def main(argv):
    opts = parse_args(argv)
    os.chdir(pf.ROOT)
    tests = [(f, fn) for f, fn in discover()
             if not opts["filters"] or any(s in "%s::%s" % (f, fn.__name__)
                                           for s in opts["filters"])]
    if opts["list"]:
        for f, fn in tests:
            print("%s::%s" % (f, fn.__name__))
        return 0
    passed = failed = skipped = 0
    try:
        for _, fn in tests:
            limit = getattr(fn, "timeout", opts["timeout"])
            t0 = time.monotonic()
            res = run_one(fn, limit, opts["verbose"])
            took = time.monotonic() - t0
            if res["status"] == "ok":
                passed += 1
                print("ok   %s (%.1fs)" % (fn.__name__, took), flush=True)
            elif res["status"] == "skip":
                skipped += 1
                print("skip %s: %s" % (fn.__name__, res["reason"]), flush=True)
            else:
                failed += 1
                print("FAIL %s: %s" % (fn.__name__, res["reason"]), flush=True)
                if res["detail"]:
                    print("    " + res["detail"].rstrip().replace("\n", "\n    "), flush=True)
                if opts["exitfirst"]:
                    break
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        failed += 1
    if skipped:
        print("%d skipped" % skipped)
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
