"""An origin body's write-behind (`edge.origin.writebehind`): chunks written on worker threads
(the file's lane and the hash's) in arrival order, the origin held back while the threads are
behind, a failing write stopping everything after it; a real fetch through it keeping the
store's MD5 right; and a Mirror client reading both what is written and what is not yet."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from edge.origin.fetch import Fetched
from edge.origin.writebehind import HIGH_WATER, WriteBehind, hash_written, joined
from tests.test_origin_fetch import _fetch, origin, store  # noqa: F401 (fixtures)

reactor: Any = _reactor

CHUNK = 256 * 1024


class _Disk:
    """A write function that can be held, as a slow disk would, recording what it got."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.chunks: list[bytes] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_at = fail_at
        self.totals: list[int] = []
        self.failures: list[Failure] = []
        self.calls: list[str] = []
        self.hashed: list[bytes] = []  # a second lane, as the MD5 is

    def write(self, chunks: Sequence[bytes]) -> None:
        self.gate.wait(10)
        if self.fail_at is not None and len(self.chunks) == self.fail_at:
            raise OSError(28, "No space left on device")
        self.chunks.append(b"".join(chunks))

    def behind(self, min_batch: int = 1) -> WriteBehind:
        return WriteBehind(
            (self.write, joined(self.hashed.append)),
            self.totals.append,
            self.failures.append,
            lambda: self.calls.append("pause"),
            lambda: self.calls.append("resume"),
            min_batch,
        )


async def _turns(n: int = 3) -> None:
    for _ in range(n):
        await deferLater(reactor, 0.01, lambda: None)


@pytest_twisted.ensureDeferred
async def test_chunks_are_written_in_order_and_the_origin_waits_for_a_slow_disk():
    """While the thread is held, chunks past HIGH_WATER pause the origin (once); when the disk
    catches up the origin resumes, the bytes land in arrival order (in batches), the totals
    announced on the reactor grow to the sum, and `idle` fires only once all is written."""
    disk = _Disk()
    disk.gate.clear()
    behind = disk.behind()
    chunks = [bytes([n]) * CHUNK for n in range(HIGH_WATER // CHUNK * 2 + 4)]
    for chunk in chunks:
        behind.add(chunk)
    assert disk.calls == ["pause"] and behind.paused
    idle = behind.idle()
    assert not idle.called
    disk.gate.set()
    await idle
    assert b"".join(disk.chunks) == b"".join(chunks) == b"".join(disk.hashed)
    assert len(disk.chunks) < len(chunks)  # batched: one write per batch, not per chunk
    assert disk.calls == ["pause", "resume"] and not behind.paused
    assert disk.totals[-1] == behind.total == sum(map(len, chunks))
    assert disk.totals == sorted(disk.totals)
    assert not disk.failures


@pytest_twisted.ensureDeferred
async def test_small_chunks_wait_for_a_batch_or_the_end_of_the_body():
    """Chunks queue until `min_batch` bytes are there (one hand-over to the threads, not one
    per chunk), and what is left when the body ends goes when `idle` is asked for."""
    disk = _Disk()
    behind = disk.behind(min_batch=1000)
    for n in range(9):
        behind.add(bytes([n]) * 100)
    await _turns()
    assert disk.chunks == [] and not behind.running
    behind.add(b"\x09" * 100)  # 1000 bytes: a batch
    while not disk.chunks or behind.running:
        await _turns(1)
    assert disk.chunks == [b"".join(bytes([n]) * 100 for n in range(10))]
    behind.add(b"tail")
    await _turns()
    assert len(disk.chunks) == 1
    await behind.idle()
    assert disk.chunks[-1] == b"tail" and behind.total == 1004 == disk.totals[-1]


@pytest_twisted.ensureDeferred
async def test_a_failing_write_stops_everything_after_it():
    """A write that raises is reported once, on the reactor; nothing is written after it,
    later chunks are refused, and the write-behind is idle."""
    disk = _Disk(fail_at=1)  # the first batch (one chunk) lands, the second fails
    disk.gate.clear()
    behind = disk.behind()
    for n in range(6):
        behind.add(bytes([n]) * 10)
    disk.gate.set()
    await _turns()
    while behind.running:
        await _turns(1)
    behind.add(b"late")
    await behind.idle()
    await behind.settled()
    assert disk.chunks == [b"\x00" * 10]
    [failure] = disk.failures
    assert failure.check(OSError)
    assert not behind.running


@pytest_twisted.ensureDeferred
async def test_settled_waits_for_the_batch_on_the_thread_even_when_cancelled():
    """`settled` returns only once the thread is done with its batch, though the wait is
    cancelled meanwhile (an aborted copy closes its files right after it)."""
    disk = _Disk()
    disk.gate.clear()
    behind = disk.behind()
    behind.add(b"x" * 10)
    behind.stop()
    settled = Deferred.fromCoroutine(behind.settled())
    results: list[object] = []
    settled.addBoth(results.append)
    await _turns()
    settled.cancel()
    await _turns()
    assert behind.running and not results
    disk.gate.set()
    while not results:
        await _turns(1)
    assert results == [None]
    assert not behind.running and disk.chunks == [b"x" * 10]


@pytest_twisted.ensureDeferred
async def test_a_large_fetch_stores_the_right_md5(origin, store: Any):  # noqa: F811
    """A 24 MiB random body fetched through the worker thread is stored byte for byte and
    its ETag is the body's MD5 (the hash saw every chunk once, in order)."""
    body = os.urandom(3 * 1024 * 1024) * 8
    origin.serve("/big.bin", body=body)
    result = await _fetch(origin, store, "big.bin")
    assert result is Fetched.STORED
    path = Path(store.path_for("b-1", "big.bin"))
    assert path.read_bytes() == body
    obj = await store.open_object("b-1", "big.bin")
    try:
        assert await obj.etag() == hashlib.md5(body).hexdigest()  # the copy's, cached
    finally:
        obj.close()
    assert not list(store.tmp_dir.iterdir())


def test_a_mirror_client_reads_the_file_then_the_chunks_not_yet_written(tmp_path: Path):
    """A Mirror fetch's reads span the buffer file (what the thread wrote) and the chunks
    that only arrived (still in memory): every offset reads the body's bytes, a chunk read
    whole is the very object that arrived (no copy), and nothing past the arrived bytes."""
    from twisted.web.http_headers import Headers

    from edge.origin.mirror import MirrorFetch

    class _Response:
        length = 12
        headers = Headers()

    path = tmp_path / "buffer"
    path.write_bytes(b"")
    fetch = MirrorFetch(lambda: None)
    fetch.response(_Response(), os.open(path, os.O_RDONLY))  # type: ignore[arg-type]
    chunks = [b"abcd", b"efgh", b"ijkl"]
    for chunk in chunks:
        fetch.arrived(chunk)
    with open(path, "ab") as f:
        f.write(b"abcd")
    fetch.stored(4)
    assert fetch.read(0, 100) == b"abcd"  # from the file, up to what it holds
    assert fetch.read(4, 100) is chunks[1]
    assert fetch.read(6, 4) == b"gh"  # never across a chunk in one read
    assert fetch.read(9, 2) == b"jk"
    assert fetch.read(12, 10) == b""
    fetch.ended(Failure(OSError("done")))


@pytest_twisted.ensureDeferred
async def test_hash_written_reads_the_body_back_in_order_and_closes_the_file(tmp_path: Path):
    """`hash_written` gives the hash lane every written byte in order (the MD5 equals the
    body's), off the reactor thread, and closes the descriptor; a file shorter than the size
    it was told fails rather than hash a short body."""
    body = os.urandom(3 * 1024 * 1024 + 123)
    path = tmp_path / "body"
    path.write_bytes(body)
    md5 = hashlib.md5(usedforsecurity=False)
    threads: set[str] = set()

    def lane(chunk: bytes) -> None:
        threads.add(threading.current_thread().name)
        md5.update(chunk)

    fd = os.open(path, os.O_RDONLY)
    await hash_written(fd, len(body), lane)
    assert md5.hexdigest() == hashlib.md5(body).hexdigest()
    assert threading.current_thread().name not in threads
    with pytest.raises(OSError):
        os.fstat(fd)  # closed
    short = os.open(path, os.O_RDONLY)
    with pytest.raises(OSError, match="ended at"):
        await hash_written(short, len(body) + 1, lambda chunk: None)
