"""The fetch of one object: stream it from a pinned origin address into a pending store write.

Given a `CopyJob` (which key, from which vetted address, by which plan), `ObjectFetcher`
asks the origin for the key (walk.py picks the answer to take: standbys, redirects),
streams a 200 body into the store's pending upload under `max_object_size`, `idle_timeout`
and `total_timeout`, and publishes it only when it is whole: the length matches
Content-Length and the origin sent nothing beyond it. Anything else discards the pending
write and fails with a reason worded for the operator (`describe_failure`); the scheduler
in copier.py decides when fetches run and what a failure means for the key.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any, cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectError, ConnectionRefusedError, TimeoutError
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH

from edge.config import OriginFetchConfig
from edge.origin.client import AgentFactory, WireMeter
from edge.origin.job import CopyFailed, CopyJob, origin_host
from edge.origin.provenance import Received  # hook: metadata and digests (refresh helper)
from edge.origin.request import USER_AGENT
from edge.origin.resolver import OriginResolver, ReactorClock
from edge.origin.walk import Discard, OriginWalk, tls_reason
from edge.origin.writebehind import WriteBehind, hash_written, joined
from edge.store.interface import KeyConflict, ObjectStore, StoreUnavailable
from edge.store.keys import UnsafePath

__all__ = ["USER_AGENT", "CopyFailed", "CopyJob", "Fetched", "ObjectFetcher", "origin_host"]

# The namespace the origin side has always logged under (operators filter on it).
log = Logger(namespace="edge.origin.copier")


class _BodyWriter(Protocol):
    """Streams a response body into a pending object with a size cap and an idle timeout.

    Each chunk is shown to `arrived` (a Mirror fetch's clients) and goes to `lanes` on
    worker threads (`WriteBehind`: the store's MD5 and disk writes stay off the reactor);
    `written(total)` is told on the reactor as they land, and `finished` fires only once
    all of them are written.
    """

    def __init__(
        self,
        job: CopyJob,
        lanes: Sequence[Callable[[Sequence[bytes]], None]],
        written: Callable[[int], None],
        limit: int,
        idle_timeout: float,
        clock: ReactorClock,
        arrived: Callable[[bytes], None] | None = None,
    ) -> None:
        self._job = job
        self._arrived = arrived
        self._limit = limit
        self._idle_timeout = idle_timeout
        self._clock = clock
        self._timer: IDelayedCall | None = None
        self.finished: Deferred[None] = Deferred(lambda d: self._abort(CancelledError()))
        self._failed = False
        self.behind = WriteBehind(lanes, written, self._write_failed, self._pause, self._resume)

    def connectionMade(self) -> None:
        self._timer = self._clock.callLater(self._idle_timeout, self._idle)

    def dataReceived(self, data: bytes) -> None:
        if self._failed:
            return
        if self._timer is not None and self._timer.active():
            self._timer.reset(self._idle_timeout)
        if self._job.received + len(data) > self._limit:
            self._abort(CopyFailed(f"body over max_object_size ({self._limit} bytes)", status=200))
            return
        if self._arrived is not None:
            self._arrived(data)
        self.behind.add(data)
        self._job.received += len(data)

    def _write_failed(self, failure: Failure) -> None:
        error = failure.value
        if isinstance(error, OSError):
            self._abort(CopyFailed(f"cannot write temporary file: {error.strerror or error}"))
        else:
            self._abort(error if isinstance(error, Exception) else Exception(str(error)))

    def _pause(self) -> None:
        if self.transport is not None:
            cast(IPushProducer, self.transport).pauseProducing()

    def _resume(self) -> None:
        if self.transport is not None and not self._failed:
            if self._timer is not None and self._timer.active():
                self._timer.reset(self._idle_timeout)  # the wait was ours, not the origin's
            cast(IPushProducer, self.transport).resumeProducing()

    def _idle(self) -> None:
        self._timer = None
        if self.behind.paused:  # held back by the disk, not by the origin: wait on
            self._timer = self._clock.callLater(self._idle_timeout, self._idle)
            return
        reason = f"origin sent nothing for {self._idle_timeout:g}s (idle timeout)"
        self._abort(CopyFailed(reason, fault=True))

    def _abort(self, reason: Exception) -> None:
        if self._failed:
            return
        self._failed = True
        self._cancel_timer()
        self.behind.stop()
        if self.transport is not None:
            cast(IPushProducer, self.transport).stopProducing()
        if not self.finished.called:
            self.finished.errback(Failure(reason))

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # noqa: B008
        self._cancel_timer()
        if self._failed or self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.behind.idle().addCallback(self._written_all)
        else:
            self._failed = True
            self.behind.stop()
            self.finished.errback(
                Failure(
                    CopyFailed(
                        f"connection lost mid-body after {self._job.received} bytes", fault=True
                    )
                )
            )

    def _written_all(self, _: None) -> None:
        if not self._failed and not self.finished.called:
            self.finished.callback(None)


class Fetched(enum.Enum):
    """How a fetch that did not fail ended; the values are the copier's counter names."""

    STORED = "stored"
    ALREADY_PRESENT = "already_present"  # before the fetch, or published meanwhile
    DELETED = "deleted"  # a DELETE of the key came while the body streamed
    KEPT = "kept"  # a refresh the origin answered 304 Not Modified (refresh.py)


class ObjectFetcher:
    """Fetches one object per `start()`, into the store, under the `origin_fetch` limits.

    Long-lived and shared by all copies; it keeps no state per copy (that is the
    `CopyJob`), so the limits a reload brings apply to each step from then on.
    """

    def __init__(
        self,
        clock: ReactorClock,
        store: ObjectStore,
        fetch: OriginFetchConfig,
        agent_factory: AgentFactory,
        resolver: OriginResolver | None = None,
    ) -> None:
        self._clock = clock
        self._store = store
        self._fetch = fetch
        self._walk = OriginWalk(clock, agent_factory, resolver)

    def reconfigure(self, fetch: OriginFetchConfig) -> None:
        self._fetch = fetch

    @property
    def clock(self) -> ReactorClock:
        return self._clock

    @property
    def config(self) -> OriginFetchConfig:
        """The limits in force, for a refresh (refresh.py) that starts fetches itself."""
        return self._fetch

    def start(self, job: CopyJob) -> Deferred[Fetched]:
        """The fetch of `job`, cancelled (and failed) after `total_timeout` seconds."""
        d = Deferred.fromCoroutine(self._run(job))
        d.addTimeout(
            self._fetch.total_timeout,
            self._clock,  # type: ignore[arg-type]
            onTimeoutCancel=_timed_out(
                f"took longer than total_timeout ({self._fetch.total_timeout:g}s)"
            ),
        )
        return d

    async def _run(self, job: CopyJob) -> Fetched:
        # First thing, in the same reactor turn that took the key's lock: what a DELETE of
        # the key looked like before this copy, so that one arriving later drops it.
        watch = self._store.watch_deletes(job.bucket, job.key)
        if job.revalidate is None and await self._store.exists(job.bucket, job.key):
            return Fetched.ALREADY_PRESENT
        try:
            self._store.refuse_unsafe(job.bucket, job.key)
        except UnsafePath as e:
            raise CopyFailed(f"nothing fetched: {e}") from None
        opened = await self._walk.open(job, self._fetch)
        response, meter = opened.response, opened.meter
        if job.revalidate is not None and response.code == 304:  # hook: refresh
            response.deliverBody(Discard())
            return Fetched.KEPT
        if response.code != 200:
            response.deliverBody(Discard())
            hint = ""
            if 300 <= response.code < 400 and not job.plan.follow_redirects:
                hint = " (redirects are not followed)"
            raise CopyFailed(
                f"origin answered {response.code}{hint}",
                status=response.code,
                fault=response.code >= 500,
            )
        expected = None if response.length is UNKNOWN_LENGTH else int(response.length)
        job.expected = expected
        if expected is not None and expected > self._fetch.max_object_size:
            response.deliverBody(Discard())
            raise CopyFailed(
                f"Content-Length {expected} over max_object_size ({self._fetch.max_object_size})",
                status=200,
            )
        received = Received(response.headers, self._fetch.check_digests)  # hook: meta, digests
        pending = self._store.new_upload(job.bucket, job.key, watch=watch, meta=received.meta)
        observer = job.observer

        def written(total: int) -> None:
            pending.written()
            if observer is not None:
                observer.stored(total)

        # The file's lane and the hashes' (the store's MD5, an origin digest's SHA-256).
        # A Mirror fetch's clients are paced by this stream, so its hashes run once the
        # body is written rather than beside the writes (where, lagging the network on a
        # busy machine, they would hold the origin back: bench/mirror.py).
        hashes = received.sink(pending.hash_blocking)
        hash_later = observer is not None
        writer = _BodyWriter(
            job,
            (pending.append_all_blocking,)
            if hash_later
            else (pending.append_all_blocking, joined(hashes)),
            written,
            self._fetch.max_object_size,
            self._fetch.idle_timeout,
            self._clock,
            None if observer is None else observer.arrived,
        )
        try:
            if observer is not None:  # Mirror: clients read the body as it streams
                observer.response(response, pending.open_reader())
            response.deliverBody(writer)
            await writer.finished
            if expected is not None and pending.size != expected:
                raise CopyFailed(
                    f"body length {pending.size} does not match Content-Length {expected}",
                    status=200,
                )
            if expected is not None:
                await self._check_nothing_more(meter, expected)
            # The body is whole (and checked, when the origin sent digests): Mirror
            # clients need not wait for the hashes' end or the publish.
            told = False
            if observer is not None and not received.promises_digests:
                observer.body_complete()
                told = True
            if hash_later:
                await hash_written(pending.open_reader(), pending.size, hashes)
            mismatch = received.mismatch(pending.md5_digest)  # hook: digests
            if mismatch is not None:
                raise CopyFailed(mismatch, status=200)
            if observer is not None and not told:
                observer.body_complete()
            try:
                published = await pending.publish(job.revalidate is not None, received.meta)
            except UnsafePath as e:
                raise CopyFailed(f"nothing stored: {e}") from None
        except BaseException:
            await writer.behind.settled()  # the thread must be done with the files first
            pending.discard()
            raise
        if published:
            log.info(
                "Copied {bucket}/{key} from {origin} ({address}): {size} bytes",
                size=pending.size,
                **job.fields(),
            )
            return Fetched.STORED
        if pending.deleted_meanwhile:
            log.info(
                "Copy of {bucket}/{key} from {origin} dropped: the key was deleted meanwhile",
                reason="deleted meanwhile",
                **job.fields(),
            )
            return Fetched.DELETED
        log.info(
            "Copy of {bucket}/{key} from {origin} dropped: the object appeared meanwhile",
            **job.fields(),
        )
        return Fetched.ALREADY_PRESENT

    async def _check_nothing_more(self, meter: WireMeter, expected: int) -> None:
        """Wait for the origin connection to close and refuse a body that ran past its
        Content-Length (bytes the HTTP client dropped)."""
        closing = meter.closed
        closing.addTimeout(
            self._fetch.idle_timeout,
            self._clock,  # type: ignore[arg-type]
            onTimeoutCancel=_timed_out("origin kept the connection open after the body"),
        )
        await closing
        sent = meter.body_length
        if sent is not None and sent > expected:
            raise CopyFailed(
                f"origin sent {sent} body bytes, Content-Length said {expected}", status=200
            )


EXPECTED_FAILURES = (
    CopyFailed,
    CancelledError,
    TimeoutError,
    ConnectError,
    ResponseFailed,
    ResponseNeverReceived,
)


def _timed_out(reason: str) -> Callable[[Any, float], Any]:
    """For `addTimeout`: whatever the cancelled operation failed with, the copy failed
    because of this timeout, and the log should say so."""

    def convert(result: Any, timeout: float) -> Any:
        if isinstance(result, Failure):
            return Failure(CopyFailed(reason, fault=True))
        return result

    return convert


class Outcome(enum.Enum):
    """What a finished fetch says about its key and its origin (origin protection)."""

    STORED = "stored"  # the origin answered 200 and the copy ended well
    PRESENT = "present"  # nothing learnt about the origin: the object was there already
    NOT_FOUND = "not found"  # the origin answered 404
    FAULT = "fault"  # connection error, timeout, stall, 5xx: the origin is unwell
    ANSWERED = "answered"  # the origin answered, but nothing storable (403, bad length...)
    LOCAL = "local"  # a cause on this side (disk, store, unsafe key, a bug)
    CANCELLED = "cancelled"  # the edge stopped it


def outcome_of(result: Fetched | Failure) -> Outcome:
    """Sort a fetch's result for the key's backoff and the origin's breaker."""
    if not isinstance(result, Failure):
        return Outcome.PRESENT if result is Fetched.ALREADY_PRESENT else Outcome.STORED
    if result.check(CancelledError):
        return Outcome.CANCELLED
    error = result.value
    if isinstance(error, CopyFailed):
        if error.status == 404:
            return Outcome.NOT_FOUND
        if error.fault:
            return Outcome.FAULT
        return Outcome.ANSWERED if error.status is not None else Outcome.LOCAL
    if result.check(TimeoutError, ConnectError, ResponseFailed, ResponseNeverReceived):
        return Outcome.FAULT
    return Outcome.LOCAL


def describe_failure(failure: Failure, fetch: OriginFetchConfig) -> str:
    """The operator-facing reason a copy failed: short, and naming the cause, not a type."""
    if failure.check(CopyFailed):
        return str(failure.value)
    if failure.check(CancelledError):
        return "cancelled (edge stopping or total_timeout reached)"
    if failure.check(TimeoutError):
        return f"took longer than total_timeout ({fetch.total_timeout:g}s)"
    if failure.check(ConnectionRefusedError):
        return "connection refused"
    if failure.check(ConnectError):
        return f"cannot connect: {failure.value}"
    if failure.check(ResponseNeverReceived):
        reason = tls_reason(failure.value) if failure.value is not None else None
        return reason or "connection closed before response headers"
    if failure.check(ResponseFailed):
        return "connection lost in the response"
    return f"{type(failure.value).__name__}: {failure.value}"


def report_failure(failure: Failure, job: CopyJob, fetch: OriginFetchConfig) -> None:
    """Log a failed copy at the level it deserves: a warning for what origins do, an error
    for a local cause an operator must fix, a traceback only for a bug."""
    reason = describe_failure(failure, fetch)
    if failure.check(*EXPECTED_FAILURES):
        log.warn(
            "Copy of {bucket}/{key} from {origin} ({address}) failed: {reason}",
            reason=reason,
            **job.fields(),
        )
    elif failure.check(StoreUnavailable):
        # The store's outage is logged once by the store; each copy it costs is a warning.
        log.warn(
            "Copy of {bucket}/{key} from {origin} ({address}) not stored: {reason}",
            reason=f"the store is unavailable ({failure.value})",
            **job.fields(),
        )
    elif failure.check(OSError, KeyConflict):
        # The origin was fine; this machine was not (permissions, a full disk, a file
        # where the key needs a folder): an operator must act, and misses keep being
        # redirected meanwhile.
        error = failure.value
        if isinstance(error, OSError):
            text = f"{error.filename or ''}: {error.strerror or error}".lstrip(": ")
        else:
            text = str(error)
        log.error(
            "Copy of {bucket}/{key} failed for a local reason: {reason}",
            reason=text,
            local=True,
            **job.fields(),
        )
    else:
        log.failure(
            "Copy of {bucket}/{key} from {origin} ({address}) failed: {reason}",
            failure,
            reason=reason,
            **job.fields(),
        )
