"""An object of the folder store opened for reading, and Content-Types by extension.

The open file is what is served: its descriptor is hashed for the ETag and its bytes go
out inline (small bodies, in the reactor turn that answers), by sendfile(2), or through
Twisted's static producers, so a file replaced meanwhile never mixes two versions in one
response.
"""

from __future__ import annotations

import errno
import mimetypes
import os
import stat as statmod
from typing import BinaryIO, cast

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.server import Request
from twisted.web.static import NoRangeStaticProducer, SingleRangeStaticProducer

from edge.store.folder import sendfile
from edge.store.folder.etags import ETagHasher
from edge.store.folder.layout import FileIdentity, FolderLayout, identity_of
from edge.store.folder.meta import MetaRecords
from edge.store.interface import ObjectMeta

log = Logger()

# A body up to this size is read and written in the reactor turn that answers the request:
# no producer, no Cooperator tick (measured: a 4 KiB hit spent a third of its time there).
INLINE_MAX = 128 * 1024


class _WholeFile(NoRangeStaticProducer):
    bufferSize = 256 * 1024  # fewer, larger writes: measured faster than Twisted's 64 KiB


class _FileRange(SingleRangeStaticProducer):
    bufferSize = 256 * 1024


_NO_META = ObjectMeta()


class FolderObject:
    """An open object ready to serve (`edge.store.interface.StoredObject`). A plain
    class with slots: one is made per hit, and a frozen dataclass's init was measurable."""

    __slots__ = (
        "file", "size", "mtime", "content_type", "identity", "hasher", "meta", "recorded_etag"
    )  # fmt: skip

    def __init__(
        self,
        file: BinaryIO,
        size: int,
        mtime: float,
        content_type: str,
        identity: FileIdentity,
        hasher: ETagHasher,
        meta: ObjectMeta | None = None,
        recorded_etag: str | None = None,
    ) -> None:
        self.file = file
        self.size = size
        self.mtime = mtime
        self.content_type = content_type
        self.identity = identity
        self.hasher = hasher
        self.meta = meta or _NO_META
        # The MD5 the store recorded when it published this very file (a copy's, an
        # upload's): no process hashes it again, after a restart or in another worker.
        self.recorded_etag = recorded_etag

    def etag(self) -> Deferred[str]:
        if self.recorded_etag is not None:
            return succeed(self.recorded_etag)
        return self.hasher.etag(self.file.fileno(), self.size, self.identity)

    def send(self, request: IRequest, first: int, length: int) -> Deferred[None]:
        """Under way when this returns (the producers finish the request themselves);
        a file that shrinks meanwhile drops the connection rather than send short."""
        request = cast(Request, request)  # the folder store serves twisted.web's requests
        if length <= INLINE_MAX:
            self._write_inline(request, first, length)
        elif sendfile.usable(request):
            sendfile.SendfileBody(request, self.file, first, length).start()
        elif first or length != self.size:
            _FileRange(request, self.file, first, length).start()
        else:
            _WholeFile(request, self.file).start()
        return succeed(None)

    def _write_inline(self, request: IRequest, first: int, length: int) -> None:
        try:
            data = os.pread(self.file.fileno(), length, first)
        finally:
            self.file.close()
        request.write(data)
        channel = getattr(request, "channel", None)
        request.finish()
        if len(data) < length and channel is not None:
            channel.loseConnection()  # the file shrank under us: the length cannot be kept

    def close(self) -> None:
        self.file.close()


class ContentTypes:
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


_NOT_AN_OBJECT = frozenset(
    {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP, errno.EACCES}
)


class FolderReader:
    """Opens objects for reading: one `access`, one `open`, one `fstat` per hit."""

    def __init__(self, layout: FolderLayout, meta: MetaRecords, hasher: ETagHasher) -> None:
        self._layout = layout
        self._meta = meta
        self._hasher = hasher
        self._types = ContentTypes()

    def open(self, bucket: str, key: str) -> FolderObject | None:
        """Open an object for reading, or None when there is no such regular file.

        Symbolic links are followed only while they stay inside the bucket folder: an
        operator's link to elsewhere must not turn the edge into a file server for the host.
        """
        path = self._layout.path_for(bucket, key)
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
            if (linked or "/" in key) and self._outside_bucket(fd, path, bucket):
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
        identity = identity_of(st)
        recorded = self._meta.lookup(bucket, key, identity)
        return FolderObject(
            file=os.fdopen(fd, "rb", buffering=0),
            size=st.st_size,
            mtime=st.st_mtime,
            content_type=self._types.for_key(key),
            identity=identity,
            hasher=self._hasher,
            meta=None if recorded is None else recorded.meta,
            recorded_etag=None if recorded is None else recorded.etag,
        )

    def _outside_bucket(self, fd: int, path: str, bucket: str) -> bool:
        """Whether the file open as `fd` lies outside the bucket folder, reached through a
        symbolic link on the key's way. Asked of the kernel about the file actually opened
        (`/proc/self/fd`): one readlink, where resolving the path again took an lstat per
        folder (a fifth of a hit of a key three folders deep), and no race with a link
        swapped after the open. Without /proc, the path is resolved as before."""
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            real = os.path.realpath(path)
        return not real.startswith(self._layout.bucket_real[bucket] + os.sep)

    def exists(self, bucket: str, key: str) -> bool:
        try:
            return statmod.S_ISREG(os.stat(self._layout.path_for(bucket, key)).st_mode)
        except (OSError, ValueError):
            return False
