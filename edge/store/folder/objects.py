"""An object of the folder store opened for reading, and Content-Types by extension.

The open file is what is served: its descriptor is hashed for the ETag, sent with
sendfile or read for small bodies, so a file replaced meanwhile never mixes two versions
in one response.
"""

from __future__ import annotations

import mimetypes
import os
from dataclasses import dataclass
from typing import BinaryIO

from edge.store.folder.layout import FileIdentity


@dataclass(frozen=True)
class FolderObject:
    """An open object ready to serve; the caller owns `file` and must close it."""

    file: BinaryIO
    size: int
    mtime: float
    content_type: str
    identity: FileIdentity

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
