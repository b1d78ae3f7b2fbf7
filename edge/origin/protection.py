"""Origin protection: which copies the scheduler should not start, so origins are spared.

An edge in front of a migrating bucket turns every miss into an origin request; a broken
or vanished origin must not be asked again on every miss. `KeyBackoff` remembers, per
bucket+key, an origin 404 for `not_found_ttl` seconds and any other failure for
`retry_after` seconds, doubling (with jitter, so keys that failed together do not retry
together) up to an hour and forgotten on success. `Breakers` keeps a circuit breaker per
origin `host:port`: `failures` origin faults (connection errors, timeouts, 5xx) within
`window` seconds open it for `open` seconds, then one probe copy decides between closed
and open again. Both run on an injected clock and set no timers; the copier asks
`OriginProtection` before it starts a copy and tells it how each one ended. Misses are
redirected whatever is decided here.
"""

from __future__ import annotations

import enum
import random
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.logger import Logger

from edge.config import BreakerConfig, OriginFetchConfig
from edge.origin import measured
from edge.origin.fetch import CopyJob, Outcome
from edge.origin.resolver import ReactorClock

# The namespace the origin side has always logged under (operators filter on it).
log = Logger(namespace="edge.origin.copier")

MAX_BACKOFF = 3600.0  # a failing key is tried again at least once an hour
JITTER = 0.1  # each wait is lengthened by up to this fraction, at random
_MAX_REMEMBERED_KEYS = 100_000


class Refusal(enum.Enum):
    """Why a copy is not started now (the miss is redirected all the same)."""

    NOT_FOUND = "not found"  # the origin answered 404 for this key under not_found_ttl ago
    BACKING_OFF = "backing off"  # this key's last copy failed; its retry time has not come
    BREAKER_OPEN = "breaker open"  # the origin's breaker is open (or its probe is running)


@dataclass
class _KeyState:
    retry_at: float
    failures: int = 0  # consecutive failures other than 404, for the doubling
    not_found: bool = False


class KeyBackoff:
    """Per bucket+key: when a copy may be tried again after a 404 or a failure."""

    def __init__(
        self,
        clock: ReactorClock,
        retry_after: float,
        not_found_ttl: float,
        jitter: Callable[[], float] = random.random,
        limit: int = _MAX_REMEMBERED_KEYS,
    ) -> None:
        self._clock = clock
        self.retry_after = retry_after
        self.not_found_ttl = not_found_ttl
        self._jitter = jitter
        self._limit = limit
        self._keys: OrderedDict[tuple[str, str], _KeyState] = OrderedDict()

    def refusal(self, key: tuple[str, str]) -> Refusal | None:
        state = self._keys.get(key)
        if state is None or self._clock.seconds() >= state.retry_at:
            return None  # the state stays: the doubling needs the count of failures so far
        return Refusal.NOT_FOUND if state.not_found else Refusal.BACKING_OFF

    def retry_at(self, key: tuple[str, str]) -> float | None:
        """When `key` may be copied again (None: at once); for status pages and tests."""
        state = self._keys.get(key)
        return None if state is None else state.retry_at

    def failed(self, key: tuple[str, str]) -> float:
        """Record a failure; the wait is `retry_after` doubled per consecutive failure,
        lengthened by up to `JITTER`, at most an hour (or `retry_after`, if longer)."""
        previous = self._keys.get(key)
        failures = 1 if previous is None else previous.failures + 1
        cap = max(MAX_BACKOFF, self.retry_after)
        base = min(cap, self.retry_after * 2 ** min(failures - 1, 32))
        wait = min(cap, base * (1 + JITTER * self._jitter()))
        self._remember(key, _KeyState(self._clock.seconds() + wait, failures))
        return float(wait)

    def not_found(self, key: tuple[str, str]) -> None:
        self._remember(key, _KeyState(self._clock.seconds() + self.not_found_ttl, 0, True))

    def succeeded(self, key: tuple[str, str]) -> None:
        self._keys.pop(key, None)

    def _remember(self, key: tuple[str, str], state: _KeyState) -> None:
        self._keys[key] = state
        self._keys.move_to_end(key)
        while len(self._keys) > self._limit:
            self._keys.popitem(last=False)


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass
class _Breaker:
    state: BreakerState = BreakerState.CLOSED
    faults: deque[float] = field(default_factory=deque)
    opened_at: float = 0.0
    probing: bool = False


class Breakers:
    """A circuit breaker per origin `host:port`, judged lazily on the clock (no timers).

    Each change of state is one log event and counts in `counters`, and `state(host)` is
    what a metrics page reads.
    """

    def __init__(self, clock: ReactorClock, config: BreakerConfig) -> None:
        self._clock = clock
        self.config = config
        self._hosts: dict[str, _Breaker] = {}
        self.counters = {"opened": 0, "half_opened": 0, "closed": 0}

    def state(self, host: str) -> BreakerState:
        breaker = self._hosts.get(host)
        if breaker is None:
            return BreakerState.CLOSED
        if breaker.state is BreakerState.OPEN:
            if self._clock.seconds() - breaker.opened_at >= self.config.open:
                self._change(host, breaker, BreakerState.HALF_OPEN)
        return breaker.state

    def states(self) -> dict[str, str]:
        """The state of every origin with a breaker kept (open, half-open, or closed with
        recent faults)."""
        return {host: self.state(host).value for host in list(self._hosts)}

    def blocks(self, host: str) -> bool:
        state = self.state(host)
        if state is BreakerState.HALF_OPEN:
            return self._hosts[host].probing
        return state is BreakerState.OPEN

    def reopens_at(self, host: str) -> float | None:
        """When an open breaker lets its probe through (None: not open), for the records."""
        breaker = self._hosts.get(host)
        if breaker is None or self.state(host) is not BreakerState.OPEN:
            return None
        return breaker.opened_at + self.config.open

    def admit(self, host: str) -> bool:
        """A copy to `host` starts now; True when it is the half-open breaker's probe."""
        if self.state(host) is not BreakerState.HALF_OPEN:
            return False
        self._hosts[host].probing = True
        return True

    def record(self, host: str, outcome: Outcome, probe: bool) -> None:
        """How a copy to `host` ended: faults count, answers close a probing breaker."""
        breaker = self._hosts.get(host)
        state = self.state(host)
        if probe and breaker is not None and state is BreakerState.HALF_OPEN:
            breaker.probing = False
            if outcome is Outcome.FAULT:
                breaker.opened_at = self._clock.seconds()
                self._change(host, breaker, BreakerState.OPEN)
            elif outcome in (Outcome.STORED, Outcome.NOT_FOUND, Outcome.ANSWERED):
                breaker.faults.clear()
                self._change(host, breaker, BreakerState.CLOSED)
                del self._hosts[host]
            return  # anything else says nothing of the origin: the next copy probes
        if state is not BreakerState.CLOSED or outcome is not Outcome.FAULT:
            return  # copies started before it opened do not count twice
        if breaker is None:
            breaker = self._hosts[host] = _Breaker()
        now = self._clock.seconds()
        breaker.faults.append(now)
        while breaker.faults and now - breaker.faults[0] > self.config.window:
            breaker.faults.popleft()
        if len(breaker.faults) >= self.config.failures:
            breaker.faults.clear()
            breaker.opened_at = now
            self._change(host, breaker, BreakerState.OPEN)

    def _change(self, host: str, breaker: _Breaker, state: BreakerState) -> None:
        breaker.state = state
        measured.breaker_changed(state)
        if state is BreakerState.OPEN:
            self.counters["opened"] += 1
            log.warn(
                "Origin {origin}: circuit breaker open; no copies from it for {open:g}s "
                "(misses are still redirected)",
                origin=host,
                breaker=state.value,
                open=self.config.open,
                reason=f"{self.config.failures} failures within {self.config.window:g}s",
            )
        elif state is BreakerState.HALF_OPEN:
            self.counters["half_opened"] += 1
            log.info(
                "Origin {origin}: circuit breaker half-open; the next copy probes it",
                origin=host,
                breaker=state.value,
            )
        else:
            self.counters["closed"] += 1
            log.info(
                "Origin {origin}: circuit breaker closed; copies from it resume",
                origin=host,
                breaker=state.value,
            )


class OriginProtection:
    """What the copier asks before starting a copy, and tells when one has ended."""

    def __init__(
        self,
        clock: ReactorClock,
        fetch: OriginFetchConfig,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.keys = KeyBackoff(clock, fetch.retry_after, fetch.not_found_ttl, jitter)
        self.breakers = Breakers(clock, fetch.breaker)

    def reconfigure(self, fetch: OriginFetchConfig) -> None:
        """A reload's values; waits already decided stand, the next ones use the new."""
        self.keys.retry_after = fetch.retry_after
        self.keys.not_found_ttl = fetch.not_found_ttl
        self.breakers.config = fetch.breaker

    def refusal(self, bucket: str, key: str, host: str) -> Refusal | None:
        refused = self.keys.refusal((bucket, key))
        if refused is None and self.breakers.blocks(host):
            return Refusal.BREAKER_OPEN
        return refused

    def admit(self, job: CopyJob) -> None:
        """`job` starts now (a half-open breaker makes it its probe)."""
        job.probe = self.breakers.admit(job.host)

    def abandoned(self, job: CopyJob) -> None:
        """`job` took a slot but never reached its origin (another process copies the key,
        or the lock could not be had): a probe it was lets the next copy probe."""
        if job.probe:
            self.breakers.record(job.host, Outcome.CANCELLED, probe=True)
            job.probe = False

    def finished(self, job: CopyJob, outcome: Outcome) -> None:
        key = (job.bucket, job.key)
        if outcome in (Outcome.STORED, Outcome.PRESENT):
            self.keys.succeeded(key)
        elif outcome is Outcome.NOT_FOUND:
            self.keys.not_found(key)
        elif outcome is not Outcome.CANCELLED:
            self.keys.failed(key)
        self.breakers.record(job.host, outcome, job.probe)
