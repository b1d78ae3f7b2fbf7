"""Large bodies by sendfile(2), small ones inline: exact bytes for whole files, ranges,
HEAD and 304; a slow reader; pipelined requests; no descriptor left by a client that
goes away mid-body; the producer kept where sendfile cannot go."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread

from edge.store.folder import objects, sendfile
from tests.integration.conftest import BUCKET, DOMAIN, wait_until

reactor: Any = _reactor

SIZE = 3 * sendfile.CHUNK + 12345  # several sendfile calls, and a partial last one


def _body(size: int) -> bytes:
    return hashlib.sha256(b"seed").digest() * (size // 32) + b"x" * (size % 32)


async def _edge(edges: Any, tmp_path: Path, files: dict[str, bytes]) -> Any:
    edge = await edges.start(edges.config(None))
    folder = edge.data_dir / BUCKET
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return edge


def _raw(port: int, requests: bytes, slow: bool = False) -> bytes:
    """Send raw requests on one connection, read until the server closes it."""
    sock = socket.socket()
    sock.settimeout(20)
    if slow:  # before connect: a window shrunk later stalls TCP itself for seconds
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    try:
        sock.sendall(requests)
        chunks: list[bytes] = []
        while True:
            if slow and len(chunks) < 50:
                time.sleep(0.01)
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)
    finally:
        sock.close()


def _get(key: str, extra: str = "", close: bool = True) -> bytes:
    connection = "Connection: close\r\n" if close else ""
    return f"GET /{key} HTTP/1.1\r\nHost: {DOMAIN}\r\n{extra}{connection}\r\n".encode()


def _split(response: bytes) -> tuple[bytes, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return head, body


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest_twisted.ensureDeferred
async def test_large_body_exact_bytes_slow_reader(edges, tmp_path):
    """A body sent by sendfile to a client that reads slowly arrives whole and byte for
    byte, with its Content-Length, however often the socket fills."""
    data = _body(SIZE)
    edge = await _edge(edges, tmp_path, {"big.bin": data})
    response = await deferToThread(_raw, edge.port, _get("big.bin"), True)
    head, body = _split(response)
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Length: %d" % SIZE in head
    assert body == data


@pytest_twisted.ensureDeferred
async def test_ranges_and_pipelining_on_sendfile(edges, tmp_path):
    """Two pipelined range requests and a whole body on one connection: each response
    starts after the previous one's last byte."""
    data = _body(SIZE)
    edge = await _edge(edges, tmp_path, {"big.bin": data})
    first, last = 1000, 1000 + objects.INLINE_MAX + 5000
    wire = (
        _get("big.bin", f"Range: bytes={first}-{last}\r\n", close=False)
        + _get("big.bin", "Range: bytes=-300000\r\n", close=False)
        + _get("big.bin")
    )
    response = await deferToThread(_raw, edge.port, wire)
    head1, rest = _split(response)
    assert head1.startswith(b"HTTP/1.1 206")
    assert b"Content-Range: bytes %d-%d/%d" % (first, last, SIZE) in head1
    n = last - first + 1
    assert rest[:n] == data[first : last + 1]
    head2, rest = _split(rest[n:])
    assert head2.startswith(b"HTTP/1.1 206")
    assert rest[:300000] == data[-300000:]
    head3, rest = _split(rest[300000:])
    assert head3.startswith(b"HTTP/1.1 200")
    assert rest == data


@pytest_twisted.ensureDeferred
async def test_head_and_304_keep_their_bytes(edges, tmp_path):
    """HEAD and a 304 of a sendfile-sized and of an inline-sized object send headers
    only: not a byte of body, whichever body path the object would take."""
    data = _body(SIZE)
    edge = await _edge(edges, tmp_path, {"big.bin": data, "small.bin": data[:4096]})
    for key, size in (("big.bin", SIZE), ("small.bin", 4096)):
        head = f"HEAD /{key} HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n"
        response = await deferToThread(_raw, edge.port, head.encode())
        headers, body = _split(response)
        assert body == b"" and b"Content-Length: %d" % size in headers
        etag = next(
            line.split(b": ", 1)[1]
            for line in headers.split(b"\r\n")
            if line.lower().startswith(b"etag:")
        )
        cond = f"If-None-Match: {etag.decode()}\r\n"
        response = await deferToThread(_raw, edge.port, _get(key, cond))
        headers, body = _split(response)
        assert headers.startswith(b"HTTP/1.1 304") and body == b""


@pytest_twisted.ensureDeferred
async def test_inline_body_exact(edges, tmp_path):
    """A range of an object exactly the inline limit long is sent inline, exactly."""
    data = _body(objects.INLINE_MAX)
    edge = await _edge(edges, tmp_path, {"edge.bin": data})
    response = await deferToThread(_raw, edge.port, _get("edge.bin", "Range: bytes=5-\r\n"))
    head, body = _split(response)
    assert head.startswith(b"HTTP/1.1 206") and body == data[5:]


@pytest_twisted.ensureDeferred
async def test_client_gone_mid_sendfile_leaks_no_descriptor(edges, tmp_path):
    """Clients that reset their connections mid-sendfile leave no descriptor behind:
    the socket, its sendfile duplicate and the open file all close."""
    data = _body(64 * 1024 * 1024)
    edge = await _edge(edges, tmp_path, {"huge.bin": data})
    before = _open_fds()
    socks = []
    for _ in range(5):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", edge.port))
        sock.sendall(_get("huge.bin", close=False))
        socks.append(sock)
    for sock in socks:  # each has its headers: the edge is stuck mid-body on each
        sock.settimeout(20)
        assert (await deferToThread(sock.recv, 1000)).startswith(b"HTTP/1.1 200")
    # 5 client sockets, 5 accepted ones, 5 duplicates for sendfile, 5 open files
    assert len(_open_fds() - before) >= 20
    for sock in socks:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # RST
    await wait_until(lambda: not (_open_fds() - before))
    await deferLater(reactor, 0.05, lambda: None)
    assert not (_open_fds() - before)


def test_sendfile_not_used_off_plain_tcp():
    """TLS wraps the TCP transport in a protocol, tests use string transports, UNIX
    sockets are another class: all keep the producer."""
    from twisted.protocols.tls import TLSMemoryBIOProtocol

    for transport in (StringTransport(), TLSMemoryBIOProtocol.__new__(TLSMemoryBIOProtocol)):
        request = SimpleNamespace(channel=SimpleNamespace(transport=transport))
        assert not sendfile.usable(request)
