"""What a copy asks its origin: the plan a rule gives it, and the request and URL built
from that plan (SPEC §11).

An `OriginPlan` is the part of an origin rule the fetch needs: the scheme (HTTPS and
FOLLOW are settled at the miss, which knows the client's scheme), the origin path when the
rule rewrites the key, the standby origins and the statuses that send a copy to them, and
whether redirects are followed. The default plan is the seed's: plain HTTP, the key as the
path, no standby, no redirect followed.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from twisted.web.http_headers import Headers

from edge import __version__
from edge.config import OriginAddress

USER_AGENT = f"cosedge/{__version__}".encode()
_KEY_SAFE = "/!$&'()*+,;=:@~-._"
HTTP = "http"
HTTPS = "https"
MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class OriginPlan:
    """How one copy reaches its object; see the module docstring."""

    scheme: str = HTTP
    path: str | None = None  # the key after the rule's rewrite; None: the key itself
    standbys: tuple[OriginAddress, ...] = ()
    # COS's HTTPStandbyCode entries ("404", "5xx"); empty: any 5xx moves to a standby.
    standby_codes: tuple[str, ...] = ()
    follow_redirects: bool = False

    def url(self, origin: OriginAddress, key: str) -> bytes:
        """The URL of `key` at `origin` (main or standby), with the rule's rewrite."""
        return origin_url(self.scheme, origin, self.path if self.path is not None else key)

    def fails_over(self, status: int) -> bool:
        """Whether this answer sends the copy on to the next standby."""
        return standby_status(status, self.standby_codes)


def standby_status(status: int, codes: tuple[str, ...]) -> bool:
    """`status` matches one of COS's `StatusCode` entries (exact, or `4xx`/`5xx`)."""
    if not codes:
        return 500 <= status <= 599
    text = str(status)
    return any(code == text or (code[1:] == "xx" and code[0] == text[0]) for code in codes)


def origin_url(scheme: str, origin: OriginAddress, path: str) -> bytes:
    """`scheme://host[:port]/path`, the path percent-encoded as an origin expects; the host
    is written as configured, which is what the `Host` header then says."""
    return b"%s://%s/%s" % (scheme.encode(), origin.netloc.encode("ascii"), quote_path(path))


def quote_path(path: str) -> bytes:
    """An origin path (a key, or a rewritten one), percent-encoded, without its `/`."""
    return urllib.parse.quote(path, safe=_KEY_SAFE).encode("ascii")


def origin_port(origin: OriginAddress, scheme: str) -> int:
    """The TCP port: the configured one, or the scheme's."""
    if origin.port is not None:
        return origin.port
    return 443 if scheme == HTTPS else 80


def request_headers() -> Headers:
    """The headers of every origin request: no compression, so the stored bytes and their
    length are the origin's own."""
    return Headers({b"user-agent": [USER_AGENT], b"accept-encoding": [b"identity"]})


@dataclass(frozen=True)
class RedirectTarget:
    """Where an origin's `Location` points: the next hop's origin, scheme and URL."""

    origin: OriginAddress
    scheme: str
    url: bytes


def redirect_target(current: bytes, location: bytes) -> RedirectTarget:
    """The hop a `Location` names, resolved against the URL that answered; `ValueError`
    says why it cannot be followed (another scheme, user info, a bad host)."""
    try:
        text = urllib.parse.urljoin(current.decode("ascii"), location.decode("ascii"))
    except UnicodeDecodeError:
        raise ValueError("Location is not ASCII") from None
    split = urllib.parse.urlsplit(text)
    if split.scheme not in (HTTP, HTTPS):
        raise ValueError(f"Location {text!r}: only http and https are followed")
    origin = OriginAddress.parse(split.netloc)
    path = split.path or "/"
    url = urllib.parse.urlunsplit((split.scheme, origin.netloc, path, split.query, ""))
    return RedirectTarget(origin, split.scheme, url.encode("ascii"))
