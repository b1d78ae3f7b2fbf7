"""The origin side without sockets: DNS cache and vetting, single flight, cap and queue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web.iweb import IAgent
from zope.interface import implementer
from zope.interface.verify import verifyObject

from edge.config import OriginAddress, OriginFetchConfig
from edge.origin.copier import (
    CopyStart,
    OriginCopier,
    OriginResolver,
    PinnedEndpointFactory,
)
from edge.store.folder.store import FolderStore as ObjectStore
from edge.testing.resolver import ScriptedResolver


@dataclass(frozen=True)
class Verdict:
    address: str
    isps: frozenset[str]
    accepted: bool
    reason: str


class AllowList:
    """A stand-in policy: accepts exactly the listed addresses."""

    def __init__(self, allowed: set[str]) -> None:
        self.allowed = allowed

    def check(self, address: str) -> Verdict:
        ok = address in self.allowed
        return Verdict(address, frozenset(), ok, "allowed" if ok else "refused")


def _resolve(resolver: OriginResolver, text: str):
    result: list[Any] = []
    Deferred.fromCoroutine(resolver.resolve(OriginAddress.parse(text))).addCallback(result.append)
    assert result, "resolution did not complete synchronously"
    return result[0]


def test_domain_resolved_once_per_ttl_and_rejudged_each_time():
    """Addresses are cached for the TTL; the verdicts are recomputed on each use, so a
    policy change applies to the next miss; after the TTL the name is looked up again."""
    clock = Clock()
    names = ScriptedResolver({"origin.example": [["1.1.1.1", "2.2.2.2"], ["3.3.3.3"]]})
    policy = AllowList({"2.2.2.2"})
    resolver = OriginResolver(names, clock, policy, ttl=60)
    first = _resolve(resolver, "origin.example:8080")
    assert first.accepted == ("2.2.2.2",)
    assert [v.address for v in first.refused] == ["1.1.1.1"]
    policy.allowed = {"1.1.1.1"}
    second = _resolve(resolver, "origin.example:8080")
    assert second.accepted == ("1.1.1.1",) and len(names.lookups) == 1
    clock.advance(61)
    third = _resolve(resolver, "origin.example:8080")
    assert len(names.lookups) == 2 and third.accepted == ()
    assert third.refused[0].address == "3.3.3.3"


def test_ip_literal_needs_no_lookup():
    """An IP-literal origin is judged directly, without DNS."""
    names = ScriptedResolver({})
    resolver = OriginResolver(names, Clock(), AllowList({"9.9.9.9"}), ttl=60)
    assert _resolve(resolver, "9.9.9.9").accepted == ("9.9.9.9",)
    assert names.lookups == []


def test_empty_answer_is_an_error_not_a_crash():
    """A name with no addresses resolves to no accepted address and a reason."""
    names = ScriptedResolver({"nothing.example": [[]]})
    resolver = OriginResolver(names, Clock(), AllowList(set()), ttl=60)
    resolved = _resolve(resolver, "nothing.example")
    assert resolved.accepted == () and resolved.error == "name did not resolve"


def test_pinned_endpoint_connects_to_vetted_address():
    """Whatever host the URL names, the endpoint connects to the vetted address."""
    from twisted.internet.testing import MemoryReactor
    from twisted.web.client import URI

    reactor = MemoryReactor()
    factory = PinnedEndpointFactory(reactor, "203.0.113.7", 8080, timeout=3)
    endpoint = factory.endpointForURI(URI.fromBytes(b"http://rebinding.example:8080/x"))
    endpoint.connect(None)
    host, port, _factory, timeout, _bind = reactor.tcpClients[0]
    assert (host, port, timeout) == ("203.0.113.7", 8080, 3)


@implementer(IAgent)
class HangingAgent:
    """An agent whose requests never answer, so copies stay running."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []

    def request(self, method, uri, headers=None, bodyProducer=None):
        self.requests.append(uri)
        return Deferred()


@pytest.fixture
def store(tmp_path):
    s = ObjectStore(tmp_path / "data", ["b-1"])
    s.prepare()
    return s


def test_single_flight_cap_and_bounded_queue(store):
    """One copy per key; at most `concurrency` run; `queue_size` wait; the rest overflow."""
    clock = Clock()
    agent = HangingAgent()
    copier = OriginCopier(
        clock,
        store,
        OriginFetchConfig(concurrency=2, queue_size=1),
        agent_factory=lambda address, port, meter: agent,
    )
    origin = OriginAddress.parse("203.0.113.7")
    assert copier.copy("b-1", "a", origin, "203.0.113.7") is CopyStart.STARTED
    assert copier.copy("b-1", "a", origin, "203.0.113.7") is CopyStart.JOINED
    assert copier.copy("b-1", "b", origin, "203.0.113.7") is CopyStart.STARTED
    assert copier.copy("b-1", "c", origin, "203.0.113.7") is CopyStart.QUEUED
    assert copier.copy("b-1", "c", origin, "203.0.113.7") is CopyStart.JOINED
    assert copier.copy("b-1", "d", origin, "203.0.113.7") is CopyStart.OVERFLOW
    assert len(agent.requests) == 2
    assert copier.counters["overflow"] == 1
    # a header timeout frees a slot; the queued copy starts
    clock.advance(OriginFetchConfig().idle_timeout + 1)
    assert agent.requests[-1] == b"http://203.0.113.7/c"
    assert sorted(j.key for j in copier.in_flight()) == ["c"]


def test_copy_url_quotes_key(store):
    """The origin URL is the configured address plus the key, percent-encoded."""
    agent = HangingAgent()
    copier = OriginCopier(
        Clock(), store, OriginFetchConfig(), agent_factory=lambda address, port, meter: agent
    )
    copier.copy("b-1", "dir/a b#?.txt", OriginAddress.parse("o.example:81"), "203.0.113.7")
    assert agent.requests == [b"http://o.example:81/dir/a%20b%23%3F.txt"]


def test_verify_interfaces():
    """PinnedEndpointFactory provides IAgentEndpointFactory."""
    from twisted.internet.testing import MemoryReactor
    from twisted.web.iweb import IAgentEndpointFactory

    assert verifyObject(
        IAgentEndpointFactory, PinnedEndpointFactory(MemoryReactor(), "1.2.3.4", 80, 1)
    )
