"""Durable writes of the edge's own state files (rules, buckets, stamps, records).

State is written to a temporary name beside its final one, flushed, renamed into place and
then the folder itself is flushed: without the folder's fsync a crash can forget the rename
even though the bytes reached the disk. One place for it, so every state file gets the
same care.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make names created, renamed or removed in `path` durable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    fsync_and_close(fd)


def fsync_and_close(fd: int) -> None:
    """Flush an open folder (or file) and close it; a flush the filesystem refuses is not
    an error here: the write it follows already succeeded."""
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def unlink_quietly(path: str | os.PathLike[str]) -> None:
    """Remove a temporary or stale file that may already be gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def write_atomically(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> None:
    """Replace `path` with `data` so a reader sees the old bytes or the new, never a mix.

    `durable=False` skips the fsyncs, for hints such as change stamps whose loss a restart
    repairs anyway.
    """
    final = Path(path)
    temp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, final)
    except BaseException:
        unlink_quietly(temp)
        raise
    if durable:
        fsync_dir(final.parent)
