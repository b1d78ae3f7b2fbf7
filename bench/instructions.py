"""Instructions per request under callgrind: the figure that does not drift with the machine.

On these shared machines the same server's throughput moves by tens of percent between two
rounds of a few seconds, more than most changes to the request path are worth, so
`goals.py` can miss or meet a goal on noise alone. valgrind's callgrind counts the
instructions a server executes in user space, and the same code under the same load
executes the same count whatever else the machine is doing (two runs of this script agree
within 2 %, cosedge's own figures within 0.5 %). That makes it the figure to judge a change
to the Python path by:

    4 KiB hits   cosedge (access log on)   vs static.File, no access log
    4 KiB hits   cosedge (access log on)   vs twistd web, access log    (like for like)
    302s (HEAD)  cosedge (access log on)   vs a bare Twisted redirect
    4 KiB hits   access log on             vs access log off
    302s         access log on             vs access log off

It is not a time. It leaves out the kernel (system calls, and on loopback the wakeups of
the load generator, which grow when a server is slower: a bare redirect made 2x slower in
user time also paid 2x the system time here), and an instruction's cost varies (cache
misses): a server with fewer instructions per request can still be slower. Ratios are
baseline / cosedge, so above 1 means cosedge executes fewer instructions per request.

Each server starts under `valgrind --tool=callgrind --instr-atstart=no` (start-up runs
uninstrumented), is warmed up by wrk, then counted (`callgrind_control -i on`) for a wrk
run of `--seconds`, the count divided by the requests wrk saw answered. Servers run one at
a time (valgrind makes each 50-100x slower). Needs valgrind and wrk (apt-get install
valgrind wrk).

    python bench/instructions.py [--seconds 5] [--connections 32]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from common import BUCKET, Server, start_script, start_twistd_web, wrk
from goals import BARE_REDIRECT, STATIC_NO_LOG, start_edge_logging

VALGRIND_TIMEOUT = 300  # start-up under valgrind, uninstrumented, takes seconds to a minute
WRK_TIMEOUT = 30.0

HIT = f"/{BUCKET}/4KiB.bin"
MISS = f"/{BUCKET}/missing/key.jpg?v=1"

#: (label, cosedge contender, baseline contender, what): rows of the table.
ROWS = [
    ("4 KiB hits", "cosedge", "static.File", "hit"),
    ("4 KiB hits, like for like", "cosedge", "twistd web", "hit"),
    ("302s", "cosedge", "bare 302", "302"),
    ("4 KiB hits, access log", "cosedge", "cosedge log off", "hit"),
    ("302s, access log", "cosedge", "cosedge log off", "302"),
]


def callgrind(out: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]


def counted(server: Server, out: Path, path: str, what: str, seconds: float, c: int) -> float:
    """Instructions per request of `server` under a wrk load of `path`."""
    url = f"http://127.0.0.1:{server.port}{path}"
    method = "HEAD" if what == "302" else "GET"
    pid = str(server.proc.pid)
    # A server under valgrind answers in tens of milliseconds, queued behind 31 others:
    # wrk's own 2 s timeout would count some as errors.
    wrk(url, 2, c, method, 1, WRK_TIMEOUT)  # warm: caches, the first connections, lazy imports
    control = ["callgrind_control"]
    subprocess.run([*control, "-z", pid], check=True, capture_output=True)
    subprocess.run([*control, "-i", "on", pid], check=True, capture_output=True)
    result = wrk(url, seconds, c, method, 1, WRK_TIMEOUT)
    subprocess.run([*control, "-i", "off", pid], check=True, capture_output=True)
    before = set(out.parent.glob(out.name + ".*"))
    subprocess.run([*control, "-d", pid], check=True, capture_output=True)
    dumps = set(out.parent.glob(out.name + ".*")) - before
    if len(dumps) != 1 or not result.requests:
        raise SystemExit(f"no count for {url}: dumps {sorted(dumps)}, {result.requests} requests")
    if result.errors and what != "302":
        raise SystemExit(f"{url}: {result.errors} errors")
    totals = re.search(rb"^totals:\s+(\d+)", dumps.pop().read_bytes(), re.MULTILINE)
    if totals is None:
        raise SystemExit(f"callgrind wrote no totals for {url}")
    return int(totals.group(1)) / result.requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    missing = [tool for tool in ("valgrind", "callgrind_control", "wrk") if not shutil.which(tool)]
    if missing:
        raise SystemExit(f"needs {', '.join(missing)} (apt-get install valgrind wrk)")

    per_request: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory(prefix="cosedge-bench-instructions-") as tmp:
        work = Path(tmp)
        data = work / "data"
        (data / BUCKET).mkdir(parents=True)
        (data / BUCKET / "4KiB.bin").write_bytes(os.urandom(4096))
        (work / "bare_redirect.py").write_text(BARE_REDIRECT)
        bucket = f"buckets:\n  {BUCKET}:\n    origin: {{address: '127.0.0.1:9'}}\n"
        on = f"access_log: {work / 'edge-access.log'}\n"
        starters = {
            "static.File": lambda p: start_script(
                STATIC_NO_LOG.format(folder=str(data)), work, p, VALGRIND_TIMEOUT
            ),
            "twistd web": lambda p: start_twistd_web(
                work, "--path", str(data), access_file=True, prefix=p, timeout=VALGRIND_TIMEOUT
            ),
            "bare 302": lambda p: start_twistd_web(
                work,
                "--class",
                "bare_redirect.Redirect",
                access_file=True,
                prefix=p,
                timeout=VALGRIND_TIMEOUT,
            ),
            "cosedge": lambda p: start_edge_logging(
                work, "edge", data, on + bucket, p, VALGRIND_TIMEOUT
            ),
            "cosedge log off": lambda p: start_edge_logging(
                work, "edge-off", data, "access_log: null\n" + bucket, p, VALGRIND_TIMEOUT
            ),
        }
        for name, start in starters.items():
            out = work / f"callgrind.{name.replace(' ', '-')}.out"
            server = start(callgrind(out))
            try:
                for what in ("hit", "302"):
                    if any(what == w and name in (m, b) for _, m, b, w in ROWS):
                        path = HIT if what == "hit" else MISS
                        per_request[(name, what)] = counted(
                            server, out, path, what, args.seconds, args.connections
                        )
            finally:
                server.stop()

    print(
        f"instructions per request (callgrind, user space), wrk -t1 -c{args.connections} "
        f"for {args.seconds:g}s per figure"
    )
    print(f"{'measurement':<28}{'cosedge':>12}  {'baseline':<18}{'':>12}{'ratio':>8}")
    for label, mine, base, what in ROWS:
        m, b = per_request[(mine, what)], per_request[(base, what)]
        print(f"{label:<28}{m / 1e3:>10,.1f}k  {base:<18}{b / 1e3:>10,.1f}k{b / m:>7.2f}x")
    print("ratio = baseline / cosedge: above 1, cosedge executes fewer instructions")


if __name__ == "__main__":
    main()
