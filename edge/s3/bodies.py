"""Streaming bodies for the S3 client, in both directions, with backpressure and idle timeouts.

Objects can be far larger than memory (SPEC §8: a hit never buffers a whole object), so uploads
come from a file range read a chunk at a time (`FileRangeProducer`) and downloads go straight
from the socket into the caller's consumer, pausing the socket whenever the consumer pauses.
Only small bodies (XML answers) are collected, and those with a cap.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from typing import IO, Any

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from edge.s3.errors import S3Unavailable

_DONE = Failure(ResponseDone())

#: Bytes read from a file per turn of the reactor; also the hashing read size.
READ_SIZE = 256 * 1024


def sha256_of_file(path: str, offset: int = 0, length: int | None = None) -> Deferred[str]:
    """Hex SHA-256 of `length` bytes of `path` from `offset`, computed in a thread.

    A part can be hundreds of MiB; hashing it on the reactor would stall every other request
    for seconds, so it goes to the thread pool (CPU and file reads only, no network).
    """
    return deferToThread(_hash_range, path, offset, length)


def _hash_range(path: str, offset: int, length: int | None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        remaining = length if length is not None else -1
        while remaining != 0:
            chunk = f.read(READ_SIZE if remaining < 0 else min(READ_SIZE, remaining))
            if not chunk:
                if remaining > 0:
                    raise OSError(f"{path} ended {remaining} bytes before the range did")
                break
            digest.update(chunk)
            if remaining > 0:
                remaining -= len(chunk)
    return digest.hexdigest()


@implementer(IBodyProducer)
class FileRangeProducer:
    """Sends `length` bytes of a local file from `offset` as a request body.

    The file is opened anew by each `startProducing`, so the same producer can be sent again
    (a retried part). It reads one chunk per cooperator turn and stops reading while the
    connection is paused, so memory stays at a chunk or two whatever the size.
    """

    def __init__(
        self,
        path: str,
        offset: int = 0,
        length: int | None = None,
        cooperator: task.Cooperator | None = None,
    ) -> None:
        if length is None:
            length = os.path.getsize(path) - offset
        if offset < 0 or length < 0:
            raise ValueError(f"bad range offset={offset} length={length} of {path}")
        self.path = path
        self.offset = offset
        self.length = length
        self._cooperate = cooperator.cooperate if cooperator is not None else task.cooperate
        self._task: task.CooperativeTask[Any] | None = None
        self._stopped = False

    def sha256(self) -> Deferred[str]:
        """The SHA-256 of exactly the bytes this producer sends (in a thread)."""
        return sha256_of_file(self.path, self.offset, self.length)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._stopped = False
        f = open(self.path, "rb")  # noqa: SIM115 - closed when the task ends
        f.seek(self.offset)
        self._task = self._cooperate(self._chunks(f, consumer))
        finished: Deferred[None] = Deferred()

        def done(result: object) -> None:
            f.close()
            if isinstance(result, Failure):
                if result.check(task.TaskStopped):
                    return  # stopProducing: the request no longer waits on us
                finished.errback(result)
            else:
                finished.callback(None)

        self._task.whenDone().addBoth(done)
        return finished

    def _chunks(self, f: IO[bytes], consumer: IConsumer) -> Iterator[None]:
        remaining = self.length
        while remaining > 0:
            chunk = f.read(min(READ_SIZE, remaining))
            if not chunk:
                raise OSError(f"{self.path} ended {remaining} bytes before the range did")
            remaining -= len(chunk)
            try:
                consumer.write(chunk)
            except Exception:
                if not self._stopped:
                    raise
            if self._stopped:
                # The write lost the connection, which stopped this task under us (and the
                # write may have raised for it): ending or raising now would finish the
                # task twice (a ValueError in the Cooperator). It is never resumed.
                yield None
                return
            yield None

    def pauseProducing(self) -> None:
        if self._task is not None:
            self._task.pause()

    def resumeProducing(self) -> None:
        if self._task is not None:
            self._task.resume()

    def stopProducing(self) -> None:
        self._stopped = True
        if self._task is not None:
            try:
                self._task.stop()
            except (task.TaskDone, task.TaskFailed, task.TaskStopped):
                # Finished, or stopped already: a cancelled request's connection is
                # aborted, and its transport stops the producer a second time.
                pass


@implementer(IBodyProducer)
class BytesProducer:
    """A small in-memory body (XML documents, state objects), written in one go."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._data)
        return Deferred.fromCoroutine(_none())

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


async def _none() -> None:
    return None


class Watchdog:
    """Fires `on_expire` once no activity was seen for `timeout` seconds (while not paused).

    An idle timeout rather than a total one: a 5 GiB part may take minutes to send and is
    fine as long as bytes keep moving, while a store that stops answering is noticed quickly.
    """

    def __init__(self, clock: IReactorTime, timeout: float, on_expire: Callable[[], Any]) -> None:
        self._clock = clock
        self._timeout = timeout
        self._on_expire = on_expire
        self.expired = False
        self._stopped = False
        self._call: IDelayedCall | None = clock.callLater(timeout, self._expire)

    def _expire(self) -> None:
        self._call = None
        self.expired = True
        self._on_expire()

    def touch(self) -> None:
        """Activity seen: the idle period starts again."""
        if self._call is not None:
            self._call.reset(self._timeout)

    def pause(self) -> None:
        """Our side is holding the traffic back (backpressure): idle time does not count."""
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def resume(self) -> None:
        """Traffic may flow again: restart the idle period."""
        if self._call is None and not self.expired and not self._stopped:
            self._call = self._clock.callLater(self._timeout, self._expire)

    def stop(self) -> None:
        """The exchange ended: never fire."""
        self._stopped = True
        self.pause()


@implementer(IConsumer)
class _TouchingConsumer:
    """Passes writes to the real consumer and tells the watchdog bytes are moving."""

    def __init__(self, consumer: IConsumer, watchdog: Watchdog) -> None:
        self._consumer = consumer
        self._watchdog = watchdog

    def write(self, data: bytes) -> None:
        self._watchdog.touch()
        self._consumer.write(data)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._consumer.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._consumer.unregisterProducer()


@implementer(IBodyProducer)
class TouchingProducer:
    """Wraps a request body so that sending it counts as activity for the watchdog."""

    def __init__(self, producer: IBodyProducer, watchdog: Watchdog) -> None:
        self._producer = producer
        self._watchdog = watchdog
        self.length = producer.length

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        started: Deferred[None] = self._producer.startProducing(
            _TouchingConsumer(consumer, self._watchdog)
        )
        return started

    def pauseProducing(self) -> None:
        self._producer.pauseProducing()

    def resumeProducing(self) -> None:
        self._producer.resumeProducing()

    def stopProducing(self) -> None:
        self._producer.stopProducing()


def _lost(reason: Failure, timed_out: bool, timeout: float, what: str) -> Exception:
    if timed_out:
        return S3Unavailable(f"store sent nothing for {timeout:g} s while {what}")
    return S3Unavailable(f"connection to the store lost while {what}: {reason.getErrorMessage()}")


class Collector(Protocol):
    """Collects a small response body (at most `limit` bytes) for parsing.

    XML answers are small (a 1000-key listing is well under 1 MiB); the cap turns a store that
    sends something unexpected and huge into an error instead of a memory spike.
    """

    def __init__(self, clock: IReactorTime, timeout: float, limit: int = 16 * 1024 * 1024):
        self.finished: Deferred[bytes] = Deferred()
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = limit
        self._timeout = timeout
        self._watchdog = Watchdog(clock, timeout, self._idle)

    def _idle(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self._watchdog.touch()
        self._size += len(data)
        if self._size > self._limit:
            self._chunks.clear()
            self._watchdog.stop()
            self.transport.stopProducing()  # type: ignore[union-attr]
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = _DONE) -> None:
        timed_out = self._watchdog.expired
        self._watchdog.stop()
        if self._size > self._limit:
            self.finished.errback(S3Unavailable(f"store answer exceeds {self._limit} bytes"))
        elif reason.check(ResponseDone):
            self.finished.callback(b"".join(self._chunks))
        else:
            self.finished.errback(_lost(reason, timed_out, self._timeout, "reading an answer"))


@implementer(IPushProducer)
class ConsumerFeeder(Protocol):
    """Feeds a response body into an `IConsumer`, pausing the socket when the consumer pauses.

    It registers itself as the consumer's streaming producer, so a slow reader (a client on a
    slow link, a full disk write queue) stops the store's socket instead of filling memory.
    `finished` fires with the byte count, or fails with `S3Unavailable` if the body ends early.
    """

    def __init__(self, consumer: IConsumer, clock: IReactorTime, timeout: float) -> None:
        self.finished: Deferred[int] = Deferred()
        self.received = 0
        self._consumer = consumer
        self._timeout = timeout
        self._watchdog = Watchdog(clock, timeout, self.stopProducing)

    def connectionMade(self) -> None:
        self._consumer.registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        self._watchdog.touch()
        self.received += len(data)
        self._consumer.write(data)

    def connectionLost(self, reason: Failure = _DONE) -> None:
        timed_out = self._watchdog.expired
        self._watchdog.stop()
        # A twisted.web request whose client has gone has no channel left to unregister
        # from (and has already let go of this producer): nothing to undo then.
        if getattr(self._consumer, "channel", True) is not None:
            self._consumer.unregisterProducer()
        if reason.check(ResponseDone):
            self.finished.callback(self.received)
        else:
            self.finished.errback(_lost(reason, timed_out, self._timeout, "reading an object"))

    def pauseProducing(self) -> None:
        self._watchdog.pause()
        if self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        self._watchdog.resume()
        if self.transport is not None:
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    def stopProducing(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]


class Discarder(Protocol):
    """Drops a body the caller does not want by closing the connection at once."""

    def connectionMade(self) -> None:
        self.transport.stopProducing()  # type: ignore[union-attr]
