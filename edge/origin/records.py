"""Copy records: what became of each copy the copier started, joined or refused (SPEC §9).

Kept so an operator can answer "did my object land, and if not why" for one key
(`status`), for a bucket (`listing`) and for the backfill (`failures`). The copier tells
`CopyRecords` of every change of a copy's state; each change is one row written to the
shared table of `recordtable` (see there why SQLite): `queued`, `copying` (with the
attempt counted), then `stored` or `failed` (reason, and `retry_at` from origin
protection), or the row is dropped when the key was deleted meanwhile. Progress is written
at most once a second (`PROGRESS_INTERVAL`) for copies running in this process, which also
answer from memory, to the byte. A joined miss writes nothing: it only adds to the
bucket's counters, which are flushed with the progress, so the table's counters are the
whole edge's (every worker adds its own).

Rows are bounded (`MAX_FAILED`, `MAX_FINISHED`, the oldest go first), and survive
restarts; a copy whose process died mid-way is marked failed when a process starts.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from edge.config import OriginFetchConfig
from edge.origin.fetch import Fetched, describe_failure
from edge.origin.job import CopyJob
from edge.origin.recordtable import FILE_NAME, CopyRecord, CopyTable
from edge.origin.resolver import ReactorClock

__all__ = ["FILE_NAME", "CopyRecord", "CopyRecords", "record_json"]

log = Logger(namespace="edge.origin.copier")
T = TypeVar("T")
Writer = Callable[["CopyTable"], Any]

PROGRESS_INTERVAL = 1.0
_WARN_INTERVAL = 60.0
MAX_FAILED = 100_000
MAX_FINISHED = 10_000
MAX_IN_FLIGHT_LISTED = 1000
_PRUNE_EVERY = 500  # finished copies between two prunes
_KNOWN_FAILED = 10_000  # keys this process remembers having a failed row (refusals skip them)
INTERRUPTED = "interrupted: the edge stopped before the copy ended"
COUNTERS = (
    "started", "joined", "queued", "overflow", "elsewhere", "backing_off", "not_found",
    "breaker_open", "stored", "already_present", "deleted", "failed",
)  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CopyRecords:
    """The records of one edge process over the shared table (memory only for `None`).

    The file is opened by `start`, which runs after twistd has dropped to `--uid`, so the
    file belongs to the user the edge runs as. A table that cannot be opened or written
    costs the records, never a copy: the problem is logged (once a minute) and copies go on.
    """

    def __init__(
        self,
        path: Path | None,
        clock: ReactorClock,
        alive: Callable[[int], bool] = _alive,
    ) -> None:
        self._clock = clock
        self._alive = alive
        self._path = path
        self.table: CopyTable | None = CopyTable(None) if path is None else None
        self._pid = os.getpid()
        self._pending = _Pending(clock, self._call)
        self._failed: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._finished_since_prune = 0
        self._warned_at = -_WARN_INTERVAL

    def start(self) -> None:
        """Open the file; copies that died with their process are failed now."""
        self._pid = os.getpid()  # now: a daemonizing twistd forks after building the tree
        if self.table is None and self._path is not None:
            try:
                self.table = CopyTable(self._path)
            except (sqlite3.Error, OSError) as e:
                log.error(
                    "Copy records cannot be kept in {path}: {reason}; they are kept in "
                    "memory until a restart",
                    path=str(self._path),
                    reason=str(e),
                )
                self.table = CopyTable(None)
        now = self._clock.seconds()
        count = self._call(lambda t: t.interrupt_dead(self._alive, INTERRUPTED, now), 0)
        if count:
            log.info("{count} interrupted cop(ies) recorded as failed", count=count)
        self._call(lambda t: t.prune(MAX_FAILED, MAX_FINISHED), None)

    def stop(self) -> None:
        """Flush what is pending and close the table (the copier has stopped its copies)."""
        if self.table is None:
            return
        self._pending.stop()
        self.table.close()
        self.table = None

    # What the copier tells.

    def count(self, bucket: str, name: str) -> None:
        """One more of `name` (a `COUNTERS` entry) for `bucket`: memory now, disk within a
        second."""
        self._pending.count(bucket, name)

    def queued(self, job: CopyJob) -> None:
        self.count(job.bucket, "queued")
        # A copy another process runs keeps its row: this one may never start.
        self._put(self._record(job, "queued"), unless=("copying",))

    def copying(self, job: CopyJob) -> None:
        """`job` holds its key's lock and starts fetching now."""
        self.count(job.bucket, "started")
        key = (job.bucket, job.key)
        before = self._get(job.bucket, job.key)
        attempts = (before.attempts if before is not None else 0) + 1
        self._pending.running(key, job)
        self._failed.pop(key, None)
        self._put(replace(self._record(job, "copying"), attempts=attempts, started=job.started))

    def finished(
        self, job: CopyJob, outcome: str, reason: str | None = None, retry_at: float | None = None
    ) -> None:
        """`job` ended: `outcome` is a counter (`stored`, `already_present`, `deleted`,
        `failed`); a failure has its `reason` and the time protection lets it retry."""
        self.count(job.bucket, outcome)
        key = (job.bucket, job.key)
        self._pending.ended(key)
        if outcome == "deleted":
            self._delete(job.bucket, job.key, "copying")
            return
        before = self._get(job.bucket, job.key)
        record = replace(
            self._record(job, "failed" if outcome == "failed" else "stored"),
            bytes=job.received,
            expected=job.expected,
            started=job.started,
            finished=self._clock.seconds(),
            reason=reason,
            retry_at=retry_at,
            attempts=before.attempts if before is not None else 0,
        )
        if outcome == "failed":
            self._remember_failed(key)
        else:
            self._failed.pop(key, None)
        self._put(record)
        self._finished_since_prune += 1
        if self._finished_since_prune >= _PRUNE_EVERY:
            self._finished_since_prune = 0
            self._call(lambda t: t.prune(MAX_FAILED, MAX_FINISHED), None)

    def ended(
        self,
        job: CopyJob,
        result: Fetched | Failure,
        retry_at: float | None,
        fetch: OriginFetchConfig,
    ) -> None:
        """`job`'s fetch ended with `result`; a failure may be tried at `retry_at`."""
        if isinstance(result, Failure):
            self.finished(job, "failed", describe_failure(result, fetch), retry_at)
        else:
            self.finished(job, result.value)

    def refused(
        self, job: CopyJob, counter: str, reason: str | None = None, retry_at: float | None = None
    ) -> None:
        """No copy of `job` now (`counter` says why). With a `reason` the key gets a
        failed row, unless it has one (its real failure is worth more than the refusal);
        it is written once per key, not once per refused miss."""
        self.count(job.bucket, counter)
        key = (job.bucket, job.key)
        if reason is None or key in self._failed:
            return
        self._remember_failed(key)
        record = replace(
            self._record(job, "failed"),
            finished=self._clock.seconds(),
            reason=reason,
            retry_at=retry_at,
        )
        self._put(record, unless=("failed", "queued", "copying"))

    def dropped(self, job: CopyJob, reason: str | None) -> None:
        """A queued `job` will not run: forgotten (a DELETE came, `reason` None) or failed
        with `reason` (the edge is stopping)."""
        if reason is None:
            self._delete(job.bucket, job.key, "queued")
            return
        record = replace(self._record(job, "failed"), finished=self._clock.seconds(), reason=reason)
        self._put(record, unless=("copying", "stored", "failed"))

    # What the status API reads.

    def status(self, bucket: str, key: str) -> CopyRecord | None:
        """The key's latest copy (None: never seen), to the byte if it runs here."""
        record = self._get(bucket, key)
        job = self._pending.live.get((bucket, key))
        if record is not None and job is not None and record.state == "copying":
            record = replace(record, bytes=job.received, expected=job.expected)
        return record

    def by_request(self, request_id: str) -> CopyRecord | None:
        """The copy started by the miss with this `x-cos-request-id` (while it is its key's
        latest)."""
        return self._call(lambda t: t.by_request(request_id), None)

    def in_flight(self, bucket: str, limit: int = MAX_IN_FLIGHT_LISTED) -> list[CopyRecord]:
        """Copies queued or running in any process of the edge."""
        none: list[CopyRecord] = []
        records = self._call(lambda t: t.live(bucket, limit), none)
        return [self.status(r.bucket, r.key) or r if r.state == "copying" else r for r in records]

    def failures(
        self, bucket: str, marker: str | None = None, limit: int = 1000
    ) -> tuple[list[CopyRecord], str | None]:
        """A bucket's failed keys, newest first, and the marker of the next page (None:
        this was the last). What `?cosedge-copies` lists and a backfill of `--failed`
        retries."""
        empty: tuple[list[CopyRecord], str | None] = ([], None)
        return self._call(lambda t: t.failures(bucket, marker, limit), empty)

    def counters(self, bucket: str) -> dict[str, int]:
        """The bucket's counters over every process (this one's to the event)."""
        totals = dict.fromkeys(COUNTERS, 0)
        stored: dict[str, int] = {}
        for name, value in self._call(lambda t: t.counters(bucket), stored).items():
            totals[name] = totals.get(name, 0) + value
        for (b, name), value in self._pending.deltas.items():
            if b == bucket:
                totals[name] = totals.get(name, 0) + value
        return totals

    # Inside.

    def _record(self, job: CopyJob, state: str) -> CopyRecord:
        now = self._clock.seconds()
        return CopyRecord(
            job.bucket,
            job.key,
            state,
            origin=job.origin.netloc,
            address=job.address,
            request_id=job.request_id,
            pid=self._pid,
            changed=now,
        )

    def _call(self, use: Callable[[CopyTable], T], default: T) -> T:
        """`use(table)`, or `default` when the table is closed or fails (logged)."""
        table = self.table
        if table is None:
            return default
        try:
            return use(table)
        except sqlite3.Error as e:
            now = self._clock.seconds()
            if now - self._warned_at >= _WARN_INTERVAL:
                self._warned_at = now
                log.warn(
                    "Copy records not written or read ({reason}); copies go on",
                    reason=str(e),
                )
            return default

    def _get(self, bucket: str, key: str) -> CopyRecord | None:
        return self._call(lambda t: t.get(bucket, key), None)

    def _put(self, record: CopyRecord, unless: tuple[str, ...] = ()) -> None:
        self._call(lambda t: t.put(record, unless), None)

    def _delete(self, bucket: str, key: str, state: str) -> None:
        self._call(lambda t: t.delete(bucket, key, state), None)

    def _remember_failed(self, key: tuple[str, str]) -> None:
        self._failed[key] = None
        self._failed.move_to_end(key)
        while len(self._failed) > _KNOWN_FAILED:
            self._failed.popitem(last=False)


class _Pending:
    """What waits for the next write: counter deltas, and the progress of the copies this
    process runs. The timer runs only while there is something to write."""

    def __init__(
        self, clock: ReactorClock, call: Callable[[Callable[[CopyTable], Any], None], Any]
    ):
        self._clock = clock
        self._call = call
        self.live: dict[tuple[str, str], CopyJob] = {}
        self._written: dict[tuple[str, str], tuple[int, int | None]] = {}
        self.deltas: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._timer: LoopingCall | None = None

    def count(self, bucket: str, name: str) -> None:
        self.deltas[(bucket, name)] += 1
        self._ensure_timer()

    def running(self, key: tuple[str, str], job: CopyJob) -> None:
        self.live[key] = job
        self._written[key] = (0, None)
        self._ensure_timer()

    def ended(self, key: tuple[str, str]) -> None:
        self.live.pop(key, None)
        self._written.pop(key, None)

    def stop(self) -> None:
        self._flush()
        if self._timer is not None and self._timer.running:
            self._timer.stop()
        self._timer = None

    def _ensure_timer(self) -> None:
        if self._timer is None:
            self._timer = LoopingCall(self._flush)
            self._timer.clock = self._clock  # type: ignore[assignment]
            self._timer.start(PROGRESS_INTERVAL, now=False)

    def _flush(self) -> None:
        """Write the counters added since the last flush and the progress of copies
        running here; stop the timer when there is nothing left to write."""
        if self.deltas:
            deltas, self.deltas = dict(self.deltas), defaultdict(int)
            self._call(lambda t: t.add_counters(deltas), None)
        now = self._clock.seconds()
        rows = []
        for key, job in self.live.items():
            seen = (job.received, job.expected)
            if self._written.get(key) != seen:
                self._written[key] = seen
                rows.append((job.bucket, job.key, job.received, job.expected, now))
        if rows:
            self._call(lambda t: t.progress(rows), None)
        if not self.live and not self.deltas and self._timer is not None:
            if self._timer.running:
                self._timer.stop()
            self._timer = None


def iso_time(seconds: float | None) -> str | None:
    """An epoch time as ISO 8601 UTC (what the JSON says, and JavaScript's `Date` reads)."""
    if seconds is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def record_json(bucket: str, key: str, record: CopyRecord | None) -> dict[str, Any]:
    """SPEC §9's fields for one key (`absent` when it was never seen)."""
    if record is None:
        record = CopyRecord(bucket, key, "absent")
    return {
        "bucket": record.bucket,
        "key": record.key,
        "state": record.state,
        "origin": record.origin,
        "address": record.address,
        "bytes": record.bytes,
        "expected": record.expected,
        "started": iso_time(record.started),
        "finished": iso_time(record.finished),
        "reason": record.reason,
        "retry_at": iso_time(record.retry_at),
        "attempts": record.attempts,
        "request_id": record.request_id,
    }
