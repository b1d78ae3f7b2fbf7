"""Origin faults and DNS rebinding, end to end on loopback sockets.

Each origin fault is checked for four properties after the copy it broke has ended:
nothing is stored under the bucket, nothing is left in `<data_dir>/.cosedge/tmp` (nor a lock
file in `.cosedge/locks`), this process holds exactly as many file descriptors as before
the faulty miss (the edge *and* the fake origin run in this process, so a socket or temp
file leaked on either side shows), and the edge keeps serving: a hit on an existing object
answers 200 with its bytes and a new miss still copies.

DNS rebinding: a domain origin whose name resolves first to an admitted address and later to
one that is not admitted is never connected to at the second address, however many misses
and DNS cache lifetimes go by.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater

from edge.origin.copier import OriginCopier
from edge.process.tap import build_service, load_policy
from edge.store.folder.store import FolderStore as ObjectStore
from edge.testing.origin import FakeOrigin
from edge.testing.process import fd_table
from edge.testing.resolver import ScriptedResolver
from tests.integration.conftest import BUCKET, request, wait_until

# Twisted's reactor stubs are stricter than its runtime (factories, addresses).
reactor: Any = _reactor

MAX_OBJECT_SIZE = 4096
IDLE_TIMEOUT = 0.5
FETCH = {
    "idle_timeout": IDLE_TIMEOUT,
    "connect_timeout": 2,
    "max_object_size": MAX_OBJECT_SIZE,
}
# Loopback, but outside extra_origin_cidrs (127.0.0.1/32): an address the policy refuses,
# like any private address. A redirect to it must not be followed.
REFUSED_ADDRESS = "127.0.0.5"


@dataclass(frozen=True)
class Fault:
    """One misbehaving origin reply (FakeOrigin's `OriginReply` fields) and a piece of the
    reason the copier must log for it."""

    reply: dict[str, Any]
    reason: tuple[str, ...]
    redirect: bool = False
    # Reset (RST) the origin's connection once the edge has received body bytes.
    reset_once_receiving: bool = False


FAULTS: dict[str, Fault] = {
    "reset-mid-body": Fault(
        {"body": b"r" * 4000, "stall_after": 3000},
        ("connection lost mid-body after 3000 bytes",),
        reset_once_receiving=True,
    ),
    # FakeOrigin's `reset_after` aborts in the same reactor turn as its writes, so the kernel
    # never sends them: the edge sees a reset before the status line.
    "reset-before-headers": Fault(
        {"body": b"r" * 4000, "reset_after": 3000},
        ("connection closed before response headers",),
    ),
    "body-longer-than-content-length": Fault(
        {"body": b"l" * 3000, "content_length": 1000},
        ("origin sent 3000 body bytes, Content-Length said 1000",),
    ),
    "body-shorter-than-content-length": Fault(
        {"body": b"s" * 1000, "content_length": 3000},
        ("connection lost", "does not match Content-Length"),
    ),
    "chunked-cut-off": Fault(
        {"body": b"c" * 3000, "chunked": True, "cut_after": 300},
        ("connection lost",),
    ),
    "headers-never-come": Fault(
        {"body": b"h", "headers_delay": 60},
        (f"no response headers within {IDLE_TIMEOUT:g}s",),
    ),
    "body-stalls": Fault(
        {"body": b"t" * 3000, "stall_after": 100},
        ("idle timeout",),
    ),
    "over-max-size-announced": Fault(
        {"body": b"o" * (MAX_OBJECT_SIZE + 1)},
        (f"Content-Length {MAX_OBJECT_SIZE + 1} over max_object_size",),
    ),
    "over-max-size-chunked": Fault(
        {"body": b"o" * (MAX_OBJECT_SIZE * 3), "chunked": True},
        ("body over max_object_size",),
    ),
    "over-max-size-close-delimited": Fault(
        {"body": b"o" * (MAX_OBJECT_SIZE * 3), "content_length": None},
        ("body over max_object_size",),
    ),
    "redirect-302-to-refused-address": Fault(
        {"status": 302, "body": b"moved"},
        ("redirects are not followed",),
        redirect=True,
    ),
    "redirect-307-to-refused-address": Fault(
        {"status": 307, "body": b""},
        ("redirects are not followed",),
        redirect=True,
    ),
}


async def settled_fd_table(quiet: float = 0.25, timeout: float = 5.0) -> dict[int, str]:
    """The descriptor table once it has not changed for `quiet` seconds (a socket closed by
    the peer is only released on the reactor's next pass)."""
    step = 0.05
    last = fd_table()
    unchanged = 0.0
    waited = 0.0
    while unchanged < quiet and waited < timeout:
        await deferLater(reactor, step, lambda: None)
        waited += step
        now = fd_table()
        unchanged = unchanged + step if now == last else 0.0
        last = now
    return last


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


def reset_connections(origin: FakeOrigin) -> None:
    """Abort every origin connection with a TCP RST (SO_LINGER 0), not a FIN."""
    for protocol in list(origin.open_connections):
        handle = protocol.transport.getHandle()
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        protocol.transport.abortConnection()


class _CountingProtocol(Protocol):
    transport: Any

    def connectionMade(self) -> None:
        self.factory.connections += 1
        self.transport.abortConnection()


@pytest.fixture
def trap() -> Iterator[Any]:
    """A listener on an address the policy refuses; it counts the connections it gets."""
    factory = Factory.forProtocol(_CountingProtocol)
    factory.connections = 0  # type: ignore[attr-defined]
    port = reactor.listenTCP(0, factory, interface=REFUSED_ADDRESS)
    factory.port = port.getHost().port  # type: ignore[attr-defined]
    yield factory
    pytest_twisted.blockon(port.stopListening())


@pytest.mark.parametrize("name", list(FAULTS))
@pytest_twisted.ensureDeferred
async def test_origin_fault_stores_nothing_leaks_nothing_and_edge_keeps_serving(
    edges, origin, trap, captured_events, name
):
    """The miss is redirected at once; the copy fails for the fault's own reason (one
    origin request, no retry, a redirect never followed); afterwards nothing is stored at
    the key, `.cosedge/tmp` and `.cosedge/locks` are empty, the descriptor table of this
    process (edge + fake origin) is identical to the one before the miss, a hit on an
    existing object still answers 200 and a healthy miss still copies."""
    fault = FAULTS[name]
    reply = dict(fault.reply)
    if fault.redirect:
        reply["headers"] = {"Location": f"http://{REFUSED_ADDRESS}:{trap.port}/{name}"}
    origin.serve(f"/{name}", **reply)
    origin.serve("/warm-up.txt", b"w" * 100)
    origin.serve("/after.txt", b"after the fault")
    edge = await edges.start(edges.config(origin.address, fetch=FETCH))
    bucket_dir = edge.data_dir / BUCKET
    (bucket_dir / "hit.txt").write_bytes(b"still here")

    # One good copy and one hit first, so everything the edge opens lazily (the thread pool
    # that flushes copies, the locks folder, ...) is open before the baseline is taken.
    assert (await edge.get("warm-up.txt")).status == 302
    await edge.copies_done()
    assert (await edge.get("warm-up.txt")).status == 200
    assert (await edge.get("hit.txt")).status == 200
    await wait_until(lambda: not origin.open_connections)
    baseline = await settled_fd_table()
    stored_before = files_under(bucket_dir)

    miss = await edge.get(name)
    assert miss.status == 302
    assert miss.header("location") == f"http://{origin.address}/{name}"
    if fault.reset_once_receiving:
        await wait_until(lambda: any(j.received for j in edge.copier.in_flight()))
        reset_connections(origin)
    await edge.copies_done(timeout=10)
    # The copy has ended; the origin's side of the connection closes once the edge's has.
    await wait_until(lambda: not origin.open_connections, timeout=5)

    assert files_under(bucket_dir) == stored_before
    assert not (bucket_dir / name).exists()
    assert files_under(edge.data_dir / ".cosedge" / "tmp") == []
    assert files_under(edge.data_dir / ".cosedge" / "locks") == []
    after = await settled_fd_table()
    # Exact: the same descriptors, not merely as many (descriptor numbers are reused, so a
    # leak shows as an extra entry or as a different target behind a number).
    assert after == baseline, {
        "leaked": {fd: t for fd, t in after.items() if baseline.get(fd) != t},
        "gone": {fd: t for fd, t in baseline.items() if after.get(fd) != t},
    }

    assert edge.copier.counters["failed"] == 1
    assert edge.copier.counters["stored"] == 1  # the warm-up only
    assert len(origin.requests_for(f"/{name}")) == 1  # no retry
    assert trap.connections == 0  # the redirect's target was never contacted
    reasons = [
        e["reason"]
        for e in captured_events
        if e.get("key") == name and e.get("reason") and "failed" in e.get("log_format", "")
    ]
    assert len(reasons) == 1, reasons
    assert any(part in reasons[0] for part in fault.reason), reasons[0]

    hit = await edge.get("hit.txt")
    assert (hit.status, hit.body) == (200, b"still here")
    assert (await edge.get("after.txt")).status == 302
    await edge.copies_done()
    healthy = await edge.get("after.txt")
    assert (healthy.status, healthy.body) == (200, b"after the fault")


@pytest_twisted.ensureDeferred
async def test_header_timeout_is_reported_as_a_timeout(edges, origin, captured_events):
    """An origin that accepts the connection but never sends a status line: the copy is
    dropped after idle_timeout, and the logged reason says it was a timeout (what the
    operator needs to tell a slow origin from one that hangs up)."""
    origin.serve("/silent", b"x", headers_delay=60)
    edge = await edges.start(edges.config(origin.address, fetch=FETCH))
    started = reactor.seconds()
    assert (await edge.get("silent")).status == 302
    await edge.copies_done(timeout=10)
    took = reactor.seconds() - started
    assert IDLE_TIMEOUT * 0.9 <= took < IDLE_TIMEOUT + 2  # dropped by the timeout itself
    reasons = [e["reason"] for e in captured_events if e.get("key") == "silent" and "reason" in e]
    assert reasons == [f"no response headers within {IDLE_TIMEOUT:g}s"]


# -- DNS rebinding -----------------------------------------------------------------------


class ReactorWithResolver:
    """The test reactor, except for `nameResolver`: what the edge under test resolves
    with. Anything in the edge that resolved a name by itself (a HostnameEndpoint, say)
    would go through the scripted resolver too, and so be caught."""

    def __init__(self, real: Any, resolver: Any) -> None:
        self._real = real
        self.nameResolver = resolver

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@dataclass
class TwinOrigins:
    """Two fake origins on one port number: .2 (admitted) and .3 (never to be reached).
    Both serve the same objects, so a connection to .3 would even look like success."""

    port: int
    admitted: FakeOrigin
    forbidden: FakeOrigin
    listeners: list[Any] = field(default_factory=list)

    def serve(self, path: str, body: bytes) -> None:
        self.admitted.serve(path, body)
        self.forbidden.serve(path, body)


@pytest.fixture
def twins() -> Iterator[TwinOrigins]:
    admitted = FakeOrigin(reactor)
    forbidden = FakeOrigin(reactor)
    first = reactor.listenTCP(0, admitted.factory(), interface="127.0.0.2")
    port = first.getHost().port
    second = reactor.listenTCP(port, forbidden.factory(), interface="127.0.0.3")
    pair = TwinOrigins(port, admitted, forbidden, [first, second])
    yield pair
    for fake in (admitted, forbidden):
        fake.drop_all()
    for listener in pair.listeners:
        pytest_twisted.blockon(listener.stopListening())


REBIND_HOST = "origin.rebind.test"
DNS_TTL = 0.3


async def _start_edge(edges, resolver: ScriptedResolver, port: int) -> tuple[Any, int, Any]:
    config = edges.config(
        f"{REBIND_HOST}:{port}", extra=["127.0.0.2/32"], fetch={"dns_cache_ttl": DNS_TTL}
    )
    store = ObjectStore(config.data_dir, config.buckets)
    store.prepare()
    service = build_service(
        config, load_policy(config), store, ReactorWithResolver(reactor, resolver)
    )
    service.startService()
    listening = await service.getServiceNamed("listener")._waitingForPort
    copier: OriginCopier = service.getServiceNamed("origin-copier")
    return service, listening.getHost().port, copier


@pytest_twisted.ensureDeferred
async def test_dns_rebinding_to_unlisted_address_is_never_connected(edges, twins, tmp_path):
    """extra_origin_cidrs admits 127.0.0.2 only. The origin's name resolves to 127.0.0.2 on
    the first lookup and to 127.0.0.3 on every later one. Misses within the DNS cache TTL
    are copied from .2 (no second lookup); misses after the TTL, across several cache
    lifetimes, are answered 404 and copy nothing. 127.0.0.3 receives no connection at all,
    and every copy that ran reached .2 with Host naming the configured domain."""
    for n in range(6):
        twins.serve(f"/k{n}.txt", b"object %d" % n)
    resolver = ScriptedResolver({REBIND_HOST: [["127.0.0.2"], ["127.0.0.3"]]})
    service, port, copier = await _start_edge(edges, resolver, twins.port)
    data = Path(tmp_path / "data" / BUCKET)
    try:
        first = await request(port, "/k0.txt")
        assert first.status == 302
        assert first.header("location") == f"http://{REBIND_HOST}:{twins.port}/k0.txt"
        second = await request(port, "/k1.txt")  # still inside the TTL: cached .2
        assert second.status == 302
        await wait_until(lambda: not copier.in_flight())
        assert len(resolver.lookups) == 1
        for n in range(2, 6):
            await deferLater(reactor, DNS_TTL + 0.05, lambda: None)  # the cache has expired
            later = await request(port, f"/k{n}.txt")
            assert later.status == 404, n
            assert b"NoSuchKey" in later.body
        await wait_until(lambda: not copier.in_flight())
        assert len(resolver.lookups) >= 5  # re-resolved after every expiry
        assert twins.forbidden.connections == 0
        assert twins.forbidden.requests == []
        assert sorted(r.path for r in twins.admitted.requests) == ["/k0.txt", "/k1.txt"]
        assert {r.headers["host"] for r in twins.admitted.requests} == {
            f"{REBIND_HOST}:{twins.port}"
        }
        assert (data / "k0.txt").read_bytes() == b"object 0"
        assert (data / "k1.txt").read_bytes() == b"object 1"
        assert [p.name for p in files_under(data)] == ["k0.txt", "k1.txt"]
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_dns_answer_mixing_refused_and_admitted_addresses_uses_admitted_only(
    edges, twins, tmp_path
):
    """A name that resolves to [127.0.0.3, 127.0.0.2] (refused address first) on every
    lookup: misses across several TTLs are redirected and copied, always from 127.0.0.2;
    127.0.0.3 never gets a connection."""
    for n in range(4):
        twins.serve(f"/m{n}.txt", b"mixed %d" % n)
    resolver = ScriptedResolver({REBIND_HOST: [["127.0.0.3", "127.0.0.2"]]})
    service, port, copier = await _start_edge(edges, resolver, twins.port)
    data = Path(tmp_path / "data" / BUCKET)
    try:
        for n in range(4):
            if n:
                await deferLater(reactor, DNS_TTL + 0.05, lambda: None)
            answer = await request(port, f"/m{n}.txt")
            assert answer.status == 302
            # What became of the copy, so a failure below says whether it ever started
            # (seen once in a full run: /m0.txt's copy never reached the origin).
            assert answer.header("x-cosedge-copy") == "started", (n, copier.counters)
            await wait_until(lambda: not copier.in_flight())
        assert len(resolver.lookups) >= 4
        assert twins.forbidden.connections == 0
        assert sorted(r.path for r in twins.admitted.requests) == [f"/m{n}.txt" for n in range(4)]
        for n in range(4):
            assert (data / f"m{n}.txt").read_bytes() == b"mixed %d" % n
    finally:
        await service.stopService()
