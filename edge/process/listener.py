"""The listening port and how the edge fails when it cannot start.

Shared by the main process (`tap`) and the workers (`workers`), which is why it is its own
module: each side imports it, neither imports the other.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.logger import Logger, LoggingFile

log = Logger()


def fail(message: str) -> NoReturn:
    # Once twistd's logging has started, sys.stderr is a LoggingFile: a message written
    # there would come out as a log event; the process's real stderr gets the one line.
    stream = sys.stderr
    if isinstance(stream, LoggingFile) and sys.__stderr__ is not None:
        stream = sys.__stderr__
    stream.write(f"cosedge: {message}\n")
    stream.flush()
    raise SystemExit(1)


def describe_address(address: Any) -> str:
    """`host:port` for TCP, the socket's path for a UNIX socket."""
    if hasattr(address, "port"):
        return f"{address.host}:{address.port}"
    name = getattr(address, "name", None)
    return name.decode() if isinstance(name, bytes) else str(name or address)


class ListenerService(StreamServerEndpointService):
    """The public listener; a port it cannot bind stops start-up instead of being logged.

    Once bound it logs a readiness event carrying the real port, which is what tests and
    supervisors wait for when the config asks for port 0.
    """

    _raiseSynchronously = True

    def __init__(
        self,
        endpoint: Any,
        factory: Any,
        *,
        key: str = "listen",
        ready: str = "cosedge ready: listening on {where}",
    ) -> None:
        super().__init__(endpoint, factory)
        self._key = key  # the config key a bind failure names
        self._ready_event = ready
        # Called with the bound address once listening (the resolver's loop refusal).
        self.ready_hooks: list[Callable[[Any], None]] = []

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            where = f"{e.interface or '*'}:{e.port}"
            reason = getattr(e.socketError, "strerror", None) or str(e.socketError)
            fail(f"{self._key}: cannot listen on {where}: {reason}")
        waiting = self._waitingForPort
        assert waiting is not None  # set by privilegedStartService
        waiting.addCallback(self._ready)

    def stopService(self) -> Deferred[None]:
        d: Deferred[None] = super().stopService()
        close = getattr(self.factory, "close_connections", None)
        if close is not None:
            close()
        return d

    def _ready(self, port: Any) -> Any:
        log.info(self._ready_event, where=describe_address(port.getHost()))
        for hook in self.ready_hooks:
            hook(port.getHost())
        return port
