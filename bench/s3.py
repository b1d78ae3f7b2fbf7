"""The cluster benchmarks: cosedge on an S3 store (SeaweedFS) with Redis, each figure a
same-run ratio.

One `weed mini` and one `redis-server` on free loopback ports (started as the cluster tests
start them), cosedge as twistd processes with `store: {type: s3}`, contenders alternating
round by round, medians over rounds:

    4 KiB / 1 MiB hits  treq -> cosedge (store s3) vs treq -> SeaweedFS's S3 port with a
                        pre-signed URL: one Python client (TREQ_LOAD_SCRIPT, N keep-alive
                        GETs in a loop, bodies dropped as they stream) for both, the
                        issue's own baseline (#10)                       goal >= 0.8x (1 MiB)
                        and treq -> nginx proxy_pass to the store (keep-alive upstream,
                        proxy_buffering off: nginx's fastest relay), for information:
                        what a proxy hop written in C costs on the same machine
                        and the same three with wrk, for information: wrk straight at
                        the store is the ceiling, no Python client in the way
    256 MiB copy        cosedge miss -> object in the store (HEAD polled)
                                            vs treq GET from the origin streamed as a
                                               multipart upload with the repo's S3 client
                                                                           goal >= 0.8x
                        plus the edge's peak RSS growth (VmHWM)            goal < 64 MiB
    4 KiB hits/s        2 nodes (wrk -t1 at each, summed) vs 1 node (wrk -t2), same total
                        connections, one shared store

The nodes write their access lines to a buffered `access_log:` file, as the README's
several-nodes recipe does. The origin is `twistd web` serving one file (a random 1 MiB block
repeated). Everything runs on the same machine, so the store, the nodes and wrk share its
cores: the two-node figure says whether a second node adds anything there, not how a
cluster scales.

    python bench/s3.py [--rounds 3] [--seconds 5] [--connections 32] [--size 256]
                       [--quick] [--only hits|nodes|copy ...] [--logs DIR]

`--quick` is a smoke run (1 round of 2 s, a 16 MiB copy); `--only` runs some parts alone.
"""

from __future__ import annotations

# The checkout on sys.path, for `edge` and the cluster tests' server helpers.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import http.client  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

from botocore.auth import S3SigV4QueryAuth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402
from common import (
    BUCKET,
    EDGE_READY,
    TWISTD,
    LoadResult,
    Server,
    cpu_seconds,
    edge_config,
    env,
    have_wrk,
    load,
    median,
    reset_peak,  # noqa: E402
    rss_kib,
    start_logging_to,
    start_nginx,
    start_twistd_web,
    write_big_file,
)

from tests.cluster.redis_server import RedisServer  # noqa: E402
from tests.cluster.seaweedfs_server import SeaweedFS, start_seaweedfs  # noqa: E402

SIZES = {"4KiB": 4096, "1MiB": 1024 * 1024}
PARTS = ("hits", "nodes", "copy")
PART = 8 * 2**20  # the edge's multipart part size (edge/store/s3/store.py)

#: Run by the benchmark in a process of its own: the store seeded, the plain copy timed.
S3_SCRIPT = """
import os, sys, time
import treq
from twisted.internet import defer, task
from edge.s3 import S3Client, S3Error

PART = %(part)d

async def retry(make):
    for _ in range(100):  # SeaweedFS may answer NoSuchBucket just after making the bucket
        try:
            return await make()
        except S3Error as e:
            if e.code != "NoSuchBucket":
                raise
            await task.deferLater(task_reactor[0], 0.1, lambda: None)
    return await make()

async def seed(client, bucket, names_sizes):
    try:
        await client.create_bucket(bucket)
    except S3Error as e:
        if e.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    for pair in names_sizes:
        name, size = pair.split("=")
        data = os.urandom(int(size))
        await retry(lambda: client.put_object(bucket, name, data))
    print("SEEDED", flush=True)

async def copy(client, bucket, key, url):
    started = time.monotonic()
    response = await treq.get(url, unbuffered=True)
    assert response.code == 200, response.code
    upload_id = await client.create_multipart_upload(bucket, key)
    parts, pending, chain = [], [], [defer.succeed(None)]

    def cut(final):
        while pending and (final or sum(map(len, pending)) >= PART):
            data = b"".join(pending)
            pending.clear()
            if not final and len(data) > PART:
                pending.append(data[PART:])
                data = data[:PART]
            number = len(parts) + 1
            parts.append(None)

            def send(_, data=data, number=number):
                async def one():
                    etag = await client.upload_part(bucket, key, upload_id, number, data)
                    parts[number - 1] = (number, etag)
                return defer.Deferred.fromCoroutine(one())
            chain[0] = chain[0].addCallback(send)
            if final:
                break

    def write(data):
        pending.append(data)
        cut(False)

    await treq.collect(response, write)
    cut(True)
    await chain[0]
    await client.complete_multipart_upload(bucket, key, upload_id, parts)
    print(f"SECONDS {time.monotonic() - started:.3f}", flush=True)

task_reactor = []

async def main(reactor, what, endpoint, region, ak, sk, bucket, *rest):
    task_reactor.append(reactor)
    client = S3Client(endpoint, region, ak, sk, reactor=reactor, timeout=120)
    try:
        if what == "seed":
            await seed(client, bucket, rest)
        else:
            await copy(client, bucket, rest[0], rest[1])
    finally:
        await client.close()

task.react(lambda reactor: defer.ensureDeferred(main(reactor, *sys.argv[1:])))
"""


#: The issue's own baseline (#10), run in a process of its own: `connections` keep-alive GETs
#: of one URL in a loop with treq for `seconds`, each body counted and dropped as it streams.
TREQ_LOAD_SCRIPT = """
import sys, time
import treq
from twisted.internet import defer, task
from twisted.web.client import HTTPConnectionPool

async def main(reactor, url, seconds, connections):
    seconds, connections = float(seconds), int(connections)
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = connections
    pool.retryAutomatically = False
    counts = {"requests": 0, "bytes": 0, "errors": 0}
    latencies = []

    def count(data):
        counts["bytes"] += len(data)

    async def worker(stop, once=False):
        while once or time.monotonic() < stop:
            once = False
            began = time.perf_counter()
            try:
                response = await treq.get(url, pool=pool, unbuffered=True, persistent=True)
                await treq.collect(response, count)
            except Exception:
                counts["errors"] += 1
                continue
            latencies.append(time.perf_counter() - began)
            counts["requests"] += 1
            counts["errors"] += response.code != 200

    # One unmeasured round trip per connection, so no handshake is timed.
    await defer.gatherResults(
        [defer.ensureDeferred(worker(0, once=True)) for _ in range(connections)]
    )
    counts.update(requests=0, bytes=0, errors=0)
    latencies.clear()
    started = time.monotonic()
    await defer.gatherResults(
        [defer.ensureDeferred(worker(started + seconds)) for _ in range(connections)]
    )
    elapsed = time.monotonic() - started
    await pool.closeCachedConnections()
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000 if latencies else 0.0
    p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0.0
    print(f"RESULT {counts['requests'] / elapsed} {counts['bytes'] / elapsed / 2**20} "
          f"{p50} {p99} {counts['errors']}", flush=True)

task.react(lambda reactor: defer.ensureDeferred(main(reactor, *sys.argv[1:])))
"""


def treq_load(url: str, seconds: float, connections: int, cwd: Path) -> LoadResult:
    """Load `url` with TREQ_LOAD_SCRIPT: the Python client #10 measures both sides with."""
    out = subprocess.run(
        [sys.executable, "-c", TREQ_LOAD_SCRIPT, url, str(seconds), str(connections)],
        capture_output=True, text=True, env=env(), cwd=cwd, check=True,
        timeout=seconds + 120,
    ).stdout  # fmt: skip
    rps, mbps, p50, p99, errors = out.split("RESULT")[1].split()
    return LoadResult(float(rps), float(mbps), float(p50), float(p99), int(errors))


def s3_script(store: SeaweedFS, what: str, *args: str, cwd: Path) -> str:
    """Run S3_SCRIPT (`seed` or `copy`) against the store; returns its output."""
    return subprocess.run(
        [sys.executable, "-c", S3_SCRIPT % {"part": PART}, what, store.endpoint, store.region,
         store.access_key, store.secret_key, BUCKET, *args],
        capture_output=True, text=True, env=env(), cwd=cwd, check=True, timeout=600,
    ).stdout  # fmt: skip


def presign(store: SeaweedFS, method: str, key: str) -> str:
    """A pre-signed URL (SigV4 in the query, valid an hour), so wrk can load the store."""
    auth = S3SigV4QueryAuth(
        Credentials(store.access_key, store.secret_key), "s3", store.region, expires=3600
    )
    request = AWSRequest(method=method, url=f"{store.endpoint}/{BUCKET}/{key}")
    auth.add_auth(request)
    return str(request.url)


def store_has(url: str, size: int) -> bool:
    """Whether a HEAD of the pre-signed `url` says the object is there with `size` bytes."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.request("HEAD", f"{parts.path}?{parts.query}")
        response = conn.getresponse()
        response.read()
        return response.status == 200 and response.getheader("Content-Length") == str(size)
    finally:
        conn.close()


def start_node(name: str, work: Path, store: SeaweedFS, redis: RedisServer, origin: int) -> Server:
    """One twistd cosedge node on the shared store, logging to `<name>.log` as in
    production."""
    folder = work / name
    folder.mkdir()
    config = folder / "edge.yaml"
    config.write_text(
        edge_config(
            folder / "data",
            f"access_log: {folder / 'access.log'}\n"
            f"buckets:\n  {BUCKET}:\n    origin: {{address: '127.0.0.1:{origin}'}}\n"
            "store:\n  type: s3\n"
            f"  endpoint: {store.endpoint}\n  region: {store.region}\n"
            f"  access_key_id: {store.access_key}\n  secret_access_key: {store.secret_key}\n"
            f"coordination:\n  redis: '{redis.url}'\n",
        )
    )
    log = folder / "edge.log"
    argv = [*TWISTD, "--logfile", str(log), "cosedge", "--config", str(config)]
    return start_logging_to(argv, log, EDGE_READY, folder)


#: nginx in front of the store, the way an operator would put a C proxy there: keep-alive
#: connections to the store and `proxy_buffering off`, which relays each read as it comes
#: (with buffering on it was about 0.75x of this, here).
STORE_PROXY = """
        location / {{
            proxy_pass http://store;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host {host};
            proxy_buffering off;
            proxy_buffer_size 64k;
            proxy_buffers 8 64k;
        }}"""


def start_store_proxy(work: Path, store: SeaweedFS) -> Server | None:
    """nginx proxying to the store (pre-signed URLs pass through: same path, same Host);
    None without nginx."""
    host = urlsplit(store.endpoint).netloc
    upstream = f"    upstream store {{ server {host}; keepalive 64; }}"
    return start_nginx(work, STORE_PROXY.format(host=host), upstream)


def wait_hit(port: int, key: str, timeout: float = 20) -> None:
    """Wait until the node serves `key` from the store (it may still be making the bucket)."""
    deadline = time.monotonic() + timeout
    status = 0
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", f"/{BUCKET}/{key}")
        response = conn.getresponse()
        response.read()
        conn.close()
        status = response.status
        if status == 200:
            return
        time.sleep(0.2)
    raise RuntimeError(f"node on {port} answers {status} for {key}")


def copy_with_edge(node: Server, key: str, head_url: str, size: int) -> tuple[float, int]:
    """Time a miss on `key` until the store has it; returns seconds and peak RSS growth
    (KiB)."""
    pid = node.proc.pid
    before = rss_kib(pid)
    reset_peak(pid)
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
    conn.request("GET", f"/{BUCKET}/{key}")
    status = conn.getresponse().status
    conn.close()
    assert status == 302, f"miss answered {status}"
    sampled = before
    while not store_has(head_url, size):
        if time.monotonic() - started > 600:
            raise RuntimeError("copy did not finish in 10 minutes")
        sampled = max(sampled, rss_kib(pid))
        time.sleep(0.02)
    seconds = time.monotonic() - started
    return seconds, max(rss_kib(pid, "VmHWM"), sampled) - before


def run_nodes(
    a: Server, b: Server, args: argparse.Namespace, nodes_runs: dict[str, list[LoadResult]]
) -> None:
    """One round of 4 KiB hits: node a alone, then a and b loaded at once (summed)."""
    url_a = f"http://127.0.0.1:{a.port}/{BUCKET}/4KiB.bin"
    url_b = f"http://127.0.0.1:{b.port}/{BUCKET}/4KiB.bin"
    nodes_runs.setdefault("1 node", []).append(
        load(url_a, args.seconds, args.connections, threads=2)
    )
    half = max(1, args.connections // 2)
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(load, u, args.seconds, half, "GET", 1) for u in (url_a, url_b)]
        both = [run.result() for run in runs]
    nodes_runs.setdefault("2 nodes", []).append(summed(both))


def summed(results: list[LoadResult]) -> LoadResult:
    return LoadResult(
        sum(r.requests_per_s for r in results),
        sum(r.mb_per_s for r in results),
        max(r.p50_ms for r in results),
        max(r.p99_ms for r in results),
        sum(r.errors for r in results),
    )


ERROR_WORDS = re.compile(rb"Traceback|Unhandled|#critical|#error|#warn|unavailable|unreachable")


def log_problems(folder: Path) -> list[str]:
    """Lines of a node's log (`edge.log` and the files twistd rotated it into at 1 MB) that
    look like trouble: tracebacks, warnings, 5xx access lines."""
    found = []
    for path in sorted(folder.glob("edge.log*")):
        for line in path.read_bytes().splitlines():
            if ERROR_WORDS.search(line) or re.search(rb'" (5\d\d) ', line):
                found.append(line.decode(errors="replace")[:200])
    return found


def _message(line: str) -> str:
    """A log line without its timestamp, so equal messages can be counted together."""
    line = line.strip()
    return line.split(" ", 1)[1] if re.match(r"\d{4}-", line) else line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="default 3 (--quick: 1)")
    parser.add_argument("--seconds", type=float, default=None, help="default 5 (--quick: 2)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--size", type=int, default=None, help="MiB copied from the origin (256; --quick: 16)"
    )
    parser.add_argument("--logs", type=Path, help="copy the nodes' logs into this folder")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 short round")
    parser.add_argument(
        "--only", choices=PARTS, action="append", help="run only these parts (repeatable)"
    )
    args = parser.parse_args()
    quick = args.quick
    args.rounds = args.rounds if args.rounds is not None else (1 if quick else 3)
    args.seconds = args.seconds if args.seconds is not None else (2 if quick else 5)
    args.size = args.size if args.size is not None else (16 if quick else 256)
    args.only = args.only or list(PARTS)
    size = args.size * 2**20

    hits: dict[tuple[str, str, str], list[LoadResult]] = {}
    hit_cpu: dict[tuple[str, str, str], list[float]] = {}
    nodes_runs: dict[str, list[LoadResult]] = {}
    edge_copy: list[float] = []
    plain_copy: list[float] = []
    growth: list[int] = []
    problems: dict[str, list[str]] = {}

    with tempfile.TemporaryDirectory(prefix="cosedge-bench-s3-") as tmp:
        work = Path(tmp)
        origin_dir = work / "origin"
        origin_dir.mkdir()
        write_big_file(origin_dir / "big.bin", args.size)
        for n in range(args.rounds):
            os.link(origin_dir / "big.bin", origin_dir / f"big-{n}.bin")

        started: list[Server] = []
        store: SeaweedFS | None = None
        redis: RedisServer | None = None
        try:
            store = start_seaweedfs(work / "seaweedfs")
            redis = RedisServer(work / "redis")
            redis.start()
            origin = start_twistd_web(work, "--path", str(origin_dir), access_file=True)
            started.append(origin)
            s3_script(store, "seed", *(f"{n}.bin={s}" for n, s in SIZES.items()), cwd=work)
            a = start_node("a", work, store, redis, origin.port)
            started.append(a)
            b = start_node("b", work, store, redis, origin.port)
            started.append(b)
            for node in (a, b):
                for name in SIZES:
                    wait_hit(node.port, f"{name}.bin")

            plain = {name: presign(store, "GET", f"{name}.bin") for name in SIZES}
            proxy = start_store_proxy(work / "nginx", store)
            #: whose CPU each hit is charged to: the edge's, or nginx's (master and worker)
            proxies = {"cosedge": a.proc.pid}
            if proxy is not None:
                started.append(proxy)
                proxies["nginx"] = proxy.proc.pid
            for r in range(args.rounds):
                for name in SIZES if "hits" in args.only else ():
                    edge_url = f"http://127.0.0.1:{a.port}/{BUCKET}/{name}.bin"
                    contenders = [
                        ("wrk", "SeaweedFS", plain[name]),
                        ("wrk", "cosedge", edge_url),
                        ("treq", "SeaweedFS", plain[name]),
                        ("treq", "cosedge", edge_url),
                    ]
                    if proxy is not None:  # the same pre-signed path, through nginx
                        proxied = (
                            f"http://127.0.0.1:{proxy.port}{plain[name][len(store.endpoint) :]}"
                        )
                        contenders[2:2] = [("wrk", "nginx", proxied)]
                        contenders.append(("treq", "nginx", proxied))
                    if r % 2:  # who goes first alternates round by round
                        contenders.reverse()
                    for client, label, url in contenders:
                        pid = proxies.get(label)
                        used = cpu_seconds(pid) if pid is not None else 0.0
                        if client == "wrk":
                            result = load(url, args.seconds, args.connections)
                        else:
                            result = treq_load(url, args.seconds, args.connections, work)
                        hits.setdefault((name, client, label), []).append(result)
                        if pid is not None:
                            used = cpu_seconds(pid) - used
                            count = max(1.0, result.requests_per_s * args.seconds)
                            cpu = hit_cpu.setdefault((name, client, label), [])
                            cpu.append(1000 * used / count)
                if "nodes" in args.only:
                    run_nodes(a, b, args, nodes_runs)
                if "copy" in args.only:
                    out = s3_script(
                        store, "copy", f"plain-{r}.bin", f"http://127.0.0.1:{origin.port}/big.bin",
                        cwd=work,
                    )  # fmt: skip
                    plain_copy.append(float(out.split("SECONDS")[1]))
                    key = f"big-{r}.bin"
                    seconds, grew = copy_with_edge(a, key, presign(store, "HEAD", key), size)
                    edge_copy.append(seconds)
                    growth.append(grew)
        finally:
            for server in reversed(started):
                server.stop()
            if redis is not None:
                redis.stop()
            if store is not None:
                store.stop()
        for name in ("a", "b"):
            problems[name] = log_problems(work / name)
            if args.logs is not None:
                args.logs.mkdir(parents=True, exist_ok=True)
                for path in (work / name).glob("edge.log*"):
                    shutil.copy(path, args.logs / f"{name}-{path.name}")

    report(args, hits, hit_cpu, nodes_runs, plain_copy, edge_copy, growth, problems)


def report(
    args: argparse.Namespace,
    hits: dict[tuple[str, str, str], list[LoadResult]],
    hit_cpu: dict[tuple[str, str, str], list[float]],
    nodes_runs: dict[str, list[LoadResult]],
    plain_copy: list[float],
    edge_copy: list[float],
    growth: list[int],
    problems: dict[str, list[str]],
) -> None:
    client = "wrk" if have_wrk() else "built-in client"
    print(
        f"s3 store (SeaweedFS weed mini) + Redis: {args.rounds} alternating rounds x "
        f"{args.seconds:g}s, {args.connections} keep-alive connections, {client}"
    )
    header = f"{'object':<7}{'server':<26}{'req/s':>10}{'MB/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
    print(header + f"{'errors':>8}{'ratio':>9}")

    def row(name: str, label: str, runs: list[LoadResult], base: float) -> None:
        rps = median([r.requests_per_s for r in runs])
        print(
            f"{name:<7}{label:<26}{rps:>10,.0f}{median([r.mb_per_s for r in runs]):>9.1f}"
            f"{median([r.p50_ms for r in runs]):>9.2f}{median([r.p99_ms for r in runs]):>9.2f}"
            f"{sum(r.errors for r in runs):>8}{rps / base:>8.2f}x"
        )

    if hits:
        wrk_name = client
        for name in SIZES:
            base = median([r.requests_per_s for r in hits[(name, "treq", "SeaweedFS")]])
            row(name, "treq -> SeaweedFS", hits[(name, "treq", "SeaweedFS")], base)
            row(name, "treq -> cosedge (s3)", hits[(name, "treq", "cosedge")], base)
            if (name, "treq", "nginx") in hits:
                row(name, "treq -> nginx proxy_pass", hits[(name, "treq", "nginx")], base)
        print("goal (#10): 1 MiB treq -> cosedge >= 0.8x treq -> SeaweedFS (pre-signed URL)")
        for name in SIZES:
            if (name, "treq", "nginx") in hits:
                nginx = median([r.requests_per_s for r in hits[(name, "treq", "nginx")]])
                edge = median([r.requests_per_s for r in hits[(name, "treq", "cosedge")]])
                print(f"information: {name} treq -> cosedge = {edge / nginx:.2f}x nginx proxy_pass")
        for name in SIZES:
            base = median([r.requests_per_s for r in hits[(name, "wrk", "SeaweedFS")]])
            row(name, f"{wrk_name} -> SeaweedFS", hits[(name, "wrk", "SeaweedFS")], base)
            row(name, f"{wrk_name} -> cosedge (s3)", hits[(name, "wrk", "cosedge")], base)
            if (name, "wrk", "nginx") in hits:
                row(name, f"{wrk_name} -> nginx proxy_pass", hits[(name, "wrk", "nginx")], base)
        print(f"information: {wrk_name} straight at the store is the ceiling, not the goal")
        print("the proxy's own CPU per hit (user + system, median of rounds; steadier than req/s):")
        for name in SIZES:
            for client in ("treq", "wrk"):
                spent = [
                    f"{label} {median(values):.2f} ms"
                    for (size, by, label), values in hit_cpu.items()
                    if size == name and by == client
                ]
                print(f"  {name} {client}: " + ", ".join(spent))
    if nodes_runs:
        base = median([r.requests_per_s for r in nodes_runs["1 node"]])
        row("4KiB", "cosedge, 1 node", nodes_runs["1 node"], base)
        row("4KiB", "cosedge, 2 nodes (summed)", nodes_runs["2 nodes"], base)
        print("2 nodes vs 1 node: reported (the nodes share the machine's cores)")
    if not edge_copy:
        report_problems(problems)
        return

    mib = args.size
    plain = median(plain_copy)
    edge = median(edge_copy)
    print(f"copy: {mib} MiB from a loopback twistd web origin into the store")
    print(f"  treq GET -> S3 multipart (plain)  {plain:7.2f}s {mib / plain:8.1f} MiB/s   1.00x")
    ratio = plain / edge
    print(f"  cosedge miss -> in the store      {edge:7.2f}s {mib / edge:8.1f} MiB/s {ratio:6.2f}x")
    print(f"  edge peak RSS growth during the copy: {max(growth) / 1024:.1f} MiB (max of rounds)")
    print("  goals: >= 0.8x the plain copy; RSS growth < 64 MiB")
    report_problems(problems)


def report_problems(problems: dict[str, list[str]]) -> None:
    for name, lines in problems.items():
        kinds = Counter(re.sub(r"\d+", "N", _message(line)) for line in lines)
        print(f"node {name} log: {len(lines)} lines that look like trouble")
        for kind, count in kinds.most_common(6):
            print(f"  {count:6} x {kind}")


if __name__ == "__main__":
    main()
