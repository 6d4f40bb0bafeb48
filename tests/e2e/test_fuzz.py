"""Mutated requests, written in random pieces: pilotfish must stay up (under
the sanitizer build this also checks memory safety) and keep answering well
formed requests. Bounded by a number of cases with a fixed seed, so a run is
reproducible: the seed and the count are printed, and a failure names the
case. Env: PF_FUZZ_SEED (default 20261126), PF_FUZZ_CASES (default 2000).
`make fuzz` is the long run (PF_FUZZ_CASES=20000, and a seed of its own when
PF_FUZZ_SEED is not set)."""

import os
import random
import socket

import pf
from pf import Origin, Pilotfish

import helpers2 as h2

SEEDS = [
    b"GET /echo?x=1 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET /?status=204&header=Content-Length:5 HTTP/1.1\r\nHost: a\r\n\r\n"
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"HEAD /?size=100 HTTP/1.0\r\n\r\n",
    b"GET http://h/x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
]
SEED = int(os.environ.get("PF_FUZZ_SEED", "20261126"))
CASES = int(os.environ.get("PF_FUZZ_CASES", "2000"))
READ_TIMEOUT = 0.5  # per case: how long to wait for pilotfish's answer

INSERTS = [b"\r\n", b"chunked", b"Content-Length: 9\r\n", b"..", b"%2e", b"\x00",
           b"ffffffffffffffffffff", b" ", b":"]


def mutate(r, data):
    b = bytearray(data)
    for _ in range(r.randint(1, 6)):
        op = r.randint(0, 4)
        i = r.randint(0, len(b))
        if op == 0 and b:
            b[min(i, len(b) - 1)] = r.randint(0, 255)
        elif op == 1:
            b[i:i] = bytes([r.choice(b" \t\r\n:;,0fF%./-")])
        elif op == 2 and b:
            del b[min(i, len(b) - 1)]
        elif op == 3:
            b[i:i] = r.choice(INSERTS)
        else:
            b += r.choice(SEEDS)
    return bytes(b)


def fuzz_case(r, port):
    """One mutated request in random pieces on a new connection; the answer,
    if any, is read and ignored. Raises ConnectionRefusedError when
    pilotfish no longer accepts."""
    data = mutate(r, r.choice(SEEDS))
    step = r.randint(1, 40)
    half_close = r.random() < 0.5
    s = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT)
    try:
        for k in range(0, len(data), step):
            s.sendall(data[k:k + step])
        if half_close:
            s.shutdown(socket.SHUT_WR)
        s.recv(65536)
    except OSError:
        pass
    finally:
        s.close()


# The hard timeout follows the case count (a case takes about 1 ms; the few
# that wait for an answer that never comes take READ_TIMEOUT).
@pf.timeout(60 + CASES * 0.1)
def test_fuzz_mutated_requests_do_not_break_pilotfish():
    print("fuzz: seed %d, %d cases (PF_FUZZ_SEED, PF_FUZZ_CASES)" % (SEED, CASES), flush=True)
    o = Origin()
    p = Pilotfish(h2.config("limits: { header_timeout: 1s, idle_timeout: 1s }\n"), origin=o)
    r = random.Random(SEED)
    with o, p:
        for n in range(CASES):
            try:
                fuzz_case(r, p.port)
            except ConnectionRefusedError:
                raise AssertionError("pilotfish stopped accepting at case %d, seed %d%s"
                                     % (n, SEED, p.describe_output(400)))
            if n % 100 == 99:
                assert p.running(), "pilotfish died by case %d, seed %d%s" % (
                    n, SEED, p.describe_output(400))
        assert p.running(), "pilotfish died after %d mutated requests, seed %d%s" % (
            CASES, SEED, p.describe_output(400))
        r2 = p.get("/echo?after=fuzz")
        assert r2.status == 200, (r2, "seed %d" % SEED)
