"""The fetch of one object, alone: `ObjectFetcher` against a real `FakeOrigin` on loopback,
into a real folder store, with the real `OriginClient` connections. Only a whole body is
stored; a short or slow origin stores nothing and leaves no temporary file. (The same
faults through a whole edge, with leak checks, are in tests/integration/test_faults.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor

from edge.config import OriginAddress, OriginFetchConfig
from edge.origin.client import OriginClient
from edge.origin.fetch import CopyFailed, CopyJob, Fetched, ObjectFetcher
from edge.store.folder.store import FolderStore as ObjectStore
from edge.testing.deferreds import fired
from edge.testing.origin import FakeOrigin

reactor: Any = _reactor


@pytest.fixture
def origin() -> Iterator[FakeOrigin]:
    fake = FakeOrigin(reactor)
    listening = reactor.listenTCP(0, fake.factory(), interface="127.0.0.1")
    fake.port = listening.getHost().port  # type: ignore[attr-defined]
    yield fake
    fake.drop_all()
    pytest_twisted.blockon(listening.stopListening())


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    s = ObjectStore(tmp_path / "data", ["b-1"])
    s.prepare()
    return s


async def _fetch(origin: FakeOrigin, store: ObjectStore, key: str, **limits: Any) -> Any:
    """Fetch `key` from the fake origin; the outcome, or the `CopyFailed` it failed with."""
    client = OriginClient(reactor)
    fetcher = ObjectFetcher(
        reactor,
        store,
        OriginFetchConfig(**limits),
        lambda address, port, meter: client.agent(address, port, meter, 2.0),
    )
    where = OriginAddress.parse(f"127.0.0.1:{origin.port}")  # type: ignore[attr-defined]
    try:
        return await fetcher.start(CopyJob("b-1", key, where, "127.0.0.1"))
    except CopyFailed as e:
        return e
    finally:
        await client.stopService()


def _nothing_stored(store: ObjectStore, key: str) -> bool:
    return not fired(store.exists("b-1", key)) and not list(store.tmp_dir.iterdir())


@pytest_twisted.ensureDeferred
async def test_a_whole_body_is_stored_as_sent(origin, store):
    """A complete 200 body is published under the key, byte for byte, and the origin was
    asked with the edge's User-Agent and for the identity encoding."""
    body = bytes(range(256)) * 40
    origin.serve("/dir/a.bin", body=body)
    assert await _fetch(origin, store, "dir/a.bin") is Fetched.STORED
    assert Path(store.path_for("b-1", "dir/a.bin")).read_bytes() == body
    [seen] = origin.requests
    assert seen.headers["user-agent"].startswith("cosedge/")
    assert seen.headers["accept-encoding"] == "identity"
    assert not list(store.tmp_dir.iterdir())


@pytest_twisted.ensureDeferred
async def test_a_truncated_body_stores_nothing(origin, store):
    """An origin that closes the connection after 400 of the 1000 bytes its Content-Length
    announced stores nothing and leaves no temporary file; the reason names the cut."""
    origin.serve("/short", body=b"s" * 1000, cut_after=400)
    failed = await _fetch(origin, store, "short")
    assert isinstance(failed, CopyFailed)
    assert str(failed) == "connection lost mid-body after 400 bytes"
    assert _nothing_stored(store, "short")


@pytest_twisted.ensureDeferred
async def test_an_origin_slow_to_answer_times_out(origin, store):
    """An origin that sends no status line within `idle_timeout` fails the fetch with a
    reason naming that timeout, and nothing is stored."""
    origin.serve("/slow", body=b"x", headers_delay=30)
    failed = await _fetch(origin, store, "slow", idle_timeout=0.3)
    assert str(failed) == "no response headers within 0.3s"
    assert _nothing_stored(store, "slow")


@pytest_twisted.ensureDeferred
async def test_an_origin_that_stalls_mid_body_times_out(origin, store):
    """An origin that sends part of the body and then nothing, keeping the connection open,
    fails the fetch after `idle_timeout` of silence, and nothing is stored."""
    origin.serve("/stall", body=b"x" * 1000, stall_after=300)
    failed = await _fetch(origin, store, "stall", idle_timeout=0.3)
    assert str(failed) == "origin sent nothing for 0.3s (idle timeout)"
    assert _nothing_stored(store, "stall")


@pytest_twisted.ensureDeferred
async def test_a_body_slower_than_total_timeout_is_cut(origin, store):
    """An origin that answers at once but delays its body past a `total_timeout` shorter
    than `idle_timeout` fails the fetch with the total timeout, and nothing is stored."""
    origin.serve("/trickle", body=b"x" * 10, body_delay=30)
    failed = await _fetch(origin, store, "trickle", idle_timeout=20, total_timeout=0.3)
    assert str(failed) == "took longer than total_timeout (0.3s)"
    assert _nothing_stored(store, "trickle")
