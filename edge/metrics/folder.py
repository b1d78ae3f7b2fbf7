"""The multiprocess folder: where every process of one edge keeps its metric values.

prometheus_client's multiprocess mode is used rather than the main process asking its
workers: each process writes its values to memory-mapped files in one folder and a scrape
sums the files, so a scrape costs the workers nothing, needs no new channel between the
processes, and counts a worker that has since exited (its counters stay in the folder;
its live gauges are dropped by `mark_process_dead`). The library decides between
in-memory and file-backed values when `prometheus_client.values` is first imported, from
`PROMETHEUS_MULTIPROC_DIR` in the environment, so the variable is set here, before any
metric exists; a worker inherits it with the rest of the main process's environment.

Standard library only at import: importing `prometheus_client` here would make the choice
too early.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
FOLDER_NAME = "metrics"  # under `<data_dir>/.cosedge/`

_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))


def this_pid() -> int:
    """This process's id, which names its files in the folder. Kept, and renewed in a
    forked child (twistd's daemonizing fork included), instead of asked of the kernel:
    the library checks it on every increment, two getpid(2) calls per request."""
    return _pid[0]


def metrics_folder(state_dir: Path) -> Path:
    return Path(state_dir) / FOLDER_NAME


def prepare_folder(folder: Path, *, fresh: bool) -> None:
    """Make the folder (emptied first when `fresh`: the main process at start-up, so a
    restarted edge does not add up the files of its last run). Run as the user the edge
    runs as, like the rest of the data folder's preparation."""
    folder = Path(folder)
    if fresh and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)


def use_folder(folder: Path) -> None:
    """Keep this process's metric values in `folder` from now on.

    Raises `RuntimeError` when metrics were already made in this process: they would stay
    in memory, and a scrape would miss them without a word.
    """
    if "edge.metrics.families" in sys.modules:
        raise RuntimeError("metrics were made before their multiprocess folder was chosen")
    os.environ[ENV] = str(folder)


def in_use() -> Path | None:
    """The multiprocess folder of this process, or None (values kept in process memory:
    in-process tests, tools)."""
    value = os.environ.get(ENV)
    return Path(value) if value else None


def process_ended(pid: int) -> None:
    """A worker exited: its live gauges leave the sums (its counters stay counted)."""
    folder = in_use()
    if folder is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, str(folder))
