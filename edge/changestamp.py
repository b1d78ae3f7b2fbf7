"""A change stamp shared by processes: "has anyone changed this state since I last looked?"

Worker processes keep API-made state (buckets, origin rules) in memory and on disk. Whoever
changes it rewrites the stamp with a fresh random token; the others compare the token they
last saw, at most once per interval, and reload on a difference. A token rather than a file
time, because two writes within the filesystem's timestamp granularity look the same.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path


class ChangeStamp:
    def __init__(self, path: Path, interval: float) -> None:
        self.path = Path(path)
        self.interval = interval
        self._seen: str | None = None
        self._checked_at = 0.0

    def _read(self) -> str | None:
        try:
            return self.path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            return None

    def mark_seen(self) -> None:
        """Call after loading the state: later checks compare against what was current."""
        self._seen = self._read()

    def touch(self) -> None:
        """Announce a change (after the state itself is safely on disk)."""
        token = uuid.uuid4().hex
        temp = self.path.with_name(f".{self.path.name}.{token}.tmp")
        temp.write_text(token, encoding="ascii")
        os.replace(temp, self.path)
        self._seen = token

    def changed(self) -> bool:
        """True when another process touched the stamp since this one last looked."""
        now = time.monotonic()
        if now - self._checked_at < self.interval:
            return False
        self._checked_at = now
        current = self._read()
        if current == self._seen:
            return False
        self._seen = current
        return True

    def reload_if_changed(
        self, load: Callable[[], object], unreadable: type[Exception], interval: float
    ) -> None:
        """Run `load` when another process changed the state; if the state cannot be read
        right now, what is in memory stays in force and the next look tries again."""
        self.interval = interval
        if self.changed():
            try:
                load()
            except unreadable:
                self._seen = None
