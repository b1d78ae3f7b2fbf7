"""The folder store: every bucket a plain folder `<data_dir>/<bucket>/`, the embedded default.

An operator can drop files into a bucket folder and they are served as they are; the
edge's own bookkeeping stays under `<data_dir>/.cosedge/`. `FolderStore` is the seam's
`ObjectStore` (edge.store.interface) over the parts: layout and safe walks (`layout`),
reading (`objects`), ETags (`etags`), metadata records (`meta`), deletes and the
tombstones that let them win over copies (`deletes`, `tombstones`), listings (`listing`),
atomic writes (`writes`), multipart parts (`multipart`) and upkeep (`upkeep`). Its answers
are Deferreds that have already fired wherever the work is one cheap system call, so a hit
costs no extra reactor turn; walks and fsyncs go to threads.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from edge.store.folder.deletes import FolderDeletes
from edge.store.folder.etags import ETagCache, ETagHasher
from edge.store.folder.keylocks import KeyLocks
from edge.store.folder.layout import FolderLayout, open_dir
from edge.store.folder.listing import FolderListing
from edge.store.folder.meta import MetaRecords
from edge.store.folder.multipart import FolderUploads, MultipartUploads
from edge.store.folder.objects import FolderReader
from edge.store.folder.tombstones import FolderDeleteWatch, Tombstones
from edge.store.folder.upkeep import FolderUpkeep
from edge.store.folder.writes import PendingObject
from edge.store.interface import (
    BucketNotEmpty,
    DeleteWatch,
    KeyLock,
    ListingPage,
    ObjectMeta,
    SpooledBody,
    StoredObject,
)

_TEMP_AGE = 3600.0  # a state write takes milliseconds; an hour-old temp file is dead
log = Logger()


class _Unlocked:
    """What a copy holds when its lock could not be taken (the locks folder is broken)."""

    def release(self) -> None:
        return None


_UNLOCKED = _Unlocked()


class FolderStore:
    """All buckets under one data folder."""

    def __init__(self, data_dir: Path, buckets: Iterable[str]) -> None:
        self.layout = FolderLayout(data_dir, buckets)
        self.data_dir = self.layout.data_dir
        self.state_dir = self.layout.state_dir
        self.hasher = ETagHasher()
        self.meta = MetaRecords(self.layout)
        self.locks = KeyLocks(self.state_dir)
        self.tombstones = Tombstones(self.locks)
        self.reader = FolderReader(self.layout, self.meta, self.hasher)
        self.listing = FolderListing(self.layout, self.hasher, self.reader.open)
        self.deletes = FolderDeletes(self.layout, self.locks, self.tombstones, self.meta)
        self.upkeep = FolderUpkeep(self.layout, self.meta)
        self.uploads = FolderUploads(
            MultipartUploads(self.state_dir, self.layout.tmp_dir, self._new_pending)
        )

    @property
    def tmp_dir(self) -> Path:
        return self.layout.tmp_dir

    @property
    def etags(self) -> ETagCache:
        return self.hasher.cache

    def path_for(self, bucket: str, key: str) -> str:
        """The file a key is kept in; `key` must have passed `validate_key`."""
        return self.layout.path_for(bucket, key)

    def prepare(self, sweep: bool = True) -> int:
        """Create the folders and, in the main process, sweep an interrupted run's temp
        files; how many were removed (see `FolderUpkeep.prepare`)."""
        return self.upkeep.prepare(sweep)

    # -- buckets ------------------------------------------------------------------------------

    def has_bucket(self, bucket: str) -> bool:
        return bucket in self.layout.bucket_dirs

    def bucket_created(self, bucket: str) -> float:
        """The bucket folder's mtime (0 if the folder is gone)."""
        try:
            return os.stat(self.layout.bucket_dirs.get(bucket) or self.data_dir / bucket).st_mtime
        except OSError:
            return 0.0

    def add_bucket(self, bucket: str) -> Deferred[None]:
        """Create a bucket folder (PUT Bucket); an existing folder is adopted as it is."""
        return maybeDeferred(self.layout.add, bucket)

    def forget_bucket(self, bucket: str) -> None:
        """Stop serving a bucket another process removed."""
        self.layout.forget(bucket)

    def bucket_is_empty(self, bucket: str) -> Deferred[bool]:
        """No object in the bucket (empty folders left by deletes do not count); the walk
        goes to a thread: a big bucket must not hold other requests."""
        return deferToThread(lambda: next(self.listing.iter_keys(bucket), None) is None)

    def remove_bucket(self, bucket: str) -> Deferred[None]:
        """Remove an empty bucket's folders, in this reactor turn: the caller forgets the
        bucket in the same one, so no request finds a bucket the store no longer has."""
        try:
            self.deletes.remove_bucket(bucket)
        except BucketNotEmpty:
            return fail()
        return succeed(None)

    def list_page(
        self, bucket: str, prefix: str, marker: str, delimiter: str, max_keys: int
    ) -> Deferred[ListingPage]:
        return self.listing.list_page(bucket, prefix, marker, delimiter, max_keys)

    # -- objects ------------------------------------------------------------------------------

    def open_object(
        self, bucket: str, key: str, request: IRequest | None = None
    ) -> Deferred[StoredObject | None]:
        """The open file (the request does not matter: the body is read as it is sent)."""
        try:
            return succeed(self.reader.open(bucket, key))
        except Exception:
            return fail()

    def exists(self, bucket: str, key: str) -> Deferred[bool]:
        return succeed(self.reader.exists(bucket, key))

    def delete_object(self, bucket: str, key: str) -> Deferred[bool]:
        """Unlinked in this turn, on the reactor thread, where publishing links too (see
        `FolderDeletes.delete`)."""
        return maybeDeferred(self.deletes.delete, bucket, key)

    def new_upload(
        self,
        bucket: str,
        key: str,
        spool: SpooledBody | None = None,
        watch: DeleteWatch | None = None,
        meta: ObjectMeta | None = None,
    ) -> PendingObject:
        """A temp file that becomes `bucket/key` on `publish()`, or vanishes on `discard()`;
        with `spool`, the uploaded body already written to the temp folder; with `watch`
        (an origin copy), a DELETE of the key meanwhile makes publishing drop it. (`meta`
        is recorded at publish, which is given it; nothing here needs it sooner.)"""
        pending = self._new_pending(bucket, key, spool)
        pending.watch = watch
        return pending

    def _new_pending(
        self, bucket: str, key: str, spool: SpooledBody | None = None
    ) -> PendingObject:
        return PendingObject(self.layout, self.hasher.cache, bucket, key, spool, self.meta)

    def refuse_unsafe(self, bucket: str, key: str) -> None:
        """Raise `UnsafePath` when a folder on the key's way is a symbolic link, before a
        copy spends bandwidth on an object it could never publish. Missing folders are
        fine (publishing creates them)."""
        *folders, _ = key.split("/")
        with self.layout.bucket_fd(bucket) as root_fd:
            parent = os.dup(root_fd)
            try:
                for name in folders:
                    try:
                        child = open_dir(parent, name, False, f"key {key!r}")
                    except (FileNotFoundError, NotADirectoryError):
                        return
                    os.close(parent)
                    parent = child
            finally:
                os.close(parent)

    def lock_key(self, bucket: str, key: str) -> Deferred[KeyLock | None]:
        """The key's `flock`, shared by the worker processes. A broken locks folder must
        not stop copies: the copy then runs unlocked (at worst two workers fetch the key;
        publishing never overwrites) and the log says why."""
        try:
            return succeed(self.locks.acquire(bucket, key))
        except OSError as e:
            log.warn(
                "Copy of {bucket}/{key} runs without its cross-process lock: {reason}",
                bucket=bucket,
                key=key,
                reason=f"{e.filename}: {e.strerror or e}",
            )
            return succeed(_UNLOCKED)

    def watch_deletes(self, bucket: str, key: str) -> FolderDeleteWatch:
        return self.tombstones.watch(bucket, key)

    def forget_deletes(self, bucket: str, key: str) -> None:
        self.tombstones.forget(bucket, key)

    # -- upkeep -------------------------------------------------------------------------------

    def refresh_meta_buckets(self) -> None:
        """Learn which buckets have upload metadata; with workers, another process's first
        PUT with a Content-Type into a bucket must reach this one's hits."""
        self.meta.refresh()

    def sweep(self, now: float | None = None) -> Deferred[dict[str, int]]:
        """Stale locks, orphaned metadata and dead temp files, removed in a thread."""
        at = time.time() if now is None else now

        def run() -> dict[str, int]:
            return {
                "locks": self.locks.sweep(),
                "metadata": self.meta.sweep(),
                "temp_files": self.upkeep.sweep_temp_files(_TEMP_AGE, at),
            }

        return deferToThread(run)
