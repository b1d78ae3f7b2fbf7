"""Request bodies: which requests may send one, where it goes, and how much is in flight.

Twisted reads a request's whole body before any resource sees the request, so the choice
of where a body goes has to be made earlier, at the end of the headers. `EdgeChannel` (in
`edge.web.site`) has the resource tree find the request's handler then, and asks it
`body_sink_for(request, length)` (`edge.web.access`): the handler authenticates the request
and returns a `BodySpool` in the store's temp folder, or raises `BodyRefused`, in which
case not one byte of the body is read: the request is
answered with the refusal and the connection is closed. The HTTP layer itself never
writes into the store's folders.

`SpoolBudget` caps the bytes being spooled at once across all requests (the config's
`limits.spool_bytes`), so many concurrent uploads cannot fill the disk between them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from edge.api import errors
from edge.api.errors import CosError
from edge.store.folder.writes import UploadSpool

log = Logger()

MAX_OBJECT_BODY = 5 * 1024**3  # COS's cap on one PUT (object or part)
MAX_XML_BODY = 2 * 1024 * 1024  # an API document: CompleteMultipartUpload, origin rules...


class BodyRefused(Exception):
    """A body the edge will not take: the COS error to answer, with a specific message."""

    def __init__(self, error: CosError, message: str | None = None) -> None:
        super().__init__(message or error.message)
        self.error = error
        self.message = message


class SpoolBudget:
    """Bytes being spooled at once, across all requests, against one cap.

    A body of known length takes its whole length up front; a chunked one takes its bytes
    as they arrive. Bytes are given back when the spool is adopted by the store (the body
    is complete and becomes an object or part) or deleted.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0

    def take(self, size: int) -> bool:
        """Reserve `size` bytes; False (and nothing reserved) when that would pass the cap."""
        if self.in_use + size > self.capacity:
            return False
        self.in_use += size
        return True

    def give_back(self, size: int) -> None:
        self.in_use = max(0, self.in_use - size)


class BodySpool(UploadSpool):
    """An `UploadSpool` that counts against a `SpoolBudget` and never raises while the
    body arrives: a write error (ENOSPC, EIO) or a chunked body running past the budget
    deletes the file at once, drops the rest of the body, and leaves a `refusal`, which
    `EdgeRequest` answers at once (`EdgeChannel.abandon_body`)."""

    def __init__(
        self, tmp_dir: Path, limit: int, budget: SpoolBudget, reserved: int | None
    ) -> None:
        super().__init__(tmp_dir, limit)
        self._budget = budget
        self._upfront = reserved is not None
        self._held = reserved or 0
        self.refusal: BodyRefused | None = None

    def write(self, data: bytes) -> None:
        if self.refusal is not None:
            return
        if not self._upfront and not self.too_large and self.size + len(data) <= self.limit:
            if not self._budget.take(len(data)):
                log.warn(
                    "Request body dropped after {size} bytes: {in_use} of {capacity} "
                    "spooling bytes in use (limits.spool_bytes)",
                    size=self.size,
                    in_use=self._budget.in_use,
                    capacity=self._budget.capacity,
                    reason="spool budget exhausted",
                )
                self._refuse(BodyRefused(errors.SLOW_DOWN))
                return
            self._held += len(data)
        try:
            super().write(data)
        except OSError as e:
            log.error(
                "Cannot spool a request body into {path}: {reason}",
                path=self.path,
                reason=os.strerror(e.errno) if e.errno else str(e),
            )
            self._refuse(BodyRefused(errors.SERVICE_UNAVAILABLE))

    def _refuse(self, refusal: BodyRefused) -> None:
        self.refusal = refusal
        self.close()

    # Twisted rewinds the content file before processing; a refused spool has no file.
    def seek(self, offset: int, whence: int = 0) -> int:
        return 0 if self.refusal is not None else super().seek(offset, whence)

    def tell(self) -> int:
        return 0 if self.refusal is not None else super().tell()

    def read(self, size: int = -1) -> bytes:
        return b"" if self.refusal is not None else super().read(size)

    def detach(self) -> Any:
        """The store adopts the complete body: it is no longer being spooled."""
        file = super().detach()
        self._release()
        return file

    def close(self) -> None:
        try:
            super().close()
        except OSError:
            pass  # closing a file on a full disk can fail too; it is gone either way
        self._release()

    def _release(self) -> None:
        self._budget.give_back(self._held)
        self._held = 0


class BodySpools:
    """Opens `BodySpool`s in the store's temp folder under one budget, refusing (COS XML,
    never a traceback) what cannot be spooled: over the budget, or the disk or the file
    table full."""

    def __init__(self, tmp_dir: Path, budget: SpoolBudget) -> None:
        self.tmp_dir = tmp_dir
        self.budget = budget

    def open(self, length: int | None, limit: int) -> BodySpool:
        """A spool for a body of `length` bytes (None: chunked, counted as it arrives)."""
        if length is not None:
            if length > self.budget.capacity:
                raise BodyRefused(
                    errors.ENTITY_TOO_LARGE,
                    f"the body is larger than this edge spools at once ({self.budget.capacity}"
                    " bytes, limits.spool_bytes)",
                )
            if not self.budget.take(length):
                log.warn(
                    "Request body of {size} bytes refused: {in_use} of {capacity} spooling "
                    "bytes in use (limits.spool_bytes)",
                    size=length,
                    in_use=self.budget.in_use,
                    capacity=self.budget.capacity,
                    reason="spool budget exhausted",
                )
                raise BodyRefused(errors.SLOW_DOWN)
        try:
            return BodySpool(self.tmp_dir, limit, self.budget, length)
        except OSError as e:
            if length is not None:
                self.budget.give_back(length)
            log.error(
                "Cannot open a spool file in {tmp_dir}: {reason}",
                tmp_dir=str(self.tmp_dir),
                reason=os.strerror(e.errno) if e.errno else str(e),
            )
            raise BodyRefused(errors.SERVICE_UNAVAILABLE) from None


def refusal_of(request: Any) -> BodyRefused | None:
    """Why the request's body was refused, before it was read or while it arrived."""
    refused: BodyRefused | None = getattr(request, "body_refusal", None)
    if refused is None:
        refused = getattr(getattr(request, "content", None), "refusal", None)
    return refused
