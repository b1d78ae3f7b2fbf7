"""What origin copies count as in the metrics (SPEC §9): outcome and a bounded reason class.

The copier and the fetch call these at one clear point each; the sorting of a failure into
a reason class is here, beside them, so it never holds a key, an address or a message.
Reason classes: `timeout` (idle or total), `connect` (refused, unreachable, DNS),
`connection_lost` (closed before or during the response), `tls` (an HTTPS origin's
handshake or certificate failed), `address_refused` (a standby or redirect target the
address policy refuses), `status_404`, `status_3xx`,
`status_4xx`, `status_5xx`, `too_large` (over max_object_size), `length_mismatch` (body
not the announced Content-Length, or more after it), `lock` (the key's lock could not be
judged), `store` (the store unavailable), `local` (disk, permissions, an unsafe key),
`cancelled` (the edge stopping), `other` (a bug); and for copies never started,
`not_found`, `backing_off`, `breaker_open`, `queue_full`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectError, ConnectionRefusedError, DNSLookupError
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.python.failure import Failure
from twisted.web._newclient import ResponseFailed, ResponseNeverReceived

from edge.metrics.families import (
    count_breaker_transition,
    count_copy,
    count_origin_response,
)
from edge.store.interface import StoreUnavailable

__all__ = [
    "copy_ended",
    "copy_not_started",
    "origin_answer",
    "breaker_changed",
    "failure_reason",
]


def copy_ended(job: Any, result: Any, now: float) -> None:
    """A started copy ended: `result` is the fetch's `Fetched` or its `Failure`."""
    seconds = None if job.started is None else now - job.started
    if isinstance(result, Failure):
        count_copy(job.bucket, "failed", failure_reason(result), seconds=seconds)
        return
    outcome = str(result.value)  # stored, already_present, deleted
    copied = job.received if outcome == "stored" else 0
    count_copy(job.bucket, outcome, "none", copied, seconds)


def copy_not_started(bucket: str, outcome: str, reason: str) -> None:
    """A miss that started no copy: `refused` (with why), `elsewhere` (another process or
    node holds the key's lock), or `failed` (reason `lock`: the lock cannot be judged)."""
    count_copy(bucket, outcome, reason)


def origin_answer(result: Any) -> Any:
    """The origin's response to a fetch, or its failure, counted by status class and passed
    on unchanged (a `Deferred` callback for the fetch's request)."""
    if isinstance(result, Failure):
        if not result.check(CancelledError):
            count_origin_response(None)
    else:
        count_origin_response(getattr(result, "code", None))
    return result


def breaker_changed(state: Any) -> None:
    """An origin's circuit breaker entered `state` (a `BreakerState`)."""
    count_breaker_transition(str(getattr(state, "value", state)).replace("-", "_"))


def failure_reason(failure: Failure) -> str:
    """The reason class of a failed copy (see the module's docstring)."""
    error = failure.value
    if hasattr(error, "status") and hasattr(error, "fault"):  # a fetch's `CopyFailed`
        # (by its fields: `edge.origin.fetch` imports this module, not the reverse)
        return _copy_failed_reason(error)
    if failure.check(CancelledError):
        return "cancelled"
    if failure.check(TimeoutError, ConnectTimeout):
        return "timeout"
    if failure.check(ConnectionRefusedError, ConnectError, DNSLookupError):
        return "connect"
    if failure.check(ResponseNeverReceived, ResponseFailed):
        return "tls" if _tls_failed(error) else "connection_lost"
    if failure.check(StoreUnavailable):
        return "store"
    if failure.check(OSError):
        return "local"
    return "other"


def _copy_failed_reason(error: Any) -> str:
    """By its status and fault flag; its wording only tells too_large from a length
    mismatch, and an idle or header timeout from a lost connection (`edge.origin.fetch`
    has no finer field: if its messages change, tests/test_copy_metrics.py says so)."""
    status = error.status
    text = str(error)
    if status is None:  # no answer to judge: a fault of the connection, or local
        if not error.fault:
            return "address_refused" if "refused" in text else "local"
        return "connection_lost" if "connection lost" in text else "timeout"
    if status == 404:
        return "status_404"
    if status != 200:
        return f"status_{min(max(status // 100, 1), 5)}xx"
    if "max_object_size" in text:
        return "too_large"
    return "length_mismatch"


def _tls_failed(error: Any) -> bool:
    """A TLS handshake failed inside the connection failure (as `walk.tls_reason` reads
    it; not imported: the walk imports this module)."""
    for reason in getattr(error, "reasons", None) or []:
        value = getattr(reason, "value", None)
        if value is not None and type(value).__module__.startswith("OpenSSL"):
            return True
    return False
