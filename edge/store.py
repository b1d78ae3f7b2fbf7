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
import shutil
import stat as statmod
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

log = Logger()

STATE_DIR_NAME = ".cosedge"
MAX_KEY_BYTES = 850  # COS's own limit on object key length
_MAX_SEGMENT_BYTES = 255  # NAME_MAX on the filesystems we run on
_INLINE_HASH_LIMIT = 1024 * 1024  # hash smaller files on the reactor thread; it is cheaper
_HASH_CHUNK = 1024 * 1024


_NOT_AN_OBJECT = frozenset(
    {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP, errno.EACCES}
)


class InvalidKey(ValueError):
    """A key that could address something outside its bucket, or no file at all."""


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
    if any(c < " " or c == "\x7f" for c in key):
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

    def put(self, identity: tuple[int, int, int, int, int], etag: str) -> None:
        self._entries[identity] = etag
        self._entries.move_to_end(identity)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)


def _identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _hash_file(path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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

    def prepare(self, sweep: bool = True) -> int:
        """Create the folders and sweep temp files left by an interrupted copy.

        Returns how many stale temp files were removed. Runs before the listener starts, so
        nothing can be writing to `.cosedge/tmp/` yet; worker processes (`sweep=False`)
        start while the main process may be copying, so only the main process sweeps.
        """
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        for path in self._bucket_dirs.values():
            os.makedirs(path, exist_ok=True)
        self._bucket_real = {name: os.path.realpath(p) for name, p in self._bucket_dirs.items()}
        meta_root = self.state_dir / "meta"
        if meta_root.is_dir():
            self._meta_buckets = {e.name for e in os.scandir(meta_root) if e.is_dir()}
        removed = 0
        for entry in os.scandir(self.tmp_dir) if sweep else ():
            try:
                if entry.is_dir(follow_symlinks=False):
                    continue
                os.unlink(entry.path)
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

    def has_bucket(self, bucket: str) -> bool:
        return bucket in self._bucket_dirs

    def add_bucket(self, bucket: str) -> None:
        """Create a bucket folder (PUT Bucket); an existing folder is adopted as it is."""
        path = str(self.data_dir / bucket)
        os.makedirs(path, exist_ok=True)
        self._bucket_dirs[bucket] = path
        self._bucket_real[bucket] = os.path.realpath(path)

    def bucket_is_empty(self, bucket: str) -> bool:
        """No object in the bucket (empty folders left by deletes do not count)."""
        return next(self.iter_keys(bucket), None) is None

    def forget_bucket(self, bucket: str) -> None:
        """Stop serving a bucket another process removed."""
        self._bucket_dirs.pop(bucket, None)
        self._bucket_real.pop(bucket, None)

    def remove_bucket(self, bucket: str) -> None:
        """Forget an empty bucket and remove its folder and its metadata."""
        path = self._bucket_dirs[bucket]
        self.forget_bucket(bucket)
        shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(self.state_dir / "meta" / bucket, ignore_errors=True)
        self._meta_buckets.discard(bucket)

    def iter_keys(self, bucket: str, prefix: str = "") -> Iterator[str]:
        """Keys of the regular files under the bucket folder whose key starts with `prefix`,
        in no particular order. Symbolic links are skipped: listing shows what the edge
        itself holds."""
        root = self._bucket_dirs[bucket]
        start = root
        folder = prefix.rpartition("/")[0]
        if folder:
            start = os.path.join(root, folder)
        stack = [start]
        while stack:
            current = stack.pop()
            try:
                entries = list(os.scandir(current))
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                continue
            for entry in entries:
                key = os.path.relpath(entry.path, root)
                if entry.is_dir(follow_symlinks=False):
                    if (key + "/").startswith(prefix) or prefix.startswith(key + "/"):
                        stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False) and key.startswith(prefix):
                    yield key

    def delete_object(self, bucket: str, key: str) -> bool:
        """Remove an object and its metadata, and prune folders it leaves empty."""
        path = self.path_for(bucket, key)
        try:
            if not statmod.S_ISREG(os.lstat(path).st_mode):
                return False
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        _unlink_quietly(self._meta_path(bucket, key))
        root = self._bucket_dirs[bucket]
        parent = os.path.dirname(path)
        while parent != root and parent.startswith(root + os.sep):
            try:
                os.rmdir(parent)
            except OSError:
                break
            parent = os.path.dirname(parent)
        return True

    # -- metadata of uploaded objects (Content-Type, x-cos-meta-*) --------------------------

    def _meta_path(self, bucket: str, key: str) -> str:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        return str(self.state_dir / "meta" / bucket / digest[:2] / f"{digest}.json")

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
        _unlink_quietly(self._meta_path(bucket, key))

    def write_meta(self, bucket: str, key: str, meta: ObjectMeta) -> None:
        path = self._meta_path(bucket, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._meta_buckets.add(bucket)
        identity = _identity(os.stat(self.path_for(bucket, key)))
        record = {
            "key": key,
            "identity": list(identity),
            "content_type": meta.content_type,
            "meta": meta.user,
        }
        temp = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(temp, "w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=False)
        os.replace(temp, path)

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

        Large files are hashed in a thread so one operator-dropped ISO does not stall every
        other request; the result is cached against the file's identity.
        """
        cached = self.etags.get(obj.identity)
        if cached is not None:
            return succeed(cached)
        path = self.path_for(bucket, key)
        if obj.size <= _INLINE_HASH_LIMIT:
            etag = _hash_file(path)
            self.etags.put(obj.identity, etag)
            return succeed(etag)
        d: Deferred[str] = deferToThread(_hash_file, path)

        def remember(etag: str) -> str:
            self.etags.put(obj.identity, etag)
            return etag

        return d.addCallback(remember)

    def new_upload(self, bucket: str, key: str, spool: UploadSpool | None = None) -> PendingObject:
        """A temp file that becomes `bucket/key` on `publish()`, or vanishes on `discard()`;
        with `spool`, the uploaded body already written to the temp folder."""
        return PendingObject(self, bucket, key, spool)


class UploadSpool:
    """A request body written straight into the store's temp folder as it arrives, hashed
    on the way, so an uploaded object is published by one rename: no second copy, no body
    held in memory. Twisted treats it as the request's `content` file.

    If nothing adopts it, it deletes itself when the request is done or the client goes.
    """

    def __init__(self, tmp_dir: Path, limit: int) -> None:
        self.path = str(tmp_dir / f"{uuid.uuid4().hex}.part")
        self._file: BinaryIO | None = open(self.path, "w+b")  # noqa: SIM115 - owned here
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
            _unlink_quietly(self.path)


class PendingObject:
    """An object being written; never visible under its key until complete and flushed."""

    def __init__(
        self, store: ObjectStore, bucket: str, key: str, spool: UploadSpool | None = None
    ) -> None:
        self.store = store
        self.bucket = bucket
        self.key = key
        if spool is not None:
            # An upload that already sits in the temp folder: take it over as it is.
            self.size = spool.size
            self._md5 = spool.md5
            self.temp_path = spool.path
            file = spool.detach()
            file.flush()
            self._fd: int | None = os.dup(file.fileno())
            file.close()
            return
        self.size = 0
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.temp_path = str(store.tmp_dir / f"{uuid.uuid4().hex}.part")
        self._fd = os.open(
            self.temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644
        )

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
        the copy is dropped). With `replace` (an uploaded PUT) the new object takes the key
        in one rename instead. Any error discards the temp file and propagates.
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

    def _link(self, replace: bool) -> bool:
        final = self.store.path_for(self.bucket, self.key)
        try:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            if replace:
                os.replace(self.temp_path, final)
            else:
                try:
                    os.link(self.temp_path, final)
                except FileExistsError:
                    return False
        finally:
            _unlink_quietly(self.temp_path)
        # Stat only after the temp name is gone: dropping a link changes the inode's ctime,
        # which is part of the identity the ETag is cached under.
        self.store.etags.put(_identity(os.stat(final)), self.etag)
        _fsync_dir(os.path.dirname(final))
        return True

    def _discard_after_failure(self, failure):  # type: ignore[no-untyped-def]
        _unlink_quietly(self.temp_path)
        return failure

    def discard(self) -> None:
        """Drop the partial object; safe to call more than once and after publish."""
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        _unlink_quietly(self.temp_path)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
