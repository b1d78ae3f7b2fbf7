"""Back-to-origin: resolve and vet the origin, then copy one object into the bucket.

The edge must never become a way to reach addresses the operator did not mean (internal
services, loopback, a DNS name that rebinds to one). So a domain origin is resolved once,
every address it returns is judged by the ISP policy, and the copy connects to one of the
addresses that passed through a pinned endpoint: the HTTP client never resolves anything
itself. One copy runs per bucket+key however many misses arrive, under a global
concurrency cap with a bounded queue, and only a complete 200 body is published.
"""

from __future__ import annotations

import enum
import urllib.parse
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from typing import Protocol as TypingProtocol

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import ConnectError, ConnectionRefusedError, TimeoutError
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHostnameResolver,
    IHostResolution,
    IPushProducer,
    IReactorTCP,
    IResolutionReceiver,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.client import (
    URI,
    Agent,
    HTTPConnectionPool,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
    _HTTP11ClientFactory,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IAgentEndpointFactory, IResponse
from zope.interface import implementer

from edge import __version__
from edge.config import OriginAddress, OriginFetchConfig
from edge.isp.policy import AddressVerdict, OriginAddressPolicy
from edge.store.folder.keylocks import KeyLock, KeyLocks
from edge.store.folder.store import FolderStore as ObjectStore
from edge.store.keys import UnsafePath

log = Logger()

USER_AGENT = f"cosedge/{__version__}".encode()
_MAX_REMEMBERED_FAILURES = 100_000
_KEY_SAFE = "/!$&'()*+,;=:@~-._"


class _Clock(TypingProtocol):
    def seconds(self) -> float: ...
    def callLater(
        self, delay: float, f: Callable[..., Any], *a: Any, **kw: Any
    ) -> IDelayedCall: ...


@dataclass(frozen=True)
class ResolvedOrigin:
    """What a miss needs to know: the addresses the edge may connect to, and the rest."""

    origin: OriginAddress
    verdicts: tuple[AddressVerdict, ...]
    error: str | None = None

    @property
    def accepted(self) -> tuple[str, ...]:
        if len(self.verdicts) == 1:  # the usual case: one address
            verdict = self.verdicts[0]
            return (verdict.address,) if verdict.accepted else ()
        return tuple(v.address for v in self.verdicts if v.accepted)

    @property
    def refused(self) -> tuple[AddressVerdict, ...]:
        return tuple(v for v in self.verdicts if not v.accepted)


@implementer(IResolutionReceiver)
class _Collector:
    def __init__(self) -> None:
        self.addresses: list[str] = []
        self.done: Deferred[list[str]] = Deferred()

    def resolutionBegan(self, resolution: IHostResolution) -> None:
        pass

    def addressResolved(self, address: IAddress) -> None:
        host = getattr(address, "host", None)
        if isinstance(host, str) and host not in self.addresses:
            self.addresses.append(host.split("%", 1)[0])

    def resolutionComplete(self) -> None:
        self.done.callback(self.addresses)


class ResolutionTimeout(Exception):
    """A lookup that gave no answer within `origin_fetch.dns_timeout`."""


_NEGATIVE_TTL = 5.0  # how long a failed or empty answer stands, at most


class OriginResolver:
    """Domain -> addresses, cached for `ttl` seconds; verdicts are re-judged on each use.

    Only the raw addresses are cached, so an ISP table reload (SIGHUP) takes effect on the
    next miss. Concurrent misses for one domain share a single lookup, and no miss waits
    for it longer than `timeout` seconds: a resolver that hangs must not hold the "302 at
    once" of every miss of that origin. A lookup that times out answers its waiters with a
    `ResolutionTimeout` (a miss then answers 404 NoSuchKey) and the failure stands for a
    few seconds, so misses meanwhile are answered at once and start no new lookups: at
    most one lookup per host is started per such window however many misses arrive. An
    answer that comes after the timeout is still cached for the next misses.
    """

    def __init__(
        self,
        name_resolver: IHostnameResolver,
        clock: _Clock,
        policy: OriginAddressPolicy,
        ttl: float,
        timeout: float = 3.0,
    ) -> None:
        self._resolver = name_resolver
        self._clock = clock
        self._policy = policy
        self._ttl = ttl
        self._timeout = timeout
        # host -> (expiry, addresses, why there are none: None for a real answer)
        self._cache: dict[str, tuple[float, list[str], str | None]] = {}
        self._pending: dict[str, list[Deferred[list[str]]]] = {}
        self._verdicts: dict[str, tuple[Any, AddressVerdict]] = {}
        self.lookups_started = 0

    def reconfigure(self, ttl: float, timeout: float) -> None:
        """New `dns_cache_ttl` / `dns_timeout` from a reload; answers cached stay."""
        self._ttl = ttl
        self._timeout = timeout

    def resolved_now(self, origin: OriginAddress) -> ResolvedOrigin | None:
        """The answer without waiting, when there is one: an IP literal, or a name whose
        addresses are cached. The miss path then redirects without a Deferred round-trip.
        Verdicts are still judged against the tables in force right now."""
        if origin.ip is not None:
            return ResolvedOrigin(origin, (self._judge(str(origin.ip)),))
        cached = self._cache.get(origin.host)
        if cached is None or cached[0] <= self._clock.seconds() or not cached[1]:
            return None
        return ResolvedOrigin(origin, tuple(self._judge(a) for a in cached[1]))

    def _judge(self, address: str) -> AddressVerdict:
        """The policy's verdict, remembered until the tables are reloaded."""
        index = getattr(self._policy, "index", None)  # a new object after each reload
        if index is None:
            return self._policy.check(address)
        known = self._verdicts.get(address)
        if known is not None and known[0] is index:
            return known[1]
        verdict = self._policy.check(address)
        if len(self._verdicts) > 10_000:
            self._verdicts.clear()
        self._verdicts[address] = (index, verdict)
        return verdict

    async def resolve(self, origin: OriginAddress) -> ResolvedOrigin:
        ready = self.resolved_now(origin)
        if ready is not None:
            return ready
        try:
            addresses = await self._addresses(origin.host)
        except ResolutionTimeout as e:
            return ResolvedOrigin(origin, (), error=str(e))
        except Exception as e:  # a resolver failure is a refusal, never a crash
            return ResolvedOrigin(origin, (), error=f"resolution failed: {e}")
        if not addresses:
            return ResolvedOrigin(origin, (), error="name did not resolve")
        return ResolvedOrigin(origin, tuple(self._judge(a) for a in addresses))

    def _addresses(self, host: str) -> Deferred[list[str]]:
        now = self._clock.seconds()
        cached = self._cache.get(host)
        if cached is not None and cached[0] > now:
            if cached[2] is not None:
                return defer.fail(ResolutionTimeout(cached[2]))
            return defer.succeed(list(cached[1]))
        waiter: Deferred[list[str]] = Deferred()
        waiters = self._pending.get(host)
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        waiting = self._pending[host] = [waiter]
        collector = _Collector()

        def give_up() -> None:
            if self._pending.get(host) is not waiting:
                return
            del self._pending[host]
            reason = f"no answer within {self._timeout:g}s (origin_fetch.dns_timeout)"
            expiry = self._clock.seconds() + min(self._ttl, _NEGATIVE_TTL)
            self._cache[host] = (expiry, [], reason)
            log.warn(
                "Lookup of origin {domain} timed out after {timeout}s; misses answer 404 "
                "NoSuchKey until it answers",
                domain=host,
                timeout=self._timeout,
                reason=reason,
            )
            for d in waiting:
                d.errback(ResolutionTimeout(reason))

        timer = self._clock.callLater(self._timeout, give_up)

        def finish(result: list[str] | Failure) -> None:
            if timer.active():
                timer.cancel()
            if isinstance(result, list):
                # An empty answer is cached briefly too, so a dead name cannot cost a lookup
                # per miss; a good answer lives for the configured TTL, even a late one.
                ttl = self._ttl if result else min(self._ttl, _NEGATIVE_TTL)
                self._cache[host] = (self._clock.seconds() + ttl, list(result), None)
            if self._pending.get(host) is not waiting:
                return  # timed out: its waiters have had their answer
            del self._pending[host]
            for d in waiting:
                d.callback(list(result)) if isinstance(result, list) else d.errback(result)

        collector.done.addBoth(finish)
        self.lookups_started += 1
        try:
            self._resolver.resolveHostName(collector, host, 0)
        except Exception:
            if not collector.done.called:
                collector.done.errback()
        return waiter


class WireMeter:
    """Counts the bytes one origin connection delivered, below HTTP framing.

    Twisted's client ends a body at Content-Length and silently drops whatever the origin
    sent beyond it; only the raw count shows that the origin's idea of the object differs
    from its header, which is reason enough not to store it.
    """

    _MAX_HEAD = 1024 * 1024

    def __init__(self) -> None:
        self.total = 0
        self.header_length: int | None = None
        self._head = b""
        self.closed: Deferred[None] = Deferred()

    def received(self, data: bytes) -> None:
        self.total += len(data)
        if self.header_length is None and len(self._head) < self._MAX_HEAD:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end >= 0:
                self.header_length = end + 4
                self._head = b""

    def lost(self) -> None:
        if not self.closed.called:
            self.closed.callback(None)

    @property
    def body_length(self) -> int | None:
        return None if self.header_length is None else self.total - self.header_length


class _MeteredProtocol(ProtocolWrapper):
    factory: _MeteredFactory

    def dataReceived(self, data: bytes) -> None:
        self.factory.meter.received(data)
        super().dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: B008
        super().connectionLost(reason)
        self.factory.meter.lost()


class _MeteredFactory(WrappingFactory):
    protocol = _MeteredProtocol
    noisy = False  # one copy is one connection: "Starting factory" per copy is noise

    def __init__(self, wrapped: Any, meter: WireMeter) -> None:
        super().__init__(wrapped)
        self.meter = meter


@implementer(IStreamClientEndpoint)
class _MeteredEndpoint:
    def __init__(self, endpoint: IStreamClientEndpoint, meter: WireMeter) -> None:
        self._endpoint = endpoint
        self._meter = meter

    def connect(self, factory: Any) -> Deferred[Any]:
        d: Deferred[Any] = self._endpoint.connect(_MeteredFactory(factory, self._meter))
        # The HTTP client needs its own protocol back, not the wrapper around it.
        return d.addCallback(lambda wrapper: wrapper.wrappedProtocol)


@implementer(IAgentEndpointFactory)
class PinnedEndpointFactory:
    """Connects every request to one vetted address, whatever host the URL names.

    The URL keeps the configured origin (so `Host:` is what the operator wrote) while the TCP
    connection goes to the address that passed the ISP check: there is no second resolution.
    """

    def __init__(
        self,
        reactor: IReactorTCP,
        address: str,
        port: int,
        timeout: float,
        meter: WireMeter | None = None,
    ) -> None:
        self._reactor = reactor
        self._address = address
        self._port = port
        self._timeout = timeout
        self._meter = meter

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        kind = TCP6ClientEndpoint if ":" in self._address else TCP4ClientEndpoint
        endpoint = kind(self._reactor, self._address, self._port, timeout=self._timeout)
        if self._meter is not None:
            return _MeteredEndpoint(endpoint, self._meter)
        return endpoint


class _QuietClientFactory(_HTTP11ClientFactory):
    noisy = False


class _QuietPool(HTTPConnectionPool):
    """A pool whose connection factories do not log "Starting/Stopping factory" (four
    lines per copy otherwise)."""

    _factory = _QuietClientFactory


class CopyStart(enum.Enum):
    STARTED = "started"
    JOINED = "joined"  # a copy of this bucket+key is already running or queued
    QUEUED = "queued"
    OVERFLOW = "overflow"  # the queue is full: no copy; the client was redirected anyway
    STOPPING = "stopping"
    ELSEWHERE = "elsewhere"  # another worker process is copying this bucket+key
    BACKING_OFF = "backing off"  # this key's last copy failed under retry_after seconds ago


class CopyFailed(Exception):
    """A copy that stored nothing; `str()` is the reason logged for the operator."""


@dataclass
class CopyJob:
    bucket: str
    key: str
    origin: OriginAddress
    address: str
    request_id: str | None = None  # the miss that started it, for the log and the status
    started: float | None = None
    received: int = 0
    expected: int | None = None
    deferred: Deferred[None] | None = field(default=None, repr=False)
    lock: KeyLock | None = field(default=None, repr=False)

    def fields(self) -> dict[str, Any]:
        """The fields every log event about this copy carries."""
        return {
            "bucket": self.bucket,
            "key": self.key,
            "origin": self.origin.netloc,
            "address": self.address,
            "request_id": self.request_id,
        }

    @property
    def url(self) -> bytes:
        path = urllib.parse.quote(self.key, safe=_KEY_SAFE)
        return f"http://{self.origin.netloc}/{path}".encode("ascii")


class _BodyWriter(Protocol):
    """Streams a response body into a pending object with a size cap and an idle timeout."""

    def __init__(
        self,
        job: CopyJob,
        sink: Callable[[bytes], None],
        limit: int,
        idle_timeout: float,
        clock: _Clock,
    ) -> None:
        self._job = job
        self._sink = sink
        self._limit = limit
        self._idle_timeout = idle_timeout
        self._clock = clock
        self._timer: IDelayedCall | None = None
        self.finished: Deferred[None] = Deferred(lambda d: self._abort(CancelledError()))
        self._failed = False

    def connectionMade(self) -> None:
        self._timer = self._clock.callLater(self._idle_timeout, self._idle)

    def dataReceived(self, data: bytes) -> None:
        if self._failed:
            return
        if self._timer is not None and self._timer.active():
            self._timer.reset(self._idle_timeout)
        if self._job.received + len(data) > self._limit:
            self._abort(CopyFailed(f"body over max_object_size ({self._limit} bytes)"))
            return
        try:
            self._sink(data)
        except OSError as e:
            self._abort(CopyFailed(f"cannot write temporary file: {e.strerror or e}"))
            return
        self._job.received += len(data)

    def _idle(self) -> None:
        self._timer = None
        self._abort(CopyFailed(f"origin sent nothing for {self._idle_timeout:g}s (idle timeout)"))

    def _abort(self, reason: Exception) -> None:
        if self._failed:
            return
        self._failed = True
        self._cancel_timer()
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
            self.finished.callback(None)
        else:
            self._failed = True
            self.finished.errback(
                Failure(CopyFailed(f"connection lost mid-body after {self._job.received} bytes"))
            )


class _Discard(Protocol):
    def connectionMade(self) -> None:
        cast(IPushProducer, self.transport).stopProducing()


AgentFactory = Callable[[str, int, WireMeter], IAgent]


class OriginCopier(Service):
    """Runs origin copies: single flight per bucket+key, capped, queued, cancellable.

    A service so that stopping the edge stops copies cleanly: running ones get
    `shutdown_grace` seconds to finish, then are cancelled and leave no temp file.
    """

    name = "origin-copier"  # type: ignore[assignment]

    def __init__(
        self,
        reactor: Any,
        store: ObjectStore,
        fetch: OriginFetchConfig,
        agent_factory: AgentFactory | None = None,
    ) -> None:
        self._reactor = reactor
        self._clock: _Clock = reactor
        self._store = store
        self._fetch = fetch
        self._agent_factory = agent_factory or self._pinned_agent
        self._jobs: dict[tuple[str, str], CopyJob] = {}
        self._queue: deque[CopyJob] = deque()
        self._running = 0
        self._stopping = False
        self._locks = KeyLocks(store.state_dir)
        self.counters: dict[str, int] = {
            "started": 0,
            "stored": 0,
            "failed": 0,
            "already_present": 0,
            "deleted": 0,
            "overflow": 0,
            "elsewhere": 0,
            "backing_off": 0,
        }
        self._failed: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._overflowed = 0
        self._overflow_warned_at = -_OVERFLOW_WARN_INTERVAL

    def reconfigure(self, fetch: OriginFetchConfig) -> None:
        """New `origin_fetch` limits from a reload: copies started from now on use them,
        running ones finish under the limits they started with."""
        self._fetch = fetch

    def _pinned_agent(self, address: str, port: int, meter: WireMeter) -> IAgent:
        """A fresh agent per copy, on its own connection to the vetted address.

        No pooling across copies: each copy is a whole object, so a reused connection saves
        little, and one connection per copy is what lets `WireMeter` account for it alone.
        """
        pool = _QuietPool(self._reactor, persistent=False)
        factory = PinnedEndpointFactory(
            self._reactor, address, port, self._fetch.connect_timeout, meter
        )
        return Agent.usingEndpointFactory(self._reactor, factory, pool=pool)

    def drop_queued(self, bucket: str, key: str) -> bool:
        """Forget a copy of `bucket/key` still waiting for a slot (a DELETE came: the copy
        would bring the object back). A running copy is dropped by the store's tombstone
        instead, since it already holds the key's lock."""
        job = self._jobs.get((bucket, key))
        if job is None or job.started is not None:
            return False
        self._queue.remove(job)
        del self._jobs[(bucket, key)]
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
    ) -> CopyStart:
        """Start (or join) the copy of `bucket/key` from `address`; never waits on the
        origin. `request_id` is the miss's, so the copy's log events can be found by it."""
        if self._stopping:
            return CopyStart.STOPPING
        job_key = (bucket, key)
        if job_key in self._jobs:
            return CopyStart.JOINED
        failed_at = self._failed.get(job_key)
        if failed_at is not None:
            if self._clock.seconds() - failed_at < self._fetch.retry_after:
                # A dead or broken origin is not hammered (nor the log flooded) once per
                # miss: the client is redirected anyway, and the key is tried again later.
                self.counters["backing_off"] += 1
                return CopyStart.BACKING_OFF
            del self._failed[job_key]
        job = CopyJob(bucket, key, origin, address, request_id)
        if self._running < self._fetch.concurrency:
            if not self._start(job):
                return CopyStart.ELSEWHERE
            return CopyStart.STARTED
        if len(self._queue) >= self._fetch.queue_size:
            self.counters["overflow"] += 1
            self._warn_overflow(job)
            return CopyStart.OVERFLOW
        self._jobs[job_key] = job
        self._queue.append(job)
        return CopyStart.QUEUED

    def _warn_overflow(self, job: CopyJob) -> None:
        """One warning per `_OVERFLOW_WARN_INTERVAL` with how many copies were skipped,
        not one per overflowed miss (a burst would write thousands of lines)."""
        self._overflowed += 1
        now = self._clock.seconds()
        if now - self._overflow_warned_at < _OVERFLOW_WARN_INTERVAL:
            return
        log.warn(
            "{count} cop(ies) skipped since the last warning: queue full ({queue_size}); "
            "the latest {bucket}/{key} from {origin}",
            count=self._overflowed,
            queue_size=self._fetch.queue_size,
            reason="queue full",
            **job.fields(),
        )
        self._overflowed = 0
        self._overflow_warned_at = now

    def _start(self, job: CopyJob) -> bool:
        """Run `job` now, unless another worker process holds the key's lock."""
        try:
            job.lock = self._locks.acquire(job.bucket, job.key)
            elsewhere = job.lock is None
        except OSError as e:
            # A broken locks folder must not stop copies: run this one unlocked (at worst
            # two workers fetch the key; publishing never overwrites) and say why.
            elsewhere = False
            log.warn(
                "Copy of {bucket}/{key} runs without its cross-process lock: {reason}",
                bucket=job.bucket,
                key=job.key,
                reason=f"{e.filename}: {e.strerror or e}",
            )
        if elsewhere:
            self._jobs.pop((job.bucket, job.key), None)
            self.counters["elsewhere"] += 1
            log.debug(
                "Copy of {bucket}/{key} left to the worker process already copying it",
                bucket=job.bucket,
                key=job.key,
            )
            return False
        self._jobs[(job.bucket, job.key)] = job
        self._running += 1
        self.counters["started"] += 1
        job.started = self._clock.seconds()
        d = Deferred.fromCoroutine(self._run(job))
        d.addTimeout(
            self._fetch.total_timeout,
            self._clock,  # type: ignore[arg-type]
            onTimeoutCancel=_timed_out(
                f"took longer than total_timeout ({self._fetch.total_timeout:g}s)"
            ),
        )
        job.deferred = d
        d.addBoth(self._finished, job)
        return True

    def _finished(self, result: None | Failure, job: CopyJob) -> None:
        self._running -= 1
        self._jobs.pop((job.bucket, job.key), None)
        if job.lock is not None:
            # Still holding the key's lock: a tombstone a DELETE left for this copy has
            # done its work (the copy saw it, or the DELETE came after the link).
            self._store.forget_deletes(job.bucket, job.key)
            job.lock.release()
        if isinstance(result, Failure):
            self.counters["failed"] += 1
            if not result.check(CancelledError) and not self._stopping:
                self._failed[(job.bucket, job.key)] = self._clock.seconds()
                while len(self._failed) > _MAX_REMEMBERED_FAILURES:
                    self._failed.popitem(last=False)
            reason = _describe(result, self._fetch)
            if result.check(*_EXPECTED_FAILURES):
                log.warn(
                    "Copy of {bucket}/{key} from {origin} ({address}) failed: {reason}",
                    reason=reason,
                    **job.fields(),
                )
            elif result.check(OSError):
                # The origin was fine; this machine was not (permissions, a full disk):
                # an operator must act, and misses keep being redirected meanwhile.
                error = result.value
                log.error(
                    "Copy of {bucket}/{key} failed for a local reason: {reason}",
                    reason=f"{error.filename or ''}: {error.strerror or error}".lstrip(": "),
                    local=True,
                    **job.fields(),
                )
            else:
                log.failure(
                    "Copy of {bucket}/{key} from {origin} ({address}) failed: {reason}",
                    result,
                    reason=reason,
                    **job.fields(),
                )
        while self._queue and self._running < self._fetch.concurrency and not self._stopping:
            self._start(self._queue.popleft())

    async def _run(self, job: CopyJob) -> None:
        # First thing, in the same reactor turn that took the key's lock: what a DELETE of
        # the key looked like before this copy, so that one arriving later drops it.
        watch = self._store.watch_deletes(job.bucket, job.key)
        if self._store.exists(job.bucket, job.key):
            self.counters["already_present"] += 1
            return
        try:
            self._store.refuse_unsafe(job.bucket, job.key)
        except UnsafePath as e:
            raise CopyFailed(f"nothing fetched: {e}") from None
        meter = WireMeter()
        agent = self._agent_factory(job.address, job.origin.connect_port, meter)
        headers = Headers(
            {
                b"user-agent": [USER_AGENT],
                b"accept-encoding": [b"identity"],
            }
        )
        request = agent.request(b"GET", job.url, headers)
        # Cancelling a request makes Twisted fail it with ResponseNeverReceived, not the
        # CancelledError addTimeout would turn into TimeoutError: name the timeout here.
        request.addTimeout(
            self._fetch.idle_timeout,
            self._clock,  # type: ignore[arg-type]
            onTimeoutCancel=_timed_out(f"no response headers within {self._fetch.idle_timeout:g}s"),
        )
        response: IResponse = await request
        if response.code != 200:
            response.deliverBody(_Discard())
            hint = " (redirects are not followed)" if 300 <= response.code < 400 else ""
            raise CopyFailed(f"origin answered {response.code}{hint}")
        expected = None if response.length is UNKNOWN_LENGTH else int(response.length)
        job.expected = expected
        if expected is not None and expected > self._fetch.max_object_size:
            response.deliverBody(_Discard())
            raise CopyFailed(
                f"Content-Length {expected} over max_object_size ({self._fetch.max_object_size})"
            )
        pending = self._store.new_upload(job.bucket, job.key, watch=watch)
        try:
            writer = _BodyWriter(
                job,
                pending.write,
                self._fetch.max_object_size,
                self._fetch.idle_timeout,
                self._clock,
            )
            response.deliverBody(writer)
            await writer.finished
            if expected is not None and pending.size != expected:
                raise CopyFailed(
                    f"body length {pending.size} does not match Content-Length {expected}"
                )
            if expected is not None:
                await self._check_nothing_more(meter, expected)
            try:
                published = await pending.publish()
            except UnsafePath as e:
                raise CopyFailed(f"nothing stored: {e}") from None
        except BaseException:
            pending.discard()
            raise
        if published:
            self.counters["stored"] += 1
            log.info(
                "Copied {bucket}/{key} from {origin} ({address}): {size} bytes",
                size=pending.size,
                **job.fields(),
            )
        elif pending.deleted_meanwhile:
            self.counters["deleted"] += 1
            log.info(
                "Copy of {bucket}/{key} from {origin} dropped: the key was deleted meanwhile",
                reason="deleted meanwhile",
                **job.fields(),
            )
        else:
            self.counters["already_present"] += 1
            log.info(
                "Copy of {bucket}/{key} from {origin} dropped: the object appeared meanwhile",
                **job.fields(),
            )

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
            raise CopyFailed(f"origin sent {sent} body bytes, Content-Length said {expected}")

    def stopService(self) -> Deferred[None]:
        """Let running copies finish for a short grace period, then cancel what remains."""
        super().stopService()
        self._stopping = True
        for job in self._queue:
            self._jobs.pop((job.bucket, job.key), None)
        self._queue.clear()
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

        return Deferred.fromCoroutine(drain())


_OVERFLOW_WARN_INTERVAL = 60.0
_EXPECTED_FAILURES = (
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
            return Failure(CopyFailed(reason))
        return result

    return convert


def _describe(failure: Failure, fetch: OriginFetchConfig) -> str:
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
        return "connection closed before response headers"
    if failure.check(ResponseFailed):
        return "connection lost in the response"
    return f"{failure.type.__name__}: {failure.value}"


def choose_address(accepted: Sequence[str]) -> str:
    """The address a copy connects to: the first the resolver gave that passed the check."""
    return accepted[0]
