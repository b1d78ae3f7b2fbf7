"""Answering with a COS error from anywhere in the resource tree: now, or later, or after a bug.

Every resource answers its errors through these three, so each error carries the request id
and the same `<Resource>` (host and path, never the query), whether it is returned from
`render` or written after the answer was deferred (a hit waiting for its ETag, a miss
waiting for DNS).
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from edge.api import errors
from edge.api.errors import CosError

log = Logger()


def error(request: Request, cos_error: CosError, message: str | None = None) -> bytes:
    """Set the status and headers of `cos_error` on `request`; the XML body to return."""
    return errors.write_error(
        request,
        cos_error,
        errors.resource_of(request),
        request.request_id,  # type: ignore[attr-defined]
        message,
    )


def finish_error(request: Request, cos_error: CosError) -> None:
    """Answer `cos_error` on a request whose `render` already returned NOT_DONE_YET."""
    body = error(request, cos_error)
    if body:
        request.write(body)
    request.finish()


def unexpected(failure: Failure, request: Request, request_id: str) -> None:
    """A bug in a deferred answer: logged, and answered 500 InternalError if nothing has been
    sent yet (otherwise the connection is closed: the response cannot be completed)."""
    log.failure("Request {request_id} failed", failure, request_id=request_id)
    if request.finished or request._disconnected:
        return
    if request.startedWriting:
        if request.channel is not None:
            request.channel.loseConnection()
        return
    finish_error(request, errors.INTERNAL_ERROR)
