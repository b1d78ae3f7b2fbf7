"""API-made state shared by every node of a cluster (SPEC §8): buckets and origin rules.

Each node keeps the state it serves from in its local folders (`.cosedge/buckets/<name>`,
`.cosedge/origin/<bucket>.json` under its `data_dir`), read by `BucketRegistry` and
`OriginRules` and reloaded by the `StateWatcher` when their change stamp moves: that is
how worker processes on one node already see each other's changes. The state bucket of the
S3 store holds the truth, under the same names (`buckets/<name>`, `origin/<bucket>.json`).

A change through the API writes the store first (a bucket create-only, with
`If-None-Match: *`, so two nodes creating one bucket at once get one `BucketAlreadyExists`),
then the node's own folder, then a Redis notice on `cosedge:state`. On a notice, on a
timer (`check_interval`) and at start-up, one process per node (the main one: `pulling`)
lists the state bucket and makes its folders match: new and changed files written
atomically, vanished ones removed, and the stamp of each folder touched when anything moved.
A file newer than the listing is left alone, so a local change racing a pull is not undone.
The notice only hastens what the timer does anyway, so a lost one costs at most a second.

A brand-new node (empty `data_dir`) must not answer from state it has not got: until its
first pull it cannot tell a bucket made on another node from none at all (SPEC §8: 503, not
404). The stamps say whether the node has a copy: the first successful pull writes every
stamp, moved or not, so one left by an earlier run means the node serves from its copy at
once (even with the store out). The main process learns it from the pull itself, a worker
from the stamps; either way on the `StateWatcher` tick (`refresh`, run before the registry's
and the rules'), so what it lets through is already loaded when the next request comes.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from edge.cluster.redis import RedisCoordinator, RedisUnavailable
from edge.s3 import S3Client, S3Error
from edge.s3.bodies import Collector
from edge.store.interface import StoreUnavailable
from edge.store.s3.calls import StoreGate
from edge.store.statefiles import unlink_quietly, write_atomically

log = Logger()

CHANNEL = "cosedge:state"
MAX_STATE_FILE = 1024 * 1024


@dataclass(frozen=True)
class Mirror:
    """One prefix of the state bucket kept as one local folder, with its change stamp."""

    prefix: str  # "buckets/"
    folder: Path
    stamp: Path
    suffix: str = ""  # only names ending so are state (".json"): not the stamp, temp files


class SharedState(Service):
    """The state bucket as seen by one process; see the module docstring."""

    name = "shared-state"

    def __init__(
        self,
        client: S3Client,
        gate: StoreGate,
        bucket: str,
        mirrors: Sequence[Mirror],
        coordinator: RedisCoordinator | None,
        reactor: Any,
        *,
        pulling: bool = True,
        check_interval: float = 1.0,
    ) -> None:
        self._client = client
        self._gate = gate
        self.bucket = bucket
        self._mirrors = list(mirrors)
        self._redis = coordinator
        self._reactor = reactor
        self._pulling = pulling
        self._interval = check_interval
        self._timer: LoopingCall | None = None
        self._running: Deferred[None] | None = None
        self._again = False
        self._bucket_made = False
        self._has_copy = self._stamps_exist()
        self._pulled = False  # the main process's: a pull went through

    def startService(self) -> None:
        super().startService()
        if not self._pulling:
            return
        if self._redis is not None:
            self._redis.subscribe(CHANNEL, self._noticed).addErrback(
                lambda f: f.trap(RedisUnavailable)  # kept; made when Redis is back
            )
        self._timer = LoopingCall(self.pull_soon)
        self._timer.clock = self._reactor
        self._timer.start(self._interval, now=True)

    @property
    def has_copy(self) -> bool:
        """Whether this node holds the shared state: pulled once, now or in an earlier run."""
        return self._has_copy

    def refresh(self) -> None:
        """Look whether the node now has its copy (a `StateWatcher` refresher)."""
        if not self._has_copy:
            self._has_copy = self._pulled if self._pulling else self._stamps_exist()

    def _stamps_exist(self) -> bool:
        return all(mirror.stamp.exists() for mirror in self._mirrors)

    def _noticed(self, message: str) -> None:
        self.pull_soon()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._timer is not None and self._timer.running:
            self._timer.stop()
        self._timer = None
        running = self._running
        if running is None:
            return None
        done: Deferred[None] = Deferred()
        running.addBoth(lambda _: done.callback(None))
        return done

    # -- writes by the API ----------------------------------------------------------------

    def put(self, name: str, data: bytes, *, create_only: bool = False) -> Deferred[bool]:
        """Store `name` in the state bucket and tell the other nodes; fires False when
        `create_only` and it already exists. `StoreUnavailable` when the store cannot."""
        return Deferred.fromCoroutine(self._put(name, data, create_only))

    async def _put(self, name: str, data: bytes, create_only: bool) -> bool:
        await self._ensure_bucket()
        try:
            await self._gate.run(
                f"PUT {name} into {self.bucket}",
                self._put_raw(name, data, create_only),
            )
        except _Taken:
            return False
        await self._notify()
        return True

    async def _put_raw(self, name: str, data: bytes, create_only: bool) -> None:
        try:
            await self._client.put_object(
                self.bucket, name, data, "application/json", if_none_match=create_only
            )
        except S3Error as e:
            if create_only and e.status == 412:
                raise _Taken() from None
            raise

    def delete(self, name: str) -> Deferred[None]:
        """Remove `name` from the state bucket and tell the other nodes."""
        return Deferred.fromCoroutine(self._delete(name))

    async def _delete(self, name: str) -> None:
        await self._ensure_bucket()
        await self._gate.run(
            f"DELETE {name} from {self.bucket}", self._client.delete_object(self.bucket, name)
        )
        await self._notify()

    async def _ensure_bucket(self) -> None:
        if not self._bucket_made:
            await self._gate.run(
                f"create state bucket {self.bucket}", self._client.create_bucket(self.bucket)
            )
            self._bucket_made = True

    async def _notify(self) -> None:
        """Hasten the other nodes' pull; without Redis their timer gets there anyway."""
        if self._redis is None:
            return
        try:
            await self._redis.publish(CHANNEL, uuid.uuid4().hex)
        except RedisUnavailable:
            pass  # the coordinator warned once; the change is in the store already

    # -- pulls ----------------------------------------------------------------------------

    def pull_soon(self) -> Deferred[None]:
        """Pull now, or right after the pull that is running (notices coalesce)."""
        if self._running is not None:
            self._again = True
            return self._running
        self._again = False
        d: Deferred[None] = Deferred.fromCoroutine(self.pull())
        self._running = d

        def done(result: object) -> None:
            self._running = None
            if isinstance(result, Failure):
                if not result.check(StoreUnavailable):  # the gate warned once already
                    log.failure("Pulling the shared state failed; trying again", result)
            if self._again and self.running:
                self.pull_soon()

        d.addBoth(done)
        return d

    async def pull(self) -> None:
        """Make every local folder match the state bucket."""
        await self._ensure_bucket()
        for mirror in self._mirrors:
            started = time.time()
            remote = await self._list(mirror)
            moved = self._sync(mirror, remote, started, await self._fetch_changed(mirror, remote))
            if moved or not mirror.stamp.exists():  # the first: the node has its copy now
                write_atomically(mirror.stamp, uuid.uuid4().hex.encode("ascii"), durable=False)
        self._pulled = True

    async def _list(self, mirror: Mirror) -> dict[str, str]:
        """Names under the mirror's prefix and their ETags (hex MD5, unquoted)."""
        found: dict[str, str] = {}
        token: str | None = None
        while True:
            page = await self._gate.run(
                f"list {self.bucket}/{mirror.prefix}",
                self._client.list_objects_v2(
                    self.bucket, prefix=mirror.prefix, continuation_token=token
                ),
            )
            for item in page.contents:
                name = item.key[len(mirror.prefix) :]
                if _state_name(name, mirror.suffix):
                    found[name] = item.etag.strip('"')
            token = page.next_continuation_token
            if not page.is_truncated or token is None:
                return found

    async def _fetch_changed(self, mirror: Mirror, remote: dict[str, str]) -> dict[str, bytes]:
        changed: dict[str, bytes] = {}
        for name, etag in remote.items():
            if _md5_of(mirror.folder / name) == etag:
                continue
            data = await self._gate.run(
                f"GET {self.bucket}/{mirror.prefix}{name}", self._read(mirror.prefix + name)
            )
            if data is not None:
                changed[name] = data
        return changed

    async def _read(self, key: str) -> bytes | None:
        stream = await self._client.get_object(self.bucket, key)
        if stream is None:
            return None
        collector = Collector(self._reactor, 30.0, MAX_STATE_FILE)
        stream.deliver_body(collector)
        return await collector.finished

    def _sync(
        self, mirror: Mirror, remote: dict[str, str], started: float, fetched: dict[str, bytes]
    ) -> bool:
        """Write what changed and remove what went; True when anything moved."""
        mirror.folder.mkdir(parents=True, exist_ok=True)
        moved = False
        for name, data in fetched.items():
            path = mirror.folder / name
            if _mtime(path) > started:
                continue  # written here after the listing: that write is newer
            write_atomically(path, data)
            moved = True
        for entry in os.scandir(mirror.folder):
            name = entry.name
            if name in remote or not _state_name(name, mirror.suffix):
                continue
            if _mtime(Path(entry.path)) > started:
                continue
            unlink_quietly(entry.path)
            moved = True
        if moved:
            log.info(
                "Shared state {prefix} updated from the store ({count} file(s) now)",
                prefix=mirror.prefix,
                count=len(remote),
            )
        return moved


class _Taken(Exception):
    """A create-only PUT found the name taken (412)."""


def _state_name(name: str, suffix: str) -> bool:
    return bool(name) and "/" not in name and not name.startswith(".") and name.endswith(suffix)


def _md5_of(path: Path) -> str | None:
    try:
        return hashlib.md5(path.read_bytes()).hexdigest()  # noqa: S324 - S3's ETag
    except OSError:
        return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
