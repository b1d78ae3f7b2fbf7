"""An origin body's way to disk: its chunks written and hashed on worker threads, in order.

The store's MD5 of a copy and its disk writes (and a Mirror fetch's buffer file) cost more CPU
than everything else a copy does; on the reactor thread they held the origin connection, the
Mirror clients and every other request back (`bench/mirror.py`: MD5 alone was a third of the
edge's CPU). hashlib and `os.write` release the GIL on large buffers, so worker threads do
them while the reactor goes on receiving, the write and the hash side by side (each is a
"lane": they cost about the same, and share nothing). Chunks queue in arrival order and go to
the lanes in batches, one batch at a time, as the list of its chunks: the file's lane appends
them with one writev(2), a hash lane (`joined`) takes them as one buffer, in order. What a
batch wrote is announced on the reactor when every lane is done. When the queue passes
`HIGH_WATER` the origin connection is paused until the threads have caught up, so a slow disk
bounds the memory held, not the origin's speed. Only the disk and the CPU pace the origin:
Mirror clients read what was written, each at its own pace.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

HIGH_WATER = 4 * 1024 * 1024  # bytes queued for the thread past which the origin is paused
READ_BACK = 1024 * 1024  # bytes per read when a written body is hashed afterwards
# Bytes queued before a batch goes to the threads (the rest goes when the body has ended):
# each batch is a hand-over to the threads and back, a few tens of microseconds of reactor
# time and two thread wake-ups, which chunk by chunk added up to a tenth of a Mirror
# fetch's CPU. Clients of a Mirror fetch read what is not yet written from memory.
MIN_BATCH = 1024 * 1024


def joined(lane: Callable[[bytes], None]) -> Callable[[Sequence[bytes]], None]:
    """A lane of one buffer per batch, for the hashes: one call per lane per batch, not per
    chunk, because each call gives up the GIL and must win it back from a busy reactor
    thread, which can take a switch interval (5 ms); a copy of the batch (made on the worker
    thread) is much cheaper than that. A file's lane takes the chunks as they are
    (`append_all_blocking`: writev)."""

    def run(chunks: Sequence[bytes]) -> None:
        lane(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    return run


def hash_written(fd: int, size: int, lane: Callable[[bytes], None]) -> Deferred[None]:
    """Run `lane` (the hashes) over the `size` bytes written to the file open as `fd`, in
    order, on a worker thread; `fd` is closed after.

    For a body whose hashes must not pace its stream: a Mirror fetch's clients are fed as
    fast as the origin sends, and a hash lane that lags the network pauses the origin
    (`HIGH_WATER`). Reading the bytes back costs a page-cache copy, far less than the hash.
    """

    def run() -> None:
        try:
            offset = 0
            while offset < size:
                chunk = os.pread(fd, min(READ_BACK, size - offset), offset)
                if not chunk:
                    raise OSError(f"the written body ended at {offset} of {size} bytes")
                lane(chunk)
                offset += len(chunk)
        finally:
            os.close(fd)

    d: Deferred[None] = deferToThread(run)
    return d


class WriteBehind:
    """Runs each of `lanes` on a worker thread of its own for every batch of chunks, in
    order, one batch at a time (a batch's lanes at once).

    `written(total)` is called on the reactor after each batch with the bytes written so far;
    `failed(failure)` once, when a lane raised (nothing is written after it). `pause` and
    `resume` hold the origin back while the queue is over `HIGH_WATER`. A batch starts once
    `min_batch` bytes are queued, or when `idle` is asked for (the body has ended).
    """

    def __init__(
        self,
        lanes: Sequence[Callable[[Sequence[bytes]], None]],
        written: Callable[[int], None],
        failed: Callable[[Failure], None],
        pause: Callable[[], None],
        resume: Callable[[], None],
        min_batch: int = MIN_BATCH,
    ) -> None:
        self._lanes = tuple(lanes)
        self._min_batch = min_batch
        self._written = written
        self._failed = failed
        self._pause = pause
        self._resume = resume
        self._queue: list[bytes] = []
        self._queued = 0
        self.total = 0  # bytes written by the thread
        self.running = False  # a batch is on the threads (until every lane is done)
        self.paused = False  # the origin is held back until the thread catches up
        self._stopped = False
        self._idle: list[Deferred[None]] = []

    def add(self, data: bytes) -> None:
        """Queue `data` after everything added before it."""
        if self._stopped:
            return
        self._queue.append(data)
        self._queued += len(data)
        if not self.running:
            if self._queued >= self._min_batch:
                self._next()
        elif self._queued > HIGH_WATER and not self.paused:
            self.paused = True
            self._pause()

    def stop(self) -> None:
        """Write nothing more: the queue is dropped (a batch on the thread still ends)."""
        self._stopped = True
        self._queue, self._queued = [], 0
        self._unpause()

    def idle(self) -> Deferred[None]:
        """Fires when the thread has written everything queued (or, once stopped, when no
        batch is on it any more): only then may the pending write be published or closed."""
        d: Deferred[None] = Deferred()
        if not self.running and self._queue and not self._stopped:
            self._next()  # what is left of the body, however little
        if self.running or (self._queue and not self._stopped):
            self._idle.append(d)
        else:
            d.callback(None)
        return d

    async def settled(self) -> None:
        """Wait until no batch is on the thread, whatever cancels the wait (an aborted copy
        closes its files right after: the thread must not be writing to them)."""
        while self.running:
            try:
                await self.idle()
            except CancelledError:
                continue

    def _next(self) -> None:
        batch, self._queue, self._queued = self._queue, [], 0
        self.running = True
        count = sum(map(len, batch))
        # Every lane is waited for, even after one failed: only then are the files free.
        d = DeferredList([deferToThread(lane, batch) for lane in self._lanes], consumeErrors=True)
        d.addCallback(self._lanes_done, count)
        d.addErrback(self._batch_failed)  # also what `written` raised
        self._unpause()

    def _lanes_done(self, results: list[tuple[bool, Any]], count: int) -> None:
        for ok, result in results:
            if not ok:
                assert isinstance(result, Failure)
                self._batch_failed(result)
                return
        self._batch_done(count)

    def _batch_done(self, count: int) -> None:
        self.running = False
        self.total += count
        self._written(self.total)
        if self._queue and not self._stopped:
            if self._queued >= self._min_batch or self._idle:
                self._next()
        else:
            self._wake()

    def _batch_failed(self, failure: Failure) -> None:
        self.running = False
        self.stop()
        self._failed(failure)
        self._wake()

    def _unpause(self) -> None:
        if self.paused:
            self.paused = False
            self._resume()

    def _wake(self) -> None:
        idle, self._idle = self._idle, []
        for d in idle:
            d.callback(None)
