"""The folder store: every bucket a plain folder `<data_dir>/<bucket>/`, the embedded default.

An operator can drop files into a bucket folder and they are served as they are; the
edge's own bookkeeping stays under `<data_dir>/.cosedge/`. This class ties the parts
together — layout and safe walks (`layout`), ETags (`etags`), metadata records (`meta`),
tombstones for deletes racing copies (`tombstones`), listings (`listing`) and atomic
writes (`writes`) — and is what the rest of the edge holds as its store.
"""

from __future__ import annotations

import errno
import os
import stat as statmod
from collections.abc import Iterable, Iterator
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from edge.store.folder.etags import ETagHasher
from edge.store.folder.keylocks import KeyLock, KeyLocks
from edge.store.folder.layout import (
    STATE_FOLDERS,
    FolderLayout,
    identity_of,
    make_folder,
    open_dir,
    walk,
)
from edge.store.folder.listing import FolderListing
from edge.store.folder.meta import MetaRecords
from edge.store.folder.objects import ContentTypes, FolderObject
from edge.store.folder.tombstones import FolderDeleteWatch, Tombstones
from edge.store.folder.writes import PendingObject, UploadSpool
from edge.store.interface import BucketNotEmpty, ListingPage, ObjectMeta

log = Logger()

_NOT_AN_OBJECT = frozenset(
    {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP, errno.EACCES}
)


class FolderStore:
    """All buckets under one data folder."""

    def __init__(self, data_dir: Path, buckets: Iterable[str]) -> None:
        self.layout = FolderLayout(data_dir, buckets)
        self.data_dir = self.layout.data_dir
        self.state_dir = self.layout.state_dir
        self.tmp_dir = self.layout.tmp_dir
        self.hasher = ETagHasher()
        self.etags = self.hasher.cache
        self.meta = MetaRecords(self.layout)
        self._types = ContentTypes()
        self._locks = KeyLocks(self.state_dir)
        self.tombstones = Tombstones(self._locks)
        self.listing = FolderListing(self.layout, self.hasher, self.open_object)

    def prepare(self, sweep: bool = True) -> int:
        """Create the folders and sweep temp files left by an interrupted copy.

        Returns how many stale temp files were removed. Runs before the listener starts, so
        nothing can be writing to `.cosedge/tmp/` yet; worker processes (`sweep=False`)
        start while the main process may be copying, so only the main process sweeps.
        """
        os.makedirs(self.data_dir, exist_ok=True)
        # `.cosedge` and its `tmp` are reached without following links: a state folder
        # that is a link to elsewhere refuses to start (UnsafePath) rather than sweeping it.
        with self.layout.state_folder(create=True) as state_fd:
            st = os.fstat(state_fd)
            self.layout.state_identity = (st.st_dev, st.st_ino)
        # Every state folder is made here, by whoever prepares the data folder (the user
        # twistd drops to): made later, by the still-root assembly, they stayed root's.
        for folder in STATE_FOLDERS:
            with self.layout.state_folder(folder, create=True):
                pass
        for path in self.layout.bucket_dirs.values():
            make_folder(path)
        self.layout.bucket_real = {
            name: os.path.realpath(p) for name, p in self.layout.bucket_dirs.items()
        }
        self.meta.refresh()
        removed = 0
        with self.layout.state_folder("tmp", create=True) as tmp_fd:
            for entry in os.scandir(tmp_fd) if sweep else ():
                try:
                    if entry.is_dir(follow_symlinks=False):
                        continue
                    os.unlink(entry.name, dir_fd=tmp_fd)
                    removed += 1
                except FileNotFoundError:
                    continue
        if removed:
            log.info(
                "Removed {count} stale temporary file(s) from {tmp_dir}",
                count=removed,
                tmp_dir=str(self.tmp_dir),
            )
        return removed

    def has_bucket(self, bucket: str) -> bool:
        return bucket in self.layout.bucket_dirs

    def add_bucket(self, bucket: str) -> None:
        """Create a bucket folder (PUT Bucket); an existing folder is adopted as it is."""
        self.layout.add(bucket)

    def bucket_is_empty(self, bucket: str) -> bool:
        """No object in the bucket (empty folders left by deletes do not count)."""
        return next(self.listing.iter_keys(bucket), None) is None

    def forget_bucket(self, bucket: str) -> None:
        """Stop serving a bucket another process removed."""
        self.layout.forget(bucket)

    def remove_bucket(self, bucket: str) -> None:
        """Remove an empty bucket's folders and metadata, then forget it.

        Only empty folders are removed, deepest first: an object that arrived since the
        emptiness check (another worker's PUT, a copy) or one the listing could not see (a
        folder it failed to open) stops the removal with `BucketNotEmpty`, and nothing of
        it is lost. A recursive delete here would have taken whatever was there.
        """
        path = self.layout.bucket_dirs[bucket]
        for folder, _subfolders, files in os.walk(path, topdown=False):
            if files:
                raise BucketNotEmpty(bucket)
            try:
                os.rmdir(folder)
            except FileNotFoundError:
                continue
            except OSError:
                raise BucketNotEmpty(bucket) from None  # a link, or something new in it
        self.forget_bucket(bucket)
        self.meta.remove_bucket(bucket)

    def delete_object(self, bucket: str, key: str) -> bool:
        """Remove an object and its metadata, and prune folders it leaves empty.

        Never through a symbolic link (`UnsafePath`). A DELETE must also win over an origin
        copy of the key that is running meanwhile, in this process or another worker: the
        copy holds the key's lock for its whole run, so finding the lock taken means a copy
        is under way, and a fresh tombstone next to the lock tells it to drop its result
        (see `watch_deletes`). When the lock is free it is held across the unlink, so no
        copy can start in between.
        """
        try:
            lock: KeyLock | None = self._locks.acquire(bucket, key)
            copying = lock is None
        except OSError as e:
            # Copies run unlocked then too (and cannot be told apart): delete all the same.
            lock, copying = None, False
            log.warn(
                "Deleting {bucket}/{key} without its lock: {reason}",
                bucket=bucket,
                key=key,
                reason=f"{e.filename}: {e.strerror or e}",
            )
        try:
            if copying:
                self.tombstones.leave(bucket, key)
            return self._unlink_object(bucket, key)
        finally:
            if lock is not None:
                lock.release()

    def _unlink_object(self, bucket: str, key: str) -> bool:
        *folders, name = key.split("/")
        if not name:
            return False
        with self.layout.bucket_fd(bucket) as root_fd:
            try:
                fds = walk(root_fd, folders, False, f"key {key!r}")
            except (FileNotFoundError, NotADirectoryError):
                return False
            try:
                parent = fds[-1] if fds else root_fd
                try:
                    if not statmod.S_ISREG(
                        os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
                    ):
                        return False
                    os.unlink(name, dir_fd=parent)
                except (FileNotFoundError, NotADirectoryError):
                    return False
                self.meta.clear(bucket, key)
                # Prune the folders it leaves empty, each relative to its own parent.
                for i in range(len(folders) - 1, -1, -1):
                    try:
                        os.rmdir(folders[i], dir_fd=fds[i - 1] if i else root_fd)
                    except OSError:
                        break
                return True
            finally:
                for fd in fds:
                    os.close(fd)

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

    def sweep_state_temp_files(self, older_than: float, now: float) -> int:
        """Remove the `*.tmp` files an atomic state write leaves if it dies between
        writing and renaming (rules, buckets, stamps, metadata, uploads' info.json), and
        the temp files of uploads and copies whose process died."""
        candidates = list(self.state_dir.glob(".*.tmp"))
        # Spools and copies write all the time (idle timeouts are seconds): an hour-old
        # part is what a worker killed mid-upload left; only the main process's restart
        # swept those before.
        candidates += self.tmp_dir.glob("*.part")
        for folder in ("origin", "buckets", "meta", "uploads"):
            candidates += (self.state_dir / folder).rglob("*.tmp")
        removed = 0
        for path in candidates:
            try:
                st = path.lstat()
                if statmod.S_ISREG(st.st_mode) and now - st.st_mtime > older_than:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def content_type(self, key: str) -> str:
        return self._types.for_key(key)

    def open_object(self, bucket: str, key: str) -> FolderObject | None:
        """Open an object for reading, or None when there is no such regular file.

        Symbolic links are followed only while they stay inside the bucket folder: an
        operator's link to elsewhere must not turn the edge into a file server for the host.
        """
        path = self.path_for(bucket, key)
        if not os.access(path, os.F_OK, follow_symlinks=False):
            # A miss, told without raising (a third of the cost of the failing open): what
            # makes access() fail (ENOENT, ENOTDIR, EACCES, ENAMETOOLONG...) is what makes
            # the open below answer None.
            return None
        linked = False
        try:
            try:
                # O_NOFOLLOW tells a symlink apart in the same call (ELOOP), so an ordinary
                # hit costs one open and one fstat, no extra lstat.
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError as e:
                if e.errno != errno.ELOOP:
                    raise
                linked = True
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            if e.errno in _NOT_AN_OBJECT:
                return None
            raise
        try:
            st = os.fstat(fd)
            if not statmod.S_ISREG(st.st_mode):
                os.close(fd)
                return None
            if linked or self._has_link_parent(bucket, key):
                real = os.path.realpath(path)
                if not real.startswith(self.layout.bucket_real[bucket] + os.sep):
                    os.close(fd)
                    log.warn(
                        "Refusing to serve {bucket}/{key}: it links outside the bucket folder",
                        bucket=bucket,
                        key=key,
                    )
                    return None
        except BaseException:
            os.close(fd)
            raise
        identity = identity_of(st)
        meta = self.meta.read(bucket, key, identity)
        return FolderObject(
            file=os.fdopen(fd, "rb", buffering=0),
            size=st.st_size,
            mtime=st.st_mtime,
            content_type=self._types.for_key(key),
            identity=identity,
            hasher=self.hasher,
            meta=meta or ObjectMeta(),
        )

    def _has_link_parent(self, bucket: str, key: str) -> bool:
        if "/" not in key:
            return False
        parent = os.path.dirname(self.path_for(bucket, key))
        return os.path.realpath(parent) != os.path.join(
            self.layout.bucket_real[bucket], os.path.dirname(key)
        )

    def exists(self, bucket: str, key: str) -> bool:
        try:
            return statmod.S_ISREG(os.stat(self.path_for(bucket, key)).st_mode)
        except (OSError, ValueError):
            return False

    def new_upload(
        self,
        bucket: str,
        key: str,
        spool: UploadSpool | None = None,
        watch: FolderDeleteWatch | None = None,
    ) -> PendingObject:
        """A temp file that becomes `bucket/key` on `publish()`, or vanishes on `discard()`;
        with `spool`, the uploaded body already written to the temp folder; with `watch`
        (an origin copy), a DELETE of the key meanwhile makes publishing drop it."""
        pending = PendingObject(self.layout, self.hasher.cache, bucket, key, spool)
        pending.watch = watch
        return pending

    # -- until the callers speak the seam (edge.store.interface) --------------------------

    def path_for(self, bucket: str, key: str) -> str:
        return self.layout.path_for(bucket, key)

    def refresh_meta_buckets(self) -> None:
        self.meta.refresh()

    def read_meta(self, bucket: str, key: str, obj: FolderObject) -> ObjectMeta | None:
        return self.meta.read(bucket, key, obj.identity)

    def write_meta(
        self,
        bucket: str,
        key: str,
        meta: ObjectMeta,
        identity: tuple[int, int, int, int, int] | None = None,
    ) -> None:
        self.meta.write(bucket, key, meta, identity)

    def clear_meta(self, bucket: str, key: str) -> None:
        self.meta.clear(bucket, key)

    def sweep_meta(self) -> int:
        return self.meta.sweep()

    def iter_keys(self, bucket: str, prefix: str = "") -> Iterator[str]:
        return self.listing.iter_keys(bucket, prefix)

    def list_page(
        self, bucket: str, prefix: str, marker: str, delimiter: str, max_keys: int
    ) -> Deferred[ListingPage]:
        return self.listing.list_page(bucket, prefix, marker, delimiter, max_keys)

    def etag(self, bucket: str, key: str, obj: FolderObject) -> Deferred[str]:
        return self.hasher.etag(obj.file.fileno(), obj.size, obj.identity)

    def watch_deletes(self, bucket: str, key: str) -> FolderDeleteWatch:
        return self.tombstones.watch(bucket, key)

    def forget_deletes(self, bucket: str, key: str) -> None:
        self.tombstones.forget(bucket, key)
