"""`cosedge check-config` (like `nginx -t`) and `cosedge --version`, run as real commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edge.testing.process import twistd_env


def cosedge(*args: str, cwd: Path) -> tuple[int, list[str]]:
    proc = subprocess.run(
        [sys.executable, "-m", "edge.process.cli", *args],
        cwd=cwd,
        env=twistd_env(),
        capture_output=True,
        timeout=60,
    )
    return proc.returncode, proc.stdout.decode().splitlines()


def test_check_config_lists_every_problem_one_line_each(tmp_path):
    """Every independent problem of a file gets its own line naming file and key, and the
    exit status is 1 (start-up would have stopped at the first)."""
    config = tmp_path / "bad.yaml"
    config.write_text(
        "nonsense: 1\nlog_level: loud\nworkers: 0\n"
        "buckets:\n  Bad: {}\n  ok-1250000000: {domains: [7]}\n"
    )
    code, lines = cosedge("check-config", str(config), cwd=tmp_path)
    assert code == 1
    keys = [line.split(": ")[1] for line in lines]
    assert keys == ["nonsense", "buckets.Bad", "buckets.ok-1250000000.domains[0]", "workers",
                    "log_level"]  # fmt: skip
    assert all(line.startswith(f"{config}: ") for line in lines)


def test_check_config_judges_every_ip_origin_and_the_data_folder(tmp_path):
    """With the keys right, each IP-literal origin outside the ISP tables is named, and a
    data folder that could not be created is reported; nothing is created."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data_dir: {blocker / 'data'}\nbuckets:\n"
        "  a-1250000000: {origin: {address: '8.8.8.8'}}\n"
        "  b-1250000000: {origin: {address: '127.0.0.1:8081'}}\n"
    )
    code, lines = cosedge("check-config", str(config), cwd=tmp_path)
    assert code == 1
    assert len(lines) == 3, lines
    assert "buckets.a-1250000000.origin.address: origin 8.8.8.8 is not accepted" in lines[0]
    assert "buckets.b-1250000000.origin.address: origin 127.0.0.1 is not accepted" in lines[1]
    assert f"data_dir: {blocker} is not a folder" in lines[2]


def test_check_config_accepts_a_good_file_without_touching_anything(tmp_path):
    """A valid file: exit 0 and one line; the data folder is not created by the check."""
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\nbuckets:\n"
        "  a-1250000000: {origin: {address: '202.96.128.86'}}\n"
    )
    code, lines = cosedge("check-config", str(config), cwd=tmp_path)
    assert (code, len(lines)) == (0, 1)
    assert "configuration is valid: 1 bucket(s)" in lines[0]
    assert not (tmp_path / "data").exists()


def test_version_prints_the_package_version(tmp_path):
    """`cosedge --version` names the installed distribution's version."""
    from edge import __version__

    code, lines = cosedge("--version", cwd=tmp_path)
    assert code == 0 and lines == [f"cosedge {__version__}"]
