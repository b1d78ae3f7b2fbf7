"""The reason class a failed copy counts under (`edge.origin.measured`): a word from a
fixed set for every way a fetch can fail, never a key, an address or a message."""

from __future__ import annotations

import pytest
from OpenSSL.SSL import Error as SSLError
from prometheus_client import REGISTRY
from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed, ResponseNeverReceived

from edge.origin import measured
from edge.origin.fetch import CopyFailed
from edge.store.interface import StoreUnavailable


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (CopyFailed("origin answered 404", status=404), "status_404"),
        (CopyFailed("origin answered 503", status=503, fault=True), "status_5xx"),
        (CopyFailed("origin answered 403", status=403), "status_4xx"),
        (CopyFailed("origin answered 302 (redirects...)", status=302), "status_3xx"),
        (CopyFailed("body over max_object_size (10 bytes)", status=200), "too_large"),
        (CopyFailed("Content-Length 9 over max_object_size (5)", status=200), "too_large"),
        (
            CopyFailed("body length 3 does not match Content-Length 9", status=200),
            "length_mismatch",
        ),
        (
            CopyFailed("origin sent 12 body bytes, Content-Length said 9", status=200),
            "length_mismatch",
        ),
        (CopyFailed("origin sent nothing for 30s (idle timeout)", fault=True), "timeout"),
        (CopyFailed("no response headers within 30s", fault=True), "timeout"),
        (CopyFailed("connection lost mid-body after 5 bytes", fault=True), "connection_lost"),
        (CopyFailed("cannot write temporary file: No space left"), "local"),
        (CopyFailed("nothing fetched: unsafe path"), "local"),
        (CopyFailed("standby 10.0.0.1:80 is refused"), "address_refused"),
        (CopyFailed("redirect to a.example refused: private", status=302), "status_3xx"),
        (
            ResponseNeverReceived([Failure(SSLError([("SSL", "f", "certificate verify failed")]))]),
            "tls",
        ),
        (ConnectionRefusedError(), "connect"),
        (DNSLookupError("no such name"), "connect"),
        (TimeoutError(), "timeout"),
        (ResponseNeverReceived([]), "connection_lost"),
        (ResponseFailed([]), "connection_lost"),
        (CancelledError(), "cancelled"),
        (StoreUnavailable("down"), "store"),
        (PermissionError(13, "Permission denied"), "local"),
        (ZeroDivisionError(), "other"),
    ],
)
def test_each_failure_has_its_reason_class(error: Exception, reason: str):
    """Every failure the fetch raises today lands in the class of its cause."""
    assert measured.failure_reason(Failure(error)) == reason


def test_origin_answers_are_counted_by_status_class_and_passed_on():
    """The fetch's callback counts the answer (or its absence) and returns it unchanged."""

    class Response:
        code = 503

    def seen(status_class: str) -> float:
        labels = {"status_class": status_class}
        return REGISTRY.get_sample_value("cosedge_origin_responses_total", labels) or 0.0

    before = seen("5xx"), seen("error")
    response = Response()
    assert measured.origin_answer(response) is response
    refused = Failure(ConnectionRefusedError())
    assert measured.origin_answer(refused) is refused
    cancelled = Failure(CancelledError())
    assert measured.origin_answer(cancelled) is cancelled  # the edge's own doing: not counted
    assert (seen("5xx"), seen("error")) == (before[0] + 1, before[1] + 1)


def test_breaker_transitions_are_counted_by_the_state_entered():
    """Open, half-open and closed each count once as an origin's breaker goes round."""
    from twisted.internet.task import Clock

    from edge.config.model import BreakerConfig
    from edge.origin.fetch import Outcome
    from edge.origin.protection import Breakers

    def seen(state: str) -> float:
        labels = {"state": state}
        return REGISTRY.get_sample_value("cosedge_origin_breaker_transitions_total", labels) or 0.0

    states = ("open", "half_open", "closed")
    before = [seen(s) for s in states]
    clock = Clock()
    breakers = Breakers(clock, BreakerConfig(failures=1, window=10, open=5))
    breakers.record("o:80", Outcome.FAULT, probe=False)  # opens
    clock.advance(6)
    assert breakers.admit("o:80")  # half-open: this copy is the probe
    breakers.record("o:80", Outcome.STORED, probe=True)  # closes
    assert [seen(s) - b for s, b in zip(states, before, strict=True)] == [1, 1, 1]
