"""The copy scheduler on a `Clock`, without sockets: the order queued copies start in, the
backoff of a key whose copy failed, dropping a queued copy, limits from a reload, and
stopping. (Single flight, the cap and the bounded queue are in tests/test_origin.py; the
cross-process key lock in tests/test_workers.py.)"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.web.iweb import IAgent
from zope.interface import implementer

from edge.config import OriginAddress, OriginFetchConfig
from edge.origin.copier import CopyStart, OriginCopier
from edge.store.folder.store import FolderStore as ObjectStore
from tests.test_origin import HangingAgent

ADDRESS = "203.0.113.7"
ORIGIN = OriginAddress.parse(ADDRESS)
IDLE = OriginFetchConfig().idle_timeout


@implementer(IAgent)
class RefusingAgent:
    """An agent whose every request fails at once, as an origin refusing connections."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []

    def request(self, method: Any, uri: bytes, headers: Any = None, bodyProducer: Any = None):
        self.requests.append(uri)
        return defer.fail(ConnectionRefusedError())


@pytest.fixture
def store(tmp_path):
    s = ObjectStore(tmp_path / "data", ["b-1"])
    s.prepare()
    return s


def _copier(store: ObjectStore, agent: Any, **fetch: Any) -> tuple[OriginCopier, Clock]:
    clock = Clock()
    # No jitter: the waits are exactly as configured, so the tests can step to them.
    copier = OriginCopier(
        clock, store, OriginFetchConfig(**fetch), lambda a, p, m: agent, jitter=lambda: 0.0
    )
    return copier, clock


def test_queued_copies_start_in_arrival_order_as_slots_free(store):
    """With one slot, queued copies start one at a time, first queued first, each when the
    copy before it ends (here by the header timeout)."""
    agent = HangingAgent()
    copier, clock = _copier(store, agent, concurrency=1, queue_size=3)
    assert copier.copy("b-1", "a", ORIGIN, ADDRESS) is CopyStart.STARTED
    for key in ("c", "b", "d"):
        assert copier.copy("b-1", key, ORIGIN, ADDRESS) is CopyStart.QUEUED
    assert agent.requests == [b"http://203.0.113.7/a"]
    for _ in range(3):
        clock.advance(IDLE + 1)
    assert agent.requests == [f"http://{ADDRESS}/{k}".encode() for k in "acbd"]
    assert [j.key for j in copier.in_flight()] == ["d"]
    clock.advance(IDLE + 1)
    assert copier.in_flight() == [] and copier.counters["failed"] == 4


def test_a_failed_key_backs_off_for_retry_after_seconds(store):
    """After a key's copy fails, misses of that key start no copy (and no origin request)
    for `retry_after` seconds; other keys copy meanwhile; afterwards the key is tried
    again."""
    agent = RefusingAgent()
    copier, clock = _copier(store, agent, retry_after=10)
    assert copier.copy("b-1", "k", ORIGIN, ADDRESS) is CopyStart.STARTED
    assert copier.counters["failed"] == 1 and copier.in_flight() == []
    clock.advance(9)
    assert copier.copy("b-1", "k", ORIGIN, ADDRESS) is CopyStart.BACKING_OFF
    assert copier.copy("b-1", "other", ORIGIN, ADDRESS) is CopyStart.STARTED
    assert agent.requests == [b"http://203.0.113.7/k", b"http://203.0.113.7/other"]
    assert copier.counters["backing_off"] == 1
    clock.advance(1)
    assert copier.copy("b-1", "k", ORIGIN, ADDRESS) is CopyStart.STARTED
    assert agent.requests[-1] == b"http://203.0.113.7/k"


def test_drop_queued_forgets_a_waiting_copy_but_not_a_running_one(store):
    """`drop_queued` (a DELETE of the key) removes a copy waiting for a slot, so it never
    asks the origin; a running copy is not dropped this way (the store's tombstone does
    that)."""
    agent = HangingAgent()
    copier, clock = _copier(store, agent, concurrency=1)
    copier.copy("b-1", "running", ORIGIN, ADDRESS)
    assert copier.copy("b-1", "waiting", ORIGIN, ADDRESS) is CopyStart.QUEUED
    assert copier.drop_queued("b-1", "waiting") is True
    assert copier.drop_queued("b-1", "running") is False
    assert copier.drop_queued("b-1", "never-copied") is False
    assert [j.key for j in copier.in_flight()] == ["running"]
    clock.advance(IDLE + 1)
    assert agent.requests == [b"http://203.0.113.7/running"] and copier.in_flight() == []


def test_reconfigured_limits_apply_to_copies_started_afterwards(store):
    """A reload's larger `concurrency` lets the next miss start at once instead of
    queueing; the copy already running keeps going."""
    agent = HangingAgent()
    copier, clock = _copier(store, agent, concurrency=1)
    copier.copy("b-1", "a", ORIGIN, ADDRESS)
    assert copier.copy("b-1", "b", ORIGIN, ADDRESS) is CopyStart.QUEUED
    copier.reconfigure(OriginFetchConfig(concurrency=3))
    assert copier.copy("b-1", "c", ORIGIN, ADDRESS) is CopyStart.STARTED
    assert len(agent.requests) == 2
    clock.advance(IDLE + 1)  # a and c fail; b starts
    assert agent.requests[-1] == b"http://203.0.113.7/b"
    clock.advance(IDLE + 1)


def test_stopping_drops_the_queue_and_cancels_running_copies_after_the_grace(store):
    """Stopping drops queued copies, refuses new ones, gives the running copy
    `shutdown_grace` seconds, then cancels it, and stops the origin client the copier
    owns."""
    agent = HangingAgent()
    copier, clock = _copier(store, agent, concurrency=1, shutdown_grace=5, idle_timeout=60)
    copier.startService()
    assert copier.client.running
    copier.copy("b-1", "a", ORIGIN, ADDRESS)
    copier.copy("b-1", "b", ORIGIN, ADDRESS)
    stopped = copier.stopService()
    assert [j.key for j in copier.in_flight()] == ["a"]
    assert copier.copy("b-1", "c", ORIGIN, ADDRESS) is CopyStart.STOPPING
    clock.advance(4)
    assert not stopped.called
    clock.advance(1)
    assert stopped.called and copier.in_flight() == []
    assert not copier.client.running
    assert agent.requests == [b"http://203.0.113.7/a"]
    assert copier.counters["failed"] == 1
