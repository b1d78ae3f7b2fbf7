"""kill -9 of a real `twistd cosedge` process in the middle of an origin copy.

The origin (in the test's reactor) trickles a large body slowly, so the copy is certainly
in progress, with a temp file on disk, when the edge is killed. Properties: the crash leaves
no object at the key (only a temp file and the key's lock file); the restarted edge, same
config, sweeps the temp file before it listens; the lock file the dead process held does
not block the next copy (the kernel dropped its flock); and once the origin is healthy the
next miss copies cleanly: the object appears with exactly the origin's bytes and is served
as a 200 hit with the MD5 ETag, and nothing is left in `.cosedge/tmp` or `.cosedge/locks`.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread

from edge.testing.process import OutputDrain, start_twistd, wait_ready
from tests.integration.conftest import BUCKET, request, wait_until

# Twisted's reactor stubs are stricter than its runtime (factories, addresses).
reactor: Any = _reactor

BODY = os.urandom(8 * 1024 * 1024)
KEY = "video/big.bin"
TRICKLE = 16 * 1024  # bytes per tick while slow: 8 MiB would take ~25 s


class _TrickleProtocol(Protocol):
    transport: Any

    """Answers any GET with BODY and its true Content-Length, at TRICKLE bytes per 50 ms
    while `factory.slow`, all at once otherwise."""

    factory: Any

    def connectionMade(self) -> None:
        self.factory.open.add(self)
        self._buffer = b""
        self._sender: LoopingCall | None = None
        self._sent = 0

    def dataReceived(self, data: bytes) -> None:
        if self._buffer is None:
            return
        self._buffer += data
        if b"\r\n\r\n" not in self._buffer:
            return
        self.factory.requests.append(self._buffer.split(b"\r\n", 1)[0].decode())
        self._buffer = None  # type: ignore[assignment]
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\nConnection: close\r\n\r\n"
        self.transport.write(head.encode())
        if not self.factory.slow:
            self.transport.write(BODY)
            self.transport.loseConnection()
            return
        self._sender = LoopingCall(self._tick)
        self._sender.start(0.05)

    def _tick(self) -> None:
        chunk = BODY[self._sent : self._sent + TRICKLE]
        self._sent += len(chunk)
        self.transport.write(chunk)
        if self._sent >= len(BODY):
            assert self._sender is not None
            self._sender.stop()
            self._sender = None
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if self._sender is not None and self._sender.running:
            self._sender.stop()
        self.factory.open.discard(self)


def parts(data_dir: Path) -> list[Path]:
    tmp = data_dir / ".cosedge" / "tmp"
    return sorted(tmp.iterdir()) if tmp.exists() else []


def locks(data_dir: Path) -> list[Path]:
    folder = data_dir / ".cosedge" / "locks"
    return sorted(folder.iterdir()) if folder.exists() else []


async def start_edge(config: Path, cwd: Path) -> tuple[subprocess.Popen[bytes], int, OutputDrain]:
    proc = start_twistd("--config", str(config), cwd=cwd)
    # wait_ready blocks; in a thread, so the origin in this reactor keeps serving meanwhile.
    port, output = await deferToThread(wait_ready, proc)
    return proc, port, output


@pytest_twisted.ensureDeferred
async def test_kill_9_mid_copy_then_restart_sweeps_and_copies_cleanly(tmp_path: Path) -> None:
    """See the module docstring: crash mid-copy, restart, sweep, clean copy."""
    factory = Factory.forProtocol(_TrickleProtocol)
    factory.slow = True  # type: ignore[attr-defined]
    factory.open = set()  # type: ignore[attr-defined]
    factory.requests = []  # type: ignore[attr-defined]
    listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
    address = f"127.0.0.1:{listening.getHost().port}"
    data_dir = tmp_path / "data"
    config = tmp_path / "edge.yaml"
    config.write_text(
        "listen: 'tcp:0:interface=127.0.0.1'\n"
        f"data_dir: {data_dir}\n"
        "extra_origin_cidrs: ['127.0.0.1/32']\n"
        f"buckets:\n  {BUCKET}:\n    origin: {{address: '{address}'}}\n"
    )
    target = data_dir / BUCKET / KEY
    procs: list[subprocess.Popen[bytes]] = []
    try:
        first, port, _ = await start_edge(config, tmp_path)
        procs.append(first)
        miss = await request(port, f"/{BUCKET}/{KEY}", host="127.0.0.1")
        assert miss.status == 302

        # In progress: a temp file that has some, but far from all, of the body.
        def copying() -> bool:
            found = parts(data_dir)
            return len(found) == 1 and 64 * 1024 <= found[0].stat().st_size

        await wait_until(copying, timeout=15)
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL
        left = parts(data_dir)
        assert len(left) == 1 and left[0].suffix == ".part"
        assert left[0].stat().st_size < len(BODY)
        assert not target.exists()
        assert not target.parent.exists() or list(target.parent.iterdir()) == []
        assert len(locks(data_dir)) == 1  # the dead process's lock file stays behind
        # The kernel closed the dead edge's socket: the origin sees its connection go.
        await wait_until(lambda: not factory.open, timeout=5)  # type: ignore[attr-defined]

        factory.slow = False  # type: ignore[attr-defined]  # healthy from now on
        second, port, output = await start_edge(config, tmp_path)
        procs.append(second)
        assert parts(data_dir) == []  # swept before the listener came up
        assert "Removed 1 stale temporary file" in output.text()
        assert not target.exists()

        again = await request(port, f"/{BUCKET}/{KEY}", host="127.0.0.1")
        assert again.status == 302
        await wait_until(target.exists, timeout=20)
        assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(BODY).digest()
        hit = await request(port, f"/{BUCKET}/{KEY}", host="127.0.0.1")
        assert hit.status == 200
        assert hit.body == BODY
        assert hit.header("etag") == f'"{hashlib.md5(BODY).hexdigest()}"'
        await wait_until(lambda: parts(data_dir) == [] and locks(data_dir) == [], timeout=5)
        assert len(factory.requests) == 2  # type: ignore[attr-defined]  # one per copy
        assert "Traceback" not in output.text()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                await deferToThread(proc.wait, 20)
        for protocol in list(factory.open):  # type: ignore[attr-defined]
            protocol.transport.abortConnection()
        await listening.stopListening()
