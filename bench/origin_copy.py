"""Copy: cosedge pulling a large object from a loopback origin, against a plain treq
download of the same URL to disk, in the same run; and the edge's memory while it copies.

The origin is `twistd web` serving a file (1 GiB by default: a random 1 MiB block repeated).
cosedge is timed from the GET miss to the object appearing in the bucket (it is fsynced and
linked into place); the baseline is a separate process that streams the body with treq into
a file and fsyncs it. Peak RSS growth of the edge is read from /proc (VmHWM, reset before
each copy). Goals: >= 0.8x the treq download; RSS growth < 50 MiB.

    python bench/origin_copy.py [--size-mib 1024] [--rounds 2]
"""

from __future__ import annotations

# Not `copy.py` (the name the issue used): in this folder that file would shadow the
# standard library's `copy` for every benchmark here, since a script's folder leads sys.path.
import argparse
import http.client
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    BUCKET,
    edge_config,
    env,
    median,
    reset_peak,
    rss_kib,
    start_edge,
    start_twistd_web,
    write_big_file,
)

TREQ_DOWNLOAD = """
import os, sys, time
import treq
from twisted.internet import task

async def main(reactor, url, path):
    started = time.monotonic()
    response = await treq.get(url, unbuffered=True)
    with open(path, "wb") as out:
        await treq.collect(response, out.write)
        out.flush()
        os.fsync(out.fileno())
    print(f"SECONDS {time.monotonic() - started:.3f}", flush=True)

task.react(lambda reactor: __import__("twisted.internet.defer", fromlist=["x"])
           .ensureDeferred(main(reactor, sys.argv[1], sys.argv[2])))
"""


def copy_with_edge(port: int, pid: int, target: Path, size: int) -> tuple[float, int]:
    target.unlink(missing_ok=True)
    before = rss_kib(pid)
    reset_peak(pid)
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", f"/{BUCKET}/big.bin")
    status = conn.getresponse().status
    conn.close()
    assert status == 302, status
    sampled = before
    while not (target.exists() and target.stat().st_size == size):
        if time.monotonic() - started > 600:
            raise RuntimeError("copy did not finish in 10 minutes")
        sampled = max(sampled, rss_kib(pid))  # a cross-check of VmHWM, every 10 ms
        time.sleep(0.01)
    seconds = time.monotonic() - started
    return seconds, max(rss_kib(pid, "VmHWM"), sampled) - before


def download_with_treq(url: str, path: Path) -> float:
    out = subprocess.run(
        [sys.executable, "-c", TREQ_DOWNLOAD, url, str(path)],
        capture_output=True,
        text=True,
        env=env(),
        cwd=path.parent,
        check=True,
    ).stdout
    path.unlink()
    return float(out.split("SECONDS")[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    size = args.size_mib * 2**20

    with tempfile.TemporaryDirectory(prefix="cosedge-bench-") as tmp:
        work = Path(tmp)
        origin_dir = work / "origin"
        origin_dir.mkdir()
        write_big_file(origin_dir / "big.bin", args.size_mib)
        origin = start_twistd_web(work, "--path", str(origin_dir), access_file=True)
        edge = start_edge(
            work,
            edge_config(
                work / "data",
                f"buckets:\n  {BUCKET}:\n    origin: {{address: '127.0.0.1:{origin.port}'}}\n",
            ),
        )
        url = f"http://127.0.0.1:{origin.port}/big.bin"
        target = work / "data" / BUCKET / "big.bin"
        treq_times: list[float] = []
        edge_times: list[float] = []
        growth: list[int] = []
        try:
            for _ in range(args.rounds):
                treq_times.append(download_with_treq(url, work / "treq.bin"))
                seconds, grew = copy_with_edge(edge.port, edge.proc.pid, target, size)
                edge_times.append(seconds)
                growth.append(grew)
            assert target.read_bytes()[: 2**20] == (origin_dir / "big.bin").read_bytes()[: 2**20]
        finally:
            edge.stop()
            origin.stop()

    mib = args.size_mib
    base = median(treq_times)
    print(f"copy: {mib} MiB from a loopback twistd web origin, {args.rounds} alternating rounds")
    print(f"  treq download to disk  {base:7.2f}s {mib / base:8.1f} MiB/s   1.00x")
    edge_s = median(edge_times)
    print(
        f"  cosedge miss -> stored {edge_s:7.2f}s {mib / edge_s:8.1f} MiB/s {base / edge_s:6.2f}x"
    )
    print(f"  edge peak RSS growth during the copy: {max(growth) / 1024:.1f} MiB (max of rounds)")
    print("  goals: >= 0.8x the treq download; RSS growth < 50 MiB")


if __name__ == "__main__":
    main()
