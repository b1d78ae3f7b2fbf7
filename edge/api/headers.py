"""Response header names as COS spells them.

Twisted writes every header name in Header-Case (`X-Cos-Request-Id`). HTTP does not care,
but COS sends its own headers in lower case (`x-cos-request-id`, `x-cos-meta-*`) and the
official Python SDK hands them to users in a plain, case-sensitive dict, so code written
against COS looks them up in lower case. Twisted keeps a table of names with unusual
spelling; the names cosedge sends are added to it here. Bounded, since metadata names come
from clients.
"""

from __future__ import annotations

from twisted.web import http_headers

_MAX_NAMES = 1024
_added: set[bytes] = set()


def send_as_is(name: bytes) -> bytes:
    """Make Twisted write `name` exactly as given (lower case for COS headers); returns it."""
    if name in _added or len(_added) >= _MAX_NAMES:
        return name
    encoder = getattr(http_headers, "_nameEncoder", None)
    mappings = getattr(encoder, "_caseMappings", None)
    if not isinstance(mappings, dict):
        return name  # a Twisted without the table: Header-Case it is
    canonical = b"-".join(word.capitalize() for word in name.split(b"-"))
    mappings[canonical] = name
    cache = getattr(encoder, "_canonicalHeaderCache", None)
    if isinstance(cache, dict):
        cache.pop(name, None)
        cache.pop(name.decode("latin-1"), None)
    _added.add(name)
    return name


def canonical(name: bytes) -> bytes:
    """The key Twisted files `name` under in a `Headers` (Header-Case, or the spelling
    `send_as_is` registered): ask once, at import, for names used on every request."""
    [(key, _)] = http_headers.Headers({name: [b""]}).getAllRawHeaders()
    return key


#: Set by both the hit and the miss path on every response.
CONTENT_LENGTH = canonical(b"content-length")


def set_own(headers: http_headers.Headers, key: bytes, value: bytes) -> None:
    """Set a response header the edge makes itself, `key` from `canonical` and `value`
    its own bytes, free of CR and LF by construction (a date, a length, an ETag, a
    checked content type). `Headers.setRawHeaders` encodes the name and sanitises the
    value on every call, which for the eight such headers of a hit was a tenth of it
    (py-spy); this fills Twisted's `_rawHeaders` the same way, without the checks."""
    headers._rawHeaders[key] = [value]


_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def is_safe_value(text: object) -> bool:
    """Whether `text` can be sent as a header value as it is: visible ASCII, spaces, tabs.

    Stored metadata is echoed on every GET, so only values HTTP carries unchanged are kept:
    no control characters (CR/LF would split the header) and no non-ASCII, whose bytes
    depend on an encoding the two sides need not share (COS refuses them too). Anything
    but a str (a hand-edited metadata file) is not safe either.
    """
    return isinstance(text, str) and all(c == "\t" or " " <= c <= "~" for c in text)


def is_token(name: str) -> bool:
    """Whether `name` is an HTTP field name (RFC 9110 token)."""
    return bool(name) and all(c in _TOKEN for c in name)
