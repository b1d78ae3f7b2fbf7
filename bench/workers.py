"""Worker processes: 4 KiB hits on one edge process against `workers: N` on the same folder.

Both edges run at once on the same data folder; wrk (or the built-in client) drives them in
alternating rounds, and the ratio of the medians is the worker speed-up. Goal: >= 1.7x with
2 workers on 2 cores (the client shares those cores).

    python bench/workers.py [--rounds 5] [--seconds 5] [--connections 64] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from common import BUCKET, LoadResult, edge_config, have_wrk, load, median, start_edge


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
        try:
            for _ in range(args.rounds):
                for name, edge in edges.items():
                    url = f"http://127.0.0.1:{edge.port}/{BUCKET}/hit.bin"
                    result = load(url, args.seconds, args.connections)
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
    print(f"{'edge':<6}{'req/s (median)':>16}{'p50 ms':>9}{'p99 ms':>9}   rounds")
    for name, rounds in results.items():
        rps = median([r.requests_per_s for r in rounds])
        p50 = median([r.p50_ms for r in rounds])
        p99 = median([r.p99_ms for r in rounds])
        each = " ".join(f"{r.requests_per_s:.0f}" for r in rounds)
        print(f"{name:<6}{rps:>16.0f}{p50:>9.2f}{p99:>9.2f}   {each}")
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
