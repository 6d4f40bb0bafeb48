"""Mutated requests, written in random pieces: pilotfish must stay up (under
the sanitizer build this also checks memory safety) and keep answering well
formed requests. Bounded in time; the seed is fixed, so a failure repeats."""

import random
import socket
import time

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


@pf.timeout(60)
def test_fuzz_mutated_requests_do_not_break_pilotfish():
    o = Origin()
    p = Pilotfish(h2.config("limits: { header_timeout: 1s, idle_timeout: 1s }\n"), origin=o)
    r = random.Random(20261126)
    with o, p:
        n = 0
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            data = mutate(r, r.choice(SEEDS))
            try:
                s = socket.create_connection(("127.0.0.1", p.port), timeout=0.5)
            except ConnectionRefusedError:
                raise AssertionError("pilotfish stopped accepting after %d cases%s"
                                     % (n, p.describe_output(400)))
            try:
                step = r.randint(1, 40)
                for k in range(0, len(data), step):
                    s.sendall(data[k:k + step])
                if r.random() < 0.5:
                    s.shutdown(socket.SHUT_WR)
                s.recv(65536)
            except OSError:
                pass
            finally:
                s.close()
            n += 1
        assert p.running(), "pilotfish died after %d mutated requests%s" % (
            n, p.describe_output(400))
        assert n > 200, n
        r2 = p.get("/echo?after=fuzz")
        assert r2.status == 200, r2
