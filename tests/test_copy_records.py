"""The copy records (edge.origin.records) over a real SQLite file, on a test clock: the
states a copy goes through, what another process sees, what survives a reopen, the bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from edge.config import OriginAddress
from edge.origin.job import CopyJob
from edge.origin.records import INTERRUPTED, PROGRESS_INTERVAL, CopyRecords, record_json

BUCKET = "b-1250000000"
ORIGIN = OriginAddress.parse("203.0.113.7:8080")


def _job(key: str, request_id: str = "req-1") -> CopyJob:
    return CopyJob(BUCKET, key, ORIGIN, "203.0.113.7", request_id)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "copies.sqlite3"


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.advance(1_800_000_000)
    return c


def _records(path: Path, clock: Any) -> CopyRecords:
    records = CopyRecords(path, clock)
    records.start()
    return records


def test_a_copy_goes_queued_copying_stored_and_another_process_sees_each_step(path, clock):
    """Each state change is on disk at once for a second process; progress bytes within a
    second; the running process answers to the byte; the JSON has SPEC §9's fields."""
    mine, other = _records(path, clock), _records(path, clock)
    job = _job("a.txt")
    mine.queued(job)
    assert other.status(BUCKET, "a.txt").state == "queued"
    job.started = clock.seconds()
    mine.copying(job)
    job.expected, job.received = 10, 4
    assert mine.status(BUCKET, "a.txt").bytes == 4  # from memory
    assert other.status(BUCKET, "a.txt").bytes == 0  # not yet written
    clock.advance(PROGRESS_INTERVAL)
    seen = other.status(BUCKET, "a.txt")
    assert (seen.state, seen.bytes, seen.expected, seen.attempts) == ("copying", 4, 10, 1)
    job.received = 10
    clock.advance(2)
    mine.finished(job, "stored")
    answer = record_json(BUCKET, "a.txt", other.status(BUCKET, "a.txt"))
    assert answer == {
        "bucket": BUCKET,
        "key": "a.txt",
        "state": "stored",
        "origin": "203.0.113.7:8080",
        "address": "203.0.113.7",
        "bytes": 10,
        "expected": 10,
        "started": "2027-01-15T08:00:00Z",
        "finished": "2027-01-15T08:00:03Z",
        "reason": None,
        "retry_at": None,
        "attempts": 1,
        "request_id": "req-1",
    }
    assert other.by_request("req-1").key == "a.txt"
    assert record_json(BUCKET, "never", other.status(BUCKET, "never"))["state"] == "absent"
    mine.stop()
    other.stop()
    assert not clock.getDelayedCalls()


def test_failures_survive_a_reopen_newest_first_and_page_by_marker(path, clock):
    """Failed keys are listed newest first, a page at a time with the key as marker, and
    are all still there after the file is closed and opened again."""
    records = _records(path, clock)
    for i in range(5):
        job = _job(f"k{i}")
        job.started = clock.seconds()
        records.copying(job)
        clock.advance(1)
        records.finished(job, "failed", f"origin answered 50{i}", clock.seconds() + 60)
    records.stop()
    again = _records(path, clock)
    first, marker = again.failures(BUCKET, None, 2)
    assert [r.key for r in first] == ["k4", "k3"] and marker == "k3"
    second, marker = again.failures(BUCKET, marker, 2)
    assert [r.key for r in second] == ["k2", "k1"] and marker == "k1"
    last, marker = again.failures(BUCKET, marker, 2)
    assert [r.key for r in last] == ["k0"] and marker is None
    assert last[0].reason == "origin answered 500" and last[0].retry_at is not None
    assert again.counters(BUCKET)["failed"] == 5 and again.counters(BUCKET)["started"] == 5
    again.stop()


def test_counters_are_summed_over_processes_and_a_join_writes_nothing_at_once(path, clock):
    """A joined miss counts in memory (this process sees it at once) and reaches the file
    within a second, where every process's counts add up."""
    one, two = _records(path, clock), _records(path, clock)
    one.count(BUCKET, "joined")
    two.count(BUCKET, "joined")
    assert one.table.counters(BUCKET) == {}
    assert one.counters(BUCKET)["joined"] == 1
    clock.advance(PROGRESS_INTERVAL)
    assert one.counters(BUCKET)["joined"] == 2 and two.counters(BUCKET)["joined"] == 2
    assert not clock.getDelayedCalls()  # nothing left to write: the timer stopped
    one.stop()
    two.stop()


def test_a_copy_whose_process_died_is_recorded_failed_when_a_process_starts(path, clock):
    """Rows queued or copying by a process that is gone become failed, with the reason."""
    dead = _records(path, clock)
    job = _job("half.bin")
    job.started = clock.seconds()
    dead.copying(job)
    dead.table.close()  # killed: nothing flushed, nothing finished
    dead.table = None
    fresh = CopyRecords(path, clock, alive=lambda pid: False)
    fresh.start()
    record = fresh.status(BUCKET, "half.bin")
    assert (record.state, record.reason) == ("failed", INTERRUPTED)
    fresh.stop()


def test_queued_never_hides_another_process_copy_and_refusals_keep_the_real_reason(path, clock):
    """A process that queues a key another process copies leaves that row alone; a refusal
    (breaker, overflow) of a key that failed keeps the failure's own reason."""
    copying, queuing = _records(path, clock), _records(path, clock)
    job = _job("k")
    job.started = clock.seconds()
    copying.copying(job)
    queuing.queued(_job("k", "req-2"))
    assert queuing.status(BUCKET, "k").state == "copying"
    copying.finished(job, "failed", "connection refused", None)
    queuing.refused(_job("k"), "breaker_open", "not copied: circuit breaker open", None)
    assert queuing.status(BUCKET, "k").reason == "connection refused"
    queuing.refused(_job("new"), "overflow", "not copied: queue full (1)", None)
    assert queuing.status(BUCKET, "new").reason == "not copied: queue full (1)"
    copying.stop()
    queuing.stop()


def test_rows_are_bounded_oldest_first(path, clock):
    """Pruning keeps the newest failed rows and the newest stored rows, each to its bound."""
    records = _records(path, clock)
    for i in range(4):
        for outcome in ("failed", "stored"):
            job = _job(f"{outcome}{i}")
            records.copying(job)
            clock.advance(1)
            records.finished(job, outcome, "x" if outcome == "failed" else None)
    records.table.prune(max_failed=2, max_other=1)
    failures, _ = records.failures(BUCKET, None, 10)
    assert [r.key for r in failures] == ["failed3", "failed2"]
    assert records.status(BUCKET, "stored3").state == "stored"
    assert records.status(BUCKET, "stored2") is None
    records.stop()


def test_a_key_deleted_during_its_copy_and_a_dropped_queued_copy_leave_no_record(path, clock):
    """`deleted` (a DELETE came while the body streamed) and a queued copy a DELETE dropped
    leave the key absent, not stored."""
    records = _records(path, clock)
    job = _job("d")
    records.copying(job)
    records.finished(job, "deleted")
    assert records.status(BUCKET, "d") is None
    queued = _job("q")
    records.queued(queued)
    records.dropped(queued, None)
    assert records.status(BUCKET, "q") is None
    assert records.counters(BUCKET)["deleted"] == 1
    records.stop()


def test_the_file_is_opened_at_start_as_the_user_the_edge_runs_as(path, clock):
    """Nothing is created before `start` (twistd drops to `--uid` between building the
    service tree and starting it, and a file root made would refuse the edge's writes)."""
    records = CopyRecords(path, clock)
    assert not path.exists()
    records.start()
    assert path.exists()
    records.stop()


@pytest.mark.logs_errors
def test_records_that_cannot_be_kept_on_disk_are_kept_in_memory(tmp_path, clock):
    """A records path that cannot be opened (here a folder) is logged once, and the
    records go on in memory: copies never fail for them."""
    folder = tmp_path / "copies.sqlite3"
    folder.mkdir()
    records = _records(folder, clock)
    job = _job("m")
    records.copying(job)
    records.finished(job, "failed", "origin answered 500", None)
    assert records.status(BUCKET, "m").reason == "origin answered 500"
    records.stop()
