"""The parts of a big write, uploaded from its scratch file while the file is still growing.

Once a write passes the multipart threshold, `S3PendingWrite` starts a multipart upload and
hands each complete part (a range of the scratch file, sent with its signed SHA-256 as any
file body) to this upload, which keeps at most `IN_FLIGHT` part uploads running and queues
the rest in the file itself: nothing is held in memory. A part is complete when bytes follow
it, so the last part (never empty) is left for `complete()`, which uploads what remains and
joins the parts. Part n is `base << ((n - 1) // 1000)` bytes (capped at S3's 5 GiB), so a
write of unknown size fits S3's 10 000 parts up to 5 TiB while anything under 1000 parts has
equal ones. The first failure stops the upload: the parts still running are cancelled and it
is aborted at once, and `complete()` raises that failure. An abort the store does not answer
leaves the upload to the sweep (`InternalUploads.left`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from twisted.python.failure import Failure

from edge.s3 import FileRangeProducer, S3Client, S3Error, S3Unavailable
from edge.store.interface import StoreUnavailable
from edge.store.s3.calls import StoreGate
from edge.store.s3.tracking import InternalUpload, InternalUploads

log = Logger()

MiB = 1024 * 1024
MIN_PART = 5 * MiB  # S3's smallest part but the last
MAX_PART = 5 * 1024 * MiB
IN_FLIGHT = 2  # part uploads running at once per write


class StreamedUpload:
    """One internal multipart upload fed from a growing file; see the module docstring."""

    def __init__(
        self,
        client: S3Client,
        gate: StoreGate,
        uploads: InternalUploads,
        store_bucket: str,
        key: str,
        path: str,
        part_size: int,
        content_type: str,
        metadata: dict[str, str],
        flush: Callable[[], None],
    ) -> None:
        self._gate = gate
        self._client = client
        self._uploads = uploads
        self.store_bucket = store_bucket
        self.key = key
        self.path = path
        self.content_type = content_type
        self.metadata = metadata
        self._flush = flush
        self._base = max(part_size, MIN_PART)
        self._size = 0  # bytes in the file so far
        self._final = False  # the size is the object's
        self._next = 0  # first byte not yet given to a part
        self._etags: dict[int, str] = {}
        self._running: dict[int, Deferred[None]] = {}
        self.failure: Exception | None = None
        self._record: InternalUpload | None = None
        self._stopped = False
        self._closing: list[Deferred[None]] | None = None  # abort waiters, while aborting
        self._closed = False
        self._created: Deferred[None] = Deferred.fromCoroutine(self._create())

    async def _create(self) -> None:
        try:
            upload_id = await self._gate.run(
                "start upload",
                self._client.create_multipart_upload(
                    self.store_bucket, self.key, self.content_type, self.metadata
                ),
            )
        except Exception as e:
            self._fail(e)
            return
        record = InternalUpload(self.store_bucket, self.key, upload_id, time.time())
        try:
            await self._uploads.begin(record)
        except Exception as e:
            # Not recorded, so never swept: abort it now (the record is already gone).
            self._record = record
            self._fail(e)
            return
        self._record = record
        if self._stopped:
            return  # discarded meanwhile: the abort waiting on this creation aborts it
        self._pump()

    def feed(self, size: int) -> None:
        """The file now holds `size` bytes: upload the parts that are complete."""
        self._size = size
        self._pump()

    def part_length(self, number: int) -> int:
        return min(self._base << ((number - 1) // 1000), MAX_PART)

    def _pump(self) -> None:
        if self._record is None or self._stopped or self.failure is not None:
            return
        flushed = False
        while len(self._running) < IN_FLIGHT:
            number = len(self._etags) + len(self._running) + 1
            length = self.part_length(number)
            remaining = self._size - self._next
            if self._final:
                if remaining <= 0:
                    return
                length = min(length, remaining)
            elif remaining <= length:
                return  # not complete yet, or the last part
            if not flushed:
                self._flush()
                flushed = True
            offset, self._next = self._next, self._next + length
            d = Deferred.fromCoroutine(self._part(number, offset, length))
            self._running[number] = d
            d.addBoth(self._part_done, number)

    async def _part(self, number: int, offset: int, length: int) -> None:
        assert self._record is not None
        producer = FileRangeProducer(self.path, offset, length)
        etag = await self._gate.run(
            f"PUT part {number}",
            self._client.upload_part(
                self.store_bucket, self.key, self._record.upload_id, number, producer
            ),
        )
        self._etags[number] = etag

    def _part_done(self, result: object, number: int) -> None:
        self._running.pop(number, None)
        if isinstance(result, Failure):
            if not self._stopped and isinstance(result.value, Exception):
                self._fail(result.value)
            return
        self._pump()

    def _fail(self, error: Exception) -> None:
        """The first failure wins; it stops the upload (aborted in the background, joined
        by `complete()` or `abort()`)."""
        if self.failure is None:
            self.failure = error
        Deferred.fromCoroutine(self.abort())

    async def complete(self, size: int, replace: bool) -> str | None:
        """Upload what is left of a file of `size` bytes and join the parts: the object's
        ETag, or None when the key was taken (create-only). Aborts on any failure or None."""
        self._size, self._final = size, True
        done = False
        try:
            await self._created
            self._pump()
            while self._running:
                await DeferredList(list(self._running.values()), fireOnOneCallback=True)
                if self.failure is not None:
                    break
            if self.failure is not None:
                raise self.failure
            if self._stopped:
                raise StoreUnavailable(f"upload of {self.store_bucket}/{self.key} stopped")
            parts = sorted(self._etags.items())
            result = await self._gate.run("complete upload", self._complete(parts, replace))
            done = result is not None
            return result
        finally:
            if done:
                self._closed = True
                assert self._record is not None
                await self._uploads.end(self._record)
            else:
                await self.abort()

    async def _complete(self, parts: list[tuple[int, str]], replace: bool) -> str | None:
        assert self._record is not None
        client, bucket = self._client, self.store_bucket
        # Ceph RGW 16.2 ignores If-None-Match on the completion and would replace a key
        # written while the parts went up; a second HEAD narrows that to one round trip.
        if not replace and await client.head_object(bucket, self.key) is not None:
            return None
        try:
            return await client.complete_multipart_upload(
                bucket, self.key, self._record.upload_id, parts, if_none_match=not replace
            )
        except S3Error as e:
            if not replace and e.code == "PreconditionFailed":
                return None
            raise

    async def abort(self) -> None:
        """Stop: cancel the parts running, abort the upload, forget it. Never fails; safe to
        call more than once and from several callers (each waits for the one abort)."""
        if self._closed:
            return
        if self._closing is not None:
            waiter: Deferred[None] = Deferred()
            self._closing.append(waiter)
            await waiter
            return
        self._closing = []
        self._stopped = True
        try:
            for d in list(self._running.values()):
                d.cancel()
            await self._created
            if self._running:
                await DeferredList(list(self._running.values()))
            if self._record is not None:
                await self._abort(self._record)
        finally:
            self._closed = True
            waiters, self._closing = self._closing, None
            for waiter in waiters:
                waiter.callback(None)

    async def _abort(self, record: InternalUpload) -> None:
        try:
            await self._client.abort_multipart_upload(
                record.store_bucket, record.key, record.upload_id
            )
        except S3Error as e:
            if not isinstance(e, S3Unavailable):
                self._gate.neutral(f"abort of upload {record.upload_id}", e)
            log.info(
                "Upload {upload_id} of {bucket}/{key} not aborted ({reason}); the sweep will",
                upload_id=record.upload_id,
                bucket=record.store_bucket,
                key=record.key,
                reason=str(e),
            )
            await self._uploads.left(record)
            return
        await self._uploads.end(record)
