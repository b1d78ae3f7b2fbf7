"""Copy records with the S3 store (SPEC §8, §9), against a real SeaweedFS and redis-server:
each node records the copies it runs, and `started` on a miss means handed on, since the
key's lock is asked of Redis after the answer has gone."""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.cluster.test_nodes import _two, cluster, origin  # noqa: F401 (fixtures)
from tests.integration.conftest import BUCKET, wait_until

pytestmark = pytest.mark.cluster


@pytest_twisted.ensureDeferred
async def test_a_miss_on_the_s3_store_is_recorded_and_a_lost_lock_is_counted_elsewhere(
    cluster,  # noqa: F811
    origin,  # noqa: F811
):
    """A's miss starts the copy and A records it stored with the miss's request id; B's
    miss of the same key meanwhile also says `started` (the Redis lock answers later), and
    B, finding the lock taken, counts it `elsewhere` and fetches nothing."""
    origin.serve("/s3.bin", b"z" * 2000, headers_delay=1.0)
    a, b = await _two(cluster)
    miss = await a.get("s3.bin")
    assert miss.status == 302 and miss.header("x-cosedge-copy") == "started"
    await wait_until(lambda: a.copier.in_flight() != [] and a.copier.in_flight()[0].started)
    other = await b.get("s3.bin")
    assert other.status == 302 and other.header("x-cosedge-copy") == "started"
    await wait_until(lambda: not a.copier.in_flight() and not b.copier.in_flight(), 20)
    record = a.copier.records.status(BUCKET, "s3.bin")
    assert record is not None and record.state == "stored" and record.bytes == 2000
    assert record.request_id == miss.header("x-cos-request-id")
    assert b.copier.records.counters(BUCKET)["elsewhere"] == 1
    assert b.copier.records.status(BUCKET, "s3.bin") is None
    assert len(origin.requests_for("/s3.bin")) == 1
