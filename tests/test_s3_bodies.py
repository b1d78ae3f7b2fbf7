"""FileRangeProducer (edge/s3/bodies.py) under a connection that is lost inside one of its
own writes, on a real Cooperator driven by a Clock: nothing left for the reactor to trip on."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.interfaces import IConsumer
from twisted.internet.task import Clock, Cooperator
from zope.interface import implementer

from edge.s3 import FileRangeProducer
from edge.s3.bodies import READ_SIZE


@implementer(IConsumer)
class LosingConsumer:
    """A request body whose connection is lost during the `lose_at`th write: as Twisted's
    HTTP client does then, it stops the producer and refuses the write."""

    def __init__(self, lose_at: int) -> None:
        self.lose_at = lose_at
        self.writes = 0
        self.producer: FileRangeProducer | None = None

    def write(self, data: bytes) -> None:
        self.writes += 1
        if self.writes == self.lose_at:
            assert self.producer is not None
            self.producer.stopProducing()
            raise RuntimeError("connection lost: no more writes")

    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass


def run(tmp_path: Path, chunks: int, lose_at: int) -> tuple[LosingConsumer, list[object]]:
    path = tmp_path / "body"
    path.write_bytes(b"x" * (READ_SIZE * chunks))
    clock = Clock()
    cooperator = Cooperator(scheduler=lambda f: clock.callLater(0, f))
    producer = FileRangeProducer(str(path), cooperator=cooperator)
    consumer = LosingConsumer(lose_at)
    consumer.producer = producer
    results: list[object] = []
    producer.startProducing(consumer).addBoth(results.append)
    for _ in range(chunks + 3):
        clock.advance(0)  # a ValueError from the Cooperator would be raised here
    producer.stopProducing()  # stopped again by the transport: quiet too
    return consumer, results


def test_connection_lost_in_the_last_write(tmp_path: Path) -> None:
    """Stopped (and refused) inside its last write, the producer neither finishes its task
    a second time nor fires its Deferred (IBodyProducer: never after stopProducing)."""
    consumer, results = run(tmp_path, chunks=2, lose_at=2)
    assert consumer.writes == 2
    assert results == []


def test_connection_lost_in_a_middle_write(tmp_path: Path) -> None:
    """Stopped inside an earlier write, it writes nothing more."""
    consumer, results = run(tmp_path, chunks=4, lose_at=2)
    assert consumer.writes == 2
    assert results == []
