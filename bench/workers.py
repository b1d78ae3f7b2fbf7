"""Worker processes: 4 KiB hits on one edge process against `workers: N` on the same folder.

Both edges run at once on the same data folder; wrk (or the built-in client) drives them in
alternating rounds, and the ratio of the medians is the worker speed-up. Goal: >= 1.7x with
2 workers on 2 cores (the client shares those cores). Each round also shows, in brackets, the
cores' worth of CPU that neither the edge nor the client used meanwhile (other processes,
plus a little kernel time for loopback): rounds on a busy machine stand out, and the ratio
only means something when that stays near 0.1.

    python bench/workers.py [--rounds 5] [--seconds 5] [--connections 64] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
from pathlib import Path

from common import BUCKET, LoadResult, edge_config, have_wrk, load, median, start_edge


def busy_ticks() -> int:
    """Clock ticks all CPUs spent busy since boot (everything but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:9]]
    return sum(fields) - fields[3] - fields[4]


def tree_ticks(pid: int) -> int:
    """user + system ticks of a process and its children (an edge and its workers)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total


def own_ticks() -> float:
    """Ticks of this process and its finished children (the load generator)."""
    tick = os.sysconf("SC_CLK_TCK")
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return (me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime) * tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=4096, help="object size in bytes")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cosedge-bench-") as tmp:
        work = Path(tmp)
        folder = work / "data" / BUCKET
        folder.mkdir(parents=True)
        (folder / "hit.bin").write_bytes(os.urandom(args.size))
        buckets = f"buckets:\n  {BUCKET}: {{}}\n"
        edges = {}
        for name, count in (("x1", 1), (f"x{args.workers}", args.workers)):
            (work / name).mkdir()
            config = edge_config(work / "data", f"workers: {count}\n" + buckets)
            edges[name] = start_edge(work / name, config)
        results: dict[str, list[LoadResult]] = {name: [] for name in edges}
        others: dict[str, list[float]] = {name: [] for name in edges}
        used: dict[str, list[float]] = {name: [] for name in edges}
        try:
            for _ in range(args.rounds):
                for name, edge in edges.items():
                    url = f"http://127.0.0.1:{edge.port}/{BUCKET}/hit.bin"
                    before = busy_ticks(), tree_ticks(edge.proc.pid), own_ticks()
                    result = load(url, args.seconds, args.connections)
                    after = busy_ticks(), tree_ticks(edge.proc.pid), own_ticks()
                    other = float((after[0] - before[0]) - (after[1] - before[1]))
                    other -= after[2] - before[2]
                    per_core = os.sysconf("SC_CLK_TCK") * args.seconds
                    others[name].append(max(0.0, other) / per_core)
                    used[name].append((after[1] - before[1]) / per_core)
                    if result.errors:
                        raise SystemExit(f"{name}: {result.errors} errors")
                    results[name].append(result)
        finally:
            for edge in edges.values():
                edge.stop()

    client = "wrk -t2" if have_wrk() else "built-in client"
    print(
        f"workers: {args.rounds} alternating rounds x {args.seconds:g}s, {args.connections} "
        f"keep-alive connections, {client}, {args.size}-byte hits, {os.cpu_count()} cores"
    )
    print(f"{'edge':<6}{'req/s (median)':>16}{'p50 ms':>9}{'p99 ms':>9}   rounds (other cores)")
    for name, rounds in results.items():
        rps = median([r.requests_per_s for r in rounds])
        p50 = median([r.p50_ms for r in rounds])
        p99 = median([r.p99_ms for r in rounds])
        each = " ".join(
            f"{r.requests_per_s:.0f} ({o:.2f})" for r, o in zip(rounds, others[name], strict=True)
        )
        print(f"{name:<6}{rps:>16.0f}{p50:>9.2f}{p99:>9.2f}   {each}")
        print(f"{'':<40}edge processes used {median(used[name]):.2f} cores (median)")
    one = median([r.requests_per_s for r in results["x1"]])
    many = median([r.requests_per_s for r in results[f"x{args.workers}"]])
    per_round = [
        m.requests_per_s / o.requests_per_s
        for o, m in zip(results["x1"], results[f"x{args.workers}"], strict=True)
    ]
    print(
        f"speed-up x{args.workers} / x1 = {many / one:.2f}x "
        f"(per round: {' '.join(f'{r:.2f}' for r in per_round)})"
    )
    print("goal: >= 1.7x with 2 workers on 2 cores")


if __name__ == "__main__":
    main()
