"""The backfill runner: copies a job's keys through the copier, at its rate, resumably.

Jobs run in the main process only. Any process may receive the API call that starts one
(the workers share the socket), so the call writes the job's files (`jobs.py`) and this
runner, polling the folder every `poll_interval` seconds, picks them up. One runner means
one place that owns each checkpoint, no two processes copying the same job's keys, and job
copies counted against one copier's slots (the main process's; workers' slots stay wholly
for their misses).

For each key, in the file's order: a key already in the store is skipped (no origin
request), a key whose rule names no origin to copy from fails with that reason, and the
rest go to `OriginCopier.copy_for_job` (single flight with misses, the fetch's limits and
validation, at most the job share of the slots). `--rate` spaces the starts on the reactor
clock; `--concurrency` caps the job's copies at once under the job share. What a key gave
(stored, skipped, failed and why) is kept in the checkpoint, written at most once a
`checkpoint_interval` and at every change of state; stopping the edge waits for the job's
running copies (the copier's `shutdown_grace`), writes the checkpoint and leaves the job
`running`, so the next start resumes it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from edge.config import OriginAddress
from edge.origin.jobcopies import FAILED, RETRY, SKIPPED, STORED, JobCopier, JobCopy
from edge.origin.jobs import (
    CANCELLED,
    COMPLETED,
    COMPLETED_WITH_FAILURES,
    FINISHED_STATES,
    JobFiles,
    JobProblem,
    JobSpec,
    Progress,
)
from edge.origin.request import OriginPlan
from edge.origin.resolver import ReactorClock
from edge.store.interface import ObjectStore, StoreUnavailable

log = Logger()

BUSY_WAIT = 0.1  # seconds between asks for a job slot while misses hold the rest
MAX_RETRIES = 8  # a key another process copies, or behind an open breaker: asked again
MAX_RETRY_WAIT = 60.0


@dataclass(frozen=True)
class Located:
    """Where a key would be copied from: its rule's origin, a vetted address of it, and
    how the rule asks it (scheme, rewrites, standbys)."""

    origin: OriginAddress
    address: str
    plan: OriginPlan = OriginPlan()


# The origin a key of a bucket is copied from, or why it is copied from none.
Locate = Callable[[str, str], Awaitable[Located | str]]


class RateLimiter:
    """Spaces starts `1 / rate` seconds apart on the clock (no bursts); None: no spacing."""

    def __init__(self, clock: ReactorClock, rate: float | None) -> None:
        self._clock = clock
        self._interval = 1.0 / rate if rate else 0.0
        self._next: float | None = None

    def wait(self) -> float:
        """Seconds until the next start may go (0: now)."""
        if self._next is None:
            return 0.0
        return max(0.0, self._next - self._clock.seconds())

    def take(self) -> None:
        now = self._clock.seconds()
        start = now if self._next is None else max(now, self._next)
        self._next = start + self._interval


class JobRun:
    """One job being run in this process, from its checkpoint on."""

    def __init__(self, runner: BackfillRunner, spec: JobSpec, keys: list[str], progress: Progress):
        self._runner = runner
        self.spec = spec
        self._keys = keys
        self.progress = progress
        self._clock = runner.clock
        self._pending = deque(progress.unfinished(len(keys)))
        self._in_flight = 0
        self._limiter = RateLimiter(self._clock, spec.rate)
        self._timer: Any = None
        self._sleeps: set[Deferred[None]] = set()
        self._stopping = False
        self._cancelled = False
        self._idle: list[Deferred[None]] = []
        self._base_elapsed = progress.elapsed
        self._resumed_at = self._clock.seconds()
        self._saved_at = self._resumed_at

    @property
    def job(self) -> str:
        return self.spec.job

    def _cap(self) -> int:
        share = self._runner.copier.job_copies.slots
        return min(share, self.spec.concurrency) if self.spec.concurrency else share

    def pump(self) -> None:
        """Start keys while the job's cap, the rate and the pending list allow."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        while not (self._stopping or self._cancelled) and self._pending:
            if self._in_flight >= self._cap():
                return  # a copy ending pumps again
            wait = self._limiter.wait()
            if wait > 0:
                self._timer = self._clock.callLater(wait, self.pump)
                return
            self._limiter.take()
            index = self._pending.popleft()
            self._in_flight += 1
            d = Deferred.fromCoroutine(self._copy(index))
            d.addBoth(self._ended, index)
        self._settle()

    async def _copy(self, index: int) -> JobCopy:
        bucket, key = self.spec.bucket, self._keys[index]
        copier = self._runner.copier
        for attempt in range(MAX_RETRIES + 1):
            if await self._runner.store.exists(bucket, key):
                return JobCopy(SKIPPED)
            located = await self._runner.locate(bucket, key)
            if isinstance(located, str):
                return JobCopy(FAILED, located)
            where = (located.origin, located.address, self.job, located.plan)
            started = copier.copy_for_job(bucket, key, *where)
            while started is None:  # misses hold the other slots: ask again shortly
                await self._sleep(BUSY_WAIT)
                started = copier.copy_for_job(bucket, key, *where)
            copy = await started
            if copy.outcome != RETRY or self._stopping or self._cancelled:
                return copy
            if attempt < MAX_RETRIES:
                await self._sleep(min(MAX_RETRY_WAIT, 2.0**attempt))
        return JobCopy(FAILED, copy.reason)

    def _sleep(self, seconds: float) -> Deferred[None]:
        if self._stopping or self._cancelled:
            raise CancelledError()  # halted meanwhile: this key is left for later
        d: Deferred[None] = deferLater(self._clock, seconds, lambda: None)  # type: ignore[arg-type]
        self._sleeps.add(d)
        d.addBoth(self._slept, d)
        return d

    def _slept(self, result: Any, d: Deferred[None]) -> Any:
        self._sleeps.discard(d)
        return result

    def _ended(self, result: JobCopy | Failure, index: int) -> None:
        self._in_flight -= 1
        if isinstance(result, Failure):
            if result.check(CancelledError) and (self._stopping or self._cancelled):
                result = JobCopy(RETRY)
            elif result.check(StoreUnavailable):
                result = JobCopy(FAILED, "the store is unavailable")
            else:
                log.failure("Backfill {job}: key {key} failed", result, **self._fields(index))
                result = JobCopy(FAILED, f"{type(result.value).__name__}: {result.value}")
        if result.outcome == RETRY:
            if self._stopping or self._cancelled:
                self._pending.appendleft(index)  # not done: the next start (if any) does it
            else:  # a retry's leftover: no more tries
                self._record(index, JobCopy(FAILED, result.reason or "not copied"))
        else:
            self._record(index, result)
        if self._clock.seconds() - self._saved_at >= self._runner.checkpoint_interval:
            self.save()
        self.pump()

    def _fields(self, index: int) -> dict[str, Any]:
        return {"job": self.job, "bucket": self.spec.bucket, "key": self._keys[index]}

    def _record(self, index: int, copy: JobCopy) -> None:
        progress = self.progress
        progress.finish(index)
        progress.done += 1
        if copy.outcome == STORED:
            progress.stored += 1
            progress.bytes += copy.size
        elif copy.outcome == SKIPPED:
            progress.skipped += 1
        else:
            progress.failed += 1
            reason = copy.reason or "failed"
            progress.failures.append({"key": self._keys[index], "reason": reason})
            log.info(
                "Backfill {job}: {bucket}/{key} not copied: {reason}",
                reason=reason,
                **self._fields(index),
            )

    def _settle(self) -> None:
        """At rest (nothing running): a job with nothing left, or cancelled, is finished;
        a stopping one is checkpointed for the next start."""
        if self._in_flight:
            return
        if self._stopping:
            self.save(durable=True)
        elif self._cancelled or not self._pending:
            if self._cancelled and self._pending:
                self.progress.state = CANCELLED
            else:
                self.progress.state = COMPLETED_WITH_FAILURES if self.progress.failed else COMPLETED
            self.save(durable=True)
            self._runner.finished(self)
        else:
            return
        idle, self._idle = self._idle, []
        for d in idle:
            d.callback(None)

    def save(self, durable: bool = False) -> None:
        now = self._clock.seconds()
        self.progress.elapsed = self._base_elapsed + (now - self._resumed_at)
        self._saved_at = now
        try:
            self._runner.files.save_progress(self.job, self.progress, durable=durable)
        except OSError as e:
            log.error(
                "Backfill {job}: checkpoint not written ({reason})", job=self.job, reason=str(e)
            )

    def cancel(self) -> None:
        """No key starts any more; the running ones finish, then the job is `cancelled`."""
        if self._cancelled:
            return
        self._cancelled = True
        log.info("Backfill {job} of {bucket} cancelled", job=self.job, bucket=self.spec.bucket)
        self._halt()
        self._settle()

    def stop(self) -> Deferred[None]:
        """The edge stops: fires once the running copies ended and the checkpoint is saved."""
        self._stopping = True
        self._halt()
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        self._settle()
        return d

    def _halt(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for sleeping in list(self._sleeps):
            sleeping.cancel()


class BackfillRunner(Service):
    """Picks up job files and runs them; every job of the edge runs here (main process)."""

    name = "backfill"

    def __init__(
        self,
        clock: ReactorClock,
        store: ObjectStore,
        copier: JobCopier,
        files: JobFiles,
        locate: Locate,
        poll_interval: float = 0.5,
        checkpoint_interval: float = 0.5,
    ) -> None:
        self.clock = clock
        self.store = store
        self.copier = copier
        self.files = files
        self.locate = locate
        self.checkpoint_interval = checkpoint_interval
        self._poll_interval = poll_interval
        self._poller: LoopingCall | None = None
        self.runs: dict[str, JobRun] = {}
        self._done: set[str] = set()  # finished (or unreadable) jobs: not read again

    def startService(self) -> None:
        super().startService()
        self._poller = LoopingCall(self.poll)
        self._poller.clock = self.clock  # type: ignore[assignment]
        self._poller.start(self._poll_interval).addErrback(
            lambda f: log.failure("Backfill job polling stopped", f)
        )

    def poll(self) -> None:
        """Start jobs written since the last look; pass cancels on to running ones."""
        try:
            jobs = self.files.job_ids()
        except OSError as e:
            log.warn("Backfill jobs cannot be listed: {reason}", reason=str(e))
            return
        for job in jobs:
            run = self.runs.get(job)
            if run is not None:
                if self.files.cancelled(job):
                    run.cancel()
            elif job not in self._done:
                self._pick_up(job)

    def _pick_up(self, job: str) -> None:
        try:
            spec = self.files.spec(job)
            keys = self.files.keys(job)
        except JobProblem as e:
            self._done.add(job)
            log.warn("Backfill job {job} ignored: {reason}", job=job, reason=str(e))
            return
        try:
            progress = self.files.progress(job)
        except JobProblem as e:  # a crash's torn checkpoint: present keys are skipped anyway
            progress = Progress()
            log.warn("Backfill job {job} starts over: {reason}", job=job, reason=str(e))
        if progress.state in FINISHED_STATES:
            self._done.add(job)
            return
        run = self.runs[job] = JobRun(self, spec, keys, progress)
        log.info(
            "Backfill {job} of {bucket}: {action} ({done}/{total} done)",
            job=job,
            bucket=spec.bucket,
            action="resumed" if progress.done else "started",
            done=progress.done,
            total=spec.total,
        )
        if self.files.cancelled(job):
            run.cancel()
        else:
            run.pump()

    def finished(self, run: JobRun) -> None:
        self.runs.pop(run.job, None)
        self._done.add(run.job)
        progress = run.progress
        log.info(
            "Backfill {job} of {bucket} {state}: {stored} stored, {skipped} skipped, "
            "{failed} failed, {bytes} bytes",
            job=run.job,
            bucket=run.spec.bucket,
            state=progress.state,
            stored=progress.stored,
            skipped=progress.skipped,
            failed=progress.failed,
            bytes=progress.bytes,
        )

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        return DeferredList([run.stop() for run in list(self.runs.values())])
