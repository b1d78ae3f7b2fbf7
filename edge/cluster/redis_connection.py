"""The txredisapi plumbing under `RedisCoordinator`: a one-connection factory that reports
its connection's comings and goings, and a subscriber protocol that hands messages on.

txredisapi binds its timers to the global reactor; these classes inherit that.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import txredisapi
from twisted.logger import Logger

from edge.config.redis_address import RedisAddress

log = Logger()


class _Subscriber(txredisapi.SubscriberProtocol):  # type: ignore[misc]  # txredisapi ships no types
    """Hands each published message to its factory, which dispatches it."""

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        self.factory.on_message(channel, message)


class _Factory(txredisapi.RedisFactory):  # type: ignore[misc]  # txredisapi ships no types
    """A one-connection txredisapi factory that tells its coordinator when the connection
    becomes usable or is gone, and retries quickly: an edge node should be serving again
    within a couple of seconds of Redis coming back, not after txredisapi's 10 s backoff."""

    initialDelay = 0.1
    factor = 2.0
    noisy = False

    def __init__(
        self,
        address: RedisAddress,
        timeout: float,
        max_delay: float,
        protocol: type,
        on_ready: Callable[[Any], None],
        on_failure: Callable[[str], None],
        on_message: Callable[[Any, Any], None] | None = None,
    ) -> None:
        super().__init__(
            f"{address.host}:{address.port}",
            address.db or None,
            1,
            isLazy=True,
            password=address.password,
            replyTimeout=timeout,
            convertNumbers=False,  # "123" published stays a string
        )
        self.protocol = protocol
        self.maxDelay = max_delay
        self.on_ready = on_ready
        self.on_failure = on_failure
        self.on_message = on_message
        # txredisapi errbacks this on a refused AUTH/SELECT; nobody else waits on it.
        self.deferred.addErrback(lambda _: None)

    def ready_connection(self) -> Any:
        """The connection that answered its PING, or None while there is none."""
        for conn in self.pool:
            if conn.connected and getattr(conn, "verified", False):
                return conn
        return None

    def addConnection(self, conn: Any) -> None:
        super().addConnection(conn)
        if conn in self.pool:
            self.on_ready(conn)

    def delConnection(self, conn: Any) -> None:
        super().delConnection(conn)
        self.on_failure("connection lost")

    def retryDelay(self, attempt: int) -> float:
        # Called for every failed or lost connection before the next attempt.
        self.on_failure("cannot connect")
        return float(super().retryDelay(attempt))

    def connectionError(self, why: str) -> None:
        # A refused AUTH or SELECT: txredisapi stops reconnecting, a restart is needed.
        super().connectionError(why)
        log.error("Redis refused this node: {reason}; fix the coordination URL", reason=why)
