"""Misses: the 302 path against a bare Twisted redirect, and single flight under a storm.

(a) Redirect rate: HEAD misses on a bucket with an origin (HEAD never starts a copy, so the
    figure is the miss path itself: key check, store lookup, origin rule, resolved-origin
    cache, ISP verdict, 302) against a process whose Twisted resource only answers 302 with
    the same Location. Goal: >= 0.9x.
    `bare 302` logs its access lines through twistd's log like cosedge; `bare 302+file`
    writes them to a file of its own (`--logfile`), skipping the log observers.
(b) 1000 concurrent GET misses of one key against an origin that takes 1 s to answer: how
    many requests reached the origin. Goal: 1.

    python bench/misses.py [--rounds 3] [--seconds 5] [--connections 32] [--storm 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import urllib.request
from pathlib import Path

from common import (
    BUCKET,
    edge_config,
    have_wrk,
    load,
    median,
    start_edge,
    start_script,
    start_twistd_web,
)

# Served by `twistd web --class`: its access lines go through twistd's log, as cosedge's do.
BARE_REDIRECT = """
from twisted.web.resource import Resource

class Redirect(Resource):
    isLeaf = True
    def render(self, request):
        request.setResponseCode(302)
        request.setHeader(b"location", b"http://127.0.0.1:9" + request.uri)
        request.setHeader(b"content-length", b"0")
        return b""
"""

SLOW_ORIGIN = """
import threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
count = 0
lock = threading.Lock()
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        global count
        if self.path == "/count":
            body = str(count).encode()
        else:
            with lock:
                count += 1
            time.sleep(1.0)
            body = b"x" * 65536
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("PORT", server.server_address[1], flush=True)
server.serve_forever()
"""


async def storm(port: int, path: str, count: int) -> list[int]:
    async def one() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        writer.close()
        return status

    return await asyncio.gather(*(one() for _ in range(count)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--storm", type=int, default=1000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cosedge-bench-") as tmp:
        work = Path(tmp)
        origin = start_script(SLOW_ORIGIN, work)
        (work / "bare_redirect.py").write_text(BARE_REDIRECT)
        bare = start_twistd_web(work, "--class", "bare_redirect.Redirect")
        bare_file_log = start_twistd_web(
            work, "--class", "bare_redirect.Redirect", access_file=True
        )
        edge = start_edge(
            work,
            edge_config(
                work / "data",
                f"buckets:\n  {BUCKET}:\n    origin: {{address: '127.0.0.1:{origin.port}'}}\n",
            ),
        )
        rates: dict[str, list[float]] = {"bare 302": [], "bare 302+file": [], "cosedge": []}
        try:
            for _ in range(args.rounds):
                for label, server in (
                    ("bare 302", bare),
                    ("bare 302+file", bare_file_log),
                    ("cosedge", edge),
                ):
                    url = f"http://127.0.0.1:{server.port}/{BUCKET}/missing/key.jpg?v=1"
                    result = load(url, args.seconds, args.connections, method="HEAD")
                    rates[label].append(result.requests_per_s)
            started = time.monotonic()
            statuses = asyncio.run(storm(edge.port, f"/{BUCKET}/storm.bin", args.storm))
            storm_seconds = time.monotonic() - started
            target = work / "data" / BUCKET / "storm.bin"
            deadline = time.monotonic() + 30
            while not target.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            stored = target.exists()
            with urllib.request.urlopen(f"http://127.0.0.1:{origin.port}/count") as r:
                fetches = int(r.read())
        finally:
            for server in (edge, bare, bare_file_log, origin):
                server.stop()

    client = "wrk -t2" if have_wrk() else "built-in client"
    base = median(rates["bare 302"])
    print(
        f"misses (a): HEAD misses, {args.rounds} alternating rounds x {args.seconds:g}s, "
        f"{args.connections} keep-alive connections, {client}"
    )
    for label, values in rates.items():
        print(f"  {label:<14}{median(values):>10,.0f} redirects/s {median(values) / base:>7.2f}x")
    print("  goal: cosedge >= 0.9x the bare redirect")
    print(
        f"misses (b): {args.storm} concurrent GET misses of one key in {storm_seconds:.2f}s: "
        f"{statuses.count(302)} x 302, {fetches} origin request(s), object stored: "
        f"{stored}"
    )
    print("  goal: 1 origin request")


if __name__ == "__main__":
    main()
