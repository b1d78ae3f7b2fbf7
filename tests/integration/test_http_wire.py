"""Responses written straight to the socket (`edge.web.wire`): every byte in order when
the socket fills mid-way and pipelined responses queue behind each other; headers that go
out before a body that comes later; Twisted's own writes where the transport is not a
plain TCP socket."""

from __future__ import annotations

import hashlib
import socket
import time
from typing import Any

import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from edge.store.folder import objects
from edge.web.site import EdgeSite
from tests.integration.conftest import BUCKET, DOMAIN

reactor: Any = _reactor


def _body(size: int, seed: bytes) -> bytes:
    return hashlib.sha256(seed).digest() * (size // 32) + b"y" * (size % 32)


def _read_responses(sock: socket.socket, methods: list[str], slow: bool) -> list[tuple]:
    """Read one response per method off `sock`, by Content-Length (none after HEAD)."""
    buffer = b""
    answers = []
    for method in methods:
        while b"\r\n\r\n" not in buffer:
            data = sock.recv(65536)
            assert data, f"connection closed before the response to {method}"
            buffer += data
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = dict(line.split(b": ", 1) for line in lines[1:])
        length = 0 if method == "HEAD" else int(headers[b"Content-Length"])
        while len(buffer) < length:
            if slow:
                time.sleep(0.002)
            data = sock.recv(65536)
            assert data, f"connection closed inside the body of {method}"
            buffer += data
        answers.append((lines[0], headers, buffer[:length]))
        buffer = buffer[length:]
    assert sock.recv(65536) == b""  # the last request asked for close: nothing more
    assert buffer == b""
    return answers


def _pipelined(port: int, requests: list[tuple[str, str]]) -> list[tuple]:
    sock = socket.socket()
    sock.settimeout(20)
    # a small window: the big body, and the small ones queued behind it, fill the socket
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    try:
        wire = b""
        for i, (method, key) in enumerate(requests):
            close = "Connection: close\r\n" if i == len(requests) - 1 else ""
            wire += f"{method} /{key} HTTP/1.1\r\nHost: {DOMAIN}\r\n{close}\r\n".encode()
        sock.sendall(wire)
        return _read_responses(sock, [m for m, _ in requests], slow=True)
    finally:
        sock.close()


@pytest_twisted.ensureDeferred
async def test_pipelined_responses_in_order_through_a_full_socket(edges):
    """Pipelined 404s, HEADs, inline bodies and a sendfile body on one connection to a
    slow reader: each response whole, in order, headers once, body byte for byte, even
    where a response finds the socket full and the rest of it waits in the transport
    while the reader frees room for the next one (which must queue behind it)."""
    mid = _body(objects.INLINE_MAX, b"mid")  # the largest inline body: fills the window
    big = _body(3 * 1024 * 1024 + 7, b"big")
    edge = await edges.start(edges.config(None))
    folder = edge.data_dir / BUCKET
    expected = {"mid.bin": mid, "big.bin": big}
    for i in range(SMALL):
        expected[f"small{i}.bin"] = _body(1024 + 37 * i, b"small%d" % i)
    for key, data in expected.items():
        (folder / key).write_bytes(data)
    requests = [("GET", "missing.bin"), ("HEAD", "small0.bin"), ("GET", "mid.bin")]
    requests += [("GET", "big.bin"), ("GET", "mid.bin"), ("HEAD", "missing.bin")]
    requests += [("GET", f"small{i}.bin") for i in range(SMALL)]
    answers = await deferToThread(_pipelined, edge.port, requests)
    for (method, key), (status, headers, body) in zip(requests, answers, strict=True):
        if key == "missing.bin":
            assert status == b"HTTP/1.1 404 Not Found"
            assert headers[b"Content-Type"] == b"application/xml"
            assert method == "HEAD" or b"<Code>NoSuchKey</Code>" in body
            continue
        assert status == b"HTTP/1.1 200 OK", (method, key)
        assert int(headers[b"Content-Length"]) == len(expected[key])
        assert body == (b"" if method == "HEAD" else expected[key]), (method, key)


SMALL = 300


class _LateBody(Resource):
    """Sends its headers with `write(b"")` and its body only when told to."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Any] = []
        self.arrived: Deferred[None] = Deferred()

    def render_GET(self, request: Any) -> Any:
        request.setHeader(b"content-length", b"5")
        request.write(b"")
        self.requests.append(request)
        self.arrived.callback(None)
        return NOT_DONE_YET


def _headers_then_body(port: int, go: Any) -> tuple[bytes, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(b"GET /late HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:  # before the body exists at all
            data = sock.recv(4096)
            assert data, "closed before the headers"
            head += data
        go()
        rest = b""
        while data := sock.recv(4096):
            rest += data
        return head, rest
    finally:
        sock.close()


@pytest_twisted.ensureDeferred
async def test_headers_go_out_before_a_late_body():
    """A response that writes its headers with `write(b"")` and its body later has the
    headers on the wire while the body does not exist yet: held-back headers wait for
    body bytes only within one write."""
    root = _LateBody()
    port = reactor.listenTCP(0, EdgeSite(root), interface="127.0.0.1")
    try:

        def go() -> None:
            def finish() -> None:
                request = root.requests[0]
                request.write(b"hello")
                request.finish()

            reactor.callFromThread(finish)

        head, rest = await deferToThread(_headers_then_body, port.getHost().port, go)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\nContent-Length: 5\r\n" in head
        assert head.endswith(b"\r\n\r\n") and rest == b"hello"
    finally:
        await port.stopListening()


def test_twisted_writes_where_the_transport_is_not_plain_tcp():
    """On a transport that is not a plain TCP socket (TLS, a test transport) the channel
    writes through Twisted's own path: the response is whole, headers before body."""
    root = _LateBody()
    site = EdgeSite(root)
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.value().endswith(b"\r\n\r\n")
    request = root.requests[0]
    request.write(b"hello")
    request.finish()
    head, _, body = transport.value().partition(b"\r\n\r\n")
    assert b"\r\nContent-Length: 5" in head and body == b"hello"
    channel.connectionLost(None)
