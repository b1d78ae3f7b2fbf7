"""A slow or hung DNS resolver cannot hold misses: `origin_fetch.dns_timeout` bounds every
wait, lookups of one host are shared, and a hung name costs one lookup per few seconds,
not one per miss. Unit tests on a `Clock` with a real `IHostnameResolver` that answers
only when told to (a real edge with a resolver that never answers is in
tests/integration/test_dns_timeout.py)."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHostnameResolver
from twisted.internet.task import Clock
from zope.interface import implementer

from edge.config import OriginAddress
from edge.origin.copier import OriginResolver
from tests.test_origin import AllowList

HOST = "slow-origin.example"


@implementer(IHostnameResolver)
class HeldResolver:
    """Starts lookups and answers them only when the test says so (or never)."""

    def __init__(self) -> None:
        self.held: list[tuple[Any, str]] = []

    def resolveHostName(
        self,
        resolutionReceiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> Any:
        resolutionReceiver.resolutionBegan(None)
        self.held.append((resolutionReceiver, hostName))
        return None

    def answer(self, index: int, *addresses: str) -> None:
        receiver, _ = self.held[index]
        for address in addresses:
            receiver.addressResolved(IPv4Address("TCP", address, 0))
        receiver.resolutionComplete()


def _start(resolver: OriginResolver) -> list[Any]:
    results: list[Any] = []
    d = Deferred.fromCoroutine(resolver.resolve(OriginAddress.parse(HOST)))
    d.addCallback(results.append)
    return results


def test_a_hung_lookup_answers_every_waiter_within_the_timeout():
    """100 misses arrive while the name's lookup hangs: one lookup is started for all of
    them, and after `dns_timeout` (3 s by default) each has its answer: no address, with
    the timeout as the reason. Nothing is answered before the timeout."""
    clock = Clock()
    names = HeldResolver()
    resolver = OriginResolver(names, clock, AllowList({"1.2.3.4"}), ttl=60)
    waits = [_start(resolver) for _ in range(100)]
    assert len(names.held) == 1
    clock.advance(2.9)
    assert not any(waits)
    clock.advance(0.2)
    assert all(len(w) == 1 for w in waits)
    resolved = waits[0][0]
    assert resolved.accepted == ()
    assert "no answer within 3s" in resolved.error and "dns_timeout" in resolved.error


def test_after_a_timeout_misses_are_answered_at_once_and_start_one_new_lookup_later():
    """While the timed-out failure stands (5 s), misses get their answer without waiting
    and without a new lookup; after it, one new lookup is started for all the misses."""
    clock = Clock()
    names = HeldResolver()
    resolver = OriginResolver(names, clock, AllowList({"1.2.3.4"}), ttl=60, timeout=1.0)
    _start(resolver)
    clock.advance(1.0)
    quick = [_start(resolver) for _ in range(10)]
    assert all(len(w) == 1 and w[0].accepted == () for w in quick)
    assert len(names.held) == 1
    clock.advance(5.0)
    later = [_start(resolver) for _ in range(10)]
    assert len(names.held) == 2
    names.answer(1, "1.2.3.4")
    assert all(w[0].accepted == ("1.2.3.4",) for w in later)


def test_a_late_answer_is_still_cached():
    """An answer that arrives after its waiters timed out is kept for the next misses,
    which then need no lookup at all."""
    clock = Clock()
    names = HeldResolver()
    resolver = OriginResolver(names, clock, AllowList({"1.2.3.4"}), ttl=60, timeout=1.0)
    first = _start(resolver)
    clock.advance(1.0)
    assert first[0].accepted == ()
    names.answer(0, "1.2.3.4")
    assert resolver.resolved_now(OriginAddress.parse(HOST)).accepted == ("1.2.3.4",)
    assert len(names.held) == 1


def test_an_answer_within_the_timeout_is_unchanged():
    """A lookup that answers in time is shared and cached as before: the timeout only
    ends waits that would otherwise not end."""
    clock = Clock()
    names = HeldResolver()
    resolver = OriginResolver(names, clock, AllowList({"1.2.3.4"}), ttl=60, timeout=3.0)
    waits = [_start(resolver) for _ in range(3)]
    clock.advance(1.0)
    names.answer(0, "1.2.3.4", "5.6.7.8")
    assert [w[0].accepted for w in waits] == [("1.2.3.4",)] * 3
    clock.advance(10)  # the cancelled timer does not fire later
    assert len(names.held) == 1
