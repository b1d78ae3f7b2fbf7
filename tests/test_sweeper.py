"""The housekeeping sweep over `.cosedge`: what it removes, and what it must leave."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import pytest_twisted

from edge.config import ConfigError, parse_config
from edge.process.sweeper import Sweeper
from edge.store.folder.keylocks import KeyLocks
from edge.store.folder.store import FolderStore as ObjectStore
from edge.store.interface import ObjectMeta

BUCKET = "b-1250000000"
WEEK = 7 * 24 * 3600.0


def _store(tmp_path: Path) -> ObjectStore:
    store = ObjectStore(tmp_path / "data", [BUCKET])
    store.prepare()
    return store


def _sweeper(store: ObjectStore, expiry: float = WEEK) -> Sweeper:
    return Sweeper(None, store, lambda: expiry)


@pytest_twisted.ensureDeferred
async def test_stale_lock_files_go_and_held_ones_stay(tmp_path):
    """A lock file nobody holds (its copier was killed) is removed; one a running copy
    holds stays, and the copy still owns its key afterwards."""
    store = _store(tmp_path)
    locks = KeyLocks(store.state_dir)
    held = locks.acquire(BUCKET, "running")
    stale = Path(locks.path_for(BUCKET, "crashed"))
    stale.write_bytes(b"")
    counts = await _sweeper(store).sweep_now()
    assert counts["locks"] == 1 and not stale.exists()
    assert held is not None and Path(held.path).exists()
    assert locks.acquire(BUCKET, "running") is None  # still held by the running copy
    held.release()


@pytest_twisted.ensureDeferred
async def test_uploads_older_than_the_bound_are_aborted(tmp_path):
    """An upload begun longer ago than `abort_incomplete_uploads_after` goes with its
    parts; a younger one stays, and one without a readable info.json goes when old."""
    store = _store(tmp_path)
    uploads = store.uploads.files
    old = uploads.create(BUCKET, "old.bin", ObjectMeta())
    young = uploads.create(BUCKET, "young.bin", ObjectMeta())
    info = uploads.root / old.upload_id / "info.json"
    record = json.loads(info.read_text())
    record["initiated"] = time.time() - WEEK - 60
    info.write_text(json.dumps(record))
    broken = uploads.root / ("f" * 32)
    broken.mkdir()
    os.utime(broken, (time.time() - WEEK - 60,) * 2)
    counts = await _sweeper(store).sweep_now()
    assert counts["uploads"] == 1
    assert not (uploads.root / old.upload_id).exists() and not broken.exists()
    assert (uploads.root / young.upload_id).is_dir()


@pytest_twisted.ensureDeferred
async def test_metadata_of_objects_gone_or_replaced_is_removed(tmp_path):
    """Metadata whose object was deleted, or replaced, by hand goes; metadata of an
    object still as it was uploaded stays."""
    store = _store(tmp_path)
    folder = store.data_dir / BUCKET
    for name in ("kept.txt", "gone.txt", "replaced.txt"):
        (folder / name).write_bytes(b"v1")
        store.meta.write(BUCKET, name, ObjectMeta("text/x-test", {}))
    (folder / "gone.txt").unlink()
    (folder / "replaced.txt").unlink()
    (folder / "replaced.txt").write_bytes(b"v2, another inode")
    counts = await _sweeper(store).sweep_now()
    assert counts["metadata"] == 2
    remaining = sorted(json.loads(p.read_text())["key"] for p in store.state_dir.rglob("*.json")
                       if "meta" in p.parts)  # fmt: skip
    assert remaining == ["kept.txt"]


@pytest_twisted.ensureDeferred
async def test_dead_temporary_state_files_go_fresh_ones_stay(tmp_path):
    """A state write's temp file over an hour old is removed; one just written (a write
    in progress) is not."""
    store = _store(tmp_path)
    (store.state_dir / "origin").mkdir(exist_ok=True)
    dead = store.state_dir / "origin" / f".{BUCKET}.json.0123.tmp"
    fresh = store.state_dir / "origin" / f".{BUCKET}.json.4567.tmp"
    stamp = store.state_dir / ".buckets.stamp.89ab.tmp"
    for path in (dead, fresh, stamp):
        path.write_text("{}")
    os.utime(dead, (time.time() - 7200,) * 2)
    os.utime(stamp, (time.time() - 7200,) * 2)
    assert (await _sweeper(store).sweep_now())["temp_files"] == 2
    assert fresh.exists() and not dead.exists() and not stamp.exists()


def test_upload_expiry_is_a_config_key_in_seconds():
    """`limits.abort_incomplete_uploads_after` defaults to 7 days and refuses nonsense."""
    assert parse_config({}, "c.yaml").limits.abort_incomplete_uploads_after == WEEK
    config = parse_config({"limits": {"abort_incomplete_uploads_after": 3600}}, "c.yaml")
    assert config.limits.abort_incomplete_uploads_after == 3600.0
    with pytest.raises(ConfigError, match="limits.abort_incomplete_uploads_after"):
        parse_config({"limits": {"abort_incomplete_uploads_after": "soon"}}, "c.yaml")


@pytest_twisted.ensureDeferred
async def test_a_damaged_upload_record_is_skipped_not_fatal(tmp_path):
    """An upload whose info.json lacks its fields is treated as absent (it used to raise
    KeyError and end the whole sweep, and list-uploads with it); once old it is swept."""
    store = _store(tmp_path)
    uploads = store.uploads.files
    good = uploads.create(BUCKET, "good.bin", ObjectMeta())
    damaged = uploads.root / ("e" * 32)
    damaged.mkdir()
    (damaged / "info.json").write_text("{}")
    assert [u.upload_id for u in uploads.uploads(BUCKET)] == [good.upload_id]
    os.utime(damaged, (time.time() - WEEK - 60,) * 2)
    counts = await _sweeper(store).sweep_now()
    assert not damaged.exists() and counts["locks"] == 0


@pytest_twisted.ensureDeferred
async def test_dead_parts_and_old_free_tombstones_go(tmp_path):
    """A `.cosedge/tmp/*.part` untouched for an hour (a worker killed mid-upload) and a
    day-old tombstone whose key no copy holds are swept; a fresh part and a tombstone
    whose copy still runs stay."""
    store = _store(tmp_path)
    old, fresh = store.tmp_dir / "dead.part", store.tmp_dir / "live.part"
    for path in (old, fresh):
        path.write_bytes(b"x")
    os.utime(old, (time.time() - 7200,) * 2)
    locks = KeyLocks(store.state_dir)
    free = Path(locks.path_for(BUCKET, "free")).with_suffix(".deleted")
    busy_lock = locks.acquire(BUCKET, "busy")
    assert busy_lock is not None
    busy = Path(busy_lock.path).with_suffix(".deleted")
    for path in (free, busy):
        path.write_bytes(b"")
        os.utime(path, (time.time() - 2 * 86400,) * 2)
    counts = await _sweeper(store).sweep_now()
    assert not old.exists() and fresh.exists()
    assert not free.exists() and busy.exists()
    assert counts["temp_files"] == 1 and counts["locks"] == 1
    busy_lock.release()


@pytest_twisted.ensureDeferred
async def test_a_sweep_the_store_cannot_answer_is_tried_again_soon(tmp_path, monkeypatch):
    """A sweep that meets StoreUnavailable (an S3 store or Redis not reachable yet, as at a
    node's start) runs again RETRY_AFTER seconds later instead of an interval later, until
    the store answers; then it waits the interval, and a stopped sweeper leaves no retry
    pending. The first skip at the start is a debug line (Redis connects a moment after
    the first sweep); a second one is logged at info."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater
    from twisted.logger import globalLogPublisher

    from edge.process import sweeper as sweeper_module
    from edge.store.interface import StoreUnavailable

    monkeypatch.setattr(sweeper_module, "RETRY_AFTER", 0.05)
    store = _store(tmp_path)
    real_expire = store.uploads.expire
    calls: list[bool] = []  # whether the store answered, per sweep

    def expire(older_than: float, now: float):
        if len(calls) < 2:  # away for the first two sweeps
            calls.append(False)
            raise StoreUnavailable("redis: not connected")
        calls.append(True)
        return real_expire(older_than, now)

    monkeypatch.setattr(store.uploads, "expire", expire)
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    service = Sweeper(reactor, store, lambda: WEEK)
    try:
        service.startService()
        for _ in range(100):
            if len(calls) >= 3:
                break
            await deferLater(reactor, 0.05, lambda: None)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert calls == [False, False, True]
    skips = [e["log_level"].name for e in events if "Sweep skipped" in e.get("log_format", "")]
    assert skips == ["debug", "info"]
    await deferLater(reactor, 0.3, lambda: None)
    assert len(calls) == 3  # answered: the next sweep is an interval away
    service.stopService()
    assert service._retry is None
