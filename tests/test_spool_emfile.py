"""EMFILE when a body's spool file is opened, on a real `twistd cosedge` process whose file
table is made small with `setrlimit(RLIMIT_NOFILE)` and then filled with idle connections:
the upload is answered in COS XML, not dropped with Twisted's "Unhandled Error"."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.api.signature import sign
from edge.testing.process import twistd_env, wait_ready

BUCKET = "emfile-1250000000"
LIMIT = 64


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to count fds")
def test_emfile_opening_the_spool_answers_503_xml(tmp_path):
    """With one file descriptor left, a signed PUT's connection takes it and the spool file
    cannot be opened (EMFILE): the edge answers 503 ServiceUnavailable in COS XML from the
    request's head (no 100 Continue), leaves no temp file, and serves the next request
    once descriptors are free again."""
    config = tmp_path / "c.yaml"
    config.write_text(
        "listen: 'tcp:0:interface=127.0.0.1'\n"
        f"data_dir: {tmp_path / 'data'}\n"
        f"buckets:\n  {BUCKET}: {{}}\n"
        "credentials:\n  - {secret_id: AKIDemfile, secret_key: emfile}\n"
    )
    code = (
        "import resource; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({LIMIT}, {LIMIT})); "
        "from twisted.scripts.twistd import run; run()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "-n", "--pidfile=", "cosedge", "--config", str(config)],
        cwd=tmp_path,
        env=twistd_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    idle: list[socket.socket] = []
    try:
        port, output = wait_ready(proc)
        time.sleep(0.3)
        deadline = time.monotonic() + 20
        while _open_fds(proc.pid) < LIMIT - 1 and time.monotonic() < deadline:
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            time.sleep(0.02)
        assert _open_fds(proc.pid) == LIMIT - 1, _open_fds(proc.pid)
        auth = sign("AKIDemfile", "emfile", "PUT", f"/{BUCKET}/k.bin", {}, {})
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                f"PUT /{BUCKET}/k.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n"
                "Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n".encode()
            )
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
        assert b"100 Continue" not in response
        assert response.startswith(b"HTTP/1.1 503"), response
        assert b"<Code>ServiceUnavailable</Code>" in response
        assert list((tmp_path / "data" / ".cosedge" / "tmp").iterdir()) == []
        for s in idle:
            s.close()
        idle.clear()
        time.sleep(0.3)
        body = b"x" * 1000
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                f"PUT /{BUCKET}/k.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n"
                "Content-Length: 1000\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            again = b""
            while chunk := sock.recv(65536):
                again += chunk
        assert again.startswith(b"HTTP/1.1 200"), again
    finally:
        for s in idle:
            s.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    log = output.finish()
    assert "Too many open files" in log
    assert "Unhandled Error" not in log
