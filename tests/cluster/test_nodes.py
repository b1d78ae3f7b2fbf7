"""Several edge nodes on one S3 store and one Redis (SPEC §8), against a real SeaweedFS and a
real redis-server on 127.0.0.1: what a client sees is the same whichever node it reaches,
one origin fetch per key across nodes, shared rules and buckets, and the faults of §8."""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.threads import deferToThread
from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogPublisher

from edge.process.sweeper import SWEEP_INTERVAL
from edge.s3 import S3Error
from edge.testing.origin import FakeOrigin
from edge.testing.process import start_twistd, wait_ready
from tests.cluster.nodes import (
    NO_RULE_DOMAIN,
    ORIGIN_XML,
    Cluster,
    Node,
    reactor,
    restart_store,
)
from tests.cluster.redis_server import RedisServer
from tests.cluster.seaweedfs_server import SeaweedFS
from tests.integration.conftest import BUCKET, request, wait_until

pytestmark = pytest.mark.cluster


def _listen(fake: FakeOrigin) -> Any:
    port = reactor.listenTCP(0, fake.factory(), interface="127.0.0.1")
    fake.address = f"127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]
    return port


@pytest.fixture(autouse=True)
def _warnings_shown() -> Iterator[None]:
    """Warnings the nodes log, on stderr: pytest shows them when a test fails, which is
    what tells a store refusal from an outage."""

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_level") in (LogLevel.warn, LogLevel.error, LogLevel.critical):
            sys.stderr.write(f"{event.get('log_namespace')}: {formatEvent(event)}\n")

    observer = cast(ILogObserver, observe)
    globalLogPublisher.addObserver(observer)
    yield
    globalLogPublisher.removeObserver(observer)


@pytest.fixture
def origin() -> Iterator[FakeOrigin]:
    fake = FakeOrigin(reactor)
    port = _listen(fake)
    yield fake
    fake.drop_all()
    pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def cluster(tmp_path, seaweedfs: SeaweedFS, redis_server: RedisServer, origin) -> Iterator[Cluster]:
    made = Cluster(tmp_path, seaweedfs, redis_server, origin.address)
    yield made
    for node in made.nodes:
        pytest_twisted.blockon(ensureDeferred(node.stop()))
    if not seaweedfs.stopped:
        pytest_twisted.blockon(ensureDeferred(made.remove_buckets()))


async def _two(cluster: Cluster) -> tuple[Node, Node]:
    a = await cluster.start("a")
    b = await cluster.start("b")
    client = cluster.client()
    try:  # both nodes made (or found) the store bucket, and the gateway takes writes to it
        await wait_until(lambda: not a.store.buckets._missing and not b.store.buckets._missing, 20)
        await _within(5.0, lambda: _writable(client, cluster.store_bucket))
    finally:
        await client.close()
    return a, b


async def _writable(client: Any, bucket: str) -> bool:
    """Whether a write into a just-made bucket goes through: SeaweedFS's gateway can answer
    NoSuchBucket for a moment after the bucket was made (see the report)."""
    try:
        await client.put_object(bucket, ".probe", b"")
        await client.delete_object(bucket, ".probe")
    except S3Error:
        return False
    return True


async def _store_keys(cluster: Cluster, prefix: str = "") -> tuple[list[str], list[Any]]:
    """The keys in the store bucket and the multipart uploads open in it."""
    client = cluster.client()
    try:
        page = await client.list_objects_v2(cluster.store_bucket, prefix=prefix or None)
        uploads = await client.list_multipart_uploads(cluster.store_bucket)
    finally:
        await client.close()
    return [o.key for o in page.contents], uploads


async def _kill_mid_copy(
    cluster: Cluster, path: str, copying: Callable[[], Awaitable[None]]
) -> None:
    """Start a real twistd node, miss `path` on it (302: its copy starts), wait until
    `copying` says the copy is under way, then kill the node with SIGKILL."""
    proc = start_twistd("--config", str(cluster.write_config("killed")), cwd=cluster.tmp_path)
    try:
        port, _drain = await deferToThread(wait_ready, proc)
        assert (await request(port, path)).status == 302
        await copying()
        os.kill(proc.pid, signal.SIGKILL)
        await deferToThread(proc.wait, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def _sleep(seconds: float) -> None:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    await d


@pytest_twisted.ensureDeferred
async def test_copy_on_one_node_is_a_hit_on_the_other(cluster, origin):
    """A miss on A redirects and copies into the store; B then serves the object as a hit,
    with the store's ETag."""
    origin.serve("/pic.jpg", b"jpeg bytes", headers={"Content-Type": "image/jpeg"})
    a, b = await _two(cluster)
    miss = await a.get("pic.jpg")
    assert miss.status == 302
    await wait_until(lambda: not a.copier.in_flight())
    hit = await b.get("pic.jpg")
    assert (hit.status, hit.body) == (200, b"jpeg bytes"), (a.copier.counters, b.copier.counters)
    assert hit.header("Content-Type") == "image/jpeg"
    assert hit.header("ETag") == '"' + hashlib.md5(b"jpeg bytes").hexdigest() + '"'
    assert len(origin.requests_for("/pic.jpg")) == 1


@pytest_twisted.ensureDeferred
async def test_sixty_concurrent_misses_over_two_nodes_fetch_once(cluster, origin):
    """60 misses of one key, half on each node, at once: every one is answered (302, or 200
    once the copy is in), and the origin sees exactly one GET."""
    origin.serve("/hot.bin", os.urandom(200_000), headers_delay=0.5)
    a, b = await _two(cluster)
    replies = await DeferredList(
        [ensureDeferred((a if i % 2 else b).get("hot.bin")) for i in range(60)],
        consumeErrors=True,
    )
    assert all(ok for ok, _ in replies)
    assert {r.status for _, r in replies} <= {200, 302}
    await wait_until(lambda: not a.copier.in_flight() and not b.copier.in_flight())
    assert len(origin.requests_for("/hot.bin")) == 1
    assert (await b.get("hot.bin")).status == 200


@pytest_twisted.ensureDeferred
async def test_rules_and_buckets_made_on_one_node_apply_on_the_other(cluster, origin):
    """Origin rules set on A (signed PUT ?origin) apply on B within 2 s, and so does their
    deletion; a bucket made on A is served by B; the same bucket made on both at once has
    one winner."""
    other = FakeOrigin(reactor)
    port = _listen(other)
    try:
        other.serve("/r.txt", b"from the new origin")
        a, b = await _two(cluster)
        body = ORIGIN_XML.format(host=other.address).encode()
        put = await a.signed("PUT", "/", BUCKET, {"origin": ""}, body)
        assert put.status == 200, put.body
        start = time.monotonic()

        def redirects_to(node: Node, host: str) -> Any:
            async def check() -> bool:
                reply = await node.get("r.txt")
                return reply.status == 302 and host in (reply.header("Location") or "")

            return check

        await _within(2.0, redirects_to(b, other.address))
        assert time.monotonic() - start < 2.0
        gone = await a.signed("DELETE", "/", BUCKET, {"origin": ""})
        assert gone.status == 204
        await _within(2.0, redirects_to(b, cluster.origin))

        made = await a.signed("PUT", "/", "made-1250000000", {})
        assert made.status == 200, made.body
        await _within(2.0, lambda: _head_bucket(b, "made-1250000000"))
        both = await DeferredList(
            [ensureDeferred(n.signed("PUT", "/", "twice-1250000000", {})) for n in (a, b)]
        )
        statuses = sorted(r.status for _, r in both)
        assert statuses == [200, 409], [r.body for _, r in both]
        assert b"BucketAlreadyExists" in next(r.body for _, r in both if r.status == 409)
    finally:
        other.drop_all()
        await port.stopListening()


async def _head_bucket(node: Node, bucket: str) -> bool:
    return (await node.signed("HEAD", "/", bucket, {})).status == 200


async def _within(seconds: float, check: Any) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {seconds} s")
        await _sleep(0.05)


@pytest_twisted.ensureDeferred
async def test_state_survives_restarts_of_every_node(cluster, origin):
    """Rules and buckets made through the API come back when every node restarts, and a
    fresh node (empty data_dir) gets them from the store."""
    a, b = await _two(cluster)
    assert (await a.signed("PUT", "/", "kept-1250000000", {})).status == 200
    for node in (a, b):
        await node.stop()
    fresh = await cluster.start("fresh")
    await _within(2.0, lambda: _head_bucket(fresh, "kept-1250000000"))


@pytest_twisted.ensureDeferred
async def test_a_node_killed_mid_copy_leaves_nothing_and_another_copies_after_lock_ttl(
    cluster, origin
):
    """kill -9 of a real twistd node while its copy stalls on a slow origin: nothing in the
    store, no multipart upload open (after lock_ttl and a sweep); B copies the key once the
    dead node's lock has expired."""
    body = os.urandom(300_000)
    origin.serve("/slow.bin", body, stall_after=100_000)
    b = await cluster.start("b")

    async def copying() -> None:
        await wait_until(lambda: len(origin.requests_for("/slow.bin")) == 1)
        await _sleep(0.3)  # the copy is writing what the origin sent so far

    await _kill_mid_copy(cluster, "/slow.bin", copying)
    origin.drop_all()
    assert (await b.get("slow.bin")).status == 302  # lock still held by the dead node
    assert len(origin.requests_for("/slow.bin")) == 1
    await _sleep(cluster.lock_ttl + 0.2)
    counts = await b.store.sweep(time.time() + 3600 + cluster.lock_ttl)
    keys, uploads = await _store_keys(cluster)
    assert (keys, uploads) == ([], []), counts
    origin.serve("/slow.bin", body)
    assert (await b.get("slow.bin")).status == 302
    await wait_until(lambda: not b.copier.in_flight())
    hit = await b.get("slow.bin")
    assert (hit.status, hit.body == body) == (200, True)
    assert len(origin.requests_for("/slow.bin")) == 2


@pytest_twisted.ensureDeferred
async def test_a_node_killed_mid_multipart_copy_leaves_no_upload_after_lock_ttl_and_a_sweep(
    cluster, origin
):
    """kill -9 of a real twistd node while its copy of a body above the multipart threshold
    (16 MiB) stalls with a multipart upload open in the store: once lock_ttl has passed and
    the upload is older than the sweep interval, B's sweep aborts it (not sooner), leaving
    no object and no upload; B then copies the key whole."""
    body = os.urandom(20 * 1024 * 1024)
    origin.serve("/big.bin", body, stall_after=18 * 1024 * 1024)
    b = await cluster.start("b")
    client = cluster.client()
    try:
        await wait_until(lambda: not b.store.buckets._missing, 20)
        await _within(5.0, lambda: _writable(client, cluster.store_bucket))
    finally:
        await client.close()

    async def upload_open() -> bool:
        return bool((await _store_keys(cluster))[1])

    async def copying() -> None:
        await _within(30.0, upload_open)  # past the threshold: the parts are going up

    await _kill_mid_copy(cluster, "/big.bin", copying)
    origin.drop_all()
    keys, uploads = await _store_keys(cluster)
    assert (keys, len(uploads)) == ([], 1)
    assert (await b.get("big.bin")).status == 302  # the key's lock still held by the dead node
    await _sleep(cluster.lock_ttl + 0.5)  # the dead node's key and upload locks expire
    assert (await b.store.sweep(time.time()))["uploads"] == 0  # younger than the sweep interval
    counts = await b.store.sweep(time.time() + SWEEP_INTERVAL + cluster.lock_ttl)
    assert counts["uploads"] == 1 and await _store_keys(cluster) == ([], []), counts
    origin.serve("/big.bin", body)
    assert (await b.get("big.bin")).status == 302
    await wait_until(lambda: not b.copier.in_flight(), 60)
    hit = await b.get("big.bin")
    assert (hit.status, hit.body == body) == (200, True)
    assert len(origin.requests_for("/big.bin")) == 2


@pytest_twisted.ensureDeferred
async def test_truncated_origin_body_leaves_no_object_and_no_upload(cluster, origin):
    """An origin that promises more than it sends: the copy fails, nothing is stored and
    no multipart upload stays open, also for a body above the multipart threshold."""
    big = os.urandom(20 * 1024 * 1024)
    origin.serve("/cut.bin", big, content_length=len(big) + 10, cut_after=len(big))
    origin.serve("/cut-small.bin", b"x" * 1000, content_length=2000, cut_after=1000)
    a, _b = await _two(cluster)
    for key in ("cut.bin", "cut-small.bin"):
        assert (await a.get(key)).status == 302
    await wait_until(lambda: not a.copier.in_flight(), 20)
    # The store's abort of a discarded upload runs in the background, after the copy ended.
    for _ in range(100):
        left = await _store_keys(cluster)
        if left == ([], []):
            break
        await _sleep(0.1)
    assert left == ([], [])
    assert (await a.get("cut-small.bin")).status == 302


@pytest_twisted.ensureDeferred
async def test_an_object_put_straight_into_the_store_is_served(cluster, origin):
    """An object another tool wrote into the store bucket is a hit on every node."""
    a, b = await _two(cluster)
    client = cluster.client()
    try:
        await client.put_object(cluster.store_bucket, "direct/a.txt", b"put by hand", "text/plain")
    finally:
        await client.close()
    for node in (a, b):
        hit = await node.get("direct/a.txt")
        assert (hit.status, hit.body, hit.header("Content-Type")) == (
            200, b"put by hand", "text/plain"
        )  # fmt: skip
    assert origin.requests_for("/direct/a.txt") == []


@pytest_twisted.ensureDeferred
async def test_redis_outage_redirects_misses_503s_deletes_then_recovers(cluster, origin):
    """Redis stopped: misses still redirect (no copy starts), a DELETE (which must be
    recorded for copies racing it) is COS XML 503; Redis back: copies and deletes work
    again without restarting the nodes."""
    origin.serve("/during.txt", b"later")
    origin.serve("/kept.txt", b"kept")
    a, b = await _two(cluster)
    await a.get("kept.txt")
    await wait_until(lambda: not a.copier.in_flight())
    cluster.redis.stop()
    miss = await b.get("during.txt")
    assert miss.status == 302
    assert (await b.get("kept.txt")).status == 200
    delete = await a.signed("DELETE", "/kept.txt", BUCKET, {})
    assert delete.status == 503, delete.body
    assert b"<Code>ServiceUnavailable</Code>" in delete.body
    assert origin.requests_for("/during.txt") == []
    cluster.redis.start()
    await wait_until(lambda: a.store._coordinator.available and b.store._coordinator.available)
    await _within(10.0, lambda: _copied(b, "during.txt"))
    assert (await a.signed("DELETE", "/kept.txt", BUCKET, {})).status == 204


async def _copied(node: Node, key: str) -> bool:
    reply = await node.get(key)
    await wait_until(lambda: not node.copier.in_flight())
    return reply.status == 200


@pytest_twisted.ensureDeferred
async def test_store_outage_503s_hits_redirects_misses_then_recovers(cluster, origin):
    """The store stopped: a request in a bucket without a rule is COS XML 503, one with a
    known rule still redirects (the edge cannot tell a hit from a miss, so it sends the
    client to the origin), a listing and setting rules are 503, never a 500; the store back:
    normal service, no restart."""
    origin.serve("/h.txt", b"hit me")
    origin.serve("/m.txt", b"miss me")
    a, b = await _two(cluster)
    await a.get("h.txt")
    await wait_until(lambda: not a.copier.in_flight())
    await deferToThread(cluster.seaweed.stop)
    try:
        unruled = await b.get("h.txt", host=NO_RULE_DOMAIN)
        assert unruled.status == 503, unruled.body
        assert b"<Code>ServiceUnavailable</Code>" in unruled.body
        assert (await b.get("h.txt")).status == 302
        assert (await a.get("m.txt")).status == 302
        listing = await a.signed("GET", "/", BUCKET, {})
        assert listing.status == 503 and b"<Code>ServiceUnavailable</Code>" in listing.body
        body = ORIGIN_XML.format(host=cluster.origin).encode()
        rules = await a.signed("PUT", "/", BUCKET, {"origin": ""}, body)
        assert rules.status == 503 and b"ServiceUnavailable" in rules.body
        await wait_until(lambda: not a.copier.in_flight())
    finally:
        await deferToThread(restart_store, cluster.seaweed)
    await _within(10.0, lambda: _status_is(b, "h.txt", 200))
    await _within(10.0, lambda: _copied(a, "m.txt"))


async def _status_is(node: Node, key: str, status: int) -> bool:
    return (await node.get(key)).status == status
