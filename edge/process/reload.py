"""SIGHUP: reload the config file and the ISP tables without dropping a connection or a copy.

Like `nginx -s reload`: the new config is read and validated whole first (the same checks
as start-up and `cosedge check-config`, the ISP tables included) in a thread, so the
reactor keeps serving meanwhile; only a config that passes is applied, on the reactor
thread, in one step. On any problem the running config stays whole and one event says
why. What needs a new listener or another data folder (`listen`, `admin_listen`,
`data_dir`, `workers`) is left as it runs, with a warning that it needs a restart.

The main process forwards SIGHUP to its workers; each process reloads on its own (they
read the same files) and logs its own outcome, which reaches the main log with the
worker's number. SIGHUPs that arrive during a reload are coalesced into one more reload
after it.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from edge.config import ConfigError, EdgeConfig

log = Logger()

# Keys a running edge cannot change: they need a new listener, data folder or processes.
RESTART_ONLY = (
    "listen",
    "admin_listen",
    "data_dir",
    "workers",
    "access_log",
    "store",
    "coordination",
)


@dataclass(frozen=True)
class Loaded:
    """A config read and validated in the reload thread, with its origin policy."""

    config: EdgeConfig
    policy: Any


class ReloadService(Service):
    """Reloads on SIGHUP (or `reload()`): read and validate in a thread, apply on the
    reactor, one structured event per outcome (`outcome`: "reloaded" or "failed")."""

    name = "reload"

    def __init__(
        self,
        reactor: Any,
        config: EdgeConfig,
        load: Callable[[EdgeConfig], Loaded],
        apply: Callable[[EdgeConfig, Loaded], list[str]],
        forward: Callable[[], None] | None = None,
    ) -> None:
        self._reactor = reactor
        self.config = config
        self._load = load
        self._apply = apply
        self._forward = forward
        self._previous: Any = None
        self._running: Deferred[None] | None = None
        self._again = False

    @property
    def reloading(self) -> bool:
        return self._running is not None

    def privilegedStartService(self) -> None:
        """twistd calls this before it starts any service: a SIGHUP that comes as soon as
        a port is ready (the listeners start before this service) is a reload, not the
        signal's default action, which ends the process."""
        super().privilegedStartService()
        self._install()

    def startService(self) -> None:
        super().startService()
        self._install()

    def _install(self) -> None:
        if hasattr(signal, "SIGHUP") and self._previous is None:
            self._previous = signal.signal(signal.SIGHUP, self._on_signal)

    def stopService(self) -> None:
        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._reactor.callFromThread(self._signalled)

    def _signalled(self) -> None:
        if self._forward is not None:
            self._forward()
        self.reload()

    def reload(self) -> Deferred[None]:
        """Start a reload (or, if one is running, ask for one more after it); fires when
        the new config is in force or has been refused."""
        if self._running is not None:
            self._again = True
            return self._running
        done: Deferred[None] = Deferred()
        self._running = done
        self._start(done)
        return done

    def _start(self, done: Deferred[None]) -> None:
        self._again = False
        started = time.monotonic()
        pool = self._reactor.getThreadPool()
        d = deferToThreadPool(self._reactor, pool, self._load, self.config)
        d.addCallbacks(self._loaded, self._failed, callbackArgs=(started,), errbackArgs=(started,))
        d.addBoth(self._next, done)

    def _loaded(self, loaded: Loaded, started: float) -> None:
        new = loaded.config
        kept = [k for k in RESTART_ONLY if getattr(new, k) != getattr(self.config, k)]
        for key in kept:
            log.warn(
                "{key} changed in {source} but needs a restart; still {value}",
                key=key,
                source=new.source,
                value=str(getattr(self.config, key)),
            )
        if kept:
            new = replace(new, **{k: getattr(self.config, k) for k in kept})
            loaded = Loaded(new, loaded.policy)
        try:
            changes = self._apply(self.config, loaded)
        except Exception:
            self._failed(Failure(), started)
            return
        self.config = new
        log.info(
            "Reloaded on SIGHUP: {source} and the ISP tables in {tables_dir} in "
            "{duration_ms}ms; {summary}",
            source=new.source,
            tables_dir=str(getattr(loaded.policy, "tables_dir", "?")),
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            changes=changes,
            summary=", ".join(changes) or "nothing changed",
            outcome="reloaded",
        )

    def _failed(self, failure: Failure, started: float) -> None:
        duration = round((time.monotonic() - started) * 1000, 1)
        if failure.check(ConfigError):
            problems = [str(p) for p in cast(ConfigError, failure.value).problems]
            log.error(
                "Not reloaded: {reason}; the running config and ISP tables stay in force",
                reason="; ".join(problems),
                problems=problems,
                duration_ms=duration,
                outcome="failed",
            )
            return
        log.failure(
            "Not reloaded; the running config and ISP tables stay in force",
            failure,
            reason=f"{type(failure.value).__name__}: {failure.value}",
            duration_ms=duration,
            outcome="failed",
        )

    def _next(self, _: object, done: Deferred[None]) -> None:
        if self._again:
            self._start(done)
            return
        self._running = None
        done.callback(None)
