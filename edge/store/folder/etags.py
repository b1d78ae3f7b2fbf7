"""ETags of files in bucket folders: hex MD5, computed once per file version.

Objects an operator drops into a folder carry no recorded hash, so the first request for a
file hashes it; the result is remembered by the file's identity (device, inode, size,
mtime, ctime), so an edited or replaced file gets a new ETag. Large files are hashed in a
small pool of their own, once however many requests wait for them.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from edge.store.folder.layout import FileIdentity

INLINE_HASH_LIMIT = 1024 * 1024  # hash smaller files on the reactor thread; it is cheaper
_HASH_CHUNK = 1024 * 1024


class ETagCache:
    """MD5 ETags remembered per file version, so each file's content is hashed once.

    Keyed by (device, inode, size, mtime, ctime): a file an operator replaces or edits gets
    a new entry and therefore a new ETag. Bounded, least recently used out first.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[FileIdentity, str] = OrderedDict()

    def get(self, identity: FileIdentity) -> str | None:
        etag = self._entries.get(identity)
        if etag is not None:
            self._entries.move_to_end(identity)
        return etag

    def peek(self, identity: FileIdentity) -> str | None:
        """A lookup safe from a thread: one dict read, no reordering."""
        return self._entries.get(identity)

    def put(self, identity: FileIdentity, etag: str) -> None:
        self._entries[identity] = etag
        self._entries.move_to_end(identity)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)


def hash_fd(fd: int) -> str:
    """MD5 of the open file itself (not whatever its path names by now); `pread` leaves
    the descriptor's offset alone, so the same file can still be served from it."""
    digest = hashlib.md5(usedforsecurity=False)
    offset = 0
    while chunk := os.pread(fd, _HASH_CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def _hash_and_close(fd: int) -> str:
    try:
        return hash_fd(fd)
    finally:
        os.close(fd)


_HASH_THREADS = 2
_hash_pool: ThreadPool | None = None


def _hashing_pool() -> ThreadPool:
    """A small thread pool of its own for hashing large files, started on first use and
    stopped with the reactor: hashing a few ISOs must not take every thread of the
    reactor's pool, which DNS lookups of origins (and listings) need too."""
    global _hash_pool
    if _hash_pool is None:
        from twisted.internet import reactor

        pool = ThreadPool(minthreads=0, maxthreads=_HASH_THREADS, name="cosedge-hash")
        pool.start()
        reactor.addSystemEventTrigger("during", "shutdown", pool.stop)
        _hash_pool = pool
    return _hash_pool


class ETagHasher:
    """ETags by file identity: cached, or hashed with single flight per identity."""

    def __init__(self, cache: ETagCache | None = None) -> None:
        self.cache = cache if cache is not None else ETagCache()
        # Large files being hashed, by identity: later requests for the same file wait for
        # that one hash instead of starting another.
        self._hashing: dict[FileIdentity, list[Deferred[str]]] = {}

    def etag(self, fd: int, size: int, identity: FileIdentity) -> Deferred[str]:
        """The object's ETag (hex MD5), hashing the file the first time it is seen.

        Large files are hashed in the hashing pool so one operator-dropped ISO does not
        stall every other request, once: requests for the same file meanwhile wait for that
        hash (single flight by identity), no request waits on another file's. The hash
        reads the open descriptor, so it is of the very file being served.
        """
        cached = self.cache.get(identity)
        if cached is not None:
            return succeed(cached)
        if size <= INLINE_HASH_LIMIT:
            etag = hash_fd(fd)
            self.cache.put(identity, etag)
            return succeed(etag)
        waiters = self._hashing.get(identity)
        if waiters is None:
            waiters = self._hashing[identity] = []
            from twisted.internet import reactor

            hashing: Deferred[str] = deferToThreadPool(
                reactor,  # type: ignore[arg-type]
                _hashing_pool(),
                _hash_and_close,
                os.dup(fd),
            )

            def done(result: str | Failure) -> None:
                del self._hashing[identity]
                if not isinstance(result, Failure):
                    self.cache.put(identity, result)
                for waiter in waiters:
                    if isinstance(result, Failure):
                        waiter.errback(result)
                    else:
                        waiter.callback(result)

            hashing.addBoth(done)

        def leave(waiter: Deferred[str]) -> None:
            if waiter in waiters:
                waiters.remove(waiter)

        mine: Deferred[str] = Deferred(leave)
        waiters.append(mine)
        return mine
