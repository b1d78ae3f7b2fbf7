"""A miss under a Mirror rule: the client gets the origin's bytes in this response (SPEC §11).

The fetch and its buffer are `edge.origin.mirror`'s; this module turns them into HTTP. The
response begins when the first body byte has arrived (so a failure before it is still a clean
424, or 404 for the origin's 404), with the origin's Content-Length when it sent one (chunked
otherwise) and its Content-Type; each client is fed from the buffer by its own push producer,
so the transport's flow control paces it without pacing anyone else. A failure after the body
began closes the connection: the client sees a short body, never a whole-looking one.

A ranged GET starts the whole-object fetch like any other and is answered 206 from it once its
bytes have arrived, when the origin sent a Content-Length (the range needs the size to be
judged); without one it gets the whole body, 200. HEAD never pulls (COS: only a GET triggers
origin-pull): 404. A key fetched by another worker process (or by a background copy in this
one) is waited for and served from the store once it is published.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from edge.api import errors
from edge.api.errors import CosError
from edge.api.headers import is_safe_value
from edge.api.rules import OriginRule
from edge.origin.copier import CopyStart
from edge.origin.mirror import MirrorFailed, MirrorFetch, MirrorFetches, Start
from edge.store.interface import KeyLock, ObjectStore, StoredObject, StoreUnavailable
from edge.web.hits import Hits
from edge.web.http import RangeResult, parse_range
from edge.web.replies import error, finish_error, unexpected
from edge.web.target import Target
from edge.web.turns import then

CHUNK = 256 * 1024  # one read of the buffer: past the transport's 64 KiB, so it pauses us
POLL_INTERVAL = 0.25  # how often a key fetched elsewhere is looked for in the store
WAIT_LIMIT = 3600.0  # the default total_timeout: no fetch elsewhere runs longer

_REFUSED: dict[CopyStart, tuple[CosError, str | None]] = {
    CopyStart.NOT_FOUND: (errors.NO_SUCH_KEY, None),
    CopyStart.BACKING_OFF: (
        errors.FAILED_DEPENDENCY,
        "The origin fetch of this key failed recently; it is tried again later.",
    ),
    CopyStart.BREAKER_OPEN: (
        errors.FAILED_DEPENDENCY,
        "The origin is failing (its circuit breaker is open); it is tried again later.",
    ),
    CopyStart.OVERFLOW: (errors.SLOW_DOWN, None),
    CopyStart.STOPPING: (errors.SERVICE_UNAVAILABLE, None),
}


def finish_with(request: Request, cos_error: CosError, message: str | None = None) -> None:
    """Answer `cos_error` (with `message`) on a request already deferred."""
    body = error(request, cos_error, message)
    if body:
        request.write(body)
    request.finish()


class MirrorReads:
    """Answers GETs of keys a Mirror rule covers and the store lacks."""

    def __init__(self, fetches: MirrorFetches, store: ObjectStore, hits: Hits, clock: object):
        self.fetches = fetches
        self._store = store
        self._hits = hits
        self._clock = clock

    def answer(
        self,
        request: Request,
        target: Target,
        rule: OriginRule,
        address: str,
        copy: bool,
        note: Callable[[Request, CopyStart], None] = lambda request, started: None,
    ) -> None:
        """Answer `request`, a miss under the Mirror `rule`, from the vetted `address`;
        `note` is told what became of the fetch before anything is answered (the miss's
        `x-cosedge-copy` header)."""
        assert target.bucket is not None and target.key is not None
        if request.method != b"GET":
            finish_error(request, errors.NO_SUCH_KEY)  # COS: HEAD never pulls
            return
        if not copy:  # the store cannot be reached: nothing could be stored
            finish_error(request, errors.SERVICE_UNAVAILABLE)
            return
        request_id: str = request.request_id  # type: ignore[attr-defined]
        plan = rule.plan(target.key, request.isSecure())  # scheme, rewrite, standbys
        fetch, started = self.fetches.join(
            target.bucket.name, target.key, rule.origin, address, request_id, plan
        )
        note(request, started)
        if fetch is not None:
            self._follow(request, target, fetch)
            return
        if started is CopyStart.JOINED or started is CopyStart.ELSEWHERE:
            _Waiter(self._store, self._hits, self._clock, request, target).poll()
            return
        cos_error, message = _REFUSED.get(started, (errors.SERVICE_UNAVAILABLE, None))
        finish_with(request, cos_error, message)

    def _follow(self, request: Request, target: Target, fetch: MirrorFetch) -> None:
        fetch.attach()
        then(fetch.started(), self._started, self._failed, request, target, fetch)

    def _started(self, start: Start, request: Request, target: Target, fetch: MirrorFetch) -> None:
        if request.finished or request._disconnected:
            fetch.detach()
            return
        if start is Start.STREAMING:
            _respond(request, target, fetch)
            return
        fetch.detach()
        if start is Start.IN_STORE:
            _Waiter(self._store, self._hits, self._clock, request, target).look()
        else:
            _Waiter(self._store, self._hits, self._clock, request, target).poll()

    def _failed(
        self, failure: Failure, request: Request, target: Target, fetch: MirrorFetch
    ) -> None:
        fetch.detach()
        if request.finished or request._disconnected:
            return
        failed = failure.value
        if not isinstance(failed, MirrorFailed):
            unexpected(failure, request, request.request_id)  # type: ignore[attr-defined]
        elif failed.status == 404:
            finish_error(request, errors.NO_SUCH_KEY)
        elif failed.retry_later:
            finish_error(request, errors.SERVICE_UNAVAILABLE)
        else:
            message = f"The origin did not return the object: {failed}."
            finish_with(request, errors.FAILED_DEPENDENCY, message)


def _content_type(fetch: MirrorFetch, key: str) -> bytes:
    """The origin's Content-Type when HTTP can carry it, else the one a hit would guess."""
    given = fetch.content_type
    if given and is_safe_value(given.decode("latin-1")):
        return given
    guessed, _ = mimetypes.guess_type(key, strict=False)
    return (guessed or "application/octet-stream").encode("ascii")


def _respond(request: Request, target: Target, fetch: MirrorFetch) -> None:
    """Headers from what the origin said, then the body from the buffer."""
    assert target.key is not None
    first, end = 0, None
    size = fetch.expected
    request.setHeader(b"content-type", _content_type(fetch, target.key))
    if size is not None:
        byte_range = None
        if request.getHeader(b"if-range") is None:  # no validator to judge one by yet
            byte_range = parse_range(request.getHeader(b"range"), size)
        if byte_range is RangeResult.UNSATISFIABLE:
            fetch.detach()
            request.setHeader(b"content-range", b"bytes */%d" % size)
            finish_error(request, errors.INVALID_RANGE)
            return
        if isinstance(byte_range, tuple):
            first, last = byte_range
            end = last + 1
            request.setResponseCode(206)
            request.setHeader(b"content-range", b"bytes %d-%d/%d" % (first, last, size))
        request.setHeader(b"content-length", b"%d" % ((end or size) - first))
        request.setHeader(b"accept-ranges", b"bytes")
    _Follower(request, fetch, first, end).start()


@implementer(IPushProducer)
class _Follower:
    """Feeds one client from the buffer, from `first` to `end` (or to the body's end),
    as fast as its transport takes it and no faster."""

    def __init__(self, request: Request, fetch: MirrorFetch, first: int, end: int | None):
        self._request = request
        self._fetch = fetch
        self._offset = first
        self._end = end
        self._paused = False
        self._done = False
        self._waiting = False

    def start(self) -> None:
        self._request.registerProducer(self, True)
        self._request.notifyFinish().addErrback(self._lost)
        self._pump()

    def _pump(self) -> None:
        fetch = self._fetch
        while not self._paused and not self._done:
            if fetch.failure is not None:
                self._abort()
                return
            limit = fetch.size if self._end is None else min(self._end, fetch.size)
            if self._offset < limit:
                data = fetch.read(self._offset, min(CHUNK, limit - self._offset))
                self._offset += len(data)
                self._request.write(data)
                continue
            if self._end is not None and self._offset >= self._end:
                self._finish()  # a range is whole once its bytes are out
                return
            if fetch.complete:
                self._finish()
                return
            if fetch.over:  # ended without completing, without a failure: cannot happen
                self._abort()
                return
            if not self._waiting:
                self._waiting = True
                fetch.when_more(self._grown)
            return

    def _grown(self) -> None:
        self._waiting = False
        self._pump()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        self._stop()

    def _lost(self, failure: Failure) -> None:
        self._stop()

    def _stop(self) -> None:
        if not self._done:
            self._done = True
            self._fetch.detach()

    def _finish(self) -> None:
        self._stop()
        self._request.unregisterProducer()
        self._request.finish()

    def _abort(self) -> None:
        """The fetch failed mid-body: close the connection, so the client sees a short
        body (there is no other way to say so once the headers are out)."""
        self._stop()
        self._request.unregisterProducer()
        if self._request.channel is not None:
            self._request.channel.loseConnection()


class _Waiter:
    """A client of a key whose fetch runs elsewhere: served from the store once that fetch
    published it, 424 when it ended without an object."""

    def __init__(
        self, store: ObjectStore, hits: Hits, clock: object, request: Request, target: Target
    ) -> None:
        assert target.bucket is not None and target.key is not None
        self._store = store
        self._hits = hits
        self._clock = clock
        self._request = request
        self._bucket = target.bucket.name
        self._key = target.key
        self._timer: IDelayedCall | None = None
        self._waited = 0.0
        self._last_look = False

    def look(self) -> None:
        """Serve the stored object now (it was there when the fetch began)."""
        self._last_look = True
        self._open()

    def poll(self) -> None:
        """Look for the object until it appears or its fetch elsewhere has ended."""
        self._request.notifyFinish().addErrback(self._gone)
        self._open()

    def _open(self) -> None:
        d = self._store.open_object(self._bucket, self._key, self._request)
        then(d, self._opened, self._failed)

    def _opened(self, obj: StoredObject | None) -> None:
        if self._request.finished or self._request._disconnected:
            if obj is not None:
                obj.close()
            return
        if obj is not None:
            self._hits.serve(self._request, obj)
            return
        if self._last_look:
            finish_with(
                self._request,
                errors.FAILED_DEPENDENCY,
                "The origin fetch of this key by another worker stored nothing.",
            )
            return
        then(self._store.lock_key(self._bucket, self._key), self._locked, self._failed)

    def _locked(self, lock: KeyLock | None) -> None:
        if lock is not None:  # the fetch elsewhere is over: one last look
            lock.release()
            self.look()
            return
        if self._waited >= WAIT_LIMIT:
            finish_error(self._request, errors.SERVICE_UNAVAILABLE)
            return
        self._waited += POLL_INTERVAL
        self._timer = self._clock.callLater(POLL_INTERVAL, self._open)  # type: ignore[attr-defined]

    def _gone(self, failure: Failure) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()

    def _failed(self, failure: Failure) -> None:
        if self._request.finished or self._request._disconnected:
            return
        if failure.check(StoreUnavailable):  # its outage is logged once, by the store
            finish_error(self._request, errors.SERVICE_UNAVAILABLE)
            return
        unexpected(failure, self._request, self._request.request_id)  # type: ignore[attr-defined]
