"""Request heads read in one pass, for the common request that arrives whole.

Twisted's HTTP channel is a `LineReceiver`: it splits the bytes line by line and runs
`lineReceived` (with its state machine), `headerReceived` and the header-name encoder per
line, then checks every byte of the target in a Python loop. For a GET or HEAD that comes
in one read, headers and nothing else, that was a fifth of a 302's cost in py-spy. Here
such a head is checked and split with a few calls on the whole buffer, and the channel
goes on from where Twisted would be at the blank line (`allHeadersReceived`).

Only what this module can judge for certain is taken: a head ending in the buffer's last
bytes, one request line with a usual method and HTTP/1.0 or 1.1, header lines without
folding, NUL or bare CR/LF, and no `Content-Length`/`Transfer-Encoding` (a body).
Everything else, including every malformed request, goes through Twisted's line parser as
before, so its answers (400s, limits, pipelining, bodies) are Twisted's own. Whatever the
fast path accepts, Twisted's parser accepts with the same method, target, version and
headers (tests/test_http_heads.py holds the two side by side).
"""

from __future__ import annotations

from typing import Any

from twisted.web.http_headers import InvalidHeaderName, _nameEncoder
from twisted.web.iweb import INonQueuedRequestFactory

_TARGET_BYTES = bytes(range(33, 177))  # what Twisted's `_parseRequestLine` allows in a target
_METHODS = frozenset({b"GET", b"HEAD", b"DELETE", b"OPTIONS"})
_VERSIONS = frozenset({b"HTTP/1.1", b"HTTP/1.0"})
_BODY_HEADERS = frozenset({b"Content-Length", b"Transfer-Encoding"})
_canonical = _nameEncoder._canonicalHeaderCache

Head = tuple[bytes, bytes, bytes, dict[bytes, list[bytes]]]
_NON_QUEUED: dict[Any, bool] = {}  # per request factory, as Twisted's channel asks


def parse_head(data: bytes, max_size: int, max_headers: int) -> Head | None:
    """The method, target, version and headers (`Headers._rawHeaders` form) of `data`
    when it is exactly one bodiless request head that Twisted would accept; else None."""
    end = len(data) - 4
    if (
        end < 14  # "GET / HTTP/1.1"
        or len(data) > max_size
        or data.find(b"\r\n\r\n") != end
        or data.find(b"\x00") >= 0
    ):
        return None
    crlf = data.count(b"\r\n")
    if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
        return None  # a bare CR or LF: Twisted's own rules decide
    lines = data[:end].split(b"\r\n")
    if len(lines) > max_headers + 1:
        return None
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    if (
        method not in _METHODS
        or version not in _VERSIONS
        or not target
        or target.translate(None, _TARGET_BYTES)
    ):
        return None
    headers: dict[bytes, list[bytes]] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or line[0] in b" \t":
            return None  # not a header line, or a folded one
        canonical = _canonical.get(name)
        if canonical is None:
            try:
                canonical = _nameEncoder.encode(name)
            except InvalidHeaderName:
                return None
        if canonical in _BODY_HEADERS:
            return None
        value = value.strip(b" \t")
        values = headers.get(canonical)
        if values is None:
            headers[canonical] = [value]
        else:
            values.append(value)
    return method, target, version, headers


class OnePassHeads:
    """The HTTP channel's `dataReceived`, with whole bodiless heads read by `parse_head`.

    Mixed into `twisted.web.http.HTTPChannel` ahead of it. The head is taken only when
    the channel is where Twisted's parser would start a request: in line mode with
    nothing buffered, not inside its own `dataReceived`, not paused, no request being
    answered (a pipelined one waits for it), still persistent. From there it does what
    Twisted's `lineReceived` does with such a head, through the same `allHeadersReceived`
    and `allContentReceived`. The channel's state is Twisted's: its `_buffer`,
    `_busyReceiving`, `_handlingRequest` and the name-mangled `__first_line` and
    `__header` (tests/test_http_heads.py runs both parsers, so an upgrade that moves them
    shows there)."""

    def dataReceived(self, data: bytes) -> None:
        channel: Any = self
        if (
            channel.line_mode
            and not channel._buffer
            and not channel._busyReceiving
            and not channel.paused
            and not channel._handlingRequest
            and channel.persistent
            and channel._HTTPChannel__first_line == 1
            and not channel._HTTPChannel__header
        ):
            head = parse_head(data, channel.totalHeadersSize, channel.maxHeaders)
            if head is not None:
                self._request_from(head)
                return
        super().dataReceived(data)  # type: ignore[misc]

    def _request_from(self, head: Head) -> None:
        channel: Any = self
        method, target, version, headers = head
        channel.resetTimeout()
        factory = channel.requestFactory
        non_queued = _NON_QUEUED.get(factory)
        if non_queued is None:  # asking zope was a twentieth of a 302
            non_queued = _NON_QUEUED[factory] = INonQueuedRequestFactory.providedBy(factory)
        if non_queued:
            request = factory(channel)
        else:
            request = factory(channel, len(channel.requests))
        channel.requests.append(request)
        request.requestHeaders._rawHeaders = headers
        channel._command, channel._path, channel._version = method, target, version
        channel._HTTPChannel__first_line = 0
        channel.allHeadersReceived()
        if channel.length == 0:
            channel.allContentReceived()
        else:
            channel.setRawMode()
