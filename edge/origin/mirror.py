"""Mirror fetches: one origin fetch per key, whose body its clients read as it arrives (SPEC §11).

A Mirror miss does not redirect: its client gets the origin's bytes in the same response. The
fetch is an ordinary copy (the copier's single flight, slots, key lock and protection; the
fetcher's limits, checks and create-only publish), with a `MirrorFetch` as its observer:
every client of the key, the first or one arriving while the fetch runs, reads the local file
the pending object is written into (its buffer) from its own offset and follows it as it grows
(Apache Traffic Server's read-while-writer, Varnish's waiting list). A client is never a
second origin request.

The buffer is on disk, not in memory, so a slow client only reads further behind and holds
neither the origin nor the other clients back. It is the store's own scratch file under
`<data_dir>/.cosedge/tmp` (the bytes are on disk once), read through a descriptor opened
before the body streams: it stays readable once the write is published (for the folder store
it is the object's file then) or discarded, and its space is the store's to free.
"""

from __future__ import annotations

import enum
import os
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import TimeoutError
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse

from edge.config import OriginAddress, OriginFetchConfig
from edge.origin.copier import CopyFailed, CopyStart, OriginCopier
from edge.origin.fetch import Fetched, describe_failure
from edge.origin.request import OriginPlan


class Start(enum.Enum):
    """How a Mirror client is to be answered, once the fetch knows."""

    STREAMING = "streaming"  # body bytes are in the buffer (or the whole, empty, body)
    IN_STORE = "in store"  # the object was stored before this fetch began: a hit
    ELSEWHERE = "elsewhere"  # another process fetches the key: wait for its object


class MirrorFailed(Exception):
    """No body for the clients: `status` is the origin's answer when it gave one (404 means
    NoSuchKey), `retry_later` says the edge, not the origin, declined (stopping, the key's
    lock unreadable): 503 rather than 424. `str()` is the reason, for the client's message."""

    def __init__(self, reason: str, status: int | None = None, retry_later: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.retry_later = retry_later


_NOT_STARTED = {
    CopyStart.STOPPING: MirrorFailed("the edge is not fetching now", retry_later=True),
    CopyStart.BREAKER_OPEN: MirrorFailed("the origin's circuit breaker is open"),
}


class MirrorFetch:
    """The buffer of one Mirror fetch and the clients that follow it (a `FetchObserver`)."""

    def __init__(self, on_end: Callable[[], None]) -> None:
        self._fd: int | None = None  # reads the buffer, once the body streams
        self._on_end = on_end
        self.size = 0  # body bytes arrived: what clients may read
        self._stored = 0  # of which in the buffer file
        # The rest, in order: the chunks the write-behind still holds (the same objects, so
        # no more memory), read from here by clients that keep up with the origin.
        self._unstored: deque[bytes] = deque()
        self.expected: int | None = None  # the origin's Content-Length
        self.content_type: bytes | None = None  # the origin's Content-Type
        self.complete = False  # ended well: the whole body is in the buffer
        self.failure: MirrorFailed | None = None  # ended badly after the body began
        self.over = False  # the fetch has ended, well or not
        self._responded = False
        self._start: Start | MirrorFailed | None = None
        self._starting: list[Deferred[Start]] = []
        self._waiting: list[Callable[[], None]] = []
        self._readers = 0

    # --- the fetch's side (FetchObserver) ------------------------------------------------

    def response(self, response: IResponse, body: int) -> None:
        self._fd = body
        self._responded = True
        if response.length is not UNKNOWN_LENGTH:
            self.expected = int(response.length)
        types = response.headers.getRawHeaders(b"content-type")
        self.content_type = types[0] if types else None

    def arrived(self, data: bytes) -> None:
        if not data:
            return
        self._unstored.append(data)
        self.size += len(data)
        if self._start is None:
            self._started(Start.STREAMING)
        self._grown()

    def stored(self, size: int) -> None:
        unstored = self._unstored
        while unstored and self._stored + len(unstored[0]) <= size:  # whole chunks, always
            self._stored += len(unstored.popleft())

    def body_complete(self) -> None:
        self.complete = True
        self._started(Start.STREAMING)  # an empty body: nothing made it start before
        self._grown()

    def ended(self, result: Any) -> None:
        if self.over:
            return
        self.over = True
        self._on_end()
        if isinstance(result, Fetched):
            if self._responded:  # the body streamed whole (published, or dropped: a key
                self.complete = True  # taken or deleted meanwhile; the client has it all)
                self._started(Start.STREAMING)
            elif result is Fetched.DELETED:
                self._started(MirrorFailed("the key was deleted", status=404))
            else:
                self._started(Start.IN_STORE)
        elif isinstance(result, Failure):
            failed = _failed(result)
            if self._start is None:
                self._started(failed)
            elif not self.complete:  # the publish failing leaves the clients a whole body
                self.failure = failed
        elif result is CopyStart.ELSEWHERE:
            self._started(Start.ELSEWHERE)
        else:
            self._started(_NOT_STARTED.get(result, MirrorFailed(str(result), retry_later=True)))
        self._grown()
        self._close_if_unread()

    # --- the clients' side --------------------------------------------------------------

    def started(self) -> Deferred[Start]:
        """Fires when the client can be answered: first bytes in, or how else to answer;
        fails with `MirrorFailed` when there is no body to give."""
        start = self._start
        if isinstance(start, MirrorFailed):
            return _failed_deferred(start)
        if start is not None:
            d: Deferred[Start] = Deferred()
            d.callback(start)
            return d
        d = Deferred()
        self._starting.append(d)
        return d

    def attach(self) -> None:
        """One more client reads the buffer: it stays open until `detach`."""
        self._readers += 1

    def detach(self) -> None:
        self._readers -= 1
        self._close_if_unread()

    def read(self, offset: int, length: int) -> bytes:
        """Up to `length` body bytes from `offset` (never past what has arrived): from the
        buffer file, or still in memory for a client right behind the origin."""
        length = min(length, self.size - offset)
        if offset < self._stored:
            assert self._fd is not None, "read before the body streamed"
            return os.pread(self._fd, min(length, self._stored - offset), offset)
        position = self._stored
        for chunk in self._unstored:
            if offset < position + len(chunk):
                start = offset - position
                if start == 0 and length >= len(chunk):
                    return chunk  # the usual case: no copy
                return chunk[start : start + length]
            position += len(chunk)
        return b""

    def when_more(self, callback: Callable[[], None]) -> None:
        """Call `callback` once, when the buffer grows or the fetch ends."""
        self._waiting.append(callback)

    def discard(self) -> None:
        """Forget a fetch the copier did not take for this key (it was not started here)."""
        if not self.over:
            self.over = True
            self._on_end()
        self._close_if_unread()

    def _started(self, start: Start | MirrorFailed) -> None:
        if self._start is not None:
            return
        self._start = start
        starting, self._starting = self._starting, []
        for d in starting:
            if isinstance(start, MirrorFailed):
                d.errback(Failure(start))
            else:
                d.callback(start)

    def _grown(self) -> None:
        if self._waiting:
            waiting, self._waiting = self._waiting, []
            for callback in waiting:
                callback()

    def _close_if_unread(self) -> None:
        if self.over and self._readers <= 0 and self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _failed_deferred(failed: MirrorFailed) -> Deferred[Start]:
    d: Deferred[Start] = Deferred()
    d.errback(Failure(failed))
    return d


def _failed(failure: Failure) -> MirrorFailed:
    """What a failed fetch tells its clients: the origin's status when it answered one."""
    error = failure.value
    if isinstance(error, CopyFailed):
        return MirrorFailed(str(error), status=error.status)
    if failure.check(TimeoutError):
        return MirrorFailed("the fetch took longer than total_timeout")
    # The limits only word the timeout, handled above.
    return MirrorFailed(describe_failure(failure, OriginFetchConfig()))


class MirrorFetches:
    """The Mirror fetches running in this process, by bucket and key."""

    def __init__(self, copier: OriginCopier) -> None:
        self._copier = copier
        self._running: dict[tuple[str, str], MirrorFetch] = {}

    def join(
        self,
        bucket: str,
        key: str,
        origin: OriginAddress,
        address: str,
        request_id: str | None = None,
        plan: OriginPlan | None = None,
    ) -> tuple[MirrorFetch | None, CopyStart]:
        """The running fetch of `bucket/key` (JOINED), or a new one from `address` (STARTED
        or QUEUED); or no fetch of ours, and why (a background copy of the key runs here:
        JOINED; another process has it: ELSEWHERE; refused: NOT_FOUND, BACKING_OFF, ...)."""
        job_key = (bucket, key)
        running = self._running.get(job_key)
        if running is not None:
            return running, CopyStart.JOINED

        def forget() -> None:
            if self._running.get(job_key) is fetch:
                del self._running[job_key]

        fetch = MirrorFetch(forget)
        self._running[job_key] = fetch
        started = self._copier.copy(bucket, key, origin, address, request_id, plan, observer=fetch)
        if started is CopyStart.STARTED or started is CopyStart.QUEUED:
            return fetch, started
        fetch.discard()
        return None, started

    def in_flight(self) -> int:
        """How many Mirror fetches run, for tests and status pages."""
        return len(self._running)
