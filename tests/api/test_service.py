"""GET Service: buckets the signing key may manage, including those the API creates."""

from __future__ import annotations

import pytest_twisted

from tests.api.conftest import BUCKET, ApiClient

NEW = "newbucket-1250000000"


@pytest_twisted.ensureDeferred
async def test_created_bucket_is_listed(api: ApiClient) -> None:
    """A bucket made with PUT Bucket (path style) shows up in GET Service next to the
    configured one, each with COS's elements."""
    created = await api.call("PUT", f"/{NEW}", host="127.0.0.1")
    assert created.status == 200
    reply = await api.call("GET", "/", host="127.0.0.1")
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/xml"
    root = reply.xml()
    assert root.tag == "ListAllMyBucketsResult"
    assert root.findtext("Owner/ID") == "cosedge"
    names = [b.findtext("Name", "") for b in root.iterfind("Buckets/Bucket")]
    assert sorted(names) == sorted([BUCKET, NEW])
    assert all(b.findtext("CreationDate", "").endswith(".000Z") for b in root.iter("Bucket"))


@pytest_twisted.ensureDeferred
async def test_service_takes_only_get(api: ApiClient) -> None:
    """Anything but GET addressed to no bucket is 405 MethodNotAllowed."""
    reply = await api.call("DELETE", "/", host="127.0.0.1")
    assert (reply.status, reply.code()) == (405, "MethodNotAllowed")
