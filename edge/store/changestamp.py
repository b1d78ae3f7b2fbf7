"""A change stamp shared by processes: "has anyone changed this state since I last looked?"

Worker processes keep API-made state (buckets, origin rules) in memory and on disk. Whoever
changes it rewrites the stamp with a fresh random token; the others compare the token they
last saw and reload on a difference. A token rather than a file time, because two writes
within the filesystem's timestamp granularity look the same.

The comparison runs on a timer (`StateWatcher`), never on the request path: a request
reads memory only, however often the state changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from twisted.application.internet import TimerService
from twisted.logger import Logger

from edge.store.statefiles import write_atomically

log = Logger()


class ChangeStamp:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._seen: str | None = None

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
        write_atomically(self.path, token.encode("ascii"), durable=False)
        self._seen = token

    def changed(self) -> bool:
        """True when another process touched the stamp since this one last looked."""
        current = self._read()
        if current == self._seen:
            return False
        self._seen = current
        return True

    def reload_if_changed(self, load: Callable[[], object], unreadable: type[Exception]) -> None:
        """Run `load` when another process changed the state; if the state cannot be read
        right now, what is in memory stays in force and the next look tries again."""
        if self.changed():
            try:
                load()
            except unreadable as e:
                self._seen = None
                log.warn(
                    "Shared state {path} not reloaded ({reason}); the last good copy stays "
                    "in force",
                    path=str(self.path),
                    reason=str(e),
                )


class StateWatcher(TimerService):
    """Looks for state changed by other processes every `interval` seconds.

    A `TimerService` stops for good on its callable's first exception, so every refresh is
    guarded here: one unreadable file must not end change detection for the process.
    """

    name = "state-watcher"

    def __init__(self, interval: float, refreshers: Sequence[Callable[[], Any]], clock: Any):
        super().__init__(interval, self._refresh_all)
        self.clock = clock
        self._refreshers = list(refreshers)

    def _refresh_all(self) -> None:
        for refresh in self._refreshers:
            try:
                refresh()
            except Exception:
                log.failure("Refreshing shared state failed; trying again on the next tick")
