"""Checks every test gets for free: it leaves no logged error and no pending timer.

A test that means to provoke an error (a bug answered with 500, a broken table reload)
says so with `@pytest.mark.logs_errors`; anything else that logs a failure, or leaves a
`callLater` behind on the global reactor, fails here, naming what it left. This is how
magic-wormhole's test suite keeps quiet bugs and leaked timers from hiding behind green
tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogPublisher

reactor: Any = _reactor


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "logs_errors: the test provokes logged errors on purpose; they are allowed"
    )


@pytest.fixture(autouse=True)
def _no_logged_errors_or_pending_timers(request: pytest.FixtureRequest) -> Iterator[None]:
    errors: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None or event.get("log_level") in (
            LogLevel.error,
            LogLevel.critical,
        ):
            errors.append(event)

    observer = cast(ILogObserver, observe)
    before = set(reactor.getDelayedCalls())
    globalLogPublisher.addObserver(observer)
    try:
        yield
    finally:
        globalLogPublisher.removeObserver(observer)
    if errors and request.node.get_closest_marker("logs_errors") is None:
        described = "; ".join(_describe(e) for e in errors[:3])
        pytest.fail(f"{len(errors)} error(s) logged during the test: {described}")
    left = _pending(before)
    if left:
        # A connection the client just closed is seen by the reactor on its next turn:
        # give it a few, then judge.
        pytest_twisted.blockon(deferLater(reactor, 0.2, lambda: None))
        left = _pending(before)
    if left:
        described = ", ".join(_describe_call(c) for c in left[:3])
        for call in left:
            call.cancel()
        pytest.fail(f"{len(left)} timer(s) left pending: {described}")


def _pending(before: set[Any]) -> list[Any]:
    return [c for c in reactor.getDelayedCalls() if c not in before and c.active()]


def _describe_call(call: Any) -> str:
    func = getattr(call, "func", None)
    owner = getattr(func, "__self__", None)
    name = getattr(func, "__qualname__", repr(func))
    return f"{name} of {type(owner).__name__} in {call.getTime() - reactor.seconds():.0f}s"


def _describe(event: dict[str, Any]) -> str:
    text = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        text += f" ({failure.getErrorMessage()})"
    return text
