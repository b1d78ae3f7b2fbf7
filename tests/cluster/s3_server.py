"""Which real S3 store a cluster test talks to: `s3_server` runs a test once against
SeaweedFS and once against Ceph RGW (marked `ceph`), so the client and store tests are
written once and checked against both a lenient and a strict implementation; and
`remove_bucket`, with which a test's fixtures give back the buckets it made."""

from __future__ import annotations

from typing import Protocol

import pytest

from edge.s3 import S3Client, S3Error


class S3Server(Protocol):
    """What the tests need of a running store: where it is and whom to sign as."""

    @property
    def endpoint(self) -> str: ...

    region: str
    access_key: str
    secret_key: str


@pytest.fixture(params=["seaweedfs", pytest.param("ceph", marks=pytest.mark.ceph)])
def s3_server(request: pytest.FixtureRequest) -> S3Server:
    """The session's SeaweedFS or Ceph RGW (started on first use)."""
    server: S3Server = request.getfixturevalue(
        "seaweedfs" if request.param == "seaweedfs" else "ceph_rgw"
    )
    return server


async def remove_bucket(client: S3Client, bucket: str) -> None:
    """Abort the uploads of `bucket`, delete its objects and then the bucket (if it is
    there): SeaweedFS gives each bucket volumes of its own, and a session that keeps ~25
    of them runs out and refuses even to make a bucket."""
    if not await client.head_bucket(bucket):
        return
    try:
        for upload in await client.list_multipart_uploads(bucket):
            await client.abort_multipart_upload(bucket, upload.key, upload.upload_id)
        while True:
            page = await client.list_objects_v2(bucket)
            for item in page.contents:
                await client.delete_object(bucket, item.key)
            if not page.is_truncated:
                break
        await client.delete_bucket(bucket)
    except S3Error as e:
        if e.code != "NoSuchBucket":  # a bucket SeaweedFS half made: nothing to give back
            raise
