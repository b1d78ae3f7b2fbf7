"""One copy as the scheduler and the fetch share it: which key, from which vetted address,
by which plan, and how it failed when it stored nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred

from edge.config import OriginAddress
from edge.origin.observer import FetchObserver
from edge.origin.provenance import Revalidation
from edge.origin.request import OriginPlan
from edge.store.interface import KeyLock


class CopyFailed(Exception):
    """A copy that stored nothing; `str()` is the reason logged for the operator.

    `status` is the origin's answer when it gave one; `fault` says the origin itself
    misbehaved (stalled, timed out, dropped the connection), which is what its circuit
    breaker counts (with 5xx answers).
    """

    def __init__(self, reason: str, *, status: int | None = None, fault: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.fault = fault


@dataclass
class CopyJob:
    """One copy of `bucket/key` from one vetted address: what the scheduler queues and
    runs, what the fetch reports its progress on, what status pages list."""

    bucket: str
    key: str
    origin: OriginAddress
    address: str
    request_id: str | None = None  # the miss that started it, for the log and the status
    started: float | None = None
    received: int = 0
    expected: int | None = None
    deferred: Deferred[Any] | None = field(default=None, repr=False)
    lock: KeyLock | None = field(default=None, repr=False)
    probe: bool = False  # the one copy a half-open breaker lets through to its origin
    # How the origin is asked (scheme, rewritten path, standbys, redirects): the rule's.
    plan: OriginPlan = field(default_factory=OriginPlan)
    # The URL that answered when it is not the main origin's (a standby, a redirect).
    source: str | None = None
    observer: FetchObserver | None = field(default=None, repr=False)  # a Mirror miss's
    revalidate: Revalidation | None = None  # hook: a refresh (conditional GET, replaces)

    @property
    def host(self) -> str:
        """The origin's `host:port`, what per-origin caps and breakers are kept by."""
        return origin_host(self.origin)

    def fields(self) -> dict[str, Any]:
        """The fields every log event about this copy carries."""
        fields = {
            "bucket": self.bucket,
            "key": self.key,
            "origin": self.origin.netloc,
            "address": self.address,
            "request_id": self.request_id,
        }
        if self.source is not None:
            fields["source"] = self.source
        return fields

    @property
    def url(self) -> bytes:
        """The main origin's URL for the key (rewritten, in the plan's scheme)."""
        return self.plan.url(self.origin, self.key)


def origin_host(origin: OriginAddress) -> str:
    """`host:port` with the port always written, so `a.com` and `a.com:80` are one origin."""
    host = f"[{origin.host}]" if ":" in origin.host else origin.host
    return f"{host}:{origin.connect_port}"
