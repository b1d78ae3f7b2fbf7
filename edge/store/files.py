"""Bucket folders on disk: key validation, object lookup, ETags and atomic publishing.

A bucket is a plain folder `<data_dir>/<bucket>/` holding nothing but its objects at their
keys, so an operator can drop files in and they are served as they are. Everything the edge
keeps for itself lives under `<data_dir>/.cosedge/` on the same filesystem, which is what
makes publishing atomic: a copy is written to `.cosedge/tmp/`, flushed, and hard-linked into
place; `link(2)` fails if the name exists, so an object that appeared meanwhile is never
overwritten and no reader ever sees half a file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import mimetypes
import os
import re
import shutil
import stat as statmod
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.threads import deferToThread, deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from edge.store.keylocks import KeyLock, KeyLocks
from edge.store.statefiles import fsync_and_close, unlink_quietly

log = Logger()

STATE_DIR_NAME = ".cosedge"
# Objects and the folders that hold them are readable by everyone, whatever the process's
# umask: buckets are plain folders other programs (backup, rsync, nginx) read too.
OBJECT_MODE = 0o644
FOLDER_MODE = 0o755
MAX_KEY_BYTES = 850  # COS's own limit on object key length
_MAX_SEGMENT_BYTES = 255  # NAME_MAX on the filesystems we run on
_INLINE_HASH_LIMIT = 1024 * 1024  # hash smaller files on the reactor thread; it is cheaper
_HASH_CHUNK = 1024 * 1024


_NOT_AN_OBJECT = frozenset(
    {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP, errno.EACCES}
)


class InvalidKey(ValueError):
    """A key that could address something outside its bucket, or no file at all."""


class BucketNotEmpty(Exception):
    """A bucket still holds something: it is not removed."""


class UnsafePath(Exception):
    """A write, delete or listing whose folder path goes through a symbolic link.

    Reads may follow an operator's link that stays inside the bucket; nothing else may,
    because a link to elsewhere (made by an operator or any local process) would turn a
    PUT, a DELETE or an origin copy into a write anywhere on the host. Deliberately not an
    `OSError`, so no handler written for ordinary I/O errors swallows it.
    """


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def validate_key(key: str) -> str:
    """Refuse keys the filesystem would interpret: `.`/`..`/empty segments, NUL, backslash.

    Checked on the decoded key before any filesystem call (SPEC §3); a percent-encoded `/`
    has been decoded by now, so it is judged like any other `/`.
    """
    if not key:
        raise InvalidKey("empty key")
    if "\0" in key:
        raise InvalidKey("key contains NUL")
    if "\\" in key:
        raise InvalidKey("key contains a backslash")
    if _CONTROL.search(key):
        raise InvalidKey("key contains a control character")
    encoded = key.encode("utf-8", "surrogatepass")
    if len(encoded) > MAX_KEY_BYTES:
        raise InvalidKey(f"key longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise InvalidKey("key starts with '/'")
    segments = key.split("/")
    if segments[-1] == "":
        segments.pop()  # a trailing '/' names a folder-style key; its parts are still checked
    for segment in segments:
        if segment in ("", ".", ".."):
            raise InvalidKey(f"key has a {segment or 'empty'!r} segment")
        if len(segment.encode("utf-8", "surrogatepass")) > _MAX_SEGMENT_BYTES:
            raise InvalidKey(f"a key segment is longer than {_MAX_SEGMENT_BYTES} bytes")
    return key


def validate_prefix(prefix: str, what: str = "prefix") -> str:
    """Refuse a listing prefix (or marker) no key could start with: the same rules as
    `validate_key` for every complete segment, plus no control characters.

    The last segment may be partial (`a/b` matches `a/bc`), may be empty (a trailing `/`)
    and may be `.` or `..`, since keys such as `..a` are valid; only complete segments ever
    become folder names on disk, so a partial one never walks anywhere. A refusal is a 400
    InvalidArgument rather than an empty listing: such a prefix is a client bug (or a probe)
    and saying so is clearer than silently matching nothing.
    """
    if not prefix:
        return prefix
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in prefix):
        raise InvalidKey(f"{what} contains a control character")
    if "\\" in prefix:
        raise InvalidKey(f"{what} contains a backslash")
    if len(prefix.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKey(f"{what} longer than {MAX_KEY_BYTES} bytes")
    if prefix.startswith("/"):
        raise InvalidKey(f"{what} starts with '/'")
    segments = prefix.split("/")
    for i, segment in enumerate(segments):
        if i < len(segments) - 1 and segment in ("", ".", ".."):
            raise InvalidKey(f"{what} has a {segment or 'empty'!r} segment")
        if len(segment.encode("utf-8", "surrogatepass")) > _MAX_SEGMENT_BYTES:
            raise InvalidKey(f"a {what} segment is longer than {_MAX_SEGMENT_BYTES} bytes")
    return prefix


STATE_FOLDERS = ("tmp", "meta", "uploads", "locks", "origin", "buckets")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _make_folder(path: str) -> None:
    """A bucket folder, `FOLDER_MODE` when made now; an existing one is left as it is."""
    try:
        os.makedirs(path, FOLDER_MODE)
    except FileExistsError:
        return
    os.chmod(path, FOLDER_MODE)


def _open_dir(parent_fd: int, name: str, create: bool, what: str) -> int:
    """The folder `name` inside `parent_fd`, opened without following a symbolic link
    (created first when `create` and missing)."""
    for _ in range(3):  # mkdir and open race with another process removing the folder
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.mkdir(name, FOLDER_MODE, dir_fd=parent_fd)
            except FileExistsError:
                continue
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
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
    return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)


def _walk(root_fd: int, folders: Sequence[str], create: bool, what: str) -> list[int]:
    """Descriptors of each folder of `folders` below `root_fd`, each reached from the one
    before without following any symbolic link; the caller closes them all."""
    fds: list[int] = []
    try:
        parent = root_fd
        for name in folders:
            parent = _open_dir(parent, name, create, what)
            fds.append(parent)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def _open_parent(root_fd: int, key: str, create: bool) -> tuple[int, str]:
    """The folder that holds `key`'s file, as a descriptor reached from `root_fd` through
    real folders only, and the file's name in it; the caller closes the descriptor.

    Every write and delete goes through here and then acts relative to the descriptor
    (`linkat`, `renameat`, `unlinkat`), so a symbolic link anywhere on the way, even one
    swapped in meanwhile, can never redirect it outside the bucket: it raises `UnsafePath`.
    """
    *folders, name = key.split("/")
    if not name:
        raise IsADirectoryError(errno.EISDIR, "a key ending in '/' names a folder", key)
    fds = _walk(root_fd, folders, create, f"key {key!r}")
    for fd in fds[:-1]:
        os.close(fd)
    return (fds[-1] if fds else os.dup(root_fd)), name


@dataclass(frozen=True)
class StoredObject:
    """An open object ready to serve; the caller owns `file` and must close it."""

    file: BinaryIO
    size: int
    mtime: float
    content_type: str
    identity: tuple[int, int, int, int, int]  # dev, ino, size, mtime_ns, ctime_ns

    def with_content_type(self, content_type: str) -> StoredObject:
        from dataclasses import replace

        return replace(self, content_type=content_type)


@dataclass(frozen=True)
class ObjectMeta:
    """What a PUT said about an object beyond its bytes."""

    content_type: str = ""
    user: Mapping[str, str] = field(default_factory=dict)  # x-cos-meta-* headers


class ETagCache:
    """MD5 ETags remembered per file version, so each file's content is hashed once.

    Keyed by (device, inode, size, mtime, ctime): a file an operator replaces or edits gets
    a new entry and therefore a new ETag. Bounded, least recently used out first.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[tuple[int, int, int, int, int], str] = OrderedDict()

    def get(self, identity: tuple[int, int, int, int, int]) -> str | None:
        etag = self._entries.get(identity)
        if etag is not None:
            self._entries.move_to_end(identity)
        return etag

    def peek(self, identity: tuple[int, int, int, int, int]) -> str | None:
        """A lookup safe from a thread: one dict read, no reordering."""
        return self._entries.get(identity)

    def put(self, identity: tuple[int, int, int, int, int], etag: str) -> None:
        self._entries[identity] = etag
        self._entries.move_to_end(identity)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)


def _identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _hash_fd(fd: int) -> str:
    """MD5 of the open file itself (not whatever its path names by now); `pread` leaves
    the descriptor's offset alone, so the same file can still be served from it."""
    digest = hashlib.md5(usedforsecurity=False)
    offset = 0
    while chunk := os.pread(fd, _HASH_CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def _hash_and_close(fd: int) -> str:
    try:
        return _hash_fd(fd)
    finally:
        os.close(fd)


_HASH_THREADS = 2
_hash_pool: ThreadPool | None = None


def _hashing_pool() -> ThreadPool:
    """A small thread pool of its own for hashing large files, started on first use and
    stopped with the reactor: hashing a few ISOs must not take every thread of the
    reactor's pool, which DNS lookups of origins (and listings) need too."""
    global _hash_pool
    if _hash_pool is None:
        from twisted.internet import reactor

        pool = ThreadPool(minthreads=0, maxthreads=_HASH_THREADS, name="cosedge-hash")
        pool.start()
        reactor.addSystemEventTrigger("during", "shutdown", pool.stop)
        _hash_pool = pool
    return _hash_pool


class _ContentTypes:
    """Content-Type by extension, cached: `mimetypes` is slow enough to show on the hit path."""

    def __init__(self) -> None:
        self._types = mimetypes.MimeTypes()
        self._cache: dict[str, str] = {}

    def for_key(self, key: str) -> str:
        name = key.rsplit("/", 1)[-1]
        ext = os.path.splitext(name)[1].lower()
        cached = self._cache.get(ext)
        if cached is None:
            guessed, encoding = self._types.guess_type("x" + ext, strict=False)
            if guessed is None or encoding is not None:
                guessed = "application/octet-stream"
            cached = self._cache[ext] = guessed
        return cached


class ObjectStore:
    """All buckets under one data folder."""

    def __init__(self, data_dir: Path, buckets: Iterable[str]) -> None:
        self.data_dir = Path(os.path.abspath(data_dir))
        self.state_dir = self.data_dir / STATE_DIR_NAME
        self.tmp_dir = self.state_dir / "tmp"
        self._bucket_dirs = {name: str(self.data_dir / name) for name in buckets}
        self._bucket_real: dict[str, str] = {}
        self.etags = ETagCache()
        self._types = _ContentTypes()
        # Buckets that have upload metadata at all: hits on the others skip the lookup.
        self._meta_buckets: set[str] = set()
        # Large files being hashed, by identity: later requests for the same file wait for
        # that one hash instead of starting another.
        self._hashing: dict[tuple[int, int, int, int, int], list[Deferred[str]]] = {}
        self._locks = KeyLocks(self.state_dir)
        self._state_identity: tuple[int, int] | None = None

    def prepare(self, sweep: bool = True) -> int:
        """Create the folders and sweep temp files left by an interrupted copy.

        Returns how many stale temp files were removed. Runs before the listener starts, so
        nothing can be writing to `.cosedge/tmp/` yet; worker processes (`sweep=False`)
        start while the main process may be copying, so only the main process sweeps.
        """
        os.makedirs(self.data_dir, exist_ok=True)
        # `.cosedge` and its `tmp` are reached without following links: a state folder
        # that is a link to elsewhere refuses to start (UnsafePath) rather than sweeping it.
        with self._state_folder(create=True) as state_fd:
            st = os.fstat(state_fd)
            self._state_identity = (st.st_dev, st.st_ino)
        # Every state folder is made here, by whoever prepares the data folder (the user
        # twistd drops to): made later, by the still-root assembly, they stayed root's.
        for folder in STATE_FOLDERS:
            with self._state_folder(folder, create=True):
                pass
        for path in self._bucket_dirs.values():
            _make_folder(path)
        self._bucket_real = {name: os.path.realpath(p) for name, p in self._bucket_dirs.items()}
        self.refresh_meta_buckets()
        removed = 0
        with self._state_folder("tmp", create=True) as tmp_fd:
            for entry in os.scandir(tmp_fd) if sweep else ():
                try:
                    if entry.is_dir(follow_symlinks=False):
                        continue
                    os.unlink(entry.name, dir_fd=tmp_fd)
                    removed += 1
                except FileNotFoundError:
                    continue
        if removed:
            log.info(
                "Removed {count} stale temporary file(s) from {tmp_dir}",
                count=removed,
                tmp_dir=str(self.tmp_dir),
            )
        return removed

    def refresh_meta_buckets(self) -> None:
        """Learn which buckets have upload metadata (hits elsewhere skip the lookup). Run
        on the state timer too: with workers, another process's first PUT with a
        Content-Type into a bucket must reach this one's hits."""
        try:
            with os.scandir(self.state_dir / "meta") as entries:
                self._meta_buckets |= {e.name for e in entries if e.is_dir()}
        except FileNotFoundError:
            pass

    def has_bucket(self, bucket: str) -> bool:
        return bucket in self._bucket_dirs

    def add_bucket(self, bucket: str) -> None:
        """Create a bucket folder (PUT Bucket); an existing folder is adopted as it is."""
        path = str(self.data_dir / bucket)
        # Known before its folder is made: should making it fail, the bucket answers as an
        # empty one (misses, failed copies logged) rather than with errors about its name.
        self._bucket_dirs[bucket] = path
        self._bucket_real[bucket] = os.path.realpath(path)
        _make_folder(path)

    def bucket_is_empty(self, bucket: str) -> bool:
        """No object in the bucket (empty folders left by deletes do not count)."""
        return next(self.iter_keys(bucket), None) is None

    def forget_bucket(self, bucket: str) -> None:
        """Stop serving a bucket another process removed."""
        self._bucket_dirs.pop(bucket, None)
        self._bucket_real.pop(bucket, None)

    def remove_bucket(self, bucket: str) -> None:
        """Remove an empty bucket's folders and metadata, then forget it.

        Only empty folders are removed, deepest first: an object that arrived since the
        emptiness check (another worker's PUT, a copy) or one the listing could not see (a
        folder it failed to open) stops the removal with `BucketNotEmpty`, and nothing of
        it is lost. A recursive delete here would have taken whatever was there.
        """
        path = self._bucket_dirs[bucket]
        for folder, _subfolders, files in os.walk(path, topdown=False):
            if files:
                raise BucketNotEmpty(bucket)
            try:
                os.rmdir(folder)
            except FileNotFoundError:
                continue
            except OSError:
                raise BucketNotEmpty(bucket) from None  # a link, or something new in it
        self.forget_bucket(bucket)
        shutil.rmtree(self.state_dir / "meta" / bucket, ignore_errors=True)
        self._meta_buckets.discard(bucket)

    def iter_keys(self, bucket: str, prefix: str = "") -> Iterator[str]:
        """Keys of the regular files under the bucket folder whose key starts with `prefix`,
        in no particular order. Symbolic links are skipped: listing shows what the edge
        itself holds.

        The walk goes folder by folder through descriptors opened with O_NOFOLLOW, the
        prefix's folders included, so no link (even one swapped in meanwhile) takes it out
        of the bucket, and the state folder is never listed even if the layout puts it
        inside a bucket. `prefix` must have passed `validate_prefix`.
        """
        folder = prefix.rpartition("/")[0]
        try:
            with self._bucket_fd(bucket) as root_fd:
                fds = _walk(root_fd, folder.split("/") if folder else [], False, "prefix")
                start = fds.pop() if fds else os.dup(root_fd)
                for fd in fds:
                    os.close(fd)
        except (OSError, UnsafePath):
            return
        try:
            yield from self._keys_below(start, folder + "/" if folder else "", prefix)
        finally:
            os.close(start)

    def _keys_below(self, fd: int, base: str, prefix: str) -> Iterator[str]:
        """Depth first, one descriptor per level: a folder of many folders never holds
        more than the depth's worth of descriptors open."""
        st = os.fstat(fd)
        if self._state_identity is not None and (st.st_dev, st.st_ino) == self._state_identity:
            return
        try:
            with os.scandir(fd) as it:
                entries = list(it)
        except OSError:
            return
        for entry in entries:
            key = base + entry.name
            if entry.is_dir(follow_symlinks=False):
                if (key + "/").startswith(prefix) or prefix.startswith(key + "/"):
                    try:
                        sub = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                    except OSError:
                        continue  # removed, or swapped for a link, since it was listed
                    try:
                        yield from self._keys_below(sub, key + "/", prefix)
                    finally:
                        os.close(sub)
            elif entry.is_file(follow_symlinks=False) and key.startswith(prefix):
                yield key

    def delete_object(self, bucket: str, key: str) -> bool:
        """Remove an object and its metadata, and prune folders it leaves empty.

        Never through a symbolic link (`UnsafePath`). A DELETE must also win over an origin
        copy of the key that is running meanwhile, in this process or another worker: the
        copy holds the key's lock for its whole run, so finding the lock taken means a copy
        is under way, and a fresh tombstone next to the lock tells it to drop its result
        (see `watch_deletes`). When the lock is free it is held across the unlink, so no
        copy can start in between.
        """
        try:
            lock: KeyLock | None = self._locks.acquire(bucket, key)
            copying = lock is None
        except OSError as e:
            # Copies run unlocked then too (and cannot be told apart): delete all the same.
            lock, copying = None, False
            log.warn(
                "Deleting {bucket}/{key} without its lock: {reason}",
                bucket=bucket,
                key=key,
                reason=f"{e.filename}: {e.strerror or e}",
            )
        try:
            if copying:
                self._leave_tombstone(bucket, key)
            return self._unlink_object(bucket, key)
        finally:
            if lock is not None:
                lock.release()

    def _unlink_object(self, bucket: str, key: str) -> bool:
        *folders, name = key.split("/")
        if not name:
            return False
        with self._bucket_fd(bucket) as root_fd:
            try:
                fds = _walk(root_fd, folders, False, f"key {key!r}")
            except (FileNotFoundError, NotADirectoryError):
                return False
            try:
                parent = fds[-1] if fds else root_fd
                try:
                    if not statmod.S_ISREG(
                        os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
                    ):
                        return False
                    os.unlink(name, dir_fd=parent)
                except (FileNotFoundError, NotADirectoryError):
                    return False
                self.clear_meta(bucket, key)
                # Prune the folders it leaves empty, each relative to its own parent.
                for i in range(len(folders) - 1, -1, -1):
                    try:
                        os.rmdir(folders[i], dir_fd=fds[i - 1] if i else root_fd)
                    except OSError:
                        break
                return True
            finally:
                for fd in fds:
                    os.close(fd)

    # -- deletes racing origin copies ------------------------------------------------------

    def _tombstone(self, bucket: str, key: str) -> tuple[str, str]:
        """Folder and name of the key's tombstone: next to its copy lock, in the locks
        folder every worker shares."""
        lock = self._locks.path_for(bucket, key)
        folder, name = os.path.split(lock)
        return folder, name.removesuffix(".lock") + ".deleted"

    def _leave_tombstone(self, bucket: str, key: str) -> None:
        folder, name = self._tombstone(bucket, key)
        temp = os.path.join(folder, f"{name}.{uuid.uuid4().hex}.tmp")
        try:
            # A new inode each time, so a copy's baseline never matches a later delete.
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            os.close(fd)
            os.replace(temp, os.path.join(folder, name))
        except OSError as e:
            unlink_quietly(temp)
            log.warn(
                "Could not tell the running copy of {bucket}/{key} it was deleted: {reason}",
                bucket=bucket,
                key=key,
                reason=str(e),
            )

    def watch_deletes(self, bucket: str, key: str) -> DeleteWatch:
        """What a copy that holds the key's lock remembers before it starts, so that its
        publish can tell whether a DELETE came meanwhile."""
        return DeleteWatch(self, bucket, key, self._tombstone_identity(bucket, key))

    def _tombstone_identity(self, bucket: str, key: str) -> tuple[int, int, int] | None:
        folder, name = self._tombstone(bucket, key)
        try:
            st = os.stat(os.path.join(folder, name), follow_symlinks=False)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_ctime_ns)

    def forget_deletes(self, bucket: str, key: str) -> None:
        """Remove the key's tombstone; only by the copy holding the key's lock, when done."""
        folder, name = self._tombstone(bucket, key)
        unlink_quietly(os.path.join(folder, name))

    def refuse_unsafe(self, bucket: str, key: str) -> None:
        """Raise `UnsafePath` when a folder on the key's way is a symbolic link, before a
        copy spends bandwidth on an object it could never publish. Missing folders are
        fine (publishing creates them)."""
        *folders, _ = key.split("/")
        with self._bucket_fd(bucket) as root_fd:
            parent = os.dup(root_fd)
            try:
                for name in folders:
                    try:
                        child = _open_dir(parent, name, False, f"key {key!r}")
                    except (FileNotFoundError, NotADirectoryError):
                        return
                    os.close(parent)
                    parent = child
            finally:
                os.close(parent)

    # -- descriptors reached without following links ----------------------------------------

    @contextmanager
    def _bucket_fd(self, bucket: str) -> Iterator[int]:
        """The bucket folder itself; it may be an operator's link (configuration), what is
        below it is walked with `_walk`."""
        fd = os.open(self._bucket_dirs[bucket], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def _bucket_parent(self, bucket: str, key: str, create: bool) -> Iterator[tuple[int, str]]:
        with self._bucket_fd(bucket) as root_fd:
            fd, name = _open_parent(root_fd, key, create)
        try:
            yield fd, name
        finally:
            os.close(fd)

    @contextmanager
    def _state_folder(self, *parts: str, create: bool = False) -> Iterator[int]:
        """A folder under `.cosedge`, `.cosedge` included, reached without following links."""
        data_fd = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        segments = (STATE_DIR_NAME, *parts)
        try:
            fds = _walk(data_fd, segments, create, "the state folder")
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

    # -- metadata of uploaded objects (Content-Type, x-cos-meta-*) --------------------------

    def _meta_path(self, bucket: str, key: str) -> str:
        folders, name = self._meta_location(bucket, key)
        return str(self.state_dir.joinpath(*folders, name))

    def _meta_location(self, bucket: str, key: str) -> tuple[tuple[str, ...], str]:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        return ("meta", bucket, digest[:2]), f"{digest}.json"

    def read_meta(self, bucket: str, key: str, obj: StoredObject) -> ObjectMeta | None:
        """Metadata saved by a PUT, if the file is still the one that PUT wrote."""
        if bucket not in self._meta_buckets:
            return None
        try:
            with open(self._meta_path(bucket, key), encoding="utf-8") as f:
                raw = json.load(f)
        except (OSError, ValueError):
            return None
        if raw.get("key") != key or tuple(raw.get("identity", ())) != obj.identity:
            return None  # replaced by hand since: its metadata no longer applies
        return ObjectMeta(str(raw.get("content_type") or ""), dict(raw.get("meta") or {}))

    def clear_meta(self, bucket: str, key: str) -> None:
        folders, name = self._meta_location(bucket, key)
        try:
            with self._state_folder(*folders) as folder_fd:
                os.unlink(name, dir_fd=folder_fd)
        except (FileNotFoundError, NotADirectoryError):
            pass

    def write_meta(
        self,
        bucket: str,
        key: str,
        meta: ObjectMeta,
        identity: tuple[int, int, int, int, int] | None = None,
    ) -> None:
        """Save a PUT's metadata, writing only below `.cosedge/meta` (reached without links).

        `identity` is the published file's (`PendingObject.identity`): two PUTs racing
        must each describe their own file, so the object is stated (without following a
        link) only when the caller has none."""
        folders, name = self._meta_location(bucket, key)
        if identity is None:
            with self._bucket_parent(bucket, key, create=False) as (parent_fd, object_name):
                st = os.stat(object_name, dir_fd=parent_fd, follow_symlinks=False)
            identity = _identity(st)
        record = {
            "key": key,
            "identity": list(identity),
            "content_type": meta.content_type,
            "meta": meta.user,
        }
        with self._state_folder(*folders, create=True) as folder_fd:
            self._meta_buckets.add(bucket)
            temp = f"{name}.{uuid.uuid4().hex}.tmp"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(temp, flags, 0o644, dir_fd=folder_fd)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f, ensure_ascii=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
            os.fsync(folder_fd)  # the rename itself survives a crash only with its folder

    def sweep_meta(self) -> int:
        """Remove metadata whose object is gone or was replaced by hand (a delete made
        outside the API, a crash between publish and delete): it would never apply
        again. Buckets the edge does not serve now are left alone; they may come back."""
        removed = 0
        meta_root = self.state_dir / "meta"
        for bucket in list(self._bucket_dirs):
            for path in sorted((meta_root / bucket).glob("??/*.json")):
                try:
                    read = path.stat()
                    raw = json.loads(path.read_text(encoding="utf-8"))
                    key = raw["key"]
                    validate_key(key)
                except (OSError, ValueError, KeyError, TypeError):
                    continue  # unreadable now (being written?): judged on the next sweep
                if self._meta_matches(bucket, key, raw.get("identity")):
                    continue
                try:
                    # A PUT may have renamed a fresh record into place since it was read:
                    # only the record that was judged is removed.
                    if path.stat().st_ino == read.st_ino:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    pass
        return removed

    def _meta_matches(self, bucket: str, key: str, identity: object) -> bool:
        try:
            with self._bucket_parent(bucket, key, create=False) as (parent_fd, name):
                st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except (OSError, UnsafePath):
            return False
        return statmod.S_ISREG(st.st_mode) and list(_identity(st)) == identity

    def sweep_state_temp_files(self, older_than: float, now: float) -> int:
        """Remove the `*.tmp` files an atomic state write leaves if it dies between
        writing and renaming (rules, buckets, stamps, metadata, uploads' info.json), and
        the temp files of uploads and copies whose process died."""
        candidates = list(self.state_dir.glob(".*.tmp"))
        # Spools and copies write all the time (idle timeouts are seconds): an hour-old
        # part is what a worker killed mid-upload left; only the main process's restart
        # swept those before.
        candidates += self.tmp_dir.glob("*.part")
        for folder in ("origin", "buckets", "meta", "uploads"):
            candidates += (self.state_dir / folder).rglob("*.tmp")
        removed = 0
        for path in candidates:
            try:
                st = path.lstat()
                if statmod.S_ISREG(st.st_mode) and now - st.st_mtime > older_than:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def path_for(self, bucket: str, key: str) -> str:
        """The object's file path; `key` must have passed `validate_key`."""
        return os.path.join(self._bucket_dirs[bucket], key)

    def content_type(self, key: str) -> str:
        return self._types.for_key(key)

    def open_object(self, bucket: str, key: str) -> StoredObject | None:
        """Open an object for reading, or None when there is no such regular file.

        Symbolic links are followed only while they stay inside the bucket folder: an
        operator's link to elsewhere must not turn the edge into a file server for the host.
        """
        path = self.path_for(bucket, key)
        if not os.access(path, os.F_OK, follow_symlinks=False):
            # A miss, told without raising (a third of the cost of the failing open): what
            # makes access() fail (ENOENT, ENOTDIR, EACCES, ENAMETOOLONG...) is what makes
            # the open below answer None.
            return None
        linked = False
        try:
            try:
                # O_NOFOLLOW tells a symlink apart in the same call (ELOOP), so an ordinary
                # hit costs one open and one fstat, no extra lstat.
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError as e:
                if e.errno != errno.ELOOP:
                    raise
                linked = True
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            if e.errno in _NOT_AN_OBJECT:
                return None
            raise
        try:
            st = os.fstat(fd)
            if not statmod.S_ISREG(st.st_mode):
                os.close(fd)
                return None
            if linked or self._has_link_parent(bucket, key):
                real = os.path.realpath(path)
                if not real.startswith(self._bucket_real[bucket] + os.sep):
                    os.close(fd)
                    log.warn(
                        "Refusing to serve {bucket}/{key}: it links outside the bucket folder",
                        bucket=bucket,
                        key=key,
                    )
                    return None
        except BaseException:
            os.close(fd)
            raise
        return StoredObject(
            file=os.fdopen(fd, "rb", buffering=0),
            size=st.st_size,
            mtime=st.st_mtime,
            content_type=self._types.for_key(key),
            identity=_identity(st),
        )

    def _has_link_parent(self, bucket: str, key: str) -> bool:
        if "/" not in key:
            return False
        parent = os.path.dirname(self.path_for(bucket, key))
        return os.path.realpath(parent) != os.path.join(
            self._bucket_real[bucket], os.path.dirname(key)
        )

    def exists(self, bucket: str, key: str) -> bool:
        try:
            return statmod.S_ISREG(os.stat(self.path_for(bucket, key)).st_mode)
        except (OSError, ValueError):
            return False

    def etag(self, bucket: str, key: str, obj: StoredObject) -> Deferred[str]:
        """The object's ETag (hex MD5), hashing the file the first time it is seen.

        Large files are hashed in the hashing pool so one operator-dropped ISO does not
        stall every other request, once: requests for the same file meanwhile wait for that
        hash (single flight by identity), no request waits on another file's. The hash
        reads the open descriptor, so it is of the very file being served.
        """
        cached = self.etags.get(obj.identity)
        if cached is not None:
            return succeed(cached)
        if obj.size <= _INLINE_HASH_LIMIT:
            etag = _hash_fd(obj.file.fileno())
            self.etags.put(obj.identity, etag)
            return succeed(etag)
        identity = obj.identity
        waiters = self._hashing.get(identity)
        if waiters is None:
            waiters = self._hashing[identity] = []
            from twisted.internet import reactor

            hashing: Deferred[str] = deferToThreadPool(
                reactor,  # type: ignore[arg-type]
                _hashing_pool(),
                _hash_and_close,
                os.dup(obj.file.fileno()),
            )

            def done(result: str | Failure) -> None:
                del self._hashing[identity]
                if not isinstance(result, Failure):
                    self.etags.put(identity, result)
                for waiter in waiters:
                    if isinstance(result, Failure):
                        waiter.errback(result)
                    else:
                        waiter.callback(result)

            hashing.addBoth(done)

        def leave(waiter: Deferred[str]) -> None:
            if waiter in waiters:
                waiters.remove(waiter)

        mine: Deferred[str] = Deferred(leave)
        waiters.append(mine)
        return mine

    def describe(
        self, bucket: str, keys: Sequence[str]
    ) -> Deferred[list[tuple[str, int, float, str]]]:
        """(key, size, mtime, ETag) of each listed key that is still a regular file.

        One trip to a thread for the whole page: opening, stating and hashing up to a
        thousand small files there instead of one by one on the reactor. Large files not
        hashed yet go through `etag` (single flight, hashing pool). Opened like writes,
        without following links: listing shows only what lies inside the bucket.
        """

        def collect() -> tuple[list[list[Any]], list[tuple[Any, str]]]:
            rows: list[list[Any]] = []
            learned: list[tuple[Any, str]] = []
            for key in keys:
                try:
                    with self._bucket_parent(bucket, key, create=False) as (parent, name):
                        fd = os.open(
                            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent
                        )
                except (OSError, UnsafePath):
                    continue  # deleted (or swapped for a link) since it was listed
                try:
                    st = os.fstat(fd)
                    if not statmod.S_ISREG(st.st_mode):
                        continue
                    identity = _identity(st)
                    etag = self.etags.peek(identity)
                    if etag is None and st.st_size <= _INLINE_HASH_LIMIT:
                        etag = _hash_fd(fd)
                        learned.append((identity, etag))
                    rows.append([key, st.st_size, st.st_mtime, etag])
                finally:
                    os.close(fd)
            return rows, learned

        async def fill(row: list[Any], obj: StoredObject) -> None:
            try:
                row[3] = await self.etag(bucket, row[0], obj)
            finally:
                obj.file.close()

        async def run() -> list[tuple[str, int, float, str]]:
            rows, learned = await deferToThread(collect)
            for identity, etag in learned:
                self.etags.put(identity, etag)
            large = [row for row in rows if row[3] is None]
            hashes: list[Deferred[None]] = []
            for row in large:
                obj = self.open_object(bucket, row[0])
                if obj is None:
                    row[0] = None  # deleted meanwhile
                    continue
                hashes.append(Deferred.fromCoroutine(fill(row, obj)))
            if hashes:
                await gatherResults(hashes, consumeErrors=True)
            return [(r[0], r[1], r[2], r[3]) for r in rows if r[0] is not None]

        return Deferred.fromCoroutine(run())

    def new_upload(
        self,
        bucket: str,
        key: str,
        spool: UploadSpool | None = None,
        watch: DeleteWatch | None = None,
    ) -> PendingObject:
        """A temp file that becomes `bucket/key` on `publish()`, or vanishes on `discard()`;
        with `spool`, the uploaded body already written to the temp folder; with `watch`
        (an origin copy), a DELETE of the key meanwhile makes publishing drop it."""
        pending = PendingObject(self, bucket, key, spool)
        pending.watch = watch
        return pending


class DeleteWatch:
    """A copy's view of its key's tombstone as it was when the copy started: any change
    since means a DELETE came while the copy ran (see `ObjectStore.delete_object`)."""

    def __init__(
        self,
        store: ObjectStore,
        bucket: str,
        key: str,
        baseline: tuple[int, int, int] | None,
    ) -> None:
        self._store = store
        self._bucket = bucket
        self._key = key
        self._baseline = baseline

    def deleted(self) -> bool:
        return self._store._tombstone_identity(self._bucket, self._key) != self._baseline


class UploadSpool:
    """A request body written straight into the store's temp folder as it arrives, hashed
    on the way, so an uploaded object is published by one rename: no second copy, no body
    held in memory. Twisted treats it as the request's `content` file.

    If nothing adopts it, it deletes itself when the request is done or the client goes.
    """

    def __init__(self, tmp_dir: Path, limit: int) -> None:
        self.path = str(tmp_dir / f"{uuid.uuid4().hex}.part")
        # O_EXCL | O_NOFOLLOW: never written through a name someone planted in the folder.
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        self._file: BinaryIO | None = os.fdopen(os.open(self.path, flags, 0o666), "w+b")
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0
        self.limit = limit
        self.too_large = False
        self.adopted = False

    def write(self, data: bytes) -> None:
        if self._file is None or self.too_large:
            return
        if self.size + len(data) > self.limit:
            self.too_large = True  # stop filling the disk; the API answers EntityTooLarge
            return
        self._file.write(data)
        self._md5.update(data)
        self.size += len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        assert self._file is not None
        return self._file.seek(offset, whence)

    def read(self, size: int = -1) -> bytes:
        assert self._file is not None
        return self._file.read(size)

    def tell(self) -> int:
        assert self._file is not None
        return self._file.tell()

    @property
    def md5(self) -> Any:
        return self._md5

    def detach(self) -> BinaryIO:
        """Hand the open file to a `PendingObject`; the spool forgets it."""
        assert self._file is not None
        file, self._file = self._file, None
        self.adopted = True
        return file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if not self.adopted:
            unlink_quietly(self.path)


class PendingObject:
    """An object being written; never visible under its key until complete and flushed."""

    def __init__(
        self, store: ObjectStore, bucket: str, key: str, spool: UploadSpool | None = None
    ) -> None:
        self.store = store
        self.bucket = bucket
        self.key = key
        self.watch: DeleteWatch | None = None
        self.deleted_meanwhile = False
        # The published file's identity: its metadata is recorded against this, not a later
        # stat that could see another PUT's file.
        self.identity: tuple[int, int, int, int, int] | None = None
        if spool is not None:
            # An upload that already sits in the temp folder: take it over as it is.
            self.size = spool.size
            self._md5 = spool.md5
            self.temp_path = spool.path
            file = spool.detach()
            file.flush()
            self._fd: int | None = os.dup(file.fileno())
            file.close()
            os.fchmod(self._fd, OBJECT_MODE)
            return
        self.size = 0
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.temp_path = str(store.tmp_dir / f"{uuid.uuid4().hex}.part")
        self._fd = os.open(
            self.temp_path,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
            OBJECT_MODE,
        )
        os.fchmod(self._fd, OBJECT_MODE)  # the umask (0077 in twistd's daemon mode) cut it

    def write(self, data: bytes) -> None:
        assert self._fd is not None, "write after publish/discard"
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._md5.update(data)
        self.size += len(data)

    @property
    def etag(self) -> str:
        return self._md5.hexdigest()

    @property
    def md5_digest(self) -> bytes:
        return self._md5.digest()

    def publish(self, replace: bool = False) -> Deferred[bool]:
        """Flush to disk (in a thread: fsync can take a while) and link into place.

        Fires True when published, False when an object already had the key (it is kept;
        the copy is dropped) or, for a watched copy, when the key was deleted meanwhile
        (`deleted_meanwhile`). With `replace` (an uploaded PUT) the new object takes the key
        in one rename instead. The link itself happens on the reactor thread, where DELETE
        runs too; the folder's fsync goes back to a thread. Any error discards the temp
        file and propagates; a folder path through a symbolic link is `UnsafePath`.
        """
        fd = self._fd
        assert fd is not None, "publish twice"
        self._fd = None

        def flush() -> None:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        d: Deferred[Any] = deferToThread(flush)
        d.addCallback(lambda _: self._link(replace))
        d.addErrback(self._discard_after_failure)
        return cast("Deferred[bool]", d)

    def _link(self, replace: bool) -> Deferred[bool] | bool:
        store = self.store
        temp_name = os.path.basename(self.temp_path)
        try:
            with (
                store._state_folder("tmp") as tmp_fd,
                store._bucket_parent(self.bucket, self.key, create=True) as (parent_fd, name),
            ):
                if self._deleted():
                    return False
                if replace:
                    os.rename(temp_name, name, src_dir_fd=tmp_fd, dst_dir_fd=parent_fd)
                else:
                    try:
                        os.link(
                            temp_name,
                            name,
                            src_dir_fd=tmp_fd,
                            dst_dir_fd=parent_fd,
                            follow_symlinks=False,
                        )
                    except FileExistsError:
                        return False
                    os.unlink(temp_name, dir_fd=tmp_fd)
                # Stat only after the temp name is gone: dropping a link changes the inode's
                # ctime, which is part of the identity the ETag is cached under.
                st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
                if self._deleted():
                    # The DELETE came between the check above and the link (another worker):
                    # it may have found nothing to remove, so take back what was linked,
                    # if the name still is what this copy linked (not a PUT since).
                    if statmod.S_ISREG(st.st_mode) and _same_file(parent_fd, name, st):
                        os.unlink(name, dir_fd=parent_fd)
                    return False
                self.identity = _identity(st)
                store.etags.put(self.identity, self.etag)
                folder_fd = os.dup(parent_fd)
        finally:
            unlink_quietly(self.temp_path)
        flushed: Deferred[None] = deferToThread(fsync_and_close, folder_fd)  # can take long
        return flushed.addCallback(_published)

    def _deleted(self) -> bool:
        if self.watch is not None and self.watch.deleted():
            self.deleted_meanwhile = True
        return self.deleted_meanwhile

    def _discard_after_failure(self, failure):  # type: ignore[no-untyped-def]
        unlink_quietly(self.temp_path)
        return failure

    def discard(self) -> None:
        """Drop the partial object; safe to call more than once and after publish."""
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        unlink_quietly(self.temp_path)


def _published(_: object) -> bool:
    return True


def _same_file(dir_fd: int, name: str, st: os.stat_result) -> bool:
    try:
        now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)
