"""Shared by the benchmarks: start servers as separate processes, drive load, report.

Every contender runs as its own process on 127.0.0.1 and is driven by the same client, and
the benchmarks alternate contenders round by round: these machines are shared and noisy, so
only ratios measured within one run mean anything.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# The checkout's edge, not an installed copy: a benchmark measures the code beside it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.testing.process import READY, TWISTD, twistd_env  # noqa: E402

__all__ = ["READY", "TWISTD", "twistd_env"]  # re-exported for the benchmarks

REPO = Path(__file__).resolve().parents[1]
BUCKET = "bench-1250000000"


env = twistd_env  # the edge (and the given folders) first on a child's import path


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: list[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(argv: Sequence[str], ready: re.Pattern[bytes], cwd: Path, timeout: float = 30) -> Server:
    """Start a server process (modules in `cwd` importable) and wait for the log line that
    names its port."""
    proc = subprocess.Popen(
        list(argv), cwd=cwd, env=env(cwd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    lines: list[bytes] = []
    found: list[int] = []
    got = threading.Event()

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if len(lines) < 2000:
                lines.append(line)
            if not found:
                match = ready.search(line)
                if match:
                    found.append(int(match.group(1)))
                    got.set()
        got.set()

    threading.Thread(target=drain, daemon=True).start()
    if not got.wait(timeout) or not found:
        proc.kill()
        raise RuntimeError(f"{argv[0]} did not start:\n" + b"".join(lines).decode(errors="replace"))
    return Server(proc, found[0], lines)


def start_logging_to(
    argv: Sequence[str], logfile: Path, ready: re.Pattern[bytes], cwd: Path, timeout: float = 30
) -> Server:
    """Start a server that logs to `logfile` (twistd `--logfile`, as in production: no pipe
    to this process) and wait for the line naming its port to appear there."""
    proc = subprocess.Popen(
        list(argv), cwd=cwd, env=env(cwd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        text = logfile.read_bytes() if logfile.exists() else b""
        match = ready.search(text)
        if match:
            return Server(proc, int(match.group(1)), [])
        time.sleep(0.1)
    proc.kill()
    text = logfile.read_bytes() if logfile.exists() else b""
    raise RuntimeError(f"{argv[0]} did not start:\n" + text.decode(errors="replace"))


EDGE_READY = READY


NGINX_CONF = """
{user}worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log {work}/nginx-access.log combined buffer=64k flush=1s;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {work}/nginx-tmp;
    proxy_temp_path {work}/nginx-tmp;
    fastcgi_temp_path {work}/nginx-tmp;
    uwsgi_temp_path {work}/nginx-tmp;
    scgi_temp_path {work}/nginx-tmp;
{http}
    server {{
        listen 127.0.0.1:{port};
        {server}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_nginx(work: Path, server: str, http: str = "") -> Server | None:
    """nginx (one worker, a buffered access log, sendfile on) with `server` as the body of
    its one server block and `http` added to the http block, its files in `work` (a folder
    per call); None when nginx is not installed, an error when it is but does not start."""
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )
    if nginx is None:
        return None
    (work / "nginx-tmp").mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = work / "nginx.conf"
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(NGINX_CONF.format(user=user, work=work, port=port, server=server, http=http))
    errors = work / "nginx-stderr.txt"
    with open(errors, "wb") as stderr:
        proc = subprocess.Popen(
            [nginx, "-c", str(conf), "-p", str(work)], stdout=subprocess.DEVNULL, stderr=stderr
        )
    for _ in range(100):
        if proc.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return Server(proc, port, [])
        except OSError:
            time.sleep(0.1)
    proc.kill()
    # Installed but not starting is a broken benchmark, not a missing contender.
    raise RuntimeError(f"nginx did not start ({conf}): {errors.read_text().strip()}")


def start_edge(workdir: Path, config: str) -> Server:
    path = workdir / "edge.yaml"
    path.write_text(config)
    return start([*TWISTD, "cosedge", "--config", str(path)], EDGE_READY, workdir)


def edge_config(data_dir: Path, extra: str = "") -> str:
    return (
        "listen: 'tcp:0:interface=127.0.0.1'\n"
        f"data_dir: {data_dir}\n"
        "extra_origin_cidrs: ['127.0.0.1/32']\n" + extra
    )


def start_twistd_web(
    workdir: Path,
    *args: str,
    access_file: bool = False,
    prefix: Sequence[str] = (),
    timeout: float = 30,
) -> Server:
    """`twistd web`. By default its access lines go through twistd's log, the same path as
    cosedge's access events; with `access_file` they go to a file of their own
    (`--logfile`), which skips the log observers. `prefix` runs it under another program
    (valgrind)."""
    extra = ["--logfile", str(workdir / "baseline-access.log")] if access_file else []
    return start(
        [*prefix, *TWISTD, "web", "--listen", "tcp:0:interface=127.0.0.1", *extra, *args],
        re.compile(rb"Site starting on (\d+)"),
        workdir,
        timeout,
    )


def start_static_file(folder: Path, workdir: Path, access_file: bool = False) -> Server:
    """Plain `twisted.web.static.File` on the same folder, as `twistd web` serves it."""
    return start_twistd_web(workdir, "--path", str(folder), access_file=access_file)


def start_script(
    code: str, workdir: Path, prefix: Sequence[str] = (), timeout: float = 30
) -> Server:
    """A Python snippet that prints `PORT <n>` once it listens (`prefix`: see
    `start_twistd_web`)."""
    argv = [*prefix, sys.executable, "-c", code]
    return start(argv, re.compile(rb"PORT (\d+)"), workdir, timeout)


@dataclass
class LoadResult:
    requests_per_s: float
    mb_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0  # answered in the run (wrk's count; the built-in client's)


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def _split(text: str) -> tuple[float, str]:
    match = re.fullmatch(r"([\d.]+)([a-zA-Z]+)", text.strip())
    if match is None:
        raise ValueError(f"cannot read wrk figure {text!r}")
    return float(match.group(1)), match.group(2)


def _ms(text: str) -> float:
    value, unit = _split(text)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def _mb(text: str) -> float:
    value, unit = _split(text)
    return value * {"B": 1 / 2**20, "KB": 1 / 1024, "MB": 1.0, "GB": 1024.0}[unit]


def wrk(
    url: str,
    seconds: float,
    connections: int,
    method: str = "GET",
    threads: int = 2,
    timeout: float | None = None,
) -> LoadResult:
    """wrk's figures for one run; `timeout`: seconds before wrk counts a request as an error
    (its own default is 2 s)."""
    script = None
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    if timeout is not None:
        args.append(f"--timeout={timeout:g}s")
    if method != "GET":
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write(f'wrk.method = "{method}"\n')
        script.close()
        args += ["-s", script.name]
    try:
        out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    finally:
        if script is not None:
            os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    transfer = re.search(r"Transfer/sec:\s+([\d.]+\w+)", out).group(1)  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+\w+)", out).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+\w+)", out).group(1)  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    count = int(errors.group(1)) if errors else 0
    if socket_errors:
        count += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return LoadResult(rps, _mb(transfer), _ms(p50), _ms(p99), count, done)


def builtin_load(url: str, seconds: float, connections: int, method: str = "GET") -> LoadResult:
    """Keep-alive clients on threads, for machines without wrk (slower: compare ratios)."""
    split = url.split("/", 3)
    host, port = split[2].split(":")
    path = "/" + split[3]
    stop = time.monotonic() + seconds
    latencies: list[float] = []
    sizes = [0]
    errors = [0]
    lock = threading.Lock()

    def client(_: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        mine: list[float] = []
        size = 0
        bad = 0
        while time.monotonic() < stop:
            started = time.perf_counter()
            conn.request(method, path)
            response = conn.getresponse()
            size += len(response.read())
            mine.append(time.perf_counter() - started)
            bad += response.status >= 400
        conn.close()
        with lock:
            latencies.extend(mine)
            sizes[0] += size
            errors[0] += bad

    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(client, range(connections)))
    latencies.sort()
    return LoadResult(
        len(latencies) / seconds,
        sizes[0] / seconds / 2**20,
        latencies[len(latencies) // 2] * 1000,
        latencies[int(len(latencies) * 0.99)] * 1000,
        errors[0],
        len(latencies),
    )


def load(
    url: str, seconds: float, connections: int, method: str = "GET", threads: int = 2
) -> LoadResult:
    if have_wrk():
        return wrk(url, seconds, connections, method, threads)
    return builtin_load(url, seconds, connections, method)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process and its live descendants (workers, nginx's
    worker) have used, from /proc: steadier than requests/s on a shared machine, whose
    speed drifts by tens of percent from one round to the next."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    pending.extend(int(child) for child in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited between the listing and the read
    return total


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    """Reset the process's peak RSS (VmHWM) to its current RSS, so a later `rss_kib(pid,
    "VmHWM")` is the peak of what came after (Linux; a no-op elsewhere)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def write_big_file(path: Path, mib: int) -> None:
    """A file of `mib` MiB of random bytes (one random MiB repeated: cheap to make, and
    neither compression nor deduplication is on any path measured)."""
    block = os.urandom(2**20)
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(block)
