"""HTTP semantics of a hit that do not depend on Twisted: byte ranges and preconditions.

Kept as pure functions so RFC 9110's corner cases are unit-tested directly.
"""

from __future__ import annotations

import enum
import time
from datetime import UTC
from email.utils import formatdate, parsedate_to_datetime
from typing import Any


class RangeResult(enum.Enum):
    UNSATISFIABLE = "unsatisfiable"


def parse_range(header: bytes | None, size: int) -> tuple[int, int] | RangeResult | None:
    """One `bytes=` range -> (first, last) inclusive; None means serve the whole object.

    A header that does not parse, or asks for several ranges, is ignored (RFC 9110 §14.2
    lets a server do so); a well-formed single range that misses the object is 416.
    """
    if not header:
        return None
    try:
        text = header.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    unit, sep, spec = text.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    spec = spec.strip()
    if "," in spec:
        return None
    first_text, dash, last_text = spec.partition("-")
    first_text, last_text = first_text.strip(), last_text.strip()
    if (
        not dash
        or not (first_text.isdigit() or first_text == "")
        or not (last_text.isdigit() or last_text == "")
    ):
        return None
    if first_text == "":
        if last_text == "":
            return None
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            return RangeResult.UNSATISFIABLE
        return (max(0, size - suffix), size - 1)
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last_text and last < first:
        return None
    if first >= size:
        return RangeResult.UNSATISFIABLE
    return (first, min(last, size - 1))


def http_date(timestamp: float) -> bytes:
    return formatdate(int(timestamp), usegmt=True).encode("ascii")


_now: list[Any] = [0, b""]  # the second and its HTTP date


def http_date_now() -> bytes:
    """The `Date` header's value, formatted once per second rather than per response."""
    now = int(time.time())
    if now != _now[0]:
        _now[0], _now[1] = now, http_date(now)
    value: bytes = _now[1]
    return value


def _parse_date(value: bytes) -> float | None:
    """An HTTP date (IMF-fixdate, RFC 850 or asctime) as a POSIX timestamp.

    HTTP dates are UTC (RFC 9110 §5.6.7). `parsedate_to_datetime` returns a naive datetime
    for asctime and `-0000` dates, which `.timestamp()` would read as local time, so naive
    is taken as UTC here.
    """
    try:
        when = parsedate_to_datetime(value.decode("latin-1"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _etag_list(value: bytes) -> list[bytes]:
    return [tag.strip() for tag in value.split(b",") if tag.strip()]


def _weak_match(tags: list[bytes], etag: bytes) -> bool:
    bare = etag.removeprefix(b"W/")
    return any(t == b"*" or t.removeprefix(b"W/") == bare for t in tags)


def _strong_match(tags: list[bytes], etag: bytes) -> bool:
    return any(t == b"*" or (t == etag and not t.startswith(b"W/")) for t in tags)


def precondition_status(
    *,
    etag: bytes,
    mtime: float,
    if_match: bytes | None,
    if_none_match: bytes | None,
    if_modified_since: bytes | None,
    if_unmodified_since: bytes | None,
) -> int | None:
    """412, 304 or None (go on), evaluated in RFC 9110 §13.2.2's order for GET/HEAD."""
    seconds = int(mtime)
    if if_match is not None:
        if not _strong_match(_etag_list(if_match), etag):
            return 412
    elif if_unmodified_since is not None:
        limit = _parse_date(if_unmodified_since)
        if limit is not None and seconds > limit:
            return 412
    if if_none_match is not None:
        if _weak_match(_etag_list(if_none_match), etag):
            return 304
    elif if_modified_since is not None:
        since = _parse_date(if_modified_since)
        if since is not None and seconds <= since:
            return 304
    return None


def if_range_allows(if_range: bytes | None, etag: bytes, mtime: float) -> bool:
    """Whether a Range applies: an `If-Range` validator that no longer matches means 200."""
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith(b'"') or value.startswith(b"W/"):
        return value == etag
    when = _parse_date(value)
    return when is not None and int(mtime) == int(when)
