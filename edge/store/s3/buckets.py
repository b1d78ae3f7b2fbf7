"""The S3 store's buckets: which edge bucket lives in which store bucket, making the
missing ones (and retrying while the store is unreachable), removing empty ones, and
listing their keys a page at a time with ListObjectsV2.

Bucket names are kept in memory (`has_bucket` does no I/O); the registry of API-made
buckets above decides which exist, this only keeps the store in step with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred

from edge.s3 import S3Client, S3Error, S3Unavailable
from edge.store.interface import BucketNotEmpty, ListedObject, ListingPage, StoreUnavailable
from edge.store.s3.calls import StoreGate

RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)  # creating missing store buckets after start-up
#: Past the end of any key a client can send: `start-after` a rolled-up prefix + this skips
#: every key under it, on stores that would otherwise list that prefix again.
_AFTER_ALL = "\U0010ffff"


class StoreBuckets:
    """The buckets of one S3 store; see the module docstring."""

    def __init__(
        self,
        client: S3Client,
        gate: StoreGate,
        names: Iterable[str],
        template: str,
        reactor: Any,
    ) -> None:
        self._client = client
        self._gate = gate
        self._names: set[str] = set(names)
        self._template = template
        self._reactor = reactor
        self._missing: set[str] = set()  # store buckets not yet made (store unreachable)
        self._retry: Any = None
        self._attempt = 0

    def store_bucket(self, bucket: str) -> str:
        """The store bucket that holds edge bucket `bucket`."""
        return self._template.format(bucket=bucket)

    def names(self) -> list[str]:
        return sorted(self._names)

    def made(self) -> list[str]:
        """Buckets whose store bucket is known to exist: the sweep's, since one still
        being made (start-up) can hold no upload and would only be refused NoSuchBucket."""
        return [b for b in self.names() if self.store_bucket(b) not in self._missing]

    def make_missing(self) -> Deferred[None]:
        """Create every bucket's store bucket that is missing; on an unreachable store,
        retry on a timer (1 s, 2 s, 5 s, 10 s, then every 30 s) until made; never fails."""
        self._missing |= {self.store_bucket(b) for b in self._names}
        return Deferred.fromCoroutine(self._make_missing())

    async def _make_missing(self) -> None:
        self._retry = None
        for store_bucket in sorted(self._missing):
            try:
                await self._gate.run(
                    f"create bucket {store_bucket}", self._client.create_bucket(store_bucket)
                )
            except StoreUnavailable:
                delay = RETRY_DELAYS[min(self._attempt, len(RETRY_DELAYS) - 1)]
                self._attempt += 1
                self._retry = self._reactor.callLater(delay, self._retry_now)
                return
            self._missing.discard(store_bucket)
        self._attempt = 0

    def _retry_now(self) -> None:
        Deferred.fromCoroutine(self._make_missing())

    def stop(self) -> None:
        """Stop retrying bucket creation (the service stopping)."""
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    # -- buckets --------------------------------------------------------------------------

    def has_bucket(self, bucket: str) -> bool:
        return bucket in self._names

    def add_bucket(self, bucket: str) -> Deferred[None]:
        return Deferred.fromCoroutine(self._add_bucket(bucket))

    async def _add_bucket(self, bucket: str) -> None:
        """Serve the bucket from now on; its store bucket is made now or, on an unreachable
        store, with the other missing ones when it is back (requests meanwhile get 503s)."""
        store_bucket = self.store_bucket(bucket)
        self._names.add(bucket)
        try:
            await self._gate.run(
                f"create bucket {store_bucket}", self._client.create_bucket(store_bucket)
            )
        except StoreUnavailable:
            self._missing.add(store_bucket)
            if self._retry is None:
                self._retry = self._reactor.callLater(RETRY_DELAYS[0], self._retry_now)
            raise

    def forget_bucket(self, bucket: str) -> None:
        self._names.discard(bucket)

    def bucket_is_empty(self, bucket: str) -> Deferred[bool]:
        return Deferred.fromCoroutine(self._is_empty(bucket))

    async def _is_empty(self, bucket: str) -> bool:
        page = await self._gate.run(
            "list", self._client.list_objects_v2(self.store_bucket(bucket), max_keys=1)
        )
        return not page.contents and not page.common_prefixes

    def remove_bucket(self, bucket: str) -> Deferred[None]:
        return Deferred.fromCoroutine(self._remove_bucket(bucket))

    async def _remove_bucket(self, bucket: str) -> None:
        """Emptiness is checked here, not left to the store: SeaweedFS deletes a bucket
        with objects in it. (An object PUT between the check and the delete is lost with
        it on such a store; S3 proper refuses, and that refusal is BucketNotEmpty too.)"""
        if not await self._is_empty(bucket):
            raise BucketNotEmpty(bucket)
        store_bucket = self.store_bucket(bucket)
        await self._gate.run(f"delete bucket {store_bucket}", self._delete_bucket(store_bucket))
        self.forget_bucket(bucket)

    async def _delete_bucket(self, store_bucket: str) -> None:
        try:
            await self._client.delete_bucket(store_bucket)
        except S3Error as e:
            if isinstance(e, S3Unavailable):
                raise
            if e.code == "BucketNotEmpty":
                raise BucketNotEmpty(store_bucket) from None
            if e.code != "NoSuchBucket":
                raise

    # -- listing --------------------------------------------------------------------------

    def list_page(
        self, bucket: str, prefix: str, marker: str, delimiter: str, max_keys: int
    ) -> Deferred[ListingPage]:
        return Deferred.fromCoroutine(self._list_page(bucket, prefix, marker, delimiter, max_keys))

    async def _list_page(
        self, bucket: str, prefix: str, marker: str, delimiter: str, max_keys: int
    ) -> ListingPage:
        start_after = marker or None
        if marker and delimiter and marker.startswith(prefix):
            rest = marker[len(prefix) :]
            if rest.endswith(delimiter) and rest.find(delimiter) == len(rest) - len(delimiter):
                start_after = marker + _AFTER_ALL  # a rolled-up prefix: skip all under it
        page = await self._gate.run(
            "list",
            self._client.list_objects_v2(
                self.store_bucket(bucket),
                prefix=prefix or None,
                delimiter=delimiter or None,
                max_keys=max_keys,
                start_after=start_after,
            ),
        )
        contents = [
            ListedObject(o.key, o.size, o.last_modified, o.etag.strip('"')) for o in page.contents
        ]
        prefixes = list(page.common_prefixes)
        last = max([o.key for o in contents] + prefixes, default=None)
        return ListingPage(
            contents, prefixes, page.is_truncated, last if page.is_truncated else None
        )
