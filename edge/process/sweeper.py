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
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from edge.store.folder.keylocks import KeyLocks
from edge.store.folder.multipart import MultipartUploads
from edge.store.folder.store import FolderStore as ObjectStore

log = Logger()

SWEEP_INTERVAL = 3600.0
_TEMP_AGE = 3600.0  # a state write takes milliseconds; an hour-old temp file is dead


class Sweeper(TimerService):
    name = "sweeper"  # type: ignore[assignment]

    def __init__(
        self,
        reactor: Any,
        store: ObjectStore,
        uploads: MultipartUploads,
        upload_expiry: Callable[[], float],
        interval: float = SWEEP_INTERVAL,
    ) -> None:
        super().__init__(interval, self._sweep)
        self.clock = reactor
        self._reactor = reactor
        self._store = store
        self._uploads = uploads
        self._locks = KeyLocks(store.state_dir)
        self._upload_expiry = upload_expiry

    def _sweep(self) -> Deferred[None]:
        pool = getattr(self._reactor, "getThreadPool", None)
        if pool is None:  # a test reactor without threads: sweep in place
            d: Deferred[dict[str, int]] = maybeDeferred(self.sweep_now)
        else:
            d = deferToThreadPool(self._reactor, pool(), self.sweep_now)
        d.addCallbacks(self._report, self._failed)
        return d  # type: ignore[return-value]

    def sweep_now(self) -> dict[str, int]:
        """One sweep (blocking: call in a thread); how many of each were removed."""
        now = time.time()
        expired = self._uploads.expire(self._upload_expiry(), now)
        for info in expired:
            log.info(
                "Multipart upload {upload_id} of {bucket}/{key} expired unfinished",
                upload_id=info.upload_id,
                bucket=info.bucket,
                key=info.key,
            )
        return {
            "locks": self._locks.sweep(),
            "uploads": len(expired),
            "metadata": self._store.sweep_meta(),
            "temp_files": self._store.sweep_state_temp_files(_TEMP_AGE, now),
        }

    def _report(self, counts: dict[str, int]) -> None:
        if any(counts.values()):
            log.info(
                "Swept .cosedge: {locks} stale lock(s), {uploads} expired upload(s), "
                "{metadata} orphaned metadata file(s), {temp_files} temporary file(s)",
                **counts,
            )

    def _failed(self, failure: Any) -> None:
        # A TimerService stops for good when its call fails: report, and sweep next time.
        log.failure("Sweeping .cosedge failed; trying again next interval", failure)
