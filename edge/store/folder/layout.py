"""Where the folder store keeps things, and how it reaches them without following links.

A bucket is the folder `<data_dir>/<bucket>/`; the edge's own state lives in
`<data_dir>/.cosedge/` on the same filesystem (which is what makes publishing by `link(2)`
atomic). Below a bucket folder nothing is reached by path: every write, delete and listing
walks folder by folder through descriptors opened with O_NOFOLLOW and then acts relative
to the last one (`linkat`, `renameat`, `unlinkat`), so a symbolic link anywhere on the way,
even one swapped in meanwhile, raises `UnsafePath` instead of leading outside the bucket.
"""

from __future__ import annotations

import errno
import os
import stat as statmod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from edge.store.keys import UnsafePath

STATE_DIR_NAME = ".cosedge"
# Objects and the folders that hold them are readable by everyone, whatever the process's
# umask: buckets are plain folders other programs (backup, rsync, nginx) read too.
OBJECT_MODE = 0o644
FOLDER_MODE = 0o755
FileIdentity = tuple[int, int, int, int, int]  # dev, ino, size, mtime_ns, ctime_ns


def identity_of(st: os.stat_result) -> FileIdentity:
    """What tells one version of a file from another: an edit or a replacement changes it."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


STATE_FOLDERS = ("tmp", "meta", "uploads", "locks", "origin", "buckets")
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def make_folder(path: str) -> None:
    """A bucket folder, `FOLDER_MODE` when made now; an existing one is left as it is."""
    try:
        os.makedirs(path, FOLDER_MODE)
    except FileExistsError:
        return
    os.chmod(path, FOLDER_MODE)


def open_dir(parent_fd: int, name: str, create: bool, what: str) -> int:
    """The folder `name` inside `parent_fd`, opened without following a symbolic link
    (created first when `create` and missing)."""
    for _ in range(3):  # mkdir and open race with another process removing the folder
        try:
            return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.mkdir(name, FOLDER_MODE, dir_fd=parent_fd)
            except FileExistsError:
                continue
            fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
            os.fchmod(fd, FOLDER_MODE)  # mkdir's mode is cut by the umask (0077 under twistd)
            return fd
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            try:
                st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
                linked = statmod.S_ISLNK(st.st_mode)
            except OSError:
                linked = False
            if linked:
                raise UnsafePath(f"{what} goes through the symbolic link {name!r}") from None
            raise  # a file where a folder is needed: the caller's usual collision
    return os.open(name, DIR_FLAGS, dir_fd=parent_fd)


def walk(root_fd: int, folders: Sequence[str], create: bool, what: str) -> list[int]:
    """Descriptors of each folder of `folders` below `root_fd`, each reached from the one
    before without following any symbolic link; the caller closes them all."""
    fds: list[int] = []
    try:
        parent = root_fd
        for name in folders:
            parent = open_dir(parent, name, create, what)
            fds.append(parent)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def open_parent(root_fd: int, key: str, create: bool) -> tuple[int, str]:
    """The folder that holds `key`'s file, as a descriptor reached from `root_fd` through
    real folders only, and the file's name in it; the caller closes the descriptor.

    Every write and delete goes through here and then acts relative to the descriptor
    (`linkat`, `renameat`, `unlinkat`), so a symbolic link anywhere on the way, even one
    swapped in meanwhile, can never redirect it outside the bucket: it raises `UnsafePath`.
    """
    *folders, name = key.split("/")
    if not name:
        raise IsADirectoryError(errno.EISDIR, "a key ending in '/' names a folder", key)
    fds = walk(root_fd, folders, create, f"key {key!r}")
    for fd in fds[:-1]:
        os.close(fd)
    return (fds[-1] if fds else os.dup(root_fd)), name


class FolderLayout:
    """The data folder's map: each bucket's folder, the state folder, and descriptors of
    both reached safely. Shared by every part of the folder store."""

    def __init__(self, data_dir: Path, buckets: Iterable[str]) -> None:
        self.data_dir = Path(os.path.abspath(data_dir))
        self.state_dir = self.data_dir / STATE_DIR_NAME
        self.tmp_dir = self.state_dir / "tmp"
        self.bucket_dirs = {name: str(self.data_dir / name) for name in buckets}
        self.bucket_real: dict[str, str] = {}
        # `.cosedge`'s device and inode, so a listing never descends into it.
        self.state_identity: tuple[int, int] | None = None

    def path_for(self, bucket: str, key: str) -> str:
        """The object's file path; `key` must have passed `validate_key`."""
        return os.path.join(self.bucket_dirs[bucket], key)

    def add(self, bucket: str) -> None:
        path = str(self.data_dir / bucket)
        # Known before its folder is made: should making it fail, the bucket answers as an
        # empty one (misses, failed copies logged) rather than with errors about its name.
        self.bucket_dirs[bucket] = path
        self.bucket_real[bucket] = os.path.realpath(path)
        make_folder(path)

    def forget(self, bucket: str) -> None:
        self.bucket_dirs.pop(bucket, None)
        self.bucket_real.pop(bucket, None)

    @contextmanager
    def bucket_fd(self, bucket: str) -> Iterator[int]:
        """The bucket folder itself; it may be an operator's link (configuration), what is
        below it is walked with `_walk`."""
        fd = os.open(self.bucket_dirs[bucket], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def bucket_parent(self, bucket: str, key: str, create: bool) -> Iterator[tuple[int, str]]:
        with self.bucket_fd(bucket) as root_fd:
            fd, name = open_parent(root_fd, key, create)
        try:
            yield fd, name
        finally:
            os.close(fd)

    @contextmanager
    def state_folder(self, *parts: str, create: bool = False) -> Iterator[int]:
        """A folder under `.cosedge`, `.cosedge` included, reached without following links."""
        data_fd = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        segments = (STATE_DIR_NAME, *parts)
        try:
            fds = walk(data_fd, segments, create, "the state folder")
        except OSError as e:
            # The walk names the failing segment alone; an operator needs the whole path.
            if e.filename in segments:
                upto = segments[: segments.index(e.filename) + 1]
                e.filename = str(self.data_dir.joinpath(*upto))
            raise
        finally:
            os.close(data_fd)
        for fd in fds[:-1]:
            os.close(fd)
        try:
            yield fds[-1]
        finally:
            os.close(fds[-1])
