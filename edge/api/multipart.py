"""Multipart uploads as the API answers them: initiate, upload part, complete, abort, and
list parts (List Multipart Uploads is a bucket listing: see `edge.api.bucket`).

The part bookkeeping is the store's (`ObjectStore.uploads`: part files for the folder
store, S3's own multipart for an S3 store); this module reads the requests, including the
CompleteMultipartUpload document (`parse_complete`), and writes the COS XML answers. A
completed upload is published with the metadata it was initiated with, like a PUT Object.
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.logger import Logger
from twisted.web.server import Request

from edge.api import cosxml, errors
from edge.api.auth import Denied, request_headers
from edge.api.object import meta_from
from edge.api.replies import finish_xml, run, spooled_body
from edge.store.interface import (
    MAX_PARTS,
    KeyConflict,
    MultipartError,
    ObjectMeta,
    UploadInfo,
    Uploads,
)
from edge.store.keys import UnsafePath

log = Logger()

_MAX_COMPLETE_BODY = 2 * 1024 * 1024  # 10,000 parts' worth of <Part> elements


def is_multipart(query: Mapping[str, str]) -> bool:
    """Whether an object request is about a multipart upload rather than the object."""
    return "uploads" in query or "uploadid" in query or "partnumber" in query


class MultipartOperations:
    """The object-level multipart operations of a bucket the dispatcher found registered."""

    def __init__(self, uploads: Uploads) -> None:
        self._uploads = uploads

    def render(
        self, request: Request, bucket: str, key: str, query: Mapping[str, str]
    ) -> bytes | int:
        """Route by method and query: POST ?uploads starts one, PUT ?partNumber&uploadId
        stores a part, POST/DELETE/GET ?uploadId complete, abort and list it."""
        method = request.method
        if method == b"POST" and "uploads" in query:
            meta = meta_from(request_headers(request))
            return run(request, self._initiate(request, bucket, key, meta))
        return run(request, self._on_upload(request, bucket, key, query))

    async def _on_upload(
        self, request: Request, bucket: str, key: str, query: Mapping[str, str]
    ) -> None:
        method = request.method
        try:
            info = await self._uploads.get(query.get("uploadid", ""), bucket, key)
            if method == b"PUT" and "partnumber" in query:
                return await self._upload_part(request, info, query["partnumber"])
            if method == b"POST":
                return await self._complete(request, info)
            if method == b"DELETE":
                return await self._abort(request, info)
            if method == b"GET":
                return await self._list_parts(request, info)
        except MultipartError as e:
            raise Denied(errors.by_code(e.code), e.message) from None
        raise Denied(errors.METHOD_NOT_ALLOWED)

    async def _initiate(self, request: Request, bucket: str, key: str, meta: ObjectMeta) -> None:
        info = await self._uploads.create(bucket, key, meta)
        log.info(
            "Multipart upload {upload_id} of {bucket}/{key} started",
            upload_id=info.upload_id,
            bucket=bucket,
            key=key,
        )
        root = cosxml.element("InitiateMultipartUploadResult")
        cosxml.sub(root, "Bucket", bucket)
        cosxml.sub(root, "Key", key)
        cosxml.sub(root, "UploadId", info.upload_id)
        finish_xml(request, root)

    async def _upload_part(self, request: Request, info: UploadInfo, part_number: str) -> None:
        try:
            number = int(part_number)
        except ValueError:
            raise Denied(errors.INVALID_ARGUMENT, "partNumber must be a number") from None
        etag = await self._uploads.put_part(info, number, spooled_body(request))
        request.setHeader(b"etag", b'"%s"' % etag.encode("ascii"))
        request.setHeader(b"content-length", b"0")
        request.finish()

    async def _complete(self, request: Request, info: UploadInfo) -> None:
        assert request.content is not None
        body = request.content.read(_MAX_COMPLETE_BODY + 1)
        try:
            requested = parse_complete(body)
            pending = await self._uploads.complete(info, requested)
        except MultipartError as e:
            raise Denied(errors.by_code(e.code), e.message) from None
        try:
            await pending.publish(replace=True, meta=info.meta)
        except UnsafePath as e:
            pending.discard()
            raise Denied(errors.INVALID_ARGUMENT, str(e)) from None
        except KeyConflict:
            pending.discard()
            raise Denied(errors.INVALID_ARGUMENT, "the key collides with a folder") from None
        except BaseException:
            pending.discard()
            raise
        await self._uploads.discard(info)  # up to 10,000 part files
        log.info(
            "Stored {bucket}/{key}: {size} bytes from {parts} parts",
            bucket=info.bucket,
            key=info.key,
            size=pending.size,
            parts=len(requested),
        )
        host = (request.getHeader(b"host") or b"").decode("latin-1")
        root = cosxml.element("CompleteMultipartUploadResult")
        cosxml.sub(root, "Location", f"{host}/{info.key}")
        cosxml.sub(root, "Bucket", info.bucket)
        cosxml.sub(root, "Key", info.key)
        cosxml.sub(root, "ETag", f'"{pending.etag}"')
        finish_xml(request, root)

    async def _abort(self, request: Request, info: UploadInfo) -> None:
        await self._uploads.discard(info)  # up to 10,000 part files
        request.setResponseCode(204)
        request.finish()

    async def _list_parts(self, request: Request, info: UploadInfo) -> None:
        parts = await self._uploads.parts(info)  # a stat per part
        root = cosxml.element("ListPartsResult")
        cosxml.sub(root, "Bucket", info.bucket)
        cosxml.sub(root, "Key", info.key)
        cosxml.sub(root, "UploadId", info.upload_id)
        cosxml.owner(root)
        cosxml.sub(root, "StorageClass", "STANDARD")
        cosxml.sub(root, "PartNumberMarker", 0)
        cosxml.sub(root, "MaxParts", MAX_PARTS)
        cosxml.sub(root, "IsTruncated", "false")
        for p in parts:
            part = cosxml.sub(root, "Part")
            cosxml.sub(part, "PartNumber", p.number)
            cosxml.sub(part, "LastModified", cosxml.timestamp(p.modified))
            cosxml.sub(part, "ETag", f'"{p.etag}"')
            cosxml.sub(part, "Size", p.size)
        finish_xml(request, root)


def parse_complete(body: bytes) -> list[tuple[int, str]]:
    """(PartNumber, ETag) pairs of a CompleteMultipartUpload document.

    Parsed without DTDs or entities, by local names (S3's namespace is accepted). A body
    that is not that document is MalformedXML, as COS answers it.
    """
    try:
        root = cosxml.parse(body)
    except cosxml.XMLProblem as e:
        raise MultipartError("MalformedXML", str(e)) from None
    if root.tag != "CompleteMultipartUpload":
        raise MultipartError("MalformedXML", "root element must be CompleteMultipartUpload")
    pairs = []
    for part in root.findall("Part"):
        try:
            pairs.append((int(part.findtext("PartNumber") or ""), part.findtext("ETag") or ""))
        except ValueError:
            raise MultipartError("MalformedXML", "PartNumber must be a number") from None
    return pairs
