"""Running `twistd cosedge` as a real process from the tests, and talking to it."""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
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


def wait_ready(proc: subprocess.Popen[bytes], timeout: float = 30) -> tuple[int, bytes]:
    """Wait for the readiness log line; returns the bound port and the output so far."""
    out = b""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        chunk = proc.stdout.read() or b""
        out += chunk
        match = READY.search(out)
        if match:
            return int(match.group(1)), out
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
