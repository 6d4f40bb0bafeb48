# Idle keep-alive clients for bench/run.sh's idle case:
#   python3 - PORT N READY_FILE PATH [HOLD] < idle_clients.py
# opens N connections to 127.0.0.1:PORT, BATCH at a time: sends one GET PATH
# on each of a batch and reads the responses (Content-Length framed). Then it
# writes READY_FILE and holds every connection open, idle, until it is
# stopped (SIGTERM); with HOLD 0 it closes them and exits instead (the
# warm-up: the proxy's transient memory for a batch in flight is then in the
# RSS read before the measured run, not counted per connection).
import os
import resource
import signal
import socket
import sys
import time

port, n = int(sys.argv[1]), int(sys.argv[2])
ready, path = sys.argv[3], sys.argv[4]
hold = len(sys.argv) < 6 or sys.argv[5] != "0"
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft < n + 64:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 64), hard))
req = b"GET %s HTTP/1.1\r\nHost: bench\r\n\r\n" % path.encode()


def response(s):
    buf = b""
    while True:
        i = buf.find(b"\r\n\r\n")
        if i >= 0:
            head = buf[:i].decode("latin-1").lower()
            if not head.startswith("http/1.1 200"):
                sys.exit("unexpected response: " + head.split("\r\n")[0])
            cl = int(head.split("content-length:")[1].split("\r\n")[0])
            if len(buf) >= i + 4 + cl:
                return
        d = s.recv(65536)
        if not d:
            sys.exit("connection closed by the proxy")
        buf += d


socks = []
BATCH = 100
while len(socks) < n:
    batch = [socket.create_connection(("127.0.0.1", port), timeout=30)
             for _ in range(min(BATCH, n - len(socks)))]
    for s in batch:
        s.sendall(req)
    for s in batch:
        response(s)
    socks += batch
print("%d idle connections open" % len(socks), flush=True)
if not hold:
    for s in socks:
        s.close()
    sys.exit(0)
with open(ready + ".tmp", "w") as f:
    f.write("%d\n" % len(socks))
os.rename(ready + ".tmp", ready)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(3600)
