"""SPEC §3 (misses) and §4 (origin copy), end to end on loopback sockets."""

from __future__ import annotations

import hashlib
import os

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from tests.integration.conftest import BUCKET, request


def _files_under(path) -> list[str]:
    found: list[str] = []
    for root, _dirs, files in os.walk(path):
        found.extend(os.path.join(root, f) for f in files)
    return found


@pytest_twisted.ensureDeferred
async def test_miss_redirects_with_exact_location(edges, origin):
    """A GET miss answers 302 to http://<address>/<key as requested>, query string kept."""
    edge = await edges.start(edges.config(origin.address))
    reply = await edge.get("dir/a%20b.txt?x=1&y=%2F")
    assert reply.status == 302
    assert reply.header("location") == f"http://{origin.address}/dir/a%20b.txt?x=1&y=%2F"
    assert reply.header("x-cos-request-id")


@pytest_twisted.ensureDeferred
async def test_miss_never_forwards_a_security_token_to_the_origin(edges, origin):
    """A temporary-credential token in the query (`x-cos-security-token`) is a secret: the
    302's Location keeps the other parameters and drops it (it used to go to the origin)."""
    edge = await edges.start(edges.config(origin.address))
    reply = await edge.get("a.txt?v=2&x-cos-security-token=SECRET&w=3")
    assert reply.status == 302
    assert reply.header("location") == f"http://{origin.address}/a.txt?v=2&w=3"


@pytest_twisted.ensureDeferred
async def test_copy_then_hit_serves_same_bytes_and_etag(edges, origin):
    """After the background copy, the next request is a 200 hit with the origin's bytes and
    the MD5 ETag; the origin saw the request with Host = the configured address."""
    body = os.urandom(300_000)
    origin.serve("/photos/cat.jpg", body)
    edge = await edges.start(edges.config(origin.address))
    first = await edge.get("photos/cat.jpg")
    assert first.status == 302
    await edge.copies_done()
    second = await edge.get("photos/cat.jpg")
    assert second.status == 200
    assert second.body == body
    assert second.header("etag") == f'"{hashlib.md5(body).hexdigest()}"'
    assert second.header("content-type") == "image/jpeg"
    assert second.header("content-length") == str(len(body))
    seen = origin.requests_for("/photos/cat.jpg")
    assert len(seen) == 1
    assert seen[0].headers["host"] == origin.address
    assert (edge.data_dir / BUCKET / "photos" / "cat.jpg").read_bytes() == body


@pytest_twisted.ensureDeferred
async def test_head_miss_redirects_but_starts_no_copy(edges, origin):
    """HEAD on a miss answers like GET (302) but never triggers a pull (COS rule)."""
    origin.serve("/a.txt", b"hello")
    edge = await edges.start(edges.config(origin.address))
    reply = await edge.get("a.txt", method="HEAD")
    assert reply.status == 302
    assert reply.header("location") == f"http://{origin.address}/a.txt"
    await edge.copies_done()
    assert origin.requests == []
    assert not (edge.data_dir / BUCKET / "a.txt").exists()


@pytest_twisted.ensureDeferred
async def test_ranged_miss_copies_whole_object(edges, origin):
    """A ranged GET miss gets the 302 and starts a copy of the whole object."""
    origin.serve("/big.bin", b"0123456789" * 1000)
    edge = await edges.start(edges.config(origin.address))
    reply = await edge.get("big.bin", headers={"Range": "bytes=0-9"})
    assert reply.status == 302
    await edge.copies_done()
    assert "range" not in origin.requests[0].headers
    assert (edge.data_dir / BUCKET / "big.bin").stat().st_size == 10_000


@pytest_twisted.ensureDeferred
async def test_forty_concurrent_misses_make_one_origin_request(edges, origin):
    """However many misses arrive at once, one copy of a bucket+key runs."""
    origin.serve("/hot.js", b"x" * 50_000, body_delay=0.3)
    edge = await edges.start(edges.config(origin.address))
    replies = await defer.gatherResults(
        [defer.ensureDeferred(edge.get("hot.js")) for _ in range(40)]
    )
    assert {r.status for r in replies} == {302}
    await edge.copies_done()
    assert len(origin.requests_for("/hot.js")) == 1
    assert (edge.data_dir / BUCKET / "hot.js").read_bytes() == b"x" * 50_000


@pytest_twisted.ensureDeferred
async def test_slow_origin_does_not_delay_redirect(edges, origin):
    """The 302 goes out at once even when the origin takes seconds to answer."""
    origin.serve("/slow.txt", b"late", headers_delay=3.0)
    edge = await edges.start(edges.config(origin.address))
    from twisted.internet import reactor

    started = reactor.seconds()
    reply = await edge.get("slow.txt")
    assert reply.status == 302
    assert reactor.seconds() - started < 1.0
    await edge.copies_done(timeout=10)
    assert (edge.data_dir / BUCKET / "slow.txt").read_bytes() == b"late"


@pytest_twisted.ensureDeferred
async def test_failed_copies_store_nothing(edges, origin, captured_events):
    """Truncated, over-long, reset, 5xx, 404, 3xx and chunked-cut-off origin replies leave
    no object and no temp file, and each failure is one warning naming bucket, key,
    origin and reason."""
    origin.serve("/short", b"x" * 1000, content_length=5000)
    origin.serve("/reset", b"y" * 100_000, reset_after=1000)
    origin.serve("/e500", b"boom", status=500)
    origin.serve("/moved", b"", status=302, headers={"Location": "http://10.0.0.1/x"})
    origin.serve("/chunkcut", b"z" * 5000, chunked=True, cut_after=100)
    origin.serve("/long", b"w" * 2000, content_length=1000)
    edge = await edges.start(edges.config(origin.address))
    keys = ["short", "reset", "e500", "missing404", "moved", "chunkcut", "long"]
    for key in keys:
        assert (await edge.get(key)).status == 302
    await edge.copies_done()
    assert _files_under(edge.data_dir / BUCKET) == []
    assert _files_under(edge.data_dir / ".cosedge" / "tmp") == []
    failures = [e for e in captured_events if e.get("reason") and e.get("key") in keys]
    assert sorted(e["key"] for e in failures) == sorted(keys)
    for event in failures:
        assert event["bucket"] == BUCKET
        assert event["origin"] == origin.address
    reasons = {e["key"]: e["reason"] for e in failures}
    assert "500" in reasons["e500"]
    assert "404" in reasons["missing404"]
    assert "redirects are not followed" in reasons["moved"]
    assert "Content-Length" in reasons["short"] or "lost" in reasons["short"]
    # the edge keeps serving
    origin.serve("/fine", b"ok")
    assert (await edge.get("fine")).status == 302
    await edge.copies_done()
    assert (await edge.get("fine")).body == b"ok"


@pytest_twisted.ensureDeferred
async def test_stalled_body_and_oversize_store_nothing(edges, origin):
    """A body that stalls past idle_timeout, and one over max_object_size, store nothing."""
    origin.serve("/stall", b"s" * 10_000, stall_after=100)
    origin.serve("/huge", b"h" * 5000)
    origin.serve("/huge-chunked", b"h" * 5000, chunked=True)
    edge = await edges.start(
        edges.config(origin.address, fetch={"idle_timeout": 0.5, "max_object_size": 4096})
    )
    for key in ("stall", "huge", "huge-chunked"):
        assert (await edge.get(key)).status == 302
    await edge.copies_done(timeout=5)
    assert _files_under(edge.data_dir / BUCKET) == []
    assert _files_under(edge.data_dir / ".cosedge" / "tmp") == []


@pytest_twisted.ensureDeferred
async def test_existing_object_is_not_overwritten(edges, origin):
    """An object that appears while a copy runs is kept; the copy is dropped."""
    origin.serve("/race.txt", b"from origin", body_delay=0.5)
    edge = await edges.start(edges.config(origin.address))
    assert (await edge.get("race.txt")).status == 302
    (edge.data_dir / BUCKET / "race.txt").write_bytes(b"operator's file")
    await edge.copies_done()
    assert (edge.data_dir / BUCKET / "race.txt").read_bytes() == b"operator's file"
    assert _files_under(edge.data_dir / ".cosedge" / "tmp") == []


@pytest_twisted.ensureDeferred
async def test_miss_without_origin_is_no_such_key(edges):
    """No origin (or a disabled one): 404 NoSuchKey in COS XML."""
    edge = await edges.start(edges.config("127.0.0.1:9", enabled=False))
    reply = await edge.get("nothing.txt")
    assert reply.status == 404
    assert b"<Code>NoSuchKey</Code>" in reply.body
    assert reply.header("content-type") == "application/xml"


@pytest_twisted.ensureDeferred
async def test_domain_resolving_to_loopback_is_refused(edges, captured_events):
    """A domain origin whose addresses are all refused (localhost -> loopback, no
    extra_origin_cidrs): no redirect, no copy, 404 NoSuchKey and a warning naming bucket,
    domain and addresses."""
    edge = await edges.start(edges.config("localhost:8080", extra=[]))
    reply = await edge.get("x.txt")
    assert reply.status == 404
    assert b"NoSuchKey" in reply.body
    warnings = [e for e in captured_events if e.get("domain") == "localhost"]
    assert warnings and warnings[0]["bucket"] == BUCKET
    assert any("127.0.0.1" in a for a in warnings[0]["addresses"])


@pytest_twisted.ensureDeferred
async def test_domain_origin_is_resolved_and_pinned(edges, origin):
    """A domain origin (localhost, allowed by extra_origin_cidrs) is resolved, the copy
    connects to the vetted address, and Host names the configured domain."""
    origin.serve("/d.txt", b"via domain")
    edge = await edges.start(edges.config(f"localhost:{origin.port}", extra=["127.0.0.1/32"]))
    reply = await edge.get("d.txt")
    assert reply.status == 302
    assert reply.header("location") == f"http://localhost:{origin.port}/d.txt"
    await edge.copies_done()
    assert (await edge.get("d.txt")).body == b"via domain"
    assert origin.requests[0].headers["host"] == f"localhost:{origin.port}"
    assert origin.requests[0].peer == "127.0.0.1"


@pytest_twisted.ensureDeferred
async def test_restart_keeps_objects_and_sweeps_temp_files(edges, origin):
    """Objects survive a restart; temp files of an interrupted copy are swept at start-up."""
    origin.serve("/keep.txt", b"kept")
    config = edges.config(origin.address)
    edge = await edges.start(config)
    await edge.get("keep.txt")
    await edge.copies_done()
    await edge.stop()
    stale = edge.data_dir / ".cosedge" / "tmp" / "deadbeef.part"
    stale.write_bytes(b"half an object")
    again = await edges.start(config)
    assert not stale.exists()
    reply = await again.get("keep.txt")
    assert reply.status == 200 and reply.body == b"kept"


@pytest_twisted.ensureDeferred
async def test_path_style_request(edges, origin):
    """Without a matching Host, /<bucket>/<key> selects the bucket; the Location keeps
    only the key."""
    edge = await edges.start(edges.config(origin.address))
    reply = await request(edge.port, f"/{BUCKET}/p/q.txt", host="127.0.0.1")
    assert reply.status == 302
    assert reply.header("location") == f"http://{origin.address}/p/q.txt"
    unknown = await request(edge.port, "/nobucket-1250000000/q.txt", host="127.0.0.1")
    assert unknown.status == 404 and b"NoSuchBucket" in unknown.body


@pytest_twisted.ensureDeferred
async def test_stop_cancels_running_copy_and_leaves_no_temp_file(edges, origin):
    """Stopping the edge gives running copies `shutdown_grace`, then cancels them: no
    object, no temp file."""
    origin.serve("/stuck.bin", b"s" * 100_000, stall_after=1000)
    edge = await edges.start(edges.config(origin.address, fetch={"shutdown_grace": 0.2}))
    assert (await edge.get("stuck.bin")).status == 302
    from tests.integration.conftest import wait_until

    await wait_until(lambda: any(j.received for j in edge.copier.in_flight()))
    assert _files_under(edge.data_dir / ".cosedge" / "tmp") != []
    await edge.stop()
    assert _files_under(edge.data_dir / ".cosedge" / "tmp") == []
    assert not (edge.data_dir / BUCKET / "stuck.bin").exists()


@pytest_twisted.ensureDeferred
async def test_queue_overflow_still_redirects(edges, origin, captured_events):
    """With the cap and queue full, a miss is still redirected; the skipped copy is logged."""
    for name in ("q1", "q2", "q3"):
        origin.serve(f"/{name}", b"x", headers_delay=0.5)
    edge = await edges.start(
        edges.config(origin.address, fetch={"concurrency": 1, "queue_size": 1})
    )
    statuses = [(await edge.get(name)).status for name in ("q1", "q2", "q3")]
    assert statuses == [302, 302, 302]
    await edge.copies_done()
    assert (edge.data_dir / BUCKET / "q1").exists() and (edge.data_dir / BUCKET / "q2").exists()
    assert not (edge.data_dir / BUCKET / "q3").exists()
    assert any(e.get("reason") == "queue full" and e.get("key") == "q3" for e in captured_events)


@pytest_twisted.ensureDeferred
async def test_failed_key_is_retried_only_after_retry_after(edges, origin, captured_events):
    """A key whose copy failed is not fetched again (nor a warning logged again) on every
    miss: misses within origin_fetch.retry_after are still redirected but start no copy;
    after it, the next miss tries again and, the origin healthy by now, stores the object."""
    origin.serve("/flaky.txt", b"down", status=503)
    edge = await edges.start(edges.config(origin.address, fetch={"retry_after": 0.5}))
    assert (await edge.get("flaky.txt")).status == 302
    await edge.copies_done()
    for _ in range(5):
        assert (await edge.get("flaky.txt")).status == 302
    await edge.copies_done()
    assert len(origin.requests_for("/flaky.txt")) == 1
    warnings = [e for e in captured_events if e.get("key") == "flaky.txt" and e.get("reason")]
    assert len(warnings) == 1
    origin.serve("/flaky.txt", b"back up")
    await deferLater(reactor, 0.6, lambda: None)
    assert (await edge.get("flaky.txt")).status == 302
    await edge.copies_done()
    assert len(origin.requests_for("/flaky.txt")) == 2
    assert (edge.data_dir / BUCKET / "flaky.txt").read_bytes() == b"back up"
