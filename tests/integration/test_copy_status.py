"""Seeing the migration (SPEC §9) against a live edge and real loopback origins: the
`x-cosedge-copy` header of every miss, the signed status API through a whole copy and a
failed one, failures kept across a restart, `workers: 2`, and `cosedge-admin`."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest_twisted
from twisted.internet.threads import deferToThread

from edge.admin.cli import Reply, call
from edge.testing.origin import FakeOrigin
from edge.testing.process import start_twistd, wait_ready
from tests.integration.conftest import BUCKET, DOMAIN, reactor, request, wait_until
from tests.integration.test_admin_cli import SECRET_ID, SECRET_KEY, admin

CREDENTIALS = [{"secret_id": SECRET_ID, "secret_key": SECRET_KEY}]


async def status(port: int, key: str) -> dict[str, Any]:
    reply = await _signed(port, {"cosedge-copy": ""}, key)
    assert reply.status == 200, reply.body
    answer: dict[str, Any] = json.loads(reply.body)
    return answer


async def listing(port: int, **params: str) -> dict[str, Any]:
    reply = await _signed(port, {"cosedge-copies": "", **params})
    assert reply.status == 200, reply.body
    answer: dict[str, Any] = json.loads(reply.body)
    return answer


async def _signed(port: int, params: dict[str, str], key: str = "") -> Reply:
    endpoint = f"http://127.0.0.1:{port}"
    reply: Reply = await deferToThread(
        call, endpoint, SECRET_ID, SECRET_KEY, "GET", BUCKET, params, key=key
    )
    return reply


@pytest_twisted.ensureDeferred
async def test_every_miss_says_what_became_of_its_copy(edges, origin):
    """started, joined (a copy of the key runs), queued (no slot), overflow (queue full),
    backing-off (the key failed a moment ago), and none for HEAD and for a miss with no
    usable origin; hits carry no header."""
    origin.serve("/slow.bin", b"s" * 100, headers_delay=1.0)
    origin.serve("/wait.bin", b"w")
    origin.serve("/down.bin", b"", status=503)
    fetch = {"concurrency": 1, "queue_size": 1, "retry_after": 60}
    edge = await edges.start(edges.config(origin.address, fetch=fetch))
    assert (await edge.get("slow.bin")).header("x-cosedge-copy") == "started"
    assert (await edge.get("slow.bin")).header("x-cosedge-copy") == "joined"
    assert (await edge.get("wait.bin")).header("x-cosedge-copy") == "queued"
    assert (await edge.get("wait.bin")).header("x-cosedge-copy") == "joined"
    assert (await edge.get("other.bin")).header("x-cosedge-copy") == "overflow"
    head = await request(edge.port, "/slow.bin", method="HEAD")
    assert head.status == 302 and head.header("x-cosedge-copy") == "none"
    await edge.copies_done()
    assert (await edge.get("down.bin")).header("x-cosedge-copy") == "started"
    await edge.copies_done()
    miss = await edge.get("down.bin")
    assert miss.status == 302 and miss.header("x-cosedge-copy") == "backing-off"
    hit = await edge.get("slow.bin")
    assert hit.status == 200 and hit.header("x-cosedge-copy") is None
    bare = await edges.start(edges.config(None, data_dir=edges.tmp_path / "bare"))
    gone = await bare.get("none.bin")
    assert gone.status == 404 and gone.header("x-cosedge-copy") == "none"


@pytest_twisted.ensureDeferred
async def test_a_key_another_process_copies_is_elsewhere_and_its_record_is_seen_there(
    edges, origin
):
    """Two edges on one data folder, as two worker processes are: a miss on the second
    while the first copies the key says `elsewhere`, and the second answers the status
    of the first one's copy, then its stored record, with the first miss's request id."""
    origin.serve("/shared.bin", b"s" * 300, headers_delay=1.0)
    config = edges.config(origin.address, credentials=CREDENTIALS)
    first = await edges.start(config)
    second = await edges.start(config)
    miss = await first.get("shared.bin")
    assert miss.header("x-cosedge-copy") == "started"
    assert (await second.get("shared.bin")).header("x-cosedge-copy") == "elsewhere"
    seen = await status(second.port, "shared.bin")
    assert seen["state"] == "copying" and seen["request_id"] == miss.header("x-cos-request-id")
    await first.copies_done()
    seen = await status(second.port, "shared.bin")
    assert seen["state"] == "stored" and seen["bytes"] == 300
    assert len(origin.requests) == 1


@pytest_twisted.ensureDeferred
async def test_status_follows_a_whole_copy_and_the_bucket_counts_it(edges, origin):
    """A key is absent, then copying with the miss's request id while its body streams,
    then stored with its bytes; the bucket listing shows it in flight, then counted."""
    body = b"x" * 5000
    origin.serve("/big.bin", body, body_delay=1.0)
    edge = await edges.start(edges.config(origin.address, credentials=CREDENTIALS))
    assert (await status(edge.port, "big.bin"))["state"] == "absent"
    miss = await edge.get("big.bin")
    request_id = miss.header("x-cos-request-id")
    running = await status(edge.port, "big.bin")
    assert running["state"] == "copying" and running["request_id"] == request_id
    assert running["origin"] == origin.address and running["address"] == "127.0.0.1"
    assert running["attempts"] == 1 and running["started"] and running["finished"] is None
    page = await listing(edge.port)
    assert [e["key"] for e in page["in_flight"]] == ["big.bin"]
    await edge.copies_done()
    done = await status(edge.port, "big.bin")
    assert done["state"] == "stored" and done["bytes"] == done["expected"] == len(body)
    by_id = await _signed(edge.port, {"cosedge-copy": "", "request-id": str(request_id)})
    assert json.loads(by_id.body) == done
    unknown = await _signed(edge.port, {"cosedge-copy": "", "request-id": "nope"})
    assert json.loads(unknown.body)["state"] == "absent"
    assert done["finished"] and done["reason"] is None and done["request_id"] == request_id
    page = await listing(edge.port)
    assert page["in_flight"] == [] and page["failures"] == [] and page["next_marker"] is None
    assert page["counters"]["started"] == 1 and page["counters"]["stored"] == 1


@pytest_twisted.ensureDeferred
async def test_failures_are_listed_with_reasons_paged_and_kept_across_a_restart(edges, origin):
    """Failed copies say why and when they may be retried, newest first, a page at a time,
    and are still listed by a new edge on the same data folder."""
    for i in range(3):
        origin.serve(f"/bad{i}", b"", status=503)
    config = edges.config(origin.address, credentials=CREDENTIALS, fetch={"retry_after": 30})
    edge = await edges.start(config)
    for i in range(3):
        assert (await edge.get(f"bad{i}")).status == 302
        await edge.copies_done()
    failed = await status(edge.port, "bad0")
    assert failed["state"] == "failed" and failed["reason"] == "origin answered 503"
    assert failed["retry_at"] > failed["finished"] and failed["attempts"] == 1
    first = await listing(edge.port, **{"max-keys": "2"})
    assert [f["key"] for f in first["failures"]] == ["bad2", "bad1"]
    assert first["next_marker"] == "bad1" and first["counters"]["failed"] == 3
    await edge.stop()
    again = await edges.start(config)
    rest = await listing(again.port, **{"max-keys": "2", "marker": "bad1"})
    assert [f["key"] for f in rest["failures"]] == ["bad0"] and rest["next_marker"] is None
    assert rest["failures"][0]["reason"] == "origin answered 503"
    assert rest["counters"]["failed"] == 3


@pytest_twisted.ensureDeferred
async def test_the_status_api_is_signed_and_takes_the_bucket_from_the_host(edges, origin):
    """Anonymous status requests get 403 AccessDenied (and start no copy); a signed one
    with the bucket in the Host is answered; a bad max-keys is 400 InvalidArgument."""
    edge = await edges.start(edges.config(origin.address, credentials=CREDENTIALS))
    for path in ("/k?cosedge-copy", "/?cosedge-copies"):
        reply = await request(edge.port, path)
        assert reply.status == 403 and b"<Code>AccessDenied</Code>" in reply.body
    assert origin.requests == [] and edge.copier.in_flight() == []
    reply = await _signed(edge.port, {"cosedge-copies": "", "max-keys": "0"})
    assert reply.status == 400 and b"InvalidArgument" in reply.body
    from edge.api.signature import sign

    headers = {"host": DOMAIN}
    auth = sign(SECRET_ID, SECRET_KEY, "GET", "/k", {"cosedge-copy": ""}, headers)
    reply = await request(edge.port, "/k?cosedge-copy", headers={"authorization": auth})
    assert reply.status == 200 and reply.header("content-type") == "application/json"
    assert json.loads(reply.body)["state"] == "absent"


@pytest_twisted.ensureDeferred
async def test_admin_copy_status_and_copies(edges, origin):
    """`copy status` and `copies [--failed]` print the records for people, `--json` the
    API's JSON; exit 0 when answered, 1 when the edge refuses (an unknown bucket)."""
    origin.serve("/ok.txt", b"fine")
    origin.serve("/bad.txt", b"", status=500)
    edge = await edges.start(edges.config(origin.address, credentials=CREDENTIALS))
    for key in ("ok.txt", "bad.txt"):
        await edge.get(key)
        await edge.copies_done()
    out, err, code = await admin(edge.port, "copy", "status", BUCKET, "ok.txt")
    assert code == 0, err
    assert out.startswith(f"{BUCKET}/ok.txt: stored") and "4 of 4 bytes" in out
    out, _, code = await admin(edge.port, "copy", "status", BUCKET, "bad.txt", "--json")
    assert code == 0 and json.loads(out)["reason"] == "origin answered 500"
    out, _, code = await admin(edge.port, "copy", "status", BUCKET, "never.txt")
    assert code == 0 and "absent" in out
    out, _, code = await admin(edge.port, "copies", BUCKET)
    assert code == 0 and out.startswith(f"{BUCKET}: 1 stored, 1 failed, 0 in flight")
    out, _, code = await admin(edge.port, "copies", BUCKET, "--failed")
    assert code == 0 and "bad.txt\torigin answered 500" in out and "ok.txt" not in out
    out, _, code = await admin(edge.port, "copies", BUCKET, "--failed", "--json")
    assert code == 0 and [f["key"] for f in json.loads(out)["failures"]] == ["bad.txt"]
    _, err, code = await admin(edge.port, "copies", "nosuch-1250000000")
    assert code == 1 and "404 NoSuchBucket" in err


@pytest_twisted.ensureDeferred
async def test_with_two_workers_every_process_knows_every_copy(tmp_path):
    """Misses spread over both processes of `workers: 2`; every key's status, asked over
    fresh connections (so of either process), is the stored record, and the bucket's
    counters are both processes' together."""
    origin = FakeOrigin(reactor)
    listening = reactor.listenTCP(0, origin.factory(), interface="127.0.0.1")
    address = f"127.0.0.1:{listening.getHost().port}"
    keys = [f"w{i}.txt" for i in range(40)]
    for key in keys:
        origin.serve(f"/{key}", key.encode(), headers_delay=0.2)
    (tmp_path / "data" / BUCKET).mkdir(parents=True)
    config = tmp_path / "edge.yaml"
    config.write_text(
        "listen: 'tcp:0:interface=127.0.0.1'\n"
        f"data_dir: {tmp_path / 'data'}\n"
        "workers: 2\n"
        "extra_origin_cidrs: ['127.0.0.1/32']\n"
        f"credentials: [{{secret_id: {SECRET_ID}, secret_key: {SECRET_KEY}}}]\n"
        f"buckets:\n  {BUCKET}:\n    origin: {{address: '{address}'}}\n"
    )
    proc = start_twistd("--config", str(config), cwd=tmp_path)
    try:
        port, output = wait_ready(proc)
        deadline = time.monotonic() + 20
        while "cosedge worker" not in output.text() and time.monotonic() < deadline:
            time.sleep(0.05)

        def misses() -> list[int]:
            with ThreadPoolExecutor(20) as pool:
                return list(pool.map(lambda k: _plain_get(port, k), keys))

        assert await deferToThread(misses) == [302] * len(keys)
        folder = tmp_path / "data" / BUCKET
        await wait_until(lambda: all((folder / k).exists() for k in keys), timeout=30)
        db = sqlite3.connect(tmp_path / "data" / ".cosedge" / "copies.sqlite3")
        pids = {pid for (pid,) in db.execute("SELECT DISTINCT pid FROM copies")}
        db.close()
        assert len(pids) == 2  # both processes copied some of the keys

        async def all_stored() -> bool:
            for key in keys:
                if (await status(port, key))["state"] != "stored":
                    return False
            return True

        deadline = time.monotonic() + 10
        while not await all_stored():
            assert time.monotonic() < deadline, "a status was not the stored record"
        counters = (await listing(port))["counters"]
        while counters["stored"] < len(keys) and time.monotonic() < deadline:
            counters = (await listing(port))["counters"]  # flushed within a second
        assert counters["started"] == counters["stored"] == len(keys)
    finally:
        proc.send_signal(signal.SIGTERM)
        await deferToThread(proc.wait, 30)
        origin.drop_all()
        await listening.stopListening()


def _plain_get(port: int, key: str) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.request("GET", f"/{BUCKET}/{key}")
    code = conn.getresponse().status
    conn.close()
    return code
