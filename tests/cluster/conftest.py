"""Fixtures that start the real servers the cluster tests run against, on 127.0.0.1:
Redis (`redis_server`) and SeaweedFS (`seaweedfs`, `seaweedfs_factory`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.redis_server import RedisServer
from tests.cluster.seaweedfs_server import seaweedfs, seaweedfs_factory

__all__ = ["seaweedfs", "seaweedfs_factory"]


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
