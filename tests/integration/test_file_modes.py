"""Objects and folders the edge makes are world-readable whatever twistd's umask (daemon
mode sets 0077, which used to publish every copied object as 0600)."""

from __future__ import annotations

import signal
import stat
import time
from pathlib import Path

from edge.testing.process import start_twistd, static_origin, status_of, wait_ready

BUCKET = "b-1250000000"


def test_copied_objects_are_0644_and_their_folders_0755_under_umask_0077(tmp_path: Path):
    """With `twistd --umask 0077` (what daemon mode applies), a copy lands as 0644 in a new
    folder 0755, and a bucket folder made at start-up is 0755."""
    origin_root = tmp_path / "origin"
    (origin_root / "deep" / "er").mkdir(parents=True)
    (origin_root / "deep" / "er" / "a.txt").write_bytes(b"readable by all")
    data = tmp_path / "data"
    with static_origin(origin_root) as port:
        config = tmp_path / "c.yaml"
        config.write_text(
            f"listen: 'tcp:0:interface=127.0.0.1'\ndata_dir: {data}\n"
            "extra_origin_cidrs: ['127.0.0.1/32']\n"
            f"buckets:\n  {BUCKET}:\n    origin: {{address: '127.0.0.1:{port}'}}\n"
        )
        proc = start_twistd("--config", str(config), cwd=tmp_path, twistd_args=["--umask=0077"])
        try:
            edge_port, _ = wait_ready(proc)
            assert status_of(f"http://127.0.0.1:{edge_port}/{BUCKET}/deep/er/a.txt") == 302
            stored = data / BUCKET / "deep" / "er" / "a.txt"
            deadline = time.monotonic() + 10
            while not stored.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    assert stored.read_bytes() == b"readable by all"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o644
    assert stat.S_IMODE((data / BUCKET / "deep").stat().st_mode) == 0o755
    assert stat.S_IMODE((data / BUCKET / "deep" / "er").stat().st_mode) == 0o755
    assert stat.S_IMODE((data / BUCKET).stat().st_mode) == 0o755
