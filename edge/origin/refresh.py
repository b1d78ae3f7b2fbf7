"""Refresh: ask the origin again whether a stored copy is still what it serves (SPEC §12).

A copy recorded its origin's `ETag` and `Last-Modified` (provenance.py). Refreshing a key
sends a conditional GET with them (`If-None-Match`, `If-Modified-Since`) through the same
path a copy takes: the fetcher of the copier (its pinned connection to a vetted address,
its limits, digest check and atomic publish), the key's lock (so it never runs beside a
copy of the same key, on any process or node), and the origin's circuit breaker (an open
one refuses the refresh; its faults count). The origin's answer decides:

- 304: the object is kept as it is (`kept`);
- 200: the new bytes replace it atomically — the one write a copy may overwrite with —
  with the new provenance (`replaced`; `stored` for a key the bucket did not hold);
- 404: reported (`missing`), or with `delete_missing` deleted (`deleted`);
- anything else, and any failure, leaves the object alone (`failed`, with the reason).

A refresh never takes a copy slot: the caller bounds how many run at once. Which origin and
address a key is refreshed from is the caller's (the bucket's origin rule, resolved and
vetted as for a miss); this module is handed both.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import datetimeToString
from twisted.web.iweb import IRequest

from edge.config import OriginAddress
from edge.origin.copier import OriginCopier
from edge.origin.fetch import Fetched, describe_failure, outcome_of
from edge.origin.job import CopyFailed, CopyJob
from edge.origin.provenance import Revalidation
from edge.origin.request import OriginPlan
from edge.store.interface import KeyLock, ObjectStore, StoreUnavailable

log = Logger(namespace="edge.origin.copier")

LOCK_WAIT = 10.0  # how long a refresh waits for a running copy of its key to end
_LOCK_POLL = 0.25


class _MetadataOnly:
    """The hint `ObjectStore.open_object` takes, saying that no body will be read: a store
    that fetches over the network then asks for the metadata alone (a HEAD)."""

    method = b"HEAD"

    def getHeader(self, name: bytes) -> bytes | None:  # noqa: N802 (IRequest's name)
        return None


_METADATA_ONLY = _MetadataOnly()


class Result(enum.Enum):
    """What became of one key (the `result` of the API's answer)."""

    KEPT = "kept"
    REPLACED = "replaced"
    STORED = "stored"
    MISSING = "missing"
    DELETED = "deleted"
    FAILED = "failed"


@dataclass(frozen=True)
class KeyRefresh:
    """One key's outcome. `etag` is the origin's after the refresh (the recorded one when
    kept), `size` the bytes stored by a replace."""

    key: str
    result: Result
    reason: str | None = None
    etag: str | None = None
    size: int | None = None

    def to_json(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["result"] = self.result.value
        return raw


class Refresher:
    """Refreshes keys one call each; shares the copier's fetcher and breakers."""

    def __init__(self, store: ObjectStore, copier: OriginCopier) -> None:
        self._clock = copier.fetcher.clock
        self._store = store
        self._copier = copier

    def refresh(
        self,
        bucket: str,
        key: str,
        origin: OriginAddress,
        address: str,
        delete_missing: bool = False,
        plan: OriginPlan | None = None,
    ) -> Deferred[KeyRefresh]:
        """Refresh `bucket/key` from `address` (vetted) of `origin`, asked as `plan` says
        (the rule's scheme, rewritten path, standbys, redirects); never fails: a failure is
        a `failed` result with its reason."""
        job = CopyJob(bucket, key, origin, address, plan=plan or OriginPlan())
        return Deferred.fromCoroutine(self._refresh(job, delete_missing))

    async def _refresh(self, job: CopyJob, delete_missing: bool) -> KeyRefresh:
        bucket, key = job.bucket, job.key
        breakers = self._copier.protection.breakers
        if breakers.blocks(job.host):
            return KeyRefresh(key, Result.FAILED, f"origin {job.host}: circuit breaker open")
        try:
            lock = await self._lock(bucket, key)
        except Exception as e:
            reason = f"its lock cannot be taken ({e or type(e).__name__})"
            return KeyRefresh(key, Result.FAILED, reason)
        if lock is None:
            reason = "a copy of the key is running; refresh it again when it has ended"
            return KeyRefresh(key, Result.FAILED, reason)
        try:
            return await self._locked(job, delete_missing)
        finally:
            self._store.forget_deletes(bucket, key)
            lock.release()

    async def _lock(self, bucket: str, key: str) -> KeyLock | None:
        """The key's copy lock, waiting up to `LOCK_WAIT` for a copy that holds it."""
        waited = 0.0
        while True:
            lock = await self._store.lock_key(bucket, key)
            if lock is not None or waited >= LOCK_WAIT:
                return lock
            await deferLater(self._clock, _LOCK_POLL, lambda: None)  # type: ignore[arg-type]
            waited += _LOCK_POLL

    async def _locked(self, job: CopyJob, delete_missing: bool) -> KeyRefresh:
        key = job.key
        try:
            recorded = await self._recorded(job.bucket, key)
        except StoreUnavailable as e:
            return KeyRefresh(key, Result.FAILED, f"the store is unavailable ({e})")
        except Exception as e:  # an unsafe path, a file where a folder should be...
            return KeyRefresh(key, Result.FAILED, f"cannot be read: {e or type(e).__name__}")
        # A key the bucket lacks is copied as a miss would: create-only, never over an
        # upload that lands meanwhile.
        job.revalidate = recorded
        present = recorded is not None
        self._copier.protection.admit(job)  # a half-open breaker makes it its probe
        try:
            fetched: Fetched | Failure = await self._copier.fetcher.start(job)
        except Exception:
            fetched = Failure()
        self._copier.protection.breakers.record(job.host, outcome_of(fetched), job.probe)
        if isinstance(fetched, Failure):
            return await self._failed(job, fetched, delete_missing, present)
        if fetched is Fetched.KEPT:
            etag = recorded.etag if recorded is not None and recorded.etag else None
            log.info("Refresh of {bucket}/{key}: not modified, kept", **job.fields())
            return KeyRefresh(key, Result.KEPT, etag=etag)
        if fetched is Fetched.DELETED:
            return KeyRefresh(key, Result.FAILED, "the key was deleted meanwhile")
        if fetched is Fetched.ALREADY_PRESENT:
            return KeyRefresh(key, Result.KEPT, "the key was stored meanwhile")
        try:
            stored = await self._recorded(job.bucket, key)
        except Exception:
            stored = None  # stored all the same; only the report lacks the new ETag
        etag = (stored.etag or None) if stored is not None else None
        result = Result.REPLACED if present else Result.STORED
        log.info("Refresh of {bucket}/{key}: {result}", result=result.value, **job.fields())
        return KeyRefresh(key, result, etag=etag, size=job.received)

    async def _failed(
        self, job: CopyJob, failure: Failure, delete_missing: bool, present: bool
    ) -> KeyRefresh:
        error = failure.value
        if isinstance(error, CopyFailed) and error.status == 404:
            if not delete_missing or not present:
                return KeyRefresh(job.key, Result.MISSING, "origin answered 404")
            try:
                await self._store.delete_object(job.bucket, job.key)
            except Exception as e:
                reason = f"origin answered 404; deleting failed: {e or type(e).__name__}"
                return KeyRefresh(job.key, Result.FAILED, reason)
            log.info("Refresh of {bucket}/{key}: origin answered 404, deleted", **job.fields())
            return KeyRefresh(job.key, Result.DELETED, "origin answered 404")
        reason = describe_failure(failure, self._copier.fetcher.config)
        log.warn("Refresh of {bucket}/{key} failed: {reason}", reason=reason, **job.fields())
        return KeyRefresh(job.key, Result.FAILED, reason)

    async def _recorded(self, bucket: str, key: str) -> Revalidation | None:
        """The validators to ask with: the recorded provenance, else the object's own
        modification time; None when the bucket holds no such object."""
        obj = await self._store.open_object(bucket, key, cast(IRequest, _METADATA_ONLY))
        if obj is None:
            return None
        try:
            origin = obj.meta.origin
            if origin is not None and (origin.etag or origin.last_modified):
                return Revalidation(origin.etag, origin.last_modified)
            return Revalidation("", datetimeToString(obj.mtime).decode("ascii"))
        finally:
            obj.close()
