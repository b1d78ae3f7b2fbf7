"""The housekeeping sweep: what crashes, kill -9 and abandoned clients leave under `.cosedge`.

Once at start-up and then every `SWEEP_INTERVAL`, in a thread (it walks folders), the main
process removes: lock files no process holds (a copier killed mid-copy), multipart uploads
older than `limits.abort_incomplete_uploads_after` (7 days by default, like a COS/S3
lifecycle rule), metadata whose object is gone or was replaced by hand, and temporary files
of state writes that died before their rename. Workers never sweep: one sweeper per data
folder is enough, and the main process outlives them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from edge.store.interface import ObjectStore, StoreUnavailable

log = Logger()

SWEEP_INTERVAL = 3600.0
# A sweep the store could not answer (an S3 store or Redis not reachable yet, as at a
# node's start) is tried again this soon rather than an interval later: a dead node's
# multipart uploads must not outlive lock_ttl plus one interval (SPEC §8).
RETRY_AFTER = 30.0
_TEMP_AGE = 3600.0  # a state write takes milliseconds; an hour-old temp file is dead


class Sweeper(TimerService):
    name = "sweeper"

    def __init__(
        self,
        reactor: Any,
        store: ObjectStore,
        upload_expiry: Callable[[], float],
        interval: float = SWEEP_INTERVAL,
    ) -> None:
        super().__init__(interval, self._sweep)
        self.clock = reactor
        self._reactor = reactor
        self._store = store
        self._upload_expiry = upload_expiry
        self._retry: Any = None  # the sweep tried again after a StoreUnavailable
        self._answered = False  # whether the store has answered a sweep since the start

    def stopService(self) -> Deferred[None] | None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        return super().stopService()  # type: ignore[no-any-return]

    def _sweep(self) -> Deferred[None]:
        d = Deferred.fromCoroutine(self.sweep_now())
        d.addCallbacks(self._report, self._failed)
        return d  # type: ignore[return-value]

    async def sweep_now(self) -> dict[str, int]:
        """One sweep (the store does the blocking parts in threads): how many of each
        were removed."""
        now = time.time()
        expired = await self._store.uploads.expire(self._upload_expiry(), now)
        for info in expired:
            log.info(
                "Multipart upload {upload_id} of {bucket}/{key} expired unfinished",
                upload_id=info.upload_id,
                bucket=info.bucket,
                key=info.key,
            )
        counts = {"locks": 0, "metadata": 0, "temp_files": 0}
        counts.update(await self._store.sweep(now))
        counts["uploads"] = len(expired) + counts.get("uploads", 0)
        return counts

    def _report(self, counts: dict[str, int]) -> None:
        self._answered = True
        if any(counts.values()):
            log.info(
                "Swept .cosedge: {locks} stale lock(s), {uploads} expired upload(s), "
                "{metadata} orphaned metadata file(s), {temp_files} temporary file(s)",
                **counts,
            )

    def _failed(self, failure: Any) -> None:
        # A TimerService stops for good when its call fails: report, and sweep next time.
        if failure.check(StoreUnavailable):  # the store warned once for its outage
            # Before the store has ever answered (an S3 node's start: Redis connects a
            # moment after the first sweep) the skip is expected: a debug line, not news.
            say = log.info if self._answered or self._retry is not None else log.debug
            say(
                "Sweep skipped: {reason}; trying again in {retry:g}s",
                reason=failure.getErrorMessage(),
                retry=RETRY_AFTER,
            )
            if self.running and (self._retry is None or not self._retry.active()):
                self._retry = self._reactor.callLater(RETRY_AFTER, self._sweep)
            return
        log.failure("Sweeping .cosedge failed; trying again next interval", failure)
