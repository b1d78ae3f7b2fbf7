"""The S3 client (edge/s3) against a real SeaweedFS on 127.0.0.1, and with `-m ceph` against
a real Ceph RGW too (`s3_server`).

Every call goes over the wire to `weed mini` (or RGW) and is checked by its SigV4
verification, so a mis-encoded key or a wrong signature fails here as it would against a
production store; RGW also checks every payload hash.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.interfaces import IConsumer, IProducer, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from edge.s3 import FileRangeProducer, S3Client, S3Error, S3Unavailable, sha256_of_file
from edge.s3.signing import EMPTY_SHA256, Signer
from edge.s3.transport import HEADER_READ_SIZE, STORE_READ_SIZE
from tests.cluster.ceph_server import CephRGW
from tests.cluster.s3_server import S3Server, remove_bucket
from tests.cluster.seaweedfs_server import SeaweedFS

reactor: Any = _reactor
pytestmark = pytest.mark.cluster

MiB = 1024 * 1024


def client_for(server: S3Server, **kwargs: Any) -> S3Client:
    return S3Client(server.endpoint, server.region, server.access_key, server.secret_key, **kwargs)


@pytest.fixture
def s3(s3_server: S3Server) -> Iterator[S3Client]:
    client = client_for(s3_server)
    yield client
    pytest_twisted.blockon(Deferred.fromCoroutine(client.close()))


@pytest.fixture
def bucket(s3: S3Client) -> Iterator[str]:
    """A fresh bucket, emptied and deleted after the test."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    pytest_twisted.blockon(Deferred.fromCoroutine(s3.create_bucket(name)))
    yield name
    pytest_twisted.blockon(Deferred.fromCoroutine(remove_bucket(s3, name)))


@implementer(IConsumer)
class Sink:
    """A consumer that hashes what it gets, optionally pausing its producer every `pause_every`
    bytes for `pause_for` seconds, as a slow client would."""

    def __init__(self, pause_every: int = 0, pause_for: float = 0.0) -> None:
        self.digest = hashlib.sha256()
        self.received = 0
        self.chunks: list[bytes] = []
        self.keep = False
        self.producer: IPushProducer | None = None
        self.pauses = 0
        self.written_while_paused = 0
        self._paused = False
        self._pause_every = pause_every
        self._pause_for = pause_for
        self._since_pause = 0

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        assert streaming and IPushProducer.providedBy(producer)
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        if self._paused:
            self.written_while_paused += len(data)
        self.received += len(data)
        self.digest.update(data)
        if self.keep:
            self.chunks.append(data)
        self._since_pause += len(data)
        if self._pause_every and self._since_pause >= self._pause_every and not self._paused:
            self._since_pause = 0
            self._paused = True
            self.pauses += 1
            assert self.producer is not None
            self.producer.pauseProducing()
            reactor.callLater(self._pause_for, self._resume)

    def _resume(self) -> None:
        self._paused = False
        if self.producer is not None:
            self.producer.resumeProducing()


async def read_all(s3: S3Client, bucket: str, key: str, range: str | None = None) -> bytes:
    stream = await s3.get_object(bucket, key, range)
    assert stream is not None
    sink = Sink()
    sink.keep = True
    count = await stream.write_to(sink)
    assert count == sink.received == stream.length
    return b"".join(sink.chunks)


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))
        f.write(os.urandom(size % MiB))


@pytest_twisted.ensureDeferred
async def test_put_head_get_round_trip(s3: S3Client, bucket: str) -> None:
    """A put object comes back from HEAD and GET with its size, quoted MD5 ETag, type,
    Last-Modified and user metadata; a Range GET gets 206, Content-Range and those bytes."""
    data = b"0123456789" * 100
    before = time.time()
    etag = await s3.put_object(
        bucket, "dir/obj.txt", data, "text/plain; charset=utf-8", {"Origin-Url": "http://o/x"}
    )
    assert etag == f'"{hashlib.md5(data).hexdigest()}"'
    info = await s3.head_object(bucket, "dir/obj.txt")
    assert info is not None
    assert (info.size, info.etag, info.content_type) == (1000, etag, "text/plain; charset=utf-8")
    assert info.metadata == {"origin-url": "http://o/x"}
    assert before - 2 <= info.last_modified <= time.time() + 2
    stream = await s3.get_object(bucket, "dir/obj.txt")
    assert stream is not None and stream.status == 200 and stream.info == info
    stream.discard()
    assert await read_all(s3, bucket, "dir/obj.txt") == data
    ranged = await s3.get_object(bucket, "dir/obj.txt", "bytes=10-19")
    assert ranged is not None
    assert (ranged.status, ranged.content_range, ranged.length) == (206, "bytes 10-19/1000", 10)
    assert ranged.info.size == 1000 and ranged.info.etag == etag
    ranged.discard()
    assert await read_all(s3, bucket, "dir/obj.txt", "bytes=-5") == b"56789"
    with pytest.raises(S3Error) as raised:
        await s3.get_object(bucket, "dir/obj.txt", "bytes=5000-")
    assert (raised.value.status, raised.value.code) == (416, "InvalidRange")


@pytest_twisted.ensureDeferred
async def test_signatures_from_the_caches_are_accepted(
    s3_server: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signer whose clock stands still hands out the same signed headers for repeated GETs
    and the store accepts each; one whose key cache already holds the previous day's key
    (signed with botocore's clock on yesterday) signs today's requests with today's key."""
    import datetime

    import botocore.auth

    frozen = time.time()
    signer = Signer(s3_server.access_key, s3_server.secret_key, s3_server.region, lambda: frozen)
    client = client_for(s3_server, signer=signer)
    try:
        await client.put_object(bucket, "signed", b"same bytes")
        for _ in range(3):
            assert await read_all(client, bucket, "signed") == b"same bytes"
    finally:
        await client.close()

    yesterday = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    signer = Signer(s3_server.access_key, s3_server.secret_key, s3_server.region)
    with monkeypatch.context() as patched:
        patched.setattr(botocore.auth, "get_current_datetime", lambda remove_tzinfo=True: yesterday)
        old = signer.sign("GET", f"{s3_server.endpoint}/{bucket}/signed", {}, EMPTY_SHA256)
    assert yesterday.strftime("/%Y%m%d/") in old["Authorization"]
    client = client_for(s3_server, signer=signer)
    try:
        assert await read_all(client, bucket, "signed") == b"same bytes"
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_store_reads_are_larger_than_twisteds_default(s3: S3Client, bucket: str) -> None:
    """A body comes off the store's socket in reads of up to `STORE_READ_SIZE` (above
    Twisted's 64 KiB), so a MiB moves in fewer turns of the reactor; the bytes are intact."""
    data = os.urandom(8 * MiB)
    await s3.put_object(bucket, "big-reads", data)
    assert await read_all(s3, bucket, "big-reads") == data
    stream = await s3.get_object(bucket, "big-reads")
    assert stream is not None
    sink = Sink()
    sink.keep = True
    await stream.write_to(sink)
    sizes = [len(chunk) for chunk in sink.chunks]
    assert max(sizes) > 64 * 1024
    assert max(sizes) <= STORE_READ_SIZE


class _OneWriteStore(Protocol):
    """Answers each GET with its status line, 20 header lines and a 1 MiB body in a single
    write, as a store's answer lies in the socket when the client reads it."""

    body = os.urandom(MiB)

    def __init__(self) -> None:
        self._pending = b""

    def dataReceived(self, data: bytes) -> None:
        self._pending += data
        while b"\r\n\r\n" in self._pending:
            _, self._pending = self._pending.split(b"\r\n\r\n", 1)
            head = [b"HTTP/1.1 200 OK", b"Content-Length: %d" % len(self.body), b'ETag: "e"']
            head += [b"X-Amz-Meta-Filler-%d: %s" % (n, b"v" * 40) for n in range(18)]
            self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + self.body)  # type: ignore[union-attr]


@pytest.fixture
def one_write_store() -> Iterator[int]:
    factory = Factory.forProtocol(_OneWriteStore)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    yield port.getHost().port
    pytest_twisted.blockon(port.stopListening())


@pytest_twisted.ensureDeferred
async def test_headers_are_read_small_and_bodies_big(one_write_store: int) -> None:
    """On each request of a kept-alive store connection, the read that brings the headers
    takes at most `HEADER_READ_SIZE` bytes (Twisted's line parser copies the rest of a read
    per header line), and the body's reads then take more than Twisted's 64 KiB."""
    client = S3Client(f"http://127.0.0.1:{one_write_store}", "us-east-1", "k", "s")
    try:
        for _ in range(2):  # the second request reuses the connection
            stream = await client.get_object("b", "k")
            assert stream is not None
            sink = Sink()
            sink.keep = True
            assert await stream.write_to(sink) == MiB
            assert b"".join(sink.chunks) == _OneWriteStore.body
            sizes = [len(chunk) for chunk in sink.chunks]
            assert 0 < sizes[0] < HEADER_READ_SIZE
            assert max(sizes) > 64 * 1024
    finally:
        await client.close()


AWKWARD_KEYS = [
    "with space",
    "plus+sign",
    "percent%41literal",
    "tilde~key",
    "ünïcødé/日本語.txt",
    "reserved !$&'()*,;=:@[]",
    "query?hash#amp&",
    "x" * 200,
]


@pytest_twisted.ensureDeferred
async def test_awkward_keys_are_encoded_once(s3: S3Client, bucket: str) -> None:
    """Keys with spaces, `+`, `%`, `~`, unicode and reserved characters are signed and sent
    so the store verifies the signature and stores exactly that key (HEAD, GET, listing)."""
    for key in AWKWARD_KEYS:
        await s3.put_object(bucket, key, key.encode())
    for key in AWKWARD_KEYS:
        info = await s3.head_object(bucket, key)
        assert info is not None and info.size == len(key.encode()), key
        assert await read_all(s3, bucket, key) == key.encode()
    page = await s3.list_objects_v2(bucket)
    assert [c.key for c in page.contents] == sorted(AWKWARD_KEYS)
    # `percent%41literal` is not `percentAliteral`: the % itself was encoded.
    assert await s3.head_object(bucket, "percentAliteral") is None
    only = await s3.list_objects_v2(bucket, prefix="ünïcødé/")
    assert [c.key for c in only.contents] == ["ünïcødé/日本語.txt"]


@pytest_twisted.ensureDeferred
async def test_missing_things(s3: S3Client, bucket: str) -> None:
    """A missing key is None from head_object and get_object; a missing bucket is False from
    head_bucket and S3Error NoSuchBucket from a GET in it; deleting a missing key succeeds."""
    assert await s3.head_object(bucket, "nope") is None
    assert await s3.get_object(bucket, "nope") is None
    await s3.delete_object(bucket, "nope")
    assert await s3.head_bucket(f"{bucket}-absent") is False
    with pytest.raises(S3Error) as raised:
        await s3.get_object(f"{bucket}-absent", "k")
    assert (raised.value.status, raised.value.code) == (404, "NoSuchBucket")
    assert raised.value.request_id


@pytest_twisted.ensureDeferred
async def test_wrong_secret_is_refused(s3_server: S3Server, bucket: str) -> None:
    """The store really checks signatures (so the other tests prove ours are right): a wrong
    secret gets S3Error 403 SignatureDoesNotMatch, not S3Unavailable."""
    bad = S3Client(s3_server.endpoint, s3_server.region, s3_server.access_key, "wrong-secret")
    try:
        with pytest.raises(S3Error) as raised:
            await bad.put_object(bucket, "k", b"x")
        assert not isinstance(raised.value, S3Unavailable)
        assert (raised.value.status, raised.value.code) == (403, "SignatureDoesNotMatch")
    finally:
        await bad.close()


@pytest_twisted.ensureDeferred
async def test_if_none_match_refuses_overwrite(s3: S3Client, bucket: str) -> None:
    """put_object(if_none_match=True) sends `If-None-Match: *`: SeaweedFS 4.48 honours it
    with 412 PreconditionFailed and keeps the first body."""
    await s3.put_object(bucket, "once", b"first", if_none_match=True)
    with pytest.raises(S3Error) as raised:
        await s3.put_object(bucket, "once", b"second", if_none_match=True)
    assert (raised.value.status, raised.value.code) == (412, "PreconditionFailed")
    assert await read_all(s3, bucket, "once") == b"first"


@pytest_twisted.ensureDeferred
async def test_if_none_match_on_complete(s3_server: S3Server, s3: S3Client, bucket: str) -> None:
    """complete_multipart_upload(if_none_match=True) on a key that exists: SeaweedFS 4.48
    refuses with 412 PreconditionFailed and keeps the upload open; Ceph RGW 16.2 ignores the
    header and replaces the object (a documented store difference: the S3 store therefore
    checks the key again just before completing)."""
    await s3.put_object(bucket, "taken", b"first")
    upload_id = await s3.create_multipart_upload(bucket, "taken")
    etag = await s3.upload_part(bucket, "taken", upload_id, 1, b"second")
    if isinstance(s3_server, CephRGW):
        await s3.complete_multipart_upload(bucket, "taken", upload_id, [(1, etag)], True)
        assert await read_all(s3, bucket, "taken") == b"second"
        return
    with pytest.raises(S3Error) as raised:
        await s3.complete_multipart_upload(bucket, "taken", upload_id, [(1, etag)], True)
    assert (raised.value.status, raised.value.code) == (412, "PreconditionFailed")
    assert await read_all(s3, bucket, "taken") == b"first"
    assert [u.upload_id for u in await s3.list_multipart_uploads(bucket)] == [upload_id]
    await s3.abort_multipart_upload(bucket, "taken", upload_id)


@pytest_twisted.ensureDeferred
async def test_large_get_streams_without_buffering(
    s3: S3Client, bucket: str, tmp_path: Path
) -> None:
    """A 64 MiB object uploads from a file and downloads into a slow consumer (pausing every
    4 MiB) with the process's RSS growing by less than 32 MiB, bytes intact, and the socket
    really paused (almost nothing arrives while the consumer is paused)."""
    size = 64 * MiB
    path = tmp_path / "big"
    write_random(path, size)
    expected = await sha256_of_file(str(path))
    await s3.put_object(bucket, "big", FileRangeProducer(str(path)))
    stream = await s3.get_object(bucket, "big")
    assert stream is not None and stream.length == size
    before = rss_kib()
    sink = Sink(pause_every=4 * MiB, pause_for=0.02)
    assert await stream.write_to(sink) == size
    growth_mib = (rss_kib() - before) / 1024
    print(f"RSS growth during a 64 MiB GET: {growth_mib:.1f} MiB")
    assert sink.digest.hexdigest() == expected
    assert sink.pauses >= 10
    # At most the chunk already in hand when a pause lands may still arrive.
    assert sink.written_while_paused <= sink.pauses * 256 * 1024
    assert growth_mib < 32


@pytest_twisted.ensureDeferred
async def test_multipart_upload_from_file_ranges(s3: S3Client, bucket: str, tmp_path: Path) -> None:
    """Three parts uploaded as byte ranges of one spooled file (each hashed for SigV4) and
    completed make an object equal to the file, with the type and metadata given at create;
    the upload is then no longer listed."""
    path = tmp_path / "spool"
    write_random(path, 11 * MiB + 123)
    ranges = [(0, 5 * MiB), (5 * MiB, 5 * MiB), (10 * MiB, MiB + 123)]
    upload_id = await s3.create_multipart_upload(
        bucket, "mp/obj", "application/x-test", {"copied-from": "origin"}
    )
    parts = []
    for number, (offset, length) in enumerate(ranges, start=1):
        producer = FileRangeProducer(str(path), offset, length)
        parts.append((number, await s3.upload_part(bucket, "mp/obj", upload_id, number, producer)))
    assert [u.upload_id for u in await s3.list_multipart_uploads(bucket)] == [upload_id]
    etag = await s3.complete_multipart_upload(bucket, "mp/obj", upload_id, parts)
    assert etag.endswith('-3"')
    info = await s3.head_object(bucket, "mp/obj")
    assert info is not None
    assert (info.size, info.etag, info.content_type) == (
        path.stat().st_size,
        etag,
        "application/x-test",
    )
    assert info.metadata == {"copied-from": "origin"}
    assert await read_all(s3, bucket, "mp/obj") == path.read_bytes()
    assert await s3.list_multipart_uploads(bucket) == []


@pytest_twisted.ensureDeferred
async def test_abort_leaves_no_upload(s3: S3Client, bucket: str) -> None:
    """An aborted upload (with a part in it) disappears from list_multipart_uploads, which
    lists uploads by prefix with their initiation time, and leaves no object."""
    started = time.time()
    keep = await s3.create_multipart_upload(bucket, "other/k")
    upload_id = await s3.create_multipart_upload(bucket, "gone/k")
    await s3.upload_part(bucket, "gone/k", upload_id, 1, b"part one")
    listed = await s3.list_multipart_uploads(bucket, prefix="gone/")
    assert [(u.key, u.upload_id) for u in listed] == [("gone/k", upload_id)]
    assert started - 5 <= listed[0].initiated <= time.time() + 5
    await s3.abort_multipart_upload(bucket, "gone/k", upload_id)
    assert await s3.list_multipart_uploads(bucket, prefix="gone/") == []
    assert await s3.head_object(bucket, "gone/k") is None
    assert [u.upload_id for u in await s3.list_multipart_uploads(bucket)] == [keep]
    await s3.abort_multipart_upload(bucket, "other/k", keep)


@pytest_twisted.ensureDeferred
async def test_list_objects_v2_pages(s3: S3Client, bucket: str) -> None:
    """Listing pages through continuation tokens without loss or repeats, groups keys under a
    delimiter into common prefixes, and honours prefix and start_after."""
    keys = [f"p/{i:02d}" for i in range(7)] + ["p/sub/a", "p/sub/b", "q/1", "top"]
    for key in keys:
        await s3.put_object(bucket, key, b"x")
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = await s3.list_objects_v2(bucket, max_keys=3, continuation_token=token)
        pages += 1
        seen += [c.key for c in page.contents]
        assert all(c.size == 1 and c.etag and c.last_modified > 0 for c in page.contents)
        if not page.is_truncated:
            break
        assert page.next_continuation_token
        token = page.next_continuation_token
    assert seen == sorted(keys) and pages == 4
    top = await s3.list_objects_v2(bucket, delimiter="/")
    assert [c.key for c in top.contents] == ["top"]
    assert top.common_prefixes == ["p/", "q/"]
    under = await s3.list_objects_v2(bucket, prefix="p/", delimiter="/")
    assert [c.key for c in under.contents] == [f"p/{i:02d}" for i in range(7)]
    assert under.common_prefixes == ["p/sub/"]
    after = await s3.list_objects_v2(bucket, prefix="p/", start_after="p/05")
    assert [c.key for c in after.contents] == ["p/06", "p/sub/a", "p/sub/b"]


@pytest_twisted.ensureDeferred
async def test_bucket_lifecycle(s3: S3Client) -> None:
    """create_bucket is idempotent for our own bucket; head_bucket sees it; delete_bucket
    removes it."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    assert await s3.head_bucket(name) is False
    await s3.create_bucket(name)
    await s3.create_bucket(name)
    assert await s3.head_bucket(name) is True
    await s3.delete_bucket(name)
    assert await s3.head_bucket(name) is False


@pytest_twisted.ensureDeferred
async def test_one_bucket_created_by_many_at_once(s3_server: S3Server) -> None:
    """Nodes that start together create their buckets at the same moment: every create of
    one name succeeds (SeaweedFS refuses the losers with NoSuchBucket while its bucket
    cache catches up), and the bucket is there for all of them."""
    clients = [client_for(s3_server) for _ in range(4)]
    names = [f"t-{uuid.uuid4().hex[:12]}" for _ in range(5)]
    try:
        for name in names:
            await gatherResults(
                [Deferred.fromCoroutine(c.create_bucket(name)) for c in clients],
                consumeErrors=True,
            )
            for client in clients:
                assert await client.head_bucket(name) is True
    finally:
        for name in names:
            await remove_bucket(clients[0], name)
        for client in clients:
            await client.close()


@pytest_twisted.ensureDeferred
async def test_store_killed_is_unavailable_quickly(
    seaweedfs_factory: Callable[[], SeaweedFS],
) -> None:
    """When the store dies, calls on a client with pooled connections to it fail with
    S3Unavailable within a second or two, never a raw Twisted failure or a hang."""
    server = seaweedfs_factory()
    client = client_for(server, timeout=5)
    try:
        await client.create_bucket("doomed")
        await client.put_object("doomed", "k", b"v")
        server.kill()
        for call in (
            lambda: client.head_object("doomed", "k"),
            lambda: client.get_object("doomed", "k"),
            lambda: client.put_object("doomed", "k2", b"v"),
            lambda: client.list_objects_v2("doomed"),
        ):
            started = time.monotonic()
            with pytest.raises(S3Unavailable) as raised:
                await call()
            assert time.monotonic() - started < 2
            assert raised.value.status == 0 and raised.value.code == "ServiceUnavailable"
    finally:
        await client.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers (a hung store)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield listener.getsockname()[1]
    listener.close()


@pytest_twisted.ensureDeferred
async def test_store_that_never_answers_times_out(silent_port: int) -> None:
    """A store that accepts but never answers gives S3Unavailable after the client's timeout,
    and a port nobody listens on gives S3Unavailable at once."""
    client = S3Client(f"http://127.0.0.1:{silent_port}", "us-east-1", "k", "s", timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(S3Unavailable, match="within 0.5 s"):
            await client.head_object("b", "k")
        assert 0.4 < time.monotonic() - started < 2
    finally:
        await client.close()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    refused = S3Client(f"http://127.0.0.1:{closed}", "us-east-1", "k", "s")
    try:
        with pytest.raises(S3Unavailable):
            await refused.head_bucket("b")
    finally:
        await refused.close()


class _BadGateway(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setResponseCode(502)
        request.setHeader(b"content-type", b"text/html")
        return b"<html><body>502 Bad Gateway</body></html>"


@pytest.fixture
def bad_gateway() -> Iterator[int]:
    """A loopback HTTP server answering every request 502 with an HTML page (a proxy in
    front of a dead store)."""
    port = reactor.listenTCP(0, Site(_BadGateway()), interface="127.0.0.1")
    yield port.getHost().port
    pytest_twisted.blockon(port.stopListening())


@pytest_twisted.ensureDeferred
async def test_5xx_without_s3_xml_is_unavailable(bad_gateway: int) -> None:
    """A 5xx whose body is not an S3 error document is S3Unavailable carrying the status."""
    client = S3Client(f"http://127.0.0.1:{bad_gateway}", "us-east-1", "k", "s")
    try:
        with pytest.raises(S3Unavailable) as raised:
            await client.list_objects_v2("b")
        assert raised.value.status == 502
        await deferLater(reactor, 0, lambda: None)
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_caller_cancel_is_not_an_outage(silent_port: int) -> None:
    """Cancelling a pending call gives the caller CancelledError (its own doing), not
    S3Unavailable, and leaves no timer behind."""
    client = S3Client(f"http://127.0.0.1:{silent_port}", "us-east-1", "k", "s", timeout=5)
    try:
        pending = Deferred.fromCoroutine(client.head_object("b", "k"))
        reactor.callLater(0.1, pending.cancel)
        with pytest.raises(CancelledError):
            await pending
    finally:
        await client.close()
