"""The Redis coordination of a cluster (SPEC §8) against a real redis-server on loopback:
one lock holder at a time, renewal, expiry after a node dies, pub/sub, and outages."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher

from edge.cluster.redis import (
    RedisAddress,
    RedisCoordinator,
    RedisLock,
    RedisUnavailable,
    parse_redis_url,
)
from tests.cluster.redis_server import RedisServer

pytestmark = pytest.mark.cluster

Make = Callable[..., Any]


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `predicate` until true; return how long it took, fail after `timeout`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout}s: {what}")
        await sleep(0.02)
    return time.monotonic() - start


@pytest.fixture
def coordinators(redis_server: RedisServer) -> Iterator[Make]:
    """Started coordinators on the test's Redis; each is stopped after the test."""
    started: list[RedisCoordinator] = []

    def make(**kwargs: Any) -> RedisCoordinator:
        coordinator = RedisCoordinator(parse_redis_url(redis_server.url), **kwargs)
        coordinator.startService()
        started.append(coordinator)
        return coordinator

    yield make
    for coordinator in started:
        if coordinator.running:
            pytest_twisted.blockon(coordinator.stopService())


async def ready(make: Make, **kwargs: Any) -> RedisCoordinator:
    coordinator: RedisCoordinator = make(**kwargs)
    await wait_for(lambda: coordinator.available, 5, "coordinator connected")
    return coordinator


@pytest.fixture
def redis_events() -> Iterator[list[dict[str, Any]]]:
    """Warning and info events logged by edge.cluster.redis during the test."""
    events: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "edge.cluster.redis":
            events.append(event)

    observer = cast(ILogObserver, observe)
    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


def levels(events: list[dict[str, Any]], level: Any) -> list[dict[str, Any]]:
    return [e for e in events if e.get("log_level") == level]


@pytest.mark.parametrize(
    "url, expected",
    [
        ("redis://127.0.0.1", RedisAddress("127.0.0.1", 6379, 0)),
        ("redis://redis.internal:6380/3", RedisAddress("redis.internal", 6380, 3)),
        ("redis://:s%40cret@10.0.0.5/1", RedisAddress("10.0.0.5", 6379, 1, "s@cret")),
        ("redis://[::1]:7000/", RedisAddress("::1", 7000, 0)),
    ],
)
def test_parse_redis_url_accepts(url, expected):
    """Host, optional port (default 6379), optional database (default 0) and an optional
    URL-encoded password are read from a redis:// URL."""
    assert parse_redis_url(url) == expected


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://127.0.0.1:6379", "must start with redis://"),
        ("rediss://127.0.0.1", "must start with redis://"),
        ("127.0.0.1:6379", "must start with redis://"),
        ("redis://", "has no host"),
        ("redis://h:0", "port must be a number"),
        ("redis://h:70000", "port must be a number"),
        ("redis://h:port", "port must be a number"),
        ("redis://h:", "port must be a number"),
        ("redis://h/x", "database 'x' must be a number"),
        ("redis://h/1/2", "must be a number"),
        ("redis://h/-1", "must be a number"),
        ("redis://user:pw@h", "a user name is not supported"),
        ("redis://:@h", "password"),
        ("redis://h?db=1", "query"),
        ("redis://ho st", "not a host name"),
    ],
)
def test_parse_redis_url_refuses(url, reason):
    """Anything but redis://[:password@]host[:port][/db] is a ValueError whose message says
    what is wrong, for the config layer to show after the file and key."""
    with pytest.raises(ValueError, match=reason):
        parse_redis_url(url)


def test_address_never_shows_the_password():
    """Neither str() (used in log events) nor repr() of an address includes its password."""
    address = parse_redis_url("redis://:hunter2@127.0.0.1:6379/2")
    assert "hunter2" not in str(address) and "hunter2" not in repr(address)
    assert str(address) == "redis://127.0.0.1:6379/2"


@pytest_twisted.ensureDeferred
async def test_two_contenders_one_holder(coordinators):
    """Two nodes asking for the same locks at the same moment: for each name exactly one
    gets a RedisLock and the other gets None."""
    a, b = await ready(coordinators), await ready(coordinators)
    for i in range(5):
        results = await gatherResults(
            [a.acquire_lock(f"copy:{i}", 5), b.acquire_lock(f"copy:{i}", 5)]
        )
        held = [r for r in results if r is not None]
        assert len(held) == 1 and isinstance(held[0], RedisLock)
        assert results.count(None) == 1
        await held[0].release()


@pytest_twisted.ensureDeferred
async def test_renewal_keeps_the_lock_past_its_ttl(coordinators, redis_server):
    """A held lock with a 1 s ttl is still held (not lost, others refused) 3 s later
    because it renews itself; after release another node gets it at once."""
    a, b = await ready(coordinators), await ready(coordinators)
    lock = await a.acquire_lock("copy:renewed", 1.0)
    assert lock is not None
    await sleep(3.0)
    assert not lock.lost
    assert 0 < int(redis_server.cli("PTTL", "copy:renewed")) <= 1000
    assert await b.acquire_lock("copy:renewed", 1.0) is None
    await lock.release()
    assert redis_server.cli("EXISTS", "copy:renewed") == "0"
    again = await b.acquire_lock("copy:renewed", 1.0)
    assert again is not None
    await again.release()


@pytest_twisted.ensureDeferred
async def test_stale_release_leaves_the_new_holder_alone(coordinators, redis_server):
    """A holder whose key vanished (expired unnoticed) while another node took the lock:
    its renewal marks it lost and its release does not delete the new holder's lock."""
    a, b = await ready(coordinators), await ready(coordinators)
    old = await a.acquire_lock("copy:stale", 1.0)
    assert old is not None
    redis_server.cli("DEL", "copy:stale")  # as if it had expired
    new = await b.acquire_lock("copy:stale", 5.0)
    assert new is not None
    held_by = redis_server.cli("GET", "copy:stale")
    await wait_for(lambda: old.lost, 2, "the old holder notices at its next renewal")
    await old.release()
    assert redis_server.cli("GET", "copy:stale") == held_by
    assert not new.lost
    assert await a.acquire_lock("copy:stale", 1.0) is None
    await new.release()


@pytest_twisted.ensureDeferred
async def test_dead_holder_loses_the_lock_after_ttl(coordinators):
    """A node that stops (its service stopped without releasing, as in a crash) stops
    renewing: its lock stays held until about `ttl` later, then another node acquires it."""
    a, b = await ready(coordinators), await ready(coordinators)
    lock = await a.acquire_lock("copy:dead", 1.0)
    assert lock is not None
    await sleep(0.5)  # at least one renewal happened
    await a.stopService()
    died = time.monotonic()
    assert await b.acquire_lock("copy:dead", 1.0) is None
    taken: list[RedisLock] = []
    while not taken:
        assert time.monotonic() - died < 3, "the dead node's lock never expired"
        got = await b.acquire_lock("copy:dead", 1.0)
        if got is not None:
            taken.append(got)
        else:
            await sleep(0.05)
    waited = time.monotonic() - died
    # It was renewed at most ttl/3 before the stop, so it expires 2/3..1 ttl after it.
    assert 0.5 <= waited <= 1.5, waited
    await taken[0].release()


@pytest_twisted.ensureDeferred
async def test_publish_reaches_subscribers(coordinators):
    """A message published on one node reaches a subscriber on another within 2 s, as the
    string it was (a number-looking message is not turned into an int)."""
    a, b = await ready(coordinators), await ready(coordinators)
    got: list[str] = []
    await a.subscribe("cosedge:changes", got.append)
    await b.publish("cosedge:changes", "bucket b-1 rules")
    await b.publish("cosedge:changes", "123")
    await wait_for(lambda: len(got) == 2, 2, "both messages delivered")
    assert got == ["bucket b-1 rules", "123"]


@pytest_twisted.ensureDeferred
async def test_outage_fails_fast_warns_once_and_recovers(coordinators, redis_server, redis_events):
    """With redis-server stopped, calls fail with RedisUnavailable well within the timeout
    and exactly one outage warning is logged however many calls fail (plus one for the lock
    that could not be renewed for its whole ttl); after a restart on the same port the
    coordinator is available again by itself, logs one info event, and locks and the
    subscription made before the outage work again."""
    a = await ready(coordinators, timeout=1.0)
    got: list[str] = []
    await a.subscribe("cosedge:changes", got.append)
    held = await a.acquire_lock("copy:across", 1.0)
    assert held is not None

    redis_server.stop()
    await wait_for(lambda: not a.available, 2, "outage noticed")
    for _ in range(3):
        for call in (
            lambda: a.acquire_lock("copy:outage", 1.0),
            lambda: a.publish("cosedge:changes", "lost"),
        ):
            start = time.monotonic()
            with pytest.raises(RedisUnavailable):
                await call()
            assert time.monotonic() - start < 1.0
    await wait_for(lambda: held.lost, 2, "the lock unrenewed for its ttl counts as lost")
    await held.release()  # an outage never fails a release
    warns = levels(redis_events, LogLevel.warn)
    assert [e["log_format"].split(" ")[0:3] for e in warns] == [
        ["Redis", "at", "{address}"],
        ["Lost", "Redis", "lock"],
    ], warns
    assert warns[0]["address"] == str(a.address) == redis_server.url

    redis_server.start()
    took = await wait_for(lambda: a.available, 5, "recovered by itself")
    assert took < 4
    assert len(levels(redis_events, LogLevel.warn)) == 2
    infos = levels(redis_events, LogLevel.info)
    assert [e["log_format"] for e in infos] == ["Redis at {address} is reachable again"]

    lock = await a.acquire_lock("copy:outage", 1.0)
    assert lock is not None
    await lock.release()
    await a.publish("cosedge:changes", "after")
    await wait_for(lambda: got == ["after"], 2, "re-subscribed after the restart")


@pytest_twisted.ensureDeferred
async def test_stalled_redis_times_out(coordinators, redis_server, redis_events):
    """A Redis that accepts connections but never answers (SIGSTOP) makes calls fail with
    RedisUnavailable after about the timeout, never hang, with one warning; once it answers
    again the coordinator recovers by itself."""
    a = await ready(coordinators, timeout=0.5)
    redis_server.pause()
    try:
        start = time.monotonic()
        with pytest.raises(RedisUnavailable):
            await a.acquire_lock("copy:stalled", 1.0)
        assert 0.4 <= time.monotonic() - start < 1.5
    finally:
        redis_server.resume()
    await wait_for(lambda: a.available, 5, "recovered after the stall")
    # The timed-out SET reached Redis and ran once it woke up: nobody renews that orphan,
    # so it expires after its ttl like a dead node's lock.
    assert await a.acquire_lock("copy:stalled", 1.0) is None
    lock = await a.acquire_lock("copy:after-stall", 1.0)
    assert lock is not None
    await lock.release()
    await wait_for(lambda: redis_server.cli("EXISTS", "copy:stalled") == "0", 2, "orphan expired")
    warns = [e for e in levels(redis_events, LogLevel.warn) if "unreachable" in e["log_format"]]
    assert len(warns) == 1


def test_missing_redis_server_fails_not_skips(tmp_path, monkeypatch):
    """Without redis-server on PATH the fixture's server fails the test with a message
    saying what to install, instead of skipping the cluster tests silently."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="apt-get install redis-server"):
        RedisServer(tmp_path / "redis")
