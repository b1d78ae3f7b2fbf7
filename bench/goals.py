"""The speed goals of issue #12 in one run: every figure a same-run ratio.

Contenders are separate processes on 127.0.0.1 that log to files as in production (twistd
`--logfile`, cosedge's `access_log:` file), driven by the same client (wrk -t1 when
installed, else the built-in one); within each round they alternate, and each figure is the
median of the rounds (3 by default).

    4 KiB hits   cosedge (access log on)   vs static.File, no access log   goal >= 1.2x
    4 KiB hits   cosedge (access log on)   vs twistd web, access log       (like for like)
    302s (HEAD)  cosedge (access log on)   vs a bare Twisted redirect       goal >= 0.9x
    1 MiB hits   cosedge                   vs nginx, sendfile on (bytes/s)  goal >= 0.8x
    64 MiB hits  cosedge                   vs nginx, sendfile on (bytes/s)
    4 KiB hits   cosedge workers: 2        vs cosedge, 1 process            goal >= 1.7x
    4 KiB hits   access log on             vs access log off                goal <= 5 % slower
    302s         access log on             vs access log off

nginx rows appear when `nginx` is installed (apt-get install nginx-light). Each row also
gives both servers' own CPU per request (from /proc, workers included): the machine's
speed drifts by tens of percent between rounds, and CPU per request drifts less.

    python bench/goals.py [--rounds 3] [--seconds 5] [--connections 32] [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from common import (
    BUCKET,
    EDGE_READY,
    TWISTD,
    LoadResult,
    Server,
    cpu_seconds,
    edge_config,
    have_wrk,
    load,
    median,
    start_logging_to,
    start_nginx,
    start_script,
    start_twistd_web,
)

STATIC_NO_LOG = """
from twisted.internet import reactor
from twisted.web.server import Site
from twisted.web.static import File
site = Site(File({folder!r}))
site.log = lambda request: None
port = reactor.listenTCP(0, site, interface="127.0.0.1")
print("PORT", port.getHost().port, flush=True)
reactor.run()
"""

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

SIZES = {"4KiB": 4096, "1MiB": 1024 * 1024, "64MiB": 64 * 1024 * 1024}


@dataclass
class Row:
    label: str
    mine: str
    base: str
    goal: str
    check: Callable[[float], bool] | None
    by_bytes: bool = False


def start_edge_logging(
    work: Path,
    name: str,
    data: Path,
    extra: str,
    prefix: Sequence[str] = (),
    timeout: float = 30,
) -> Server:
    """cosedge in its own folder under `work`, logging to a file as in production
    (`prefix`: a program to run it under, valgrind)."""
    folder = work / name
    folder.mkdir()
    config = folder / "edge.yaml"
    config.write_text(edge_config(data, extra))
    logfile = folder / "twistd.log"
    argv = [*prefix, *TWISTD, "--logfile", str(logfile), "cosedge", "--config", str(config)]
    return start_logging_to(argv, logfile, EDGE_READY, folder, timeout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 round of 1 s")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 1.0

    with tempfile.TemporaryDirectory(prefix="cosedge-bench-") as tmp:
        work = Path(tmp)
        data = work / "data"
        folder = data / BUCKET
        folder.mkdir(parents=True)
        for name, size in SIZES.items():
            with open(folder / f"{name}.bin", "wb") as f:
                for _ in range(max(1, size // 2**20)):
                    f.write(os.urandom(min(size, 2**20)))
        bucket = f"buckets:\n  {BUCKET}:\n    origin: {{address: '127.0.0.1:9'}}\n"
        (work / "bare_redirect.py").write_text(BARE_REDIRECT)
        servers: dict[str, Server] = {}
        try:
            servers["static.File"] = start_script(STATIC_NO_LOG.format(folder=str(data)), work)
            servers["twistd web"] = start_twistd_web(work, "--path", str(data), access_file=True)
            servers["bare 302"] = start_twistd_web(
                work, "--class", "bare_redirect.Redirect", access_file=True
            )
            on = f"access_log: {work / 'edge-access.log'}\n"
            servers["cosedge"] = start_edge_logging(work, "edge", data, on + bucket)
            servers["cosedge log off"] = start_edge_logging(
                work, "edge-off", data, "access_log: null\n" + bucket
            )
            workers_log = f"access_log: {work / 'workers-access.log'}\nworkers: 2\n"
            servers["cosedge x2"] = start_edge_logging(work, "edge-x2", data, workers_log + bucket)
            nginx = start_nginx(work, f"root {data};")
            if nginx is not None:
                servers["nginx"] = nginx

            hit = f"/{BUCKET}/{{size}}.bin"
            miss = f"/{BUCKET}/missing/key.jpg?v=1"
            plan: list[tuple[str, str, str]] = [  # (measurement, contender, path)
                *(
                    ("4KiB", c, hit.format(size="4KiB"))
                    for c in ("static.File", "twistd web", "cosedge", "cosedge log off")
                ),
                ("4KiB", "cosedge x2", hit.format(size="4KiB")),
                ("302", "bare 302", miss),
                ("302", "cosedge", miss),
                ("302", "cosedge log off", miss),
            ]
            for big in ("1MiB", "64MiB"):
                for c in ("cosedge", "nginx"):
                    if c in servers:
                        plan.append((big, c, hit.format(size=big)))
            results: dict[tuple[str, str], list[LoadResult]] = {}
            cpu: dict[tuple[str, str], list[float]] = {}  # server CPU us per request
            for _ in range(args.rounds):
                for what, contender, path in plan:
                    url = f"http://127.0.0.1:{servers[contender].port}{path}"
                    method = "HEAD" if what == "302" else "GET"
                    connections = args.connections
                    if contender.endswith("x2"):
                        connections = 64
                    elif what == "64MiB":  # 32 x 64 MiB in flight outlasts wrk's 2 s timeout
                        connections = 4
                    used = cpu_seconds(servers[contender].proc.pid)
                    result = load(url, args.seconds, connections, method, args.threads)
                    used = cpu_seconds(servers[contender].proc.pid) - used
                    if result.errors and what != "302":
                        raise SystemExit(f"{contender} {what}: {result.errors} errors")
                    results.setdefault((what, contender), []).append(result)
                    done = max(1.0, result.requests_per_s * args.seconds)
                    cpu.setdefault((what, contender), []).append(1e6 * used / done)
        finally:
            for server in servers.values():
                server.stop()

    rows = [
        Row("4 KiB hits", "4KiB/cosedge", "4KiB/static.File", ">= 1.2x", lambda r: r >= 1.2),
        Row("4 KiB hits, like for like", "4KiB/cosedge", "4KiB/twistd web", "", None),
        Row("302s", "302/cosedge", "302/bare 302", ">= 0.9x", lambda r: r >= 0.9),
        Row("1 MiB hits", "1MiB/cosedge", "1MiB/nginx", ">= 0.8x", lambda r: r >= 0.8, True),
        Row("64 MiB hits", "64MiB/cosedge", "64MiB/nginx", "", None, True),
        Row(
            "4 KiB hits, workers", "4KiB/cosedge x2", "4KiB/cosedge", ">= 1.7x", lambda r: r >= 1.7
        ),
        Row(
            "4 KiB hits, access log",
            "4KiB/cosedge",
            "4KiB/cosedge log off",
            ">= 0.95x",
            lambda r: r >= 0.95,
        ),
        Row(
            "302s, access log",
            "302/cosedge",
            "302/cosedge log off",
            ">= 0.95x",
            lambda r: r >= 0.95,
        ),
    ]

    def figure(key: str, by_bytes: bool) -> float | None:
        runs = results.get(_key(key))
        if not runs:
            return None
        return median([r.mb_per_s if by_bytes else r.requests_per_s for r in runs])

    client = f"wrk -t{args.threads}" if have_wrk() else "built-in client"
    print(
        f"goals: {args.rounds} alternating round(s) x {args.seconds:g}s, "
        f"{args.connections} keep-alive connections (64 for workers, 4 for 64 MiB), {client}, "
        f"{os.cpu_count()} cores; medians"
    )
    head = f"{'measurement':<26}{'contender':<18}{'figure':>12}  {'baseline':<20}{'figure':>12}"
    print(f"{head}{'ratio':>8}  {'goal':<16}{'CPU us/request':>16}{'CPU ratio':>10}")
    for row in rows:
        mine, base = figure(row.mine, row.by_bytes), figure(row.base, row.by_bytes)
        if mine is None or base is None:
            print(f"{row.label:<26}(not measured: {row.base.split('/')[1]} missing)")
            continue
        ratio = mine / base
        unit = "MB/s" if row.by_bytes else "/s"
        verdict = "" if row.check is None else ("ok" if row.check(ratio) else "MISSED")
        mine_cpu, base_cpu = median(cpu[_key(row.mine)]), median(cpu[_key(row.base)])
        print(
            f"{row.label:<26}{row.mine.split('/')[1]:<18}{mine:>8,.0f}{unit:<4}  "
            f"{row.base.split('/')[1]:<20}{base:>8,.0f}{unit:<4}{ratio:>7.2f}x  "
            f"{row.goal + ' ' + verdict:<16}{mine_cpu:>7,.0f} /{base_cpu:>6,.0f}"
            f"{base_cpu / mine_cpu:>9.2f}x"
        )
    print(
        "CPU us/request: the servers' own CPU (user + system, workers and nginx's worker\n"
        "included) per request, median of rounds; CPU ratio = baseline's / contender's, so\n"
        "above 1 means cheaper per request. Steadier than the throughput figures when the\n"
        "machine's speed drifts between rounds; the goals are the throughput ratios."
    )


def _key(name: str) -> tuple[str, str]:
    """("4KiB", "cosedge") for "4KiB/cosedge"."""
    what, contender = name.split("/", 1)
    return what, contender


if __name__ == "__main__":
    main()
