"""Mirror: a large Mirror miss through cosedge against a plain reverse proxy of the same origin,
in the same run; and the edge's memory while it serves (and stores) the object.

The origin is `twistd web` serving a file (256 MiB by default: a random 1 MiB block repeated,
hard-linked under one name per round so that every round is a miss). The baseline is
`twisted.web.proxy.ReverseProxyResource` in its own process, which stores nothing. Both are
read by the same client at full speed, alternating round by round; it times the first body
byte and the last. The edge also writes the object into its bucket on the way (its clients
read that same scratch file: one copy on disk). Peak RSS growth of each server is read from
/proc (VmHWM, reset before each round). Each server's CPU time for the fetch is printed too:
on a shared machine the wall-clock ratio follows the CPU each process gets, and the edge
spends more per byte than a proxy that stores nothing (the store's MD5 of the object and its
pending file, on a worker thread, so only a free second core hides them). Goals: total
throughput >= 0.8x the proxy's; edge RSS growth flat (< 50 MiB, far below the object's size).

    python bench/mirror.py [--size-mib 256] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import http.client
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import (
    BUCKET,
    edge_config,
    median,
    reset_peak,
    rss_kib,
    start_edge,
    start_script,
    start_twistd_web,
    write_big_file,
)

from edge.api.rules import MIRROR, OriginRule, OriginRules
from edge.config import OriginAddress

PROXY = """
from twisted.internet import reactor
from twisted.web import proxy, server
site = server.Site(proxy.ReverseProxyResource("127.0.0.1", {port}, b""))
listening = reactor.listenTCP(0, site, interface="127.0.0.1")
print("PORT", listening.getHost().port, flush=True)
reactor.run()
"""


@dataclass
class Round:
    first_byte: float
    total: float
    rss_growth_kib: int
    cpu_seconds: float  # the server's user + system time during the fetch


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fetch(port: int, path: str, pid: int, size: int) -> Round:
    """GET `path` at full speed, reading into one reused buffer: seconds to the first body
    byte and to the last, and the server's peak RSS growth meanwhile."""
    before = rss_kib(pid)
    reset_peak(pid)
    cpu_before = cpu_seconds(pid)
    buffer = bytearray(1024 * 1024)
    view = memoryview(buffer)
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", path)
    response = conn.getresponse()
    assert response.status == 200, response.status
    received = response.readinto(view[:1])
    first_byte = time.monotonic() - started
    while True:
        n = response.readinto(view)
        if not n:
            break
        received += n
    total = time.monotonic() - started
    conn.close()
    assert received == size, (received, size)
    cpu = cpu_seconds(pid) - cpu_before
    return Round(first_byte, total, rss_kib(pid, "VmHWM") - before, cpu)


def mirror_rules(data_dir: Path, origin_port: int) -> None:
    """The bucket's one Mirror rule, saved where the API saves rules (read at start-up)."""
    rule = OriginRule(1, MIRROR, OriginAddress.parse(f"127.0.0.1:{origin_port}"))
    folder = data_dir / ".cosedge" / "origin"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{BUCKET}.json").write_bytes(OriginRules.record(BUCKET, (rule,)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 round")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    size = args.size_mib * 2**20

    with tempfile.TemporaryDirectory(prefix="cosedge-bench-") as tmp:
        work = Path(tmp)
        origin_dir = work / "origin"
        origin_dir.mkdir()
        write_big_file(origin_dir / "big.bin", args.size_mib)
        for n in range(rounds):  # a fresh name per round: each is a miss at the edge
            os.link(origin_dir / "big.bin", origin_dir / f"big-{n}.bin")
        origin = start_twistd_web(work, "--path", str(origin_dir), access_file=True)
        data_dir = work / "data"
        mirror_rules(data_dir, origin.port)
        edge = start_edge(work, edge_config(data_dir, f"buckets:\n  {BUCKET}: {{}}\n"))
        proxy = start_script(PROXY.format(port=origin.port), work)
        edge_rounds: list[Round] = []
        proxy_rounds: list[Round] = []
        try:
            for n in range(rounds):
                proxy_rounds.append(fetch(proxy.port, f"/big-{n}.bin", proxy.proc.pid, size))
                path = f"/{BUCKET}/big-{n}.bin"
                edge_rounds.append(fetch(edge.port, path, edge.proc.pid, size))
                stored = data_dir / BUCKET / f"big-{n}.bin"
                deadline = time.monotonic() + 60
                while not stored.exists() and time.monotonic() < deadline:
                    time.sleep(0.05)  # published once fsynced, just after the response
                assert stored.stat().st_size == size, "the Mirror miss was not stored"
                stored.unlink()  # keep the disk use to one object
        finally:
            edge.stop()
            proxy.stop()
            origin.stop()

    mib = args.size_mib
    proxy_total = median([r.total for r in proxy_rounds])
    edge_total = median([r.total for r in edge_rounds])
    print(f"mirror: a {mib} MiB miss from a loopback twistd web origin, {rounds} round(s)")
    print("                             first byte    total     MiB/s   ratio  peak RSS +  CPU s")
    for name, got, total in (
        ("ReverseProxyResource", proxy_rounds, proxy_total),
        ("cosedge Mirror miss", edge_rounds, edge_total),
    ):
        first = median([r.first_byte for r in got]) * 1000
        growth = max(r.rss_growth_kib for r in got) / 1024
        cpu = median([r.cpu_seconds for r in got])
        print(
            f"  {name:24s} {first:9.1f} ms {total:7.2f}s {mib / total:9.1f} "
            f"{proxy_total / total:6.2f}x {growth:7.1f} MiB {cpu:6.2f}"
        )
    print("  goals: Mirror total >= 0.8x the proxy's throughput; edge RSS growth flat (< 50 MiB)")


if __name__ == "__main__":
    main()
