"""Running `twistd cosedge` as a real process, and talking to it: for the tests and the
benchmarks alike (one copy of how an edge is started, found ready and read from)."""

from __future__ import annotations

import contextlib
import functools
import http.client
import http.server
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

# The folder holding the `edge` package: the checkout, or site-packages when installed.
REPO = Path(__file__).resolve().parents[2]
READY = re.compile(rb"cosedge ready: listening on 127\.0\.0\.1:(\d+)")
# twisted.scripts.twistd has no __main__ guard; run() is what the `twistd` script calls.
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile="]


def twistd_env(*paths: Path) -> dict[str, str]:
    """This environment, with this edge (and `paths`, say a benchmark's own modules)
    first on the import path of the child."""
    env = dict(os.environ)
    front = os.pathsep.join(str(p) for p in (REPO, *paths))
    env["PYTHONPATH"] = front + os.pathsep + env.get("PYTHONPATH", "")
    return env


def start_twistd(*args: str, cwd: Path, twistd_args: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """`twistd -n --pidfile= [TWISTD_ARGS] cosedge ARGS` from this checkout, output
    captured."""
    return subprocess.Popen(
        [*TWISTD, *twistd_args, "cosedge", *args],
        cwd=cwd,
        env=twistd_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


class OutputDrain:
    """Keeps reading a child's stdout so its log writes never block on a full pipe (an
    edge under a long test logs one access line per request), and keeps what it read."""

    def __init__(self, stream: object, already: bytes) -> None:
        self._stream = stream
        self._chunks = [already]
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        read = self._stream.read1  # type: ignore[attr-defined]
        while chunk := read(65536):
            with self._lock:
                self._chunks.append(chunk)

    def text(self) -> str:
        with self._lock:
            return b"".join(self._chunks).decode(errors="replace")

    def finish(self, timeout: float = 10) -> str:
        """All the output, once the process has exited and its pipe is drained."""
        self._thread.join(timeout)
        return self.text()


def wait_ready(proc: subprocess.Popen[bytes], timeout: float = 30) -> tuple[int, OutputDrain]:
    """Wait for the readiness log line; returns the bound port and a drain that keeps
    collecting the process's output from then on."""
    out = b""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        chunk = proc.stdout.read() or b""
        out += chunk
        match = READY.search(out)
        if match:
            os.set_blocking(proc.stdout.fileno(), True)
            return int(match.group(1)), OutputDrain(proc.stdout, out)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"twistd did not become ready:\n{out.decode(errors='replace')}")


def http_get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read()


def raw_request(
    port: int, method: str, path: str, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    """A request whose path and headers go out exactly as given (no normalising)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


@contextlib.contextmanager
def static_origin(folder: Path) -> Iterator[int]:
    """A plain-HTTP origin serving `folder` on 127.0.0.1 from a thread; yields its port.

    For tests whose edge is a separate process: the test's own reactor is not involved."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass  # the test's output is for the edge's log

    handler = functools.partial(Handler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def status_of(url: str) -> int:
    """The status of a GET, redirects not followed (a miss's 302 is what a test checks)."""
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code


def fd_table(pid: int | str = "self") -> dict[int, str]:
    """A process's open descriptors and what each points at (this process by default):
    leak checks compare it before and after."""
    table = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            table[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except FileNotFoundError:  # the listing's own descriptor, closed by now
            continue
    return table
