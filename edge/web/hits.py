"""A hit: an object the store holds, answered from what the store opened (SPEC §3).

In `static.File.render_GET`'s order: metadata headers, the ETag, conditionals (304/412),
the range (206/416), HEAD, then the body, which the store's object sends itself
(`StoredObject.send`: from a file for the folder store, streamed for an S3 store). This
module never touches object bytes; it decides what HTTP answer they make.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.python.failure import Failure
from twisted.web.server import Request

from edge.api import errors
from edge.api.headers import CONTENT_LENGTH, canonical, is_safe_value, is_token, send_as_is, set_own
from edge.store.interface import StoredObject, StoreUnavailable
from edge.web.http import (
    RangeResult,
    http_date,
    if_range_allows,
    parse_range,
    precondition_status,
)
from edge.web.replies import finish_error, unexpected
from edge.web.turns import then

_dates: dict[float, bytes] = {}


_IF_MATCH = canonical(b"if-match")
_IF_NONE_MATCH = canonical(b"if-none-match")
_IF_MODIFIED_SINCE = canonical(b"if-modified-since")
_IF_UNMODIFIED_SINCE = canonical(b"if-unmodified-since")
_IF_RANGE = canonical(b"if-range")
_RANGE = canonical(b"range")
_ETAG = canonical(b"etag")
_LAST_MODIFIED = canonical(b"last-modified")
_ACCEPT_RANGES = canonical(b"accept-ranges")
_CONTENT_TYPE = canonical(b"content-type")
_CONDITIONS = frozenset((_IF_MATCH, _IF_NONE_MATCH, _IF_MODIFIED_SINCE, _IF_UNMODIFIED_SINCE))


def _last(sent: dict[bytes, Sequence[bytes]], name: bytes) -> bytes | None:
    """`Request.getHeader` on the headers read once: the last value, or None."""
    values = sent.get(name)
    return values[-1] if values else None


def _last_modified(mtime: float) -> bytes:
    """`http_date(mtime)`, remembered: formatting a date was 2 % of a hit."""
    date = _dates.get(mtime)
    if date is None:
        if len(_dates) > 10_000:
            _dates.clear()
        date = _dates[mtime] = http_date(mtime)
    return date


class Hits:
    """Answers requests for objects the store holds; one instance serves all buckets."""

    def serve(self, request: Request, obj: StoredObject) -> None:
        """Answer `request` from `obj` (opened by the caller; closed here, always)."""
        meta = obj.meta
        content_type = obj.content_type
        # Metadata that is not HTTP-safe (written by hand, or before PUT checked it) is
        # left out rather than failing every GET of the object.
        if meta.content_type and is_safe_value(meta.content_type):
            content_type = meta.content_type
        for name, value in meta.user.items():
            if is_token(name) and is_safe_value(value):
                request.setHeader(send_as_is(name.encode("latin-1")), value.encode("utf-8"))
        # Fired already when the ETag is known: answered in this turn.
        then(obj.etag(), _respond, _failed, request, obj, content_type)


def _respond(etag_hex: str, request: Request, obj: StoredObject, content_type: str) -> None:
    if request.finished or request._disconnected:
        obj.close()
        return
    etag = b'"' + etag_hex.encode("ascii") + b'"'
    headers = request.responseHeaders
    set_own(headers, _ETAG, etag)
    set_own(headers, _LAST_MODIFIED, _last_modified(obj.mtime))
    set_own(headers, _ACCEPT_RANGES, b"bytes")
    # The request's headers, read once: most hits send none of the six asked for here
    # (asking for each by name was a twentieth of a 4 KiB hit).
    sent = dict(request.requestHeaders.getAllRawHeaders())
    status = None
    if not _CONDITIONS.isdisjoint(sent):
        status = precondition_status(
            etag=etag,
            mtime=obj.mtime,
            if_match=_last(sent, _IF_MATCH),
            if_none_match=_last(sent, _IF_NONE_MATCH),
            if_modified_since=_last(sent, _IF_MODIFIED_SINCE),
            if_unmodified_since=_last(sent, _IF_UNMODIFIED_SINCE),
        )
    if status == 304:
        obj.close()
        request.setResponseCode(304)
        request.finish()
        return
    if status == 412:
        obj.close()
        finish_error(request, errors.PRECONDITION_FAILED)
        return
    set_own(headers, _CONTENT_TYPE, content_type.encode("ascii"))
    byte_range = None
    if _RANGE in sent and if_range_allows(_last(sent, _IF_RANGE), etag, obj.mtime):
        byte_range = parse_range(_last(sent, _RANGE), obj.size)
    if byte_range is RangeResult.UNSATISFIABLE:
        obj.close()
        request.setHeader(b"content-range", b"bytes */%d" % obj.size)
        finish_error(request, errors.INVALID_RANGE)
        return
    if isinstance(byte_range, tuple):
        first, last = byte_range
        length = last - first + 1
        request.setResponseCode(206)
        request.setHeader(b"content-range", b"bytes %d-%d/%d" % (first, last, obj.size))
    else:
        first, length = 0, obj.size
    set_own(headers, CONTENT_LENGTH, b"%d" % length)
    if request.method == b"HEAD" or length == 0:
        obj.close()
        request.finish()
        return
    then(obj.send(request, first, length), _sent, _send_failed, request)


def _sent(_: None, request: Request) -> None:
    """The object finished the request itself."""


def _send_failed(failure: Failure, request: Request) -> None:
    """The body could not be sent: 503 when nothing went out yet (the store is away), a
    dropped connection otherwise, so a client never takes a short body for a whole one."""
    if request.finished or request._disconnected:
        return
    if failure.check(StoreUnavailable) and not request.startedWriting:
        request.setResponseCode(503)
        request.responseHeaders.removeHeader(b"content-range")
        finish_error(request, errors.SERVICE_UNAVAILABLE)
        return
    unexpected(failure, request, request.request_id)  # type: ignore[attr-defined]


def _failed(failure: Failure, request: Request, obj: StoredObject, content_type: str = "") -> None:
    obj.close()
    unexpected(failure, request, request.request_id)  # type: ignore[attr-defined]
