"""The bucket folder is a boundary: no listing, copy, upload or delete ever leaves it, and
a DELETE wins over an origin copy of the key that is still running.

Every test plants a symbolic link (or a hostile prefix) pointing at a folder outside the
data folder and checks that nothing there is listed, created or removed.
"""

from __future__ import annotations

import os
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from qcloud_cos.cos_exception import CosServiceError

import edge.store.folder.etags as etags_module
from edge.api.signature import sign
from tests.integration.conftest import BUCKET, DOMAIN, Reply, request
from tests.integration.test_management_api import (
    CREDENTIALS,
    SECRET_ID,
    SECRET_KEY,
    call,
    client,
)


def files_under(path: Path) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(root, name), path)
        for root, dirs, files in os.walk(path)
        for name in files + dirs
    )


async def signed(
    port: int,
    method: str,
    key: str = "",
    params: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Reply:
    """A request signed with the test credential as the SDKs sign: the Host (which names
    the bucket) and `params`, which go in the query."""
    params = params or {}
    auth = sign(SECRET_ID, SECRET_KEY, method, "/" + key, params, {"host": DOMAIN})
    path = "/" + urllib.parse.quote(key)
    if params:
        path += "?" + urllib.parse.urlencode(params)
    return await request(port, path, method=method, headers={"Authorization": auth}, body=body)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the data folder, with one file in it."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_bytes(b"not yours")
    return folder


@pytest_twisted.async_fixture
async def linked_edge(edges, origin, outside):
    """An edge with credentials and an origin whose bucket holds `escape -> outside`."""
    running = await edges.start(edges.config(origin.address, credentials=CREDENTIALS))
    (running.data_dir / BUCKET / "escape").symlink_to(outside, target_is_directory=True)
    (running.data_dir / BUCKET / "inside.txt").write_bytes(b"inside")
    return running


@pytest.mark.parametrize(
    "params",
    [
        {"prefix": "../", "delimiter": "/"},
        {"prefix": "../../"},
        {"prefix": "../../../../", "max-keys": "1"},
        {"prefix": "a/./b"},
        {"prefix": "/etc/"},
        {"prefix": "a\\b"},
        {"prefix": "a\x01"},
        {"marker": "../x"},
    ],
)
@pytest_twisted.ensureDeferred
async def test_listing_prefix_that_no_key_can_have_is_refused(linked_edge, params):
    """`..`/`.` segments, a leading '/', backslashes and control characters in prefix or
    marker are 400 InvalidArgument: no folder of another bucket or of the host is listed,
    and no NextMarker leaks a name from outside."""
    other = linked_edge.data_dir / "other-bucket"
    other.mkdir()
    (other / "private.txt").write_bytes(b"other")
    reply = await signed(linked_edge.port, "GET", params=params)
    assert reply.status == 400, reply.body
    assert b"<Code>InvalidArgument</Code>" in reply.body
    for leak in (b"other-bucket", b"private", b".cosedge", b"NextMarker"):
        assert leak not in reply.body


@pytest_twisted.ensureDeferred
async def test_listing_never_follows_a_folder_link(linked_edge, outside):
    """A prefix naming a linked folder lists nothing from behind the link (no key, no
    common prefix, no NextMarker), and a full listing shows the bucket's own files only."""
    (outside / "sub").mkdir()
    (outside / "sub" / "deep.txt").write_bytes(b"deep")
    (outside / "zzz.txt").write_bytes(b"z")
    for params in (
        {"prefix": "escape/"},
        {"prefix": "escape/", "delimiter": "/"},
        {"prefix": "escape/", "max-keys": "1"},
    ):
        under = await signed(linked_edge.port, "GET", params=params)
        assert under.status == 200, under.body
        for leak in (b"secret", b"sub", b"zzz", b"<Contents>", b"NextMarker"):
            assert leak not in under.body, (params, under.body)
    full = await signed(linked_edge.port, "GET")
    assert full.status == 200
    assert b"<Key>inside.txt</Key>" in full.body and b"secret" not in full.body


@pytest_twisted.ensureDeferred
async def test_partial_dot_prefix_still_lists_matching_keys(linked_edge):
    """A partial last segment like `..` is only a key's beginning: it lists `..a`."""
    (linked_edge.data_dir / BUCKET / "..a").write_bytes(b"dots")
    reply = await signed(linked_edge.port, "GET", params={"prefix": ".."})
    assert reply.status == 200
    assert b"<Key>..a</Key>" in reply.body and b"inside.txt" not in reply.body


@pytest_twisted.ensureDeferred
async def test_copy_of_a_key_below_a_folder_link_writes_nothing(linked_edge, origin, outside):
    """An anonymous miss on `escape/x` still redirects, but the copy fails with a logged
    reason before fetching: nothing is created behind the link (nor in `.cosedge/tmp`)."""
    origin.serve("/escape/new/x.txt", b"planted")
    events: list[dict[str, Any]] = []
    from twisted.logger import globalLogPublisher

    globalLogPublisher.addObserver(events.append)
    try:
        reply = await linked_edge.get("escape/new/x.txt")
        assert reply.status == 302
        await linked_edge.copies_done()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert files_under(outside) == ["secret.txt"]
    assert files_under(linked_edge.data_dir / ".cosedge" / "tmp") == []
    assert linked_edge.copier.counters["failed"] == 1
    reasons = [str(e.get("reason", "")) for e in events if e.get("key") == "escape/new/x.txt"]
    assert any("symbolic link" in r for r in reasons), reasons
    assert origin.requests_for("/escape/new/x.txt") == []  # no bandwidth spent either


@pytest_twisted.ensureDeferred
async def test_signed_put_and_delete_below_a_folder_link_are_refused(linked_edge, outside):
    """PUT and DELETE of `escape/...` answer 400 InvalidArgument naming the link, and
    neither write nor remove anything behind it; the same PUT inside the bucket works."""
    put = await signed(linked_edge.port, "PUT", "escape/sub/planted.txt", body=b"planted")
    assert put.status == 400, put.body
    assert b"<Code>InvalidArgument</Code>" in put.body and b"symbolic link" in put.body
    delete = await signed(linked_edge.port, "DELETE", "escape/secret.txt")
    assert delete.status == 400, delete.body
    assert files_under(outside) == ["secret.txt"]
    assert files_under(linked_edge.data_dir / ".cosedge" / "tmp") == []
    fine = await signed(linked_edge.port, "PUT", "real/ok.txt", body=b"ok")
    assert fine.status == 200
    assert (linked_edge.data_dir / BUCKET / "real" / "ok.txt").read_bytes() == b"ok"


@pytest_twisted.ensureDeferred
async def test_multipart_complete_below_a_folder_link_is_refused(linked_edge, outside):
    """Completing a multipart upload of `escape/big.bin` is 400 InvalidArgument and
    writes nothing behind the link."""
    cos = client(linked_edge.port)
    started = await call(cos.create_multipart_upload, Bucket=BUCKET, Key="escape/big.bin")
    upload_id = started["UploadId"]
    part = await call(
        cos.upload_part,
        Bucket=BUCKET,
        Key="escape/big.bin",
        Body=b"p" * 1000,
        PartNumber=1,
        UploadId=upload_id,
    )
    try:
        await call(
            cos.complete_multipart_upload,
            Bucket=BUCKET,
            Key="escape/big.bin",
            UploadId=upload_id,
            MultipartUpload={"Part": [{"PartNumber": 1, "ETag": part["ETag"]}]},
        )
    except CosServiceError as e:
        assert e.get_status_code() == 400 and e.get_error_code() == "InvalidArgument"
    else:
        raise AssertionError("completing below a folder link must fail")
    assert files_under(outside) == ["secret.txt"]


@pytest_twisted.ensureDeferred
async def test_delete_wins_over_a_running_copy(linked_edge, origin):
    """A DELETE answered while the origin copy of the key is still downloading makes the
    copy drop its result: the key stays deleted, nothing is left in tmp or locks."""
    origin.serve("/late.txt", b"resurrected", body_delay=1.0)
    miss = await linked_edge.get("late.txt")
    assert miss.status == 302
    assert linked_edge.copier.in_flight()
    delete = await signed(linked_edge.port, "DELETE", "late.txt")
    assert delete.status == 204
    await linked_edge.copies_done()
    assert not (linked_edge.data_dir / BUCKET / "late.txt").exists()
    assert linked_edge.copier.counters["stored"] == 0
    state = linked_edge.data_dir / ".cosedge"
    assert files_under(state / "tmp") == [] and files_under(state / "locks") == []
    # A miss after the DELETE is a new copy and publishes as usual.
    origin.serve("/late.txt", b"fresh")
    assert (await linked_edge.get("late.txt")).status == 302
    await linked_edge.copies_done()
    assert (linked_edge.data_dir / BUCKET / "late.txt").read_bytes() == b"fresh"


@pytest_twisted.ensureDeferred
async def test_delete_wins_over_a_copy_still_queued(edges, origin):
    """With every copy slot busy, a miss's copy waits in the queue; a DELETE of its key
    meanwhile drops it, so it never fetches nor brings the object back (the tombstone
    only reaches copies that already run)."""
    origin.serve("/busy.txt", b"slow", headers_delay=1.0)
    origin.serve("/queued.txt", b"resurrected")
    edge = await edges.start(
        edges.config(origin.address, credentials=CREDENTIALS, fetch={"concurrency": 1})
    )
    assert (await edge.get("busy.txt")).status == 302
    assert (await edge.get("queued.txt")).status == 302
    assert [j.key for j in edge.copier.in_flight()] == ["busy.txt", "queued.txt"]
    assert (await signed(edge.port, "DELETE", "queued.txt")).status == 204
    await edge.copies_done()
    assert not (edge.data_dir / BUCKET / "queued.txt").exists()
    assert origin.requests_for("/queued.txt") == []


@pytest_twisted.ensureDeferred
async def test_listing_hashes_small_files_off_the_reactor(linked_edge, monkeypatch):
    """A listing of many small, never-hashed files computes their ETags in a thread, not
    on the reactor thread, and still lists the right MD5s."""
    import hashlib

    for i in range(50):
        (linked_edge.data_dir / BUCKET / f"small/{i:02d}.txt").parent.mkdir(exist_ok=True)
        (linked_edge.data_dir / BUCKET / f"small/{i:02d}.txt").write_bytes(b"x%d" % i)
    threads: list[str] = []
    # Count real hashing wherever it happens (the base code's name and the current one).
    for name in ("hash_fd",):
        real = getattr(etags_module, name, None)
        if real is not None:

            def spy(arg: Any, _real: Any = real) -> str:
                threads.append(threading.current_thread().name)
                return str(_real(arg))

            monkeypatch.setattr(etags_module, name, spy)
    reply = await signed(linked_edge.port, "GET", params={"prefix": "small/"})
    assert reply.status == 200
    assert reply.body.count(b"<Contents>") == 50
    assert f'<ETag>"{hashlib.md5(b"x7").hexdigest()}"</ETag>'.encode() in reply.body
    assert len(threads) == 50
    assert threading.main_thread().name not in threads
