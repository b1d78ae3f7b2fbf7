"""Backfill jobs on disk: `.cosedge/jobs/`, where any process hands a job to the runner.

Several worker processes answer the API, but only the main process runs jobs (see
`edge.origin.backfill`), so a job is handed over through files rather than memory, and
each file has one writer:

    <job>.keys        the keys, one a line (written first, by the process the API call hit)
    <job>.json        what was asked: bucket, total, rate, concurrency (its presence makes
                      the job whole: it is written after the keys, atomically)
    <job>.checkpoint  the runner's progress: counts, failures, and which keys are finished
    <job>.cancel      a cancel asked for through the API (any process)

The checkpoint names finished keys by their line: `cursor` (every line before it is
finished) plus the few finished beyond it, since copies run side by side and end out of
order. A restart resumes at the first unfinished line; a key copied in the moment before
the crash, but not yet in the checkpoint, is found present and skipped, never fetched again.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge.store.statefiles import write_atomically

RUNNING = "running"
COMPLETED = "completed"
COMPLETED_WITH_FAILURES = "completed-with-failures"
CANCELLED = "cancelled"
FINISHED_STATES = (COMPLETED, COMPLETED_WITH_FAILURES, CANCELLED)


class JobProblem(Exception):
    """A job file that cannot be read (a torn write cannot happen; a hand edit can)."""


@dataclass(frozen=True)
class JobSpec:
    """What was asked: which keys of which bucket, how fast, how many at once."""

    job: str
    bucket: str
    total: int
    rate: float | None = None  # keys started per second; None: as fast as slots allow
    concurrency: int | None = None  # copies at once; None: the job share of the slots
    created: float = 0.0
    source: str = ""  # where the keys came from (`keys FILE`, `sitemap URL`...), for people


@dataclass
class Progress:
    """The runner's checkpoint of one job."""

    state: str = RUNNING
    cursor: int = 0
    finished_beyond: list[int] = field(default_factory=list)
    done: int = 0
    stored: int = 0
    skipped: int = 0
    failed: int = 0
    bytes: int = 0
    elapsed: float = 0.0  # seconds the job has run, over all its runs
    failures: list[dict[str, str]] = field(default_factory=list)

    def finish(self, index: int) -> None:
        """Line `index` is finished: move the cursor past every finished line."""
        beyond = set(self.finished_beyond)
        beyond.add(index)
        while self.cursor in beyond:
            beyond.discard(self.cursor)
            self.cursor += 1
        self.finished_beyond = sorted(beyond)

    def unfinished(self, total: int) -> Iterator[int]:
        beyond = set(self.finished_beyond)
        return (i for i in range(self.cursor, total) if i not in beyond)

    def reasons(self) -> dict[str, int]:
        """Failures counted by reason, for the progress bar."""
        counts: dict[str, int] = {}
        for failure in self.failures:
            counts[failure["reason"]] = counts.get(failure["reason"], 0) + 1
        return counts


def new_job_id(now: float) -> str:
    """Sortable by creation (the latest job of a bucket is the greatest id), unique."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + "-" + secrets.token_hex(3)


def _valid_id(job: str) -> bool:
    return bool(job) and len(job) <= 64 and all(c.isalnum() or c == "-" for c in job)


class JobFiles:
    """The jobs folder: reads for every process, writes each by its one writer."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _path(self, job: str, suffix: str) -> Path:
        if not _valid_id(job):
            raise JobProblem(f"no such job {job!r}")
        return self.folder / f"{job}.{suffix}"

    def create(self, spec: JobSpec, keys: Sequence[str]) -> None:
        """Write a new job: keys first, then the spec that makes it visible (blocking I/O
        with fsyncs: callers run it off the reactor)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically(self._path(spec.job, "keys"), "".join(f"{k}\n" for k in keys).encode())
        write_atomically(self._path(spec.job, "json"), json.dumps(asdict(spec)).encode())

    def job_ids(self, bucket: str | None = None) -> list[str]:
        """Every whole job (of `bucket`), oldest first."""
        try:
            names = sorted(p.name for p in self.folder.iterdir() if p.name.endswith(".json"))
        except FileNotFoundError:
            return []
        ids = [n[: -len(".json")] for n in names if not n.startswith(".")]
        if bucket is None:
            return ids
        return [job for job in ids if self._bucket_of(job) == bucket]

    def _bucket_of(self, job: str) -> str | None:
        try:
            return self.spec(job).bucket
        except JobProblem:
            return None

    def spec(self, job: str) -> JobSpec:
        raw = self._read_json(self._path(job, "json"))
        if raw is None:
            raise JobProblem(f"no such job {job!r}")
        try:
            return JobSpec(**raw)
        except TypeError as e:
            raise JobProblem(f"job {job}: {e}") from None

    def keys(self, job: str) -> list[str]:
        try:
            text = self._path(job, "keys").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise JobProblem(f"job {job}: cannot read its keys ({e})") from None
        return text.splitlines()

    def progress(self, job: str) -> Progress:
        """The last checkpoint (a fresh one when the runner has not started the job)."""
        raw = self._read_json(self._path(job, "checkpoint"))
        if raw is None:
            return Progress()
        try:
            return Progress(**raw)
        except TypeError as e:
            raise JobProblem(f"job {job}: checkpoint: {e}") from None

    def save_progress(self, job: str, progress: Progress, *, durable: bool) -> None:
        """The runner's checkpoint. Not flushed while the job runs (a lost one costs a
        re-check of the keys since the last, never a second fetch); flushed at the end."""
        data = json.dumps(asdict(progress)).encode()
        write_atomically(self._path(job, "checkpoint"), data, durable=durable)

    def cancel(self, job: str) -> None:
        write_atomically(self._path(job, "cancel"), b"", durable=False)

    def cancelled(self, job: str) -> bool:
        return self._path(job, "cancel").exists()

    def summary(self, job: str) -> dict[str, Any]:
        """The job as the API shows it: SPEC's fields first, then what a progress bar
        needs beyond them."""
        spec = self.spec(job)
        progress = self.progress(job)
        state = progress.state
        if state == RUNNING and self.cancelled(job):
            state = CANCELLED  # asked: no copy starts any more (running ones may finish)
        return {
            "job": spec.job,
            "state": state,
            "total": spec.total,
            "done": progress.done,
            "stored": progress.stored,
            "skipped": progress.skipped,
            "failed": progress.failed,
            "bytes": progress.bytes,
            "failures": progress.failures,
            "bucket": spec.bucket,
            "reasons": progress.reasons(),
            "elapsed": round(progress.elapsed, 3),
            "rate": spec.rate,
            "concurrency": spec.concurrency,
            "created": spec.created,
            "source": spec.source,
        }

    @staticmethod
    def _read_json(path: Path) -> Any:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise JobProblem(f"cannot read {path}: {e.strerror}") from None
        try:
            raw = json.loads(data)
        except ValueError:
            raise JobProblem(f"{path} is not JSON") from None
        if not isinstance(raw, dict):
            raise JobProblem(f"{path} is not a JSON object")
        return raw
