"""Provenance, digest checks and refresh against a live edge and a real loopback origin:
what a copy records, what it refuses, and what `?cosedge-refresh` (and `cosedge-admin
refresh`) does with each origin answer."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
from typing import Any

import pytest_twisted
from twisted.internet.threads import deferToThread

from edge.admin.client import Reply, call
from edge.testing.process import start_twistd, wait_ready
from tests.integration.conftest import BUCKET, request, run_admin, wait_until

SECRET_ID = "AKIDrefresh"
SECRET_KEY = "refresh-secret"
CREDENTIALS = [{"secret_id": SECRET_ID, "secret_key": SECRET_KEY}]
LAST_MODIFIED = "Tue, 01 Dec 2026 10:00:00 GMT"


def b64md5(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode()


def b64sha(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode()


async def api(port: int, params: dict[str, str], body: bytes = b"", method: str = "POST") -> Reply:
    """One signed request to the bucket root, as cosedge-admin sends it."""
    params = {"cosedge-refresh": "", **params}
    endpoint = f"http://127.0.0.1:{port}"
    return await deferToThread(
        call, endpoint, SECRET_ID, SECRET_KEY, method, BUCKET, params, body, "application/json"
    )


async def refresh(port: int, *keys: str, **params: str) -> dict[str, Any]:
    reply = await api(port, params, json.dumps({"keys": list(keys)}).encode())
    assert reply.status == 200, reply.body
    return dict(json.loads(reply.body))


async def admin(port: int, *args: str) -> tuple[str, str, int]:
    """The admin command against the edge on `port`, with this module's keys."""
    return await run_admin(port, SECRET_ID, SECRET_KEY, *args)


def serve_versioned(origin: Any, path: str, body: bytes, etag: str, **headers: str) -> None:
    origin.serve(
        path,
        body,
        headers={"ETag": etag, "Last-Modified": LAST_MODIFIED, **headers},
        conditional=True,
    )


async def copied(edge: Any, key: str) -> None:
    """Miss `key` once and wait for its copy to end."""
    assert (await edge.get(key)).status == 302
    await edge.copies_done()


def temp_files(edge: Any) -> list[str]:
    return os.listdir(edge.data_dir / ".cosedge" / "tmp")


@pytest_twisted.ensureDeferred
async def test_a_copy_records_provenance_and_serves_the_origin_content_type(edges, origin):
    """A copy whose Content-MD5 matches is stored with the origin's ETag, Last-Modified and
    Content-Type, and a hit is served with that Content-Type, not the extension's."""
    body = b"payload " * 1000
    origin.serve(
        "/data/a.bin",
        body,
        headers={
            "Content-MD5": b64md5(body),
            "ETag": '"v1"',
            "Last-Modified": LAST_MODIFIED,
            "Content-Type": "text/x-custom; charset=utf-8",
        },
    )
    edge = await edges.start(edges.config(origin.address))
    await copied(edge, "data/a.bin")
    hit = await edge.get("data/a.bin")
    assert hit.status == 200 and hit.body == body
    assert hit.header("content-type") == "text/x-custom; charset=utf-8"
    obj = await edge.store.open_object(BUCKET, "data/a.bin")
    assert obj is not None
    provenance = obj.meta.origin
    obj.close()
    assert provenance is not None
    assert (provenance.etag, provenance.last_modified) == ('"v1"', LAST_MODIFIED)
    assert provenance.content_type == "text/x-custom; charset=utf-8"
    # Served by the store's ETag (the MD5 of the bytes), as every object is.
    assert hit.header("etag") == f'"{hashlib.md5(body).hexdigest()}"'


@pytest_twisted.ensureDeferred
async def test_without_a_content_type_the_extension_still_decides(edges, origin):
    """An origin that sends no Content-Type leaves the key's extension to decide, and its
    ETag is recorded all the same."""
    origin.serve("/b.png", b"png bytes", headers={"ETag": '"p"'}, content_length="auto")
    edge = await edges.start(edges.config(origin.address))
    await copied(edge, "b.png")
    hit = await edge.get("b.png")
    assert hit.header("content-type") == "image/png"
    obj = await edge.store.open_object(BUCKET, "b.png")
    assert obj is not None and obj.meta.origin is not None
    assert obj.meta.origin.etag == '"p"'
    obj.close()


@pytest_twisted.ensureDeferred
async def test_a_digest_mismatch_stores_nothing_and_says_why(edges, origin, captured_events):
    """A wrong Content-MD5, or a wrong Digest sha-256, leaves no object and no temp file,
    and the copy's failure names the header and the algorithm; matching Digest and
    Repr-Digest sha-256 are stored."""
    body = b"x" * 5000
    origin.serve("/bad-md5", body, headers={"Content-MD5": b64md5(b"other")})
    origin.serve("/bad-sha", body, headers={"Digest": f"sha-256={b64sha(b'other')}"})
    origin.serve("/good-digest", body, headers={"Digest": f"SHA-256={b64sha(body)}"})
    origin.serve("/good-repr", body, headers={"Repr-Digest": f"sha-256=:{b64sha(body)}:"})
    edge = await edges.start(edges.config(origin.address))
    for key in ("bad-md5", "bad-sha", "good-digest", "good-repr"):
        await copied(edge, key)
    assert not (edge.data_dir / BUCKET / "bad-md5").exists()
    assert not (edge.data_dir / BUCKET / "bad-sha").exists()
    assert (edge.data_dir / BUCKET / "good-digest").read_bytes() == body
    assert (edge.data_dir / BUCKET / "good-repr").read_bytes() == body
    assert temp_files(edge) == []
    reasons = {e.get("key"): str(e.get("reason")) for e in captured_events if "reason" in e}
    assert reasons["bad-md5"].startswith("Content-MD5 md5 mismatch")
    assert reasons["bad-sha"].startswith("Digest sha-256 mismatch")
    assert (await edge.get("bad-md5")).status == 302  # still a miss, redirected


@pytest_twisted.ensureDeferred
async def test_digest_checks_can_be_switched_off(edges, origin):
    """`origin_fetch.check_digests: false` stores a body whatever its Content-MD5 says."""
    origin.serve("/k", b"body", headers={"Content-MD5": b64md5(b"other")})
    edge = await edges.start(edges.config(origin.address, fetch={"check_digests": False}))
    await copied(edge, "k")
    assert (edge.data_dir / BUCKET / "k").read_bytes() == b"body"


@pytest_twisted.ensureDeferred
async def test_refresh_304_keeps_the_object(edges, origin):
    """An unchanged origin object answers the conditional GET with 304: the copy is kept
    as it is, and the origin was asked with the recorded ETag and Last-Modified."""
    serve_versioned(origin, "/a.txt", b"version 1", '"v1"')
    edge = await edges.start(edges.config(origin.address, credentials=CREDENTIALS))
    await copied(edge, "a.txt")
    stat = (edge.data_dir / BUCKET / "a.txt").stat()
    answer = await refresh(edge.port, "a.txt")
    assert answer["results"] == [
        {"key": "a.txt", "result": "kept", "reason": None, "etag": '"v1"', "size": None}
    ]
    assert answer["counts"] == {"kept": 1}
    asked = origin.requests_for("/a.txt")[-1]
    assert asked.headers["if-none-match"] == '"v1"'
    assert asked.headers["if-modified-since"] == LAST_MODIFIED
    assert (edge.data_dir / BUCKET / "a.txt").stat().st_ino == stat.st_ino


@pytest_twisted.ensureDeferred
async def test_refresh_200_replaces_the_object(edges, origin):
    """A changed origin object is fetched again and replaces the copy: the new bytes are
    served with their own ETag, and the new origin ETag is recorded and reported."""
    serve_versioned(origin, "/a.txt", b"version 1", '"v1"', **{"Content-Type": "text/x-a"})
    edge = await edges.start(edges.config(origin.address, credentials=CREDENTIALS))
    await copied(edge, "a.txt")
    new = b"version 2, longer"
    serve_versioned(origin, "/a.txt", new, '"v2"', **{"Content-Type": "text/x-b"})
    answer = await refresh(edge.port, "a.txt")
    assert answer["results"][0]["result"] == "replaced"
    assert answer["results"][0]["etag"] == '"v2"' and answer["results"][0]["size"] == len(new)
    hit = await edge.get("a.txt")
    assert hit.body == new and hit.header("etag") == f'"{hashlib.md5(new).hexdigest()}"'
    assert hit.header("content-type") == "text/x-b"
    assert temp_files(edge) == []
    again = await refresh(edge.port, "a.txt")
    assert again["results"][0]["result"] == "kept"
    assert origin.requests_for("/a.txt")[-1].headers["if-none-match"] == '"v2"'


@pytest_twisted.ensureDeferred
async def test_refresh_404_is_reported_then_deleted_on_request(edges, origin):
    """A key the origin no longer has is reported `missing` and kept; with
    delete-missing it is deleted, so the next request is a miss again."""
    serve_versioned(origin, "/gone.txt", b"old", '"g"')
    edge = await edges.start(edges.config(origin.address, credentials=CREDENTIALS))
    await copied(edge, "gone.txt")
    del origin.replies["/gone.txt"]
    answer = await refresh(edge.port, "gone.txt")
    assert answer["results"][0]["result"] == "missing"
    assert (edge.data_dir / BUCKET / "gone.txt").exists()
    answer = await refresh(edge.port, "gone.txt", **{"delete-missing": "true"})
    assert answer["results"][0]["result"] == "deleted"
    assert not (edge.data_dir / BUCKET / "gone.txt").exists()
    assert (await edge.get("gone.txt")).status == 302


@pytest_twisted.ensureDeferred
async def test_refresh_of_keys_without_a_record_and_of_absent_keys(edges, origin):
    """A file dropped in by hand is asked with If-Modified-Since its own mtime (and kept
    when the origin's is older); a key the bucket lacks is fetched and `stored`; an origin
    failure is `failed` with its reason."""
    edge = await edges.start(edges.config(origin.address, credentials=CREDENTIALS))
    (edge.data_dir / BUCKET / "hand.txt").write_bytes(b"by hand")
    serve_versioned(origin, "/hand.txt", b"origin", '"h"')
    origin.serve("/new.txt", b"new one")
    origin.serve("/broken.txt", b"", status=503)
    answer = await refresh(edge.port, "hand.txt", "new.txt", "broken.txt")
    results = {r["key"]: r for r in answer["results"]}
    assert results["hand.txt"]["result"] == "kept"
    asked = origin.requests_for("/hand.txt")[-1].headers
    assert "if-none-match" not in asked and "if-modified-since" in asked
    assert results["new.txt"]["result"] == "stored"
    assert (edge.data_dir / BUCKET / "new.txt").read_bytes() == b"new one"
    assert results["broken.txt"] == {
        "key": "broken.txt",
        "result": "failed",
        "reason": "origin answered 503",
        "etag": None,
        "size": None,
    }


@pytest_twisted.ensureDeferred
async def test_refresh_requests_that_cannot_be_judged_are_refused(edges, origin):
    """No keys, keys and a prefix at once, a bad key, a body that is not JSON and a GET
    get COS XML errors, and nothing is asked of the origin."""
    edge = await edges.start(edges.config(origin.address, credentials=CREDENTIALS))
    cases = [
        (await api(edge.port, {}), 400, b"InvalidArgument"),
        (await api(edge.port, {"prefix": "a"}, b'{"keys": ["a"]}'), 400, b"InvalidArgument"),
        (await api(edge.port, {}, b'{"keys": ["../x"]}'), 400, b"InvalidArgument"),
        (await api(edge.port, {}, b"keys: a"), 400, b"InvalidArgument"),
        (await api(edge.port, {"prefix": "", "max-keys": "0"}), 400, b"InvalidArgument"),
        (await api(edge.port, {}, method="GET"), 405, b"MethodNotAllowed"),
    ]
    for reply, status, code in cases:
        assert reply.status == status and code in reply.body, reply.body
    assert origin.requests == []


@pytest_twisted.ensureDeferred
async def test_cli_refreshes_a_prefix_page_by_page(edges, origin):
    """`cosedge-admin refresh --prefix` walks every stored key under the prefix (several
    pages), leaves the others alone, prints a table and a summary, and exits 0."""
    edge = await edges.start(edges.config(origin.address, credentials=CREDENTIALS))
    for name in ("img/1.png", "img/2.png", "img/3.png", "css/a.css"):
        serve_versioned(origin, "/" + name, name.encode(), f'"{name}"')
        await copied(edge, name)
    serve_versioned(origin, "/img/2.png", b"changed", '"new"')
    before = len(origin.requests_for("/css/a.css"))
    out, err, code = await admin(edge.port, "refresh", BUCKET, "--prefix", "img/", "--page", "2")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "key\tresult\tdetail"
    assert 'img/1.png\tkept\tETag "img/1.png"' in lines
    assert 'img/2.png\treplaced\tETag "new", 7 bytes' in lines
    assert lines[-1] == f"{BUCKET}: 3 key(s): 2 kept, 1 replaced"
    assert len(origin.requests_for("/css/a.css")) == before


@pytest_twisted.ensureDeferred
async def test_cli_json_and_exit_status(edges, origin):
    """`--json` prints every result and the counts; a failed key makes the exit status 1;
    neither keys nor a prefix is a usage error (2)."""
    edge = await edges.start(edges.config(origin.address, credentials=CREDENTIALS))
    serve_versioned(origin, "/a", b"a", '"a"')
    await copied(edge, "a")
    origin.serve("/b", b"", status=500)
    out, err, code = await admin(edge.port, "refresh", BUCKET, "a", "b", "--json")
    assert code == 1, err
    answer = json.loads(out)
    assert answer["counts"] == {"kept": 1, "failed": 1}
    assert [r["result"] for r in answer["results"]] == ["kept", "failed"]
    assert answer["results"][1]["reason"] == "origin answered 500"
    _, err, code = await admin(edge.port, "refresh", BUCKET)
    assert code == 2 and "KEY... or --prefix" in err


@pytest_twisted.ensureDeferred
async def test_a_refresh_waits_for_a_running_copy_of_its_key(edges, origin):
    """Single flight: a refresh of a key whose copy is still streaming waits for the copy's
    lock, then asks conditionally with what the copy recorded; the origin never sees two
    fetches of the key at once."""
    serve_versioned(origin, "/slow.bin", b"s" * 1000, '"s1"')
    origin.replies["/slow.bin"].body_delay = 1.0
    edge = await edges.start(edges.config(origin.address, credentials=CREDENTIALS))
    assert (await edge.get("slow.bin")).status == 302
    assert edge.copier.in_flight()
    answer = await refresh(edge.port, "slow.bin")
    assert answer["results"][0]["result"] == "kept"
    seen = origin.requests_for("/slow.bin")
    assert len(seen) == 2
    assert "if-none-match" not in seen[0].headers
    assert seen[1].headers["if-none-match"] == '"s1"'


@pytest_twisted.ensureDeferred
async def test_a_failed_replace_keeps_the_old_object(edges, origin):
    """A changed origin object whose Content-MD5 does not match its body is not stored:
    the refresh fails with the mismatch, and the old copy is still served."""
    serve_versioned(origin, "/a.txt", b"version 1", '"v1"')
    edge = await edges.start(edges.config(origin.address, credentials=CREDENTIALS))
    await copied(edge, "a.txt")
    serve_versioned(origin, "/a.txt", b"version 2", '"v2"', **{"Content-MD5": b64md5(b"x")})
    answer = await refresh(edge.port, "a.txt")
    assert answer["results"][0]["result"] == "failed"
    assert answer["results"][0]["reason"].startswith("Content-MD5 md5 mismatch")
    assert (await edge.get("a.txt")).body == b"version 1"
    assert temp_files(edge) == []


@pytest_twisted.ensureDeferred
async def test_an_open_breaker_refuses_refreshes_without_asking(edges, origin):
    """While the origin's circuit breaker is open, a refresh fails at once with that
    reason, and the origin is not asked."""
    origin.serve("/down", b"", status=503)
    serve_versioned(origin, "/b.txt", b"b", '"b"')
    config = edges.config(
        origin.address,
        credentials=CREDENTIALS,
        fetch={"breaker": {"failures": 1, "window": 60, "open": 600}},
    )
    edge = await edges.start(config)
    (edge.data_dir / BUCKET / "b.txt").write_bytes(b"b")
    await copied(edge, "down")
    before = len(origin.requests)
    answer = await refresh(edge.port, "b.txt")
    assert answer["results"][0]["result"] == "failed"
    assert "circuit breaker open" in answer["results"][0]["reason"]
    assert len(origin.requests) == before


@pytest_twisted.ensureDeferred
async def test_the_whole_story_on_a_real_twistd_edge(tmp_path, origin):
    """`twistd cosedge` as an operator runs it: a copy with a matching Content-MD5 is served
    with the origin's Content-Type, a mismatching one stores nothing, and `cosedge-admin
    refresh` keeps (304, asked with the ETag), replaces (200) and deletes (404 with
    --delete-missing)."""
    body = b"first version"
    headers = {"Content-MD5": b64md5(body), "Content-Type": "text/x-first"}
    serve_versioned(origin, "/doc", body, '"d1"', **headers)
    origin.serve("/bad", b"bytes", headers={"Content-MD5": b64md5(b"other")})
    data_dir = tmp_path / "data"
    config = tmp_path / "edge.yaml"
    config.write_text(
        "listen: 'tcp:0:interface=127.0.0.1'\n"
        f"data_dir: {data_dir}\n"
        "extra_origin_cidrs: ['127.0.0.1/32']\n"
        f"credentials: [{{secret_id: {SECRET_ID}, secret_key: {SECRET_KEY}}}]\n"
        f"buckets:\n  {BUCKET}:\n    origin: {{address: '{origin.address}'}}\n"
    )
    proc = start_twistd("--config", str(config), cwd=tmp_path)
    try:
        port, output = await deferToThread(wait_ready, proc)
        for key in ("doc", "bad"):
            assert (await request(port, f"/{BUCKET}/{key}", host="127.0.0.1")).status == 302
        # The copy has ended (its metadata recorded too) when it logs.
        await wait_until(lambda: f"Copied {BUCKET}/doc" in output.text())
        await wait_until(lambda: "Content-MD5 md5 mismatch" in output.text())
        hit = await request(port, f"/{BUCKET}/doc", host="127.0.0.1")
        assert (hit.body, hit.header("content-type")) == (body, "text/x-first")
        assert not (data_dir / BUCKET / "bad").exists()

        out, err, code = await admin(port, "refresh", BUCKET, "doc")
        assert code == 0 and 'doc\tkept\tETag "d1"' in out, err
        assert origin.requests_for("/doc")[-1].headers["if-none-match"] == '"d1"'
        serve_versioned(origin, "/doc", b"second", '"d2"', **{"Content-Type": "text/x-second"})
        out, err, code = await admin(port, "refresh", BUCKET, "doc")
        assert code == 0 and 'doc\treplaced\tETag "d2", 6 bytes' in out, err
        hit = await request(port, f"/{BUCKET}/doc", host="127.0.0.1")
        assert (hit.body, hit.header("content-type")) == (b"second", "text/x-second")
        del origin.replies["/doc"]
        out, err, code = await admin(port, "refresh", BUCKET, "doc", "--delete-missing")
        assert code == 0 and "doc\tdeleted\torigin answered 404" in out, err
        assert not (data_dir / BUCKET / "doc").exists()
        assert "Traceback" not in output.text()
    finally:
        proc.send_signal(signal.SIGTERM)
        await deferToThread(proc.wait, 20)


@pytest_twisted.ensureDeferred
async def test_a_refresh_asks_by_the_rule_as_a_copy_does(edges, origin):
    """A rule that rewrites the origin path is followed by the refresh too: the
    conditional GET goes to the rewritten path the copy was fetched from."""
    edge = await edges.start(edges.config(None, credentials=CREDENTIALS))
    out, err, code = await admin(
        edge.port, "origin", "set", BUCKET, origin.address, "--rewrite-prefix", "img/=static/"
    )
    assert code == 0, err
    serve_versioned(origin, "/static/a.png", b"png", '"p1"')
    await copied(edge, "img/a.png")
    assert (edge.data_dir / BUCKET / "img" / "a.png").read_bytes() == b"png"
    answer = await refresh(edge.port, "img/a.png")
    assert answer["results"][0]["result"] == "kept"
    assert origin.requests_for("/static/a.png")[-1].headers["if-none-match"] == '"p1"'
    assert origin.requests_for("/img/a.png") == []
