"""A dry-run probe: one HEAD of one key at a vetted origin address, storing nothing.

`cosedge-admin origin check --key K` wants to know whether a rule would work before it is
saved; the probe goes through the same pinned connection a copy would (the copier's
`OriginClient`, to an address the resolver accepted), so what it reports is what a copy
would meet, and it reports instead of raising.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from twisted.web.iweb import UNKNOWN_LENGTH, IAgent

from edge.config import OriginAddress, OriginFetchConfig
from edge.origin.fetch import _timed_out, describe_failure
from edge.origin.request import HTTP, origin_url, request_headers
from edge.origin.resolver import ReactorClock


@dataclass(frozen=True)
class ProbeResult:
    """What the origin answered to the HEAD, or why there was no answer (`error`)."""

    key: str
    address: str
    status: int | None = None
    length: int | None = None
    etag: str | None = None
    last_modified: str | None = None
    content_type: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def probe_key(
    agent: IAgent,
    clock: ReactorClock,
    origin: OriginAddress,
    address: str,
    key: str,
    fetch: OriginFetchConfig,
) -> ProbeResult:
    """HEAD `key` at `origin` through `agent` (pinned to `address`), within idle_timeout."""
    from twisted.python.failure import Failure

    url = origin_url(HTTP, origin, key)
    d = agent.request(b"HEAD", url, request_headers())
    d.addTimeout(
        fetch.idle_timeout,
        clock,  # type: ignore[arg-type]
        onTimeoutCancel=_timed_out(f"no response headers within {fetch.idle_timeout:g}s"),
    )
    try:
        response = await d
    except Exception:
        return ProbeResult(key, address, error=describe_failure(Failure(), fetch))

    def header(name: bytes) -> str | None:
        values = response.headers.getRawHeaders(name)
        return values[0].decode("latin-1") if values else None

    length = None if response.length is UNKNOWN_LENGTH else int(response.length)
    content_length = header(b"content-length")
    if content_length is not None and content_length.isdigit():
        length = int(content_length)  # a HEAD's body is empty; its header says the size
    return ProbeResult(
        key,
        address,
        status=response.code,
        length=length,
        etag=header(b"etag"),
        last_modified=header(b"last-modified"),
        content_type=header(b"content-type"),
    )
