"""Fixtures for the cluster tests: real stores (SeaweedFS) started on 127.0.0.1."""

from tests.cluster.seaweedfs_server import seaweedfs, seaweedfs_factory

__all__ = ["seaweedfs", "seaweedfs_factory"]
