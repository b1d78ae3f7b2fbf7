"""Running `twistd cosedge` as a real process from the tests, and talking to it."""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
READY = re.compile(rb"cosedge ready: listening on 127\.0\.0\.1:(\d+)")


def twistd_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def start_twistd(*args: str, cwd: Path) -> subprocess.Popen[bytes]:
    """`twistd -n --pidfile= cosedge ARGS` from this checkout, output captured."""
    return subprocess.Popen(
        # twisted.scripts.twistd has no __main__ guard; run() is what the `twistd` script calls
        [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            "cosedge",
            *args,
        ],
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
