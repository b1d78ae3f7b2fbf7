"""Which real S3 store a cluster test talks to: `s3_server` runs a test once against
SeaweedFS and once against Ceph RGW (marked `ceph`), so the client and store tests are
written once and checked against both a lenient and a strict implementation."""

from __future__ import annotations

from typing import Protocol

import pytest


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
