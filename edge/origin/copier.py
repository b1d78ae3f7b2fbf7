"""The copy scheduler: when copies from origins run, and how many.

One copy runs per bucket+key however many misses arrive (single flight), across worker
processes too (a per-key lock); at most `concurrency` run, and at most
`per_origin_concurrency` to one origin (slots.py: queued per origin, served in turn);
`queue_size` more wait and the rest are skipped with one warning a minute. Before a copy
starts, protection.py is asked whether its key is backing off (a 404 under
`not_found_ttl`, a failure under its doubling `retry_after`) or its origin's circuit
breaker is open. Stopping the edge gives running copies `shutdown_grace` seconds, then
cancels them. The fetch of one object is fetch.py's; the connections are the
`OriginClient`'s, which the copier owns. Every copy started, joined or refused is told to
`CopyRecords` (records.py), which the status API reads. The resolver's names are
re-exported here, where the rest of the edge has imported them.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IAgent

from edge.config import OriginAddress, OriginFetchConfig
from edge.origin import measured
from edge.origin.client import AgentFactory, OriginClient, PinnedEndpointFactory, WireMeter
from edge.origin.fetch import (
    CopyFailed,
    CopyJob,
    Fetched,
    ObjectFetcher,
    Outcome,
    outcome_of,
    report_failure,
)
from edge.origin.observer import FetchObserver
from edge.origin.probe import ProbeResult, probe_key
from edge.origin.protection import OriginProtection, Refusal
from edge.origin.records import CopyRecords
from edge.origin.request import OriginPlan
from edge.origin.resolver import (
    OriginResolver,
    ReactorClock,
    ResolutionTimeout,
    ResolvedOrigin,
    choose_address,
)
from edge.origin.slots import CopySlots
from edge.store.interface import KeyLock, ObjectStore

__all__ = [
    "AgentFactory",
    "CopyFailed",
    "CopyJob",
    "CopyStart",
    "OriginCopier",
    "OriginPlan",
    "OriginResolver",
    "PinnedEndpointFactory",
    "ResolutionTimeout",
    "ResolvedOrigin",
    "WireMeter",
    "choose_address",
]

log = Logger()

_OVERFLOW_WARN_INTERVAL = 60.0
_COUNTERS = (
    "started", "stored", "failed", "already_present", "deleted", "overflow", "elsewhere",
    "backing_off", "not_found", "breaker_open",
)  # fmt: skip


class CopyStart(enum.Enum):
    """What `OriginCopier.copy` did with a miss's copy (the miss is redirected anyway)."""

    STARTED = "started"
    JOINED = "joined"  # a copy of this bucket+key is already running or queued
    QUEUED = "queued"
    OVERFLOW = "overflow"  # the queue is full: no copy; the client was redirected anyway
    STOPPING = "stopping"
    ELSEWHERE = "elsewhere"  # another worker process is copying this bucket+key
    BACKING_OFF = "backing off"  # this key's last copy failed; its retry time has not come
    NOT_FOUND = "not found"  # the origin answered 404 for this key under not_found_ttl ago
    BREAKER_OPEN = "breaker open"  # the origin's circuit breaker holds copies back


_REFUSED = {
    Refusal.NOT_FOUND: (CopyStart.NOT_FOUND, "not_found"),
    Refusal.BACKING_OFF: (CopyStart.BACKING_OFF, "backing_off"),
    Refusal.BREAKER_OPEN: (CopyStart.BREAKER_OPEN, "breaker_open"),
}


def _refusal_note(
    protection: OriginProtection, job: CopyJob, refused: Refusal = Refusal.BREAKER_OPEN
) -> tuple[str | None, float | None]:
    """The failure a refused copy leaves on record, and when it may be tried: a key backing
    off has its own failure on record already; one held back by its origin's breaker gets a
    record saying so."""
    if refused is not Refusal.BREAKER_OPEN:
        return None, None
    reason = f"not copied: circuit breaker of {job.host} open"
    return reason, protection.breakers.reopens_at(job.host)


class OverflowWarning:
    """One warning per `_OVERFLOW_WARN_INTERVAL` with how many copies were skipped because
    the queue was full, not one per overflowed miss (a burst would write thousands of lines)."""

    def __init__(self, clock: ReactorClock) -> None:
        self._clock = clock
        self._skipped = 0
        self._warned_at = -_OVERFLOW_WARN_INTERVAL

    def note(self, job: CopyJob, queue_size: int) -> None:
        """Count one skipped copy; warn when the interval since the last warning is over."""
        self._skipped += 1
        now = self._clock.seconds()
        if now - self._warned_at < _OVERFLOW_WARN_INTERVAL:
            return
        log.warn(
            "{count} cop(ies) skipped since the last warning: queue full ({queue_size}); "
            "the latest {bucket}/{key} from {origin}",
            count=self._skipped,
            queue_size=queue_size,
            reason="queue full",
            **job.fields(),
        )
        self._skipped = 0
        self._warned_at = now


class OriginCopier(Service):
    """Runs origin copies: single flight per bucket+key, capped, queued, cancellable.

    A service so that stopping the edge stops copies cleanly: running ones get
    `shutdown_grace` seconds to finish, then are cancelled and leave no temp file; then
    the `OriginClient` it owns (started and stopped with it) closes its connections.
    """

    name = "origin-copier"

    def __init__(
        self,
        reactor: Any,
        store: ObjectStore,
        fetch: OriginFetchConfig,
        agent_factory: AgentFactory | None = None,
        jitter: Callable[[], float] = random.random,
        records: CopyRecords | None = None,
        resolver: OriginResolver | None = None,
    ) -> None:
        self._clock: ReactorClock = reactor
        self.records = records if records is not None else CopyRecords(None, reactor)
        self._store = store
        self._fetch = fetch
        self.client = OriginClient(reactor)
        self.client.trust(fetch.ca_file)
        # The resolver vets what a copy reaches beyond the miss's address: standbys, hops.
        self.fetcher = ObjectFetcher(
            reactor, store, fetch, agent_factory or self._pinned_agent, resolver
        )
        self.protection = OriginProtection(reactor, fetch, jitter)
        self._jobs: dict[tuple[str, str], CopyJob] = {}
        self._slots = CopySlots()
        self._stopping = False
        self.counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._overflow = OverflowWarning(reactor)

    def reconfigure(self, fetch: OriginFetchConfig) -> None:
        """New `origin_fetch` limits from a reload: copies started from now on use them,
        running ones finish under the limits they started with."""
        self.client.trust(fetch.ca_file)  # read again: a reload may bring a renewed bundle
        self._fetch = fetch
        self.fetcher.reconfigure(fetch)
        self.protection.reconfigure(fetch)

    def _pinned_agent(
        self, address: str, port: int, meter: WireMeter, tls_host: str | None = None
    ) -> IAgent:
        """The client's agent for one copy, under the `connect_timeout` in force now."""
        return self.client.agent(address, port, meter, self._fetch.connect_timeout, tls_host)

    def probe(self, origin: OriginAddress, address: str, key: str) -> Deferred[ProbeResult]:
        """HEAD one key at a vetted address, as a copy would connect (a dry run)."""
        agent = self._pinned_agent(address, origin.connect_port, WireMeter())
        return Deferred.fromCoroutine(
            probe_key(agent, self._clock, origin, address, key, self._fetch)
        )

    def drop_queued(self, bucket: str, key: str) -> bool:
        """Forget a copy of `bucket/key` still waiting for a slot (a DELETE came: the copy
        would bring the object back). A running copy is dropped by the store's tombstone
        instead, since it already holds the key's lock."""
        job = self._jobs.get((bucket, key))
        if job is None or job.started is not None or not self._slots.remove(job):
            return False
        del self._jobs[(bucket, key)]
        self.records.dropped(job, None)
        _tell(job, Fetched.DELETED)
        return True

    def in_flight(self) -> list[CopyJob]:
        """Copies running or queued, for status pages and tests."""
        return list(self._jobs.values())

    def copy(
        self,
        bucket: str,
        key: str,
        origin: OriginAddress,
        address: str,
        request_id: str | None = None,
        plan: OriginPlan | None = None,
        observer: FetchObserver | None = None,
    ) -> CopyStart:
        """Start (or join) the copy of `bucket/key` from `address`; never waits on the
        origin. `request_id` is the miss's, so the copy's log events can be found by it;
        `plan` is how its rule asks the origin (the seed's plain GET when None). `observer`
        (a Mirror miss's) follows the copy if one starts or queues here."""
        if self._stopping:
            return CopyStart.STOPPING
        job_key = (bucket, key)
        if job_key in self._jobs:
            self.records.count(bucket, "joined")  # memory only: a joined miss stays cheap
            return CopyStart.JOINED
        job = CopyJob(
            bucket, key, origin, address, request_id, plan=plan or OriginPlan(), observer=observer
        )
        refused = self.protection.refusal(bucket, key, job.host)
        if refused is not None:
            # A dead or broken origin is not hammered (nor the log flooded) once per
            # miss: the client is redirected anyway, and the key is tried again later.
            start, counter = _REFUSED[refused]
            self.counters[counter] += 1
            self.records.refused(job, counter, *_refusal_note(self.protection, job, refused))
            measured.copy_not_started(bucket, "refused", counter)
            return start
        fetch = self._fetch
        if self._slots.can_start(job.host, fetch.concurrency, fetch.per_origin_concurrency):
            if not self._start(job):
                return CopyStart.ELSEWHERE
            return CopyStart.STARTED
        if self._slots.queued >= fetch.queue_size:
            self.counters["overflow"] += 1
            self.records.refused(job, "overflow", f"not copied: queue full ({fetch.queue_size})")
            measured.copy_not_started(bucket, "refused", "queue_full")
            self._overflow.note(job, fetch.queue_size)
            return CopyStart.OVERFLOW
        self._jobs[job_key] = job
        self._slots.enqueue(job)
        self.records.queued(job)
        return CopyStart.QUEUED

    def _start(self, job: CopyJob) -> bool:
        """Run `job` now, unless another process or node holds the key's lock. The slot is
        taken while the lock is asked for; the folder store answers at once, so a copy left
        to another worker is known (False) before this returns."""
        self._jobs[(job.bucket, job.key)] = job
        self._slots.take(job.host)
        self.protection.admit(job)
        outcome: list[bool] = []
        d = self._store.lock_key(job.bucket, job.key)
        started: Deferred[bool] = d.addCallbacks(
            self._locked, self._not_locked, callbackArgs=(job,), errbackArgs=(job,)
        )
        started.addCallback(outcome.append)
        return outcome[0] if outcome else True

    def _locked(self, lock: KeyLock | None, job: CopyJob) -> bool:
        if lock is None:
            self._give_up(job, CopyStart.ELSEWHERE)
            self.counters["elsewhere"] += 1
            self.records.count(job.bucket, "elsewhere")
            measured.copy_not_started(job.bucket, "elsewhere", "none")
            log.debug(
                "Copy of {bucket}/{key} left to the process already copying it",
                bucket=job.bucket,
                key=job.key,
            )
            return False
        if self._stopping:
            lock.release()
            self._give_up(job, CopyStart.STOPPING)
            return False
        job.lock = lock
        self.counters["started"] += 1
        job.started = self._clock.seconds()
        self.records.copying(job)
        d = self.fetcher.start(job)
        job.deferred = d
        d.addBoth(self._finished, job)
        return True

    def _not_locked(self, failure: Failure, job: CopyJob) -> bool:
        """The lock could not be judged (its coordinator is down): no copy, since nothing
        would stop every node fetching the key at once; the miss was redirected anyway."""
        self._give_up(job, CopyStart.STOPPING)
        self.counters["failed"] += 1
        reason = str(failure.value) or type(failure.value).__name__
        self.records.finished(job, "failed", f"not started: its lock cannot be taken ({reason})")
        measured.copy_not_started(job.bucket, "failed", "lock")
        log.warn(
            "Copy of {bucket}/{key} not started: its lock cannot be taken ({reason})",
            bucket=job.bucket,
            key=job.key,
            reason=reason,
        )
        return False

    def _give_up(self, job: CopyJob, why: CopyStart) -> None:
        """Free the slot `_start` took for `job`, and fill it from the queue."""
        self._slots.free(job.host)
        self.protection.abandoned(job)
        self._jobs.pop((job.bucket, job.key), None)
        _tell(job, why)
        self._drain_queue()

    def _finished(self, result: Fetched | Failure, job: CopyJob) -> None:
        self._slots.free(job.host)
        job_key = (job.bucket, job.key)
        self._jobs.pop(job_key, None)
        if job.lock is not None:
            # Still holding the key's lock: a tombstone a DELETE left for this copy has
            # done its work (the copy saw it, or the DELETE came after the link).
            self._store.forget_deletes(job.bucket, job.key)
            job.lock.release()
        outcome = Outcome.CANCELLED if self._stopping else outcome_of(result)
        self.protection.finished(job, outcome)
        measured.copy_ended(job, result, self._clock.seconds())
        _tell(job, result)
        if isinstance(result, Failure):
            self.counters["failed"] += 1
            report_failure(result, job, self._fetch)
        else:
            self.counters[result.value] += 1
        self.records.ended(job, result, self.protection.keys.retry_at(job_key), self._fetch)
        self._drain_queue()

    def _drain_queue(self) -> None:
        while not self._stopping:
            job = self._slots.next_job(self._fetch.concurrency, self._fetch.per_origin_concurrency)
            if job is None:
                return
            if self.protection.breakers.blocks(job.host):  # it opened while the job waited
                self._jobs.pop((job.bucket, job.key), None)
                self.counters["breaker_open"] += 1
                self.records.dropped(job, None)
                self.records.refused(job, "breaker_open", *_refusal_note(self.protection, job))
                measured.copy_not_started(job.bucket, "refused", "breaker_open")
                _tell(job, CopyStart.BREAKER_OPEN)
                continue
            self._start(job)

    def startService(self) -> None:
        super().startService()
        self.records.start()
        self.client.startService()

    def stopService(self) -> Deferred[None]:
        """Let running copies finish for a short grace period, then cancel what remains."""
        super().stopService()
        self._stopping = True
        for job in self._slots.clear():
            self._jobs.pop((job.bucket, job.key), None)
            self.records.dropped(job, "not started: the edge stopped first")
            _tell(job, CopyStart.STOPPING)
        running = [j.deferred for j in self._jobs.values() if j.deferred is not None]

        async def drain() -> None:
            if running:
                waiting = defer.DeferredList(running, consumeErrors=True)

                def cancel_remaining() -> None:
                    for d in running:
                        if not d.called:
                            d.cancel()

                timer = self._clock.callLater(self._fetch.shutdown_grace, cancel_remaining)
                await waiting
                if timer.active():
                    timer.cancel()
            self.records.stop()
            await self.client.stopService()

        return Deferred.fromCoroutine(drain())


def _tell(job: CopyJob, result: Fetched | Failure | CopyStart) -> None:
    """The end of `job` for its observer, if it has one (a Mirror miss's clients)."""
    if job.observer is not None:
        job.observer.ended(result)
