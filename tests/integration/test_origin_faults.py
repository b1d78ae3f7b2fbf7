"""Origin faults leave nothing behind: no object, no temp file, no file descriptor, and the
edge keeps serving. Plus DNS rebinding: an origin name that re-resolves to an address the
policy refuses is never connected to.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHostnameResolver, IHostResolution
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from zope.interface import implementer

from edge.testing import FakeOrigin
from tests.integration.conftest import BUCKET, wait_until

FAULTS: dict[str, dict[str, Any]] = {
    "reset-mid-body": {"body": b"r" * 200_000, "reset_after": 5000},
    "longer-than-content-length": {"body": b"l" * 3000, "content_length": 1000},
    "shorter-than-content-length": {"body": b"s" * 1000, "content_length": 5000},
    "chunked-cut-off": {"body": b"c" * 9000, "chunked": True, "cut_after": 300},
    "headers-never-come": {"body": b"h", "headers_delay": 30},
    "body-stalls": {"body": b"t" * 9000, "stall_after": 100},
    "over-max-size-announced": {"body": b"o" * 6000},
    "over-max-size-chunked": {"body": b"o" * 6000, "chunked": True},
    "redirect-to-private": {"status": 302, "headers": {"Location": "http://10.0.0.1/x"}},
    "server-error": {"status": 503, "body": b"busy"},
}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def settled_fds() -> int:
    """The descriptor count once sockets from earlier requests have finished closing."""
    samples = [open_fds()]
    for _ in range(40):
        await deferLater(reactor, 0.05, lambda: None)
        samples.append(open_fds())
        if len(set(samples[-5:])) == 1 and len(samples) >= 5:
            break
    return samples[-1]


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest_twisted.ensureDeferred
async def test_fault_stores_nothing_leaks_nothing(edges, origin, fault):
    origin.serve(f"/{fault}", **FAULTS[fault])
    origin.serve("/warm-up", b"w")
    edge = await edges.start(
        edges.config(origin.address, fetch={"idle_timeout": 0.5, "max_object_size": 4096})
    )
    (edge.data_dir / BUCKET / "hit.txt").write_bytes(b"still here")
    # Warm up the same paths once (a copy, a hit) so lazily opened descriptors exist.
    await edge.get("warm-up")
    await edge.copies_done()
    await edge.get("hit.txt")
    baseline = await settled_fds()

    assert (await edge.get(fault)).status == 302
    await edge.copies_done(timeout=10)
    assert not (edge.data_dir / BUCKET / fault).exists()
    assert files_under(edge.data_dir / ".cosedge" / "tmp") == []
    # Both ends of every origin connection live in this process: once the edge has closed
    # its end, the fake origin's end closes too, so a leak on either side shows here.
    await wait_until(lambda: open_fds() <= baseline, timeout=5)
    hit = await edge.get("hit.txt")
    assert (hit.status, hit.body) == (200, b"still here")


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name


@implementer(IHostnameResolver)
class RebindingResolver:
    """Answers the first lookup of every name with `first`, every later one with `then`."""

    def __init__(self, first: str, then: str) -> None:
        self.first, self.then = first, then
        self.lookups = 0

    def resolveHostName(
        self,
        resolutionReceiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        address = self.first if self.lookups == 0 else self.then
        self.lookups += 1
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        resolutionReceiver.addressResolved(IPv4Address("TCP", address, portNumber))
        resolutionReceiver.resolutionComplete()
        return resolution


class ReactorWithResolver:
    """The real reactor with a different `nameResolver`, for the edge under test."""

    def __init__(self, real: Any, resolver: Any) -> None:
        self._real = real
        self.nameResolver = resolver

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _Counter(Protocol):
    def connectionMade(self) -> None:
        self.factory.count += 1  # type: ignore[attr-defined]
        self.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_dns_rebinding_never_reaches_the_second_address(edges):
    """extra_origin_cidrs admits 127.0.0.2 only; the origin's name resolves to 127.0.0.2
    first and to 127.0.0.3 afterwards. Misses across several DNS cache lifetimes: the first
    is copied from .2, later ones are refused (404) and nothing ever connects to .3."""
    from edge.origin import OriginCopier
    from edge.store import ObjectStore
    from edge.tap import build_service, load_policy

    good = FakeOrigin(reactor)
    good_port = reactor.listenTCP(0, good.factory(), interface="127.0.0.2")
    port = good_port.getHost().port
    trap_factory = Factory.forProtocol(_Counter)
    trap_factory.count = 0  # type: ignore[attr-defined]
    trap = reactor.listenTCP(port, trap_factory, interface="127.0.0.3")
    try:
        good.serve("/one.txt", b"from .2")
        good.serve("/two.txt", b"from .2 again")
        config = edges.config(
            f"origin.rebind.test:{port}", extra=["127.0.0.2/32"], fetch={"dns_cache_ttl": 0.2}
        )
        store = ObjectStore(config.data_dir, config.buckets)
        store.prepare()
        resolver = RebindingResolver("127.0.0.2", "127.0.0.3")
        service = build_service(
            config, load_policy(config), store, ReactorWithResolver(reactor, resolver)
        )
        service.startService()
        try:
            listening = await service.getServiceNamed("listener")._waitingForPort
            edge_port = listening.getHost().port
            copier: OriginCopier = service.getServiceNamed("origin-copier")
            from tests.integration.conftest import request

            first = await request(edge_port, "/one.txt")
            assert first.status == 302
            await wait_until(lambda: not copier.in_flight())
            assert (Path(store.data_dir) / BUCKET / "one.txt").read_bytes() == b"from .2"
            for _ in range(4):
                await deferLater(reactor, 0.25, lambda: None)  # past the cache TTL
                later = await request(edge_port, "/two.txt")
                assert later.status == 404
            await wait_until(lambda: not copier.in_flight())
            assert resolver.lookups >= 2
            assert trap_factory.count == 0  # type: ignore[attr-defined]
            assert [r.path for r in good.requests] == ["/one.txt"]
        finally:
            await service.stopService()
    finally:
        good.drop_all()
        await good_port.stopListening()
        await trap.stopListening()
