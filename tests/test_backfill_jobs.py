"""Backfill jobs without an origin: the rate limiter and the runner's pacing on a `Clock`,
the checkpoint and how a restart resumes from it, the job files, the command's lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from edge.admin.backfill import final_summary, progress_line
from edge.config import parse_config
from edge.origin.backfill import BackfillRunner, Located, RateLimiter
from edge.origin.jobcopies import JobCopier
from edge.origin.jobs import JobFiles, JobProblem, JobSpec, Progress
from edge.store.folder.store import FolderStore

BUCKET = "examplebucket-1250000000"


def test_rate_limiter_spaces_starts_on_the_clock() -> None:
    """At 4 keys/s each start waits a quarter second after the one before; a pause lets
    the next start go at once but builds up no burst."""
    clock: Any = Clock()  # Clock.callLater's stub is narrower than ReactorClock's
    limiter = RateLimiter(clock, 4)
    assert limiter.wait() == 0
    limiter.take()
    assert limiter.wait() == 0.25
    clock.advance(0.1)
    assert limiter.wait() == pytest.approx(0.15)
    clock.advance(0.15)
    assert limiter.wait() == 0
    limiter.take()
    clock.advance(10)
    limiter.take()
    assert limiter.wait() == 0.25  # ten idle seconds do not buy ten starts
    unlimited = RateLimiter(clock, None)
    unlimited.take()
    assert unlimited.wait() == 0


def test_checkpoint_cursor_moves_past_out_of_order_finishes() -> None:
    """Copies end out of order: the cursor passes every finished line, the few finished
    beyond it are listed, and a restart resumes with exactly the unfinished lines."""
    progress = Progress()
    for index in (1, 3, 0):
        progress.finish(index)
    assert (progress.cursor, progress.finished_beyond) == (2, [3])
    assert list(progress.unfinished(6)) == [2, 4, 5]
    progress.finish(2)
    assert (progress.cursor, progress.finished_beyond) == (4, [])


def test_job_files_round_trip_and_cancel(tmp_path: Path) -> None:
    """What one process writes another reads: the spec, the keys, the checkpoint; a cancel
    asked shows as `cancelled` at once; jobs are listed per bucket, oldest first."""
    files = JobFiles(tmp_path / "jobs")
    assert files.job_ids() == []
    files.create(JobSpec("20260101-000000-aaaaaa", BUCKET, 2, 5.0, 2, 1.0, "keys k"), ["a", "b"])
    files.create(JobSpec("20260101-000001-bbbbbb", "other-1250000000", 1), ["c"])
    assert files.job_ids(BUCKET) == ["20260101-000000-aaaaaa"]
    assert files.keys("20260101-000000-aaaaaa") == ["a", "b"]
    progress = Progress(done=1, stored=1, bytes=10, cursor=1)
    files.save_progress("20260101-000000-aaaaaa", progress, durable=True)
    assert files.progress("20260101-000000-aaaaaa") == progress
    summary = files.summary("20260101-000000-aaaaaa")
    assert (summary["state"], summary["done"], summary["rate"]) == ("running", 1, 5.0)
    files.cancel("20260101-000000-aaaaaa")
    assert files.summary("20260101-000000-aaaaaa")["state"] == "cancelled"
    for bad in ("../x", "", "nope"):
        with pytest.raises(JobProblem):
            files.summary(bad)


def runner_on(clock: Any, tmp_path: Path) -> tuple[BackfillRunner, JobFiles, FolderStore]:
    config = parse_config({"data_dir": str(tmp_path / "data"), "buckets": {BUCKET: {}}}, "t")
    store = FolderStore(config.data_dir, config.buckets)
    store.prepare()
    copier = JobCopier(clock, store, config.origin_fetch)
    files = JobFiles(tmp_path / "data" / ".cosedge" / "jobs")

    async def locate(bucket: str, key: str) -> Located | str:
        return "no origin rule matches the key"

    return BackfillRunner(clock, store, copier, files, locate), files, store


def test_runner_paces_keys_at_the_rate_and_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    """On a Clock at 2 keys/s: one key at once, the next half a second later; a runner
    stopped mid-job leaves it `running` in the checkpoint, and a new runner (the restarted
    edge) finishes exactly the keys left, with the counts carried over."""
    clock: Any = Clock()  # Clock.callLater's stub is narrower than ReactorClock's
    runner, files, store = runner_on(clock, tmp_path)
    for i in range(4):
        (Path(store.data_dir) / BUCKET / f"k{i}").write_bytes(b"here")
    files.create(JobSpec("job-1", BUCKET, 5, rate=2.0), [f"k{i}" for i in range(4)] + ["gone"])
    runner.startService()
    assert runner.runs["job-1"].progress.done == 1
    clock.advance(0.5)
    assert runner.runs["job-1"].progress.done == 2
    runner.stopService()
    saved = files.progress("job-1")
    assert (saved.state, saved.done, saved.skipped, saved.cursor) == ("running", 2, 2, 2)
    again, _, _ = runner_on(clock, tmp_path)
    again.startService()
    for _ in range(6):
        clock.advance(0.5)
    final = files.progress("job-1")
    assert (final.state, final.done, final.skipped, final.failed) == (
        "completed-with-failures",
        5,
        4,
        1,
    )
    assert final.failures == [{"key": "gone", "reason": "no origin rule matches the key"}]
    assert "job-1" not in again.runs
    again.stopService()


SUMMARY = {
    "job": "20261201-234501-ab12cd",
    "bucket": BUCKET,
    "state": "running",
    "total": 40,
    "done": 10,
    "stored": 8,
    "skipped": 1,
    "failed": 1,
    "bytes": 1_500_000,
    "elapsed": 2.5,
    "reasons": {"origin answered 404": 1},
    "failures": [{"key": "k07.bin", "reason": "origin answered 404"}],
}


def test_progress_line_and_final_summary() -> None:
    """The plain line has done/total, the counts, bytes, rate, time left and failures by
    reason; a finished job with failures says so and lists them."""
    assert progress_line(SUMMARY) == (
        "20261201-234501-ab12cd running 10/40 done: 8 stored, 1 skipped, 1 failed (25%) · "
        "1.5 MB · 4.0 keys/s · 0:00:08 left · 1 failed (origin answered 404: 1)"
    )
    done = dict(SUMMARY, state="completed-with-failures", done=40, stored=38, skipped=1)
    assert final_summary(done) == (
        f"backfill 20261201-234501-ab12cd of {BUCKET} completed with failures: "
        "40/40 done: 38 stored, 1 skipped, 1 failed, 1.5 MB in 0:00:02\n"
        "failed keys:\n  k07.bin\torigin answered 404"
    )


def test_a_torn_checkpoint_starts_the_job_over(tmp_path: Path) -> None:
    """A checkpoint a crash left unreadable does not lose the job: it starts from its
    first key again, and keys already stored are skipped, not fetched."""
    clock: Any = Clock()
    runner, files, store = runner_on(clock, tmp_path)
    (Path(store.data_dir) / BUCKET / "a").write_bytes(b"here")
    files.create(JobSpec("job-2", BUCKET, 1), ["a"])
    (files.folder / "job-2.checkpoint").write_bytes(b'{"state": "runn')
    runner.startService()
    final = files.progress("job-2")
    assert (final.state, final.done, final.skipped) == ("completed", 1, 1)
    runner.stopService()
