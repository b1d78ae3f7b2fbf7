"""The S3 multipart upload protocol: create, upload parts, complete, list, abort.

A big object is written to the store as parts, and an interrupted upload has to be found
again (listing uploads and their parts) and finished or aborted; these calls are one protocol
with its own ids and paging, so they sit together, on `edge.s3.transport`'s plumbing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from xml.sax.saxutils import escape

from twisted.web.iweb import IBodyProducer

from edge.s3.errors import S3Unavailable, child_text, parse_xml
from edge.s3.results import Part, Upload, children_named, header_value, iso_date, metadata_headers
from edge.s3.transport import S3Transport


class MultipartCalls(S3Transport):
    """The multipart upload calls of `S3Client`; see the module docstring."""

    async def create_multipart_upload(
        self,
        bucket: str,
        key: str,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Start a multipart upload; returns its upload id. Type and metadata are set here."""
        headers = metadata_headers(metadata)
        headers["Content-Type"] = content_type or "application/octet-stream"
        _, data = await self._call("POST", bucket, key, {"uploads": None}, headers)
        upload_id = child_text(await self._xml(data), "UploadId")
        if not upload_id:
            raise S3Unavailable("store started an upload without an UploadId", 200, "BadXML")
        return upload_id

    async def upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        body: bytes | IBodyProducer,
        payload_sha256: str | None = None,
    ) -> str:
        """Upload part `part_number` (1..10000); returns the part's ETag for completion."""
        query = {"partNumber": str(part_number), "uploadId": upload_id}
        response, _ = await self._call("PUT", bucket, key, query, None, body, payload_sha256)
        etag = header_value(response, "etag")
        if not etag:
            raise S3Unavailable("store accepted a part without an ETag", response.code, "BadETag")
        return etag

    async def complete_multipart_upload(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: Sequence[tuple[int, str]],
        if_none_match: bool = False,
    ) -> str:
        """Join the parts (number, ETag) into the object; returns the object's ETag.

        With `if_none_match`, `If-None-Match: *` makes a store that supports it (SeaweedFS
        4.48, AWS) refuse to replace an existing key (S3Error 412); the upload then stays
        open, for the caller to abort."""
        xml = "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{escape(etag)}</ETag></Part>"
            for n, etag in sorted(parts)
        )
        body = f"<CompleteMultipartUpload>{xml}</CompleteMultipartUpload>".encode()
        headers = {"Content-Type": "application/xml"}
        if if_none_match:
            headers["If-None-Match"] = "*"
        _, data = await self._call("POST", bucket, key, {"uploadId": upload_id}, headers, body)
        root = parse_xml(data) if data.strip() else None
        etag = (child_text(root, "ETag") if root is not None else None) or ""
        if etag.strip('"'):
            return etag
        # Ceph RGW 16.2 answers `<ETag></ETag>` (Red Hat BZ 2266579). S3's multipart ETag is
        # the MD5 of the parts' binary MD5s plus "-count", which the parts give us without a
        # request (and without racing a later write); HEAD only when a part's is not an MD5.
        digests = [part.strip('"') for _, part in sorted(parts)]
        if digests and all(_is_md5(d) for d in digests):
            joined = hashlib.md5(b"".join(bytes.fromhex(d) for d in digests)).hexdigest()
            return f'"{joined}-{len(digests)}"'
        info = await self.head_object(bucket, key)  # type: ignore[attr-defined]
        return info.etag if info is not None else ""

    async def list_parts(self, bucket: str, key: str, upload_id: str) -> list[Part]:
        """Every uploaded part of an upload (all pages), by part number; S3Error 404
        `NoSuchUpload` when the upload is not (or no longer) there."""
        parts: list[Part] = []
        marker: str | None = None
        while True:
            query: dict[str, str | None] = {"uploadId": upload_id}
            if marker:
                query["part-number-marker"] = marker
            _, data = await self._call("GET", bucket, key, query)
            root = await self._xml(data)
            for item in children_named(root, "Part"):
                parts.append(
                    Part(
                        number=int(child_text(item, "PartNumber") or 0),
                        etag=child_text(item, "ETag") or "",
                        size=int(child_text(item, "Size") or 0),
                        last_modified=iso_date(child_text(item, "LastModified")),
                    )
                )
            marker = child_text(root, "NextPartNumberMarker")
            truncated = (child_text(root, "IsTruncated") or "").lower() == "true"
            if not truncated or not marker:
                return sorted(parts, key=lambda p: p.number)

    async def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        """Abort an upload and drop its parts."""
        await self._call("DELETE", bucket, key, {"uploadId": upload_id})

    async def list_multipart_uploads(self, bucket: str, prefix: str | None = None) -> list[Upload]:
        """All uploads in progress (every page), oldest key first."""
        uploads: list[Upload] = []
        markers: dict[str, str | None] = {}
        while True:
            query: dict[str, str | None] = {"uploads": None, **markers}
            if prefix is not None:
                query["prefix"] = prefix
            _, data = await self._call("GET", bucket, query=query)
            root = await self._xml(data)
            for item in children_named(root, "Upload"):
                uploads.append(
                    Upload(
                        key=child_text(item, "Key") or "",
                        upload_id=child_text(item, "UploadId") or "",
                        initiated=iso_date(child_text(item, "Initiated")),
                    )
                )
            key_marker = child_text(root, "NextKeyMarker")
            id_marker = child_text(root, "NextUploadIdMarker")
            truncated = (child_text(root, "IsTruncated") or "").lower() == "true"
            if not truncated or not (key_marker or id_marker):
                return uploads
            markers = {"key-marker": key_marker or "", "upload-id-marker": id_marker or ""}


def _is_md5(etag: str) -> bool:
    return len(etag) == 32 and all(c in "0123456789abcdefABCDEF" for c in etag)
