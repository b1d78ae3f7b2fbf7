"""Request bodies on a real edge over raw sockets: who may send one, the spool budget, and a
full disk.

Raw sockets, because what matters is on the wire: whether `100 Continue` goes out, whether
the refusal comes before the body is sent, whether the connection is closed after it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from edge.api.signature import sign
from tests.integration.conftest import BUCKET

SECRET_ID = "AKIDbodies"
SECRET_KEY = "bodies-secret"
CREDENTIALS = [{"secret_id": SECRET_ID, "secret_key": SECRET_KEY}]


def head(method: str, key: str, *headers: str, signed: bool = False, query: str = "") -> bytes:
    """A request head for `/<BUCKET>/<key>`, optionally signed with the test key."""
    lines = [f"{method} /{BUCKET}/{key}{query} HTTP/1.1", "Host: 127.0.0.1", *headers]
    if signed:
        params = {}
        if query:
            for part in query.lstrip("?").split("&"):
                name, _, value = part.partition("=")
                params[name] = value
        # Path style: the signed path names the bucket, as the edge requires.
        auth = sign(SECRET_ID, SECRET_KEY, method, f"/{BUCKET}/{key}", params)
        lines.append(f"Authorization: {auth}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def exchange(port: int, data: bytes, timeout: float = 10) -> tuple[bytes, bool]:
    """Send `data`, read until the server closes; (everything read, whether it closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the edge may answer and close before it has taken all of it
        return read_all(sock)


def read_all(sock: socket.socket) -> tuple[bytes, bool]:
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received, True
        except TimeoutError:
            return received, False
        if not chunk:
            return received, True
        received += chunk


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def tmp_files(edge) -> list[Path]:
    return list((edge.data_dir / ".cosedge" / "tmp").iterdir())


async def start(edges, *, spool_bytes: int | None = None, data_dir: Path | None = None):
    config = edges.config(None, credentials=CREDENTIALS, data_dir=data_dir)
    if spool_bytes is not None:
        from edge.config import LimitsConfig

        config = dataclasses.replace(config, limits=LimitsConfig(spool_bytes=spool_bytes))
    return await edges.start(config)


# -- who may send a body ------------------------------------------------------------------

BIG = 10 * 1024 * 1024


@pytest.mark.parametrize(
    "request_head, status, code",
    [
        (head("PUT", "k", f"Content-Length: {BIG}", "Expect: 100-continue"), 403, b"AccessDenied"),
        (
            head("PUT", "k", "Transfer-Encoding: chunked", "Expect: 100-continue"),
            403,
            b"AccessDenied",
        ),
        (
            head("POST", "k", f"Content-Length: {BIG}", "Expect: 100-continue", query="?uploads"),
            403,
            b"AccessDenied",
        ),
        (
            head("GET", "k", f"Content-Length: {BIG}", "Expect: 100-continue"),
            400,
            b"InvalidRequest",
        ),
        (
            head("DELETE", "k", f"Content-Length: {BIG}", "Expect: 100-continue", signed=True),
            400,
            b"InvalidRequest",
        ),
        (
            head(
                "PUT",
                "k",
                f"Content-Length: {BIG}",
                "Expect: 100-continue",
                "Authorization: q-sign-algorithm=sha1&q-ak=nobody&q-signature=00",
            ),
            403,
            None,
        ),
    ],
    ids=[
        "anonymous-put",
        "anonymous-chunked-put",
        "anonymous-post",
        "get-with-body",
        "signed-delete-with-body",
        "forged-signature-put",
    ],
)
@pytest_twisted.ensureDeferred
async def test_bodies_that_are_not_taken_are_refused_before_they_are_read(
    edges, request_head, status, code
):
    """A request that may not send a body (anonymous writes, reads, a signed operation that
    takes none, a signature that does not verify) is answered in COS XML from its head
    alone: no `100 Continue`, nothing written to .cosedge/tmp, `Connection: close`, and
    the connection really closed, although the client never sent the 10 MiB it announced."""
    edge = await start(edges)
    response, closed = await deferToThread(exchange, edge.port, request_head)
    assert b"100 Continue" not in response
    assert status_of(response) == status, response
    if code is not None:
        assert b"<Code>" + code + b"</Code>" in response
    assert b"\r\nConnection: close\r\n" in response
    assert b"x-cos-request-id" in response.lower()
    assert closed
    assert tmp_files(edge) == []


@pytest_twisted.ensureDeferred
async def test_signed_put_still_gets_100_continue_and_is_stored(edges):
    """The refusals leave the management API's uploads alone: a signed PUT that asks for
    `100 Continue` gets it, and its body is stored; nothing is left in .cosedge/tmp."""
    edge = await start(edges)
    body = b"hello body" * 1000

    def put() -> bytes:
        with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
            sock.sendall(
                head(
                    "PUT",
                    "ok.bin",
                    f"Content-Length: {len(body)}",
                    "Expect: 100-continue",
                    "Connection: close",
                    signed=True,
                )
            )
            interim = sock.recv(65536)
            assert interim.startswith(b"HTTP/1.1 100 Continue"), interim
            sock.sendall(body)
            return read_all(sock)[0]

    response = await deferToThread(put)
    assert status_of(response) == 200, response
    assert (edge.data_dir / BUCKET / "ok.bin").read_bytes() == body
    assert tmp_files(edge) == []


# -- the spool budget ---------------------------------------------------------------------

KIB = 1024


@pytest_twisted.ensureDeferred
async def test_spool_budget_answers_slow_down_and_frees_with_the_upload(edges):
    """With `limits.spool_bytes` at 1 MiB, a 600 KiB upload in flight leaves no room for a
    second one: that is answered 503 SlowDown at once, before its body; a body larger than
    the whole budget is 400 EntityTooLarge; once the first upload is stored its bytes are
    free again and the next upload succeeds."""
    edge = await start(edges, spool_bytes=1024 * KIB)
    first_body = b"a" * (600 * KIB)
    first = socket.create_connection(("127.0.0.1", edge.port), timeout=10)
    try:
        await deferToThread(
            first.sendall,
            head("PUT", "first.bin", f"Content-Length: {len(first_body)}", signed=True)
            + first_body[: 100 * KIB],
        )
        await _wait_for(lambda: len(tmp_files(edge)) == 1)
        second, closed = await deferToThread(
            exchange,
            edge.port,
            head(
                "PUT",
                "second.bin",
                f"Content-Length: {600 * KIB}",
                "Expect: 100-continue",
                signed=True,
            ),
        )
        assert b"100 Continue" not in second
        assert status_of(second) == 503 and b"<Code>SlowDown</Code>" in second, second
        assert b"Please reduce your request rate." in second
        assert closed
        huge, _ = await deferToThread(
            exchange,
            edge.port,
            head(
                "PUT",
                "huge.bin",
                f"Content-Length: {2048 * KIB}",
                "Expect: 100-continue",
                signed=True,
            ),
        )
        assert status_of(huge) == 400 and b"<Code>EntityTooLarge</Code>" in huge, huge
        await deferToThread(first.sendall, first_body[100 * KIB :])
        first.settimeout(10)
        response = await deferToThread(first.recv, 65536)
        assert status_of(response) == 200, response
    finally:
        first.close()
    assert (edge.data_dir / BUCKET / "first.bin").read_bytes() == first_body
    third_body = b"c" * (600 * KIB)
    third, _ = await deferToThread(
        exchange,
        edge.port,
        head(
            "PUT",
            "third.bin",
            f"Content-Length: {len(third_body)}",
            "Connection: close",
            signed=True,
        )
        + third_body,
    )
    assert status_of(third) == 200, third
    assert tmp_files(edge) == []


@pytest_twisted.ensureDeferred
async def test_chunked_upload_over_the_budget_is_answered_before_it_ends(edges):
    """A chunked upload that runs past the budget is answered 503 SlowDown as soon as it
    does, while the client is still sending (no terminating chunk is ever sent here), and
    the connection is closed: the edge does not drain the rest of a body it refused."""
    edge = await start(edges, spool_bytes=1024 * KIB)
    chunk = b"z" * (64 * KIB)
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20))
    response, closed = await deferToThread(
        exchange,
        edge.port,
        head("PUT", "endless.bin", "Transfer-Encoding: chunked", signed=True) + body,
        5,
    )
    assert status_of(response) == 503 and b"<Code>SlowDown</Code>" in response, response
    assert closed
    assert tmp_files(edge) == []
    assert not (edge.data_dir / BUCKET / "endless.bin").exists()


@pytest_twisted.ensureDeferred
async def test_chunked_upload_is_counted_as_it_arrives(edges):
    """A chunked body has no length to reserve up front, so its bytes count against the
    budget as they arrive: 1.5 MiB against a 1 MiB budget is answered 503 SlowDown, its
    spool file is gone, nothing is stored, and a later upload fits again."""
    edge = await start(edges, spool_bytes=1024 * KIB)
    chunk = b"z" * (64 * KIB)
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(24)) + b"0\r\n\r\n"
    response, _ = await deferToThread(
        exchange,
        edge.port,
        head("PUT", "chunked.bin", "Transfer-Encoding: chunked", signed=True) + body,
    )
    assert status_of(response) == 503 and b"<Code>SlowDown</Code>" in response, response
    assert not (edge.data_dir / BUCKET / "chunked.bin").exists()
    assert tmp_files(edge) == []
    small = b"s" * (512 * KIB)
    ok, _ = await deferToThread(
        exchange,
        edge.port,
        head("PUT", "small.bin", f"Content-Length: {len(small)}", "Connection: close", signed=True)
        + small,
    )
    assert status_of(ok) == 200, ok


# -- a full disk ----------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs with 64 inodes to put the data folder on, so ENOSPC (out of space, or
    out of inodes) is the real thing (needs root)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=64", "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode(errors='replace')}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.logs_errors
@pytest_twisted.ensureDeferred
async def test_disk_full_while_spooling_answers_xml_and_leaves_no_temp_file(
    edges, tiny_disk, captured_events
):
    """ENOSPC in the middle of a body (a 2 MiB PUT onto a 1 MiB filesystem) is answered
    503 ServiceUnavailable in COS XML as soon as the write fails, never a traceback or a
    silently dropped connection; the partial spool file is deleted and the error logged."""
    edge = await start(edges, data_dir=tiny_disk / "data")
    body = b"f" * (2048 * KIB)
    response, _ = await deferToThread(
        exchange,
        edge.port,
        head("PUT", "full.bin", f"Content-Length: {len(body)}", signed=True) + body,
    )
    assert status_of(response) == 503, response
    assert b"<Code>ServiceUnavailable</Code>" in response
    assert tmp_files(edge) == []
    assert not (edge.data_dir / BUCKET / "full.bin").exists()
    assert any("No space left on device" in str(e.get("reason")) for e in captured_events)
    assert not any(e.get("log_failure") is not None for e in captured_events)


@pytest.mark.logs_errors
@pytest_twisted.ensureDeferred
async def test_disk_full_when_opening_the_spool_answers_before_the_body(edges, tiny_disk):
    """ENOSPC when the spool file is created (the filesystem has no free inode) is answered
    503 ServiceUnavailable from the request's head: no `100 Continue`, no body read, no
    temp file; once space is back, uploads work again."""
    edge = await start(edges, data_dir=tiny_disk / "data")
    filler = tiny_disk / "filler"
    filler.mkdir()
    count = 0
    try:
        while True:  # use up the inodes (tmpfs has a fixed number for its size)
            (filler / str(count)).touch()
            count += 1
    except OSError:
        pass
    response, closed = await deferToThread(
        exchange,
        edge.port,
        head("PUT", "k.bin", "Content-Length: 1000", "Expect: 100-continue", signed=True),
    )
    assert b"100 Continue" not in response
    assert status_of(response) == 503 and b"<Code>ServiceUnavailable</Code>" in response
    assert closed
    shutil.rmtree(filler)
    assert tmp_files(edge) == []
    body = b"back" * 100
    ok, _ = await deferToThread(
        exchange,
        edge.port,
        head("PUT", "k.bin", f"Content-Length: {len(body)}", "Connection: close", signed=True)
        + body,
    )
    assert status_of(ok) == 200, ok


async def _wait_for(predicate, timeout: float = 10.0) -> None:
    from tests.integration.conftest import wait_until

    await wait_until(predicate, timeout)


@pytest.mark.logs_errors
@pytest_twisted.ensureDeferred
async def test_a_failing_body_sink_answers_500_xml_not_a_dropped_connection():
    """If choosing the sink itself fails (a bug), the request is answered 500 InternalError
    in COS XML before its body is read, and the failure is logged; the connection is not
    just dropped with Twisted's "Unhandled Error"."""
    from twisted.internet import reactor
    from twisted.web.resource import Resource

    from edge.web.site import EdgeSite

    class Broken(Resource):
        isLeaf = True

        def body_sink_for(self, request, length):
            raise RuntimeError("bug")

        def render(self, request):
            from edge.api import errors
            from edge.web.bodies import refusal_of

            refused = refusal_of(request)
            if refused is None:
                return b"the body was taken"
            return errors.write_error(request, refused.error, "/", request.request_id)

    port = reactor.listenTCP(0, EdgeSite(Broken()), interface="127.0.0.1")
    try:
        response, closed = await deferToThread(
            exchange,
            port.getHost().port,
            head("PUT", "k", "Content-Length: 100", "Expect: 100-continue", signed=True),
        )
    finally:
        await port.stopListening()
    assert b"100 Continue" not in response
    assert status_of(response) == 500 and b"<Code>InternalError</Code>" in response
    assert closed
