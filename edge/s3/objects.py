"""The S3 calls on one object as a whole: HEAD, GET (streamed, ranged), PUT and DELETE.

These are the calls every read and every whole-object write of an S3-backed bucket makes, so
they live together, apart from the multipart upload protocol and the bucket-level calls; the
signing, sending and error mapping they share is `edge.s3.transport`'s.
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.web.iweb import IBodyProducer

from edge.s3.errors import error_from_response
from edge.s3.results import (
    ObjectInfo,
    ObjectStream,
    header_value,
    metadata_headers,
    object_info,
    request_id_of,
)
from edge.s3.transport import S3Transport


class ObjectCalls(S3Transport):
    """The whole-object calls of `S3Client`; see the module docstring."""

    async def head_object(self, bucket: str, key: str) -> ObjectInfo | None:
        """The object's info, or None when there is no such key (or no such bucket: HEAD
        answers carry no body to tell the two apart)."""
        response = await self._send("HEAD", bucket, key)
        await self._read(response)
        if response.code == 404:
            return None
        if response.code >= 300:
            raise error_from_response(response.code, b"", request_id_of(response))
        return object_info(response)

    async def get_object(
        self, bucket: str, key: str, range: str | None = None, if_match: str | None = None
    ) -> ObjectStream | None:
        """Start a GET (optionally `Range: bytes=...`); None when the key does not exist.

        Returns as soon as the headers are in: the body is taken from the `ObjectStream`.
        A range the object cannot satisfy raises S3Error 416 `InvalidRange`. With `if_match`
        (a quoted ETag) an object replaced since is S3Error 412 `PreconditionFailed`, so a
        second GET for another range of an object never mixes two versions.
        """
        headers = {"Range": range} if range else {}
        if if_match:
            headers["If-Match"] = if_match
        response = await self._send("GET", bucket, key, headers=headers)
        if response.code >= 300:
            error = await self._fail(response)
            if error.code == "NoSuchKey" or (response.code == 404 and error.code == "NotFound"):
                return None
            raise error
        return ObjectStream(response, object_info(response), self._reactor, self._timeout)

    async def put_object(
        self,
        bucket: str,
        key: str,
        body: bytes | IBodyProducer,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        if_none_match: bool = False,
        payload_sha256: str | None = None,
    ) -> str:
        """Store an object whole; returns its ETag (quoted).

        `body` is bytes or a producer of known length (`FileRangeProducer` for anything big).
        With `if_none_match` the request carries `If-None-Match: *`, so a store that supports
        it refuses to overwrite (S3Error 412 `PreconditionFailed`); others just overwrite.
        """
        headers = metadata_headers(metadata)
        headers["Content-Type"] = content_type or "application/octet-stream"
        if if_none_match:
            headers["If-None-Match"] = "*"
        response, _ = await self._call("PUT", bucket, key, None, headers, body, payload_sha256)
        return header_value(response, "etag") or ""

    async def delete_object(self, bucket: str, key: str) -> None:
        """Delete an object; deleting a missing key succeeds, as in S3."""
        await self._call("DELETE", bucket, key)
