"""Object writes: PUT with metadata and DELETE, and the requests they refuse."""

from __future__ import annotations

import hashlib

import pytest_twisted

from edge.testing.deferreds import fired
from tests.api.conftest import BUCKET, ApiClient


@pytest_twisted.ensureDeferred
async def test_put_with_metadata_is_listed_and_served(api: ApiClient) -> None:
    """PUT stores the bytes with Content-Type and x-cos-meta-*: the ETag is the MD5, the
    listing shows key and size, and a signed GET sends the metadata back."""
    body = b"hello world"
    put = await api.call(
        "PUT",
        "/docs/a.txt",
        body=body,
        headers={"content-type": "text/plain", "x-cos-meta-owner": "ops"},
    )
    assert put.status == 200
    assert put.headers["etag"] == f'"{hashlib.md5(body).hexdigest()}"'
    listing = (await api.call("GET", "/")).xml()
    (item,) = listing.iterfind("Contents")
    assert item.findtext("Key") == "docs/a.txt"
    assert item.findtext("Size") == str(len(body))
    assert item.findtext("ETag") == put.headers["etag"]
    got = await api.call("GET", "/docs/a.txt")
    assert got.body == body
    assert got.headers["content-type"] == "text/plain"
    assert got.headers["x-cos-meta-owner"] == "ops"


@pytest_twisted.ensureDeferred
async def test_delete_removes_the_object(api: ApiClient) -> None:
    """DELETE is 204 and the object is gone from the store."""
    await api.call("PUT", "/k", body=b"x")
    assert (await api.call("DELETE", "/k")).status == 204
    assert fired(api.store.open_object(BUCKET, "k")) is None


@pytest_twisted.ensureDeferred
async def test_object_refusals(api: ApiClient) -> None:
    """POST on an object is 405; an object in an unknown bucket is 404; `?tagging` is 501
    and does not delete; a bad Content-MD5 is 400 and a copy is 501."""
    await api.call("PUT", "/k", body=b"x")
    post = await api.call("POST", "/k")
    assert (post.status, post.code()) == (405, "MethodNotAllowed")
    missing = await api.call("PUT", "/nobucket-1250000000/k", host="127.0.0.1", body=b"x")
    assert (missing.status, missing.code()) == (404, "NoSuchBucket")
    tagging = await api.call("DELETE", "/k", params={"tagging": ""})
    assert (tagging.status, tagging.code()) == (501, "NotImplemented")
    assert fired(api.store.open_object(BUCKET, "k")) is not None
    digest = await api.call("PUT", "/k", body=b"y", headers={"content-md5": "bm90LW1kNQ=="})
    assert (digest.status, digest.code()) == (400, "InvalidDigest")
    copy = await api.call("PUT", "/k2", headers={"x-cos-copy-source": f"{BUCKET}/k"})
    assert (copy.status, copy.code()) == (501, "NotImplemented")


@pytest_twisted.ensureDeferred
async def test_metadata_must_be_visible_ascii(api: ApiClient) -> None:
    """A metadata value HTTP could not send back is refused before anything is stored."""
    reply = await api.call("PUT", "/k", body=b"x", headers={"x-cos-meta-note": "caf\u00e9"})
    assert (reply.status, reply.code()) == (400, "InvalidArgument")
    assert fired(api.store.open_object(BUCKET, "k")) is None
