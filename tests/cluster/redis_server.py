"""A real `redis-server` on a free loopback port, for the cluster tests.

Real because the point of these tests is how the coordinator behaves against Redis itself:
NX/PX semantics, Lua scripts, pub/sub replies, and what a dead or restarted server looks
like on the wire. `stop()` and `start()` keep the port so a test can stage an outage and
the recovery after it.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

_MISSING = (
    "redis-server is not installed: the cluster tests need a real Redis "
    "(Debian: apt-get install redis-server)"
)


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One `redis-server` process: no persistence, bound to 127.0.0.1 only."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(_MISSING, pytrace=False)
        self.binary = binary
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server on its port and return once it answers PING."""
        assert self.process is None, "already running"
        self.directory.mkdir(parents=True, exist_ok=True)
        # The child gets its own copy of the descriptor; the parent's closes with the block.
        with open(self.directory / "redis.log", "ab") as log:
            options = {
                "--port": str(self.port),
                "--bind": "127.0.0.1",
                "--save": "",
                "--appendonly": "no",
                "--dir": str(self.directory),
            }
            self.process = subprocess.Popen(
                [self.binary, *(word for option in options.items() for word in option)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if self._pong():
                return
            time.sleep(0.05)
        self.stop()
        text = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
        pytest.fail(f"redis-server on port {self.port} did not answer PING:\n{text}")

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server by its PID (SIGTERM, then SIGKILL) and wait for it to exit."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # in case a test paused it
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): it keeps its port but answers nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Undo `pause`."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None

    def cli(self, *args: str) -> str:
        """Run one command with `redis-cli` (independent of the code under test)."""
        cli = shutil.which("redis-cli")
        if cli is None:
            pytest.fail("redis-cli is not installed (Debian: apt-get install redis-tools)")
        done = subprocess.run(
            [cli, "-h", "127.0.0.1", "-p", str(self.port), "--raw", *args],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return done.stdout.strip()
