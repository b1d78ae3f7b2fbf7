"""Writing objects into the S3 store: bytes gathered in local scratch, big ones sent as
they come.

A copy or an upload is written to a scratch file under `tmp_dir` (hashed on the way). Up to
the multipart threshold nothing leaves the node before `publish`, which sends one PUT; past
it, `write` starts a multipart upload and its complete parts go up from the file while the
rest is still being written (`parts`: at most two at once), and `publish` sends the last
part and completes. A write published with other metadata than its key's defaults (an API
PUT names them only then; those arrive whole in a spool, so nothing was sent yet) is sent
from the file at publish. S3 makes either visible whole or not at all; a failed multipart
upload (a part refused, the store gone, a discard) is aborted, and one left by a node that
died is swept (`tracking`). Create-only writes (copies) are checked with HEAD first and
sent with `If-None-Match: *`, so an object already there is never replaced (the store
answers 412, and the write fires False); a multipart one is checked with HEAD again before
completing, for stores that ignore the header there (Ceph RGW 16.2). A watched copy also
asks the delete counters before and after writing and takes back what a DELETE raced.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from edge.s3 import FileRangeProducer, S3Client, S3Error
from edge.store.folder.objects import ContentTypes
from edge.store.interface import DeleteWatch, ObjectMeta, SpooledBody, StoreUnavailable
from edge.store.s3.calls import StoreGate
from edge.store.s3.deletes import S3DeleteWatch
from edge.store.s3.objects import ORIGIN_META, USER_META, origin_metadata
from edge.store.s3.parts import StreamedUpload
from edge.store.s3.tracking import InternalUploads

log = Logger()

MiB = 1024 * 1024
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
    """`x-cos-meta-*` headers as the S3 client's metadata names (it adds `x-amz-meta-`),
    and a copy's provenance beside them (`cosedge-origin-*`, which uploads cannot set)."""
    user = meta.user if meta is not None else {}
    metadata = {
        name[len(USER_META) :]: value
        for name, value in user.items()
        if name.lower().startswith(USER_META)
        and not name[len(USER_META) :].lower().startswith(ORIGIN_META)
    }
    metadata.update(origin_metadata(meta.origin if meta is not None else None))
    return metadata


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
        planned: ObjectMeta | None = None,
    ) -> None:
        self._context = context
        # What publish will be given, when known before the first byte (a copy's origin
        # headers): a multipart upload begun while writing starts with it, not the defaults.
        self._planned = planned
        self.bucket = bucket
        self.store_bucket = store_bucket
        self.key = key
        self.watch = watch
        self.deleted_meanwhile = False
        self._store_etag: str | None = None
        self._discarded = False
        self._parts: StreamedUpload | None = None
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
        self.append_blocking(data)
        self.hash_blocking(data)
        self.written()

    def append_blocking(self, data: bytes) -> None:
        # The file object is locked against the reactor's flush before a part is read back;
        # the size is this write's alone.
        assert self._file is not None, "write after publish/discard"
        self._file.write(data)
        self._file.flush()  # in the file for `open_reader` (no system call when it is empty)
        self.size += len(data)

    def append_all_blocking(self, chunks: Sequence[bytes]) -> None:
        assert self._file is not None, "write after publish/discard"
        self._file.writelines(chunks)
        self._file.flush()
        self.size += sum(map(len, chunks))

    def hash_blocking(self, data: bytes) -> None:
        self._md5.update(data)

    def written(self) -> None:
        """Start uploading the parts `append_blocking` completed (reactor work)."""
        if self._file is None:
            return  # discarded meanwhile
        if self._parts is not None:
            self._parts.feed(self.size)
        elif self.size > self._context.multipart_threshold:
            # Parts go up while the rest is written, under the metadata publish will have.
            planned = self._planned
            content_type = (planned.content_type if planned else "") or self._context.types.for_key(
                self.key
            )
            self._parts = self._upload(content_type, store_metadata(planned))
            self._parts.feed(self.size)

    def open_reader(self) -> int:
        return os.open(self.temp_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)

    def _upload(self, content_type: str, metadata: dict[str, str]) -> StreamedUpload:
        context = self._context
        return StreamedUpload(
            context.client,
            context.gate,
            context.uploads,
            self.store_bucket,
            self.key,
            self.temp_path,
            context.part_size,
            content_type,
            metadata,
            self._flush,
        )

    def _flush(self) -> None:
        """Before a part is read back: what was written is in the file, not a buffer."""
        if self._file is not None:
            self._file.flush()

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
            parts = self._parts
            if parts is not None and (parts.content_type, parts.metadata) != (
                content_type,
                metadata,
            ):
                await parts.abort()  # begun with the key's defaults; these differ
                parts = None
            if parts is None and self.size > self._context.multipart_threshold:
                parts = self._parts = self._upload(content_type, metadata)
            if parts is None:
                etag = await gate.run("PUT", self._put(replace, content_type, metadata))
            else:
                etag = await parts.complete(self.size, replace)
            if etag is None:
                return False  # the key was taken meanwhile; it is kept
            if await self._deleted():
                await self._take_back(etag)
                return False
            self._store_etag = etag.strip('"')
            return True
        except Exception:
            if not self._discarded:
                raise
            # discard() took the scratch file away under a running publish (the client
            # or the copy gave up): the upload was aborted; report it as not written.
            raise StoreUnavailable(f"write of {self.bucket}/{self.key} discarded") from None
        finally:
            if self._parts is not None:
                await self._parts.abort()  # nothing if completed
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
        if self._parts is not None:
            # Cancels the parts running and aborts the upload, in the background.
            Deferred.fromCoroutine(self._parts.abort())
        self._unlink()
