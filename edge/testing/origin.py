"""Test doubles that users of cosedge can import too.

`FakeOrigin` is an HTTP/1.1 origin on a real socket that can misbehave on purpose: short or
long bodies, resets, stalls, redirects. It is written on raw `Protocol` rather than
`twisted.web` because the faults it produces are exactly the ones a well-behaved server
framework refuses to produce.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

from twisted.internet.interfaces import (
    IDelayedCall,
)
from twisted.internet.protocol import Factory, Protocol


@dataclass
class OriginReply:
    """How the fake origin answers one path.

    `content_length`: "auto" sends the real length, an int sends that (a lie, if it
    differs), None sends none (close-delimited, or chunked with `chunked=True`).
    `headers_delay` waits before the status line; `stall_after` sends that many body bytes
    then nothing, keeping the connection open; `reset_after` sends that many bytes then
    aborts the TCP connection; `cut_after` sends that many bytes then closes cleanly.
    `conditional` answers conditional GETs as a real server would: 304 Not Modified when
    `If-None-Match` names the reply's `ETag` header, or (without `If-None-Match`) when
    `If-Modified-Since` is not before its `Last-Modified` header.
    """

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_length: int | str | None = "auto"
    chunked: bool = False
    headers_delay: float = 0.0
    body_delay: float = 0.0
    stall_after: int | None = None
    reset_after: int | None = None
    cut_after: int | None = None
    conditional: bool = False

    def not_modified(self, request: dict[str, str]) -> bool:
        """Whether a conditional request with these (lowercased) headers gets a 304."""
        if not self.conditional or self.status != 200:
            return False
        mine = {k.lower(): v for k, v in self.headers.items()}
        if "if-none-match" in request:
            tags = [t.strip() for t in request["if-none-match"].split(",")]
            return "etag" in mine and (mine["etag"] in tags or "*" in tags)
        since, modified = request.get("if-modified-since"), mine.get("last-modified")
        if since is None or modified is None:
            return False
        try:
            return parsedate_to_datetime(modified) <= parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    peer: str


_VALIDATORS = ("etag", "last-modified")


class _OriginProtocol(Protocol):
    factory: FakeOriginFactory
    transport: Any  # a TCP transport: abortConnection is used on purpose

    def __init__(self) -> None:
        self._buffer = b""
        self._answered = False
        self._timers: list[IDelayedCall] = []

    def dataReceived(self, data: bytes) -> None:
        if self._answered:
            return
        self._buffer += data
        if b"\r\n\r\n" not in self._buffer:
            return
        head = self._buffer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        lines = head.split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        peer = getattr(self.transport.getPeer(), "host", "?")
        self.factory.origin.requests.append(SeenRequest(method, path, headers, peer))
        self._answered = True
        reply = self.factory.origin.reply_for(path)
        if reply.not_modified(headers):
            kept = {k: v for k, v in reply.headers.items() if k.lower() in _VALIDATORS}
            reply = OriginReply(status=304, headers=kept, content_length=None)
        self._later(reply.headers_delay, self._send_head, reply)

    def _later(self, delay: float, f: Callable[..., Any], *args: Any) -> None:
        if delay <= 0:
            f(*args)
        else:
            self._timers.append(self.factory.origin.clock.callLater(delay, f, *args))

    def _send_head(self, reply: OriginReply) -> None:
        if not self.connected:
            return
        reasons = {
            200: "OK",
            301: "Moved Permanently",
            302: "Found",
            304: "Not Modified",
            404: "Not Found",
            500: "Internal Server Error",
            503: "Service Unavailable",
        }
        lines = [f"HTTP/1.1 {reply.status} {reasons.get(reply.status, 'Status')}"]
        if reply.chunked:
            lines.append("Transfer-Encoding: chunked")
        elif reply.content_length == "auto":
            lines.append(f"Content-Length: {len(reply.body)}")
        elif reply.content_length is not None:
            lines.append(f"Content-Length: {reply.content_length}")
        lines.append("Connection: close")
        lines.extend(f"{k}: {v}" for k, v in reply.headers.items())
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self._later(reply.body_delay, self._send_body, reply)

    def _send_body(self, reply: OriginReply) -> None:
        if not self.connected:
            return
        body = reply.body
        limit = next(
            (n for n in (reply.stall_after, reply.reset_after, reply.cut_after) if n is not None),
            None,
        )
        if limit is not None:
            body = body[:limit]
        if reply.chunked:
            self.transport.write(b"%x\r\n%s\r\n" % (len(body), body) if body else b"")
            if limit is None:
                self.transport.write(b"0\r\n\r\n")
        else:
            self.transport.write(body)
        if reply.stall_after is not None:
            return  # keep the connection open, send nothing more
        if reply.reset_after is not None:
            self.transport.abortConnection()
            return
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self.factory.origin.open_connections.discard(self)


class FakeOriginFactory(Factory):
    protocol = _OriginProtocol  # type: ignore[assignment]

    def __init__(self, origin: FakeOrigin) -> None:
        self.origin = origin

    def buildProtocol(self, addr: Any) -> Protocol:
        protocol = _OriginProtocol()
        protocol.factory = self
        self.origin.open_connections.add(protocol)
        self.origin.connections += 1
        return protocol


class FakeOrigin:
    """Scripted replies by path; unscripted paths get 404. Records every request."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.replies: dict[str, OriginReply] = {}
        self.requests: list[SeenRequest] = []
        self.connections = 0
        self.open_connections: set[_OriginProtocol] = set()

    def serve(self, path: str, body: bytes = b"", **kwargs: Any) -> OriginReply:
        reply = OriginReply(body=body, **kwargs)
        self.replies[path] = reply
        return reply

    def reply_for(self, path: str) -> OriginReply:
        return self.replies.get(path.split("?", 1)[0], OriginReply(status=404, body=b"no"))

    def requests_for(self, path: str) -> list[SeenRequest]:
        return [r for r in self.requests if r.path.split("?", 1)[0] == path]

    def factory(self) -> FakeOriginFactory:
        return FakeOriginFactory(self)

    def drop_all(self) -> None:
        """Close stalled connections so a test leaves no open socket behind."""
        for protocol in list(self.open_connections):
            if protocol.transport is not None:
                protocol.transport.abortConnection()
