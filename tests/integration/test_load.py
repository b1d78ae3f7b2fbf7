"""Load: 200 concurrent keep-alive clients against a real `twistd cosedge` process.

The clients (threads, `http.client`, one connection each for the whole run) mix hits
(GET with the bytes checked, HEAD, If-None-Match -> 304) and misses on keys a real loopback
origin process serves (`extra_origin_cidrs: ['127.0.0.1/32']`). The run lasts
COSEDGE_LOAD_SECONDS seconds, default 10 so the suite stays fast; the issue asked for 30 s,
which is `COSEDGE_LOAD_SECONDS=30 python -m pytest tests/integration/test_load.py`.

Properties: no 5xx and no unexpected status, no client error (timeout, reset, bad body), no
connection closed by the edge (keep-alive holds for the whole run), every key that missed
is copied with the origin's exact bytes and fetched from the origin at most once, the edge
logs no traceback, and once the clients are gone and the copies done the edge process holds
exactly the descriptors it held before the load (compared as /proc/<pid>/fd tables).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from edge.testing.process import fd_table, start_twistd, wait_ready
from tests.integration.conftest import BUCKET

CLIENTS = 200
SECONDS = float(os.environ.get("COSEDGE_LOAD_SECONDS", "10"))
MISS_KEYS = 3000

# An origin process: GET /m/<n>.txt answers a body derived from n; every request path is
# appended to a log file, so the test can count origin fetches per key.
ORIGIN = r"""
import sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, log_path = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
log = open(log_path, "a", buffering=1)

def body_for(n):
    return (b"origin object %d\n" % n) * (1 + n % 97)

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        with lock:
            log.write(self.path + "\n")
        name = self.path.rsplit("/", 1)[-1]
        if not (self.path.startswith("/m/") and name.endswith(".txt")):
            self.send_error(404)
            return
        body = body_for(int(name[:-4]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.request_queue_size = 128
server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
print("origin ready", flush=True)
server.serve_forever()
"""


def origin_body(n: int) -> bytes:
    return (b"origin object %d\n" % n) * (1 + n % 97)


def settled_fd_table(pid: int, target: dict[int, str], timeout: float = 15) -> dict[int, str]:
    """The edge's descriptor table once it equals `target`, or after `timeout` seconds
    (connections the clients closed are released on the edge's next reactor pass)."""
    deadline = time.monotonic() + timeout
    table = fd_table(pid)
    while table != target and time.monotonic() < deadline:
        time.sleep(0.1)
        table = fd_table(pid)
    return table


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_200_keepalive_clients_hits_and_misses_no_errors_no_leaks(tmp_path: Path) -> None:
    """See the module docstring."""
    data = tmp_path / "data" / BUCKET
    data.mkdir(parents=True)
    hits: dict[str, bytes] = {}
    for n, size in enumerate([512, 4096, 16_384, 65_536, 262_144] * 4):
        body = os.urandom(size)
        (data / f"h{n}.bin").write_bytes(body)
        hits[f"h{n}.bin"] = body
    etags = {key: f'"{hashlib.md5(body).hexdigest()}"' for key, body in hits.items()}
    digests = {key: hashlib.md5(body).digest() for key, body in hits.items()}

    origin_port = free_port()
    origin_log = tmp_path / "origin.log"
    origin = subprocess.Popen(
        [sys.executable, "-c", ORIGIN, str(origin_port), str(origin_log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert origin.stdout is not None and origin.stdout.readline() == b"origin ready\n"
    config = tmp_path / "edge.yaml"
    config.write_text(
        "listen: 'tcp:0:interface=127.0.0.1'\n"
        f"data_dir: {tmp_path / 'data'}\n"
        "extra_origin_cidrs: ['127.0.0.1/32']\n"
        "origin_fetch: {queue_size: 10000}\n"
        f"buckets:\n  {BUCKET}:\n    origin: {{address: '127.0.0.1:{origin_port}'}}\n"
    )
    edge = start_twistd("--config", str(config), cwd=tmp_path)
    try:
        port, output = wait_ready(edge)
        # Warm up: a hit and a copied miss, so what the edge opens lazily is open already.
        warm = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for path in (f"/{BUCKET}/h0.bin", f"/{BUCKET}/m/warm/0.txt"):
            warm.request("GET", path)
            warm.getresponse().read()
        warm.close()
        deadline = time.monotonic() + 10
        while not (data / "m" / "warm" / "0.txt").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        baseline = fd_table(edge.pid)

        statuses: Counter[int] = Counter()
        errors: list[str] = []
        reconnects = 0
        missed: set[int] = set()
        lock = threading.Lock()
        stop_at = [0.0]

        def begin() -> None:  # run once, when all clients are connected and waiting
            stop_at[0] = time.monotonic() + SECONDS

        start = threading.Barrier(CLIENTS, action=begin)

        def client(seed: int) -> None:
            nonlocal reconnects
            rng = random.Random(seed)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            local: Counter[int] = Counter()
            local_missed: set[int] = set()
            local_errors: list[str] = []
            try:
                conn.connect()
                sock = conn.sock
                start.wait(30)
                while time.monotonic() < stop_at[0]:
                    roll = rng.random()
                    key = rng.choice(list(hits))
                    headers: dict[str, str] = {}
                    method = "GET"
                    miss = None
                    if roll < 0.25:
                        miss = rng.randrange(MISS_KEYS)
                        path = f"/{BUCKET}/m/{miss}.txt"
                    else:
                        path = f"/{BUCKET}/{key}"
                        if roll < 0.30:
                            method = "HEAD"
                        elif roll < 0.40:
                            headers["If-None-Match"] = etags[key]
                    conn.request(method, path, headers=headers)
                    if sock is not None and conn.sock is not sock:
                        with lock:
                            reconnects += 1
                    sock = conn.sock
                    response = conn.getresponse()
                    body = response.read()
                    status = response.status
                    local[status] += 1
                    if miss is not None:
                        location = f"http://127.0.0.1:{origin_port}/m/{miss}.txt"
                        if status == 302:
                            local_missed.add(miss)
                            ok = response.getheader("location") == location
                        else:
                            ok = status == 200 and body == origin_body(miss)
                    elif method == "HEAD":
                        ok = status == 200 and response.getheader("content-length") == str(
                            len(hits[key])
                        )
                    elif headers:
                        ok = status == 304 and body == b""
                    else:
                        ok = status == 200 and hashlib.md5(body).digest() == digests[key]
                    if not ok:
                        local_errors.append(f"{method} {path}: {status} {body[:80]!r}")
            except Exception as e:  # noqa: BLE001 - every client failure is a test failure
                local_errors.append(f"{type(e).__name__}: {e}")
            finally:
                conn.close()
                with lock:
                    statuses.update(local)
                    missed.update(local_missed)
                    errors.extend(local_errors)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(SECONDS + 60)
        assert not [t for t in threads if t.is_alive()], "clients still running"
        print(f"load: {dict(statuses)} in {SECONDS:g}s from {CLIENTS} keep-alive clients")

        assert errors == [], errors[:20]
        assert reconnects == 0  # the edge closed no keep-alive connection
        assert not [code for code in statuses if code >= 500], statuses
        assert set(statuses) <= {200, 302, 304}, statuses
        assert statuses[200] and statuses[302] and statuses[304]
        assert sum(statuses.values()) > 10 * CLIENTS

        # Every key that missed is copied (no queue overflow at queue_size 10000).
        deadline = time.monotonic() + 30
        pending = set(missed)
        while pending and time.monotonic() < deadline:
            pending = {n for n in pending if not (data / "m" / f"{n}.txt").exists()}
            time.sleep(0.1)
        assert not pending, f"{len(pending)} missed keys never copied"
        for n in missed:
            assert (data / "m" / f"{n}.txt").read_bytes() == origin_body(n)
        state = tmp_path / "data" / ".cosedge"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
            list((state / "tmp").iterdir()) or list((state / "locks").iterdir())
        ):
            time.sleep(0.1)
        assert list((state / "tmp").iterdir()) == []
        assert list((state / "locks").iterdir()) == []
        fetched = Counter(origin_log.read_text().split())
        assert [p for p, count in fetched.items() if count > 1] == []  # single flight

        after = settled_fd_table(edge.pid, baseline)
        assert after == baseline, {
            "leaked": {fd: t for fd, t in after.items() if baseline.get(fd) != t},
            "gone": {fd: t for fd, t in baseline.items() if after.get(fd) != t},
        }
        text = output.text()
        assert "Traceback" not in text and "Unhandled" not in text
        assert "queue full" not in text
    finally:
        edge.send_signal(signal.SIGTERM)
        edge.wait(timeout=30)
        origin.terminate()
        origin.wait(timeout=10)
