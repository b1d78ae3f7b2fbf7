"""kill -9 in the middle of a copy: no partial object, the temp file is swept at the next
start, and the next miss copies cleanly. A real `twistd cosedge` process, a real origin."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor

from edge.testing import FakeOrigin
from tests.integration.conftest import BUCKET, request, wait_until
from tests.process import start_twistd, wait_ready

BODY = bytes(range(256)) * 4096  # 1 MiB


def parts(data_dir: Path) -> list[Path]:
    return list((data_dir / ".cosedge" / "tmp").glob("*.part"))


@pytest_twisted.ensureDeferred
async def test_kill_9_mid_copy_leaves_nothing_and_recovers(tmp_path):
    origin = FakeOrigin(reactor)
    listening = reactor.listenTCP(0, origin.factory(), interface="127.0.0.1")
    address = f"127.0.0.1:{listening.getHost().port}"
    data_dir = tmp_path / "data"
    config = tmp_path / "edge.yaml"
    config.write_text(
        "listen: 'tcp:0:interface=127.0.0.1'\n"
        f"data_dir: {data_dir}\n"
        "extra_origin_cidrs: ['127.0.0.1/32']\n"
        f"buckets:\n  {BUCKET}:\n    origin: {{address: '{address}'}}\n"
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # The body stalls after 64 KiB, so the copy is certainly in progress when killed.
        origin.serve("/big.bin", BODY, stall_after=64 * 1024)
        first = start_twistd("--config", str(config), cwd=tmp_path)
        procs.append(first)
        port, _ = wait_ready(first)
        miss = await request(port, f"/{BUCKET}/big.bin", host="127.0.0.1")
        assert miss.status == 302
        await wait_until(lambda: bool(parts(data_dir)) and parts(data_dir)[0].stat().st_size > 0)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert not (data_dir / BUCKET / "big.bin").exists()
        assert len(parts(data_dir)) == 1  # what the crash left

        origin.drop_all()
        origin.serve("/big.bin", BODY)  # healthy now
        second = start_twistd("--config", str(config), cwd=tmp_path)
        procs.append(second)
        port, output = wait_ready(second)
        assert parts(data_dir) == []  # swept at start-up
        assert "Removed 1 stale temporary file" in output.text()
        again = await request(port, f"/{BUCKET}/big.bin", host="127.0.0.1")
        assert again.status == 302
        target = data_dir / BUCKET / "big.bin"
        await wait_until(lambda: target.exists(), timeout=20)
        assert target.read_bytes() == BODY
        hit = await request(port, f"/{BUCKET}/big.bin", host="127.0.0.1")
        assert hit.status == 200 and hit.body == BODY
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=20)
        origin.drop_all()
        await listening.stopListening()
