"""The copy records on disk: one SQLite table shared by every process of an edge.

`<data_dir>/.cosedge/copies.sqlite3` holds one row per bucket+key (the key's latest copy)
and per-bucket counters. Why SQLite (the stdlib's `sqlite3`) rather than a JSON-lines file:
with `workers: N` several processes answer status requests for copies any of them runs,
and every one of them must see the others' rows. A database file they all open gives
that for free (one writer at a time, readers never blocked in WAL mode), where JSON lines
would need every reader to merge N appending files and every bound to rewrite them. WAL
with `synchronous=NORMAL` makes a commit an append to the log without an fsync: a crash
of the edge loses nothing, a power cut at most the last commits, and the file is never
left corrupt. Rows are bounded by deleting the oldest (`prune`). All calls block, briefly:
they are single-row statements on an indexed table, made only at state changes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import astuple, dataclass, fields
from pathlib import Path

FILE_NAME = "copies.sqlite3"
LIVE_STATES = ("queued", "copying")
BUSY_TIMEOUT = 2.0  # seconds a write waits for another process's (they take microseconds)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS copies (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    state TEXT NOT NULL,
    origin TEXT,
    address TEXT,
    bytes INTEGER NOT NULL DEFAULT 0,
    expected INTEGER,
    started REAL,
    finished REAL,
    reason TEXT,
    retry_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    request_id TEXT,
    pid INTEGER,
    changed REAL NOT NULL,
    PRIMARY KEY (bucket, key)
);
CREATE INDEX IF NOT EXISTS copies_by_state ON copies (bucket, state, changed);
CREATE INDEX IF NOT EXISTS copies_by_request ON copies (request_id);
CREATE TABLE IF NOT EXISTS counters (
    bucket TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (bucket, name)
);
"""


@dataclass
class CopyRecord:
    """What is known of the latest copy of one bucket+key (times are epoch seconds)."""

    bucket: str
    key: str
    state: str
    origin: str | None = None
    address: str | None = None
    bytes: int = 0
    expected: int | None = None
    started: float | None = None
    finished: float | None = None
    reason: str | None = None
    retry_at: float | None = None
    attempts: int = 0
    request_id: str | None = None
    pid: int | None = None
    changed: float = 0.0


_COLUMNS = tuple(f.name for f in fields(CopyRecord))
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM copies"
_UPDATE_ALL = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[2:])
_INSERT = (
    f"INSERT INTO copies ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)}) "
    f"ON CONFLICT (bucket, key) DO UPDATE SET {_UPDATE_ALL}"
)


class CopyTable:
    """The `copies` and `counters` tables of one database file (or of memory: `None`)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._db = sqlite3.connect(
            ":memory:" if path is None else str(path), timeout=BUSY_TIMEOUT, isolation_level=None
        )
        if path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def put(self, record: CopyRecord, unless: tuple[str, ...] = ()) -> None:
        """Write `record` over the key's row, unless that row's state is in `unless`."""
        sql = _INSERT
        if unless:
            sql += f" WHERE copies.state NOT IN ({', '.join('?' for _ in unless)})"
        self._db.execute(sql, (*astuple(record), *unless))

    def progress(self, rows: Iterable[tuple[str, str, int, int | None, float]]) -> None:
        """Bytes received so far by copies running here: (bucket, key, bytes, expected, now)."""
        with self._transaction():
            self._db.executemany(
                "UPDATE copies SET bytes = ?, expected = ?, changed = ? "
                "WHERE bucket = ? AND key = ? AND state = 'copying'",
                [(n, e, now, b, k) for b, k, n, e, now in rows],
            )

    def delete(self, bucket: str, key: str, state: str) -> None:
        """Forget the key's row if it is still in `state` (nothing else wrote it since)."""
        self._db.execute(
            "DELETE FROM copies WHERE bucket = ? AND key = ? AND state = ?", (bucket, key, state)
        )

    def get(self, bucket: str, key: str) -> CopyRecord | None:
        row = self._db.execute(f"{_SELECT} WHERE bucket = ? AND key = ?", (bucket, key)).fetchone()
        return None if row is None else CopyRecord(*row)

    def by_request(self, request_id: str) -> CopyRecord | None:
        """The copy the miss with this `x-cos-request-id` started, while it is the key's
        latest."""
        row = self._db.execute(f"{_SELECT} WHERE request_id = ?", (request_id,)).fetchone()
        return None if row is None else CopyRecord(*row)

    def live(self, bucket: str, limit: int) -> list[CopyRecord]:
        """Copies queued or running in any process, oldest first."""
        rows = self._db.execute(
            f"{_SELECT} WHERE bucket = ? AND state IN ('queued', 'copying') "
            "ORDER BY changed LIMIT ?",
            (bucket, limit),
        )
        return [CopyRecord(*row) for row in rows]

    def failures(
        self, bucket: str, marker: str | None, limit: int
    ) -> tuple[list[CopyRecord], str | None]:
        """Failed keys newest first, from after `marker` (a key an earlier page ended
        with); the key to pass as the next page's marker, or None after the last page."""
        where, args = "bucket = ? AND state = 'failed'", [bucket]
        if marker is not None:
            after = self.get(bucket, marker)
            if after is not None and after.state == "failed":
                where += " AND (changed < ? OR (changed = ? AND key > ?))"
                args += [after.changed, after.changed, marker]  # type: ignore[list-item]
            else:  # a marker no longer failed: resume by name, as a listing would
                where += " AND key > ?"
                args.append(marker)
        rows = self._db.execute(
            f"{_SELECT} WHERE {where} ORDER BY changed DESC, key LIMIT ?", (*args, limit + 1)
        ).fetchall()
        records = [CopyRecord(*row) for row in rows[:limit]]
        more = len(rows) > limit
        return records, records[-1].key if more and records else None

    def add_counters(self, deltas: Mapping[tuple[str, str], int]) -> None:
        with self._transaction():
            self._db.executemany(
                "INSERT INTO counters (bucket, name, value) VALUES (?, ?, ?) "
                "ON CONFLICT (bucket, name) DO UPDATE SET value = value + excluded.value",
                [(b, n, v) for (b, n), v in deltas.items()],
            )

    def counters(self, bucket: str) -> dict[str, int]:
        rows = self._db.execute("SELECT name, value FROM counters WHERE bucket = ?", (bucket,))
        return {name: int(value) for name, value in rows}

    def interrupt_dead(self, alive: Callable[[int], bool], reason: str, now: float) -> int:
        """Mark failed the queued or running copies of processes that are gone (the edge
        was killed or crashed mid-copy); how many there were."""
        rows = self._db.execute(
            "SELECT bucket, key, pid FROM copies WHERE state IN ('queued', 'copying')"
        ).fetchall()
        dead = [(b, k) for b, k, pid in rows if pid is None or not alive(pid)]
        with self._transaction():
            self._db.executemany(
                "UPDATE copies SET state = 'failed', reason = ?, finished = ?, changed = ? "
                "WHERE bucket = ? AND key = ? AND state IN ('queued', 'copying')",
                [(reason, now, now, b, k) for b, k in dead],
            )
        return len(dead)

    def prune(self, max_failed: int, max_other: int) -> None:
        """Keep the newest `max_failed` failed rows and `max_other` finished others."""
        with self._transaction():
            bounds = (("state = 'failed'", max_failed), ("state = 'stored'", max_other))
            for condition, keep in bounds:
                self._db.execute(
                    f"DELETE FROM copies WHERE rowid IN (SELECT rowid FROM copies WHERE "
                    f"{condition} ORDER BY changed DESC LIMIT -1 OFFSET ?)",
                    (keep,),
                )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an error): several rows in one commit."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, value: object, tb: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")
