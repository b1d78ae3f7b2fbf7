"""Origin protection on a `Clock`: the per-key backoff (doubling, jitter, the one-hour cap,
reset on success), `not_found_ttl`, the circuit breaker's states, and the per-origin slots
served in turn."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from edge.config import BreakerConfig, OriginAddress, OriginFetchConfig
from edge.origin.fetch import CopyJob, Outcome
from edge.origin.protection import (
    BreakerState,
    KeyBackoff,
    OriginProtection,
    Refusal,
)
from edge.origin.slots import CopySlots

KEY = ("b-1", "k")
HOST = "203.0.113.7:80"
ORIGIN = OriginAddress.parse("203.0.113.7")


def _job(key: str = "k", origin: OriginAddress = ORIGIN) -> CopyJob:
    return CopyJob("b-1", key, origin, str(origin.host))


def test_backoff_doubles_per_consecutive_failure_up_to_an_hour():
    """Without jitter the waits are retry_after, 2x, 4x, ... and never over 3600 s."""
    clock = Clock()
    backoff = KeyBackoff(clock, retry_after=10, not_found_ttl=300, jitter=lambda: 0.0)
    waits = [backoff.failed(KEY) for _ in range(12)]
    assert waits[:5] == [10, 20, 40, 80, 160]
    assert max(waits) == 3600 and waits[-1] == 3600


def test_backoff_jitter_lengthens_by_at_most_a_tenth_and_stays_capped():
    """Jitter adds up to 10% to a wait (so keys failing together spread out) and the cap
    still holds."""
    clock = Clock()
    backoff = KeyBackoff(clock, retry_after=10, not_found_ttl=300, jitter=lambda: 0.999)
    assert 10 < backoff.failed(KEY) < 11
    assert 20 < backoff.failed(KEY) < 22
    for _ in range(20):
        assert backoff.failed(KEY) <= 3600


def test_backoff_refuses_until_the_retry_time_then_resets_on_success():
    """A failed key is refused until its retry time, allowed after it; a success forgets
    the count, so the next failure waits retry_after again, not double."""
    clock = Clock()
    backoff = KeyBackoff(clock, retry_after=10, not_found_ttl=300, jitter=lambda: 0.0)
    backoff.failed(KEY)
    clock.advance(9.9)
    assert backoff.refusal(KEY) is Refusal.BACKING_OFF
    clock.advance(0.1)
    assert backoff.refusal(KEY) is None
    assert backoff.failed(KEY) == 20  # the second failure in a row
    clock.advance(20)
    backoff.succeeded(KEY)
    assert backoff.retry_at(KEY) is None
    assert backoff.failed(KEY) == 10


def test_not_found_suppresses_copies_for_not_found_ttl():
    """An origin 404 refuses the key for not_found_ttl seconds, named as such."""
    clock = Clock()
    backoff = KeyBackoff(clock, retry_after=10, not_found_ttl=300)
    backoff.not_found(KEY)
    clock.advance(299)
    assert backoff.refusal(KEY) is Refusal.NOT_FOUND
    clock.advance(1)
    assert backoff.refusal(KEY) is None


def test_backoff_remembers_a_bounded_number_of_keys():
    """The table drops its oldest keys beyond its limit: a scan of random keys cannot
    grow it without bound."""
    clock = Clock()
    backoff = KeyBackoff(clock, 10, 300, limit=3)
    for i in range(5):
        backoff.failed(("b-1", str(i)))
    assert [backoff.retry_at(("b-1", str(i))) is None for i in range(5)] == [
        True,
        True,
        False,
        False,
        False,
    ]


def _protection(clock: Any, **breaker: float) -> OriginProtection:
    fetch = OriginFetchConfig(breaker=BreakerConfig(**breaker))  # type: ignore[arg-type]
    return OriginProtection(clock, fetch, jitter=lambda: 0.0)


def test_breaker_opens_after_failures_within_the_window_only():
    """Faults spread wider than the window do not open it; `failures` within it do, and
    then every copy to that origin (any key) is refused while 404s and other answers never
    count as faults."""
    clock = Clock()
    p = _protection(clock, failures=3, window=10, open=30)
    breakers = p.breakers
    for outcome in (Outcome.FAULT, Outcome.NOT_FOUND, Outcome.ANSWERED, Outcome.FAULT):
        breakers.record(HOST, outcome, probe=False)
    clock.advance(11)  # the first two faults leave the window
    breakers.record(HOST, Outcome.FAULT, probe=False)
    assert breakers.state(HOST) is BreakerState.CLOSED
    breakers.record(HOST, Outcome.FAULT, probe=False)
    breakers.record(HOST, Outcome.FAULT, probe=False)
    assert breakers.state(HOST) is BreakerState.OPEN
    assert p.refusal("b-1", "any-key", HOST) is Refusal.BREAKER_OPEN
    assert p.refusal("b-1", "k", "198.51.100.1:80") is None
    assert breakers.counters["opened"] == 1


def test_breaker_half_open_lets_one_probe_and_closes_on_its_success():
    """After `open` seconds the breaker is half-open: one copy starts as its probe, others
    are refused while it runs; a probe the origin answers closes the breaker."""
    clock = Clock()
    p = _protection(clock, failures=1, window=10, open=30)
    p.breakers.record(HOST, Outcome.FAULT, probe=False)
    clock.advance(29)
    assert p.refusal("b-1", "a", HOST) is Refusal.BREAKER_OPEN
    clock.advance(1)
    assert p.refusal("b-1", "a", HOST) is None
    probe = _job("a")
    p.admit(probe)
    assert probe.probe and p.breakers.state(HOST) is BreakerState.HALF_OPEN
    assert p.refusal("b-1", "b", HOST) is Refusal.BREAKER_OPEN
    p.finished(probe, Outcome.STORED)
    assert p.breakers.state(HOST) is BreakerState.CLOSED
    assert p.refusal("b-1", "b", HOST) is None
    assert p.breakers.counters == {"opened": 1, "half_opened": 1, "closed": 1}


def test_breaker_probe_fault_reopens_and_an_abandoned_probe_frees_the_turn():
    """A probe that meets a fault opens the breaker again for `open` seconds; a probe that
    never reached the origin (another process copies the key) lets the next copy probe."""
    clock = Clock()
    p = _protection(clock, failures=1, window=10, open=30)
    p.breakers.record(HOST, Outcome.FAULT, probe=False)
    clock.advance(30)
    first = _job("a")
    p.admit(first)
    p.abandoned(first)
    assert p.refusal("b-1", "b", HOST) is None  # half-open, no probe out
    second = _job("b")
    p.admit(second)
    assert second.probe
    p.finished(second, Outcome.FAULT)
    assert p.breakers.state(HOST) is BreakerState.OPEN
    clock.advance(29)
    assert p.refusal("b-1", "c", HOST) is Refusal.BREAKER_OPEN
    clock.advance(1)
    assert p.breakers.state(HOST) is BreakerState.HALF_OPEN
    assert p.breakers.counters == {"opened": 2, "half_opened": 2, "closed": 0}


def test_breaker_state_changes_are_one_log_event_each():
    """Open, half-open and closed are each logged once per change, not per refused copy."""
    from twisted.logger import globalLogPublisher

    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        clock = Clock()
        p = _protection(clock, failures=1, window=10, open=5)
        p.breakers.record(HOST, Outcome.FAULT, probe=False)
        for _ in range(10):
            p.refusal("b-1", "x", HOST)
        clock.advance(5)
        for _ in range(10):
            p.refusal("b-1", "x", HOST)
        probe = _job("x")
        p.admit(probe)
        p.finished(probe, Outcome.NOT_FOUND)
    finally:
        globalLogPublisher.removeObserver(events.append)
    states = [e["breaker"] for e in events if "breaker" in e]
    assert states == ["open", "half-open", "closed"]


def test_slots_cap_each_origin_and_serve_waiting_origins_in_turn():
    """Under the global cap each origin has its own: copies of an origin at its cap wait
    while another origin's start; waiting origins are then served in turn."""
    slow, fast = OriginAddress.parse("203.0.113.1"), OriginAddress.parse("203.0.113.2")
    slots = CopySlots()
    slots.take("203.0.113.1:80")
    slots.take("203.0.113.1:80")
    assert not slots.can_start("203.0.113.1:80", concurrency=4, per_origin=2)
    assert slots.can_start("203.0.113.2:80", concurrency=4, per_origin=2)
    for key in ("s1", "s2", "s3"):
        slots.enqueue(_job(key, slow))
    for key in ("f1", "f2"):
        slots.enqueue(_job(key, fast))
    started = []
    while (job := slots.next_job(concurrency=4, per_origin=2)) is not None:
        started.append(job.key)
        slots.take(job.host)
    assert started == ["f1", "f2"]  # the slow origin is at its cap; the fast one is not held
    slots.free("203.0.113.1:80")
    slots.free("203.0.113.2:80")
    job = slots.next_job(concurrency=4, per_origin=2)
    assert job is not None and job.key == "s1"
    slots.take(job.host)
    assert slots.next_job(concurrency=4, per_origin=2) is None and slots.queued == 2
