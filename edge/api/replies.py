"""How a management operation answers: an XML document, a COS error, or later.

The operation families return a body for Twisted to send, or start a coroutine and return
`NOT_DONE_YET` through `run`; a coroutine finishes its request with `finish_xml` or, when it
raises `Denied`, is finished here with the COS error document. A request body reaches an
operation as the `UploadSpool` `EdgeRequest` spooled it into (`spooled_body`).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any
from xml.etree import ElementTree as ET

from twisted.internet.defer import ensureDeferred
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

from edge.api import cosxml, errors
from edge.api.auth import Denied
from edge.api.errors import CosError
from edge.cluster.redis import RedisUnavailable
from edge.store.folder.writes import UploadSpool
from edge.store.interface import StoreUnavailable


def run(request: Request, coroutine: Coroutine[Any, Any, None]) -> int:
    """Start an operation that finishes `request` itself; a `Denied` it raises is answered
    as its COS error, anything else as Twisted's (the site's XML) processing failure."""
    d = ensureDeferred(coroutine)
    d.addErrback(_failed, request)
    return NOT_DONE_YET


def _failed(failure: Failure, request: Request) -> None:
    if request.finished or request._disconnected:
        return
    denied = failure.value
    if isinstance(denied, Denied):
        finish_error(request, denied.error, denied.message)
        return
    if failure.check(StoreUnavailable, RedisUnavailable) and not request.startedWriting:
        # The store or the cluster's Redis is out (SPEC §8): try again later, not a bug.
        finish_error(request, errors.SERVICE_UNAVAILABLE)
        return
    request.processingFailed(failure)


def xml_reply(request: Request, root: ET.Element) -> bytes:
    """The document's bytes, with the headers that describe them set on `request`."""
    body = cosxml.document(root)
    request.setHeader(b"content-type", b"application/xml")
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


def finish_xml(request: Request, root: ET.Element) -> None:
    """Send the document (headers only for HEAD) and finish the request."""
    body = xml_reply(request, root)
    if request.method != b"HEAD":
        request.write(body)
    request.finish()


def finish_error(request: Request, error: CosError, message: str | None = None) -> None:
    """Send COS's error document, with the request's id, and finish the request."""
    body = errors.write_error(
        request,
        error,
        errors.resource_of(request),
        request.request_id,  # type: ignore[attr-defined]
        message,
    )
    if body:
        request.write(body)
    request.finish()


def spooled_body(request: Request) -> UploadSpool | None:
    """The request's body as spooled by `EdgeRequest` (None when it had none)."""
    content = request.content
    if not isinstance(content, UploadSpool):
        return None
    if content.too_large:
        raise Denied(errors.ENTITY_TOO_LARGE)
    return content
