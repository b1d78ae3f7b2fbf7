"""Tombstones: how a DELETE tells a running origin copy of the same key to drop its result.

A copy holds the key's lock (`edge.store.folder.keylocks`) for its whole run, in whichever
worker process it runs. A DELETE that finds the lock taken leaves a fresh tombstone next to
it; the copy remembered the tombstone's identity when it started and, before publishing,
sees it changed and drops what it fetched. Without this, a DELETE racing a copy would be
undone a moment later by the copy's publish.
"""

from __future__ import annotations

import os
import uuid

from twisted.logger import Logger

from edge.store.folder.keylocks import KeyLocks
from edge.store.statefiles import unlink_quietly

log = Logger()


class Tombstones:
    """The tombstones of every key, in the locks folder every worker shares."""

    def __init__(self, locks: KeyLocks) -> None:
        self._locks = locks

    def _location(self, bucket: str, key: str) -> tuple[str, str]:
        """Folder and name of the key's tombstone: next to its copy lock, in the locks
        folder every worker shares."""
        lock = self._locks.path_for(bucket, key)
        folder, name = os.path.split(lock)
        return folder, name.removesuffix(".lock") + ".deleted"

    def leave(self, bucket: str, key: str) -> None:
        folder, name = self._location(bucket, key)
        temp = os.path.join(folder, f"{name}.{uuid.uuid4().hex}.tmp")
        try:
            # A new inode each time, so a copy's baseline never matches a later delete.
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            os.close(fd)
            os.replace(temp, os.path.join(folder, name))
        except OSError as e:
            unlink_quietly(temp)
            log.warn(
                "Could not tell the running copy of {bucket}/{key} it was deleted: {reason}",
                bucket=bucket,
                key=key,
                reason=str(e),
            )

    def watch(self, bucket: str, key: str) -> FolderDeleteWatch:
        """What a copy that holds the key's lock remembers before it starts, so that its
        publish can tell whether a DELETE came meanwhile."""
        return FolderDeleteWatch(self, bucket, key, self.identity(bucket, key))

    def identity(self, bucket: str, key: str) -> tuple[int, int, int] | None:
        folder, name = self._location(bucket, key)
        try:
            st = os.stat(os.path.join(folder, name), follow_symlinks=False)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_ctime_ns)

    def forget(self, bucket: str, key: str) -> None:
        """Remove the key's tombstone; only by the copy holding the key's lock, when done.
        A locks folder that is not a folder holds no tombstone (the copy ran unlocked)."""
        folder, name = self._location(bucket, key)
        try:
            unlink_quietly(os.path.join(folder, name))
        except NotADirectoryError:
            pass


class FolderDeleteWatch:
    """A copy's view of its key's tombstone as it was when the copy started: any change
    since means a DELETE came while the copy ran (see `FolderStore.delete_object`)."""

    def __init__(
        self,
        tombstones: Tombstones,
        bucket: str,
        key: str,
        baseline: tuple[int, int, int] | None,
    ) -> None:
        self._tombstones = tombstones
        self._bucket = bucket
        self._key = key
        self._baseline = baseline

    def deleted(self) -> bool:
        return self._tombstones.identity(self._bucket, self._key) != self._baseline
