"""Origin name resolution and vetting: which addresses a miss's origin may be reached at.

The edge must never become a way to reach addresses the operator did not mean (internal
services, loopback, a DNS name that rebinds to one). So a domain origin is resolved here,
once per TTL and with one shared lookup per host, bounded by `dns_timeout`; every address
is judged by the ISP policy on each use (only raw addresses are cached, so a table reload
applies at once), and a copy later connects to one of the addresses that passed, never
resolving the name again. An address and port where the edge itself listens is refused
too (`listening`): such an origin would loop back into the edge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHostnameResolver,
    IHostResolution,
    IResolutionReceiver,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from edge.config import ListenAddress, OriginAddress, loop_reason
from edge.isp.policy import AddressVerdict, OriginAddressPolicy

# The namespace the origin side has always logged under (operators filter on it).
log = Logger(namespace="edge.origin.copier")


class ReactorClock(TypingProtocol):
    """The part of the reactor the origin side schedules with (a `Clock` in tests)."""

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
        clock: ReactorClock,
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
        self._ip_answers: dict[OriginAddress, tuple[Any, ResolvedOrigin]] = {}
        self.lookups_started = 0
        self.listening: tuple[ListenAddress, ...] = ()
        self._listening_ports: frozenset[int] = frozenset()

    def listening_on(self, address: ListenAddress) -> None:
        """Where this edge listens: origins that resolve there are refused (a loop)."""
        if address not in self.listening:
            self.listening = (*self.listening, address)
            self._listening_ports = frozenset(a.port for a in self.listening)
            self._ip_answers.clear()

    def _unlooped(
        self, origin: OriginAddress, verdicts: tuple[AddressVerdict, ...]
    ) -> ResolvedOrigin:
        """The answer, with every address that is this edge itself refused as a loop."""
        if origin.connect_port not in self._listening_ports:  # the usual case: one set lookup
            return ResolvedOrigin(origin, verdicts)
        judged = []
        for verdict in verdicts:
            loop = loop_reason(origin, listening=self.listening, address=verdict.address)
            if loop is not None:
                verdict = AddressVerdict(verdict.address, verdict.isps, False, loop)
            judged.append(verdict)
        return ResolvedOrigin(origin, tuple(judged))

    def reconfigure(self, ttl: float, timeout: float) -> None:
        """New `dns_cache_ttl` / `dns_timeout` from a reload; answers cached stay."""
        self._ttl = ttl
        self._timeout = timeout

    def resolved_now(self, origin: OriginAddress) -> ResolvedOrigin | None:
        """The answer without waiting, when there is one: an IP literal, or a name whose
        addresses are cached. The miss path then redirects without a Deferred round-trip.
        Verdicts are still judged against the tables in force right now."""
        if origin.ip is not None:
            return self._ip_answer(origin)
        cached = self._cache.get(origin.host)
        if cached is None or cached[0] <= self._clock.seconds() or not cached[1]:
            return None
        return self._unlooped(origin, tuple(self._judge(a) for a in cached[1]))

    def _ip_answer(self, origin: OriginAddress) -> ResolvedOrigin:
        """An IP origin's answer, kept until the tables are reloaded or the edge listens
        somewhere new: formatting the address and judging it again was a tenth of a
        302's own work."""
        index = getattr(self._policy, "index", None)  # a new object after each reload
        known = self._ip_answers.get(origin)
        if known is not None and known[0] is index and index is not None:
            return known[1]
        answer = self._unlooped(origin, (self._judge(str(origin.ip)),))
        if len(self._ip_answers) > 10_000:
            self._ip_answers.clear()
        self._ip_answers[origin] = (index, answer)
        return answer

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
        return self._unlooped(origin, tuple(self._judge(a) for a in addresses))

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


def choose_address(accepted: Sequence[str]) -> str:
    """The address a copy connects to: the first the resolver gave that passed the check."""
    return accepted[0]
