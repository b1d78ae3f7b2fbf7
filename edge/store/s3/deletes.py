"""Deletes racing copies across nodes: a generation counter per key, in Redis.

A copy of a key runs on one node (under the copier's cluster lock) while a DELETE of the same
key may arrive at any node. Every DELETE bumps `cosedge:del:<bucket>/<key>` in Redis (INCR,
with an expiry so counters of keys nobody copies fade away); a copy remembers the counter's
value when it starts and, before and after it writes, compares: any change means a DELETE
came meanwhile, so the copy writes nothing, or takes back what it wrote. Without a Redis
coordinator (one node) the same bookkeeping is kept in this process only. A DELETE that lands
before the copy's baseline read answers counts as one before the copy: the key held nothing
then, so there was nothing for it to undo.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from edge.cluster.redis import RedisCoordinator, RedisUnavailable
from edge.store.interface import StoreUnavailable

log = Logger()

#: How long a key's counter outlives its last DELETE; a copy running longer than this
#: reads a vanished counter as a change, and drops its result (the safe side).
COUNTER_TTL = 24 * 3600

_BUMP = "local v = redis.call('incr', KEYS[1]) redis.call('expire', KEYS[1], ARGV[1]) return v"

_UNREAD: Any = object()


def counter_name(bucket: str, key: str) -> str:
    """The Redis key of an edge key's delete counter."""
    return f"cosedge:del:{bucket}/{key}"


class DeleteCounters:
    """Every key's delete counter, and the watches copies on this node hold."""

    def __init__(self, coordinator: RedisCoordinator | None) -> None:
        self._redis = coordinator
        self._watches: dict[tuple[str, str], set[S3DeleteWatch]] = {}

    async def bump(self, bucket: str, key: str) -> None:
        """Record a DELETE of the key: watches here learn at once, other nodes' copies on
        their next check. Fails `StoreUnavailable` when Redis cannot record it, since a
        delete a running copy could undo is not one to acknowledge."""
        for watch in self._watches.get((bucket, key), ()):
            watch.seen = True
        if self._redis is None:
            return
        try:
            await self._redis.execute("EVAL", _BUMP, 1, counter_name(bucket, key), COUNTER_TTL)
        except RedisUnavailable as e:
            raise StoreUnavailable(f"cannot record the delete of {bucket}/{key}: {e}") from None

    async def read(self, bucket: str, key: str) -> object:
        """The counter's value now (None when the key was never deleted, or long ago)."""
        assert self._redis is not None
        try:
            return await self._redis.execute("GET", counter_name(bucket, key))
        except RedisUnavailable as e:
            raise StoreUnavailable(f"cannot check deletes of {bucket}/{key}: {e}") from None

    def watch(self, bucket: str, key: str) -> S3DeleteWatch:
        watch = S3DeleteWatch(self, bucket, key, clustered=self._redis is not None)
        self._watches.setdefault((bucket, key), set()).add(watch)
        return watch

    def forget(self, bucket: str, key: str) -> None:
        """The copy of the key ended: stop telling its watches. The Redis counter stays
        (another node's DELETE may be bumping it now) and expires by itself."""
        self._watches.pop((bucket, key), None)


class S3DeleteWatch:
    """A copy's view of its key's delete counter; `deleted()` answers from what this node
    knows, `check()` asks Redis too (the publish of a write calls it, before and after)."""

    def __init__(self, counters: DeleteCounters, bucket: str, key: str, clustered: bool) -> None:
        self.seen = False  # a DELETE of the key on this node since the watch began
        self._counters = counters
        self._bucket = bucket
        self._key = key
        self._baseline: object = _UNREAD
        self._error: Exception | None = None
        self._reading: Deferred[None] | None = None
        if clustered:
            self._reading = Deferred.fromCoroutine(self._read_baseline())

    async def _read_baseline(self) -> None:
        # Errors are kept, not raised: nobody may ever await this (a copy that fails early),
        # and an unhandled failure would be logged as a bug.
        try:
            self._baseline = await self._counters.read(self._bucket, self._key)
        except StoreUnavailable as e:
            self._error = e

    def deleted(self) -> bool:
        return self.seen

    async def check(self) -> bool:
        """Whether a DELETE of the key came since the watch began, on any node."""
        if self.seen or self._reading is None:
            return self.seen
        await self._reading
        if self._error is not None:
            raise self._error
        now = await self._counters.read(self._bucket, self._key)
        if now != self._baseline:
            self.seen = True
        return self.seen
