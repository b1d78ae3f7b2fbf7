"""Writing objects into the S3 store: bytes gathered in local scratch, then sent whole.

A copy or an upload is written to a scratch file under `tmp_dir` (hashed on the way), and
only `publish` sends it: one PUT up to the multipart threshold, a multipart upload of file
ranges above it. S3 makes either visible whole or not at all; a failed multipart upload is
aborted, and one left by a node that died is swept (`tracking`). Create-only writes (copies)
are checked with HEAD first and sent with `If-None-Match: *`, so an object already there is
never replaced (the store answers 412, and the write fires False); a multipart one is checked
with HEAD again before completing, for stores that ignore the header there (Ceph RGW 16.2).
A watched copy also asks the delete counters before and after writing and takes back what a
DELETE raced.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from edge.s3 import FileRangeProducer, S3Client, S3Error, S3Unavailable
from edge.store.folder.objects import ContentTypes
from edge.store.interface import DeleteWatch, ObjectMeta, SpooledBody, StoreUnavailable
from edge.store.s3.calls import StoreGate
from edge.store.s3.deletes import S3DeleteWatch
from edge.store.s3.objects import USER_META
from edge.store.s3.tracking import InternalUpload, InternalUploads

log = Logger()

MiB = 1024 * 1024
MIN_PART = 5 * MiB  # S3's smallest part but the last
MAX_PARTS = 10_000


@dataclass(frozen=True)
class WriteContext:
    """What every write of one store shares."""

    client: S3Client
    gate: StoreGate
    tmp_dir: Path
    types: ContentTypes
    uploads: InternalUploads
    multipart_threshold: int
    part_size: int


def store_metadata(meta: ObjectMeta | None) -> dict[str, str]:
    """`x-cos-meta-*` headers as the S3 client's metadata names (it adds `x-amz-meta-`)."""
    user = meta.user if meta is not None else {}
    return {
        name[len(USER_META) :]: value
        for name, value in user.items()
        if name.lower().startswith(USER_META)
    }


class S3PendingWrite:
    """An object being written; see the module docstring."""

    def __init__(
        self,
        context: WriteContext,
        bucket: str,
        store_bucket: str,
        key: str,
        spool: SpooledBody | None = None,
        watch: DeleteWatch | None = None,
    ) -> None:
        self._context = context
        self.bucket = bucket
        self.store_bucket = store_bucket
        self.key = key
        self.watch = watch
        self.deleted_meanwhile = False
        self._store_etag: str | None = None
        self._discarded = False
        self._file: BinaryIO | None
        if spool is not None:
            # An upload already in local scratch: taken over as it is, no second copy.
            self.size = spool.size
            self._md5: Any = spool.md5
            self.temp_path = spool.path
            file = spool.detach()
            file.close()
            self._file = None
            return
        self.size = 0
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.temp_path = str(context.tmp_dir / f"{uuid.uuid4().hex}.part")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        self._file = os.fdopen(os.open(self.temp_path, flags, 0o600), "wb")

    def write(self, data: bytes) -> None:
        assert self._file is not None, "write after publish/discard"
        self._file.write(data)
        self._md5.update(data)
        self.size += len(data)

    @property
    def etag(self) -> str:
        """Hex MD5 of what was written; once published, the store's ETag (unquoted), which
        for a multipart upload is not an MD5 but is what GET and HEAD will answer."""
        return self._store_etag or self._md5.hexdigest()

    @property
    def md5_digest(self) -> bytes:
        return bytes(self._md5.digest())

    def publish(self, replace: bool = False, meta: ObjectMeta | None = None) -> Deferred[bool]:
        return Deferred.fromCoroutine(self._publish(replace, meta))

    async def _publish(self, replace: bool, meta: ObjectMeta | None) -> bool:
        if self._file is not None:
            self._file.close()
            self._file = None
        gate = self._context.gate
        client = self._context.client
        try:
            if await self._deleted():
                return False
            if not replace:
                found = await gate.run("HEAD", client.head_object(self.store_bucket, self.key))
                if found is not None:
                    return False
            content_type = (meta.content_type if meta else "") or self._context.types.for_key(
                self.key
            )
            metadata = store_metadata(meta)
            if self.size <= self._context.multipart_threshold:
                etag = await gate.run("PUT", self._put(replace, content_type, metadata))
            else:
                etag = await self._multipart(replace, content_type, metadata)
            if etag is None:
                return False  # the key was taken meanwhile; it is kept
            if await self._deleted():
                await self._take_back(etag)
                return False
            self._store_etag = etag.strip('"')
            return True
        except ValueError:
            if not self._discarded:
                raise
            # discard() took the scratch file away under a running publish (the client
            # or the copy gave up): the upload was aborted; report it as not written.
            raise StoreUnavailable(f"write of {self.bucket}/{self.key} discarded") from None
        finally:
            self._unlink()

    async def _deleted(self) -> bool:
        watch = self.watch
        if watch is None:
            return False
        seen = await watch.check() if isinstance(watch, S3DeleteWatch) else watch.deleted()
        if seen:
            self.deleted_meanwhile = True
        return seen

    async def _put(self, replace: bool, content_type: str, metadata: dict[str, str]) -> str | None:
        body: bytes | FileRangeProducer = (
            FileRangeProducer(self.temp_path, 0, self.size) if self.size else b""
        )
        try:
            return await self._context.client.put_object(
                self.store_bucket,
                self.key,
                body,
                content_type=content_type,
                metadata=metadata,
                if_none_match=not replace,
            )
        except S3Error as e:
            if not replace and e.code == "PreconditionFailed":
                return None
            raise

    async def _multipart(
        self, replace: bool, content_type: str, metadata: dict[str, str]
    ) -> str | None:
        """Send the file as parts; aborts the upload on any failure or refusal."""
        context = self._context
        client, gate, sb = context.client, context.gate, self.store_bucket
        upload_id = await gate.run(
            "start upload", client.create_multipart_upload(sb, self.key, content_type, metadata)
        )
        upload = InternalUpload(sb, self.key, upload_id, time.time())
        done = False
        try:
            await context.uploads.begin(upload)
            part_size = max(context.part_size, MIN_PART, -(-self.size // MAX_PARTS))
            parts = []
            for number, offset in enumerate(range(0, self.size, part_size), 1):
                length = min(part_size, self.size - offset)
                producer = FileRangeProducer(self.temp_path, offset, length)
                etag = await gate.run(
                    f"PUT part {number}",
                    client.upload_part(sb, self.key, upload_id, number, producer),
                )
                parts.append((number, etag))
            result = await gate.run("complete upload", self._complete(upload_id, parts, replace))
            done = result is not None
            return result
        finally:
            if not done:
                await self._abort(upload_id)
            await context.uploads.end(upload)

    async def _complete(
        self, upload_id: str, parts: list[tuple[int, str]], replace: bool
    ) -> str | None:
        client = self._context.client
        # Ceph RGW 16.2 ignores If-None-Match on the completion and would replace a key
        # written while the parts went up; a second HEAD narrows that to one round trip.
        if not replace and await client.head_object(self.store_bucket, self.key) is not None:
            return None
        try:
            return await client.complete_multipart_upload(
                self.store_bucket, self.key, upload_id, parts, if_none_match=not replace
            )
        except S3Error as e:
            if not replace and e.code == "PreconditionFailed":
                return None
            raise

    async def _abort(self, upload_id: str) -> None:
        try:
            await self._context.client.abort_multipart_upload(
                self.store_bucket, self.key, upload_id
            )
        except S3Error as e:
            if not isinstance(e, S3Unavailable):
                self._context.gate.neutral(f"abort of upload {upload_id}", e)
            log.info(
                "Upload {upload_id} of {bucket}/{key} not aborted ({reason}); the sweep will",
                upload_id=upload_id,
                bucket=self.store_bucket,
                key=self.key,
                reason=str(e),
            )

    async def _take_back(self, etag: str) -> None:
        """A DELETE raced this copy's write: remove what was written, unless the key holds
        something else by now (a PUT since)."""
        gate, client = self._context.gate, self._context.client
        found = await gate.run("HEAD", client.head_object(self.store_bucket, self.key))
        if found is not None and found.etag == etag:
            await gate.run("DELETE", client.delete_object(self.store_bucket, self.key))

    def _unlink(self) -> None:
        try:
            os.unlink(self.temp_path)
        except FileNotFoundError:
            pass

    def discard(self) -> None:
        """Drop the write; safe to call more than once and after (or during) publish."""
        self._discarded = True
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
        self._unlink()
