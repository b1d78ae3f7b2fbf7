"""SPEC §11 Mirror rules, end to end: the client gets the origin's bytes in the same response
while the edge stores them, one origin fetch however many clients wait."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from edge.api.rules import MIRROR, OriginRule, OriginRules
from edge.config import OriginAddress
from tests.integration.conftest import BUCKET, DOMAIN, RunningEdge, reactor, wait_until


async def mirror_edge(
    edges: Any, origin: Any, main: str | None = None, **kwargs: Any
) -> RunningEdge:
    """An edge whose bucket has one Mirror rule for `origin` (or for `main`, with `origin`
    its standby), saved as the API saves it."""
    config = edges.config(origin.address, **kwargs)
    rule = OriginRule(1, MIRROR, OriginAddress.parse(origin.address))
    if main is not None:
        standby = (OriginAddress.parse(origin.address),)
        rule = replace(rule, origin=OriginAddress.parse(main), standbys=standby)
    folder = Path(config.data_dir) / ".cosedge" / "origin"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{BUCKET}.json").write_bytes(OriginRules.record(BUCKET, (rule,)))
    return await edges.start(config)


def raw_get(port: int, key: str, read_delay: float = 0.0, headers: str = "") -> tuple[bytes, bytes]:
    """A GET over a plain socket (run in a thread): the head and the whole body as received
    until the edge closes the connection; `read_delay` between 64 KiB reads makes a slow
    client whose socket buffers fill."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(
        f"GET /{key} HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n{headers}\r\n".encode()
    )
    data = bytearray()
    while True:
        chunk = sock.recv(64 * 1024)
        if not chunk:
            break
        data += chunk
        if read_delay:
            time.sleep(read_delay)
    sock.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return head, body


def _stored(edge: RunningEdge, key: str) -> Path:
    return edge.data_dir / BUCKET / key


@pytest_twisted.ensureDeferred
async def test_mirror_miss_serves_origin_bytes_and_stores_them(edges, origin):
    """A small object: the miss answers 200 with the origin's bytes, Content-Length and
    Content-Type, and no redirect; the object is stored, so the next GET is a hit (with the
    MD5 ETag) and the origin was asked once."""
    body = os.urandom(10_000)
    origin.serve("/pics/a.png", body, headers={"Content-Type": "image/x-test"})
    edge = await mirror_edge(edges, origin)
    miss = await edge.get("pics/a.png")
    assert miss.status == 200
    assert miss.body == body
    assert miss.header("content-length") == str(len(body))
    assert miss.header("content-type") == "image/x-test"
    assert miss.header("location") is None
    assert miss.header("x-cosedge-copy") == "started"
    await wait_until(lambda: _stored(edge, "pics/a.png").exists())
    hit = await edge.get("pics/a.png")
    assert hit.status == 200 and hit.body == body
    assert hit.header("etag") == f'"{hashlib.md5(body).hexdigest()}"'
    assert len(origin.requests_for("/pics/a.png")) == 1
    assert edge.store.tmp_dir.exists() and not list(edge.store.tmp_dir.iterdir())


@pytest_twisted.ensureDeferred
async def test_mirror_64_mib_object_is_identical(edges, origin, tmp_path):
    """A 64 MiB object comes through the Mirror byte for byte, and is stored whole."""
    body = os.urandom(64 * 1024 * 1024)
    origin.serve("/big.bin", body)
    edge = await mirror_edge(edges, origin)
    head, got = await deferToThread(raw_get, edge.port, "big.bin")
    assert head.startswith(b"HTTP/1.1 200")
    assert hashlib.md5(got).hexdigest() == hashlib.md5(body).hexdigest()
    await wait_until(lambda: _stored(edge, "big.bin").exists(), timeout=30)
    assert _stored(edge, "big.bin").stat().st_size == len(body)


@pytest_twisted.ensureDeferred
async def test_twenty_concurrent_mirror_misses_make_one_origin_request(edges, origin):
    """20 clients at once (some arriving while the body streams, chunked without a length)
    get 20 complete identical bodies from one origin GET; one answer says its copy
    `started`, the others `joined`."""
    body = os.urandom(3 * 1024 * 1024)
    origin.serve("/hot.bin", body, body_delay=0.3, content_length=None, chunked=True)
    edge = await mirror_edge(edges, origin)
    replies = await defer.gatherResults(
        [defer.ensureDeferred(edge.get("hot.bin")) for _ in range(20)]
    )
    assert len(origin.requests_for("/hot.bin")) == 1
    for reply in replies:
        assert reply.status == 200 and reply.length is None  # chunked: no length was known
        assert reply.body == body
    states = sorted(str(r.header("x-cosedge-copy")) for r in replies)
    assert states == ["joined"] * 19 + ["started"]
    await wait_until(lambda: _stored(edge, "hot.bin").exists())


@pytest_twisted.ensureDeferred
async def test_slow_client_does_not_slow_a_fast_one(edges, origin):
    """Two clients of one 8 MiB Mirror fetch: one reads 64 KiB every 50 ms (over 6 s for
    the body), the other at full speed; the fast one is done long before the slow one, and
    both get every byte."""
    body = os.urandom(8 * 1024 * 1024)
    origin.serve("/shared.bin", body, body_delay=0.2)
    edge = await mirror_edge(edges, origin)
    started = time.monotonic()
    timings: dict[str, float] = {}

    def timed(name: str, delay: float) -> tuple[bytes, bytes]:
        result = raw_get(edge.port, "shared.bin", read_delay=delay)
        timings[name] = time.monotonic() - started
        return result

    slow = deferToThread(timed, "slow", 0.05)
    fast = deferToThread(timed, "fast", 0.0)
    (_, fast_body), (_, slow_body) = await defer.gatherResults([fast, slow])
    assert fast_body == body and slow_body == body
    assert timings["fast"] * 3 < timings["slow"], timings
    assert len(origin.requests_for("/shared.bin")) == 1


@pytest_twisted.ensureDeferred
async def test_origin_cut_mid_body_gives_short_body_and_stores_nothing(edges, origin):
    """The origin closes after 100 000 of 300 000 bytes: the client gets a 200 whose body
    stops short (the connection is closed), and nothing is stored or left behind."""
    body = os.urandom(300_000)
    origin.serve("/cut.bin", body, cut_after=100_000)
    edge = await mirror_edge(edges, origin)
    head, got = await deferToThread(raw_get, edge.port, "cut.bin")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length: 300000" in head.lower()
    assert len(got) < len(body) and body.startswith(got)
    await edge.copies_done()
    assert not _stored(edge, "cut.bin").exists()
    assert not list(edge.store.tmp_dir.iterdir())


@pytest_twisted.ensureDeferred
async def test_origin_404_and_500_map_to_no_such_key_and_424(edges, origin):
    """Origin 404 -> 404 NoSuchKey; origin 500 (and a reset before any byte) -> 424
    FailedDependency COS XML naming the origin's answer; nothing stored; asked again at once,
    the edge answers the same without a second origin request (origin protection)."""
    origin.serve("/broken.txt", b"oops", status=500)
    origin.serve("/reset.txt", b"x" * 1000, reset_after=0)
    edge = await mirror_edge(edges, origin)
    missing = await edge.get("missing.txt")
    assert missing.status == 404 and b"<Code>NoSuchKey</Code>" in missing.body
    broken = await edge.get("broken.txt")
    assert broken.status == 424
    assert b"<Code>FailedDependency</Code>" in broken.body
    assert b"500" in broken.body
    reset = await edge.get("reset.txt")
    assert reset.status == 424 and b"<Code>FailedDependency</Code>" in reset.body
    for key in ("missing.txt", "broken.txt", "reset.txt"):
        assert not _stored(edge, key).exists()
    # Origin protection holds: within not_found_ttl and retry_after the origin is not asked.
    again = await edge.get("missing.txt")
    assert again.status == 404 and b"<Code>NoSuchKey</Code>" in again.body
    again = await edge.get("broken.txt")
    assert again.status == 424 and b"failed recently" in again.body
    assert len(origin.requests_for("/missing.txt")) == len(origin.requests_for("/broken.txt")) == 1


@pytest_twisted.ensureDeferred
async def test_head_and_range_misses(edges, origin):
    """HEAD on a Mirror miss pulls nothing (404, as COS); a ranged GET gets 206 with just its
    bytes from the whole-object fetch, which is stored whole."""
    body = bytes(range(256)) * 4000
    origin.serve("/r.bin", body)
    edge = await mirror_edge(edges, origin)
    head = await edge.get("r.bin", method="HEAD")
    assert head.status == 404
    assert origin.requests == []
    ranged = await edge.get("r.bin", headers={"Range": "bytes=1000-1999"})
    assert ranged.status == 206
    assert ranged.body == body[1000:2000]
    assert ranged.header("content-range") == f"bytes 1000-1999/{len(body)}"
    await wait_until(lambda: _stored(edge, "r.bin").exists())
    assert _stored(edge, "r.bin").read_bytes() == body
    assert "range" not in origin.requests[0].headers


@pytest_twisted.ensureDeferred
async def test_xml_api_accepts_and_returns_mirror(edges, origin):
    """`put_bucket_origin` (COS's Python SDK) with OriginType Mirror is accepted, GET ?origin
    returns it (without the HttpRedirectCode a Mirror never uses), and a miss is then
    answered with the origin's bytes, not a redirect."""
    from tests.integration.test_management_api import CREDENTIALS, call, client, origin_xml

    origin.serve("/m/x.txt", b"mirrored")
    edge = await edges.start(edges.config(None, credentials=CREDENTIALS))
    cos = client(edge.port)
    config = origin_xml({"host": origin.address, "type": "Mirror", "prefix": "m/"})
    await call(cos.put_bucket_origin, Bucket=BUCKET, OriginConfiguration=config)
    rules = await call(cos.get_bucket_origin, Bucket=BUCKET)
    (rule,) = rules["OriginRule"]
    assert rule["OriginType"] == "Mirror"
    assert rule["OriginCondition"]["Prefix"] == "m/"
    assert "HttpRedirectCode" not in rule["OriginParameter"]
    miss = await edge.get("m/x.txt")
    assert (miss.status, miss.body) == (200, b"mirrored")


@pytest_twisted.ensureDeferred
async def test_key_fetched_by_another_process_is_waited_for(edges, origin):
    """While another holder (as another worker process would) has the key's lock, a Mirror
    miss makes no origin request: it waits, and is served the object once it is published;
    when the lock goes without an object, it answers 424."""
    origin.serve("/w.txt", b"from the origin")
    edge = await mirror_edge(edges, origin)
    lock = await edge.store.lock_key(BUCKET, "w.txt")
    assert lock is not None
    waiting = defer.ensureDeferred(edge.get("w.txt"))
    await deferLater(reactor, 0.6, lambda: None)
    assert not waiting.called
    pending = edge.store.new_upload(BUCKET, "w.txt")
    pending.write(b"published elsewhere")
    assert await pending.publish()
    lock.release()
    reply = await waiting
    assert (reply.status, reply.body) == (200, b"published elsewhere")
    assert reply.header("x-cosedge-copy") == "elsewhere"

    lock = await edge.store.lock_key(BUCKET, "gone.txt")
    assert lock is not None
    waiting = defer.ensureDeferred(edge.get("gone.txt"))
    await deferLater(reactor, 0.6, lambda: None)
    lock.release()
    reply = await waiting
    assert reply.status == 424 and b"another worker" in reply.body
    assert origin.requests == []


@pytest_twisted.ensureDeferred
async def test_admin_set_mirror(edges, origin):
    """`cosedge-admin origin set BUCKET HOST --mirror` makes a Mirror rule: `show` says so,
    and a miss is answered with the origin's bytes; `--mirror` with `--redirect` is refused."""
    from tests.integration.test_admin_cli import SECRET_ID, SECRET_KEY, admin

    origin.serve("/a.txt", b"through the mirror")
    credentials = [{"secret_id": SECRET_ID, "secret_key": SECRET_KEY}]
    edge = await edges.start(edges.config(None, credentials=credentials))
    out, err, code = await admin(edge.port, "origin", "set", BUCKET, origin.address, "--mirror")
    assert code == 0, err
    out, _, _ = await admin(edge.port, "origin", "show", BUCKET)
    assert f"1\t*\t{origin.address}\tmirror" in out
    miss = await edge.get("a.txt")
    assert (miss.status, miss.body) == (200, b"through the mirror")
    _, err, code = await admin(
        edge.port, "origin", "set", BUCKET, origin.address, "--mirror", "--redirect"
    )
    assert code == 2 and "not allowed with" in err


@pytest_twisted.ensureDeferred
async def test_slow_origin_blocks_no_other_client(edges, origin):
    """While one Mirror fetch waits on an origin that stalls mid-body, a Mirror miss of
    another key is answered in full at once."""
    origin.serve("/stuck.bin", b"s" * 100_000, stall_after=10_000)
    origin.serve("/quick.txt", b"quick")
    edge = await mirror_edge(edges, origin, fetch={"idle_timeout": 5})
    stuck = deferToThread(raw_get, edge.port, "stuck.bin")
    await wait_until(lambda: len(origin.requests_for("/stuck.bin")) == 1)
    started = time.monotonic()
    quick = await edge.get("quick.txt")
    assert (quick.status, quick.body) == (200, b"quick")
    assert time.monotonic() - started < 3
    assert not stuck.called
    head, got = await stuck  # the stall ends in idle_timeout: a short body, nothing stored
    assert head.startswith(b"HTTP/1.1 200") and len(got) == 10_000
    await edge.copies_done()
    assert not _stored(edge, "stuck.bin").exists()


@pytest_twisted.ensureDeferred
async def test_mirror_fetch_moves_to_a_standby(edges, origin):
    """A Mirror fetch is an ordinary copy with its rule's plan: the main origin refusing the
    connection, the client gets the standby's bytes, and the object is stored."""
    from tests.integration.test_origin_modes import closed_port

    origin.serve("/s.txt", b"from the standby")
    edge = await mirror_edge(edges, origin, main=f"127.0.0.1:{closed_port()}")
    reply = await edge.get("s.txt")
    assert (reply.status, reply.body) == (200, b"from the standby")
    await wait_until(lambda: _stored(edge, "s.txt").exists())


@pytest_twisted.ensureDeferred
async def test_mirror_body_with_origin_digest_completes_only_when_it_matches(edges, origin):
    """The store's hashes of a Mirror fetch run after the body is in, yet an origin's
    Content-MD5 is still checked before a client's body is declared whole: a chunked body
    that matches ends with its last chunk and is stored (MD5 ETag); one that does not is cut
    (no last chunk) and nothing is stored."""
    body = os.urandom(200_000)
    good = hashlib.md5(body).digest()
    bad = hashlib.md5(body + b"x").digest()
    for name, digest in (("good.bin", good), ("bad.bin", bad)):
        origin.serve(
            f"/{name}",
            body,
            content_length=None,
            chunked=True,
            headers={"Content-MD5": base64.b64encode(digest).decode()},
        )
    edge = await mirror_edge(edges, origin)
    head, wire = await deferToThread(raw_get, edge.port, "good.bin")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    assert wire.endswith(b"\r\n0\r\n\r\n")
    await wait_until(lambda: _stored(edge, "good.bin").exists())
    hit = await edge.get("good.bin")
    assert hit.body == body and hit.header("etag") == f'"{good.hex()}"'
    head, wire = await deferToThread(raw_get, edge.port, "bad.bin")
    assert head.startswith(b"HTTP/1.1 200")
    assert not wire.endswith(b"\r\n0\r\n\r\n")
    await edge.copies_done()
    assert not _stored(edge, "bad.bin").exists()
