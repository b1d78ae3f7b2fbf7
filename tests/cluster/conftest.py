"""Fixtures that start the real servers the cluster tests run against, on 127.0.0.1:
Redis (`redis_server`), SeaweedFS (`seaweedfs`, `seaweedfs_factory`), Ceph RGW (`ceph_rgw`),
and `s3_server`, which runs an S3 test against each of the two stores."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.ceph_server import ceph_rgw
from tests.cluster.redis_server import RedisServer
from tests.cluster.s3_server import s3_server
from tests.cluster.seaweedfs_server import seaweedfs, seaweedfs_factory

__all__ = ["ceph_rgw", "s3_server", "seaweedfs", "seaweedfs_factory"]


@pytest.fixture(scope="session")
def _redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(_redis_session: RedisServer) -> Iterator[RedisServer]:
    """The session's redis-server, running (restarted if a test left it stopped or
    paused) and empty, so tests neither wait for each other's locks nor see their keys."""
    server = _redis_session
    if server.running:
        server.resume()
    else:
        server.stop()
        server.start()
    server.cli("FLUSHALL")
    yield server
    if server.running:
        server.resume()
    else:
        server.stop()
        server.start()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Ceph runs only when asked for (`-m ceph`, or `ceph` in `-k`): its cluster takes ~13 s
    to start and ~120 Debian packages to install, so the default run stays on SeaweedFS and
    CI runs the Ceph variants as a step of their own."""
    asked = f"{config.option.markexpr or ''} {config.option.keyword or ''}"
    if "ceph" in asked:
        return
    ceph = [item for item in items if item.get_closest_marker("ceph")]
    if ceph:
        config.hook.pytest_deselected(items=ceph)
        items[:] = [item for item in items if not item.get_closest_marker("ceph")]
