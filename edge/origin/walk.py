"""Which origin answer a copy stores: the main origin's, a standby's, or a redirect's.

The walk asks the main origin (at the address the miss vetted); a connection error, a
timeout before the response headers, a TLS failure or a status the rule lists
(`HTTPStandbyCode`, 5xx by default) moves it to the next standby, and the last one's
answer stands. With `FollowRedirection`, a redirect's `Location` is resolved once, each of
its addresses judged like an origin's, and the next request pinned to one that passed, up
to `MAX_REDIRECTS` hops; a hop to a refused address ends the copy, naming it, and is never
connected to. Every request goes through `AgentFactory` to exactly one vetted address: no
step of the walk lets a name be resolved twice or an unchecked address be reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from twisted.internet.error import ConnectError, TimeoutError
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed, ResponseNeverReceived
from twisted.web.iweb import IResponse

from edge.config import OriginAddress, OriginFetchConfig
from edge.origin import measured
from edge.origin.client import AgentFactory, WireMeter
from edge.origin.job import CopyFailed, CopyJob
from edge.origin.provenance import Revalidation, revalidate  # hook: refresh helper
from edge.origin.request import (
    HTTPS,
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    origin_port,
    redirect_target,
    request_headers,
)
from edge.origin.resolver import OriginResolver, ReactorClock, ResolvedOrigin, choose_address

log = Logger(namespace="edge.origin.copier")

# What moves a copy to the next standby: the origin could not be reached or said nothing.
_UNREACHABLE = (ConnectError, TimeoutError, ResponseNeverReceived, ResponseFailed)


class Discard(Protocol):
    """Takes a response body nobody wants, by closing its connection."""

    def connectionMade(self) -> None:
        cast(IPushProducer, self.transport).stopProducing()


@dataclass
class Opened:
    """The response a copy goes on with, and the meter of the connection it came on."""

    response: IResponse
    meter: WireMeter


class OriginWalk:
    """Opens the response of one copy (see the module docstring); no state per copy."""

    def __init__(
        self,
        clock: ReactorClock,
        agent_factory: AgentFactory,
        resolver: OriginResolver | None,
    ) -> None:
        self._clock = clock
        self._agent_factory = agent_factory
        self.resolver = resolver

    async def open(self, job: CopyJob, fetch: OriginFetchConfig) -> Opened:
        """The answer to store (or refuse): the first origin that answered and was not
        passed over, redirects followed when the plan says so."""
        plan = job.plan
        candidates: list[tuple[OriginAddress, str | None]] = [(job.origin, job.address)]
        candidates += [(standby, None) for standby in plan.standbys]
        previous: Exception | None = None  # why the last origin asked was passed over
        for n, (origin, address) in enumerate(candidates):
            last = n == len(candidates) - 1
            if address is None:
                address = await self._standby_address(job, origin)
                if address is None:
                    if last:  # nothing left to ask: the failure before the refusal stands
                        raise previous or CopyFailed(f"standby {origin.netloc} is refused")
                    continue
            if n:  # the log and status pages name what is being asked now
                job.source = plan.url(origin, job.key).decode("ascii")
                job.address = address
            try:
                opened = await self._follow(job, origin, address, fetch)
            except Exception as e:
                if last or not _unreachable(e):
                    raise
                self._moving_on(job, origin, _why(e))
                previous = e
                continue
            status = opened.response.code
            if last or status == 200 or not plan.fails_over(status):
                return opened
            opened.response.deliverBody(Discard())
            self._moving_on(job, origin, f"it answered {status}")
            previous = CopyFailed(
                f"{origin.netloc} answered {status}", status=status, fault=status >= 500
            )
        raise AssertionError("the walk always returns or raises on its last candidate")

    def _moving_on(self, job: CopyJob, origin: OriginAddress, why: str) -> None:
        log.info(
            "Copy of {bucket}/{key}: {failed} failed ({why}); trying the next standby",
            failed=origin.netloc,
            why=why,
            **job.fields(),
        )

    async def _standby_address(self, job: CopyJob, standby: OriginAddress) -> str | None:
        """A standby's address, resolved and judged now like the main origin's (a domain
        standby is not resolved before it is needed); None, logged, when none passes."""
        resolved = await self._resolve(standby)
        if resolved.accepted:
            return choose_address(resolved.accepted)
        log.warn(
            "Copy of {bucket}/{key}: standby {standby} skipped, no acceptable address ({reason})",
            standby=standby.netloc,
            reason=_refusal(resolved),
            **job.fields(),
        )
        return None

    async def _resolve(self, origin: OriginAddress) -> ResolvedOrigin:
        if self.resolver is None:  # an edge assembled without one (unit tests) vets nothing
            return ResolvedOrigin(origin, (), error="no resolver to vet it")
        return await self.resolver.resolve(origin)

    async def _follow(
        self, job: CopyJob, origin: OriginAddress, address: str, fetch: OriginFetchConfig
    ) -> Opened:
        """One origin's answer, through at most `MAX_REDIRECTS` vetted redirect hops."""
        scheme = job.plan.scheme
        url = job.plan.url(origin, job.key)
        for hop in range(MAX_REDIRECTS + 1):
            opened = await self._request(origin, address, scheme, url, fetch, job.revalidate)
            status = opened.response.code
            if not job.plan.follow_redirects or status not in REDIRECT_STATUSES:
                return opened
            opened.response.deliverBody(Discard())
            locations = opened.response.headers.getRawHeaders(b"location") or []
            if not locations:
                raise CopyFailed(f"origin answered {status} without a Location", status=status)
            if hop == MAX_REDIRECTS:
                raise CopyFailed(
                    f"origin redirected more than {MAX_REDIRECTS} times", status=status
                )
            try:
                target = redirect_target(url, locations[0])
            except ValueError as e:
                raise CopyFailed(f"redirect not followed: {e}", status=status) from None
            resolved = await self._resolve(target.origin)
            if not resolved.accepted:
                raise CopyFailed(
                    f"redirect to {target.origin.netloc} refused: {_refusal(resolved)}",
                    status=status,
                )
            origin, scheme, url = target.origin, target.scheme, target.url
            address = choose_address(resolved.accepted)
            job.source, job.address = url.decode("ascii"), address
            log.debug(
                "Copy of {bucket}/{key}: following {status} to {url} ({hop_address})",
                status=status,
                url=job.source,
                hop_address=address,
                **job.fields(),
            )
        raise AssertionError("the loop returns or raises by its last hop")

    async def _request(
        self,
        origin: OriginAddress,
        address: str,
        scheme: str,
        url: bytes,
        fetch: OriginFetchConfig,
        revalidation: Revalidation | None = None,
    ) -> Opened:
        """GET `url` on a new connection to `address`, TLS for `origin`'s host on HTTPS."""
        meter = WireMeter()
        port = origin_port(origin, scheme)
        if scheme == HTTPS:
            agent = self._agent_factory(address, port, meter, origin.host)
        else:
            agent = self._agent_factory(address, port, meter)
        headers = request_headers()
        revalidate(headers, revalidation)  # hook: a refresh's conditional headers
        request = agent.request(b"GET", url, headers)
        # Cancelling a request makes Twisted fail it with ResponseNeverReceived, not the
        # CancelledError addTimeout would turn into TimeoutError: name the timeout here.
        request.addTimeout(
            fetch.idle_timeout,
            self._clock,  # type: ignore[arg-type]
            onTimeoutCancel=_no_headers(fetch.idle_timeout),
        )
        request.addBoth(measured.origin_answer)  # every hop's answer (or none) counts
        response: IResponse = await request
        return Opened(response, meter)


def _no_headers(timeout: float) -> Any:
    def convert(result: Any, _timeout: float) -> Any:
        if isinstance(result, Failure):
            reason = f"no response headers within {timeout:g}s"
            return Failure(CopyFailed(reason, fault=True))
        return result

    return convert


def _unreachable(error: Exception) -> bool:
    """A failure that says nothing came back from the origin (a standby may do better)."""
    if isinstance(error, CopyFailed):
        return error.fault and error.status is None
    return isinstance(error, _UNREACHABLE)


def _why(error: Exception) -> str:
    tls = tls_reason(error)
    if tls is not None:
        return tls
    return str(error) or type(error).__name__


def tls_reason(error: BaseException) -> str | None:
    """The TLS failure inside a connection failure, worded for the operator, or None."""
    reasons = getattr(error, "reasons", None) or []
    for reason in reasons:
        value = getattr(reason, "value", None)
        if value is not None and type(value).__module__.startswith("OpenSSL"):
            details = [str(part[2]) for part in getattr(value, "args", [[]])[0] if len(part) > 2]
            text = "; ".join(d for d in details if d) or str(value)
            return f"TLS handshake failed: {text}"
    return None


def _refusal(resolved: ResolvedOrigin) -> str:
    if resolved.error is not None:
        return resolved.error
    return "; ".join(f"{v.address}: {v.reason}" for v in resolved.refused) or "no addresses"
