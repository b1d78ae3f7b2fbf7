"""The public channel's idle timeout (`edge.web.idle`): one timer per connection, kept
across requests, with Twisted's behaviour on the wire."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from edge.web.site import EdgeChannel, EdgeSite

reactor: Any = _reactor

TIMEOUT = 0.5


class _Answers(Resource):
    """`/now` answers at once; `/slow` answers 3 x TIMEOUT later; `/hang` never does."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.hanging: list[Any] = []

    def render_GET(self, request: Any) -> Any:
        if request.path == b"/slow":
            reactor.callLater(3 * TIMEOUT, self._finish, request)
            return NOT_DONE_YET
        if request.path == b"/hang":
            self.hanging.append(request)
            return NOT_DONE_YET
        request.setHeader(b"content-length", b"2")
        return b"ok"

    def _finish(self, request: Any) -> None:
        if not request._disconnected:
            request.setHeader(b"content-length", b"4")
            request.write(b"slow")
            request.finish()


def _timers() -> list[Any]:
    """The reactor's live idle timers of edge channels."""
    return [
        call
        for call in reactor.getDelayedCalls()
        if call.active() and isinstance(getattr(call.func, "__self__", None), EdgeChannel)
    ]


def _response(sock: socket.socket, buffer: bytes = b"") -> tuple[bytes, bytes]:
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(4096)
        assert data, "closed before a response"
        buffer += data
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    while len(rest) < length:
        data = sock.recv(4096)
        assert data, "closed inside a body"
        rest += data
    return head + b"\r\n\r\n" + rest[:length], rest[length:]


def _requests_then_idle(port: int, paths: list[str]) -> tuple[list[bytes], float]:
    """Send `paths` one after the other on one keep-alive connection, then wait: the
    responses, and how long after the last one the edge closed the connection."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        answers = []
        for path in paths:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            answer, rest = _response(sock)
            assert rest == b""
            answers.append(answer)
        done = time.monotonic()
        assert sock.recv(4096) == b"", "bytes after the last response"
        return answers, time.monotonic() - done
    finally:
        sock.close()


async def _serve(root: Resource) -> Any:
    return reactor.listenTCP(0, EdgeSite(root, timeout=TIMEOUT), interface="127.0.0.1")


@pytest_twisted.ensureDeferred
async def test_idle_connection_closes_a_timeout_after_its_last_response():
    """Requests on a keep-alive connection each push the idle timeout back; once the
    connection is idle, the edge closes it `timeout` seconds after the last response,
    not before, and leaves no timer behind."""
    port = await _serve(_Answers())
    try:
        paths = ["/now"] * 20
        answers, idle = await deferToThread(_requests_then_idle, port.getHost().port, paths)
        assert all(a.startswith(b"HTTP/1.1 200 OK") and a.endswith(b"ok") for a in answers)
        assert TIMEOUT * 0.9 <= idle < TIMEOUT + 2.0
        await deferLater(reactor, 0.05, lambda: None)
        assert _timers() == []
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_no_timeout_while_a_request_is_answered():
    """A response that takes three timeouts to come still comes whole: the idle timeout
    is off while a request is answered, and on again after it."""
    port = await _serve(_Answers())
    try:
        paths = ["/now", "/slow", "/now"]
        answers, idle = await deferToThread(_requests_then_idle, port.getHost().port, paths)
        assert answers[1].startswith(b"HTTP/1.1 200 OK") and answers[1].endswith(b"slow")
        assert answers[2].endswith(b"ok")
        assert TIMEOUT * 0.9 <= idle < TIMEOUT + 2.0
    finally:
        await port.stopListening()


def _connect_send_close(port: int, path: str) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    time.sleep(0.2)
    sock.close()


@pytest_twisted.ensureDeferred
async def test_a_client_gone_mid_request_leaves_no_timer():
    """A client that closes while its request is still being answered (its timer set far
    ahead, not cancelled) leaves no timer in the reactor: the lost connection cancels it."""
    root = _Answers()
    port = await _serve(root)
    try:
        await deferToThread(_connect_send_close, port.getHost().port, "/hang")
        for _ in range(100):
            if root.hanging and root.hanging[0]._disconnected:
                break
            await deferLater(reactor, 0.02, lambda: None)
        assert root.hanging and root.hanging[0]._disconnected
        assert _timers() == []
    finally:
        await port.stopListening()


def _request_then_close(port: int) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(b"GET /now HTTP/1.1\r\nHost: x\r\n\r\n")
        _response(sock)
    finally:
        sock.close()


@pytest_twisted.ensureDeferred
async def test_a_client_that_closes_an_idle_connection_leaves_no_timer():
    """A client that closes its keep-alive connection between requests (the timer
    running) leaves no timer in the reactor either."""
    root = _Answers()
    site = EdgeSite(root, timeout=30)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        await deferToThread(_request_then_close, port.getHost().port)
        for _ in range(100):
            if not _timers():
                break
            await deferLater(reactor, 0.02, lambda: None)
        assert _timers() == []
    finally:
        await port.stopListening()
