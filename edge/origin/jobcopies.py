"""Backfill jobs' copies: the copier that takes them, their share of the slots, how each
ended.

A job's copy goes through the same scheduler as a miss's (single flight, the key's lock,
`per_origin_concurrency`, the breaker, the fetch's limits, the rule's plan, the copy
records), with two differences that keep live traffic first: job copies hold at most half
of `concurrency` (at least one), and they never queue. `JobCopier.copy_for_job` starts one
only when a slot is free at once, so a waiting miss is never behind a job's key; otherwise
it says "not now" and the job asks again later. The job learns the outcome through a
Deferred (`JobCopy`), fired after the freed slot went to the queue of misses.

`JobCopier` is the edge's copier (`OriginCopier` plus this), a subclass so the scheduler
itself stays as it is: it adds the entry point and hears, after the scheduler, of every
copy that ended (`_finished`) or was given up before reaching its origin (`_give_up`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import cached_property

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from edge.config import OriginAddress, OriginFetchConfig
from edge.origin.copier import CopyStart, OriginCopier
from edge.origin.fetch import CopyJob, Fetched, describe_failure
from edge.origin.protection import OriginProtection
from edge.origin.request import OriginPlan
from edge.origin.slots import CopySlots

STORED = "stored"
SKIPPED = "skipped"  # the object was there already (or appeared meanwhile)
FAILED = "failed"
RETRY = "retry"  # nothing learnt about the key (another process copies it, the edge stops)


@dataclass(frozen=True)
class JobCopy:
    """How one job copy ended: `outcome` is one of the names above; `size` in bytes."""

    outcome: str
    reason: str | None = None
    size: int = 0


def job_copy_of(
    result: Fetched | Failure, job: CopyJob, fetch: OriginFetchConfig, stopping: bool
) -> JobCopy:
    if isinstance(result, Failure):
        if stopping:  # cancelled by the stop, or failed by it: the job tries the key again
            return JobCopy(RETRY, "interrupted: the edge stopped")
        return JobCopy(FAILED, describe_failure(result, fetch))
    if result is Fetched.STORED:
        return JobCopy(STORED, size=job.received)
    if result is Fetched.DELETED:
        return JobCopy(FAILED, "deleted while it was being copied")
    return JobCopy(SKIPPED)


class Start(enum.Enum):
    START = "start"


START = Start.START


def job_slots(concurrency: int) -> int:
    """The slots job copies may hold at once: half, so misses always have the other half."""
    return max(1, concurrency // 2)


class JobCopies:
    """The job copies in flight, by bucket+key, with whoever waits for each."""

    def __init__(self, concurrency: int) -> None:
        self._waiting: dict[tuple[str, str], list[Deferred[JobCopy]]] = {}
        self.running = 0
        self.slots = job_slots(concurrency)

    def reconfigure(self, concurrency: int) -> None:
        self.slots = job_slots(concurrency)

    def verdict(
        self,
        job: CopyJob,
        running: CopyJob | None,
        fetch: OriginFetchConfig,
        slots: CopySlots,
        protection: OriginProtection,
    ) -> Deferred[JobCopy] | None | Start:
        """Whether a job's copy of `job`'s key may start now (START), joins the copy of it
        already running (the Deferred of its end), waits (None: the edge stops, the job
        holds its share, no slot is free, or a miss's copy of the key still queues) or is
        refused by the origin's open breaker. A key's backoff is not asked: an operator
        asked for the key, and `--failed` is the retry of exactly such keys."""
        if running is None or self.running >= self.slots:
            return None
        if running is not job:
            return self.wait(job.bucket, job.key) if running.started is not None else None
        if protection.breakers.blocks(job.host):
            return succeed(JobCopy(RETRY, "the origin's circuit breaker is open"))
        if not slots.can_start(job.host, fetch.concurrency, fetch.per_origin_concurrency):
            return None
        return START

    def wait(self, bucket: str, key: str) -> Deferred[JobCopy]:
        d: Deferred[JobCopy] = Deferred()
        self._waiting.setdefault((bucket, key), []).append(d)
        self.running += 1
        return d

    def fire(self, job: CopyJob, copy: JobCopy) -> None:
        """The copy of `job`'s key ended (or was given up): tell every job waiting on it."""
        waiting = self._waiting.pop((job.bucket, job.key), [])
        self.running -= len(waiting)
        for d in waiting:
            d.callback(copy)


class JobCopier(OriginCopier):
    """The copier, taking backfill jobs' copies too (see the module docstring)."""

    @cached_property
    def job_copies(self) -> JobCopies:
        return JobCopies(self._fetch.concurrency)

    def reconfigure(self, fetch: OriginFetchConfig) -> None:
        super().reconfigure(fetch)
        self.job_copies.reconfigure(fetch.concurrency)

    def copy_for_job(
        self,
        bucket: str,
        key: str,
        origin: OriginAddress,
        address: str,
        job_id: str,
        plan: OriginPlan | None = None,
    ) -> Deferred[JobCopy] | None:
        """A backfill job's copy of `bucket/key`, firing with how it ended; None when it
        cannot start at once (`JobCopies.verdict` says when it may)."""
        job = CopyJob(bucket, key, origin, address, f"backfill-{job_id}", plan=plan or OriginPlan())
        running = None if self._stopping else self._jobs.get((bucket, key), job)
        verdict = self.job_copies.verdict(job, running, self._fetch, self._slots, self.protection)
        if verdict is START:
            waiting = self.job_copies.wait(bucket, key)  # first: a present key ends in _start
            self._start(job)
            return waiting
        return verdict

    def _give_up(self, job: CopyJob, why: CopyStart) -> None:
        super()._give_up(job, why)
        if self._stopping:
            reason = "interrupted: the edge stopped"
        elif why is CopyStart.ELSEWHERE:
            reason = "another process is copying it"
        else:
            reason = "its copy lock cannot be taken"
        self.job_copies.fire(job, JobCopy(RETRY, reason))

    def _finished(self, result: Fetched | Failure, job: CopyJob) -> None:
        super()._finished(result, job)
        self.job_copies.fire(job, job_copy_of(result, job, self._fetch, self._stopping))
