"""`twistd cosedge --version`: the subcommand's option names cosedge's own version."""

from __future__ import annotations

import importlib.metadata

from edge import __version__
from edge.testing.process import start_twistd


def test_version_comes_from_the_installed_metadata():
    """`edge.__version__` is the version pip installed (pyproject's), not a second copy."""
    try:
        installed = importlib.metadata.version("cosedge")
    except importlib.metadata.PackageNotFoundError:
        installed = "0+unknown"
    assert __version__ == installed


def test_twistd_cosedge_version_prints_cosedge_and_exits_0(tmp_path):
    """A real `twistd -n --pidfile= cosedge --version` prints exactly `cosedge <version>`
    (not Twisted's version line), exits 0, and starts nothing: no data folder appears."""
    proc = start_twistd("--version", cwd=tmp_path)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert out.decode().splitlines() == [f"cosedge {__version__}"]
    assert not (tmp_path / "cosedge-data").exists()
