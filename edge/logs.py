"""Log observers for `twistd --logger`, the `log_level` filter, and worker log relaying.

Worker processes log to their stdout as JSON text sequences (RFC 7464: each record starts
with `\\x1e`); the main process turns each record back into an event, adds the worker's
number and hands it to whatever observer twistd was given (`--logfile`, `--logger`). So a
worker's events keep their fields (bucket, key, reason, request_id, ...) end to end, and
one log shows the whole edge.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    LogPublisher,
    eventFromJSON,
    globalLogPublisher,
    jsonFileLogObserver,
)

RECORD_SEPARATOR = b"\x1e"


def json_observer() -> ILogObserver:
    """`twistd --logger edge.logs.json_observer`: one JSON event per record on stdout, with
    every named field (bucket, key, origin, reason, request_id, ...) kept as data."""
    return jsonFileLogObserver(sys.stdout)


class WorkerLogRelay:
    """Reads one worker's stdout and stderr and re-emits what it logged in this process.

    JSON records become events again, with `worker` (its number) added and `log_system`
    naming it, so the text log reads `[worker 2: edge.origin.copier#warn] ...`. Anything else a
    worker prints (a crash before its logging starts, a C library's complaint) is relayed
    as one text event per line.
    """

    def __init__(
        self,
        number: int,
        emit: Callable[[dict[str, Any]], None] | None = None,
        text: Callable[[int, str], None] | None = None,
    ) -> None:
        self.number = number
        self._emit = emit or globalLogPublisher
        self._text = text
        self._partial = b""

    def received(self, data: bytes) -> None:
        buffered = self._partial + data
        records = buffered.split(RECORD_SEPARATOR)
        self._partial = records.pop()
        # The last piece may be a whole record without a successor yet: keep it until the
        # next separator (or a newline-terminated JSON object) shows it is complete.
        if self._partial.endswith(b"\n") and self._partial.lstrip().startswith(b"{"):
            records.append(self._partial)
            self._partial = b""
        elif not self._partial.lstrip().startswith(b"{") and b"\n" in self._partial:
            # Plain text (a crash before logging started, stderr of a library): its
            # complete lines go now, not when the next record or the worker's end comes.
            lines, _, self._partial = self._partial.rpartition(b"\n")
            records.append(lines)
        for record in records:
            self._relay(record)

    def flush(self) -> None:
        """Relay what is left when the worker's output ends."""
        partial, self._partial = self._partial, b""
        self._relay(partial)

    def _relay(self, record: bytes) -> None:
        raw = record.decode("utf-8", "replace")
        text = raw.strip()
        if not text:
            return
        if text.startswith("{"):
            try:
                event = eventFromJSON(text)
            except ValueError:
                event = None
            if isinstance(event, dict):
                namespace = event.get("log_namespace", "-")
                level_name = getattr(event.get("log_level"), "name", "-")
                event["worker"] = self.number
                event["log_system"] = f"worker {self.number}: {namespace}#{level_name}"
                self._emit(event)
                return
        for line in raw.splitlines():  # indentation kept: tracebacks stay readable
            if line.strip() and self._text is not None:
                self._text(self.number, line.rstrip())


class _LevelFiltered(FilteringLogObserver):
    """An observer wrapped by `LogLevelService`, equal to the observer it wraps.

    So whoever added the observer can still remove it while it is wrapped (the publisher
    finds observers by equality), and a second `LogLevelService` in the same process
    (edges run in-process by tests, several at once) does not wrap it twice: without both,
    every start and stop of a service left a copy of each observer behind, and each event
    was then written and dispatched once per copy.
    """

    def __init__(self, observer: Any, predicate: LogLevelFilterPredicate) -> None:
        super().__init__(observer, [predicate])
        self.wrapped = observer

    def __eq__(self, other: object) -> bool:
        return other is self or bool(self.wrapped == other)

    def __hash__(self) -> int:
        return id(self)


class LogLevelService(Service):
    """Applies `log_level` to every observer twistd set up (file, stdout or `--logger`).

    twistd installs its observers after the service tree is built and before it starts,
    so this wraps them on start. The global publisher has no public way to list its
    observers: `_observers` is read here, and where a Twisted lacks it the level is not
    applied and a warning says so.
    """

    name = "log-level"

    def __init__(self, level: str, publisher: LogPublisher = globalLogPublisher) -> None:
        self.level = LogLevel.levelWithName(level)
        self._predicate = LogLevelFilterPredicate(defaultLogLevel=self.level)
        self._publisher = publisher
        self._wrapped: list[tuple[Any, Any]] = []

    def set_level(self, level: str) -> None:
        """A new `log_level` from a reload: the filters in place read it from now on."""
        self.level = LogLevel.levelWithName(level)
        self._predicate.setLogLevelForNamespace("", self.level)  # "": the root namespace

    def startService(self) -> None:
        super().startService()
        observers = getattr(self._publisher, "_observers", None)
        if not isinstance(observers, list):
            from twisted.logger import Logger

            Logger().warn(
                "log_level {level} not applied: this Twisted hides its observers",
                level=self.level.name,
            )
            return
        for index, observer in enumerate(observers):
            if isinstance(observer, _LevelFiltered):
                continue  # another LogLevelService of this process filters it already
            filtered = _LevelFiltered(observer, self._predicate)
            observers[index] = filtered
            self._wrapped.append((observer, filtered))

    def stopService(self) -> None:
        observers = getattr(self._publisher, "_observers", [])
        for observer, filtered in self._wrapped:
            for index, present in enumerate(observers):
                if present is filtered:  # not removed meanwhile by whoever added it
                    observers[index] = observer
                    break
        self._wrapped = []
        super().stopService()
