"""Responses written straight to the socket when nothing is queued before them.

Twisted's TCP transport never writes in `write`: it appends to its buffer, registers the
socket for writability (`epoll_ctl`) and sends on a later reactor turn, which then
unregisters it (`epoll_ctl` again). For a 302 or a small hit, answered inside the turn
that read the request, that is two system calls and a whole reactor event (its logging
context, `doWrite`, `writeSomeData`) per response: an eighth of a 302's cost in py-spy.
asyncio's transports try the socket at once instead; `DirectWrites` does the same for
the HTTP channel.

A response's status line and headers are held back until its first body bytes so that
they go out in the same `send`: Twisted writes them separately, which is one call for its
buffered transport but would be two here. A `Request.write(b"")`, the usual way of sending
the headers before a body that comes later, sends them at once (`EdgeRequest.write`).

Only a plain `tcp.Server` whose buffer is empty is written to directly, so bytes never
overtake bytes Twisted still holds; what the socket does not take at once, and anything
on TLS or another transport, goes through the transport as before. The transport's
buffer is read through `twisted.internet.abstract.FileDescriptor`'s `dataBuffer`/
`offset`/`_tempDataLen`, as `edge.store.folder.sendfile` does; the wire tests
(tests/integration/test_http_wire.py) show a Twisted upgrade that moves them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet import tcp


def _direct(transport: Any) -> bool:
    """Whether `transport` is a connected plain TCP socket with nothing buffered."""
    return bool(
        type(transport) is tcp.Server
        and transport.connected
        and not transport.disconnecting
        and not transport._tempDataLen
        and transport.offset >= len(transport.dataBuffer)
    )


def send_now(transport: Any, data: bytes) -> None:
    """Write `data` on `transport`, by one `send` when nothing is queued before it; the
    rest, or all of it when the socket is full or failing, is left to the transport,
    which also reports a broken connection the usual way."""
    if data and _direct(transport):
        try:
            sent = transport.socket.send(data)
        except OSError:  # full (EAGAIN), or broken: the transport finds out on its own
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


class DirectWrites:
    """The HTTP channel's writes, sent at once (see the module's docstring).

    Mixed into `twisted.web.http.HTTPChannel` ahead of it: Twisted's `Request` writes
    through `writeHeaders`, `write` and `writeSequence`, and ends with `requestDone`."""

    transport: Any
    _head: bytes | None = None

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        if type(self.transport) is not tcp.Server:
            super().writeHeaders(version, code, reason, headers)  # type: ignore[misc]
            return
        lines = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                lines += (name, b": ", value, b"\r\n")
        lines.append(b"\r\n")
        self._head = b"".join(lines)

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            data = head + data
        send_now(self.transport, data)

    def writeSequence(self, iovec: Sequence[bytes]) -> None:
        head = self._head
        self._head = None
        send_now(self.transport, b"".join([head, *iovec] if head is not None else iovec))

    def flush_head(self) -> None:
        """Send the held-back headers now: a body that does not pass through `write`
        (sendfile) must find them in the socket before it. (Sending them with MSG_MORE,
        to share the body's first segment, cost a 1 MiB sendfile hit a fifth more CPU.)"""
        head = self._head
        if head is not None:
            self._head = None
            send_now(self.transport, head)

    def requestDone(self, request: Any) -> None:
        self.flush_head()  # a response without body bytes: HEAD, 302, 304
        super().requestDone(request)  # type: ignore[misc]

    def loseConnection(self) -> None:
        self.flush_head()
        super().loseConnection()  # type: ignore[misc]
