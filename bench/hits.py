"""Hits: cosedge against plain `twisted.web.static.File` serving the same folder.

4 KiB and 1 MiB objects, the same client (wrk when installed, else a built-in keep-alive
load generator), contenders alternating round by round; prints requests/s, MB/s and p50/p99
latency (medians over rounds) and the ratio to static.File. Goal: >= 1.0x.

Two static.File baselines: `static.File` logs its access lines through twistd's log, the
path cosedge's access events take; `static.File+file` writes them to a file of its own
(`twistd web --logfile`), which skips the log observers and shows what logging costs.

The worker speed-up is measured by `bench/workers.py`.

    python bench/hits.py [--rounds 3] [--seconds 5] [--connections 32]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from common import (
    BUCKET,
    LoadResult,
    edge_config,
    have_wrk,
    load,
    median,
    start_edge,
    start_static_file,
)

SIZES = {"4KiB": 4096, "1MiB": 1024 * 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cosedge-bench-") as tmp:
        work = Path(tmp)
        folder = work / "data" / BUCKET
        folder.mkdir(parents=True)
        for name, size in SIZES.items():
            (folder / f"{name}.bin").write_bytes(os.urandom(size))
        edge = start_edge(work, edge_config(work / "data", f"buckets:\n  {BUCKET}: {{}}\n"))
        static = start_static_file(work / "data", work)
        static_file_log = start_static_file(work / "data", work, access_file=True)
        contenders = (
            ("static.File", static),
            ("static.File+file", static_file_log),
            ("cosedge", edge),
        )
        results: dict[tuple[str, str], list[LoadResult]] = {}
        try:
            for _ in range(args.rounds):
                for name in SIZES:
                    for label, server in contenders:
                        url = f"http://127.0.0.1:{server.port}/{BUCKET}/{name}.bin"
                        result = load(url, args.seconds, args.connections)
                        assert result.errors == 0, f"{label} {name}: {result.errors} errors"
                        results.setdefault((name, label), []).append(result)
        finally:
            for _, server in contenders:
                server.stop()

    client = "wrk -t2" if have_wrk() else "built-in client"
    print(
        f"hits: {args.rounds} alternating rounds x {args.seconds:g}s, {args.connections} "
        f"keep-alive connections, {client}"
    )
    print(
        f"{'object':<7}{'server':<18}{'req/s':>10}{'MB/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'vs static':>11}"
    )
    for name in SIZES:
        base = median([r.requests_per_s for r in results[(name, "static.File")]])
        for label, _ in contenders:
            runs = results[(name, label)]
            rps = median([r.requests_per_s for r in runs])
            print(
                f"{name:<7}{label:<18}{rps:>10,.0f}{median([r.mb_per_s for r in runs]):>9.1f}"
                f"{median([r.p50_ms for r in runs]):>9.2f}{median([r.p99_ms for r in runs]):>9.2f}"
                f"{rps / base:>10.2f}x"
            )
    print("goal: cosedge >= 1.0x static.File")


if __name__ == "__main__":
    main()
