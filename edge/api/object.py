"""Object writes: PUT Object (with its Content-Type and x-cos-meta-*) and DELETE Object.

Object reads are not here: a signed GET/HEAD goes back to the public read path, so hits,
misses and back-to-origin behave the same signed or not. This module also owns what an
object's metadata is (`meta_from`, shared with multipart initiation) and the
object sub-resources the edge does not implement (`?acl`, `?tagging`, ...), which must never
fall through to a plain read or delete.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection, Mapping

from twisted.logger import Logger
from twisted.web.server import Request

from edge.api import errors
from edge.api.auth import Denied, request_headers
from edge.api.headers import is_safe_value, is_token
from edge.api.replies import run, spooled_body
from edge.origin.copier import OriginCopier
from edge.store.interface import KeyConflict, ObjectMeta, ObjectStore
from edge.store.keys import UnsafePath

log = Logger()

_META_PREFIX = "x-cos-meta-"

# COS object sub-resources this edge does not implement. Without this check a signed
# `DELETE /key?tagging` deleted the object and `GET /key?acl` returned its bytes.
_OBJECT_SUBRESOURCES = frozenset(
    {"acl", "tagging", "restore", "select", "select-type", "torrent", "append", "versionid",
     "retention", "legal-hold", "attributes", "symlink", "rename", "policy", "cors"}
)  # fmt: skip


def is_object_subresource(query: Collection[str]) -> bool:
    """Whether the query (its parameter names) names an object sub-resource (`?acl`,
    `?tagging`, ...)."""
    return not _OBJECT_SUBRESOURCES.isdisjoint(query)


def refuse_object_subresource(query: Mapping[str, str]) -> None:
    """501 NotImplemented for an object operation named by a sub-resource we lack."""
    found = sorted(_OBJECT_SUBRESOURCES & query.keys())
    if found:
        raise Denied(errors.NOT_IMPLEMENTED, f"?{found[0]} on an object is not supported")


class ObjectOperations:
    """PUT and DELETE of one object of a bucket the dispatcher has found registered."""

    def __init__(self, store: ObjectStore, copier: OriginCopier | None = None) -> None:
        self._store = store
        self._copier = copier

    def render(
        self, request: Request, bucket: str, key: str, query: Mapping[str, str]
    ) -> bytes | int:
        """Answer an object write; any other method is 405."""
        refuse_object_subresource(query)
        method = request.method
        if method == b"PUT":
            if "x-cos-copy-source" in request_headers(request):
                raise Denied(errors.NOT_IMPLEMENTED, "PUT Object - Copy is not supported")
            return run(request, self._put(request, bucket, key))
        if method == b"DELETE":
            return run(request, self._delete(request, bucket, key))
        raise Denied(errors.METHOD_NOT_ALLOWED)

    async def _put(self, request: Request, bucket: str, key: str) -> None:
        headers = request_headers(request)
        meta = meta_from(headers)  # refused before anything is stored
        digest = None
        if "content-md5" in headers:
            try:
                digest = base64.b64decode(headers["content-md5"], validate=True)
            except (binascii.Error, ValueError):
                digest = b""
            if len(digest) != 16:
                raise Denied(errors.INVALID_DIGEST)
        spool = spooled_body(request)
        # An empty body is not spooled: it becomes an empty object.
        pending = self._store.new_upload(bucket, key, spool)
        try:
            if digest is not None and pending.md5_digest != digest:
                raise Denied(errors.BAD_DIGEST)
            try:
                await pending.publish(replace=True, meta=meta)
            except UnsafePath as e:
                raise Denied(errors.INVALID_ARGUMENT, str(e)) from None
            except KeyConflict:
                raise Denied(
                    errors.INVALID_ARGUMENT,
                    "the key collides with a folder of other keys (or a key is its folder)",
                ) from None
        except BaseException:
            pending.discard()
            raise
        log.info(
            "Stored {bucket}/{key}: {size} bytes uploaded",
            bucket=bucket,
            key=key,
            size=pending.size,
        )
        request.setHeader(b"etag", b'"%s"' % pending.etag.encode("ascii"))
        request.setHeader(b"content-length", b"0")
        request.finish()

    async def _delete(self, request: Request, bucket: str, key: str) -> None:
        if self._copier is not None:
            self._copier.drop_queued(bucket, key)  # a copy waiting for a slot: not now
        try:
            await self._store.delete_object(bucket, key)
        except UnsafePath as e:
            raise Denied(errors.INVALID_ARGUMENT, str(e)) from None
        log.info("Deleted {bucket}/{key}", bucket=bucket, key=key)
        request.setResponseCode(204)
        request.finish()


def meta_from(headers: Mapping[str, str]) -> ObjectMeta:
    """Content-Type and x-cos-meta-* of an upload, kept for its GETs.

    Refused (400 InvalidArgument, as COS does) unless every value is visible ASCII: they
    are sent back on every GET, and a value HTTP cannot carry would break each of them.
    """
    meta = ObjectMeta(
        headers.get("content-type", ""),
        {k: v for k, v in headers.items() if k.startswith(_META_PREFIX)},
    )
    for name, value in (("content-type", meta.content_type), *meta.user.items()):
        if not (is_token(name) and is_safe_value(value)):
            raise Denied(
                errors.INVALID_ARGUMENT,
                f"{name}: header values must be visible ASCII characters",
            )
    return meta
