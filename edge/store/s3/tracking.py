"""The multipart uploads the S3 store starts itself, told apart from the API's, so that the
ones a dead node left behind can be aborted and nobody lists them as a client's.

A publish above the multipart threshold (a big copy, a big PUT) runs an S3 multipart upload
under the object's own key, which S3 lists among the bucket's uploads like any client's. So
each one is recorded in Redis for as long as it runs: a member of the set
`cosedge:internal-uploads` (store bucket, key, upload id, start time) and a liveness lock
`cosedge:upload:<store bucket>/<upload id>` that the coordinator renews while the publish
runs. The member is removed before the lock is released, so a member whose lock is gone was
left by a node that died mid-publish: the sweep aborts it once it is older than `lock_ttl`
plus the sweep interval. An upload whose abort the store did not answer (an outage) is
`left` the same way: its member kept, its lock released, for the sweep. Without a
coordinator (one node) the record is kept in memory: a left upload is aborted by the next
sweep, and what a crash leaves is seen as an API upload and expires with those.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from edge.cluster.redis import RedisCoordinator, RedisLock, RedisUnavailable
from edge.store.interface import StoreUnavailable

MEMBERS = "cosedge:internal-uploads"


@dataclass(frozen=True)
class InternalUpload:
    """One multipart upload a publish of this store started."""

    store_bucket: str
    key: str
    upload_id: str
    started: float

    @property
    def lock_name(self) -> str:
        return f"cosedge:upload:{self.store_bucket}/{self.upload_id}"

    def member(self) -> str:
        return json.dumps([self.store_bucket, self.key, self.upload_id, self.started])

    @classmethod
    def parse(cls, member: object) -> InternalUpload | None:
        if isinstance(member, bytes):
            member = member.decode("utf-8", "replace")
        try:
            bucket, key, upload_id, started = json.loads(str(member))
            return cls(str(bucket), str(key), str(upload_id), float(started))
        except (ValueError, TypeError):
            return None


class InternalUploads:
    """The record of running internal uploads; see the module docstring."""

    def __init__(self, coordinator: RedisCoordinator | None, lock_ttl: float) -> None:
        self._redis = coordinator
        self._ttl = lock_ttl
        self._local: dict[str, InternalUpload] = {}  # upload id -> upload (this process)
        self._locks: dict[str, RedisLock] = {}
        self._left: dict[str, InternalUpload] = {}  # without Redis: aborts that failed

    async def begin(self, upload: InternalUpload) -> None:
        """Record a started upload; fails `StoreUnavailable` when Redis cannot (the caller
        aborts the upload then: an unrecorded one could never be swept)."""
        self._local[upload.upload_id] = upload
        if self._redis is None:
            return
        try:
            lock = await self._redis.acquire_lock(upload.lock_name, self._ttl)
            if lock is not None:
                self._locks[upload.upload_id] = lock
            await self._redis.execute("SADD", MEMBERS, upload.member())
        except RedisUnavailable as e:
            await self.end(upload)
            raise StoreUnavailable(f"cannot record upload {upload.upload_id}: {e}") from None

    async def end(self, upload: InternalUpload) -> None:
        """The upload was completed or aborted: forget it (never fails; a member left over
        in an outage is swept later, its upload found gone)."""
        self._local.pop(upload.upload_id, None)
        lock = self._locks.pop(upload.upload_id, None)
        if self._redis is None:
            return
        try:
            await self._redis.execute("SREM", MEMBERS, upload.member())
        except RedisUnavailable:
            pass
        if lock is not None:
            await lock.release()

    async def left(self, upload: InternalUpload) -> None:
        """The upload could not be aborted (the store unreachable): keep its record for the
        sweep, as if its node had died (the lock goes, the member stays)."""
        self._local.pop(upload.upload_id, None)
        lock = self._locks.pop(upload.upload_id, None)
        if self._redis is None:
            self._left[upload.upload_id] = upload
        elif lock is not None:
            await lock.release()

    async def running_ids(self) -> set[str]:
        """Upload ids of every internal upload recorded, on any node."""
        ids = set(self._local) | set(self._left)
        for upload in await self._members():
            ids.add(upload.upload_id)
        return ids

    async def _members(self) -> list[InternalUpload]:
        if self._redis is None:
            return []
        try:
            members = await self._redis.execute("SMEMBERS", MEMBERS)
        except RedisUnavailable as e:
            raise StoreUnavailable(f"cannot list internal uploads: {e}") from None
        found = [InternalUpload.parse(m) for m in members or ()]
        return [u for u in found if u is not None]

    async def orphans(self, now: float, grace: float) -> list[InternalUpload]:
        """Recorded uploads started over `grace` seconds ago whose publish is gone (their
        liveness lock expired): what a node that died mid-publish left."""
        orphans = list(self._left.values())
        redis = self._redis
        if redis is None:
            return orphans
        for upload in await self._members():
            if now - upload.started <= grace or upload.upload_id in self._local:
                continue
            try:
                alive = await redis.execute("EXISTS", upload.lock_name)
            except RedisUnavailable as e:
                raise StoreUnavailable(f"cannot check upload {upload.upload_id}: {e}") from None
            if not alive:
                orphans.append(upload)
        return orphans

    async def drop(self, upload: InternalUpload) -> None:
        """Remove an aborted orphan's record."""
        self._left.pop(upload.upload_id, None)
        if self._redis is None:
            return
        try:
            await self._redis.execute("SREM", MEMBERS, upload.member())
        except RedisUnavailable as e:
            raise StoreUnavailable(f"cannot drop upload {upload.upload_id}: {e}") from None
