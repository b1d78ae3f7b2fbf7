"""A copy's provenance in the S3 store (SPEC §12), against the session's real SeaweedFS: the
origin's ETag, Last-Modified and Content-Type survive in the object's metadata, never leak
out as `x-cos-meta-*`, and a refresh's replace brings the new ones."""

from __future__ import annotations

import os

import pytest
import pytest_twisted

from edge.s3 import S3Client
from edge.store.interface import ObjectMeta, OriginProvenance
from edge.store.s3 import S3Store
from tests.cluster import test_s3_store as s3_store_tests
from tests.cluster.test_s3_store import MiB, bucket_of, read

# The S3 store tests' fixtures (a client of the session's SeaweedFS, fresh stores).
s3 = s3_store_tests.s3
make_store = s3_store_tests.make_store
store = s3_store_tests.store

pytestmark = pytest.mark.cluster

V1 = OriginProvenance('"v1"', "Tue, 01 Dec 2026 10:00:00 GMT", "text/x-one")
V2 = OriginProvenance('"v2"', "Wed, 02 Dec 2026 10:00:00 GMT", "text/x-two")


async def copy(
    store: S3Store, key: str, data: bytes, origin: OriginProvenance, replace: bool = False
) -> bool:
    """Write as an origin copy does: the metadata known before the first byte."""
    meta = ObjectMeta(content_type=origin.content_type, origin=origin)
    pending = store.new_upload(bucket_of(store), key, meta=meta)
    for at in range(0, len(data), MiB):
        pending.write(data[at : at + MiB])
    return bool(await pending.publish(replace, meta))


async def opened_meta(store: S3Store, key: str) -> tuple[ObjectMeta, str]:
    obj = await store.open_object(bucket_of(store), key)
    assert obj is not None
    try:
        return obj.meta, obj.content_type
    finally:
        obj.close()


@pytest_twisted.ensureDeferred
async def test_provenance_is_kept_apart_from_user_metadata(store: S3Store) -> None:
    """A copied object carries the origin's three headers back as `meta.origin`, is served
    with the origin's Content-Type, and shows no `x-cos-meta-cosedge-*` header."""
    assert await copy(store, "a.bin", b"bytes", V1)
    meta, content_type = await opened_meta(store, "a.bin")
    assert meta.origin == V1
    assert meta.user == {}
    assert content_type == "text/x-one" and meta.content_type == "text/x-one"


@pytest_twisted.ensureDeferred
async def test_a_big_copy_starts_its_multipart_upload_with_the_provenance(
    store: S3Store, s3: S3Client
) -> None:
    """Above the multipart threshold the parts go up while the body is written, under the
    provenance given at `new_upload`: the object is one multipart upload (its ETag says 3
    parts), holds the bytes, and carries the provenance."""
    data = os.urandom(12 * MiB + 1)
    meta = ObjectMeta(content_type=V1.content_type, origin=V1)
    pending = store.new_upload(bucket_of(store), "big", meta=meta)
    for at in range(0, len(data), MiB):
        pending.write(data[at : at + MiB])
    parts = pending._parts  # begun while writing: with the provenance, not the defaults
    assert parts is not None and parts.metadata["cosedge-origin-etag"] == '"v1"'
    assert parts.content_type == "text/x-one"
    assert await pending.publish(False, meta)
    assert pending._parts is parts  # completed as begun, not aborted and sent again
    meta, _ = await opened_meta(store, "big")
    assert meta.origin == V1
    obj = await store.open_object(bucket_of(store), "big")
    assert obj is not None
    etag = await obj.etag()
    obj.close()
    assert etag.endswith("-3")
    assert await read(s3, store, "big") == data


@pytest_twisted.ensureDeferred
async def test_replace_brings_the_new_provenance_and_an_upload_drops_it(store: S3Store) -> None:
    """A refresh's replace records the new origin headers; a PUT that replaces the object
    leaves none (and cannot forge them through x-cos-meta-cosedge-origin-*)."""
    assert await copy(store, "k", b"one", V1)
    assert not await copy(store, "k", b"two", V2)  # a plain copy never overwrites
    assert await copy(store, "k", b"two", V2, replace=True)
    meta, content_type = await opened_meta(store, "k")
    assert meta.origin == V2 and content_type == "text/x-two"
    pending = store.new_upload(bucket_of(store), "k")
    pending.write(b"uploaded")
    forged = ObjectMeta("", {"x-cos-meta-cosedge-origin-etag": '"forged"', "x-cos-meta-a": "b"})
    assert await pending.publish(True, forged)
    meta, _ = await opened_meta(store, "k")
    assert meta.origin is None
    assert meta.user == {"x-cos-meta-a": "b"}
