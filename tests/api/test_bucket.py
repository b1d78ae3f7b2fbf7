"""Bucket operations: create, HEAD, DELETE, and their refusals (404, 405, 409, 501)."""

from __future__ import annotations

import pytest_twisted

from tests.api.conftest import ApiClient

NEW = "newbucket-1250000000"


@pytest_twisted.ensureDeferred
async def test_create_head_delete(api: ApiClient) -> None:
    """A created bucket answers HEAD, is refused a second PUT, and once deleted is gone."""
    assert (await api.call("PUT", f"/{NEW}", host="127.0.0.1")).status == 200
    again = await api.call("PUT", f"/{NEW}", host="127.0.0.1")
    assert (again.status, again.code()) == (409, "BucketAlreadyExists")
    assert (await api.call("HEAD", f"/{NEW}", host="127.0.0.1")).status == 200
    assert (await api.call("DELETE", f"/{NEW}", host="127.0.0.1")).status == 204
    gone = await api.call("HEAD", f"/{NEW}", host="127.0.0.1")
    assert gone.status == 404


@pytest_twisted.ensureDeferred
async def test_unknown_bucket_is_404(api: ApiClient) -> None:
    """Listing a bucket the edge does not have is 404 NoSuchBucket."""
    reply = await api.call("GET", "/nobucket-1250000000/", host="127.0.0.1")
    assert (reply.status, reply.code()) == (404, "NoSuchBucket")


@pytest_twisted.ensureDeferred
async def test_bucket_refusals(api: ApiClient) -> None:
    """POST on a bucket is 405; an unsupported sub-resource is 501; a configured bucket
    cannot be deleted through the API, and a bad bucket name cannot be created."""
    post = await api.call("POST", "/")
    assert (post.status, post.code()) == (405, "MethodNotAllowed")
    acl = await api.call("GET", "/", params={"acl": ""})
    assert (acl.status, acl.code()) == (501, "NotImplemented")
    configured = await api.call("DELETE", "/")
    assert (configured.status, configured.code()) == (403, "AccessDenied")
    bad = await api.call("PUT", "/Bad_Name", host="127.0.0.1")
    assert (bad.status, bad.code()) == (400, "InvalidBucketName")


@pytest_twisted.ensureDeferred
async def test_non_empty_bucket_is_not_deleted(api: ApiClient) -> None:
    """DELETE of an API bucket that still holds an object is 409 BucketNotEmpty."""
    await api.call("PUT", f"/{NEW}", host="127.0.0.1")
    await api.call("PUT", f"/{NEW}/k", host="127.0.0.1", body=b"x")
    reply = await api.call("DELETE", f"/{NEW}", host="127.0.0.1")
    assert (reply.status, reply.code()) == (409, "BucketNotEmpty")


@pytest_twisted.ensureDeferred
async def test_listing_prefixes_and_refusals(api: ApiClient) -> None:
    """A delimiter rolls keys up into CommonPrefixes, max-keys truncates with NextMarker,
    and a prefix no key could have is 400 InvalidArgument."""
    for key in ("a/1", "a/2", "b", "c"):
        assert (await api.call("PUT", f"/{key}", body=b"x")).status == 200
    rolled = (await api.call("GET", "/", params={"delimiter": "/"})).xml()
    assert [p.text for p in rolled.iterfind("CommonPrefixes/Prefix")] == ["a/"]
    assert [k.text for k in rolled.iterfind("Contents/Key")] == ["b", "c"]
    page = (await api.call("GET", "/", params={"max-keys": "2"})).xml()
    assert page.findtext("IsTruncated") == "true"
    assert page.findtext("NextMarker") == "a/2"
    bad = await api.call("GET", "/", params={"prefix": "../x"})
    assert (bad.status, bad.code()) == (400, "InvalidArgument")
