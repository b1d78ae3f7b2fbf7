"""The process id that names a process's files in the metrics folder
(`edge.metrics.folder.this_pid`): kept rather than asked of the kernel on every increment,
yet right in a forked child, and the one prometheus_client uses in multiprocess mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from edge.metrics.folder import this_pid


def test_this_pid_is_the_forked_childs_own():
    """In a child made by fork(2) (twistd's daemonizing fork is one), `this_pid` is the
    child's pid, not the parent's it was first read in."""
    assert this_pid() == os.getpid()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe and exits
        try:
            os.write(write, f"{this_pid()} {os.getpid()}".encode())
        finally:
            os._exit(0)
    os.close(write)
    seen = os.read(read, 100).decode().split()
    os.close(read)
    os.waitpid(child, 0)
    assert seen == [str(child), str(child)]
    assert this_pid() == os.getpid()


def test_multiprocess_values_are_filed_under_this_pid(tmp_path: Path):
    """With the multiprocess folder chosen, a counter's increments land in the file named by
    this process's pid (a fresh interpreter: the choice is made at import)."""
    code = (
        "from edge.metrics.folder import use_folder; import sys, os\n"
        "use_folder(sys.argv[1])\n"
        "from edge.metrics.families import count_request\n"
        "count_request('b', 'hit', 10)\n"
        "print(os.getpid())\n"
    )
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True, text=True, env=env, check=True, timeout=60,
    ).stdout.split()  # fmt: skip
    assert (tmp_path / f"counter_{out[-1]}.db").exists()
