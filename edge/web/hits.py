"""A hit: an object the store holds, answered from its file (SPEC §3).

In `static.File.render_GET`'s order: metadata headers, the ETag (cached, or computed off
the reactor), conditionals (304/412), the range (206/416), HEAD, then the body. The body
goes out through `send_body` alone, which is the one place that reads the store's open
file: inline in the answering reactor turn when small, by sendfile(2) on plain TCP, by a
Twisted static producer otherwise.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.python.failure import Failure
from twisted.web.server import Request
from twisted.web.static import NoRangeStaticProducer, SingleRangeStaticProducer

from edge.api import errors
from edge.api.headers import is_safe_value, is_token, send_as_is
from edge.store.files import ObjectStore, StoredObject
from edge.web import sendfile
from edge.web.http import (
    RangeResult,
    http_date,
    if_range_allows,
    parse_range,
    precondition_status,
)
from edge.web.replies import finish_error, unexpected

# A body up to this size is read and written in the reactor turn that answers the request:
# no producer, no Cooperator tick (measured: a 4 KiB hit spent a third of its time there).
INLINE_MAX = 128 * 1024


class _WholeFile(NoRangeStaticProducer):
    bufferSize = 256 * 1024  # fewer, larger writes: measured faster than Twisted's 64 KiB


class _FileRange(SingleRangeStaticProducer):
    bufferSize = 256 * 1024


def send_body(request: Request, obj: StoredObject, first: int, length: int) -> None:
    """Send `length` bytes of `obj`'s file from `first` as the body, then finish `request`
    and close the file. Status and headers (Content-Length included) are already set; a
    206 sends its range, anything else the whole file."""
    if length <= INLINE_MAX:
        _write_inline(request, obj.file, first, length)
    elif sendfile.usable(request):
        sendfile.SendfileBody(request, obj.file, first, length).start()
    elif request.code == 206:
        _FileRange(request, obj.file, first, length).start()
    else:
        _WholeFile(request, obj.file).start()


def _write_inline(request: Request, file: Any, first: int, length: int) -> None:
    try:
        data = os.pread(file.fileno(), length, first)
    finally:
        file.close()
    request.write(data)
    channel = request.channel
    request.finish()
    if len(data) < length and channel is not None:
        channel.loseConnection()  # the file shrank under us: the length cannot be kept


_dates: dict[float, bytes] = {}


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

    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    def serve(self, request: Request, bucket: str, key: str, obj: StoredObject) -> None:
        """Answer `request` from `obj` (opened by the caller; closed here, always)."""
        meta = self._store.read_meta(bucket, key, obj)
        if meta is not None:
            # Metadata that is not HTTP-safe (written by hand, or before PUT checked it) is
            # left out rather than failing every GET of the object.
            if meta.content_type and is_safe_value(meta.content_type):
                obj = obj.with_content_type(meta.content_type)
            for name, value in meta.user.items():
                if not (is_token(name) and is_safe_value(value)):
                    continue
                request.setHeader(send_as_is(name.encode("latin-1")), value.encode("utf-8"))
        cached = self._store.etags.get(obj.identity)
        if cached is not None:  # the usual case: answered now, no Deferred
            try:
                _respond(cached, request, obj)
            except Exception:
                _failed(Failure(), request, obj)
            return
        d = self._store.etag(bucket, key, obj)
        d.addCallback(_respond, request, obj)
        d.addErrback(_failed, request, obj)


def _respond(etag_hex: str, request: Request, obj: StoredObject) -> None:
    if request.finished or request._disconnected:
        obj.file.close()
        return
    etag = b'"' + etag_hex.encode("ascii") + b'"'
    request.setHeader(b"etag", etag)
    request.setHeader(b"last-modified", _last_modified(obj.mtime))
    request.setHeader(b"accept-ranges", b"bytes")
    status = precondition_status(
        etag=etag,
        mtime=obj.mtime,
        if_match=request.getHeader(b"if-match"),
        if_none_match=request.getHeader(b"if-none-match"),
        if_modified_since=request.getHeader(b"if-modified-since"),
        if_unmodified_since=request.getHeader(b"if-unmodified-since"),
    )
    if status == 304:
        obj.file.close()
        request.setResponseCode(304)
        request.finish()
        return
    if status == 412:
        obj.file.close()
        finish_error(request, errors.PRECONDITION_FAILED)
        return
    request.setHeader(b"content-type", obj.content_type.encode("ascii"))
    byte_range = None
    if if_range_allows(request.getHeader(b"if-range"), etag, obj.mtime):
        byte_range = parse_range(request.getHeader(b"range"), obj.size)
    if byte_range is RangeResult.UNSATISFIABLE:
        obj.file.close()
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
    request.setHeader(b"content-length", b"%d" % length)
    if request.method == b"HEAD" or length == 0:
        obj.file.close()
        request.finish()
        return
    send_body(request, obj, first, length)


def _failed(failure: Failure, request: Request, obj: StoredObject) -> None:
    obj.file.close()
    unexpected(failure, request, request.request_id)  # type: ignore[attr-defined]
