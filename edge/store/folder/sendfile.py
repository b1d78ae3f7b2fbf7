"""Response bodies by sendfile(2): the kernel copies file pages to the socket, no bytes
pass through Python.

Twisted has no sendfile support of its own. The shape is asyncio's `loop.sendfile`: once
the response headers have left the transport's buffer, the body goes by `os.sendfile`
from the open file on the non-blocking socket, resuming when the socket is writable again.
When the socket is full, writability is watched on a duplicate of its descriptor,
registered with the reactor as a writer of its own, so the transport's own registration
(reading, and its buffer) is never touched. The transport's write buffer is read through
`twisted.internet.abstract.FileDescriptor`'s `dataBuffer`/`offset`/`_tempDataLen`; the
tests in tests/integration/test_sendfile.py check the wire bytes, so a Twisted upgrade
that moves them shows there.

Only plain TCP connections qualify (`usable`); TLS, HTTP/2 and UNIX sockets keep the
producer. A client that goes away mid-body closes the file and the duplicate at once.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from twisted.internet import tcp
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

CHUNK = 4 * 1024 * 1024  # at most per sendfile call, so one client cannot hog a reactor turn
log = Logger()
_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN)

try:
    from twisted.internet import unix

    _UNIX: tuple[type, ...] = (unix.Server,)
except ImportError:  # pragma: no cover - platforms without UNIX sockets
    _UNIX = ()


def usable(request: Request) -> bool:
    """True when `request` is on a plain TCP connection this process can sendfile to."""
    channel = request.channel
    transport = getattr(channel, "transport", None)
    return (
        hasattr(os, "sendfile")
        and isinstance(transport, tcp.Server)
        and not isinstance(transport, _UNIX)
        and getattr(channel, "_requestProducer", None) is None
    )


def _buffered(transport: Any) -> int:
    """Bytes the transport still holds (headers, or an earlier pipelined response)."""
    return int(len(transport.dataBuffer) - transport.offset + transport._tempDataLen)


class SendfileBody:
    """Sends `count` bytes of `file` from `offset` as the body of `request`, then finishes
    it. The caller has set the status and headers (Content-Length included); `file` is
    owned from here on and closed whatever happens."""

    def __init__(self, request: Request, file: Any, offset: int, count: int) -> None:
        self.request = request
        self.file = file
        self.offset = offset
        self.remaining = count
        self._reactor = _reactor_of(request)
        self._transport: Any = request.channel.transport
        self._fd = -1
        self._watching = False
        self._done = False

    def start(self) -> None:
        request = self.request
        if request._disconnected:
            self._stop()
            return
        request.write(b"")  # the status line and headers, into the transport's buffer
        request.notifyFinish().addErrback(self._lost)
        self._send()

    # -- IWriteDescriptor, for the reactor -----------------------------------------------

    def fileno(self) -> int:
        return self._fd

    def doWrite(self) -> None:
        self._send()

    def connectionLost(self, reason: Failure) -> None:
        # The reactor saw the socket fail on our duplicate: the reactor has dropped us
        # already; make sure the transport goes too, so the request learns of it.
        self._watching = False
        self._abort()

    def logPrefix(self) -> str:
        return "SendfileBody"

    # -- sending ---------------------------------------------------------------------------

    def _send(self) -> None:
        if self._done:
            return
        transport = self._transport
        if transport.disconnected or transport.disconnecting:
            self._stop()  # lost, or being closed: the request hears of it from the channel
            return
        if _buffered(transport):
            # Headers first: flush what the transport holds, as its own doWrite would.
            if transport.doWrite() is not None or _buffered(transport):
                self._watch()  # the socket is full (or broken: the reactor will see it)
                return
        out, src = self._transport.fileno(), self.file.fileno()
        sent_now = 0
        try:
            while self.remaining > 0:
                sent = os.sendfile(out, src, self.offset, min(self.remaining, CHUNK))
                if sent == 0:  # the file is shorter than it was: cannot keep the length
                    self._abort()
                    return
                self.offset += sent
                self.remaining -= sent
                sent_now += sent
                if sent_now >= CHUNK:
                    break  # let other connections have the reactor; resume when writable
        except BlockingIOError:
            pass
        except OSError as e:
            self._abort()
            if e.errno not in _GONE:
                log.failure(
                    "sendfile of request {request_id} failed",
                    Failure(),
                    request_id=getattr(self.request, "request_id", "-"),
                )
            return
        finally:
            if sent_now:
                self.request.sentLength += sent_now
                reset = getattr(self.request.channel, "resetTimeout", None)
                if reset is not None:
                    reset()
        if self.remaining > 0:
            self._watch()
            return
        self._stop()
        self.request.finish()

    def _watch(self) -> None:
        if not self._watching and not self._done:
            if self._fd < 0:  # only a body that does not fit the socket at once needs one
                self._fd = os.dup(self._transport.fileno())
            self._watching = True
            self._reactor.addWriter(self)

    def _abort(self) -> None:
        self._stop()
        if not getattr(self._transport, "disconnected", False):
            self._transport.abortConnection()

    def _lost(self, reason: Failure) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._done:
            return
        self._done = True
        if self._watching:
            self._watching = False
            self._reactor.removeWriter(self)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.file.close()


def _reactor_of(request: Request) -> Any:
    site = getattr(request.channel, "site", None)
    reactor = getattr(site, "reactor", None) if site is not None else None
    if reactor is None:
        from twisted.internet import reactor
    return reactor
