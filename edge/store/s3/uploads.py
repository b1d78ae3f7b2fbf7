"""The management API's multipart uploads, as the S3 store's own multipart uploads.

COS's Initiate / Upload Part / List Parts / Complete / Abort map one to one onto S3's, so
nothing is kept on the edge: parts go from the spooled request body straight to the store,
the store keeps the upload's type and metadata, and any node can continue an upload another
node began. Uploads this store starts itself (publishing a big object, `tracking`) are left
out of every listing and never expired from here; they are the store's sweep's.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.internet.defer import Deferred

from edge.s3 import FileRangeProducer
from edge.store.interface import (
    MultipartError,
    ObjectMeta,
    Part,
    PendingWrite,
    SpooledBody,
    UploadInfo,
)
from edge.store.s3.writes import MAX_PARTS, WriteContext, store_metadata

_NO_SUCH_UPLOAD = ("NoSuchUpload", "The specified upload does not exist.")


def _quoted(etag: str) -> str:
    return '"' + etag.strip().strip('"') + '"'


class S3Uploads:
    """`edge.store.interface.Uploads` over S3 multipart uploads."""

    def __init__(
        self,
        context: WriteContext,
        store_bucket: Callable[[str], str],
        buckets: Callable[[], Iterable[str]],
    ) -> None:
        self._context = context
        self._store_bucket = store_bucket
        self._buckets = buckets

    def create(self, bucket: str, key: str, meta: ObjectMeta) -> Deferred[UploadInfo]:
        return Deferred.fromCoroutine(self._create(bucket, key, meta))

    async def _create(self, bucket: str, key: str, meta: ObjectMeta) -> UploadInfo:
        context = self._context
        content_type = meta.content_type or context.types.for_key(key)
        upload_id = await context.gate.run(
            "start upload",
            context.client.create_multipart_upload(
                self._store_bucket(bucket), key, content_type, store_metadata(meta)
            ),
        )
        return UploadInfo(upload_id, bucket, key, time.time(), meta)

    def get(self, upload_id: str, bucket: str, key: str | None = None) -> Deferred[UploadInfo]:
        return Deferred.fromCoroutine(self._get(upload_id, bucket, key))

    async def _get(self, upload_id: str, bucket: str, key: str | None) -> UploadInfo:
        for info in await self._list(bucket, key or ""):
            if info.upload_id == upload_id and (key is None or info.key == key):
                return info
        raise MultipartError(*_NO_SUCH_UPLOAD)

    def uploads(self, bucket: str, prefix: str = "") -> Deferred[list[UploadInfo]]:
        return Deferred.fromCoroutine(self._list(bucket, prefix))

    async def _list(self, bucket: str, prefix: str) -> list[UploadInfo]:
        context = self._context
        found = await context.gate.run(
            "list uploads",
            context.client.list_multipart_uploads(self._store_bucket(bucket), prefix or None),
        )
        internal = await context.uploads.running_ids()
        infos = [
            UploadInfo(u.upload_id, bucket, u.key, u.initiated, ObjectMeta())
            for u in found
            if u.upload_id not in internal and u.key.startswith(prefix)
        ]
        return sorted(infos, key=lambda i: (i.key, i.initiated))

    def put_part(self, info: UploadInfo, number: int, body: SpooledBody | None) -> Deferred[str]:
        return Deferred.fromCoroutine(self._put_part(info, number, body))

    async def _put_part(self, info: UploadInfo, number: int, body: SpooledBody | None) -> str:
        if not 1 <= number <= MAX_PARTS:
            raise MultipartError("InvalidArgument", f"partNumber must be 1-{MAX_PARTS}")
        context = self._context
        payload: bytes | FileRangeProducer = b""
        path = None
        if body is not None:
            body.detach().close()  # flushed; the spool no longer deletes it, so we do
            path = body.path
            if body.size:
                payload = FileRangeProducer(path, 0, body.size)
        try:
            etag = await context.gate.run(
                f"PUT part {number}",
                context.client.upload_part(
                    self._store_bucket(info.bucket), info.key, info.upload_id, number, payload
                ),
            )
        finally:
            if path is not None:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        return etag.strip('"')

    def parts(self, info: UploadInfo) -> Deferred[list[Part]]:
        return Deferred.fromCoroutine(self._parts(info))

    async def _parts(self, info: UploadInfo) -> list[Part]:
        context = self._context
        found = await context.gate.run(
            "list parts",
            context.client.list_parts(self._store_bucket(info.bucket), info.key, info.upload_id),
        )
        return [Part(p.number, p.etag.strip('"'), p.size, p.last_modified) for p in found]

    def complete(
        self, info: UploadInfo, requested: Sequence[tuple[int, str]]
    ) -> Deferred[PendingWrite]:
        d: Deferred[Any] = Deferred.fromCoroutine(self._complete(info, requested))
        return d

    async def _complete(
        self, info: UploadInfo, requested: Sequence[tuple[int, str]]
    ) -> CompletingUpload:
        """Check the list as COS does (and as the folder store does, before any write), so
        a bad list is refused here and the upload stays open."""
        if not requested:
            raise MultipartError("MalformedXML", "CompleteMultipartUpload lists no Part")
        numbers = [n for n, _ in requested]
        if numbers != sorted(set(numbers)):
            raise MultipartError("InvalidPartOrder", "Parts must be listed in ascending order.")
        stored = {(p.number, p.etag.lower()): p for p in await self._parts(info)}
        chosen = []
        for number, etag in requested:
            part = stored.get((number, etag.strip().strip('"').lower()))
            if part is None:
                raise MultipartError(
                    "InvalidPart", f"Part {number} was not uploaded or its ETag differs."
                )
            chosen.append(part)
        return CompletingUpload(self._context, self._store_bucket(info.bucket), info, chosen)

    def discard(self, info: UploadInfo) -> Deferred[None]:
        context = self._context
        return context.gate.defer(
            "abort upload",
            context.client.abort_multipart_upload(
                self._store_bucket(info.bucket), info.key, info.upload_id
            ),
        )

    def expire(self, older_than: float, now: float) -> Deferred[list[UploadInfo]]:
        return Deferred.fromCoroutine(self._expire(older_than, now))

    async def _expire(self, older_than: float, now: float) -> list[UploadInfo]:
        expired = []
        for bucket in list(self._buckets()):
            for info in await self._list(bucket, ""):
                if now - info.initiated > older_than:
                    await self.discard(info)
                    expired.append(info)
        return expired


class CompletingUpload:
    """The object a checked part list makes: `publish` completes the S3 upload (visible
    whole at once); `discard` leaves the upload open, as a refused Complete does in COS."""

    def __init__(
        self, context: WriteContext, store_bucket: str, info: UploadInfo, parts: list[Part]
    ) -> None:
        self._context = context
        self._store_bucket = store_bucket
        self.info = info
        self._parts = parts
        self.size = sum(p.size for p in parts)
        self.deleted_meanwhile = False
        # S3's multipart ETag: the MD5 of the parts' MD5s, and their count.
        self._md5 = hashlib.md5(usedforsecurity=False)
        for part in parts:
            self._md5.update(bytes.fromhex(part.etag) if _is_md5(part.etag) else b"")
        self._store_etag: str | None = None

    @property
    def etag(self) -> str:
        return self._store_etag or f"{self._md5.hexdigest()}-{len(self._parts)}"

    @property
    def md5_digest(self) -> bytes:
        return self._md5.digest()

    def write(self, data: bytes) -> None:
        raise RuntimeError("a completed multipart upload takes no more bytes")

    def append_blocking(self, data: bytes) -> None:
        self.write(data)

    def hash_blocking(self, data: bytes) -> None:
        self.write(data)

    def written(self) -> None:
        pass

    def open_reader(self) -> int:
        raise RuntimeError("a completed multipart upload has no local file")

    def publish(self, replace: bool = False, meta: ObjectMeta | None = None) -> Deferred[bool]:
        return Deferred.fromCoroutine(self._publish(replace))

    async def _publish(self, replace: bool) -> bool:
        context = self._context
        info = self.info
        pairs = [(p.number, _quoted(p.etag)) for p in self._parts]
        etag = await context.gate.run(
            "complete upload",
            context.client.complete_multipart_upload(
                self._store_bucket, info.key, info.upload_id, pairs, if_none_match=not replace
            ),
        )
        self._store_etag = etag.strip('"') or None
        return True

    def discard(self) -> None:
        pass


def _is_md5(etag: str) -> bool:
    return len(etag) == 32 and all(c in "0123456789abcdefABCDEF" for c in etag)
