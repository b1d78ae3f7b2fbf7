"""Per-key locks shared by every worker process: one origin copy of a key at a time.

Within a process the copier's in-memory table already gives single flight; with
`--workers N` the processes share nothing but the data folder, so a copy also takes an
exclusive `flock` on `.cosedge/locks/<hash of bucket and key>.lock`. A process that finds the
lock taken skips the copy: the client was redirected anyway, and the other process's copy
will make the next request a hit.

Lock files are removed on release, while still locked. A process that opened the file just
before the unlink would then lock a file no longer in the folder, so after locking it checks
that the path still names the file it holds, and starts again if not. The kernel drops the
locks of a process that dies, so a crash never leaves a key locked.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from pathlib import Path

_TOMBSTONE_AGE = 24 * 3600.0  # far longer than any copy runs (total_timeout)


class KeyLock:
    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


class KeyLocks:
    def __init__(self, state_dir: Path) -> None:
        self.folder = Path(state_dir) / "locks"

    def path_for(self, bucket: str, key: str) -> str:
        digest = hashlib.sha256(f"{bucket}\0{key}".encode("utf-8", "surrogatepass")).hexdigest()
        return str(self.folder / f"{digest}.lock")

    def acquire(self, bucket: str, key: str) -> KeyLock | None:
        """The key's lock, or None when another process (or open file) holds it."""
        path = self.path_for(bucket, key)
        os.makedirs(self.folder, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return KeyLock(path, fd)
            os.close(fd)  # unlinked by its previous holder meanwhile: take the new file

    def sweep(self) -> int:
        """Remove lock files nobody holds (a process killed mid-copy leaves its file; the
        kernel already dropped its lock). Each is removed while locked, as `release` does,
        so a process that opened it meanwhile sees the name change and starts again."""
        removed = 0
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return 0
        now = time.time()
        for name in names:
            if name.endswith((".deleted", ".tmp")):
                removed += self._sweep_tombstone(name, now)
                continue
            if not name.endswith(".lock"):
                continue
            path = str(self.folder / name)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # a copy is running
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    os.unlink(path)
                    removed += 1
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)
        return removed

    def _sweep_tombstone(self, name: str, now: float) -> int:
        """A DELETE's tombstone (or its temp file) a day old whose key no copy holds: it
        has told every copy that could have cared."""
        path = self.folder / name
        lock = self.folder / (name.split(".", 1)[0] + ".lock")
        try:
            if now - path.lstat().st_mtime < _TOMBSTONE_AGE:
                return 0
        except FileNotFoundError:
            return 0
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            fd = None  # no copy of the key at all
        except OSError:
            return 0
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink()
            return 1
        except (BlockingIOError, FileNotFoundError):
            return 0
        finally:
            if fd is not None:
                os.close(fd)
