"""An object of the folder store opened for reading, and Content-Types by extension.

The open file is what is served: its descriptor is hashed for the ETag and its bytes go
out inline (small bodies, in the reactor turn that answers), by sendfile(2), or through
Twisted's static producers, so a file replaced meanwhile never mixes two versions in one
response.
"""

from __future__ import annotations

import mimetypes
import os
from dataclasses import dataclass, field
from typing import BinaryIO, cast

from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest
from twisted.web.server import Request
from twisted.web.static import NoRangeStaticProducer, SingleRangeStaticProducer

from edge.store.folder import sendfile
from edge.store.folder.etags import ETagHasher
from edge.store.folder.layout import FileIdentity
from edge.store.interface import ObjectMeta

# A body up to this size is read and written in the reactor turn that answers the request:
# no producer, no Cooperator tick (measured: a 4 KiB hit spent a third of its time there).
INLINE_MAX = 128 * 1024


class _WholeFile(NoRangeStaticProducer):
    bufferSize = 256 * 1024  # fewer, larger writes: measured faster than Twisted's 64 KiB


class _FileRange(SingleRangeStaticProducer):
    bufferSize = 256 * 1024


@dataclass(frozen=True)
class FolderObject:
    """An open object ready to serve (`edge.store.interface.StoredObject`)."""

    file: BinaryIO
    size: int
    mtime: float
    content_type: str
    identity: FileIdentity
    hasher: ETagHasher = field(repr=False, compare=False)
    meta: ObjectMeta = ObjectMeta()

    def etag(self) -> Deferred[str]:
        return self.hasher.etag(self.file.fileno(), self.size, self.identity)

    def send(self, request: IRequest, first: int, length: int) -> None:
        request = cast(Request, request)  # the folder store serves twisted.web's requests
        if length <= INLINE_MAX:
            self._write_inline(request, first, length)
        elif sendfile.usable(request):
            sendfile.SendfileBody(request, self.file, first, length).start()
        elif first or length != self.size:
            _FileRange(request, self.file, first, length).start()
        else:
            _WholeFile(request, self.file).start()

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

    def with_content_type(self, content_type: str) -> FolderObject:
        from dataclasses import replace

        return replace(self, content_type=content_type)


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
