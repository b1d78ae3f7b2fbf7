"""The S3 store (edge/store/s3) against a real SeaweedFS on 127.0.0.1 (and with `-m ceph`
against a real Ceph RGW, `s3_server`), and a real Redis where deletes race copies across
nodes.

Hits are streamed into real Twisted requests over loopback; writes, multipart uploads, listings
and buckets are checked against what the store really holds afterwards, through a plain client.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from edge.cluster.redis import RedisCoordinator, parse_redis_url
from edge.s3 import S3Client
from edge.store.folder.writes import UploadSpool
from edge.store.interface import (
    BucketNotEmpty,
    MultipartError,
    ObjectMeta,
    ObjectStore,
    StoreUnavailable,
)
from edge.store.s3 import S3Object, S3Store
from edge.store.s3.tracking import InternalUpload, InternalUploads
from tests.cluster.nodes import restart_store
from tests.cluster.redis_server import RedisServer
from tests.cluster.s3_server import S3Server, remove_bucket
from tests.cluster.seaweedfs_server import SeaweedFS

reactor: Any = _reactor
pytestmark = pytest.mark.cluster

MiB = 1024 * 1024


def client_for(server: S3Server, **kwargs: Any) -> S3Client:
    return S3Client(server.endpoint, server.region, server.access_key, server.secret_key, **kwargs)


def blockon(d: Any) -> Any:
    return pytest_twisted.blockon(d)


@pytest.fixture
def s3(s3_server: S3Server) -> Iterator[S3Client]:
    client = client_for(s3_server)
    yield client
    blockon(Deferred.fromCoroutine(client.close()))


@pytest.fixture
def make_store(s3: S3Client, tmp_path: Path) -> Iterator[Callable[..., S3Store]]:
    """S3 stores on the session's SeaweedFS, each with one fresh bucket (`b`), emptied and
    deleted after the test (`remove_bucket`); the caller awaits `prepare()` (blockon
    cannot run inside an async test)."""
    made: list[S3Store] = []

    def make(bucket: str | None = None, **kwargs: Any) -> S3Store:
        bucket = bucket or f"t-{uuid.uuid4().hex[:12]}"
        kwargs.setdefault("multipart_threshold", 5 * MiB)
        kwargs.setdefault("part_size", 5 * MiB)
        store = S3Store(
            kwargs.pop("client", s3), [bucket], tmp_path / f"scratch{len(made)}", **kwargs
        )
        store.b = bucket  # type: ignore[attr-defined]
        made.append(store)
        return store

    yield make
    for store in made:
        store.stop()
    for bucket in {store.b for store in made}:  # type: ignore[attr-defined]
        blockon(Deferred.fromCoroutine(remove_bucket(s3, bucket)))


@pytest.fixture
def store(make_store: Callable[..., S3Store]) -> S3Store:
    store = make_store()
    blockon(store.prepare())
    return store


@pytest.fixture
def coordinators(redis_server: RedisServer) -> Iterator[Callable[[], RedisCoordinator]]:
    started: list[RedisCoordinator] = []

    def make() -> RedisCoordinator:
        coordinator = RedisCoordinator(parse_redis_url(redis_server.url))
        coordinator.startService()
        started.append(coordinator)
        return coordinator

    yield make
    for coordinator in started:
        blockon(coordinator.stopService())


async def connected(coordinator: RedisCoordinator) -> RedisCoordinator:
    deadline = time.monotonic() + 5
    while not coordinator.available:
        assert time.monotonic() < deadline, "coordinator never connected"
        await deferLater(reactor, 0.02, lambda: None)
    return coordinator


def bucket_of(store: S3Store) -> str:
    return str(store.b)  # type: ignore[attr-defined]


async def put(store: S3Store, key: str, data: bytes, **kwargs: Any) -> bool:
    pending = store.new_upload(bucket_of(store), key)
    pending.write(data)
    return bool(await pending.publish(**kwargs))


async def read(s3: S3Client, store: S3Store, key: str) -> bytes:
    stream = await s3.get_object(bucket_of(store), key)
    assert stream is not None
    chunks: list[bytes] = []

    class Sink:
        def registerProducer(self, producer: Any, streaming: bool) -> None:
            pass

        def unregisterProducer(self) -> None:
            pass

        def write(self, data: bytes) -> None:
            chunks.append(data)

    await stream.write_to(Sink())  # type: ignore[arg-type]
    return b"".join(chunks)


class Serve(Resource):
    """GET /<key>?first=&length= : open the key with the client's Range and send the bytes
    asked for, as the web layer would once it has worked out the range."""

    isLeaf = True

    def __init__(self, store: S3Store) -> None:
        super().__init__()
        self.store = store
        self.opened: list[S3Object] = []

    def render_GET(self, request: Request) -> Any:
        Deferred.fromCoroutine(self._serve(request))
        return NOT_DONE_YET

    async def _serve(self, request: Request) -> None:
        key = request.path.decode()[1:]
        header = request.getHeader("range")
        obj = await self.store.fetch_object(bucket_of(self.store), key, range_header=header)
        assert isinstance(obj, S3Object)
        self.opened.append(obj)
        args: dict[bytes, list[bytes]] = request.args or {}
        first = int(args.get(b"first", [b"0"])[0])
        length = int(args.get(b"length", [str(obj.size).encode()])[0])
        await obj.send(request, first, length)  # finishes the request (the seam's contract)


@pytest.fixture
def site(store: S3Store) -> Iterator[tuple[str, Serve]]:
    resource = Serve(store)
    port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
    yield f"http://127.0.0.1:{port.getHost().port}", resource
    blockon(port.stopListening())


async def fetch(url: str, range_header: str | None = None) -> bytes:
    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
    headers = Headers({"Range": [range_header]} if range_header else {})
    response = await agent.request(b"GET", url.encode(), headers)
    return bytes(await readBody(response))


def test_s3_store_is_an_object_store(store: S3Store) -> None:
    """mypy accepts an S3Store where the seam's ObjectStore is expected (checked statically;
    at run time the assignment just holds)."""
    seam: ObjectStore = store
    assert seam.has_bucket(bucket_of(store))


@pytest_twisted.ensureDeferred
async def test_hit_streams_whole_and_ranged(store: S3Store, site: tuple[str, Serve]) -> None:
    """A hit streams into a real request: whole (one GET, its body reused), ranged (the
    client's Range sent with the GET and reused), and a range other than the one opened
    (fetched again with a Range), bytes intact each time."""
    data = os.urandom(3 * MiB + 17)
    assert await put(store, "blob.bin", data)
    url, resource = site
    assert await fetch(f"{url}/blob.bin") == data
    assert resource.opened[-1].fetched == (0, len(data))
    got = await fetch(f"{url}/blob.bin?first=1000&length=500", "bytes=1000-1499")
    assert got == data[1000:1500] and resource.opened[-1].fetched == (1000, 500)
    got = await fetch(f"{url}/blob.bin?first=5&length=10", "bytes=0-99")
    assert got == data[5:15]


@pytest_twisted.ensureDeferred
async def test_client_gone_mid_hit_is_quiet(store: S3Store, site: tuple[str, Serve]) -> None:
    """A client that resets its connection in the middle of a streamed hit stops the
    store's body and logs nothing (it once logged a critical traceback from unregistering
    the producer of a request whose channel was gone); the next hit is whole."""
    data = os.urandom(8 * MiB)
    assert await put(store, "big.bin", data)
    url, _ = site
    port = int(url.rsplit(":", 1)[1])

    def reset_mid_body() -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(4096)  # headers and the first bytes: the body is streaming
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST

    await deferToThread(reset_mid_body)
    await deferLater(reactor, 0.5, lambda: None)
    assert await fetch(f"{url}/big.bin") == data


@pytest_twisted.ensureDeferred
async def test_open_hints_and_missing(store: S3Store) -> None:
    """body=False opens with HEAD only (no body fetched) yet gives size, ETag, type and
    metadata; a missing key is None; an unsatisfiable Range falls back to HEAD so the web
    layer can answer 416 from the size."""
    b = bucket_of(store)
    meta = ObjectMeta("text/x-custom", {"x-cos-meta-colour": "blue"})
    assert await put(store, "page.txt", b"hello", meta=meta)
    assert await put(store, "index.html", b"<p>")
    obj = await store.fetch_object(b, "page.txt", body=False)
    assert isinstance(obj, S3Object) and obj.fetched is None
    assert (obj.size, obj.content_type) == (5, "text/x-custom")
    assert obj.meta.user == {"x-cos-meta-colour": "blue"}
    assert await obj.etag() == hashlib.md5(b"hello").hexdigest()
    obj.close()
    guessed = await store.fetch_object(b, "index.html", body=False)
    assert guessed is not None and guessed.content_type == "text/html"
    guessed.close()
    assert await store.open_object(b, "nope") is None
    assert await store.fetch_object(b, "nope", body=False) is None
    past = await store.fetch_object(b, "page.txt", range_header="bytes=100-200")
    assert isinstance(past, S3Object) and past.fetched is None and past.size == 5
    past.close()
    assert await store.exists(b, "page.txt") and not await store.exists(b, "nope")


@pytest_twisted.ensureDeferred
async def test_publish_is_create_only_unless_replacing(store: S3Store, s3: S3Client) -> None:
    """A second create-only publish of a key fires False and leaves the first object as it
    was; replace=True overwrites; no scratch file is left either way."""
    assert await put(store, "k", b"first")
    assert not await put(store, "k", b"second")
    assert await read(s3, store, "k") == b"first"
    assert await put(store, "k", b"third", replace=True)
    assert await read(s3, store, "k") == b"third"
    assert list(store.tmp_dir.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_big_publish_goes_multipart(store: S3Store, s3: S3Client) -> None:
    """Above the threshold (5 MiB here) a publish is a multipart upload: the object equals
    the bytes, its ETag is S3's multipart one, and no upload is left open."""
    data = os.urandom(12 * MiB + 3)
    pending = store.new_upload(bucket_of(store), "big")
    for i in range(0, len(data), MiB):
        pending.write(data[i : i + MiB])
    assert await pending.publish()
    assert pending.etag.endswith("-3")
    assert await read(s3, store, "big") == data
    assert await s3.list_multipart_uploads(bucket_of(store)) == []
    assert list(store.tmp_dir.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_key_taken_during_multipart_aborts(store: S3Store, s3: S3Client) -> None:
    """A key that appears while a create-only multipart publish runs (after its HEAD) is
    kept: the completion is not made (the HEAD before it sees the key; If-None-Match on the
    completion backs that up on stores that honour it), the publish fires False and its
    upload is aborted."""
    b = bucket_of(store)
    pending = store.new_upload(b, "race")
    pending.write(os.urandom(40 * MiB))
    publishing = pending.publish()
    deadline = time.monotonic() + 10
    while not await s3.list_multipart_uploads(b):
        assert time.monotonic() < deadline, "the publish never started its upload"
        await deferLater(reactor, 0.005, lambda: None)
    await s3.put_object(b, "race", b"winner")
    assert await publishing is False
    assert await read(s3, store, "race") == b"winner"
    assert await s3.list_multipart_uploads(b) == []


@pytest_twisted.ensureDeferred
async def test_failed_publish_leaves_nothing(
    make_store: Callable[..., S3Store], s3: S3Client
) -> None:
    """A multipart publish whose upload fails half-way (aborted under it, as a sweep on
    another node might) fails with a neutral error, shows no object and leaves no upload
    and no scratch file; a publish the store refuses outright (a bucket name it rejects)
    fails StoreUnavailable. (SeaweedFS re-creates a deleted bucket on PUT, so "a bucket
    that does not exist" cannot be staged on it.)"""
    store = make_store()
    await store.prepare()
    b = bucket_of(store)
    pending = store.new_upload(b, "half")
    pending.write(os.urandom(30 * MiB))
    publishing = pending.publish()
    deadline = time.monotonic() + 10
    while not (found := await s3.list_multipart_uploads(b)):
        assert time.monotonic() < deadline, "the publish never started its upload"
        await deferLater(reactor, 0.005, lambda: None)
    await s3.abort_multipart_upload(b, "half", found[0].upload_id)
    with pytest.raises(MultipartError):
        await publishing
    assert await s3.head_object(b, "half") is None
    assert await s3.list_multipart_uploads(b) == []
    assert list(store.tmp_dir.iterdir()) == []
    refused = make_store(bucket="Bad_Bucket")
    refused.tmp_dir.mkdir()  # not prepared: that would only retry making the bucket
    for size in (10, 6 * MiB):
        pending = refused.new_upload("Bad_Bucket", f"k{size}")
        pending.write(b"x" * size)
        with pytest.raises(StoreUnavailable):
            await pending.publish()
    assert list(refused.tmp_dir.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_listing_pages(store: S3Store) -> None:
    """list_page maps prefix, delimiter, marker and max_keys onto ListObjectsV2: common
    prefixes roll up, a page ends at a rolled-up prefix the next one skips, ETags are
    unquoted MD5s."""
    b = bucket_of(store)
    for key in ("a/1", "a/2", "a/b/3", "b/1", "c"):
        assert await put(store, key, key.encode())
    page = await store.list_page(b, "", "", "/", 2)
    assert (list(page.common_prefixes), page.truncated, page.next_marker) == (
        ["a/", "b/"],
        True,
        "b/",
    )
    page = await store.list_page(b, "", "b/", "/", 2)
    assert [o.key for o in page.contents] == ["c"] and not page.truncated
    assert page.contents[0].etag == hashlib.md5(b"c").hexdigest()
    page = await store.list_page(b, "a/", "", "/", 100)
    assert [o.key for o in page.contents] == ["a/1", "a/2"]
    assert list(page.common_prefixes) == ["a/b/"]
    page = await store.list_page(b, "a/", "a/1", "", 100)
    assert [o.key for o in page.contents] == ["a/2", "a/b/3"]


@pytest_twisted.ensureDeferred
async def test_buckets(store: S3Store, s3: S3Client) -> None:
    """add_bucket makes the store bucket (twice is fine); remove_bucket refuses a bucket with
    an object (BucketNotEmpty, object kept: SeaweedFS itself would delete it), and removes
    an empty one."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    await store.add_bucket(name)
    await store.add_bucket(name)
    assert store.has_bucket(name) and await s3.head_bucket(name)
    assert await store.bucket_is_empty(name)
    await s3.put_object(name, "keep", b"1")
    assert not await store.bucket_is_empty(name)
    with pytest.raises(BucketNotEmpty):
        await store.remove_bucket(name)
    assert await s3.head_object(name, "keep") is not None
    assert await store.delete_object(name, "keep")
    assert not await store.delete_object(name, "keep")
    await store.remove_bucket(name)
    assert not store.has_bucket(name) and not await s3.head_bucket(name)


@pytest_twisted.ensureDeferred
async def test_api_multipart_round_trip(store: S3Store, s3: S3Client) -> None:
    """The API's multipart uploads are S3's: parts from spooled bodies, listed, checked on
    completion (a wrong ETag is InvalidPart, upload kept), completed by publish, aborted by
    discard and by expire; a wrong bucket or key is NoSuchUpload."""
    b = bucket_of(store)
    uploads = store.uploads
    info = await uploads.create(b, "mp.bin", ObjectMeta("video/mp4", {"x-cos-meta-a": "1"}))
    chunks = [os.urandom(5 * MiB), os.urandom(1000)]
    etags = []
    for number, chunk in enumerate(chunks, 1):
        spool = UploadSpool(store.tmp_dir, len(chunk))
        spool.write(chunk)
        etags.append(await uploads.put_part(info, number, spool))
    assert etags == [hashlib.md5(c).hexdigest() for c in chunks]
    assert [(p.number, p.etag, p.size) for p in await uploads.parts(info)] == [
        (1, etags[0], 5 * MiB),
        (2, etags[1], 1000),
    ]
    assert [u.upload_id for u in await uploads.uploads(b)] == [info.upload_id]
    assert (await uploads.get(info.upload_id, b, "mp.bin")).key == "mp.bin"
    with pytest.raises(MultipartError) as refused:
        await uploads.get(info.upload_id, b, "other")
    assert refused.value.code == "NoSuchUpload"
    with pytest.raises(MultipartError) as refused:
        await uploads.complete(info, [(1, etags[0]), (2, "0" * 32)])
    assert refused.value.code == "InvalidPart"
    pending = await uploads.complete(info, [(1, etags[0]), (2, etags[1])])
    assert pending.size == 5 * MiB + 1000
    assert await pending.publish(replace=True)
    obj = await store.fetch_object(b, "mp.bin", body=False)
    assert obj is not None and obj.content_type == "video/mp4"
    assert obj.meta.user == {"x-cos-meta-a": "1"} and await obj.etag() == pending.etag
    obj.close()
    assert await read(s3, store, "mp.bin") == b"".join(chunks)
    assert await uploads.uploads(b) == []
    dropped = await uploads.create(b, "drop", ObjectMeta())
    await uploads.discard(dropped)
    old = await uploads.create(b, "old", ObjectMeta())
    assert [u.upload_id for u in await uploads.expire(-1, time.time() + 5)] == [old.upload_id]
    assert await s3.list_multipart_uploads(b) == []
    assert list(store.tmp_dir.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_store_down_is_unavailable_quickly(
    seaweedfs_factory: Callable[[], SeaweedFS], tmp_path: Path
) -> None:
    """A store that dies makes every call fail StoreUnavailable within two seconds; a store
    unreachable at start-up does not fail prepare(), which retries on a timer until stopped."""
    server = seaweedfs_factory()
    client = client_for(server, timeout=5)
    store = S3Store(client, ["doomed"], tmp_path / "scratch")
    try:
        await store.prepare()
        assert await put_in(store, "doomed", "k", b"v")
        server.kill()
        for call in (
            lambda: store.open_object("doomed", "k"),
            lambda: store.fetch_object("doomed", "k", body=False),
            lambda: store.list_page("doomed", "", "", "", 10),
            lambda: store.delete_object("doomed", "k"),
            lambda: put_in(store, "doomed", "k2", b"v"),
        ):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await call()
            assert time.monotonic() - started < 2
        await store.prepare()  # logged and retried, not raised
        assert store.buckets._retry is not None and store.buckets._retry.active()
    finally:
        store.stop()
        await client.close()


async def put_in(store: S3Store, bucket: str, key: str, data: bytes) -> bool:
    pending = store.new_upload(bucket, key)
    pending.write(data)
    return bool(await pending.publish())


@pytest_twisted.ensureDeferred
async def test_delete_races_watched_copy(
    make_store: Callable[..., S3Store],
    s3: S3Client,
    coordinators: Callable[[], RedisCoordinator],
) -> None:
    """A DELETE of a key while a watched copy of it runs wins: on another node (through the
    Redis counter) and on the same node without Redis; the copy's publish fires False,
    marks deleted_meanwhile and leaves no object. An unwatched write is not affected."""
    node_a = make_store(coordinator=await connected(coordinators()))
    b = bucket_of(node_a)
    node_b = make_store(bucket=b, coordinator=await connected(coordinators()))
    alone = make_store(bucket=b)
    for node in (node_a, node_b, alone):
        await node.prepare()
    for copier, deleter in ((node_a, node_b), (alone, alone)):
        key = f"copy-{uuid.uuid4().hex[:6]}"
        watch = copier.watch_deletes(b, key)
        pending = copier.new_upload(b, key, watch=watch)
        pending.write(b"from origin")
        await deferLater(reactor, 0.05, lambda: None)  # the baseline read is in
        assert not await deleter.delete_object(b, key)
        assert await pending.publish() is False and pending.deleted_meanwhile
        copier.forget_deletes(b, key)
        assert not await copier.exists(b, key)
    assert await put(node_a, "unwatched", b"x")


@pytest_twisted.ensureDeferred
async def test_sweep_aborts_orphaned_uploads_and_old_scratch(
    make_store: Callable[..., S3Store],
    s3: S3Client,
    coordinators: Callable[[], RedisCoordinator],
) -> None:
    """The sweep aborts an internal upload whose publish died (recorded, liveness lock
    gone, older than lock_ttl + sweep interval) but leaves an API upload and a live one,
    and removes scratch files over an hour old only."""
    coordinator = await connected(coordinators())
    store = make_store(coordinator=coordinator, lock_ttl=1, sweep_interval=1)
    await store.prepare()
    b = bucket_of(store)
    dead_id = await s3.create_multipart_upload(b, "dead")
    api = await store.uploads.create(b, "api", ObjectMeta())
    live_id = await s3.create_multipart_upload(b, "live")
    now = time.time()
    await coordinator.execute(
        "SADD", "cosedge:internal-uploads", InternalUpload(b, "dead", dead_id, now - 60).member()
    )
    live = InternalUpload(b, "live", live_id, now - 60)
    await InternalUploads(coordinator, 30).begin(live)
    old = store.tmp_dir / "old.part"
    new = store.tmp_dir / "new.part"
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    os.utime(old, (now - 7200, now - 7200))
    counts = await store.sweep(now)
    assert counts == {"temp_files": 1, "uploads": 1}
    assert sorted(u.key for u in await s3.list_multipart_uploads(b)) == ["api", "live"]
    assert [u.key for u in await store.uploads.uploads(b)] == ["api"]
    assert not old.exists() and new.exists()
    await s3.abort_multipart_upload(b, "live", live_id)
    await store.uploads.discard(api)


async def until(what: str, check: Callable[[], Any], seconds: float = 10) -> Any:
    """Poll the async `check` until it answers something true; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not (found := await check()):
        assert time.monotonic() < deadline, what
        await deferLater(reactor, 0.02, lambda: None)
    return found


@pytest_twisted.ensureDeferred
async def test_parts_go_up_while_the_write_goes_on(store: S3Store, s3: S3Client) -> None:
    """Past the threshold (5 MiB parts here) each complete part is uploaded before publish,
    while the write is still open: the open upload lists parts 1 and 2 once 11 MiB are
    written; publish sends the last part and the object equals the bytes, in 3 parts."""
    b = bucket_of(store)
    data = os.urandom(14 * MiB + 5)
    pending = store.new_upload(b, "streamed")
    for i in range(0, 11 * MiB, MiB):
        pending.write(data[i : i + MiB])
    uploads = await until("no upload opened", lambda: s3.list_multipart_uploads(b))
    upload_id = uploads[0].upload_id

    async def two_parts() -> bool:
        return [p.number for p in await s3.list_parts(b, "streamed", upload_id)] == [1, 2]

    await until("parts 1 and 2 never went up", two_parts)
    assert await s3.head_object(b, "streamed") is None
    pending.write(data[11 * MiB :])
    assert await pending.publish()
    assert pending.etag.endswith("-3")
    assert await read(s3, store, "streamed") == data
    assert await s3.list_multipart_uploads(b) == []
    assert list(store.tmp_dir.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_writes_from_a_worker_thread_go_multipart_and_read_back(
    store: S3Store, s3: S3Client
) -> None:
    """An origin copy's way of writing (`append_blocking` and `hash_blocking` on two worker
    threads at once, `written` on the reactor after): the parts still go up as the write
    grows, a reader opened first sees every byte appended (a Mirror client's buffer), the
    MD5 is the body's, and the object equals the bytes, in 3 parts."""
    b = bucket_of(store)
    data = os.urandom(14 * MiB + 5)
    pending = store.new_upload(b, "threaded")
    reader = pending.open_reader()
    try:
        for i in range(0, len(data), MiB):
            chunk = data[i : i + MiB]
            appended = deferToThread(pending.append_blocking, chunk)
            await deferToThread(pending.hash_blocking, chunk)
            await appended
            pending.written()
            assert os.pread(reader, MiB, i) == data[i : i + MiB]
        assert pending.md5_digest == hashlib.md5(data).digest()
        assert await until("no upload opened", lambda: s3.list_multipart_uploads(b))
        assert await pending.publish()
        assert os.pread(reader, 16, 0) == data[:16]  # readable once published, too
    finally:
        os.close(reader)
    assert pending.etag.endswith("-3")
    assert await read(s3, store, "threaded") == data
    assert await s3.list_multipart_uploads(b) == []
    assert list(store.tmp_dir.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_discard_mid_write_aborts_the_upload(store: S3Store, s3: S3Client) -> None:
    """A write discarded while its parts go up (a copy given up) aborts its upload: no
    upload stays open, nothing is visible, the scratch file is gone."""
    b = bucket_of(store)
    pending = store.new_upload(b, "dropped")
    for _ in range(12):
        pending.write(os.urandom(MiB))
    await until("no upload opened", lambda: s3.list_multipart_uploads(b))
    pending.discard()

    async def none_open() -> bool:
        return await s3.list_multipart_uploads(b) == []

    await until("the upload was never aborted", none_open)
    assert await s3.head_object(b, "dropped") is None
    assert list(store.tmp_dir.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_store_stopped_mid_write(
    seaweedfs_factory: Callable[[], SeaweedFS],
    tmp_path: Path,
    coordinators: Callable[[], RedisCoordinator],
) -> None:
    """A store that stops while a big write's parts go up fails the publish
    (StoreUnavailable), shows nothing once back, and the upload its abort could not reach
    is left to the sweep, which aborts it: no upload stays open after the restart."""
    server = seaweedfs_factory()
    client = client_for(server, timeout=2)
    coordinator = await connected(coordinators())
    store = S3Store(
        client,
        ["stopped"],
        tmp_path / "scratch",
        multipart_threshold=5 * MiB,
        part_size=5 * MiB,
        coordinator=coordinator,
    )
    try:
        await store.prepare()
        pending = store.new_upload("stopped", "k")
        for _ in range(6):
            pending.write(os.urandom(MiB))
        uploads = await until("no upload", lambda: client.list_multipart_uploads("stopped"))

        async def part_one() -> bool:
            parts = await client.list_parts("stopped", "k", uploads[0].upload_id)
            return [p.number for p in parts] == [1]

        # Part 1 listed: the edge has the upload's id (its POST was answered), so it is
        # recorded; an upload whose id never came back cannot be, by anyone.
        await until("part 1 never went up", part_one)
        server.stop()
        for _ in range(6):
            pending.write(os.urandom(MiB))
        with pytest.raises(StoreUnavailable):
            await pending.publish()
        assert list(store.tmp_dir.iterdir()) == []
        await deferToThread(restart_store, server)
        assert await client.head_object("stopped", "k") is None
        assert len(await client.list_multipart_uploads("stopped")) == 1
        counts = await store.sweep(time.time() + 7200)
        assert counts["uploads"] == 1
        assert await client.list_multipart_uploads("stopped") == []
    finally:
        store.stop()
        await client.close()
