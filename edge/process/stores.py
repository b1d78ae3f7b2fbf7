"""Which store an edge runs on, assembled from the config: the folder store (the embedded
default) or, with `store: {type: s3}`, an S3 store shared by a cluster (SPEC §8).

For an S3 store each process builds its own client (one persistent connection pool), its
own `RedisCoordinator` and its own `SharedState` writer; only the main process pulls the
shared state into the node's folders (workers see it there, as they see each other's). The
store is prepared when the service starts and never fails start-up for an unreachable
store: `S3Store.prepare` retries on a timer, and requests meanwhile are answered 503.
`data_dir` then holds only local scratch and the node's copy of the shared state.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from edge.config import EdgeConfig

log = Logger()

# How often the main process of a node lists the state bucket for changes made elsewhere
# (a Redis notice brings them at once; this is what a lost notice costs at most).
STATE_PULL_INTERVAL = 1.0
LOCAL_FOLDERS = ("tmp", "buckets", "origin")


@dataclass
class Assembly:
    """A store and what it needs around it in the service tree."""

    store: Any
    state_dir: Path  # where the registry and the rules keep this node's state
    services: list[IService] = field(default_factory=list)  # started before the rest
    refreshers: list[Callable[[], Any]] = field(default_factory=list)
    shared: Any = None  # edge.store.s3.state.SharedState, for the registry and the rules


def prepare_local(config: EdgeConfig) -> None:
    """An S3 node's local folders (scratch and state), made by the user the edge runs as
    (`Options._check_data_dir` switches ids first); raises `OSError` naming the folder."""
    state = local_state_dir(config)
    for name in LOCAL_FOLDERS:
        folder = state / name
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK, effective_ids=True):
            raise PermissionError(errno.EACCES, "Permission denied", str(folder))


def local_state_dir(config: EdgeConfig) -> Path:
    from edge.store.folder.layout import STATE_DIR_NAME

    return Path(os.path.abspath(config.data_dir)) / STATE_DIR_NAME


def folder_assembly(store: Any) -> Assembly:
    """The embedded default, exactly as before: the store `Options` prepared."""
    return Assembly(store, store.state_dir, refreshers=[store.refresh_meta_buckets])


def bucket_not_made(failure: Failure, bucket: str) -> None:
    """A bucket added by a reload or another process whose storage could not be made: it
    is served (misses redirect), so the operator must hear why its copies will fail."""
    from edge.store.interface import StoreUnavailable

    if failure.check(StoreUnavailable):  # an S3 store that is out: made when it is back
        return
    error = failure.value
    reason = f"{error.filename}: {error.strerror}" if isinstance(error, OSError) else str(error)
    log.error(
        "Bucket {bucket} is served, but its storage cannot be made: {reason}",
        bucket=bucket,
        reason=str(reason),
    )


def s3_assembly(config: EdgeConfig, reactor: Any, *, main: bool) -> Assembly:
    """An S3 store, its Redis and the shared state writer (and puller when `main`)."""
    from edge.cluster.redis import RedisCoordinator
    from edge.process.sweeper import SWEEP_INTERVAL
    from edge.s3 import S3Client
    from edge.store.s3 import S3Store
    from edge.store.s3.state import Mirror, SharedState

    settings = config.store
    coordination = config.coordination
    assert coordination is not None  # the config refuses s3 without it
    state_dir = local_state_dir(config)
    client = S3Client(
        settings.endpoint,
        settings.region,
        settings.access_key_id,
        settings.secret_access_key,
        reactor=reactor,
    )
    coordinator = RedisCoordinator(coordination.redis)
    store = S3Store(
        client,
        config.buckets,
        state_dir / "tmp",
        bucket_template=settings.bucket_template,
        coordinator=coordinator,
        lock_ttl=coordination.lock_ttl,
        sweep_interval=SWEEP_INTERVAL,
        reactor=reactor,
    )
    mirrors = [
        Mirror("buckets/", state_dir / "buckets", state_dir / "buckets.stamp"),
        Mirror("origin/", state_dir / "origin", state_dir / "origin" / ".stamp", ".json"),
    ]
    shared = SharedState(
        client,
        store.gate,
        settings.state_bucket,
        mirrors,
        coordinator,
        reactor,
        pulling=main,
        check_interval=STATE_PULL_INTERVAL,
    )
    services: list[IService] = [coordinator, _StoreService(store, client), shared]
    log.info(
        "Buckets live in the S3 store at {endpoint} (as {template}), shared state in {state}, "
        "coordination through {redis}",
        endpoint=settings.endpoint,
        template=settings.bucket_template,
        state=settings.state_bucket,
        redis=str(coordination.redis),
    )
    return Assembly(store, state_dir, services, shared=shared)


class _StoreService(Service):
    """Prepares the S3 store when the edge starts; stops its retries and closes its
    connections when it stops."""

    name = "s3-store"

    def __init__(self, store: Any, client: Any) -> None:
        self._store = store
        self._client = client

    def startService(self) -> None:
        super().startService()
        self._store.prepare().addErrback(self._not_prepared)

    def _not_prepared(self, failure: Failure) -> None:
        log.failure("Preparing the S3 store failed", failure)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._store.stop()
        return Deferred.fromCoroutine(self._client.close())
