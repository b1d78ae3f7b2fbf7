"""The S3 store: every edge bucket a bucket of an S3-compatible store shared by many nodes
(SPEC §8), behind the same seam as the folder store (`edge.store.interface.ObjectStore`).

Edge bucket `b` lives in store bucket `bucket_template.format(bucket=b)`. This class owns
the buckets (created when missing, at start-up and on PUT Bucket), listings, reads, deletes
and the sweep; reads are `objects`, writes `writes` (a big one's parts `parts`), the API's
multipart `uploads`, deletes racing copies `deletes`, and the record of its own multipart
uploads `tracking`. Only local scratch (request bodies, copies being gathered) stays on
this node, under `scratch_dir`.
"""

from __future__ import annotations

import os
import stat as statmod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from edge.cluster.redis import RedisCoordinator
from edge.s3 import S3Client, S3Error, S3Unavailable
from edge.store.folder.objects import ContentTypes
from edge.store.interface import (
    DeleteWatch,
    KeyLock,
    ListingPage,
    ObjectMeta,
    ObjectStore,
    SpooledBody,
    StoredObject,
    StoreUnavailable,
    Uploads,
)
from edge.store.s3.buckets import StoreBuckets
from edge.store.s3.calls import StoreGate
from edge.store.s3.deletes import DeleteCounters, S3DeleteWatch
from edge.store.s3.objects import UNSET_TYPES, S3Object, single_range
from edge.store.s3.tracking import InternalUploads
from edge.store.s3.uploads import S3Uploads
from edge.store.s3.writes import MiB, S3PendingWrite, WriteContext

log = Logger()

_CONDITIONALS = (b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since")

TEMP_AGE = 3600.0  # a spool or copy idles out in seconds; an hour-old scratch file is dead


class S3Store:
    """All buckets of one edge in one S3 store; see the module docstring."""

    def __init__(
        self,
        client: S3Client,
        buckets: Iterable[str],
        scratch_dir: Path,
        bucket_template: str = "{bucket}",
        multipart_threshold: int = 16 * MiB,
        part_size: int = 8 * MiB,
        coordinator: RedisCoordinator | None = None,
        lock_ttl: float = 30.0,
        sweep_interval: float = 3600.0,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.client = client
        self._reactor = reactor
        self._tmp_dir = Path(scratch_dir)
        self._gate = StoreGate(client.endpoint)
        self.buckets = StoreBuckets(client, self._gate, buckets, bucket_template, reactor)
        self._types = ContentTypes()
        self._deletes = DeleteCounters(coordinator)
        self._coordinator = coordinator
        self._lock_ttl = lock_ttl
        self._local_locks: set[tuple[str, str]] = set()  # without Redis: this process only
        self._internal = InternalUploads(coordinator, lock_ttl)
        self._orphan_age = lock_ttl + sweep_interval
        self._context = WriteContext(
            client,
            self._gate,
            self._tmp_dir,
            self._types,
            self._internal,
            multipart_threshold,
            part_size,
        )
        self.uploads: Uploads = S3Uploads(self._context, self.store_bucket, self.buckets.made)

    @property
    def tmp_dir(self) -> Path:
        return self._tmp_dir

    @property
    def gate(self) -> StoreGate:
        """Who tells this store's outages (one warning each), shared node-wide (`state`)."""
        return self._gate

    def store_bucket(self, bucket: str) -> str:
        """The store bucket that holds edge bucket `bucket`."""
        return self.buckets.store_bucket(bucket)

    def prepare(self) -> Deferred[None]:
        """Make the scratch folder and the store buckets that are missing.

        Never fails for an unreachable store (SPEC §8: logged, retried, not fatal): the
        buckets it could not make are retried on a timer until made (`StoreBuckets`), and
        requests meanwhile get 503s as for any outage. `stop()` cancels the retries.
        """
        os.makedirs(self._tmp_dir, exist_ok=True)
        return self.buckets.make_missing()

    def stop(self) -> None:
        """Stop retrying bucket creation (the service stopping)."""
        self.buckets.stop()

    def has_bucket(self, bucket: str) -> bool:
        return self.buckets.has_bucket(bucket)

    def bucket_created(self, bucket: str) -> float:
        """Unknown (0): S3's HEAD Bucket carries no date, and GET Service must not make a
        network call per bucket."""
        return 0.0

    def lock_key(self, bucket: str, key: str) -> Deferred[KeyLock | None]:
        """`SET NX PX` in Redis, renewed while the copy runs and expiring `lock_ttl` after
        a node dies (`RedisCoordinator.acquire_lock`); an unreachable Redis fails it, so no
        copy starts. Without a coordinator the lock is this process's alone."""
        if self._coordinator is not None:
            name = f"cosedge:copy:{self.store_bucket(bucket)}/{key}"
            d: Deferred[Any] = self._coordinator.acquire_lock(name, self._lock_ttl)
            return d
        held = (bucket, key)
        if held in self._local_locks:
            return succeed(None)
        self._local_locks.add(held)
        return succeed(_LocalLock(self._local_locks, held))

    def add_bucket(self, bucket: str) -> Deferred[None]:
        return self.buckets.add_bucket(bucket)

    def remove_bucket(self, bucket: str) -> Deferred[None]:
        return self.buckets.remove_bucket(bucket)

    def bucket_is_empty(self, bucket: str) -> Deferred[bool]:
        return self.buckets.bucket_is_empty(bucket)

    def forget_bucket(self, bucket: str) -> None:
        self.buckets.forget_bucket(bucket)

    def list_page(
        self, bucket: str, prefix: str, marker: str, delimiter: str, max_keys: int
    ) -> Deferred[ListingPage]:
        return self.buckets.list_page(bucket, prefix, marker, delimiter, max_keys)

    # -- objects --------------------------------------------------------------------------

    def open_object(
        self, bucket: str, key: str, request: IRequest | None = None
    ) -> Deferred[StoredObject | None]:
        """One GET with the client's single Range (one round trip for a hit), or one HEAD
        when the body will most likely not be sent (HEAD, conditional requests)."""
        range_header: str | None = None
        body = True
        if request is not None:
            raw = request.getHeader(b"range")
            range_header = raw.decode("latin-1") if raw else None
            body = request.method != b"HEAD" and not any(
                request.getHeader(name) for name in _CONDITIONALS
            )
        return self.fetch_object(bucket, key, range_header=range_header, body=body)

    def fetch_object(
        self, bucket: str, key: str, *, range_header: str | None = None, body: bool = True
    ) -> Deferred[StoredObject | None]:
        """`open_object` with its hints spelled out: the `Range` to fetch, and whether to
        fetch the body at all (False: a HEAD; `send` fetches later if it must)."""
        d: Deferred[Any] = Deferred.fromCoroutine(self._open(bucket, key, range_header, body))
        return d

    async def _open(
        self, bucket: str, key: str, range_header: str | None, body: bool
    ) -> S3Object | None:
        store_bucket = self.store_bucket(bucket)
        if body:
            stream = await self._gate.run(
                "GET", self._get(store_bucket, key, single_range(range_header))
            )
            if stream is not False:
                if stream is None:
                    return None
                return S3Object(
                    self.client,
                    self._gate,
                    store_bucket,
                    key,
                    stream.info,
                    self._content_type(key, stream.info.content_type),
                    stream,
                )
        info = await self._gate.run("HEAD", self.client.head_object(store_bucket, key))
        if info is None:
            return None
        content_type = self._content_type(key, info.content_type)
        return S3Object(self.client, self._gate, store_bucket, key, info, content_type)

    async def _get(self, store_bucket: str, key: str, wanted: str | None) -> Any:
        """The GET's stream, None for a missing key, False for a range the object cannot
        satisfy (the caller then HEADs, and the web layer answers 416 from the size)."""
        try:
            return await self.client.get_object(store_bucket, key, wanted)
        except S3Error as e:
            if wanted and not isinstance(e, S3Unavailable) and e.status == 416:
                return False
            raise

    def _content_type(self, key: str, stored: str) -> str:
        return self._types.for_key(key) if stored in UNSET_TYPES else stored

    def exists(self, bucket: str, key: str) -> Deferred[bool]:
        return Deferred.fromCoroutine(self._exists(bucket, key))

    async def _exists(self, bucket: str, key: str) -> bool:
        info = await self._gate.run("HEAD", self.client.head_object(self.store_bucket(bucket), key))
        return info is not None

    def delete_object(self, bucket: str, key: str) -> Deferred[bool]:
        return Deferred.fromCoroutine(self._delete(bucket, key))

    async def _delete(self, bucket: str, key: str) -> bool:
        """Bump the key's delete counter first, then delete: a copy that checks the counter
        after its write then sees this DELETE and takes its object back (`deletes`)."""
        store_bucket = self.store_bucket(bucket)
        await self._deletes.bump(bucket, key)
        found = await self._gate.run("HEAD", self.client.head_object(store_bucket, key))
        if found is None:
            return False
        await self._gate.run("DELETE", self.client.delete_object(store_bucket, key))
        return True

    def new_upload(
        self,
        bucket: str,
        key: str,
        spool: SpooledBody | None = None,
        watch: DeleteWatch | None = None,
        meta: ObjectMeta | None = None,
    ) -> S3PendingWrite:
        store_bucket = self.store_bucket(bucket)
        return S3PendingWrite(self._context, bucket, store_bucket, key, spool, watch, meta)

    def refuse_unsafe(self, bucket: str, key: str) -> None:
        """Nothing is unsafe here: keys are URLs, never paths on this host."""

    def watch_deletes(self, bucket: str, key: str) -> S3DeleteWatch:
        return self._deletes.watch(bucket, key)

    def forget_deletes(self, bucket: str, key: str) -> None:
        self._deletes.forget(bucket, key)

    # -- housekeeping ---------------------------------------------------------------------

    def sweep(self, now: float) -> Deferred[dict[str, int]]:
        return Deferred.fromCoroutine(self._sweep(now))

    async def _sweep(self, now: float) -> dict[str, int]:
        """Scratch files over an hour old (what a killed process left), and multipart
        uploads a node that died mid-publish left (`tracking`)."""
        temp_files = self._sweep_scratch(now)
        aborted = 0
        for upload in await self._internal.orphans(now, self._orphan_age):
            try:
                await self.client.abort_multipart_upload(
                    upload.store_bucket, upload.key, upload.upload_id
                )
            except S3Unavailable as e:
                self._gate.failed("abort of a left-over upload", str(e))
                raise StoreUnavailable(str(e)) from None
            except S3Error as e:
                if e.code != "NoSuchUpload":
                    raise self._gate.neutral("abort of a left-over upload", e) from None
            await self._internal.drop(upload)
            aborted += 1
            log.info(
                "Aborted upload {upload_id} of {bucket}/{key} left by a publish that died",
                upload_id=upload.upload_id,
                bucket=upload.store_bucket,
                key=upload.key,
            )
        return {"temp_files": temp_files, "uploads": aborted}

    def _sweep_scratch(self, now: float) -> int:
        removed = 0
        try:
            entries = list(os.scandir(self._tmp_dir))
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
                if statmod.S_ISREG(st.st_mode) and now - st.st_mtime > TEMP_AGE:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed


class _LocalLock:
    def __init__(self, held: set[tuple[str, str]], key: tuple[str, str]) -> None:
        self._held = held
        self._key = key

    def release(self) -> None:
        self._held.discard(self._key)


def _conforms(store: S3Store) -> ObjectStore:
    """Never called: mypy checks here that an S3Store is an ObjectStore."""
    return store
