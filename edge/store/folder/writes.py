"""Writing objects into bucket folders: request bodies spooled as they arrive, and
pending objects published atomically.

Everything is written into `.cosedge/tmp/` first, flushed, and hard-linked into place:
`link(2)` fails if the name exists, so an object that appeared meanwhile is never
overwritten and no reader ever sees half a file. An uploaded PUT, the one write that may
replace, renames instead, which is just as atomic.
"""

from __future__ import annotations

import hashlib
import os
import stat as statmod
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure

from edge.store.folder.etags import ETagCache
from edge.store.folder.layout import OBJECT_MODE, FileIdentity, FolderLayout, identity_of
from edge.store.folder.meta import MetaRecords
from edge.store.interface import DeleteWatch, KeyConflict, ObjectMeta, SpooledBody
from edge.store.keys import UnsafePath
from edge.store.statefiles import fsync_and_close, unlink_quietly

log = Logger()
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


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
        self,
        layout: FolderLayout,
        etags: ETagCache,
        bucket: str,
        key: str,
        spool: SpooledBody | None = None,
        meta_records: MetaRecords | None = None,
    ) -> None:
        self._layout = layout
        self._etags = etags
        self._meta_records = meta_records
        self.bucket = bucket
        self.key = key
        self.watch: DeleteWatch | None = None
        self.deleted_meanwhile = False
        # The published file's identity: its metadata is recorded against this, not a later
        # stat that could see another PUT's file.
        self.identity: FileIdentity | None = None
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
        self.temp_path = str(layout.tmp_dir / f"{uuid.uuid4().hex}.part")
        self._fd = os.open(
            self.temp_path,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
            OBJECT_MODE,
        )
        os.fchmod(self._fd, OBJECT_MODE)  # the umask (0077 in twistd's daemon mode) cut it

    def write(self, data: bytes) -> None:
        self.append_blocking(data)
        self.hash_blocking(data)

    def append_blocking(self, data: bytes) -> None:
        # Thread-safe as PendingWrite asks: the fd and the size are this write's alone, and
        # publish/discard only come once the writing threads are done.
        assert self._fd is not None, "write after publish/discard"
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.size += len(data)

    def append_all_blocking(self, chunks: Sequence[bytes]) -> None:
        # writev(2): one system call (and one release of the GIL) per batch, no joined copy.
        assert self._fd is not None, "write after publish/discard"
        for start in range(0, len(chunks), _IOV_MAX):
            group = chunks[start : start + _IOV_MAX]
            total = sum(map(len, group))
            written = os.writev(self._fd, group)
            if written < total:  # a short write (rare on a file): the rest as one buffer
                rest = memoryview(b"".join(group))[written:]
                while rest:
                    rest = rest[os.write(self._fd, rest) :]
            self.size += total

    def hash_blocking(self, data: bytes) -> None:
        self._md5.update(data)

    def written(self) -> None:
        pass  # nothing a folder write does needs the reactor

    def open_reader(self) -> int:
        return os.open(self.temp_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)

    @property
    def etag(self) -> str:
        return str(self._md5.hexdigest())

    @property
    def md5_digest(self) -> bytes:
        return bytes(self._md5.digest())

    def publish(self, replace: bool = False, meta: ObjectMeta | None = None) -> Deferred[bool]:
        """Flush to disk (in a thread: fsync can take a while) and link into place.

        Fires True when published, False when an object already had the key (it is kept;
        the copy is dropped) or, for a watched copy, when the key was deleted meanwhile
        (`deleted_meanwhile`). With `replace` (an uploaded PUT) the new object takes the key
        in one rename instead. The link itself happens on the reactor thread, where DELETE
        runs too; the folder's fsync goes back to a thread. Any error discards the temp
        file and propagates; a folder path through a symbolic link is `UnsafePath`, a key
        that collides with a folder (or whose folder is a file) is `KeyConflict`. With
        `meta`, the upload's metadata is recorded (or cleared, when empty) once published.
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
        d.addCallback(lambda _: self._link(replace, meta))
        d.addErrback(self._discard_after_failure)
        if meta is not None:
            d.addCallback(self._record, meta)
        return cast("Deferred[bool]", d)

    def _record(self, published: bool, meta: ObjectMeta) -> Deferred[bool] | bool:
        records = self._meta_records
        if not published or records is None:
            return published
        bucket, key, identity, etag = self.bucket, self.key, self.identity, self.etag

        def save() -> None:
            try:
                if meta.content_type or meta.user or meta.origin is not None:
                    records.write(bucket, key, meta, identity, etag=etag)
                else:
                    records.clear(bucket, key)
            except (FileNotFoundError, NotADirectoryError, UnsafePath):
                # A DELETE took the object between its publishing and this.
                log.info(
                    "Metadata of {bucket}/{key} not saved: deleted meanwhile",
                    bucket=bucket,
                    key=key,
                )

        return deferToThread(save).addCallback(lambda _: published)  # fsyncs: off the reactor

    def _link(self, replace: bool, meta: ObjectMeta | None = None) -> Deferred[bool] | bool:
        layout = self._layout
        temp_name = os.path.basename(self.temp_path)
        try:
            with (
                layout.state_folder("tmp") as tmp_fd,
                layout.bucket_parent(self.bucket, self.key, create=True) as (parent_fd, name),
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
                self.identity = identity_of(st)
                self._etags.put(self.identity, self.etag)
                self._record_at_once(meta)
                folder_fd = os.dup(parent_fd)
        finally:
            unlink_quietly(self.temp_path)
        flushed: Deferred[None] = deferToThread(fsync_and_close, folder_fd)  # can take long
        return flushed.addCallback(_published)

    def _record_at_once(self, meta: ObjectMeta | None) -> None:
        """Write the metadata in the turn that published the object, without fsyncs (the
        durable write follows in a thread): hits of this process never see the object
        before its Content-Type, which a copy's first client (or a cache in front) would
        otherwise get by extension. A failure here is the durable write's to report."""
        records = self._meta_records
        if records is None or meta is None or not (meta.content_type or meta.user or meta.origin):
            return
        try:
            records.write(self.bucket, self.key, meta, self.identity, durable=False, etag=self.etag)
        except (OSError, UnsafePath):
            pass

    def _deleted(self) -> bool:
        if self.watch is not None and self.watch.deleted():
            self.deleted_meanwhile = True
        return self.deleted_meanwhile

    def _discard_after_failure(self, failure: Failure) -> Failure:
        unlink_quietly(self.temp_path)
        if failure.check(IsADirectoryError, NotADirectoryError, FileExistsError):
            error = cast(OSError, failure.value)
            raise KeyConflict(f"{error.filename}: {error.strerror}") from None
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
