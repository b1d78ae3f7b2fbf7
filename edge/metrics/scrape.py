"""A scrape: the text exposition of every process's metrics.

In multiprocess mode a fresh registry with the library's `MultiProcessCollector` reads
every process's files at each scrape (the library's documented way; the default registry
would show this process alone). Without a folder (in-process tests, tools) the default
registry is this process's whole truth.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

import edge.metrics.families  # noqa: F401 - the families exist before the first scrape
from edge.metrics.folder import in_use

CONTENT_TYPE = CONTENT_TYPE_LATEST


def exposition() -> bytes:
    """The metrics of the whole edge, in Prometheus text format."""
    folder = in_use()
    if folder is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(folder))
    return generate_latest(registry)
