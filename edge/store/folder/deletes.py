"""Deleting from bucket folders: objects (winning over copies running meanwhile) and
empty buckets, never through a symbolic link and never taking what arrived meanwhile."""

from __future__ import annotations

import os
import stat as statmod

from twisted.logger import Logger

from edge.store.folder.keylocks import KeyLock, KeyLocks
from edge.store.folder.layout import FolderLayout, walk
from edge.store.folder.meta import MetaRecords
from edge.store.folder.tombstones import Tombstones
from edge.store.interface import BucketNotEmpty

log = Logger()


class FolderDeletes:
    """DELETE Object and DELETE Bucket of the folder store."""

    def __init__(
        self, layout: FolderLayout, locks: KeyLocks, tombstones: Tombstones, meta: MetaRecords
    ) -> None:
        self.layout = layout
        self.meta = meta
        self.tombstones = tombstones
        self._locks = locks

    def delete(self, bucket: str, key: str) -> bool:
        """Remove an object and its metadata, and prune folders it leaves empty.

        Never through a symbolic link (`UnsafePath`). A DELETE must also win over an origin
        copy of the key that is running meanwhile, in this process or another worker: the
        copy holds the key's lock for its whole run, so finding the lock taken means a copy
        is under way, and a fresh tombstone next to the lock tells it to drop its result
        (see `Tombstones.watch`). When the lock is free it is held across the unlink, so no
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
            return self._unlink(bucket, key)
        finally:
            if lock is not None:
                lock.release()

    def _unlink(self, bucket: str, key: str) -> bool:
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
        self.layout.forget(bucket)
        self.meta.remove_bucket(bucket)
